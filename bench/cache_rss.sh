#!/bin/bash
# bench/cache_rss.sh — the edge cache's memory: refract-gateway's resident set
# (VmRSS, and the peak VmHWM, from /proc/PID/status) in two situations.
#
#   (a) idle: 10,000 keep-alive connections, each having fetched a cached
#       1 KB object once, held idle for 5 s. Printed: RSS before and with the
#       connections, the difference per connection, and the same for nginx
#       proxy_cache (its workers' RSS summed) with the same connections.
#   (b) fill: a 1 GB object that the origin sends at a bounded rate
#       (200 MB/s) while 100 slow clients (1 MB/s each) follow it. The fill
#       writes to the cache file and the readers read back from it, so the
#       gateway's RSS must stay near its idle baseline, not grow with the
#       object: RSS is sampled every 100 ms during the fill; the bench prints
#       the peak with the baseline and flags it loudly when the peak exceeds
#       the baseline by more than 256 MB. Skipped (with a message) when the
#       temp dir's file system has less than 3 GB free.
#
#   bench/cache_rss.sh                        (defaults below; about 1-2 minutes)
#   CACHE_RSS_CONNS=1000 CACHE_RSS_BIG=$((50 << 20)) bench/cache_rss.sh
#   CACHE_RSS_PARTS=fill bench/cache_rss.sh   (only (b); or: idle)
#
# The origin and the clients are bench/cache_load.py (python3 asyncio).
#
# Exit status: 0 when every contender ran (whatever the figures, a flagged
# RSS growth included), 2 when one could not run or answered wrongly.
set -u
. "$(dirname "$0")/lib.sh"

CONNS=${CACHE_RSS_CONNS:-10000}              # (a) idle keep-alive connections
HOLD=${CACHE_RSS_HOLD:-5}                    # (a) seconds they stay idle before RSS is read
OBJ=${CACHE_RSS_OBJECT:-1024}                # (a) bytes of the cached object they fetched
BIG=${CACHE_RSS_BIG:-1073741824}             # (b) bytes of the object being filled
BIG_RATE=${CACHE_RSS_BIG_RATE:-200000000}    # (b) bytes/s the origin sends it at (0: as fast as it can)
READERS=${CACHE_RSS_READERS:-100}            # (b) clients following the fill
READER_RATE=${CACHE_RSS_READER_RATE:-1000000} # (b) bytes/s each of them reads
AFTER=${CACHE_RSS_AFTER:-2}                  # (b) seconds of sampling after the origin finished
SAMPLE_MS=${CACHE_RSS_SAMPLE_MS:-100}        # (b) RSS sampling interval
LIMIT_MB=${CACHE_RSS_LIMIT_MB:-256}          # (b) the flag: peak RSS above baseline + this
MIN_FREE_GB=${CACHE_RSS_MIN_FREE_GB:-3}      # (b) skipped below this much free space in the temp dir
SERVER_THREADS=${CACHE_RSS_SERVER_THREADS:-2} # refract threads = nginx workers
PARTS=${CACHE_RSS_PARTS:-idle fill}
SKIP_NGINX=${CACHE_RSS_SKIP_NGINX:-0}        # 1: (a) without the nginx comparison
LOAD=$(dirname "$0")/cache_load.py

bench_init cache_rss
need curl ss awk python3 df
[ "$SKIP_NGINX" = 1 ] || need nginx
[ -x "$BIN/refract-gateway" ] || die "$BIN/refract-gateway is missing: run make"
RAW=${BENCH_RAW:-$RESULTS_DIR/cache_rss-$(date +%Y%m%d-%H%M%S).log}
: >"$RAW"
for p in $PARTS; do [ "$p" = idle ] || [ "$p" = fill ] || die "CACHE_RSS_PARTS: unknown part '$p' (idle, fill)"; done

# the clients and the servers each hold every connection: raise the open-file limit
want=$((CONNS + 1024))
[ "$(ulimit -n)" -ge "$want" ] || ulimit -Sn "$want" 2>/dev/null || ulimit -n "$want" 2>/dev/null
[ "$(ulimit -n)" -ge "$want" ] || die "open-file limit $(ulimit -n) is below $want (ulimit -Hn: $(ulimit -Hn)); lower CACHE_RSS_CONNS"

