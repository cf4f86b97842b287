"""Temperature schedules for Exploratory Annealed Decoding (EAD) and fixed-temperature baselines.

One schedule object is shared by the sampler (which divides logits by tau_t) and the trainer
(which needs the same tau_t to reason about the behaviour policy), so the two cannot disagree.

EAD, for response position t (0-based, counted from the first generated token) at training step s:

    tau_t = 1.0                                           if t < c
    tau_t = max(1 + tau_max - exp(t / d_s), tau_min)      otherwise
    d_s   = d_scale * min(d0 + d_growth * s, d_cap)

``d_scale`` makes the paper/reference discrepancy explicit: the paper's formula is d_scale = 1
(preset "paper"); the authors' released sampler divides by 20 * d_s (preset "reference").
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar, Union

import numpy as np
import torch

from ead_core._checks import check_int, check_range

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)
Schedule = Union["EADSchedule", "FixedSchedule"]

PRESET_SCALES: dict[str, float] = {"paper": 1.0, "reference": 20.0}
PAPER_DEFAULTS: dict[str, Any] = {"tau_max": 1.2, "tau_min": 0.1, "d0": 25.0, "c": 10}


def _as_array(positions: Any) -> np.ndarray | torch.Tensor:
    """Pass tensors and arrays through; turn lists and scalars into numpy arrays."""
    if isinstance(positions, (np.ndarray, torch.Tensor)):
        return positions
    return np.asarray(positions)


def _float_like(t: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Floating version of ``t``: same dtype if already floating, else the default float type."""
    if isinstance(t, torch.Tensor):
        return t if t.is_floating_point() else t.to(torch.get_default_dtype())
    return t if np.issubdtype(t.dtype, np.floating) else t.astype(np.float64)


def _check_positions(t: np.ndarray | torch.Tensor) -> None:
    """Positions must be non-negative and not NaN (one reduction each; syncs on GPU)."""
    if isinstance(t, torch.Tensor):
        bad_nan = t.is_floating_point() and bool(torch.isnan(t).any())
        bad_neg = bool((t < 0).any())
    else:
        if not (np.issubdtype(t.dtype, np.number)):
            raise ValueError(f"positions must be numeric, got dtype {t.dtype}")
        bad_nan = np.issubdtype(t.dtype, np.floating) and bool(np.isnan(t).any())
        bad_neg = bool((t < 0).any())
    if bad_nan:
        raise ValueError("positions must not contain NaN")
    if bad_neg:
        raise ValueError("positions must be in [0, inf): got a negative response position")


def _check_step(step: float) -> float:
    return check_range("step", step, ge=0.0)


def anneal_temperature(
    t: ArrayLike,
    tau_max: float | ArrayLike,
    tau_min: float | ArrayLike,
    d: float | ArrayLike,
    c: float | ArrayLike,
) -> ArrayLike:
    """Elementwise EAD temperature for floating positions ``t`` (numpy or torch; arguments broadcast).

    No validation: this is the hot-path kernel shared by ``EADSchedule`` and the vLLM processor,
    whose per-request parameters are validated once, when the request arrives. The exponent is
    capped at log(1 + tau_max), past which the formula is already below any tau_min > 0, so
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


@dataclass(frozen=True)
class EADSchedule:
    """Exploratory annealed decoding: tau = 1 before position c, then decays from tau_max to tau_min."""

    tau_max: float
    tau_min: float
    d0: float
    c: int = 10
    d_growth: float = 5.0
    d_cap: float = 40000.0
    d_scale: float = 1.0

    kind = "ead"

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass normalisation
        set_("tau_min", check_range("tau_min", self.tau_min, gt=0.0))
        set_(
            "tau_max",
            check_range("tau_max", self.tau_max, ge=self.tau_min, range_text=f"[tau_min={self.tau_min}, inf)"),
        )
        set_("d0", check_range("d0", self.d0, gt=0.0))
        set_("c", check_int("c", self.c, ge=0))
        set_("d_growth", check_range("d_growth", self.d_growth, ge=0.0))
        set_("d_cap", check_range("d_cap", self.d_cap, ge=self.d0, allow_inf=True, range_text=f"[d0={self.d0}, inf]"))
        set_("d_scale", check_range("d_scale", self.d_scale, gt=0.0))
        if (msg := self.no_exploration_message()) is not None:
            warnings.warn(msg, UserWarning, stacklevel=3)

    def no_exploration_message(self) -> str | None:
        """Why tau never exceeds 1 at t >= c at step 0 (no exploratory phase), or None when it does.

        tau(c) > 1 needs a decay length d > c / ln(tau_max). The ``paper`` preset (c = 10, d = 25) gives tau(10) =
        0.708: it anneals from the first sampled position on and only explores once d_s has grown past c / ln(tau_max).
        """
        tau_c = self.temperature(self.c, 0)
        if tau_c > 1.0:
            return None
        head = f"EADSchedule {self.label} with c={self.c} never samples above tau = 1 after c at step 0"
        if self.tau_max <= 1.0:
            return f"{head}: tau_max={self.tau_max:g} <= 1, so it never does at any step"
        need = self.c / math.log(self.tau_max)  # tau(c) > 1 iff d_s > need
        d_max = self.d_scale * (self.d_cap if self.d_growth > 0 else self.d0)
        steps = (need / self.d_scale - self.d0) / self.d_growth if self.d_growth > 0 else math.inf
        if d_max > need and steps < 1e15:
            later = f"it first does at step {max(0, math.floor(steps) + 1)} (d_s > c / ln(tau_max) = {need:.4g})"
        else:
            later = f"it never does in practice (d_s <= {min(d_max, need):.4g}, needs > c / ln(tau_max) = {need:.4g})"
        return (
            f"{head}: tau({self.c}) = {tau_c:.3f} with decay d = {self.decay(0):g} "
            f"(tau_max={self.tau_max:g}); {later}. "
            "Use a larger d0 or d_scale (e.g. the 'reference' preset) or a smaller c for an exploratory phase."
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> EADSchedule:
        """Paper defaults (tau_max 1.2, tau_min 0.1, d0 25, c 10) with the named decay scale.

        "paper": d_scale 1, the formula as printed; "reference": d_scale 20, the authors' released sampler.
        Any field can be overridden by keyword (for instance tau_min=0.8 for 7B models).
        """
        if name not in PRESET_SCALES:
            raise ValueError(f"preset must be one of {sorted(PRESET_SCALES)}, got {name!r}")
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown EADSchedule field(s) {sorted(unknown)}")
        params = {**PAPER_DEFAULTS, "d_scale": PRESET_SCALES[name], **overrides}
        return cls(**params)

    def decay(self, step: float) -> float:
        """d_s = d_scale * min(d0 + d_growth * step, d_cap): the decay length at training step ``step``."""
        s = _check_step(step)
        return self.d_scale * min(self.d0 + self.d_growth * s, self.d_cap)

    def temperatures(self, positions: ArrayLike, step: float, *, validate: bool = True) -> ArrayLike:
        """Vectorised tau for response ``positions`` (numpy array or torch tensor; same kind and device back).

        Floating inputs keep their dtype; integer inputs give float64 (numpy) or torch's default dtype.
        """
        t = _as_array(positions)
        if validate:
            _check_positions(t)
        return anneal_temperature(_float_like(t), self.tau_max, self.tau_min, self.decay(step), self.c)

    def temperature(self, t: float, step: float) -> float:
        """tau for one response position."""
        t = check_range("t", t, ge=0.0)
        return float(self.temperatures(np.array([t], dtype=np.float64), step)[0])

    def position_tau_one(self, step: float) -> float:
        """Position where the decaying branch crosses tau = 1.0 (decay * ln(tau_max)); may lie before c."""
        return self.decay(step) * math.log(self.tau_max)

    def position_tau_min(self, step: float) -> float:
        """Position from which tau equals tau_min: decay * ln(1 + tau_max - tau_min) (or c, whichever is later)."""
        return max(float(self.c), self.decay(step) * math.log1p(self.tau_max - self.tau_min))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with a ``kind`` tag; ``schedule_from_dict`` inverts it."""
        return {"kind": self.kind, **asdict(self)}

    @property
    def label(self) -> str:
        """Short human-readable name for legends and run names."""
        scale = {v: k for k, v in PRESET_SCALES.items()}.get(self.d_scale, f"x{self.d_scale:g}")
        return f"EAD(tau {self.tau_max:g}->{self.tau_min:g}, d0={self.d0:g}, {scale})"


