"""The local RLVR loop, top to bottom: rollout -> reward -> advantage -> TIS -> policy loss -> update.

Each step s:
  1. draw prompts (seeded by (seed, s)) and sample ``rollouts_per_prompt`` responses per prompt with
     the run's schedule at step s (EAD or fixed: the same sampler), recording behaviour log-probs;
  2. score them with the task's verifier (reward 1/0 on the last response token);
  3. GRPO advantages from verl's registry (every algorithm here is group-relative); DAPO may drop
     groups whose responses are all right or all wrong;
  4. pi_old log-probs at temperature 1.0 (from the sampler's own logits, the same weights: no second forward pass)
     and the TIS weights min(pi_old / mu, cap) from ead_core;
  5. verl's policy loss (vanilla for GRPO/DAPO, clip_cov, kl_cov) on mini-batches, AdamW, grad clip.
Evaluation runs before the update at steps 0, eval_interval, ... and after the last step.
All randomness of step s derives from (seed, s): explicit generators for sampling and mini-batch order, and the
global torch RNG (which verl's Clip-Cov loss draws from) re-seeded per step and per phase, so a job resumed from a
checkpoint recomputes exactly the steps an uninterrupted run would have, and the logger keeps each step once.
The policy always runs in eval mode (no dropout, whatever an ``init_from`` model's config says): sampling, pi_old,
the PPO forward passes and evaluation see one deterministic function, so the first mini-batch's ratio is 1 (up to
float rounding between the cached decoding and the full forward pass, ~1e-6).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ead_core.schedule import FixedMatchedSchedule, Schedule
from ead_core.schedules.calibration import matched_fixed_schedule
from ead_core.tis import truncated_is_weights
from experiments.local.config import RLVRConfig
from experiments.local.evaluation import evaluate, shared_eval_key
from experiments.local.policy import load_policy, resolve_device
from experiments.local.rollout import (
    Rollout,
    group_prompts,
    logprobs_by_length,
    response_logits,
    sample,
    sequence_logprobs,
)
from experiments.local.tasks import Problem, make_task
from experiments.local.warmstart import default_cache_dir, warm_start
from experiments.tracking.hashing import flat_params
from experiments.tracking.loggers import JsonlLogger, MultiLogger, RunLogger

log = logging.getLogger(__name__)


def verl_algorithms(cfg: RLVRConfig) -> tuple[Any, Any, Any]:
    """(advantage fn, policy-loss fn, verl ActorConfig) from verl's registries for the configured algorithm."""
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn
    from verl.workers.config.actor import ActorConfig, PolicyLossConfig

    a = cfg.algorithm.resolved()
    actor = ActorConfig(
        strategy="fsdp",
        rollout_n=cfg.rollouts_per_prompt,
        ppo_micro_batch_size_per_gpu=cfg.batch_rows // cfg.mini_batches,
        ppo_mini_batch_size=cfg.batch_rows // cfg.mini_batches,
        clip_ratio=a.clip_ratio_low,
        clip_ratio_low=a.clip_ratio_low,
        clip_ratio_high=a.clip_ratio_high,
        clip_ratio_c=a.clip_ratio_c,
        loss_agg_mode=a.loss_agg_mode,
        use_torch_compile=False,
        policy_loss=PolicyLossConfig(
            loss_mode=a.loss_mode,
            clip_cov_ratio=a.clip_cov_ratio,
            clip_cov_lb=a.clip_cov_lb,
            clip_cov_ub=a.clip_cov_ub,
            kl_cov_ratio=a.kl_cov_ratio,
            ppo_kl_coef=a.ppo_kl_coef,
        ),
    )
    return get_adv_estimator_fn("grpo"), get_policy_loss_fn(a.loss_mode), actor


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float((x * mask).sum() / mask.sum().clamp(min=1))


