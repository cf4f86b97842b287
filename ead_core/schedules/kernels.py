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
# Iterations at most of the entropy_target search on log tau (safeguarded Newton: a Newton step when it stays inside
# the bracket, else a halving). Halvings alone would shrink the bracket 2^24-fold (within 8e-8 relative of the root
# for tau_hi / tau_lo = 4, below float32 resolution); Newton steps usually finish in 3-5 iterations.
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
    """tau per row with H(softmax(z / tau)) = target, by a safeguarded Newton search on x = log tau (namespace
    ``xp``: numpy or torch).

    H is increasing in x with dH/dx = beta^2 Var_p(z) (beta = 1 / tau, p = softmax(beta z)), so each iteration
    evaluates H and its slope in one pass over the vocabulary, keeps the bracket [lo, hi] around the root, and takes
    the Newton step when it lands inside the bracket, else the bracket's midpoint. A row stops (its x frozen) once a
    step moves it by at most a few float ulps or its bracket is that narrow; ``steps`` bounds the iterations.
    Freezing is row-wise and every operation is too, so a row's tau never depends on the other rows. With numpy only
    the rows still searching are computed; on a device every row runs (no shape depends on the data) and the loop
    ends when no row searches (one host sync per iteration).
    """
    full = lambda v: xp.zeros_like(z[:, 0]) + _like(z, v)  # noqa: E731  (B,) in z's dtype and device
    target, tau_lo, tau_hi = full(target), full(tau_lo), full(tau_hi)
    m = z.max(axis=-1, keepdims=True) if xp is np else z.amax(dim=-1, keepdim=True)
    zc = z - m  # <= 0; masked-out (-inf) logits stay -inf and get probability 0
    masked = bool(xp.isinf(z.min()))  # only masked-out logits are -inf (one reduction, not an elementwise pass)
    zc0 = xp.where(xp.isfinite(zc), zc, xp.zeros_like(zc)) if masked else zc
    buf = xp.empty_like(zc)
    # converged: the Newton step is below float resolution of H (float32 sums over the vocabulary are good to ~1e-7)
    tol = _like(z, 8 * float(np.finfo(np.float32).eps) if z.dtype in (np.float32, torch.float32) else 1e-11)

    def entropy(x: Any, zc: Any, zc0: Any, buf: Any, slope: bool = False) -> Any:
        # H = log S - beta * sum(e * zc) / S with e = exp(beta * zc), S = sum(e); dH/dx = beta^2 (E[zc^2] - E[zc]^2)
        beta = xp.exp(-x)
        xp.multiply(zc, beta[:, None], out=buf)
        xp.exp(buf, out=buf)
        s = buf.sum(-1)
        xp.multiply(buf, zc0, out=buf)
        m1 = buf.sum(-1) / s
        h = xp.log(s) - beta * m1
        if not slope:
            return h
        xp.multiply(buf, zc0, out=buf)
        return h, beta * beta * (buf.sum(-1) / s - m1 * m1)

    lo, hi = xp.log(tau_lo), xp.log(tau_hi)
    h_lo = entropy(lo, zc, zc0, buf)
    lo_enough = h_lo >= target  # already as uncertain as the target at tau_lo: keep tau_lo
    tau = xp.where(lo_enough, tau_lo, tau_hi)  # rows that stay below the target even at tau_hi: tau_hi
    rows = None
    if xp is np:  # each end evaluated only on the rows it can still decide
        rows = np.flatnonzero(~lo_enough)
        zc, zc0, lo, hi, target, h_lo = zc[rows], zc0[rows], lo[rows], hi[rows], target[rows], h_lo[rows]
        h_hi = entropy(hi, zc, zc0, buf[: rows.size])
        reach = h_hi > target
        rows, zc, zc0, h_hi = rows[reach], zc[reach], zc0[reach], h_hi[reach]
        lo, hi, target, h_lo = lo[reach], hi[reach], target[reach], h_lo[reach]
        if rows.size == 0:
            return tau
    else:
        h_hi = entropy(hi, zc, zc0, buf)
        hi_short = h_hi <= target
        searching = ~(lo_enough | hi_short)
    # start where the chord between the ends crosses the target (kept off the ends)
    frac = (target - h_lo) / xp.where(h_hi > h_lo, h_hi - h_lo, xp.ones_like(h_hi))
    x = lo + (hi - lo) * xp.clip(frac, 0.05, 0.95)
    x_lo, x_hi = lo, hi
    if xp is np:  # the rows still searching, compacted as rows finish (no per-iteration gather of the logits)
        live = np.arange(x.shape[0])
        xl, lol, hil, tl = x.copy(), lo, hi, target
    for _ in range(steps):
        if xp is np:
            if live.size == 0:
                break
            h, dh = entropy(xl, zc, zc0, buf[: live.size], slope=True)
        else:
            if not bool(searching.any()):
                break
            h, dh = entropy(x, zc, zc0, buf, slope=True)
            xl, lol, hil, tl = x, lo, hi, target
        below = h < tl
        lol, hil = xp.where(below, xl, lol), xp.where(below, hil, xl)
        newton = xl + (tl - h) / xp.where(dh > 0, dh, xp.full_like(dh, math.inf))
        inside = (newton > lol) & (newton < hil)
        nx = xp.where(inside, newton, (lol + hil) * 0.5)
        scale = tol * (1 + xp.abs(xl))
        done = (xp.abs(newton - xl) <= scale) | (hil - lol <= scale)
        nx = xp.where(done & xp.isfinite(newton), newton, nx)
        if xp is np:
            x[live] = nx
            if done.any():
                keep = ~done
                live, zc, zc0 = live[keep], zc[keep], zc0[keep]
                xl, lol, hil, tl = nx[keep], lol[keep], hil[keep], tl[keep]
            else:
                xl = nx
        else:
            x = xp.where(searching, nx, x)
            lo, hi = xp.where(searching, lol, lo), xp.where(searching, hil, hi)
            searching = searching & ~done
    x = xp.minimum(xp.maximum(x, x_lo), x_hi)  # a converged Newton point may sit an ulp outside the ends
    solved = xp.exp(x)
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

    Entropy is increasing in tau, so a safeguarded Newton search on log tau (at most ``steps`` iterations, all rows
    at once; see ``_solve``) finds it. Rows
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
