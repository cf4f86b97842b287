"""Position branching ("forking"): does exploration matter early or late in a response?

For each eval prompt, sample a base response; for each prefix length K in a grid, keep its first K
tokens and resample ``continuations`` responses from prompt + prefix with the same sampler (the
schedule counting positions from the ORIGINAL response start). K = 0 is the unbranched baseline.
Per K: Maj@k (k = 1, 3, 8, 16; bootstrap without replacement), unbiased Pass@k, mean accuracy and
answer diversity (distinct final answers per continuation set). research/paper.md 3.9.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ead_core.metrics import majority_at_k_bootstrap, pass_at_k
from experiments.local.config import SamplingConfig
from experiments.local.rollout import group_prompts, sample
from experiments.studies.common import PolicySource, _h
from experiments.tracking.loggers import RunLogger


@dataclass
class BranchingStudyConfig(PolicySource):
    prompts: int = field(default=64, metadata=_h("eval prompts"))
    prefixes: list = field(default_factory=lambda: [0, 1, 2, 4, 6, 8], metadata=_h("prefix lengths K (0: unbranched)"))
    continuations: int = field(default=16, metadata=_h("continuations per prefix"))
    ks: list = field(default_factory=lambda: [1, 3, 8, 16], metadata=_h("k for Maj@k and Pass@k"))
    max_new_tokens: int = field(default=16, metadata=_h("maximum response length (base and continuation)"))
    step: int = field(default=0, metadata=_h("training step fed to the schedule (d_s)"))
    n_bootstrap: int = field(default=200, metadata=_h("bootstrap draws for Maj@k"))
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def validate(self) -> BranchingStudyConfig:
        self.check()
        ks, pre = list(self.ks), list(self.prefixes)
        if not pre or any((not isinstance(k, int)) or k < 0 or k >= self.max_new_tokens for k in pre):
            raise ValueError(f"prefixes must be integers in [0, max_new_tokens={self.max_new_tokens}), got {pre!r}")
        if not ks or any((not isinstance(k, int)) or not 1 <= k <= self.continuations for k in ks):
            raise ValueError(f"ks must be integers in [1, continuations={self.continuations}], got {ks!r}")
        for name in ("prompts", "continuations", "max_new_tokens", "n_bootstrap"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        self.sampling.schedule()
        return self


@torch.no_grad()
def run(cfg: BranchingStudyConfig, logger: RunLogger) -> list[dict]:
    """Branch at each K, score continuations, log one metrics record per K (step = K) and a table."""
    cfg.validate()
    model, tok, task = cfg.load()
    schedule = cfg.sampling.schedule()
    problems = task.problems("eval", cfg.prompts, seed=cfg.seed)
    g = torch.Generator(device=model.device).manual_seed(cfg.seed)
    base = sample(model, tok, [p.prompt for p in problems], schedule, cfg.step, cfg.max_new_tokens, g)
    rows: list[dict] = []
    for K in sorted(cfg.prefixes):
        # Branch only responses that go on after K tokens (a prefix must not contain EOS).
        keep = [i for i, t in enumerate(base.texts) if K == 0 or int(base.lengths[i]) > K]
        if not keep:
            continue
        prompts = [problems[i].prompt + base.texts[i][:K] for i in keep]
        rows_in, _ = group_prompts(prompts, cfg.continuations)
        r = sample(model, tok, rows_in, schedule, cfg.step, cfg.max_new_tokens - K, g, position_offset=K)
        per: dict[str, list[float]] = {}
        for j, i in enumerate(keep):
            texts = [base.texts[i][:K] + t for t in r.texts[j * cfg.continuations : (j + 1) * cfg.continuations]]
            correct = [task.verify(problems[i], t) for t in texts]
            answers = [task.extract_answer(problems[i], t) for t in texts]
            per.setdefault("mean", []).append(float(np.mean(correct)))
            distinct = {a for a in answers if a is not None}
            per.setdefault("diversity", []).append(len(distinct) / cfg.continuations)
            for k in cfg.ks:
                per.setdefault(f"maj_at_{k}", []).append(
                    majority_at_k_bootstrap(answers, correct, k, cfg.n_bootstrap, seed=cfg.seed + j)
                )
                per.setdefault(f"pass_at_{k}", []).append(float(pass_at_k(cfg.continuations, int(sum(correct)), k)))
        summary = {name: float(np.mean(v)) for name, v in per.items()}
        logger.log_metrics({f"branching/{k}": v for k, v in summary.items()} | {"branching/prompts": len(keep)}, step=K)
        for k in cfg.ks:
            rows.append({"K": K, "k": k, "maj": summary[f"maj_at_{k}"], "pass": summary[f"pass_at_{k}"],
                         "mean": summary["mean"], "diversity": summary["diversity"], "prompts": len(keep)})  # fmt: skip
    logger.log_table("branching", rows)
    return rows
