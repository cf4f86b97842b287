"""Vectorised temperature kernels of the schedule family (numpy or torch; parameters broadcast).

Hot-path code without validation: the schedule classes (``ead_core.schedule``) validate their parameters once and
call these with scalars; the vLLM processor validates each request once and calls them with one parameter row per
request. Both therefore compute tau with the same expressions.

A request is described to the per-row kernels by seven numbers ``(code, a, b, d, c, e, f)`` (``kernel_args`` of a
schedule at a step):

    code      kind                  a        b        d                 c    e       f
    EAD       ead, fixed, none      tau_max  tau_min  d_s               c    -       -
    REVERSE   reverse               tau_max  tau_min  d_s               c    -       -
    LINEAR    linear                tau_max  tau_min  L_s (= d_s)       c    -       -
    COSINE    cosine                tau_max  tau_min  L_s (= d_s)       c    -       -
    ENTROPY   entropy_target        H_max    H_min    d_s               c    tau_lo  tau_hi

A fixed temperature tau is the EAD curve ``(0, tau, inf, 0)``: the decaying branch 1 + 0 - exp(0) = 0 lies below
the floor, so the kernel returns exactly tau; ``IDENTITY`` (tau = 1) is a request without a schedule.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np
import torch

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)

EAD, REVERSE, LINEAR, COSINE, ENTROPY = 0, 1, 2, 3, 4
KERNEL_ARGS = ("code", "a", "b", "d", "c", "e", "f")
IDENTITY: tuple[float, ...] = (EAD, 0.0, 1.0, math.inf, 0.0, 1.0, 1.0)
# Bisection steps on log tau for entropy_target: the bracket [log tau_lo, log tau_hi] shrinks 2^24-fold, so for
# tau_hi / tau_lo = 4 the answer is within 8e-8 (relative) of the exact root, below float32 resolution.
ENTROPY_SEARCH_STEPS = 24


def _like(t: ArrayLike, v: Any) -> ArrayLike:
    """``v`` as an array of ``t``'s kind, dtype (and device)."""
    if isinstance(t, torch.Tensor):
        return torch.as_tensor(v, dtype=t.dtype, device=t.device)
    return np.asarray(v, dtype=t.dtype)


def _xp(x: Any) -> Any:
    return torch if isinstance(x, torch.Tensor) else np


def anneal_temperature(
    t: ArrayLike,
    tau_max: float | ArrayLike,
    tau_min: float | ArrayLike,
    d: float | ArrayLike,
    c: float | ArrayLike,
) -> ArrayLike:
    """EAD: 1 for t < c, else max(1 + tau_max - exp(t / d), tau_min), elementwise for floating positions ``t``.

    The exponent is capped at log(1 + tau_max), past which the formula is already below any tau_min > 0, so
    large t / d never overflows. Scalar parameters take an in-place path (one allocation).
    """
    scalar = all(isinstance(p, (int, float)) for p in (tau_max, tau_min, d, c))
    if isinstance(t, torch.Tensor):
        if scalar:
            x = torch.div(t, d).clamp_(max=math.log1p(tau_max)).exp_().neg_().add_(1.0 + tau_max).clamp_(min=tau_min)
            return x.masked_fill_(t < c, 1.0)
        as_t = lambda v: torch.as_tensor(v, dtype=t.dtype, device=t.device)  # noqa: E731
        x = torch.minimum(t / d, torch.log1p(as_t(tau_max)))
        tau = torch.maximum(1.0 + tau_max - torch.exp(x), as_t(tau_min))
        return torch.where(t < c, torch.ones_like(tau), tau)
    if scalar:
        x = np.divide(t, d, dtype=t.dtype)
        np.minimum(x, math.log1p(tau_max), out=x)
        np.exp(x, out=x)
        np.subtract(1.0 + tau_max, x, out=x)
        np.maximum(x, tau_min, out=x)
        x[t < c] = 1.0
        return x
    x = np.minimum(t / d, np.log1p(tau_max))
    tau = np.maximum(1.0 + np.asarray(tau_max) - np.exp(x), tau_min).astype(t.dtype, copy=False)
    return np.where(t < c, np.ones_like(tau), tau)


