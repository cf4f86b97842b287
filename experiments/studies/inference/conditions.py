"""Sampling conditions of the inference-scaling study: EAD schedules at a global step and fixed temperatures, from
compact strings (``fixed:0.6``, ``ead:paper@200``) or dicts, labelled in ``ead_core.condition_label``'s spelling."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from ead_core.schedule import EADSchedule, FixedSchedule, Schedule, condition_label
from experiments.local.config import SamplingConfig

_SAFE_LABEL = re.compile(r"^[A-Za-z0-9_.\-: ]+$")  # MLflow metric-name characters, without "/"
_EAD_FIELDS = tuple(f.name for f in dataclasses.fields(EADSchedule))
_EAD_PRESETS = ("local", "paper", "reference")


@dataclass(frozen=True)
class Condition:
    """One sampling condition: a schedule (EAD or fixed) evaluated at a global training step."""

    label: str
    schedule: Schedule
    step: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {**self.schedule.to_dict(), "step": self.step}


def _number(text: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(v) and not (name.endswith("d_cap") and v == math.inf):
        raise ValueError(f"{name} must be finite, got {text!r}")
    return v


def _ead_base(preset: str) -> dict[str, Any]:
    """Fields of a named EAD parameter set: 'local' = SamplingConfig()'s schedule, else EADSchedule.preset."""
    base = SamplingConfig().schedule() if preset == "local" else EADSchedule.preset(preset)
    return {k: v for k, v in base.to_dict().items() if k != "kind"}


def parse_condition(spec: str | dict, where: str = "condition") -> Condition:
    """A condition from a compact string or a dict; errors name ``where`` (e.g. ``conditions[2]``).

    Strings: ``[LABEL=]fixed:TAU`` or ``[LABEL=]ead:PRESET[,FIELD=VALUE...][@STEP]`` with PRESET ``local``
    (``SamplingConfig()``: the local runs' rescaled schedule), ``paper`` or ``reference``
    (``EADSchedule.preset``) and FIELD any ``EADSchedule`` field. Dicts: ``SamplingConfig`` fields (how an
    RLVR run names its schedule) plus optional ``label`` and ``step``.
    """
    if isinstance(spec, dict):
        d = dict(spec)
        label, step = d.pop("label", None), d.pop("step", 0)
        known = {f.name for f in dataclasses.fields(SamplingConfig)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: label, step, {sorted(known)}")
        try:
            schedule = SamplingConfig(**d).schedule()
            step = float(step)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None
        if label is None:
            if isinstance(schedule, FixedSchedule):
                label = condition_label("fixed", schedule.tau)
            else:
                detail = [d.get("preset", "paper")] + ([f"step:{step:g}"] if step else [])
                label = condition_label("ead", detail=" ".join(detail))
        return _finish(where, str(label), schedule, step)
    if not isinstance(spec, str):
        raise ValueError(f"{where} must be a string like 'fixed:0.6' / 'ead:local@0' or a dict, got {spec!r}")
    text = spec.strip()
    head, sep, body = text.partition(":")
    label = None
    if "=" in head:
        label, head = (s.strip() for s in head.split("=", 1))
    kind = head.strip()
    if not sep or kind not in ("ead", "fixed") or not body:
        raise ValueError(f"{where} must look like 'fixed:0.6' or 'ead:local[,field=value...][@step]', got {spec!r}")
    body, at, step_text = body.partition("@")
    if kind == "fixed":
        if at:
            raise ValueError(f"{where}: a fixed temperature takes no @step, got {spec!r}")
        try:
            schedule: Schedule = FixedSchedule(_number(body.strip(), f"{where} temperature"))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        return _finish(where, label or condition_label("fixed", schedule.tau), schedule, 0.0)
    preset, *pairs = (p.strip() for p in body.split(","))
    if preset not in _EAD_PRESETS:
        raise ValueError(f"{where}: EAD preset must be one of {list(_EAD_PRESETS)}, got {preset!r} in {spec!r}")
    params, detail = _ead_base(preset), [] if preset == "local" else [preset]
    for pair in pairs:
        name, eq, value = (s.strip() for s in pair.partition("="))
        if not eq or name not in _EAD_FIELDS:
            raise ValueError(f"{where}: expected FIELD=VALUE with FIELD in {list(_EAD_FIELDS)}, got {pair!r}")
        v = _number(value, f"{where} {name}")
        params[name] = int(v) if name == "c" and float(v).is_integer() else v
        detail.append(f"{name}:{value}")
    step = 0.0
    if at:
        step = _number(step_text.strip(), f"{where} step")
        detail.append(f"step:{step_text.strip()}")
    try:
        schedule = EADSchedule(**params)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return _finish(where, label or condition_label("ead", detail=" ".join(detail)), schedule, step)


def _finish(where: str, label: str, schedule: Schedule, step: float) -> Condition:
    if not _SAFE_LABEL.match(label):
        raise ValueError(
            f"{where}: label {label!r} may only use letters, digits, '_', '-', '.', ':' and spaces (MLflow names)"
        )
    if not step >= 0:
        raise ValueError(f"{where}: step must be in [0, inf), got {step}")
    schedule.decay(step)  # validates the step for the schedule
    return Condition(label=label, schedule=schedule, step=float(step))
