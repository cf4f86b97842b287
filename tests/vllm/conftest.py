"""Session fixtures for the vLLM tests: a tiny model, the engine-scenario run and a `vllm serve` process.

The engines run in subprocesses (vLLM spawns its own processes and threads); the fixtures start the
ones the selected tests need at the beginning of the session, so the server boots while the engine
scenarios run, and each test then waits only for the results it asserts on.

Nothing here imports vLLM: the main environment (.venv, no vLLM) collects this directory too and
deselects it by marker.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCENARIO_TIMEOUT_S = 420
SERVER_TIMEOUT_S = 420
FQCN = "ead_core.vllm_processor:EADLogitsProcessor"


def _tail(path: Path, n: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no log>"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# vLLM 0.24 (verl 0.9.1's pin, .venv-recipe) has Model Runner V2 but not its logits-processor interface: there
# vLLM runs custom logits processors on the V1 runner only (test_processor_unit.py checks that fallback). The
# reason starts with an entry of tests/skip_policy.py's ALLOWED_SKIP_REASONS.
NO_MRV2_REASON = (
    "vLLM has no Model Runner V2 logits-processor interface (vllm.v1.worker.gpu.sample.logits_processor, "
    "vLLM < 0.32): custom logits processors run on the V1 runner only"
)


def has_mrv2_interface() -> bool:
    """Whether the installed vLLM has Model Runner V2's logits-processor interface (0.32 yes, 0.24 no)."""
    try:
        import vllm.v1.worker.gpu.sample.logits_processor  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def mrv2() -> None:
    """For tests of the Model Runner V2 path: skips (NO_MRV2_REASON) where the installed vLLM lacks the interface."""
    if not has_mrv2_interface():
        pytest.skip(NO_MRV2_REASON)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.vllm.tiny_model import build_tiny_llama

    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny_llama")))


@pytest.fixture(scope="session")
def hf_model(tiny_model_dir: str) -> Any:
    from tests.vllm.reference import load_model

    return load_model(tiny_model_dir)


class _Background:
    """The subprocesses of this session, started together and stopped at its end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.started: dict[str, float] = {}
        self.port = 0

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        log = self.workdir / f"{name}.log"
        self.logs[name] = log
        self.started[name] = time.monotonic()
        with open(log, "wb") as f:
            self.procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def background(
    request: pytest.FixtureRequest, tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Background]:
    """Start, at once, the server and the scenario script if any selected test needs them."""
    needed = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    bg = _Background(tmp_path_factory.mktemp("vllm_runs"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    try:
        if "server_url" in needed:
            bg.port = _free_port()
            # vLLM's own `vllm serve` in its default multiprocessing mode: the FQCN is imported in the worker
            # process, and the entry point is loaded too (the guard keeps EAD single). vllm_cli.py only
            # works around the CPU wheel's distribution name (see its docstring).
            cmd = [sys.executable, str(HERE / "vllm_cli.py"), "serve", tiny_model_dir]
            cmd += ["--host", "127.0.0.1", "--port", str(bg.port), "--dtype", "float32", "--enforce-eager"]
            cmd += ["--gpu-memory-utilization", "0.2", "--max-model-len", "256", "--max-num-seqs", "8"]
            cmd += ["--seed", "0", "--logprobs-mode", "processed_logprobs", "--logits-processors", FQCN]
            bg.start("server", cmd, env)
        if "engine_results" in needed:
            out = bg.workdir / "engine_results.json"
            cmd = [sys.executable, str(HERE / "engine_scenarios.py"), "--model", tiny_model_dir, "--out", str(out)]
            bg.start("scenarios", cmd, {**env, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
        yield bg
    finally:
        bg.stop()


@pytest.fixture(scope="session")
def engine_results(background: _Background) -> dict[str, Any]:
    """The JSON written by engine_scenarios.py (fails with the script's log if it did not finish)."""
    proc, log = background.procs["scenarios"], background.logs["scenarios"]
    try:
        rc = proc.wait(timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"engine_scenarios.py ran past {SCENARIO_TIMEOUT_S}s:\n{_tail(log)}")
    path = background.workdir / "engine_results.json"
    if rc != 0 or not path.exists():
        pytest.fail(f"engine_scenarios.py exited with {rc}:\n{_tail(log)}")
    results = json.loads(path.read_text())
    results["timing"]["wall_s"] = time.monotonic() - background.started["scenarios"]
    return results


@pytest.fixture(scope="session")
def server_url(background: _Background) -> str:
    """Base URL of the `vllm serve` process once /health answers."""
    proc, log = background.procs["server"], background.logs["server"]
    url = f"http://127.0.0.1:{background.port}"
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return url
        except OSError:
            pass
        time.sleep(1.0)
    pytest.fail(f"vllm serve did not become healthy within {SERVER_TIMEOUT_S}s:\n{_tail(log)}")
