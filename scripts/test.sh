#!/bin/bash
# test.sh — `make test`: builds, then runs every suite, each with its own
# time limit, and ends with one summary line. Logs: build/test-logs/.
set -u
cd "$(dirname "$0")/.."
LOGS=build/test-logs
mkdir -p "$LOGS"
T0=$(date +%s)
declare -a NAMES RESULTS
JOBS=${JOBS:-2}
# Each target replays its whole corpus first (the regression check), then
# explores for the rest: 6 s each keeps the stage near a minute and a half
# (longer runs of one target: README.md, `make fuzz`).
FUZZ_SECONDS=${FUZZ_SECONDS:-6}

stage() { # stage NAME TIMEOUT_SECONDS COMMAND...
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    printf '== %-17s ' "$name"
    timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    local dur=$(($(date +%s) - start))
    if [ $rc -eq 0 ]; then
        echo "PASS (${dur}s)"
        RESULTS+=(PASS)
    else
        [ $rc -eq 124 ] && echo "TIMEOUT after ${limit}s" || echo "FAIL rc=$rc (${dur}s)"
        echo "---- last lines of $LOGS/$name.log ----"
        tail -n 40 "$LOGS/$name.log"
        echo "----"
        RESULTS+=(FAIL)
    fi
    NAMES+=("$name")
}

stage build 900 make -j"$JOBS" all
stage unit 300 make --no-print-directory unit
stage unit-asan 900 env ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp" make --no-print-directory -j"$JOBS" SANITIZE=address,undefined OPT=-O1 unit
stage fuzz 600 scripts/fuzz-brief.sh "$FUZZ_SECONDS"
stage config 60 build/bin/refract-gateway -t -c conf/refract.yaml
stage integration 1800 /usr/bin/python3 -m pytest -q -p no:cacheprovider --durations=30 tests/integration
# The same suite against the ASan+UBSan gateway and worker: any report makes
# the process exit non-zero, which the harness turns into a failure. A small
# quarantine keeps RSS close enough to the real build for the memory bounds.
stage san-binaries 900 make --no-print-directory -j"$JOBS" SANITIZE=address,undefined OPT=-O1 \
    build/san/bin/refract-gateway build/san/bin/refract-image-worker build/san/bin/refract-video-worker \
    build/san/bin/refract-storgate-scheduler build/san/bin/refract-prewarm
# libvips' ORC vector paths run here too: the crashes once put down to
# ASan's mmap interception were liborc 0.4.33's unlocked code free, which
# the image worker now serialises (services/image-worker/img_orc.c).
# The 10,000-message pre-warm run is left to the plain stage: under ASan it
# runs the code paths of the 200-message test again, for a minute; and its
# brokers' outage lasts 15 s there, not the plain stage's 60 s. So are the
# plays in Chromium (about 14 s each of a browser playing what the HLS tests
# of test_video and test_hls_fmp4 already fetch and check under ASan): the
# suite's wall time is waiting, not the sanitizer, and a browser's playing
# adds nothing that ASan can see.
stage integration-asan 1800 env REFRACT_BIN="$PWD/build/san/bin" ASAN_OPTIONS=detect_leaks=0:quarantine_size_mb=8 \
    REFRACT_PREWARM_OUTAGE_S=15 \
    UBSAN_OPTIONS=print_stacktrace=1 /usr/bin/python3 -m pytest -q -p no:cacheprovider --durations=30 tests/integration \
    --deselect tests/integration/test_prewarm_scale.py::test_ten_thousand_messages_each_cached_once_one_event_each \
    --ignore tests/integration/test_hls_browser.py
# The threaded gateway under ThreadSanitizer, on the suites that stress its
# threads: reload storms, bus hand-offs, worker deaths, parallel clients,
# TLS handshakes on every thread, resolver threads, cache fills followed
# from every thread and purges; and the storgate scheduler's item, outbox
# and broker threads. (The streaming suite's
# memory bounds do not hold under TSan's shadow memory, so it is not here.)
# Any report aborts the gateway (halt_on_error), which fails the test.
stage tsan-binaries 900 make --no-print-directory -j"$JOBS" SANITIZE=thread OPT=-O1 build/tsan/bin/refract-gateway \
    build/tsan/bin/refract-storgate-scheduler
stage integration-tsan 1800 env REFRACT_BIN="$PWD/build/tsan/bin" REFRACT_WORKER_BIN="$PWD/build/bin/refract-image-worker" \
    REFRACT_VIDEO_WORKER_BIN="$PWD/build/bin/refract-video-worker" \
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp" \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider --durations=30 tests/integration/test_vhosts.py tests/integration/test_bus.py \
    tests/integration/test_hygiene.py tests/integration/test_image.py tests/integration/test_tls.py \
    tests/integration/test_origin_tls.py tests/integration/test_proxy.py tests/integration/test_cache.py \
    tests/integration/test_purge.py tests/integration/test_compress.py \
    tests/integration/test_link.py tests/integration/test_rewrite.py tests/integration/test_tier.py \
    tests/integration/test_redis.py tests/integration/test_origins.py tests/integration/test_video.py \
    tests/integration/test_storgate.py tests/integration/test_storage.py tests/integration/test_srcache.py \
    tests/integration/test_storgate_swift.py

pass=0 fail=0 failed=""
for i in "${!NAMES[@]}"; do
    if [ "${RESULTS[$i]}" = PASS ]; then pass=$((pass + 1)); else fail=$((fail + 1)); failed="$failed ${NAMES[$i]}"; fi
done
total=$(($(date +%s) - T0))
if [ $fail -eq 0 ]; then
    echo "SUMMARY: all ${pass} suites passed in ${total}s (integration: $(grep -h -E '^[0-9]+ passed' $LOGS/integration.log 2>/dev/null | tail -1 || true); under ASan+UBSan: $(grep -h -E '^[0-9]+ passed' $LOGS/integration-asan.log 2>/dev/null | tail -1 || true); under TSan: $(grep -h -E '^[0-9]+ passed' $LOGS/integration-tsan.log 2>/dev/null | tail -1 || true))"
    exit 0
fi
echo "SUMMARY: ${fail} of $((pass + fail)) suites FAILED:${failed} (${total}s)"
exit 1
