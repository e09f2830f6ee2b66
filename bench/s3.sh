#!/bin/bash
# bench/s3.sh — storgate's S3 API (refract-gateway, a bucket over a local
# directory) against OpenStack Swift's s3api (scripts/swift-aio.sh: proxy with
# s3api + tempauth, account/container/object servers, one replica), side by
# side in one run, both storing on the same file system (both under this
# bench's temporary directory in /tmp), on the same 2 CPUs as the client:
#   1. PUT 1 MiB objects, 8 connections (wrk -t2 -c8), many requests
#   2. GET 1 MiB objects, 8 connections
#   3. PUT 100 MiB, one stream (curl -T), the median of a few runs
#   4. GET 100 MiB, one stream (curl -o /dev/null), the median of a few runs
# The target of the issue: refract / swift >= 0.8 for each (throughput).
#
# The client must not be what is measured (a boto3 loop would be): every
# request is a presigned URL (boto3 generate_presigned_url, made once per
# server before timing; presigned URLs sign UNSIGNED-PAYLOAD, so neither
# server computes a SHA-256 of the body; both still compute the MD5 ETag)
# driven by wrk (a Lua script cycling over S3_KEYS prebuilt requests; PUTs
# carry the same 1 MiB random body, overwriting the keys) or by curl
# (100 MiB; one unmeasured run of each server first). Each server is checked
# first: the bytes a GET returns are the bytes PUT (1 MiB and 100 MiB). Every
# 1 MiB key is PUT and read once before any timing, and each wrk case starts
# with S3_WARMUP s per server (Swift serves repeated reads from the page
# cache: swift-aio.sh sets keep_cache_private; storgate reads through it).
#
# Contenders: refract: `gateway.threads: 2`, access log off, storgate with
# one credential and one bucket `bench` over $TMP/refract-data. Swift: proxy
# and object server with 2 workers each (workers = auto), log_level WARNING,
# data in $TMP/swift/srv. Swift fsyncs every object it writes; storgate does
# not (its writes are atomic renames, not synced): a line under the table
# says so.
#
#   bench/s3.sh                          (~3-4 minutes)
#   S3_DURATION=2 S3_ROUNDS=1 S3_BIG_MB=8 S3_BIG_RUNS=1 bench/s3.sh   (a smoke run)
#   bench/run.sh s3                      (adds its rows to the ratio table)
#
# Knobs: S3_DURATION (s per wrk run, 8), S3_ROUNDS (wrk rounds per server,
# alternating order; the median counts; 3), S3_CONNS (8), S3_KEYS (1 MiB keys
# cycled over, 64), S3_BIG_MB (100), S3_BIG_RUNS (5), S3_WARMUP (s of wrk
# per server and case before the rounds, 2).
#
# Exit status: 0 when both servers ran (whatever the ratios), 2 when one
# could not start, died or answered wrongly.
set -u
. "$(dirname "$0")/lib.sh"

DURATION=${S3_DURATION:-8}
ROUNDS=${S3_ROUNDS:-3}
CONNS=${S3_CONNS:-8}
KEYS=${S3_KEYS:-64}
BIG_MB=${S3_BIG_MB:-100}
BIG_RUNS=${S3_BIG_RUNS:-5}
WARMUP=${S3_WARMUP:-2}
THREADS=2 # wrk threads; refract's event loops; Swift's proxy and object workers (auto on 2 CPUs)
PY=/usr/bin/python3 # Debian's, with boto3 (the pyenv one on PATH has none)
TARGET=0.8
ACCESS=bench
SECRET=bench-secret-key
BUCKET=bench
SMALL=1048576
BIG=$((BIG_MB * 1048576))

