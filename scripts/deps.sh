#!/bin/sh
# deps.sh — install every Debian 12 package refract needs to build, run and
# test. Idempotent: `scripts/deps.sh --check` exits 0 when nothing is missing,
# and a plain run installs only what is missing (as root, via apt-get).
set -eu

PKGS="build-essential pkg-config clang llvm libclang-rt-14-dev
libh2o-evloop-dev libzmq3-dev libczmq-dev libvips-dev libvips-tools
libjansson-dev libyaml-dev libssl-dev zlib1g-dev libcmocka-dev libxxhash-dev libbrotli-dev libpcre2-dev libhiredis-dev libcurl4-openssl-dev
libexpat1-dev libisal-dev duktape-dev
libavformat-dev libavcodec-dev libavutil-dev libswscale-dev libswresample-dev
redis-server ffmpeg prometheus wrk nginx libnginx-mod-http-image-filter
python3-pytest python3-requests python3-brotli docker-compose curl procps iproute2 psmisc
clang-format testssl.sh openssl nghttp2-client chromium
awscli python3-boto3 s3cmd rclone librdkafka-dev kcat python3-confluent-kafka
swift swift-proxy swift-account swift-container swift-object memcached python3-swiftclient"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done

if [ "${1:-}" = "--check" ]; then
    [ -z "$missing" ] && exit 0
    echo "missing packages:$missing" >&2
    exit 1
fi

if [ -z "$missing" ]; then
    echo "deps: all packages present"
    exit 0
fi

echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
