"""The reward function (Math-Verify and boxed match, both verl's own) and the EAD / evaluation metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from verl.trainer.ppo.metric_utils import process_validation_metrics

from ead_core.schedule import EADSchedule, FixedSchedule
from ead_core.tis import truncated_is_weights
from experiments.verl import metrics as M
from experiments.verl.rewards import compute_score, extract_boxed


def test_boxed_and_math_verify_rewards_differ_where_they_should():
    """verl's boxed match compares normalised strings; Math-Verify compares values."""
    equivalent = "The answer is $\\boxed{2/4}$."
    assert compute_score("math500", equivalent, "\\frac{1}{2}", {}, method="boxed")["score"] == 0.0
    assert compute_score("math500", equivalent, "\\frac{1}{2}", {}, method="math_verify")["score"] == 1.0
    for method in ("boxed", "math_verify"):
        ok = compute_score("math500", "so \\boxed{12}", "12", {"ead_tau_mean": 0.9}, method=method)
        assert ok == {"score": 1.0, "acc": 1.0, "pred": "12", "ead_tau_mean": 0.9}
        bad = compute_score("math500", "no answer", "12", None, method=method)
        assert bad["score"] == 0.0 and bad["pred"] is None and "ead_tau_mean" not in bad
    with pytest.raises(ValueError, match="reward_kwargs.method must be one of"):
        compute_score("math500", "x", "1", {}, method="judge")


def test_extract_boxed_takes_the_last_box():
    assert extract_boxed("\\boxed{1} and then \\boxed{\\frac{2}{3}}") == "\\frac{2}{3}"
    assert extract_boxed("nothing") is None


def _lp(seed, b=6, t=40):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    beh = (old + torch.randn(b, t, generator=g, dtype=torch.float64)).clamp(max=0)
    lengths = torch.tensor([40, 35, 12, 9, 25, 1])
    mask = (torch.arange(t)[None] < lengths[:, None]).double()
    return old, beh, mask


def test_ead_step_metrics_against_direct_computation():
    old, beh, mask = _lp(0)
    sched = EADSchedule.preset("paper")  # d = 25 + 5 s: tau moves a lot within 40 tokens
    step, cap, edges = 2, 2.0, [10, 20]
    m = M.ead_step_metrics(old, beh, mask, sched, step, cap, "token", edges)
    valid = mask.bool()
    pos = torch.arange(40, dtype=torch.float64).expand(6, 40)
    taus = torch.tensor(sched.temperatures(np.arange(40.0), step)).expand(6, 40)
    assert m["train/tau_mean"] == pytest.approx(float(taus[valid].mean()))
    assert m["schedule/decay"] == sched.decay(step) == 35
    _, stats = truncated_is_weights(old, beh, mask, cap)
    for ours, key in [("train/is_weight_mean", "mean"), ("train/is_truncated_frac", "truncated_frac")]:
        assert m[ours] == pytest.approx(stats[key])
    assert m["train/kl_behavior_old"] == pytest.approx(stats["kl_k3"])
    lr = old - beh
    total = 0.0
    for lo, hi, name in [(0, 10, "pos_0-10"), (10, 20, "pos_10-20"), (20, math.inf, "pos_20-inf")]:
        sel = valid & (pos >= lo) & (pos < hi)
        assert m[f"train/is_truncated_frac/{name}"] == pytest.approx(float((lr[sel] > math.log(cap)).double().mean()))
        assert m[f"train/tau_mean/{name}"] == pytest.approx(float(taus[sel].mean()))
        total += m[f"train/token_frac/{name}"]
    assert m["train/tau_mean/pos_0-10"] == 1.0  # t < c: tau = 1
    assert total == pytest.approx(1.0)


def test_ead_step_metrics_without_logprobs_and_for_fixed_schedules():
    _, _, mask = _lp(1)
    m = M.ead_step_metrics(None, None, mask, FixedSchedule(0.6), 5, 2.0)
    assert m["train/tau_mean"] == pytest.approx(0.6) and "train/is_weight_mean" not in m
    assert M.ead_step_metrics(None, None, torch.zeros(2, 3), FixedSchedule(1.0), 0, 2.0) == {"schedule/decay": math.inf}


