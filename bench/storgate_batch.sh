#!/bin/bash
# bench/storgate_batch.sh — storgate's batch runs (refract-storgate-scheduler,
# issue 9): items per second for many small files, local directory to local
# directory, against GNU tools and libvips's CLI doing the same work on the
# same 2 CPUs, in one run:
#   1. copy: SGBATCH_FILES (10,000) files of 4 KiB in 20 directories; workflow
#      `function: null` (a copy), jobs 2. Peer: find | xargs -P2 -n 500 cp --parents.
#   2. webp: SGBATCH_IMAGES (2,000) 320x240 JPEGs (ffmpeg testsrc2, cached in
#      build/bench-corpus/) in 20 directories; workflow `/dims/format/webp` on
#      one refract-image-worker (jobs 2, vips_concurrency 1) connected to the
#      scheduler's bus_endpoint. Peer: vipsthumbnail, 2 processes at a time,
#      one per directory (100 files each), writing WebP at the same size.
#   3. dist: the copy workflow on SGBATCH_DIST_FILES (500) of those files with
#      two scheduler nodes (jobs 1 each) sharing a redis:// lease (a
#      redis-server of the bench's own): the leader hands the items out
#      through Redis. Ratio: two nodes / one node without a lease, jobs 2
#      (case 1's refract figure). Also measured, alternating with the two
#      nodes on the same files: one node with a redis:// lease, jobs 2 (the
#      same hand-out path, one process), which tells whether the cost is
#      Redis's hand-out or having two nodes; and two nodes (jobs 1 each)
#      sharing a file:// lease, the leader handing the items out through
#      files beside it (LEASE.dist/).
# A refract round is timed from SIGUSR1 (which starts the run) until
# refract_storgate_items_total{outcome="done"} (the sum over the nodes) has
# grown by the number of files, polled every SGBATCH_POLL_MS (50) ms from bash
# itself (/dev/tcp, no process started per poll); a peer round is the wall
# time of its command. Every round's outputs are checked (count, bytes of a
# sample: copies byte-exact; WebPs decoded 320x240 by vipsheader, and compared
# with `vips copy`'s WebP of the same file) and removed before the next.
# Rounds alternate the order of refract and its peer; medians count. There is
# no target (issue 9 states none): the ratios are reported, higher is better.
#
#   bench/storgate_batch.sh                      (~3-4 minutes)
#   SGBATCH_FILES=200 SGBATCH_IMAGES=100 SGBATCH_DIST_FILES=60 SGBATCH_ROUNDS=1 bench/storgate_batch.sh   (a smoke run)
#   bench/run.sh storgate_batch                  (adds its rows to the table)
#
# Knobs: SGBATCH_CASES ("copy webp dist"), SGBATCH_ROUNDS (3), SGBATCH_FILES
# (10000), SGBATCH_DIRS (20), SGBATCH_FILE_BYTES (4096), SGBATCH_IMAGES (2000),
# SGBATCH_IMAGE_SIZE (320x240), SGBATCH_DIST_FILES (500), SGBATCH_CHUNK
# (chunkSize, 1000), SGBATCH_POLL_MS (50), SGBATCH_STALL (s without progress
# before a round fails, 60).
#
# Exit status: 0 when every contender ran (whatever the ratios), 2 when one
# could not start, died, lost items or wrote wrong outputs.
set -u
. "$(dirname "$0")/lib.sh"

CASES=${SGBATCH_CASES:-copy webp dist}
ROUNDS=${SGBATCH_ROUNDS:-3}
FILES=${SGBATCH_FILES:-10000}
DIRS=${SGBATCH_DIRS:-20}
FILE_BYTES=${SGBATCH_FILE_BYTES:-4096}
IMAGES=${SGBATCH_IMAGES:-2000}
IMAGE_SIZE=${SGBATCH_IMAGE_SIZE:-320x240}
DIST_FILES=${SGBATCH_DIST_FILES:-500}
CHUNK=${SGBATCH_CHUNK:-1000}
POLL_MS=${SGBATCH_POLL_MS:-50}
STALL=${SGBATCH_STALL:-60}
SCHED=$BIN/refract-storgate-scheduler
WORKER=$BIN/refract-image-worker

bench_init storgate_batch
for v in ROUNDS FILES DIRS FILE_BYTES IMAGES DIST_FILES CHUNK POLL_MS STALL; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "SGBATCH_$v: '${!v}' is not a positive number"
done
[[ $IMAGE_SIZE =~ ^([1-9][0-9]*)x([1-9][0-9]*)$ ]] || die "SGBATCH_IMAGE_SIZE: '$IMAGE_SIZE' is not WxH"
IMG_W=${BASH_REMATCH[1]}
{ [ $((FILES % DIRS)) -eq 0 ] && [ $((IMAGES % DIRS)) -eq 0 ]; } ||
    die "SGBATCH_FILES ($FILES) and SGBATCH_IMAGES ($IMAGES) must be multiples of SGBATCH_DIRS ($DIRS)"
