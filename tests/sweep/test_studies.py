"""Study jobs through the sweep layer (``sweep.py study=...``): composed from the same top-level keys as training, one
MLflow run each (tag ``job``), the study's table as an artifact, params named like a training run's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from experiments.sweep.jobs import prepare, run_job
from tests.conftest import EASY_COUNTDOWN
from tests.sweep.helpers import client, composed, plan, runs_of


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # plans read sqlite:///mlflow.db relative to here (absent)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("sweep-studies")
    return {"uri": f"sqlite:///{root / 'mlflow.db'}", "runs": root / "runs"}


def study_job(store: dict[str, Any], *overrides: str) -> dict[str, Any]:
    base = [
        "task=countdown_easy",
        f"tracking.uri='{store['uri']}'",
        f"runs_root='{store['runs']}'",
        "experiment_name=studies",
        "max_new_tokens=12",
    ]
    with composed([*base, *overrides]) as cfg:
        return run_job(cfg)


def table(uri: str, run_id: str, name: str) -> list[dict[str, Any]]:
    return json.loads(Path(client(uri).download_artifacts(run_id, f"tables/{name}.json")).read_text())


def test_study_options_take_policy_task_and_sampler_from_the_top_level(tiny_policy_dir: str) -> None:
    with composed(["study=entropy", f"init_from={tiny_policy_dir}", "sampling=fixed_1.2", "seed=4",
                   "task=countdown_easy", "study.prompts=3"]) as cfg:  # fmt: skip
        job = prepare(cfg)
    assert (job.kind, job.backend) == ("entropy", "local")
    s = job.config
    assert (s.policy, s.sampling.kind, s.sampling.tau, s.seed, s.prompts) == (tiny_policy_dir, "fixed", 1.2, 4, 3)
    assert s.task_knobs == EASY_COUNTDOWN and job.run_name.startswith("entropy-fixed 1.2-tiny-s4-")
    # Training-only keys do not change a study's identity; its own keys and the sampler do.
    with composed(["study=entropy", f"init_from={tiny_policy_dir}", "sampling=fixed_1.2", "seed=4",
                   "task=countdown_easy", "study.prompts=3", "lr=0.1"]) as cfg:  # fmt: skip
        assert prepare(cfg).config_hash == job.config_hash


def test_bad_study_values_are_named() -> None:
    with pytest.raises(ValueError, match="study=branching: ks must be integers in"):
        with composed(["study=branching", "study.ks=[1,99]"]) as cfg:
            prepare(cfg)
    jobs = plan(["study=entropy,branching,schedule", "sampling=ead,fixed_1.0"])
    assert len(jobs) == 6 and all(j.error is None for j in jobs)
    # The schedule study ignores the sampler: its two jobs are one config, run once.
    assert [(j.job.kind, j.skip is None) for j in jobs if j.skip] == [("schedule", False)]
    assert jobs[-1].skip.startswith("same config as job")


def test_entropy_and_branching_jobs_log_their_tables(store: dict[str, Any], tiny_policy_dir: str) -> None:
    common = [f"init_from={tiny_policy_dir}", "sampling=fixed_1.0"]
    ent = study_job(store, "study=entropy", *common, "study.prompts=3", "study.samples_per_prompt=4")
    br = study_job(store, "study=branching", *common, "study.prompts=2", "study.prefixes=[0,2,4]",
                   "study.continuations=4", "study.ks=[1,3]", "study.n_bootstrap=20")  # fmt: skip
    runs = {r.data.tags["job"]: r for r in runs_of(store["uri"], "studies")}
    assert ent["status"] == br["status"] == "FINISHED" and set(runs) == {"entropy", "branching"}
    e = runs["entropy"]
    assert e.info.status == "FINISHED" and e.data.params["sampling.kind"] == "fixed" and e.data.params["size"] == "tiny"
    rows = table(store["uri"], e.info.run_id, "entropy_by_position")
    assert [r["position"] for r in rows] == list(range(len(rows))) and 1 <= len(rows) <= 12
    assert {"entropy_mean", "count", "fixed_start_mean"} <= set(rows[0])
    assert "entropy/mean" in e.data.metrics
    b = runs["branching"]
    assert sorted({r["K"] for r in table(store["uri"], b.info.run_id, "branching")}) == [0, 2, 4]
    again = study_job(store, "study=entropy", *common, "study.prompts=3", "study.samples_per_prompt=4")
    assert again["status"] == "skipped"  # the same study config FINISHED already


def test_schedule_job_needs_no_policy(store: dict[str, Any]) -> None:
    out = study_job(store, "study=schedule", "study.steps=[0,100]", "study.points=16", "study.max_position=256")
    assert out["status"] == "FINISHED"
    [run] = [r for r in runs_of(store["uri"], "studies") if r.data.tags["job"] == "schedule"]
    rows = table(store["uri"], run.info.run_id, "effective_schedule")
    assert {(r["scale"], r["step"]) for r in rows} == {(s, t) for s in ("paper", "reference") for t in (0, 100)}
