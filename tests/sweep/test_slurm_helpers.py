"""Slurm and MLflow-server helpers outside a Slurm job, and the start script's answers for users who cannot start it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from experiments.sweep.slurm import START_SCRIPT, current_slurm_job_id, slurm_available, slurm_job_state
from experiments.tracking.server import start_mlflow_server
from tests.fixtures import services
from tests.fixtures.services import LocalSlurm

# The fixture, made visible to this module (pytest allows `pytest_plugins` only in the root conftest).
slurm_cluster = services.slurm_cluster


def test_current_slurm_job_id(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    assert current_slurm_job_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    assert current_slurm_job_id() == "41"
    # An array task has its own SLURM_JOB_ID, but squeue/scontrol/submitit name it <array job>_<task>.
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert current_slurm_job_id() == "40_1"


def test_slurm_available_says_why_not(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo here
    ok, reason = slurm_available()
    assert not ok and "sinfo is not on PATH" in reason


def test_slurm_available_and_job_state_on_the_local_cluster(slurm_cluster: LocalSlurm) -> None:
    ok, reason = slurm_available()
    assert ok and "debug" in reason, reason
    assert slurm_job_state("999999999") is None  # unknown job


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root and runuser")
def test_start_script_as_a_user_without_root(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """Anyone can check a running cluster (the script then only prints status); starting one needs root, and the
    script says so with exit code 2, which ensure_local_slurm() reports as "cannot host" (a skip), not a failure."""
    as_nobody = ["runuser", "-u", "nobody", "--", "env"]
    up = subprocess.run([*as_nobody, "bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=60)
    assert up.returncode == 0 and "is up" in up.stdout, up.stdout + up.stderr
    absent = tmp_path / "never-started"
    down = subprocess.run(
        [*as_nobody, f"EAD_SLURM_DIR={absent}", "bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 2 and "needs root" in down.stderr, down.stdout + down.stderr


def test_mlflow_server_that_does_not_answer_in_time_is_stopped(tmp_path: Path) -> None:
    """The time-out path: a clear error naming the log, and no server process left behind."""
    log = tmp_path / "server.log"
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="did not answer /health within 1 s") as excinfo:
        start_mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", timeout=1, log_path=log)
    assert str(log) in str(excinfo.value) and "mlflow server" in log.read_text()
    assert time.monotonic() - started < 30
    leftovers = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True, check=True).stdout
    assert not [line for line in leftovers.splitlines() if str(tmp_path) in line and not line.startswith("Z")]


# Launchers that return at once and start the real daemon a second later, as a loaded machine does: the daemon's
# pid file appears well after the command that started it has returned. `-C` / `-V` (hardware, version) stay
# synchronous.
_SLOW_LAUNCHER = """#!/usr/bin/env bash
case "$1" in -C | -V) exec {real} "$@" ;; esac
(sleep 1.5; exec {real} "$@") </dev/null >/dev/null 2>&1 &
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(os.geteuid() != 0, reason="starting a cluster needs root")
def test_start_script_survives_stale_pid_files_and_slow_daemons(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    """After a killed run (machine restart, SIGKILL) the pid files name dead processes. The start script must not read
    such a file as "the daemon it just launched has exited" while that daemon has not written its own yet (CI failed
    so once). Checked on a second cluster (own directory, ports and name) so the session's cluster is untouched."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("slurmctld", "slurmd"):
        real = shutil.which(name, path=os.environ["PATH"] + ":/usr/sbin:/sbin")
        assert real is not None
        (bin_dir / name).write_text(_SLOW_LAUNCHER.format(real=real))
        (bin_dir / name).chmod(0o755)
    state = tmp_path / "slurm"
    (state / "run").mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    for name in ("slurmctld", "slurmd"):
        (state / "run" / f"{name}.pid").write_text(f"{dead.pid}\n")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "EAD_SLURM_DIR": str(state),
        "EAD_SLURM_CLUSTER": "ead-stale-test",
        "EAD_SLURM_CTLD_PORT": "6837",
        "EAD_SLURM_SLURMD_PORT": "6838",
    }
    env.pop("SLURM_CONF", None)
    try:
        started = subprocess.run(["bash", str(START_SCRIPT)], env=env, capture_output=True, text=True, timeout=180)
        output = started.stdout + started.stderr
        assert started.returncode == 0, output
        assert "cluster 'ead-stale-test' is up" in output, output
        assert output.count("removing stale pid file") == 2, output
    finally:
        subprocess.run(
            ["bash", str(START_SCRIPT.parent / "stop_local_slurm.sh"), "--purge"],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
    # The session's cluster still answers.
    ok, reason = slurm_available()
    assert ok, reason
