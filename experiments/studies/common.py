"""What every study needs: a policy (a checkpoint directory or the warm start), a task, a schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from experiments.local.config import SamplingConfig
from experiments.local.policy import SIZES, load_policy
from experiments.local.tasks import make_task
from experiments.local.warmstart import WarmStartConfig, warm_start


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class PolicySource:
    """Where the studied policy comes from: ``policy`` (any HF directory, e.g. runs/<hash>/policy) or the
    warm start of ``size`` on ``task`` (trained and cached on first use)."""

    policy: str | None = field(default=None, metadata=_h("policy directory (default: the warm start)"))
    task: str = field(default="countdown", metadata=_h("countdown | arithmetic"))
    task_knobs: dict = field(default_factory=dict, metadata=_h("task difficulty knobs"))
    size: str = field(default="tiny", metadata=_h("warm-start size: tiny | small | base"))
    sft_steps: int = field(default=400, metadata=_h("warm-start SFT steps"))
    seed: int = field(default=0, metadata=_h("seed (prompts, sampling, warm start)"))

    def check(self) -> None:
        make_task(self.task, **self.task_knobs)
        if self.policy is None and self.size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, got {self.size!r}")
        if self.policy is not None and not (Path(self.policy) / "config.json").exists():
            raise ValueError(f"policy must be an HF model directory with config.json, got {self.policy!r}")

    def load(self):
        """(model, tokenizer, task)."""
        path = self.policy or warm_start(
            WarmStartConfig(
                task=self.task, task_knobs=dict(self.task_knobs), size=self.size, seed=self.seed, steps=self.sft_steps
            )  # fmt: skip
        )
        model, tok = load_policy(path)
        return model, tok, make_task(self.task, **self.task_knobs)


__all__ = ["PolicySource", "SamplingConfig"]
