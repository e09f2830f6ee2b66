#!/bin/bash
# evict.sh — hit ratios of the edge cache's eviction policies on synthetic
# Zipf traces (bench/evict.c, common/rf_evict.c): S3-FIFO against plain LRU,
# the cache at 10% of the working set. No servers: a deterministic
# simulation, so it is not disturbed by other load.
#
#   bench/evict.sh                      (about 12 s)
#   EVICT_REQUESTS=1000000 bench/evict.sh
set -u
. "$(dirname "$0")/lib.sh"
bench_init evict
make -s --no-print-directory -C "$ROOT" build/bin/bench-evict >/dev/null || die "cannot build bench-evict"
out=$("$ROOT/build/bin/bench-evict" "${EVICT_REQUESTS:-4000000}" "${EVICT_OBJECTS:-200000}") || die "bench-evict failed"
echo "$out"
worst=$(echo "$out" | awk '/worst trace/ { sub("x", "", $NF); print $NF }')
[ -n "$worst" ] || die "no result line"
summary "evict: s3fifo/lru hit ratio, worst trace" "$worst" 1.0
