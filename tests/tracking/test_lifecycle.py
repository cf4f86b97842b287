"""The run lifecycle (``experiments.tracking.TrackedRun``) against a real SQLite MLflow store: experiment kind and
source tags, skip / continue / create by config hash, force, end states, the run-directory lock, backfill into a
fresh store and publishing a finished run directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from experiments.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    JsonlLogger,
    RunAlreadyFinished,
    RunDirBusy,
    RunIdentity,
    TrackedRun,
    ensure_experiment,
    make_client,
)
from tests.fixtures.services import REPO_ROOT, environment_with_repo_on_path


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (creating an MLflow database costs seconds); each test its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('lifecycle') / 'mlflow.db'}"


def tracked(uri: str, run_dir: Path, experiment: str, config_hash: str = "abc123def456", **kw: Any) -> TrackedRun:
    identity = RunIdentity(experiment, config_hash, kw.pop("backend", "local"), f"run-{config_hash[:6]}", job="train")
    return TrackedRun(identity, run_dir, uri=uri, **kw)


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in make_client(uri).get_metric_history(run_id, key)]


def git_head() -> str:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


def test_a_new_run_carries_identity_source_tags_params_and_config(uri: str, tmp_path: Path) -> None:
    t = tracked(uri, tmp_path / "run", "new-run", extra_tags={"slurm_job_id": ""})
    assert t.latest is None and not t.finished
    exp = make_client(uri).get_experiment(t.experiment_id)
    assert exp.name == "new-run" and exp.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND

    out = t.run(
        lambda lg: lg.log_metrics({"train/reward_mean": 0.5}, 0) or {"eval/pass_at_2": 0.25},
        params={"sampling.kind": "ead", "steps": 2},
        artifacts={"config/resolved.yaml": "steps: 2\n", "config/job.json": {"steps": 2}},
    )
    assert out == {
        "config_hash": "abc123def456",
        "run_dir": str(tmp_path / "run"),
        "experiment_id": t.experiment_id,
        "run_id": t.run_id,
        "status": "FINISHED",
        "eval/pass_at_2": 0.25,
    }
    run = make_client(uri).get_run(t.run_id)
    tags = run.data.tags
    assert run.info.status == "FINISHED" and run.info.run_name == "run-abc123"
    assert {k: tags[k] for k in ("config_hash", "backend", "job", "attempt", "end_reason", "experiment")} == {
        "config_hash": "abc123def456",
        "backend": "local",
        "job": "train",
        "attempt": "1",
        "end_reason": "completed",
        "experiment": "new-run",
    }
    assert tags["mlflow.source.name"] == "sweep.py" and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.git.commit"] == git_head() and tags["git_commit"].startswith(git_head())
    assert tags["mlflow.user"] and tags["run_dir"] == str(tmp_path / "run") and tags["slurm_job_id"] == ""
    assert run.data.params == {"sampling.kind": "ead", "steps": "2"}
    client = make_client(uri)
    assert Path(client.download_artifacts(t.run_id, "config/resolved.yaml")).read_text() == "steps: 2\n"
    assert json.loads(Path(client.download_artifacts(t.run_id, "config/job.json")).read_text()) == {"steps": 2}


def test_source_type_is_job_under_slurm(uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    t = tracked(uri, tmp_path / "run", "slurm-source", source="python -m experiments.studies.inference")
    t.run(lambda lg: None)
    tags = make_client(uri).get_run(t.run_id).data.tags
    assert (tags["mlflow.source.type"], tags["mlflow.source.name"]) == (
        "JOB",
        "python -m experiments.studies.inference",
    )


def test_an_existing_experiment_gets_the_kind_tag_and_a_users_kind_is_kept(uri: str) -> None:
    client = make_client(uri)
    bare = client.create_experiment("made-elsewhere")
    chosen = client.create_experiment("chosen-kind", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert ensure_experiment(client, "made-elsewhere", uri) == bare
    assert client.get_experiment(bare).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert ensure_experiment(client, "chosen-kind", uri) == chosen
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_finished_is_skipped_unless_force_and_force_starts_afresh(uri: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    calls: list[str] = []

    def work(lg: Any) -> None:
        calls.append(lg.run_id)
        (run_dir / "checkpoint.pt").write_text("state")

    first = tracked(uri, run_dir, "skip-force").run(work)
    again = tracked(uri, run_dir, "skip-force")
    assert again.finished and again.latest.info.run_id == first["run_id"]
    assert again.run(work) == {**first, "status": "skipped"} and len(calls) == 1
    with pytest.raises(RunAlreadyFinished, match="force=true starts a new run"):
        with again.open():
            pass

    (run_dir / "stale.jsonl").write_text("{}\n")
    forced = tracked(uri, run_dir, "skip-force")
    out = forced.run(lambda lg: calls.append(lg.run_id) or {"files": sorted(p.name for p in run_dir.iterdir())},
                     force=True)  # fmt: skip
    assert out["status"] == "FINISHED" and out["run_id"] not in (first["run_id"], None)
    assert out["files"] == [".lock"]  # the run directory was cleared, all but the lock
    runs = make_client(uri).search_runs([forced.experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]


def test_failed_and_killed_runs_are_continued_with_each_step_once(uri: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    def steps_then(stop: int, error: BaseException):
        def work(lg: Any) -> None:
            for s in range(stop):
                lg.log_metrics({"train/loss": float(s)}, s)
            raise error

        return work

    with pytest.raises(ValueError, match="boom"):
        tracked(uri, run_dir, "continue").run(steps_then(2, ValueError("boom")))
    t = tracked(uri, run_dir, "continue")
    run_id = t.latest.info.run_id
    assert t.latest.info.status == "FAILED" and not t.finished
    assert t.latest.data.tags["end_reason"] == "exception: ValueError: boom"

    with pytest.raises(KeyboardInterrupt):
        t.run(steps_then(3, KeyboardInterrupt()))  # a resumed job recomputes steps 0 and 1
    t = tracked(uri, run_dir, "continue")
    assert (t.latest.info.run_id, t.latest.info.status) == (run_id, "KILLED")
    assert (t.latest.data.tags["attempt"], t.latest.data.tags["interruptions"]) == ("2", "2")

    out = t.run(lambda lg: [lg.log_metrics({"train/loss": float(s)}, s) for s in range(5)] and None)
    run = make_client(uri).get_run(run_id)
    assert out["run_id"] == run_id and run.info.status == "FINISHED"
    assert (run.data.tags["attempt"], run.data.tags["interruptions"], run.data.tags["end_reason"]) == (
        "3",
        "2",
        "completed",
    )
    assert [s for s, _ in history(uri, run_id, "train/loss")] == [0, 1, 2, 3, 4]
    assert len(make_client(uri).search_runs([t.experiment_id])) == 1


def test_a_second_live_holder_gets_run_dir_busy(uri: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # Another process holds the run directory (the same config running elsewhere).
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from experiments.tracking import lock_run_dir; "
         "lock = lock_run_dir(__import__('pathlib').Path(sys.argv[1])); print('held', flush=True); time.sleep(600)",
         str(run_dir)],
        env=environment_with_repo_on_path(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        t = tracked(uri, run_dir, "busy")
        with pytest.raises(RunDirBusy, match=rf"{run_dir} is in use .*pid {holder.pid}"):
            t.run(lambda lg: None)
        assert t.run_id is None and t.find() is None  # refused before any MLflow run was made
        # SIGKILL: the kernel drops the lock with the process; the next job gets the directory.
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert tracked(uri, run_dir, "busy").run(lambda lg: None)["status"] == "FINISHED"

    # In one process too: a job inside open() holds it against a second TrackedRun of the same directory.
    t = tracked(uri, run_dir, "busy-inproc")
    with t.open():
        with pytest.raises(RunDirBusy, match=f"pid {os.getpid()}"):
            tracked(uri, run_dir, "busy-inproc").run(lambda lg: None)
    assert make_client(uri).get_run(t.run_id).info.status == "FINISHED"


def test_a_fresh_store_is_backfilled_from_the_run_directory(uri: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    jl = JsonlLogger(run_dir)
    for s in range(3):
        jl.log_table("entropy_by_position", [{"position": 0, "entropy": float(s)}], step=s)
        jl.log_metrics({"train/reward_mean": 0.1 * s, "eval/pass_at_2": None}, s)
    t = tracked(uri, run_dir, "backfill")
    out = t.run(lambda lg: {"last": lg.last_logged_step()})  # a finished run dir: the job has nothing left to do
    assert out["last"] == 2
    assert history(uri, t.run_id, "train/reward_mean") == [(0, 0.0), (1, 0.1), (2, 0.2)]
    arts = {a.path for a in make_client(uri).list_artifacts(t.run_id, "tables")}
    assert arts == {f"tables/entropy_by_position_step{s}.json" for s in range(3)}


def test_publish_logs_a_finished_run_directory_once(uri: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "infer-abc"
    jl = JsonlLogger(run_dir)
    jl.log_params({"task": "countdown", "n_grid": "[1, 2]"})
    jl.log_metrics({"infer/maj_at_1": 0.5}, 1)
    jl.log_metrics({"infer/maj_at_1": 0.75}, 2)
    jl.log_table("infer_scaling", [{"condition": "EAD", "N": 1, "maj": 0.5}])
    jl.finish("FINISHED")

    def inference(h: str = "abc123def456") -> TrackedRun:
        identity = RunIdentity("inference", h, "vllm_inference_scaling", run_dir.name, job="inference_scaling")
        return TrackedRun(identity, run_dir, uri=uri, source="python -m experiments.studies.inference")

    t = inference()
    run_id = t.publish()
    run = make_client(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["backend"] == "vllm_inference_scaling"
    assert run.data.params == {"task": "countdown", "n_grid": "[1, 2]"}
    assert history(uri, run_id, "infer/maj_at_1") == [(1, 0.5), (2, 0.75)]
    table = json.loads(Path(make_client(uri).download_artifacts(run_id, "tables/infer_scaling.json")).read_text())
    assert table == [{"condition": "EAD", "N": 1, "maj": 0.5}]
    again = inference()
    assert again.finished and again.publish() == run_id
    assert len(make_client(uri).search_runs([t.experiment_id])) == 1
    assert (run_dir / "metrics.jsonl").exists()  # publishing never clears the directory it publishes


def test_a_sigterm_inside_open_marks_the_run_killed(uri: str, tmp_path: Path) -> None:
    """SIGTERM outside submitit: the guard raises Terminated (exit 128 + 15) and the run ends KILLED."""
    script = """
import os, signal, sys, time
from pathlib import Path
from experiments.tracking import RunIdentity, TrackedRun

t = TrackedRun(RunIdentity("sigterm", "feedbeef0000", "local", "r"), Path(sys.argv[2]), uri=sys.argv[1])
with t.open() as logger:
    logger.log_metrics({"x": 1.0}, 0)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)
"""
    cmd = [sys.executable, "-c", script, uri, str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=environment_with_repo_on_path(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    t = tracked(uri, tmp_path / "run", "sigterm", "feedbeef0000")
    assert t.latest.info.status == "KILLED" and t.latest.data.tags["end_reason"] == "signal SIGTERM"
    assert t.latest.data.tags["interruptions"] == "1" and history(uri, t.latest.info.run_id, "x") == [(0, 1.0)]
