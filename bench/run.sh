#!/bin/bash
# bench/run.sh — `make bench`: runs every refract benchmark (each against its
# peer, side by side) and ends with one table of ratios, their targets and
# PASS / BELOW marks. About 20 minutes on 2 cores (a few more waiting
# for other processes to leave the CPUs alone).
#
#   bench/run.sh                 every bench: proxy, tls, resize, evict, cache, collapse, cache_rss, video, s3, s3mount, storgate_batch, storage, prewarm
#   bench/run.sh proxy           only bench/proxy.sh (or: tls, resize, evict, cache, collapse, cache_rss, video, s3, s3mount, storgate_batch, storage, prewarm)
#
# A target is ">= N" (a ratio, higher is better) unless the bench writes it
# as "<=N" (lower is better: PASS at or below N, else ABOVE); a unit after
# the number ("<=256MB", "<=1/burst") is printed instead of the "x".
#
# A ratio below its target is reported, not fatal: the exit status is 0
# whenever every contender ran, and 1 when a bench could not run one (a
# server did not start, died, or answered wrongly). Everything printed is
# also saved under build/bench-results/ (raw wrk and loop output beside it).
set -u
cd "$(dirname "$0")/.." || exit 1
RESULTS=build/bench-results
mkdir -p "$RESULTS"
STAMP=$(date +%Y%m%d-%H%M%S)
SUMMARY=$RESULTS/$STAMP-summary.tsv
LOG=$RESULTS/$STAMP-run.txt
: >"$SUMMARY"

BENCHES=("$@")
[ ${#BENCHES[@]} -eq 0 ] && BENCHES=(proxy tls resize evict cache collapse cache_rss video s3 s3mount storgate_batch storage prewarm)

if [ ! -x build/bin/refract-gateway ] || [ ! -x build/bin/refract-image-worker ] || [ ! -x build/bin/bench-vips-loop ]; then
    make --no-print-directory all >/dev/null || { echo "bench: the build failed (run make)" >&2; exit 1; }
fi

failed=()
{
    echo "refract benchmarks, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) CPUs, $(uname -r)"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- common services 2>/dev/null || echo ' + local changes')"
    echo
} | tee "$LOG"
for b in "${BENCHES[@]}"; do
    [ -x "bench/$b.sh" ] || { echo "bench: no bench/$b.sh" | tee -a "$LOG" >&2; failed+=("$b"); continue; }
    echo "######## bench/$b.sh" | tee -a "$LOG"
    BENCH_SUMMARY=$SUMMARY BENCH_RAW=$RESULTS/$STAMP-$b-raw.log "bench/$b.sh" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "bench: bench/$b.sh FAILED (exit $rc): a contender could not run" | tee -a "$LOG"
        failed+=("$b")
    fi
    echo | tee -a "$LOG"
done

{
    echo "================================ refract benchmark ratios ================================"
    printf '%-52s %10s %12s  %s\n' "ratio or figure (target: >= higher, <= lower is better)" value target mark
    awk -F'\t' '$3 != "-" {
        t = $3; op = ">="; unit = "x"
        if (substr(t, 1, 2) == "<=" || substr(t, 1, 2) == ">=") { op = substr(t, 1, 2); t = substr(t, 3) }
        n = t + 0; match(t, /^[0-9.]+/); if (RLENGTH < length(t)) unit = substr(t, RLENGTH + 1)
        if (op == "<=") mark = ($2 + 0 <= n && $2 != "nan") ? "PASS" : "ABOVE"
        else mark = ($2 + 0 >= n && $2 != "nan") ? "PASS" : "BELOW"
        printf "%-52s %10s %12s  %s\n", $1, $2 unit, op " " t, mark }' "$SUMMARY"
    echo
    echo "absolute figures (this machine, this run; for context only)"
    awk -F'\t' '$3 == "-" && $1 !~ /NOISE|CORPUS|ALERT/ { printf "  %-58s %s\n", $1, $2 }' "$SUMMARY"
    if grep -qE 'NOISE|CORPUS|ALERT' "$SUMMARY"; then
        echo
        echo "WARNINGS (ALERT: a property the bench checks failed; NOISE/CORPUS: the ratios above are less trustworthy):"
        awk -F'\t' '$1 ~ /NOISE|CORPUS|ALERT/ { printf "  %s: %s\n", $1, $2 }' "$SUMMARY"
    fi
    if [ ${#failed[@]} -gt 0 ]; then
        echo
        echo "FAILED to run: ${failed[*]} (see above)"
    fi
    echo
    echo "saved: $LOG (this output), $SUMMARY, $RESULTS/$STAMP-*-raw.log"
} | tee -a "$LOG"

[ ${#failed[@]} -eq 0 ]
