"""The matched-entropy control: a fixed temperature whose rollouts have the same mean token entropy as a reference.

"Token entropy" here is the entropy of the distribution the sampler draws from (softmax(z / tau_t)), averaged over
valid tokens: at one fixed temperature it is the only entropy a temperature changes on given logits, and it is what
a fixed-temperature control has to match to ask whether EAD's effect is more than its total amount of randomness.

Two entry points, both a bisection on log tau (entropy is increasing in tau):
* ``calibrate_temperature(entropy_at, target)``: any callable, e.g. one that samples rollouts at tau and returns
  their mean token entropy (noisy but increasing on average);
* ``matched_fixed_schedule(reference, logits, positions, step)``: on logits collected from the reference's own
  rollouts at a training step, the target is the reference's behaviour entropy and the result a
  ``FixedMatchedSchedule`` carrying the calibrated tau and its target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ead_core._checks import check_int, check_range
from ead_core.schedule import FixedMatchedSchedule, Schedule
from ead_core.schedules.kernels import softmax_entropy


def calibrate_temperature(
    entropy_at: Callable[[float], float],
    target: float,
    *,
    tau_lo: float = 0.05,
    tau_hi: float = 20.0,
    steps: int = 40,
) -> float:
    """The tau in [tau_lo, tau_hi] with ``entropy_at(tau) == target``, by ``steps`` bisection steps on log tau.

    Raises ValueError when the target lies outside [entropy_at(tau_lo), entropy_at(tau_hi)].
    """
    target = check_range("target", target, ge=0.0)
    tau_lo = check_range("tau_lo", tau_lo, gt=0.0)
    tau_hi = check_range("tau_hi", tau_hi, gt=tau_lo, range_text=f"(tau_lo={tau_lo}, inf)")
    steps = check_int("steps", steps, ge=1)
    h_lo, h_hi = float(entropy_at(tau_lo)), float(entropy_at(tau_hi))
    if not h_lo <= target <= h_hi:
        raise ValueError(
            f"target entropy {target:.6g} is outside the range reachable with tau in [{tau_lo:g}, {tau_hi:g}]: "
            f"[{h_lo:.6g}, {h_hi:.6g}]; widen tau_lo/tau_hi"
        )
    lo, hi = math.log(tau_lo), math.log(tau_hi)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if float(entropy_at(math.exp(mid))) < target:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def _mask_of(logits: Any, mask: Any) -> np.ndarray:
    shape = tuple(logits.shape[:-1])
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"mask shape {m.shape} must equal logits.shape[:-1] = {shape}")
    if not m.any():
        raise ValueError("mask selects no token")
    return m.astype(bool)


def mean_entropy(logits: Any, tau: Any = 1.0, mask: Any = None) -> float:
    """Mean over valid tokens of the entropy of softmax(logits / tau); ``tau`` scalar or one per token."""
    h = softmax_entropy(logits, tau)
    h = h.detach().cpu().double().numpy() if isinstance(h, torch.Tensor) else np.asarray(h, dtype=np.float64)
    return float(h[_mask_of(logits, mask)].mean())


def behaviour_temperatures(schedule: Schedule, logits: Any, positions: Any, step: float) -> Any:
    """The temperature ``schedule`` samples each token with: logits (..., V), positions broadcastable to (...)."""
    shape = tuple(logits.shape[:-1])
    if schedule.needs_logits:
        xp = torch if isinstance(logits, torch.Tensor) else np
        pos = positions if isinstance(positions, (np.ndarray, torch.Tensor)) else np.asarray(positions)
        pos = xp.broadcast_to(torch.as_tensor(pos) if xp is torch else pos, shape).reshape(-1)
        return schedule.temperatures_for_logits(logits.reshape(-1, logits.shape[-1]), pos, step).reshape(shape)
    taus = schedule.temperatures(positions, step)
    return torch.broadcast_to(taus, shape) if isinstance(taus, torch.Tensor) else np.broadcast_to(taus, shape)


def behaviour_entropy(schedule: Schedule, logits: Any, positions: Any, step: float, mask: Any = None) -> float:
    """Mean token entropy of the distributions ``schedule`` samples from on ``logits`` (its rollouts' entropy)."""
    taus = behaviour_temperatures(schedule, logits, positions, step)
    if isinstance(logits, torch.Tensor) != isinstance(taus, torch.Tensor):
        taus = torch.as_tensor(np.asarray(taus)) if isinstance(logits, torch.Tensor) else taus.numpy()
    return mean_entropy(logits, taus, mask)


def matched_fixed_schedule(
    reference: Schedule,
    logits: Any,
    positions: Any,
    step: float,
    mask: Any = None,
    **bisection: Any,
) -> FixedMatchedSchedule:
    """The fixed temperature whose mean token entropy on ``logits`` equals ``reference``'s at training ``step``.

    ``logits`` (..., V) come from the reference's rollouts at that step (``positions``: their response positions,
    ``mask``: valid tokens). ``bisection``: tau_lo, tau_hi, steps of ``calibrate_temperature``.
    """
    target = behaviour_entropy(reference, logits, positions, step, mask)
    tau = calibrate_temperature(lambda tau: mean_entropy(logits, tau, mask), target, **bisection)
    return FixedMatchedSchedule(tau=tau, target_entropy=target)


__all__ = [
    "behaviour_entropy",
    "behaviour_temperatures",
    "calibrate_temperature",
    "matched_fixed_schedule",
    "mean_entropy",
]
