#!/bin/bash
# bench/video.sh — latency of refract's video functions (gateway + one video
# worker) against the ffmpeg command a site would otherwise run for the same
# answer, on the same input and the same CPUs, one request at a time:
#   1. /v.mp4/mp4hls/index.m3u8      vs ffmpeg -i v.mp4 -c copy -f hls -hls_time 10
#                                        -hls_playlist_type vod (the whole file: the
#                                        CLI must segment everything to have a playlist)
#   2. /v.mp4/mp4hls/seg-3.ts (30-40 s) vs the same whole-file HLS run, and vs
#                                        ffmpeg -ss 30 -t 10 -i v.mp4 -c copy -f mpegts
#   1d/2d. the same for f.mp4, the same streams fragmented (moof boxes, as ffmpeg's
#      frag_keyframe and refract's streamed transcodes write them): index.m3u8 and seg-3.ts vs
#      ffmpeg -f hls of the whole f.mp4 and ffmpeg -ss 30 -t 10 -i f.mp4 -f mpegts
#   2c. /h.mp4/mp4hls/seg-3.m4s (the same 60 s as HEVC: fMP4 after init.mp4) vs
#      ffmpeg -ss 30 -t 10 -i h.mp4 -c copy -f mp4 -movflags frag_keyframe+empty_moov
#   3. /v.mp4/thumbnail/30           vs ffmpeg -ss 30 -i v.mp4 -frames:v 1 out.jpg;
#      and the bytes an http:// origin (nginx, vhost cache off) sends for one
#      thumbnail, as a share of the file
#   4. /v.mp4?trimming=10-20         vs ffmpeg -ss 10 -to 20 -i v.mp4 -c copy
#                                        -movflags +faststart out.mp4
#   4b. /v.mp4?trimming=11.5-19.5 (cut on frames: the partial groups at both
#      cuts re-encoded, the rest copied) vs ffmpeg -ss 11.5 -to 19.5 -i v.mp4
#      -c:v libx264 -preset veryfast -crf 18 -c:a copy (the CLI's frame-accurate
#      trim re-encodes the whole range), and vs row 4's copy
#   3b. /v.mp4/sprite/2/5x6/160x90/0.jpg (one sheet of 30 tiles, a frame every 2 s) vs
#      ffmpeg -i v.mp4 -vf fps=1/2,scale=160:90,tile=5x6 -frames:v 1 out.jpg
#   4c. /hc.mp4?trimming=11.5-19.5 (the same 60 s as HEVC in closed groups, cut on frames:
#      libx265 re-encodes the partial groups) vs ffmpeg -ss 11.5 -to 19.5 -i hc.mp4
#      -c:v libx265 -preset veryfast -crf 18 -c:a copy
#   6. /v.mp4/hls/720p/seg-3.ts (progressive HLS: 30-40 s transcoded now, 720p, CRF 23
#      capped at 2800k, AAC 128k) vs ffmpeg -ss 30 -t 10 -i v.mp4 with the same libx264 and
#      AAC settings to MPEG-TS (the same 10 s transcoded by the CLI)
#   7. /v.mp4/mp4/360p (transcoding, streamed as fragmented MP4 while it is made) vs ffmpeg -i v.mp4
#      with the same libx264/AAC settings to a fragmented MP4 (-movflags frag_keyframe+empty_moov):
#      the whole answer, and the time until the first media fragment (the first moof) reaches the
#      client — a player's start — for both (ffmpeg writing to a pipe); VIDEO_TX_RUNS runs (3):
#      each is a whole transcode (needs bus.spool_dir: not with VIDEO_SPOOL=0)
#   5. a 10-minute video: seg-1, the middle segment and the last full one,
#      against ffmpeg -ss T -t 10 -c copy -f mpegts at the same times; the ratio
#      last/first says whether a segment costs more the further in it is
# refract is timed with curl (%{time_total}, output to /dev/null), ffmpeg by
# the wall clock around the process (its start-up included: printed apart).
# Every figure is the median of VIDEO_RUNS runs (refract and ffmpeg
# alternating); each row starts with one unmeasured run of both. Every
# refract answer is uncached: the vhosts have `cache: {enable: false}`, and
# the worker runs with `video_worker.index_cache: 0`, so each request reads
# and parses the moov again ("cold"). Rows marked "(index cached)" come from
# a second worker with index_cache 256 after one playlist request ("warm").
#
#   bench/video.sh                       (~25 s; ~70 s the first time, making the corpus)
#   VIDEO_RUNS=3 VIDEO_LONG=0 bench/video.sh
#   bench/run.sh video                   (adds its rows to the ratio table)
#
# Knobs: VIDEO_RUNS (7), VIDEO_JOBS (worker jobs, 2), VIDEO_LONG=0 (skip the
# 10-minute video), VIDEO_WARM=0 (skip the index-cached rows), VIDEO_SPOOL=0
# (trims come back as bytes over the bus instead of through bus.spool_dir),
# VIDEO_READ_AHEAD (video_worker.read_ahead, e.g. 64KB: the least one range
# read of an http:// source asks for; the worker's default is 1MB).
#
# Corpus (generated once, cached in build/bench-corpus/video/): a 60 s
# 1280x720 30 fps H.264 (x264 veryfast, a keyframe every 2 s) + AAC
# (sine, 48 kHz) faststart MP4 from ffmpeg testsrc2, the same 60 s as HEVC
# (x265 ultrafast, a keyframe every 2 s), and the H.264 one at 640x360
# for 10 minutes (smaller, so that it is made in well under a minute).
#
# Exit status: 0 when every contender ran (whatever the ratios), 2 when one
# failed or gave a wrong answer (checked before any timing).
set -u
. "$(dirname "$0")/lib.sh"

RUNS=${VIDEO_RUNS:-7}
JOBS=${VIDEO_JOBS:-2}
LONG=${VIDEO_LONG:-1}
WARM=${VIDEO_WARM:-1}
READ_AHEAD=${VIDEO_READ_AHEAD:-} # video_worker.read_ahead (e.g. 64KB); empty: the worker's default (1MB)
SPOOL=""
[ "${VIDEO_SPOOL:-1}" = 0 ] || SPOOL=/dev/shm/refract-bench-video-$$
CORPUS=$(realpath -m "${BENCH_CORPUS_DIR:-$ROOT/build/bench-corpus}/video")
HTTP_HOST=http-origin.bench
SHORT=v60-1280x720.mp4
HEVCF=h60-1280x720.mp4
HEVCC=hc60-1280x720.mp4
LONGF=v600-640x360.mp4

bench_init video
[ -z "$SPOOL" ] || bench_track_dir "$SPOOL"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "VIDEO_RUNS: '$RUNS' is not a positive number"
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "VIDEO_JOBS: '$JOBS' is not a positive number"
need ffmpeg ffprobe nginx curl ss awk od dd
[ -x "$BIN/refract-gateway" ] || die "$BIN/refract-gateway is missing: run make"
[ -x "$BIN/refract-video-worker" ] || die "$BIN/refract-video-worker is missing: run make"
RAW=${BENCH_RAW:-$RESULTS_DIR/video-$(date +%Y%m%d-%H%M%S).log}
: >"$RAW"
RAW=$(realpath "$RAW")
T_START=$(date +%s)

