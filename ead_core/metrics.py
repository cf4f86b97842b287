"""Evaluation and diagnostic metrics shared by every backend.

Pass@k / Worst@k use the unbiased estimators from n >= k samples with c correct
(Chen et al. 2021): pass@k = 1 - C(n-c, k) / C(n, k), worst@k = C(c, k) / C(n, k).
For binary rewards Best@k equals Pass@k.

The paper's curves were drawn with verl's *bootstrap* best@k / worst@k (k indices drawn WITH
replacement), which is biased low for best@k; ``bootstrap_best_worst_at_k`` reproduces it for
comparison. The two must never be logged under the same name (``boot_`` prefix for the latter).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from ead_core._checks import check_int


def _counts(n: Any, c: Any, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    k = check_int("k", k, ge=1)
    n_arr, c_arr = np.asarray(n), np.asarray(c)
    for name, a in (("n", n_arr), ("c", c_arr)):
        if not np.issubdtype(a.dtype, np.integer):
            if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
                continue
            raise ValueError(f"{name} must hold integer counts, got {a!r}")
    n_arr, c_arr = np.broadcast_arrays(n_arr.astype(np.int64), c_arr.astype(np.int64))
    if np.any(c_arr < 0) or np.any(c_arr > n_arr):
        raise ValueError("c must be in [0, n] (correct samples cannot exceed samples)")
    if np.any(k > n_arr):
        raise ValueError(f"k must be in [1, n]; got k={k} with n={int(n_arr.min())} (draw at least k samples)")
    return n_arr, c_arr, k


def _ratio_of_binomials(top: np.ndarray, n: np.ndarray, k: int) -> np.ndarray:
    """C(top, k) / C(n, k) = prod_{j<k} (top - j) / (n - j), zero when top < k; vectorised, no overflow."""
    j = np.arange(k)
    factors = (top[..., None] - j) / (n[..., None] - j).astype(np.float64)
    return np.where(top >= k, np.prod(np.clip(factors, 0.0, None), axis=-1), 0.0)


def _out(x: np.ndarray) -> np.ndarray | float:
    return float(x) if x.ndim == 0 else x


def pass_at_k(n: Any, c: Any, k: int) -> np.ndarray | float:
    """Unbiased P(at least one of k samples is correct), per prompt, from n samples with c correct."""
    n_arr, c_arr, k = _counts(n, c, k)
    return _out(1.0 - _ratio_of_binomials(n_arr - c_arr, n_arr, k))


def worst_at_k(n: Any, c: Any, k: int) -> np.ndarray | float:
    """Unbiased P(all k samples are correct), per prompt, from n samples with c correct."""
    n_arr, c_arr, k = _counts(n, c, k)
    return _out(_ratio_of_binomials(c_arr, n_arr, k))


best_at_k = pass_at_k  # binary rewards: the best of k is correct iff at least one is


def mean_at_k(n: Any, c: Any, k: int) -> np.ndarray | float:
    """Expected accuracy of one of k samples: c / n (unbiased for any k <= n), per prompt."""
    n_arr, c_arr, _ = _counts(n, c, k)
    return _out(c_arr / n_arr)


def bootstrap_best_worst_at_k(correct: Any, k: int, n_bootstrap: int = 1000, seed: int = 42) -> dict[str, np.ndarray]:
    """verl-style bootstrap best@k and worst@k (k draws WITH replacement), per prompt, with bootstrap std.

    ``correct``: (prompts, n) 0/1 array. Biased low for best@k (1 correct of 4 gives ~0.684 for
    k = 4, where the unbiased pass@4 is 1.0); kept only to compare with the paper's curves.
    Returns ``best_mean``, ``best_std``, ``worst_mean``, ``worst_std`` arrays of shape (prompts,).
    """
    x = np.asarray(correct, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"correct must be a (prompts, samples) array, got shape {x.shape}")
    k = check_int("k", k, ge=1)
    n_bootstrap = check_int("n_bootstrap", n_bootstrap, ge=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[1], size=(x.shape[0], n_bootstrap, k))
    draws = np.take_along_axis(x[:, None, :], idx, axis=2) if x.shape[1] else np.zeros((x.shape[0], n_bootstrap, k))
    best, worst = draws.max(axis=2), draws.min(axis=2)
    return {
        "best_mean": best.mean(axis=1),
        "best_std": best.std(axis=1),
        "worst_mean": worst.mean(axis=1),
        "worst_std": worst.std(axis=1),
    }


def majority_at_n(answers: Sequence[Hashable | None], correct: Sequence[bool | float]) -> float:
    """Correctness (0.0 or 1.0) of the most frequent final answer among one prompt's N samples.

    ``answers[i]`` is sample i's extracted final answer (None when it had none; such samples do not
    vote) and ``correct[i]`` its verified correctness. Tie rule: among answers with the highest count,
    the one whose first occurrence comes earliest in sample order wins (deterministic, and blind to
    correctness). The vote is scored by the correctness of the first sample carrying the winning
    answer. No valid answer at all scores 0.
    """
    if len(answers) != len(correct):
        raise ValueError(f"answers and correct must have the same length, got {len(answers)} and {len(correct)}")
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return 0.0
    top = max(counts.values())
    winner = next(a for a in answers if a is not None and counts[a] == top)
    return float(bool(correct[answers.index(winner)]))


def majority_at_k_bootstrap(
    answers: Sequence[Hashable | None], correct: Sequence[bool | float], k: int, n_bootstrap: int = 200, seed: int = 0
) -> float:
    """Maj@k estimated from n >= k samples by drawing k WITHOUT replacement, ``n_bootstrap`` times.

    Each draw is voted with ``majority_at_n`` rules, taking the draw's order as sample order (so ties go
    to the answer drawn first). Used by the branching study (Maj@1, 3, 8, 16 from 16 continuations).
    """
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"answers and correct must have the same length, got {n} and {len(correct)}")
    k = check_int("k", k, ge=1)
    if k > n:
        raise ValueError(f"k must be in [1, n]; got k={k} with n={n}")
    codes_of: dict[Hashable, int] = {}
    codes = np.array([-1 if a is None else codes_of.setdefault(a, len(codes_of)) for a in answers])
    ok = np.asarray(correct, dtype=float)
    if not codes_of:
        return 0.0
    rng = np.random.default_rng(seed)
    draws = np.argsort(rng.random((check_int("n_bootstrap", n_bootstrap, ge=1), n)), axis=1)[:, :k]  # (B, k)
    dc = codes[draws]
    onehot = (dc[:, :, None] == np.arange(len(codes_of))[None, None, :]) & (dc[:, :, None] >= 0)  # (B, k, A)
    counts = onehot.sum(axis=1)
    first = np.where(onehot.any(axis=1), onehot.argmax(axis=1), k)  # first draw position of each answer
    score = np.where(counts > 0, counts * (k + 1) - first, -1)
    winner = score.argmax(axis=1)
    has_vote = counts.max(axis=1) > 0
    first_pos = first[np.arange(len(winner)), winner]
    won_ok = ok[draws[np.arange(len(winner)), np.minimum(first_pos, k - 1)]]
    return float(np.mean(np.where(has_vote, won_ok, 0.0)))


def token_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last axis, computed stably from logits.

    H = logsumexp(z) - sum_i p_i z_i, evaluated as -(p * log_softmax(z)).sum in float32 or wider.
    Positions where ``mask`` is 0 are set to 0.
    """
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    logp = torch.log_softmax(z, dim=-1)
    ent = -(torch.exp(logp) * logp).nan_to_num(0.0).sum(dim=-1)  # 0 * -inf -> 0 for masked-out vocab
    if mask is not None:
        if mask.shape != ent.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} must equal logits.shape[:-1] = {tuple(ent.shape)}")
        ent = torch.where(mask.bool(), ent, torch.zeros_like(ent))
    return ent


