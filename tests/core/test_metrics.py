"""ead_core.metrics: unbiased estimators by brute force, bootstrap variant, voting, entropy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ead_core.metrics import (
    best_at_k,
    bootstrap_best_worst_at_k,
    cumulative_entropy,
    entropy_by_position,
    majority_at_k_bootstrap,
    majority_at_n,
    mean_at_k,
    pass_at_k,
    token_entropy,
    worst_at_k,
)


def test_brief_vectors():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 1, 4) == pytest.approx(1.0)
    assert worst_at_k(4, 3, 2) == pytest.approx(0.5)
    assert worst_at_k(4, 1, 2) == 0.0
    assert best_at_k is pass_at_k


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_against_enumeration_of_all_k_subsets(nck):
    n, c, k = nck
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    assert pass_at_k(n, c, k) == pytest.approx(np.mean([max(s) for s in subsets]), abs=1e-12)
    assert worst_at_k(n, c, k) == pytest.approx(np.mean([min(s) for s in subsets]), abs=1e-12)
    assert mean_at_k(n, c, k) == pytest.approx(np.mean([np.mean(s) for s in subsets]), abs=1e-12)


def test_vectorised_over_prompts_and_large_n():
    n = np.array([16, 16, 16, 32])
    c = np.array([0, 1, 16, 8])
    p = pass_at_k(n, c, 16)
    assert p.shape == (4,) and p[0] == 0 and p[1] == 1 and p[2] == 1
    w = worst_at_k(n, c, 16)
    assert w.tolist() == [0.0, 0.0, 1.0, 0.0]
    # Large n does not overflow (the product form never builds C(n, k)).
    big = pass_at_k(np.array([5000]), np.array([3]), 1000)
    exact = 1 - math.comb(4997, 1000) / math.comb(5000, 1000)
    assert big[0] == pytest.approx(exact, rel=1e-9)
    assert worst_at_k(5000, 4999, 1000) == pytest.approx(math.comb(4999, 1000) / math.comb(5000, 1000), rel=1e-9)


@pytest.mark.parametrize(
    ("n", "c", "k", "match"),
    [
        (4, 1, 5, "k must be"),
        (4, 5, 2, "c must be"),
        (4, -1, 2, "c must be"),
        (4, 1, 0, "k must be"),
        (4, 1, 1.5, "k must be"),
        (4.5, 1, 1, "n must"),
        (np.array([16, 8]), np.array([1, 1]), 16, "k must be"),
    ],
)
def test_bad_counts(n, c, k, match):
    for fn in (pass_at_k, worst_at_k, mean_at_k):
        with pytest.raises(ValueError, match=match):
            fn(n, c, k)


def test_bootstrap_matches_verl_style_and_differs_from_unbiased():
    correct = np.array([[1, 0, 0, 0]] * 3 + [[1, 1, 1, 0]])
    b = bootstrap_best_worst_at_k(correct, k=4, n_bootstrap=20000, seed=0)
    # With replacement, best@4 for 1 correct of 4 is 1 - (3/4)^4 ~ 0.684 (the unbiased pass@4 is 1.0).
    assert b["best_mean"][0] == pytest.approx(1 - 0.75**4, abs=0.01)
    assert pass_at_k(4, 1, 4) == 1.0
    assert b["worst_mean"][3] == pytest.approx(0.75**4, abs=0.01)
    assert b["best_std"].shape == (4,) and np.all(b["best_std"] >= 0)
    again = bootstrap_best_worst_at_k(correct, k=4, n_bootstrap=20000, seed=0)
    np.testing.assert_array_equal(b["best_mean"], again["best_mean"])


def test_majority_tie_rule_and_none():
    assert majority_at_n(["3", "4", "4", "3"], [1, 0, 0, 1]) == 1.0  # tie: "3" appears first
    assert majority_at_n(["4", "3", "3", "4"], [0, 1, 1, 0]) == 0.0  # tie: "4" appears first
    assert majority_at_n([None, None, "5"], [0, 0, 1]) == 1.0  # None does not vote
    assert majority_at_n([None, None], [0, 0]) == 0.0
    assert majority_at_n(["1", "2", "2"], [True, False, False]) == 0.0
    with pytest.raises(ValueError, match="same length"):
        majority_at_n(["1"], [1, 0])


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10**6), st.integers(2, 50), st.floats(0.01, 100.0))
def test_entropy_matches_direct_formula_and_bounds(seed, vocab, scale):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, vocab, generator=g, dtype=torch.float64) * scale
    h = token_entropy(logits)
    p = torch.softmax(logits, -1)
    direct = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    torch.testing.assert_close(h, direct, rtol=1e-6, atol=1e-9)
    assert torch.all(h >= -1e-9) and torch.all(h <= math.log(vocab) + 1e-9)


def test_entropy_stable_for_extreme_logits_and_masked():
    logits = torch.tensor([[[1e4, 0.0, -1e4], [0.0, 0.0, 0.0]]], dtype=torch.float32)
    logits_inf = torch.tensor([[[0.0, 0.0, -float("inf")]]])
    h = token_entropy(logits, mask=torch.tensor([[1, 0]]))
    assert h[0, 0].item() == pytest.approx(0.0, abs=1e-6) and h[0, 1].item() == 0.0
    assert token_entropy(logits_inf)[0, 0].item() == pytest.approx(math.log(2))
    assert token_entropy(logits.half()).dtype == torch.float32
    with pytest.raises(ValueError, match="mask shape"):
        token_entropy(logits, mask=torch.ones(2, 2))


def test_entropy_by_position_and_cumulative():
    ent = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    mean, count = entropy_by_position(ent, mask)
    np.testing.assert_allclose(mean, [2.0, 3.0, 3.0])
    assert count.tolist() == [2, 2, 1]
    mean2, count2 = entropy_by_position(np.zeros((2, 2)), np.zeros((2, 2)))
    assert np.all(np.isnan(mean2)) and count2.tolist() == [0, 0]
    cum = cumulative_entropy(mean, count, positions=[0, 1], window=1)
    np.testing.assert_allclose(cum, [2.0, (4 + 6) / 4])
    with pytest.raises(ValueError, match="batch, length"):
        entropy_by_position(ent, mask[:, :2])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["1", "2", "3", None]), min_size=1, max_size=7), st.data())
def test_majority_bootstrap_matches_enumeration(answers, data):
    """Without replacement, Maj@k averages majority_at_n over all ordered k-draws."""
    correct = [a == "1" for a in answers]
    k = data.draw(st.integers(1, len(answers)))
    exact = np.mean(
        [
            majority_at_n([answers[i] for i in perm], [correct[i] for i in perm])
            for perm in itertools.permutations(range(len(answers)), k)
        ]
    )
    est = majority_at_k_bootstrap(answers, correct, k, n_bootstrap=4000, seed=1)
    assert est == pytest.approx(exact, abs=0.04)
    if k == len(answers) and len(set(a for a in answers if a is not None)) <= 1:
        assert est == majority_at_n(answers, correct)


def test_majority_bootstrap_errors():
    with pytest.raises(ValueError, match="k must be"):
        majority_at_k_bootstrap(["1"], [1], 2)
    with pytest.raises(ValueError, match="same length"):
        majority_at_k_bootstrap(["1", "2"], [1], 1)
    assert majority_at_k_bootstrap([None, None], [0, 0], 1) == 0.0