# ---- corpus -------------------------------------------------------------------------------
# gen_video NAME WxH SECONDS: testsrc2 + sine, x264 veryfast, a keyframe every
# 2 s (30 fps, -g 60, no scene cuts), AAC 128k, faststart
gen_video() {
    [ -s "$CORPUS/$1" ] && return 0
    echo "video: generating $CORPUS/$1 ($2, $3 s; once)"
    mkdir -p "$CORPUS"
    ffmpeg -nostdin -v error -y -f lavfi -i "testsrc2=size=$2:rate=30:duration=$3" \
        -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=$3" \
        -c:v libx264 -preset veryfast -pix_fmt yuv420p -g 60 -keyint_min 60 -sc_threshold 0 \
        -c:a aac -b:a 128k -movflags +faststart -f mp4 "$CORPUS/$1.part" 2>>"$RAW" ||
        die "cannot generate $1 (see $RAW)"
    mv "$CORPUS/$1.part" "$CORPUS/$1"
}
gen_video "$SHORT" 1280x720 60
[ "$LONG" = 0 ] || gen_video "$LONGF" 640x360 600
if [ ! -s "$CORPUS/$HEVCF" ]; then # the same pictures and sound as HEVC (x265's open groups of pictures)
    echo "video: generating $CORPUS/$HEVCF (HEVC of $SHORT; once)"
    ffmpeg -nostdin -v error -y -i "$CORPUS/$SHORT" -c:v libx265 -preset ultrafast \
        -x265-params log-level=error:keyint=60:min-keyint=60:scenecut=0 -c:a copy -movflags +faststart \
        -f mp4 "$CORPUS/$HEVCF.part" 2>>"$RAW" || die "cannot generate $HEVCF (see $RAW)"
    mv "$CORPUS/$HEVCF.part" "$CORPUS/$HEVCF"
fi
if [ ! -s "$CORPUS/$HEVCC" ]; then # the same again, closed groups of pictures (what frame cuts need)
    echo "video: generating $CORPUS/$HEVCC (HEVC of $SHORT, closed GOPs; once)"
    ffmpeg -nostdin -v error -y -i "$CORPUS/$SHORT" -c:v libx265 -preset ultrafast \
        -x265-params log-level=error:keyint=60:min-keyint=60:scenecut=0:open-gop=0 -c:a copy -movflags +faststart \
        -f mp4 "$CORPUS/$HEVCC.part" 2>>"$RAW" || die "cannot generate $HEVCC (see $RAW)"
    mv "$CORPUS/$HEVCC.part" "$CORPUS/$HEVCC"
fi

WWW=$TMP/www # the file:// origin and nginx's root (readable by nginx's workers)
mkdir -p "$WWW"
cp "$CORPUS/$SHORT" "$WWW/v.mp4"
cp "$CORPUS/$HEVCF" "$WWW/h.mp4"
cp "$CORPUS/$HEVCC" "$WWW/hc.mp4"
ffmpeg -nostdin -v error -y -i "$WWW/v.mp4" -c copy -movflags +frag_keyframe+empty_moov+default_base_moof \
    "$WWW/f.mp4" 2>>"$RAW" || die "cannot make the fragmented f.mp4 (see $RAW)"
