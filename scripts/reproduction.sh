#!/usr/bin/env bash
# The full reproduction on this machine (README "Does EAD beat fixed temperatures here?"): experiment=reproduction,
# two jobs at a time as local processes, then its verdict and figures. Safe to start again at any time: FINISHED runs
# are skipped and interrupted ones resume from their checkpoints (by config hash), so after an interruption run it
# again. In the background, surviving a closed terminal:
#   nohup bash scripts/reproduction.sh > reproduction.log 2>&1 &
# Extra arguments go to sweep.py (e.g. hydra.sweeper.max_batch_size=4 on a 4-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."

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
