#!/bin/bash
# bench/resize.sh — uncached resize of real ~3840x2400 JPEGs to fit 500x500,
# at 2-way concurrency, three contenders over the same images:
#   a. floor:   bench-vips-loop (bench/vips_loop.c), libvips in-process, 2 threads,
#               once with vips_concurrency 1 (as the worker) and once with the
#               libvips default; the better one is the floor
#   b. refract: gateway (file:// origin) + one image worker (jobs 2,
#               vips_concurrency 1), GET /<file>/dims/resize/500x500
#   c. nginx:   image_filter resize 500 500 (libgd), GET /<file>
# Prints images/s of each and the ratios refract/floor and refract/nginx.
#
#   bench/resize.sh                          (defaults below; ~2.5-3 minutes)
#   RESIZE_DURATION=5 RESIZE_ROUNDS=1 bench/resize.sh
#
# Corpus: Debian's ukui-wallpapers package (apt-get download), cached in
# build/bench-corpus/; its JPEGs at least 3000 px wide. When it cannot be
# had, a generated 3840x2400 JPEG (ffmpeg testsrc2 + vips) is used and the
# output says so.
#
# Exit status: 0 when every contender ran (whatever the ratios), 2 when one
# could not run or did not produce 500-wide JPEGs.
set -u
. "$(dirname "$0")/lib.sh"

DURATION=${RESIZE_DURATION:-10} # seconds per measured run
WARMUP=${RESIZE_WARMUP:-3}      # seconds of warm-up per HTTP contender
ROUNDS=${RESIZE_ROUNDS:-3}      # measured runs per contender (order alternating); the median counts
CONC=2                          # the 2-way concurrency of every contender
NGINX_TRIES=${RESIZE_NGINX_TRIES:-3} # attempts per round to get both nginx workers busy
CORPUS=${BENCH_CORPUS_DIR:-$ROOT/build/bench-corpus} # BENCH_NO_DOWNLOAD=1: generated corpus

bench_init resize
need nginx wrk curl ss awk vipsheader getconf
[ -x "$BIN/refract-gateway" ] || die "$BIN/refract-gateway is missing: run make"
[ -x "$BIN/refract-image-worker" ] || die "$BIN/refract-image-worker is missing: run make"
make -s --no-print-directory -C "$ROOT" build/bin/bench-vips-loop >/dev/null || die "cannot build bench-vips-loop"
RAW=${BENCH_RAW:-$RESULTS_DIR/resize-$(date +%Y%m%d-%H%M%S).log}
: >"$RAW"
# Absolute: the corpus download below runs in a subshell that cd's away
# (a relative $RAW once made its redirect fail, so apt-get never ran and the
# generated fallback was benchmarked instead of the real photos).
RAW=$(realpath "$RAW")
CORPUS=$(realpath -m "$CORPUS")

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

# check_jpeg500 FILE WHAT: the output must be a JPEG exactly 500 px wide
check_jpeg500() {
    local hdr w
    hdr=$(vipsheader "$1" 2>&1) || die "$2: output is not an image ($(head -c 200 "$1" | tr -cd '[:print:]'))"
    w=$(vipsheader -f width "$1")
    [[ $hdr == *jpegload* ]] || die "$2: output is not a JPEG: $hdr"
    [ "$w" = 500 ] || die "$2: output is $w px wide, not 500: $hdr"
}

P_NGINX=$(free_port)
P_GW=$(free_port)
P_ADMIN=$(free_port)
P_BUS=$(free_port)
P_WMET=$(free_port)

# ---- c. nginx image_filter ---------------------------------------------------------
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

# ---- b. refract: gateway + one image worker -----------------------------------------
cat >"$TMP/refract.yaml" <<EOF
gateway:
  listen: "127.0.0.1:$P_GW"
  admin_listen: "127.0.0.1:$P_ADMIN"
  threads: 2
  access_log: false
bus:
  endpoint: "tcp://127.0.0.1:$P_BUS"
  queue_max: 64
vhosts:
  - name: localhost
    default: true
    origin: "file://$IMG"
    cache: { enable: false }   # every resize is made, not served from the cache
    dims:
      max_source_size: 20MB
image_worker:
  metrics_listen: "127.0.0.1:$P_WMET"
  jobs: 2
  vips_concurrency: 1
