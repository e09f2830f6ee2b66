#!/bin/bash
# bench/collapse.sh — request collapsing: 1,000 clients miss the same new
# object at once. refract-gateway's edge cache (one origin request, every
# other client joins the fill) against nginx proxy_cache with
# `proxy_cache_lock on` (the waiters re-poll the lock every 500 ms) and
# Varnish 7.1 (waiters park on the busy object), all in front of one origin
# whose answer head comes after a fixed delay (200 ms) followed by a 100 KB
# body, `Cache-Control: max-age=3600`.
#
# Per contender and round, on fresh keys: one client's latency on a miss
# (`single`), then the latency to last byte of each of 1,000 clients sent at
# once on keep-alive connections opened beforehand, and how many requests
# the origin got for that key. Once with a 100 KB body (the headline), once
# with 1 KB (the collapsing alone, with next to nothing to deliver).
# Printed: single, p50/p99/max of the burst, p99/single (target <= 1.5 for
# refract) and origin requests per burst (refract: exactly 1; its
# Cache-Status must say `fwd=miss` on exactly one answer and `collapsed` on
# the others).
#
#   bench/collapse.sh                         (defaults below; about 2 minutes)
#   COLLAPSE_CLIENTS=100 COLLAPSE_ROUNDS=1 bench/collapse.sh
#   COLLAPSE_CONTENDERS="refract nginx" bench/collapse.sh
#
# The load generator and the origin are bench/cache_load.py (python3
# asyncio; the clients split over 2 processes started together). The
# latencies include the load generator's own work on the shared CPUs: the
# "hits" burst (the same N requests again, served from the cache) shows
# what delivering N bodies at once costs on this machine without any
# origin, and p99/(single+hits) compares the miss burst with that floor.
#
# Exit status: 0 when every contender ran (whatever the ratios), 2 when one
# could not run or answered wrongly — including refract collapsing wrongly
# (more than one origin request, or not exactly one `fwd=miss`).
set -u
. "$(dirname "$0")/lib.sh"

CLIENTS=${COLLAPSE_CLIENTS:-1000}        # concurrent clients per burst
DELAY_MS=${COLLAPSE_DELAY_MS:-200}       # the origin's delay before its answer head
BODIES=${COLLAPSE_BODIES:-102400 1024}   # body sizes, one pass each (the first is the headline)
ROUNDS=${COLLAPSE_ROUNDS:-3}             # rounds (order rotating); the median counts
SERVER_THREADS=${COLLAPSE_SERVER_THREADS:-2} # refract threads = nginx workers
SETTLE=${COLLAPSE_SETTLE:-0.5}           # seconds between opening the connections and the burst
TIMEOUT=${COLLAPSE_TIMEOUT:-30}          # seconds a client waits for its answer
CLIENT_PROCS=${COLLAPSE_CLIENT_PROCS:-2} # load-generator processes sharing the clients of a burst
CONTENDERS=${COLLAPSE_CONTENDERS:-refract nginx varnish}
TARGET=1.5                               # refract's p99 / single
# Varnish runs with its default VCL and thread pools (as in bench/cache.sh);
# extra varnishd options here, e.g. "-p thread_pool_min=600"
VARNISH_PARAMS=${COLLAPSE_VARNISH_PARAMS:-}
NGINX_EXTRA=${COLLAPSE_NGINX_EXTRA:-}    # extra directives for nginx's proxy_cache location
LOAD=$(dirname "$0")/cache_load.py

bench_init collapse
need curl ss awk cmp python3 getconf
[[ " $CONTENDERS " == *" nginx "* ]] && need nginx
[[ " $CONTENDERS " != *" refract "* ]] || [ -x "$BIN/refract-gateway" ] || die "$BIN/refract-gateway is missing: run make"
RAW=${BENCH_RAW:-$RESULTS_DIR/collapse-$(date +%Y%m%d-%H%M%S).log}
: >"$RAW"

# every client is a socket here and in the server: raise the open-file limit
want=$((CLIENTS + 512))
[ "$(ulimit -n)" -ge "$want" ] || ulimit -Sn "$want" 2>/dev/null || ulimit -n "$want" 2>/dev/null
[ "$(ulimit -n)" -ge "$want" ] || die "open-file limit $(ulimit -n) is below $want (ulimit -Hn: $(ulimit -Hn))"

