"""Scoring the study's samples: correctness, vote keys, Maj@N / Pass@N / Worst@N against N, per-condition stats."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ead_core.metrics import majority_at_k_bootstrap, majority_at_n, pass_at_k, worst_at_k
from experiments.local.evaluation import score as score_flat
from experiments.local.tasks import Problem, Task
from experiments.studies.inference.conditions import Condition
from experiments.studies.inference.engine import Samples
from experiments.tracking.hashing import canonical


def score(task: Task, problems: list[Problem], texts: list[list[str]]) -> tuple[np.ndarray, list[list[str | None]]]:
    """Correctness (P, S) and extracted final answers per prompt (the local evaluation's ``score`` on groups)."""
    S = len(texts[0]) if texts else 0
    return score_flat(task, problems, [t for group in texts for t in group], S)


def vote_keys(mode: str, answers: list[list[str | None]], texts: list[list[str]]) -> list[list[str | None]]:
    """What each sample votes for: its extracted answer, or its whitespace-free text ("response").

    Samples without an extractable answer never vote (None), in either mode.
    """
    if mode == "answer":
        return answers
    return [[None if a is None else "".join(t.split()) for a, t in zip(ga, gt)] for ga, gt in zip(answers, texts)]


def vote_ambiguity(votes: list[list[Any]], correct: np.ndarray) -> float:
    """Fraction of voting samples whose key is shared with a sample of different correctness.

    Non-zero means the vote key does not determine correctness, so Maj@N depends on which carrier of the
    winning key is scored (``majority_at_n`` scores the first): a sign the key is the wrong one.
    """
    bad = total = 0
    for keys, ok in zip(votes, correct):
        seen: dict[Any, set[float]] = {}
        for k, c in zip(keys, ok):
            if k is not None:
                seen.setdefault(k, set()).add(float(c))
        bad += sum(1 for k in keys if k is not None and len(seen[k]) > 1)
        total += sum(1 for k in keys if k is not None)
    return bad / total if total else 0.0


def scaling_metrics(
    correct: np.ndarray, answers: list[list[Any]], n_grid: list[int], n_bootstrap: int = 200, seed: int = 0
) -> list[dict[str, float]]:
    """Per N: maj, pass, worst, mean (averaged over prompts) and maj_se (standard error over prompts).

    ``correct``: (P, S) 0/1 with S >= max(n_grid). Maj@N by bootstrap without replacement for N < S
    (prompt i's draws seeded ``seed + i``, the same in every condition), exactly for N = S.
    """
    P, S = correct.shape
    c = correct.sum(axis=1).astype(np.int64)
    mean = float(np.mean(c / S))
    rows = []
    for n in n_grid:
        if n == S:
            maj = np.array([majority_at_n(a, r) for a, r in zip(answers, correct)])
        else:
            maj = np.array(
                [
                    majority_at_k_bootstrap(a, r, n, n_bootstrap, seed=seed + i)
                    for i, (a, r) in enumerate(zip(answers, correct))
                ]
            )
        rows.append(
            {
                "N": n,
                "maj": float(maj.mean()),
                "pass": float(np.mean(pass_at_k(S, c, n))),
                "worst": float(np.mean(worst_at_k(S, c, n))),
                "mean": mean,
                "maj_se": float(maj.std(ddof=1) / math.sqrt(P)) if P > 1 else 0.0,
            }
        )
    return rows


def condition_stats(cond: Condition, s: Samples, correct: np.ndarray, votes: list[list[Any]]) -> dict[str, Any]:
    """What the condition's sampler did: accuracy, diversity, behaviour NLL per token, lengths, timing."""
    voted = [[a for a in group if a is not None] for group in votes]
    tokens = int(s.lengths.sum())
    return {
        "condition": cond.label,
        "schedule": json.dumps(canonical(cond.describe()), sort_keys=True),
        "mean_accuracy": float(correct.mean()),
        "answer_rate": float(np.mean([len(v) for v in voted]) / correct.shape[1]),
        "distinct_votes": float(np.mean([len(set(v)) for v in voted])),
        "vote_ambiguity": vote_ambiguity(votes, correct),
        "distinct_responses": float(np.mean([len(set(g)) for g in s.texts])),
        "nll_per_token": float(s.nll.sum() / max(tokens, 1)),
        "response_length": float(s.lengths.mean()),
        "truncated_frac": float(s.truncated.mean()),
        "generate_s": s.seconds,
        "tokens_per_s": tokens / s.seconds if s.seconds > 0 else float("nan"),
    }