log:
  level: warn
EOF
gateway_start "$TMP/refract.yaml" "$TMP/gateway.log"
"$BIN/refract-image-worker" -c "$TMP/refract.yaml" >>"$TMP/worker.log" 2>&1 &
WK_PID=$!
bench_track "$WK_PID"

wait_http "http://127.0.0.1:$P_NGINX/${FILES[0]}" "$NG_PID" 15 || die "nginx did not start ($(cat "$TMP/nginx/logs/"*.log))"
wait_http "http://127.0.0.1:$P_GW/${FILES[0]}" "$GW_PID" 10 || die "refract-gateway did not start ($(cat "$TMP/gateway.log"))"
# the worker is ready once a resize answers 200 (it connects to the broker)
ok=""
for _ in $(seq 100); do
    kill -0 "$WK_PID" 2>/dev/null || die "refract-image-worker exited ($(cat "$TMP/worker.log"))"
    code=$(curl -s -o "$TMP/out.jpg" -w '%{http_code}' "http://127.0.0.1:$P_GW/${FILES[0]}/dims/resize/500x500")
    [ "$code" = 200 ] && { ok=1; break; }
    sleep 0.2
done
[ -n "$ok" ] || die "refract did not answer a resize with 200 (last: $code; $(tail -3 "$TMP/gateway.log" "$TMP/worker.log"))"

# ---- every contender must produce a 500-wide JPEG of every file ---------------------------
for f in "${FILES[@]}"; do
    code=$(curl -s -D "$TMP/h" -o "$TMP/out.jpg" -w '%{http_code}' "http://127.0.0.1:$P_GW/$f/dims/resize/500x500")
    [ "$code" = 200 ] || die "refract: /$f/dims/resize/500x500 answered $code"
    grep -qi '^x-refract-fallback' "$TMP/h" && die "refract: /$f was sent unprocessed ($(grep -i '^x-refract-fallback' "$TMP/h"))"
    check_jpeg500 "$TMP/out.jpg" "refract /$f"
    code=$(curl -s -o "$TMP/out.jpg" -w '%{http_code}' "http://127.0.0.1:$P_NGINX/$f")
    [ "$code" = 200 ] || die "nginx image_filter: /$f answered $code"
    check_jpeg500 "$TMP/out.jpg" "nginx image_filter /$f"
done
IMGS=()
for f in "${FILES[@]}"; do IMGS+=("$IMG/$f"); done
"$BIN/bench-vips-loop" -t 1 -d 0.01 -c 1 -o "$TMP/out.jpg" "${IMGS[@]}" >/dev/null || die "bench-vips-loop failed"
check_jpeg500 "$TMP/out.jpg" "bench-vips-loop"
echo "resize: checked: every contender returns 500-wide JPEGs for every file"

printf '/%s/dims/resize/500x500\n' "${FILES[@]}" >"$TMP/paths.refract"
printf '/%s\n' "${FILES[@]}" >"$TMP/paths.nginx"
write_wrk_lua "$TMP/refract.lua" "$TMP/paths.refract"
write_wrk_lua "$TMP/nginx.lua" "$TMP/paths.nginx"
declare -A URL=([refract]="http://127.0.0.1:$P_GW" [nginx]="http://127.0.0.1:$P_NGINX")

http_run() { # CONTENDER SECONDS LABEL: sets W_* (images/s = W_RPS)
    local c=$1
    run_wrk "$3" "$TMP/$c.lua" "${URL[$c]}" -t$CONC -c$CONC -d"$2s" --timeout 30s || die "$c: wrk failed"
    [ "$W_REQS" -gt 0 ] || [[ $3 == warmup* ]] || die "$c: no request completed in '$3'"
    [ "$W_ERRS" -eq 0 ] || die "$c: $W_ERRS errors or non-2xx answers in '$3' (see $RAW)"
    # a transform answers tens of KB; MBs would mean originals are being sent
    [ $((W_BYTES / (W_REQS + 1))) -lt 1048576 ] || die "$c: answers average $((W_BYTES / W_REQS)) bytes: not resized?"
}

