#!/bin/bash
# bench/tls.sh — TLS pass-through (no cache): a 10 KB object fetched through
# refract-gateway's TLS listener vs nginx `listen ... ssl http2` + proxy_pass,
# both with the SAME certificate and key (made at the start of the run) and
# both in front of the same plain-HTTP nginx origin. Measured over HTTP/1.1
# (wrk, https:// URL, keep-alive) and over h2 (h2load, keep-alive connections,
# several streams each). Prints req/s of each and the ratio refract/nginx.
#
#   bench/tls.sh                                   (defaults below; ~2 minutes)
#   TLS_DURATION=2 TLS_WARMUP=1 TLS_ROUNDS=1 bench/tls.sh   (smoke run, not a measurement)
#
# Certificate: ECDSA P-256 by default (TLS_KEY=rsa: RSA 2048), self-signed,
# SAN tls.bench/localhost/127.0.0.1. The load generators verify nothing (wrk
# never does; h2load neither): the bench checks the certificate itself, with
# curl --cacert and openssl s_client, before measuring.
#
# TLS parity: both servers offer TLSv1.2 + TLSv1.3 with the same TLS 1.2
# cipher list (refract's default) and the server's cipher order winning (as
# refract does), so both negotiate the same protocol and cipher with the same
# client; the bench prints what each negotiated and warns when they differ.
#
# "CPU us/req" on each round: the server's own CPU time (user + system, all
# its threads or workers; not the origin's, not the load generator's) per
# request. "split": how that CPU time spread over its threads/workers.
#
# Exit status: 0 when every contender ran (whatever the ratios), 2 when one
# could not run or answered wrongly.
set -u
. "$(dirname "$0")/lib.sh"

DURATION=${TLS_DURATION:-8}     # seconds per measured run
WARMUP=${TLS_WARMUP:-3}         # seconds of warm-up per contender and protocol
ROUNDS=${TLS_ROUNDS:-3}         # measured runs per contender (order alternating); the median counts
THREADS=${TLS_THREADS:-2}       # wrk -t and h2load -t
CONNS_H1=${TLS_CONNS_H1:-32}    # wrk -c: HTTP/1.1 keep-alive connections (1 request in flight each)
CONNS_H2=${TLS_CONNS_H2:-8}     # h2load -c: h2 connections ...
STREAMS_H2=${TLS_STREAMS_H2:-4} # ... h2load -m: concurrent streams on each (8 x 4 = 32 in flight, as HTTP/1.1)
KEYTYPE=${TLS_KEY:-ec}          # ec (ECDSA P-256) or rsa (RSA 2048)
REUSEPORT=${TLS_NGINX_REUSEPORT:-1}
RP=""
[ "$REUSEPORT" = 1 ] && RP=" reuseport"
NGINX_EXTRA=${TLS_NGINX_EXTRA:-}

bench_init tls
need nginx wrk h2load openssl curl ss awk cmp getconf
[ -x "$BIN/refract-gateway" ] || die "$BIN/refract-gateway is missing: run make"
[ "$THREADS" -le "$CONNS_H2" ] || die "TLS_THREADS ($THREADS) must not exceed TLS_CONNS_H2 ($CONNS_H2) (h2load)"
RAW=${BENCH_RAW:-$RESULTS_DIR/tls-$(date +%Y%m%d-%H%M%S).log}
: >"$RAW"

# ---- the certificate both servers use -----------------------------------------------
PKI=$TMP/pki
mkdir -p "$PKI"
case $KEYTYPE in
ec) KEYARGS=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); KEYDESC="ECDSA P-256" ;;
rsa) KEYARGS=(-newkey rsa:2048); KEYDESC="RSA 2048" ;;
*) die "TLS_KEY must be ec or rsa, not '$KEYTYPE'" ;;
esac
openssl req -x509 "${KEYARGS[@]}" -nodes -keyout "$PKI/bench.key" -out "$PKI/bench.crt" -days 2 \
    -subj "/CN=tls.bench" -addext "subjectAltName=DNS:tls.bench,DNS:localhost,IP:127.0.0.1" \
    >"$PKI/openssl.log" 2>&1 || die "openssl could not make the certificate ($(cat "$PKI/openssl.log"))"
