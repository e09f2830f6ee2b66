# refract-storgate-scheduler image (Debian 12): storgate's batches,
# workflows and webhooks (docs/storgate.md).
#
# Build from the repository root (docker-compose.yml does this):
#   docker build -f deploy/storgate-scheduler.Dockerfile -t refract-storgate-scheduler .

# ---- build stage: compilers and -dev packages, thrown away afterwards ------
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential pkg-config \
        libexpat1-dev libisal-dev duktape-dev libpcre2-dev libhiredis-dev libcurl4-openssl-dev \
        libh2o-evloop-dev libczmq-dev libzmq3-dev libvips-dev \
        libjansson-dev libyaml-dev libssl-dev zlib1g-dev libxxhash-dev \
        libavformat-dev libavcodec-dev libavutil-dev libswscale-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only the sources the binary is built from (see gateway.Dockerfile).
COPY Makefile ./
COPY common/ common/
COPY services/ services/
# rf_tmpl embeds the vendored Nunjucks bundle (.incbin) into the common library.
COPY third_party/ third_party/
RUN make -j"$(nproc)" build/bin/refract-storgate-scheduler

# ---- runtime stage: only the shared libraries the binary links ------------
FROM debian:12
# The binary's NEEDED libraries: libcurl4 (webhooks), libhiredis0.14
# (redis:// leases), libduktape207 and libpcre2-8-0 (savePath templates,
# pathPattern), libczmq4 (pulls libzmq5; its broker for function tasks),
# libjansson4, libyaml-0-2, libxxhash0 and libssl3 (libcrypto: MD5s).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libcurl4 libhiredis0.14 libduktape207 libpcre2-8-0 libczmq4 libzmq5 \
        libjansson4 libyaml-0-2 libxxhash0 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin refract \
 && mkdir -p /etc/refract /var/lib/refract-storgate /srv/storgate/upload /srv/storgate/service \
 && chown refract:refract /var/lib/refract-storgate /srv/storgate /srv/storgate/upload /srv/storgate/service
COPY --from=build /src/build/bin/refract-storgate-scheduler /usr/local/bin/refract-storgate-scheduler
USER refract
# 9103 /metrics and /healthz (storgate_scheduler.metrics_listen); 5556 its
# RFB broker, which image workers connect to (keep it private).
EXPOSE 9103 5556
# SIGTERM: items in progress finish, the lease is given up. SIGUSR1 starts
# every enabled onBatch now.
STOPSIGNAL SIGTERM
ENTRYPOINT ["refract-storgate-scheduler"]
CMD ["-c", "/etc/refract/refract.yaml"]
