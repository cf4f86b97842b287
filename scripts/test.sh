#!/usr/bin/env bash
# The project's test command: installs both environments (scripts/install.sh), lints, and runs every
# test. The main suite runs in .venv; tests marked `vllm` run in .venv-vllm against the real engine.
# Extra arguments go to both pytest runs (for example `-k schedule` or `-x`).
#
# A test that cannot run here is a failure, not a skip: EAD_STRICT_SKIPS=1 makes any skip whose reason is not on the
# short list in tests/skip_policy.py (GPU only) fail the run, naming the test and its reason. A run that collects no
# test (pytest exit 5) fails too.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
bash scripts/install.sh all || exit 1
export EAD_STRICT_SKIPS=1

# pytest's exit code, with 5 (no test collected or selected) reported and counted as a failure.
run_pytest() {
  local name=$1 rc=0
  shift
  "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "error: pytest ran no test in $name (exit 5)" >&2
  fi
  return "$rc"
}

echo "== ruff"
.venv/bin/ruff check . || exit 1

status=0
# Two pytest-xdist workers by default (EAD_TEST_WORKERS=0: none): most tests wait on a subprocess, a server or Slurm
# with one core busy, so two workers keep both cores of a 2-core machine working. Each test module goes to one worker
# whole, and the modules sharing the local Slurm cluster or the analysis store go to one worker together
# (tests/conftest.py: SHARED_UNITS and the scheduler hook).
workers=${EAD_TEST_WORKERS:-2}
xdist=()
if [ "$workers" != "0" ]; then xdist=(-n "$workers"); fi
echo "== main environment (.venv)${xdist[*]:+, ${xdist[*]}}"
run_pytest .venv .venv/bin/python -m pytest -m "not vllm" "${xdist[@]}" --durations=15 "$@" || status=$?

if compgen -G "tests/vllm/test_*.py" >/dev/null; then
  echo "== vLLM environment (.venv-vllm)"
  run_pytest .venv-vllm .venv-vllm/bin/python -m pytest -m vllm tests/vllm "$@" || status=$?
fi
exit $status
