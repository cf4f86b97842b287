"""Temperature schedules: Exploratory Annealed Decoding (EAD), fixed temperatures and the family around them.

One schedule object is shared by the sampler (which divides logits by tau_t) and the trainer
(which needs the same tau_t to reason about the behaviour policy), so the two cannot disagree.

For response position t (0-based, counted from the first generated token) at training step s, every decaying kind
leaves the first c positions at tau = 1 and uses the length scale

    d_s   = d_scale * min(d0 + d_growth * s, d_cap)

``d_scale`` makes the paper/reference discrepancy explicit: the paper's formula is d_scale = 1
(preset "paper"); the authors' released sampler divides by 20 * d_s (preset "reference").

Kinds (``kind`` in ``to_dict`` / ``schedule_from_dict``), for t >= c:

    ead             tau_t = max(1 + tau_max - exp(t / d_s), tau_min)          explore, then exploit
    reverse         tau_t = min(tau_min - 1 + exp(t / d_s), tau_max)          exploit, then explore (EAD's mirror)
    linear          tau_t = tau_max + (tau_min - tau_max) u,                  u = clip((t - c) / d_s, 0, 1)
    cosine          tau_t = tau_min + (tau_max - tau_min) (1 + cos(pi u)) / 2
    fixed           tau_t = tau (also for t < c)
    fixed_matched   tau_t = tau, calibrated so its rollouts' mean token entropy equals a target (EAD's)
    entropy_target  tau_t = the tau in [tau_lo, tau_hi] with entropy(softmax(z_t / tau)) = H*(t),
                    H*(t) = max(H_min, H_max exp(-t / d_s)); depends on the logits z_t

Position-only kinds expose ``temperatures(positions, step)`` (numpy or torch in, the same kind out); the
logits-dependent one (``needs_logits``) exposes ``temperatures_for_logits(logits, positions, step)``. All expose
``decay(step)``, ``kernel_args(step)`` (the numbers the per-row kernels of ``ead_core.schedules.kernels`` take, used
by the vLLM processor), ``to_dict()`` and ``label``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch

from ead_core._checks import check_int, check_range
from ead_core.schedules import kernels as K
from ead_core.schedules.kernels import anneal_temperature

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)

PRESET_SCALES: dict[str, float] = {"paper": 1.0, "reference": 20.0}
PAPER_DEFAULTS: dict[str, Any] = {"tau_max": 1.2, "tau_min": 0.1, "d0": 25.0, "c": 10}


@runtime_checkable
class Schedule(Protocol):
    """What every schedule kind offers (position-only kinds add ``temperatures``/``temperature``; the
    logits-dependent kind adds ``temperatures_for_logits``)."""

    kind: ClassVar[str]
    needs_logits: ClassVar[bool]
    step_dependent: ClassVar[bool]

    def decay(self, step: float) -> float: ...

    def kernel_args(self, step: float) -> tuple[float, ...]: ...

    def to_dict(self) -> dict[str, Any]: ...

    @property
    def label(self) -> str: ...


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


def decay_length(step: float, d0: float, d_growth: float, d_cap: float, d_scale: float) -> float:
    """d_s = d_scale * min(d0 + d_growth * step, d_cap): the length scale of a decaying schedule at ``step``."""
    s = _check_step(step)
    return d_scale * min(d0 + d_growth * s, d_cap)


def _validate_decay(obj: Any) -> None:
    """Check and normalise the d0, c, d_growth, d_cap, d_scale fields of a frozen dataclass."""
    set_ = lambda k, v: object.__setattr__(obj, k, v)  # noqa: E731 - frozen dataclass normalisation
    set_("d0", check_range("d0", obj.d0, gt=0.0))
    set_("c", check_int("c", obj.c, ge=0))
    set_("d_growth", check_range("d_growth", obj.d_growth, ge=0.0))
    set_("d_cap", check_range("d_cap", obj.d_cap, ge=obj.d0, allow_inf=True, range_text=f"[d0={obj.d0}, inf]"))
    set_("d_scale", check_range("d_scale", obj.d_scale, gt=0.0))


def _scale_text(d_scale: float) -> str:
    return {v: k for k, v in PRESET_SCALES.items()}.get(d_scale, f"x{d_scale:g}")


@dataclass(frozen=True)
class _AnnealedSchedule:
    """Shared part of the position-only decaying kinds: tau = 1 before c, then a curve between tau_max and tau_min
    over the length scale d_s. Subclasses name their ``kind`` and kernel code."""

    tau_max: float
    tau_min: float
    d0: float
    c: int = 10
    d_growth: float = 5.0
    d_cap: float = 40000.0
    d_scale: float = 1.0

    kind: ClassVar[str]
    code: ClassVar[int]
    needs_logits: ClassVar[bool] = False
    step_dependent: ClassVar[bool] = True

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass normalisation
        set_("tau_min", check_range("tau_min", self.tau_min, gt=0.0))
        set_(
            "tau_max",
            check_range("tau_max", self.tau_max, ge=self.tau_min, range_text=f"[tau_min={self.tau_min}, inf)"),
        )
        _validate_decay(self)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Any:
        """Paper defaults (tau_max 1.2, tau_min 0.1, d0 25, c 10) with the named decay scale.

        "paper": d_scale 1, the formula as printed; "reference": d_scale 20, the authors' released sampler.
        Any field can be overridden by keyword (for instance tau_min=0.8 for 7B models).
        """
        if name not in PRESET_SCALES:
            raise ValueError(f"preset must be one of {sorted(PRESET_SCALES)}, got {name!r}")
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {sorted(unknown)}")
        params = {**PAPER_DEFAULTS, "d_scale": PRESET_SCALES[name], **overrides}
        return cls(**params)

    def decay(self, step: float) -> float:
        """d_s = d_scale * min(d0 + d_growth * step, d_cap): the length scale at training step ``step``."""
        return decay_length(step, self.d0, self.d_growth, self.d_cap, self.d_scale)

    def kernel_args(self, step: float) -> tuple[float, ...]:
        """``(code, a, b, d, c, e, f)`` for the per-row kernels (see ``ead_core.schedules.kernels``)."""
        return (float(self.code), self.tau_max, self.tau_min, self.decay(step), float(self.c), 1.0, 1.0)

    def temperatures(self, positions: ArrayLike, step: float, *, validate: bool = True) -> ArrayLike:
        """Vectorised tau for response ``positions`` (numpy array or torch tensor; same kind and device back).

        Floating inputs keep their dtype; integer inputs give float64 (numpy) or torch's default dtype.
        """
        t = _as_array(positions)
        if validate:
            _check_positions(t)
        kernel = K.POSITION_KERNELS[self.code]
        return kernel(_float_like(t), self.tau_max, self.tau_min, self.decay(step), self.c)

    def temperature(self, t: float, step: float) -> float:
        """tau for one response position."""
        t = check_range("t", t, ge=0.0)
        return float(self.temperatures(np.array([t], dtype=np.float64), step)[0])

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with a ``kind`` tag; ``schedule_from_dict`` inverts it."""
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class EADSchedule(_AnnealedSchedule):
    """Exploratory annealed decoding: tau = 1 before position c, then decays from tau_max to tau_min."""

    kind: ClassVar[str] = "ead"
    code: ClassVar[int] = K.EAD

    def __post_init__(self) -> None:
        super().__post_init__()
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

    def position_tau_one(self, step: float) -> float:
        """Position where the decaying branch crosses tau = 1.0 (decay * ln(tau_max)); may lie before c."""
        return self.decay(step) * math.log(self.tau_max)

    def position_tau_min(self, step: float) -> float:
        """Position from which tau equals tau_min: decay * ln(1 + tau_max - tau_min) (or c, whichever is later)."""
        return max(float(self.c), self.decay(step) * math.log1p(self.tau_max - self.tau_min))

    @property
    def label(self) -> str:
        """Short human-readable name for legends and run names."""
        return f"EAD(tau {self.tau_max:g}->{self.tau_min:g}, d0={self.d0:g}, {_scale_text(self.d_scale)})"