bench_init s3
for v in DURATION ROUNDS CONNS KEYS BIG_MB BIG_RUNS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "S3_$v: '${!v}' is not a positive number"
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "S3_WARMUP: '$WARMUP' is not a number"
need wrk curl ss awk cmp swift-proxy-server memcached
[ -x "$PY" ] || die "$PY is missing"
"$PY" -c 'import boto3' 2>/dev/null || die "boto3 is missing for $PY (python3-boto3)"
[ -x "$BIN/refract-gateway" ] || die "$BIN/refract-gateway is missing: run make"
RAW=${BENCH_RAW:-$RESULTS_DIR/s3-$(date +%Y%m%d-%H%M%S).log}
: >"$RAW"
RAW=$(realpath "$RAW")
T_START=$(date +%s)

swift_bench_init

# ---- servers --------------------------------------------------------------------------------
P_GW=$(free_port)
P_ADMIN=$(free_port)
P_BUS=$(free_port)
P_S3=$(free_port)
P_SWIFT=$(free_port)
DATA=$TMP/refract-data
mkdir -p "$DATA" "$TMP/www"
{
    storgate_conf_head "$P_GW" "$P_ADMIN" "$P_BUS" "$P_S3" "$THREADS" "$ACCESS" "$SECRET"
    cat <<EOF
  buckets:
    - meta: {name: $BUCKET}      # region ap-northeast-2, as Swift's s3api location
      mounts:
        - originPath: "$DATA"    # same file system as Swift's $SWIFT_DIR/srv
log:
  level: warn
EOF
} >"$TMP/refract.yaml"
gateway_start "$TMP/refract.yaml" "$TMP/gateway.log"
wait_http "http://127.0.0.1:$P_S3/" "$GW_PID" 10 || die "refract-gateway did not start ($(tail -5 "$TMP/gateway.log"))"

swift_bench_start "$P_SWIFT" # S3_ENDPOINT, S3_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
SWIFT_PGIDS=$(awk '{print $2}' "$SWIFT_DIR/pids")
[ "$(df --output=source "$DATA" | tail -1)" = "$(df --output=source "$SWIFT_DIR/srv" | tail -1)" ] ||
    die "refract's and Swift's data are on different file systems"
FS="$(df --output=fstype "$DATA" | tail -1 | tr -d ' ') on $(df --output=source "$DATA" | tail -1 | tr -d ' ')"

# server_pids NAME: the processes whose CPU counts for that server
server_pids() {
    local g
    if [ "$1" = refract ]; then echo "$GW_PID"; return; fi
    for g in $SWIFT_PGIDS; do pgrep -g "$g"; done | tr '\n' ' '
}
# noise_since SNAPSHOT SECONDS: foreign_cpu without this bench's Swift (its
# processes are in sessions of their own, outside the bench's process tree)
noise_since() {
    foreign_cpu "$1" "$2" | tr ' ' '\n' | grep -vE '^(swift-|memcached)' | tr '\n' ' ' | sed 's/ *$//'
}

# ---- objects and presigned URLs -------------------------------------------------------------
head -c "$SMALL" /dev/urandom >"$TMP/obj-1m.bin"
head -c "$BIG" /dev/urandom >"$TMP/obj-big.bin"
mkdir -p "$TMP/urls"
# refract's bucket is configured (CreateBucket succeeds); Swift's is created here
"$PY" -I - "$TMP/urls" "$KEYS" "$BUCKET" "$S3_REGION" \
    "refract" "http://127.0.0.1:$P_S3" "$ACCESS" "$SECRET" \
    "swift" "$S3_ENDPOINT" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" <<'EOF' 2>>"$RAW" || die "presigning failed (see $RAW)"
import sys
import boto3
from botocore.config import Config

