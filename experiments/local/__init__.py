"""The local CPU backend: synthetic tasks, the tiny Llama policy, warm starts, the sampler, evaluation and RLVR
training. ``run(RLVRConfig(...))`` in Python, or ``python sweep.py`` from the command line.

Exports are lazy, so ``experiments.local.tasks`` and ``experiments.local.config`` import without the trainer.
"""

from __future__ import annotations

import importlib
from typing import Any

from experiments.local import countdown_trace as _countdown_trace  # noqa: F401 - registers task "countdown_trace"

_EXPORTS = {
    "ALGORITHMS": "config",
    "AlgorithmConfig": "config",
    "RLVRConfig": "config",
    "SamplingConfig": "config",
    "TISConfig": "config",
    "from_dict": "config",
    "Trainer": "train",
    "run": "train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
