"""The verl backend: one RLVR run as verl 0.9.1's own trainer, with EAD through verl's extension points.

    from experiments.verl import VerlRunConfig, preset, to_verl_overrides, build_command, dry_run, run

    cfg = preset("qwen2.5-math-1.5b", **{"algorithm.name": "grpo", "tracking.uri": uri, "tracking.run_id": rid})
    print(dry_run(cfg))          # the exact `python -m verl.trainer.main_ppo ...` command; starts nothing
    result = run(cfg)            # runs it (on the Ray head node of a Slurm job: see slurm/verl_multinode.sbatch)

Exports are lazy: verl's Ray workers import ``experiments.verl.trainer`` / ``.agent_loop`` /
``.rewards`` by name, and those must not pull in the launcher's dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VerlRunConfig": "config",
    "VerlAlgorithmConfig": "config",
    "DataConfig": "config",
    "ResourceConfig": "config",
    "TrackingConfig": "config",
    "PRESETS": "config",
    "preset": "config",
    "from_dict": "config",
    "apply_overrides": "config",
    "to_verl_overrides": "overrides",
    "build_command": "overrides",
    "ray_env_vars": "overrides",
    "describe": "overrides",
    "compose_and_validate": "compose",
    "dry_run": "launch",
    "run": "launch",
    "RunResult": "launch",
    "sbatch_command": "launch",
    "prepare_numina": "data",
    "prepare_math500": "data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
