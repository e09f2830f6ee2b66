#!/bin/bash
# bench/proxy.sh — pass-through proxying (no cache): refract-gateway vs nginx
# proxy_pass, in front of the same nginx origin, for a 10 KB and a 10 MB
# object. Prints req/s and MB/s of each and the ratio refract/nginx, plus
# the floor (refract's own file:// origin = h2o's file sender, no proxying)
# and the origin served directly (for reference).
#
#   bench/proxy.sh                       (defaults below; ~3.5 minutes)
#   PROXY_DURATION=5 PROXY_ROUNDS=1 bench/proxy.sh
#
# "CPU us/req" on each round: the server's own CPU time (user + system, all
# its threads or workers; not the origin's, not wrk's) per request — with the
# CPUs shared, the proxy that needs less of it leaves more to the others.
# "split": how that CPU time spread over its threads/workers — a lopsided
# split means wrk's connections landed unevenly on the event loops.
#
# Exit status: 0 when every contender ran (whatever the ratios), 2 when one
# could not run or answered wrongly.
set -u
. "$(dirname "$0")/lib.sh"

DURATION=${PROXY_DURATION:-8}   # seconds per measured wrk run
WARMUP=${PROXY_WARMUP:-3}       # seconds of warm-up per contender and size
ROUNDS=${PROXY_ROUNDS:-3}       # measured runs per contender (order alternating); the median counts
THREADS=${PROXY_WRK_THREADS:-2}
CONNS_SMALL=${PROXY_CONNS_SMALL:-32}
CONNS_LARGE=${PROXY_CONNS_LARGE:-8}
# nginx listens with reuseport (one accept queue per worker) unless 0
REUSEPORT=${PROXY_NGINX_REUSEPORT:-1}
RP=""
[ "$REUSEPORT" = 1 ] && RP=" reuseport"
# extra directives for the peer's location, e.g. "proxy_buffers 64 16k;"
# (the default is nginx's stock buffering: 8 small buffers, then a temp file)
NGINX_EXTRA=${PROXY_NGINX_EXTRA:-}

bench_init proxy
need nginx wrk curl ss awk cmp getconf
[ -x "$BIN/refract-gateway" ] || die "$BIN/refract-gateway is missing: run make"
RAW=${BENCH_RAW:-$RESULTS_DIR/proxy-$(date +%Y%m%d-%H%M%S).log}
: >"$RAW"

