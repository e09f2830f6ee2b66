#!/bin/bash
# run.sh — `make run`: generate sample media, start the single-node stack
# (gateway + image worker + video worker) in the foreground with
# conf/refract.yaml, restart a worker that dies, stop everything on Ctrl-C.
set -u
cd "$(dirname "$0")/.."
CONF=${CONF:-conf/refract.yaml}
ORIGIN=/tmp/refract-sample-origin
BIN=build/bin

mkdir -p "$ORIGIN" /tmp/refract-storgate/upload /tmp/refract-storgate/service # storgate's landing-zone bucket
if [ ! -s "$ORIGIN/photo.jpg" ]; then
    echo "run: generating sample media in $ORIGIN"
    ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=2400x1600 -frames:v 1 "$ORIGIN/.photo.png"
    vips copy "$ORIGIN/.photo.png" "$ORIGIN/photo.jpg[Q=90]"   # a JPEG written by libvips
    vips copy "$ORIGIN/.photo.png" "$ORIGIN/photo.png"
    rm -f "$ORIGIN/.photo.png"
fi
# video.mp4: H.264 + AAC, 20 s, a keyframe every 2 s (60 frames at 30 fps,
# no scene-cut keyframes) and the moov first (faststart), so that mp4hls
# cuts it into two 10 s segments and its playlist reads one range. A file
# an older run.sh made (moov at the end) is made again.
moov_first() {
    local n
    n=$(od -An -tu1 -N4 "$1" 2>/dev/null | awk '{print $1*16777216 + $2*65536 + $3*256 + $4}')
    [ -n "$n" ] && [ "$(dd if="$1" bs=1 skip=$((n + 4)) count=4 2>/dev/null)" = moov ]
}
if [ ! -s "$ORIGIN/video.mp4" ] || ! moov_first "$ORIGIN/video.mp4"; then
    echo "run: generating $ORIGIN/video.mp4"
    ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 \
        -t 20 -c:v libx264 -pix_fmt yuv420p -g 60 -keyint_min 60 -sc_threshold 0 -c:a aac -shortest \
        -movflags +faststart "$ORIGIN/.video.mp4" && mv "$ORIGIN/.video.mp4" "$ORIGIN/video.mp4"
fi
echo "hello from refract's sample origin" > "$ORIGIN/hello.txt"

"$BIN/refract-gateway" -t -c "$CONF" || exit 1
port=$(awk '/^gateway:/{g=1} g && /^  listen:/{print $2; exit}' "$CONF" | tr -d '"' | sed 's/.*://')
admin=$(awk '/^gateway:/{g=1} g && /^  admin_listen:/{print $2; exit}' "$CONF" | tr -d '"')

pids=()
stop() {
    trap - INT TERM
    echo; echo "run: stopping"
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    wait
    exit 0
}
trap stop INT TERM

"$BIN/refract-gateway" -c "$CONF" &
pids+=($!)
# Workers are supervised: one that dies (crash, kill -9) is started again.
# Ctrl-C reaches the whole process group, the workers included; a worker
# that exits cleanly, or a TERM from the trap above, ends its loop.
supervise() {
    local name=$1 bin=$2
    (
        stop=0
        child=
        trap 'stop=1; [ -n "$child" ] && kill -TERM $child 2>/dev/null' TERM INT
        while [ $stop -eq 0 ]; do
            "$bin" -c "$CONF" &
            child=$!
            wait $child
            rc=$?
            # Exit 0 is a clean stop someone asked for (Ctrl-C reaches the
            # worker too): only crashes and kills are restarted.
            [ $stop -eq 1 ] || [ $rc -eq 0 ] && break
            echo "run: $name exited ($rc); restarting in 1s" >&2
            sleep 1
        done
        wait $child 2>/dev/null
    ) &
    pids+=($!)
}
supervise "image worker" "$BIN/refract-image-worker"
supervise "video worker" "$BIN/refract-video-worker"
supervise "storgate scheduler" "$BIN/refract-storgate-scheduler"

for _ in $(seq 50); do
    curl -fs "http://$admin/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
cat <<MSG

refract is running (gateway :$port, admin $admin; image and video workers; storgate scheduler). Try:

  curl -si http://localhost:$port/hello.txt
  curl -s  http://localhost:$port/photo.jpg/dims/resize/500x500 -o small.jpg && vipsheader small.jpg
  curl -s  http://localhost:$port/photo.jpg/dims/resize/300x300/format/webp/quality/60 -o small.webp && vipsheader small.webp
  curl -s  http://localhost:$port/photo.png/dims/format/jpeg/quality/50 -o q50.jpg && vipsheader q50.jpg
  curl -si http://localhost:$port/photo.jpg/dims/resize/abc            # 400 with a one-line reason
  curl -s  --http2-prior-knowledge -o /dev/null -w '%{http_version} %{http_code}\\n' http://localhost:$port/video.mp4
  curl -s  -r 0-99 -o /dev/null -w '%{http_code} %{size_download}\\n' http://localhost:$port/video.mp4
  curl -s  http://localhost:$port/video.mp4/mp4hls/index.m3u8         # HLS playlist (docs/video.md)
  curl -s  http://localhost:$port/video.mp4/mp4hls/seg-0.ts -o seg-0.ts && ffprobe -hide_banner seg-0.ts 2>&1 | grep Stream
  curl -s  http://$admin/metrics | grep refract_bus

storgate's S3 API on 127.0.0.1:9000 (docs/storgate.md), and its landing zone:

  export AWS_ACCESS_KEY_ID=refract AWS_SECRET_ACCESS_KEY=refract-change-this-secret AWS_DEFAULT_REGION=ap-northeast-2
  aws --endpoint-url http://127.0.0.1:9000 s3 cp /tmp/refract-sample-origin/photo.jpg s3://image_landing_bucket/image_landing/p.jpg
  pkill -USR1 -f refract-storgate-scheduler  # run the landing zone's batch now: p.jpg moves to /tmp/refract-storgate/service

Ctrl-C stops everything.
MSG
wait
