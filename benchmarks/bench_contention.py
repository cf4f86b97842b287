"""An RL step alone and next to competing processes, per thread setting: does it degrade in proportion or collapse?

Each condition runs in a fresh process (OpenMP reads ``OMP_WAIT_POLICY`` when torch loads, so it must be in the
environment before the import): ``--threads`` torch threads, the OpenMP wait policy (unset = the runtime's default,
which spins before sleeping, or PASSIVE), alone and then with ``--load`` competitors. A competitor is either a busy
single-threaded numpy loop (``--competitor burn``) or another RL job with the same settings (``--competitor rl``:
the case of several sweep jobs on one machine). The job is the local backend's RL step on the warm-started tiny
countdown policy (fixed temperature 1, 16 prompts x 8 rollouts, 16 tokens, 4 optimizer steps).

Printed per condition: the median step (s) alone and loaded, and the slowdown loaded / alone next to the fair share
``(own threads + competing threads) / cores`` (at least 1): a slowdown near the fair share is proportional, one far
above it is a collapse. The machine's load average is printed at the start and the end (other users' processes count:
on a busy machine "alone" is not alone, so every number is pessimistic).

    .venv/bin/python benchmarks/bench_contention.py [--threads 1 2] [--policies default PASSIVE] [--load 1]
        [--competitor burn|rl] [--steps 3] [--tokens 16]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _config(tokens: int) -> dict[str, Any]:
    return {
        "task": "countdown",
        "max_new_tokens": tokens,
        "sampling": {"kind": "fixed", "tau": 1.0},
        "steps": 10**6,
        "eval_interval": 10**6,
    }


def child(steps: int, tokens: int, forever: bool) -> None:
    """Run RL steps in this process and print one JSON line (median step wall time, CPU time per step)."""
    import tempfile

    import torch

    from experiments.local.config import from_dict
    from experiments.local.train import Trainer
    from experiments.tracking.loggers import JsonlLogger

    threads = int(os.environ.get("BENCH_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    cfg = from_dict(_config(tokens)).validate()
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(cfg, Path(d), JsonlLogger(d))
        trainer.train_step(0)  # warm-up
        wall, cpu = [], []
        s = 1
        while forever or s <= steps:
            t0, c0 = time.perf_counter(), time.process_time()
            trainer.train_step(s)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            s += 1
    print(json.dumps({"step_s": statistics.median(wall), "cpu_s": statistics.median(cpu), "steps": len(wall)}))


def _burn(stop: Any) -> None:
    """A competing process: single-threaded matrix products until told to stop."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import numpy as np

    a = np.random.default_rng(0).random((256, 256))
    while not stop.is_set():
        a = (a @ a) / 256.0


def _env(threads: int, policy: str) -> dict[str, str]:
    env = dict(os.environ, BENCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    return env


def _measure(threads: int, policy: str, steps: int, tokens: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", "--steps", str(steps), "--tokens", str(tokens)]
    out = subprocess.run(cmd, env=_env(threads, policy), capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads of the measured job")
    ap.add_argument("--policies", nargs="+", default=["default", "PASSIVE"], help="OMP_WAIT_POLICY values")
    ap.add_argument("--load", type=int, default=1, help="competing processes in the loaded condition")
    ap.add_argument("--competitor", choices=["burn", "rl"], default="burn")
    ap.add_argument("--steps", type=int, default=3, help="measured RL steps per condition (after one warm-up)")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--forever", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.steps, args.tokens, args.forever)
        return
    for p in args.policies:
        if p not in ("default", "PASSIVE", "ACTIVE"):
            raise SystemExit(f"--policies must be among default, PASSIVE, ACTIVE; got {p!r}")
    if min(args.threads) < 1 or args.load < 0 or args.steps < 1:
        raise SystemExit("--threads must be >= 1, --load >= 0, --steps >= 1")

    from experiments.local.config import from_dict
    from experiments.local.warmstart import warm_start

    warm_start(from_dict(_config(args.tokens)).validate().warmstart(), progress=False)  # cached before timing
    cores = os.cpu_count() or 1
    load0 = os.getloadavg()
    print(
        f"{cores} cores; competitor: {args.load} x {args.competitor}; {args.steps} steps per condition; "
        f"load avg at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}"
    )
    print(f"{'threads':>7s} {'OMP_WAIT_POLICY':>15s} {'alone s':>8s} {'loaded s':>8s} {'slowdown':>8s} {'fair':>5s}")
    for threads in args.threads:
        for policy in args.policies:
            alone = _measure(threads, policy, args.steps, args.tokens)
            stop = mp.Event()
            procs: list[Any] = []
            if args.competitor == "burn":
                procs = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(args.load)]
                for p in procs:
                    p.start()
                competing_threads = args.load
            else:
                cmd = [sys.executable, __file__, "--child", "--forever", "--tokens", str(args.tokens)]
                env = _env(threads, policy)
                procs = [
                    subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for _ in range(args.load)
                ]
                competing_threads = args.load * threads
                time.sleep(15)  # let them pass their imports and warm-up, so they compete during the measured steps
            try:
                loaded = _measure(threads, policy, args.steps, args.tokens)
            finally:
                stop.set()
                for p in procs:
                    if isinstance(p, subprocess.Popen):
                        p.terminate()
                        p.wait(timeout=30)
                    else:
                        p.join(timeout=5)
            fair = max(1.0, (threads + competing_threads) / cores)
            slow = loaded["step_s"] / alone["step_s"]
            print(
                f"{threads:7d} {policy:>15s} {alone['step_s']:8.3f} {loaded['step_s']:8.3f} {slow:8.2f} {fair:5.2f}",
                flush=True,
            )
    load1 = os.getloadavg()
    print(f"load avg at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