@dataclass(frozen=True)
class ReverseSchedule(_AnnealedSchedule):
    """Reverse annealing (exploit, then explore): tau = 1 before c, then rises from tau_min to tau_max.

    tau_t = min(tau_min - 1 + exp(t / d_s), tau_max) for t >= c: EAD's curve mirrored in tau about the midpoint
    (tau_max + tau_min) / 2, i.e. reverse(t) = tau_max + tau_min - ead(t) with the same fields. Why this mirror and
    not the time mirror ead(T - t): it needs no response length T (unknown while sampling), keeps EAD's length scale
    d_s and its growth with the step, and spends the same time between the two ends: it leaves tau_min at once, passes
    1.0 at t = d_s ln(2 - tau_min) and reaches tau_max at t = d_s ln(1 + tau_max - tau_min), where EAD reaches tau_min.
    """

    kind: ClassVar[str] = "reverse"
    code: ClassVar[int] = K.REVERSE

    def position_tau_max(self, step: float) -> float:
        """Position from which tau equals tau_max: d_s ln(1 + tau_max - tau_min) (or c, whichever is later)."""
        return max(float(self.c), self.decay(step) * math.log1p(self.tau_max - self.tau_min))

    @property
    def label(self) -> str:
        return f"reverse(tau {self.tau_min:g}->{self.tau_max:g}, d0={self.d0:g}, {_scale_text(self.d_scale)})"


