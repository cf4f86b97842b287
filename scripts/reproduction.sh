#!/usr/bin/env bash
# The full reproduction on this machine (README "Does EAD beat fixed temperatures here?"): experiment=reproduction,
# two jobs at a time as local processes, resumable across interruptions and machines (scripts/presets.sh), then its
# verdict and figures. In the background, surviving a closed terminal:
#   nohup bash scripts/reproduction.sh > reproduction.log 2>&1 &
# Extra arguments go to sweep.py (e.g. hydra.sweeper.max_batch_size=4 on a 4-core machine).
exec bash "$(dirname "$0")/presets.sh" reproduction reproduction -- "$@"
