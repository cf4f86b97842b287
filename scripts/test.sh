#!/usr/bin/env bash
# The project's test command: installs both environments (scripts/install.sh), lints, and runs every
# test. The main suite runs in .venv; tests marked `vllm` run in .venv-vllm against the real engine.
# Extra arguments go to both pytest runs (for example `-k schedule` or `-x`).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh all || exit 1

echo "== ruff"
.venv/bin/ruff check . || exit 1

status=0
echo "== main environment (.venv)"
.venv/bin/python -m pytest -m "not vllm" "$@" || status=$?

if compgen -G "tests/vllm/test_*.py" >/dev/null; then
  echo "== vLLM environment (.venv-vllm)"
  .venv-vllm/bin/python -m pytest -m vllm tests/vllm "$@" || status=$?
fi
exit $status
