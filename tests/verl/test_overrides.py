"""The translation of a VerlRunConfig into verl 0.9.1 overrides, per algorithm, TIS setting and sampler."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest

import ead_core
from experiments.verl import overrides as ov
from experiments.verl.__main__ import main
from experiments.verl.config import apply_overrides, preset


def as_dict(overrides: list[str]) -> dict[str, str]:
    """``{key: value text}`` with the ``+`` prefix kept on the key (it matters to Hydra)."""
    out = {}
    for o in overrides:
        k, v = o.split("=", 1)
        assert k not in out, f"duplicate override {k}"
        out[k] = v
    return out


def overrides_for(**kw) -> dict[str, str]:
    return as_dict(ov.to_verl_overrides(preset("qwen2.5-math-1.5b", **kw)))


A = "actor_rollout_ref.actor."
R = "actor_rollout_ref.rollout."


@pytest.mark.parametrize(
    ("algorithm", "expected", "absent"),
    [
        (
            "grpo",
            {A + "clip_ratio_low": "0.2", A + "clip_ratio_high": "0.2", A + "policy_loss.loss_mode": "vanilla"},
            [A + "policy_loss.clip_cov_ratio", A + "policy_loss.kl_cov_ratio"],
        ),
        (
            "dapo",
            {A + "clip_ratio_low": "0.2", A + "clip_ratio_high": "0.28", A + "policy_loss.loss_mode": "vanilla"},
            [A + "policy_loss.clip_cov_ratio", A + "policy_loss.kl_cov_ratio"],
        ),
        (
            "clip_cov",
            {
                A + "policy_loss.loss_mode": "clip_cov",
                A + "policy_loss.clip_cov_ratio": "0.0002",
                A + "policy_loss.clip_cov_lb": "1.0",
                A + "policy_loss.clip_cov_ub": "5.0",
                A + "clip_ratio_high": "0.2",
            },
            [A + "policy_loss.kl_cov_ratio"],
        ),
        (
            "kl_cov",
            {
                A + "policy_loss.loss_mode": "kl_cov",
                A + "policy_loss.kl_cov_ratio": "0.0002",
                A + "policy_loss.ppo_kl_coef": "1.0",
            },
            [A + "policy_loss.clip_cov_ratio"],
        ),
    ],
)
def test_algorithms_map_to_verl_keys(algorithm, expected, absent):
    d = overrides_for(**{"algorithm.name": algorithm})
    common = {
        "algorithm.adv_estimator": "grpo",
        "algorithm.norm_adv_by_std_in_grpo": "true",
        "algorithm.use_kl_in_reward": "false",
        A + "use_kl_loss": "false",
        A + "loss_agg_mode": "token-mean",
        A + "clip_ratio_c": "3.0",
        A + "entropy_coeff": "0",
        "algorithm.filter_groups.enable": "false",  # off by default, as in the paper
        "reward.reward_manager.name": "naive",  # no overlong shaping by default
    }
    for k, v in {**common, **expected}.items():
        assert d[k] == v, (k, d.get(k))
    for k in absent:
        assert k not in d
    assert not any(k.startswith("+reward.reward_kwargs") for k in d)


def test_dapo_options_dynamic_sampling_and_overlong_shaping():
    d = overrides_for(
        **{"algorithm.filter_groups": True, "algorithm.overlong_buffer": True, "algorithm.overlong_buffer_len": 512}
    )
    assert d["algorithm.filter_groups.enable"] == "true"
    assert d["algorithm.filter_groups.metric"] == "acc"  # our reward function returns it
    assert d["reward.reward_manager.name"] == "dapo"
    assert d["+reward.reward_kwargs.overlong_buffer_cfg.enable"] == "true"
    assert d["+reward.reward_kwargs.overlong_buffer_cfg.len"] == "512"
    assert d["+reward.reward_kwargs.max_resp_len"] == "3072"


def test_kl_loss_only_when_asked():
    d = overrides_for(**{"algorithm.name": "grpo", "algorithm.kl_loss_coef": 0.001})
    assert d[A + "use_kl_loss"] == "true" and d[A + "kl_loss_coef"] == "0.001" and d[A + "kl_loss_type"] == "low_var_kl"


@pytest.mark.parametrize(
    ("tis", "rollout_is"),
    [
        ({}, "token"),
        ({"tis.level": "sequence"}, "sequence"),
        ({"tis.enabled": False}, "null"),
    ],
)
def test_tis_maps_to_rollout_correction_never_bypass(tis, rollout_is):
    d = overrides_for(**tis)
    rc = "algorithm.rollout_correction."
    assert d[rc + "rollout_is"] == rollout_is
    assert d[rc + "rollout_is_threshold"] == "2.0"
    assert d[rc + "bypass_mode"] == "false"
    assert d[rc + "rollout_rs"] == "null" and d[rc + "rollout_is_batch_normalize"] == "false"
    assert overrides_for(**{**tis, "tis.cap": 5.0})[rc + "rollout_is_threshold"] == "5.0"


def test_sampling_wiring_temperature_logprobs_processor_agent_loop():
    d = overrides_for()
    assert d[R + "name"] == "vllm" and d[R + "mode"] == "async"
    assert d[R + "temperature"] == "1.0" and d[R + "top_p"] == "1.0" and d[R + "top_k"] == "-1"
    assert d[R + "calculate_log_probs"] == "true" and d[R + "logprobs_mode"] == "processed_logprobs"
    assert d["+" + R + "engine_kwargs.vllm.logits_processors"] == f"[{ov.PROCESSOR_FQCN}]"
    assert d[R + "agent.default_agent_loop"] == ov.AGENT_LOOP_NAME
    assert Path(d[R + "agent.agent_loop_config_path"]).is_file()
    assert d[R + "n"] == "16" and d[R + "val_kwargs.n"] == "16"
    assert d[R + "val_kwargs.do_sample"] == "true" and d[R + "val_kwargs.temperature"] == "1.0"
    assert d["trainer.use_v1"] == "true" and d["trainer.v1.trainer_mode"] == ov.TRAINER_MODE
    # The schedule the agent loop stamps, in the harness-owned +ead block.
    sched = preset("qwen2.5-math-1.5b").schedule().to_dict()
    for field, value in sched.items():
        assert d[f"+ead.schedule.{field}"] == ov.fmt(value)


def test_processor_fqcn_matches_the_processor_module():
    """ead_core.vllm_processor imports vLLM (absent here), so read its FQCN constant from the source."""
    src = Path(ead_core.__file__).with_name("vllm_processor.py").read_text()
    consts = {
        t.id: n.value.value
        for n in ast.parse(src).body
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    assert consts["FQCN"] == ov.PROCESSOR_FQCN
    assert "class EADLogitsProcessor" in src


def test_fixed_temperature_goes_through_the_same_path():
    d = overrides_for(**{"sampling.kind": "fixed", "sampling.tau": 0.6})
    assert d["+ead.schedule.kind"] == "fixed" and d["+ead.schedule.tau"] == "0.6"
    assert d[R + "temperature"] == "1.0"  # the processor applies tau, not vLLM's temperature
    assert d["+" + R + "engine_kwargs.vllm.logits_processors"] == f"[{ov.PROCESSOR_FQCN}]"


def test_batch_lengths_steps_seed_and_resume_dir():
    cfg = preset("qwen2.5-math-1.5b", **{"seed": 7, "steps": 123, "eval_interval": 5, "ckpt_root": "/ckpt"})
    d = as_dict(ov.to_verl_overrides(cfg))
    assert d["data.train_batch_size"] == "1024" and d[A + "ppo_mini_batch_size"] == "256"
    assert d[A + "ppo_micro_batch_size_per_gpu"] == "4" and d[A + "optim.lr"] == "4e-06"
    assert d["data.max_prompt_length"] == "1024" and d["data.max_response_length"] == "3072"
    assert d["trainer.total_training_steps"] == "123" and d["trainer.test_freq"] == "5"
    assert d["trainer.save_freq"] == "10" and d["trainer.val_before_train"] == "true"
    assert d["data.seed"] == "7" and d[R + "seed"] == "7" and d[A + "data_loader_seed"] == "7"
    assert d["trainer.resume_mode"] == "auto" and d["trainer.default_local_dir"] == f"/ckpt/{cfg.hash}"
    assert d["reward.custom_reward_function.path"] == "pkg://experiments.verl.rewards"
    assert d["+reward.custom_reward_function.reward_kwargs.method"] == "math_verify"
    assert all(Path(p).is_absolute() for p in d["data.train_files"].strip("[]").split(","))


def test_mlflow_explicit_uri_and_run_id_reach_the_ray_workers():
    d = overrides_for(**{"tracking.uri": "http://mlflow.example:5000", "tracking.run_id": "abc123"})
    env = "+ray_kwargs.ray_init.runtime_env.env_vars."
    assert d[env + "MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"
    assert d[env + "MLFLOW_RUN_ID"] == "abc123"
    assert d[env + "VERL_USE_EXTERNAL_MODULES"] == ov.TRAINER_MODULE
    assert d["trainer.logger"] == "[console,mlflow]"
    off = overrides_for()
    assert off["trainer.logger"] == "[console]"  # no URI: no MLflow, never verl's /tmp SQLite default
    assert not any("MLFLOW" in k for k in off)


def test_extra_overrides_replace_same_keys_and_come_last():
    cfg = preset("smoke", extra_overrides=["actor_rollout_ref.rollout.max_num_seqs=64", "trainer.save_freq=1"])
    out = ov.to_verl_overrides(cfg)
    assert out[-2:] == ["actor_rollout_ref.rollout.max_num_seqs=64", "trainer.save_freq=1"]
    assert sum(ov.override_key(o) == "trainer.save_freq" for o in out) == 1
    with pytest.raises(ValueError, match="more than once"):
        ov.to_verl_overrides(apply_overrides(cfg, {"extra_overrides": ["a.b=1", "a.b=2"]}))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "true"),
        (4e-6, "4e-06"),
        (float("inf"), "inf"),
        ([10, 100], "[10,100]"),
        ("Qwen/Qwen2.5-Math-1.5B", "Qwen/Qwen2.5-Math-1.5B"),
        ("123456789012", "'123456789012'"),  # a config hash of digits stays a string
        ("12e4567890ab", "12e4567890ab"),
        ("1e5", "'1e5'"),
        ("has space", "'has space'"),
        ("it's", "'it\\'s'"),
    ],
)
def test_value_formatting(value, text):
    assert ov.fmt(value) == text


def test_build_command_is_verls_entry_point():
    cmd = ov.build_command(preset("smoke"))
    assert cmd[:3] == ["python", "-m", "verl.trainer.main_ppo"]
    assert cmd[3:] == ov.to_verl_overrides(preset("smoke"))


@pytest.mark.parametrize("name", ["qwen2.5-math-1.5b", "llama-3.2-1b-instruct", "qwen2.5-math-7b", "smoke"])
def test_dry_run_cli_prints_the_exact_command(name, capsys):
    assert main(["--preset", name, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "python -m verl.trainer.main_ppo" in text
    command = text[text.index("python -m verl.trainer.main_ppo") :].split("\n\n")[0].replace("\\\n", " ")
    tokens = shlex.split(command)  # what the shell passes to verl (quoting differs: a hash like 06e0995 needs it)
    for o in ov.to_verl_overrides(preset(name)):
        assert o in tokens, o
    assert f"config hash: {preset(name).hash}" in text
