"""Our RL iteration against TRL's GRPOTrainer on identical work, interleaved in one process.

Same policy (the warm-started tiny countdown policy, loaded from one directory by both), same prompts and
verifier, same batch (P prompts x G rollouts), maximum response length, temperature (fixed 1.0, no top-k/top-p),
and the same number of optimizer steps per generation (ours: ``mini_batches``; TRL: ``steps_per_generation`` with
``per_device_train_batch_size`` = rows / steps). One iteration = one generation + its optimizer steps.

The rounds interleave: a TRL callback runs one iteration of ours after each TRL iteration, so background load hits
both alike. Medians over iterations (the first ones are warm-up and dropped). Prints, per side, the median
iteration and what it spends in generation and in the update, and the ratio ours / TRL (target <= 0.6 at 16 tokens,
<= 0.5 at the trace length).

    .venv/bin/python benchmarks/bench_peers.py [--tokens 16] [--iterations 8] [--load 0] [--threads 1]
    .venv/bin/python benchmarks/bench_peers.py --preset countdown_trace --iterations 4   # the testbed's traces

``--load N`` starts N competing processes (a busy numpy matrix loop each) for the whole measurement: the
"with a competing process" condition. ``--preset NAME`` takes task, knobs, maximum length and warm-start settings from
sweeps/task/NAME.yaml. Both sides run in this process with ``--threads`` torch threads and ``OMP_WAIT_POLICY=PASSIVE``
(set before torch loads unless the environment sets it: a spinning OpenMP runtime collapses on shared cores, see
benchmarks/bench_contention.py). TRL comes from the optional ``bench`` extra (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by OpenMP when torch loads (imports below are lazy)
ROOT = Path(__file__).resolve().parents[1]


def _burn(stop: Any) -> None:
    """A competing process: single-threaded matrix products until told to stop."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import numpy as np

    a = np.random.default_rng(0).random((256, 256))
    while not stop.is_set():
        a = (a @ a) / 256.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=None, help="maximum response length (default: 16 or the preset's)")
    ap.add_argument("--preset", default=None, help="a task preset of sweeps/task/ (e.g. countdown_trace)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (both sides; 0: torch's default)")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per iteration")
    ap.add_argument("--rollouts", type=int, default=8, help="rollouts per prompt")
    ap.add_argument("--opt-steps", type=int, default=4, help="optimizer steps per generation")
    ap.add_argument("--iterations", type=int, default=8, help="measured iterations per side (after 2 warm-up)")
    ap.add_argument("--task", default="countdown")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--load", type=int, default=0, help="competing busy processes during the measurement")
    args = ap.parse_args()
    preset: dict[str, Any] = {}
    if args.preset is not None:
        import yaml

        path = ROOT / "sweeps" / "task" / f"{args.preset}.yaml"
        if not path.exists():
            raise SystemExit(f"--preset must name a file of sweeps/task/, got {args.preset!r}")
        keys = ("task", "task_knobs", "max_new_tokens", "sft_steps", "sft_lr")
        preset = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k in keys}
    if args.tokens is None:
        args.tokens = int(preset.get("max_new_tokens", 16))
    load_start = os.getloadavg()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from experiments.local.config import RLVRConfig, from_dict
    from experiments.local.tasks import make_task
    from experiments.local.train import Trainer
    from experiments.local.warmstart import warm_start
    from experiments.tracking.loggers import JsonlLogger

    rows = args.prompts * args.rollouts
    if rows % args.opt_steps:
        raise SystemExit(f"--opt-steps must divide prompts x rollouts ({rows}), got {args.opt_steps}")
    base = RLVRConfig()
    cfg = from_dict(
        {
            "task": args.task,
            **preset,
            "size": args.size,
            "prompts_per_step": args.prompts,
            "rollouts_per_prompt": args.rollouts,
            "mini_batches": args.opt_steps,
            "max_new_tokens": args.tokens,
            "sampling": {"kind": "fixed", "tau": 1.0},
            "tis": {"enabled": False},
            "steps": 1000,
            "eval_interval": 1000,
        }
    ).validate()
    policy_dir = str(warm_start(cfg.warmstart()))
    task = make_task(cfg.task, **cfg.task_knobs)
    problems = task.problems("train", 2000, seed=0)  # TRL's dataset; ours draws from its own train pool
    by_prompt = {p.prompt: p for p in problems}

    def reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return [task.verify(by_prompt[p], c) for p, c in zip(prompts, completions)]

    work = tempfile.mkdtemp(prefix="bench-peers-")
    ours = Trainer(cfg, Path(work) / "ours", JsonlLogger(Path(work) / "ours"))

    trl_args = GRPOConfig(
        output_dir=str(Path(work) / "trl"),
        per_device_train_batch_size=rows // args.opt_steps,
        gradient_accumulation_steps=1,
        num_generations=args.rollouts,
        steps_per_generation=args.opt_steps,
        max_completion_length=args.tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=base.lr,
        beta=0.0,
        num_iterations=1,
        max_steps=(args.iterations + 2) * args.opt_steps,
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=0,
        dataloader_num_workers=0,
        shuffle_dataset=True,
    )
    dataset = Dataset.from_dict({"prompt": [p.prompt for p in problems]})
    trainer = GRPOTrainer(model=policy_dir, reward_funcs=reward, args=trl_args, train_dataset=dataset)

    gen_time: list[float] = []
    original = trainer._generate_and_score_completions

    def timed(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        out = original(*a, **kw)
        gen_time.append(time.perf_counter() - t0)
        return out

    trainer._generate_and_score_completions = timed  # type: ignore[method-assign]

    record: dict[str, list[float]] = {"trl": [], "trl_gen": [], "ours": [], "ours_gen": [], "ours_len": []}

    class Interleave(TrainerCallback):
        def __init__(self) -> None:
            self.t0: float | None = None
            self.step = 0

        def on_step_begin(self, *a: Any, **kw: Any) -> None:
            if self.t0 is None:
                self.t0 = time.perf_counter()
                self.gens = len(gen_time)

        def on_step_end(self, state_args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step % args.opt_steps:
                return
            record["trl"].append(time.perf_counter() - self.t0)
            record["trl_gen"].append(sum(gen_time[self.gens :]))
            t0 = time.perf_counter()
            m = ours.train_step(self.step)
            record["ours"].append(time.perf_counter() - t0)
            record["ours_gen"].append(float(m["train/response_length"]) * rows / float(m["perf/tokens_per_s"]))
            record["ours_len"].append(float(m["train/response_length"]))
            self.step += 1
            self.t0 = None

    trainer.add_callback(Interleave())
    stop = mp.Event()
    burners = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(args.load)]
    for b in burners:
        b.start()
    try:
        trainer.train()
    finally:
        stop.set()
        for b in burners:
            b.join(timeout=5)

    def med(xs: list[float]) -> float:
        return statistics.median(xs[2:]) if len(xs) > 2 else statistics.median(xs)

    load = os.getloadavg()
    print(
        f"torch {torch.__version__} threads {torch.get_num_threads()} OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; {args.size} policy, {cfg.task}, "
        f"{args.prompts}x{args.rollouts} rows, {args.tokens} tokens, {args.opt_steps} optimizer steps per generation; "
        f"{len(record['trl']) - 2} measured iterations per side; competing processes {args.load}; "
        f"load avg (1 min) at start {load_start[0]:.2f}, at end {load[0]:.2f} on {os.cpu_count()} cores"
    )
    lengths = record["ours_len"][2:] or record["ours_len"]
    print(f"  mean response length (ours) {statistics.mean(lengths):.1f} tokens")
    trl_it, ours_it = med(record["trl"]), med(record["ours"])
    trl_gen, ours_gen = med(record["trl_gen"]), med(record["ours_gen"])
    for name, it, gen in (("TRL GRPOTrainer", trl_it, trl_gen), ("ours", ours_it, ours_gen)):
        print(f"  {name:16s} iteration {it:6.3f} s   generation {gen:6.3f} s   update {it - gen:6.3f} s")
    target = 0.6 if args.tokens <= 16 else 0.5
    print(f"ratio ours / TRL {ours_it / trl_it:.3f}   (target <= {target})")


if __name__ == "__main__":
    main()
