#!/bin/bash
# bench/resize.sh — uncached resize of real ~3840x2400 JPEGs to fit 500x500,
# at 2-way concurrency, for each output format (jpeg, webp, avif) and each
# origin kind of refract (file://, http://). Contenders, over the same images:
#   a. floor:   bench-vips-loop (bench/vips_loop.c), libvips in-process, 2 threads,
#               the worker's exact save options per format; once with
#               vips_concurrency 1 (as the worker) and once with the libvips
#               default; the better one is the floor of that format
#   b. refract: gateway + one image worker (jobs 2, vips_concurrency 1),
#               GET /<file>/dims/resize/500x500[/format/F], the source from
#               a file:// origin (the corpus directory; the worker maps the
#               file) or an http:// origin (nginx serving the corpus statically;
#               the gateway fetches it and sends the bytes over the bus), and
#               "srcache": the same http:// origin on a vhost with the edge
#               cache and `cache.sources: true` (issue 7): the source is
#               fetched once into the cache and handed to the worker as a
#               file reference into it; the result URLs are all distinct
#               (/<file>/dims/resize/500x<H>, H = 501, 502, ...: the same
#               500-wide image, as the photos are wider than 3:2), so every
#               result is a cache miss and a real transform
#   c. nginx:   image_filter resize 500 500 (libgd, JPEG only), GET /<file>
# Prints a table: format x origin -> images/s of refract and of the floor,
# the ratio refract/floor; refract/nginx for JPEG; then the peak RSS of one
# resize job in the worker against vipsthumbnail's.
#
#   bench/resize.sh                          (defaults below; ~6 minutes)
#   RESIZE_FORMATS=jpeg RESIZE_ORIGINS=file RESIZE_DURATION=10 RESIZE_ROUNDS=3 bench/resize.sh
#
# Knobs: RESIZE_FORMATS ("jpeg webp avif"), RESIZE_ORIGINS ("file http srcache"),
# RESIZE_DURATION (s per measured run), RESIZE_WARMUP (s per refract
# format/origin and nginx), RESIZE_ROUNDS, RESIZE_NGINX_TRIES,
# RESIZE_FLOOR_CONCS ("1 0": the vips_concurrency values the floor tries),
# RESIZE_RSS=0 (skip the RSS part), RESIZE_RSS_VIPS_CONCURRENCY (the RSS
# worker's vips_concurrency, default 0 = libvips default, as vipsthumbnail).
#
# Corpus: Debian's ukui-wallpapers package (apt-get download), cached in
# build/bench-corpus/; its JPEGs at least 3000 px wide. When it cannot be
# had, a generated 3840x2400 JPEG (ffmpeg testsrc2 + vips) is used and the
# output says so.
#
# Exit status: 0 when every contender ran (whatever the ratios), 2 when one
# could not run or did not produce 500-wide images of the format asked.
set -u
. "$(dirname "$0")/lib.sh"

DURATION=${RESIZE_DURATION:-5} # seconds per measured run
WARMUP=${RESIZE_WARMUP:-2}     # seconds of warm-up per refract format/origin and for nginx
ROUNDS=${RESIZE_ROUNDS:-3}     # measured runs per contender (order alternating); the median counts
CONC=2                         # the 2-way concurrency of every contender
NGINX_TRIES=${RESIZE_NGINX_TRIES:-3} # attempts per round to get both nginx workers busy
FORMATS=${RESIZE_FORMATS:-jpeg webp avif}
ORIGINS=${RESIZE_ORIGINS:-file http srcache}
FLOOR_CONCS=${RESIZE_FLOOR_CONCS:-1 0}
RSS_PART=${RESIZE_RSS:-1}
RSS_VCONC=${RESIZE_RSS_VIPS_CONCURRENCY:-0}
# http:// sources are written to bus.spool_dir (memory-backed) and mapped by
# the worker, as conf/refract.yaml sets it; RESIZE_SPOOL=0 sends them as
# bytes over the bus instead.
SPOOL=""
[ "${RESIZE_SPOOL:-1}" = 0 ] || SPOOL=/dev/shm/refract-bench-resize-$$
CORPUS=${BENCH_CORPUS_DIR:-$ROOT/build/bench-corpus} # BENCH_NO_DOWNLOAD=1: generated corpus
HTTP_HOST=http-origin.bench # the vhost whose origin is http://
SRC_HOST=srcache.bench      # the same origin, cache.sources: true (RESIZE_ORIGINS srcache)
# olab ORIGIN: its label in the table and the summary rows ("http+src": the
# http:// origin through the cache, cache.sources)
olab() { case $1 in srcache) echo "http+src" ;; *) echo "$1://" ;; esac; }

bench_init resize
[ -z "$SPOOL" ] || bench_track_dir "$SPOOL"
for f in $FORMATS; do [[ " jpeg webp avif " == *" $f "* ]] || die "RESIZE_FORMATS: '$f' is not jpeg, webp or avif"; done
for o in $ORIGINS; do [[ " file http srcache " == *" $o "* ]] || die "RESIZE_ORIGINS: '$o' is not file, http or srcache"; done
for c in $FLOOR_CONCS; do [[ $c =~ ^[0-9]+$ ]] || die "RESIZE_FLOOR_CONCS: '$c' is not a number"; done
if [ -z "$FORMATS" ] || [ -z "$ORIGINS" ] || [ -z "$FLOOR_CONCS" ]; then
    die "RESIZE_FORMATS, RESIZE_ORIGINS and RESIZE_FLOOR_CONCS must not be empty"
