# refract-video-worker image (Debian 12).
#
# Build from the repository root (docker-compose.yml does this):
#   docker build -f deploy/video-worker.Dockerfile -t refract-video-worker .

# ---- build stage: compilers and -dev packages, thrown away afterwards ------
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential pkg-config \
        libexpat1-dev libisal-dev duktape-dev libpcre2-dev libhiredis-dev libcurl4-openssl-dev \
        libh2o-evloop-dev libczmq-dev libzmq3-dev libvips-dev \
        libjansson-dev libyaml-dev libssl-dev zlib1g-dev libxxhash-dev \
        libavformat-dev libavcodec-dev libavutil-dev libswscale-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only the sources the binary is built from (see gateway.Dockerfile). The
# Makefile reads pkg-config flags for every library, so the build stage has
# the other binaries' -dev packages too.
COPY Makefile ./
COPY common/ common/
COPY services/ services/
# rf_tmpl embeds the vendored Nunjucks bundle (.incbin) into the common library.
COPY third_party/ third_party/
RUN make -j"$(nproc)" build/bin/refract-video-worker

# ---- runtime stage: only the shared libraries the binary links ------------
FROM debian:12
# The binary's NEEDED libraries: libavformat59, libavcodec59, libavutil57 and
# libswscale6 (FFmpeg 5.1; they pull the codec libraries), libcurl4 (edge:
# sources read through the gateway), libczmq4 (pulls libzmq5), libjansson4,
# libyaml-0-2 and libxxhash0.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libavformat59 libavcodec59 libavutil57 libswscale6 libcurl4 \
        libczmq4 libzmq5 libjansson4 libyaml-0-2 libxxhash0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin refract \
 && mkdir -p /etc/refract
COPY --from=build /src/build/bin/refract-video-worker /usr/local/bin/refract-video-worker
USER refract
# 9102 /metrics and /healthz (video_worker.metrics_listen).
EXPOSE 9102
# SIGTERM: DISCONNECT from every gateway, then exit. SIGHUP is ignored.
STOPSIGNAL SIGTERM
ENTRYPOINT ["refract-video-worker"]
CMD ["-c", "/etc/refract/refract.yaml"]
