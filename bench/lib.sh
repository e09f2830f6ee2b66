# shellcheck shell=bash
# bench/lib.sh — helpers shared by the refract benchmarks (sourced, not run).
#
# Every process a bench starts is recorded with bench_track PID and stopped
# (TERM, then KILL after 5 s) by the EXIT trap that bench_init installs; the
# temporary directory is removed too (BENCH_KEEP_TMP=1 keeps it).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/build/bin
RESULTS_DIR=${BENCH_RESULTS_DIR:-$ROOT/build/bench-results}
NGINX_MODULES=${NGINX_MODULES:-/usr/lib/nginx/modules}

_bench_pids=()
_bench_ports=()
_bench_dirs=() # removed by the EXIT trap too (outside $TMP, e.g. in /dev/shm)

bench_init() { # NAME: temp dir, results dir, cleanup trap
    BENCH_NAME=$1
    mkdir -p "$RESULTS_DIR"
    TMP=$(mktemp -d "/tmp/refract-bench-$BENCH_NAME.XXXXXX")
    chmod 755 "$TMP" # nginx workers may run as nobody and must read in here
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    local p
    for p in "${_bench_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${_bench_pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    _bench_pids=()
    for p in "${_bench_dirs[@]}"; do rm -rf "$p"; done
    if [ -n "${TMP:-}" ] && [ -d "$TMP" ]; then
        if [ -n "${BENCH_KEEP_TMP:-}" ]; then echo "bench: kept $TMP"; else rm -rf "$TMP"; fi
    fi
}

bench_track() { _bench_pids+=("$1"); }
bench_track_dir() { _bench_dirs+=("$1"); }

bench_stop() { # PID: stop one tracked process now
    local p=$1 keep=() q
    kill -TERM "$p" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    for q in "${_bench_pids[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
    _bench_pids=("${keep[@]}")
}

die() { echo "bench($BENCH_NAME): ERROR: $*" >&2; exit 2; }

need() { # CMD...: every command must exist
    local c
    for c in "$@"; do command -v "$c" >/dev/null 2>&1 || die "'$c' is not installed (see bench/README.md)"; done
}

free_port() { # prints a loopback TCP port nothing listens on and not handed out before
    local p
    for _ in $(seq 200); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        [[ " ${_bench_ports[*]} " == *" $p "* ]] && continue
        if [ -z "$(ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null)" ]; then
            _bench_ports+=("$p")
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

wait_http() { # URL PID [SECONDS]: until URL answers any HTTP status; fails if PID died
    local url=$1 pid=$2 secs=${3:-10}
    for _ in $(seq $((secs * 10))); do
        kill -0 "$pid" 2>/dev/null || return 1
        curl -s -o /dev/null --max-time 1 "$url" && return 0
        sleep 0.1
    done
    return 1
}

# ---- nginx ------------------------------------------------------------------

# nginx_start DIR: runs nginx with DIR as prefix and DIR/nginx.conf (which
# must have `daemon off;`), in the background; sets NGINX_PID.
nginx_start() {
    local dir=$1
    mkdir -p "$dir/logs"
    nginx -p "$dir" -c "$dir/nginx.conf" -t -q 2>"$dir/logs/conftest.log" ||
        { cat "$dir/logs/conftest.log" >&2; die "nginx config in $dir is invalid"; }
    nginx -p "$dir" -c "$dir/nginx.conf" 2>>"$dir/logs/stderr.log" &
    NGINX_PID=$!
    bench_track "$NGINX_PID"
}

# nginx_conf_head WORKERS: the top of every nginx.conf the benches write.
origin_nginx_start() { # DIR PORT WWW: the shared origin, nginx serving WWW statically; sets ORIGIN_PID
    mkdir -p "$1"
    {
        nginx_conf_head 2
        cat <<EOF
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$2${RP:-};
        root $3;
    }
}
EOF
    } >"$1/nginx.conf"
    nginx_start "$1"
    ORIGIN_PID=$NGINX_PID
}

nginx_conf_head() {
    cat <<EOF
daemon off;
master_process on;
worker_processes $1;
pid nginx.pid;
error_log logs/error.log warn;
load_module $NGINX_MODULES/ngx_http_image_filter_module.so;
events { worker_connections 1024; }
EOF
}

