"""Names of sweep jobs: plain values from composed configs, the sampler label and the run name."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from ead_core.schedule import condition_label


def plain(value: Any) -> Any:
    """A composed config value as plain Python data (nodes resolved to dicts and lists)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def sampling_label(s: Any) -> str:
    """The sampler's condition label ('EAD', 'fixed 1.0'): ``ead_core.condition_label`` of a sampling config."""
    return condition_label(s.kind, getattr(s, "tau", None))


def run_name(rlvr: Any, config_hash: str) -> str:
    """Short human-readable run name; the identity is the config_hash tag."""
    size = getattr(rlvr, "size", None) or rlvr.preset
    return f"{rlvr.algorithm.name}-{sampling_label(rlvr.sampling)}-{size}-s{rlvr.seed}-{config_hash[:6]}"
