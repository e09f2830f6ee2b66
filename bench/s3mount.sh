#!/bin/bash
# bench/s3mount.sh — storgate's S3 API serving GETs from an S3-backed mount
# (a bucket mount whose originPath is `NAME@aws_s3/PREFIX`, here OpenStack
# Swift's s3api started by scripts/swift-aio.sh) against GETting the same
# object directly from Swift, side by side in one run, on the same 2 CPUs as
# the client. The gateway streams such a GET: a HEAD to the endpoint, then
# 4 MiB ranged GETs (If-Match on the HEAD's ETag), each sent to the client
# before the next is asked for. Per case, refract-through-the-mount against
# Swift direct, one request at a time (curl):
#   1. GET of one S3M_BIG_MB object (100 MiB): throughput of the one stream
#      (curl's %{speed_download}); ratio refract / swift, higher is better,
#      target >= 0.8;
#   2. the same runs' time to first byte (%{time_starttransfer}); ratio
#      refract / swift, LOWER is better (no target; informational);
#   3. a ranged GET (`Range: bytes=A-B`) of 1 MiB from the middle of that
#      object: curl's %{time_total}; ratio refract / swift, lower is better.
# Medians of S3M_RUNS runs per server, alternating which server goes first,
# after one unmeasured run of each per case (which also puts the object in
# Swift's page cache: swift-aio.sh keeps what it serves there, so both
# contenders read it from memory).
#
# Before any timing, both servers are checked: the whole GET returns exactly
# the object PUT (cmp), the ranged GET a 206 with exactly that slice.
#
# The object is PUT into Swift (bucket `refract`, key landing/big.bin) with
# boto3 (one PutObject, so its ETag is a plain MD5); the gateway's bucket
# `bench` mounts swiftstore@aws_s3/landing at /swift, so it serves the object
# as bench/swift/big.bin. Every GET is a presigned URL (boto3
# generate_presigned_url, made once per server, 4 h expiry); curl adds the
# Range header, which a presigned URL does not sign.
#
#   bench/s3mount.sh                                 (~1 minute)
#   S3M_BIG_MB=8 S3M_RUNS=1 bench/s3mount.sh         (a smoke run)
#   bench/run.sh s3mount                             (adds its rows to the ratio table)
#
# Knobs: S3M_BIG_MB (object size in MiB, >= 2; 100), S3M_RUNS (measured runs
# per server and case; the median counts; 5).
#
# Exit status: 0 when both servers ran (whatever the ratios), 2 when one
# could not start, died or answered wrongly.
set -u
. "$(dirname "$0")/lib.sh"

BIG_MB=${S3M_BIG_MB:-100}
RUNS=${S3M_RUNS:-5}
THREADS=2 # refract's event loops; Swift's proxy and object workers (auto on 2 CPUs)
PY=/usr/bin/python3 # Debian's, with boto3 (the pyenv one on PATH has none)
TARGET=0.8
ACCESS=bench
SECRET=bench-secret-key
BUCKET=bench          # refract's bucket
SWIFT_BUCKET=refract  # the Swift bucket the mount reads
PREFIX=landing        # ... under this prefix (originPath swiftstore@aws_s3/landing)
MOUNT=swift           # the mount point in refract's bucket
KEY=big.bin
BIG=$((BIG_MB * 1048576))
RANGE=1048576
R_FIRST=$((BIG / 2 - RANGE / 2))
R_LAST=$((R_FIRST + RANGE - 1))

bench_init s3mount
for v in BIG_MB RUNS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "S3M_$v: '${!v}' is not a positive number"
done
[ "$BIG_MB" -ge 2 ] || die "S3M_BIG_MB must be at least 2 (the ranged GET reads 1 MiB from the middle)"
need curl ss awk cmp swift-proxy-server memcached
[ -x "$PY" ] || die "$PY is missing"
"$PY" -c 'import boto3' 2>/dev/null || die "boto3 is missing for $PY (python3-boto3)"
[ -x "$BIN/refract-gateway" ] || die "$BIN/refract-gateway is missing: run make"
RAW=${BENCH_RAW:-$RESULTS_DIR/s3mount-$(date +%Y%m%d-%H%M%S).log}
: >"$RAW"
RAW=$(realpath "$RAW")
T_START=$(date +%s)

swift_bench_init

# ---- servers: Swift first (the gateway's configuration names its endpoint) ------------------
P_GW=$(free_port)
P_ADMIN=$(free_port)
P_BUS=$(free_port)
P_S3=$(free_port)
P_SWIFT=$(free_port)
swift_bench_start "$P_SWIFT" # S3_ENDPOINT, S3_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY

