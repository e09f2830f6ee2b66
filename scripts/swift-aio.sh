#!/bin/bash
# swift-aio.sh — an OpenStack Swift "all in one" on plain directories, with the
# S3 API (s3api middleware, SigV4, path-style, multipart, presigned URLs) and
# tempauth, from Debian's packages (scripts/deps.sh). It is the S3 peer that
# bench/s3.sh measures storgate against, and the S3 server the integration
# tests run S3-backed mounts against (tests/integration/swift.py wraps it).
#
#   scripts/swift-aio.sh start DIR PORT   configs, rings and data under DIR; the
#                                         proxy (S3 + Swift API) on 127.0.0.1:PORT
#   scripts/swift-aio.sh stop DIR         stops what start recorded in DIR/pids
#                                         (idempotent; the data stays in DIR)
#
# start prints (and writes to DIR/env, one KEY=VALUE a line):
#   S3_ENDPOINT=http://127.0.0.1:PORT  S3_REGION=ap-northeast-2
#   AWS_ACCESS_KEY_ID=test:tester      AWS_SECRET_ACCESS_KEY=testing
#   SWIFT_AUTH_URL=http://127.0.0.1:PORT/auth/v1.0 (user test:tester, key testing)
# and returns once an S3 ListBuckets succeeds (a few seconds). Starting a DIR
# that is running restarts it; its objects are kept (DIR/srv).
#
# What runs (each in its own session, pids in DIR/pids, output in DIR/log/):
#   memcached on a free loopback port of its own (tempauth keeps tokens in it),
#   swift-account-server, swift-container-server, swift-object-server on free
#   loopback ports (mount_check = false, user = root, devices DIR/srv/node/d1),
#   swift-proxy-server on PORT with the pipeline
#     ... cache listing_formats s3api tempauth copy slo dlo ... proxy-server
#   (s3api must come right before the auth middleware, slo after it, for
#   multipart uploads). Rings: one device, one replica, built with Swift's own
#   swift.common.ring.RingBuilder (part power 8), rebuilt at every start.
# No replicators, auditors or updaters: one replica on one disk has nothing
# to replicate, and the object server updates its container synchronously.
#
# Pitfalls this handles:
#   - the servers always read /etc/swift/swift.conf (not swift_dir): start
#     writes it, with a fixed hash path prefix and suffix (changing them would
#     make stored objects unreachable), when its content differs;
#   - s3api's `location` must equal the region clients sign with: ap-northeast-2
#     (storgate's default region too);
#   - the S3 access key is tempauth's `account:user`;
#   - logging: there is no /dev/log here and no syslog daemon. The servers run
#     with -v, so their log lines go to DIR/log/NAME.log; the syslog copy goes
#     to 127.0.0.1:9 (discard; nothing listens). log_level is WARNING
#     (SWIFT_AIO_LOG_LEVEL=INFO for one access line per request), so that
#     logging costs nothing in benchmarks;
#   - the object server drops the page cache of what it writes and, by
#     default, of what it serves to authenticated users; here
#     keep_cache_private = true and keep_cache_size = 1 GiB, so repeated GETs
#     come from the page cache as they do for storgate (SWIFT_AIO_KEEP_CACHE=0:
#     Swift's defaults). Swift still fsyncs every object it writes.
#
# Knobs: SWIFT_AIO_WORKERS (proxy and object server workers, "auto" = one per
# CPU), SWIFT_AIO_LOG_LEVEL (WARNING), SWIFT_AIO_KEEP_CACHE (1),
# SWIFT_AIO_TIMEOUT (seconds to wait for the S3 API, 30).
set -eu

PY=/usr/bin/python3 # Debian's python3 has swift and boto3; the pyenv one on PATH does not
REGION=ap-northeast-2
ACCESS_KEY=test:tester
SECRET_KEY=testing
HASH_PREFIX=refract-aio-prefix # fixed: objects are placed by these
HASH_SUFFIX=refract-aio-suffix
WORKERS=${SWIFT_AIO_WORKERS:-auto}
LOG_LEVEL=${SWIFT_AIO_LOG_LEVEL:-WARNING}
KEEP_CACHE=${SWIFT_AIO_KEEP_CACHE:-1}
TIMEOUT=${SWIFT_AIO_TIMEOUT:-30}

usage() {
    echo "usage: $0 start DIR PORT | stop DIR" >&2
    exit 2
}
die() {
    echo "swift-aio: $*" >&2
    exit 1
}

# port_free PORT: nothing listens on (or connects from) 127.0.0.1:PORT
port_free() { [ -z "$(ss -Htan "( sport = :$1 )" 2>/dev/null)" ]; }