# ---- Varnish (Debian 12 package), installed when missing, as bench/cache.sh does ----
if [[ " $CONTENDERS " == *" varnish "* ]] && ! command -v varnishd >/dev/null 2>&1 && [ ! -x /usr/sbin/varnishd ]; then
    [ "$(id -u)" = 0 ] || die "varnish is missing (as root: apt-get install -y varnish), or COLLAPSE_CONTENDERS=\"refract nginx\""
    echo "collapse: installing varnish"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q varnish >"$TMP/apt.log" 2>&1 ||
        { DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$TMP/apt.log" 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q varnish >>"$TMP/apt.log" 2>&1; } ||
        { tail -20 "$TMP/apt.log" >&2; die "apt-get install varnish failed"; }
fi
VARNISHD=$(command -v varnishd 2>/dev/null || echo /usr/sbin/varnishd)

P_ORIGIN=$(free_port)
P_NGINX=$(free_port)
P_VARNISH=$(free_port)
P_GW=$(free_port)
P_ADMIN=$(free_port)
P_BUS=$(free_port)

# ---- origin: the delayed answer, counting requests per path+query ----------------
python3 "$LOAD" origin --port "$P_ORIGIN" --delay-ms "$DELAY_MS" --body 1024 >"$TMP/origin.log" 2>&1 &
ORIGIN_PID=$!
bench_track "$ORIGIN_PID"
# origin_count PATH: requests the origin got for PATH (path+query)
origin_count() {
    curl -s --max-time 5 "http://127.0.0.1:$P_ORIGIN/__stats" | awk -v p="$1" '$4 == p {n = $1} END {print n + 0}'
}

declare -A URL=([refract]="http://127.0.0.1:$P_GW" [nginx]="http://127.0.0.1:$P_NGINX" [varnish]="http://127.0.0.1:$P_VARNISH")
declare -A PORT=([refract]=$P_GW [nginx]=$P_NGINX [varnish]=$P_VARNISH)
declare -A TAG=([refract]=cache-status [nginx]=x-cache-status [varnish]=x-varnish)
declare -A DESC=([refract]="refract-gateway, edge cache" [nginx]="nginx proxy_cache_lock (peer)" [varnish]="Varnish 7.1, default VCL (peer)")
declare -A SPID=()

for c in $CONTENDERS; do
    case $c in
    refract)
        bench_refract_cache_conf "$TMP/refract.yaml" ||
            die "refract-gateway rejects the bench's cache configuration (a build without the edge cache?); COLLAPSE_CONTENDERS=\"nginx varnish\" measures the peers alone"
        gateway_start "$TMP/refract.yaml" "$TMP/gateway.log"
        SPID[refract]=$GW_PID
        ;;
    nginx)
        mkdir -p "$TMP/peer" "$TMP/nginx-cache"
        {
            nginx_conf_head "$SERVER_THREADS" | sed "s/worker_connections [0-9]*;/worker_connections $((CLIENTS + 1024));/"
            echo "worker_rlimit_nofile $((2 * CLIENTS + 2048));"
            bench_nginx_proxy_cache_http "$P_NGINX reuseport backlog=4096" "$NGINX_EXTRA"
        } >"$TMP/peer/nginx.conf"
        nginx_start "$TMP/peer"
        SPID[nginx]=$NGINX_PID
        ;;
    varnish)
        [ -x "$VARNISHD" ] || die "varnishd is missing (apt-get install varnish)"
        # shellcheck disable=SC2086
        "$VARNISHD" -a "127.0.0.1:$P_VARNISH" -b "127.0.0.1:$P_ORIGIN" -s malloc,512m -n "$TMP/varnish" \
            -T 127.0.0.1:0 $VARNISH_PARAMS -F >"$TMP/varnish.log" 2>&1 &
        SPID[varnish]=$!
        bench_track "${SPID[varnish]}"
        ;;
    *) die "unknown contender '$c' (refract, nginx, varnish)" ;;
    esac
done

wait_http "http://127.0.0.1:$P_ORIGIN/__stats" "$ORIGIN_PID" || die "the origin (cache_load.py) did not start ($(cat "$TMP/origin.log"))"
for c in $CONTENDERS; do
    case $c in
    refract) wait_http "${URL[$c]}/" "${SPID[$c]}" || die "refract-gateway did not start ($(cat "$TMP/gateway.log"))" ;;
    nginx) wait_http "${URL[$c]}/" "${SPID[$c]}" || die "nginx proxy_cache did not start ($(cat "$TMP/peer/logs/"*.log))" ;;
    varnish) wait_http "${URL[$c]}/" "${SPID[$c]}" 30 || die "varnishd did not start ($(cat "$TMP/varnish.log"))" ;;
    esac
