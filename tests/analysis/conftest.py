"""One real MLflow store for the analysis tests, built once per session (~40 s after the session's warm start).

- ``sweep.py -m experiment=smoke seed=0,1 tis=off,token``: EAD and fixed 1.0 x 2 seeds x TIS off/on (8 real jobs in
  one process; every ``sweep.py`` process pays ~15 s of imports, so the other training runs below go through the same
  job function in-process, as ``tests/sweep/test_job.py`` does): rollouts_per_prompt=4 (EAD, fixed 1.0),
  sampling.d0=4 and 16 (EAD), algorithm=dapo (EAD, fixed 1.0). Smoke runs use eval_k=2.
- Study runs as the study jobs log them (tag job=entropy / branching / schedule, flattened params): the entropy,
  branching and schedule studies of ``experiments.studies`` run for real on the tiny policy with tiny sizes.
- An inference-scaling run (tag backend=vllm_inference_scaling, the ``infer_scaling`` table and ``infer/*`` metrics
  by N): vLLM lives in .venv-vllm only, so its rows come from the study's own pure ``scaling_metrics`` on seeded 0/1
  correctness matrices, logged through ``MlflowRunLogger`` exactly as ``inference_scaling.run`` logs them.
- One run left RUNNING and one FAILED (real runs through ``MlflowRunLogger``, as a killed or crashed job leaves them).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.sweep.helpers import composed, smoke, start_sweep

EXPERIMENT = "smoke"


def _flat(cfg: Any) -> dict[str, Any]:
    """A dataclass config as dotted params (sampling.kind, ...), like the jobs log them."""
    row = pd.json_normalize(dataclasses.asdict(cfg), sep=".").iloc[0].to_dict()
    return {k: (list(v) if isinstance(v, np.ndarray) else v) for k, v in row.items()}


def _open_run(client: Any, exp_id: str, name: str, tags: dict[str, str]) -> Any:
    from experiments.tracking import MlflowRunLogger

    run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    return MlflowRunLogger(client, run_id)


def _studies(client: Any, exp_id: str, policy: str) -> dict[str, str]:
    """Entropy (fixed 1.0 and EAD), branching and schedule study runs; returns {name: run_id}."""
    from experiments.rlvr.config import SamplingConfig
    from experiments.studies import branching, entropy, schedule
    from tests.conftest import EASY_COUNTDOWN

    common = {"policy": policy, "task_knobs": dict(EASY_COUNTDOWN), "max_new_tokens": 12}
    configs = {
        "entropy-fixed": ("entropy", entropy.EntropyStudyConfig(prompts=4, samples_per_prompt=4, **common)),
        "entropy-ead": (
            "entropy",
            entropy.EntropyStudyConfig(prompts=4, samples_per_prompt=4, sampling=SamplingConfig(), **common),
        ),
        "branching-ead": (
            "branching",
            branching.BranchingStudyConfig(
                prompts=3, prefixes=[0, 2, 4], continuations=4, ks=[1, 2, 4], n_bootstrap=20, **common
            ),
        ),
        "schedule": ("schedule", schedule.ScheduleStudyConfig(steps=[0, 50, 200], points=32)),
    }
    modules = {"entropy": entropy, "branching": branching, "schedule": schedule}
    ids = {}
    for name, (job, cfg) in configs.items():
        ml = _open_run(client, exp_id, name, {"job": job, "backend": "local", "config_hash": f"study-{name}"})
        ml.log_params(_flat(cfg))
        modules[job].run(cfg, ml)
        ml.finish("FINISHED")
        ids[name] = ml.run_id
    return ids


def _inference(client: Any, exp_id: str) -> str:
    """An inference-scaling run: Maj@N / Pass@N rows of seeded correctness matrices (EAD a little more accurate)."""
    from experiments.inference_scaling import BACKEND, PREFIX, scaling_metrics

    rng = np.random.default_rng(0)
    n_grid = [1, 2, 4, 8]
    ml = _open_run(client, exp_id, "infer-tiny", {"backend": BACKEND, "config_hash": "infer-1"})
    ml.log_params({"size": "tiny", "task": "countdown", "n_grid": "[1, 2, 4, 8]", "eval_prompts": 12})
    rows, by_n = [], {n: {} for n in n_grid}
    for label, p in [("ead_local", 0.45), ("fixed_0.6", 0.35), ("fixed_1.0", 0.3), ("fixed_1.2", 0.25)]:
        correct = (rng.random((12, 8)) < p).astype(np.int64)
        answers = [[str(int(c)) if c else str(rng.integers(2, 5)) for c in row] for row in correct]
        for r in scaling_metrics(correct, answers, n_grid, n_bootstrap=20, seed=0):
            rows.append({"condition": label, **r})
            by_n[r["N"]].update({f"{PREFIX}/{label}/maj_at_n": r["maj"], f"{PREFIX}/{label}/pass_at_n": r["pass"]})
    for n in n_grid:
        ml.log_metrics(by_n[n], step=n)
    ml.log_table("infer_scaling", rows)
    ml.finish("FINISHED")
    return ml.run_id


def _unfinished(client: Any, exp_id: str, params: dict[str, str]) -> dict[str, str]:
    """A RUNNING run (a job still going, or killed by SIGKILL) and a FAILED one, with a training run's params."""
    ids = {}
    for status, seed in [("RUNNING", 7), ("FAILED", 8)]:
        ml = _open_run(
            client, exp_id, f"{status.lower()}-run", {"backend": "local", "config_hash": f"unfinished{seed}"}
        )
        ml.log_params({**params, "seed": str(seed), "config_hash": f"unfinished{seed}"})
        ml.log_metrics({"eval/pass_at_2": 0.25, "train/reward_mean": 0.1}, step=0)
        if status != "RUNNING":
            ml.finish(status)
        ids[status] = ml.run_id
    return ids