# Streams of np.random.default_rng([seed, step, stream]): one per consumer, so none shifts another's draws.
_PROMPTS, _MINIBATCHES, _EVAL, _TORCH_TRAIN, _TORCH_EVAL, _CALIBRATION = 1, 2, 3, 4, 5, 6


@contextlib.contextmanager
def seeded_torch_rng(seed: int, step: int, stream: int) -> Iterator[None]:
    """Seed the global torch CPU RNG from (seed, step, stream) inside the block and restore it afterwards.

    Code we do not own draws from it (verl's Clip-Cov loss calls ``torch.randperm`` without a generator); seeding it
    per step makes those draws a function of the step, so a resumed run repeats them.
    """
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_initialized() else []):
        torch.manual_seed(int(np.random.default_rng([seed, step, stream]).integers(2**62)))
        yield


@dataclass
class Trainer:
    """State of one run: config, policy, optimiser, data and where it writes."""

    cfg: RLVRConfig
    run_dir: Path
    logger: RunLogger

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.task = make_task(cfg.task, **cfg.task_knobs)
        self.schedule: Schedule = cfg.sampling.schedule()
        self.pool: list[Problem] = self.task.problems("train", cfg.train_pool, seed=cfg.seed)
        self.eval_set: list[Problem] = self.task.problems("eval", cfg.eval_prompts, seed=cfg.seed)
        self.device = resolve_device(cfg.device)
        policy_dir = cfg.init_from or warm_start(cfg.warmstart(), device=self.device)
        self.model, self.tok = load_policy(policy_dir, self.device)
        self.model.eval()  # no dropout anywhere in RL (the sampler and sequence_logprobs enforce it too)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.adv_fn, self.loss_fn, self.actor_cfg = verl_algorithms(cfg)
        self.algo = cfg.algorithm.resolved()
        self.ckpt_path = self.run_dir / "checkpoint.pt"
        self.start_step = self._restore()
        self._matched: dict[int, FixedMatchedSchedule] = {}

    # --- the schedule of a step ----------------------------------------------------------------
    def schedule_at(self, step: int) -> Schedule:
        """The schedule that samples at ``step``: the run's one schedule, or for ``sampling.kind=fixed_matched`` the
        fixed temperature calibrated on the current model at this step (kept until the next step's)."""
        if not self.cfg.sampling.matched:
            return self.schedule
        if step not in self._matched:
            self._matched = {step: self.calibrate(step)}
        return self._matched[step]

    @torch.no_grad()
    def calibrate(self, step: int) -> FixedMatchedSchedule:
        """The matched-entropy control at ``step``: EAD (``self.schedule``) samples 2 responses to each of
        ``prompts_per_step`` training prompts (a draw of their own, seeded by (seed, step)); on those responses'
        logits, the fixed tau whose mean token entropy equals EAD's behaviour entropy (bisection on log tau,
        ``ead_core.schedules.calibration``). A function of (seed, step, weights): a resumed run recalibrates the same.
        """
        _, rows, _, g = self._draw(step, _CALIBRATION, per_prompt=2)
        r = sample(self.model, self.tok, rows, self.schedule, step, self.cfg.max_new_tokens, g)
        logits = response_logits(self.model, r)
        positions = torch.arange(logits.shape[1], dtype=torch.float32, device=logits.device)
        mask = r.response_mask[:, : logits.shape[1]]
        return matched_fixed_schedule(self.schedule, logits, positions, step, mask=mask)

    def _draw(self, step: int, stream: int, per_prompt: int) -> tuple[list[Problem], list[str], np.ndarray, Any]:
        """``prompts_per_step`` training problems drawn from the (seed, step, stream) generator, their prompts repeated
        ``per_prompt`` times (rows and group index) and a sampling generator seeded from the same draw."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step, stream])
        problems = [self.pool[i] for i in rng.choice(len(self.pool), cfg.prompts_per_step, replace=False)]
        rows, index = group_prompts([p.prompt for p in problems], per_prompt)
        g = torch.Generator(device=self.device).manual_seed(int(rng.integers(2**62)))
        return problems, rows, index, g

    # --- checkpoints ---------------------------------------------------------------------------
    @property
    def prev_ckpt_path(self) -> Path:
        return self.run_dir / "checkpoint.prev.pt"

    def _restore(self) -> int:
        """Resume from checkpoint.pt, else (unreadable: truncated, corrupt) from checkpoint.prev.pt, else from step 0,
        with a warning naming each file skipped. Every step is a function of (seed, step), so an older start only
        recomputes steps, and the loggers keep each step once. Loaded with ``weights_only=True``: tensors and plain
        Python types only, nothing in a run directory is unpickled as code."""
        tried = []
        for path in (self.ckpt_path, self.prev_ckpt_path):
            if not path.exists():
                continue
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                next_step, owner = int(state["next_step"]), str(state["config_hash"])
                model_state, opt_state = state["model"], state["optimizer"]
            except Exception as e:  # noqa: BLE001 - any unreadable file: fall back (the next one, or step 0)
                log.warning("checkpoint %s is unreadable (%s: %s); falling back", path, type(e).__name__, e)
                tried.append(str(path))
                continue
            if owner != self.cfg.hash:
                raise ValueError(f"checkpoint {path} belongs to config {owner}, not {self.cfg.hash}")
            self.model.load_state_dict(model_state)
            self.opt.load_state_dict(opt_state)
            log.info("resumed from %s at step %d", path, next_step)
            return next_step
        if tried:
            log.warning("no readable checkpoint (%s): training restarts at step 0", ", ".join(tried))
        return 0

    def save_checkpoint(self, next_step: int) -> None:
        """Atomic and two deep: write and fsync a temporary file, keep the current checkpoint as checkpoint.prev.pt,
        rename the new one into place (a crash between the renames leaves the previous one to resume from)."""
        tmp = self.ckpt_path.with_suffix(".tmp")
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "next_step": int(next_step),
            "config_hash": str(self.cfg.hash),
        }
        torch.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if self.ckpt_path.exists():
            os.replace(self.ckpt_path, self.prev_ckpt_path)
        os.replace(tmp, self.ckpt_path)

    # --- one RL step ---------------------------------------------------------------------------
    def rollout(self, step: int) -> tuple[list[Problem], Rollout, np.ndarray, torch.Tensor, float]:
        problems, rows, index, g = self._draw(step, _PROMPTS, per_prompt=self.cfg.rollouts_per_prompt)
        t0 = time.perf_counter()
        r = sample(self.model, self.tok, rows, self.schedule_at(step), step, self.cfg.max_new_tokens, g)
        gen_s = time.perf_counter() - t0
        rewards = torch.tensor([self.task.verify(problems[i], t) for i, t in zip(index, r.texts)], device=self.device)
        return problems, r, index, rewards, gen_s

    def train_step(self, step: int) -> dict[str, float]:
        """Rollout and update of step ``step``, with the global torch RNG seeded for this step."""
        t_start = time.perf_counter()
        with seeded_torch_rng(self.cfg.seed, step, _TORCH_TRAIN):
            _, r, index, rewards, gen_s = self.rollout(step)
            metrics = self.update(step, r, index, rewards)
        if self.cfg.sampling.matched:
            matched = self.schedule_at(step)
            metrics |= {"schedule/matched_tau": matched.tau, "schedule/matched_entropy": matched.target_entropy}
        return metrics | {
            "perf/step_s": time.perf_counter() - t_start,
            "perf/tokens_per_s": float(r.response_mask.sum()) / gen_s,
        }

    def update(self, step: int, r: Rollout, index: np.ndarray, rewards: torch.Tensor) -> dict[str, float]:
        """Advantages, pi_old, TIS weights and the policy-loss updates for a scored rollout (group ``index`` per row).

        Separate from ``rollout`` so that tests can feed constructed rewards. pi_old comes from ``r.target_logprobs``
        when the rollout carries them (sampled by this model, not updated since), else from a forward pass."""
        cfg, a = self.cfg, self.algo
        mask = r.response_mask
        lengths = mask.sum(dim=1).long()
        token_rewards = torch.zeros_like(mask)
        token_rewards[torch.arange(len(rewards), device=mask.device), (lengths - 1).clamp(min=0)] = rewards
        # verl computes advantages where its driver does, on CPU (a no-op for a CPU run)
        advantages, _ = self.adv_fn(token_rewards.cpu(), mask.cpu(), index, norm_adv_by_std_in_grpo=a.norm_adv_by_std)
        advantages = advantages.to(mask.device)

        if r.target_logprobs is not None and r.entropy is not None:  # the sampler's logits: no second forward pass
            old_lp, entropy = r.target_logprobs, r.entropy
        else:
            with torch.no_grad():
                old_lp, entropy = sequence_logprobs(self.model, r, with_entropy=True)
        tis_w, tis = truncated_is_weights(old_lp, r.behavior_logprobs, mask, cfg.tis.cap, level=cfg.tis.level)

        group_ok = np.ones(len(rewards), dtype=bool)
        if a.filter_groups:  # DAPO dynamic sampling: groups with identical rewards carry no signal
            g_std = {g: float(rewards[index == g].std()) for g in np.unique(index)}
            group_ok = np.array([g_std[g] > 0 for g in index])
        keep = torch.from_numpy(np.flatnonzero(group_ok))

        rng = np.random.default_rng([cfg.seed, step, _MINIBATCHES])
        clipfracs, grad_norms, losses, ppo_kls = [], [], [], []
        for _ in range(cfg.ppo_epochs):
            if len(keep) == 0:
                break
            perm = keep[torch.from_numpy(rng.permutation(len(keep)))]
            for mb in torch.tensor_split(perm, min(cfg.mini_batches, len(perm))):
                sub = r.subset(mb)
                logp = logprobs_by_length(self.model, sub)
                loss, m = self.loss_fn(
                    old_log_prob=old_lp[mb],
                    log_prob=logp,
                    advantages=advantages[mb],
                    response_mask=sub.response_mask,
                    loss_agg_mode=a.loss_agg_mode,
                    config=self.actor_cfg,
                    rollout_is_weights=tis_w[mb] if cfg.tis.enabled else None,
                )
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.opt.step()
                clipfracs.append(float(m.get("actor/pg_clipfrac", 0.0)))
                ppo_kls.append(float(m.get("actor/ppo_kl", 0.0)))
                grad_norms.append(float(gn))
                losses.append(float(loss.detach()))
        taus = r.temperatures[None, : mask.shape[1]].expand_as(mask)
        nan = float("nan")
        return {
            "train/reward_mean": float(rewards.mean()),
            "train/response_length": float(lengths.float().mean()),
            "train/ended_frac": float(r.ended.float().mean()),
            "train/entropy": _masked_mean(entropy, mask),
            "train/tau_mean": _masked_mean(taus, mask),
            "train/pg_clipfrac": float(np.mean(clipfracs)) if clipfracs else nan,
            "train/ppo_kl": float(np.mean(ppo_kls)) if ppo_kls else nan,
            "train/pg_loss": float(np.mean(losses)) if losses else nan,
            "train/grad_norm": float(np.mean(grad_norms)) if grad_norms else nan,
            "train/groups_kept_frac": float(group_ok.mean()),
            "train/is_weight_mean": tis["mean"],
            "train/is_weight_max": tis["max"],
            "train/is_truncated_frac": tis["truncated_frac"],
            "train/is_ess": tis["ess"],
            "train/kl_behavior_old": tis["kl_k3"],
            "train/kl_behavior_old_k1": tis["kl_k1"],
            "schedule/decay": float(self.schedule.decay(step)),
        }

    def evaluate(self, step: int) -> dict[str, float]:
        """Evaluate the current weights. At step 0 (the start policy, shared by every condition of a seed) the common
        decoders' results are shared through the cache directory: one run of the seed computes them, the others
        read the same numbers (``experiments.local.evaluation.evaluate``, argument ``shared``)."""
        cfg = self.cfg
        seed = int(np.random.default_rng([cfg.seed, step, _EVAL]).integers(2**62))
        shared = None
        if step == 0:
            key = shared_eval_key(self.model, self.eval_set, cfg.eval_k, cfg.max_new_tokens, seed, step)
            shared = (default_cache_dir() / "evals", key)
        with seeded_torch_rng(cfg.seed, step, _TORCH_EVAL):
            metrics, tables = evaluate(
                self.model,
                self.tok,
                self.task,
                self.eval_set,
                self.schedule_at(step),
                step,
                cfg.max_new_tokens,
                seed=seed,
                k=cfg.eval_k,
                shared=shared,
            )
        for name, rows in tables.items():
            self.logger.log_table(name, rows, step=step)
        return metrics

    # --- the loop ------------------------------------------------------------------------------
    def run(self, progress: bool = True) -> dict[str, float]:
        cfg = self.cfg
        last: dict[str, float] = {}
        bar = tqdm(
            range(self.start_step, cfg.steps),
            desc=f"rlvr {cfg.algorithm.name}/{'fixed-matched' if cfg.sampling.matched else self.schedule.label}",
            disable=not progress,
            initial=self.start_step,
            total=cfg.steps,
        )
        for step in bar:
            metrics = self.evaluate(step) if step % cfg.eval_interval == 0 else {}
            metrics.update(self.train_step(step))
            self.logger.log_metrics(metrics, step)
            if (step + 1) % cfg.ckpt_interval == 0 or step + 1 == cfg.steps:
                self.save_checkpoint(step + 1)
            last.update(metrics)
            bar.set_postfix(
                reward=f"{metrics['train/reward_mean']:.2f}",
                pass16=f"{last.get(f'eval/pass_at_{cfg.eval_k}', float('nan')):.2f}",
            )
        final = self.evaluate(cfg.steps)
        self.logger.log_metrics(final, cfg.steps)
        last.update(final)
        return last


def run(
    cfg: RLVRConfig, run_dir: str | Path | None = None, logger: RunLogger | None = None, progress: bool = True
) -> dict[str, float]:
    """Train (or resume, or return at once if already finished) and return the final metrics.

    ``run_dir`` defaults to runs/<config hash>; it holds the checkpoint and a JSONL log. A given
    ``logger`` (e.g. MLflow) receives the same records.
    """
    cfg.validate()
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / cfg.hash
    run_dir.mkdir(parents=True, exist_ok=True)
    done = run_dir / "DONE.json"
    if done.exists():
        import json

        log.info("run %s already finished (%s)", cfg.hash, done)
        return json.loads(done.read_text())
    # threads=0 (auto): one thread unless OpenMP sleeps while it waits (OMP_WAIT_POLICY=PASSIVE, set before torch
    # loads); several threads of a spinning runtime collapse when the cores are shared (benchmarks/bench_contention.py)
    passive = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    torch.set_num_threads(cfg.threads or (torch.get_num_threads() if passive else 1))
    jsonl = JsonlLogger(run_dir)
    lg: RunLogger = MultiLogger(jsonl, logger) if logger is not None else jsonl
    lg.log_params(flat_params(cfg) | {"config_hash": cfg.hash})
    trainer = Trainer(cfg, run_dir, lg)
    final = trainer.run(progress=progress)
    trainer.model.save_pretrained(run_dir / "policy")
    trainer.tok.save_pretrained(run_dir / "policy")
    import json

    done.write_text(json.dumps({k: v for k, v in final.items()}, indent=2))
    jsonl.finish("FINISHED")
    return final
