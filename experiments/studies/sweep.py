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
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.confighash import canonical, config_hash
from experiments.rlvr.config import SamplingConfig
from experiments.studies import STUDIES
from experiments.studies.common import PolicySource

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


def _plain(v: Any) -> Any:
    return OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v


def study_config(cfg: DictConfig) -> tuple[str, Any]:
    """(study name, validated study config) of a composed sweep job with ``study`` set."""
    name = str(cfg.study.name)
    if name not in STUDIES:
        raise ValueError(f"study.name must be one of {sorted(STUDIES)}, got {name!r}")
    if cfg.backend.name != "local":
        raise ValueError(f"study={name} runs on backend=local only, got backend={cfg.backend.name}")
    cls = STUDIES[name]
    own = {k: _plain(v) for k, v in cfg.study.items() if k != "name"}
    if name in _NEEDS_POLICY:
        own.update(
            policy=cfg.init_from,
            task=str(cfg.task),
            task_knobs=dict(_plain(cfg.task_knobs)),
            size=str(cfg.size),
            sft_steps=int(cfg.sft_steps),
            seed=int(cfg.seed),
            max_new_tokens=int(cfg.max_new_tokens),
            sampling=SamplingConfig(**_plain(cfg.sampling)),
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
    s = study.sampling
    label = "ead" if s.kind == "ead" else f"fixed{s.tau}"
    return f"{name}-{label}-{study.size}-s{study.seed}-{h[:6]}"


def flat_params(study: Any) -> dict[str, Any]:
    """The study config as dotted MLflow params (same names as a training run's: sampling.kind, size, seed, ...)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict) and obj:
            for k, v in obj.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix[:-1]] = obj

    walk("", canonical(asdict(study)))  # 8.0 -> 8, as the trainer logs its params: conditions compare equal
    return out