[ "$DIST_FILES" -le "$FILES" ] || die "SGBATCH_DIST_FILES ($DIST_FILES) > SGBATCH_FILES ($FILES)"
for c in $CASES; do [[ $c =~ ^(copy|webp|dist)$ ]] || die "SGBATCH_CASES: unknown case '$c' (copy webp dist)"; done
has_case() { [[ " $CASES " == *" $1 "* ]]; }
need curl ss awk cmp find xargs cp split
has_case webp && need ffmpeg vips vipsheader vipsthumbnail
has_case dist && need redis-server redis-cli
[ -x "$SCHED" ] || die "$SCHED is missing: run make"
has_case webp && { [ -x "$WORKER" ] || die "$WORKER is missing: run make"; }
RAW=${BENCH_RAW:-$RESULTS_DIR/storgate_batch-$(date +%Y%m%d-%H%M%S).log}
: >"$RAW"
RAW=$(realpath "$RAW")
T_START=$(date +%s)
status=0

# ---- corpora ----------------------------------------------------------------------------------
PER_DIR=$((FILES / DIRS))
dname() { printf 'd%02d' "$1"; }
if has_case copy || has_case dist; then # FILES random files of FILE_BYTES, PER_DIR per directory
    for d in $(seq 0 $((DIRS - 1))); do
        mkdir -p "$TMP/copy/src/in/$(dname "$d")"
        head -c $((PER_DIR * FILE_BYTES)) /dev/urandom |
            split -b "$FILE_BYTES" -a 5 -d - "$TMP/copy/src/in/$(dname "$d")/f"
    done
    [ "$(find "$TMP/copy/src/in" -type f | wc -l)" = "$FILES" ] || die "the copy corpus is not $FILES files"
fi
if has_case dist; then # the first DIST_FILES of them (sorted), hard links
    mkdir -p "$TMP/dist/src/in"
    (cd "$TMP/copy/src/in" && find . -type f | sort | head -n "$DIST_FILES" | xargs cp -l --parents -t "$TMP/dist/src/in") ||
        die "could not link the dist corpus"
fi
if has_case webp; then # IMAGES JPEGs made once by ffmpeg (testsrc2: every frame differs), kept
    CORPUS=$ROOT/build/bench-corpus/storgate-jpeg-${IMAGE_SIZE}-$IMAGES
    if [ "$(find "$CORPUS" -name '*.jpg' 2>/dev/null | wc -l)" != "$IMAGES" ]; then
        echo "storgate_batch: making $IMAGES ${IMAGE_SIZE} JPEGs (ffmpeg testsrc2) into $CORPUS"
        rm -rf "$CORPUS.tmp" && mkdir -p "$CORPUS.tmp" &&
            ffmpeg -v error -nostdin -f lavfi -i "testsrc2=size=$IMAGE_SIZE:rate=25" -frames:v "$IMAGES" -q:v 4 \
                "$CORPUS.tmp/i%05d.jpg" >>"$RAW" 2>&1 &&
            rm -rf "$CORPUS" && mv "$CORPUS.tmp" "$CORPUS" || die "ffmpeg could not make the JPEG corpus (see $RAW)"
    fi
    IPD=$((IMAGES / DIRS))
    i=0
    for f in $(find "$CORPUS" -name '*.jpg' | sort); do
        d="$TMP/webp/src/in/$(dname $((i / IPD)))"
        [ $((i % IPD)) -eq 0 ] && mkdir -p "$d"
        cp "$f" "$d/"
        i=$((i + 1))
    done
    JPEG_KB=$(du -sk "$TMP/webp/src/in" | awk '{print $1}')
    v=$(vipsheader -f width "$(find "$TMP/webp/src/in" -name '*.jpg' | head -1)")
    [ "$v" = "$IMG_W" ] || die "the corpus JPEGs are $v px wide, not $IMG_W"
fi