done

{
    [[ " $CONTENDERS " == *" nginx "* ]] && echo "nginx: $(nginx -v 2>&1)"
    [[ " $CONTENDERS " == *" varnish "* ]] && echo "varnish: $("$VARNISHD" -V 2>&1 | head -1)${VARNISH_PARAMS:+ ($VARNISH_PARAMS)}"
    echo "python3: $(python3 --version 2>&1)"
} | tee -a "$RAW" | sed 's/^/collapse: /'

# ---- the exact bytes, through every contender ------------------------------------------
for BODY in $BODIES; do
    [[ "$BODY" =~ ^[0-9]+$ ]] || die "COLLAPSE_BODIES: '$BODY' is not a byte count"
    u="/obj?k=bytes&b=$BODY"
    curl -s -f -o "$TMP/direct" "http://127.0.0.1:$P_ORIGIN$u" || die "origin: GET $u failed"
    [ "$(stat -c %s "$TMP/direct")" -eq "$BODY" ] || die "origin: wrong body size for $u"
    for c in $CONTENDERS; do
        curl -s -f -o "$TMP/via" "${URL[$c]}$u" || die "$c: GET $u failed"
        cmp -s "$TMP/via" "$TMP/direct" || die "$c: GET $u returned different bytes than the origin"
    done
done
echo "collapse: every contender returns the origin's exact bytes ($BODIES bytes)"