# free_port: a loopback port below the ephemeral range that nothing uses and
# that this run has not handed out yet
PICKED=""
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        case " $PICKED " in *" $p "*) continue ;; esac
        if port_free "$p"; then
            PICKED="$PICKED $p"
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# ours PID DIR: PID is alive and was started for DIR (its command line names
# DIR, so that a recycled pid is never signalled)
ours() {
    [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF "$2/"
}

stop() {
    local dir=$1 name pid left
    [ -f "$dir/pids" ] || return 0
    while read -r name pid; do
        if ours "$pid" "$dir"; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
    done <"$dir/pids"
    for _ in $(seq 50); do
        left=""
        while read -r name pid; do ours "$pid" "$dir" && left="$left $name"; done <"$dir/pids"
        [ -z "$left" ] && break
        sleep 0.1
    done
    while read -r name pid; do
        if ours "$pid" "$dir"; then
            echo "swift-aio: $name ($pid) ignored TERM; killing it" >&2
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    done <"$dir/pids"
    rm -f "$dir/pids"
}

# spawn NAME CMD...: CMD in a session of its own (setsid: the servers' workers
# share its process group, which stop signals), output to DIR/log/NAME.log
spawn() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$DIR/log/$name.log" 2>&1 &
    echo "$name $!" >>"$DIR/pids"
}

write_swift_conf() { # /etc/swift/swift.conf, only when its content differs
    local tmp
    mkdir -p /etc/swift
    tmp=$(mktemp /etc/swift/.swift.conf.XXXXXX)
    cat >"$tmp" <<EOF
# written by refract's scripts/swift-aio.sh (every Swift server reads this
# file, whatever its swift_dir); the hash path prefix and suffix are fixed
[swift-hash]
swift_hash_path_prefix = $HASH_PREFIX
swift_hash_path_suffix = $HASH_SUFFIX

[storage-policy:0]
name = Policy-0
default = yes
EOF
    if cmp -s "$tmp" /etc/swift/swift.conf; then
        rm -f "$tmp"
    else
        chmod 644 "$tmp"
        mv -f "$tmp" /etc/swift/swift.conf
    fi
}

server_conf() { # KIND PORT WORKERS [APP OPTIONS...]: account, container or object server
    local kind=$1 port=$2 workers=$3
    shift 3
    cat <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
workers = $workers
user = root
swift_dir = $DIR/etc
devices = $DIR/srv/node
mount_check = false
log_level = $LOG_LEVEL
log_udp_host = 127.0.0.1
log_udp_port = 9
log_name = $kind-server

[pipeline:main]
pipeline = healthcheck $kind-server

[app:$kind-server]
use = egg:swift#$kind
EOF
    local o
    for o in "$@"; do echo "$o"; done
    cat <<EOF

[filter:healthcheck]
use = egg:swift#healthcheck
EOF
}

proxy_conf() {
    cat <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $PORT
workers = $WORKERS
user = root
swift_dir = $DIR/etc
log_level = $LOG_LEVEL
log_udp_host = 127.0.0.1
log_udp_port = 9
log_name = proxy-server

[pipeline:main]
# s3api right before the auth middleware; slo after both (multipart uploads)
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:s3api]
use = egg:swift#s3api
# the region clients sign with (SigV4 checks it)
location = $REGION

[filter:tempauth]
use = egg:swift#tempauth
# S3 access key "test:tester", secret "testing"
user_test_tester = $SECRET_KEY .admin
user_admin_admin = admin .admin .reseller_admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MC_PORT

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo
EOF
}

build_rings() { # one device d1, one replica, for each of account, container, object
    "$PY" -I - "$DIR/etc" "$A_PORT" "$C_PORT" "$O_PORT" <<'EOF'
import sys
from swift.common.ring import RingBuilder

etc = sys.argv[1]
for name, port in zip(("account", "container", "object"), sys.argv[2:5]):
    b = RingBuilder(8, 1, 0)  # part power 8, 1 replica, min_part_hours 0
    b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
               "device": "d1", "weight": 100.0, "meta": ""})
    b.rebalance()
    b.get_ring().save("%s/%s.ring.gz" % (etc, name))
EOF
}

check_alive() { # dies, with the log's tail, when a recorded process has exited
    local name pid
    while read -r name pid; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "swift-aio: $name exited; $DIR/log/$name.log:" >&2
            tail -20 "$DIR/log/$name.log" >&2
            stop "$DIR"
            exit 1
        fi
    done <"$DIR/pids"
}