# ---- refract ------------------------------------------------------------------

# gateway_start CONF LOG: sets GW_PID.
gateway_start() {
    "$BIN/refract-gateway" -t -c "$1" >/dev/null || die "refract-gateway rejects $1"
    "$BIN/refract-gateway" -c "$1" >>"$2" 2>&1 &
    GW_PID=$!
    bench_track "$GW_PID"
}

# ---- wrk ------------------------------------------------------------------------

# A wrk script that prints the run's totals in one parseable line. Paths to
# rotate over (one per line) come from the file named by $BENCH_PATHS, if set.
write_wrk_lua() { # FILE [PATHS_FILE]
    local paths="{}"
    if [ -n "${2:-}" ]; then
        paths="{"
        while IFS= read -r l; do paths+="\"$l\","; done <"$2"
        paths+="}"
    fi
    cat >"$1" <<EOF
local paths = $paths
local n = 0
local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end
function init(args)
  n = tonumber(tid) or 0
end
function request()
  if #paths == 0 then return wrk.format(nil, nil) end
  n = n + 1
  return wrk.format(nil, paths[(n % #paths) + 1])
end
function done(s, latency, requests)
  io.write(string.format("WRK requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_ms=%.2f p99_ms=%.2f\n",
    s.requests, s.bytes, s.duration, s.errors.connect, s.errors.read, s.errors.write, s.errors.status,
    s.errors.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
EOF
}

# shellcheck disable=SC2034 # W_* are read by the scripts that source this
# run_wrk LABEL LUA URL WRK_ARGS...: runs wrk, appends the raw output to
# $RAW, and sets W_REQS W_BYTES W_SECS W_RPS W_MBPS W_ERRS W_P50 W_P99.
run_wrk() {
    local label=$1 lua=$2 url=$3
    shift 3
    local out
    out=$(wrk "$@" --latency -s "$lua" "$url" 2>&1)
    local rc=$?
    { echo "---- $label: wrk $* $url"; echo "$out"; } >>"$RAW"
    local line
    line=$(grep '^WRK ' <<<"$out" | tail -1)
    if [ $rc -ne 0 ] || [ -z "$line" ]; then
        echo "$out" >&2
        return 1
    fi
    local kv
    declare -A m
    for kv in ${line#WRK }; do m[${kv%%=*}]=${kv#*=}; done
    W_REQS=${m[requests]}
    W_BYTES=${m[bytes]}
    W_SECS=$(awk -v d="${m[duration_us]}" 'BEGIN{printf "%.3f", d/1e6}')
    W_RPS=$(awk -v r="$W_REQS" -v s="$W_SECS" 'BEGIN{printf "%.1f", r/s}')
    W_MBPS=$(awk -v b="$W_BYTES" -v s="$W_SECS" 'BEGIN{printf "%.1f", b/s/1e6}')
    W_ERRS=$((m[connect] + m[read] + m[write] + m[status] + m[timeout]))
    W_P50=${m[p50_ms]}
    W_P99=${m[p99_ms]}
}

# ---- numbers ----------------------------------------------------------------------

fdiv() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b + 0 == 0) print "nan"; else printf "%.2f", a/b }'; }
# fmedian X...: the median (the mean of the middle two for an even count)
fmedian() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END{ if (!NR) print "nan";
        else if (NR % 2) printf "%.1f", v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# summary METRIC VALUE TARGET: one line of the table bench/run.sh prints
# (TARGET "-" = informational). Written to $BENCH_SUMMARY if set.
summary() {
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"${BENCH_SUMMARY:-/dev/null}"
}

# ---- a quiet machine ------------------------------------------------------------------

cpu_busy_pct() { # SECONDS: share of all CPUs busy over that time, in percent
    local a b
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)
    sleep "${1:-1}"
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN{split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
        printf "%d", (t > 0 ? 100 * (y[1] - x[1]) / t : 0)}'
}

# machine_check: the benches share 2 CPUs with whatever else runs; wait up to
# BENCH_QUIET_WAIT seconds (default 60) for the machine to be idle, then go
# on regardless, saying what else was busy. Sets BENCH_NOISE ("" when quiet).
machine_check() {
    local busy waited=0 max=${BENCH_QUIET_WAIT:-60}
    BENCH_NOISE=""
    busy=$(cpu_busy_pct 1)
    while [ "$busy" -gt 15 ] && [ "$waited" -lt "$max" ]; do
        [ "$waited" -eq 0 ] && echo "bench($BENCH_NAME): machine ${busy}% busy before start; waiting up to ${max}s for it to quiet down"
        sleep 4
        waited=$((waited + 5))
        busy=$(cpu_busy_pct 1)
    done
    if [ "$busy" -gt 15 ]; then
        local snap
        snap=$(proc_snapshot)
        busy=$(cpu_busy_pct 2)
        BENCH_NOISE="machine ${busy}% busy before start: $(foreign_cpu "$snap" 2)"
        echo "bench($BENCH_NAME): WARNING: $BENCH_NOISE— figures will be noisy" >&2
    else
        echo "bench($BENCH_NAME): machine idle before start (${busy}% busy)"
    fi
}

# proc_snapshot: "pid ppid ticks comm" of every process now.
proc_snapshot() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk '{
        l = $0; o = index(l, "("); c = 0
        for (i = length(l); i > 0; i--) if (substr(l, i, 1) == ")") { c = i; break }
        comm = substr(l, o + 1, c - o - 1); gsub(/ /, "_", comm)
        n = split(substr(l, c + 2), f, " ")
        print $1, f[2], f[12] + f[13], comm }'
}

# foreign_cpu SNAPSHOT_BEFORE SECONDS: processes outside this bench's process
# tree that used more than 5% of one CPU since the snapshot, as
# "comm(NN%) ...". Prints nothing when there were none.
foreign_cpu() {
    local hz
    hz=$(getconf CLK_TCK)
    { echo "BEFORE"; echo "$1"; echo "AFTER"; proc_snapshot; } | awk -v me="$$" -v secs="$2" -v hz="$hz" '
        /^BEFORE$/ {m = 1; next} /^AFTER$/ {m = 2; next}
        m == 1 {t0[$1] = $3; next}
        m == 2 {pp[$1] = $2; t1[$1] = $3; cm[$1] = $4}
        END {
            for (p in t1) {
                q = p; ours = 0
                for (k = 0; k < 64 && q > 1; k++) { if (q == me) { ours = 1; break } q = pp[q] }
                if (ours || p == 2 || pp[p] == 2) continue # this bench, or a kernel thread
                d = t1[p] - (p in t0 ? t0[p] : 0)
                use[cm[p]] += d
            }
            for (c in use) if (use[c] / hz / secs > 0.05) printf "%s(%d%%) ", c, 100 * use[c] / hz / secs
        }'
}

# ---- how a server's work was spread -------------------------------------------------

# cpu_ticks PID...: "id ticks" for each thread of each PID
cpu_ticks() {
    local p t
    for p in "$@"; do
        for t in /proc/"$p"/task/*; do
            [ -r "$t/stat" ] && awk -v id="${t##*/}" '{print id, $14 + $15}' "$t/stat" 2>/dev/null
        done
    done
}

# cpu_total_ms BEFORE AFTER (cpu_ticks outputs): CPU milliseconds used in between
cpu_total_ms() {
    { echo "$1"; echo "--"; echo "$2"; } | awk -v hz="$(getconf CLK_TCK)" '
        $1 == "--" {m = 1; next}
        !m {b[$1] = $2; next}
        {t += $2 - b[$1]}
        END {printf "%d", t * 1000 / hz}'
}

# cpu_split BEFORE AFTER (cpu_ticks outputs): the shares of the total CPU
# taken by the threads that took at least 5% of it, largest first, as
# "62%/35%". One event loop (or nginx worker) near 100% while the other
# idles means the connections were spread unevenly across them.
cpu_split() {
    { echo "$1"; echo "--"; echo "$2"; } | awk '
        $1 == "--" {m = 1; next}
        !m {b[$1] = $2; next}
        {d[$1] = $2 - b[$1]; t += d[$1]}
        END {
            if (t <= 0) { print "-"; exit }
            n = 0
            for (k in d) if (d[k] / t >= 0.05) v[++n] = int(100 * d[k] / t + 0.5)
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] > v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
            s = ""; for (i = 1; i <= n; i++) s = s (i > 1 ? "/" : "") v[i] "%"
            print s
        }'
}