def reverse_temperature(t: ArrayLike, tau_max: Any, tau_min: Any, d: Any, c: Any) -> ArrayLike:
    """Reverse EAD: 1 for t < c, else min(tau_min - 1 + exp(t / d), tau_max): rises from tau_min to tau_max.

    The mirror image of EAD in tau about (tau_max + tau_min) / 2: reverse(t) = tau_max + tau_min - ead(t) for
    t >= c. The exponent is capped at log(1 + tau_max - tau_min), where the curve reaches tau_max.
    """
    xp = _xp(t)
    a, b, dd, cc = (_like(t, v) for v in (tau_max, tau_min, d, c))
    x = xp.minimum(t / dd, xp.log1p(a - b))
    tau = xp.minimum(b - 1.0 + xp.exp(x), a)
    return xp.where(t < cc, xp.ones_like(tau), tau)


def _progress(t: ArrayLike, length: Any, c: Any) -> ArrayLike:
    """Fraction of the anneal done at t: clip((t - c) / length, 0, 1)."""
    u = (t - _like(t, c)) / _like(t, length)
    return u.clamp(0.0, 1.0) if isinstance(u, torch.Tensor) else np.clip(u, 0.0, 1.0)


def linear_temperature(t: ArrayLike, tau_max: Any, tau_min: Any, length: Any, c: Any) -> ArrayLike:
    """Linear anneal: 1 for t < c, else tau_max + (tau_min - tau_max) * clip((t - c) / length, 0, 1)."""
    xp = _xp(t)
    a, b = _like(t, tau_max), _like(t, tau_min)
    tau = a + (b - a) * _progress(t, length, c)
    return xp.where(t < _like(t, c), xp.ones_like(tau), tau)


def cosine_temperature(t: ArrayLike, tau_max: Any, tau_min: Any, length: Any, c: Any) -> ArrayLike:
    """Cosine anneal: 1 for t < c, else tau_min + (tau_max - tau_min) (1 + cos(pi u)) / 2, u = clip((t-c)/length)."""
    xp = _xp(t)
    a, b = _like(t, tau_max), _like(t, tau_min)
    tau = b + (a - b) * (0.5 * (1.0 + xp.cos(math.pi * _progress(t, length, c))))
    return xp.where(t < _like(t, c), xp.ones_like(tau), tau)


POSITION_KERNELS = {EAD: anneal_temperature, REVERSE: reverse_temperature, LINEAR: linear_temperature,
                    COSINE: cosine_temperature}  # fmt: skip


def family_temperature(
    code: ArrayLike, t: ArrayLike, a: ArrayLike, b: ArrayLike, d: ArrayLike, c: ArrayLike, present: Any = None
) -> ArrayLike:
    """tau per row for rows of mixed position-only kinds (``code`` per row); ENTROPY rows get 1.0.

    ``present``: the codes that occur (a host-side set, so a device batch needs no sync); None checks each code.
    Each row's value comes from its kind's kernel, the one its schedule class uses.
    """
    tau = anneal_temperature(t, a, b, d, c)
    kinds = [k for k in (REVERSE, LINEAR, COSINE, ENTROPY) if present is None or k in present]
    if isinstance(t, torch.Tensor):
        for k in kinds:  # on a device: compute over all rows and select (no data-dependent shapes)
            value = torch.ones_like(tau) if k == ENTROPY else POSITION_KERNELS[k](t, a, b, d, c)
            tau = torch.where(code == k, value, tau)
        return tau
    for k in kinds:
        rows = np.flatnonzero(code == k)
        if rows.size:
            args = (x[rows] for x in (t, a, b, d, c))
            tau[rows] = 1.0 if k == ENTROPY else POSITION_KERNELS[k](*args)
    return tau


# ---- entropy_target ------------------------------------------------------------------------------------------