out, keys, bucket, region = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
servers = sys.argv[5:]
for i in range(0, len(servers), 4):
    name, url, ak, sk = servers[i:i + 4]
    s3 = boto3.client("s3", endpoint_url=url, region_name=region, aws_access_key_id=ak,
                      aws_secret_access_key=sk,
                      config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})

    def presign(op, key):
        u = s3.generate_presigned_url(op, Params={"Bucket": bucket, "Key": key}, ExpiresIn=4 * 3600)
        assert u.startswith(url + "/"), u
        return u[len(url):]  # the path and query: wrk adds the Host it was signed with

    for op, tag in (("put_object", "put"), ("get_object", "get")):
        with open("%s/%s-%s-1m.txt" % (out, name, tag), "w") as f:
            for k in range(keys):
                f.write(presign(op, "b1m/obj-%04d" % k) + "\n")
        with open("%s/%s-%s-big.txt" % (out, name, tag), "w") as f:
            f.write(url + presign(op, "big/obj-big") + "\n")
EOF
declare -A BASE=([refract]="http://127.0.0.1:$P_S3" [swift]="$S3_ENDPOINT")

# a wrk script: METHOD over the paths in LIST, each request prebuilt once per
# thread (PUTs with BODY_FILE as their body), threads starting apart in the list
write_lua() { # FILE METHOD LIST [BODY_FILE]
    cat >"$1" <<EOF
local method, list, bodyfile = "$2", "$3", "${4:-}"
local reqs = {}
local n = 0
local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end
function init(args)
  local body = nil
  if bodyfile ~= "" then
    local f = assert(io.open(bodyfile, "rb"))
    body = f:read("*a")
    f:close()
  end
  for path in io.lines(list) do reqs[#reqs + 1] = wrk.format(method, path, nil, body) end
  n = (tonumber(tid) or 0) * math.floor(#reqs / 2)
end
function request()
  n = n + 1
  return reqs[(n % #reqs) + 1]
end
function done(s, latency, requests)
  io.write(string.format("WRK requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_ms=%.2f p99_ms=%.2f\n",
    s.requests, s.bytes, s.duration, s.errors.connect, s.errors.read, s.errors.write, s.errors.status,
    s.errors.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
EOF
}
for s in refract swift; do
    write_lua "$TMP/$s-put.lua" PUT "$TMP/urls/$s-put-1m.txt" "$TMP/obj-1m.bin"
    write_lua "$TMP/$s-get.lua" GET "$TMP/urls/$s-get-1m.txt"
done

# ---- every answer checked before any timing -----------------------------------------------------
# curl_put URL FILE / curl_get URL OUT: prints "CODE SECONDS"; no Expect: 100-continue wait
curl_put() { curl -s -H 'Expect:' -o "$TMP/put.out" -w '%{http_code} %{time_total}' -T "$2" "$1"; }
curl_get() { curl -s -o "$2" -w '%{http_code} %{time_total}' "$1"; }
for s in refract swift; do
    n=0
    while IFS= read -r p; do # every 1 MiB key PUT once
        out=$(curl_put "${BASE[$s]}$p" "$TMP/obj-1m.bin")
        [ "${out%% *}" = 200 ] || die "$s: PUT of a 1 MiB object answered ${out%% *}: $(head -c 300 "$TMP/put.out")"
        n=$((n + 1))
    done <"$TMP/urls/$s-put-1m.txt"
    n=0
    while IFS= read -r p; do # and read once: the first byte-exact, every one of the right size
        if [ $n -eq 0 ]; then
            out=$(curl_get "${BASE[$s]}$p" "$TMP/get.out")
            [ "${out%% *}" = 200 ] || die "$s: GET of a 1 MiB object answered ${out%% *}: $(head -c 300 "$TMP/get.out")"
            cmp -s "$TMP/get.out" "$TMP/obj-1m.bin" || die "$s: GET of a 1 MiB object did not return the bytes PUT"
        else
            out=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "${BASE[$s]}$p")
            [ "$out" = "200 $SMALL" ] || die "$s: GET of a 1 MiB object answered $out"
        fi
        n=$((n + 1))
    done <"$TMP/urls/$s-get-1m.txt"
    out=$(curl_put "$(cat "$TMP/urls/$s-put-big.txt")" "$TMP/obj-big.bin")
    [ "${out%% *}" = 200 ] || die "$s: PUT of $BIG_MB MiB answered ${out%% *}: $(head -c 300 "$TMP/put.out")"
    out=$(curl_get "$(cat "$TMP/urls/$s-get-big.txt")" "$TMP/get.out")
    [ "${out%% *}" = 200 ] || die "$s: GET of $BIG_MB MiB answered ${out%% *}: $(head -c 300 "$TMP/get.out")"
    cmp -s "$TMP/get.out" "$TMP/obj-big.bin" || die "$s: GET of $BIG_MB MiB did not return the bytes PUT"
    echo "s3: $s answers right: $KEYS x 1 MiB PUT and read back, $BIG_MB MiB byte-exact (${BASE[$s]})"
done
rm -f "$TMP/get.out"
[ "$(find "$DATA/b1m" -type f | wc -l)" = "$KEYS" ] || die "refract: $DATA/b1m does not hold the $KEYS objects PUT"

# ---- timing ---------------------------------------------------------------------------------------
declare -A MBPS RPS P50 P99 CPUMB
status=0
NOISY=""
machine_check
echo
echo "== s3: presigned URLs (UNSIGNED-PAYLOAD), path-style; 1 MiB: wrk -t$THREADS -c$CONNS, ${DURATION}s x $ROUNDS rounds per server" \
    "over $KEYS keys; $BIG_MB MiB: curl, one stream, $BIG_RUNS runs; data on $FS; $(nproc) CPUs shared with the client =="

# one_wrk SERVER CASE SECONDS LABEL: sets W_* (lib.sh) and CPU_MB (the server's CPU ms per MB moved)
one_wrk() {
    local s=$1 c=$2 secs=$3 label=$4 pids t0 t1
    pids=$(server_pids "$s")
    # shellcheck disable=SC2086
    t0=$(cpu_ticks $pids)
    run_wrk "$label" "$TMP/$s-${c,,}.lua" "${BASE[$s]}" -t"$THREADS" -c"$CONNS" -d"${secs}s" --timeout 30s ||
        die "$s: wrk failed ($label)"
    # shellcheck disable=SC2086
    t1=$(cpu_ticks $pids)
    [ "$W_ERRS" -eq 0 ] || die "$s: $W_ERRS failed requests during $label (see $RAW)"
    CPU_MB=$(awk -v ms="$(cpu_total_ms "$t0" "$t1")" -v n="$W_REQS" -v sz="$SMALL" 'BEGIN{printf "%.2f", n ? ms / (n * sz / 1e6) : 0}')
    W_MBPS=$(awk -v n="$W_REQS" -v sz="$SMALL" -v s="$W_SECS" 'BEGIN{printf "%.1f", n * sz / s / 1e6}') # payload only
}
for c in PUT GET; do
    for s in refract swift; do [ "$WARMUP" -gt 0 ] && one_wrk "$s" "$c" "$WARMUP" "warmup $s $c 1MiB"; done
    for r in $(seq "$ROUNDS"); do
        order="refract swift"
        [ $((r % 2)) -eq 0 ] && order="swift refract"
        for s in $order; do
            snap=$(proc_snapshot)
            one_wrk "$s" "$c" "$DURATION" "round $r $s $c 1MiB"
            noise=$(noise_since "$snap" "$DURATION")
            [ -n "$noise" ] && NOISY="$NOISY $s/$c:[$noise]"
            MBPS[$s.$c]="${MBPS[$s.$c]:-} $W_MBPS"
            RPS[$s.$c]="${RPS[$s.$c]:-} $W_RPS"
            P50[$s.$c]="${P50[$s.$c]:-} $W_P50"
            P99[$s.$c]="${P99[$s.$c]:-} $W_P99"
            CPUMB[$s.$c]="${CPUMB[$s.$c]:-} $CPU_MB"
            printf '   round %d  %-7s %s 1MiB c=%d %9s MB/s %8s req/s  p50 %7s ms  p99 %7s ms  server CPU %6s ms/MB%s\n' "$r" "$s" "$c" \
                "$CONNS" "$W_MBPS" "$W_RPS" "$W_P50" "$W_P99" "$CPU_MB" "${noise:+  [other processes busy: $noise]}"
        done
    done
done

# 100 MiB, one stream: curl's time_total; refract and Swift alternating,
# after one unmeasured run of each (run 0: Swift's GET then reads its object
# from the page cache, as storgate does, not from the disk its PUT flushed to)
declare -A BIGS
for c in PUT GET; do
    for r in $(seq 0 "$BIG_RUNS"); do
        order="refract swift"
        [ $((r % 2)) -eq 0 ] && order="swift refract"
        for s in $order; do
            url=$(cat "$TMP/urls/$s-${c,,}-big.txt")
            snap=$(proc_snapshot)
            if [ "$c" = PUT ]; then out=$(curl_put "$url" "$TMP/obj-big.bin"); else out=$(curl_get "$url" /dev/null); fi
            echo "big $c $s run $r: $out" >>"$RAW"
            [ "${out%% *}" = 200 ] || die "$s: $c of $BIG_MB MiB answered ${out%% *} during timing"
            [ "$r" -eq 0 ] && continue
            secs=${out#* }
            mbps=$(awk -v b="$BIG" -v t="$secs" 'BEGIN{printf "%.1f", b / t / 1e6}')
            noise=$(noise_since "$snap" 1)
            [ -n "$noise" ] && NOISY="$NOISY $s/$c-big:[$noise]"
            BIGS[$s.$c]="${BIGS[$s.$c]:-} $mbps"
            printf '   run %d    %-7s %s %dMiB c=1 %9s MB/s  (%s s)%s\n' "$r" "$s" "$c" "$BIG_MB" "$mbps" "$secs" \
                "${noise:+  [other processes busy: $noise]}"
        done
    done
done

# ---- the table ------------------------------------------------------------------------------------
mark() { awk -v v="$1" -v t="$2" 'BEGIN{print (v != "nan" && v + 0 >= t + 0) ? "PASS" : "BELOW"}'; }
FMT='%-20s %12s %12s %8s %8s  %-6s | %s\n'
echo
echo "median of the rounds/runs (MB/s = 10^6 payload bytes per second; ratio = refract / swift, higher is better):"
# shellcheck disable=SC2059
printf "$FMT" case "refract MB/s" "swift MB/s" ratio target mark "refract | swift: req/s, p50/p99 ms, server CPU ms per MB"
declare -A RATIO RF SW
for c in PUT GET; do
    # shellcheck disable=SC2086
    rf=$(fmedian ${MBPS[refract.$c]}) sw=$(fmedian ${MBPS[swift.$c]})
    RATIO[$c]=$(fdiv "$rf" "$sw")
    # shellcheck disable=SC2086,SC2059
    printf "$FMT" "$c 1MiB c=$CONNS" "$rf" "$sw" "${RATIO[$c]}x" ">= $TARGET" "$(mark "${RATIO[$c]}" "$TARGET")" \
        "$(fmedian ${RPS[refract.$c]}) req/s $(fmedian ${P50[refract.$c]})/$(fmedian ${P99[refract.$c]}) ms $(fmedian ${CPUMB[refract.$c]}) | $(fmedian ${RPS[swift.$c]}) req/s $(fmedian ${P50[swift.$c]})/$(fmedian ${P99[swift.$c]}) ms $(fmedian ${CPUMB[swift.$c]})"
    # shellcheck disable=SC2086
    {
        summary "s3 $c 1MB c=$CONNS: refract/swift (MB/s)" "${RATIO[$c]}" "$TARGET"
        summary "s3 $c 1MB c=$CONNS: refract | swift MB/s" "$rf | $sw" -
        summary "s3 $c 1MB c=$CONNS: server CPU ms/MB refract | swift" "$(fmedian ${CPUMB[refract.$c]}) | $(fmedian ${CPUMB[swift.$c]})" -
    }
    RF[$c]=$rf SW[$c]=$sw
done
for c in PUT GET; do
    # shellcheck disable=SC2086
    rf=$(fmedian ${BIGS[refract.$c]}) sw=$(fmedian ${BIGS[swift.$c]})
    RATIO[big$c]=$(fdiv "$rf" "$sw")
    # shellcheck disable=SC2086,SC2059
    printf "$FMT" "$c ${BIG_MB}MiB c=1" "$rf" "$sw" "${RATIO[big$c]}x" ">= $TARGET" "$(mark "${RATIO[big$c]}" "$TARGET")" \
        "runs: $(echo ${BIGS[refract.$c]} | tr ' ' /) | $(echo ${BIGS[swift.$c]} | tr ' ' /)"
    summary "s3 $c ${BIG_MB}MB c=1: refract/swift (MB/s)" "${RATIO[big$c]}" "$TARGET"
    summary "s3 $c ${BIG_MB}MB c=1: refract | swift MB/s" "$rf | $sw" -
    RF[big$c]=$rf SW[big$c]=$sw
done
echo "(Swift fsyncs every object it writes and drops it from the page cache; storgate writes without fsync)"
echo
for c in PUT GET; do
    printf 's3 %s 1MB c=%d: refract %s MB/s, swift %s MB/s, ratio %sx (target >= %s)\n' "$c" "$CONNS" "${RF[$c]}" "${SW[$c]}" "${RATIO[$c]}" "$TARGET"
done
for c in PUT GET; do
    printf 's3 %s %dMB c=1: refract %s MB/s, swift %s MB/s, ratio %sx (target >= %s)\n' "$c" "$BIG_MB" "${RF[big$c]}" "${SW[big$c]}" "${RATIO[big$c]}" "$TARGET"
done
RCLONE_V=$(rclone version 2>/dev/null | head -1)
if rclone serve --help 2>/dev/null | grep -qE '^ +s3 '; then
    echo "s3: rclone ($RCLONE_V) has 'serve s3', but this bench does not measure it yet"
else
    echo "s3: rclone serve s3: not measured: ${RCLONE_V:-rclone is not installed}${RCLONE_V:+ (Debian 12) has no 'serve s3' (added in rclone 1.65)}"
fi
summary "s3: rclone serve s3" "not measured (${RCLONE_V:-no rclone}: no serve s3)" -

if [ -n "$NOISY$BENCH_NOISE" ]; then
    echo "s3: WARNING: other processes took CPU during the bench, figures are noisy:$NOISY ${BENCH_NOISE}"
    summary "s3: NOISE (other processes busy)" "${NOISY:-$BENCH_NOISE}" -
fi
kill -0 "$GW_PID" 2>/dev/null || { status=2; echo "s3: refract-gateway died during the run" >&2; }
while read -r name pid; do
    kill -0 "$pid" 2>/dev/null || { status=2; echo "s3: Swift's $name died during the run" >&2; }
done <"$SWIFT_DIR/pids"
if grep -qiE 'error|crit|warn' "$TMP/gateway.log" 2>/dev/null; then
    echo "s3: gateway log (warnings/errors):"
    grep -iE 'error|crit|warn' "$TMP/gateway.log" | sed 's/^[^ ]* //' | sort | uniq -c | sort -rn | head -5
fi
for l in "$SWIFT_DIR"/log/{proxy,object,container,account}.log; do
    if [ -s "$l" ]; then
        echo "s3: Swift $(basename "$l") (warnings/errors):"
        sed 's/^[^:]*: //' "$l" | sort | uniq -c | sort -rn | head -5
    fi
    cat "$l" >>"$RAW"
done
echo "s3: took $(($(date +%s) - T_START)) s; raw output in $RAW"
exit $status
