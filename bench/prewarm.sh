#!/bin/bash
# bench/prewarm.sh — issue 10's "pre-warm throughput (messages/s) for resize
# jobs vs the same URLs requested directly over HTTP at the same
# concurrency (target >= 0.9x)", on the same 2 CPUs, in one run:
#
#   kafka:  a fresh gateway (empty cache dir) + one image worker (jobs
#           PREWARM_JOBS, vips_concurrency 1) on an nginx origin serving
#           PREWARM_IMAGES small JPEGs; librdkafka's mock cluster
#           (build/bin/refract-kafka-mock, as tests/integration/test_prewarm.py);
#           refract-prewarm with `concurrency: PREWARM_CONCURRENCY` (4) on a
#           topic of 4 partitions, its group joined before anything is
#           published. PREWARM_M (400) distinct resize URLs
#           (/imgI.jpg/dims/resize/Wx: the images in turn, a new width for
#           each pass, so every message is a real transform) are published
#           as plain-text messages spread over the 4 partitions
#           (python3-confluent-kafka), and timed from the first publish until
#           refract-prewarm's refract_prewarm_events_total{outcome="done"}
#           reaches M (each event acknowledged by the mock broker, i.e. on
#           the events topic), polled every 20 ms.
#   direct: a fresh gateway + worker as above; the same M URLs, in the same
#           order, requested by PREWARM_CONCURRENCY client threads (one
#           keep-alive connection each, Python's http.client), each taking
#           the next URL when its answer has arrived; timed from the first
#           request to the last answer.
#
# Messages/s = M / that time. Rounds (PREWARM_ROUNDS, 3) alternate the order
# of the two; the medians count. Also printed, for the kafka side: the rate
# after the first event ((M - 1) / (all - first)), i.e. without Kafka's
# start-up (the mock holds an empty fetch for fetch.wait.max.ms, 500 ms,
# without cutting it short when data arrives, and a fresh producer's first
# event is slow), and its ratio to direct. Checked every round (a failure
# stops the bench, exit 2): every direct answer is a 200 JPEG of the width asked with
# `Cache-Status: ... fwd=miss ... stored`; on the kafka side, the events topic
# holds exactly M events, one per URL, each `done`, HTTP 200, `stored`, the
# dead-letter topic is empty, refract-prewarm retried nothing, the gateway
# counted M background image jobs, and a sample of the URLs is then a cache
# hit. Also printed: the time to the first event (the Kafka start-up share of
# a round), CPU per message of the gateway + worker, of refract-prewarm + the
# mock broker, and of the client (the producer and poller, or the direct
# client threads). A run whose image worker dies (a crash: the bench says how,
# with the kernel's segfault line when dmesg is readable) is discarded and
# made again on a fresh gateway + worker and new topics (up to 3 times), and
# the crash is reported as an ALERT row.
#
#   bench/prewarm.sh                      (~1-2 minutes)
#   PREWARM_M=80 PREWARM_ROUNDS=1 bench/prewarm.sh   (a smoke run)
#   bench/run.sh prewarm                  (adds its rows to the table, report only)
#
# Knobs: PREWARM_M (400), PREWARM_CONCURRENCY (4), PREWARM_ROUNDS (3),
# PREWARM_IMAGES (10), PREWARM_SRC_WIDTH (640: the sources' width),
# PREWARM_JOBS (2: the worker's job slots), PREWARM_SOURCES=1 (the vhost's
# cache.sources on; off by default, as conf/refract.yaml),
# PREWARM_DIRECT_BACKGROUND=1 (the direct clients send
# X-Refract-Priority: background, as refract-prewarm does),
# PREWARM_LOG_LEVEL (warn; debug logs every message, with BENCH_KEEP_TMP=1).
#
# Exit status: 0 when everything ran (whatever the ratio), 2 when a process
# could not start, died, or a message or answer was wrong.
set -u
. "$(dirname "$0")/lib.sh"

M=${PREWARM_M:-400}
CONCURRENCY=${PREWARM_CONCURRENCY:-4}
ROUNDS=${PREWARM_ROUNDS:-3}
IMAGES=${PREWARM_IMAGES:-10}
SRC_WIDTH=${PREWARM_SRC_WIDTH:-640}
JOBS=${PREWARM_JOBS:-2}
SOURCES=${PREWARM_SOURCES:-0}
DIRECT_BG=${PREWARM_DIRECT_BACKGROUND:-0}
PY=/usr/bin/python3 # Debian's, with python3-confluent-kafka
CORPUS=${BENCH_CORPUS_DIR:-$ROOT/build/bench-corpus}
PARTITIONS=4 # refract-kafka-mock creates every topic with 4