[ "$LONG" = 0 ] || cp "$CORPUS/$LONGF" "$WWW/long.mp4"
chmod 755 "$WWW"
chmod 644 "$WWW"/*
OUT=/dev/shm/refract-bench-video-out-$$ # ffmpeg's outputs, in memory as curl's go to /dev/null
bench_track_dir "$OUT"
mkdir -p "$OUT"

probe() { # FILE ENTRIES: ffprobe's compact output, one value per line
    ffprobe -v error -show_entries "$2" -of default=nw=1:nk=1 "$1" 2>/dev/null
}
fsize() { stat -c %s "$1"; }
V_SIZE=$(fsize "$WWW/v.mp4")
V_DUR=$(probe "$WWW/v.mp4" format=duration)
echo "video: input $SHORT: $(probe "$WWW/v.mp4" stream=codec_name | tr '\n' '+' | sed 's/+$//')," \
    "$(probe "$WWW/v.mp4" stream=width,height | tr '\n' 'x' | sed 's/x$//'), ${V_DUR%%.*} s," \
    "$(awk -v s="$V_SIZE" 'BEGIN{printf "%.1f", s / 1048576}') MB"
if [ "$LONG" != 0 ]; then
    L_SIZE=$(fsize "$WWW/long.mp4")
    L_DUR=$(probe "$WWW/long.mp4" format=duration)
    echo "video: input $LONGF: 640x360, ${L_DUR%%.*} s, $(awk -v s="$L_SIZE" 'BEGIN{printf "%.1f", s / 1048576}') MB"
fi

# ---- servers ------------------------------------------------------------------------------
P_ORIGIN=$(free_port)
P_GW=$(free_port)
P_ADMIN=$(free_port)
P_BUS=$(free_port)
P_WMET=$(free_port)

# the http:// origin: nginx serving $WWW, logging the bytes it sends per request
mkdir -p "$TMP/origin/logs"
{
    nginx_conf_head 1
    cat <<EOF
http {
    log_format bytes '\$request_uri \$status \$body_bytes_sent "\$http_range"';
    access_log $TMP/origin/logs/access.log bytes;
    sendfile on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$P_ORIGIN;
        root $WWW;
    }
}
EOF
} >"$TMP/origin/nginx.conf"
nginx_start "$TMP/origin"
OR_PID=$NGINX_PID
ACCESS=$TMP/origin/logs/access.log

refract_conf() { # FILE INDEX_CACHE
    cat >"$1" <<EOF
gateway:
  listen: "127.0.0.1:$P_GW"
  admin_listen: "127.0.0.1:$P_ADMIN"
  threads: 2
  access_log: false
bus:
  endpoint: "tcp://127.0.0.1:$P_BUS"
$([ -n "$SPOOL" ] && echo "  spool_dir: \"$SPOOL\"")
vhosts:
  - name: localhost
    default: true
    origin: "file://$WWW"
    cache: { enable: false }   # every answer is made, none served from the edge cache
    hls: { duration: 10 }      # progressive HLS segments of 10 s, as row 6's ffmpeg makes
  - name: $HTTP_HOST
    origin: "http://127.0.0.1:$P_ORIGIN"
    cache: { enable: false }   # every range read of the worker goes to nginx
video_worker:
  metrics_listen: "127.0.0.1:$P_WMET"
  jobs: $JOBS
  index_cache: $2
$([ -n "$READ_AHEAD" ] && echo "  read_ahead: $READ_AHEAD")
log:
  level: info                  # the worker's line per job: read=BYTES ... MS
EOF
}
refract_conf "$TMP/refract.yaml" 0
gateway_start "$TMP/refract.yaml" "$TMP/gateway.log"
WLOG=$TMP/worker.log
worker_start() { # CONF LOG: sets WK_PID; returns when the worker answers a playlist
    "$BIN/refract-video-worker" -c "$1" >>"$2" 2>&1 &
    WK_PID=$!
    bench_track "$WK_PID"
    local code=""
    for _ in $(seq 100); do
        kill -0 "$WK_PID" 2>/dev/null || die "refract-video-worker exited ($(tail -5 "$2"))"
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_GW/v.mp4/mp4hls/index.m3u8")
        [ "$code" = 200 ] && return 0
        sleep 0.2
    done
    die "refract did not answer a playlist with 200 (last: $code; $(tail -3 "$TMP/gateway.log" "$2"))"
}
wait_http "http://127.0.0.1:$P_ORIGIN/v.mp4" "$OR_PID" 15 || die "the nginx origin did not start ($(cat "$TMP/origin/logs/"*.log))"
wait_http "http://127.0.0.1:$P_GW/v.mp4" "$GW_PID" 10 || die "refract-gateway did not start ($(cat "$TMP/gateway.log"))"
worker_start "$TMP/refract.yaml" "$WLOG"

# ---- contenders -----------------------------------------------------------------------------
GW=http://127.0.0.1:$P_GW
# rf_get PATH OUT [HOST]: fetch into OUT (headers in OUT.h); dies unless 200
rf_get() {
    local code
    code=$(curl -s -H "Host: ${3:-localhost}" -D "$2.h" -o "$2" -w '%{http_code}' "$GW$1")
    [ "$code" = 200 ] || die "refract: $1 (Host ${3:-localhost}) answered $code: $(head -c 300 "$2")"
    if grep -qi '^cache-status:.*hit' "$2.h"; then die "refract: $1 was served from the edge cache: $(grep -i '^cache-status' "$2.h")"; fi
    if grep -qi '^x-refract-fallback' "$2.h"; then die "refract: $1 sent the original: $(grep -i '^x-refract-fallback' "$2.h")"; fi
}
# rf_ms PATH [HOST]: one request's time_total in ms; dies unless 200
RF_HOST=localhost # the Host rf_ms sends by default
rf_ms() {
    local out
    out=$(curl -s -H "Host: ${2:-$RF_HOST}" -o /dev/null -w '%{http_code} %{time_total} %{size_download}' "$GW$1")
    [ "${out%% *}" = 200 ] || die "refract: $1 answered ${out%% *} during timing$(dead_note)"
    echo "$1 $out" >>"$RAW"
    awk -v t="$(cut -d' ' -f2 <<<"$out")" 'BEGIN{printf "%.2f", t * 1000}'
}
# peer_ms DIR CMD...: runs CMD in a fresh DIR, prints its wall time in ms; dies if it fails
peer_ms() {
    local d=$1 t0 t1
    shift
    rm -rf "$d" && mkdir -p "$d"
    t0=$EPOCHREALTIME
    (cd "$d" && "$@" </dev/null >/dev/null 2>"$d.err") || die "ffmpeg failed: $* ($(tail -3 "$d.err"))"
    t1=$EPOCHREALTIME
    echo "peer $* ${t0}-${t1}" >>"$RAW"
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", (b - a) * 1000}'
}
dead_note() {
    kill -0 "$GW_PID" 2>/dev/null || echo "; refract-gateway died: $(tail -3 "$TMP/gateway.log" | tr '\n' '|')"
    kill -0 "$WK_PID" 2>/dev/null || echo "; refract-video-worker died: $(tail -3 "$WLOG" | tr '\n' '|')"
}

FF=(ffmpeg -nostdin -hide_banner -v error -y)
HLS_ALL=("${FF[@]}" -i "$WWW/v.mp4" -c copy -f hls -hls_time 10 -hls_playlist_type vod index.m3u8)
SEG_SS=("${FF[@]}" -ss 30 -t 10 -i "$WWW/v.mp4" -c copy -f mpegts out.ts)
HLS_ALL_F=("${FF[@]}" -i "$WWW/f.mp4" -c copy -f hls -hls_time 10 -hls_playlist_type vod index.m3u8)
SEG_SS_F=("${FF[@]}" -ss 30 -t 10 -i "$WWW/f.mp4" -c copy -f mpegts out.ts)
SEG_FMP4=("${FF[@]}" -ss 30 -t 10 -i "$WWW/h.mp4" -c copy -f mp4 -movflags frag_keyframe+empty_moov out.mp4)
THUMB=("${FF[@]}" -ss 30 -i "$WWW/v.mp4" -frames:v 1 out.jpg)
SPRITE=("${FF[@]}" -i "$WWW/v.mp4" -vf fps=1/2,scale=160:90,tile=5x6 -frames:v 1 out.jpg)
TRIM=("${FF[@]}" -ss 10 -to 20 -i "$WWW/v.mp4" -c copy -movflags +faststart out.mp4)
TRIMX=("${FF[@]}" -ss 11.5 -to 19.5 -i "$WWW/v.mp4" -c:v libx264 -preset veryfast -crf 18 -c:a copy -movflags +faststart out.mp4)
TRIMH=("${FF[@]}" -ss 11.5 -to 19.5 -i "$WWW/hc.mp4" -c:v libx265 -preset veryfast -crf 18 -x265-params log-level=error
    -c:a copy -movflags +faststart out.mp4)
PHLS=("${FF[@]}" -ss 30 -t 10 -i "$WWW/v.mp4" -vf scale=-2:720 -c:v libx264 -preset veryfast -crf 23 -maxrate 2800k
    -bufsize 5600k -g 60 -c:a aac -b:a 128k -f mpegts out.ts)
long_ss() { echo "${FF[*]} -ss $1 -t 10 -i $WWW/long.mp4 -c copy -f mpegts out.ts"; }
TX=("${FF[@]}" -i "$WWW/v.mp4" -vf scale=-2:360 -c:v libx264 -preset veryfast -crf 23 -g 60 -c:a aac -b:a 128k
    -f mp4 -movflags frag_keyframe+empty_moov)
TX_RUNS=${VIDEO_TX_RUNS:-3}

# ---- every answer checked before any timing ---------------------------------------------------
near() { awk -v a="$1" -v b="$2" -v e="$3" 'BEGIN{d = a - b; exit !(d <= e && d >= -e)}'; }
# check_playlist FILE SEGMENTS WHAT: an HLS VOD playlist of SEGMENTS segments adding up to the video
check_playlist() {
    local n sum
    { grep -q '^#EXTM3U' "$1" && grep -q '^#EXT-X-ENDLIST' "$1"; } || die "$3: not a complete VOD playlist: $(head -c 200 "$1")"
    n=$(grep -c '^#EXTINF:' "$1")
    sum=$(awk -F'[:,]' '/^#EXTINF:/ {s += $2} END{printf "%.3f", s}' "$1")
    [ "$n" = "$2" ] || die "$3: $n segments, not $2"
    near "$sum" "$4" 0.2 || die "$3: the segments add up to $sum s, not $4"
}
# check_av FILE SECONDS WHAT [VCODEC]: VCODEC (h264) + aac, lasting SECONDS (±0.35: a -c copy cut keeps whole audio packets and GOPs)
check_av() {
    local c d
    c=$(probe "$1" stream=codec_name | sort -u | tr '\n' ' ')
    [ "$c" = "aac ${4:-h264} " ] || die "$3: streams are '$c', not ${4:-h264} + aac"
    d=$(probe "$1" format=duration)
    near "$d" "$2" 0.35 || die "$3: lasts $d s, not $2"
}
# check_jpeg FILE WxH WHAT
check_jpeg() {
    local c
    c=$(probe "$1" stream=codec_name,width,height | head -3 | tr '\n' ' ')
    [ "$c" = "mjpeg ${2/x/ } " ] || die "$3: not a $2 JPEG ($c)"
}
# box_order FILE: the first top-level MP4 boxes
box_order() {
    local f=$1 off=0 n sz out=""
    n=$(fsize "$f")
    for _ in 1 2 3 4 5 6; do
        [ $((off + 8)) -le "$n" ] || break
        sz=$(od -An -tu4 --endian=big -j "$off" -N4 "$f" | tr -d ' ')
        out+="$(dd if="$f" bs=1 skip=$((off + 4)) count=4 2>/dev/null) "
        [ "$sz" -ge 8 ] || break
        off=$((off + sz))
    done
    echo "$out"
}
check_faststart() {
    local b
    b=$(box_order "$1")
    [[ $b == *moov*mdat* ]] || die "$2: not faststart (top-level boxes: $b)"
}
psnr() { # A B: PSNR (dB) of two images of one size
    ffmpeg -nostdin -v info -i "$1" -i "$2" -lavfi psnr -f null - 2>&1 | sed -n 's/.*average:\([0-9.inf]*\).*/\1/p' | tail -1
}

