"""Every preset composes against verl's REAL ppo_trainer config and passes verl's own validation.

``compose_and_validate`` does what ``python -m verl.trainer.main_ppo`` does before starting Ray: Hydra
composes verl's ``ppo_trainer.yaml`` with our overrides, then verl's ``validate_config`` and its typed
configs (RolloutConfig, AlgoConfig, ActorConfig) check the result.
"""

from __future__ import annotations

import warnings

import hydra
import pytest
from omegaconf import OmegaConf

from experiments.verl.compose import compose_and_validate
from experiments.verl.config import PRESETS, preset
from experiments.verl.overrides import AGENT_LOOP_NAME, PROCESSOR_FQCN

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_composes_and_validates(name, composed):
    cfg, c = composed[name]
    r, a = c.actor_rollout_ref.rollout, c.actor_rollout_ref.actor
    assert c.actor_rollout_ref.model.path == cfg.model
    assert r.name == "vllm" and r.temperature == 1.0 and r.logprobs_mode == "processed_logprobs"
    assert r.calculate_log_probs is True and r.n == cfg.rollouts_per_prompt
    assert list(r.engine_kwargs.vllm.logits_processors) == [PROCESSOR_FQCN]
    assert r.agent.default_agent_loop == AGENT_LOOP_NAME
    assert a.policy_loss.loss_mode == "vanilla" and (a.clip_ratio_low, a.clip_ratio_high) == (0.2, 0.28)
    assert a.optim.lr == cfg.lr and a.use_kl_loss is False
    rc = c.algorithm.rollout_correction
    assert (rc.rollout_is, rc.rollout_is_threshold, rc.bypass_mode) == ("token", 2.0, False)
    assert c.algorithm.adv_estimator == "grpo" and c.algorithm.filter_groups.enable is False
    assert c.ead.schedule.tau_min == cfg.schedule().tau_min
    assert c.trainer.total_training_steps == cfg.steps and c.trainer.default_local_dir.endswith(cfg.hash)
    env = c.ray_kwargs.ray_init.runtime_env.env_vars
    assert env.MLFLOW_TRACKING_URI == cfg.tracking.uri and env.MLFLOW_RUN_ID == cfg.tracking.run_id
    assert list(c.trainer.logger) == ["console", "mlflow"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"algorithm.name": "grpo"},
        {"algorithm.name": "clip_cov"},
        {"algorithm.name": "kl_cov", "tis.enabled": False},
        {"algorithm.filter_groups": True, "algorithm.overlong_buffer": True, "tis.level": "sequence"},
        {"sampling.kind": "fixed", "sampling.tau": 0.6, "data.reward": "boxed", "dump_generations": True},
        {"resources.nnodes": 2, "resources.rollout_tp": 2, "algorithm.kl_loss_coef": 0.001},
    ],
    ids=["grpo", "clip_cov", "kl_cov-no-tis", "dapo-options-seq-tis", "fixed-boxed-dumps", "2-nodes-kl"],
)
def test_variants_compose_and_validate(overrides):
    cfg = preset("qwen2.5-math-1.5b", **overrides)
    c = compose_and_validate(cfg)
    a = c.actor_rollout_ref.actor
    assert a.policy_loss.loss_mode == cfg.algorithm.loss_mode
    assert c.algorithm.rollout_correction.rollout_is == (cfg.tis.level if cfg.tis.enabled else None)
    if cfg.algorithm.name == "clip_cov":
        assert a.policy_loss.clip_cov_ratio == cfg.algorithm.clip_cov_ratio
    if cfg.algorithm.name == "kl_cov":
        assert (a.policy_loss.kl_cov_ratio, a.policy_loss.ppo_kl_coef) == (0.0002, 1.0)
    if cfg.algorithm.overlong_buffer:
        assert c.reward.reward_manager.name == "dapo" and c.reward.reward_kwargs.overlong_buffer_cfg.enable
    assert c.trainer.nnodes == cfg.resources.nnodes


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["actor_rollout_ref.actor.ppo_mini_batch_size=2048"], "must be >= actor.ppo_mini_batch_size"),
        (["actor_rollout_ref.rollout.temperature=0"], "temperature should be greater than 0"),
        (["actor_rollout_ref.rollout.no_such_key=1"], "no_such_key"),
    ],
)
def test_verls_validation_is_really_applied(extra, match):
    """Values verl rejects make compose_and_validate raise (so the passing cases above mean something)."""
    with pytest.raises(Exception, match=match):
        compose_and_validate(preset("qwen2.5-math-1.5b", extra_overrides=extra))


def test_agent_loop_registry_entry_loads_like_verl(composed):
    """verl's AgentLoopWorker reads agent_loop_config_path with OmegaConf.load and registers entries by name."""
    _, c = composed["qwen2.5-math-1.5b"]
    entries = OmegaConf.load(c.actor_rollout_ref.rollout.agent.agent_loop_config_path)
    by_name = {e.name: e for e in entries}
    entry = by_name[c.actor_rollout_ref.rollout.agent.default_agent_loop]
    from experiments.verl.agent_loop import EADAgentLoop

    assert hydra.utils.get_class(entry._target_) is EADAgentLoop


def test_reward_function_loads_through_verl(composed):
    """verl's own loader finds our function at pkg://... and binds reward_kwargs.method."""
    from verl.trainer.ppo.reward import get_custom_reward_fn

    _, c = composed["qwen2.5-math-1.5b"]
    boxed = OmegaConf.merge(c, {"reward": {"custom_reward_function": {"reward_kwargs": {"method": "boxed"}}}})
    fn = get_custom_reward_fn(boxed)
    out = fn(data_source="math500", solution_str="so \\boxed{12}", ground_truth="12", extra_info={})
    assert out["score"] == 1.0 and out["acc"] == 1.0 and out["pred"] == "12"
    assert fn(data_source="math500", solution_str="\\boxed{13}", ground_truth="12", extra_info={})["score"] == 0.0


def test_composition_is_deterministic():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = compose_and_validate(preset("smoke"))
        b = compose_and_validate(preset("smoke"))
    assert OmegaConf.to_container(a) == OmegaConf.to_container(b)
