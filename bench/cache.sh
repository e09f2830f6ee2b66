#!/bin/bash
# bench/cache.sh — cache HITS: refract-gateway with its edge cache on, against
# nginx proxy_cache, Varnish and h2o serving the same file statically, for a
# 10 KB and a 1 MB object. All caches sit in front of one nginx origin that
# only serves their misses. Prints req/s of each and the ratios
# refract/nginx-proxy_cache (target >= 1.2), refract/varnish (info) and
# refract/h2o-static (target >= 0.9).
#
#   bench/cache.sh                               (defaults below; ~3 minutes, ~2 without refract)
#   CACHE_DURATION=3 CACHE_ROUNDS=1 bench/cache.sh
#   CACHE_BENCH_SKIP_REFRACT=1 bench/cache.sh    (peers only: no gateway started, no refract ratios)
#
# Before measuring, every contender must return the exact bytes of both
# objects and prove it serves them from its cache: after the warm-up, a short
# wrk burst must not reach the origin (its access log must not grow), and the
# response must say HIT (refract: `Cache-Status: ...; hit`; nginx:
# `X-Cache-Status: HIT`; Varnish: two ids in `X-Varnish` and an `Age`). A
# contender that is not hitting fails the bench (exit 2) instead of giving a
# ratio.
#
# Peers missing? As root the bench installs them (`apt-get install -y varnish
# h2o`); otherwise it stops and says what to install.
#
# Exit status: 0 when every contender ran (whatever the ratios), 2 when one
# could not run, answered wrongly or was not serving from its cache.
set -u
. "$(dirname "$0")/lib.sh"

DURATION=${CACHE_DURATION:-5}     # seconds per measured wrk run
WARMUP=${CACHE_WARMUP:-3}         # seconds of warm-up per contender and size
ROUNDS=${CACHE_ROUNDS:-3}         # measured runs per contender (order rotating); the median counts
CHECK=${CACHE_CHECK:-2}           # seconds of the burst that must not reach the origin
THREADS=${CACHE_WRK_THREADS:-2}   # wrk -t
CONNS_SMALL=${CACHE_CONNS_SMALL:-32}
CONNS_LARGE=${CACHE_CONNS_LARGE:-8}
SERVER_THREADS=${CACHE_SERVER_THREADS:-2} # refract threads = nginx workers = h2o num-threads
SKIP_REFRACT=${CACHE_BENCH_SKIP_REFRACT:-0}
REUSEPORT=${CACHE_NGINX_REUSEPORT:-1}
RP=""
[ "$REUSEPORT" = 1 ] && RP=" reuseport"
NGINX_EXTRA=${CACHE_NGINX_EXTRA:-} # extra directives for the proxy_cache location

bench_init cache
need nginx wrk curl ss awk cmp getconf
[ "$SKIP_REFRACT" = 1 ] || [ -x "$BIN/refract-gateway" ] || die "$BIN/refract-gateway is missing: run make"

