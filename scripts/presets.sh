#!/usr/bin/env bash
# Run experiment presets that outlast a working session, on this machine, with resume across interruptions and
# machines; then the experiment's verdict and figures.
#   bash scripts/presets.sh EXPERIMENT PRESET [PRESET ...] [-- SWEEP ARGS ...]
# EXPERIMENT is the MLflow experiment the presets write to (their experiment_name), PRESET an
# sweeps/experiment/<PRESET>.yaml. Each preset is one `sweep.py -m experiment=PRESET` over local processes, two jobs
# at a time (pass e.g. -- hydra.sweeper.max_batch_size=4 on a 4-core machine). Safe to start again at any time:
# FINISHED runs are skipped and interrupted ones resume from their checkpoints (by config hash); a run that two
# presets share (same config hash) is trained once.
#
# Across machines: every finished run's record (params, metrics, tables; no checkpoint or policy) is packed into
# results/EXPERIMENT/runs/<config hash>.tar.gz (experiments.tracking.archive) every 5 minutes and at the end; commit
# that folder. A fresh clone unpacks it first, so the sweep backfills those runs into MLflow and trains only the
# runs no machine has finished. Wrappers: scripts/reproduction.sh, scripts/beyond.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 EXPERIMENT PRESET [PRESET ...] [-- SWEEP ARGS ...]" >&2; exit 2; }
EXPERIMENT=$1; shift
PRESETS=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do PRESETS+=("$1"); shift; done
[ $# -gt 0 ] && shift  # the "--"
for p in "${PRESETS[@]}"; do
  [ -f "sweeps/experiment/$p.yaml" ] || { echo "PRESET: no sweeps/experiment/$p.yaml" >&2; exit 2; }
done
ARCHIVE=results/$EXPERIMENT/runs
RUNS=runs/$EXPERIMENT
archive() { .venv/bin/python -m experiments.tracking.archive "$@"; }

mkdir -p "$RUNS" "$ARCHIVE"
archive restore "$ARCHIVE" "$RUNS"
( while sleep 300; do archive save "$RUNS" "$ARCHIVE" > /dev/null || true; done ) &
SAVER=$!
trap 'kill $SAVER 2>/dev/null || true; archive save "$RUNS" "$ARCHIVE" || true' EXIT

for preset in "${PRESETS[@]}"; do
  for attempt in 1 2 3; do  # a failed job fails the sweep; the rerun resumes it (and skips what finished)
    echo "== $preset sweep, attempt $attempt: $(date -u +%FT%TZ)"
    if .venv/bin/python sweep.py -m "experiment=$preset" hydra/launcher=submitit_local \
        hydra.sweeper.max_batch_size=2 "$@"; then
      break
    fi
  done
done
echo "== verdict: .venv/bin/python -m analysis.verdict --experiment $EXPERIMENT"
.venv/bin/python -m analysis.verdict --experiment "$EXPERIMENT" --out "outputs/verdict/$EXPERIMENT"
echo "== figures: .venv/bin/python -m analysis.figures --experiment $EXPERIMENT --out outputs/figures/$EXPERIMENT"
.venv/bin/python -m analysis.figures --experiment "$EXPERIMENT" --out "outputs/figures/$EXPERIMENT"
