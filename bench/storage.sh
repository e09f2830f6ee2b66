#!/bin/bash
# bench/storage.sh — issue 10's figures for the object-storage tier (a vhost's
# `storage:`) and the backup pipe (`backup:`), services/gateway/gw_storage.c,
# against OpenStack Swift's s3api (scripts/swift-aio.sh, as bench/s3.sh), all
# on the same 2 CPUs, in one run:
#
#   1. hit: how long a storage HIT takes, against a cache hit and against what
#      the tier saves (origin fetch + transform). An nginx origin serves one
#      JPEG per source size (STORAGE_SOURCES: a real 3840x2400 photo, 1.3 MB,
#      and the same photo made 1280 px wide). For each, STORAGE_N (200)
#      distinct URLs /photo-W.jpg/dims/resize/{100+i}x (+ STORAGE_WARM extra
#      ones, requested first in each round, not measured) are made once by a
#      gateway "A" whose vhost has `storage:` (every one a storage miss:
#      transformed, then uploaded by the upload threads) until
#      refract_storage_uploads_total{kind="storage",result="ok"} has counted
#      them all and Swift lists them. Then, per round, a fresh gateway (empty
#      cache dir) + one image worker, with two vhosts on the same origin:
#        s.bench  the same `storage:` as A    (a) storage HIT (first request)
#                                             (b) cache hit  (the same URL again)
#        p.bench  no storage                  (c) origin + transform (a miss)
#      and, as information, (d) the same stored copy fetched straight from
#      Swift by the client (a presigned GET): Swift's part of (a).
#      Sequential requests, one keep-alive connection per vhost (and to
#      Swift), from a small Python client (raw sockets: timed from the
#      request's write to the answer's last byte), URL by URL: a d c b' or
#      c b' d a (b' = the previous URL's cache hit: right after its storage
#      hit, the object may still be finishing and the request joins it as a
#      collapsed reader), alternating by URL and by round. Every answer is
#      checked: 200, a JPEG exactly W px wide; (a) says Cache-Status
#      ...detail=storage-hit and has Swift's bytes, (b) "refract; hit" with
#      (a)'s bytes, (c) neither; after the round the gateway's metrics must
#      count N + warm storage hits and no origin request on s.bench, and one
#      origin request per transform on p.bench (its source not cached). Per
#      round the median and p90 of each; the medians over the rounds count.
#      Ratios: storage-hit / cache-hit, storage-hit / (origin + transform),
#      p50 and p90.
#   2. backup: the gateway's CPU to pass a STORAGE_BIG_MB (100) MiB object
#      through, fetched fresh (a cache miss, distinct path per run) from the
#      nginx origin, on a vhost with `backup:` (to Swift) against the same
#      vhost without it (both cache the object: backup needs the cache).
#      CPU = the gateway process's CPU clock (clock_gettime of its
#      CLOCK_PROCESS_CPUTIME: the kernel's utime + stime of every thread,
#      living or gone, in ns instead of /proc/PID/stat's 10 ms ticks; the
#      ticks are printed beside it), read before the request and after: for
#      backup, once the object is complete in Swift (a presigned HEAD to
#      Swift, polled every 50 ms: polling the gateway's /metrics would add
#      its own CPU to one side only; the metric is checked afterwards), then
#      STORAGE_SETTLE s more for both. The upload runs in the gateway's
#      upload threads, so its CPU is in the figure; Swift's (receiving, MD5,
#      fsync) is printed beside it but not in the ratio. STORAGE_BIG_WARMUP
#      (2) unmeasured runs of each first (the first checked byte-exact: the
#      client's copy and the copy in Swift), then STORAGE_BIG_RUNS (7)
#      alternating. Ratio: CPU backup / plain, medians (issue 10: <= 1.10,
#      "≤ 10% CPU over plain proxying"). Also printed: the median of the
#      run-by-run ratios, and the upload threads' own CPU (the gateway's
#      threads that worked in backup runs and not at all in plain ones, their
#      /proc/PID/task ticks added up over all measured runs) over plain's.
# Report-only ratios (bench/run.sh lists them under the absolute figures).
#
#   bench/storage.sh                      (~2 minutes)
#   STORAGE_N=20 STORAGE_ROUNDS=1 STORAGE_BIG_MB=16 STORAGE_BIG_RUNS=1 STORAGE_BIG_WARMUP=1 bench/storage.sh   (a smoke run)
#   bench/run.sh storage                  (adds its rows to the table)
#
# Knobs: STORAGE_PARTS ("hit backup"), STORAGE_N (200), STORAGE_WARM (8),
# STORAGE_ROUNDS (3), STORAGE_SOURCES ("3840 1280": widths made from the
# corpus photo; its own width = the file itself), STORAGE_BIG_MB (100),
# STORAGE_BIG_RUNS (7), STORAGE_BIG_WARMUP (2), STORAGE_SETTLE (0.5 s).
#
# Exit status: 0 when everything ran (whatever the ratios), 2 when a server
# could not start, died or answered wrongly.
set -u
. "$(dirname "$0")/lib.sh"

PARTS=${STORAGE_PARTS:-hit backup}
N=${STORAGE_N:-200}
WARM=${STORAGE_WARM:-8}
ROUNDS=${STORAGE_ROUNDS:-3}
SOURCES=${STORAGE_SOURCES:-3840 1280}
BIG_MB=${STORAGE_BIG_MB:-100}
BIG_RUNS=${STORAGE_BIG_RUNS:-7}
BIG_WARM=${STORAGE_BIG_WARMUP:-2} # unmeasured runs first (the first one checked byte-exact)
SETTLE=${STORAGE_SETTLE:-0.5}
PY=/usr/bin/python3 # Debian's, with boto3 (the pyenv one on PATH has none)
BUCKET=bench
CORPUS=${BENCH_CORPUS_DIR:-$ROOT/build/bench-corpus}
PHOTO=the-mouse.jpg # ukui-wallpapers' smallest big photo: 3840x2400, 1.3 MB