vips_run() { # CONCURRENCY(0 = libvips default) LABEL: sets V_IPS V_CONC
    local out
    out=$("$BIN/bench-vips-loop" -t $CONC -d "$DURATION" -c "$1" "${IMGS[@]}" 2>&1) || die "bench-vips-loop: $out"
    { echo "---- $2"; echo "$out"; } >>"$RAW"
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

metric_sum() { # URL NAME: sum of a metric over its label sets
    curl -s --max-time 2 "$1" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $NF} END{printf "%.6f", s}'
}
GW_MET="http://127.0.0.1:$P_ADMIN/metrics"
WK_MET="http://127.0.0.1:$P_WMET/metrics"

NOISY=""
machine_check
echo
echo "== resize: JPEG ~3840x2400 -> fit 500x500, uncached, concurrency $CONC; ${DURATION}s x $ROUNDS rounds; $(nproc) CPUs shared with wrk =="
http_run refract "$WARMUP" "warmup refract"
http_run nginx "$WARMUP" "warmup nginx"
m0=("$(metric_sum "$WK_MET" refract_worker_job_duration_seconds_sum)" "$(metric_sum "$WK_MET" refract_worker_job_duration_seconds_count)"
    "$(metric_sum "$GW_MET" refract_bus_job_duration_seconds_sum)" "$(metric_sum "$GW_MET" refract_http_request_duration_seconds_sum)"
    "$(metric_sum "$GW_MET" refract_http_request_duration_seconds_count)")
declare -A IPS
mapfile -t NG_WORKERS < <(pgrep -P "$NG_PID")
for r in $(seq "$ROUNDS"); do
    order="vips1 vips0 refract nginx"
    [ $((r % 2)) -eq 0 ] && order="nginx refract vips0 vips1"
    for c in $order; do
        snap=$(proc_snapshot)
        case $c in
        vips1) vips_run 1 "round $r vips-loop concurrency 1"; v=$V_IPS; extra="(vips_concurrency $V_CONC; CPU $V_CPU ms/image)" ;;
        vips0) vips_run 0 "round $r vips-loop default concurrency"; v=$V_IPS; extra="(libvips default concurrency = $V_CONC; CPU $V_CPU ms/image)" ;;
        refract)
            cpu0=$(worker_cpu "$GW_PID" "$WK_PID")
            http_run refract "$DURATION" "round $r refract"
            cpu1=$(worker_cpu "$GW_PID" "$WK_PID")
            v=$W_RPS
            # CPU per image of the gateway and of the worker (all their threads)
            cpu_img=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$W_REQS" -v hz="$(getconf CLK_TCK)" 'BEGIN{split(a, x, " ");
                split(b, y, " "); printf "gateway %.1f + worker %.1f", (y[1] - x[1]) * 1000 / hz / n, (y[2] - x[2]) * 1000 / hz / n}')
            extra="p50 $W_P50 ms, p99 $W_P99 ms, $((W_BYTES / W_REQS / 1024)) KB/answer; CPU $cpu_img ms/image"
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
                    printf '   round %d  %-8s %8s images/s  %s -> one worker did all the work: discarded, retrying\n' "$r" nginx "$v" "$extra"
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
        printf '   round %d  %-8s %8s images/s  %s%s\n' "$r" "$c" "$v" "$extra" "${noise:+  [other processes busy: $noise]}"
    done
done
m1=("$(metric_sum "$WK_MET" refract_worker_job_duration_seconds_sum)" "$(metric_sum "$WK_MET" refract_worker_job_duration_seconds_count)"
    "$(metric_sum "$GW_MET" refract_bus_job_duration_seconds_sum)" "$(metric_sum "$GW_MET" refract_http_request_duration_seconds_sum)"
    "$(metric_sum "$GW_MET" refract_http_request_duration_seconds_count)")

# shellcheck disable=SC2086
{
    v1=$(fmedian ${IPS[vips1]})
    v0=$(fmedian ${IPS[vips0]})
    rf=$(fmedian ${IPS[refract]})
    ng=$(fmedian ${IPS[nginx]})
}
if awk -v a="$v1" -v b="$v0" 'BEGIN{exit !(a >= b)}'; then
    floor=$v1 floor_what="vips_concurrency 1"
else
    floor=$v0 floor_what="libvips default concurrency"
