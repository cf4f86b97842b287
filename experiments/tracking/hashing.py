"""One canonical form of configurations: stable short hashes (the key for caches, dedup, resume and MLflow tags), the
flat params every job logs, and the text of a param value that analysis compares runs by."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

# Config fields that change how a run executes, never what it computes: left out of config hashes, so runs that differ
# only in them are one setting and seed (one run to resume, one replicate in the statistics).
EXECUTION_FIELDS = ("threads", "ckpt_interval", "device")


def canonical(obj: Any) -> Any:
    """JSON-ready canonical form: dataclasses and mappings become sorted dicts, tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)  # 25 and 25.0 hash alike (YAML and CLI may differ)
    return obj


def config_hash(obj: Any, length: int = 12) -> str:
    """sha256 of the canonical JSON of ``obj``, first ``length`` hex digits."""
    text = json.dumps(canonical(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def flat_params(obj: Any) -> dict[str, Any]:
    """A config (dataclass, object with ``to_dict()``, or nested dict) in canonical form, flattened to dotted keys:
    the MLflow params of every job (``sampling.kind``, ``algorithm.name``, ...). Lists become JSON text."""
    if hasattr(obj, "to_dict") and not isinstance(obj, dict):
        obj = obj.to_dict()
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix[:-1]] = json.dumps(node) if isinstance(node, list) else node

    walk("", canonical(obj))
    return out


def typed_param(text: Any) -> Any:
    """A param value read back from MLflow (always text) as the number, boolean or None it spells; else the text."""
    if not isinstance(text, str):
        return text
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in lowered else value


def param_text(value: Any) -> str:
    """One text per param value, what analysis compares and groups runs by: 8, 8.0 and '8.0' all read '8' (the same
    rule as ``canonical``); None and NaN read 'None'; booleans 'True' / 'False'."""
    value = typed_param(value)
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        value = float(value)
        return "None" if math.isnan(value) else f"{value:g}"
    return str(value)
