"""Rollout and RL-step speed of the local backend, measured side by side in one run.

Prints three ratios:
  1. EAD vs fixed temperature in the same sampler (target >= 0.98): tokens/s, same model and batch;
  2. our KV-cache sampler vs plain transformers ``generate`` at fixed temperature (target >= 1.0);
  3. seconds per RL step of the default config and the projected wall time of a default 100-step
     run (target <= 5 minutes on 2 cores), excluding the one-off cached warm start.
Conditions alternate (A B A B ...) so background load hits them alike; medians are reported. The EOS logit is set to
-inf (a hook on the LM head, the same in every condition) so that every condition decodes exactly rows x tokens
tokens: the sampler drops finished rows from its batch, so responses of different lengths would be different work.

    .venv/bin/python benchmarks/bench_rollout.py [--repeats 7] [--rows 64] [--rl-steps 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by OpenMP when torch loads (see bench_contention.py)

import torch

from ead_core import EADSchedule, FixedSchedule
from experiments.local import RLVRConfig, Trainer
from experiments.local.policy import build_policy, never_end
from experiments.local.rollout import encode_prompts, sample
from experiments.local.tasks import make_task
from experiments.tracking.loggers import JsonlLogger


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rows", type=int, default=64, help="sequences per batch (default config: 8 x 8)")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--rl-steps", type=int, default=5)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()

    model, tok = build_policy(args.size, seed=0)
    model.eval()
    # Full-length responses in every condition: EOS never sampled (same hook for all, so the same work).
    never_end(model, tok.eos_token_id)
    prompts = [p.prompt for p in make_task("countdown").problems("train", args.rows, seed=0)]
    ead, fixed = EADSchedule.preset("paper", c=1, d0=8), FixedSchedule(1.0)
    ids, mask = encode_prompts(tok, prompts)

    def ours(schedule):
        g = torch.Generator().manual_seed(0)
        return lambda: sample(model, tok, prompts, schedule, 3, args.tokens, g)

    def hf():
        with torch.no_grad():
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=args.tokens,
                min_new_tokens=args.tokens,
                pad_token_id=tok.pad_token_id,
            )

    conds = {"ours EAD": ours(ead), "ours fixed": ours(fixed), "HF generate fixed": hf}
    times: dict[str, list[float]] = {k: [] for k in conds}
    for fn in conds.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in conds.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    tps = {k: args.rows * args.tokens / statistics.median(v) for k, v in times.items()}

    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, model {args.size}, {args.rows} rows x {args.tokens} tokens, "
        f"median of {args.repeats}; load avg (1 min) at start {load_start[0]:.2f}, now {os.getloadavg()[0]:.2f}"
    )
    for k, v in tps.items():
        print(f"  {k:20s} {v:10.0f} tokens/s")
    print(f"ratio EAD / fixed (same sampler)       {tps['ours EAD'] / tps['ours fixed']:.3f}   (target >= 0.98)")
    print(
        f"ratio ours fixed / HF generate fixed   {tps['ours fixed'] / tps['HF generate fixed']:.3f}   (target >= 1.0)"
    )

    # --- RL step of the default config -------------------------------------------------------------
    import tempfile

    cfg = RLVRConfig()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        trainer = Trainer(cfg.validate(), Path(d), JsonlLogger(d))
        setup_s = time.perf_counter() - t0
        step_times = []
        for s in range(args.rl_steps):
            t0 = time.perf_counter()
            trainer.train_step(s)
            step_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        trainer.evaluate(0)
        eval_s = time.perf_counter() - t0
    step_s = statistics.median(step_times)
    n_evals = cfg.steps // cfg.eval_interval + 1
    projected = cfg.steps * step_s + n_evals * eval_s
    print(
        f"RL step (default config: {cfg.prompts_per_step}x{cfg.rollouts_per_prompt} rows, {cfg.algorithm.name}): "
        f"median {step_s:.2f} s over {args.rl_steps} steps; one evaluation {eval_s:.2f} s; setup {setup_s:.1f} s"
    )
    print(
        f"projected default run ({cfg.steps} steps, {n_evals} evaluations): {projected / 60:.2f} min   "
        f"(target <= 5 min; ratio to target {projected / 300:.2f})"
    )


if __name__ == "__main__":
    main()
