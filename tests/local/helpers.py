"""Small local-backend configs and a recording logger shared by the tests of tests/local."""

from __future__ import annotations

import math
from typing import Any

from experiments.local import RLVRConfig, from_dict
from tests.conftest import EASY_COUNTDOWN


def small_config(policy_dir: str, **overrides: Any) -> RLVRConfig:
    """A few-second run from the session's tiny policy: 4 prompts x 4 rollouts, 12 tokens, evals of 4 x 4."""
    base = dict(
        init_from=policy_dir, steps=3, prompts_per_step=4, rollouts_per_prompt=4, mini_batches=2,
        max_new_tokens=12, eval_interval=2, eval_prompts=4, eval_k=4, ckpt_interval=1, threads=1, lr=1e-3,
        train_pool=200, task_knobs=EASY_COUNTDOWN,
    )  # fmt: skip
    return from_dict({**base, **overrides}).validate()


class Stopped(Exception):
    """Raised by a Recorder at its stop step: the run ends there as if killed (no checkpoint of that step)."""


class Recorder:
    """A RunLogger that keeps every step's metrics in memory; ``stop_at`` stops the run when that step is logged."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.steps: dict[int, dict[str, float]] = {}
        self.stop_at = stop_at

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step == self.stop_at:
            raise Stopped(step)
        self.steps[step] = dict(metrics)

    def log_table(self, name: str, rows: list[dict[str, Any]], step: int | None = None) -> None:
        pass

    def last_logged_step(self) -> int | None:
        return max(self.steps, default=None)

    def finish(self, status: str = "FINISHED") -> None:
        pass


def differing_metrics(a: dict[str, float], b: dict[str, float]) -> list[str]:
    """Keys whose values differ (exactly; NaN equals NaN), ignoring timings (perf/)."""
    keys = {k for k in a.keys() | b.keys() if not k.startswith("perf/")}

    def eq(x: Any, y: Any) -> bool:
        return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))

    return sorted(k for k in keys if not eq(a.get(k), b.get(k)))
