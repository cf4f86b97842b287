"""EAD metrics verl lacks and verl's metric names mapped to the shared vocabulary (brief, section 7).

Pure functions of tensors and lists, so they are tested without a verl run; ``experiments.verl.
trainer`` calls them from inside verl's trainer, where the data lives:

* ``ead_step_metrics``: TIS statistics with ``ead_core.tis.truncated_is_weights`` (the same numbers the
  local backend logs, also when TIS is off), the mean sampling temperature tau_t of the run's schedule
  over the sampled tokens, and TIS truncation / mean tau / token share per response-position bucket;
* ``shared_train_metrics``: ``train/...`` and ``perf/...`` aliases of verl's own metrics;
* ``eval_metrics``: Pass@k, Worst@k, Best@k, Mean@k (unbiased, ``ead_core.metrics``), the verl-style
  bootstrap variants under ``boot_`` names, Maj@n, and greedy accuracy, per validation sampler.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ead_core.metrics import correctness_metrics
from ead_core.schedule import Schedule
from ead_core.tis import truncated_is_weights

# verl 0.9.1 metric name -> shared vocabulary name. verl keeps logging its own names next to these.
VERL_TO_SHARED: dict[str, str] = {
    "critic/score/mean": "train/reward_mean",
    "response_length/mean": "train/response_length",
    "response_length/clip_ratio": "train/truncated_frac",
    "actor/entropy": "train/entropy",
    "actor/pg_clipfrac": "train/pg_clipfrac",
    "actor/ppo_kl": "train/ppo_kl",
    "actor/pg_loss": "train/pg_loss",
    "actor/grad_norm": "train/grad_norm",
    "timing_s/step": "perf/step_s",
}

EVAL_PREFIXES = {"": "eval", "_t1": "eval_t1", "_greedy": "eval_greedy"}


def shared_train_metrics(verl_metrics: Mapping[str, Any]) -> dict[str, float]:
    """The shared-vocabulary aliases of the verl metrics present in ``verl_metrics``."""
    return {ours: float(verl_metrics[theirs]) for theirs, ours in VERL_TO_SHARED.items() if theirs in verl_metrics}


def throughput_metrics(response_tokens: int, gen_s: float | None) -> dict[str, float]:
    """``perf/tokens_per_s``: sampled response tokens per second of the generation phase (as the local backend)."""
    if not gen_s or gen_s <= 0:
        return {}
    return {"perf/tokens_per_s": float(response_tokens) / float(gen_s)}


def position_buckets(edges: Sequence[int]) -> list[tuple[int, float]]:
    """Half-open response-position buckets [0, e1), [e1, e2), ..., [e_last, inf)."""
    bounds = [0, *edges]
    return [(lo, hi) for lo, hi in zip(bounds, [*edges, math.inf])]


def bucket_name(lo: int, hi: float) -> str:
    """``pos_0-10`` ... ``pos_1000-inf`` (characters MLflow accepts in metric names)."""
    return f"pos_{lo}-{'inf' if math.isinf(hi) else int(hi)}"


def ead_step_metrics(
    old_logprobs: torch.Tensor | None,
    behavior_logprobs: torch.Tensor | None,
    mask: torch.Tensor,
    schedule: Schedule,
    step: float,
    cap: float,
    level: str = "token",
    edges: Sequence[int] = (10, 100, 300, 1000),
) -> dict[str, float]:
    """EAD and TIS metrics of one training batch, all over valid (mask = 1) response tokens.

    Tensors are (batch, response_len) with responses left-aligned, so column t is response position t.
    ``old_logprobs`` is log pi_old (verl's recomputation at temperature 1.0), ``behavior_logprobs`` the
    processed log-probs vLLM returned (log mu). Without log-probs only the temperature metrics are given.
    The position buckets use token-level ratios (a sequence-level weight has no position).
    """
    valid = mask.bool()
    n_valid = int(valid.sum())
    out: dict[str, float] = {"schedule/decay": float(schedule.decay(step))}
    if n_valid == 0:
        return out
    positions = torch.arange(mask.shape[-1], dtype=torch.float64).expand(mask.shape)
    taus = schedule.temperatures(positions, step, validate=False)
    out["train/tau_mean"] = float(taus[valid].mean())
    have_lp = old_logprobs is not None and behavior_logprobs is not None
    if have_lp:
        old, beh = old_logprobs.detach().double(), behavior_logprobs.detach().double()
        _, stats = truncated_is_weights(old, beh, valid.double(), cap, level=level)
        out.update(
            {
                "train/is_weight_mean": stats["mean"],
                "train/is_weight_max": stats["max"],
                "train/is_truncated_frac": stats["truncated_frac"],
                "train/is_ess": stats["ess"],
                "train/kl_behavior_old": stats["kl_k3"],
                "train/kl_behavior_old_k1": stats["kl_k1"],
            }
        )
        log_ratio = (old - beh).masked_fill(~valid, 0.0)
        token_w = log_ratio.clamp(max=math.log(cap)).exp()
        truncated = (log_ratio > math.log(cap)) & valid
    for lo, hi in position_buckets(edges):
        in_bucket = valid & (positions >= lo) & (positions < hi)
        count = int(in_bucket.sum())
        name = bucket_name(lo, hi)
        out[f"train/token_frac/{name}"] = count / n_valid
        if count == 0:
            continue
        out[f"train/tau_mean/{name}"] = float(taus[in_bucket].mean())
        if have_lp:
            out[f"train/is_truncated_frac/{name}"] = float(truncated[in_bucket].double().mean())
            out[f"train/is_weight_mean/{name}"] = float(token_w[in_bucket].mean())
    return out


def eval_prefix(data_source: str, primary: str = "math500") -> str:
    """Metric prefix of a validation data source: ``eval``, ``eval_t1``, ``eval_greedy`` for the primary
    set; other sets get their name inserted (``eval/aime24``, ``eval_t1/aime24``)."""
    for suffix, prefix in sorted(EVAL_PREFIXES.items(), key=lambda kv: -len(kv[0])):
        if suffix and data_source.endswith(suffix):
            base = data_source[: -len(suffix)]
            return prefix if base == primary else f"{prefix}/{base}"
    return "eval" if data_source == primary else f"eval/{data_source}"


def _binary(value: Any) -> float:
    if value is None:
        return 0.0
    v = float(value)
    if v not in (0.0, 1.0):
        raise ValueError(f"acc values must be 0 or 1 (binary correctness), got {value!r}")
    return v


def eval_metrics(
    data_sources: Sequence[str],
    uids: Sequence[str],
    acc: Sequence[Any],
    k: int = 16,
    preds: Sequence[Any] | None = None,
    expected_counts: Mapping[tuple[str, str], int] | None = None,
    primary: str = "math500",
    seed: int = 42,
) -> dict[str, float]:
    """Validation metrics per data source from per-sample correctness, grouped by prompt uid.

    Samples a session lost (fewer than ``expected_counts[(source, uid)]``) count as wrong, as in verl.
    Sources with n >= k samples per prompt get Pass@k / Worst@k / Best@k / Mean@k (unbiased), the
    bootstrap variants (``boot_``, with their bootstrap std) and Maj@n when answers are given; sources
    with fewer samples (greedy: n = 1) get ``accuracy``, the mean correctness.
    """
    if not (len(data_sources) == len(uids) == len(acc)) or (preds is not None and len(preds) != len(acc)):
        raise ValueError(
            f"data_sources, uids, acc (and preds) must have the same length, got {len(data_sources)}, {len(uids)}, "
            f"{len(acc)}" + (f", {len(preds)}" if preds is not None else "")
        )
    groups: dict[str, dict[str, list[tuple[float, Any]]]] = defaultdict(lambda: defaultdict(list))
    for i, (src, uid) in enumerate(zip(data_sources, uids)):
        groups[str(src)][str(uid)].append((_binary(acc[i]), None if preds is None else preds[i]))
    for (src, uid), n in (expected_counts or {}).items():
        g = groups[str(src)][str(uid)] if str(src) in groups else None
        if g is not None and len(g) < n:
            g.extend([(0.0, None)] * (n - len(g)))

    out: dict[str, float] = {}
    for src, by_uid in groups.items():
        prefix = eval_prefix(src, primary)
        ns = np.array([len(v) for v in by_uid.values()])
        correct_lists = [[c for c, _ in v] for v in by_uid.values()]
        mean_acc = float(np.mean([np.mean(c) for c in correct_lists]))
        if ns.min() < k:
            out[f"{prefix}/accuracy"] = mean_acc
            continue
        answers = [[p for _, p in v] for v in by_uid.values()] if preds is not None else None
        summary = correctness_metrics(correct_lists, k, answers, seed=seed)
        out |= {f"{prefix}/{name}": v for name, v in summary.items()}
        out[f"{prefix}/n_prompts"] = float(len(by_uid))
    return out