@dataclass(frozen=True)
class LinearSchedule(_AnnealedSchedule):
    """Linear anneal: tau = 1 before c, then from tau_max at t = c down to tau_min at t = c + d_s, then tau_min.

    tau_t = tau_max + (tau_min - tau_max) clip((t - c) / d_s, 0, 1). Here d_s is the anneal length L_s (it grows
    with the step like EAD's decay length). Unlike EAD's formula, which is evaluated at t, the anneal starts at c.
    """

    kind: ClassVar[str] = "linear"
    code: ClassVar[int] = K.LINEAR

    @property
    def label(self) -> str:
        return f"linear(tau {self.tau_max:g}->{self.tau_min:g}, L0={self.d0:g}, {_scale_text(self.d_scale)})"


@dataclass(frozen=True)
class CosineSchedule(_AnnealedSchedule):
    """Cosine anneal: tau = 1 before c, then tau_min + (tau_max - tau_min) (1 + cos(pi u)) / 2, u = clip((t-c)/d_s).

    From tau_max at t = c to tau_min at t = c + d_s (the anneal length L_s), flat at both ends, then tau_min.
    """

    kind: ClassVar[str] = "cosine"
    code: ClassVar[int] = K.COSINE

    @property
    def label(self) -> str:
        return f"cosine(tau {self.tau_max:g}->{self.tau_min:g}, L0={self.d0:g}, {_scale_text(self.d_scale)})"


@dataclass(frozen=True)
class FixedSchedule:
    """Fixed temperature baseline with the same interface as EADSchedule (same code path in samplers)."""

    tau: float

    kind: ClassVar[str] = "fixed"
    needs_logits: ClassVar[bool] = False
    step_dependent: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tau", check_range("tau", self.tau, gt=0.0))

    def decay(self, step: float) -> float:
        """A constant temperature never decays: infinite decay length."""
        _check_step(step)
        return math.inf

    def kernel_args(self, step: float) -> tuple[float, ...]:
        """The EAD curve (0, tau, inf, 0): 1 + 0 - exp(0) = 0 lies below the floor, so the kernel gives tau."""
        return (float(K.EAD), 0.0, self.tau, self.decay(step), 0.0, 1.0, 1.0)

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


@dataclass(frozen=True)
class FixedMatchedSchedule(FixedSchedule):
    """The matched-entropy control: a fixed temperature tau calibrated so that the mean token entropy of its
    rollouts equals ``target_entropy`` (a reference schedule's, e.g. EAD's at the same training step).

    It samples exactly like ``FixedSchedule(tau)``; ``ead_core.schedules.calibration.matched_fixed_schedule`` makes
    one from logits of the reference's rollouts, ``calibrate_temperature`` from any entropy-at-tau callable.
    """

    target_entropy: float

    kind: ClassVar[str] = "fixed_matched"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "target_entropy", check_range("target_entropy", self.target_entropy, ge=0.0))

    @property
    def label(self) -> str:
        return f"fixed-matched(tau={self.tau:.4g}, H={self.target_entropy:.4g})"


