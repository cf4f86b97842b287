"""Loading and drawing everything from a large MLflow store, against a plain ``mlflow.search_runs`` (the floor).

Generates a SQLite MLflow store of RUNS training runs x STEPS steps x 12 metrics (``log_batch``, as the sweeps log):
4 samplers (EAD, fixed 0.6 / 1.0 / 1.2) x 2 algorithms x TIS on/off x 3 rollout counts, EAD with 3 decay lengths,
seeds filling the rest. Then, in one process and with a warm MLflow client:

- floor: ``mlflow.search_runs`` of the experiment (one row per run, params and last metric values);
- load: ``load_runs`` + ``load_metrics`` of the 12 keys (every point: RUNS x STEPS x 12);
- all: ``analysis.figures.make_figures`` (load, every figure as PNG + PDF, the tables), caches cleared first.

    .venv/bin/python benchmarks/bench_analysis.py                 # 200 runs x 500 steps (target: all <= 20 s)
    .venv/bin/python benchmarks/bench_analysis.py --runs 20 --steps 50 --store /tmp/bench-store   # reuse a store
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

TRAIN = ["train/reward_mean", "train/response_length", "train/entropy", "train/pg_clipfrac", "train/grad_norm",
         "train/is_weight_mean", "perf/step_s"]  # fmt: skip
# The common decoder's metrics: what the figures show by default (the own sampler's eval/* would double the store).
EVAL = [f"eval_t1/{m}_at_16" for m in ("pass", "worst", "mean", "boot_best", "boot_worst")]
SAMPLERS = [("ead", 1.0), ("fixed", 0.6), ("fixed", 1.0), ("fixed", 1.2)]


def params_of(i: int) -> dict[str, str]:
    """The i-th run's config: every axis cycles, so each figure family has something to draw."""
    kind, tau = SAMPLERS[i % 4]
    return {
        "sampling.kind": kind,
        "sampling.tau": str(tau),
        "sampling.d0": str([8, 4, 16][(i // 48) % 3]) if kind == "ead" else "8",
        "sampling.d_growth": "0.2",
        "sampling.d_cap": "40000",
        "algorithm.name": ["grpo", "dapo"][(i // 4) % 2],
        "size": "tiny",
        "tis.enabled": ["true", "false"][(i // 8) % 2],
        "tis.level": "token",
        "rollouts_per_prompt": str([8, 4, 16][(i // 16) % 3]),
        "eval_k": "16",
        "seed": str(i // 144),
        "config_hash": f"bench{i:05d}",
    }


def generate(uri: str, runs: int, steps: int) -> float:
    """Create the experiment 'bench' with ``runs`` finished runs; return the seconds it took."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    t0 = time.perf_counter()
    client = MlflowClient(uri)
    exp = client.create_experiment("bench")
    rng = np.random.default_rng(0)
    s = np.arange(steps)
    keys = TRAIN + EVAL
    for i in range(runs):
        p = params_of(i) | {"steps": str(steps), "eval_interval": "1"}
        run_id = client.create_run(exp, run_name=f"bench-{i}", tags={"config_hash": p["config_hash"]}).info.run_id
        client.log_batch(run_id, params=[Param(k, v) for k, v in p.items()], tags=[RunTag("backend", "local")])
        level = 0.3 + 0.1 * (p["sampling.kind"] == "ead") + 0.05 * rng.standard_normal()
        curves = level + 0.2 * (1 - np.exp(-s / max(steps / 4, 1)))[None, :] + 0.02 * rng.standard_normal((12, steps))
        metrics = [Metric(k, float(np.clip(v, 0, 1)), 1_700_000_000_000 + int(t), int(t))
                   for k, row in zip(keys, curves) for t, v in zip(s, row)]  # fmt: skip
        for j in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[j : j + 1000])
        client.set_terminated(run_id, "FINISHED")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--store", default=None, help="directory of the store (reused if it holds one; default: temp)")
    ns = ap.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    root = Path(ns.store) if ns.store else Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        return measure(root, ns.runs, ns.steps)
    finally:
        if not ns.store:  # a generated store is ~1.7 MB per run: not left behind
            shutil.rmtree(root, ignore_errors=True)


def measure(root: Path, n_runs: int, steps: int) -> int:
    """Generate the store in ``root`` if it has none, time the floor, the load and everything, print the table."""
    import mlflow
    from mlflow import MlflowClient

    from analysis.figures import make_figures
    from analysis.mlflow_loader import clear_cache, load_metrics, load_runs

    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)  # creates / migrates the database: not part of any timing
    if client.get_experiment_by_name("bench") is None:
        gen = generate(uri, n_runs, steps)
        print(f"store: {n_runs} runs x {steps} steps x {len(TRAIN + EVAL)} metrics, generated in {gen:.1f} s")
    else:
        print(f"store: reusing {root}")

    t0 = time.perf_counter()
    floor = mlflow.search_runs(experiment_names=["bench"])
    t_floor = time.perf_counter() - t0

    clear_cache()
    t0 = time.perf_counter()
    runs = load_runs("bench", client=client)
    long = load_metrics("bench", TRAIN + EVAL, runs=runs, client=client)
    t_load = time.perf_counter() - t0

    clear_cache()
    t0 = time.perf_counter()
    report = make_figures("bench", root / "figures", uri, log_run=False)
    t_all = time.perf_counter() - t0

    print(f"runs: {len(floor)} (search_runs), {len(runs)} (load_runs); points loaded: {len(long):,}")
    print(f"figures made: {len(report.made)} ({', '.join(report.made)}); missing: {sorted(report.missing) or 'none'}")
    print(f"{'what':<40} {'seconds':>8} {'x floor':>8}")
    for what, t in [
        ("mlflow.search_runs (floor)", t_floor),
        ("load_runs + load_metrics (12 keys)", t_load),
        ("make_figures: load + draw all + tables", t_all),
    ]:
        print(f"{what:<40} {t:>8.2f} {t / t_floor:>8.1f}")
    print(f"target <= 20 s for everything: {'met' if t_all <= 20 else 'NOT met'} ({t_all:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
