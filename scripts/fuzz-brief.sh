#!/bin/sh
# fuzz-brief.sh SECONDS — builds the libFuzzer targets and runs each for a
# short while on a copy of its seed corpus; any crash fails.
set -eu
secs=${1:-20}
make --no-print-directory fuzz
for bin in build/fuzz/fuzz_*; do
    name=$(basename "$bin")
    work=$(mktemp -d)
    [ -d "fuzz/corpus/$name" ] && cp -r "fuzz/corpus/$name/." "$work/"
    echo "fuzz: $name for ${secs}s"
    "$bin" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="build/fuzz/$name-" "$work" 2>&1 | tail -n 12
    rm -rf "$work"
done