# ---- configurations ---------------------------------------------------------------------------
P_GW=$(free_port) # gateway.listen and bus.endpoint: needed for the file to load, never bound
P_BUS=$(free_port)
# sg_conf FILE NAME METRICS_PORT DIR FUNCTION JOBS [LEASE_URL] [BUS_ENDPOINT]: one
# scheduler's configuration: bucket b, its root mount DIR/src, the hidden /out
# mount DIR/out; one onBatch over /in (started by SIGUSR1 only: its schedule is
# 1 January), throttling off (it samples the whole machine's CPU, which this
# bench keeps busy), no webhooks, sources left in place.
sg_conf() {
    local file=$1 name=$2 mport=$3 dir=$4 fn=$5 jobs=$6 lease=${7:-} ep=${8:-} save
    if [ "$fn" = null ]; then
        save="/out/{{ item.path | relpath('/in') }}"
    else # d00/i00001.jpg -> /out/d00/i00001.webp (the peer's names)
        save="/out/{{ item.path | relpath('/in') | dirname }}/{{ item.path | basename | rsplit('.', 1)[0] }}.webp"
        fn="\"$fn\""
    fi
    local l_connect="" l_lease="" l_ep=""
    [ -n "$ep" ] && l_connect=$'\n'"  connect: [\"$ep\"]" l_ep=$'\n'"  bus_endpoint: \"$ep\""
    [ -n "$lease" ] && l_lease=$'\n'"  distribution: {leader: {url: \"$lease\"}}"
    mkdir -p "$dir/out" "$TMP/state-$name"
    cat >"$file" <<EOF
gateway:
  listen: "127.0.0.1:$P_GW"
bus:
  endpoint: "tcp://127.0.0.1:$P_BUS"$l_connect
storgate:
  throttling: {enable: false}$l_lease
  buckets:
    - meta: {name: b}
      mounts:
        - originPath: "$dir/src"
        - mountPoint: /out
          originPath: "$dir/out"
          expose: false
      events:
        onBatch:
          - enable: true
            path: /in
            schedule: "0 0 1 1 *"
            chunkSize: $CHUNK
            trigger: {workflow: w}
      workflows:
        - name: w
          tasks:
            - function: $fn
              savePath: "$save"
              whenExist: overwrite
              timeout: 60
          onComplete: {src: {op: none}}
storgate_scheduler:
  name: $name
  metrics_listen: "127.0.0.1:$mport"
  state_dir: "$TMP/state-$name"
  jobs: $jobs$l_ep
image_worker:
  jobs: 2
  vips_concurrency: 1
log:
  level: warn
EOF
    "$SCHED" -t -c "$file" >>"$RAW" 2>&1 || die "refract-storgate-scheduler rejects $file: $(tail -3 "$RAW")"
}

# sched_start CONF NAME PORT: starts a scheduler (log $TMP/NAME.log), waits for
# its /healthz; sets S_PID
declare -A PID_OF
sched_start() {
    "$SCHED" -c "$1" >>"$TMP/$2.log" 2>&1 &
    S_PID=$!
    bench_track "$S_PID"
    PID_OF[$2]=$S_PID
    wait_http "http://127.0.0.1:$3/healthz" "$S_PID" 10 || die "scheduler $2 did not start: $(tail -5 "$TMP/$2.log")"
}

