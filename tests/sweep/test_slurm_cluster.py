"""The local Slurm cluster and submitit on it: submission, job arrays, requeue with resume, preemption checkpoints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.sweep.slurm import START_SCRIPT, slurm_available
from tests.fixtures import jobs, services
from tests.fixtures.services import REPO_ROOT, LocalSlurm, wait_for_result

# The fixtures, made visible to this module (pytest allows `pytest_plugins` only in the root conftest).
slurm_cluster = services.slurm_cluster
slurm_executor = services.slurm_executor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # generous: Slurm on a busy 2-core machine


def _wait_for_step(state_file: Path, at_least: int, timeout: float = 60.0) -> dict:
    """Wait until the ResumableCounter job has written step >= ``at_least`` (so it is running and has progress)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state["step"] >= at_least:
                return state
        time.sleep(0.2)
    pytest.fail(f"the job did not reach step {at_least} within {timeout:.0f} s (state file {state_file})")


def test_local_cluster_is_up_with_an_idle_node(slurm_cluster: LocalSlurm) -> None:
    ok, reason = slurm_available()
    assert ok, reason
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N|%P|%T|%c"], capture_output=True, text=True, check=True, timeout=15
    ).stdout.splitlines()
    rows = {row.split("|")[1]: row.split("|") for row in out}
    assert set(rows) == {"debug*", "urgent"}, out  # debug is the default partition; urgent preempts it
    _node, _partition, state, cpus = rows["debug*"]
    # Idle, unless jobs from a concurrent test session occupy it; never down or drained.
    assert state in {"idle", "mixed", "allocated", "completing"}, out
    assert int(cpus) == os.cpu_count(), out
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"AccountingStorageType\s*=\s*accounting_storage/none", config)
    assert re.search(r"JobRequeue\s*=\s*1", config)


def test_start_script_is_idempotent(slurm_cluster: LocalSlurm) -> None:
    started = time.monotonic()
    result = subprocess.run(["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is up" in result.stdout and "starting" not in result.stdout, result.stdout
    assert time.monotonic() - started < 10


def test_submitit_runs_a_function_with_this_python(slurm_executor, tmp_path: Path) -> None:
    job = slurm_executor().submit(jobs.describe, 21)
    result = wait_for_result(job, timeout=45)
    assert result["value"] == 42
    assert result["python"] == sys.executable
    assert Path(result["cwd"]) == REPO_ROOT
    assert result["partition"] == "debug"
    assert result["job_id"] == job.job_id == result["slurm_job_id"]


def test_job_array_of_two(slurm_executor) -> None:
    executor = slurm_executor()
    executor.update_parameters(slurm_array_parallelism=2)
    array = executor.map_array(jobs.describe, [1, 2])
    results = [wait_for_result(job, timeout=45) for job in array]
    assert [r["value"] for r in results] == [2, 4]
    array_ids = {r["array_job_id"] for r in results}
    assert len(array_ids) == 1 and None not in array_ids
    assert sorted(r["array_task_id"] for r in results) == ["0", "1"]
    # current_slurm_job_id() inside a task is "<array job>_<task>", the id submitit and squeue use.
    assert [r["job_id"] for r in results] == [job.job_id for job in array]


def test_requeued_job_resumes_from_its_state_file(slurm_executor, tmp_path: Path) -> None:
    """`scontrol requeue` kills the running job (SIGTERM, then SIGKILL: no checkpoint call) and queues it again;
    the second run must continue from the progress file, not count from zero."""
    state_file = tmp_path / "counter.json"
    job = slurm_executor().submit(jobs.ResumableCounter(), str(state_file), 24, 0.5)
    before = _wait_for_step(state_file, at_least=3)
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, capture_output=True, timeout=30)
    state = wait_for_result(job, timeout=200)

    assert state["step"] == 24
    assert len(state["attempts"]) == 2, state["attempts"]
    first, second = state["attempts"]
    assert (first["restart_count"], second["restart_count"]) == (0, 1)
    assert second["file_step"] >= before["step"] > 0  # resumed from the file ...
    assert second["pickled_step"] == 0  # ... not from a checkpoint: none was taken
    assert state["checkpoints"] == []
    # Every step was done exactly once, first by attempt 0, then by attempt 1: it continued, it did not restart.
    assert len(state["steps_done_by"]) == 24
    assert state["steps_done_by"] == sorted(state["steps_done_by"]) and set(state["steps_done_by"]) == {0, 1}


def test_preemption_sends_usr2_and_the_checkpoint_resumes(slurm_executor, tmp_path: Path) -> None:
    """Real preemption: a job in the higher-priority partition `urgent` needs the node, so Slurm requeues the
    running `debug` job (PreemptMode=REQUEUE) and, with preempt_send_user_signal, first sends it the --signal
    (USR2). submitit then calls checkpoint(), dumps the returned DelayedSubmission and requeues the job itself; the
    next run gets the checkpointed object back. (`scancel --signal=USR2 <id>` takes the same path.)"""
    state_file = tmp_path / "counter.json"
    job = slurm_executor(slurm_exclusive=True).submit(jobs.ResumableCounter(), str(state_file), 24, 0.5)
    _wait_for_step(state_file, at_least=3)
    urgent = subprocess.run(
        ["sbatch", "--parsable", "--partition=urgent", "--mem=100M", "--output=/dev/null", "--wrap=sleep 1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    try:
        state = wait_for_result(job, timeout=200)
    finally:
        subprocess.run(["scancel", urgent], capture_output=True, check=False)

    assert state["step"] == 24
    assert len(state["attempts"]) == 2, state["attempts"]
    first, second = state["attempts"]
    assert (first["restart_count"], second["restart_count"]) == (0, 1)
    assert len(state["checkpoints"]) == 1 and state["checkpoints"][0] >= 3
    # The requeued run got the checkpointed object (its step) through the DelayedSubmission submitit dumped.
    assert second["pickled_step"] == state["checkpoints"][0]
    assert second["checkpoints_seen"] == state["checkpoints"]
    assert len(state["steps_done_by"]) == 24 and set(state["steps_done_by"]) == {0, 1}
    log = job.paths.stdout.read_text() + job.paths.stderr.read_text()
    assert "this job is preempted" in log and "Requeued job" in log
