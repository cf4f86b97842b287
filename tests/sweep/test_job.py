"""The job function and the MLflow logger in-process against a real SQLite tracking store: run identity by config
hash, skip-if-finished and force, backfill from the run directory, FAILED on exceptions, each step exactly once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from experiments.sweep.jobs import run_job
from experiments.tracking import MlflowRunLogger, make_client
from tests.sweep.helpers import EVAL_KEYS, TAGS, TRAIN_KEYS, composed, runs_of, smoke, steps


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One SQLite store and runs root for the module (creating an MLflow database costs seconds)."""
    root = tmp_path_factory.mktemp("sweep-job")
    return {"uri": f"sqlite:///{root / 'mlflow.db'}", "runs": root / "runs", "root": root}


def job(store: dict[str, Any], policy: str, experiment: str, *extra: str) -> dict[str, Any]:
    """Compose ``sweep.py experiment=smoke ...`` and run its job function here."""
    overrides = smoke(
        policy,
        "sampling=ead",
        f"tracking.uri='{store['uri']}'",
        f"runs_root='{store['runs']}'",
        f"experiment_name={experiment}",
        *extra,
    )
    with composed(overrides) as cfg:
        return run_job(cfg)


def test_logger_ignores_steps_the_run_holds(store: dict[str, Any]) -> None:
    client = make_client(store["uri"])
    exp = client.create_experiment("logger-unit")
    run_id = client.create_run(exp).info.run_id
    first = MlflowRunLogger(client, run_id)
    assert first.last_logged_step() is None
    for s in range(3):
        first.log_table("entropy_by_position", [{"position": 0, "entropy": 1.0 + s}], step=s)
        first.log_metrics({"train/reward_mean": 0.1 * s, "eval/pass_at_16": 0.5, "skip/none": None}, s)
    # A resumed job: a new logger reads the last step back from the run's history and ignores older steps.
    resumed = MlflowRunLogger(client, run_id)
    assert resumed.last_logged_step() == 2
    resumed.log_table("entropy_by_position", [{"position": 0, "entropy": 99.0}], step=2)
    for s in (1, 2, 3):
        resumed.log_metrics({"train/reward_mean": 10.0 + s}, s)
    history = client.get_metric_history(run_id, "train/reward_mean")
    assert [(m.step, m.value) for m in history] == [(0, 0.0), (1, 0.1), (2, 0.2), (3, 13.0)]
    assert steps(store["uri"], run_id, "eval/pass_at_16") == [0, 1, 2]
    assert "skip/none" not in client.get_run(run_id).data.metrics
    table = json.loads(Path(client.download_artifacts(run_id, "tables/entropy_by_position_step2.json")).read_text())
    assert table == [{"position": 0, "entropy": 3.0}]  # the held step's table was not replaced


def test_finished_hash_is_skipped_and_force_reruns_it(store: dict[str, Any], tiny_policy_dir: str) -> None:
    first = job(store, tiny_policy_dir, "skip-force")
    assert first["status"] == "FINISHED"
    [run] = runs_of(store["uri"], "skip-force")
    assert run.info.run_id == first["run_id"] and run.info.status == "FINISHED"
    assert all(t in run.data.tags for t in TAGS) and run.data.tags["config_hash"] == first["config_hash"]
    assert run.data.tags["backend"] == "local" and run.data.tags["end_reason"] == "completed"
    assert (run.data.tags["mlflow.source.name"], run.data.tags["job"]) == ("sweep.py", "train")
    exp = make_client(store["uri"]).get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI's model-training view
    assert run.data.params["sampling.kind"] == "ead" and run.data.params["steps"] == "2"
    for key in TRAIN_KEYS:
        assert steps(store["uri"], run.info.run_id, key) == [0, 1], key
    for key in EVAL_KEYS:
        assert steps(store["uri"], run.info.run_id, key) == [0, 1, 2], key
    artifacts = {a.path for a in make_client(store["uri"]).list_artifacts(run.info.run_id, "tables")}
    assert artifacts == {f"tables/{t}_step{s}.json" for t in ("entropy_by_position", "eval_counts") for s in (0, 1, 2)}

    again = job(store, tiny_policy_dir, "skip-force")
    assert again == {**again, "status": "skipped", "run_id": first["run_id"]}
    assert len(runs_of(store["uri"], "skip-force")) == 1

    forced = job(store, tiny_policy_dir, "skip-force", "force=true")
    assert forced["status"] == "FINISHED" and forced["run_id"] != first["run_id"]
    runs = runs_of(store["uri"], "skip-force")
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert {r.data.tags["config_hash"] for r in runs} == {first["config_hash"]}
    assert steps(store["uri"], forced["run_id"], "train/reward_mean") == [0, 1]
    # The run directory was started afresh: each step once in the JSONL log too.
    records = [json.loads(x) for x in (Path(forced["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]


def test_a_new_tracking_store_is_backfilled_from_the_run_directory(store: dict[str, Any], tiny_policy_dir: str) -> None:
    """The trainer returns at once for a finished run directory; the job still fills the new MLflow run."""
    first = job(store, tiny_policy_dir, "backfill")
    fresh = {**store, "uri": f"sqlite:///{store['root'] / 'other.db'}"}
    second = job(fresh, tiny_policy_dir, "backfill")
    assert second["status"] == "FINISHED" and second["run_dir"] == first["run_dir"]
    for key in ("train/reward_mean", "eval/pass_at_2"):
        assert steps(fresh["uri"], second["run_id"], key) == steps(store["uri"], first["run_id"], key), key
    tables = {a.path for a in make_client(fresh["uri"]).list_artifacts(second["run_id"], "tables")}
    assert tables == {a.path for a in make_client(store["uri"]).list_artifacts(first["run_id"], "tables")}
    assert len(tables) == 6  # entropy_by_position and eval_counts at each of the 3 evaluations


def test_an_exception_marks_the_run_failed(store: dict[str, Any], tmp_path: Path) -> None:
    empty = tmp_path / "not-a-policy"
    empty.mkdir()
    with pytest.raises((OSError, ValueError), match="not-a-policy"):
        job(store, str(empty), "failing")
    [run] = runs_of(store["uri"], "failing")
    assert run.info.status == "FAILED"
    assert run.data.tags["end_reason"].startswith("exception: ") and run.data.tags["interruptions"] == "1"