mkdir -p "$TMP/local" "$TMP/sg-state" "$TMP/www"
{
    storgate_conf_head "$P_GW" "$P_ADMIN" "$P_BUS" "$P_S3" "$THREADS" "$ACCESS" "$SECRET"
    cat <<EOF
  aws_s3:
    - name: swiftstore
      endpoint: "$S3_ENDPOINT"
      region: "$S3_REGION"
      access_key: "$AWS_ACCESS_KEY_ID"
      secret_key: "$AWS_SECRET_ACCESS_KEY"
      bucket: $SWIFT_BUCKET
      path_style: true
  buckets:
    - meta: {name: $BUCKET}      # region ap-northeast-2, as Swift's s3api location
      mounts:
        - mountPoint: /local
          originPath: "$TMP/local"
        - mountPoint: /$MOUNT
          originPath: "swiftstore@aws_s3/$PREFIX"
storgate_scheduler:
  state_dir: "$TMP/sg-state"
log:
  level: warn
EOF
} >"$TMP/refract.yaml"
gateway_start "$TMP/refract.yaml" "$TMP/gateway.log"
wait_http "http://127.0.0.1:$P_S3/" "$GW_PID" 10 || die "refract-gateway did not start ($(tail -5 "$TMP/gateway.log"))"

# noise_since SNAPSHOT SECONDS: foreign_cpu without this bench's Swift (its
# processes are in sessions of their own, outside the bench's process tree)
noise_since() {
    foreign_cpu "$1" "$2" | tr ' ' '\n' | grep -vE '^(swift-|memcached)' | tr '\n' ' ' | sed 's/ *$//'
}

# ---- the object, in Swift; presigned URLs ------------------------------------------------------
head -c "$BIG" /dev/urandom >"$TMP/obj-big.bin"
tail -c +$((R_FIRST + 1)) "$TMP/obj-big.bin" | head -c "$RANGE" >"$TMP/obj-range.bin"
mkdir -p "$TMP/urls"
"$PY" -I - "$TMP/urls" "$TMP/obj-big.bin" "$S3_REGION" \
    "$S3_ENDPOINT" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" "$SWIFT_BUCKET" "$PREFIX/$KEY" \
    "http://127.0.0.1:$P_S3" "$ACCESS" "$SECRET" "$BUCKET" "$MOUNT/$KEY" <<'EOF' 2>>"$RAW" || die "PUT or presigning failed (see $RAW)"
import sys
import boto3
from botocore.config import Config

out, obj, region = sys.argv[1], sys.argv[2], sys.argv[3]
swift_url, swift_ak, swift_sk, swift_bucket, swift_key = sys.argv[4:9]
rf_url, rf_ak, rf_sk, rf_bucket, rf_key = sys.argv[9:14]


def client(url, ak, sk):
    return boto3.client("s3", endpoint_url=url, region_name=region, aws_access_key_id=ak,
                        aws_secret_access_key=sk,
                        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))


swift = client(swift_url, swift_ak, swift_sk)
swift.create_bucket(Bucket=swift_bucket, CreateBucketConfiguration={"LocationConstraint": region})
with open(obj, "rb") as f:  # one PutObject (not upload_file's multipart): a plain MD5 ETag
    swift.put_object(Bucket=swift_bucket, Key=swift_key, Body=f)
for name, s3, url, bucket, key in (("swift", swift, swift_url, swift_bucket, swift_key),
                                   ("refract", client(rf_url, rf_ak, rf_sk), rf_url, rf_bucket, rf_key)):
    u = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=4 * 3600)
    assert u.startswith(url + "/"), u
    with open("%s/%s-get.txt" % (out, name), "w") as f:
        f.write(u + "\n")
EOF
declare -A URL=([refract]="$(cat "$TMP/urls/refract-get.txt")" [swift]="$(cat "$TMP/urls/swift-get.txt")")

