"""How long will a local sweep take? A cost model of the local backend, printed by the sweeper before it launches.

Every local job is dominated by policy forward and backward passes over tokens, so its cost is counted in tokens:

* warm start: ``sft_steps x 64`` sequences of prompt + solver response, forward and backward, once per cache key
  (shared by every job that uses it, and free when already cached);
* each RL step: ``rows = prompts_per_step x rollouts_per_prompt`` responses sampled token by token, then the old and
  behaviour log-probs and ``ppo_epochs`` forward-backward passes over them;
* each evaluation (every ``eval_interval`` steps and at the end): ``eval_prompts x eval_k`` samples per sampled
  decoder (``eval_t1``, and the run's own sampler unless it is temperature 1.0) plus one greedy sample per prompt;
* the matched-entropy control (``sampling.kind=fixed_matched``) calibrates once per step and at the final evaluation:
  ``2 x prompts_per_step`` EAD responses sampled and scored once.

A response is taken to be ``RESPONSE_FILL x max_new_tokens`` long (measured: 71.5 of 128 on countdown_trace, ~9 of
16 on countdown). The seconds per token were measured on the project's 2-core reference machine at one torch thread
per job; other sizes scale by parameter count relative to ``tiny``. It is an estimate to decide whether to start, not
a promise: a busy machine is slower in proportion to its load.

Calibration (2026-12-05, after the preallocated-cache decoder made sampling ~5x faster than the constants of
2026-12-03 assumed, so the sweeper printed 3 h 42 min for the `beyond` study that took 1 h 26 min): sampling, scoring
and training per token from a testbed RL step and one evaluation timed phase by phase on the quiet machine (EAD, 64
rows of 68.6 tokens: sampling 0.99e-4 s/token, scoring twice plus the update 1.39e-4; evaluation 0.95e-4 per
sampled token); the warm start from the `beyond` study's jobs, two at a time on the two cores (SFT with its solver
traces: 420-520 s per seed on countdown_trace, ~500 s on the late variant).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from experiments.local.config import RLVRConfig
from experiments.local.evaluation import own_is_common_decoder
from experiments.local.warmstart import WarmStartConfig, cache_path

RESPONSE_FILL = 0.56  # mean response length / max_new_tokens at step 0 (countdown_trace 71.5/128, countdown 9/16)
PROMPT_TOKENS = 20  # a task prompt in characters (= tokens)
SAMPLE_S_PER_TOKEN = 1.0e-4  # tiny, 1 thread: batched sampling (preallocated KV cache), RL rollouts and evaluation
SCORE_S_PER_TOKEN = 0.27e-4  # tiny, 1 thread: one batched forward (old / behaviour log-probs)
TRAIN_S_PER_TOKEN = 0.85e-4  # tiny, 1 thread: forward + backward of the policy loss (2 x score + train = 1.39e-4)
WARM_START_S_PER_TOKEN = 2.4e-4  # tiny, 1 thread, 2 jobs on 2 cores: SFT step incl. generating its solver traces
SIZE_FACTOR = {"tiny": 1.0, "small": 4.9, "base": 19.5}  # parameters relative to tiny (1.05M, 5.1M, 20.5M)
JOB_OVERHEAD_S = 15.0  # start-up, MLflow run, checkpoints and tables


@dataclass(frozen=True)
class JobCost:
    """Projected seconds of one local training job on one core, by phase."""

    warm_start: float  # 0 when cached or shared with an earlier job of the sweep
    train: float
    evaluation: float
    overhead: float = JOB_OVERHEAD_S

    @property
    def total(self) -> float:
        return self.warm_start + self.train + self.evaluation + self.overhead


def _tokens(cfg: RLVRConfig) -> float:
    return RESPONSE_FILL * cfg.max_new_tokens


def warm_start_seconds(ws: WarmStartConfig, response_tokens: float) -> float:
    """One-core seconds of training the warm start ``ws`` on solver responses of ``response_tokens``."""
    return ws.steps * ws.batch_size * (PROMPT_TOKENS + response_tokens) * WARM_START_S_PER_TOKEN * SIZE_FACTOR[ws.size]


def rl_step_seconds(rows: int, tokens: float, size: str = "tiny", ppo_epochs: int = 1) -> float:
    """Projected one-core seconds of one RL step: ``rows`` responses of ``tokens`` sampled, scored twice (old and
    behaviour log-probs) and trained on ``ppo_epochs`` times."""
    per_token = SAMPLE_S_PER_TOKEN + 2 * SCORE_S_PER_TOKEN + ppo_epochs * TRAIN_S_PER_TOKEN
    return rows * tokens * per_token * SIZE_FACTOR[size]


def job_cost(cfg: RLVRConfig, warm_start_needed: bool) -> JobCost:
    """Projected one-core seconds of one local training job."""
    size = SIZE_FACTOR[cfg.size]
    tokens = _tokens(cfg)
    per_step = rl_step_seconds(cfg.prompts_per_step * cfg.rollouts_per_prompt, tokens, "tiny", cfg.ppo_epochs)
    decoders = 1 if own_is_common_decoder(cfg.sampling.schedule()) else 2
    evals = len(set(range(0, cfg.steps, cfg.eval_interval)) | {cfg.steps})
    per_eval = cfg.eval_prompts * (decoders * cfg.eval_k + 1) * tokens * SAMPLE_S_PER_TOKEN
    train = cfg.steps * per_step
    if cfg.sampling.matched:  # Trainer.calibrate: once per step and at the final evaluation
        train += (cfg.steps + 1) * 2 * cfg.prompts_per_step * tokens * (SAMPLE_S_PER_TOKEN + SCORE_S_PER_TOKEN)
    ws = warm_start_seconds(cfg.warmstart(), tokens) if warm_start_needed and cfg.init_from is None else 0.0
    return JobCost(warm_start=ws, train=train * size, evaluation=evals * per_eval * size)


def project(configs: Iterable[RLVRConfig], parallel: int = 2) -> tuple[list[JobCost], float]:
    """Per-job costs (a warm start counted once, at its first job, unless cached) and the projected wall seconds of
    running the jobs ``parallel`` at a time on as many cores (one thread each)."""
    seen: set[str] = set()
    costs = []
    for cfg in configs:
        ws = cfg.warmstart()
        needed = cfg.init_from is None and ws.key not in seen and not (cache_path(ws) / "DONE").exists()
        seen.add(ws.key)
        costs.append(job_cost(cfg, needed))
    if not costs:
        return [], 0.0
    total = sum(c.total for c in costs)
    longest = max(c.total for c in costs)
    # jobs waiting on a shared warm start cannot overlap it: the first warm start runs before the rest spreads out
    first_ws = max((c.warm_start for c in costs), default=0.0)
    wall = max(longest, first_ws + (total - first_ws) / max(1, parallel))
    return costs, wall


def format_projection(costs: list[JobCost], wall: float, parallel: int) -> str:
    """One paragraph for the sweep log."""
    if not costs:
        return "projection: no local training job to run"
    ws = sum(c.warm_start for c in costs)
    train = sum(c.train for c in costs)
    ev = sum(c.evaluation for c in costs)
    return (
        f"projection: {len(costs)} local training job(s), {hms(wall)} on {parallel} core(s) at one thread per job "
        f"on a quiet 2-core reference machine (core time: warm starts {hms(ws)}, RL steps {hms(train)}, "
        f"evaluations {hms(ev)}); a busy machine takes longer in proportion to its load"
    )


def hms(seconds: float) -> str:
    seconds = math.ceil(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
