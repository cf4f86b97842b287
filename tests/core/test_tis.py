"""ead_core.tis against a direct formula, against verl's rollout correction, and on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ead_core.tis import truncated_is_weights


def _batch(seed: int, b: int = 6, t: int = 12, spread: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 4
    beh = old + torch.randn(b, t, generator=g, dtype=torch.float64) * spread
    beh = torch.clamp(beh, max=0.0)
    lengths = torch.randint(0, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(torch.float64)
    return old, beh, mask


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6), st.floats(0.5, 10.0), st.floats(0.01, 3.0))
def test_token_weights_match_direct_formula(seed, cap, spread):
    old, beh, mask = _batch(seed, spread=spread)
    w, stats = truncated_is_weights(old, beh, mask, cap)
    direct = torch.minimum(torch.exp(old) / torch.exp(beh), torch.tensor(cap, dtype=torch.float64)) * mask
    torch.testing.assert_close(w, direct, rtol=1e-10, atol=1e-12)
    valid = mask.bool()
    assert stats["n"] == int(valid.sum())
    if not stats["n"]:  # every row empty: no weights to summarise
        assert math.isnan(stats["mean"]) and torch.all(w == 0)
    else:
        wv = direct[valid]
        assert stats["mean"] == pytest.approx(float(wv.mean()))
        assert stats["max"] == pytest.approx(float(wv.max()))
        assert stats["truncated_frac"] == pytest.approx(float(((old - beh)[valid] > math.log(cap)).double().mean()))
        assert 0 < stats["ess"] <= 1 + 1e-12
        lr = (old - beh)[valid]
        assert stats["kl_k1"] == pytest.approx(float((-lr).mean()))
        assert stats["kl_k3"] == pytest.approx(float((torch.exp(lr) - 1 - lr).mean()))
        assert stats["kl_k3"] >= -1e-12  # k3 is non-negative sample by sample
    assert not w.requires_grad


def test_sequence_level_is_product_over_response():
    old, beh, mask = _batch(3, spread=0.2)
    w, stats = truncated_is_weights(old, beh, mask, cap=2.0, level="sequence")
    for i in range(old.shape[0]):
        v = mask[i].bool()
        if not v.any():
            assert torch.all(w[i] == 0)
            continue
        ratio = float(torch.prod(torch.exp(old[i][v]) / torch.exp(beh[i][v])))
        np.testing.assert_allclose(w[i][v].numpy(), min(ratio, 2.0), rtol=1e-9)
        assert torch.all(w[i][~v] == 0)
    assert stats["n"] == int(mask.bool().any(dim=1).sum())


def test_weights_are_detached_and_keep_dtype():
    old, beh, mask = _batch(0)
    old32 = old.float().requires_grad_(True)
    w, _ = truncated_is_weights(old32, beh.float(), mask, 2.0)
    assert w.dtype == torch.float32 and not w.requires_grad and w.grad_fn is None


def test_no_cap_and_extreme_ratios_stay_finite():
    old = torch.tensor([[0.0, -1e4, -0.1]])
    beh = torch.tensor([[-800.0, -0.1, -0.1]])
    mask = torch.ones_like(old)
    w, stats = truncated_is_weights(old, beh, mask, cap=2.0)
    assert w[0].tolist() == pytest.approx([2.0, 0.0, 1.0])
    assert math.isfinite(stats["kl_k3"])
    w_inf, s_inf = truncated_is_weights(old, beh, mask, cap=None)
    assert math.isinf(w_inf[0, 0].item()) and s_inf["truncated_frac"] == 0.0


def test_masked_positions_are_ignored_even_if_garbage():
    old, beh, mask = _batch(1)
    mask[:, -1] = 0
    old[:, -1] = float("nan")
    beh[:, -1] = float("inf")
    w, stats = truncated_is_weights(old, beh, mask, 2.0)
    assert torch.all(w[:, -1] == 0) and math.isfinite(stats["mean"])


def test_empty_mask_gives_nan_stats():
    old, beh, _ = _batch(2)
    w, stats = truncated_is_weights(old, beh, torch.zeros_like(old), 2.0)
    assert torch.all(w == 0) and stats["n"] == 0 and math.isnan(stats["mean"])


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda o, b, m: (o[:, :3], b, m), "same shape"),
        (lambda o, b, m: (o, b, m[:1]), "same shape"),
        (
            lambda o, b, m: (o.index_fill(1, torch.tensor([0]), float("nan")), b, torch.ones_like(m)),
            "old_logprobs.*NaN",
        ),
        (lambda o, b, m: (o, b.index_fill(1, torch.tensor([0]), float("nan")), torch.ones_like(m)), "behavior.*NaN"),
        (
            lambda o, b, m: (o.index_fill(1, torch.tensor([0]), float("inf")), b, torch.ones_like(m)),
            r"old_logprobs.*\+inf",
        ),
        (lambda o, b, m: (o, b.index_fill(1, torch.tensor([0]), float("inf")), torch.ones_like(m)), r"behavior.*\+inf"),
        (lambda o, b, m: (o, b.index_fill(1, torch.tensor([0]), -float("inf")), torch.ones_like(m)), "behavior.*-inf"),
    ],
)
def test_bad_inputs(mutate, match):
    old, beh, mask = mutate(*_batch(5))
    with pytest.raises(ValueError, match=match):
        truncated_is_weights(old, beh, mask, 2.0)


@pytest.mark.parametrize("cap", [0.0, -1.0, float("nan")])
def test_bad_cap(cap):
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(*_batch(0), cap)


def test_bad_level():
    with pytest.raises(ValueError, match="level"):
        truncated_is_weights(*_batch(0), 2.0, level="batch")


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([1.5, 2.0, 5.0]), st.sampled_from(["token", "sequence"]))
def test_equal_to_verl_rollout_correction(seed, cap, level):
    # verl is part of the main environment (scripts/install.sh): without it this test fails, it does not skip.
    from verl.trainer.ppo import rollout_corr_helper as verl_helper

    old, beh, mask = _batch(seed, spread=0.5 if level == "token" else 0.1)
    ours, stats = truncated_is_weights(old, beh, mask, cap, level=level)
    theirs, metrics = verl_helper.compute_rollout_correction_weights(
        log_ratio=old - beh, response_mask=mask, rollout_is=level, rollout_is_threshold=cap
    )
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-9, atol=1e-12)