bench_init prewarm
for v in M CONCURRENCY ROUNDS IMAGES SRC_WIDTH JOBS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "PREWARM_$v: '${!v}' is not a positive number"
done
[ "$SRC_WIDTH" -ge 200 ] || die "PREWARM_SRC_WIDTH: at least 200 (the widths asked go up to 100 + M / images)"
[ $((100 + (M + IMAGES - 1) / IMAGES)) -lt "$SRC_WIDTH" ] ||
    die "PREWARM_M / PREWARM_IMAGES too large: widths up to $((100 + (M + IMAGES - 1) / IMAGES)) px, sources $SRC_WIDTH px wide"
need nginx curl ss awk pgrep getconf vipsheader vips kcat
[ -x "$PY" ] || die "$PY is missing"
"$PY" -c 'import confluent_kafka' 2>/dev/null || die "confluent_kafka is missing for $PY (python3-confluent-kafka)"
for b in refract-gateway refract-image-worker refract-prewarm refract-kafka-mock; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run make -j2 $b"
done
# The binaries are copied for the run (as bench/storage.sh): each round
# starts a gateway anew, and a rebuild meanwhile must not mix two builds.
mkdir -p "$TMP/bin"
cp "$BIN/refract-gateway" "$BIN/refract-image-worker" "$BIN/refract-prewarm" "$BIN/refract-kafka-mock" "$TMP/bin/" ||
    die "cannot copy the binaries"
BUILD_NOTE="refract-gateway built $(date -u -r "$BIN/refract-gateway" '+%Y-%m-%d %H:%M:%S UTC'), refract-prewarm $(date -u -r "$BIN/refract-prewarm" '+%Y-%m-%d %H:%M:%S UTC')"
BIN=$TMP/bin
RAW=${BENCH_RAW:-$RESULTS_DIR/prewarm-$(date +%Y%m%d-%H%M%S).log}
: >"$RAW"
RAW=$(realpath "$RAW")
CORPUS=$(realpath -m "$CORPUS")
T_START=$(date +%s)
SPOOL=/dev/shm/refract-bench-prewarm-$$ # bus.spool_dir, as conf/refract.yaml
bench_track_dir "$SPOOL"

# ---- the client (python3: confluent_kafka for producing, the standard library otherwise) ---------
cat >"$TMP/client.py" <<'EOF'
import http.client
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request


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


def want_width(path):
    return int(re.search(r"/resize/(\d+)x", path).group(1))


def fail(msg):
    sys.stderr.write("FAIL " + msg + "\n")
    sys.exit(1)


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def kafka(boot, topic, host, paths_file, mport, m):
    """Publishes each path as http://HOST/PATH, spread over the partitions in
    turn, then polls refract-prewarm's metrics until M events are done.
    Prints the times from the first publish (s): published, first event,
    all events; and this process's CPU (s)."""
    from confluent_kafka import Producer
    paths = [l.strip() for l in open(paths_file) if l.strip()]
    p = Producer({"bootstrap.servers": boot, "linger.ms": 1})
    done_key = 'refract_prewarm_events_total{outcome="done"}'
    bad_keys = ('refract_prewarm_messages_total{outcome="dead_letter"}',
                'refract_prewarm_events_total{outcome="failed"}')
    c0 = time.process_time()
    e0 = time.time()
    t0 = time.monotonic()
    for i, path in enumerate(paths):
        p.produce(topic, ("http://%s%s" % (host, path)).encode(), partition=i % %PARTITIONS%)
        p.poll(0)
    if p.flush(30) != 0:
        fail("the producer could not deliver every message in 30 s")
    t_pub = time.monotonic() - t0
    t_first = None
    deadline = time.monotonic() + 300
    while True:
        mt = metrics(mport)
        n = mt.get(done_key, 0)
        if n >= 1 and t_first is None:
            t_first = time.monotonic() - t0
        if n >= m:
            break
        if any(mt.get(k, 0) for k in bad_keys):
            fail("refract-prewarm dead-lettered or failed messages: %s" % {k: mt.get(k) for k in bad_keys})
        if time.monotonic() > deadline:
            fail("only %d of %d events done after 300 s" % (n, m))
        time.sleep(0.02)
    t_all = time.monotonic() - t0
    print("KAFKA published=%.4f first=%.4f all=%.4f cpu=%.4f retried=%d t0_epoch=%.3f" % (
        t_pub, t_first, t_all, time.process_time() - c0, mt.get('refract_prewarm_messages_total{outcome="retried"}', 0),
        e0))


