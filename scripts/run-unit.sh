#!/bin/sh
# run-unit.sh BIN... — runs each cmocka binary, prints one line per binary
# and exits non-zero if any failed.
fail=0
for t in "$@"; do
    if out=$("$t" 2>&1); then
        echo "unit: PASS $(basename "$t")"
    else
        echo "$out"
        echo "unit: FAIL $(basename "$t")"
        fail=1
    fi
done
exit $fail
