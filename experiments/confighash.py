"""Stable short hashes of configurations (the key for caches, dedup, resume and MLflow tags)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
