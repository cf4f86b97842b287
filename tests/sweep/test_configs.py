"""The config tree composes, is typed, and every job of every preset is validated before anything could launch.

In-process through Hydra's own compose API and the real sweeper (hydra_plugins/ead_sweeper); no job runs here.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from experiments.local import RLVRConfig
from experiments.sweep.knobs import task_knobs
from tests.conftest import EASY_COUNTDOWN
from tests.sweep.helpers import BEYOND, PRESETS, SWEEPS, composed, plan, sweeper

EXPECTED_JOBS = {
    "smoke": 2, "default": 9, "reproduction": 35, "reproduction_mixed": 35, "paper_grid": 48, "tis_ablation": 9,
    "decay_ablation": 15, "size_scaling": 12, "testbed": 1, "decision_position": 12, "reverse": 9,
    "growth_ablation": 15, "cap_ablation": 12, "adaptive": 9, "matched_entropy": 9, "beyond": 36, "verl_smoke": 1,
    "verl_paper": 12, "lr_mixed": 12,
}  # fmt: skip


# Presets that log into one shared experiment (their common conditions run once); every other preset is its own.
SHARED_EXPERIMENT = {p: "beyond" for p in (*BEYOND, "beyond")}


@functools.cache
def preset_plan(preset: str) -> list[Any]:
    """The sweeper's plan of a preset (computed once per test session; nothing in it depends on the directory)."""
    return plan([f"experiment={preset}"])


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative sqlite:///mlflow.db and runs/ resolve here (and do not exist)


def test_every_axis_has_a_group() -> None:
    groups = {p.name: sorted(q.stem for q in p.glob("*.yaml")) for p in SWEEPS.iterdir() if p.is_dir()}
    assert groups["backend"] == ["local", "verl"]
    assert groups["algorithm"] == ["clip_cov", "dapo", "grpo", "kl_cov"]
    assert {"base", "small", "tiny"} <= set(groups["model"])  # local sizes; the rest are verl model presets
    assert groups["study"] == ["branching", "entropy", "none", "schedule"]
    assert {"ead", "ead_reference", "fixed", "fixed_0.6", "fixed_1.0", "fixed_1.2"} <= set(groups["sampling"])
    assert groups["tis"] == ["off", "sequence", "token"]
    assert {"countdown", "arithmetic"} <= set(groups["task"])
    assert groups["tracking"] == ["server", "sqlite"]
    assert set(EXPECTED_JOBS) == set(PRESETS)


def test_defaults_come_from_the_dataclasses() -> None:
    """The primary config adds nothing to RLVRConfig's defaults: the schema is the dataclass tree itself."""
    with composed([]) as cfg:
        default = RLVRConfig()
        for name in ("steps", "lr", "eval_k", "prompts_per_step", "max_new_tokens", "seed"):
            assert cfg[name] == getattr(default, name), name
        assert OmegaConf.to_container(cfg.sampling) == OmegaConf.to_container(OmegaConf.structured(default.sampling))
        assert cfg.backend.name == "local" and cfg.tracking.uri == "sqlite:///mlflow.db"
        assert cfg.experiment_name == "default" and cfg.force is False


@pytest.mark.parametrize(
    ("override", "expect"),
    [
        ("sampling=fixed_0.6", {"sampling.kind": "fixed", "sampling.tau": 0.6}),
        ("sampling=fixed_1.2", {"sampling.kind": "fixed", "sampling.tau": 1.2}),
        ("sampling=ead_reference", {"sampling.kind": "ead", "sampling.preset": "reference"}),
        ("tis=off", {"tis.enabled": False}),
        ("tis=sequence", {"tis.enabled": True, "tis.level": "sequence"}),
        ("algorithm=dapo", {"algorithm.name": "dapo"}),
        ("model=base", {"size": "base"}),
        ("task=arithmetic", {"task": "arithmetic"}),
        ("task=countdown_easy", {"task": "countdown", "task_knobs": EASY_COUNTDOWN}),
        ("tracking=server", {"tracking.serve": "never"}),
    ],
)
def test_group_options(override: str, expect: dict) -> None:
    with composed([override]) as cfg:
        for key, value in expect.items():
            got = OmegaConf.select(cfg, key)
            got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
            if key == "task_knobs":
                got = task_knobs(got)  # the typed node holds every task's knobs, None where unset
            assert (got.name if hasattr(got, "name") else got) == value, key


@pytest.mark.parametrize("preset", PRESETS)
def test_every_job_of_every_preset_composes_and_validates(preset: str) -> None:
    jobs = preset_plan(preset)
    assert len(jobs) == EXPECTED_JOBS[preset]
    assert all(j.error is None and j.skip is None for j in jobs)
    hashes = [j.job.config_hash for j in jobs]
    assert len(set(hashes)) == len(hashes), "two jobs of a preset share a config (dedup would drop one)"
    assert {j.job.experiment_name for j in jobs} == {SHARED_EXPERIMENT.get(preset, preset)}
    for j in jobs:
        assert j.job.config.hash == j.job.config_hash
        assert OmegaConf.get_type(j.cfg) is not dict  # typed by the registered schema