bench_init storage
for v in N ROUNDS BIG_MB BIG_RUNS BIG_WARM; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "STORAGE_$v: '${!v}' is not a positive number"
done
[[ $WARM =~ ^[0-9]+$ ]] || die "STORAGE_WARM: '$WARM' is not a number"
[[ $SETTLE =~ ^[0-9.]+$ ]] || die "STORAGE_SETTLE: '$SETTLE' is not a number"
[ "$N" -le 1000 ] || die "STORAGE_N: at most 1000 (widths 100..1099)"
for p in $PARTS; do [[ " hit backup " == *" $p "* ]] || die "STORAGE_PARTS: '$p' is not hit or backup"; done
for w in $SOURCES; do [[ $w =~ ^[0-9]+$ ]] && [ "$w" -ge 1200 ] || die "STORAGE_SOURCES: '$w' is not a width >= 1200"; done
has_part() { [[ " $PARTS " == *" $1 "* ]]; }
need nginx curl ss awk cmp pgrep getconf vipsheader vips swift-proxy-server memcached
[ -x "$PY" ] || die "$PY is missing"
"$PY" -c 'import boto3' 2>/dev/null || die "boto3 is missing for $PY (python3-boto3)"
[ -x "$BIN/refract-gateway" ] || die "$BIN/refract-gateway is missing: run make"
[ -x "$BIN/refract-image-worker" ] || die "$BIN/refract-image-worker is missing: run make"
# The binaries are copied for the run: each round starts a gateway anew, and
# a rebuild meanwhile (someone's make) must not mix two builds in one run.
mkdir -p "$TMP/bin"
cp "$BIN/refract-gateway" "$BIN/refract-image-worker" "$TMP/bin/" || die "cannot copy the binaries"
BUILD_NOTE="refract-gateway built $(date -u -r "$BIN/refract-gateway" '+%Y-%m-%d %H:%M:%S UTC')"
BIN=$TMP/bin
RAW=${BENCH_RAW:-$RESULTS_DIR/storage-$(date +%Y%m%d-%H%M%S).log}
: >"$RAW"
RAW=$(realpath "$RAW")
CORPUS=$(realpath -m "$CORPUS")
T_START=$(date +%s)
SPOOL=/dev/shm/refract-bench-storage-$$ # bus.spool_dir, as conf/refract.yaml
bench_track_dir "$SPOOL"

SWIFT_DIR=$TMP/swift
# shellcheck disable=SC2317 # the EXIT trap runs it
storage_cleanup() { # Swift runs in sessions of its own: swift-aio.sh stops it
    [ -d "$SWIFT_DIR" ] && "$ROOT/scripts/swift-aio.sh" stop "$SWIFT_DIR" >>"$RAW" 2>&1
    bench_cleanup
}
trap storage_cleanup EXIT

# ---- the client (python3, standard library; boto3 for the bucket and presigning) ----------
cat >"$TMP/client.py" <<'EOF'
import json
import os
import re
import socket
import sys
import time


