"""VerlRunConfig: presets carry the paper's settings, validation names the parameter, the hash keys resume."""

from __future__ import annotations

import dataclasses

import pytest

from ead_core.schedule import EADSchedule, FixedSchedule
from experiments.local.config import SamplingConfig, TISConfig
from experiments.tracking.hashing import flat_params
from experiments.verl.config import PRESETS, VerlRunConfig, apply_overrides, from_dict, preset


@pytest.mark.parametrize(
    ("name", "model", "tau_min"),
    [
        ("qwen2.5-math-1.5b", "Qwen/Qwen2.5-Math-1.5B", 0.1),
        ("llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct", 0.1),
        ("qwen2.5-math-7b", "Qwen/Qwen2.5-Math-7B", 0.8),
    ],
)
def test_paper_presets(name, model, tau_min):
    cfg = preset(name)
    assert cfg.model == model and cfg.preset == name
    sched = cfg.schedule()
    assert isinstance(sched, EADSchedule)
    assert (sched.tau_max, sched.tau_min, sched.d0, sched.c, sched.d_growth, sched.d_cap) == (
        1.2,
        tau_min,
        25.0,
        10,
        5.0,
        40000.0,
    )
    assert sched.d_scale == 20.0  # "reference": the authors' released sampler
    # research/paper.md section 3: 1024 prompts, mini-batch 256, micro 4 (7B: 2), n 16 with lr 4e-6,
    # 1024 / 3072 tokens, DAPO clip-higher, no dynamic sampling / overlong shaping / KL, eval every 10 with n 16.
    assert (cfg.train_batch_size, cfg.ppo_mini_batch_size, cfg.rollouts_per_prompt, cfg.lr) == (1024, 256, 16, 4e-6)
    assert (cfg.data.max_prompt_length, cfg.data.max_response_length) == (1024, 3072)
    assert cfg.algorithm.name == "dapo" and cfg.algorithm.resolved_clip == (0.2, 0.28)
    assert cfg.algorithm.loss_agg_mode == "token-mean"
    assert not cfg.algorithm.filter_groups and not cfg.algorithm.overlong_buffer and cfg.algorithm.kl_loss_coef == 0
    assert (cfg.eval_interval, cfg.eval_n, cfg.eval_k, cfg.ckpt_interval) == (10, 16, 16, 10)
    assert cfg.tis.enabled and cfg.tis.cap == 2.0 and cfg.tis.level == "token"
    assert cfg.data.reward == "math_verify"


def test_every_preset_is_valid_and_named():
    for name in PRESETS:
        assert preset(name).validate().preset == name
    with pytest.raises(ValueError, match="preset must be one of"):
        preset("gpt-5")


def test_sampling_and_tis_are_the_local_backends_classes():
    cfg = VerlRunConfig()
    assert isinstance(cfg.sampling, SamplingConfig) and isinstance(cfg.tis, TISConfig)
    fixed = apply_overrides(cfg, {"sampling.kind": "fixed", "sampling.tau": 0.6})
    assert fixed.schedule() == FixedSchedule(0.6)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"algorithm.name": "ppo"}, "algorithm.name must be one of"),
        ({"rollouts_per_prompt": 1}, "rollouts_per_prompt must be an integer >= 2"),
        ({"ppo_mini_batch_size": 300}, "ppo_mini_batch_size must be a divisor of train_batch_size"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"eval_k": 32}, r"eval_n must be >= eval_k \(32\)"),
        ({"sampling.tau_min": 0.0}, "sampling.tau_min"),
        ({"sampling.kind": "annealed"}, "sampling.kind must be 'ead' or 'fixed'"),
        ({"sampling.kind": "fixed_matched"}, "sampling.kind must be a kind verl samples with"),
        ({"tis.cap": -1.0}, "tis.cap must be a finite number > 0"),
        ({"tis.level": "batch"}, "tis.level must be 'token' or 'sequence'"),
        ({"data.reward": "llm_judge"}, "data.reward must be one of"),
        ({"data.max_response_length": 10}, r"data.max_response_length must be > sampling.c \(10\)"),
        ({"data.train_files": []}, "data.train_files must be a non-empty list"),
        ({"resources.rollout_tp": 3}, r"resources.rollout_tp must be a divisor of resources.n_gpus_per_node \(8\)"),
        ({"resources.gpu_memory_utilization": 1.5}, r"resources.gpu_memory_utilization must be in \(0, 1\]"),
        ({"resources.micro_batch_size_per_gpu": 3}, "resources.micro_batch_size_per_gpu must be a divisor"),
        ({"resources.n_gpus_per_node": 7}, "train_batch_size must be such that"),
        ({"algorithm.clip_ratio_c": 1.0}, r"algorithm.clip_ratio_c must be > 1"),
        ({"algorithm.loss_agg_mode": "mean"}, "algorithm.loss_agg_mode must be one of"),
        (
            {"algorithm.overlong_buffer": True, "algorithm.overlong_buffer_len": 4000},
            r"algorithm.overlong_buffer_len must be < data.max_response_length \(3072\)",
        ),
        ({"position_edges": [100, 10]}, "position_edges must be a strictly increasing list"),
        ({"tracking.run_id": "abc"}, "tracking.uri must be set when tracking.run_id is set"),
        ({"extra_overrides": ["trainer.foo"]}, "extra_overrides must be a list of 'key=value' strings"),
    ],
)
def test_validation_names_the_parameter(overrides, match):
    with pytest.raises(ValueError, match=match):
        preset("qwen2.5-math-1.5b", **overrides)


def test_hash_ignores_tracking_and_paths_but_not_training_settings():
    base = preset("qwen2.5-math-1.5b")
    same = apply_overrides(
        base, {"tracking.uri": "http://x:5000", "tracking.run_id": "r1", "ckpt_root": "/elsewhere", "preset": None}
    )
    assert same.hash == base.hash
    assert same.ckpt_dir == f"/elsewhere/{base.hash}"
    for key, value in [("lr", 1e-6), ("algorithm.name", "grpo"), ("sampling.d_scale", 1.0), ("tis.enabled", False)]:
        assert apply_overrides(base, {key: value}).hash != base.hash, key
    assert apply_overrides(base, {"lr": 4e-6}).hash == base.hash  # same value, same hash


def test_overrides_parse_cli_strings_and_reject_unknown_keys():
    cfg = apply_overrides(
        preset("smoke"),
        {"lr": "1e-6", "tis.enabled": "false", "data.train_files": "[a.parquet, b.parquet]", "sampling.d_cap": "inf"},
    )
    assert cfg.lr == 1e-6 and cfg.tis.enabled is False and cfg.data.train_files == ["a.parquet", "b.parquet"]
    assert cfg.sampling.d_cap == float("inf")
    with pytest.raises(ValueError, match="unknown config key 'algorithm.nme'"):
        apply_overrides(cfg, {"algorithm.nme": "grpo"})
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['sampling.tau_mx'\]"):
        from_dict({"sampling": {"tau_mx": 1.0}})
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['epochs'\]"):
        from_dict({"epochs": 3})


def test_round_trip_through_plain_data():
    cfg = preset("qwen2.5-math-7b", **{"algorithm.name": "kl_cov", "tis.cap": 5.0})
    again = from_dict(cfg.to_dict())
    assert again == cfg and again.hash == cfg.hash
    flat = flat_params(cfg)
    assert flat["algorithm.name"] == "kl_cov" and flat["sampling.tau_min"] == 0.8 and flat["tis.cap"] == 5.0
    assert {f.name for f in dataclasses.fields(VerlRunConfig)} >= {"algorithm", "sampling", "tis", "data", "seed"}