chmod 644 "$PKI"/*
CERT_FP=$(openssl x509 -in "$PKI/bench.crt" -noout -fingerprint -sha256 | sed 's/.*=//')

# refract's TLS 1.2 cipher list (RF_TLS_DEFAULT_CIPHERS), given to nginx too
RF_CIPHERS=$(awk '/#define RF_TLS_DEFAULT_CIPHERS/{on = 1; next} on {s = s $0; if ($0 !~ /\\$/) exit}
    END {gsub(/"|\\| /, "", s); print s}' "$ROOT/common/rf_config.h")
[[ "$RF_CIPHERS" =~ ^[A-Z0-9:-]+$ ]] || die "cannot read RF_TLS_DEFAULT_CIPHERS from common/rf_config.h"

# ---- the object -------------------------------------------------------------------------
WWW=$TMP/www
mkdir -p "$WWW"
head -c 10240 /dev/urandom >"$WWW/10k.bin"
chmod 644 "$WWW"/*

P_ORIGIN=$(free_port)
P_NGINX=$(free_port)
P_GW=$(free_port)
P_GWTLS=$(free_port)
P_ADMIN=$(free_port)
P_BUS=$(free_port)

# ---- origin: nginx serving static files (plain HTTP, shared) ---------------------------
origin_nginx_start "$TMP/origin" "$P_ORIGIN" "$WWW"

# ---- peer: nginx TLS (HTTP/1.1 + h2) + proxy_pass, no cache -----------------------------
# keepalive_requests also bounds the requests per h2 connection (nginx >= 1.19.7)
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
        listen 127.0.0.1:$P_NGINX ssl http2$RP;
        ssl_certificate $PKI/bench.crt;
        ssl_certificate_key $PKI/bench.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers $RF_CIPHERS;
        ssl_prefer_server_ciphers on;
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

# ---- refract: gateway with a TLS listener, http origin ----------------------------------
cat >"$TMP/refract.yaml" <<EOF
gateway:
  listen: "127.0.0.1:$P_GW"
  admin_listen: "127.0.0.1:$P_ADMIN"
  threads: 2
  access_log: false
  origin:
    keepalive: 32
  tls:
    listen: "127.0.0.1:$P_GWTLS"
    cert: "$PKI/bench.crt"
    key: "$PKI/bench.key"
bus:
  endpoint: "tcp://127.0.0.1:$P_BUS"
vhosts:
  - name: tls.bench
    default: true
    origin: "http://127.0.0.1:$P_ORIGIN"
    cache: { enable: false }   # pass-through is measured here; cache hits in bench/cache.sh
log:
  level: warn
EOF
gateway_start "$TMP/refract.yaml" "$TMP/gateway.log"

wait_https() { # URL PID: until URL answers over TLS with our certificate; fails if PID died
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || return 1
        curl -s -o /dev/null --max-time 1 --cacert "$PKI/bench.crt" "$1" && return 0
        sleep 0.1
    done
    return 1
}
wait_http "http://127.0.0.1:$P_ORIGIN/10k.bin" "$ORIGIN_PID" || die "origin nginx did not start ($(cat "$TMP/origin/logs/"*.log))"
wait_https "https://127.0.0.1:$P_NGINX/10k.bin" "$PEER_PID" || die "peer nginx did not start on TLS ($(cat "$TMP/peer/logs/"*.log))"
wait_https "https://127.0.0.1:$P_GWTLS/10k.bin" "$GW_PID" || die "refract-gateway did not start on TLS ($(cat "$TMP/gateway.log"))"

declare -A URL=([nginx]="https://127.0.0.1:$P_NGINX" [refract]="https://127.0.0.1:$P_GWTLS")
declare -A PORT=([nginx]=$P_NGINX [refract]=$P_GWTLS)
declare -A DESC=([nginx]="nginx ssl http2 + proxy_pass (peer)" [refract]="refract-gateway tls + http:// origin")

# ---- every contender: our certificate, the exact bytes, both protocols -------------------
declare -A NEGO
for c in nginx refract; do
    for v in 1.1 2; do
        got=$(curl -s -f --cacert "$PKI/bench.crt" "--http$v" -o "$TMP/check" -w '%{http_version}' "${URL[$c]}/10k.bin") ||
            die "$c: GET /10k.bin over HTTP/$v (TLS, certificate verified) failed"
        [ "$got" = "$v" ] || die "$c: asked for HTTP/$v over TLS, got HTTP/$got"
        cmp -s "$TMP/check" "$WWW/10k.bin" || die "$c: GET /10k.bin over HTTP/$v returned different bytes"
    done
    for alpn in none h2; do
        a=()
        [ "$alpn" = h2 ] && a=(-alpn h2)
        out=$(openssl s_client -connect "127.0.0.1:${PORT[$c]}" -servername tls.bench "${a[@]}" </dev/null 2>/dev/null)
        fp=$(openssl x509 -noout -fingerprint -sha256 <<<"$out" 2>/dev/null | sed 's/.*=//')
        [ "$fp" = "$CERT_FP" ] || die "$c: does not present the bench certificate"
        # "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384"
        NEGO[$c.$alpn]=$(awk '/^New, /{p = $2; sub(/,$/, "", p); print p, $NF; exit}' <<<"$out")
        if [ "$alpn" = h2 ]; then
            grep -q '^ALPN protocol: h2' <<<"$out" || die "$c: does not select h2 by ALPN"
        fi
    done
done
echo "tls: certificate $KEYDESC (self-signed, SHA-256 $CERT_FP); both contenders present it and return the exact 10 KB over HTTP/1.1 and h2"
echo "tls: negotiated with openssl s_client (the clients' OpenSSL defaults): nginx ${NEGO[nginx.none]}, refract ${NEGO[refract.none]}"
[ "${NEGO[nginx.none]}" = "${NEGO[refract.none]}" ] && [ "${NEGO[nginx.h2]}" = "${NEGO[refract.h2]}" ] ||
    echo "tls: WARNING: the contenders negotiate different TLS parameters (nginx ${NEGO[nginx.h2]}, refract ${NEGO[refract.h2]} with ALPN h2): the comparison is not like for like" >&2

LUA=$TMP/report.lua
write_wrk_lua "$LUA"

# shellcheck disable=SC2034 # W_* are read below, like run_wrk's
# run_h2load LABEL URL H2LOAD_ARGS...: runs h2load, appends the raw output to
# $RAW, and sets W_REQS W_SECS W_RPS W_MBPS W_ERRS W_P99 (here: the MEAN
# request time in ms; h2load prints no percentiles) and H2_TLS ("proto cipher").
run_h2load() {
    local label=$1 url=$2
    shift 2
    local out rc
    out=$(h2load "$@" "$url" 2>&1)
    rc=$?
    { echo "---- $label: h2load $* $url"; echo "$out"; } >>"$RAW"
    if [ $rc -ne 0 ] || ! grep -q '^finished in ' <<<"$out"; then
        echo "$out" >&2
        return 1
    fi
    grep -q '^Application protocol: h2$' <<<"$out" || { echo "h2load did not negotiate h2" >&2; return 1; }
    local v
    v=$(awk '
        function ms(s) { if (s ~ /us$/) return s / 1000; if (s ~ /ms$/) return s + 0; if (s ~ /s$/) return s * 1000; return s + 0 }
        /^finished in / { d = $3; sub(/,$/, "", d); secs = ms(d) / 1000 }
        /^requests: / { done = $8; failed = $12; errored = $14; tmo = $16 }
        /^status codes: / { ok = $3 }
        /^traffic: / { b = $3; gsub(/[()]/, "", b) }
        /^time for request: / { mean = ms($6) }
        /^TLS Protocol: / { p = $3 } /^Cipher: / { c = $2 }
        END { if (secs <= 0) secs = 1e-9
              printf "%d %.3f %.1f %.1f %d %.2f %s_%s\n", done, secs, done / secs, b / secs / 1e6,
                  failed + errored + tmo + (done - ok), mean, p, c }' <<<"$out")
    read -r W_REQS W_SECS W_RPS W_MBPS W_ERRS W_P99 H2_TLS <<<"$v"
    H2_TLS=${H2_TLS/_/ }
}

# load_for PROTO CONTENDER SECONDS LABEL: one wrk (h1) or h2load (h2) run on /10k.bin
declare -A H2NEGO
load_for() {
    local proto=$1 c=$2 d=$3 label=$4
    if [ "$proto" = h1 ]; then
        run_wrk "$label" "$LUA" "${URL[$c]}/10k.bin" -t"$THREADS" -c"$CONNS_H1" -d"${d}s" --timeout 10s ||
            die "$c: wrk over TLS failed"
    else
        run_h2load "$label" "${URL[$c]}/10k.bin" -t"$THREADS" -c"$CONNS_H2" -m"$STREAMS_H2" -D"$d" ||
            die "$c: h2load failed"
        H2NEGO[$c]=$H2_TLS
    fi
    if [ "$W_ERRS" -gt 0 ]; then
        echo "tls: WARNING: $c $proto: $W_ERRS errors (see $RAW)" >&2
        [ "$((W_ERRS * 100))" -gt "$W_REQS" ] && die "$c: more than 1% errors over $proto"
    fi
}

declare -A CMD=([h1]="wrk -t$THREADS -c$CONNS_H1 (HTTP/1.1 keep-alive)"
    [h2]="h2load -t$THREADS -c$CONNS_H2 -m$STREAMS_H2 (h2, $((CONNS_H2 * STREAMS_H2)) streams in flight)")
declare -A LAT=([h1]="p99" [h2]="mean")
declare -A RPS MBPS LATMS CPUREQ
status=0
NOISY=""
machine_check
echo
echo "== tls: pass-through over TLS ($KEYDESC), 10 KB, no cache; ${DURATION}s x $ROUNDS rounds per contender; $(nproc) CPUs shared with the load generator =="
for proto in h1 h2; do
    echo " -- $proto: ${CMD[$proto]}"
    for c in nginx refract; do
        load_for "$proto" "$c" "$WARMUP" "warmup $c $proto"
    done
    for r in $(seq "$ROUNDS"); do
        order="nginx refract"
        [ $((r % 2)) -eq 0 ] && order="refract nginx"
        for c in $order; do
            snap=$(proc_snapshot)
            case $c in
            nginx) spids=$(pgrep -P "$PEER_PID" | tr '\n' ' ') ;;
            *) spids=$GW_PID ;;
            esac
            # shellcheck disable=SC2086
            t0=$(cpu_ticks $spids)
            load_for "$proto" "$c" "$DURATION" "round $r $c $proto"
            # shellcheck disable=SC2086
            t1=$(cpu_ticks $spids)
            split=$(cpu_split "$t0" "$t1")
            cpu_req=$(awk -v ms="$(cpu_total_ms "$t0" "$t1")" -v n="$W_REQS" 'BEGIN{printf "%.1f", n ? ms * 1000 / n : 0}')
            CPUREQ[$c.$proto]="${CPUREQ[$c.$proto]:-} $cpu_req"
            noise=$(foreign_cpu "$snap" "$DURATION")
            [ -n "$noise" ] && NOISY="$NOISY $c/$proto:[$noise]"
            RPS[$c.$proto]="${RPS[$c.$proto]:-} $W_RPS"
            MBPS[$c.$proto]="${MBPS[$c.$proto]:-} $W_MBPS"
            LATMS[$c.$proto]="${LATMS[$c.$proto]:-} $W_P99"
            printf '   round %d  %-8s %-3s %10s req/s %8s MB/s  %4s %7s ms  CPU %6s us/req, split %-9s%s\n' "$r" "$c" \
                "$proto" "$W_RPS" "$W_MBPS" "${LAT[$proto]}" "$W_P99" "$cpu_req" "$split" "${noise:+  [other processes busy: $noise]}"
        done
    done
    if [ "$proto" = h2 ]; then
        echo "   h2load negotiated: nginx ${H2NEGO[nginx]:-?}, refract ${H2NEGO[refract]:-?}"
        [ "${H2NEGO[nginx]:-}" = "${H2NEGO[refract]:-}" ] ||
            echo "tls: WARNING: h2load negotiated different TLS parameters with the two contenders" >&2
    fi
done

echo
echo "median of the rounds:"
printf '%-6s %-40s %12s %10s %12s  %s\n' proto contender "req/s" "MB/s" "CPU us/req" "latency ms (runs)"
for proto in h1 h2; do
    for c in nginx refract; do
        # shellcheck disable=SC2086
        printf '%-6s %-40s %12s %10s %12s  %s %s\n' "$proto" "${DESC[$c]}" "$(fmedian ${RPS[$c.$proto]})" \
            "$(fmedian ${MBPS[$c.$proto]})" "$(fmedian ${CPUREQ[$c.$proto]})" "${LAT[$proto]}" "$(echo ${LATMS[$c.$proto]} | tr ' ' /)"
    done
    # shellcheck disable=SC2086
    ratio=$(fdiv "$(fmedian ${RPS[refract.$proto]})" "$(fmedian ${RPS[nginx.$proto]})")
    # shellcheck disable=SC2086
    cpu_ratio=$(fdiv "$(fmedian ${CPUREQ[nginx.$proto]})" "$(fmedian ${CPUREQ[refract.$proto]})")
    echo "       ratio refract/nginx = ${ratio}x (target >= 1.0)   CPU per request nginx/refract = ${cpu_ratio}x   (${CMD[$proto]})"
    echo
    # shellcheck disable=SC2086
    {
        summary "tls $proto 10k: refract/nginx (req/s)" "$ratio" 1.0
        summary "tls $proto 10k: refract req/s | MB/s" "$(fmedian ${RPS[refract.$proto]}) | $(fmedian ${MBPS[refract.$proto]})" -
        summary "tls $proto 10k: nginx req/s | MB/s" "$(fmedian ${RPS[nginx.$proto]}) | $(fmedian ${MBPS[nginx.$proto]})" -
        summary "tls $proto 10k: server CPU us/req refract | nginx" "$(fmedian ${CPUREQ[refract.$proto]}) | $(fmedian ${CPUREQ[nginx.$proto]})" -
    }
done
summary "tls: certificate, TLS negotiated (refract | nginx)" "$KEYDESC, ${NEGO[refract.none]} | ${NEGO[nginx.none]}" -

if [ -n "$NOISY$BENCH_NOISE" ]; then
    echo "tls: WARNING: other processes took CPU during the bench, figures are noisy:$NOISY ${BENCH_NOISE}"
    summary "tls: NOISE (other processes busy)" "${NOISY:-$BENCH_NOISE}" -
fi
kill -0 "$GW_PID" 2>/dev/null || { status=2; echo "tls: refract-gateway died during the run" >&2; }
kill -0 "$PEER_PID" 2>/dev/null || { status=2; echo "tls: peer nginx died during the run" >&2; }
if grep -qiE 'error|crit|alert' "$TMP/gateway.log" 2>/dev/null; then
    echo "tls: gateway log (warnings/errors):"; grep -iE 'error|crit|alert|warn' "$TMP/gateway.log" | sort | uniq -c | sort -rn | head -5
fi
echo "tls: raw wrk and h2load output in $RAW"
exit $status