# metric_sum NAME_AND_LABELS PORT...: sets M_SUM, the sum over the ports'
# /metrics of the samples whose line starts with NAME_AND_LABELS. Plain bash
# (/dev/tcp, HTTP/1.0): polling starts no process that would take CPU from
# the contenders.
metric_sum() {
    local want=$1 port fd line v
    shift
    M_SUM=0
    for port in "$@"; do
        exec {fd}<>"/dev/tcp/127.0.0.1/$port" || return 1
        printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&"$fd"
        while IFS= read -r line <&"$fd"; do
            if [[ $line == "$want"* ]]; then
                v=${line##* }
                v=${v%$'\r'}
                M_SUM=$((M_SUM + ${v%%.*}))
            fi
        done
        exec {fd}<&-
    done
}
DONE='refract_storgate_items_total{bucket="b",workflow="w",outcome="done"} '
ABORTED='refract_storgate_items_total{bucket="b",workflow="w",outcome="aborted"} '
COMPLETED='refract_storgate_batches_total{bucket="b",outcome="completed"} '

# sleep_poll: sleeps POLL_MS without starting a process (read -t on a FIFO
# nothing writes to)
mkfifo "$TMP/poll.fifo"
exec {POLL_FD}<>"$TMP/poll.fifo"
POLL_S=$(awk -v m="$POLL_MS" 'BEGIN{printf "%.3f", m / 1000}')
sleep_poll() { read -r -t "$POLL_S" -u "$POLL_FD" _; }

# children_ms: sets CH_MS, the CPU (user + system) of this shell's waited-for
# children so far (`times` in this shell: a subshell would see its own)
children_ms() {
    local u s
    times >"$TMP/times.out"
    { read -r _ _; read -r u s; } <"$TMP/times.out"
    CH_MS=$(awk -v u="$u" -v s="$s" 'function ms(x, a) { split(x, a, "m"); return (a[1] * 60 + a[2]) * 1000 }
        BEGIN{ printf "%d", ms(u) + ms(s) }')
}

# refract_round N "SIGNAL_PIDS" "CPU_PIDS" PORT...: one batch run: SIGUSR1 to
# every scheduler node, timed until the nodes' done items grew by N; then
# waits for the run's end (batches completed) so that the next round starts
# on a quiet scheduler. Sets R_SECS, R_CPU_MS (CPU of CPU_PIDS: the nodes,
# the worker, redis-server).
refract_round() {
    local n=$1 sig=$2 pids=$3
    shift 3
    local ports=("$@") base abort0 comp0 t0 t1 c0 c1 last last_t now
    metric_sum "$DONE" "${ports[@]}" || return 1
    base=$M_SUM
    metric_sum "$ABORTED" "${ports[@]}"
    abort0=$M_SUM
    metric_sum "$COMPLETED" "${ports[@]}"
    comp0=$M_SUM
    # shellcheck disable=SC2086
    c0=$(cpu_ticks $pids)
    t0=${EPOCHREALTIME/./}
    # shellcheck disable=SC2086
    kill -USR1 $sig || return 1
    last=$base last_t=$t0
    while :; do
        metric_sum "$DONE" "${ports[@]}" || { echo "a node stopped answering /metrics" >&2; return 1; }
        now=${EPOCHREALTIME/./}
        [ $((M_SUM - base)) -ge "$n" ] && break
        if [ "$M_SUM" != "$last" ]; then
            last=$M_SUM last_t=$now
        elif [ $((now - last_t)) -gt $((STALL * 1000000)) ]; then
            echo "no item done for ${STALL}s ($((M_SUM - base)) of $n)" >&2
            return 1
        fi
        sleep_poll
    done
    t1=$now
    # shellcheck disable=SC2086
    c1=$(cpu_ticks $pids)
    R_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b - a) / 1e6}')
    R_CPU_MS=$(cpu_total_ms "$c0" "$c1")
    metric_sum "$ABORTED" "${ports[@]}"
    [ "$M_SUM" = "$abort0" ] || { echo "$((M_SUM - abort0)) item(s) aborted" >&2; return 1; }
    for _ in $(seq 300); do
        metric_sum "$COMPLETED" "${ports[@]}"
        [ "$M_SUM" -gt "$comp0" ] && return 0
        sleep 0.1
    done
    echo "the run did not complete within 30 s of its last item" >&2
    return 1
}

# peer_round CMD...: runs the peer's command, timed; sets R_SECS, R_CPU_MS
peer_round() {
    local t0 t1 c0
    children_ms
    c0=$CH_MS
    t0=${EPOCHREALTIME/./}
    "$@" >>"$RAW" 2>&1 || return 1
    t1=${EPOCHREALTIME/./}
    children_ms
    R_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b - a) / 1e6}')
    R_CPU_MS=$((CH_MS - c0))
}

# outputs are regular files outside .refract-s3 (storgate's metadata directory)
out_count() { find "$1" -type f -not -path '*/.refract-s3/*' | wc -l; }

# check_copies SRC OUT N: N files, a sample byte-exact
check_copies() {
    local src=$1 out=$2 n=$3 got f k=0
    got=$(out_count "$out")
    [ "$got" = "$n" ] || { echo "$got outputs, not $n" >&2; return 1; }
    while IFS= read -r f; do
        cmp -s "$src/$f" "$out/$f" || { echo "$out/$f differs from its source" >&2; return 1; }
        k=$((k + 1))
    done < <(cd "$src" && find . -type f | sort | awk -v n="$n" 'NR == 1 || NR == n || NR % 997 == 0')
    [ "$k" -gt 0 ] || { echo "no sample" >&2; return 1; }
}

# check_webps SRC OUT N: N .webp files; a sample decodes as W x H WebP; counts
# the sample's outputs byte-identical to `vips copy SRC x.webp` (WEBP_SAME)
check_webps() {
    local src=$1 out=$2 n=$3 got f w k=0
    got=$(find "$out" -type f -name '*.webp' -not -path '*/.refract-s3/*' | wc -l)
    [ "$got" = "$n" ] || { echo "$got .webp outputs, not $n" >&2; return 1; }
    WEBP_SAME=0 WEBP_SAMPLE=0
    while IFS= read -r f; do
        w="$out/${f%.jpg}.webp"
        [ "$(vipsheader -f vips-loader "$w" 2>/dev/null)" = webpload ] &&
            [ "$(vipsheader -f width "$w")x$(vipsheader -f height "$w")" = "$IMAGE_SIZE" ] ||
            { echo "$w is not a $IMAGE_SIZE WebP" >&2; return 1; }
        [ -f "$TMP/ref/${f%.jpg}.webp" ] || { mkdir -p "$(dirname "$TMP/ref/$f")" && vips copy "$src/$f" "$TMP/ref/${f%.jpg}.webp[Q=75]"; }
        cmp -s "$w" "$TMP/ref/${f%.jpg}.webp" && WEBP_SAME=$((WEBP_SAME + 1))
        WEBP_SAMPLE=$((WEBP_SAMPLE + 1))
        k=$((k + 1))
    done < <(cd "$src" && find . -type f -name '*.jpg' | sort | awk -v n="$n" 'NR == 1 || NR == n || NR % 199 == 0')
    [ "$k" -gt 0 ] || { echo "no sample" >&2; return 1; }
}

