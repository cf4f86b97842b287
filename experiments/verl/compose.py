"""Compose verl's own ``ppo_trainer`` config with our overrides and run verl's own validation on it.

This is what ``python -m verl.trainer.main_ppo`` does before it starts Ray (``@hydra.main(config_name=
"ppo_trainer")`` then ``validate_config``), done with Hydra's compose API so it runs anywhere verl is
installed, without GPUs, vLLM or Ray. On top of ``validate_config`` the typed sections verl builds in its
workers are converted to verl's dataclasses (their ``__post_init__`` checks run), so a key or value
verl would reject at start-up is rejected here.
"""

from __future__ import annotations

import copy
import os
from typing import TYPE_CHECKING

from experiments.verl.config import VerlRunConfig
from experiments.verl.overrides import to_verl_overrides

if TYPE_CHECKING:
    from omegaconf import DictConfig


def verl_config_dir() -> str:
    """Directory of verl's Hydra configs (``verl/trainer/config``) in the installed package."""
    import verl

    return os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


def compose_verl_config(overrides: list[str]) -> DictConfig:
    """verl's ``ppo_trainer`` config with ``overrides`` applied, exactly as its entry point composes it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


def validate_verl_config(config: DictConfig) -> None:
    """verl's start-up validation plus its typed-config conversions; raises what verl would raise."""
    from omegaconf import OmegaConf
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config
    from verl.workers.config import RolloutConfig

    validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    # verl's TaskRunner resolves the whole config before building anything; then its workers and trainer
    # turn these sections into dataclasses, each of which checks itself on construction.
    resolved = copy.deepcopy(config)
    OmegaConf.resolve(resolved)
    for section, cls in (
        (resolved.actor_rollout_ref.rollout, RolloutConfig),
        (resolved.algorithm, AlgoConfig),
        (resolved.actor_rollout_ref.actor, None),
    ):
        omega_conf_to_dataclass(section, cls)


def compose_and_validate(cfg: VerlRunConfig) -> DictConfig:
    """Compose verl's config for ``cfg`` and validate it with verl's own checks; return the composed config."""
    config = compose_verl_config(to_verl_overrides(cfg))
    validate_verl_config(config)
    return config