@dataclass(frozen=True)
class FixedSchedule:
    """Fixed temperature baseline with the same interface as EADSchedule (same code path in samplers)."""

    tau: float

    kind = "fixed"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tau", check_range("tau", self.tau, gt=0.0))

    def decay(self, step: float) -> float:
        """A constant temperature never decays: infinite decay length."""
        _check_step(step)
        return math.inf

    def temperatures(self, positions: ArrayLike, step: float, *, validate: bool = True) -> ArrayLike:
        """tau at every position (same kind, device and float dtype as ``positions``)."""
        t = _as_array(positions)
        if validate:
            _check_positions(t)
            _check_step(step)
        t = _float_like(t)
        if isinstance(t, torch.Tensor):
            return torch.full_like(t, self.tau)
        return np.full_like(t, self.tau)

    def temperature(self, t: float, step: float) -> float:
        check_range("t", t, ge=0.0)
        _check_step(step)
        return self.tau

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @property
    def label(self) -> str:
        return f"fixed(tau={self.tau:g})"


_KINDS: dict[str, type] = {"ead": EADSchedule, "fixed": FixedSchedule}


def schedule_from_dict(d: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from ``to_dict`` output (from configs, MLflow params or request arguments)."""
    if not isinstance(d, dict) or "kind" not in d:
        raise ValueError(f"schedule dict needs a 'kind' key in {sorted(_KINDS)}, got {d!r}")
    params = dict(d)
    kind = params.pop("kind")
    if kind not in _KINDS:
        raise ValueError(f"schedule kind must be one of {sorted(_KINDS)}, got {kind!r}")
    cls = _KINDS[kind]
    allowed = {f.name for f in fields(cls)}
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"unknown {kind} schedule field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if "c" in params and isinstance(params["c"], float) and params["c"].is_integer():
        params["c"] = int(params["c"])  # JSON / MLflow round trips may turn ints into floats
    return cls(**params)


def tau_text(tau: float) -> str:
    """A temperature as configs write it: 1 -> '1.0', 0.6 -> '0.6'."""
    text = f"{float(tau):g}"
    return text if any(ch in text for ch in ".e") else f"{text}.0"


def condition_label(kind: str, tau: float | None = None, detail: str = "") -> str:
    """The one spelling of a sampling condition in run names, tables, figures and metric keys: 'EAD', 'EAD <detail>'
    (a variant, e.g. 'EAD paper step:200'), 'fixed 0.6'; any other schedule kind is its own name (plus detail)."""
    if kind == "fixed":
        if tau is None:
            raise ValueError("tau must be given for kind='fixed'")
        return f"fixed {tau_text(tau)}"
    name = "EAD" if kind == "ead" else str(kind)
    return f"{name} {detail}".strip()


__all__ = [
    "EADSchedule",
    "FixedSchedule",
    "Schedule",
    "anneal_temperature",
    "condition_label",
    "schedule_from_dict",
    "tau_text",
]
