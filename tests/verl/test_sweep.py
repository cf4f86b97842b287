"""``backend=verl`` in the sweep layer: the composed sweep config translates to the verl preset it names, shared keys
map to verl's, bad values are named before anything starts, the dry run prints every verl command, and the job runs
verl's entry point (a stand-in executable: verl's trainer needs a GPU) inside one MLflow run of the sweep.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from experiments.sweep.jobs import prepare, run_job
from experiments.verl.config import PRESETS, preset
from tests.sweep.helpers import SWEEP, composed, plan, runs_of, sweep_env
from tests.verl.test_launch import verl_inputs

PAPER = ["qwen2.5-math-1.5b", "llama-3.2-1b-instruct", "qwen2.5-math-7b"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def job_of(*overrides: str) -> Any:
    with composed(list(overrides)) as cfg:
        return prepare(cfg)


@pytest.mark.parametrize("model", PAPER)
def test_backend_verl_model_composes_to_the_paper_preset(model: str) -> None:
    job = job_of("backend=verl", f"model={model}", "algorithm=dapo")
    assert (job.backend, job.kind) == ("verl", "train")
    assert job.config == preset(model)  # the recipe in sweeps/backend/verl.yaml is exactly the Python preset
    assert job.config_hash == preset(model).hash
    assert job.config.sampling.tau_min == (0.8 if model.endswith("7b") else 0.1)


def test_verl_smoke_experiment_is_the_smoke_preset() -> None:
    assert job_of("experiment=verl_smoke", "algorithm=dapo").config == preset("smoke")
    grpo = job_of("experiment=verl_smoke").config  # the sweep's algorithm group decides (default grpo)
    assert grpo == preset("smoke", **{"algorithm.name": "grpo"})


def test_shared_keys_map_to_verls() -> None:
    cfg = job_of(
        "backend=verl",
        "model=qwen2.5-math-1.5b",
        "algorithm=kl_cov",
        "algorithm.kl_cov_ratio=0.001",
        "sampling=fixed_1.2",
        "tis=off",
        "prompts_per_step=512",
        "mini_batches=2",
        "rollouts_per_prompt=8",
        "lr=1e-6",
        "max_new_tokens=2048",
        "seed=3",
        "backend.resources.n_gpus_per_node=4",
        "backend.data.train_files=[/data/a.parquet,/data/b.parquet]",
        "backend.algorithm.overlong_buffer=true",
        "backend.model=/ckpt/my-model",
        "backend.eval_n=32",
    ).config
    assert (cfg.algorithm.name, cfg.algorithm.loss_mode, cfg.algorithm.kl_cov_ratio) == ("kl_cov", "kl_cov", 0.001)
    assert (cfg.sampling.kind, cfg.sampling.tau, cfg.tis.enabled) == ("fixed", 1.2, False)
    assert (cfg.train_batch_size, cfg.ppo_mini_batch_size, cfg.rollouts_per_prompt) == (512, 256, 8)
    assert (cfg.lr, cfg.data.max_response_length, cfg.seed, cfg.eval_n) == (1e-6, 2048, 3, 32)
    assert cfg.resources.n_gpus_per_node == 4 and cfg.resources.rollout_tp == 1
    assert cfg.data.train_files == ["/data/a.parquet", "/data/b.parquet"] and cfg.algorithm.overlong_buffer
    assert cfg.model == "/ckpt/my-model" and cfg.preset == "qwen2.5-math-1.5b"
    dapo = job_of("backend=verl", "model=qwen2.5-math-1.5b", "algorithm=dapo").config.algorithm
    assert dapo.resolved_clip == (0.2, 0.28) and dapo.filter_groups is False  # the paper: no dynamic sampling


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["backend=verl"], ["model must be a verl model preset", "qwen2.5-math-7b"]),
        (["backend=verl", "model=qwen2.5-math-1.5b", "task=arithmetic"], ["task only apply to backend=local"]),
        (["backend=verl", "model=qwen2.5-math-1.5b", "mini_batches=3"], ["mini_batches must divide prompts_per_step"]),
        (["backend=verl", "model=qwen2.5-math-1.5b", "backend.data.reward=exact"], ["data.reward"]),
        (["backend=verl", "model=qwen2.5-math-7b", "backend.resources.nnodes=2"], ["nnodes must be 1", "sbatch"]),
        (["backend=verl", "model=qwen2.5-math-1.5b", "backend.resources.rollout_tp=3"], ["resources.rollout_tp"]),
        (["backend=verl", "model=qwen2.5-math-7b", "sampling.tau_min=1.5"], ["sampling.tau_max", "tau_min=1.5"]),
        (["backend=local", "model=qwen2.5-math-7b"], ["size must be one of", "needs backend=verl"]),
        (["backend=verl", "model=qwen2.5-math-1.5b", "study=entropy"], ["backend=local only"]),
    ],
)
def test_bad_values_are_named_before_anything_runs(overrides: list[str], names: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        job_of(*overrides)
    for name in names:
        assert name in str(err.value)


def test_verl_paper_sweep_plans_every_model_and_sampler() -> None:
    jobs = plan(["experiment=verl_paper"])
    assert len(jobs) == 12 and all(j.error is None for j in jobs)
    seen = {(j.job.config.preset, j.job.config.schedule().label) for j in jobs}
    assert {m for m, _ in seen} == set(PAPER) and len(seen) == 12
    assert all(j.job.config.algorithm.name == "dapo" for j in jobs)


def test_dry_run_prints_a_complete_verl_command_for_each_paper_preset(tmp_path: Path) -> None:
    args = ["-m", "backend=verl", f"model={','.join(PAPER)}", "dry_run=true"]
    out = subprocess.run([sys.executable, str(SWEEP), *args], cwd=tmp_path, env=sweep_env(), capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    blocks = re.split(r"\n# job #\d+ ", out.stdout)[1:]
    assert len(blocks) == 3
    for model, block in zip(PAPER, blocks, strict=True):
        cfg = preset(model, **{"algorithm.name": "grpo"})  # the sweep's default algorithm group
        assert "python -m verl.trainer.main_ppo" in block
        assert f"actor_rollout_ref.model.path={cfg.model}" in block
        assert f"trainer.default_local_dir={tmp_path}/runs/default/{cfg.hash}" in block
        assert f"+ray_kwargs.ray_init.runtime_env.env_vars.MLFLOW_TRACKING_URI=sqlite:///{tmp_path}/mlflow.db" in block
        assert f"+ead.schedule.tau_min={cfg.sampling.tau_min}" in block
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()  # nothing started


@pytest.fixture
def verl_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Small verl parquet files and a stand-in for verl's trainer (records argv and environment, exits as told)."""
    train, val, fake = verl_inputs(tmp_path, monkeypatch)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [
        "experiment=verl_smoke",
        f"backend.python={fake}",
        f"backend.data.train_files=[{train}]",
        f"backend.data.val_files=[{val}]",
        f"tracking.uri='{uri}'",
    ]
    return {"overrides": overrides, "uri": uri, "dir": tmp_path}