start() {
    for c in memcached swift-proxy-server swift-object-server swift-container-server swift-account-server setsid ss curl; do
        command -v "$c" >/dev/null || die "'$c' is not installed (scripts/deps.sh installs it)"
    done
    [ -x "$PY" ] || die "$PY is missing"
    stop "$DIR"
    port_free "$PORT" || die "port $PORT is in use"
    PICKED=" $PORT"
    MC_PORT=$(free_port)
    A_PORT=$(free_port)
    C_PORT=$(free_port)
    O_PORT=$(free_port)

    mkdir -p "$DIR/etc" "$DIR/srv/node/d1" "$DIR/log"
    : >"$DIR/pids"
    write_swift_conf
    local cache_opts=()
    [ "$KEEP_CACHE" = 0 ] || cache_opts=("keep_cache_private = true" "keep_cache_size = 1073741824")
    server_conf account "$A_PORT" 1 >"$DIR/etc/account-server.conf"
    server_conf container "$C_PORT" 1 >"$DIR/etc/container-server.conf"
    server_conf object "$O_PORT" "$WORKERS" "${cache_opts[@]}" >"$DIR/etc/object-server.conf"
    proxy_conf >"$DIR/etc/proxy-server.conf"
    build_rings

    spawn memcached memcached -u root -l 127.0.0.1 -p "$MC_PORT" -U 0 -m 64 -c 1024 -P "$DIR/log/memcached.pid"
    local s
    for s in account container object proxy; do
        spawn "$s" "swift-$s-server" "$DIR/etc/$s-server.conf" -v
    done

    {
        echo "S3_ENDPOINT=http://127.0.0.1:$PORT"
        echo "S3_REGION=$REGION"
        echo "AWS_ACCESS_KEY_ID=$ACCESS_KEY"
        echo "AWS_SECRET_ACCESS_KEY=$SECRET_KEY"
        echo "SWIFT_AUTH_URL=http://127.0.0.1:$PORT/auth/v1.0"
        echo "SWIFT_PORTS=proxy:$PORT,account:$A_PORT,container:$C_PORT,object:$O_PORT,memcached:$MC_PORT"
    } >"$DIR/env"

    # the storage servers answer their healthcheck, then an S3 ListBuckets
    # (through memcached, tempauth and the account server) succeeds
    local t0=$SECONDS p
    for p in "$A_PORT" "$C_PORT" "$O_PORT"; do
        until curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$p/healthcheck"; do
            check_alive
            [ $((SECONDS - t0)) -lt "$TIMEOUT" ] || { stop "$DIR"; die "a storage server (port $p) did not answer in ${TIMEOUT}s (see $DIR/log/)"; }
            sleep 0.1
        done
    done
    local left=$((TIMEOUT - (SECONDS - t0)))
    [ "$left" -gt 0 ] || left=1
    if ! "$PY" -I - "http://127.0.0.1:$PORT" "$REGION" "$ACCESS_KEY" "$SECRET_KEY" "$left" 2>"$DIR/log/s3-check.log" <<'EOF'; then
import sys, time
import boto3
from botocore.config import Config

url, region, ak, sk, secs = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=url, region_name=region, aws_access_key_id=ak,
                  aws_secret_access_key=sk,
                  config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5))
deadline = time.time() + float(secs)
while True:
    try:
        s3.list_buckets()
        sys.exit(0)
    except Exception as e:  # not up yet: refused, 5xx, tempauth without memcached...
        if time.time() > deadline:
            print("S3 ListBuckets still fails: %s" % e, file=sys.stderr)
            sys.exit(1)
        time.sleep(0.1)
EOF
        check_alive
        cat "$DIR/log/s3-check.log" >&2
        tail -5 "$DIR/log/proxy.log" >&2
        stop "$DIR"
        die "the S3 API on port $PORT did not answer in ${TIMEOUT}s (see $DIR/log/)"
    fi
    check_alive
    echo "swift-aio: Swift AIO up in $((SECONDS - t0 + 1))s or less, data in $DIR/srv (pids in $DIR/pids, logs in $DIR/log/)"
    cat "$DIR/env"
}

[ $# -ge 1 ] || usage
case $1 in
start)
    [ $# -eq 3 ] || usage
    case $3 in '' | *[!0-9]*) die "PORT '$3' is not a number" ;; esac
    mkdir -p "$2"
    DIR=$(cd "$2" && pwd)
    PORT=$3
    start
    ;;
stop)
    [ $# -eq 2 ] || usage
    [ -d "$2" ] || exit 0
    DIR=$(cd "$2" && pwd)
    stop "$DIR"
    ;;
*) usage ;;
esac
