"""How the local backend's cost grows: RL step time against batch rows, response length and model size, next to the
sweeper's cost model (experiments/sweep/projection.py), and the projected wall time of whole presets on one 2-core
machine against a Slurm array of N such machines.

Method. One axis varies at a time around a centre point (tiny policy, 128 rows = 16 prompts x 8 rollouts, 64
tokens): rows 64-512, response length 16-192 (the policy's context is 256), size tiny / small / base. Each point is a
fresh ``Trainer`` on a randomly initialised policy of that size whose EOS logit is suppressed (a hook on the LM head),
so every response is exactly ``max_new_tokens`` long and a point's work is rows x tokens whatever the weights; GRPO,
4 optimizer steps per RL step, fixed temperature 1.0 (EAD costs the same: benchmarks/bench_rollout.py). One
warm-up step, then the median of ``--repeats`` steps. The model column is the projection's per-step estimate for the
same point with responses of full length; the ratio measured / model says how far the sweeper's printed projection
is off on this machine now (it was calibrated on a quiet machine: a busy one reads > 1 in proportion to its load).

Projections: ``experiments.sweep.projection.project`` over each preset's planned jobs, ``parallel`` = 2 cores per
machine x N machines (a Slurm array runs one job per core; jobs sharing a warm start wait for it).

    .venv/bin/python benchmarks/bench_cost.py [--repeats 2] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by OpenMP when torch loads (see bench_contention.py)

import pandas as pd
import torch

from experiments.local import Trainer, from_dict
from experiments.local.policy import build_policy, never_end, save_policy
from experiments.sweep.projection import hms, project, rl_step_seconds
from experiments.tracking.loggers import JsonlLogger

ROOT = Path(__file__).resolve().parents[1]
CENTRE = {"size": "tiny", "rows": 128, "tokens": 64}
AXES = {"rows": [64, 128, 256, 512], "tokens": [16, 64, 128, 192], "size": ["tiny", "small", "base"]}
QUICK_AXES = {"rows": [64, 128, 256], "tokens": [16, 64, 128], "size": ["tiny", "small"]}


def points(axes: dict[str, list]) -> list[dict]:
    """The centre point and one-axis variations around it, each once."""
    out: list[dict] = []
    for axis, values in axes.items():
        for v in values:
            p = {**CENTRE, axis: v}
            if p not in out:
                out.append(p)
    return out


def step_seconds(point: dict, repeats: int, root: Path) -> float:
    """Median seconds of one RL step at ``point`` (after one warm-up step)."""
    model, tok = build_policy(point["size"], seed=0)
    policy = save_policy(model, tok, root / f"policy-{point['size']}")
    cfg = from_dict(
        {
            "init_from": str(policy),
            "size": point["size"],
            "prompts_per_step": point["rows"] // 8,
            "rollouts_per_prompt": 8,
            "mini_batches": 4,
            "max_new_tokens": point["tokens"],
            "sampling": {"kind": "fixed", "tau": 1.0},
            "task": "countdown",
            "threads": 1,
        }
    ).validate()
    run_dir = root / f"run-{point['size']}-{point['rows']}-{point['tokens']}"
    trainer = Trainer(cfg, run_dir, JsonlLogger(run_dir))
    never_end(trainer.model, tok.eos_token_id)
    times = []
    for s in range(repeats + 1):
        t0 = time.perf_counter()
        trainer.train_step(s)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def preset_projections(presets: list[str], machines: list[int]) -> pd.DataFrame:
    """Projected wall time of each preset on N 2-core machines (planned as ``sweep.py -m experiment=P`` plans it)."""
    sys.path.insert(0, str(ROOT))  # run as a script, benchmarks/ is on the path, not the repository root
    from tests.sweep.helpers import plan  # the sweeper's real plan (compose, validate, dedup), nothing launched

    rows = []
    for preset in presets:
        jobs = [pj.job for pj in plan([f"experiment={preset}"]) if pj.skip is None]
        local = [job.config for job in jobs if (job.backend, job.kind) == ("local", "train")]  # as the sweeper counts
        for n in machines:
            _, wall = project(local, parallel=2 * n)
            rows.append({"preset": preset, "jobs": len(local), "machines": n, "cores": 2 * n, "wall": hms(wall)})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smaller grid (no base model, no 512 rows / 192 tokens)")
    ap.add_argument("--machines", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--presets", nargs="+", default=["reproduction", "paper_grid", "default"])
    ap.add_argument("--projections-only", action="store_true", help="skip the measured grid")
    args = ap.parse_args()
    if args.projections_only:
        print(preset_projections(args.presets, args.machines).to_markdown(index=False))
        return
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]

    grid = points(QUICK_AXES if args.quick else AXES)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for i, p in enumerate(grid, 1):
            measured = step_seconds(p, args.repeats, Path(d))
            model = rl_step_seconds(p["rows"], p["tokens"], p["size"])  # full-length responses, one epoch
            rows.append({**p, "step_s": round(measured, 2), "model_s": round(model, 2), "ratio": measured / model})
            print(f"[{i}/{len(grid)}] {p}: {measured:.2f} s per step (model {model:.2f} s)", flush=True)
    table = pd.DataFrame(rows)
    table["ratio"] = table["ratio"].round(2)
    print(
        f"\ntorch {torch.__version__}, {args.threads} thread(s), OMP_WAIT_POLICY {os.environ['OMP_WAIT_POLICY']}, "
        f"median of {args.repeats} step(s) after 1 warm-up; load avg (1 min) at start {load_start:.2f}, "
        f"at end {os.getloadavg()[0]:.2f}\n"
    )
    print(table.to_markdown(index=False))
    print(
        "\nprojected wall time (experiments/sweep/projection.py; quiet machines, one job per core; warm starts already"
        " in this machine's cache count as free):\n"
    )
    print(preset_projections(args.presets, args.machines).to_markdown(index=False))


if __name__ == "__main__":
    main()