# ---- the peers: Varnish and h2o (Debian 12 packages), installed when missing ----
missing=()
command -v varnishd >/dev/null 2>&1 || [ -x /usr/sbin/varnishd ] || missing+=(varnish)
[ -x /usr/bin/h2o ] || missing+=(h2o)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing peers: ${missing[*]} (as root: apt-get install -y ${missing[*]})"
    echo "cache: installing the missing peers: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$TMP/apt.log" 2>&1 ||
        { DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$TMP/apt.log" 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$TMP/apt.log" 2>&1; } ||
        { tail -20 "$TMP/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
fi
VARNISHD=$(command -v varnishd 2>/dev/null || echo /usr/sbin/varnishd)
H2O=/usr/bin/h2o
[ -x "$VARNISHD" ] || die "varnishd is missing (apt-get install varnish)"
[ -x "$H2O" ] || die "/usr/bin/h2o is missing (apt-get install h2o)"

RAW=${BENCH_RAW:-$RESULTS_DIR/cache-$(date +%Y%m%d-%H%M%S).log}
: >"$RAW"

# ---- the objects -------------------------------------------------------------
WWW=$TMP/www
mkdir -p "$WWW"
head -c 10240 /dev/urandom >"$WWW/10k.bin"
head -c 1048576 /dev/urandom >"$WWW/1m.bin"
chmod 644 "$WWW"/*

P_ORIGIN=$(free_port)
P_NGINX=$(free_port)
P_VARNISH=$(free_port)
P_H2O=$(free_port)
P_GW=$(free_port)
P_ADMIN=$(free_port)
P_BUS=$(free_port)

# ---- origin: nginx serving the files, max-age=3600, one log line per request ------
# One worker: after the warm-up it serves nothing (that is checked), so it
# takes no CPU from the contenders. Its access log counts what reaches it.
mkdir -p "$TMP/origin/logs"
ORIGIN_LOG=$TMP/origin/logs/access.log
: >"$ORIGIN_LOG"
{
    nginx_conf_head 1
    cat <<EOF
http {
    access_log $ORIGIN_LOG;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$P_ORIGIN;
        root $WWW;
        expires 1h;
    }
}
EOF
} >"$TMP/origin/nginx.conf"
nginx_start "$TMP/origin"
ORIGIN_PID=$NGINX_PID
origin_count() { wc -l <"$ORIGIN_LOG"; }

# ---- peer: nginx proxy_cache ---------------------------------------------------
mkdir -p "$TMP/peer" "$TMP/nginx-cache"
{
    nginx_conf_head "$SERVER_THREADS"
    bench_nginx_proxy_cache_http "$P_NGINX$RP" "$NGINX_EXTRA"
} >"$TMP/peer/nginx.conf"
nginx_start "$TMP/peer"
PEER_PID=$NGINX_PID

# ---- peer: Varnish, default VCL (-b), malloc storage, default thread pools ------
"$VARNISHD" -a "127.0.0.1:$P_VARNISH" -b "127.0.0.1:$P_ORIGIN" -s malloc,512m -n "$TMP/varnish" \
    -T 127.0.0.1:0 -F >"$TMP/varnish.log" 2>&1 &
VARNISH_PID=$!
bench_track "$VARNISH_PID"

# ---- peer: h2o (Debian's /usr/bin/h2o) serving the files statically --------------
mkdir -p "$TMP/h2o"
cat >"$TMP/h2o/h2o.conf" <<EOF
num-threads: $SERVER_THREADS
error-log: $TMP/h2o/error.log
listen:
  host: 127.0.0.1
  port: $P_H2O
hosts:
  default:
    paths:
      /:
        file.dir: $WWW
EOF
[ "$(id -u)" = 0 ] && echo "user: nobody" >>"$TMP/h2o/h2o.conf"
"$H2O" -t -c "$TMP/h2o/h2o.conf" >"$TMP/h2o/conftest.log" 2>&1 ||
    { cat "$TMP/h2o/conftest.log" >&2; die "h2o rejects $TMP/h2o/h2o.conf"; }
"$H2O" -c "$TMP/h2o/h2o.conf" >"$TMP/h2o/stderr.log" 2>&1 &
H2O_PID=$!
bench_track "$H2O_PID"

# ---- refract: the gateway with its edge cache, in front of the same origin ----------
if [ "$SKIP_REFRACT" != 1 ]; then
    bench_refract_cache_conf "$TMP/refract.yaml" ||
        die "refract-gateway rejects the bench's cache configuration (a build without the edge cache?); CACHE_BENCH_SKIP_REFRACT=1 measures the peers alone"
    gateway_start "$TMP/refract.yaml" "$TMP/gateway.log"
fi

wait_http "http://127.0.0.1:$P_ORIGIN/10k.bin" "$ORIGIN_PID" || die "origin nginx did not start ($(cat "$TMP/origin/logs/"*.log))"
wait_http "http://127.0.0.1:$P_NGINX/" "$PEER_PID" || die "nginx proxy_cache did not start ($(cat "$TMP/peer/logs/"*.log))"
wait_http "http://127.0.0.1:$P_VARNISH/" "$VARNISH_PID" 30 || die "varnishd did not start ($(cat "$TMP/varnish.log"))"
wait_http "http://127.0.0.1:$P_H2O/" "$H2O_PID" || die "h2o did not start ($(cat "$TMP/h2o/"*.log))"
if [ "$SKIP_REFRACT" != 1 ]; then
    wait_http "http://127.0.0.1:$P_GW/" "$GW_PID" || die "refract-gateway did not start ($(cat "$TMP/gateway.log"))"
fi

CONTENDERS="refract nginx varnish h2o"
[ "$SKIP_REFRACT" = 1 ] && CONTENDERS="nginx varnish h2o"
declare -A URL=([refract]="http://127.0.0.1:$P_GW" [nginx]="http://127.0.0.1:$P_NGINX"
    [varnish]="http://127.0.0.1:$P_VARNISH" [h2o]="http://127.0.0.1:$P_H2O")
declare -A DESC=([refract]="refract-gateway, edge cache on" [nginx]="nginx proxy_cache (peer)"
    [varnish]="Varnish, malloc storage (peer)" [h2o]="h2o static file.dir (peer)")

{
    echo "nginx: $(nginx -v 2>&1)"
    echo "varnish: $("$VARNISHD" -V 2>&1 | head -1)"
    echo "h2o: $("$H2O" --version 2>&1 | head -1)"
} | tee -a "$RAW" | sed 's/^/cache: /'

# server_pids CONTENDER: the processes whose CPU time counts for it
server_pids() {
    case $1 in
    nginx) pgrep -P "$PEER_PID" | tr '\n' ' ' ;;
    varnish) echo "$VARNISH_PID $(pgrep -P "$VARNISH_PID" | tr '\n' ' ')" ;; # manager + cache child
    h2o) echo "$H2O_PID" ;;
    refract) echo "$GW_PID" ;;
    esac
}

# ticks PID...: like lib.sh's cpu_ticks, one awk for all threads (Varnish runs hundreds)
ticks() {
    local p files=()
    for p in "$@"; do files+=(/proc/"$p"/task/*/stat); done
    cat "${files[@]}" 2>/dev/null | awk '{ id = $1; sub(/^.*\) /, ""); print id, $12 + $13 }'
}