fi
HAS_JPEG=""
[[ " $FORMATS " == *" jpeg "* ]] && HAS_JPEG=1
need nginx wrk curl ss awk vipsheader getconf
[ "$RSS_PART" = 0 ] || need vipsthumbnail /usr/bin/time
[ -x "$BIN/refract-gateway" ] || die "$BIN/refract-gateway is missing: run make"
[ -x "$BIN/refract-image-worker" ] || die "$BIN/refract-image-worker is missing: run make"
make -s --no-print-directory -C "$ROOT" build/bin/bench-vips-loop >/dev/null || die "cannot build bench-vips-loop"
# The binaries are copied for the run (as bench/storage.sh does): a rebuild
# meanwhile (someone's make) must not mix two builds in one run.
mkdir -p "$TMP/bin"
cp "$BIN/refract-gateway" "$BIN/refract-image-worker" "$BIN/bench-vips-loop" "$TMP/bin/" || die "cannot copy the binaries"
BUILD_NOTE="refract-gateway built $(date -u -r "$BIN/refract-gateway" '+%Y-%m-%d %H:%M:%S UTC')"
BIN=$TMP/bin
RAW=${BENCH_RAW:-$RESULTS_DIR/resize-$(date +%Y%m%d-%H%M%S).log}
: >"$RAW"
# Absolute: the corpus download below runs in a subshell that cd's away
# (a relative $RAW once made its redirect fail, so apt-get never ran and the
# generated fallback was benchmarked instead of the real photos).
RAW=$(realpath "$RAW")
CORPUS=$(realpath -m "$CORPUS")
T_START=$(date +%s)

# ---- corpus ---------------------------------------------------------------------
mkdir -p "$CORPUS"
CORPUS_NOTE=""
deb=$(ls "$CORPUS"/ukui-wallpapers_*.deb 2>/dev/null | head -1)
[ -n "${BENCH_NO_DOWNLOAD:-}" ] && deb="" # test the fallback corpus
if [ -z "$deb" ] && [ -z "${BENCH_NO_DOWNLOAD:-}" ]; then
    echo "resize: downloading ukui-wallpapers into $CORPUS"
    (cd "$CORPUS" && timeout 120 apt-get download ukui-wallpapers >>"$RAW" 2>&1)
    deb=$(ls "$CORPUS"/ukui-wallpapers_*.deb 2>/dev/null | head -1)
fi
IMG=$TMP/img
mkdir -p "$IMG"
if [ -n "$deb" ]; then
    [ -d "$CORPUS/extract/usr" ] || dpkg -x "$deb" "$CORPUS/extract" || die "dpkg -x $deb failed"
    while IFS= read -r f; do
        w=$(vipsheader -f width "$f" 2>/dev/null) || continue
        [ "${w:-0}" -ge 3000 ] && cp "$f" "$IMG/"
    done < <(find "$CORPUS/extract" -type f \( -iname '*.jpg' -o -iname '*.jpeg' \) | sort)
    CORPUS_NOTE="$(basename "$deb")"
fi
if [ -z "$(ls "$IMG")" ]; then
    need ffmpeg vips
    gen=$CORPUS/generated/testsrc2-3840x2400.jpg
    if [ ! -s "$gen" ]; then
        mkdir -p "$CORPUS/generated"
        ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=3840x2400 -frames:v 1 "$CORPUS/generated/src.png" &&
            vips copy "$CORPUS/generated/src.png" "${gen}[Q=90]" || die "cannot generate a fallback JPEG"
        rm -f "$CORPUS/generated/src.png"
    fi
    cp "$gen" "$IMG/"
    CORPUS_NOTE="GENERATED FALLBACK (ukui-wallpapers could not be downloaded): ffmpeg testsrc2 3840x2400 JPEG"
    echo "resize: WARNING: using a $CORPUS_NOTE" >&2
