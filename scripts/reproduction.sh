#!/usr/bin/env bash
# The full reproduction on this machine (README "Does EAD beat fixed temperatures here?"): experiment=reproduction,
# two jobs at a time as local processes, then its verdict and figures. Safe to start again at any time: FINISHED runs
# are skipped and interrupted ones resume from their checkpoints (by config hash), so after an interruption run it
# again. In the background, surviving a closed terminal:
#   nohup bash scripts/reproduction.sh > reproduction.log 2>&1 &
# Extra arguments go to sweep.py (e.g. hydra.sweeper.max_batch_size=4 on a 4-core machine).
#
# Across machines: every finished run's record (params, metrics, tables; no checkpoint or policy) is packed into
# results/reproduction/runs/<config hash>.tar.gz (experiments.tracking.archive) every 5 minutes and at the end;
# commit that folder. A fresh clone unpacks it first, so the sweep backfills those runs into MLflow and trains only
# the runs no machine has finished.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHIVE=results/reproduction/runs
RUNS=runs/reproduction
archive() { .venv/bin/python -m experiments.tracking.archive "$@"; }

mkdir -p "$RUNS"
[ -d "$ARCHIVE" ] && archive restore "$ARCHIVE" "$RUNS"
( while sleep 300; do archive save "$RUNS" "$ARCHIVE" > /dev/null || true; done ) &
SAVER=$!
trap 'kill $SAVER 2>/dev/null || true; archive save "$RUNS" "$ARCHIVE" || true' EXIT

for attempt in 1 2 3; do  # a failed job fails the sweep; the rerun resumes it (and skips what finished)
  echo "== reproduction sweep, attempt $attempt: $(date -u +%FT%TZ)"
  if .venv/bin/python sweep.py -m experiment=reproduction hydra/launcher=submitit_local \
      hydra.sweeper.max_batch_size=2 "$@"; then
    break
  fi
done
echo "== verdict: .venv/bin/python -m analysis.verdict --experiment reproduction"
.venv/bin/python -m analysis.verdict --experiment reproduction --out outputs/verdict/reproduction
echo "== figures: .venv/bin/python -m analysis.figures --experiment reproduction --out outputs/figures/reproduction"
.venv/bin/python -m analysis.figures --experiment reproduction --out outputs/figures/reproduction