fresh() { rm -rf "$1" && mkdir -p "$1"; } # an empty output directory

# ---- timing --------------------------------------------------------------------------------------
declare -A IPS CPU
NOISY=""
machine_check
echo
echo "== storgate_batch: refract-storgate-scheduler batch runs vs peers, items/s; $ROUNDS round(s) per contender," \
    "alternating order; chunkSize $CHUNK; $(nproc) CPUs shared by everything; data on" \
    "$(df --output=fstype "$TMP" | tail -1 | tr -d ' ') =="

# record CASE CONTENDER N: after a round: items/s, CPU ms per 1000 items, noise
record() {
    local c=$1 who=$2 n=$3 noise
    local ips cpu
    ips=$(awk -v n="$n" -v s="$R_SECS" 'BEGIN{printf "%.1f", n / s}')
    cpu=$(awk -v n="$n" -v c="$R_CPU_MS" 'BEGIN{printf "%.0f", c * 1000 / n}')
    noise=$(foreign_cpu "$SNAP" "$R_SECS" | sed 's/ *$//')
    [ -n "$noise" ] && NOISY="$NOISY $c/$who:[$noise]"
    IPS[$c.$who]="${IPS[$c.$who]:-} $ips"
    CPU[$c.$who]="${CPU[$c.$who]:-} $cpu"
    printf '   round %d  %-5s %-22s %6d items %8.3f s %9s items/s  CPU %6s ms/1000 items (%s%% of %d CPUs)%s\n' "$r" "$c" "$who" \
        "$n" "$R_SECS" "$ips" "$cpu" "$(awk -v c="$R_CPU_MS" -v s="$R_SECS" -v p="$(nproc)" 'BEGIN{printf "%.0f", c / 10 / s / p}')" \
        "$(nproc)" "${noise:+  [other processes busy: $noise]}"
    echo "round $r $c $who: n=$n secs=$R_SECS cpu_ms=$R_CPU_MS items/s=$ips" >>"$RAW"
}

# ---- 1. copy ----
if has_case copy; then
    P_M=$(free_port)
    sg_conf "$TMP/copy.yaml" copy "$P_M" "$TMP/copy" null 2
    sched_start "$TMP/copy.yaml" copy "$P_M"
    echo "-- copy: $FILES files of $FILE_BYTES bytes in $DIRS directories; refract: one node, jobs 2, function null;" \
        "peer: find | xargs -0 -P2 -n 500 cp --parents"
    # shellcheck disable=SC2317 # run through peer_round
    peer_copy() { (cd "$TMP/copy/src/in" && find . -type f -print0 | xargs -0 -P2 -n 500 cp --parents -t "$TMP/copy/out"); }
    for r in $(seq "$ROUNDS"); do
        order="refract cp"
        [ $((r % 2)) -eq 0 ] && order="cp refract"
        for who in $order; do
            fresh "$TMP/copy/out"
            sync
            SNAP=$(proc_snapshot)
            if [ "$who" = refract ]; then
                refract_round "$FILES" "${PID_OF[copy]}" "${PID_OF[copy]}" "$P_M" ||
                    die "copy: refract's round $r failed: $(tail -5 "$TMP/copy.log")"
            else
                peer_round peer_copy || die "copy: the cp peer failed (see $RAW)"
            fi
            record copy "$who" "$FILES"
            check_copies "$TMP/copy/src/in" "$TMP/copy/out" "$FILES" || die "copy: $who's outputs are wrong (round $r)"
        done
    done
    fresh "$TMP/copy/out"
    bench_stop "${PID_OF[copy]}"
fi