P_ORIGIN=$(free_port)
P_NGINX=$(free_port)
P_GW=$(free_port)
P_ADMIN=$(free_port)
P_BUS=$(free_port)

# ---- origin: no delay; the query says the size (b=) and the pace (rate=) ------------
python3 "$LOAD" origin --port "$P_ORIGIN" --delay-ms 0 --body "$OBJ" >"$TMP/origin.log" 2>&1 &
ORIGIN_PID=$!
bench_track "$ORIGIN_PID"
wait_http "http://127.0.0.1:$P_ORIGIN/__stats" "$ORIGIN_PID" || die "the origin (cache_load.py) did not start ($(cat "$TMP/origin.log"))"
# origin_stat PATH FIELD: count (1), bytes sent (2) or done (3) for PATH
origin_stat() {
    curl -s --max-time 5 "http://127.0.0.1:$P_ORIGIN/__stats" | awk -v p="$1" -v f="$2" '$4 == p {n = $f} END {print n + 0}'
}

bench_refract_cache_conf "$TMP/refract.yaml" ||
    die "refract-gateway rejects the bench's cache configuration (a build without the edge cache?)"
start_gateway() {
    gateway_start "$TMP/refract.yaml" "$TMP/gateway.log"
    wait_http "http://127.0.0.1:$P_GW/" "$GW_PID" || die "refract-gateway did not start ($(cat "$TMP/gateway.log"))"
}

# status_kb FIELD PID...: the sum of /proc/PID/status FIELD (kB) over the PIDs
status_kb() {
    local f=$1 p files=()
    shift
    for p in "$@"; do files+=("/proc/$p/status"); done
    awk -v f="$f:" '$1 == f {s += $2} END {print s + 0}' "${files[@]}" 2>/dev/null
}
mb() { awk -v k="$1" 'BEGIN{printf "%.1f", k / 1024}'; }
nginx_workers() { ps -o pid=,args= --ppid "$1" | awk '/worker process/ {print $1}' | tr '\n' ' '; }

status=0
machine_check
echo "cache_rss: refract $SERVER_THREADS threads; python3 $(python3 --version 2>&1 | cut -d' ' -f2); open-file limit $(ulimit -n)"