# ---- the exact bytes, and a response that says it came from the cache ---------------
# hit_header CONTENDER HEADERS_FILE: 0 when the response headers show a cache hit
hit_header() {
    local h=$2
    case $1 in
    refract) grep -qiE '^cache-status:.*;[[:space:]]*hit[[:space:]]*(;|,|$)' <(tr -d '\r' <"$h") ;;
    nginx) grep -qiE '^x-cache-status:[[:space:]]*HIT[[:space:]]*$' <(tr -d '\r' <"$h") ;;
    varnish) grep -qiE '^x-varnish:[[:space:]]*[0-9]+[[:space:]]+[0-9]+[[:space:]]*$' <(tr -d '\r' <"$h") &&
        grep -qiE '^age:[[:space:]]*[0-9]+' "$h" ;;
    h2o) grep -qE '^HTTP/[0-9.]+ 200' "$h" ;; # static: nothing to hit
    esac
}
cache_headers() { grep -iE '^(cache-status|x-cache-status|x-varnish|age):' "$1" | tr -d '\r' | tr '\n' ' '; }

get_check() { # CONTENDER FILE: GET it once, exact bytes back; headers in $TMP/check.h
    curl -s -f -D "$TMP/check.h" -o "$TMP/check" "${URL[$1]}/$2" || die "$1: GET /$2 failed"
    cmp -s "$TMP/check" "$WWW/$2" || die "$1: GET /$2 returned different bytes"
}

for c in $CONTENDERS; do
    for f in 10k.bin 1m.bin; do get_check "$c" "$f"; done
done
echo "cache: all contenders return the exact 10 KB and 1 MB objects"

LUA=$TMP/report.lua
write_wrk_lua "$LUA"

wrk_for() { # CONTENDER FILE SECONDS CONNS LABEL
    local c=$1 f=$2 d=$3 conns=$4 label=$5
    run_wrk "$label" "$LUA" "${URL[$c]}/$f" -t"$THREADS" -c"$conns" -d"${d}s" --timeout 10s ||
        die "$c: wrk failed on /$f"
    if [ "$W_ERRS" -gt 0 ]; then
        echo "cache: WARNING: $c /$f: $W_ERRS errors (see $RAW)" >&2
        [ "$((W_ERRS * 100))" -gt "$W_REQS" ] && die "$c: more than 1% errors on /$f"
    fi
}