# ---- every answer checked before any timing -----------------------------------------------------
# curl_get URL OUT [RANGE]: prints "CODE SIZE TTFB_S TOTAL_S SPEED_BPS"
curl_get() {
    curl -s -o "$2" ${3:+-H "Range: bytes=$3"} \
        -w '%{http_code} %{size_download} %{time_starttransfer} %{time_total} %{speed_download}' "$1"
}
for s in refract swift; do
    out=$(curl_get "${URL[$s]}" "$TMP/get.out")
    [ "${out%% *}" = 200 ] || die "$s: GET of $BIG_MB MiB answered ${out%% *}: $(head -c 300 "$TMP/get.out")"
    cmp -s "$TMP/get.out" "$TMP/obj-big.bin" || die "$s: GET of $BIG_MB MiB did not return the object PUT ($out)"
    out=$(curl_get "${URL[$s]}" "$TMP/get.out" "$R_FIRST-$R_LAST")
    [ "${out%% *}" = 206 ] || die "$s: GET with Range: bytes=$R_FIRST-$R_LAST answered ${out%% *}: $(head -c 300 "$TMP/get.out")"
    cmp -s "$TMP/get.out" "$TMP/obj-range.bin" || die "$s: GET with Range: bytes=$R_FIRST-$R_LAST did not return that slice ($out)"
    echo "s3mount: $s answers right: $BIG_MB MiB byte-exact, bytes=$R_FIRST-$R_LAST the right 1 MiB ($(cut -d'?' -f1 <<<"${URL[$s]}"))"
done
rm -f "$TMP/get.out"

# ---- timing ---------------------------------------------------------------------------------------
status=0
NOISY=""
machine_check
echo
echo "== s3mount: one stream at a time, curl -o /dev/null on presigned URLs; refract = bucket $BUCKET, mount /$MOUNT =" \
    "swiftstore@aws_s3/$PREFIX (Swift's s3api); swift = the same object directly; $RUNS runs per server and case," \
    "alternating, after one unmeasured run each; $(nproc) CPUs shared with the client =="

# GET (whole object): MB/s and TTFB per run; RANGE: time_total
declare -A MBPS TTFB RTIME
for c in GET RANGE; do
    for r in $(seq 0 "$RUNS"); do
        order="refract swift"
        [ $((r % 2)) -eq 0 ] && order="swift refract"
        for s in $order; do
            snap=$(proc_snapshot)
            if [ "$c" = GET ]; then
                out=$(curl_get "${URL[$s]}" /dev/null)
                want="200 $BIG"
            else
                out=$(curl_get "${URL[$s]}" /dev/null "$R_FIRST-$R_LAST")
                want="206 $RANGE"
            fi
            echo "$c $s run $r: $out (code size ttfb_s total_s speed_Bps)" >>"$RAW"
            read -r code size ttfb total speed <<<"$out"
            [ "$code $size" = "$want" ] || die "$s: $c answered $code with $size bytes during timing (wanted $want)"
            [ "$r" -eq 0 ] && continue
            noise=$(noise_since "$snap" 1)
            [ -n "$noise" ] && NOISY="$NOISY $s/$c:[$noise]"
            ttfb_ms=$(awk -v t="$ttfb" 'BEGIN{printf "%.1f", t * 1000}')
            total_ms=$(awk -v t="$total" 'BEGIN{printf "%.1f", t * 1000}')
            if [ "$c" = GET ]; then
                mbps=$(awk -v b="$speed" 'BEGIN{printf "%.1f", b / 1e6}')
                MBPS[$s]="${MBPS[$s]:-} $mbps"
                TTFB[$s]="${TTFB[$s]:-} $ttfb_ms"
                printf '   run %d    %-7s GET %dMiB    %9s MB/s  first byte %8s ms  (%s s)%s\n' "$r" "$s" "$BIG_MB" \
                    "$mbps" "$ttfb_ms" "$total" "${noise:+  [other processes busy: $noise]}"
            else
                RTIME[$s]="${RTIME[$s]:-} $total_ms"
                printf '   run %d    %-7s GET 1MiB range %8s ms  first byte %8s ms%s\n' "$r" "$s" "$total_ms" "$ttfb_ms" \
                    "${noise:+  [other processes busy: $noise]}"
            fi
        done
    done
done

