"""``correctness_metrics``: the one summary of a correctness matrix, checked against brute force over k-subsets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ead_core import correctness_metrics


def brute(row: list[int], k: int) -> tuple[float, float]:
    """Pass@k and Worst@k of one prompt by enumerating every k-subset of its samples."""
    subsets = list(itertools.combinations(row, k))
    return float(np.mean([max(s) for s in subsets])), float(np.mean([min(s) for s in subsets]))


def test_matches_enumeration_and_names_every_metric():
    rng = np.random.default_rng(3)
    correct = (rng.random((7, 6)) < [[0.1], [0.5], [0.9], [0.0], [1.0], [0.3], [0.6]]).astype(int)
    answers = [[str(int(v)) for v in row] for row in correct]
    out = correctness_metrics(correct, k=3, answers=answers, seed=0)
    pw = np.array([brute(list(r), 3) for r in correct])
    assert out["pass_at_3"] == pytest.approx(pw[:, 0].mean())
    assert out["best_at_3"] == out["pass_at_3"]
    assert out["worst_at_3"] == pytest.approx(pw[:, 1].mean())
    assert out["mean_at_3"] == pytest.approx(correct.mean())
    # answers equal to correctness: the majority answer is right iff most samples are right (ties: first sample)
    maj = [float(r.sum() * 2 > len(r) or (r.sum() * 2 == len(r) and r[0] == 1)) for r in correct]
    assert out["maj_at_6"] == pytest.approx(np.mean(maj))
    assert {"boot_best_at_3", "boot_worst_at_3", "boot_best_at_3_std", "boot_worst_at_3_std"} <= set(out)
    assert out["boot_best_at_3"] < out["pass_at_3"]  # the bootstrap draws with replacement: biased low


def test_ragged_rows_skip_only_the_bootstrap():
    out = correctness_metrics([[1, 0, 0], [1, 1, 0, 0]], k=2)
    assert out["pass_at_2"] == pytest.approx((brute([1, 0, 0], 2)[0] + brute([1, 1, 0, 0], 2)[0]) / 2)
    assert not any(name.startswith("boot_") for name in out) and not any(name.startswith("maj") for name in out)


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="k must be in"):
        correctness_metrics([[1, 0]], k=3)
    with pytest.raises(ValueError, match="answers must have one row per prompt"):
        correctness_metrics([[1, 0]], k=1, answers=[])
    with pytest.raises(ValueError, match="at least one prompt"):
        correctness_metrics([], k=1)
