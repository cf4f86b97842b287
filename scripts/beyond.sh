#!/usr/bin/env bash
# Beyond the paper (README "Beyond the paper"): the 36 runs of the six presets that share the MLflow experiment
# `beyond`, resumable across interruptions and machines (scripts/presets.sh). experiment=beyond runs them all in one
# sweep (no half-empty batches); each preset's own sweep then finds its runs FINISHED (the same config hashes) and
# skips them, so the six commands in the README are checked, not repeated. Then the experiment's verdict and figures.
#   nohup nice -n 10 bash scripts/beyond.sh > beyond.log 2>&1 &
# Extra arguments go to sweep.py (e.g. hydra.sweeper.max_batch_size=4 on a 4-core machine).
exec bash "$(dirname "$0")/presets.sh" beyond \
  beyond decision_position reverse adaptive matched_entropy growth_ablation cap_ablation -- "$@"