# ---- 2. webp ----
if has_case webp; then
    P_M=$(free_port)
    EP="tcp://127.0.0.1:$(free_port)"
    sg_conf "$TMP/webp.yaml" webp "$P_M" "$TMP/webp" /dims/format/webp 2 "" "$EP"
    sched_start "$TMP/webp.yaml" webp "$P_M"
    "$WORKER" -c "$TMP/webp.yaml" -m 0 >>"$TMP/worker.log" 2>&1 &
    W_PID=$!
    bench_track "$W_PID"
    for _ in $(seq 100); do
        metric_sum 'refract_bus_workers{service="image"} ' "$P_M"
        [ "$M_SUM" -ge 1 ] && break
        kill -0 "$W_PID" 2>/dev/null || die "the image worker exited: $(tail -5 "$TMP/worker.log")"
        sleep 0.1
    done
    [ "$M_SUM" -ge 1 ] || die "the image worker did not connect to the scheduler's bus ($EP)"
    echo "-- webp: $IMAGES ${IMAGE_SIZE} JPEGs ($((JPEG_KB / 1024)) MB) in $DIRS directories; refract: one node, jobs 2," \
        "/dims/format/webp on one image worker (jobs 2, vips_concurrency 1); peer: vipsthumbnail -s $IMAGE_SIZE," \
        "2 at a time, one per directory ($IPD files each), WebP Q 75"
    # shellcheck disable=SC2016,SC2317 # $0 and $1 are the inner sh's; run through peer_round
    peer_webp() {
        (cd "$TMP/webp/src/in" && printf '%s\n' d* | xargs -P2 -I{} sh -c \
            'mkdir -p "$0/$1" && exec vipsthumbnail -s "$2" -o "$0/$1/%s.webp[Q=75]" "$1"/*.jpg' "$TMP/webp/out" {} "$IMAGE_SIZE")
    }
    WEBP_NOTE=""
    for r in $(seq "$ROUNDS"); do
        order="refract vipsthumbnail"
        [ $((r % 2)) -eq 0 ] && order="vipsthumbnail refract"
        for who in $order; do
            fresh "$TMP/webp/out"
            sync
            SNAP=$(proc_snapshot)
            if [ "$who" = refract ]; then
                refract_round "$IMAGES" "${PID_OF[webp]}" "${PID_OF[webp]} $W_PID" "$P_M" ||
                    die "webp: refract's round $r failed: $(tail -5 "$TMP/webp.log") $(tail -5 "$TMP/worker.log")"
            else
                peer_round peer_webp || die "webp: the vipsthumbnail peer failed (see $RAW)"
            fi
            record webp "$who" "$IMAGES"
            check_webps "$TMP/webp/src/in" "$TMP/webp/out" "$IMAGES" || die "webp: $who's outputs are wrong (round $r)"
            [ "$r" -eq 1 ] && WEBP_NOTE="$WEBP_NOTE $who: $WEBP_SAME of $WEBP_SAMPLE sampled WebPs byte-identical to vips copy's;"
        done
    done
    fresh "$TMP/webp/out"
    kill -0 "$W_PID" 2>/dev/null || { status=2; echo "storgate_batch: the image worker died during the run" >&2; }
    bench_stop "${PID_OF[webp]}"
    bench_stop "$W_PID"
fi