fi
chmod 644 "$IMG"/*
FILES=()
for f in "$IMG"/*; do FILES+=("$(basename "$f")"); done
echo "resize: corpus ($CORPUS_NOTE), ${#FILES[@]} JPEGs:"
for f in "${FILES[@]}"; do
    printf '    %-24s %s  %s KB\n' "$f" "$(vipsheader -f width "$IMG/$f")x$(vipsheader -f height "$IMG/$f")" \
        "$(($(stat -c %s "$IMG/$f") / 1024))"
done

# check_out500 FILE FORMAT WHAT: the output must be an image of FORMAT
# (jpeg, webp, avif) exactly 500 px wide
check_out500() {
    local hdr w loader comp
    hdr=$(vipsheader "$1" 2>/dev/null) || die "$3: output is not an image ($(head -c 200 "$1" | tr -cd '[:print:]'))"
    w=$(vipsheader -f width "$1" 2>/dev/null)
    case $2 in jpeg) loader=jpegload ;; webp) loader=webpload ;; avif) loader=heifload ;; esac
    [[ $hdr == *"$loader"* ]] || die "$3: output is not $2: $hdr"
    if [ "$2" = avif ]; then
        comp=$(vipsheader -f heif-compression "$1" 2>/dev/null)
        [ "$comp" = av1 ] || die "$3: output is HEIF but not AV1 (heif-compression '$comp')"
    fi
    [ "$w" = 500 ] || die "$3: output is $w px wide, not 500: $hdr"
}

rf_path() { # FILE FORMAT: refract's URL path for a resize of FILE into FORMAT
    if [ "$2" = jpeg ]; then echo "/$1/dims/resize/500x500"; else echo "/$1/dims/resize/500x500/format/$2"; fi
}

P_NGINX=$(free_port)
P_ORIGIN=$(free_port)
P_GW=$(free_port)
P_ADMIN=$(free_port)
P_BUS=$(free_port)
P_WMET=$(free_port)
P_WMET2=$(free_port)

# ---- c. nginx image_filter ---------------------------------------------------------
if [ -n "$HAS_JPEG" ]; then
    mkdir -p "$TMP/nginx"
    {
        nginx_conf_head 2
        cat <<EOF
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    types { image/jpeg jpg jpeg; }
    server {
        # no reuseport: with it, both of wrk's connections tend to hash to
        # the same worker (one CPU); the shared socket spreads them better
        listen 127.0.0.1:$P_NGINX;
        root $IMG;
        location / {
            image_filter resize 500 500;
            image_filter_buffer 20M;
        }
    }
}
EOF
    } >"$TMP/nginx/nginx.conf"
    nginx_start "$TMP/nginx"
    NG_PID=$NGINX_PID
fi

# ---- the http:// origin: nginx serving the corpus statically ------------------------------
OR_PID=""
if [[ " $ORIGINS " == *" http "* ]] || [[ " $ORIGINS " == *" srcache "* ]]; then
    origin_nginx_start "$TMP/origin" "$P_ORIGIN" "$IMG"
    OR_PID=$ORIGIN_PID
fi

# ---- b. refract: gateway + one image worker -----------------------------------------
# refract_conf FILE JOBS VIPS_CONCURRENCY METRICS_PORT
# The edge cache exists only for the srcache vhost (RESIZE_ORIGINS srcache);
# the file:// and http:// vhosts keep it off. srcache.bench: the cache keeps
# what the origin sends for 1 h (override_origin, as tests/integration/
# test_srcache.py: the corpus files were copied seconds ago, so RFC 9111's
# heuristic would give them no TTL and nothing would be kept on disk).
HAS_SRC=""
[[ " $ORIGINS " == *" srcache "* ]] && HAS_SRC=1
refract_conf() {
    cat >"$1" <<EOF
gateway:
  listen: "127.0.0.1:$P_GW"
  admin_listen: "127.0.0.1:$P_ADMIN"
  threads: 2
  access_log: false
$( [ -n "$HAS_SRC" ] && printf '  cache:\n    dir: "%s"\n    memory: 512MB\n    disk: 4GB\n' "$TMP/refract-cache")
bus:
  endpoint: "tcp://127.0.0.1:$P_BUS"
  queue_max: 64
$( [ -n "$SPOOL" ] && echo "  spool_dir: \"$SPOOL\"" )
vhosts:
  - name: localhost
    default: true
    origin: "file://$IMG"
    cache: { enable: false }   # every resize is made, not served from the cache
    dims:
      max_source_size: 20MB
  - name: $HTTP_HOST
    origin: "http://127.0.0.1:$P_ORIGIN"
    cache: { enable: false }
    dims:
      max_source_size: 20MB
  - name: $SRC_HOST
    origin: "http://127.0.0.1:$P_ORIGIN"
    cache: { enable: true, sources: true, override_origin: true, ttl: { res2xx: 1h } }
    dims:
      max_source_size: 20MB
image_worker:
  metrics_listen: "127.0.0.1:$4"
  jobs: $2
  vips_concurrency: $3
log:
  level: warn
EOF
}
refract_conf "$TMP/refract.yaml" 2 1 "$P_WMET"
gateway_start "$TMP/refract.yaml" "$TMP/gateway.log"
"$BIN/refract-image-worker" -c "$TMP/refract.yaml" >>"$TMP/worker.log" 2>&1 &
WK_PID=$!
bench_track "$WK_PID"

declare -A HOSTH=([file]="Host: localhost" [http]="Host: $HTTP_HOST" [srcache]="Host: $SRC_HOST")
[ -n "$HAS_JPEG" ] && { wait_http "http://127.0.0.1:$P_NGINX/${FILES[0]}" "$NG_PID" 15 || die "nginx image_filter did not start ($(cat "$TMP/nginx/logs/"*.log))"; }
[ -n "$OR_PID" ] && { wait_http "http://127.0.0.1:$P_ORIGIN/${FILES[0]}" "$OR_PID" 15 || die "the nginx origin did not start ($(cat "$TMP/origin/logs/"*.log))"; }
wait_http "http://127.0.0.1:$P_GW/${FILES[0]}" "$GW_PID" 10 || die "refract-gateway did not start ($(cat "$TMP/gateway.log"))"
# wait_resize PID LOG: until refract answers a resize with 200 (the worker
# with pid PID, log LOG, has connected to the broker)
wait_resize() {
    local ok="" code=""
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || die "refract-image-worker exited ($(cat "$2"))"
        code=$(curl -s -o "$TMP/out.img" -w '%{http_code}' "http://127.0.0.1:$P_GW/${FILES[0]}/dims/resize/500x500")
        [ "$code" = 200 ] && { ok=1; break; }
        sleep 0.2
    done
    [ -n "$ok" ] || die "refract did not answer a resize with 200 (last: $code; $(tail -3 "$TMP/gateway.log" "$2"))"
}
wait_resize "$WK_PID" "$TMP/worker.log"

# ---- every contender must produce a 500-wide image of the format of every file --------------
IMGS=()
for f in "${FILES[@]}"; do IMGS+=("$IMG/$f"); done
for fmt in $FORMATS; do
    for o in $ORIGINS; do
        for f in "${FILES[@]}"; do
            path=$(rf_path "$f" "$fmt")
            code=$(curl -s -H "${HOSTH[$o]}" -D "$TMP/h" -o "$TMP/out.img" -w '%{http_code}' "http://127.0.0.1:$P_GW$path")
            [ "$code" = 200 ] || die "refract ($o://): $path answered $code ($(tr -d '\r' <"$TMP/h" | grep -i '^x-refract' | tr '\n' ' '))"
            grep -qi '^x-refract-fallback' "$TMP/h" && die "refract ($o://): $path was sent unprocessed ($(grep -i '^x-refract-fallback' "$TMP/h"))"
            check_out500 "$TMP/out.img" "$fmt" "refract ($o://) $path"
            [ "$o" = srcache ] || continue
            # the srcache row asks for 500xH, H > 500: the same 500-wide
            # image (each photo is wider than 3:2), but a result of its own
            # in the cache. Checked: the bytes of 500x499 are 500x500's.
            mv "$TMP/out.img" "$TMP/out500.img"
            path=$(rf_path "$f" "$fmt" | sed 's,/500x500,/500x499,')
            code=$(curl -s -H "${HOSTH[$o]}" -D "$TMP/h" -o "$TMP/out.img" -w '%{http_code}' "http://127.0.0.1:$P_GW$path")
            [ "$code" = 200 ] || die "refract ($o): $path answered $code"
            cs=$(tr -d '\r' <"$TMP/h" | awk -F': ' 'tolower($1) == "cache-status" {print $2}')
            [[ $cs == *fwd=miss*stored* ]] || die "refract ($o): $path is not a stored miss (Cache-Status: $cs)"
            cmp -s "$TMP/out.img" "$TMP/out500.img" || die "refract ($o): $path is not the bytes of 500x500"
        done
    done
    "$BIN/bench-vips-loop" -t 1 -d 0.01 -c 1 -f "$fmt" -o "$TMP/out.img" "${IMGS[@]}" >/dev/null || die "bench-vips-loop -f $fmt failed"
    check_out500 "$TMP/out.img" "$fmt" "bench-vips-loop -f $fmt"
done
if [ -n "$HAS_JPEG" ]; then
    for f in "${FILES[@]}"; do
        code=$(curl -s -o "$TMP/out.img" -w '%{http_code}' "http://127.0.0.1:$P_NGINX/$f")
        [ "$code" = 200 ] || die "nginx image_filter: /$f answered $code"
        check_out500 "$TMP/out.img" jpeg "nginx image_filter /$f"
    done
fi
echo "resize: checked: every contender returns 500-wide images of the format asked for every file ($FORMATS; origins $ORIGINS)"
# metric_vh NAME VHOST [RESULT]: a gateway counter's value for one vhost
# (summed over its other labels; RESULT: only result="RESULT")
metric_vh() {
    curl -s --max-time 2 "http://127.0.0.1:$P_ADMIN/metrics" | awk -v n="$1" -v vh="vhost=\"$2\"" -v res="${3:+result=\"$3\"}" '
        index($1, n "{") == 1 && index($1, vh) && (res == "" || index($1, res)) {s += $NF} END {printf "%d", s}'
}
# src_counts: "result=N ..." of refract_cache_requests_total on the srcache
# vhost, and "origin=N" (its origin requests); src_delta BEFORE AFTER: the
# non-zero differences, as "miss=183 ..."
src_counts() {
    curl -s --max-time 2 "http://127.0.0.1:$P_ADMIN/metrics" | awk -v vh="vhost=\"$SRC_HOST\"" '
        index($1, "refract_cache_requests_total{") == 1 && index($1, vh) {
            r = $1; sub(/.*result="/, "", r); sub(/".*/, "", r); printf "%s=%d ", r, $NF }
        index($1, "refract_origin_requests_total{") == 1 && index($1, vh) {o += $NF}
        END {printf "origin=%d\n", o}'
}
src_delta() {
    awk -v a="$1" -v b="$2" 'BEGIN{n = split(a, x, " "); for (i = 1; i <= n; i++) {split(x[i], kv, "="); v[kv[1]] = kv[2]}
        n = split(b, y, " "); s = ""
        for (i = 1; i <= n; i++) {split(y[i], kv, "="); d = kv[2] - v[kv[1]]; if (d) s = s (s ? " " : "") kv[1] "=" d}
        print s}'
}
if [ -n "$HAS_SRC" ]; then
    n=$(metric_vh refract_origin_requests_total "$SRC_HOST")
    [ "$n" = "${#FILES[@]}" ] || die "srcache: $n origin requests for ${#FILES[@]} sources (cache.sources should fetch each once)"
    echo "resize: checked: srcache fetched each of the ${#FILES[@]} sources once from the origin; 500x499 = 500x500 byte for byte, a stored miss"