C=$TMP/check
mkdir -p "$C"
NSEG=$(awk -v d="$V_DUR" 'BEGIN{printf "%d", d / 10 + 0.999}')
rf_get /v.mp4/mp4hls/index.m3u8 "$C/index.m3u8"
check_playlist "$C/index.m3u8" "$NSEG" "refract index.m3u8" "$V_DUR"
rf_get /v.mp4/mp4hls/seg-3.ts "$C/seg-3.ts"
check_av "$C/seg-3.ts" 10 "refract seg-3.ts"
rf_get /v.mp4/mp4hls/seg-3.ts "$C/seg-3b.ts" # twice: the second must not be a cache hit either
cmp -s "$C/seg-3.ts" "$C/seg-3b.ts" || die "refract: two requests for seg-3.ts answered different bytes"
rf_get /f.mp4/mp4hls/index.m3u8 "$C/f.m3u8"
check_playlist "$C/f.m3u8" "$NSEG" "refract f.mp4 index.m3u8" "$V_DUR"
rf_get /f.mp4/mp4hls/seg-3.ts "$C/f-seg-3.ts"
check_av "$C/f-seg-3.ts" 10 "refract f.mp4 seg-3.ts"
rf_get /h.mp4/mp4hls/index.m3u8 "$C/h.m3u8"
grep -q '^#EXT-X-MAP:URI="init.mp4"' "$C/h.m3u8" || die "refract: the HEVC playlist has no EXT-X-MAP: $(head -c 300 "$C/h.m3u8")"
rf_get /h.mp4/mp4hls/init.mp4 "$C/h-init.mp4"
rf_get /h.mp4/mp4hls/seg-3.m4s "$C/h-seg-3.m4s"
cat "$C/h-init.mp4" "$C/h-seg-3.m4s" >"$C/h-seg-3.mp4"
[ "$(probe "$C/h-seg-3.mp4" stream=codec_name | sort -u | tr '\n' ' ')" = "aac hevc " ] ||
    die "refract h.mp4 seg-3.m4s: not HEVC + AAC after init.mp4"
# 300 pictures (30-40 s); alone, the first few are not decodable: x265's open groups' leading
# pictures refer to seg-2's, which a player has just played
[ "$(ffprobe -v error -select_streams v -count_packets -show_entries stream=nb_read_packets -of csv=p=0 "$C/h-seg-3.mp4")" = 300 ] ||
    die "refract h.mp4 seg-3.m4s: not the 300 pictures of 30-40 s"
rf_get /v.mp4/thumbnail/30 "$C/thumb.jpg"
check_jpeg "$C/thumb.jpg" 1280x720 "refract thumbnail/30"
rf_get "/v.mp4?trimming=10-20" "$C/trim.mp4"
check_av "$C/trim.mp4" 10 "refract trimming=10-20"
check_faststart "$C/trim.mp4" "refract trimming=10-20"
TRIM_NOTE=$(tr -d '\r' <"$C/trim.mp4.h" | sed -n 's/^[Xx]-[Rr]efract-[Nn]ote: //p')
rf_get "/v.mp4?trimming=11.5-19.5" "$C/trimx.mp4"
check_av "$C/trimx.mp4" 8 "refract trimming=11.5-19.5"
TRIMX_NOTE=$(tr -d '\r' <"$C/trimx.mp4.h" | sed -n 's/^[Xx]-[Rr]efract-[Nn]ote: //p')
case "$TRIMX_NOTE" in "cut on frames: 11.500-19.500;"*) ;; *) die "refract trimming=11.5-19.5 was not cut on frames: $TRIMX_NOTE" ;; esac
rf_get "/hc.mp4?trimming=11.5-19.5" "$C/trimh.mp4"
check_av "$C/trimh.mp4" 8 "refract hc.mp4?trimming=11.5-19.5" hevc
TRIMH_NOTE=$(tr -d '\r' <"$C/trimh.mp4.h" | sed -n 's/^[Xx]-[Rr]efract-[Nn]ote: //p')
case "$TRIMH_NOTE" in "cut on frames: 11.500-19.500;"*) ;; *) die "refract hc.mp4?trimming=11.5-19.5 was not cut on frames: $TRIMH_NOTE" ;; esac
if [ -n "$SPOOL" ]; then
    rf_get /v.mp4/mp4/360p "$C/tx.mp4"
    grep -qi '^cache-status:.*detail=streamed' "$C/tx.mp4.h" || die "refract /v.mp4/mp4/360p was not streamed: $(grep -i '^cache-status' "$C/tx.mp4.h")"
    check_av "$C/tx.mp4" "$V_DUR" "refract /v.mp4/mp4/360p"
    [ "$(probe "$C/tx.mp4" stream=height | sort -u | tr '\n' ' ')" = "360 " ] || die "refract /v.mp4/mp4/360p is not 360 high"
    peer_ms "$OUT/tx" "${TX[@]}" out.mp4 >/dev/null
    check_av "$OUT/tx/out.mp4" "$V_DUR" "ffmpeg libx264 360p fragmented"
