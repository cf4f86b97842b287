"""Small argument checks shared by the core modules (one place for error wording)."""

from __future__ import annotations

import math
import numbers


def check_finite(name: str, value: float, *, allow_inf: bool = False) -> float:
    """Return ``value`` as float; raise ValueError naming ``name`` if it is NaN (or infinite)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name} must not be NaN")
    if math.isinf(v) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def check_range(
    name: str,
    value: float,
    *,
    gt: float | None = None,
    ge: float | None = None,
    allow_inf: bool = False,
    range_text: str | None = None,
) -> float:
    """Check ``value`` is a number above ``gt`` (strict) or ``ge``; the error states the allowed range."""
    v = check_finite(name, value, allow_inf=allow_inf)
    if gt is not None and not v > gt:
        raise ValueError(f"{name} must be in {range_text or f'({gt}, inf)'}, got {v}")
    if ge is not None and not v >= ge:
        raise ValueError(f"{name} must be in {range_text or f'[{ge}, inf)'}, got {v}")
    return v


def check_int(name: str, value: object, *, ge: int = 0) -> int:
    """Check ``value`` is an integer (bools and floats are refused) no smaller than ``ge``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {ge}, got {value!r}")
    if int(value) < ge:
        raise ValueError(f"{name} must be an integer >= {ge}, got {value}")
    return int(value)