def test_eval_metrics_unbiased_bootstrap_and_greedy():
    # Two prompts with 4 samples each (k = 4): brief section 4's test vectors.
    sources = ["math500"] * 8 + ["math500_t1"] * 8 + ["math500_greedy"] * 2
    uids = ["a"] * 4 + ["b"] * 4 + ["a"] * 4 + ["b"] * 4 + ["a", "b"]
    acc = [1, 0, 0, 0] + [1, 1, 1, 0] + [1, 1, 1, 1] + [0, 0, 0, 0] + [1, 0]
    preds = ["3", "4", "4", "5"] + ["7"] * 3 + ["8"] + ["1"] * 8 + ["3", "x"]
    m = M.eval_metrics(sources, uids, acc, k=4, preds=preds)
    assert m["eval/pass_at_4"] == 1.0  # c = 1 and c = 3 of 4: pass@4 = 1 for both
    assert m["eval/worst_at_4"] == 0.0 and m["eval/best_at_4"] == 1.0
    assert m["eval/mean_at_4"] == pytest.approx((0.25 + 0.75) / 2)
    assert m["eval/boot_best_at_4"] < 1.0  # the bootstrap is biased low (1 of 4 correct: about 0.684)
    assert m["eval/maj_at_4"] == pytest.approx(0.5)  # "4" (wrong) wins for a, "7" (right) for b
    assert (m["eval_t1/pass_at_4"], m["eval_t1/worst_at_4"]) == (0.5, 0.5)
    assert m["eval_greedy/accuracy"] == 0.5 and "eval_greedy/pass_at_4" not in m
    assert m["eval/n_prompts"] == 2


def test_eval_metrics_k_smaller_than_n_and_lost_sessions():
    m = M.eval_metrics(["math500"] * 4, ["a"] * 4, [1, 0, 0, 0], k=2)
    assert m["eval/pass_at_2"] == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)
    padded = M.eval_metrics(["math500"] * 3, ["a"] * 3, [1, 1, 1], k=4, expected_counts={("math500", "a"): 4})
    assert padded["eval/worst_at_4"] == 0.0 and padded["eval/mean_at_4"] == 0.75  # the lost sample counts as wrong
    with pytest.raises(ValueError, match="acc values must be 0 or 1"):
        M.eval_metrics(["math500"], ["a"], [0.5], k=1)
    with pytest.raises(ValueError, match="same length"):
        M.eval_metrics(["math500"], ["a", "b"], [1], k=1)


def test_bootstrap_matches_verls_validation_bootstrap():
    """Our boot_ numbers estimate what verl's best@N / worst@N report (different RNG, same estimator)."""
    rng = np.random.default_rng(0)
    n_prompts, n = 40, 16
    p = rng.uniform(0, 1, n_prompts)
    correct = (rng.uniform(size=(n_prompts, n)) < p[:, None]).astype(float)
    sources = ["math500"] * (n_prompts * n)
    uids = [str(i) for i in range(n_prompts) for _ in range(n)]
    ours = M.eval_metrics(sources, uids, correct.ravel().tolist(), k=n)
    theirs = process_validation_metrics(sources, uids, {"acc": correct.ravel().tolist()})["math500"]["acc"]
    assert ours["eval/boot_best_at_16"] == pytest.approx(theirs["best@16/mean"], abs=0.01)
    assert ours["eval/boot_worst_at_16"] == pytest.approx(theirs["worst@16/mean"], abs=0.01)
    assert ours["eval/mean_at_16"] == pytest.approx(theirs["mean@16"])
    assert ours["eval/pass_at_16"] == pytest.approx(float(np.mean(correct.max(axis=1))))  # n = k: any correct


@pytest.mark.parametrize(
    ("source", "prefix"),
    [
        ("math500", "eval"),
        ("math500_t1", "eval_t1"),
        ("math500_greedy", "eval_greedy"),
        ("aime24", "eval/aime24"),
        ("aime24_t1", "eval_t1/aime24"),
    ],
)
def test_eval_prefix(source, prefix):
    assert M.eval_prefix(source) == prefix


def test_shared_vocabulary_aliases_and_throughput():
    verl_metrics = {
        "critic/score/mean": 0.25,
        "response_length/mean": 812.0,
        "actor/entropy": 0.4,
        "actor/pg_clipfrac": 0.01,
        "actor/grad_norm": 0.7,
        "timing_s/step": 120.0,
        "rollout_corr/kl": 0.02,
    }
    m = M.shared_train_metrics(verl_metrics)
    assert m == {
        "train/reward_mean": 0.25,
        "train/response_length": 812.0,
        "train/entropy": 0.4,
        "train/pg_clipfrac": 0.01,
        "train/grad_norm": 0.7,
        "perf/step_s": 120.0,
    }
    assert M.throughput_metrics(1000, 4.0) == {"perf/tokens_per_s": 250.0} and M.throughput_metrics(5, None) == {}
    # Every shared name is one MLflow accepts (letters, digits, _ - . / : and space).
    import re

    names = list(M.VERL_TO_SHARED.values()) + list(M.ead_step_metrics(*_lp(2), FixedSchedule(1.0), 0, 2.0))
    assert all(re.fullmatch(r"[\w\-./: ]+", n) for n in names)
