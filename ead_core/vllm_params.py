"""Per-request EAD arguments for vLLM: a schedule and a training step as flat ``SamplingParams.extra_args``.

vLLM hands ``extra_args`` to logits processors unchanged, and the OpenAI-compatible server fills it from
the request's ``vllm_xargs``, which only carries flat ``str | int | float | list`` values. The schedule's
``to_dict()`` is therefore flattened to ``ead_<field>`` keys:

    ead_kind     a schedule kind of ``ead_core.schedule.SCHEDULE_KINDS`` (required as soon as any ``ead_`` key is
                 present): ead, fixed, reverse, linear, cosine, fixed_matched, entropy_target
    ead_<field>  the schedule's fields, e.g. tau_max, tau_min, d0, c, d_growth, d_cap, d_scale (ead, reverse,
                 linear, cosine), tau (fixed), tau and target_entropy (fixed_matched), h_max, h_min, d0, ...,
                 tau_lo, tau_hi (entropy_target)
    ead_step     the global training step s of the policy being sampled (required for the kinds whose length
                 scale grows with the step: all but fixed and fixed_matched; d_s = decay(s))
    ead_origin   optional: the original prompt length, for a request resubmitted as prompt + partial output,
                 so that the response position t keeps counting from the original prompt

Requests without any ``ead_`` key are left alone. Parsing goes through ``schedule_from_dict``, so the
schedule's own validation applies; errors are ``ValueError`` naming the offending ``extra_args`` key.

This module does not import vLLM at import time (``sampling_params`` imports it when called), so
training-side code (for instance a verl agent loop) can build ``extra_args`` without vLLM installed.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import MISSING, dataclass, fields
from typing import TYPE_CHECKING, Any

from ead_core._checks import check_int, check_range
from ead_core.schedule import SCHEDULE_CLASSES, Schedule, schedule_from_dict

if TYPE_CHECKING:
    from vllm import SamplingParams

PREFIX = "ead_"
KIND_KEY = "ead_kind"
STEP_KEY = "ead_step"
ORIGIN_KEY = "ead_origin"
_CLASSES: dict[str, type] = SCHEDULE_CLASSES
_FIELDS: dict[str, tuple[str, ...]] = {k: tuple(f.name for f in fields(c)) for k, c in _CLASSES.items()}
_REQUIRED: dict[str, tuple[str, ...]] = {
    k: tuple(f.name for f in fields(c) if f.default is MISSING and f.default_factory is MISSING)
    for k, c in _CLASSES.items()
}


@dataclass(frozen=True)
class EADRequest:
    """A parsed per-request EAD setting: the schedule, the step, and the optional original prompt length."""

    schedule: Schedule
    step: float = 0.0
    origin: int | None = None

    def kernel_args(self) -> tuple[float, ...]:
        """``(code, a, b, d, c, e, f)`` for the per-row kernels of ``ead_core.schedules.kernels`` at this step.

        A fixed temperature tau is the degenerate EAD curve with tau_max 0, floor tau and c 0: the decaying branch
        ``1 + 0 - exp(t / d) <= 0`` lies below the floor, so the kernel returns exactly tau at every position.
        Fixed and EAD therefore run through the same kernel, as the baseline must.
        """
        return self.schedule.kernel_args(self.step)


def allowed_keys(kind: str | None = None) -> list[str]:
    """The ``extra_args`` keys understood for ``kind`` (every kind when None)."""
    kinds = [kind] if kind else list(_CLASSES)
    names = {PREFIX + f for k in kinds for f in _FIELDS[k]}
    return sorted(names | {KIND_KEY, STEP_KEY, ORIGIN_KEY})


def _number(key: str, value: Any) -> Any:
    """Numbers pass through; numeric strings (``vllm_xargs`` may carry strings) become int or float."""
    if isinstance(value, str):
        text = value.strip()
        for conv in (int, float):
            try:
                return conv(text)
            except ValueError:
                pass
        raise ValueError(f"extra_args[{key!r}] must be a number, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"extra_args[{key!r}] must be a number, got {value!r}")
    return value


def schedule_to_extra_args(
    schedule: Schedule, step: float | None = None, *, origin: int | None = None
) -> dict[str, Any]:
    """Flat ``extra_args`` for ``schedule`` at training step ``step`` (and an optional original prompt length).

    ``step`` is required for a schedule whose length scale grows with the step (``step_dependent``: a forgotten
    step would silently sample at step 0) and defaults to 0 for fixed temperatures, where it has no effect. An
    infinite ``d_cap`` is written as the string ``"inf"`` so the dict stays valid JSON for ``vllm_xargs``.
    """
    if type(schedule) not in _CLASSES.values():
        raise ValueError(f"schedule must be one of the kinds {sorted(_CLASSES)}, got {type(schedule).__name__}")
    if step is None:
        if schedule.step_dependent:
            name = type(schedule).__name__
            raise ValueError(f"step is required for a {name}: d_s = schedule.decay(step) depends on it")
        step = 0
    check_range("step", step, ge=0.0)
    out: dict[str, Any] = {}
    for name, value in schedule.to_dict().items():
        key = KIND_KEY if name == "kind" else PREFIX + name
        out[key] = "inf" if isinstance(value, float) and math.isinf(value) else value
    out[STEP_KEY] = step
    if origin is not None:
        out[ORIGIN_KEY] = check_int(ORIGIN_KEY, origin, ge=0)
    return out


def parse_extra_args(extra_args: dict[str, Any] | None) -> EADRequest | None:
    """The EAD setting in ``extra_args``, or None when it holds no ``ead_`` key (the request is left alone).

    Raises ValueError naming the offending key (unknown key, missing field, value out of range).
    """
    if not extra_args:
        return None
    keys = [k for k in extra_args if isinstance(k, str) and k.startswith(PREFIX)]
    if not keys:
        return None
    if KIND_KEY not in extra_args:
        raise ValueError(
            f"extra_args has EAD keys {sorted(keys)} but no {KIND_KEY!r}; set it to one of {sorted(_CLASSES)}"
        )
    kind = extra_args[KIND_KEY]
    if kind not in _CLASSES:
        raise ValueError(f"extra_args[{KIND_KEY!r}] must be one of {sorted(_CLASSES)}, got {kind!r}")
    unknown = sorted(set(keys) - set(allowed_keys(kind)))
    if unknown:
        raise ValueError(f"unknown EAD key(s) {unknown} for {KIND_KEY}={kind!r}; allowed: {allowed_keys(kind)}")
    missing = [PREFIX + f for f in _REQUIRED[kind] if PREFIX + f not in extra_args]
    if _CLASSES[kind].step_dependent and STEP_KEY not in extra_args:
        missing.append(STEP_KEY)  # a forgotten step would silently freeze the schedule at d0
    if missing:
        raise ValueError(f"extra_args is missing {missing} (required for {KIND_KEY}={kind!r})")

    params: dict[str, Any] = {"kind": kind}
    for name in _FIELDS[kind]:
        key = PREFIX + name
        if key in extra_args:
            params[name] = _number(key, extra_args[key])
    try:
        schedule = schedule_from_dict(params)
    except ValueError as e:
        field = str(e).split(" ", 1)[0]
        key = PREFIX + field if field in _FIELDS[kind] else "ead_*"
        raise ValueError(f"invalid EAD schedule in extra_args[{key!r}]: {e}") from None

    step = check_range(f"extra_args[{STEP_KEY!r}]", _number(STEP_KEY, extra_args.get(STEP_KEY, 0)), ge=0.0)
    origin = None
    if extra_args.get(ORIGIN_KEY) is not None:
        origin = check_int(f"extra_args[{ORIGIN_KEY!r}]", _number(ORIGIN_KEY, extra_args[ORIGIN_KEY]), ge=0)
    return EADRequest(schedule=schedule, step=step, origin=origin)


def check_sampling_options(*, min_p: float) -> None:
    """Refuse sampling options whose meaning with a per-token temperature differs between vLLM's runners.

    min_p: the V1 runner applies it before custom processors, Model Runner V2 after them, so the same
    request would sample from different distributions on CPU and on GPU.
    """
    if min_p:
        raise ValueError(
            f"min_p must be 0 for EAD requests, got {min_p}: vLLM applies min_p before the per-token "
            "temperature on the V1 runner and after it on Model Runner V2"
        )


def sampling_params(
    schedule: Schedule,
    step: float | None = None,
    *,
    origin: int | None = None,
    extra_args: dict[str, Any] | None = None,
    **kwargs: Any,
) -> SamplingParams:
    """``vllm.SamplingParams`` that sample with ``schedule`` at training step ``step`` (required for EAD).

    Defaults suited to RLVR rollouts: ``temperature=1.0`` (vLLM's temperature multiplies the schedule's,
    so the behaviour policy is softmax(z / (temperature * tau_t))), ``top_p=1.0``, ``top_k=0`` (no
    truncation, which would bias TIS ratios; a warning says so if you override them) and ``logprobs=0``
    (the sampled token's log-prob: with the engine's ``logprobs_mode="processed_logprobs"`` that is the
    behaviour log-prob TIS needs). Other keyword arguments go to ``SamplingParams``; ``extra_args`` are
    merged with the EAD keys (an ``ead_`` key in both is an error).
    """
    from vllm import SamplingParams

    ead = schedule_to_extra_args(schedule, step, origin=origin)
    merged = dict(extra_args or {})
    clash = sorted(set(merged) & set(ead)) or sorted(k for k in merged if k.startswith(PREFIX))
    if clash:
        raise ValueError(f"extra_args already holds EAD key(s) {clash}; pass the schedule instead")
    merged.update(ead)
    kwargs.setdefault("temperature", 1.0)
    kwargs.setdefault("top_p", 1.0)
    kwargs.setdefault("top_k", 0)
    kwargs.setdefault("logprobs", 0)
    check_sampling_options(min_p=kwargs.get("min_p", 0.0))
    if kwargs["top_p"] < 1.0 or kwargs["top_k"] > 0:
        warnings.warn(
            "top_p < 1 or top_k > 0 truncate the behaviour policy and bias truncated importance sampling "
            "ratios; keep top_p=1 and top_k disabled (0 or -1) in TIS runs",
            stacklevel=2,
        )
    return SamplingParams(extra_args=merged, **kwargs)


__all__ = [
    "EADRequest",
    "ORIGIN_KEY",
    "STEP_KEY",
    "KIND_KEY",
    "allowed_keys",
    "check_sampling_options",
    "parse_extra_args",
    "sampling_params",
    "schedule_to_extra_args",
]
