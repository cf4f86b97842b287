"""Step-0 state of the countdown_trace testbed: does the warm start leave room for exploration to matter?

Trains (and times) the warm start of ``task=countdown_trace`` with the given knobs, size and SFT settings, then
samples ``--k`` responses for each of ``--eval-prompts`` held-out prompts with the project's sampler and scores them
with the project's evaluation and metrics. Targets (issue 12) for the default size and knobs:

    eval Mean@16 in [0.15, 0.6]     Pass@16 <= 0.9     Worst@16 > 0 on >= 5% of eval prompts
    median response length >= 40 tokens     entropy by position falling along the response (decision early),
    placed late (decision late)

Both samplers are measured: temperature 1.0 (the policy itself, ``eval_t1``) and the ``sampling=ead_trace`` preset
at step 0. One JSON line per run goes to stdout (and is appended to ``--out``).

    .venv/bin/python benchmarks/bench_testbed.py [--knobs '{"decision": "late"}'] [--size tiny] [--sft-steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from ead_core.metrics import correctness_metrics, cumulative_entropy
from ead_core.schedule import FixedSchedule
from experiments.local.config import SamplingConfig
from experiments.local.evaluation import entropy_table, sample_groups, score
from experiments.local.policy import load_policy
from experiments.local.tasks import make_task
from experiments.local.warmstart import WarmStartConfig, warm_start

ROOT = Path(__file__).resolve().parents[1]
BINS = ((0, 5), (5, 15), (15, 30), (30, 60), (60, 100), (100, 200))


def trace_preset() -> SamplingConfig:
    """The ``sampling=ead_trace`` preset as the sweep composes it (SamplingConfig defaults + the YAML)."""
    values = OmegaConf.to_container(OmegaConf.load(ROOT / "sweeps" / "sampling" / "ead_trace.yaml"))
    return SamplingConfig(**values)


def entropy_summary(table: list[dict]) -> dict[str, object]:
    """Token-weighted mean entropy per position bin, the paper's cumulative curve at a few positions, and where the
    entropy peaks (10-token windows)."""
    mean = np.array([r["entropy_mean"] for r in table])
    count = np.array([r["count"] for r in table], dtype=float)
    out: dict[str, object] = {}
    for lo, hi in BINS:
        c = count[lo:hi]
        out[f"H[{lo},{hi})"] = round(float((mean[lo:hi] * c).sum() / c.sum()), 4) if c.sum() else None
    pos = [p for p in (0, 10, 20, 40, 60, 80, 100, 150) if p < len(mean)]
    out["H_cumulative"] = dict(zip(pos, np.round(cumulative_entropy(mean, count, pos), 4).tolist()))
    # mean over 10-token windows with at least 10% of the responses still running
    live = count >= 0.1 * count[0]
    starts = range(0, int(live.sum()), 5)
    windows = [(s, float((mean[s : s + 10] * count[s : s + 10]).sum() / count[s : s + 10].sum())) for s in starts]
    out["H_peak_window"] = max(windows, key=lambda w: w[1])[0] if windows else None
    return out


def measure(model, tok, task, problems, schedule, k: int, max_new_tokens: int, seed: int) -> dict[str, object]:
    g = torch.Generator().manual_seed(seed)
    chunks = sample_groups(model, tok, problems, k, schedule, 0, max_new_tokens, g)
    texts = [t for r in chunks for t in r.texts]
    correct, answers = score(task, problems, texts, k)
    m = correctness_metrics(correct, k, answers, seed=seed)
    lengths = torch.cat([r.lengths for r in chunks]).tolist()
    ended = torch.cat([r.ended for r in chunks]).float().mean().item()
    diags = [task.diagnostics(problems[i // k], t) for i, t in enumerate(texts)]
    return {
        "mean_at_k": round(m[f"mean_at_{k}"], 4),
        "pass_at_k": round(m[f"pass_at_{k}"], 4),
        "worst_at_k": round(m[f"worst_at_{k}"], 4),
        "frac_prompts_worst_gt0": round(float(np.mean(correct.sum(1) == k)), 4),
        "frac_prompts_never": round(float(np.mean(correct.sum(1) == 0)), 4),
        "median_length": statistics.median(lengths),
        "mean_length": round(statistics.fmean(lengths), 1),
        "ended_with_eos": round(ended, 4),
        "answered": round(float(np.mean([task.answer(t) is not None for t in texts])), 4),
        "trace_valid": round(float(np.mean([d["trace_valid"] for d in diags])), 4),
        "trace_step_accuracy": round(float(np.mean([d["trace_step_accuracy"] for d in diags])), 4),
        "entropy": entropy_summary(entropy_table(model, chunks)),
        "sample": texts[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--knobs", default="{}", help="countdown_trace knobs as JSON")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--sft-lr", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-prompts", type=int, default=128)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default=None, help="warm-start cache (default: a fresh one, so SFT is timed)")
    ap.add_argument("--no-ead", action="store_true", help="measure temperature 1.0 only")
    ap.add_argument("--out", default=None, help="append the JSON line to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    knobs = json.loads(args.knobs)
    cfg = WarmStartConfig(
        task="countdown_trace",
        task_knobs=knobs,
        size=args.size,
        seed=args.seed,
        steps=args.sft_steps,
        batch_size=args.batch_size,
        lr=args.sft_lr,
    )
    task = make_task("countdown_trace", **knobs)
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        path = warm_start(cfg, cache_dir=args.cache_dir or tmp, progress=False)
        sft_s, sft_cpu = time.perf_counter() - t0, time.process_time() - c0
        final_loss = json.loads((path / "warmstart.json").read_text())["final_loss"]
        model, tok = load_policy(path)
    problems = task.problems("eval", args.eval_prompts, seed=args.seed)
    row: dict[str, object] = {
        "task": repr(task),
        "size": args.size,
        "sft_steps": args.sft_steps,
        "sft_lr": args.sft_lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "threads": args.threads,
        "sft_seconds": round(sft_s, 1),
        "sft_cpu_seconds": round(sft_cpu, 1),  # the portable number: wall time on a quiet machine ~ cpu / threads
        "load_average_15min": round(os.getloadavg()[2], 1),  # the machine is shared: wall times depend on it
        "sft_final_loss": round(final_loss, 4) if final_loss is not None else None,
        "eval_prompts": args.eval_prompts,
        "k": args.k,
        "solver_success": round(float(np.mean([task.verify(p, p.solution) for p in problems])), 4),
    }
    t0 = time.perf_counter()
    row["t1"] = measure(model, tok, task, problems, FixedSchedule(1.0), args.k, args.max_new_tokens, args.seed)
    row["eval_seconds"] = round(time.perf_counter() - t0, 1)
    if not args.no_ead:
        sched = trace_preset().schedule()
        row["ead_trace"] = measure(model, tok, task, problems, sched, args.k, args.max_new_tokens, args.seed)
    line = json.dumps(row)
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