# ======== (a) idle keep-alive connections ========================================
declare -A BEFORE WITH HWM PERCONN
if [[ " $PARTS " == *" idle "* ]]; then
    CONTENDERS="refract nginx"
    [ "$SKIP_NGINX" = 1 ] && CONTENDERS="refract"
    start_gateway
    declare -A PORT=([refract]=$P_GW)
    declare -A TAG=([refract]=cache-status [nginx]=x-cache-status)
    if [ "$SKIP_NGINX" != 1 ]; then
        mkdir -p "$TMP/peer" "$TMP/nginx-cache"
        {
            nginx_conf_head "$SERVER_THREADS" | sed "s/worker_connections [0-9]*;/worker_connections $((CONNS + 1024));/"
            echo "worker_rlimit_nofile $((CONNS + 2048));"
            bench_nginx_proxy_cache_http "$P_NGINX reuseport backlog=4096"
        } >"$TMP/peer/nginx.conf"
        nginx_start "$TMP/peer"
        PEER_PID=$NGINX_PID
        wait_http "http://127.0.0.1:$P_NGINX/" "$PEER_PID" || die "nginx proxy_cache did not start ($(cat "$TMP/peer/logs/"*.log))"
        PORT[nginx]=$P_NGINX
        echo "cache_rss: $(nginx -v 2>&1), $SERVER_THREADS workers"
    fi

    echo
    echo "== cache_rss (a): $CONNS idle keep-alive connections, each after one GET of a cached $OBJ-byte object, held ${HOLD}s =="
    path="/obj?k=idle&b=$OBJ"
    for c in $CONTENDERS; do
        # make it a cached object, and prove the second answer is a hit
        curl -s -f -o /dev/null "http://127.0.0.1:${PORT[$c]}$path" || die "$c: GET $path failed"
        curl -s -f -D "$TMP/h" -o "$TMP/b" "http://127.0.0.1:${PORT[$c]}$path" || die "$c: GET $path failed"
        [ "$(stat -c %s "$TMP/b")" -eq "$OBJ" ] || die "$c: GET $path: wrong size"
        case $c in
        refract) grep -qiE '^cache-status:.*;[[:space:]]*hit' "$TMP/h" || die "refract: not a cache hit: $(grep -i cache-status "$TMP/h")" ;;
        nginx) grep -qiE '^x-cache-status:[[:space:]]*HIT' "$TMP/h" || die "nginx: not a cache hit: $(grep -i x-cache-status "$TMP/h")" ;;
        esac
        if [ "$c" = refract ]; then pids=$GW_PID; else pids=$(nginx_workers "$PEER_PID"); fi
        [ -n "$pids" ] || die "$c: no server process to measure"
        sleep 1
        # shellcheck disable=SC2086
        before=$(status_kb VmRSS $pids)
        n0=$(origin_stat "$path" 1)
        rm -f "$TMP/ready" "$TMP/release"
        python3 "$LOAD" hold --port "${PORT[$c]}" --path "$path" --n "$CONNS" --tag-header "${TAG[$c]}" \
            --expect-bytes "$OBJ" --ready-file "$TMP/ready" --release-file "$TMP/release" --max-s 300 \
            >"$TMP/hold.out" 2>&1 &
        hp=$!
        bench_track "$hp"
        t0=$SECONDS
        until [ -e "$TMP/ready" ]; do
            kill -0 "$hp" 2>/dev/null || { cat "$TMP/hold.out" >&2; die "$c: the connection holder failed"; }
            [ $((SECONDS - t0)) -lt 240 ] || die "$c: $CONNS connections not open after 240 s"
            sleep 0.2
        done
        opened=$((SECONDS - t0))
        sleep "$HOLD"
        # shellcheck disable=SC2086
        with=$(status_kb VmRSS $pids)
        # shellcheck disable=SC2086
        hwm=$(status_kb VmHWM $pids)
        # shellcheck disable=SC2086
        anon=$(status_kb RssAnon $pids)
        est=$(ss -Htn state established "( sport = :${PORT[$c]} )" 2>/dev/null | wc -l)
        touch "$TMP/release"
        wait "$hp"
        hrc=$?
        bench_stop "$hp"
        cat "$TMP/hold.out" >>"$RAW"
        held=$(grep '^HELD ' "$TMP/hold.out")
        still=$(sed -n 's/^RELEASED still_open=//p' "$TMP/hold.out")
        if [ "$hrc" -ne 0 ] || [ -z "$held" ]; then cat "$TMP/hold.out" >&2; die "$c: the connection holder failed"; fi
        ok=${held#* ok=}
        ok=${ok%% *}
        sleep 1
        # shellcheck disable=SC2086
        afterclose=$(status_kb VmRSS $pids)
        n1=$(origin_stat "$path" 1)
        per=$(awk -v a="$with" -v b="$before" -v n="$CONNS" 'BEGIN{printf "%.2f", (a - b) / n}')
        BEFORE[$c]=$before WITH[$c]=$with HWM[$c]=$hwm PERCONN[$c]=$per
        printf '   %-8s RSS %7s MB before, %7s MB with %d connections (anon %s MB), peak %s MB: %s KB per connection; %s MB after they closed\n' \
            "$c" "$(mb "$before")" "$(mb "$with")" "$CONNS" "$(mb "$anon")" "$(mb "$hwm")" "$per" "$(mb "$afterclose")"
        printf '            %d of %d answered %d bytes (opened in %ds), %s established at the reading, %s still open at the end; origin requests during: %d\n' \
            "$ok" "$CONNS" "$OBJ" "$opened" "$est" "${still:-?}" "$((n1 - n0))"
        [ "$ok" -eq "$CONNS" ] || { echo "cache_rss: $c: only $ok of $CONNS connections got their answer: $held" >&2; status=2; }
        [ "${still:-0}" -ge "$CONNS" ] ||
            echo "cache_rss: WARNING: $c closed $((CONNS - ${still:-0})) of the idle connections during the hold: the RSS reading undercounts" >&2
    done
    if [ "$SKIP_NGINX" != 1 ]; then
        r=$(fdiv "${PERCONN[nginx]}" "${PERCONN[refract]}")
        echo "   per idle connection: refract ${PERCONN[refract]} KB, nginx ${PERCONN[nginx]} KB (nginx/refract = ${r}x; > 1: refract holds less)"
        summary "cache_rss idle: KB per idle connection refract|nginx" "${PERCONN[refract]} | ${PERCONN[nginx]}" -
        summary "cache_rss idle: nginx/refract memory per connection (info)" "$r" -
    else
        summary "cache_rss idle: KB per idle connection refract" "${PERCONN[refract]}" -
    fi
    summary "cache_rss idle: refract RSS MB before|with $CONNS conns|peak" "$(mb "${BEFORE[refract]}") | $(mb "${WITH[refract]}") | $(mb "${HWM[refract]}")" -
    kill -0 "$GW_PID" 2>/dev/null || { status=2; echo "cache_rss: refract-gateway died during (a)" >&2; }
    bench_stop "$GW_PID"
    if [ "$SKIP_NGINX" != 1 ]; then
        kill -0 "$PEER_PID" 2>/dev/null || { status=2; echo "cache_rss: nginx died during (a)" >&2; }
        bench_stop "$PEER_PID"
    fi
fi

# ======== (b) a large fill followed by slow readers ===============================
if [[ " $PARTS " == *" fill "* ]]; then
    echo
    echo "== cache_rss (b): a $(mb $((BIG / 1024))) MB object filling at $([ "$BIG_RATE" = 0 ] && echo "full speed" || echo "$(awk -v r="$BIG_RATE" 'BEGIN{printf "%.0f", r / 1e6}') MB/s"), $READERS clients following it at $(awk -v r="$READER_RATE" 'BEGIN{printf "%.1f", r / 1e6}') MB/s each =="
    mkdir -p "$TMP/refract-cache"
    free=$(df -P -B1 "$TMP/refract-cache" | awk 'NR == 2 {print $4}')
    need_b=$((MIN_FREE_GB * 1073741824))
    [ "$need_b" -ge $((BIG + 536870912)) ] || need_b=$((BIG + 536870912))
    if [ "${free:-0}" -lt "$need_b" ]; then
        echo "   SKIPPED: only $((free / 1048576)) MB free under $TMP (needs $((need_b / 1048576)) MB: CACHE_RSS_MIN_FREE_GB=$MIN_FREE_GB and the object); free some space or lower CACHE_RSS_BIG"
        summary "cache_rss fill: SKIPPED (disk space)" "$((free / 1048576)) MB free" -
    else
        # a fresh gateway, so its baseline and VmHWM are this part's own
        start_gateway
        curl -s -f -o /dev/null "http://127.0.0.1:$P_GW/obj?k=fill-warm&b=$OBJ" || die "refract: warm-up GET failed"
        curl -s -f -o /dev/null "http://127.0.0.1:$P_GW/obj?k=fill-warm&b=$OBJ" || die "refract: warm-up GET failed"
        sleep 1
        base=$(status_kb VmRSS "$GW_PID")
        base_anon=$(status_kb RssAnon "$GW_PID")
        path="/big?k=fill&b=$BIG&rate=$BIG_RATE"
        rm -f "$TMP/release"
        python3 "$LOAD" slowread --port "$P_GW" --path "$path" --n "$READERS" --rate "$READER_RATE" \
            --tag-header cache-status --stagger-ms 50 --release-file "$TMP/release" --max-s 600 >"$TMP/slow.out" 2>&1 &
        sp=$!
        bench_track "$sp"
        expect=$(awk -v b="$BIG" -v r="$BIG_RATE" 'BEGIN{ t = (r > 0 ? b / r : b / 5e8); printf "%d", 3 * t + 30 }')
        peak=$base peak_anon=$base_anon peak_file=0 peak_shm=0 samples=0 t_done="" sent=0
        t0=$(date +%s.%N)
        : >"$TMP/samples"
        while :; do
            kill -0 "$GW_PID" 2>/dev/null || { status=2; echo "cache_rss: refract-gateway DIED during the fill" >&2; break; }
            read -r rss anon rfile rshm < <(awk '$1 == "VmRSS:" {r = $2} $1 == "RssAnon:" {a = $2} $1 == "RssFile:" {f = $2}
                $1 == "RssShmem:" {s = $2} END {print r + 0, a + 0, f + 0, s + 0}' "/proc/$GW_PID/status" 2>/dev/null)
            now=$(date +%s.%N)
            el=$(awk -v a="$t0" -v b="$now" 'BEGIN{printf "%.1f", b - a}')
            if [ "${rss:-0}" -gt "$peak" ]; then
                peak=$rss
                # what is mapped at the peak, besides the binary and its libraries
                awk 'NF >= 6 && $6 !~ /\.so|\/refract-gateway$|^\[/' "/proc/$GW_PID/maps" >"$TMP/peak-maps" 2>/dev/null
            fi
            [ "${rfile:-0}" -gt "$peak_file" ] && peak_file=$rfile
            [ "${rshm:-0}" -gt "$peak_shm" ] && peak_shm=$rshm
            [ "${anon:-0}" -gt "$peak_anon" ] && peak_anon=$anon
            echo "$el $rss $anon $rfile $rshm" >>"$TMP/samples"
            samples=$((samples + 1))
            if [ $((samples % 5)) -eq 0 ]; then
                read -r sent done_ < <(curl -s --max-time 2 "http://127.0.0.1:$P_ORIGIN/__stats" |
                    awk -v p="$path" '$4 == p {s = $2; d = $3} END {print s + 0, d + 0}')
                if [ -z "$t_done" ] && [ "${done_:-0}" -ge 1 ]; then t_done=$el; fi
            fi
            if [ -n "$t_done" ] && awk -v e="$el" -v d="$t_done" -v a="$AFTER" 'BEGIN{exit !(e >= d + a)}'; then break; fi
            if awk -v e="$el" -v x="$expect" 'BEGIN{exit !(e >= x)}'; then break; fi
            kill -0 "$sp" 2>/dev/null || break
            sleep "$(awk -v m="$SAMPLE_MS" 'BEGIN{printf "%.3f", m / 1000}')"
        done
        hwm=$(status_kb VmHWM "$GW_PID")
        touch "$TMP/release"
        wait "$sp"
        bench_stop "$sp"
        cat "$TMP/slow.out" >>"$RAW"
        {
            echo "---- samples: seconds VmRSS_kB RssAnon_kB RssFile_kB RssShmem_kB"
            cat "$TMP/samples"
            echo "---- /proc/PID/maps at the peak (without the binary and its libraries)"
            cat "$TMP/peak-maps" 2>/dev/null
        } >>"$RAW"
        slow=$(grep '^SLOWREAD ' "$TMP/slow.out")
        [ -n "$slow" ] || { cat "$TMP/slow.out" >&2; die "the slow readers failed"; }
        n_fill=$(origin_stat "$path" 1)
        # the object must now be complete in the cache
        curl -s -I -o "$TMP/h" "http://127.0.0.1:$P_GW$path"
        hit=$(tr -d '\r' <"$TMP/h" | awk -F': ' 'tolower($1) == "cache-status" {print $2}')
        clen=$(tr -d '\r' <"$TMP/h" | awk -F': ' 'tolower($1) == "content-length" {print $2}')
        growth=$(awk -v p="$peak" -v b="$base" 'BEGIN{printf "%.1f", (p - b) / 1024}')
        hgrowth=$(awk -v p="$hwm" -v b="$base" 'BEGIN{printf "%.1f", (p - b) / 1024}')
        printf '   baseline RSS %s MB (anon %s MB); during the fill, sampled every %d ms (%d samples): peak %s MB, VmHWM %s MB; peaks by kind: anon %s MB, file %s MB, shmem %s MB\n' \
            "$(mb "$base")" "$(mb "$base_anon")" "$SAMPLE_MS" "$samples" "$(mb "$peak")" "$(mb "$hwm")" "$(mb "$peak_anon")" "$(mb "$peak_file")" "$(mb "$peak_shm")"
        # temp-file mappings at the peak (h2o moves a socket buffer past 32 MB into one)
        maps=""
        while read -r range _ _ _ _ file rest; do
            [[ "$file $rest" =~ /tmp/|deleted ]] || continue
            maps="$maps $file$([ -n "$rest" ] && echo " $rest") ($(((16#${range#*-} - 16#${range%-*}) / 1048576)) MB)"
        done <"$TMP/peak-maps"
        [ -n "$maps" ] && echo "   temp-file mappings at the peak:$maps"
        printf '   peak - baseline = %s MB sampled, %s MB by VmHWM (limit %d MB); the object is %s MB\n' "$growth" "$hgrowth" "$LIMIT_MB" "$(mb $((BIG / 1024)))"
        printf '   origin: %d request(s) for the object, %s MB sent, done after %ss; readers: %s\n' "$n_fill" "$(awk -v s="$sent" 'BEGIN{printf "%.1f", s / 1048576}')" "${t_done:-NOT within ${expect}s}" "${slow#SLOWREAD }"
        printf '   afterwards: HEAD says Cache-Status "%s", Content-Length %s\n' "$hit" "$clen"
        joined=$(grep -o 'collapsed[^:]*: [0-9]*' <<<"$slow" | awk -F: '{n += $NF} END {print n + 0}')
        if [ "$joined" -lt $((READERS - 1)) ]; then
            echo "cache_rss: WARNING: only $joined of the $READERS readers joined the fill (the others came after it ended): the fill was too short to test; raise CACHE_RSS_BIG or lower CACHE_RSS_BIG_RATE" >&2
        fi
        [ "$n_fill" -eq 1 ] || echo "cache_rss: WARNING: the origin got $n_fill requests for the object (the readers should have shared one fill)" >&2
        [ -n "$t_done" ] || echo "cache_rss: WARNING: the origin had not sent the whole object after ${expect}s (sent $sent bytes): is the fill paced by its slow readers?" >&2
        if [[ "$hit" != *"; hit"* ]] || [ "$clen" != "$BIG" ]; then
            echo "cache_rss: WARNING: the object is not a complete cache hit after the fill" >&2
        fi
        worst=$(awk -v a="$growth" -v b="$hgrowth" 'BEGIN{print (a > b ? a : b)}')
        if awk -v g="$worst" -v l="$LIMIT_MB" 'BEGIN{exit !(g > l)}'; then
            echo "cache_rss: !!!!!!!! RSS GREW WITH THE OBJECT: peak $worst MB above the $(mb "$base") MB baseline (limit $LIMIT_MB MB) during a $(mb $((BIG / 1024))) MB fill !!!!!!!!" >&2
            summary "cache_rss fill: ALERT peak RSS grew with the object" "+$worst MB over $(mb "$base") MB" -
        fi
        summary "cache_rss fill: refract RSS growth, $((BIG >> 20)) MB fill" "$worst" "<=${LIMIT_MB}MB"
        summary "cache_rss fill: refract RSS MB baseline|peak sampled|VmHWM" "$(mb "$base") | $(mb "$peak") | $(mb "$hwm")" -
        kill -0 "$GW_PID" 2>/dev/null || { status=2; echo "cache_rss: refract-gateway died during (b)" >&2; }
    fi
fi

if [ -n "$BENCH_NOISE" ]; then
    echo "cache_rss: WARNING: the machine was busy: $BENCH_NOISE"
    summary "cache_rss: NOISE (other processes busy)" "$BENCH_NOISE" -
fi
if grep -qiE 'error|crit|alert' "$TMP/gateway.log" 2>/dev/null; then
    echo "cache_rss: gateway log (warnings/errors):"; grep -iE 'error|crit|alert|warn' "$TMP/gateway.log" | sort | uniq -c | sort -rn | head -5
fi
echo "cache_rss: raw client output and RSS samples in $RAW"
exit $status