# ---- the table ------------------------------------------------------------------------------------
mark() { awk -v v="$1" -v t="$2" 'BEGIN{print (v != "nan" && v + 0 >= t + 0) ? "PASS" : "BELOW"}'; }
# shellcheck disable=SC2086
{
    rf_mbps=$(fmedian ${MBPS[refract]}) sw_mbps=$(fmedian ${MBPS[swift]})
    rf_ttfb=$(fmedian ${TTFB[refract]}) sw_ttfb=$(fmedian ${TTFB[swift]})
    rf_rt=$(fmedian ${RTIME[refract]}) sw_rt=$(fmedian ${RTIME[swift]})
}
R_MBPS=$(fdiv "$rf_mbps" "$sw_mbps")
R_TTFB=$(fdiv "$rf_ttfb" "$sw_ttfb")
R_RT=$(fdiv "$rf_rt" "$sw_rt")
FMT='%-34s %12s %12s %8s %8s  %-6s | %s\n'
echo
echo "median of the runs (ratio = refract / swift; MB/s = 10^6 bytes per second):"
# shellcheck disable=SC2059
printf "$FMT" case refract swift ratio target mark "runs: refract | swift"
# shellcheck disable=SC2059,SC2086
{
    printf "$FMT" "GET ${BIG_MB}MiB c=1 MB/s (higher better)" "$rf_mbps" "$sw_mbps" "${R_MBPS}x" ">= $TARGET" \
        "$(mark "$R_MBPS" "$TARGET")" "$(echo ${MBPS[refract]} | tr ' ' /) | $(echo ${MBPS[swift]} | tr ' ' /)"
    printf "$FMT" "GET ${BIG_MB}MiB first byte ms (lower)" "$rf_ttfb" "$sw_ttfb" "${R_TTFB}x" - - \
        "$(echo ${TTFB[refract]} | tr ' ' /) | $(echo ${TTFB[swift]} | tr ' ' /)"
    printf "$FMT" "GET 1MiB range, total ms (lower)" "$rf_rt" "$sw_rt" "${R_RT}x" - - \
        "$(echo ${RTIME[refract]} | tr ' ' /) | $(echo ${RTIME[swift]} | tr ' ' /)"
}
summary "s3mount GET ${BIG_MB}MB c=1: refract/swift (MB/s)" "$R_MBPS" "$TARGET"
summary "s3mount GET ${BIG_MB}MB c=1: refract | swift MB/s" "$rf_mbps | $sw_mbps" -
summary "s3mount GET ${BIG_MB}MB TTFB: refract/swift (lower better)" "$R_TTFB" -
summary "s3mount GET ${BIG_MB}MB TTFB ms: refract | swift" "$rf_ttfb | $sw_ttfb" -
summary "s3mount range 1MB: refract/swift ms (lower better)" "$R_RT" -
summary "s3mount range 1MB ms: refract | swift" "$rf_rt | $sw_rt" -
echo
printf 's3mount GET %dMB c=1: refract %s MB/s, swift %s MB/s, ratio %sx (target >= %s)\n' "$BIG_MB" "$rf_mbps" "$sw_mbps" "$R_MBPS" "$TARGET"
printf 's3mount GET %dMB time to first byte: refract %s ms, swift %s ms, ratio refract/swift %sx (lower is better)\n' \
    "$BIG_MB" "$rf_ttfb" "$sw_ttfb" "$R_TTFB"
printf 's3mount GET 1MB range (bytes=%d-%d): refract %s ms, swift %s ms, ratio refract/swift %sx (lower is better)\n' \
    "$R_FIRST" "$R_LAST" "$rf_rt" "$sw_rt" "$R_RT"

if [ -n "$NOISY$BENCH_NOISE" ]; then
    echo "s3mount: WARNING: other processes took CPU during the bench, figures are noisy:$NOISY ${BENCH_NOISE}"
    summary "s3mount: NOISE (other processes busy)" "${NOISY:-$BENCH_NOISE}" -
fi
kill -0 "$GW_PID" 2>/dev/null || { status=2; echo "s3mount: refract-gateway died during the run" >&2; }
while read -r name pid; do
    kill -0 "$pid" 2>/dev/null || { status=2; echo "s3mount: Swift's $name died during the run" >&2; }
done <"$SWIFT_DIR/pids"
if grep -qiE 'error|crit|warn' "$TMP/gateway.log" 2>/dev/null; then
    echo "s3mount: gateway log (warnings/errors):"
    grep -iE 'error|crit|warn' "$TMP/gateway.log" | sed 's/^[^ ]* //' | sort | uniq -c | sort -rn | head -5
fi
cat "$TMP/gateway.log" >>"$RAW" 2>/dev/null
for l in "$SWIFT_DIR"/log/{proxy,object,container,account}.log; do
    if [ -s "$l" ]; then
        echo "s3mount: Swift $(basename "$l") (warnings/errors):"
        sed 's/^[^:]*: //' "$l" | sort | uniq -c | sort -rn | head -5
    fi
    cat "$l" >>"$RAW" 2>/dev/null
done
echo "s3mount: took $(($(date +%s) - T_START)) s; raw output in $RAW"
exit $status