def test_the_job_runs_verl_inside_one_mlflow_run_of_the_sweep(verl_job: dict[str, Any]) -> None:
    tmp, uri = verl_job["dir"], verl_job["uri"]
    with composed(verl_job["overrides"]) as cfg:
        summary = run_job(cfg)
        job = prepare(cfg)
    [run] = runs_of(uri, "verl_smoke")
    assert summary["status"] == "FINISHED" and run.info.status == "FINISHED"
    assert run.data.tags["backend"] == "verl" and run.data.tags["config_hash"] == job.config_hash
    assert run.data.params["algorithm.name"] == "grpo" and run.data.params["train_batch_size"] == "8"
    env = dict(line.split("=", 1) for line in (tmp / "env").read_text().splitlines())
    assert env["MLFLOW_RUN_ID"] == run.info.run_id  # verl's MLflow logger continues the sweep's run
    assert env["MLFLOW_TRACKING_URI"] == uri
    argv = (tmp / "argv").read_text().splitlines()
    assert argv[:2] == ["-m", "verl.trainer.main_ppo"]
    assert f"trainer.default_local_dir={tmp}/runs/verl_smoke/{job.config_hash}" in argv
    assert json.loads((tmp / "runs" / "verl_smoke" / job.config_hash / "ead_run.json").read_text())["config_hash"] == (
        job.config_hash
    )
    with composed(verl_job["overrides"]) as cfg:
        assert run_job(cfg)["status"] == "skipped"  # FINISHED config hash: not started again


def test_a_failing_trainer_marks_the_run_failed(verl_job: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EAD_TEST_EXIT", "3")
    with composed(verl_job["overrides"]) as cfg, pytest.raises(RuntimeError, match="exited with 3"):
        run_job(cfg)
    [run] = runs_of(verl_job["uri"], "verl_smoke")
    assert run.info.status == "FAILED" and run.data.tags["verl_exit_code"] == "3"
    monkeypatch.setenv("EAD_TEST_EXIT", "0")
    with composed(verl_job["overrides"]) as cfg:
        assert run_job(cfg)["run_id"] == run.info.run_id  # the retry continues the same MLflow run
    assert runs_of(verl_job["uri"], "verl_smoke")[0].info.status == "FINISHED"


def test_every_verl_preset_has_a_model_option() -> None:
    options = {p.stem for p in (Path(__file__).parents[2] / "sweeps" / "model").glob("*.yaml")}
    assert set(PAPER) <= options and set(PRESETS) == set(PAPER) | {"smoke"}
