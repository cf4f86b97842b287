"""Truncated importance sampling (TIS) between the behaviour policy and the old (target) policy.

The annealed sampler draws y_t from mu = softmax(z_t / tau_t) while the loss is written for
pi_old = softmax(z_t) (temperature 1.0). Each token's policy-gradient term is multiplied by the
detached weight

    w_t = min(pi_old(y_t) / mu(y_t), cap) = exp(min(log pi_old(y_t) - log mu(y_t), log cap)),

computed in log space so extreme ratios never overflow. ``level="sequence"`` uses the product of
the token ratios of a response (the sum of its log-ratios), truncated once, for every token of it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from ead_core._checks import check_range

Level = Literal["token", "sequence"]
_KL_CLAMP = 20.0  # log-ratio clamp used only inside the k3 statistic, to keep exp() finite


def _validate(old: torch.Tensor, behavior: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if old.shape != behavior.shape or old.shape != mask.shape:
        raise ValueError(
            f"old_logprobs, behavior_logprobs and mask must have the same shape, got "
            f"{tuple(old.shape)}, {tuple(behavior.shape)}, {tuple(mask.shape)}"
        )
    valid = mask.bool()
    for name, x in (("old_logprobs", old), ("behavior_logprobs", behavior)):
        if bool((torch.isnan(x) & valid).any()):
            raise ValueError(f"{name} contains NaN at a valid (mask=1) position")
        if bool(((x == math.inf) & valid).any()):
            raise ValueError(f"{name} contains +inf at a valid position (log-probs must be in (-inf, 0])")
    if bool(((behavior == -math.inf) & valid).any()):
        raise ValueError("behavior_logprobs contains -inf at a valid position: a sampled token has probability > 0")
    return valid


def truncated_is_weights(
    old_logprobs: torch.Tensor,
    behavior_logprobs: torch.Tensor,
    mask: torch.Tensor,
    cap: float | None,
    level: Level = "token",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Detached TIS weights (zero where ``mask`` is 0) and their statistics.

    Args:
        old_logprobs: log pi_old(y_t), shape (batch, response_len).
        behavior_logprobs: log mu(y_t) as sampled (after the per-token temperature), same shape.
        mask: 1 for response tokens, 0 for padding / after EOS, same shape.
        cap: truncation threshold (> 0); ``None`` gives untruncated importance weights.
        level: "token" (per-token ratio, what EAD needs) or "sequence" (product over the response).

    Returns:
        weights with the shape of the inputs, and ``stats`` with float values:
        ``mean``, ``max``, ``min`` of the weights over units (tokens, or sequences for level="sequence"),
        ``truncated_frac`` (units whose ratio exceeded cap), ``ess`` (normalised effective sample size
        (sum w)^2 / (n sum w^2) in (0, 1]), ``kl_k1`` and ``kl_k3`` (estimates of KL(behaviour || old)
        over valid tokens), ``log_ratio_mean`` and ``n`` (number of units). With no valid unit the
        statistics are NaN and ``n`` is 0.
    """
    if level not in ("token", "sequence"):
        raise ValueError(f"level must be 'token' or 'sequence', got {level!r}")
    log_cap = math.inf if cap is None else math.log(check_range("cap", cap, gt=0.0, allow_inf=True))
    valid = _validate(old_logprobs, behavior_logprobs, mask)
    with torch.no_grad():
        invalid = ~valid
        log_ratio = (old_logprobs.detach() - behavior_logprobs.detach()).masked_fill_(invalid, 0.0)
        if level == "token":
            weights = log_ratio.clamp(max=log_cap).exp_().masked_fill_(invalid, 0.0)
            unit_w, unit_lr, unit_valid = weights, log_ratio, valid
        else:
            unit_lr = log_ratio.sum(dim=-1)
            unit_valid = valid.any(dim=-1)
            unit_w = unit_lr.clamp(max=log_cap).exp_().masked_fill_(~unit_valid, 0.0)
            weights = unit_w.unsqueeze(-1).expand_as(log_ratio).masked_fill(invalid, 0.0)
        stats = _stats(unit_w, unit_lr, unit_valid, log_ratio, valid, log_cap)
    return weights.to(old_logprobs.dtype), stats


def _stats(
    w: torch.Tensor,
    unit_lr: torch.Tensor,
    unit_valid: torch.Tensor,
    token_lr: torch.Tensor,
    valid: torch.Tensor,
    log_cap: float,
) -> dict[str, float]:
    """Statistics over valid units (masked reductions, no copies); sums accumulate in float64."""
    n = int(unit_valid.sum())
    if n == 0:
        nan = float("nan")
        keys = ("mean", "max", "min", "truncated_frac", "ess", "kl_k1", "kl_k3", "log_ratio_mean")
        return {k: nan for k in keys} | {"n": 0}
    n_tok = int(valid.sum())
    f64 = torch.float64
    w_sum = float(w.sum(dtype=f64))
    w_sq = float((w * w).sum(dtype=f64))
    # k1 = E_mu[log mu - log pi_old]; k3 = E_mu[(r - 1) - log r] with r = pi_old / mu (Schulman's estimators).
    # Masked tokens have log-ratio 0, so they add 0 to both sums.
    lr = token_lr.clamp(-_KL_CLAMP, _KL_CLAMP)
    k3 = float((torch.exp(lr) - 1 - lr).sum(dtype=f64)) / n_tok
    lr_mean = float(token_lr.sum(dtype=f64)) / n_tok
    return {
        "mean": w_sum / n,
        "max": float(w.masked_fill(~unit_valid, -math.inf).max()),
        "min": float(w.masked_fill(~unit_valid, math.inf).min()),
        "truncated_frac": float(((unit_lr > log_cap) & unit_valid).sum()) / n,
        "ess": w_sum**2 / (n * w_sq) if w_sq > 0 else 0.0,
        "kl_k1": -lr_mean,
        "kl_k3": k3,
        "log_ratio_mean": lr_mean,
        "n": n,
    }
