"""Stable short hashes of configurations (the key for caches, dedup, resume and MLflow tags)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any


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


def flat_params(obj: Any, leaf: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """A config (dataclass or nested dict) in canonical form, flattened to dotted keys: the MLflow params of every job
    (``sampling.kind``, ``algorithm.name``, ...). ``leaf`` converts each value (e.g. lists to JSON text)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix[:-1]] = leaf(node) if leaf else node

    walk("", canonical(obj))
    return out
