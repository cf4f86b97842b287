"""``python sweep.py`` as a user runs it: a job killed twice (SIGKILL, then SIGTERM) resumes into the same MLflow run
with every step exactly once, and an invalid sweep launches nothing."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.sweep.helpers import (
    jsonl_steps,
    output,
    run_sweep,
    runs_of,
    smoke,
    sqlite_run_status,
    start_sweep,
    steps,
    wait_for,
)

pytestmark = pytest.mark.slow

STEPS = 50  # long enough to be caught mid-run twice, each step still a fraction of a second


def _interrupt(args: list[str], cwd: Path, run_dir: Path, after: int, sig: signal.Signals) -> int:
    """Start the job, wait until its run directory holds ``after`` steps, send ``sig``; return the exit code."""
    proc = start_sweep(args, cwd, cwd / "sweep.log")
    try:
        wait_for(lambda: jsonl_steps(run_dir) >= after or proc.poll() is not None, 240, f"{after} steps in {run_dir}")
        assert proc.poll() is None, f"the job ended before it could be interrupted:\n{(cwd / 'sweep.log').read_text()}"
        assert jsonl_steps(run_dir) < STEPS
        proc.send_signal(sig)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(600)
def test_killed_job_resumes_into_the_same_run_with_each_step_once(tiny_policy_dir: str, tmp_path: Path) -> None:
    args = smoke(tiny_policy_dir, "sampling=ead", f"steps={STEPS}", "eval_interval=100")
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"

    def run_dir() -> Path:
        dirs = list((tmp_path / "runs" / "smoke").glob("*"))
        return dirs[0] if dirs else tmp_path / "runs" / "smoke" / "none"

    # 1. SIGKILL: no handler runs, MLflow leaves the run RUNNING.
    proc = start_sweep(args, tmp_path, tmp_path / "sweep.log")
    try:
        wait_for(lambda: jsonl_steps(run_dir()) >= 3 or proc.poll() is not None, 240, "3 steps")
        assert proc.poll() is None, (tmp_path / "sweep.log").read_text()
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    [run] = runs_of(uri, "smoke")
    run_id = run.info.run_id
    assert sqlite_run_status(db, run_id) == "RUNNING"
    first = jsonl_steps(run_dir())

    # 2. SIGTERM: the job marks the run KILLED and exits 128 + 15.
    code = _interrupt(args, tmp_path, run_dir(), first + 3, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, (tmp_path / "sweep.log").read_text()[-3000:]
    [run] = runs_of(uri, "smoke")
    assert run.info.run_id == run_id and run.info.status == "KILLED"
    assert run.data.tags["end_reason"] == "signal SIGTERM" and run.data.tags["attempt"] == "2"

    # 3. The same command again: continues the run from the checkpoint and finishes it.
    result = run_sweep(args, tmp_path)
    assert result.returncode == 0, output(result)
    assert f"continuing MLflow run {run_id} (KILLED), attempt 3" in result.stdout + result.stderr
    [run] = runs_of(uri, "smoke")
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert (run.data.tags["attempt"], run.data.tags["interruptions"]) == ("3", "2")  # SIGKILL and SIGTERM
    assert run.data.tags["end_reason"] == "completed"
    assert steps(uri, run_id, "train/reward_mean") == list(range(STEPS))
    assert steps(uri, run_id, "eval/pass_at_2") == [0, STEPS]

    # 4. And once more: nothing to do.
    result = run_sweep(args, tmp_path)
    assert result.returncode == 0 and "skipped (force=true re-runs)" in result.stdout + result.stderr, output(result)
    assert len(runs_of(uri, "smoke")) == 1


@pytest.mark.timeout(300)
def test_an_invalid_sweep_submits_nothing(tiny_policy_dir: str, tmp_path: Path) -> None:
    args = ["-m", *smoke(tiny_policy_dir, "sampling=ead", "seed=0,1", "sampling.tau_min=0.1,-1")]
    args.append("hydra/launcher=submitit_local")
    result = run_sweep(args, tmp_path)
    assert result.returncode == 1, output(result)
    err = result.stderr
    assert "2 of 4 sweep job(s) have an invalid config; nothing was launched" in err, output(result)
    assert "sampling.tau_min must be" in err and "sampling.tau_min=-1" in err
    # Nothing was created or submitted: no tracking store, no run directory, no submitit folder, no job output.
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
    assert not list(tmp_path.rglob(".submitit")) and not list(tmp_path.rglob("*.pkl"))