# bench_refract_cache_conf FILE: writes refract's cache-bench configuration
# (one vhost "bench", default, in front of http://127.0.0.1:$P_ORIGIN, the
# edge cache on under $TMP/refract-cache) to FILE from the caller's P_GW,
# P_ADMIN, P_BUS, P_ORIGIN and SERVER_THREADS, and checks it with -t.
# Returns 1 (the gateway's complaint printed) when the build rejects it.
bench_refract_cache_conf() {
    cat >"$1" <<EOF
gateway:
  listen: "127.0.0.1:$P_GW"
  admin_listen: "127.0.0.1:$P_ADMIN"
  threads: $SERVER_THREADS
  access_log: false
  cache:
    dir: "$TMP/refract-cache"
    memory: 512MB
    disk: 4GB
bus:
  endpoint: "tcp://127.0.0.1:$P_BUS"
vhosts:
  - name: bench
    default: true
    origin: "http://127.0.0.1:$P_ORIGIN"
    cache:
      enable: true
log:
  level: warn
EOF
    "$BIN/refract-gateway" -t -c "$1" >"$TMP/gateway-t.log" 2>&1 || {
        cat "$TMP/gateway-t.log" >&2
        return 1
    }
}

# bench_nginx_proxy_cache_http LISTEN [EXTRA]: the http {} block of the nginx
# proxy_cache peer the cache benches share (cache kept under
# $TMP/nginx-cache, origin http://127.0.0.1:$P_ORIGIN, X-Cache-Status header),
# listening on 127.0.0.1:LISTEN (a port, with any listen flags); EXTRA goes
# into its location.
bench_nginx_proxy_cache_http() {
    cat <<EOF
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    proxy_cache_path $TMP/nginx-cache levels=1:2 keys_zone=bench:10m max_size=4g inactive=1h use_temp_path=off;
    upstream origin {
        server 127.0.0.1:$P_ORIGIN;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$1;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache-Status \$upstream_cache_status;
            ${2:-}
        }
    }
}
EOF
}