fi
for p in /v.mp4/mp4hls/index.m3u8 /v.mp4/mp4hls/seg-3.ts /v.mp4/thumbnail/30; do
    rf_get "$p" "$C/http.out" "$HTTP_HOST"
    cmp -s "$C/http.out" "$C/$(basename "$p" | sed 's/^30$/thumb.jpg/')" || die "refract: $p differs between the file:// and the http:// origin"
done

peer_ms "$OUT/hls" "${HLS_ALL[@]}" >/dev/null
check_playlist "$OUT/hls/index.m3u8" "$NSEG" "ffmpeg -f hls" "$V_DUR"
check_av "$OUT/hls/index3.ts" 10 "ffmpeg -f hls index3.ts"
peer_ms "$OUT/seg" "${SEG_SS[@]}" >/dev/null
check_av "$OUT/seg/out.ts" 10 "ffmpeg -ss 30 -t 10 -f mpegts"
peer_ms "$OUT/segF" "${SEG_SS_F[@]}" >/dev/null
check_av "$OUT/segF/out.ts" 10 "ffmpeg -ss 30 -t 10 -i f.mp4 -f mpegts"
peer_ms "$OUT/segf" "${SEG_FMP4[@]}" >/dev/null
[ "$(probe "$OUT/segf/out.mp4" stream=codec_name | sort -u | tr '\n' ' ')" = "aac hevc " ] ||
    die "ffmpeg -ss 30 -t 10 -f mp4 (fragmented): not HEVC + AAC"
peer_ms "$OUT/thumb" "${THUMB[@]}" >/dev/null
check_jpeg "$OUT/thumb/out.jpg" 1280x720 "ffmpeg -ss 30 -frames:v 1"
rf_get /v.mp4/sprite/2/5x6/160x90/0.jpg "$C/sprite.jpg"
check_jpeg "$C/sprite.jpg" 800x540 "refract sprite/2/5x6/160x90/0.jpg"
peer_ms "$OUT/sprite" "${SPRITE[@]}" >/dev/null
check_jpeg "$OUT/sprite/out.jpg" 800x540 "ffmpeg fps=1/2,scale=160:90,tile=5x6"
peer_ms "$OUT/trim" "${TRIM[@]}" >/dev/null
check_av "$OUT/trim/out.mp4" 10 "ffmpeg -ss 10 -to 20 -c copy"
check_faststart "$OUT/trim/out.mp4" "ffmpeg -ss 10 -to 20 -movflags +faststart"
peer_ms "$OUT/trimx" "${TRIMX[@]}" >/dev/null
peer_ms "$OUT/trimh" "${TRIMH[@]}" >/dev/null
check_av "$OUT/trimh/out.mp4" 8 "ffmpeg -ss 11.5 -to 19.5 libx265" hevc
rf_get /v.mp4/hls/720p/seg-3.ts "$C/phls-3.ts"
check_av "$C/phls-3.ts" 10 "refract hls/720p/seg-3.ts"
peer_ms "$OUT/phls" "${PHLS[@]}" >/dev/null
check_av "$OUT/phls/out.ts" 10 "ffmpeg -ss 30 -t 10 libx264 -f mpegts"
check_av "$OUT/trimx/out.mp4" 8 "ffmpeg -ss 11.5 -to 19.5 -c:v libx264"
# the thumbnail is the frame at 30 s: against a lossless decode of 30 s and of 30.5 s
{ "${FF[@]}" -ss 30 -i "$WWW/v.mp4" -frames:v 1 "$C/ref30.png" && "${FF[@]}" -ss 30.5 -i "$WWW/v.mp4" -frames:v 1 "$C/ref305.png"; } ||
    die "ffmpeg cannot decode reference frames"
P_AT=$(psnr "$C/thumb.jpg" "$C/ref30.png")
P_OFF=$(psnr "$C/thumb.jpg" "$C/ref305.png")
awk -v a="$P_AT" -v b="$P_OFF" 'BEGIN{exit !(a > 30 && a > b + 3)}' ||
    die "refract thumbnail/30 is not the frame at 30 s (PSNR $P_AT dB against it, $P_OFF dB against 30.5 s)"
if [ "$LONG" != 0 ]; then
    LNSEG=$(awk -v d="$L_DUR" 'BEGIN{printf "%d", d / 10 + 0.999}')
    rf_get /long.mp4/mp4hls/index.m3u8 "$C/long.m3u8"
    check_playlist "$C/long.m3u8" "$LNSEG" "refract long.mp4 index.m3u8" "$L_DUR"
    LSEGS="1 $((LNSEG / 2)) $((LNSEG - 2))" # the start, the middle, the last full-length one
    for s in $LSEGS; do
        rf_get "/long.mp4/mp4hls/seg-$s.ts" "$C/long-$s.ts"
        check_av "$C/long-$s.ts" 10 "refract long.mp4 seg-$s.ts"
        # shellcheck disable=SC2046
        peer_ms "$OUT/long" $(long_ss $((s * 10))) >/dev/null
        check_av "$OUT/long/out.ts" 10 "ffmpeg -ss $((s * 10)) -t 10 long.mp4"
    done
fi
echo "video: checked: playlists of $NSEG segments adding up to ${V_DUR%%.*} s (refract and ffmpeg -f hls)," \
    "seg-3 and ffmpeg's segments h264+aac 10 s, thumbnails 1280x720 JPEG (refract's = the frame at 30 s:" \
    "PSNR ${P_AT%.*} dB, ${P_OFF%.*} dB against 30.5 s), trims 10 s faststart h264+aac (refract: $TRIM_NOTE)," \
    "file:// and http:// origins give the same bytes, no answer from the edge cache" \
    "$([ "$LONG" != 0 ] && echo "; long.mp4: $LNSEG segments, seg $LSEGS checked")"

# ---- timing -------------------------------------------------------------------------------
# worker_stats FROM_LINE: median job ms and read bytes of the worker's lines after FROM_LINE
worker_stats() {
    tail -n +"$(($1 + 1))" "$WLOG" | grep -E ' video .* 200 read=[0-9]+ out=[0-9]+ [0-9.]+ms' |
        sed -E 's/.* read=([0-9]+) out=[0-9]+ ([0-9.]+)ms.*/\1 \2/' | sort -k2 -g |
        awk '{r[NR] = $1; m[NR] = $2} END{ if (!NR) { print "-"; exit }
            k = int((NR + 1) / 2); printf "%.1f ms, read %.0f KB", m[k], r[k] / 1024 }'
}
wlines() { wc -l <"$WLOG"; }

