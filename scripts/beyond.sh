#!/usr/bin/env bash
# Beyond the paper (README "Beyond the paper"): the six presets that share the MLflow experiment `beyond`, the
# reviewers' failure case first, resumable across interruptions and machines (scripts/presets.sh), then the
# experiment's verdict and figures. Conditions common to several presets (EAD and fixed 1.0 at seeds 0-2) train once.
#   nohup nice -n 10 bash scripts/beyond.sh > beyond.log 2>&1 &
# Extra arguments go to sweep.py (e.g. hydra.sweeper.max_batch_size=4 on a 4-core machine).
exec bash "$(dirname "$0")/presets.sh" beyond \
  decision_position reverse adaptive matched_entropy growth_ablation cap_ablation -- "$@"
