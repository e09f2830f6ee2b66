#!/bin/sh
# fuzz-brief.sh SECONDS — builds the libFuzzer targets and runs each for a
# short while on a copy of its seed corpus, JOBS (default 2) at a time (each
# libFuzzer run is one process on one core); any crash fails (exit 1, with
# the crashing input kept as build/fuzz/NAME-crash-*).
set -eu
secs=${1:-20}
jobs=${JOBS:-2}
make --no-print-directory -j"$jobs" fuzz
results=$(mktemp -d)

# fuzz_one BIN: one target; its log and outcome go to $results.
fuzz_one() {
    bin=$1
    name=$(basename "$bin")
    work=$(mktemp -d)
    [ -d "fuzz/corpus/$name" ] && cp -r "fuzz/corpus/$name/." "$work/"
    rc=0
    "$bin" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="build/fuzz/$name-" "$work" \
        >"$results/$name.log" 2>&1 || rc=$?
    [ "$rc" -ne 0 ] && echo "$rc" >"$results/$name.failed"
    rm -rf "$work"
}

running=0
for bin in build/fuzz/fuzz_*; do
    name=$(basename "$bin")
    case "$name" in *-crash-* | *-leak-* | *-timeout-* | *-oom-*) continue ;; esac # artifacts, not targets
    echo "fuzz: $name for ${secs}s"
    fuzz_one "$bin" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait
        running=0
    fi
done
wait

failed=""
for log in "$results"/*.log; do
    name=$(basename "$log" .log)
    echo "---- $name"
    tail -n 12 "$log"
    if [ -f "$results/$name.failed" ]; then
        echo "fuzz: $name FAILED (exit $(cat "$results/$name.failed")); the input is kept under build/fuzz/$name-*"
        grep -m 5 -E "ERROR|SUMMARY|abort|Test unit written" "$log" || true
        failed="$failed $name"
    fi
done
rm -rf "$results"
if [ -n "$failed" ]; then
    echo "fuzz: crashes in:$failed"
    exit 1
fi