def events(boot, topic, dlq, host, paths_file):
    """The events topic must hold one done/200/stored event per URL; the
    dead-letter topic none."""
    paths = [l.strip() for l in open(paths_file) if l.strip()]
    want = {"http://%s%s" % (host, p) for p in paths}

    def read(t):
        r = subprocess.run(["kcat", "-C", "-b", boot, "-t", t, "-e", "-q", "-J"], capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            fail("kcat -C %s: %s" % (t, r.stderr.strip()))
        return [json.loads(l) for l in r.stdout.splitlines() if l.strip()]

    evs = [json.loads(e["payload"]) for e in read(topic)]
    if len(evs) != len(paths):
        fail("%d events for %d messages" % (len(evs), len(paths)))
    urls = set()
    for e in evs:
        if e.get("status") != "done" or e.get("http_status") != 200:
            fail("event %s" % e)
        if "fwd=miss" not in (e.get("cache_status") or "") or "stored" not in e["cache_status"]:
            fail("event not a stored miss: %s" % e)
        if e.get("attempts") != 1:
            fail("event after %s attempts: %s" % (e.get("attempts"), e))
        urls.add(e["url"])
    if urls != want:
        fail("the events' URLs are not the published ones (%d missing)" % len(want - urls))
    n = len(read(dlq))
    if n:
        fail("%d messages in the dead-letter topic" % n)
    ms = sorted(e["ms"] for e in evs)
    print("EVENTS n=%d ms_p50=%.2f ms_p90=%.2f" % (len(evs), ms[len(ms) // 2], ms[int(len(ms) * 0.9)]))


def direct(port, host, paths_file, conc, background):
    """CONC threads, one keep-alive connection each, take the next URL in
    turn; every answer checked. Prints the wall time (s) and this process's
    CPU (s)."""
    paths = [l.strip() for l in open(paths_file) if l.strip()]
    lock = threading.Lock()
    it = iter(paths)
    errors = []
    hdrs = {"Host": host, "User-Agent": "refract-bench"}
    if background:
        hdrs["X-Refract-Priority"] = "background"
    lat = []

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not errors:
            with lock:
                path = next(it, None)
            if path is None:
                break
            t = time.monotonic()
            try:
                c.request("GET", path, headers=hdrs)
                r = c.getresponse()
                body = r.read()
            except Exception as e:  # noqa: BLE001 (reported, then the bench stops)
                errors.append("%s: %r" % (path, e))
                break
            ms = (time.monotonic() - t) * 1000
            cs = r.getheader("Cache-Status", "")
            sz = jpeg_size(body)
            if r.status != 200 or sz is None or sz[0] != want_width(path):
                errors.append("%s: %d, %s, %s" % (path, r.status, r.getheader("Content-Type"), sz))
            elif "fwd=miss" not in cs or "stored" not in cs:
                errors.append("%s: not a stored miss (Cache-Status %s)" % (path, cs))
            with lock:
                lat.append(ms)
        c.close()

    ths = [threading.Thread(target=worker) for _ in range(conc)]
    c0 = time.process_time()
    t0 = time.monotonic()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    wall = time.monotonic() - t0
    if errors:
        fail("direct: " + errors[0])
    if len(lat) != len(paths):
        fail("direct: %d answers for %d URLs" % (len(lat), len(paths)))
    lat.sort()
    print("DIRECT all=%.4f cpu=%.4f ms_p50=%.2f ms_p90=%.2f" % (wall, time.process_time() - c0, lat[len(lat) // 2],
                                                             lat[int(len(lat) * 0.9)]))


def hits(port, host, paths_file, n):
    """A sample of N URLs must now be cache hits."""
    paths = [l.strip() for l in open(paths_file) if l.strip()]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    step = max(1, len(paths) // n)
    for path in paths[::step][:n]:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        r.read()
        if r.status != 200 or not r.getheader("Cache-Status", "").startswith("refract; hit"):
            fail("%s after the pre-warm: %d, Cache-Status %s" % (path, r.status, r.getheader("Cache-Status")))
    print("HITS %d" % min(n, len(paths[::step])))


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "kafka":
        kafka(a[0], a[1], a[2], a[3], int(a[4]), int(a[5]))
    elif cmd == "events":
        events(a[0], a[1], a[2], a[3], a[4])
    elif cmd == "direct":
        direct(int(a[0]), a[1], a[2], int(a[3]), a[4] == "1")
    elif cmd == "hits":
        hits(int(a[0]), a[1], a[2], int(a[3]))
EOF
sed -i "s/%PARTITIONS%/$PARTITIONS/" "$TMP/client.py"
client() { "$PY" -I "$TMP/client.py" "$@"; }

# ---- sources: PREWARM_IMAGES JPEGs PREWARM_SRC_WIDTH px wide -------------------------------------
WWW=$TMP/www
mkdir -p "$WWW"
photos=()
[ -d "$CORPUS/extract" ] && while IFS= read -r f; do photos+=("$f"); done < <(find "$CORPUS/extract" -type f -iname '*.jpg' -size +500k | sort)
if [ ${#photos[@]} -eq 0 ] && [ -z "${BENCH_NO_DOWNLOAD:-}" ]; then
    deb=$(ls "$CORPUS"/ukui-wallpapers_*.deb 2>/dev/null | head -1)
    if [ -z "$deb" ]; then
        mkdir -p "$CORPUS"
        echo "prewarm: downloading ukui-wallpapers into $CORPUS"
        (cd "$CORPUS" && timeout 120 apt-get download ukui-wallpapers >>"$RAW" 2>&1)
        deb=$(ls "$CORPUS"/ukui-wallpapers_*.deb 2>/dev/null | head -1)
    fi
    [ -n "$deb" ] && dpkg -x "$deb" "$CORPUS/extract" 2>>"$RAW"
    [ -d "$CORPUS/extract" ] && while IFS= read -r f; do photos+=("$f"); done < <(find "$CORPUS/extract" -type f -iname '*.jpg' -size +500k | sort)
fi
if [ ${#photos[@]} -gt 0 ]; then
    CORPUS_NOTE="ukui-wallpapers photos made ${SRC_WIDTH} px wide"
else
    need ffmpeg
    ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=1920x1200 -frames:v 1 "$TMP/gen.png" || die "cannot generate a source image"
    photos=("$TMP/gen.png")
    CORPUS_NOTE="GENERATED FALLBACK (ffmpeg testsrc2 made ${SRC_WIDTH} px wide)"
    echo "prewarm: WARNING: using a $CORPUS_NOTE" >&2
fi
# image i: photo (i mod photos) made SRC_WIDTH - 4i px wide (all distinct files)
for i in $(seq 0 $((IMAGES - 1))); do
    vips thumbnail "${photos[$((i % ${#photos[@]}))]}" "$WWW/img$i.jpg[Q=85]" $((SRC_WIDTH - 4 * i)) ||
        die "vips thumbnail failed"
done
chmod 644 "$WWW"/*
SRC_KB=$(du -sk "$WWW" | awk '{print $1}')
# The URLs: pass k over the images asks for width 100 + k (every URL distinct)
PATHS=$TMP/paths
: >"$PATHS"
for k in $(seq 0 $((M - 1))); do echo "/img$((k % IMAGES)).jpg/dims/resize/$((100 + k / IMAGES))x" >>"$PATHS"; done
HOST=p.bench
echo "prewarm: $BUILD_NOTE (copied to $BIN for the run)"
echo "prewarm: sources: $IMAGES JPEGs ($CORPUS_NOTE; $(vipsheader -f width "$WWW/img0.jpg")x$(vipsheader -f height "$WWW/img0.jpg") ... , $((SRC_KB / IMAGES)) KB each on average); $M URLs /imgI.jpg/dims/resize/Wx, W = 100..$((100 + (M - 1) / IMAGES))"

# ---- servers -----------------------------------------------------------------------------------
P_ORIGIN=$(free_port)
origin_nginx_start "$TMP/origin" "$P_ORIGIN" "$WWW"
wait_http "http://127.0.0.1:$P_ORIGIN/img0.jpg" "$ORIGIN_PID" 15 || die "the nginx origin did not start ($(cat "$TMP/origin/logs/"*.log))"
mapfile -t OR_WORKERS < <(pgrep -P "$ORIGIN_PID")

TOPICS=()
ATTEMPTS=3 # runs of a round's side when its image worker dies (each on new topics)
for r in $(seq "$ROUNDS"); do
    for a in $(seq "$ATTEMPTS"); do TOPICS+=("pw-r$r-a$a" "ev-r$r-a$a" "dlq-r$r-a$a"); done
done
"$BIN/refract-kafka-mock" 1 "${TOPICS[@]}" >"$TMP/kafka-mock.out" 2>"$TMP/kafka-mock.log" &
KM_PID=$!
bench_track "$KM_PID"
BOOT=""
for _ in $(seq 100); do
    BOOT=$(head -1 "$TMP/kafka-mock.out" 2>/dev/null)
    [ -n "$BOOT" ] && break
    kill -0 "$KM_PID" 2>/dev/null || die "refract-kafka-mock exited ($(cat "$TMP/kafka-mock.log"))"
    sleep 0.1
done
[ -n "$BOOT" ] || die "refract-kafka-mock said nothing in 10 s"
echo "prewarm: Kafka: refract-kafka-mock (librdkafka's mock cluster, 1 broker) at $BOOT, topics of $PARTITIONS partitions"

# gw_conf FILE TAG RUN: a gateway with its own ports and an empty cache
# dir, one vhost on the nginx origin with the edge cache on; the TTL is the
# vhost's (1 h: the origin's files were written seconds ago, so RFC 9111's
# heuristic would keep nothing); the prewarm section for RUN (topics
# pw-RUN, ev-RUN, dlq-RUN, group bench-RUN).
# Sets P_GW P_ADMIN P_BUS P_WMET P_PMET.
gw_conf() {
    P_GW=$(free_port) P_ADMIN=$(free_port) P_BUS=$(free_port) P_WMET=$(free_port) P_PMET=$(free_port)
    rm -rf "$TMP/cache-$2"
    local src=""
    [ "$SOURCES" = 1 ] && src=", sources: true"
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
  - name: $HOST
    default: true
    origin: "http://127.0.0.1:$P_ORIGIN"
    cache: { enable: true, override_origin: true, ttl: { res2xx: 1h }$src }
    dims: { max_source_size: 20MB }
image_worker:
  metrics_listen: "127.0.0.1:$P_WMET"
  jobs: $JOBS
  vips_concurrency: 1
prewarm:
  brokers: "$BOOT"
  topic: pw-$3
  events_topic: ev-$3
  dead_letter_topic: dlq-$3
  group: bench-$3
  gateway_url: "http://127.0.0.1:$P_GW"
  concurrency: $CONCURRENCY
  retries: 3
  session_timeout: 3s
  metrics_listen: "127.0.0.1:$P_PMET"
log:
  level: ${PREWARM_LOG_LEVEL:-warn}
EOF
}
# gw_up TAG RUN: a fresh gateway + image worker, ready (one resize of a
# URL outside the measured set answered: the worker is connected); sets
# GW_PID WK_PID
gw_up() {
    gw_conf "$TMP/gw-$1.yaml" "$1" "$2"
    gateway_start "$TMP/gw-$1.yaml" "$TMP/gateway-$1.log"
    wait_http "http://127.0.0.1:$P_ADMIN/healthz" "$GW_PID" 10 || die "refract-gateway did not start ($(tail -5 "$TMP/gateway-$1.log"))"
    "$BIN/refract-image-worker" -c "$TMP/gw-$1.yaml" >>"$TMP/worker-$1.log" 2>&1 &
    WK_PID=$!
    bench_track "$WK_PID"
    local code=""
    for _ in $(seq 100); do
        kill -0 "$WK_PID" 2>/dev/null || die "refract-image-worker exited ($(tail -5 "$TMP/worker-$1.log"))"
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" "http://127.0.0.1:$P_GW/img0.jpg/dims/resize/40x")
        [ "$code" = 200 ] && return 0
        sleep 0.2
    done
    die "refract did not answer a resize with 200 (last: $code; $(tail -3 "$TMP/gateway-$1.log"))"
}
PW_PID=""
gw_down() {
    [ -n "$PW_PID" ] && bench_stop "$PW_PID"
    bench_stop "$WK_PID"
    bench_stop "$GW_PID"
    PW_PID=""
}
# metric PORT NAME LABEL...: the sum of NAME's samples carrying every label given
metric() {
    local port=$1 name=$2
    shift 2
    curl -s --max-time 5 "http://127.0.0.1:$port/metrics" | awk -v n="$name" -v want="$*" '
        index($0, n "{") == 1 || index($0, n " ") == 1 {
            k = split(want, w, " "); ok = 1
            for (i = 1; i <= k; i++) if (index($0, w[i]) == 0) ok = 0
            if (ok) s += $NF
        } END { printf "%d", s }'
}
dead_note() {
    kill -0 "$GW_PID" 2>/dev/null || echo "; the gateway died: $(tail -5 "$TMP"/gateway-*.log | tr '\n' '|')"
    kill -0 "$WK_PID" 2>/dev/null || echo "; the image worker died"
    [ -n "$PW_PID" ] && ! kill -0 "$PW_PID" 2>/dev/null && echo "; refract-prewarm died: $(tail -5 "$TMP"/prewarm-*.log | tr '\n' '|')"
    kill -0 "$KM_PID" 2>/dev/null || echo "; the Kafka mock died"
}
# cpu_ms PID...: their CPU (all threads, living or gone) in ms, from /proc/PID/stat
cpu_ms() {
    local p hz
    hz=$(getconf CLK_TCK)
    for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0; done |
        awk -v hz="$hz" '{t += $1} END {printf "%d", t * 1000 / hz}'
}
per_msg() { awk -v a="$1" -v b="$2" -v n="$M" 'BEGIN{printf "%.2f", (b - a) / n}'; }

status=0
NOISY=""
machine_check
echo
echo "== prewarm: $M distinct resizes, refract-prewarm (concurrency $CONCURRENCY) vs $CONCURRENCY direct HTTP clients, fresh gateway + worker (jobs $JOBS) each; $ROUNDS rounds =="
declare -A RATE FIRST CPUS STEADY
CRASHES=""
# worker_crash: when the image worker has died, says how (its exit status,
# and the kernel's segfault line when dmesg can be read) and returns 0
worker_crash() {
    kill -0 "$WK_PID" 2>/dev/null && return 1
    local st=0 k=""
    wait "$WK_PID" 2>/dev/null
    st=$?
    # the kernel's last segfault line of an image worker, if it is from the last minute
    k=$(dmesg 2>/dev/null | grep -E "refract-image-w\[[0-9]+\]: segfault" | tail -1 |
        awk -v now="$(cut -d' ' -f1 /proc/uptime)" '{t = $0; sub(/^\[ */, "", t); sub(/\].*/, "", t)
            if (t + 60 >= now) { sub(/^\[[^]]*\] /, ""); print }}')
    CRASH_NOTE="exit status $st$([ "$st" -gt 128 ] && echo " (signal $((st - 128)))")${k:+; kernel: ${k%% likely*}}"
    return 0
}
# run_side SIDE ROUND TAG: one measured run of SIDE (kafka | direct) on a
# fresh gateway + worker; TAG names its topics (a rerun gets new ones).
# Returns 3 when the image worker died (CRASH_NOTE says how); anything else
# wrong stops the bench.
run_side() {
    local side=$1 r=$2 tag=$3 parts bg0 bg1 snap g0 g1 k0 k1 o0 o1 t1 secs noise out line rate ccpu ev hits steady f
    gw_up "$side-$tag" "$tag"
    if [ "$side" = kafka ]; then
        "$BIN/refract-prewarm" -c "$TMP/gw-$side-$tag.yaml" >>"$TMP/prewarm-$tag.log" 2>&1 &
        PW_PID=$!
        bench_track "$PW_PID"
        parts=0
        for _ in $(seq 300); do # the group joined and the 4 partitions assigned (the mock takes ~3 s)
            kill -0 "$PW_PID" 2>/dev/null || die "refract-prewarm exited ($(tail -5 "$TMP/prewarm-$tag.log"))"
            parts=$(metric "$P_PMET" refract_prewarm_partitions)
            [ "$parts" = "$PARTITIONS" ] && break
            sleep 0.1
        done
        [ "$parts" = "$PARTITIONS" ] || die "refract-prewarm was not assigned the $PARTITIONS partitions in 30 s ($parts)"
        bg0=$(metric "$P_ADMIN" refract_bus_background_jobs_total 'service="image"' 'event="submitted"')
    fi
    snap=$(proc_snapshot)
    g0=$(cpu_ms "$GW_PID" "$WK_PID")
    k0=$([ "$side" = kafka ] && cpu_ms "$PW_PID" "$KM_PID" || echo 0)
    o0=$(cpu_ms "${OR_WORKERS[@]}")
    t1=$(date +%s.%N)
    if [ "$side" = kafka ]; then
        out=$(client kafka "$BOOT" "pw-$tag" "$HOST" "$PATHS" "$P_PMET" "$M" 2>&1)
    else
        out=$(client direct "$P_GW" "$HOST" "$PATHS" "$CONCURRENCY" "$DIRECT_BG" 2>&1)
    fi || {
        echo "---- round $r $side ($tag) failed: $out" >>"$RAW"
        worker_crash && return 3
        die "round $r $side: ${out##*FAIL }$(dead_note)"
    }
    secs=$(awk -v a="$t1" -v b="$(date +%s.%N)" 'BEGIN{printf "%d", b - a + 0.5}')
    g1=$(cpu_ms "$GW_PID" "$WK_PID")
    k1=$([ "$side" = kafka ] && cpu_ms "$PW_PID" "$KM_PID" || echo 0)
    o1=$(cpu_ms "${OR_WORKERS[@]}")
    noise=$(foreign_cpu "$snap" "$((secs > 0 ? secs : 1))")
    echo "---- round $r $side ($tag): $out" >>"$RAW"
    line=$(grep -E '^(KAFKA|DIRECT) ' <<<"$out" | tail -1)
    [ -n "$line" ] || die "round $r $side: the client printed no result: $out"
    declare -A kv=()
    for f in ${line#* }; do kv[${f%%=*}]=${f#*=}; done
    rate=$(awk -v m="$M" -v t="${kv[all]}" 'BEGIN{printf "%.1f", m / t}')
    ccpu=$(awk -v c="${kv[cpu]}" -v n="$M" 'BEGIN{printf "%.2f", c * 1000 / n}')
    if [ "$side" = kafka ]; then
        ev=$(client events "$BOOT" "ev-$tag" "dlq-$tag" "$HOST" "$PATHS" 2>&1) || die "round $r events: ${ev##*FAIL }"
        [ "${kv[retried]}" = 0 ] || { worker_crash && return 3; die "round $r kafka: refract-prewarm retried ${kv[retried]} requests"; }
        bg1=$(metric "$P_ADMIN" refract_bus_background_jobs_total 'service="image"' 'event="submitted"')
        [ $((bg1 - bg0)) -eq "$M" ] || die "round $r kafka: $((bg1 - bg0)) background image jobs for $M messages"
        hits=$(client hits "$P_GW" "$HOST" "$PATHS" 20 2>&1) || die "round $r kafka: ${hits##*FAIL }"
        worker_crash && return 3
        steady=$(awk -v m="$M" -v a="${kv[first]}" -v b="${kv[all]}" 'BEGIN{printf "%.1f", (m - 1) / (b - a)}')
        printf '   round %d  kafka   %7.1f msg/s  (%.2f s: published in %.3f s, first event %.3f s; %s msg/s after the first event); CPU ms/msg: gateway+worker %s, prewarm+mock %s, producer+poller %s, origin %s; %s%s\n' \
            "$r" "$rate" "${kv[all]}" "${kv[published]}" "${kv[first]}" "$steady" "$(per_msg "$g0" "$g1")" \
            "$(per_msg "$k0" "$k1")" "$ccpu" "$(per_msg "$o0" "$o1")" "${ev#EVENTS }, ${hits#HITS } sampled URLs now hits" \
            "${noise:+  [other processes busy: $noise]}"
        FIRST[kafka]="${FIRST[kafka]:-} ${kv[first]}"
        STEADY[kafka]="${STEADY[kafka]:-} $steady"
        CPUS[kafka.gw]="${CPUS[kafka.gw]:-} $(per_msg "$g0" "$g1")"
        CPUS[kafka.pw]="${CPUS[kafka.pw]:-} $(per_msg "$k0" "$k1")"
    else
        worker_crash && return 3
        printf '   round %d  direct  %7.1f msg/s  (%.2f s; answer p50 %s ms, p90 %s ms); CPU ms/msg: gateway+worker %s, client %s, origin %s%s\n' \
            "$r" "$rate" "${kv[all]}" "${kv[ms_p50]}" "${kv[ms_p90]}" "$(per_msg "$g0" "$g1")" "$ccpu" "$(per_msg "$o0" "$o1")" \
            "${noise:+  [other processes busy: $noise]}"
        CPUS[direct.gw]="${CPUS[direct.gw]:-} $(per_msg "$g0" "$g1")"
    fi
    [ -n "$noise" ] && NOISY="$NOISY $side/r$r:[$noise]"
    RATE[$side]="${RATE[$side]:-} $rate"
    gw_down
}

for r in $(seq "$ROUNDS"); do
    order="kafka direct"
    [ $((r % 2)) -eq 0 ] && order="direct kafka"
    for side in $order; do
        for a in $(seq "$ATTEMPTS"); do
            run_side "$side" "$r" "r$r-a$a" && continue 2
            # the image worker died (run_side returns 3; anything else has stopped the bench)
            echo "   round $r  $side   ALERT: the image worker died during the run ($CRASH_NOTE); the run is discarded$([ "$a" -lt "$ATTEMPTS" ] && echo " and made again on a fresh gateway + worker")"
            CRASHES="$CRASHES round $r $side: $CRASH_NOTE;"
            gw_down
        done
        die "round $r $side: the image worker died in each of $ATTEMPTS attempts"
    done
done

# ---- the table ----------------------------------------------------------------------------------
# shellcheck disable=SC2086
rk=$(fmedian ${RATE[kafka]}) rd=$(fmedian ${RATE[direct]})
ratio=$(fdiv "$rk" "$rd")
# shellcheck disable=SC2086
pair=$(paste -d' ' <(tr ' ' '\n' <<<"${RATE[kafka]}" | grep .) <(tr ' ' '\n' <<<"${RATE[direct]}" | grep .) |
    awk '{printf "%.3f\n", $1 / $2}' | sort -g | awk '{v[NR] = $1} END{printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
mark=$(awk -v v="$ratio" 'BEGIN{print (v != "nan" && v + 0 >= 0.9) ? "PASS" : "BELOW"}')
echo
echo "prewarm: medians of $ROUNDS rounds, $M distinct resizes, concurrency $CONCURRENCY (report only; issue 10: >= 0.9):"
# shellcheck disable=SC2086
printf '   refract-prewarm (Kafka)  %7s msg/s   rounds %s; first event after %s s (median)\n' "$rk" "$(echo ${RATE[kafka]} | tr ' ' /)" "$(fmedian ${FIRST[kafka]})"
# shellcheck disable=SC2086
printf '   direct HTTP              %7s msg/s   rounds %s\n' "$rd" "$(echo ${RATE[direct]} | tr ' ' /)"
# shellcheck disable=SC2086
rs=$(fmedian ${STEADY[kafka]})
sratio=$(fdiv "$rs" "$rd")
# shellcheck disable=SC2086
echo "   prewarm/direct: ${ratio}x ($mark the issue's 0.9); round by round, median: ${pair}x; gateway+worker CPU ms/msg: prewarm $(fmedian ${CPUS[kafka.gw]}), direct $(fmedian ${CPUS[direct.gw]}); refract-prewarm + mock broker $(fmedian ${CPUS[kafka.pw]}) ms/msg"
# shellcheck disable=SC2086
echo "   after the first event (the rate once Kafka's start-up is past; the mock holds an empty fetch 500 ms): $rs msg/s (rounds $(echo ${STEADY[kafka]} | tr ' ' /)), ${sratio}x direct"
summary "prewarm: messages/s refract-prewarm/direct HTTP (report only; issue >= 0.9)" "$ratio" -
summary "prewarm: msg/s after the first event/direct HTTP (report only)" "$sratio" -
summary "prewarm: messages/s refract-prewarm | direct HTTP (c$CONCURRENCY, $M resizes)" "$rk | $rd" -
echo
printf 'prewarm %d resizes, concurrency %d: %s msg/s through Kafka vs %s msg/s direct, ratio %sx (issue 10: >= 0.9; report only)\n' \
    "$M" "$CONCURRENCY" "$rk" "$rd" "$ratio"

if [ -n "$CRASHES" ]; then
    echo "prewarm: ALERT: the image worker died during a run (discarded and made again):$CRASHES"
    summary "prewarm: ALERT image worker died" "$CRASHES" -
fi
if [ -n "$NOISY$BENCH_NOISE" ]; then
    echo "prewarm: WARNING: other processes took CPU during the bench, figures are noisy:$NOISY ${BENCH_NOISE}"
    summary "prewarm: NOISE (other processes busy)" "${NOISY:-$BENCH_NOISE}" -
fi
for f in "$TMP"/gateway-*.log "$TMP"/worker-*.log "$TMP"/prewarm-*.log "$TMP/kafka-mock.log"; do
    [ -s "$f" ] || continue
    { echo "---- $(basename "$f")"; cat "$f"; } >>"$RAW"
    # not news: the readiness probe before the worker connects, the worker leaving at gw_down
    if grep -iE 'error|crit|warn' "$f" | grep -qvE 'no image worker is connected|image worker [0-9A-F]+ gone \(disconnect\) with 0 job'; then
        echo "prewarm: $(basename "$f") (warnings/errors):"
        grep -iE 'error|crit|warn' "$f" | grep -vE 'no image worker is connected|image worker [0-9A-F]+ gone \(disconnect\) with 0 job' |
            sed 's/^[^ ]* //' | sort | uniq -c | sort -rn | head -5
    fi
done
kill -0 "$KM_PID" 2>/dev/null || { status=2; echo "prewarm: the Kafka mock died during the run" >&2; }
kill -0 "$ORIGIN_PID" 2>/dev/null || { status=2; echo "prewarm: the nginx origin died during the run" >&2; }
echo "prewarm: took $(($(date +%s) - T_START)) s; raw output in $RAW"
exit $status
