#!/bin/bash
# run.sh — `make run`: generate sample media, start the single-node stack
# (gateway + image worker) in the foreground with conf/refract.yaml, restart
# a worker that dies, stop everything on Ctrl-C.
set -u
cd "$(dirname "$0")/.."
CONF=${CONF:-conf/refract.yaml}
ORIGIN=/tmp/refract-sample-origin
BIN=build/bin

mkdir -p "$ORIGIN"
if [ ! -s "$ORIGIN/photo.jpg" ]; then
    echo "run: generating sample media in $ORIGIN"
    ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=2400x1600 -frames:v 1 "$ORIGIN/.photo.png"
    vips copy "$ORIGIN/.photo.png" "$ORIGIN/photo.jpg[Q=90]"   # a JPEG written by libvips
    vips copy "$ORIGIN/.photo.png" "$ORIGIN/photo.png"
    rm -f "$ORIGIN/.photo.png"
fi
if [ ! -s "$ORIGIN/video.mp4" ]; then
    ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 \
        -t 20 -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest "$ORIGIN/video.mp4"
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
# The worker is supervised: if it dies (crash, kill -9) it is started again.
# Ctrl-C reaches the whole process group, the worker included; a worker that
# exits cleanly, or a TERM from the trap below, ends the loop.
(
    stop=0
    child=
    trap 'stop=1; [ -n "$child" ] && kill -TERM $child 2>/dev/null' TERM INT
    while [ $stop -eq 0 ]; do
        "$BIN/refract-image-worker" -c "$CONF" &
        child=$!
        wait $child
        rc=$?
        # Exit 0 is a clean stop someone asked for (Ctrl-C reaches the
        # worker too): only crashes and kills are restarted.
        [ $stop -eq 1 ] || [ $rc -eq 0 ] && break
        echo "run: image worker exited ($rc); restarting in 1s" >&2
        sleep 1
    done
    wait $child 2>/dev/null
) &
pids+=($!)

for _ in $(seq 50); do
    curl -fs "http://$admin/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
cat <<MSG

refract is running (gateway :$port, admin $admin). Try:

  curl -si http://localhost:$port/hello.txt
  curl -s  http://localhost:$port/photo.jpg/dims/resize/500x500 -o small.jpg && vipsheader small.jpg
  curl -s  http://localhost:$port/photo.jpg/dims/resize/300x300/format/webp/quality/60 -o small.webp && vipsheader small.webp
  curl -s  http://localhost:$port/photo.png/dims/format/jpeg/quality/50 -o q50.jpg && vipsheader q50.jpg
  curl -si http://localhost:$port/photo.jpg/dims/resize/abc            # 400 with a one-line reason
  curl -s  --http2-prior-knowledge -o /dev/null -w '%{http_version} %{http_code}\\n' http://localhost:$port/video.mp4
  curl -s  -r 0-99 -o /dev/null -w '%{http_code} %{size_download}\\n' http://localhost:$port/video.mp4
  curl -s  http://$admin/metrics | grep refract_bus

Ctrl-C stops everything.
MSG
wait
