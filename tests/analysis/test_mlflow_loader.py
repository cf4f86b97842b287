"""The loader on the session's real store: runs (status, job, filters, conditions, one run per config hash), metric
histories (steps aligned, duplicates, missing keys, SQL and API paths equal, cache), table artifacts."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis import mlflow_loader as ml
from analysis.mlflow_loader import (
    align_steps,
    client_for,
    load_metrics,
    load_runs,
    load_tables,
    metric_history,
    missing_metrics,
    wide_metrics,
)
from experiments.tracking import MlflowRunLogger

TRAIN_KEYS = ["train/reward_mean", "train/entropy"]
EVAL_KEYS = ["eval/pass_at_2", "eval/worst_at_2"]


@pytest.fixture(scope="module")
def runs(store: dict[str, Any]) -> pd.DataFrame:
    return load_runs(store["experiment"], store["uri"])


def test_runs_default_to_finished_ones_with_their_job(store: dict[str, Any], runs: pd.DataFrame) -> None:
    assert set(runs["status"]) == {"FINISHED"}
    assert runs["job"].value_counts().to_dict() == {"train": 14, "entropy": 2, "branching": 1, "schedule": 1,
                                                    "inference": 1}  # fmt: skip
    assert not set(store["unfinished"].values()) & set(runs["run_id"])
    train = runs[runs["job"] == "train"]
    assert sorted(train["condition"].unique()) == ["EAD", "EAD d0=16", "EAD d0=4", "fixed 1.0"]
    assert set(train["seed"]) == {0, 1} and set(train["eval_k"]) == {2}  # params typed, ints stay ints
    assert set(train["rollouts_per_prompt"]) == {2, 4} and set(train["tis.enabled"]) == {True, False}
    assert {"run_id", "run_name", "artifact_uri", "config_hash", "backend", "sampling.kind"} <= set(runs.columns)


def test_running_and_failed_runs_are_marked_when_asked_for(store: dict[str, Any]) -> None:
    everything = load_runs(store["experiment"], store["uri"], statuses=None)
    status = everything.set_index("run_id")["status"]
    assert status[store["unfinished"]["RUNNING"]] == "RUNNING" and status[store["unfinished"]["FAILED"]] == "FAILED"
    only = load_runs(store["experiment"], store["uri"], statuses=["RUNNING", "FAILED"])
    assert sorted(only["status"]) == ["FAILED", "RUNNING"]


def test_filters_by_job_tag_and_param(store: dict[str, Any]) -> None:
    uri, exp = store["uri"], store["experiment"]
    assert set(load_runs(exp, uri, jobs=["entropy"])["run_id"]) == {
        store["studies"]["entropy-fixed"], store["studies"]["entropy-ead"],
    }  # fmt: skip
    inference = load_runs(exp, uri, tags={"backend": "vllm_inference_scaling"})
    assert inference["run_id"].tolist() == [store["inference"]] and inference["job"].tolist() == ["inference"]
    seed1 = load_runs(exp, uri, jobs=["train"], params={"seed": 1})
    assert len(seed1) == 4 and set(seed1["seed"]) == {1}
    pooled = load_runs(exp, uri, jobs=["train"], params={"seed": "1", "sampling.kind": ["ead", "fixed"]})
    assert set(pooled["run_id"]) == set(seed1["run_id"])
    assert load_runs(exp, uri, params={"no.such.param": 1}).empty


def test_unknown_experiment_names_the_known_ones(store: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"experiment 'nope' not found .*'smoke'"):
        load_runs("nope", store["uri"])


def test_newest_run_of_a_config_hash_and_figures_runs_left_out(store: dict[str, Any]) -> None:
    client = client_for(store["uri"])
    name = f"loader-dupes-{uuid.uuid4().hex[:6]}"
    exp = client.create_experiment(name)
    ids = []
    for seed in (0, 0):  # a forced re-run: same config hash, newer run
        run = client.create_run(exp, tags={"config_hash": "h1", "backend": "local"})
        client.log_param(run.info.run_id, "seed", seed)
        client.set_terminated(run.info.run_id, "FINISHED")
        ids.append(run.info.run_id)
    figures = client.create_run(exp, tags={"job": "figures"}).info.run_id
    client.set_terminated(figures, "FINISHED")
    assert load_runs(name, store["uri"])["run_id"].tolist() == [ids[1]]
    assert len(load_runs(name, store["uri"], latest_only=False)) == 2
    assert load_runs(name, store["uri"], jobs=["figures"])["run_id"].tolist() == [figures]


def test_metrics_are_tidy_and_steps_align(store: dict[str, Any], runs: pd.DataFrame) -> None:
    train = runs[runs["job"] == "train"]
    long = load_metrics(store["experiment"], TRAIN_KEYS + EVAL_KEYS, runs=train, tracking_uri=store["uri"])
    assert {"run_id", "key", "step", "value", "timestamp", "condition", "seed", "sampling.kind"} <= set(long.columns)
    steps = long.groupby("key")["step"].apply(lambda s: sorted(set(s)))
    assert all(steps[k] == [0, 1] for k in TRAIN_KEYS) and all(steps[k] == [0, 1, 2] for k in EVAL_KEYS)
    counts = long.groupby(["run_id", "key"]).size().reset_index(name="n")
    assert len(counts) == 14 * 4  # every run logged every key ...
    assert (counts["n"] == counts["key"].map({**dict.fromkeys(TRAIN_KEYS, 2), **dict.fromkeys(EVAL_KEYS, 3)})).all()
    wide = wide_metrics(long, train)
    assert len(wide) == 14 * 3 and set(wide["step"]) == {0, 1, 2}  # run x step, every key a column
    last = wide[wide["step"] == 2]
    assert last["train/reward_mean"].isna().all() and last["eval/pass_at_2"].notna().all()
    assert wide[wide["step"] < 2][TRAIN_KEYS + EVAL_KEYS].notna().all().all()


def test_sql_and_api_paths_agree(store: dict[str, Any], runs: pd.DataFrame) -> None:
    client = client_for(store["uri"])
    ids = list(runs.loc[runs["job"] == "train", "run_id"][:5])
    sql = metric_history(client, ids, TRAIN_KEYS + EVAL_KEYS, method="sql")
    api = metric_history(client, ids, TRAIN_KEYS + EVAL_KEYS, method="api")
    pd.testing.assert_frame_equal(sql, api)
    assert len(sql) == 5 * (2 * 2 + 2 * 3)
    with pytest.raises(ValueError, match="method must be"):
        metric_history(client, ids, TRAIN_KEYS, method="bulk")


def test_the_private_sql_path_holds_for_the_pinned_mlflow(store: dict[str, Any]) -> None:
    """Histories of a SQL store come from MLflow's ORM table (not a public API; ~15x faster than get_metric_history).
    MLflow is pinned to the tested minor version; this fails, with no fallback, when that path moves."""
    import tomllib
    from importlib.metadata import version

    from mlflow.store.tracking.dbmodels.models import SqlMetric
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.utils.rest_utils import MlflowHostCreds
    from packaging.requirements import Requirement

    extras = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    pin = next(Requirement(r) for r in extras["optional-dependencies"]["sweep"] if r.startswith("mlflow"))
    assert pin.specifier.contains(version("mlflow")) and "<" in str(pin.specifier), (pin, version("mlflow"))
    table = SqlMetric.__table__
    assert table.name == "metrics" and {"run_uuid", "key", "step", "value", "timestamp", "is_nan"} <= set(
        table.c.keys()
    )
    client = client_for(store["uri"])
    assert ml._sql_store(client) is not None  # method='auto' takes the bulk path on the SQLite store
    # A database URI whose store has no SQLAlchemy engine (a changed MLflow) is an error, not the slow path in silence.
    other = RestStore(lambda: MlflowHostCreds("http://127.0.0.1:9"))  # never contacted
    with pytest.raises(RuntimeError, match="has no SQLAlchemy engine.*method='api'"):
        ml.sql_store_of(other, store["uri"])
    assert ml.sql_store_of(other, "http://127.0.0.1:9") is None  # a server: the public API is the way


def test_missing_metrics_are_reported_not_raised(store: dict[str, Any]) -> None:
    everything = load_runs(store["experiment"], store["uri"], statuses=None, jobs=["train"])
    keys = ["eval/pass_at_2", "eval/worst_at_2", "no/such_metric"]
    long = load_metrics(store["experiment"], keys, runs=everything, tracking_uri=store["uri"])
    gone = missing_metrics(long, everything, keys)
    assert set(gone.loc[gone["key"] == "no/such_metric", "run_id"]) == set(everything["run_id"])
    # The killed and crashed runs logged one eval metric before they stopped.
    assert set(gone.loc[gone["key"] == "eval/worst_at_2", "run_id"]) == set(store["unfinished"].values())
    assert set(gone.loc[gone["key"] == "eval/pass_at_2", "run_id"]) == set()


def test_cache_serves_ended_runs_and_sees_a_run_that_changed(store: dict[str, Any]) -> None:
    client = client_for(store["uri"])
    name = f"loader-cache-{uuid.uuid4().hex[:6]}"
    exp = client.create_experiment(name)
    run_id = client.create_run(exp, tags={"config_hash": "c1", "backend": "local"}).info.run_id
    logger = MlflowRunLogger(client, run_id)
    logger.log_metrics({"eval/pass_at_2": 0.5}, 0)
    logger.log_metrics({"eval/pass_at_2": 0.6}, 1)
    logger.finish("KILLED")
    ml.clear_cache()
    first = load_metrics(name, ["eval/pass_at_2"], tracking_uri=store["uri"],
                         runs=load_runs(name, store["uri"], statuses=None))  # fmt: skip
    hits = ml._cached_history.cache_info().hits
    again = load_metrics(name, ["eval/pass_at_2"], tracking_uri=store["uri"],
                         runs=load_runs(name, store["uri"], statuses=None))  # fmt: skip
    assert ml._cached_history.cache_info().hits == hits + 1
    pd.testing.assert_frame_equal(first, again)
    # The job is resumed (RUNNING again), logs a step and a duplicate of step 1, and finishes: a new version.
    client.update_run(run_id, status="RUNNING")
    client.log_metric(run_id, "eval/pass_at_2", 0.65, step=1)
    running = load_runs(name, store["uri"], statuses=None)
    load_metrics(name, ["eval/pass_at_2"], runs=running, tracking_uri=store["uri"])
    assert ml._cached_history.cache_info().hits == hits + 1  # a RUNNING run is never served from the cache
    client.log_metric(run_id, "eval/pass_at_2", 0.7, step=2)
    client.set_terminated(run_id, "FINISHED")
    after = load_metrics(name, ["eval/pass_at_2"], tracking_uri=store["uri"],
                         runs=load_runs(name, store["uri"]))  # fmt: skip
    assert after["step"].tolist() == [0, 1, 1, 2]  # every logged value
    aligned = align_steps(after)
    assert aligned["step"].tolist() == [0, 1, 2] and aligned["value"].tolist() == [0.5, 0.65, 0.7]  # last one wins


def test_tables_of_studies_and_training_runs(store: dict[str, Any], runs: pd.DataFrame) -> None:
    uri, exp = store["uri"], store["experiment"]
    ent = load_tables(exp, "entropy_by_position", runs=runs[runs["job"] == "entropy"], tracking_uri=uri)
    assert {"position", "entropy_mean", "count", "fixed_start_mean", "condition", "run_name"} <= set(ent.columns)
    assert set(ent["condition"]) == {"EAD", "fixed 1.0"} and ent["table_step"].isna().all()
    assert ent.groupby("run_id")["position"].apply(list).map(lambda p: p == sorted(p)).all()
    train = runs[runs["job"] == "train"]
    last = load_tables(exp, "entropy_by_position", runs=train, tracking_uri=uri, steps="last")
    assert set(last["table_step"]) == {2} and last["run_id"].nunique() == 14
    every = load_tables(exp, "entropy_by_position", runs=train.head(2), tracking_uri=uri)
    assert set(every["table_step"]) == {0, 1, 2}
    one = load_tables(exp, "entropy_by_position", runs=train.head(2), tracking_uri=uri, steps=1)
    api = load_tables(exp, "entropy_by_position", runs=train.head(2), tracking_uri=uri, steps=1, method="api")
    pd.testing.assert_frame_equal(one.reset_index(drop=True), api.reset_index(drop=True))
    infer = load_tables(exp, "infer_scaling", runs=runs, tracking_uri=uri)
    assert infer["run_id"].unique().tolist() == [store["inference"]]
    assert set(infer["condition"]) == {"ead_local", "fixed_0.6", "fixed_1.0", "fixed_1.2"}  # the table's own column
    assert "run.condition" in infer.columns and np.array_equal(sorted(infer["N"].unique()), [1, 2, 4, 8])
    none = load_tables(exp, "no_such_table", runs=runs, tracking_uri=uri)
    assert none.empty and "run_id" in none.columns
    with pytest.raises(ValueError, match="steps must be"):
        load_tables(exp, "branching", runs=runs, tracking_uri=uri, steps="first")
