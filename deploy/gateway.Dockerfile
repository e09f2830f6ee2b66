# refract-gateway image (Debian 12).
#
# Build from the repository root (docker-compose.yml does this):
#   docker build -f deploy/gateway.Dockerfile -t refract-gateway .
# Run:
#   docker run -p 8080:8080 -v $PWD/deploy/refract-compose.yaml:/etc/refract/refract.yaml:ro refract-gateway

# ---- build stage: compilers and -dev packages, thrown away afterwards ------
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential pkg-config \
        libexpat1-dev libisal-dev duktape-dev libpcre2-dev libhiredis-dev libcurl4-openssl-dev \
        libh2o-evloop-dev libczmq-dev libzmq3-dev libvips-dev \
        libjansson-dev libyaml-dev libssl-dev zlib1g-dev \
        libxxhash-dev libbrotli-dev libpcre2-dev libhiredis-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only the sources the binary is built from: a build/ directory from the
# host must not reach the image, or make would take its objects as current.
# (The Makefile reads pkg-config flags for every library, vips included, so
# the build stage has all the -dev packages even for the gateway.)
COPY Makefile ./
COPY common/ common/
COPY services/ services/
# rf_tmpl embeds the vendored Nunjucks bundle (.incbin) into the common library.
COPY third_party/ third_party/
RUN make -j"$(nproc)" build/bin/refract-gateway

# ---- runtime stage: only the shared libraries the binary links ------------
FROM debian:12
# libh2o-evloop0.13 pulls libssl3 and zlib1g, libczmq4 pulls libzmq5; the
# binary also links libbrotli1 (compression), libpcre2-8-0 (url_rewrite),
# libhiredis0.14 (gateway.metadata) and libxxhash0 (cache keys), libexpat1
# and libisal2 (the S3 API's XML and CRC32C).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libh2o-evloop0.13 libczmq4 libzmq5 libjansson4 libyaml-0-2 \
        libbrotli1 libpcre2-8-0 libhiredis0.14 libxxhash0 libexpat1 libisal2 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin refract \
 && mkdir -p /etc/refract /var/cache/refract /srv/storgate/upload /srv/storgate/service /var/lib/refract-storgate \
 && chown refract:refract /var/cache/refract /srv/storgate /srv/storgate/upload /srv/storgate/service \
        /var/lib/refract-storgate
COPY --from=build /src/build/bin/refract-gateway /usr/local/bin/refract-gateway
USER refract
# 8080 public HTTP (HTTP/1.1 and h2c), 9080 admin (/metrics, /healthz),
# 5555 the RFB/1 bus the workers connect to (keep it private), 9000
# storgate's S3 API. /srv/storgate and /var/lib/refract-storgate exist owned
# by refract, so the compose volumes mounted there start writable by it.
EXPOSE 8080 9080 5555 9000
# SIGTERM drains in-flight requests for up to gateway.drain_timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["refract-gateway"]
CMD ["-c", "/etc/refract/refract.yaml"]
