"""Study jobs in the sweep layer: ``python sweep.py study=entropy`` (or ``-m study=entropy,branching,schedule``).

The ``study`` group (``sweeps/study/*.yaml``) holds each study's own options under ``study.*``; the policy, task,
seed, sampler and response length come from the same top-level keys as training (``model``, ``task``, ``seed``,
``sampling``, ``max_new_tokens``; ``init_from=<dir>`` studies a trained checkpoint, e.g. a run directory's
``policy/``, instead of the warm start). The schedule study needs no policy and reads only ``study.*``.

The schemas are derived from the study dataclasses (one place for fields and defaults).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from experiments.local.config import SamplingConfig
from experiments.studies import STUDIES
from experiments.studies.common import PolicySource
from experiments.sweep.knobs import task_knobs
from experiments.sweep.naming import plain, sampling_label
from experiments.tracking.hashing import config_hash
from experiments.tracking.loggers import JsonlLogger, MultiLogger, RunLogger

# Fields of a study that the sweep's top-level keys provide (not repeated under study.*).
_FROM_TOP = {f.name for f in dataclasses.fields(PolicySource)} | {"sampling", "max_new_tokens"}
_NEEDS_POLICY = ("entropy", "branching")


def _schema(name: str, cls: type) -> type:
    """``study.*`` schema of a study: ``name`` plus the study's own fields (defaults and types from ``cls``)."""
    hints = typing.get_type_hints(cls)
    own = [f for f in dataclasses.fields(cls) if f.name not in _FROM_TOP or name not in _NEEDS_POLICY]
    specs: list[tuple[str, Any, Any]] = [("name", str, dataclasses.field(default=name))]
    for f in own:
        default = (
            dataclasses.field(default_factory=f.default_factory)
            if f.default_factory is not dataclasses.MISSING
            else dataclasses.field(default=f.default)
        )
        specs.append((f.name, Any if hints[f.name] in (list, dict) else hints[f.name], default))
    return dataclasses.make_dataclass(f"{cls.__name__}Sweep", specs)


SCHEMAS = {name: _schema(name, cls) for name, cls in STUDIES.items()}


def study_config(cfg: DictConfig) -> tuple[str, Any]:
    """(study name, validated study config) of a composed sweep job with ``study`` set."""
    name = str(cfg.study.name)
    if name not in STUDIES:
        raise ValueError(f"study.name must be one of {sorted(STUDIES)}, got {name!r}")
    if cfg.backend.name != "local":
        raise ValueError(f"study={name} runs on backend=local only, got backend={cfg.backend.name}")
    cls = STUDIES[name]
    own = {k: plain(v) for k, v in cfg.study.items() if k != "name"}
    if name in _NEEDS_POLICY:
        own.update(
            policy=cfg.init_from,
            task=str(cfg.task),
            task_knobs=task_knobs(cfg.task_knobs),
            size=str(cfg.size),
            sft_steps=int(cfg.sft_steps),
            seed=int(cfg.seed),
            max_new_tokens=int(cfg.max_new_tokens),
            sampling=SamplingConfig(**plain(cfg.sampling)),
        )
    try:
        return name, cls(**own).validate()
    except (TypeError, ValueError) as e:
        raise ValueError(f"study={name}: {e}") from None


def study_hash(name: str, study: Any) -> str:
    return config_hash({"study": name, **asdict(study)})


def study_run_name(name: str, study: Any, h: str) -> str:
    if name not in _NEEDS_POLICY:
        return f"{name}-{h[:6]}"
    return f"{name}-{sampling_label(study.sampling)}-{study.size}-s{study.seed}-{h[:6]}"


def run_study_job(name: str, study: Any, logger: RunLogger, run_dir: Path) -> dict[str, Any]:
    """Run study ``name``, logging to MLflow (``logger``) and to the run directory's JSONL; the row count."""
    from experiments.studies import run_study

    rows = run_study(name, study, MultiLogger(JsonlLogger(run_dir), logger))
    return {"rows": len(rows)}