def entropy_by_position(entropy: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean entropy and number of valid tokens at each response position over a (batch, length) batch.

    Positions without any valid token get mean NaN and count 0.
    """
    e = entropy.detach().cpu().double().numpy() if isinstance(entropy, torch.Tensor) else np.asarray(entropy, float)
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if e.shape != m.shape or e.ndim != 2:
        raise ValueError(f"entropy and mask must both be (batch, length), got {e.shape} and {m.shape}")
    m = m.astype(bool)
    count = m.sum(axis=0)
    total = np.where(m, e, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return mean, count.astype(np.int64)


def cumulative_entropy(mean: np.ndarray, count: np.ndarray, positions: Sequence[int], window: int = 5) -> np.ndarray:
    """The paper's "fixed start" curve: token-weighted mean entropy over positions [0, p + window) for each p."""
    w = np.where(count > 0, np.nan_to_num(mean) * count, 0.0)
    cw, cc = np.cumsum(w), np.cumsum(count)
    end = np.minimum(np.asarray(positions, dtype=np.int64) + window, len(count)) - 1
    safe = np.clip(end, 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((end >= 0) & (cc[safe] > 0), cw[safe] / np.maximum(cc[safe], 1), np.nan)


def correctness_metrics(
    correct: Sequence[Sequence[float]] | np.ndarray,
    k: int,
    answers: Sequence[Sequence[Hashable | None]] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """The evaluation summary of one correctness matrix, averaged over prompts: the one place every backend gets it.

    ``correct``: per prompt, the 0/1 correctness of its samples (rows may differ in length). Returns ``pass_at_{k}``,
    ``best_at_{k}`` (= pass for binary rewards), ``worst_at_{k}``, ``mean_at_{k}`` (unbiased, Chen et al.);
    the bootstrap variants ``boot_best_at_{k}``, ``boot_worst_at_{k}`` and their ``_std`` when every prompt has the
    same number of samples; ``maj_at_{n}`` (n = the largest row) when ``answers`` are given. Prompts with fewer than
    ``k`` samples raise (use the mean correctness instead: greedy decoding has n = 1).
    """
    rows = [np.asarray(r, dtype=np.float64) for r in correct]
    if not rows:
        raise ValueError("correct must hold at least one prompt")
    ns = np.array([len(r) for r in rows])
    c = np.array([int(round(r.sum())) for r in rows])
    pk = pass_at_k(ns, c, k)
    out = {
        f"pass_at_{k}": float(np.mean(pk)),
        f"best_at_{k}": float(np.mean(pk)),
        f"worst_at_{k}": float(np.mean(worst_at_k(ns, c, k))),
        f"mean_at_{k}": float(np.mean(mean_at_k(ns, c, k))),
    }
    if len(set(ns.tolist())) == 1:  # the bootstrap needs a (prompts, n) matrix
        boot = bootstrap_best_worst_at_k(np.stack(rows), k=k, n_bootstrap=n_bootstrap, seed=seed)
        out |= {
            f"boot_best_at_{k}": float(np.mean(boot["best_mean"])),
            f"boot_best_at_{k}_std": float(np.mean(boot["best_std"])),
            f"boot_worst_at_{k}": float(np.mean(boot["worst_mean"])),
            f"boot_worst_at_{k}_std": float(np.mean(boot["worst_std"])),
        }
    if answers is not None:
        if len(answers) != len(rows):
            raise ValueError(f"answers must have one row per prompt, got {len(answers)} for {len(rows)} prompts")
        out[f"maj_at_{int(ns.max())}"] = float(np.mean([majority_at_n(a, r) for a, r in zip(answers, rows)]))
    return out
