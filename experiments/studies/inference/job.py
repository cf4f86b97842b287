"""The study as one job: sample every condition, score, log metrics by N and the tables."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from experiments.local.tasks import make_task
from experiments.studies.inference.config import AUTO_VOTE, PREFIX, InferenceScalingConfig
from experiments.studies.inference.engine import build_engine, prompt_token_ids, sample_condition, warmup
from experiments.studies.inference.scoring import condition_stats, scaling_metrics, score, vote_keys
from experiments.tracking.hashing import canonical, flat_params
from experiments.tracking.loggers import RunLogger

log = logging.getLogger(__name__)


def run(cfg: InferenceScalingConfig, logger: RunLogger, progress: bool = True) -> dict[str, Any]:
    """Run the study and log it through ``logger`` (the caller owns it and calls ``finish``).

    Returns ``{"rows": [...], "conditions": [...], "policy_dir": ...}``: the ``infer_scaling`` and
    ``infer_conditions`` tables. Steps already in the logger are skipped by it (a rerun recomputes all).
    """
    from transformers import AutoTokenizer

    cfg.validate()
    conditions = cfg.parsed_conditions()
    task = make_task(cfg.task, **cfg.task_knobs)
    problems = task.problems("eval", cfg.eval_prompts, seed=cfg.data_seed)
    if cfg.policy_dir is not None:
        policy_dir = cfg.policy_dir
    else:
        from experiments.local.warmstart import warm_start

        policy_dir = str(warm_start(cfg.warmstart(), progress=progress))
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    prompts = prompt_token_ids(tokenizer, problems)
    context = cfg.engine.max_model_len or json.loads((Path(policy_dir) / "config.json").read_text()).get(
        "max_position_embeddings"
    )
    longest = max(len(p) for p in prompts)
    if context is not None and longest + cfg.max_tokens > context:
        raise ValueError(
            f"max_tokens must be <= {context - longest} (context {context} - longest prompt {longest}), "
            f"got {cfg.max_tokens}"
        )
    S = cfg.samples
    vote = AUTO_VOTE.get(cfg.task, "answer") if cfg.vote == "auto" else cfg.vote
    logger.log_params(
        flat_params(cfg)
        | {"config_hash": cfg.hash, "policy_dir_resolved": policy_dir, "samples_per_prompt": S, "vote_resolved": vote}
        | {f"condition.{c.label}": json.dumps(canonical(c.describe()), sort_keys=True) for c in conditions}
    )

    llm = build_engine(policy_dir, cfg.engine, cfg.seed)
    try:
        warmup(llm, prompts, S)
        results = []
        for cond in conditions:
            s = sample_condition(llm, tokenizer, prompts, cond, S, cfg.max_tokens, cfg.seed, progress)
            correct, answers = score(task, problems, s.texts)
            votes = vote_keys(vote, answers, s.texts)
            stats = condition_stats(cond, s, correct, votes)
            log.info("%s: mean accuracy %.3f, %.1f tokens/s", cond.label, stats["mean_accuracy"], stats["tokens_per_s"])
            if stats["vote_ambiguity"] > 0:
                log.warning(
                    "%s: %.1f%% of votes share their key with a sample of different correctness (vote=%r): "
                    "Maj@N then scores the first carrier of the winning key",
                    cond.label,
                    100 * stats["vote_ambiguity"],
                    vote,
                )
            results.append((cond, correct, votes, stats))
    finally:
        del llm

    rows: list[dict[str, Any]] = []
    by_n: dict[int, dict[str, float]] = {n: {} for n in cfg.n_grid}
    sample_rows: list[dict[str, Any]] = []
    for cond, correct, votes, _ in results:
        for r in scaling_metrics(correct, votes, cfg.n_grid, cfg.n_bootstrap, seed=cfg.seed):
            rows.append({"condition": cond.label, **r})
            base = f"{PREFIX}/{cond.label}"
            by_n[r["N"]].update(
                {
                    f"{base}/maj_at_n": r["maj"],
                    f"{base}/pass_at_n": r["pass"],
                    f"{base}/worst_at_n": r["worst"],
                    f"{base}/mean_at_n": r["mean"],
                }
            )
        sample_rows += [
            {"condition": cond.label, "prompt": p.prompt, "votes": v, "correct": c.tolist()}
            for p, v, c in zip(problems, votes, correct)
        ]
    for n in cfg.n_grid:
        logger.log_metrics(by_n[n], step=n)
    cond_rows = [stats for *_, stats in results]
    logger.log_table("infer_scaling", rows)
    logger.log_table("infer_conditions", cond_rows)
    logger.log_table("infer_samples", sample_rows)
    return {"rows": rows, "conditions": cond_rows, "policy_dir": policy_dir}
