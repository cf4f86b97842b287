"""The metrics hook: verl's own sync trainer, plus the EAD metrics and the shared metric names.

Why a trainer subclass: the numbers EAD needs per step (pi_old and behaviour log-probs per token, the
step, the response mask) exist together only inside verl's trainer, between its old-log-prob pass and
its advantage computation; verl 0.9.1's rollout dumps (``trainer.rollout_data_dir``) hold decoded text
and scores but no log-probs, its reward functions see one sample, and its agent-loop metrics are a fixed
schema. verl's supported way to change the trainer is ``register_trainer`` + ``trainer.v1.trainer_mode``.

``EADSyncTrainer`` (mode ``ead_sync``) is verl's ``PPOTrainerSync`` unchanged, except that three methods
call verl's implementation first and then add metrics to the same dict verl logs (so they reach verl's
MLflow logger in the same record, at the same step):

* ``_compute_advantage``: ``metrics.ead_step_metrics`` from the batch's ``old_log_probs``,
  ``rollout_log_probs`` and ``response_mask`` (mean tau, TIS statistics, both by position bucket);
* ``_compute_metrics``: ``metrics.shared_train_metrics`` aliases and ``perf/tokens_per_s``;
* ``_val_metrics_update``: ``metrics.eval_metrics`` (unbiased Pass@k / Worst@k and the ``boot_`` variants)
  for every validation sampler.

It sets ``trainer.v1.trainer_mode`` back to ``sync`` before verl's constructor runs, because verl's trainer
checks the mode by name (replay buffer, refills); every code path is then the sync trainer's.

Limits: it overrides three private methods of verl 0.9.1's ``PPOTrainer`` (a test pins their signatures in
verl's source); only the sync trainer is covered (not ``colocate_async`` / ``separate_async``); the module
imports verl's V1 trainer, which needs ``transfer_queue`` (verl's ``verl-core`` extra), so it is imported
only in the Ray workers of a real run (``VERL_USE_EXTERNAL_MODULES``), never on the CPU test machine.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import transfer_queue as tq
from omegaconf import DictConfig, OmegaConf
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from ead_core.schedule import schedule_from_dict
from experiments.verl.metrics import (
    ead_step_metrics,
    eval_metrics,
    shared_train_metrics,
    throughput_metrics,
)

logger = logging.getLogger(__name__)

TRAINER_MODE = "ead_sync"


def _non_padding(tags: list[dict[str, Any]]) -> np.ndarray:
    return np.array([not tag.get("is_padding", False) for tag in tags], dtype=bool)


@register_trainer(TRAINER_MODE)
class EADSyncTrainer(PPOTrainerSync):
    """verl's sync PPO trainer with EAD metrics and shared metric names added to its logged metrics."""

    def __init__(self, config: DictConfig) -> None:
        config.trainer.v1.trainer_mode = "sync"
        super().__init__(config)
        ead = OmegaConf.to_container(config.ead, resolve=True)
        self.ead_schedule = schedule_from_dict(ead["schedule"])
        self.ead_cap = float(ead["tis_cap"])
        self.ead_level = str(ead["tis_level"])
        self.ead_edges = [int(e) for e in ead["position_edges"]]
        self.ead_eval_k = int(ead["eval_k"])

    def _compute_advantage(self, batch: Any, metrics: dict) -> Any:
        fields = ["response_mask", "old_log_probs"]
        if self.config.actor_rollout_ref.rollout.calculate_log_probs:
            fields.append("rollout_log_probs")
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        data = data.to_padded_tensor()
        keep = _non_padding(batch.tags)
        if keep.any() and not keep.all():
            data = data[torch.as_tensor(keep)]
        metrics.update(
            ead_step_metrics(
                data["old_log_probs"] if "rollout_log_probs" in data else None,
                data["rollout_log_probs"] if "rollout_log_probs" in data else None,
                data["response_mask"],
                self.ead_schedule,
                self.global_steps,
                self.ead_cap,
                self.ead_level,
                self.ead_edges,
            )
        )
        return super()._compute_advantage(batch, metrics)

    def _compute_metrics(self, batch: Any, metrics: dict, timing_raw: dict, global_steps: int, epoch: int) -> None:
        super()._compute_metrics(batch, metrics, timing_raw, global_steps, epoch)
        metrics.update(shared_train_metrics(metrics))
        keep = _non_padding(batch.tags)
        tokens = sum(int(tag.get("response_len", 0)) for tag, k in zip(batch.tags, keep) if k)
        metrics.update(throughput_metrics(tokens, timing_raw.get("gen")))

    def _val_metrics_update(
        self,
        data_sources: list,
        sample_uids: list,
        reward_extra_infos_dict: dict,
        sample_turns: list,
        expected_acc_counts: dict | None = None,
    ) -> dict[str, float]:
        out = super()._val_metrics_update(
            data_sources, sample_uids, reward_extra_infos_dict, sample_turns, expected_acc_counts=expected_acc_counts
        )
        acc = reward_extra_infos_dict.get("acc") or reward_extra_infos_dict.get("reward")
        if acc is None:
            logger.warning("validation results have no 'acc' or 'reward': no eval/* metrics")
            return out
        out.update(
            eval_metrics(
                data_sources,
                sample_uids,
                acc,
                k=self.ead_eval_k,
                preds=reward_extra_infos_dict.get("pred"),
                expected_counts=expected_acc_counts,
            )
        )
        return out
