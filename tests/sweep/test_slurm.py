"""A 2-job sweep through ``submitit_slurm`` (the ``local`` profile of slurm/profiles) on the real single-node Slurm
cluster the session starts; one job is preempted mid-run with USR2 (as the ``urgent`` partition or a time limit would),
is requeued by submitit and finishes in the SAME MLflow run with every step exactly once. Tracking is the default
SQLite file, which the sweep serves to its jobs through an ``mlflow server`` it starts. Skipped only where the Debian
packages of Slurm cannot be installed (the ``slurm_cluster`` fixture says why)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.services import LocalSlurm
from tests.sweep.helpers import jsonl_steps, runs_of, smoke, sqlite_run_status, start_sweep, steps, wait_for

pytestmark = pytest.mark.slow

STEPS = 40


def _runs_in_db(db: Path) -> list[dict[str, Any]]:
    """Runs with their tags, read straight from the SQLite store the sweep's server writes (read-only)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
            rows = con.execute("SELECT run_uuid, name, status FROM runs").fetchall()
            out = []
            for run_id, name, status in rows:
                tags = dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
                out.append({"run_id": run_id, "name": name, "status": status, "tags": tags})
            return out
    except sqlite3.OperationalError:  # tables not created yet
        return []


@pytest.fixture(scope="module")
def preempted_sweep(
    slurm_cluster: LocalSlurm, tiny_policy_dir: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    cwd = tmp_path_factory.mktemp("slurm-sweep")
    db, log = cwd / "mlflow.db", cwd / "sweep.log"
    args = ["-m", *smoke(tiny_policy_dir, f"steps={STEPS}", "eval_interval=100")]
    args += ["hydra/launcher=local", "hydra.launcher.mem_gb=2", "hydra.sweeper.poll_s=1"]
    proc = start_sweep(args, cwd, log)
    info: dict[str, Any] = {"cwd": cwd, "db": db, "log": log, "uri": f"sqlite:///{db}"}
    try:

        def ead_run_going() -> dict[str, Any] | None:
            assert proc.poll() is None, f"the sweep ended early:\n{log.read_text()[-4000:]}"
            for run in _runs_in_db(db):
                if run["name"].startswith("grpo-EAD") and run["tags"].get("slurm_job_id"):
                    if jsonl_steps(Path(run["tags"]["run_dir"])) >= 3:
                        return run
            return None

        run = wait_for(ead_run_going, 400, "the EAD job to log 3 steps", interval=0.2)
        info["unauthenticated"] = _unauthenticated_status(log.read_text())
        info["run_id"], info["job_id"] = run["run_id"], run["tags"]["slurm_job_id"]
        info["steps_before"] = jsonl_steps(Path(run["tags"]["run_dir"]))
        assert info["steps_before"] < STEPS, "the job finished before it could be preempted"
        subprocess.run(["scancel", "--signal=USR2", info["job_id"]], check=True, capture_output=True)
        wait_for(lambda: sqlite_run_status(db, info["run_id"]) == "KILLED", 60, "the run to be marked KILLED")
        info["killed_seen"] = True
        deadline = time.monotonic() + 480
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        info["returncode"] = proc.poll()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
            subprocess.run(["scancel", "--name=sweep"], check=False, capture_output=True)
    info["output"] = log.read_text()
    return info


def _unauthenticated_status(output: str) -> tuple[str, int]:
    """(URL, HTTP status) of a request without credentials to the sweep's server, as anyone on the network would."""
    import urllib.error
    import urllib.request

    match = re.search(r"mlflow server for \S+ at (http://\S+) ", output)
    assert match, output[-3000:]
    url = match[1]
    try:
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10) as r:
            return url, int(r.status)
    except urllib.error.HTTPError as e:
        return url, int(e.code)


@pytest.mark.timeout(900)
def test_the_sweeps_server_binds_one_address_and_refuses_requests_without_credentials(
    preempted_sweep: dict[str, Any],
) -> None:
    info = preempted_sweep
    url, status = info["unauthenticated"]
    assert status == 401, url  # the jobs, with the sweep's credentials in their environment, logged (tests below)
    assert not url.startswith(("http://0.0.0.0", "http://127.")), url
    (ini,) = Path(info["cwd"]).rglob("mlflow-auth.ini")
    password = re.search(r"admin_password = (\S+)", ini.read_text())[1]
    assert oct(ini.stat().st_mode & 0o777) == "0o600"
    # Nowhere else: the sweep's output, Hydra's saved configs, submitit's logs and pickles, MLflow params and tags.
    files = [p for p in Path(info["cwd"]).rglob("*") if p.is_file() and p != ini]
    leaked = [p for p in files if password.encode() in p.read_bytes()]
    assert leaked == [] and password not in info["output"]
    for run in runs_of(info["uri"], "smoke"):
        assert password not in repr(run.data.params) + repr(run.data.tags)


@pytest.mark.timeout(900)
def test_two_job_sweep_through_submitit_slurm(preempted_sweep: dict[str, Any]) -> None:
    info = preempted_sweep
    assert info["returncode"] == 0, info["output"][-5000:]
    assert "submitted 2 slurm job(s)" in info["output"]
    assert "mlflow server for sqlite:" in info["output"]  # SQLite store served to the jobs by the sweep
    runs = runs_of(info["uri"], "smoke")
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    job_ids = sorted(r.data.tags["slurm_job_id"] for r in runs)
    array = job_ids[0].split("_")[0]
    assert job_ids == [f"{array}_0", f"{array}_1"]  # one array of two tasks
    for run in runs:
        assert steps(info["uri"], run.info.run_id, "train/reward_mean") == list(range(STEPS))
        assert steps(info["uri"], run.info.run_id, "eval/pass_at_2") == [0, STEPS]


@pytest.mark.timeout(900)
def test_preempted_job_is_requeued_and_finishes_in_the_same_run(preempted_sweep: dict[str, Any]) -> None:
    info = preempted_sweep
    assert info["killed_seen"] and info["returncode"] == 0, info["output"][-5000:]
    ead = [r for r in runs_of(info["uri"], "smoke") if r.info.run_name.startswith("grpo-EAD")]
    assert len(ead) == 1, "the requeued job must continue its run, not start a new one"
    run = ead[0]
    assert run.info.run_id == info["run_id"] and run.info.status == "FINISHED"
    tags = run.data.tags
    assert (tags["attempt"], tags["interruptions"], tags["end_reason"]) == ("2", "1", "completed")
    assert tags["slurm_job_id"] == info["job_id"]  # requeued under the same Slurm id
    assert steps(info["uri"], run.info.run_id, "train/reward_mean") == list(range(STEPS))
    # The second attempt resumed from the checkpoint, not from step 0.
    out = Path(tags["run_dir"]).parent.parent.parent / "multirun"
    job_logs = "".join(p.read_text(errors="replace") for p in out.rglob(f"{info['job_id']}_*_log.*"))
    assert "this job is preempted" in job_logs and "resumed from" in job_logs, job_logs[-3000:]