# ---- 3. dist ----
if has_case dist; then
    P_REDIS=$(free_port)
    redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" >>"$TMP/redis.log" 2>&1 &
    REDIS_PID=$!
    bench_track "$REDIS_PID"
    for _ in $(seq 100); do
        [ "$(redis-cli -p "$P_REDIS" ping 2>/dev/null)" = PONG ] && break
        kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited: $(tail -3 "$TMP/redis.log")"
        sleep 0.05
    done
    [ "$(redis-cli -p "$P_REDIS" ping 2>/dev/null)" = PONG ] || die "redis-server did not start"
    P_A=$(free_port) P_B=$(free_port) P_1=$(free_port) P_C=$(free_port) P_D=$(free_port)
    # two nodes share prefix "two"; the one-node set-up has its own, "one"
    sg_conf "$TMP/dist-a.yaml" A "$P_A" "$TMP/dist" null 1 "redis://127.0.0.1:$P_REDIS/two"
    sg_conf "$TMP/dist-b.yaml" B "$P_B" "$TMP/dist" null 1 "redis://127.0.0.1:$P_REDIS/two"
    sg_conf "$TMP/dist-1.yaml" R1 "$P_1" "$TMP/dist" null 2 "redis://127.0.0.1:$P_REDIS/one"
    sg_conf "$TMP/dist-c.yaml" C "$P_C" "$TMP/dist" null 1 "file://$TMP/dist-lease"
    sg_conf "$TMP/dist-d.yaml" D "$P_D" "$TMP/dist" null 1 "file://$TMP/dist-lease"
    sched_start "$TMP/dist-a.yaml" A "$P_A"
    sched_start "$TMP/dist-b.yaml" B "$P_B"
    sched_start "$TMP/dist-1.yaml" R1 "$P_1"
    sched_start "$TMP/dist-c.yaml" C "$P_C"
    sched_start "$TMP/dist-d.yaml" D "$P_D"
    for _ in $(seq 100); do # exactly one of A and B leads, one of C and D, and R1 leads its own
        metric_sum 'refract_storgate_leader ' "$P_A" "$P_B"
        l2=$M_SUM
        metric_sum 'refract_storgate_leader ' "$P_C" "$P_D"
        lf=$M_SUM
        metric_sum 'refract_storgate_leader ' "$P_1"
        [ "$l2" = 1 ] && [ "$lf" = 1 ] && [ "$M_SUM" = 1 ] && break
        sleep 0.1
    done
    [ "$l2" = 1 ] && [ "$lf" = 1 ] && [ "$M_SUM" = 1 ] || die "dist: no single leader (A+B: $l2, C+D: $lf, R1: $M_SUM)"
    echo "-- dist: $DIST_FILES of the copy's files; refract: two nodes (jobs 1 each) sharing a redis:// lease, the leader" \
        "handing items out through Redis, vs one node without a lease, jobs 2 (the copy case); also one node with a" \
        "redis:// lease, jobs 2; and two nodes (jobs 1 each) sharing a file:// lease"
    for r in $(seq "$ROUNDS"); do
        order="two-nodes-redis one-node-redis two-nodes-file"
        [ $((r % 2)) -eq 0 ] && order="two-nodes-file one-node-redis two-nodes-redis"
        for who in $order; do
            fresh "$TMP/dist/out"
            sync
            SNAP=$(proc_snapshot)
            if [ "$who" = two-nodes-redis ]; then
                refract_round "$DIST_FILES" "${PID_OF[A]} ${PID_OF[B]}" "${PID_OF[A]} ${PID_OF[B]} $REDIS_PID" "$P_A" "$P_B" ||
                    die "dist: two nodes' round $r failed: $(tail -3 "$TMP/A.log") $(tail -3 "$TMP/B.log")"
            elif [ "$who" = two-nodes-file ]; then
                refract_round "$DIST_FILES" "${PID_OF[C]} ${PID_OF[D]}" "${PID_OF[C]} ${PID_OF[D]}" "$P_C" "$P_D" ||
                    die "dist: two file-lease nodes' round $r failed: $(tail -3 "$TMP/C.log") $(tail -3 "$TMP/D.log")"
            else
                refract_round "$DIST_FILES" "${PID_OF[R1]}" "${PID_OF[R1]} $REDIS_PID" "$P_1" ||
                    die "dist: the one node's round $r failed: $(tail -3 "$TMP/R1.log")"
            fi
            record dist "$who" "$DIST_FILES"
            check_copies "$TMP/dist/src/in" "$TMP/dist/out" "$DIST_FILES" || die "dist: $who's outputs are wrong (round $r)"
        done
    done
    fresh "$TMP/dist/out"
    metric_sum "$DONE" "$P_A"
    SHARE="node A $M_SUM"
    metric_sum "$DONE" "$P_B"
    SHARE="$SHARE, node B $M_SUM"
    metric_sum "$DONE" "$P_C"
    SHARE="$SHARE; file:// node C $M_SUM"
    metric_sum "$DONE" "$P_D"
    SHARE="$SHARE, node D $M_SUM"
    echo "   items run by each of the two nodes over the $ROUNDS round(s): $SHARE"
fi

# ---- the table -----------------------------------------------------------------------------------
med() { fmedian "$@"; }
FMT='%-42s %13s %13s %8s  %-12s | %s\n'
echo
echo "medians (items/s; ratio = refract / peer, higher is better; no target: report only):"
# shellcheck disable=SC2059
printf "$FMT" case "refract it/s" "peer it/s" ratio target "CPU ms per 1000 items: refract | peer; rounds (items/s) refract | peer"
# row CASE LABEL REFRACT PEER SUMMARY_NAME
row() {
    local c=$1 label=$2 a=$3 b=$4 name=$5 ra rb ratio
    # shellcheck disable=SC2086
    ra=$(med ${IPS[$c.$a]}) rb=$(med ${IPS[$c.$b]})
    ratio=$(fdiv "$ra" "$rb")
    # shellcheck disable=SC2086,SC2059
    printf "$FMT" "$label" "$ra" "$rb" "${ratio}x" "report only" \
        "$(med ${CPU[$c.$a]}) | $(med ${CPU[$c.$b]}); $(echo ${IPS[$c.$a]} | tr ' ' /) | $(echo ${IPS[$c.$b]} | tr ' ' /)"
    summary "$name (report only)" "$ratio" -
    summary "${name%%:*}: items/s ${name#*: }" "$ra | $rb" -
    RATIO_OUT="$RATIO_OUT$(printf '%s: %s items/s vs %s items/s, ratio %sx (report only)' "$name" "$ra" "$rb" "$ratio")"$'\n'
}
RATIO_OUT=""
has_case copy && row copy "copy ${FILES}x$((FILE_BYTES / 1024))KiB: refract/cp" refract cp \
    "storgate_batch copy: refract/cp"