def test_smoke_preset_matches_the_test_policy() -> None:
    """Tests start smoke jobs from tests/conftest.py's tiny policy, warm-started on EASY_COUNTDOWN."""
    jobs = preset_plan("smoke")
    assert {j.job.config.sampling.kind for j in jobs} == {"ead", "fixed"}
    for j in jobs:
        assert j.job.config.task_knobs == EASY_COUNTDOWN and j.job.config.steps <= 4 and j.job.config.eval_k <= 4


def test_paper_grid_is_algorithms_by_samplers_by_seeds() -> None:
    jobs = preset_plan("paper_grid")
    runs = [j.job.config for j in jobs]
    cells = {(r.algorithm.name, r.sampling.kind, r.sampling.tau, r.seed) for r in runs}
    algorithms = ("grpo", "dapo", "clip_cov", "kl_cov")
    assert {(a, s) for a, s, _, _ in cells} == {(a, s) for a in algorithms for s in ("ead", "fixed")}
    assert {t for _, s, t, _ in cells if s == "fixed"} == {0.6, 1.0, 1.2}
    assert {seed for *_, seed in cells} == {0, 1, 2}


def test_decay_ablation_sweeps_d0() -> None:
    assert sorted({j.job.config.sampling.d0 for j in preset_plan("decay_ablation")}) == [2, 4, 8, 16, 32]


def test_same_config_twice_in_one_sweep_runs_once() -> None:
    jobs = plan(["experiment=smoke", "sampling=ead", "seed=0,0", "lr=0.001,1e-3"])
    assert len(jobs) == 4 and sum(j.skip is None for j in jobs) == 1
    assert all("same config as job #0" in j.skip for j in jobs[1:])


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["steps=abc"], ["steps", "Integer"]),  # Hydra typing (schema)
        (["sampling.tau_min=-0.5"], ["sampling.tau_min"]),  # RLVRConfig.validate() range
        (["rollouts_per_prompt=1"], ["rollouts_per_prompt", ">= 2"]),
        (["sampling.kind=annealed"], ["sampling.kind", "'ead' or 'fixed'"]),
        (["algorithm.name=ppo"], ["algorithm.name", "grpo"]),
        (["sampling.tau_maxx=1.0"], ["tau_maxx"]),  # unknown key
        (["backend.name=jax"], ["backend.name", "local", "verl"]),
        (["tracking=server"], ["tracking.uri"]),  # mandatory with the server option
        (["tis.cap=0"], ["tis.cap", "> 0"]),
        (["device=tpu"], ["device", "'auto', 'cpu', 'cuda'"]),
    ],
)
def test_invalid_values_fail_before_launch_naming_the_parameter(overrides: list[str], names: list[str]) -> None:
    """A bad value given once fails when Hydra composes the sweep's master config; a bad swept value fails in the
    sweeper's plan. Either way before any launch, naming the parameter."""
    from hydra.errors import ConfigCompositionException

    from hydra_plugins.ead_sweeper.ead_sweeper import SweepConfigError

    for sweep in (overrides, [*overrides, "seed=0,1"]):
        with pytest.raises((SweepConfigError, ConfigCompositionException)) as info:
            plan(["experiment=smoke", *sweep])
        message = f"{info.value}\n{info.value.__cause__}"
        if info.type is SweepConfigError:
            assert "nothing was launched" in message
        for name in names:
            assert name in message, message


def test_a_bad_swept_value_is_caught_by_the_sweeper() -> None:
    from hydra_plugins.ead_sweeper.ead_sweeper import SweepConfigError

    with pytest.raises(SweepConfigError) as info:
        plan(["experiment=smoke", "steps=2,abc"])
    assert "steps" in str(info.value) and "could not be converted to Integer" in str(info.value)


def test_one_bad_job_rejects_the_whole_sweep() -> None:
    from hydra_plugins.ead_sweeper.ead_sweeper import SweepConfigError

    with pytest.raises(SweepConfigError) as info:
        plan(["experiment=smoke", "sampling=ead", "sampling.tau_max=1.2,1.5,0.05"])
    message = str(info.value)
    assert message.startswith("1 of 3 sweep job(s) have an invalid config")
    assert "sampling.tau_max=0.05" in message and "sampling.tau_max must be" in message


def test_dry_run_plans_and_launches_nothing(tmp_path: Path) -> None:
    overrides = ["experiment=size_scaling", "dry_run=true"]
    with sweeper(overrides) as sw:
        assert sw.sweep(overrides) == []
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "multirun").exists()


def test_pinned_overrides_recompose_to_the_planned_job() -> None:
    """The sweeper pins launch-time values into each job's overrides and composes the job once more before launching.
    Hashes are hex: one like 494452e81970 parses as a float (inf) unless quoted, and the job would not validate."""
    import dataclasses

    overrides = ["experiment=default"]
    with sweeper(overrides) as sw:
        jobs = sw.plan(overrides)
        for pj in jobs:
            pj.experiment_id = "7"
            sw.pin(pj, "http://127.0.0.1:5000")
            assert f"config_hash='{pj.job.config_hash}'" in sw.job_overrides_pinned(pj)
        pj = jobs[0]
        pj.job = dataclasses.replace(pj.job, config_hash="494452e81970")
        with pytest.raises(ValueError, match="got '494452e81970'"):
            sw.pin(pj, "http://127.0.0.1:5000")