declare -A RF FF_MS FF_WORK WK
# ffmpeg's start-up floor: a run that loads every library, opens a 1-frame
# lavfi source and writes nothing; run beside each peer run, so that
# FF_WORK (the median of peer - floor, paired run by run) estimates what the
# peer spends on the video itself
FLOOR=(ffmpeg -nostdin -hide_banner -v error -f lavfi -i nullsrc=s=16x16:d=0.04 -f null -)
FLOOR_ALL=()
# measure KEY RF_PATH [PEER_DIR PEER_CMD...]: RUNS alternating runs after one unmeasured
# run of each; sets RF[KEY] FF_MS[KEY] FF_WORK[KEY] (medians, ms) and WK[KEY] (the worker's view)
measure() {
    local key=$1 path=$2 rf=() ff=() work=() l0 snap v f
    shift 2
    rf_ms "$path" >/dev/null
    [ $# -gt 0 ] && peer_ms "$@" >/dev/null
    snap=$(proc_snapshot)
    local t0=$EPOCHREALTIME
    l0=$(wlines)
    for _ in $(seq "$RUNS"); do
        v=$(rf_ms "$path") || exit 2 # die in a $(...) ends only the subshell
        rf+=("$v")
        [ $# -gt 0 ] || continue
        v=$(peer_ms "$@") || exit 2
        ff+=("$v")
        f=$(peer_ms "$OUT/start" "${FLOOR[@]}") || exit 2
        FLOOR_ALL+=("$f")
        work+=("$(awk -v a="$v" -v b="$f" 'BEGIN{printf "%.2f", a - b}')")
    done
    RF[$key]=$(fmedian "${rf[@]}")
    FF_MS[$key]=$([ $# -gt 0 ] && fmedian "${ff[@]}" || echo -)
    FF_WORK[$key]=$([ $# -gt 0 ] && fmedian "${work[@]}" || echo -)
    WK[$key]=$(worker_stats "$l0")
    echo "---- $key: refract ${rf[*]} | ffmpeg ${ff[*]:-} | ffmpeg - floor ${work[*]:-} | worker ${WK[$key]}" >>"$RAW"
    local noise
    noise=$(foreign_cpu "$snap" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b - a + 0.01}')")
    [ -n "$noise" ] && NOISY="$NOISY $key:[$noise]"
    printf '   %-14s refract %s ms | ffmpeg %s ms%s\n' "$key" "$(tr ' ' / <<<"${rf[*]}")" "$(tr ' ' / <<<"${ff[*]:--}")" \
        "${noise:+  [other processes busy: $noise]}"
}

NOISY=""
machine_check
echo
echo "== video: latency per request, median of $RUNS; refract: gateway (2 threads) + 1 video worker (jobs $JOBS," \
    "index_cache 0), vhost cache off, file:// origin; ffmpeg $(ffmpeg -version | awk 'NR == 1 {print $3}'), wall time" \
    "of the process; $(nproc) CPUs shared =="

measure index /v.mp4/mp4hls/index.m3u8 "$OUT/hls" "${HLS_ALL[@]}"
measure seg3 /v.mp4/mp4hls/seg-3.ts "$OUT/seg" "${SEG_SS[@]}"
measure indexF /f.mp4/mp4hls/index.m3u8 "$OUT/hlsF" "${HLS_ALL_F[@]}"
measure seg3F /f.mp4/mp4hls/seg-3.ts "$OUT/segF" "${SEG_SS_F[@]}"
measure seg3f /h.mp4/mp4hls/seg-3.m4s "$OUT/segf" "${SEG_FMP4[@]}"
measure thumb /v.mp4/thumbnail/30 "$OUT/thumb" "${THUMB[@]}"
measure sprite /v.mp4/sprite/2/5x6/160x90/0.jpg "$OUT/sprite" "${SPRITE[@]}"
measure trim "/v.mp4?trimming=10-20" "$OUT/trim" "${TRIM[@]}"
measure trimx "/v.mp4?trimming=11.5-19.5" "$OUT/trimx" "${TRIMX[@]}"
measure trimh "/hc.mp4?trimming=11.5-19.5" "$OUT/trimh" "${TRIMH[@]}"
measure phls /v.mp4/hls/720p/seg-3.ts "$OUT/phls" "${PHLS[@]}"

# first_moof_ms CMD...: ms until CMD's output holds its first moof (its first media fragment,
# which the muxer writes once that fragment is whole); CMD is then stopped (for refract: the
# client leaves, and with the cache off the gateway cancels the job)
first_moof_ms() {
    local t0=$EPOCHREALTIME t1 fd pid
    exec {fd}< <(exec "$@" 2>/dev/null)
    pid=$!
    if ! LC_ALL=C grep -a -m1 -q moof <&"$fd"; then
        kill "$pid" 2>/dev/null
        die "no media fragment from: $*"
    fi
    t1=$EPOCHREALTIME
    kill "$pid" 2>/dev/null
    exec {fd}<&-
    wait "$pid" 2>/dev/null
    echo "first moof $* ${t0}-${t1}" >>"$RAW"
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", (b - a) * 1000}'
}
wait_idle_worker() { # the cancelled transcode's job ends before the next run starts
    local n0=$1
    for _ in $(seq 200); do
        [ "$(tail -n +"$((n0 + 1))" "$WLOG" | grep -c 'video transcode')" -ge 1 ] && return 0
        sleep 0.05
    done
    die "the worker did not end the cancelled transcode$(dead_note)"
}
if [ -n "$SPOOL" ]; then
    tx_rf=() tx_ff=() fm_rf=() fm_ff=()
    for i in $(seq 0 "$TX_RUNS"); do # run 0 unmeasured
        v=$(rf_ms /v.mp4/mp4/360p) || exit 2
        w=$(peer_ms "$OUT/tx" "${TX[@]}" out.mp4) || exit 2
        l0=$(wlines)
        x=$(first_moof_ms curl -sN -H "Host: localhost" "$GW/v.mp4/mp4/360p") || exit 2
        wait_idle_worker "$l0"
        y=$(first_moof_ms "${TX[@]}" pipe:1) || exit 2
        [ "$i" = 0 ] && continue
        tx_rf+=("$v") tx_ff+=("$w") fm_rf+=("$x") fm_ff+=("$y")
    done
    RF[tx]=$(fmedian "${tx_rf[@]}") FF_MS[tx]=$(fmedian "${tx_ff[@]}") FF_WORK[tx]=-
    RF[txfirst]=$(fmedian "${fm_rf[@]}") FF_MS[txfirst]=$(fmedian "${fm_ff[@]}") FF_WORK[txfirst]=-
    WK[tx]="whole: ${tx_rf[*]} / ${tx_ff[*]} ms" WK[txfirst]="first moof: ${fm_rf[*]} / ${fm_ff[*]} ms"
    printf '   %-14s refract %s ms | ffmpeg %s ms\n' tx "$(tr ' ' / <<<"${tx_rf[*]}")" "$(tr ' ' / <<<"${tx_ff[*]}")"
    printf '   %-14s refract %s ms | ffmpeg %s ms\n' txfirst "$(tr ' ' / <<<"${fm_rf[*]}")" "$(tr ' ' / <<<"${fm_ff[*]}")"
fi

# origin bytes through the http:// vhost (cache off): what nginx sent for one answer
origin_bytes() { # PATH: sets OB_BYTES OB_REQS
    local n0
    sleep 0.2
    n0=$(wc -l <"$ACCESS")
    rf_ms "$1" "$HTTP_HOST" >/dev/null
    sleep 0.3 # nginx logs a request when it is done
    read -r OB_REQS OB_BYTES < <(tail -n +"$((n0 + 1))" "$ACCESS" | awk '{n++; b += $3} END{printf "%d %d\n", n, b}')
    tail -n +"$((n0 + 1))" "$ACCESS" | sed "s|^|origin $1: |" >>"$RAW"
}
declare -A OBYTES OREQS
for k in index:/v.mp4/mp4hls/index.m3u8 seg3:/v.mp4/mp4hls/seg-3.ts thumb:/v.mp4/thumbnail/30 trim:/v.mp4?trimming=10-20; do
    origin_bytes "${k#*:}"
    OBYTES[${k%%:*}]=$OB_BYTES
    OREQS[${k%%:*}]=$OB_REQS
done
RF_HOST=$HTTP_HOST
measure thumb-http /v.mp4/thumbnail/30 # as row 3, through the http:// vhost
RF_HOST=localhost

if [ "$LONG" != 0 ]; then
    # shellcheck disable=SC2086
    set -- $LSEGS
    L_FIRST=$1 L_MID=$2 L_LAST=$3
    measure long-index /long.mp4/mp4hls/index.m3u8
    for s in $LSEGS; do
        # shellcheck disable=SC2046
        measure "long-seg-$s" "/long.mp4/mp4hls/seg-$s.ts" "$OUT/long" $(long_ss $((s * 10)))
    done
fi

# ---- the same with the index cached (a second worker, index_cache 256) ----------------------------
if [ "$WARM" != 0 ]; then
    bench_stop "$WK_PID"
    WLOG=$TMP/worker-warm.log
    refract_conf "$TMP/refract-warm.yaml" 256
    worker_start "$TMP/refract-warm.yaml" "$WLOG" # its first playlist of v.mp4 fills the index cache
    [ "$LONG" != 0 ] && rf_ms /long.mp4/mp4hls/index.m3u8 >/dev/null
    measure seg3-warm /v.mp4/mp4hls/seg-3.ts
    [ "$LONG" != 0 ] && measure "long-seg-$L_LAST-warm" "/long.mp4/mp4hls/seg-$L_LAST.ts"
    grep -E 'video hls segment .* index=read' "$WLOG" >/dev/null &&
        die "the index-cached worker read the index again for a segment: $(grep -E 'index=read' "$WLOG" | tail -1)"
fi

# ---- the table ----------------------------------------------------------------------------------
mark() { # VALUE TARGET("<= N" or "-")
    [ "$2" = - ] && { echo info; return; }
    awk -v v="$1" -v t="${2#<= }" 'BEGIN{print (v != "nan" && v + 0 <= t + 0) ? "PASS" : "ABOVE"}'
}
pct() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", 100 * a / b}'; }
# shellcheck disable=SC2059 # one format for every line of the table
FMT='%-50s %10s %10s %7s %8s  %-6s %9s | %s\n'
# row LABEL RF_KEY FF_KEY TARGET [SUMMARY_NAME]: a ratio row; the column
# "ex start" is refract / FF_WORK, an estimate of the ratio to ffmpeg's work
# without its start-up ("-" when that is under 1 ms: noise)
row() {
    local r
    r=$(fdiv "${RF[$2]}" "${FF_MS[$3]}")
    printf "$FMT" "$1" "${RF[$2]}" "${FF_MS[$3]}" "${r}x" "$4" "$(mark "$r" "$4")" \
        "$(awk -v r="${RF[$2]}" -v d="${FF_WORK[$3]}" 'BEGIN{if (d < 1) print "-"; else printf "%.2fx", r / d}')" "${WK[$2]}"
    [ -n "${5:-}" ] && summary "video $5" "$r" "$(tr -d ' ' <<<"$4")"
}
FF_START_MS=$(fmedian "${FLOOR_ALL[@]}")
echo
echo "median of $RUNS requests (refract: curl time_total; ffmpeg: the process's wall time, its start-up included: a 1-frame"
echo "lavfi null run, the floor, takes $FF_START_MS ms; 'ex start' = refract / median(ffmpeg - floor), paired run by run)"
echo "refract cold: index_cache 0, every request reads and parses the moov; vhost cache off"
printf "$FMT" "row: refract / ffmpeg" "refract ms" "ffmpeg ms" ratio target mark "ex start" "worker job (median): time, bytes read"
row "1 index.m3u8 / ffmpeg -f hls (whole file)" index index "<= 0.25" "index.m3u8: refract/ffmpeg-hls-whole (ms)"
row "2 seg-3.ts / ffmpeg -f hls (whole file)" seg3 index "<= 0.3" "seg-3.ts: refract/ffmpeg-hls-whole (ms)"
row "2 seg-3.ts / ffmpeg -ss 30 -t 10 -f mpegts" seg3 seg3 - "seg-3.ts: refract/ffmpeg-ss-mpegts (ms)"
row "1d fragmented index.m3u8 / ffmpeg -f hls (whole f.mp4)" indexF indexF "<= 0.25" "fragmented index.m3u8: refract/ffmpeg-hls-whole (ms)"
row "2d fragmented seg-3.ts / ffmpeg -ss 30 -t 10 -i f.mp4" seg3F seg3F - "fragmented seg-3.ts: refract/ffmpeg-ss-mpegts (ms)"
row "2c HEVC seg-3.m4s / ffmpeg -ss 30 -t 10 -f mp4 frag" seg3f seg3f - "HEVC fMP4 seg-3.m4s: refract/ffmpeg-ss-fmp4 (ms)"
row "3 thumbnail/30 / ffmpeg -ss 30 -frames:v 1" thumb thumb "<= 1.0" "thumbnail/30: refract/ffmpeg (ms)"
TB=$(pct "${OBYTES[thumb]}" "$V_SIZE")
printf "$FMT" "3 thumbnail/30 origin bytes (http://) / file" "$(awk -v b="${OBYTES[thumb]}" 'BEGIN{printf "%.2f MB", b / 1048576}')" \
    "$(awk -v b="$V_SIZE" 'BEGIN{printf "%.2f MB", b / 1048576}')" "$TB%" "<= 15%" "$(mark "$TB" "<= 15")" - \
    "${OREQS[thumb]} range requests; latency via http:// ${RF[thumb-http]} ms (${WK[thumb-http]})"
summary "video thumbnail/30: origin bytes / file size (http://, %)" "$TB" "<=15%"
row "3b sprite 5x6 every 2 s / ffmpeg fps=1/2,tile=5x6" sprite sprite - "sprite/2/5x6/160x90/0.jpg: refract/ffmpeg (ms)"
row "4 trimming=10-20 / ffmpeg -ss 10 -to 20 -c copy" trim trim - "trimming=10-20: refract/ffmpeg (ms)"
row "4b trimming=11.5-19.5 (frames) / ffmpeg -ss -to libx264" trimx trimx - "trimming=11.5-19.5 on frames: refract/ffmpeg-reencode (ms)"
row "4b trimming=11.5-19.5 (frames) / ffmpeg -c copy (row 4)" trimx trim - "trimming=11.5-19.5 on frames: refract/ffmpeg-copy (ms)"
row "4c HEVC trimming=11.5-19.5 (frames) / ffmpeg libx265" trimh trimh - "HEVC trimming=11.5-19.5 on frames: refract/ffmpeg-reencode (ms)"
if [ "$LONG" != 0 ]; then
    for s in $LSEGS; do
        row "5 10-min seg-$s.ts ($((s * 10)) s) / ffmpeg -ss $((s * 10)) -t 10" "long-seg-$s" "long-seg-$s" -
    done
    r=$(fdiv "${RF[long-seg-$L_LAST]}" "${RF[long-seg-$L_FIRST]}")
    printf "$FMT" "5 10-min seg-$L_LAST / seg-$L_FIRST (cost of the position)" "${RF[long-seg-$L_LAST]}" "${RF[long-seg-$L_FIRST]}" "${r}x" - info - \
        "ffmpeg -ss: $(fdiv "${FF_MS[long-seg-$L_LAST]}" "${FF_MS[long-seg-$L_FIRST]}")x; seg-$L_MID ${RF[long-seg-$L_MID]} ms"
    summary "video 10-min: refract seg-$L_LAST/seg-$L_FIRST (ms)" "$r" -
    summary "video 10-min: refract seg-$L_FIRST ms" "${RF[long-seg-$L_FIRST]}" -
    summary "video 10-min: refract seg-$L_LAST ms" "${RF[long-seg-$L_LAST]}" -
    printf "$FMT" "   10-min index.m3u8 (cold)" "${RF[long-index]}" - - - info - "${WK[long-index]}"
fi
if [ "$WARM" != 0 ]; then
    echo "index cached (a worker with index_cache 256, after one playlist of each video):"
    printf "$FMT" "   seg-3.ts (index cached)" "${RF[seg3-warm]}" - "$(fdiv "${RF[seg3-warm]}" "${FF_MS[index]}")x" - info - \
        "${WK[seg3-warm]}; ratio vs ffmpeg -f hls (whole file)"
    [ "$LONG" != 0 ] && printf "$FMT" "   10-min seg-$L_LAST.ts (index cached)" "${RF[long-seg-$L_LAST-warm]}" - \
        "$(fdiv "${RF[long-seg-$L_LAST-warm]}" "${RF[long-seg-$L_FIRST]}")x" - info - "${WK[long-seg-$L_LAST-warm]}; ratio vs cold seg-$L_FIRST"
fi
row "6 hls/720p/seg-3.ts / ffmpeg -ss 30 -t 10 libx264" phls phls - "progressive hls seg-3 720p: refract/ffmpeg-transcode (ms)"
if [ -n "$SPOOL" ]; then
    row "7 mp4/360p streamed, whole / ffmpeg libx264 frag" tx tx - "transcode 360p whole: refract/ffmpeg (ms)"
    row "7 mp4/360p first fragment / ffmpeg's (pipe)" txfirst txfirst - "transcode 360p first fragment: refract/ffmpeg (ms)"
    printf "$FMT" "   7 first fragment / whole (refract)" "${RF[txfirst]}" "${RF[tx]}" "$(fdiv "${RF[txfirst]}" "${RF[tx]}")x" - info - \
        "median of $TX_RUNS; the client has the first 2 s while the rest is made"
fi
echo "origin bytes through http:// (cache off, read_ahead ${READ_AHEAD:-1MB default}) for one answer, of $(awk -v b="$V_SIZE" 'BEGIN{printf "%.2f MB", b / 1048576}'):" \
    "index.m3u8 $(pct "${OBYTES[index]}" "$V_SIZE")% (${OREQS[index]} req), seg-3.ts $(pct "${OBYTES[seg3]}" "$V_SIZE")% (${OREQS[seg3]} req)," \
    "thumbnail/30 $TB% (${OREQS[thumb]} req), trimming=10-20 $(pct "${OBYTES[trim]}" "$V_SIZE")% (${OREQS[trim]} req)"
summary "video: refract index.m3u8 ms" "${RF[index]}" -
summary "video: refract seg-3.ts ms" "${RF[seg3]}" -
summary "video: refract thumbnail/30 ms" "${RF[thumb]}" -
summary "video: refract trimming=10-20 ms" "${RF[trim]}" -
summary "video: refract trimming=11.5-19.5 (on frames) ms" "${RF[trimx]}" -
summary "video: refract progressive hls seg-3 720p ms" "${RF[phls]}" -
summary "video: ffmpeg -f hls whole file ms" "${FF_MS[index]}" -
summary "video: ffmpeg start-up floor ms" "$FF_START_MS" -

status=0
if [ -n "$NOISY$BENCH_NOISE" ]; then
    echo "video: WARNING: other processes took CPU during the bench, figures are noisy:$NOISY ${BENCH_NOISE}"
    summary "video: NOISE (other processes busy)" "${NOISY:-$BENCH_NOISE}" -
fi
kill -0 "$GW_PID" 2>/dev/null || { status=2; echo "video: refract-gateway died during the run" >&2; }
kill -0 "$WK_PID" 2>/dev/null || { status=2; echo "video: refract-video-worker died during the run" >&2; }
kill -0 "$OR_PID" 2>/dev/null || { status=2; echo "video: the nginx origin died during the run" >&2; }
# expected: the first worker stopping for the index-cached one, and requests
# worker_start makes while the new one connects, and row 7's first-fragment runs, whose client
# leaves (the gateway cancels the transcode nobody will have)
EXPECTED='worker [0-9A-F]+ gone \(disconnect\) with 0 job|no video worker is connected|transcode 360p 504 .*job cancelled'
for l in "$TMP"/gateway.log "$TMP"/worker*.log; do
    if grep -iE 'error|crit|warn' "$l" 2>/dev/null | grep -qvE "$EXPECTED"; then
        echo "video: $(basename "$l") warnings/errors:"
        grep -iE 'error|crit|warn' "$l" | grep -vE "$EXPECTED" | sed 's/^[^ ]* //' | sort | uniq -c | sort -rn | head -5
    fi
done
cat "$TMP"/worker*.log >>"$RAW"
echo "video: took $(($(date +%s) - T_START)) s; raw output in $RAW"
exit $status
