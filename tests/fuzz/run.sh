#!/usr/bin/env bash
# run.sh SECONDS -- fuzzes the request parsers for SECONDS and reports in TAP.
# Replays every input of tests/fuzz/corpus first (the seeds and every past
# crash, kept as regression tests), then explores from there.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-20}
work=$ROOT/build/fuzz/corpus
mkdir -p "$work" "$ROOT/tests/fuzz/findings"
log=$(mktemp)
"$ROOT/build/fuzz/fuzz-request" -max_total_time="$secs" -dict="$ROOT/tests/fuzz/json.dict" \
    -artifact_prefix="$ROOT/tests/fuzz/findings/" -print_final_stats=1 \
    "$work" "$ROOT/tests/fuzz/corpus" >"$log" 2>&1
rc=$?
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
if ((rc == 0)); then
    echo "ok 1 - fuzz: ${runs:-?} inputs in ${secs}s, every property held, no sanitizer report"
else
    echo "not ok 1 - fuzz: a crash or a failed property (input saved in tests/fuzz/findings/)"
    grep -E 'property failed|ERROR|SUMMARY|Test unit written' "$log" | head -n 20 | sed 's/^/#   /'
fi
echo "1..1"
rm -f "$log"
exit $((rc != 0))
