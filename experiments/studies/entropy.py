"""Entropy by response position: how uncertain is the policy early vs late in its answers?

Samples responses to a task's eval prompts with a schedule (default: temperature 1.0) and records the
per-token entropy of the policy at temperature 1. Logs a per-position table (mean, count) and the
paper's cumulative "fixed start" curve: the token-weighted mean entropy over positions [0, p + window)
at p = 0, stride, 2 stride, ... (research/paper.md 3.8).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ead_core.metrics import cumulative_entropy, entropy_by_position
from experiments.local.config import SamplingConfig
from experiments.local.evaluation import sample_groups
from experiments.local.rollout import sequence_logprobs
from experiments.studies.common import PolicySource, _h
from experiments.tracking.loggers import RunLogger


def _t1() -> SamplingConfig:
    return SamplingConfig(kind="fixed", tau=1.0)


@dataclass
class EntropyStudyConfig(PolicySource):
    prompts: int = field(default=64, metadata=_h("eval prompts"))
    samples_per_prompt: int = field(default=16, metadata=_h("responses per prompt"))
    max_new_tokens: int = field(default=16, metadata=_h("maximum response length"))
    step: int = field(default=0, metadata=_h("training step fed to the schedule (d_s)"))
    window: int = field(default=5, metadata=_h("fixed-start curve: mean over [0, p + window)"))
    stride: int = field(default=1, metadata=_h("fixed-start curve: every stride positions"))
    sampling: SamplingConfig = field(default_factory=_t1)

    def validate(self) -> EntropyStudyConfig:
        self.check()
        for name in ("prompts", "samples_per_prompt", "max_new_tokens", "window", "stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.step < 0:
            raise ValueError(f"step must be an integer >= 0, got {self.step!r}")
        self.sampling.schedule()
        return self


@torch.no_grad()
def run(cfg: EntropyStudyConfig, logger: RunLogger) -> list[dict]:
    """Sample, measure entropy by position, log the table and summary metrics; return the table."""
    cfg.validate()
    model, tok, task = cfg.load()
    problems = task.problems("eval", cfg.prompts, seed=cfg.seed)
    g = torch.Generator(device=model.device).manual_seed(cfg.seed)
    chunks = sample_groups(
        model, tok, problems, cfg.samples_per_prompt, cfg.sampling.schedule(), cfg.step, cfg.max_new_tokens, g
    )
    ents, masks = [], []
    for r in chunks:
        _, ent = sequence_logprobs(model, r, with_entropy=True)
        ents.append(torch.nn.functional.pad(ent, (0, cfg.max_new_tokens - ent.shape[1])))
        masks.append(torch.nn.functional.pad(r.response_mask, (0, cfg.max_new_tokens - ent.shape[1])))
    mean, count = entropy_by_position(torch.cat(ents), torch.cat(masks))
    positions = np.arange(0, len(count), cfg.stride)
    cum = cumulative_entropy(mean, count, positions, window=cfg.window)
    cum_at = dict(zip(positions.tolist(), cum.tolist()))
    table = [
        {"position": int(p), "entropy_mean": float(mean[p]), "count": int(count[p]),
         "fixed_start_mean": cum_at.get(int(p), float("nan"))}
        for p in range(len(count))
    ]  # fmt: skip
    logger.log_table("entropy_by_position", table)
    valid = count > 0
    early = float(np.nanmean(mean[:3])) if valid[:3].any() else float("nan")
    late_idx = np.flatnonzero(valid)[-3:]
    logger.log_metrics(
        {
            "entropy/mean": float((np.nan_to_num(mean) * count).sum() / max(1, count.sum())),
            "entropy/first3_mean": early,
            "entropy/last3_mean": float(np.mean(mean[late_idx])) if len(late_idx) else float("nan"),
            "entropy/tokens": float(count.sum()),
        },
        step=cfg.step,
    )
    return table
