#!/bin/sh
# fuzz-brief.sh SECONDS — builds the libFuzzer targets and runs each for a
# short while on a copy of its seed corpus; any crash fails (exit 1, with
# the crashing input kept as build/fuzz/NAME-crash-*).
set -eu
secs=${1:-20}
make --no-print-directory -j"${JOBS:-2}" fuzz
failed=""
for bin in build/fuzz/fuzz_*; do
    name=$(basename "$bin")
    case "$name" in *-crash-* | *-leak-* | *-timeout-* | *-oom-*) continue ;; esac # artifacts, not targets
    work=$(mktemp -d)
    [ -d "fuzz/corpus/$name" ] && cp -r "fuzz/corpus/$name/." "$work/"
    echo "fuzz: $name for ${secs}s"
    rc=0
    "$bin" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="build/fuzz/$name-" "$work" \
        >"$work.log" 2>&1 || rc=$?
    tail -n 12 "$work.log"
    if [ "$rc" -ne 0 ]; then
        echo "fuzz: $name FAILED (exit $rc); the input is kept under build/fuzz/$name-*"
        grep -m 5 -E "ERROR|SUMMARY|abort|Test unit written" "$work.log" || true
        failed="$failed $name"
    fi
    rm -rf "$work" "$work.log"
done
if [ -n "$failed" ]; then
    echo "fuzz: crashes in:$failed"
    exit 1
fi