has_case webp && row webp "webp ${IMAGES}x$IMAGE_SIZE: refract/vipsthumbnail" refract vipsthumbnail \
    "storgate_batch webp: refract/vipsthumbnail"
if has_case dist; then
    # shellcheck disable=SC2086
    two=$(med ${IPS[dist.two-nodes-redis]}) one_r=$(med ${IPS[dist.one-node-redis]})
    one=nan
    # shellcheck disable=SC2086
    has_case copy && one=$(med ${IPS[copy.refract]})
    ratio=$(awk -v a="$two" -v b="$one" 'BEGIN{ if (b + 0 == 0) print "nan"; else printf "%.3f", a / b }')
    # shellcheck disable=SC2086,SC2059
    printf "$FMT" "dist: 2 nodes (redis) / 1 node" "$two" "$one" "${ratio}x" "report only" \
        "two nodes jobs 1 each, redis:// lease | one node jobs 2, no lease (copy case); rounds: $(echo ${IPS[dist.two-nodes-redis]} | tr ' ' /)"
    # shellcheck disable=SC2086,SC2059
    printf "$FMT" "dist: 2 nodes / 1 node, both redis" "$two" "$one_r" "$(fdiv "$two" "$one_r")x" "report only" \
        "$(med ${CPU[dist.two-nodes-redis]}) | $(med ${CPU[dist.one-node-redis]}) (incl. redis-server); rounds: $(echo ${IPS[dist.two-nodes-redis]} | tr ' ' /) | $(echo ${IPS[dist.one-node-redis]} | tr ' ' /)"
    two_f=$(med ${IPS[dist.two-nodes-file]})
    # shellcheck disable=SC2086,SC2059
    printf "$FMT" "dist: 2 nodes (file) / 2 nodes (redis)" "$two_f" "$two" "$(fdiv "$two_f" "$two")x" "report only" \
        "$(med ${CPU[dist.two-nodes-file]}) | $(med ${CPU[dist.two-nodes-redis]}); rounds: $(echo ${IPS[dist.two-nodes-file]} | tr ' ' /)"
    summary "storgate_batch dist: 2 nodes file:// / 2 nodes redis:// (report only)" "$(fdiv "$two_f" "$two")" -
    summary "storgate_batch dist: 2 nodes (redis)/1 node (report only)" "$ratio" -
    summary "storgate_batch dist: 2 nodes/1 node, both redis" "$(fdiv "$two" "$one_r")" -
    summary "storgate_batch dist: items/s 2 nodes | 1 node redis | 1 node" "$two | $one_r | $one" -
    RATIO_OUT="$RATIO_OUT$(printf 'storgate_batch dist: two nodes (redis://) %s items/s vs one node %s items/s, ratio %sx (report only); one node with a redis:// lease %s items/s' "$two" "$one" "$ratio" "$one_r")"$'\n'
fi
[ -n "${WEBP_NOTE:-}" ] && echo "(webp outputs, round 1:${WEBP_NOTE%;})"
echo
printf '%s' "$RATIO_OUT"

if [ -n "$NOISY$BENCH_NOISE" ]; then
    echo "storgate_batch: WARNING: other processes took CPU during the bench, figures are noisy:$NOISY ${BENCH_NOISE}"
    summary "storgate_batch: NOISE (other processes busy)" "${NOISY:-$BENCH_NOISE}" -
fi
for f in "$TMP"/*.log; do
    [ -s "$f" ] || continue
    { echo "---- $(basename "$f")"; cat "$f"; } >>"$RAW"
    # redis-server's start-up warnings (overcommit) are not the bench's business
    if [ "$(basename "$f")" != redis.log ] && grep -qiE 'error|crit|warn' "$f"; then
        echo "storgate_batch: $(basename "$f") (warnings/errors):"
        grep -iE 'error|crit|warn' "$f" | sed 's/^[^ ]* //' | sort | uniq -c | sort -rn | head -5
    fi
done
for f in "$TMP"/*.yaml; do { echo "---- $(basename "$f")"; cat "$f"; } >>"$RAW"; done
for n in "${!PID_OF[@]}"; do
    case $n in copy | webp) continue ;; esac # stopped already
    kill -0 "${PID_OF[$n]}" 2>/dev/null || { status=2; echo "storgate_batch: scheduler $n died during the run" >&2; }
done
echo "storgate_batch: took $(($(date +%s) - T_START)) s; raw output in $RAW"
exit $status