def jpeg_size(b):
    """(width, height) of a JPEG's first SOF, or None."""
    if b[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(b):
        if b[i] != 0xFF:
            return None
        m = b[i + 1]
        if m == 0xFF:
            i += 1
            continue
        if m == 0x01 or 0xD0 <= m <= 0xD8:
            i += 2
            continue
        ln = (b[i + 2] << 8) | b[i + 3]
        if m in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            return (b[i + 7] << 8) | b[i + 8], (b[i + 5] << 8) | b[i + 6]
        i += 2 + ln
    return None


class Conn:
    """One keep-alive HTTP/1.1 connection; get() times write -> last byte."""

    def __init__(self, port, host):
        self.port, self.host, self.s, self.buf = port, host, None, bytearray()

    def _recv(self):
        d = self.s.recv(262144)
        if not d:
            raise IOError("connection closed by %s" % self.host)
        self.buf += d

    def get(self, path):
        if self.s is None:
            self.s = socket.create_connection(("127.0.0.1", self.port))
            self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = bytearray()
        req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: refract-bench\r\nAccept: */*\r\n\r\n"
               % (path, self.host)).encode()
        t0 = time.perf_counter()
        self.s.sendall(req)
        while True:
            e = self.buf.find(b"\r\n\r\n")
            if e >= 0:
                break
            self._recv()
        head = bytes(self.buf[:e]).decode("latin-1").split("\r\n")
        del self.buf[:e + 4]
        status = int(head[0].split()[1])
        h = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            h[k.strip().lower()] = v.strip()
        if "content-length" in h:
            n = int(h["content-length"])
            while len(self.buf) < n:
                self._recv()
            body = bytes(self.buf[:n])
            del self.buf[:n]
        elif h.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                while b"\r\n" not in self.buf:
                    self._recv()
                e = self.buf.find(b"\r\n")
                n = int(bytes(self.buf[:e]).split(b";")[0], 16)
                del self.buf[:e + 2]
                while len(self.buf) < n + 2:
                    self._recv()
                body += self.buf[:n]
                del self.buf[:n + 2]
                if n == 0:
                    break
            body = bytes(body)
        else:
            raise IOError("%s %s: no length" % (self.host, path))
        ms = (time.perf_counter() - t0) * 1000
        if h.get("connection", "").lower() == "close":
            self.s.close()
            self.s = None
        return status, h, body, ms


def want_width(path):
    return int(re.search(r"/resize/(\d+)x", path).group(1))


def pct(v, p):  # nearest rank
    v = sorted(v)
    return v[max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))]


def fail(msg):
    sys.stderr.write("FAIL " + msg + "\n")
    sys.exit(1)


def check_image(what, path, st, h, body):
    if st != 200:
        fail("%s %s: %d %s (Cache-Status %s)" % (what, path, st, body[:200], h.get("cache-status")))
    if "x-refract-fallback" in h:
        fail("%s %s: sent unprocessed (X-Refract-Fallback: %s)" % (what, path, h["x-refract-fallback"]))
    sz = jpeg_size(body)
    if h.get("content-type") != "image/jpeg" or sz is None or sz[0] != want_width(path):
        fail("%s %s: not a %d px wide JPEG (%s, %s, %d bytes)" % (what, path, want_width(path),
                                                                   h.get("content-type"), sz, len(body)))


def fill(port, host, paths):
    """Each path once (storage misses on gateway A): checked, timed."""
    c, lat = Conn(port, host), []
    for p in paths:
        st, h, body, ms = c.get(p)
        check_image("fill", p, st, h, body)
        if "storage-hit" in h.get("cache-status", "") or h.get("cache-status", "").startswith("refract; hit"):
            fail("fill %s: not a miss (Cache-Status %s): the bucket was not empty?" % (p, h.get("cache-status")))
        lat.append(ms)
    print("FILL n=%d p50=%.3f p90=%.3f" % (len(lat), pct(lat, 50), pct(lat, 90)))


def lat(port, swift_port, paths_file, warm_file, direct_file, rnd, raw):
    paths = [l.strip() for l in open(paths_file) if l.strip()]
    warm = [l.strip() for l in open(warm_file) if l.strip()]
    direct = dict(l.split() for l in open(direct_file) if l.strip())  # URL -> presigned GET path of its copy
    s, p, w = Conn(port, "s.bench"), Conn(port, "p.bench"), Conn(swift_port, "127.0.0.1:%d" % swift_port)
    res = {"storage": [], "swift": [], "cache": [], "transform": []}
    same = 0

    # URL by URL: storage hit (S), the same object straight from Swift (W),
    # origin + transform (T), and the cache hit (H) of the URL before: H is
    # not sent right after its S, where it would find the object still
    # finishing (the probe thread marks it complete after the client already
    # has every byte) and join it as a collapsed reader; one URL later it is
    # a plain hit. Order per URL: S W T H or T H W S, alternating by URL and
    # by round.
    pend = []  # (path, S's bytes, measured) whose H is due

    def do_s(path, measured):
        st, h, body, ms = s.get(path)
        check_image("storage-hit", path, st, h, body)
        if "detail=storage-hit" not in h.get("cache-status", ""):
            fail("storage-hit %s: Cache-Status %s (not a storage hit)" % (path, h.get("cache-status")))
        if measured:
            res["storage"].append(ms)
        pend.append((path, body, measured))
        return body

    def do_h():
        if not pend:
            return
        path, sbody, measured = pend.pop(0)
        st, h, body, ms = s.get(path)
        check_image("cache-hit", path, st, h, body)
        if not h.get("cache-status", "").startswith("refract; hit"):
            fail("cache-hit %s: Cache-Status %s (not a hit)" % (path, h.get("cache-status")))
        if body != sbody:
            fail("cache-hit %s: not the bytes of the storage hit" % path)
        if measured:
            res["cache"].append(ms)

    def do_t(path, measured):
        st, h, body, ms = p.get(path)
        check_image("origin+transform", path, st, h, body)
        cs = h.get("cache-status", "")
        if "storage-hit" in cs or cs.startswith("refract; hit"):
            fail("origin+transform %s: Cache-Status %s (not a miss)" % (path, cs))
        if measured:
            res["transform"].append(ms)
        return body

    def do_w(path, measured):
        st, h, body, ms = w.get(direct[path])
        if st != 200:
            fail("Swift GET %s: %d %s" % (path, st, body[:200]))
        if measured:
            res["swift"].append(ms)
        return body

    def one(path, measured, first):
        nonlocal same
        if first:
            sb = do_s(path, measured)
            wb = do_w(path, measured)
            tb = do_t(path, measured)
            do_h()
        else:
            tb = do_t(path, measured)
            do_h()
            wb = do_w(path, measured)
            sb = do_s(path, measured)
        if sb != wb:
            fail("storage-hit %s: not the bytes stored in Swift" % path)
        if measured and sb == tb:
            same += 1

    for i, path in enumerate(warm):
        one(path, False, i % 2 == 0)
    for i, path in enumerate(paths):
        one(path, True, (i + rnd) % 2 == 0)
    while pend:
        do_h()
    with open(raw, "a") as out:
        out.write("round %d latencies (ms): %s\n" % (rnd, json.dumps({k: [round(x, 3) for x in v] for k, v in res.items()})))
    for k, v in res.items():
        print("LAT %s n=%d p50=%.3f p90=%.3f mean=%.3f" % (k, len(v), pct(v, 50), pct(v, 90), sum(v) / len(v)))
    print("SAME %d %d" % (same, len(paths)))


def cpu_ns(pids):
    """Sum of the processes' CPU clocks (CLOCK_PROCESS_CPUTIME of each pid), ns."""
    t = 0
    for pid in pids:
        try:
            t += time.clock_gettime_ns(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
        except OSError:
            pass
    return t


def s3setup(endpoint, region, ak, sk, bucket, keys):
    import boto3
    from botocore.config import Config
    c = boto3.client("s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=ak,
                     aws_secret_access_key=sk, config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
    c.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    for k in keys:
        for op, tag in (("head_object", "HEAD"), ("get_object", "GET")):
            print(tag, k, c.generate_presigned_url(op, Params={"Bucket": bucket, "Key": k}, ExpiresIn=4 * 3600))


def s3count(endpoint, region, ak, sk, bucket, prefix):
    import boto3
    from botocore.config import Config
    c = boto3.client("s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=ak,
                     aws_secret_access_key=sk, config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
    n = 0
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        n += len(page.get("Contents", []))
    print(n)


def s3map(endpoint, region, ak, sk, bucket, prefix):
    """Each stored copy: "URL presigned-GET-path" (URL from x-amz-meta-refract-url)."""
    import boto3
    from botocore.config import Config
    c = boto3.client("s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=ak,
                     aws_secret_access_key=sk, config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            url = c.head_object(Bucket=bucket, Key=o["Key"])["Metadata"].get("refract-url")
            u = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": o["Key"]}, ExpiresIn=4 * 3600)
            print(url, u[len(endpoint):])


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "fill":
        fill(int(a[0]), a[1], [l.strip() for l in open(a[2]) if l.strip()])
    elif cmd == "lat":
        lat(int(a[0]), int(a[1]), a[2], a[3], a[4], int(a[5]), a[6])
    elif cmd == "cpu":
        print(cpu_ns([int(x) for x in a]))
    elif cmd == "s3setup":
        s3setup(a[0], a[1], a[2], a[3], a[4], a[5:])
    elif cmd == "s3count":
        s3count(*a)
    elif cmd == "s3map":
        s3map(*a)
EOF
client() { "$PY" -I "$TMP/client.py" "$@"; }

# ---- sources ------------------------------------------------------------------------------------
WWW=$TMP/www
mkdir -p "$WWW"
CORPUS_NOTE=""
src=$(find "$CORPUS/extract" -name "$PHOTO" 2>/dev/null | head -1)
if [ -z "$src" ] && [ -z "${BENCH_NO_DOWNLOAD:-}" ]; then
    deb=$(ls "$CORPUS"/ukui-wallpapers_*.deb 2>/dev/null | head -1)
    if [ -z "$deb" ]; then
        mkdir -p "$CORPUS"
        echo "storage: downloading ukui-wallpapers into $CORPUS"
        (cd "$CORPUS" && timeout 120 apt-get download ukui-wallpapers >>"$RAW" 2>&1)
        deb=$(ls "$CORPUS"/ukui-wallpapers_*.deb 2>/dev/null | head -1)
    fi
    [ -n "$deb" ] && dpkg -x "$deb" "$CORPUS/extract" 2>>"$RAW"
    src=$(find "$CORPUS/extract" -name "$PHOTO" 2>/dev/null | head -1)
fi
if [ -n "$src" ]; then
    CORPUS_NOTE="ukui-wallpapers $PHOTO"
else
    need ffmpeg
    src=$TMP/generated.jpg
    ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=3840x2400 -frames:v 1 "$TMP/gen.png" &&
        vips copy "$TMP/gen.png" "${src}[Q=90]" || die "cannot generate a fallback JPEG"
    CORPUS_NOTE="GENERATED FALLBACK (ffmpeg testsrc2 3840x2400; not comparable with a photo)"
    echo "storage: WARNING: using a $CORPUS_NOTE" >&2
fi
SRC_W=$(vipsheader -f width "$src")
declare -A SRC_DESC
for w in $SOURCES; do
    if [ "$w" -ge "$SRC_W" ]; then
        cp "$src" "$WWW/photo-$w.jpg"
    else
        vips thumbnail "$src" "$WWW/photo-$w.jpg[Q=85]" "$w" || die "vips thumbnail to $w px failed"
    fi
    SRC_DESC[$w]="$(vipsheader -f width "$WWW/photo-$w.jpg")x$(vipsheader -f height "$WWW/photo-$w.jpg"), $(($(stat -c %s "$WWW/photo-$w.jpg") / 1024)) KB"
done
chmod 644 "$WWW"/*
echo "storage: $BUILD_NOTE (copied to $BIN for the run)"
echo "storage: sources ($CORPUS_NOTE):$(for w in $SOURCES; do printf ' photo-%s.jpg %s;' "$w" "${SRC_DESC[$w]}"; done)"

# ---- servers ------------------------------------------------------------------------------------
P_ORIGIN=$(free_port)
P_SWIFT=$(free_port)
origin_nginx_start "$TMP/origin" "$P_ORIGIN" "$WWW"
wait_http "http://127.0.0.1:$P_ORIGIN/photo-${SOURCES%% *}.jpg" "$ORIGIN_PID" 15 || die "the nginx origin did not start ($(cat "$TMP/origin/logs/"*.log))"

echo "storage: starting Swift (scripts/swift-aio.sh start $SWIFT_DIR $P_SWIFT)"
"$ROOT/scripts/swift-aio.sh" start "$SWIFT_DIR" "$P_SWIFT" >>"$RAW" 2>&1 ||
    die "Swift did not start: $(tail -15 "$RAW")"
# shellcheck disable=SC1091
. "$SWIFT_DIR/env" # S3_ENDPOINT, S3_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
SWIFT_PGIDS=$(awk '{print $2}' "$SWIFT_DIR/pids")
swift_pids() { local g; for g in $SWIFT_PGIDS; do pgrep -g "$g"; done | tr '\n' ' '; }
BIGKEYS=()
BIG_LAST=$((BIG_WARM + BIG_RUNS - 1))
for r in $(seq 0 "$BIG_LAST"); do BIGKEYS+=("mirror/big-$r.bin"); done
declare -A PRESIGN
while read -r op key url; do PRESIGN[$op.$key]=$url; done < <(client s3setup "$S3_ENDPOINT" "$S3_REGION" \
    "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" "$BUCKET" "${BIGKEYS[@]}" 2>>"$RAW")
[ -n "${PRESIGN[HEAD.mirror/big-0.bin]:-}" ] || die "creating the bucket in Swift failed (see $RAW)"

# noise_since SNAPSHOT SECONDS: foreign_cpu without this bench's Swift (its
# processes are in sessions of their own, outside the bench's process tree)
noise_since() {
    foreign_cpu "$1" "$2" | tr ' ' '\n' | grep -vE '^(swift-|memcached)' | tr '\n' ' ' | sed 's/ *$//'
}

# gw_conf FILE TAG: a gateway with its own ports and an empty cache dir; the
# vhosts s.bench (storage tier), p.bench (plain) and b.bench (backup pipe),
# all on the nginx origin, all with the edge cache on (storage and backup
# need it). The TTL is the vhost's (1 h, as tests/integration/test_storage.py
# sets it): the origin's files were written seconds ago, so RFC 9111's
# heuristic (10% of the Last-Modified age) would give 0 s, nothing would be
# kept, and the upload threads skip what the cache does not keep.
# Sets P_GW P_ADMIN P_BUS P_WMET.
gw_conf() {
    P_GW=$(free_port) P_ADMIN=$(free_port) P_BUS=$(free_port) P_WMET=$(free_port)
    rm -rf "$TMP/cache-$2"
    cat >"$1" <<EOF
gateway:
  listen: "127.0.0.1:$P_GW"
  admin_listen: "127.0.0.1:$P_ADMIN"
  threads: 2
  access_log: false
  cache:
    dir: "$TMP/cache-$2"
    memory: 512MB
    disk: 4GB
bus:
  endpoint: "tcp://127.0.0.1:$P_BUS"
  spool_dir: "$SPOOL"
vhosts:
  - name: s.bench
    default: true
    origin: "http://127.0.0.1:$P_ORIGIN"
    cache: { enable: true, override_origin: true, ttl: { res2xx: 1h } }
    storage: { s3: swift, prefix: tier/ }
    dims: { max_source_size: 20MB }
  - name: p.bench
    origin: "http://127.0.0.1:$P_ORIGIN"
    cache: { enable: true, override_origin: true, ttl: { res2xx: 1h } }
    dims: { max_source_size: 20MB }
  - name: b.bench
    origin: "http://127.0.0.1:$P_ORIGIN"
    cache: { enable: true, override_origin: true, ttl: { res2xx: 1h } }
    backup: { s3: swift, prefix: mirror/ }
storgate:
  aws_s3:
    - name: swift
      endpoint: "$S3_ENDPOINT"
      region: $S3_REGION
      access_key: "$AWS_ACCESS_KEY_ID"
      secret_key: "$AWS_SECRET_ACCESS_KEY"
      bucket: $BUCKET
image_worker:
  metrics_listen: "127.0.0.1:$P_WMET"
  jobs: 2
  vips_concurrency: 1
log:
  level: warn
EOF
}
# gw_up TAG [worker]: a fresh gateway (and image worker); sets GW_PID (WK_PID)
gw_up() {
    gw_conf "$TMP/gw-$1.yaml" "$1"
    gateway_start "$TMP/gw-$1.yaml" "$TMP/gateway-$1.log"
    wait_http "http://127.0.0.1:$P_ADMIN/healthz" "$GW_PID" 10 || die "refract-gateway did not start ($(tail -5 "$TMP/gateway-$1.log"))"
    WK_PID=""
    [ "${2:-}" = worker ] || return 0
    "$BIN/refract-image-worker" -c "$TMP/gw-$1.yaml" >>"$TMP/worker-$1.log" 2>&1 &
    WK_PID=$!
    bench_track "$WK_PID"
    local code=""
    for _ in $(seq 100); do # until a resize answers (the worker has connected); on p.bench, never measured
        kill -0 "$WK_PID" 2>/dev/null || die "refract-image-worker exited ($(tail -5 "$TMP/worker-$1.log"))"
        code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: p.bench' "http://127.0.0.1:$P_GW/photo-${SOURCES%% *}.jpg/dims/resize/40x")
        [ "$code" = 200 ] && return 0
        sleep 0.2
    done
    die "refract did not answer a resize with 200 (last: $code; $(tail -3 "$TMP/gateway-$1.log"))"
}
gw_down() {
    [ -n "${WK_PID:-}" ] && bench_stop "$WK_PID"
    bench_stop "$GW_PID"
    WK_PID=""
}
# metric NAME LABEL...: the sum of NAME's samples carrying every label given
# (k="v") on this gateway's admin /metrics
metric() {
    local name=$1
    shift
    curl -s --max-time 5 "http://127.0.0.1:$P_ADMIN/metrics" | awk -v n="$name" -v want="$*" '
        index($0, n "{") == 1 || index($0, n " ") == 1 {
            k = split(want, w, " "); ok = 1
            for (i = 1; i <= k; i++) if (index($0, w[i]) == 0) ok = 0
            if (ok) s += $NF
        } END { printf "%d", s }'
}
dead_note() {
    kill -0 "$GW_PID" 2>/dev/null || echo "; the gateway died: $(tail -5 "$TMP"/gateway-*.log | tr '\n' '|')"
    [ -n "${WK_PID:-}" ] && ! kill -0 "$WK_PID" 2>/dev/null && echo "; the image worker died"
}

# med2 X...: the median, 2 decimals (fmedian prints 1: a cache hit is a fraction of a ms)
med2() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END{ if (!NR) print "nan";
    else printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

status=0
NOISY=""
machine_check

# ---- 1. storage hit vs cache hit vs origin + transform --------------------------------------------
declare -A LAT
if has_part hit; then
    for w in $SOURCES; do
        : >"$TMP/paths-$w" ; : >"$TMP/warm-$w"
        for i in $(seq 0 $((N - 1))); do echo "/photo-$w.jpg/dims/resize/$((100 + i))x" >>"$TMP/paths-$w"; done
        for i in $(seq 0 $((WARM - 1))); do echo "/photo-$w.jpg/dims/resize/$((60 + i))x" >>"$TMP/warm-$w"; done
    done
    TOTAL=$(((N + WARM) * $(wc -w <<<"$SOURCES")))
    echo
    echo "== storage hit: $N distinct resizes per source (+$WARM warm-up), fill by gateway A, then $ROUNDS round(s) on a fresh gateway =="
    t0=$(date +%s)
    gw_up A worker
    for w in $SOURCES; do
        out=$(client fill "$P_GW" s.bench <(cat "$TMP/warm-$w" "$TMP/paths-$w") 2>&1) || die "fill (gateway A, photo-$w): ${out##*FAIL }$(dead_note)"
        LAT[miss.$w]=$(awk '/^FILL/{for(i=2;i<=NF;i++){split($i,a,"="); if(a[1]=="p50")print a[2]}}' <<<"$out")
        echo "   A: photo-$w: $(wc -l <"$TMP/paths-$w") + $WARM URLs made (storage misses: transformed, then uploaded); ${out#FILL }"
    done
    ok=0
    for _ in $(seq 600); do # until every upload is in (2 upload threads; Swift fsyncs each object)
        ok=$(metric refract_storage_uploads_total 'vhost="s.bench"' 'kind="storage"' 'result="ok"')
        [ "$ok" -ge "$TOTAL" ] && break
        kill -0 "$GW_PID" 2>/dev/null || die "gateway A died$(dead_note)"
        sleep 0.2
    done
    bad=$(metric refract_storage_uploads_total 'vhost="s.bench"' 'kind="storage"' 'result="failed"')
    bad=$((bad + $(metric refract_storage_uploads_total 'vhost="s.bench"' 'result="dropped"')))
    skipped=$(metric refract_storage_uploads_total 'vhost="s.bench"' 'result="skipped"')
    [ "$ok" -ge "$TOTAL" ] || die "gateway A uploaded $ok of $TOTAL objects in 120 s (failed/dropped $bad, skipped $skipped)"
    [ "$bad" -eq 0 ] && [ "$skipped" -eq 0 ] || die "gateway A: $bad uploads failed or dropped, $skipped skipped"
    stored=$(client s3count "$S3_ENDPOINT" "$S3_REGION" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" "$BUCKET" tier/ 2>>"$RAW")
    [ "$stored" = "$TOTAL" ] || die "Swift holds $stored objects under tier/, not $TOTAL"
    client s3map "$S3_ENDPOINT" "$S3_REGION" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" "$BUCKET" tier/ \
        >"$TMP/direct" 2>>"$RAW" || die "listing tier/ in Swift failed (see $RAW)"
    [ "$(awk '$1 ~ /^\/photo-/' "$TMP/direct" | wc -l)" = "$TOTAL" ] || die "Swift's tier/ copies do not name their $TOTAL URLs"
    echo "   A: $ok uploads ok, $stored objects in Swift under tier/ ($(($(date +%s) - t0)) s)"
    gw_down

    for r in $(seq "$ROUNDS"); do
        gw_up "R$r" worker
        for w in $SOURCES; do
            o0=$(metric refract_origin_requests_total 'vhost="s.bench"')
            op0=$(metric refract_origin_requests_total 'vhost="p.bench"')
            snap=$(proc_snapshot)
            t1=$(date +%s.%N)
            out=$(client lat "$P_GW" "$P_SWIFT" "$TMP/paths-$w" "$TMP/warm-$w" "$TMP/direct" "$r" "$RAW" 2>&1) ||
                die "round $r photo-$w: ${out##*FAIL }$(dead_note)"
            secs=$(awk -v a="$t1" -v b="$(date +%s.%N)" 'BEGIN{printf "%d", b - a + 0.5}')
            noise=$(noise_since "$snap" "$((secs > 0 ? secs : 1))")
            [ -n "$noise" ] && NOISY="$NOISY r$r/$w:[$noise]"
            hits=$(metric refract_storage_lookups_total 'vhost="s.bench"' 'result="hit"')
            o1=$(metric refract_origin_requests_total 'vhost="s.bench"')
            [ "$o1" -eq "$o0" ] || die "round $r photo-$w: s.bench went to the origin $((o1 - o0)) times during storage hits"
            # (c) must be what the tier saves: one origin fetch per transform
            # (a source kept by the edge cache, cache.sources, would not be)
            op1=$(metric refract_origin_requests_total 'vhost="p.bench"')
            [ $((op1 - op0)) -eq $((N + WARM)) ] ||
                die "round $r photo-$w: p.bench asked the origin $((op1 - op0)) times for $((N + WARM)) transforms"
            line="   round $r photo-$w:"
            for k in storage swift cache transform; do
                p50=$(awk -v k="$k" '$1 == "LAT" && $2 == k {split($4, a, "="); print a[2]}' <<<"$out")
                p90=$(awk -v k="$k" '$1 == "LAT" && $2 == k {split($5, a, "="); print a[2]}' <<<"$out")
                LAT[$k.$w.p50]="${LAT[$k.$w.p50]:-} $p50"
                LAT[$k.$w.p90]="${LAT[$k.$w.p90]:-} $p90"
                line="$line $k $p50/$p90"
            done
            same=$(awk '$1 == "SAME" {print $2 "/" $3}' <<<"$out")
            echo "$line ms (p50/p90); storage-hit bytes = fresh transform's: $same${noise:+  [other processes busy: $noise]}"
        done
        exp=$(((N + WARM) * $(wc -w <<<"$SOURCES")))
        [ "$hits" -eq "$exp" ] || die "round $r: $hits storage hits counted, not $exp"
        gw_down
    done
fi

# ---- 2. backup pipe: gateway CPU for a 100 MiB pass-through, with and without backup --------------
declare -A CPU TICKS SWCPU WALL
if has_part backup; then
    BIG=$((BIG_MB * 1048576))
    head -c "$BIG" /dev/urandom >"$WWW/big.bin"
    for r in $(seq 0 "$BIG_LAST"); do ln "$WWW/big.bin" "$WWW/big-$r.bin"; done
    echo
    echo "== backup: gateway CPU for one $BIG_MB MiB cache miss, b.bench (backup: to Swift) vs p.bench (no backup); $BIG_WARM unmeasured + $BIG_RUNS runs =="
    gw_up BK
    ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
    c0=$(client cpu "$GW_PID")
    sleep 3
    IDLE_MS=$(awk -v a="$c0" -v b="$(client cpu "$GW_PID")" 'BEGIN{printf "%.1f", (b - a) / 3e6}')
    echo "   idle gateway: $IDLE_MS ms CPU per second"
    for r in $(seq 0 "$BIG_LAST"); do
        m=$((r - BIG_WARM + 1)) # the measured run's number (< 1: unmeasured)
        order="p.bench b.bench"
        [ $((m % 2)) -eq 0 ] && order="b.bench p.bench"
        for v in $order; do
            key=mirror/big-$r.bin
            if [ "$v" = b.bench ]; then
                code=$(curl -s -o /dev/null -I -w '%{http_code}' "${PRESIGN[HEAD.$key]}")
                [ "$code" = 404 ] || die "$key is in Swift before its run ($code)"
                up0=$(metric refract_storage_uploads_total 'vhost="b.bench"' 'kind="backup"' 'result="ok"')
            fi
            snap=$(proc_snapshot)
            # shellcheck disable=SC2046
            sw0=$(client cpu $(swift_pids))
            k0=$(ticks "$GW_PID")
            cpu_ticks "$GW_PID" >"$TMP/threads.0"
            c0=$(client cpu "$GW_PID")
            t1=$(date +%s.%N)
            dst=/dev/null
            [ "$r" -eq 0 ] && dst=$TMP/big.out
            out=$(curl -s -o "$dst" -w '%{http_code} %{size_download} %{time_total}' -H "Host: $v" "http://127.0.0.1:$P_GW/big-$r.bin")
            [ "${out%% *}" = 200 ] || die "$v /big-$r.bin answered ${out%% *}$(dead_note)"
            [ "$(cut -d' ' -f2 <<<"$out")" = "$BIG" ] || die "$v /big-$r.bin: $(cut -d' ' -f2 <<<"$out") bytes, not $BIG"
            polls=0
            if [ "$v" = b.bench ]; then # until the object is complete in Swift
                until [ "$(curl -s -o /dev/null -I -w '%{http_code}' "${PRESIGN[HEAD.$key]}")" = 200 ]; do
                    polls=$((polls + 1))
                    [ $polls -lt 1200 ] || die "$key did not appear in Swift within 60 s$(dead_note)"
                    kill -0 "$GW_PID" 2>/dev/null || die "the gateway died$(dead_note)"
                    sleep 0.05
                done
            fi
            wall=$(awk -v a="$t1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b - a}')
            sleep "$SETTLE"
            c1=$(client cpu "$GW_PID")
            k1=$(ticks "$GW_PID")
            cpu_ticks "$GW_PID" >"$TMP/threads.1"
            # shellcheck disable=SC2046
            sw1=$(client cpu $(swift_pids))
            secs=$(awk -v w="$wall" -v s="$SETTLE" 'BEGIN{printf "%d", w + s + 0.5}')
            noise=$(noise_since "$snap" "$((secs > 0 ? secs : 1))")
            if [ "$v" = b.bench ]; then
                up1=$(metric refract_storage_uploads_total 'vhost="b.bench"' 'kind="backup"' 'result="ok"')
                [ "$up1" -eq $((up0 + 1)) ] || die "b.bench: backup uploads ok went $up0 -> $up1"
            fi
            if [ "$r" -eq 0 ]; then
                cmp -s "$TMP/big.out" "$WWW/big.bin" || die "$v /big-0.bin: not the origin's bytes"
                if [ "$v" = b.bench ]; then
                    curl -s -o "$TMP/big.out" "${PRESIGN[GET.$key]}"
                    cmp -s "$TMP/big.out" "$WWW/big.bin" || die "$key in Swift is not the origin's bytes"
                    echo "   checked: both vhosts answer the origin's $BIG_MB MiB byte-exact, and Swift holds the same bytes at $key"
                fi
                rm -f "$TMP/big.out"
            fi
            [ "$m" -lt 1 ] && continue
            [ -n "$noise" ] && NOISY="$NOISY $v/run$m:[$noise]"
            ms=$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.1f", (b - a) / 1e6}')
            swms=$(awk -v a="$sw0" -v b="$sw1" 'BEGIN{printf "%.1f", (b - a) / 1e6}')
            CPU[$v]="${CPU[$v]:-} $ms"
            TICKS[$v]="${TICKS[$v]:-} $((k1 - k0))"
            # per thread: "tid ticks" added up over this vhost's measured runs
            awk 'NR == FNR {b[$1] = $2; next} {print $1, $2 - ($1 in b ? b[$1] : 0)}' "$TMP/threads.0" "$TMP/threads.1" >>"$TMP/threads-$v"
            SWCPU[$v]="${SWCPU[$v]:-} $swms"
            WALL[$v]="${WALL[$v]:-} $wall"
            printf '   run %d  %-8s gateway CPU %7s ms (%3d ticks)  client %5.2f s, done (in Swift) after %5s s  Swift CPU %7s ms%s\n' \
                "$m" "$v" "$ms" "$((k1 - k0))" "$(cut -d' ' -f3 <<<"$out")" "$wall" "$swms" "${noise:+  [other processes busy: $noise]}"
        done
    done
    # The upload threads: those that worked during the backup runs and not at
    # all during the plain ones (the event loops work in both). Their ticks,
    # added up over all the measured backup runs, are exact to one tick.
    UPLOAD_MS=$(awk -v hz="$(getconf CLK_TCK)" -v runs="$BIG_RUNS" '
        FILENAME ~ /p\.bench$/ {p[$1] += $2; next}
        {b[$1] += $2}
        END {for (t in b) if (!(t in p) || p[t] == 0) u += b[t]; printf "%.1f", u * 1000 / hz / runs}' \
        "$TMP/threads-p.bench" "$TMP/threads-b.bench")
    gw_down
fi

# ---- the table ------------------------------------------------------------------------------------
echo
RATIO_OUT=""
if has_part hit; then
    echo "storage hit: medians over $ROUNDS round(s) of each round's p50 / p90, ms (sequential requests, keep-alive; report only):"
    FMT='%-34s %13s %13s %13s %13s | %s\n'
    # shellcheck disable=SC2059
    printf "$FMT" source "storage hit" "Swift GET" "cache hit" "origin+xform" "storage/cache  storage/(origin+xform)  p50 (p90)"
    declare -A M
    for w in $SOURCES; do
        for k in storage swift cache transform; do
            # shellcheck disable=SC2086
            M[$k.50]=$(med2 ${LAT[$k.$w.p50]})
            # shellcheck disable=SC2086
            M[$k.90]=$(med2 ${LAT[$k.$w.p90]})
        done
        rc50=$(fdiv "${M[storage.50]}" "${M[cache.50]}") rc90=$(fdiv "${M[storage.90]}" "${M[cache.90]}")
        rt50=$(fdiv "${M[storage.50]}" "${M[transform.50]}") rt90=$(fdiv "${M[storage.90]}" "${M[transform.90]}")
        label="photo-$w (${SRC_DESC[$w]})"
        # shellcheck disable=SC2059
        printf "$FMT" "$label" "${M[storage.50]}/${M[storage.90]}" "${M[swift.50]}/${M[swift.90]}" \
            "${M[cache.50]}/${M[cache.90]}" "${M[transform.50]}/${M[transform.90]}" \
            "${rc50}x (${rc90}x)     ${rt50}x (${rt90}x)"
        summary "storage hit ${w}px src: storage-hit/cache-hit p50 (report only)" "$rc50" -
        summary "storage hit ${w}px src: storage-hit/(origin+transform) p50 (report only)" "$rt50" -
        summary "storage hit ${w}px src: p50 ms storage | Swift GET | cache | origin+transform" \
            "${M[storage.50]} | ${M[swift.50]} | ${M[cache.50]} | ${M[transform.50]}" -
        RATIO_OUT="$RATIO_OUT$(printf 'storage hit, %s source: storage-hit/cache-hit %sx (p90 %sx), storage-hit/(origin+transform) %sx (p90 %sx); p50 %s | %s | %s ms' \
            "${w}px" "$rc50" "$rc90" "$rt50" "$rt90" "${M[storage.50]}" "${M[cache.50]}" "${M[transform.50]}")"$'\n'
        echo "   (gateway A's first requests, storage misses then uploads: p50 ${LAT[miss.$w]} ms, one pass, not alternated)"
    done
    echo "   Swift GET: the same stored copy fetched from Swift by the client itself (a presigned URL): the part of a storage hit that is Swift's"
fi
if has_part backup; then
    # shellcheck disable=SC2086
    cp_=$(fmedian ${CPU[p.bench]}) cb=$(fmedian ${CPU[b.bench]})
    ratio=$(fdiv "$cb" "$cp_")
    mark=$(awk -v v="$ratio" 'BEGIN{print (v != "nan" && v + 0 <= 1.10) ? "within" : "over"}')
    echo
    echo "backup: gateway CPU for one $BIG_MB MiB miss, median of $BIG_RUNS runs (report only; issue 10: <= 1.10):"
    # shellcheck disable=SC2086
    printf '   plain  (p.bench) %8s ms   runs %s ms; ticks %s\n' "$cp_" "$(echo ${CPU[p.bench]} | tr ' ' /)" "$(echo ${TICKS[p.bench]} | tr ' ' /)"
    # shellcheck disable=SC2086
    printf '   backup (b.bench) %8s ms   runs %s ms; ticks %s; Swift CPU %s ms; done in Swift after %s s\n' "$cb" \
        "$(echo ${CPU[b.bench]} | tr ' ' /)" "$(echo ${TICKS[b.bench]} | tr ' ' /)" "$(fmedian ${SWCPU[b.bench]})" "$(fmedian ${WALL[b.bench]})"
    echo "   backup/plain: ${ratio}x ($mark the issue's 1.10); idle gateway $IDLE_MS ms/s, settle ${SETTLE} s"
    # shellcheck disable=SC2046
    pair=$(med2 $(paste -d' ' <(tr ' ' '\n' <<<"${CPU[b.bench]}" | grep .) <(tr ' ' '\n' <<<"${CPU[p.bench]}" | grep .) |
        awk '{printf "%.3f\n", $1 / $2}'))
    echo "   run by run (backup run r / plain run r), median: ${pair}x; extra CPU backup - plain (medians): $(awk -v a="$cb" -v b="$cp_" 'BEGIN{printf "%.1f", a - b}') ms"
    echo "   the upload threads alone (threads busy in backup runs only): $UPLOAD_MS ms per run = $(fdiv "$UPLOAD_MS" "$cp_") of plain's CPU"
    summary "storage backup ${BIG_MB}MB: gateway CPU backup/plain (report only; issue <= 1.10)" "$ratio" -
    summary "storage backup ${BIG_MB}MB: upload threads' CPU/plain's (report only)" "$(fdiv "$UPLOAD_MS" "$cp_")" -
    # shellcheck disable=SC2086
    summary "storage backup ${BIG_MB}MB: gateway CPU ms plain | backup | upload threads | Swift" \
        "$cp_ | $cb | $UPLOAD_MS | $(fmedian ${SWCPU[b.bench]})" -
    RATIO_OUT="$RATIO_OUT$(printf 'storage backup %d MiB: gateway CPU %s ms with backup vs %s ms without, ratio %sx (issue 10: <= 1.10; report only)' \
        "$BIG_MB" "$cb" "$cp_" "$ratio")"$'\n'
fi
echo
printf '%s' "$RATIO_OUT"

if [ -n "$NOISY$BENCH_NOISE" ]; then
    echo "storage: WARNING: other processes took CPU during the bench, figures are noisy:$NOISY ${BENCH_NOISE}"
    summary "storage: NOISE (other processes busy)" "${NOISY:-$BENCH_NOISE}" -
fi
for f in "$TMP"/gateway-*.log "$TMP"/worker-*.log; do
    [ -s "$f" ] || continue
    { echo "---- $(basename "$f")"; cat "$f"; } >>"$RAW"
    # not news: the readiness probe before the worker connects, the worker leaving at gw_down
    if grep -iE 'error|crit|warn' "$f" | grep -qvE 'no image worker is connected|image worker [0-9A-F]+ gone \(disconnect\) with 0 job'; then
        echo "storage: $(basename "$f") (warnings/errors):"
        grep -iE 'error|crit|warn' "$f" | grep -vE 'no image worker is connected|image worker [0-9A-F]+ gone \(disconnect\) with 0 job' |
            sed 's/^[^ ]* //' | sort | uniq -c | sort -rn | head -5
    fi
done
for l in "$SWIFT_DIR"/log/{proxy,object,container,account}.log; do
    [ -s "$l" ] || continue
    echo "storage: Swift $(basename "$l") (warnings/errors):"
    sed 's/^[^:]*: //' "$l" | sort | uniq -c | sort -rn | head -5
    cat "$l" >>"$RAW"
done
while read -r name pid; do
    kill -0 "$pid" 2>/dev/null || { status=2; echo "storage: Swift's $name died during the run" >&2; }
done <"$SWIFT_DIR/pids"
echo "storage: took $(($(date +%s) - T_START)) s; raw output in $RAW"
exit $status
