"""TIS through verl: the weights and policy losses verl computes from OUR composed config equal ours.

verl's path: ``compute_rollout_correction_and_add_to_batch`` (the trainer's advantage step) with the
composed ``algorithm.rollout_correction``, then the policy loss ``get_policy_loss_fn(loss_mode)`` with the
composed actor config (what verl's ``ppo_loss`` calls). Ours: ``ead_core.tis.truncated_is_weights`` (the
local backend's weights) in the same loss. Vanilla is also checked against the formula written out.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch
from verl.utils.config import omega_conf_to_dataclass

from ead_core.tis import truncated_is_weights
from experiments.verl.compose import compose_and_validate
from experiments.verl.config import preset

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def batch(seed: int, b: int = 8, t: int = 24, spread: float = 0.7):
    """Log-probs of an annealed behaviour policy and of pi_old, a ragged mask, advantages, new log-probs."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g) * 3
    beh = (old + torch.randn(b, t, generator=g) * spread).clamp(max=-1e-4)
    new = old + torch.randn(b, t, generator=g) * 0.1
    lengths = torch.randint(3, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    adv = torch.randn(b, 1, generator=g).expand(b, t).contiguous()
    return old, beh, new, mask, adv


@pytest.fixture(scope="module")
def configs():
    """Composed verl configs (our overrides) per algorithm and TIS setting."""
    out = {}
    for key, kw in {
        "vanilla": {"algorithm.name": "dapo"},
        "clip_cov": {"algorithm.name": "clip_cov"},
        "kl_cov": {"algorithm.name": "kl_cov"},
        "sequence": {"tis.level": "sequence", "tis.cap": 5.0},
        "off": {"tis.enabled": False},
    }.items():
        cfg = preset("qwen2.5-math-1.5b", **kw)
        c = compose_and_validate(cfg)
        resolved = copy.deepcopy(c)
        OmegaConf.resolve(resolved)
        out[key] = (cfg, c, omega_conf_to_dataclass(resolved.actor_rollout_ref.actor))
    return out


def verl_weights(c, old, beh, mask):
    data = DataProto.from_dict(tensors={"old_log_probs": old, "rollout_log_probs": beh, "response_mask": mask})
    data, metrics = compute_rollout_correction_and_add_to_batch(data, c.algorithm.rollout_correction)
    return data.batch.get("rollout_is_weights"), metrics


@pytest.mark.parametrize("key", ["vanilla", "sequence"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weights_equal_ead_core(configs, key, seed):
    cfg, c, _ = configs[key]
    old, beh, _, mask, _ = batch(seed)
    theirs, metrics = verl_weights(c, old, beh, mask)
    ours, stats = truncated_is_weights(old, beh, mask, cfg.tis.cap, level=cfg.tis.level)
    torch.testing.assert_close(theirs, ours, rtol=1e-6, atol=1e-7)
    assert (ours > 0).any() and (ours == cfg.tis.cap).any()  # some tokens truncated: the cap matters here
    token_mean = float((ours * mask).sum() / mask.sum())  # verl averages over tokens at both levels
    assert metrics["rollout_corr/rollout_is_mean"] == pytest.approx(token_mean, rel=1e-5)
    assert metrics["rollout_corr/k3_kl"] == pytest.approx(stats["kl_k3"], rel=1e-4)


def test_tis_off_gives_no_weights_but_diagnostics(configs):
    _, c, _ = configs["off"]
    old, beh, _, mask, _ = batch(3)
    theirs, metrics = verl_weights(c, old, beh, mask)
    assert theirs is None
    assert "rollout_corr/kl" in metrics and "rollout_corr/rollout_is_mean" not in metrics


def loss(actor_cfg, weights, old, new, mask, adv, seed=0):
    torch.manual_seed(seed)  # clip_cov / kl_cov pick tokens at random
    fn = get_policy_loss_fn(actor_cfg.policy_loss.loss_mode)
    pg_loss, pg_metrics = fn(
        old_log_prob=old,
        log_prob=new,
        advantages=adv,
        response_mask=mask.bool(),
        loss_agg_mode=actor_cfg.loss_agg_mode,
        config=actor_cfg,
        rollout_is_weights=weights,
    )
    return pg_loss, pg_metrics


@pytest.mark.parametrize("key", ["vanilla", "clip_cov", "kl_cov"])
@pytest.mark.parametrize("seed", [0, 5])
def test_losses_equal_with_verl_and_ead_core_weights(configs, key, seed):
    cfg, c, actor_cfg = configs[key]
    assert actor_cfg.policy_loss.loss_mode == key
    old, beh, new, mask, adv = batch(seed)
    w_verl, _ = verl_weights(c, old, beh, mask)
    w_ours, _ = truncated_is_weights(old, beh, mask, cfg.tis.cap)
    l_verl, m_verl = loss(actor_cfg, w_verl, old, new, mask, adv)
    l_ours, m_ours = loss(actor_cfg, w_ours, old, new, mask, adv)
    torch.testing.assert_close(l_verl, l_ours, rtol=1e-6, atol=1e-7)
    assert m_verl.keys() == m_ours.keys()
    l_plain, _ = loss(actor_cfg, None, old, new, mask, adv)
    assert not math.isclose(float(l_ours), float(l_plain), rel_tol=1e-4)  # the weights are really applied


def test_vanilla_loss_is_the_dual_clip_ppo_formula_times_the_weights(configs):
    cfg, c, actor_cfg = configs["vanilla"]
    old, beh, new, mask, adv = batch(7)
    w, _ = truncated_is_weights(old, beh, mask, cfg.tis.cap)
    low, high = cfg.algorithm.resolved_clip
    assert (actor_cfg.clip_ratio_low, actor_cfg.clip_ratio_high, actor_cfg.clip_ratio_c) == (low, high, 3.0)
    ratio = torch.exp(new - old)
    clipped = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - low, 1 + high))
    dual = torch.where(adv < 0, torch.minimum(clipped, -adv * actor_cfg.clip_ratio_c), clipped)
    expected = (dual * w * mask).sum() / mask.sum()  # token-mean
    got, _ = loss(actor_cfg, w, old, new, mask, adv)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