# ---- the objects -------------------------------------------------------------
WWW=$TMP/www
mkdir -p "$WWW"
head -c 10240 /dev/urandom >"$WWW/10k.bin"
head -c 10485760 /dev/urandom >"$WWW/10m.bin"
chmod 644 "$WWW"/*

P_ORIGIN=$(free_port)
P_NGINX=$(free_port)
P_GW=$(free_port)
P_ADMIN=$(free_port)
P_BUS=$(free_port)

# ---- origin: nginx serving static files ------------------------------------------
origin_nginx_start "$TMP/origin" "$P_ORIGIN" "$WWW"

# ---- peer: nginx proxy_pass, no cache ---------------------------------------------
mkdir -p "$TMP/peer"
{
    nginx_conf_head 2
    cat <<EOF
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    upstream origin {
        server 127.0.0.1:$P_ORIGIN;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$P_NGINX$RP;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
            $NGINX_EXTRA
        }
    }
}
EOF
} >"$TMP/peer/nginx.conf"
nginx_start "$TMP/peer"
PEER_PID=$NGINX_PID

# ---- refract: gateway, http origin (default vhost) + file origin (floor) -----------
cat >"$TMP/refract.yaml" <<EOF
gateway:
  listen: "127.0.0.1:$P_GW"
  admin_listen: "127.0.0.1:$P_ADMIN"
  threads: 2
  access_log: false
  origin:
    keepalive: 32
bus:
  endpoint: "tcp://127.0.0.1:$P_BUS"
vhosts:
  - name: proxy.bench
    default: true
    origin: "http://127.0.0.1:$P_ORIGIN"
    cache: { enable: false }   # pass-through is measured here; cache hits in bench/cache.sh
  - name: files.bench
    origin: "file://$WWW"
log:
  level: warn
EOF
gateway_start "$TMP/refract.yaml" "$TMP/gateway.log"

wait_http "http://127.0.0.1:$P_ORIGIN/10k.bin" "$ORIGIN_PID" || die "origin nginx did not start ($(cat "$TMP/origin/logs/"*.log))"
wait_http "http://127.0.0.1:$P_NGINX/10k.bin" "$PEER_PID" || die "peer nginx did not start ($(cat "$TMP/peer/logs/"*.log))"
wait_http "http://127.0.0.1:$P_GW/10k.bin" "$GW_PID" || die "refract-gateway did not start ($(cat "$TMP/gateway.log"))"

# contender name -> URL base and extra wrk args
declare -A URL HDR
URL[nginx]="http://127.0.0.1:$P_NGINX"
URL[refract]="http://127.0.0.1:$P_GW"
URL[floor]="http://127.0.0.1:$P_GW"
HDR[floor]="Host: files.bench"
URL[origin]="http://127.0.0.1:$P_ORIGIN"
HDR[origin]=""
HDR[nginx]=""
HDR[refract]=""
declare -A DESC=([nginx]="nginx proxy_pass (peer)" [refract]="refract-gateway http:// origin"
    [floor]="floor: refract file:// (h2o file sender)" [origin]="origin nginx static (direct, info)")

# ---- every contender must hand back the exact bytes ---------------------------------
for c in nginx refract floor origin; do
    for f in 10k.bin 10m.bin; do
        h=()
        [ -n "${HDR[$c]}" ] && h=(-H "${HDR[$c]}")
        curl -s -f "${h[@]}" -o "$TMP/check" "${URL[$c]}/$f" || die "$c: GET /$f failed"
        cmp -s "$TMP/check" "$WWW/$f" || die "$c: GET /$f returned different bytes"
    done
done
echo "proxy: all contenders return the exact 10 KB and 10 MB objects"

LUA=$TMP/report.lua
write_wrk_lua "$LUA"

wrk_for() { # CONTENDER FILE SECONDS CONNS LABEL
    local c=$1 f=$2 d=$3 conns=$4 label=$5 h=()
    [ -n "${HDR[$c]}" ] && h=(-H "${HDR[$c]}")
    run_wrk "$label" "$LUA" "${URL[$c]}/$f" -t"$THREADS" -c"$conns" -d"${d}s" --timeout 10s "${h[@]}" ||
        die "$c: wrk failed on /$f"
    if [ "$W_ERRS" -gt 0 ]; then
        echo "proxy: WARNING: $c /$f: $W_ERRS errors (see $RAW)" >&2
        [ "$((W_ERRS * 100))" -gt "$W_REQS" ] && die "$c: more than 1% errors on /$f"
    fi
}

declare -A RPS MBPS P99 CPUREQ
status=0
NOISY=""
machine_check
echo
echo "== proxy: pass-through, no cache; wrk -t$THREADS, ${DURATION}s x $ROUNDS rounds per contender; $(nproc) CPUs shared with wrk =="
for size in 10k 10m; do
    f=$size.bin
    conns=$CONNS_SMALL
    [ "$size" = 10m ] && conns=$CONNS_LARGE
    for c in nginx refract floor origin; do
        wrk_for "$c" "$f" "$WARMUP" "$conns" "warmup $c $f"
    done
    for r in $(seq "$ROUNDS"); do
        # the origin alone is for reference: measured in the first round only
        order="nginx refract floor origin"
        [ $((r % 2)) -eq 0 ] && order="refract nginx floor"
        [ "$r" -gt 1 ] && [ $((r % 2)) -eq 1 ] && order="nginx refract floor"
        for c in $order; do
            snap=$(proc_snapshot)
            case $c in
            nginx) spids=$(pgrep -P "$PEER_PID" | tr '\n' ' ') ;;
            origin) spids=$(pgrep -P "$ORIGIN_PID" | tr '\n' ' ') ;;
            *) spids=$GW_PID ;;
            esac
            # shellcheck disable=SC2086
            t0=$(cpu_ticks $spids)
            wrk_for "$c" "$f" "$DURATION" "$conns" "round $r $c $f"
            # shellcheck disable=SC2086
            t1=$(cpu_ticks $spids)
            split=$(cpu_split "$t0" "$t1")
            # the server's own CPU per request (the origin's is not counted)
            cpu_req=$(awk -v ms="$(cpu_total_ms "$t0" "$t1")" -v n="$W_REQS" 'BEGIN{printf "%.1f", n ? ms * 1000 / n : 0}')
            CPUREQ[$c.$size]="${CPUREQ[$c.$size]:-} $cpu_req"
            noise=$(foreign_cpu "$snap" "$DURATION")
            [ -n "$noise" ] && NOISY="$NOISY $c/$size:[$noise]"
            RPS[$c.$size]="${RPS[$c.$size]:-} $W_RPS"
            MBPS[$c.$size]="${MBPS[$c.$size]:-} $W_MBPS"
            P99[$c.$size]="${P99[$c.$size]:-} $W_P99"
            printf '   round %d  %-8s %-7s %10s req/s %9s MB/s  p99 %7s ms  CPU %6s us/req, split %-9s%s\n' "$r" "$c" \
                "$f" "$W_RPS" "$W_MBPS" "$W_P99" "$cpu_req" "$split" "${noise:+  [other processes busy: $noise]}"
        done
    done
done

echo
echo "median of the rounds:"
printf '%-6s %-42s %12s %10s %12s  %s\n' size contender "req/s" "MB/s" "CPU us/req" "p99 ms (runs)"
for size in 10k 10m; do
    conns=$CONNS_SMALL
    [ "$size" = 10m ] && conns=$CONNS_LARGE
    for c in nginx refract floor origin; do
        # shellcheck disable=SC2086
        printf '%-6s %-42s %12s %10s %12s  %s\n' "$size" "${DESC[$c]}" "$(fmedian ${RPS[$c.$size]})" \
            "$(fmedian ${MBPS[$c.$size]})" "$(fmedian ${CPUREQ[$c.$size]})" "$(echo ${P99[$c.$size]} | tr ' ' /)"
    done
    # shellcheck disable=SC2086
    ratio=$(fdiv "$(fmedian ${RPS[refract.$size]})" "$(fmedian ${RPS[nginx.$size]})")
    # shellcheck disable=SC2086
    of_floor=$(fdiv "$(fmedian ${RPS[refract.$size]})" "$(fmedian ${RPS[floor.$size]})")
    # shellcheck disable=SC2086
    nginx_floor=$(fdiv "$(fmedian ${RPS[nginx.$size]})" "$(fmedian ${RPS[floor.$size]})")
    echo "       ratio refract/nginx = ${ratio}x (target >= 1.0)   refract/floor = ${of_floor}x   nginx/floor = ${nginx_floor}x   (wrk -c$conns)"
    echo
    # shellcheck disable=SC2086
    {
        summary "proxy $size: refract/nginx (req/s)" "$ratio" 1.0
        summary "proxy $size: refract/floor (info)" "$of_floor" -
        summary "proxy $size: refract req/s | MB/s" "$(fmedian ${RPS[refract.$size]}) | $(fmedian ${MBPS[refract.$size]})" -
        summary "proxy $size: nginx req/s | MB/s" "$(fmedian ${RPS[nginx.$size]}) | $(fmedian ${MBPS[nginx.$size]})" -
        summary "proxy $size: floor req/s | MB/s" "$(fmedian ${RPS[floor.$size]}) | $(fmedian ${MBPS[floor.$size]})" -
        summary "proxy $size: server CPU us/req refract | nginx" "$(fmedian ${CPUREQ[refract.$size]}) | $(fmedian ${CPUREQ[nginx.$size]})" -
    }
done

if [ -n "$NOISY$BENCH_NOISE" ]; then
    echo "proxy: WARNING: other processes took CPU during the bench, figures are noisy:$NOISY ${BENCH_NOISE}"
    summary "proxy: NOISE (other processes busy)" "${NOISY:-$BENCH_NOISE}" -
fi
kill -0 "$GW_PID" 2>/dev/null || { status=2; echo "proxy: refract-gateway died during the run" >&2; }
kill -0 "$PEER_PID" 2>/dev/null || { status=2; echo "proxy: peer nginx died during the run" >&2; }
if grep -qiE 'error|crit|alert' "$TMP/gateway.log" 2>/dev/null; then
    echo "proxy: gateway log (warnings/errors):"; grep -iE 'error|crit|alert|warn' "$TMP/gateway.log" | sort | uniq -c | sort -rn | head -5
fi
echo "proxy: raw wrk output in $RAW"
exit $status