fi

declare -A URL=([nginx]="http://127.0.0.1:$P_NGINX")
for fmt in $FORMATS; do
    for o in $ORIGINS; do
        : >"$TMP/paths.$fmt"
        for f in "${FILES[@]}"; do rf_path "$f" "$fmt" >>"$TMP/paths.$fmt"; done
        write_wrk_lua "$TMP/rf:$fmt:$o.lua" "$TMP/paths.$fmt"
        URL[rf:$fmt:$o]="http://127.0.0.1:$P_GW"
    done
done
if [ -n "$HAS_JPEG" ]; then
    printf '/%s\n' "${FILES[@]}" >"$TMP/paths.nginx"
    write_wrk_lua "$TMP/nginx.lua" "$TMP/paths.nginx"
fi

# dead_note: why refract failed, when one of its processes died (their logs
# go with the temp dir)
dead_note() {
    local p n
    for p in GW_PID:gateway WK_PID:worker; do
        n=${p%%:*}
        kill -0 "${!n}" 2>/dev/null && continue
        echo "; the refract ${p#*:} (pid ${!n}) has died; its log ends: $(tail -5 "$TMP/${p#*:}.log" | tr '\n' '|')"
    done
}

# The srcache contender's wrk script: request number i (0, 1, ... over the
# whole bench, per format; each wrk thread takes every CONC-th from BASE) is
# /FILE/dims/resize/500xH[/format/F] with FILE = the (i mod files)-th and
# H = 500 + i div files: every URL once, the files in turn as for the
# others. done() writes the next free i to NEXTFILE for the next run.
# write_src_lua FILE FORMAT BASE NEXTFILE
write_src_lua() {
    local files="{" f sfx=""
    for f in "${FILES[@]}"; do files+="\"$f\","; done
    files+="}"
    [ "$2" = jpeg ] || sfx="/format/$2"
    cat >"$1" <<EOF
local files = $files
local threads = {}
local nthreads = 0
function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
  table.insert(threads, thread)
end
function init(args)
  k = 0
  last = -1
end
function request()
  local i = $3 + k * $CONC + (tonumber(tid) or 0)
  k = k + 1
  last = i
  return wrk.format(nil, "/" .. files[(i % #files) + 1] .. "/dims/resize/500x" .. (500 + math.floor(i / #files)) .. "$sfx")
end
function done(s, latency, requests)
  io.write(string.format("WRK requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_ms=%.2f p99_ms=%.2f\n",
    s.requests, s.bytes, s.duration, s.errors.connect, s.errors.read, s.errors.write, s.errors.status,
    s.errors.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
  local m = $3 - 1
  for _, t in ipairs(threads) do
    local l = tonumber(t:get("last")) or -1
    if l > m then m = l end
  end
  local fh = io.open("$4", "w")
  fh:write(string.format("%d\n", m + 1))
  fh:close()
end
EOF
}
declare -A SRC_NEXT # format -> the srcache script's next request number
for fmt in $FORMATS; do SRC_NEXT[$fmt]=${#FILES[@]}; done # i < files: 500x500, made by the checks

http_run() { # CONTENDER SECONDS LABEL: sets W_* (images/s = W_RPS)
    local c=$1 host=() fmt
    [[ $c == rf:* ]] && host=(-H "${HOSTH[${c##*:}]}")
    if [[ $c == rf:*:srcache ]]; then
        fmt=${c#rf:}
        fmt=${fmt%%:*}
        rm -f "$TMP/src-next"
        write_src_lua "$TMP/$c.lua" "$fmt" "${SRC_NEXT[$fmt]}" "$TMP/src-next"
    fi
    run_wrk "$3" "$TMP/$c.lua" "${URL[$c]}" -t$CONC -c$CONC -d"$2s" --timeout 30s "${host[@]}" || die "$c: wrk failed$(dead_note)"
    if [[ $c == rf:*:srcache ]]; then
        [ -s "$TMP/src-next" ] || die "$c: its wrk script did not say how far it went"
        SRC_NEXT[$fmt]=$(cat "$TMP/src-next")
    fi
    [ "$W_REQS" -gt 0 ] || [[ $3 == warmup* ]] || die "$c: no request completed in '$3'$(dead_note)"
    [ "$W_ERRS" -eq 0 ] || die "$c: $W_ERRS errors or non-2xx answers in '$3' (see $RAW)$(dead_note)"
    # a transform answers tens of KB; MBs would mean originals are being sent
    [ $((W_BYTES / (W_REQS + 1))) -lt 1048576 ] || die "$c: answers average $((W_BYTES / W_REQS)) bytes: not resized?"
}

vips_run() { # CONCURRENCY(0 = libvips default) FORMAT LABEL: sets V_IPS V_CONC V_CPU
    local out
    out=$("$BIN/bench-vips-loop" -t $CONC -d "$DURATION" -c "$1" -f "$2" "${IMGS[@]}" 2>&1) || die "bench-vips-loop: $out"
    { echo "---- $3"; echo "$out"; } >>"$RAW"
    V_IPS=$(sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p' <<<"$out")
    V_CONC=$(sed -n 's/.* concurrency=\([0-9]*\).*/\1/p' <<<"$out")
    V_CPU=$(sed -n 's/.*cpu_ms_per_image=\([0-9.]*\).*/\1/p' <<<"$out")
}

worker_cpu() { # PID...: utime+stime ticks of each
    local p
    for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0; done | tr '\n' ' '
}
# How the busy nginx workers shared the run: with -c2, both connections can
# land on one worker (the kernel spreads connections, not requests).
ng_split() { # BEFORE AFTER (worker_cpu outputs)
    awk -v a="$1" -v b="$2" 'BEGIN{n = split(a, x, " "); split(b, y, " "); t = 0
        for (i = 1; i <= n; i++) { d[i] = y[i] - x[i]; t += d[i] }
        s = ""; for (i = 1; i <= n; i++) s = s sprintf("%s%d%%", i > 1 ? "/" : "", t ? 100 * d[i] / t : 0)
        print s}'
}
ticks_ms() { # BEFORE AFTER N (worker_cpu outputs): CPU ms per item of the sum of all
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN{k = split(a, x, " "); split(b, y, " "); t = 0
        for (i = 1; i <= k; i++) t += y[i] - x[i]; printf "%.1f", (n > 0 ? t * 1000 / hz / n : 0)}'
}

metric_sum() { # URL NAME: sum of a metric over its label sets
    curl -s --max-time 2 "$1" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $NF} END{printf "%.6f", s}'
}
GW_MET="http://127.0.0.1:$P_ADMIN/metrics"
WK_MET="http://127.0.0.1:$P_WMET/metrics"
metrics_now() { # worker job s, jobs, bus job s, HTTP request s, requests
    echo "$(metric_sum "$WK_MET" refract_worker_job_duration_seconds_sum) $(metric_sum "$WK_MET" refract_worker_job_duration_seconds_count)" \
        "$(metric_sum "$GW_MET" refract_bus_job_duration_seconds_sum) $(metric_sum "$GW_MET" refract_http_request_duration_seconds_sum)" \
        "$(metric_sum "$GW_MET" refract_http_request_duration_seconds_count)"
}
declare -A BRK # rf:F:O -> summed metric deltas "wk_s jobs bus_s http_s reqs"
brk_add() { # KEY BEFORE AFTER
    BRK[$1]=$(awk -v a="$2" -v b="$3" -v c="${BRK[$1]:-0 0 0 0 0}" 'BEGIN{split(a, x, " "); split(b, y, " "); split(c, z, " ")
        printf "%.6f %d %.6f %.6f %d", z[1] + y[1] - x[1], z[2] + y[2] - x[2], z[3] + y[3] - x[3], z[4] + y[4] - x[4], z[5] + y[5] - x[5]}')
}

NOISY=""
machine_check
echo
echo "== resize: JPEG ~3840x2400 -> fit 500x500 as $FORMATS; refract origins $ORIGINS; uncached, concurrency $CONC; ${DURATION}s x $ROUNDS rounds; $(nproc) CPUs shared with wrk =="
echo "   http:// sources: $( [ -n "$SPOOL" ] && echo "written to bus.spool_dir $SPOOL (memory) and mapped by the worker" || echo "sent as bytes over the bus (RESIZE_SPOOL=0)")"
[ -n "$HAS_SRC" ] && echo "   http+src (srcache): the http:// origin with cache.sources: each source fetched once into the edge cache, mapped by the worker from the cache file; every result URL distinct (500xH, H > 500), so each is a cache miss and a transform"
echo "   $BUILD_NOTE (copied to $BIN for the run)"

# the contenders, grouped by format (a format's floor and refract runs are
# neighbours in time); the order reverses every other round
ORDER=()
for fmt in $FORMATS; do
    for c in $FLOOR_CONCS; do ORDER+=("vips$c:$fmt"); done
    for o in $ORIGINS; do ORDER+=("rf:$fmt:$o"); done
    [ "$fmt" = jpeg ] && ORDER+=(nginx)
done
for c in "${ORDER[@]}"; do
    case $c in rf:* | nginx) http_run "$c" "$WARMUP" "warmup $c" ;; esac
done
declare -A IPS VCONC
NG_WORKERS=()
[ -n "$HAS_JPEG" ] && mapfile -t NG_WORKERS < <(pgrep -P "$NG_PID")
OR_WORKERS=()
[ -n "$OR_PID" ] && mapfile -t OR_WORKERS < <(pgrep -P "$OR_PID")
for r in $(seq "$ROUNDS"); do
    order=("${ORDER[@]}")
    if [ $((r % 2)) -eq 0 ]; then
        order=()
        for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do order+=("${ORDER[i]}"); done
    fi
    for c in "${order[@]}"; do
        snap=$(proc_snapshot)
        case $c in
        vips*)
            vc=${c%%:*}
            vc=${vc#vips}
            vips_run "$vc" "${c#*:}" "round $r $c"
            v=$V_IPS
            VCONC[$c]=$V_CONC
            extra="(vips_concurrency $V_CONC; CPU $V_CPU ms/image)"
            ;;
        rf:*)
            o=${c##*:}
            cpu0=$(worker_cpu "$GW_PID" "$WK_PID")
            ocpu0=$([ "$o" != file ] && worker_cpu "${OR_WORKERS[@]}")
            [ "$o" = srcache ] && sc0=$(src_counts)
            m0=$(metrics_now)
            http_run "$c" "$DURATION" "round $r $c"
            m1=$(metrics_now)
            cpu1=$(worker_cpu "$GW_PID" "$WK_PID")
            brk_add "$c" "$m0" "$m1"
            v=$W_RPS
            # CPU per image of the gateway and of the worker (all their threads)
            cpu_img=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$W_REQS" -v hz="$(getconf CLK_TCK)" 'BEGIN{split(a, x, " ");
                split(b, y, " "); printf "gateway %.1f + worker %.1f", (y[1] - x[1]) * 1000 / hz / n, (y[2] - x[2]) * 1000 / hz / n}')
            [ "$o" != file ] && cpu_img="$cpu_img + origin nginx $(ticks_ms "$ocpu0" "$(worker_cpu "${OR_WORKERS[@]}")" "$W_REQS")"
            extra="p50 $W_P50 ms, p99 $W_P99 ms, $((W_BYTES / W_REQS / 1024)) KB/answer; CPU $cpu_img ms/image"
            if [ "$o" = srcache ]; then
                # every result a miss (a transform), no source from the origin
                dl=$(src_delta "$sc0" "$(src_counts)")
                [[ " $dl " == *" hit="* || " $dl " == *" collapsed="* || " $dl " == *" stale="* ]] &&
                    die "$c round $r: results that were not cache misses ($dl): the URLs repeated?"
                [[ " $dl " == *" origin="* ]] && die "$c round $r: the origin was asked ($dl): the sources were not served from the cache"
                extra="$extra; cache results: ${dl:-none}, origin requests 0"
            fi
            ;;
        nginx)
            # Each nginx worker serves its own connections and resizes inside
            # its event loop, so when both of wrk's connections land on one
            # worker nginx runs on one CPU. Such a run is retried (up to
            # NGINX_TRIES in all): the figure kept is nginx using both workers.
            for try in $(seq "$NGINX_TRIES"); do
                cpu0=$(worker_cpu "${NG_WORKERS[@]}")
                http_run nginx "$DURATION" "round $r nginx (attempt $try)"
                split=$(ng_split "$cpu0" "$(worker_cpu "${NG_WORKERS[@]}")")
                v=$W_RPS
                extra="p50 $W_P50 ms, p99 $W_P99 ms, $((W_BYTES / W_REQS / 1024)) KB/answer, CPU split over nginx workers $split"
                top=$(tr '/%' '  ' <<<"$split" | awk '{m = 0; for (i = 1; i <= NF; i++) if ($i > m) m = $i; print m}')
                [ "$top" -le 75 ] && break
                NG_ONE_WORKER="${NG_ONE_WORKER:-} $v"
                if [ "$try" -lt "$NGINX_TRIES" ]; then
                    printf '   round %d  %-14s %7s images/s  %s -> one worker did all the work: discarded, retrying\n' "$r" nginx "$v" "$extra"
                    snap=$(proc_snapshot)
                else
                    extra="$extra (UNBALANCED: kept, no balanced run in $NGINX_TRIES attempts)"
                fi
            done
            ;;
        esac
        IPS[$c]="${IPS[$c]:-} $v"
        noise=$(foreign_cpu "$snap" "$DURATION")
        [ -n "$noise" ] && NOISY="$NOISY $c:[$noise]"
        printf '   round %d  %-14s %7s images/s  %s%s\n' "$r" "$c" "$v" "$extra" "${noise:+  [other processes busy: $noise]}"
    done
done

# ---- peak RSS of one job: the worker vs vipsthumbnail ------------------------------------------
# The largest corpus JPEG, made into a 500x500 JPEG, one job at a time.
#  - vipsthumbnail: /usr/bin/time -v vipsthumbnail BIG -s 500x500 -o out.jpg[Q=75]
#    (libvips default concurrency): "Maximum resident set size", the whole
#    process; and the same on a 64 px JPEG, to tell its fixed cost.
#  - the worker: the throughput worker is stopped; a fresh one with jobs 1
#    (vips_concurrency RESIZE_RSS_VIPS_CONCURRENCY, default 0 = libvips's
#    default, as vipsthumbnail) makes one resize of the 64 px JPEG (libraries
#    loaded, threads started); its VmRSS then is its idle RSS. Then one
#    request for BIG; VmHWM afterwards is the peak (the 64 px job's was
#    lower). Per job = VmHWM - idle VmRSS. One fresh worker per origin.
# Ratio (target <= 2): worker per job / vipsthumbnail's whole-process peak;
# also printed: worker per job / vipsthumbnail's peak above its 64 px run.
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null; }
maxrss_kb() { # FILE OUT [ENV...]: vipsthumbnail's maximum RSS in KB
    local f=$1 out=$2
    shift 2
    env "$@" /usr/bin/time -v vipsthumbnail "$f" -s 500x500 -o "${out}[Q=75]" 2>"$TMP/time.log" >/dev/null ||
        die "vipsthumbnail $f failed: $(tail -3 "$TMP/time.log")"
    awk -F': ' '/Maximum resident set size/ {print $2}' "$TMP/time.log"
}
mb() { awk -v k="$1" 'BEGIN{printf "%.1f", k / 1024}'; }
kill -0 "$WK_PID" 2>/dev/null || WK_DIED=1 # before the RSS part stops it
if [ "$RSS_PART" != 0 ]; then
    big=""
    bigsz=0
    for f in "${FILES[@]}"; do
        sz=$(stat -c %s "$IMG/$f")
        [ "$sz" -gt "$bigsz" ] && { big=$f; bigsz=$sz; }
    done
    vipsthumbnail "$IMG/$big" -s 64x64 -o "$IMG/tiny-64.jpg[Q=75]" || die "vipsthumbnail cannot make a 64 px JPEG"
    chmod 644 "$IMG/tiny-64.jpg"
    vt_tiny=$(maxrss_kb "$IMG/tiny-64.jpg" "$TMP/vt-tiny.jpg")
    vt_big=$(maxrss_kb "$IMG/$big" "$TMP/vt-big.jpg")
    check_out500 "$TMP/vt-big.jpg" jpeg "vipsthumbnail"
    vt_big1=$(maxrss_kb "$IMG/$big" "$TMP/vt-big.jpg" VIPS_CONCURRENCY=1)
    bench_stop "$WK_PID"
    declare -A RSS_JOB RSS_IDLE RSS_HWM RSS_START
    refract_conf "$TMP/refract-rss.yaml" 1 "$RSS_VCONC" "$P_WMET2"
    for o in $ORIGINS; do
        "$BIN/refract-image-worker" -c "$TMP/refract-rss.yaml" >>"$TMP/worker-rss-$o.log" 2>&1 &
        RW_PID=$!
        bench_track "$RW_PID"
        sleep 0.5
        RSS_START[$o]=$(status_kb "$RW_PID" VmRSS)
        # its first 200 (any vhost: the broker only has this worker)
        for _ in $(seq 100); do
            kill -0 "$RW_PID" 2>/dev/null || die "refract-image-worker (RSS) exited ($(cat "$TMP/worker-rss-$o.log"))"
            code=$(curl -s -H "${HOSTH[$o]}" -o "$TMP/out.img" -w '%{http_code}' "http://127.0.0.1:$P_GW/tiny-64.jpg/dims/resize/500x500")
            [ "$code" = 200 ] && break
            sleep 0.2
        done
        [ "$code" = 200 ] || die "refract ($o://) did not resize tiny-64.jpg with the RSS worker (last: $code)"
        sleep 0.3
        RSS_IDLE[$o]=$(status_kb "$RW_PID" VmRSS)
        bigpath=$(rf_path "$big" jpeg)
        # srcache keeps results: 500x500 is in its cache since the checks;
        # 500x498 (no run asks for it) is the same image, made anew
        [ "$o" = srcache ] && bigpath=${bigpath/\/500x500//500x498}
        code=$(curl -s -H "${HOSTH[$o]}" -o "$TMP/out.img" -w '%{http_code}' "http://127.0.0.1:$P_GW$bigpath")
        [ "$code" = 200 ] || die "refract ($o://) with the RSS worker: /$big answered $code"
        check_out500 "$TMP/out.img" jpeg "refract ($o://) RSS worker /$big"
        RSS_HWM[$o]=$(status_kb "$RW_PID" VmHWM)
        RSS_JOB[$o]=$((RSS_HWM[$o] - RSS_IDLE[$o]))
        grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem|Threads)' "/proc/$RW_PID/status" | tr -s ' \t' ' ' |
            { echo "---- RSS worker $o:// after /$big (start ${RSS_START[$o]} kB, idle ${RSS_IDLE[$o]} kB)"; cat; } >>"$RAW"
        bench_stop "$RW_PID"
    done
    worst=""
    for o in $ORIGINS; do
        if [ -z "$worst" ] || [ "${RSS_JOB[$o]}" -gt "${RSS_JOB[$worst]}" ]; then worst=$o; fi
    done
    RSS_RATIO=$(fdiv "${RSS_JOB[$worst]}" "$vt_big")
    RSS_RATIO_INC=$(fdiv "${RSS_JOB[$worst]}" "$((vt_big - vt_tiny))")
    RSS_BIG="$big ($(vipsheader -f width "$IMG/$big")x$(vipsheader -f height "$IMG/$big"), $(mb $((bigsz / 1024))) MB)"
fi

# ---- the table ----------------------------------------------------------------------------------
# shellcheck disable=SC2086
fmed() { fmedian ${IPS[$1]:-}; }
target_of() { [ "$1" = jpeg ] && echo 0.9 || echo 0.85; }
mark() { awk -v v="$1" -v t="$2" 'BEGIN{print (v != "nan" && v + 0 >= t) ? "PASS" : "BELOW"}'; }
ng=""
[ -n "$HAS_JPEG" ] && ng=$(fmed nginx)
echo
echo "median of $ROUNDS rounds of ${DURATION}s, images/s (refract: gateway + worker jobs 2, vips_concurrency 1; floor: bench-vips-loop, 2 threads, the better vips_concurrency):"
printf '%-6s %-8s %9s %9s %-9s %8s %8s %-6s | %s\n' format origin refract floor "(floor c)" ratio target mark \
    "refract per image: worker transform / bus job / HTTP request (ms)"
for fmt in $FORMATS; do
    best="" bestc=""
    for c in $FLOOR_CONCS; do
        v=$(fmed "vips$c:$fmt")
        if [ -z "$best" ] || awk -v a="$v" -v b="$best" 'BEGIN{exit !(a > b)}'; then best=$v bestc=${VCONC[vips$c:$fmt]}; fi
    done
    for o in $ORIGINS; do
        rf=$(fmed "rf:$fmt:$o")
        ratio=$(fdiv "$rf" "$best")
        t=$(target_of "$fmt")
        brk=$(awk -v c="${BRK[rf:$fmt:$o]:-0 0 0 0 0}" 'BEGIN{split(c, z, " ");
            if (z[2] > 0) printf "%.1f / %.1f / %.1f", z[1] / z[2] * 1000, z[3] / z[2] * 1000, (z[5] > 0 ? z[4] / z[5] * 1000 : 0); else print "-"}')
        printf '%-6s %-8s %9s %9s %-9s %7sx %8s %-6s | %s\n' "$fmt" "$(olab "$o")" "$rf" "$best" "(c $bestc)" "$ratio" ">= $t" "$(mark "$ratio" "$t")" "$brk"
        summary "resize $fmt $(olab "$o"): refract/vips-loop (images/s)" "$ratio" "$t"
        summary "resize $fmt $(olab "$o"): refract images/s" "$rf" -
    done
    summary "resize $fmt: vips-loop floor images/s (c $bestc)" "$best" -
done
if [ -n "$HAS_JPEG" ]; then
    line="nginx image_filter (libgd, jpeg, 2 workers): $ng images/s;"
    for o in $ORIGINS; do
        r=$(fdiv "$(fmed "rf:jpeg:$o")" "$ng")
        line="$line refract/nginx $(olab "$o") ${r}x $(mark "$r" 2.5);"
        summary "resize jpeg $(olab "$o"): refract/nginx (images/s)" "$r" 2.5
    done
    echo "$line (target >= 2.5)"
    summary "resize: nginx image_filter images/s (both workers busy)" "$ng" -
    # shellcheck disable=SC2086
    if [ -n "${NG_ONE_WORKER:-}" ]; then
        echo "   nginx runs discarded because one worker served both connections: $(echo $NG_ONE_WORKER | tr ' ' /) images/s"
        summary "resize: nginx runs discarded, one worker busy (images/s)" "$(echo $NG_ONE_WORKER | tr ' ' /)" -
    fi
fi
for fmt in $FORMATS; do
    l="   floor $fmt:"
    for c in $FLOOR_CONCS; do l="$l vips_concurrency ${VCONC[vips$c:$fmt]} $(fmed "vips$c:$fmt");"; done
    echo "$l"
done
if [ "$RSS_PART" != 0 ]; then
    l="RSS per job, 500x500 JPEG of $RSS_BIG, one job at a time: worker (jobs 1, vips_concurrency $RSS_VCONC):"
    for o in $ORIGINS; do
        l="$l $(olab "$o") +$(mb "${RSS_JOB[$o]}") MB (idle $(mb "${RSS_IDLE[$o]}") -> peak $(mb "${RSS_HWM[$o]}"));"
    done
    echo "$l"
    echo "   vipsthumbnail (whole process, /usr/bin/time -v): $(mb "$vt_big") MB (on a 64 px JPEG $(mb "$vt_tiny") MB, so +$(mb $((vt_big - vt_tiny))) MB for the photo; VIPS_CONCURRENCY=1: $(mb "$vt_big1") MB)"
    echo "   ratio worker per job ($(olab "$worst"), the larger) / vipsthumbnail peak = ${RSS_RATIO}x (target <= 2) $(awk -v v="$RSS_RATIO" 'BEGIN{print (v != "nan" && v + 0 <= 2) ? "PASS" : "ABOVE"}');" \
        "/ vipsthumbnail's +$(mb $((vt_big - vt_tiny))) MB above its 64 px run = ${RSS_RATIO_INC}x"
    summary "resize rss: worker per job / vipsthumbnail peak" "$RSS_RATIO" "<=2"
    summary "resize rss: worker per job / vipsthumbnail increment" "$RSS_RATIO_INC" -
    for o in $ORIGINS; do summary "resize rss: worker per job $(olab "$o") MB" "$(mb "${RSS_JOB[$o]}")" -; done
    summary "resize rss: vipsthumbnail peak MB" "$(mb "$vt_big")" -
fi
[ -n "${CORPUS_NOTE##*.deb}" ] && summary "resize: CORPUS" "$CORPUS_NOTE" -

status=0
if [ -n "$NOISY$BENCH_NOISE" ]; then
    echo "resize: WARNING: other processes took CPU during the bench, figures are noisy:$NOISY ${BENCH_NOISE}"
    summary "resize: NOISE (other processes busy)" "${NOISY:-$BENCH_NOISE}" -
fi
kill -0 "$GW_PID" 2>/dev/null || { status=2; echo "resize: refract-gateway died during the run" >&2; }
[ -n "${WK_DIED:-}" ] && { status=2; echo "resize: refract-image-worker died during the run" >&2; }
[ -n "$HAS_JPEG" ] && { kill -0 "$NG_PID" 2>/dev/null || { status=2; echo "resize: nginx died during the run" >&2; }; }
[ -n "$OR_PID" ] && { kill -0 "$OR_PID" 2>/dev/null || { status=2; echo "resize: the nginx origin died during the run" >&2; }; }
# Expected, not reported: the jobs abandoned when a wrk run ends (wrk closes
# its connections, the gateway cancels their jobs) and the workers the RSS
# part stops.
EXPECTED='cancelled or past its deadline|worker [0-9A-F]+ gone \(disconnect\) with 0 job'
for l in "$TMP"/gateway.log "$TMP"/worker*.log; do
    if grep -iE 'error|crit|warn' "$l" 2>/dev/null | grep -qvE "$EXPECTED"; then
        echo "resize: $(basename "$l") warnings/errors:"
        grep -iE 'error|crit|warn' "$l" | grep -vE "$EXPECTED" | sed 's/^[^ ]* //' | sort | uniq -c | sort -rn | head -5
    fi
done
echo "resize: took $(($(date +%s) - T_START)) s; raw output in $RAW"
exit $status
