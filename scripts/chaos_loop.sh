#!/usr/bin/env bash
# Run the chaos suite (or SUITE=tests/multinode, any fault suite) N times in a row; stop
# at the first failure.
#   scripts/chaos_loop.sh 20            20 runs on the machine as it is
#   scripts/chaos_loop.sh 10 --load     10 runs while one core is kept busy by a CPU burner
#   SUITE=tests/multinode scripts/chaos_loop.sh 20
# Every run gets its own seed (printed); the rows of every run go to $REPORT (default
# chaos-report.jsonl), one JSON line per fault, for the chaos table.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-20}"
load="${2:-}"
report="${REPORT:-chaos-report.jsonl}"
python="${PYTHON:-.venv/bin/python}"
suite="${SUITE:-tests/chaos}"
export MEMCLUSTER_REQUIRE_SERVICES="${MEMCLUSTER_REQUIRE_SERVICES:-1}"

burner=""
if [ "$load" = "--load" ]; then
    "$python" -c 'while True: pass' &
    burner=$!
    trap 'kill "$burner" 2>/dev/null || true' EXIT
    echo "load: a CPU burner (pid $burner) keeps one core busy"
fi

: > "$report"
passed=0
start=$(date +%s)
for i in $(seq 1 "$runs"); do
    seed=$(( (RANDOM << 15) | RANDOM ))
    t0=$(date +%s)
    if MEMCLUSTER_TEST_SEED="$seed" MEMCLUSTER_CHAOS_REPORT="$report" \
            "$python" -m pytest -q -p no:cacheprovider "$suite" > "chaos-run-$i.log" 2>&1; then
        passed=$((passed + 1))
        echo "run $i/$runs: passed (seed $seed, $(( $(date +%s) - t0 ))s)"
        rm -f "chaos-run-$i.log"
    else
        echo "run $i/$runs: FAILED (seed $seed); log: chaos-run-$i.log"
        tail -n 30 "chaos-run-$i.log"
        break
    fi
done
echo "loop over $suite: $passed/$runs passed${load:+ under load} in $(( $(date +%s) - start ))s; rows in $report"
[ "$passed" -eq "$runs" ]