fi
r_floor=$(fdiv "$rf" "$floor")
r_nginx=$(fdiv "$rf" "$ng")
echo
echo "median of the rounds:"
printf '%-58s %10s\n' contender "images/s"
printf '%-58s %10s\n' "a. floor: bench-vips-loop, 2 threads, vips_concurrency 1" "$v1"
printf '%-58s %10s\n' "a. floor: bench-vips-loop, 2 threads, libvips default" "$v0"
printf '%-58s %10s\n' "b. refract: gateway + image worker (jobs 2)" "$rf"
printf '%-58s %10s\n' "c. nginx image_filter (libgd), 2 workers" "$ng"
echo "   floor used: $floor images/s ($floor_what, the better of the two)"
# shellcheck disable=SC2086
[ -n "${NG_ONE_WORKER:-}" ] && echo "   nginx runs discarded because one worker served both connections: $(echo $NG_ONE_WORKER | tr ' ' /) images/s" \
    "(refract/nginx would be $(fdiv "$rf" "$(fmean $NG_ONE_WORKER)")x against those)"
echo "   ratio refract/vips-loop = ${r_floor}x (target >= 0.85)   refract/nginx = ${r_nginx}x (target >= 2.5)"
jobs_n=$(awk -v a="${m0[1]}" -v b="${m1[1]}" 'BEGIN{print b - a}')
if [ "${jobs_n%.*}" -gt 0 ] 2>/dev/null; then
    awk -v ws="$(awk -v a="${m0[0]}" -v b="${m1[0]}" 'BEGIN{print b - a}')" -v n="$jobs_n" \
        -v bs="$(awk -v a="${m0[2]}" -v b="${m1[2]}" 'BEGIN{print b - a}')" \
        -v hs="$(awk -v a="${m0[3]}" -v b="${m1[3]}" 'BEGIN{print b - a}')" \
        -v hn="$(awk -v a="${m0[4]}" -v b="${m1[4]}" 'BEGIN{print b - a}')" \
        'BEGIN{printf "   refract breakdown (measured rounds, mean per image): worker transform %.1f ms, bus job (submit->reply) %.1f ms, HTTP request %.1f ms (%d jobs)\n", ws/n*1000, bs/n*1000, (hn > 0 ? hs/hn*1000 : 0), n}'
fi
{
    summary "resize: refract/vips-loop (images/s)" "$r_floor" 0.85
    summary "resize: refract/nginx (images/s)" "$r_nginx" 2.5
    summary "resize: vips-loop floor images/s ($floor_what)" "$floor" -
    summary "resize: vips-loop other concurrency images/s" "$([ "$floor" = "$v1" ] && echo "$v0" || echo "$v1")" -
    summary "resize: refract images/s" "$rf" -
    summary "resize: nginx image_filter images/s (both workers busy)" "$ng" -
    # shellcheck disable=SC2086
    [ -n "${NG_ONE_WORKER:-}" ] && summary "resize: nginx runs discarded, one worker busy (images/s)" "$(echo $NG_ONE_WORKER | tr ' ' /)" -
    [ -n "${CORPUS_NOTE##*.deb}" ] && summary "resize: CORPUS" "$CORPUS_NOTE" -
}

status=0
if [ -n "$NOISY$BENCH_NOISE" ]; then
    echo "resize: WARNING: other processes took CPU during the bench, figures are noisy:$NOISY ${BENCH_NOISE}"
    summary "resize: NOISE (other processes busy)" "${NOISY:-$BENCH_NOISE}" -
fi
kill -0 "$GW_PID" 2>/dev/null || { status=2; echo "resize: refract-gateway died during the run" >&2; }
kill -0 "$WK_PID" 2>/dev/null || { status=2; echo "resize: refract-image-worker died during the run" >&2; }
kill -0 "$NG_PID" 2>/dev/null || { status=2; echo "resize: nginx died during the run" >&2; }
for l in "$TMP/gateway.log" "$TMP/worker.log"; do
    if grep -qiE 'error|crit|warn' "$l" 2>/dev/null; then
        echo "resize: $(basename "$l") warnings/errors:"; grep -iE 'error|crit|warn' "$l" | sort | uniq -c | sort -rn | head -5
    fi
done
echo "resize: raw output in $RAW"
exit $status
