"""The effective schedule: tau over response position at chosen training steps, for both decay scales.

It makes visible that with the reference scale (x20) and d_s growing by d_growth per step, the anneal
fades as training goes on (tau_min is never reached within max_position after some step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ead_core.schedule import EADSchedule
from experiments.studies.common import _h
from experiments.tracking.loggers import RunLogger


@dataclass
class ScheduleStudyConfig:
    steps: list = field(default_factory=lambda: [0, 10, 37, 100, 164, 300], metadata=_h("training steps to show"))
    scales: list = field(default_factory=lambda: ["paper", "reference"], metadata=_h("decay-scale presets"))
    max_position: int = field(default=3072, metadata=_h("longest response position shown"))
    points: int = field(default=256, metadata=_h("positions sampled per curve"))
    tau_max: float = field(default=1.2, metadata=_h("EAD tau_max"))
    tau_min: float = field(default=0.1, metadata=_h("EAD tau_min"))
    d0: float = field(default=25.0, metadata=_h("EAD d0"))
    c: int = field(default=10, metadata=_h("EAD warm-up positions"))
    d_growth: float = field(default=5.0, metadata=_h("EAD growth of d per step"))

    def schedules(self) -> dict[str, EADSchedule]:
        return {s: EADSchedule.preset(s, tau_max=self.tau_max, tau_min=self.tau_min, d0=self.d0, c=self.c,
                                      d_growth=self.d_growth) for s in self.scales}  # fmt: skip

    def validate(self) -> ScheduleStudyConfig:
        if not self.steps or any((not isinstance(s, int)) or s < 0 for s in self.steps):
            raise ValueError(f"steps must be a non-empty list of integers >= 0, got {self.steps!r}")
        if self.max_position < 1 or self.points < 2:
            raise ValueError("max_position must be >= 1 and points >= 2")
        self.schedules()
        return self


def run(cfg: ScheduleStudyConfig, logger: RunLogger) -> list[dict]:
    """Log tau(position) per (scale, step) as a table, and per step the positions where tau <= 1 and = tau_min."""
    cfg.validate()
    positions = np.unique(np.linspace(0, cfg.max_position, cfg.points).round()).astype(np.float64)
    rows: list[dict] = []
    for step in sorted(cfg.steps):
        metrics = {}
        for name, s in cfg.schedules().items():
            tau = s.temperatures(positions, step)
            rows += [{"scale": name, "step": step, "position": int(p), "tau": float(t)} for p, t in zip(positions, tau)]
            reach = s.position_tau_min(step)
            metrics[f"schedule/{name}/decay"] = s.decay(step)
            metrics[f"schedule/{name}/position_tau_min"] = reach
            metrics[f"schedule/{name}/reaches_tau_min"] = float(reach <= cfg.max_position)
            metrics[f"schedule/{name}/tau_at_max_position"] = float(s.temperature(cfg.max_position, step))
        logger.log_metrics(metrics, step=step)
    logger.log_table("effective_schedule", rows)
    return rows