def entropy_profile(t: ArrayLike, h_max: Any, h_min: Any, d: Any) -> ArrayLike:
    """Target entropy H*(t) = max(H_min, H_max exp(-t / d)) in nats."""
    xp = _xp(t)
    return xp.maximum(_like(t, h_min), _like(t, h_max) * xp.exp(-t / _like(t, d)))


def _solve(xp: Any, z: Any, target: Any, tau_lo: Any, tau_hi: Any, steps: int) -> Any:
    """Bisection on log tau of H(softmax(z / tau)) = target per row (namespace ``xp``: numpy or torch).

    With numpy, only the rows whose root lies strictly inside (tau_lo, tau_hi) enter the bisection (every operation
    is row-wise, so the numbers do not depend on which other rows are present); on a device every row runs, so
    that no shape depends on the data.
    """
    full = lambda v: xp.zeros_like(z[:, 0]) + _like(z, v)  # noqa: E731  (B,) in z's dtype and device
    target, tau_lo, tau_hi = full(target), full(tau_lo), full(tau_hi)
    m = z.max(axis=-1, keepdims=True) if xp is np else z.amax(dim=-1, keepdim=True)
    zc = z - m  # <= 0; masked-out (-inf) logits stay -inf and get probability 0
    zc0 = xp.where(xp.isfinite(zc), zc, xp.zeros_like(zc))
    buf = xp.empty_like(zc)

    def entropy(log_tau: Any, zc: Any, zc0: Any, buf: Any) -> Any:
        # H = log S - beta * sum(e * zc) / S with e = exp(beta * zc), S = sum(e), beta = 1 / tau
        beta = xp.exp(-log_tau)
        xp.multiply(zc, beta[:, None], out=buf)
        xp.exp(buf, out=buf)
        s = buf.sum(-1)
        xp.multiply(buf, zc0, out=buf)
        return xp.log(s) - beta * buf.sum(-1) / s

    lo, hi = xp.log(tau_lo), xp.log(tau_hi)
    lo_enough = entropy(lo, zc, zc0, buf) >= target  # already as uncertain as the target at tau_lo: keep tau_lo
    hi_short = entropy(hi, zc, zc0, buf) <= target  # even tau_hi does not reach the target: tau_hi
    tau = xp.where(lo_enough, tau_lo, tau_hi)
    rows = None
    if xp is np:
        rows = np.flatnonzero(~(lo_enough | hi_short))
        if rows.size == 0:
            return tau
        zc, zc0, buf, lo, hi, target = zc[rows], zc0[rows], buf[: rows.size], lo[rows], hi[rows], target[rows]
    for _ in range(steps):
        mid = (lo + hi) * 0.5
        below = entropy(mid, zc, zc0, buf) < target
        lo, hi = xp.where(below, mid, lo), xp.where(below, hi, mid)
    solved = xp.exp((lo + hi) * 0.5)
    if rows is not None:
        tau[rows] = solved
        return tau
    return xp.where(lo_enough | hi_short, tau, solved)