# ---- OpenStack Swift (scripts/swift-aio.sh) for a bench ----------------------------------------
# swift_bench_init: Swift will live in $TMP/swift (SWIFT_DIR); it runs in
# sessions of its own, outside the bench's process tree, so the EXIT trap
# stops it with swift-aio.sh before the usual clean-up. Needs RAW.
swift_bench_init() {
    SWIFT_DIR=$TMP/swift
    trap _swift_bench_cleanup EXIT
}
# shellcheck disable=SC2317 # the EXIT trap runs it
_swift_bench_cleanup() {
    [ -d "$SWIFT_DIR" ] && "$ROOT/scripts/swift-aio.sh" stop "$SWIFT_DIR" >>"$RAW" 2>&1
    bench_cleanup
}
# swift_bench_start PORT: starts it and reads its env (S3_ENDPOINT,
# S3_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), or dies
swift_bench_start() {
    echo "$BENCH_NAME: starting Swift (scripts/swift-aio.sh start $SWIFT_DIR $1)"
    "$ROOT/scripts/swift-aio.sh" start "$SWIFT_DIR" "$1" >>"$RAW" 2>&1 ||
        die "Swift did not start: $(tail -15 "$RAW")"
    # shellcheck disable=SC1091
    . "$SWIFT_DIR/env"
}

# storgate_conf_head PORT ADMIN_PORT BUS_PORT S3_PORT THREADS ACCESS SECRET:
# the start of a gateway configuration for the S3 API benches (a gateway,
# its bus, a vhost it needs but nobody asks, storgate's listener and one
# credential), up to storgate's next keys
storgate_conf_head() {
    cat <<EOF
gateway:
  listen: "127.0.0.1:$1"
  admin_listen: "127.0.0.1:$2"
  threads: $5
  access_log: false
bus:
  endpoint: "tcp://127.0.0.1:$3"
vhosts:                          # the gateway needs one; not used here
  - name: localhost
    default: true
    origin: "file://$TMP/www"
storgate:
  listen: "127.0.0.1:$4"
  credentials:
    - access_key: $6
      secret_key: $7
EOF
}
