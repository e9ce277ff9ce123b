#!/bin/bash
# Run the prepared suites against MemclusterStore over each source backend.
#   PYTHON=venv/bin/python MEMCLUSTER_SRC=/path/to/repo ./run.sh OUT LABEL
# Results: OUT/results/LABEL/<suite>-<source>.txt; one summary line per run on stdout.
set -u
out=$1; label=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/results/$label"
for source in memory sqlite vector; do
  for suite in checkpoint sqlite postgres graph; do
    (cd "$out/$suite" && MC_PARITY_SOURCE=$source PYTHONPATH="$MEMCLUSTER_SRC:$here" \
       timeout 1800 "$PYTHON" -m pytest -q -p no:cacheprovider -rfEs "$@" \
       > "$out/results/$label/$suite-$source.txt" 2>&1)
    echo "$source $suite: $(tail -1 "$out/results/$label/$suite-$source.txt")"
  done
done