@pytest.fixture(scope="session")
def store(tiny_policy_dir: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """{'uri', 'root', 'experiment', 'studies': {name: run_id}, 'inference', 'unfinished': {status: run_id}}."""
    from experiments.sweep_job import run_job
    from experiments.tracking import make_client

    root = tmp_path_factory.mktemp("analysis-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    # The sweep runs in its own process while this one runs the in-process jobs (two cores: about half the time).
    args = ["-m", *smoke(tiny_policy_dir), f"tracking.uri={uri}", "seed=0,1", "tis=off,token"]
    sweep = start_sweep(args, root, root / "sweep.log")
    try:
        for extra in [
            ("sampling=ead", "rollouts_per_prompt=4"),
            ("sampling=fixed_1.0", "rollouts_per_prompt=4"),
            ("sampling=ead", "sampling.d0=4"),
            ("sampling=ead", "sampling.d0=16"),
            ("sampling=ead", "algorithm=dapo"),
            ("sampling=fixed_1.0", "algorithm=dapo"),
        ]:
            overrides = smoke(tiny_policy_dir, f"tracking.uri='{uri}'", f"runs_root='{root / 'runs'}'", *extra)
            with composed(overrides) as cfg:
                assert run_job(cfg)["status"] == "FINISHED"
        client = make_client(uri)
        exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
        studies = _studies(client, exp_id, tiny_policy_dir)
        inference = _inference(client, exp_id)
    finally:
        code = sweep.wait(timeout=600)
    assert code == 0, (root / "sweep.log").read_text()[-6000:]
    finished = client.search_runs([exp_id], "attributes.status = 'FINISHED' and tags.backend = 'local'")
    assert len(finished) == 14 + 4  # training + study runs
    train = next(r for r in finished if r.data.params.get("sampling.kind") == "ead" and "steps" in r.data.params)
    unfinished = _unfinished(client, exp_id, train.data.params)
    client.create_experiment("empty")
    return {
        "uri": uri,
        "root": Path(root),
        "experiment": EXPERIMENT,
        "studies": studies,
        "inference": inference,
        "unfinished": unfinished,
    }
