"""The local update, checked against hand computations on constructed rewards: TIS weights multiply the policy
loss (and its gradient), DAPO drops groups whose rewards are all equal, and the policy runs without dropout."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from experiments.local.evaluation import entropy_table
from experiments.local.policy import load_policy, save_policy
from experiments.local.rollout import sample, sequence_logprobs
from experiments.local.train import Trainer
from experiments.tracking.loggers import JsonlLogger
from tests.local.helpers import differing_metrics, small_config

MIXED = torch.tensor([1.0, 0.0, 1.0, 0.0] * 4)  # every group of 4 has right and wrong answers


def trainer_for(policy_dir: str, run_dir, **overrides) -> Trainer:
    """A Trainer on 4 prompts x 4 rollouts with one mini-batch and one epoch: the update's only loss is computed at
    ratio 1 (pi = pi_old), where PPO clipping is inactive and the loss has a closed form."""
    cfg = small_config(policy_dir, mini_batches=1, ppo_epochs=1, **overrides)
    return Trainer(cfg, run_dir, JsonlLogger(run_dir))


def grpo_advantages(rewards: torch.Tensor, index: np.ndarray, eps: float = 1e-6) -> torch.Tensor:
    """(r - group mean) / (group std + eps), the GRPO outcome advantage of each row."""
    adv = torch.zeros_like(rewards)
    for g in np.unique(index):
        rows = torch.from_numpy(index == g)
        adv[rows] = (rewards[rows] - rewards[rows].mean()) / (rewards[rows].std() + eps)
    return adv


def hand_loss_and_grad_norm(trainer: Trainer, r, adv: torch.Tensor, weights: torch.Tensor, rows: torch.Tensor):
    """Token-mean of -A * w * ratio over ``rows`` at ratio 1, and the norm of its gradient (before the update)."""
    model = trainer.model
    sub_mask = r.response_mask[rows]
    with torch.no_grad():
        old, _ = sequence_logprobs(model, r)
    logp, _ = sequence_logprobs(model, r)
    ratio = torch.exp(logp - old)[rows]
    loss = -(adv[rows, None] * weights[rows] * ratio * sub_mask).sum() / sub_mask.sum()
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None))
    return float(loss.detach()), float(norm)


def test_tis_weights_multiply_the_policy_loss(tiny_policy_dir, tmp_path):
    """Sampling at tau = 0.6 makes pi_old / mu differ from 1; the logged loss and gradient norm equal the hand
    computation with min(pi_old / mu, cap) when TIS is on and with weight 1 when it is off."""
    cap = 1.5
    got, hand = {}, {}
    for enabled in (True, False):
        tr = trainer_for(tiny_policy_dir, tmp_path / str(enabled), sampling={"kind": "fixed", "tau": 0.6},
                         tis={"enabled": enabled, "cap": cap})  # fmt: skip
        _, r, index, _, _ = tr.rollout(0)
        adv = grpo_advantages(MIXED, index)
        with torch.no_grad():
            old, _ = sequence_logprobs(tr.model, r)
        ratio = torch.exp(old - r.behavior_logprobs) * r.response_mask
        valid = r.response_mask.bool()
        assert (ratio[valid] > cap).any() and (ratio[valid] < 0.9).any()  # weights far from 1, some truncated
        weights = ratio.clamp(max=cap) if enabled else torch.ones_like(ratio)
        hand[enabled] = hand_loss_and_grad_norm(tr, r, adv, weights, torch.arange(len(MIXED)))
        m = tr.update(0, r, index, MIXED)
        got[enabled] = (m["train/pg_loss"], m["train/grad_norm"])
        assert m["train/ppo_kl"] == pytest.approx(0.0, abs=1e-6)
    for enabled in (True, False):
        assert got[enabled] == pytest.approx(hand[enabled], rel=1e-4), enabled
    assert hand[True][0] != pytest.approx(hand[False][0], rel=0.05)  # the weights matter: ignoring them shows
    assert hand[True][1] != pytest.approx(hand[False][1], rel=0.02)  # 3.7% apart on this sample


def test_dapo_drops_groups_with_equal_rewards(tiny_policy_dir, tmp_path):
    """Groups: all right, all wrong, one right, three right. DAPO keeps the last two: half the rows, and the loss is
    the token mean over those rows only. With every group uniform nothing is kept and the weights do not move."""
    tr = trainer_for(tiny_policy_dir, tmp_path / "dapo", algorithm={"name": "dapo"}, tis={"enabled": False})
    a = tr.algo
    assert (a.clip_ratio_low, a.clip_ratio_high, a.loss_agg_mode, a.filter_groups) == (0.2, 0.28, "token-mean", True)
    _, r, index, _, _ = tr.rollout(0)
    rewards = torch.tensor([1.0] * 4 + [0.0] * 4 + [1.0, 0, 0, 0] + [0.0, 1, 1, 1])
    adv = grpo_advantages(rewards, index)
    kept = torch.arange(8, 16)
    ones = torch.ones_like(r.response_mask)
    hand_kept = hand_loss_and_grad_norm(tr, r, adv, ones, kept)
    hand_all = hand_loss_and_grad_norm(tr, r, adv, ones, torch.arange(16))
    assert abs(hand_kept[0] - hand_all[0]) > 1e-3  # the filter changes the loss (token-mean over fewer tokens)
    m = tr.update(0, r, index, rewards)
    assert m["train/groups_kept_frac"] == 0.5
    assert (m["train/pg_loss"], m["train/grad_norm"]) == pytest.approx(hand_kept, rel=1e-4)

    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    uniform = torch.tensor([1.0] * 4 + [0.0] * 12)
    m = tr.update(1, r, index, uniform)
    assert m["train/groups_kept_frac"] == 0.0 and np.isnan(m["train/grad_norm"]) and np.isnan(m["train/pg_loss"])
    assert all(torch.equal(before[k], v) for k, v in tr.model.state_dict().items())

    grpo = trainer_for(tiny_policy_dir, tmp_path / "grpo", tis={"enabled": False})
    assert grpo.update(0, r, index, uniform)["train/groups_kept_frac"] == 1.0  # GRPO keeps every group


def make_dropout_policy(policy_dir: str, path) -> str:
    """The session's policy with attention dropout 0.5 in its config (any HF causal LM may come with dropout)."""
    model, tok = load_policy(policy_dir)
    model.config.attention_dropout = 0.5
    save_policy(model, tok, path)
    return str(path)