# verify_hits CONTENDER FILE CONNS: after the warm-up, the response says hit and
# a burst of wrk does not reach the origin at all
verify_hits() {
    local c=$1 f=$2 conns=$3 n0 n1 hdrs
    get_check "$c" "$f"
    hit_header "$c" "$TMP/check.h" ||
        die "$c is NOT serving /$f from its cache after the warm-up: $(head -1 "$TMP/check.h" | tr -d '\r') $(cache_headers "$TMP/check.h")"
    n0=$(origin_count)
    wrk_for "$c" "$f" "$CHECK" "$conns" "hit check $c $f"
    n1=$(origin_count)
    [ "$n1" -eq "$n0" ] ||
        die "$c is NOT serving /$f from its cache: the origin got $((n1 - n0)) of its $W_REQS requests during a ${CHECK}s burst"
    hdrs=$(cache_headers "$TMP/check.h")
    [ "$c" = h2o ] && hdrs="static files, no cache "
    printf 'cache: %-8s %-7s hit verified: %s; origin untouched by %s requests in %ss\n' "$c" "$f" \
        "$hdrs" "$W_REQS" "$CHECK"
}

declare -A RPS MBPS P99 CPUREQ
status=0
NOISY=""
MISSES=""
machine_check
echo
echo "== cache: cache hits; wrk -t$THREADS, ${DURATION}s x $ROUNDS rounds per contender; servers $SERVER_THREADS threads/workers; $(nproc) CPUs shared with wrk =="
[ "$SKIP_REFRACT" = 1 ] && echo "cache: CACHE_BENCH_SKIP_REFRACT=1: refract is not measured, peers only"
read -r -a ORDER <<<"$CONTENDERS"
for size in 10k 1m; do
    f=$size.bin
    conns=$CONNS_SMALL
    [ "$size" = 1m ] && conns=$CONNS_LARGE
    for c in $CONTENDERS; do
        wrk_for "$c" "$f" "$WARMUP" "$conns" "warmup $c $f"
    done
    for c in $CONTENDERS; do verify_hits "$c" "$f" "$conns"; done
    for r in $(seq "$ROUNDS"); do
        # rotate the order each round, so drift falls on every contender alike
        order=()
        for i in "${!ORDER[@]}"; do order+=("${ORDER[$(((i + r - 1) % ${#ORDER[@]}))]}"); done
        for c in "${order[@]}"; do
            spids=$(server_pids "$c")
            snap=$(proc_snapshot)
            n0=$(origin_count)
            # shellcheck disable=SC2086
            t0=$(ticks $spids)
            wrk_for "$c" "$f" "$DURATION" "$conns" "round $r $c $f"
            # shellcheck disable=SC2086
            t1=$(ticks $spids)
            n1=$(origin_count)
            miss=""
            if [ "$n1" -ne "$n0" ]; then
                miss="  [origin reached $((n1 - n0)) times]"
                MISSES="$MISSES $c/$size:$((n1 - n0))"
                [ "$(((n1 - n0) * 1000))" -gt "$W_REQS" ] &&
                    die "$c stopped serving /$f from its cache: the origin got $((n1 - n0)) of its $W_REQS requests in round $r"
            fi
            split=$(cpu_split "$t0" "$t1")
            cpu_req=$(awk -v ms="$(cpu_total_ms "$t0" "$t1")" -v n="$W_REQS" 'BEGIN{printf "%.1f", n ? ms * 1000 / n : 0}')
            CPUREQ[$c.$size]="${CPUREQ[$c.$size]:-} $cpu_req"
            noise=$(foreign_cpu "$snap" "$DURATION")
            [ -n "$noise" ] && NOISY="$NOISY $c/$size:[$noise]"
            RPS[$c.$size]="${RPS[$c.$size]:-} $W_RPS"
            MBPS[$c.$size]="${MBPS[$c.$size]:-} $W_MBPS"
            P99[$c.$size]="${P99[$c.$size]:-} $W_P99"
            printf '   round %d  %-8s %-7s %10s req/s %9s MB/s  p99 %7s ms  CPU %6s us/req, split %-9s%s%s\n' "$r" "$c" \
                "$f" "$W_RPS" "$W_MBPS" "$W_P99" "$cpu_req" "$split" "$miss" "${noise:+  [other processes busy: $noise]}"
        done
    done