def _run(backend: str, logits: ArrayLike, fn: Any) -> ArrayLike:
    """Run ``fn(xp, z)`` on float logits with the chosen backend; the result has the input's kind and device.

    "auto": numpy for numpy input and for torch tensors on the CPU (a zero-copy view: far less per-call overhead
    than torch for one sampling step, and every CPU sampler then computes identical numbers), torch on devices.
    """
    if backend not in ("auto", "numpy", "torch"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'torch', got {backend!r}")
    if isinstance(logits, torch.Tensor):
        z = logits.detach()
        z = z if z.dtype in (torch.float32, torch.float64) else z.float()
        if backend == "numpy" or (backend == "auto" and z.device.type == "cpu"):
            return torch.from_numpy(np.asarray(fn(np, z.cpu().numpy()))).to(z.device)
        return fn(torch, z)
    z = np.asarray(logits)
    z = z if z.dtype in (np.float32, np.float64) else z.astype(np.float32)
    if backend == "torch":
        return fn(torch, torch.from_numpy(z)).numpy()
    return fn(np, z)


def _host(v: Any) -> Any:
    """Parameters for the numpy path: tensors become numpy arrays (scalars and arrays pass through)."""
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v


def _on(xp: Any, z: Any, v: Any) -> Any:
    if xp is np:
        return _host(v)
    return v.to(z.device) if isinstance(v, torch.Tensor) else torch.as_tensor(v, device=z.device)


def solve_entropy_temperature(
    logits: ArrayLike,
    target: Any,
    tau_lo: Any,
    tau_hi: Any,
    *,
    steps: int = ENTROPY_SEARCH_STEPS,
    backend: str = "auto",
) -> ArrayLike:
    """Per row of ``logits`` (B, V), the tau in [tau_lo, tau_hi] whose softmax(logits / tau) has entropy ``target``.

    Entropy is increasing in tau, so a bisection on log tau (``steps`` halvings, all rows at once) finds it. Rows
    whose entropy at tau_lo already reaches the target get exactly tau_lo; rows that stay below it at tau_hi get
    exactly tau_hi. ``target``, ``tau_lo``, ``tau_hi``: scalars or (B,) arrays. Returns (B,) in the logits' kind.
    """
    return _run(
        backend,
        logits,
        lambda xp, z: _solve(xp, z, *(_on(xp, z, v) for v in (target, tau_lo, tau_hi)), steps),
    )


def entropy_target_temperature(
    logits: ArrayLike,
    t: Any,
    h_max: Any,
    h_min: Any,
    d: Any,
    c: Any,
    tau_lo: Any,
    tau_hi: Any,
    *,
    steps: int = ENTROPY_SEARCH_STEPS,
    backend: str = "auto",
) -> ArrayLike:
    """entropy_target: 1 for t < c, else the tau in [tau_lo, tau_hi] with entropy H*(t) (``entropy_profile``).

    ``t`` and the parameters: scalars or one value per row. Target and positions are computed in the logits'
    float dtype, so every caller on the same logits gets the same numbers.
    """

    def fn(xp: Any, z: Any) -> Any:
        tt = _like(z, _on(xp, z, t)) + xp.zeros_like(z[:, 0])
        warm = tt < _like(z, _on(xp, z, c))
        target = entropy_profile(tt, *(_on(xp, z, v) for v in (h_max, h_min, d)))
        target = xp.where(warm, xp.full_like(target, -math.inf), target)  # t < c: no search (tau_lo), then 1
        tau = _solve(xp, z, target, _on(xp, z, tau_lo), _on(xp, z, tau_hi), steps)
        return xp.where(warm, xp.ones_like(tau), tau)

    return _run(backend, logits, fn)


def softmax_entropy(logits: ArrayLike, tau: Any = 1.0) -> ArrayLike:
    """Entropy (nats) of softmax(logits / tau) over the last axis; ``tau`` a scalar or broadcastable to rows."""
    xp = _xp(logits)
    z = logits / (_like(logits, tau)[..., None] if np.ndim(_host(tau)) else tau)
    m = z.max(axis=-1, keepdims=True) if xp is np else z.amax(dim=-1, keepdim=True)
    zc = z - m
    e = xp.exp(zc)
    s = e.sum(-1)
    zc0 = xp.where(xp.isfinite(zc), zc, xp.zeros_like(zc))
    return xp.log(s) - (e * zc0).sum(-1) / s


__all__ = [
    "COSINE",
    "EAD",
    "ENTROPY",
    "ENTROPY_SEARCH_STEPS",
    "IDENTITY",
    "KERNEL_ARGS",
    "LINEAR",
    "REVERSE",
    "anneal_temperature",
    "cosine_temperature",
    "entropy_profile",
    "entropy_target_temperature",
    "family_temperature",
    "linear_temperature",
    "reverse_temperature",
    "softmax_entropy",
    "solve_entropy_temperature",
]