@dataclass(frozen=True)
class EntropyTargetSchedule:
    """Entropy-adaptive temperature: per token, the tau in [tau_lo, tau_hi] whose softmax(z_t / tau) has entropy
    H*(t) = max(h_min, h_max exp(-t / d_s)) nats (tau = 1 before c).

    Entropy grows with tau, so a vectorised safeguarded Newton search on log tau (at most
    ``ead_core.schedules.kernels.ENTROPY_SEARCH_STEPS`` iterations, every row at once) finds it. Ends: a token whose
    entropy at tau_lo is already >= H*(t) gets exactly tau_lo; one still below H*(t) at tau_hi gets exactly tau_hi.
    With the default tau_lo = 1 this raises the temperature where the model is more confident than the target and
    leaves uncertain tokens alone (tau = 1, logits untouched); tau_lo < 1 also cools uncertain tokens down to the
    target. The entropy is that of the logits the sampler divides (after penalties or vLLM's own temperature T on
    its V1 runner; on Model Runner V2 the processor divides by T first), so the behaviour distribution has entropy
    H*(t) whenever tau is not clipped.
    """

    h_max: float
    h_min: float
    d0: float
    c: int = 10
    d_growth: float = 5.0
    d_cap: float = 40000.0
    d_scale: float = 1.0
    tau_lo: float = 1.0
    tau_hi: float = 2.0

    kind: ClassVar[str] = "entropy_target"
    needs_logits: ClassVar[bool] = True
    step_dependent: ClassVar[bool] = True

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass normalisation
        set_("h_min", check_range("h_min", self.h_min, ge=0.0))
        set_("h_max", check_range("h_max", self.h_max, ge=self.h_min, range_text=f"[h_min={self.h_min}, inf)"))
        _validate_decay(self)
        set_("tau_lo", check_range("tau_lo", self.tau_lo, gt=0.0))
        set_("tau_hi", check_range("tau_hi", self.tau_hi, ge=self.tau_lo, range_text=f"[tau_lo={self.tau_lo}, inf)"))

    def decay(self, step: float) -> float:
        """d_s = d_scale * min(d0 + d_growth * step, d_cap): the decay length of the target entropy."""
        return decay_length(step, self.d0, self.d_growth, self.d_cap, self.d_scale)

    def kernel_args(self, step: float) -> tuple[float, ...]:
        return (float(K.ENTROPY), self.h_max, self.h_min, self.decay(step), float(self.c), self.tau_lo, self.tau_hi)

    def target_entropy(self, positions: ArrayLike, step: float) -> ArrayLike:
        """H*(t) = max(h_min, h_max exp(-t / d_s)) at response ``positions`` (same kind back)."""
        t = _as_array(positions)
        _check_positions(t)
        return K.entropy_profile(_float_like(t), self.h_max, self.h_min, self.decay(step))

    def temperatures_for_logits(
        self, logits: ArrayLike, positions: Any, step: float, *, validate: bool = True, backend: str = "auto"
    ) -> ArrayLike:
        """tau per row of ``logits`` (B, V) at response ``positions`` (one position for all rows, or one per row).

        Numpy or torch in, the same kind (and device) out, in the logits' float dtype. ``backend`` "auto" solves
        CPU tensors with numpy (see ``ead_core.schedules.kernels``), so every CPU sampler gets identical numbers.
        """
        if logits.ndim != 2:
            raise ValueError(f"logits must be (rows, vocab), got shape {tuple(logits.shape)}")
        t = _as_array(positions)
        if validate:
            _check_positions(t)
            if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] not in (1, logits.shape[0])):
                raise ValueError(f"positions must be a scalar or one per row ({logits.shape[0]}), got {tuple(t.shape)}")
        args = (self.h_max, self.h_min, self.decay(step), self.c, self.tau_lo, self.tau_hi)
        return K.entropy_target_temperature(logits, _float_like(t), *args, backend=backend)

    def temperatures(self, positions: Any, step: float, **_: Any) -> Any:
        raise ValueError(
            "entropy_target depends on the logits: use temperatures_for_logits(logits, positions, step) "
            "(the per-token temperatures of a rollout are recorded by the sampler)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @property
    def label(self) -> str:
        return (
            f"entropy-target(H {self.h_max:g}->{self.h_min:g}, d0={self.d0:g}, {_scale_text(self.d_scale)}, "
            f"tau [{self.tau_lo:g}, {self.tau_hi:g}])"
        )


SCHEDULE_CLASSES: dict[str, type] = {
    cls.kind: cls
    for cls in (
        EADSchedule,
        FixedSchedule,
        ReverseSchedule,
        LinearSchedule,
        CosineSchedule,
        FixedMatchedSchedule,
        EntropyTargetSchedule,
    )
}
SCHEDULE_KINDS: tuple[str, ...] = tuple(SCHEDULE_CLASSES)
_KINDS = SCHEDULE_CLASSES  # the name older code used


def schedule_from_dict(d: dict[str, Any]) -> Any:
    """Rebuild a schedule from ``to_dict`` output (from configs, MLflow params or request arguments)."""
    if not isinstance(d, dict) or "kind" not in d:
        raise ValueError(f"schedule dict needs a 'kind' key in {sorted(SCHEDULE_CLASSES)}, got {d!r}")
    params = dict(d)
    kind = params.pop("kind")
    if kind not in SCHEDULE_CLASSES:
        raise ValueError(f"schedule kind must be one of {sorted(SCHEDULE_CLASSES)}, got {kind!r}")
    cls = SCHEDULE_CLASSES[kind]
    allowed = {f.name for f in fields(cls)}
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"unknown {kind} schedule field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = sorted(f.name for f in fields(cls) if f.default is MISSING and f.name not in params)
    if missing:
        raise ValueError(f"{kind} schedule is missing field(s) {missing}")
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
    "SCHEDULE_CLASSES",
    "SCHEDULE_KINDS",
    "CosineSchedule",
    "EADSchedule",
    "EntropyTargetSchedule",
    "FixedMatchedSchedule",
    "FixedSchedule",
    "LinearSchedule",
    "ReverseSchedule",
    "Schedule",
    "anneal_temperature",
    "condition_label",
    "decay_length",
    "schedule_from_dict",
    "tau_text",
]