@pytest.fixture
def dropout_policy_dir(tiny_policy_dir, tmp_path) -> str:
    return make_dropout_policy(tiny_policy_dir, tmp_path / "dropout-policy")


def test_logprobs_and_evaluation_ignore_dropout(dropout_policy_dir):
    model, tok = load_policy(dropout_policy_dir)
    model.train()
    ids = torch.tensor([[tok.bos_token_id, *tok.encode("3 5 7>22:", add_special_tokens=False)]])
    assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)  # dropout is really on
    r = sample(model, tok, ["3 5 7>22:", "1 2 3>5:"] * 4, small_schedule(), 0, 10, torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, ent_a = sequence_logprobs(model, r, with_entropy=True)
        b, ent_b = sequence_logprobs(model, r, with_entropy=True)
        behaviour, _ = sequence_logprobs(model, r, temperatures=r.temperatures)
    c, _ = sequence_logprobs(model, r)  # with grad, as in the PPO passes
    assert torch.equal(a, b) and torch.equal(ent_a, ent_b) and torch.equal(a, c.detach())
    torch.testing.assert_close(behaviour, r.behavior_logprobs, atol=2e-5, rtol=1e-5)  # sampler and trainer agree
    recompute = dataclasses.replace(r, entropy=None)  # no sampler entropy: the table runs the model (eval mode)
    np.testing.assert_equal(entropy_table(model, [recompute]), entropy_table(model, [recompute]))  # NaN == NaN
    from_sampler, recomputed = entropy_table(model, [r]), entropy_table(model, [recompute])
    assert [row["count"] for row in from_sampler] == [row["count"] for row in recomputed]
    np.testing.assert_allclose(
        [row["entropy_mean"] for row in from_sampler], [row["entropy_mean"] for row in recomputed], atol=2e-5
    )
    assert model.training  # the caller's mode is restored


def test_training_step_ignores_dropout(dropout_policy_dir, tmp_path):
    """pi_old and the first PPO pass see the same function (ratio exactly 1), and two runs of a step agree."""
    steps = []
    for name in ("a", "b"):
        tr = trainer_for(dropout_policy_dir, tmp_path / name)
        assert tr.model.config.attention_dropout == 0.5
        _, r, index, _, _ = tr.rollout(0)
        m = tr.update(0, r, index, MIXED)
        assert m["train/ppo_kl"] == pytest.approx(0.0, abs=1e-6) and m["train/pg_clipfrac"] == 0.0
        assert m["train/grad_norm"] > 0
        steps.append(m | tr.evaluate(1))
    assert not differing_metrics(*steps)


def small_schedule():
    from ead_core import EADSchedule

    return EADSchedule(tau_max=1.2, tau_min=0.1, d0=8.0, c=1, d_growth=0.2)