# med2 X...: the median with 2 decimals (fmedian keeps 1)
med2() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END{ if (!NR) print "nan";
        else if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# burst CONTENDER PATH N: sets B_* from the BURST line, B_TAGS; dies when the load generator fails
burst() {
    local c=$1 path=$2 n=$3 out line kv
    out=$(python3 "$LOAD" burst --port "${PORT[$c]}" --path "$path" --n "$n" --tag-header "${TAG[$c]}" \
        --expect-bytes "$BODY" --settle "$SETTLE" --timeout "$TIMEOUT" --procs "$CLIENT_PROCS" 2>&1)
    local rc=$?
    { echo "---- $c $path n=$n"; echo "$out"; } >>"$RAW"
    line=$(grep '^BURST ' <<<"$out" | tail -1)
    if [ $rc -ne 0 ] || [ -z "$line" ]; then
        echo "$out" >&2
        die "$c: the load generator failed on $path"
    fi
    declare -A m
    for kv in ${line#BURST }; do m[${kv%%=*}]=${kv#*=}; done
    B_OK=${m[ok]} B_ERRS=${m[errors]} B_P50=${m[p50_ms]} B_P99=${m[p99_ms]} B_MAX=${m[max_ms]}
    B_STATUS=${m[statuses]}
    B_TAGS=$(grep '^TAGS ' <<<"$out" | sed 's/^TAGS //')
    B_ERRLINE=$(grep '^ERRORS ' <<<"$out" | sed 's/^ERRORS //')
}

# refract_roles "TAGS": "claim collapsed hit other" counts from the Cache-Status values
refract_roles() {
    tr '|' '\n' <<<"$1" | awk -F' = ' 'NF == 2 {
        v = $1; n = $2 + 0
        if (v ~ /collapsed/) j += n; else if (v ~ /fwd=miss/) c += n; else if (v ~ /; *hit/) h += n; else o += n }
        END { printf "%d %d %d %d\n", c, j, h, o }'
}

# size_label BYTES: 100k, 1k, 512B
size_label() { awk -v b="$1" 'BEGIN{ if (b % 1048576 == 0) printf "%dm", b / 1048576; else if (b % 1024 == 0) printf "%dk", b / 1024; else printf "%dB", b }'; }

declare -A SINGLE P50 P99 MAX RATIO ORIG HIT99 FLOOR
status=0
NOISY=""
BAD=""
machine_check
read -r -a ORDER <<<"$CONTENDERS"
for BODY in $BODIES; do
    L=$(size_label "$BODY")
    echo
    echo "== collapse $L: $CLIENTS concurrent misses on a new key; origin answers after ${DELAY_MS} ms, then $BODY bytes; $ROUNDS rounds; servers $SERVER_THREADS threads/workers; $(nproc) CPUs shared with the clients =="
    for r in $(seq "$ROUNDS"); do
        # rotate the order each round, so drift falls on every contender alike
        order=()
        for i in "${!ORDER[@]}"; do order+=("${ORDER[$(((i + r - 1) % ${#ORDER[@]}))]}"); done
        for c in "${order[@]}"; do
            kill -0 "${SPID[$c]}" 2>/dev/null || die "$c died (round $r)"
            k=$c.$L
            ks="/obj?k=r$r-$c-$L-single&b=$BODY"
            kb="/obj?k=r$r-$c-$L-burst&b=$BODY"
            # one client alone on a new key: the origin's delay plus one transfer
            burst "$c" "$ks" 1
            [ "$B_OK" = 1 ] || die "$c: the single request failed: ${B_ERRLINE:-$B_STATUS}"
            single=$B_MAX
            n_single=$(origin_count "$ks")
            [ "$n_single" -eq 1 ] || echo "   round $r  $c: the single request made $n_single origin requests" >&2
            # CLIENTS clients at once on another new key
            snap=$(proc_snapshot)
            t0=$(date +%s.%N)
            burst "$c" "$kb" "$CLIENTS"
            secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b - a}')
            noise=$(foreign_cpu "$snap" "$secs")
            [ -n "$noise" ] && NOISY="$NOISY $c/$L/r$r:[$noise]"
            n_burst=$(origin_count "$kb")
            ratio=$(fdiv "$B_P99" "$single")
            m_p50=$B_P50 m_p99=$B_P99 m_max=$B_MAX m_errs=$B_ERRS m_errline=$B_ERRLINE m_tags=$B_TAGS
            # the same burst again, now all hits: what delivering CLIENTS bodies at
            # once costs on this machine (server and load generator), no origin
            burst "$c" "$kb" "$CLIENTS"
            hit99=$B_P99
            [ "$B_ERRS" -eq 0 ] || echo "   round $r  $c: hit burst: $B_ERRS of $CLIENTS clients failed: $B_ERRLINE" >&2
            n_after=$(origin_count "$kb")
            [ "$n_after" -eq "$n_burst" ] || echo "   round $r  $c: the hit burst reached the origin $((n_after - n_burst)) times" >&2
            floor=$(awk -v p="$m_p99" -v s="$single" -v h="$hit99" 'BEGIN{printf "%.2f", p / (s + h)}')
            SINGLE[$k]="${SINGLE[$k]:-} $single"
            P50[$k]="${P50[$k]:-} $m_p50"
            P99[$k]="${P99[$k]:-} $m_p99"
            MAX[$k]="${MAX[$k]:-} $m_max"
            HIT99[$k]="${HIT99[$k]:-} $hit99"
            RATIO[$k]="${RATIO[$k]:-} $ratio"
            FLOOR[$k]="${FLOOR[$k]:-} $floor"
            ORIG[$k]="${ORIG[$k]:-} $n_burst"
            if [ "$c" = refract ]; then
                read -r n_claim n_join n_hit n_other <<<"$(refract_roles "$m_tags")"
                roles="  [Cache-Status: $n_claim fwd=miss, $n_join collapsed, $n_hit hit, $n_other other]"
                roles=${roles/, 0 hit/}
                roles=${roles/, 0 other/}
                if [ "$n_burst" -ne 1 ] || [ "$n_claim" -ne 1 ] || [ "$((n_claim + n_join))" -ne "$CLIENTS" ]; then
                    BAD="$BAD $L round $r: origin requests $n_burst, Cache-Status: $m_tags;"
                fi
            else
                roles="  [${TAG[$c]}: $m_tags]"
            fi
            printf '   round %d  %-8s single %6.1f ms | %d misses: p50 %6.1f  p99 %6.1f  max %6.1f ms  p99/single %5sx  origin %d | %d hits: p99 %6.1f ms%s%s\n' \
                "$r" "$c" "$single" "$CLIENTS" "$m_p50" "$m_p99" "$m_max" "$ratio" "$n_burst" "$CLIENTS" "$hit99" "$roles" \
                "${noise:+  [other processes busy: $noise]}"
            if [ "$m_errs" -gt 0 ]; then
                echo "   round $r  $c: $m_errs of $CLIENTS clients FAILED: $m_errline" >&2
                [ "$c" = refract ] && BAD="$BAD $L round $r: $m_errs clients failed ($m_errline);"
                [ "$((m_errs * 100))" -gt "$CLIENTS" ] && [ "$c" != refract ] &&
                    echo "   ($c: more than 1% of the clients failed: its figures are not comparable)" >&2
            fi
        done
    done

    # shellcheck disable=SC2086
    {
        echo "median of the rounds ($L):"
        printf '   %-32s %9s %9s %9s %9s %11s %12s %13s  %s\n' contender "single ms" "p50 ms" "p99 ms" "max ms" "p99/single" "hits p99 ms" "p99/(s+hits)" "origin requests per burst"
        for c in $CONTENDERS; do
            k=$c.$L
            printf '   %-32s %9s %9s %9s %9s %10sx %12s %12sx  %s\n' "${DESC[$c]}" "$(fmedian ${SINGLE[$k]})" "$(fmedian ${P50[$k]})" \
                "$(fmedian ${P99[$k]})" "$(fmedian ${MAX[$k]})" "$(med2 ${RATIO[$k]})" "$(fmedian ${HIT99[$k]})" \
                "$(med2 ${FLOOR[$k]})" "$(echo ${ORIG[$k]} | tr ' ' /)"
        done
        if [[ " $CONTENDERS " == *" refract "* ]]; then
            worst=$(printf '%s\n' ${ORIG[refract.$L]} | sort -n | tail -1)
            echo "   refract p99/single = $(med2 ${RATIO[refract.$L]})x (target <= $TARGET); origin requests per burst: worst round $worst (must be 1)"
            summary "collapse $L: refract p99/single ($CLIENTS misses)" "$(med2 ${RATIO[refract.$L]})" "<=$TARGET"
            summary "collapse $L: refract origin requests per burst" "$worst" "<=1/burst"
        fi
        for c in $CONTENDERS; do
            [ "$c" = refract ] && continue
            summary "collapse $L: $c p99/single (info)" "$(med2 ${RATIO[$c.$L]})" -
        done
        summary "collapse $L: single ms $(echo $CONTENDERS | tr ' ' '|')" "$(for c in $CONTENDERS; do printf '%s | ' "$(fmedian ${SINGLE[$c.$L]})"; done | sed 's/ | $//')" -
        summary "collapse $L: p99 ms of $CLIENTS misses $(echo $CONTENDERS | tr ' ' '|')" "$(for c in $CONTENDERS; do printf '%s | ' "$(fmedian ${P99[$c.$L]})"; done | sed 's/ | $//')" -
        summary "collapse $L: p99 ms of $CLIENTS hits $(echo $CONTENDERS | tr ' ' '|')" "$(for c in $CONTENDERS; do printf '%s | ' "$(fmedian ${HIT99[$c.$L]})"; done | sed 's/ | $//')" -
        summary "collapse $L: origin requests per burst $(echo $CONTENDERS | tr ' ' '|')" "$(for c in $CONTENDERS; do printf '%s | ' "$(echo ${ORIG[$c.$L]} | tr ' ' /)"; done | sed 's/ | $//')" -
    }
done

echo
if [ -n "$BAD" ]; then
    echo "collapse: REFRACT COLLAPSED WRONGLY:$BAD" >&2
    echo "collapse: (every burst must make exactly 1 origin request, with 1 answer fwd=miss and the others collapsed; raw answers in $RAW)" >&2
    summary "collapse: ALERT refract collapsed wrongly" "$BAD" -
    status=2
fi
if [ -n "$NOISY$BENCH_NOISE" ]; then
    echo "collapse: WARNING: other processes took CPU during the bench, figures are noisy:$NOISY ${BENCH_NOISE}"
    summary "collapse: NOISE (other processes busy)" "${NOISY:-$BENCH_NOISE}" -
fi
for c in $CONTENDERS; do
    kill -0 "${SPID[$c]}" 2>/dev/null || { status=2; echo "collapse: $c died during the run" >&2; }
done
if [[ " $CONTENDERS " == *" refract "* ]] && grep -qiE 'error|crit|alert' "$TMP/gateway.log" 2>/dev/null; then
    echo "collapse: gateway log (warnings/errors):"; grep -iE 'error|crit|alert|warn' "$TMP/gateway.log" | sort | uniq -c | sort -rn | head -5
fi
echo "collapse: raw load-generator output in $RAW"
exit $status
