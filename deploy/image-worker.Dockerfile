# refract-image-worker image (Debian 12).
#
# Build from the repository root (docker-compose.yml does this):
#   docker build -f deploy/image-worker.Dockerfile -t refract-image-worker .

# ---- build stage: compilers and -dev packages, thrown away afterwards ------
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential pkg-config \
        libexpat1-dev libisal-dev duktape-dev libpcre2-dev libhiredis-dev libcurl4-openssl-dev \
        libh2o-evloop-dev libczmq-dev libzmq3-dev libvips-dev \
        libjansson-dev libyaml-dev libssl-dev zlib1g-dev libxxhash-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only the sources the binary is built from (see gateway.Dockerfile).
COPY Makefile ./
COPY common/ common/
COPY services/ services/
# rf_tmpl embeds the vendored Nunjucks bundle (.incbin) into the common library.
COPY third_party/ third_party/
RUN make -j"$(nproc)" build/bin/refract-image-worker

# ---- runtime stage: only the shared libraries the binary links ------------
FROM debian:12
# libvips42 pulls GLib and the image codecs (jpeg, png, webp, …);
# libczmq4 pulls libzmq5.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libvips42 libczmq4 libzmq5 libjansson4 libyaml-0-2 libxxhash0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin refract \
 && mkdir -p /etc/refract
COPY --from=build /src/build/bin/refract-image-worker /usr/local/bin/refract-image-worker
USER refract
# 9101 /metrics and /healthz (image_worker.metrics_listen).
EXPOSE 9101
# SIGTERM: DISCONNECT from every gateway, then exit. (SIGHUP is not handled:
# it ends the process.)
STOPSIGNAL SIGTERM
ENTRYPOINT ["refract-image-worker"]
CMD ["-c", "/etc/refract/refract.yaml"]