done

med() { # CONTENDER SIZE: median req/s
    # shellcheck disable=SC2086
    fmedian ${RPS[$1.$2]}
}

echo
echo "median of the rounds:"
printf '%-6s %-34s %12s %10s %12s  %s\n' size contender "req/s" "MB/s" "CPU us/req" "p99 ms (runs)"
for size in 10k 1m; do
    conns=$CONNS_SMALL
    [ "$size" = 1m ] && conns=$CONNS_LARGE
    for c in $CONTENDERS; do
        # shellcheck disable=SC2086
        printf '%-6s %-34s %12s %10s %12s  %s\n' "$size" "${DESC[$c]}" "$(med "$c" "$size")" \
            "$(fmedian ${MBPS[$c.$size]})" "$(fmedian ${CPUREQ[$c.$size]})" "$(echo ${P99[$c.$size]} | tr ' ' /)"
    done
    if [ "$SKIP_REFRACT" = 1 ]; then
        echo "       ratios: refract skipped (CACHE_BENCH_SKIP_REFRACT=1)   nginx/h2o = $(fdiv "$(med nginx $size)" "$(med h2o $size)")x   varnish/h2o = $(fdiv "$(med varnish $size)" "$(med h2o $size)")x   (wrk -c$conns)"
    else
        r_nginx=$(fdiv "$(med refract $size)" "$(med nginx $size)")
        r_varnish=$(fdiv "$(med refract $size)" "$(med varnish $size)")
        r_h2o=$(fdiv "$(med refract $size)" "$(med h2o $size)")
        echo "       ratio refract/nginx-proxy_cache = ${r_nginx}x (target >= 1.2)   refract/varnish = ${r_varnish}x   refract/h2o-static = ${r_h2o}x (target >= 0.9)   (wrk -c$conns)"
        summary "cache $size: refract/nginx proxy_cache (req/s)" "$r_nginx" 1.2
        summary "cache $size: refract/h2o static (req/s)" "$r_h2o" 0.9
        summary "cache $size: refract/varnish (info)" "$r_varnish" -
    fi
    echo
    # shellcheck disable=SC2086
    {
        summary "cache $size: req/s $(echo $CONTENDERS | tr ' ' '|')" "$(for c in $CONTENDERS; do printf '%s ' "$(med "$c" "$size")"; done | sed 's/ $//; s/ / | /g')" -
        summary "cache $size: CPU us/req $(echo $CONTENDERS | tr ' ' '|')" "$(for c in $CONTENDERS; do printf '%s ' "$(fmedian ${CPUREQ[$c.$size]})"; done | sed 's/ $//; s/ / | /g')" -
    }
done

if [ -n "$MISSES" ]; then
    echo "cache: WARNING: the origin was reached during measured rounds:$MISSES"
fi
if [ -n "$NOISY$BENCH_NOISE" ]; then
    echo "cache: WARNING: other processes took CPU during the bench, figures are noisy:$NOISY ${BENCH_NOISE}"
    summary "cache: NOISE (other processes busy)" "${NOISY:-$BENCH_NOISE}" -
fi
kill -0 "$PEER_PID" 2>/dev/null || { status=2; echo "cache: nginx proxy_cache died during the run" >&2; }
kill -0 "$VARNISH_PID" 2>/dev/null || { status=2; echo "cache: varnishd died during the run" >&2; }
kill -0 "$H2O_PID" 2>/dev/null || { status=2; echo "cache: h2o died during the run" >&2; }
if [ "$SKIP_REFRACT" != 1 ]; then
    kill -0 "$GW_PID" 2>/dev/null || { status=2; echo "cache: refract-gateway died during the run" >&2; }
    if grep -qiE 'error|crit|alert' "$TMP/gateway.log" 2>/dev/null; then
        echo "cache: gateway log (warnings/errors):"; grep -iE 'error|crit|alert|warn' "$TMP/gateway.log" | sort | uniq -c | sort -rn | head -5
    fi
fi
echo "cache: raw wrk output in $RAW"
exit $status
