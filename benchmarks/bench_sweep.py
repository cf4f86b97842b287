"""Overhead of the sweep layer, measured side by side in one run and printed as ratios.

1. Launch to first training step, per job: the same smoke job (2 steps of the tiny policy, warm start given) started
   as a bare trainer process (``experiments.local.run`` from ``python -c``: no sweep layer, no tracking; the baseline,
   not a front end), as ``python sweep.py`` (Hydra, validation, MLflow
   run in a SQLite store) and as a one-job ``python sweep.py -m hydra/launcher=submitit_local`` sweep (plus the
   sweeper's plan, a submitit process and the ``mlflow server`` the sweep starts). The clock runs from process start
   to the first metrics record in the run directory (evaluation at step 0 plus step 0: the same work everywhere).
2. MLflow logging per step: the same in-process run (``experiments.local.run``, 20 steps, evaluation at the ends) with
   no tracker, with ``MlflowRunLogger`` on a SQLite file and on an ``mlflow server``; total time ratios and the time
   of one ``log_metrics`` call against a mean step. Variants are interleaved over rounds (medians reported), since
   the shared development machine's load drifts.

    .venv/bin/python benchmarks/bench_sweep.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EASY = {"max_number": 5, "max_target": 12}  # the smoke preset's task (sweeps/task/countdown_easy.yaml)
SMOKE = dict(
    task_knobs=EASY, steps=2, sft_steps=20, prompts_per_step=2, rollouts_per_prompt=2, mini_batches=1,
    max_new_tokens=12, train_pool=50, eval_interval=1, eval_prompts=2, eval_k=2, ckpt_interval=1, threads=1,
)  # fmt: skip


# The trainer alone in a process: the config JSON file, the run directory.
DIRECT = (
    "import json, sys; from experiments.local import from_dict, run; "
    "run(from_dict(json.load(open(sys.argv[1]))).validate(), run_dir=sys.argv[2], progress=False)"
)


def policy_dir() -> str:
    """A warm-started tiny policy (cached in EAD_CACHE; the same recipe as the tests' tiny_policy_dir)."""
    from experiments.local.warmstart import WarmStartConfig, warm_start

    cfg = WarmStartConfig(task_knobs=EASY, steps=120, batch_size=32, size="tiny", n_train=4000)
    return str(warm_start(cfg, progress=False))


def _first_record_s(cmd: list[str], cwd: Path, watch: Path, timeout: float = 600) -> tuple[float, float]:
    """(seconds to the first metrics.jsonl record under ``watch``, seconds to exit) of ``cmd``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None
    while proc.poll() is None and time.perf_counter() - t0 < timeout:
        if first is None and any(p.stat().st_size > 0 for p in watch.rglob("metrics.jsonl")):
            first = time.perf_counter() - t0
        time.sleep(0.05)
    err = proc.communicate(timeout=60)[1] if proc.poll() is not None else ""
    if proc.returncode != 0:
        proc.kill()
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{(err or '')[-3000:]}")
    total = time.perf_counter() - t0
    return (first if first is not None else total), total


def launch_overhead(policy: str, rounds: int, work: Path) -> dict[str, list[float]]:
    cfg_file = work / "smoke.json"
    cfg_file.write_text(json.dumps({**SMOKE, "init_from": policy}))
    py = sys.executable
    sweep_args = ["experiment=smoke", f"init_from={policy}", "sampling=ead", "force=true", f"runs_root={work / 'runs'}"]
    out: dict[str, list[float]] = {"direct": [], "sweep.py": [], "sweep.py -m submitit_local": []}
    # One-off costs outside the clock: the SQLite store's schema and the experiment.
    from experiments.tracking import ensure_experiment, make_client

    uri = f"sqlite:///{work / 'mlflow.db'}"
    ensure_experiment(make_client(uri), "smoke", uri)
    for r in range(rounds):
        run_dir = work / f"direct{r}"
        cmd = [py, "-c", DIRECT, str(cfg_file), str(run_dir)]
        out["direct"].append(_first_record_s(cmd, work, run_dir)[0])
        root = work / f"runs{r}"
        args = [a if not a.startswith("runs_root=") else f"runs_root={root}" for a in sweep_args]
        out["sweep.py"].append(_first_record_s([py, str(ROOT / "sweep.py"), *args], work, root)[0])
        root = work / f"mruns{r}"
        args = [a if not a.startswith("runs_root=") else f"runs_root={root}" for a in sweep_args]
        cmd = [py, str(ROOT / "sweep.py"), "-m", *args, "hydra/launcher=submitit_local", "hydra.sweeper.poll_s=0.5"]
        out["sweep.py -m submitit_local"].append(_first_record_s(cmd, work, root)[0])
    return out


class TimedLogger:
    """Wraps a RunLogger and times its log_metrics calls."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        t0 = time.perf_counter()
        self.inner.log_metrics(metrics, step)
        self.calls.append(time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def logging_cost(policy: str, rounds: int, work: Path) -> dict[str, Any]:
    import torch

    from experiments.local import from_dict, run
    from experiments.tracking import MlflowRunLogger, make_client
    from experiments.tracking.server import mlflow_server

    torch.set_num_threads(1)
    cfg = from_dict({**SMOKE, "init_from": policy, "steps": 20, "eval_interval": 100})
    db = work / "bench.db"
    totals: dict[str, list[float]] = {"none": [], "sqlite": [], "server": []}
    per_call: dict[str, list[float]] = {"sqlite": [], "server": []}
    step_s: list[float] = []
    with mlflow_server(f"sqlite:///{work / 'server.db'}", work / "artifacts", log_path=work / "server.log") as (url, _):
        clients = {"sqlite": make_client(f"sqlite:///{db}"), "server": make_client(url)}
        exps = {k: c.create_experiment(f"bench-{k}") for k, c in clients.items()}
        run(cfg, run_dir=work / "warmup", progress=False)  # imports, first-call costs
        for r in range(rounds):
            for variant in ("none", "sqlite", "server"):
                logger = None
                if variant != "none":
                    c = clients[variant]
                    logger = TimedLogger(MlflowRunLogger(c, c.create_run(exps[variant]).info.run_id))
                run_dir = work / f"{variant}{r}"
                t0 = time.perf_counter()
                run(cfg, run_dir=run_dir, logger=logger, progress=False)
                totals[variant].append(time.perf_counter() - t0)
                if logger is not None:
                    logger.finish()
                    per_call[variant].extend(logger.calls)
                else:
                    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
                    step_s.extend(x["perf/step_s"] for x in recs if x.get("perf/step_s") is not None)
    return {"totals": totals, "per_call": per_call, "step_s": step_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("EAD_CACHE", str(Path.home() / ".cache" / "ead-harness"))
    med = statistics.median
    policy = policy_dir()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        work = Path(tmp)
        launch = launch_overhead(policy, args.rounds, work)
        cost = logging_cost(policy, args.rounds, work)
    base = med(launch["direct"])
    print(f"# bench_sweep: {args.rounds} rounds, {os.cpu_count()} CPUs, load average {load:.1f} at start")
    print("\n## launch to first training step (smoke job, medians)")
    for name, values in launch.items():
        print(f"{name:28s} {med(values):7.1f} s   ratio to direct {med(values) / base:5.2f}   (runs: {values!r})")
    t = cost["totals"]
    print("\n## MLflow logging per step (20-step tiny run, in-process, medians)")
    print(f"mean training step (no tracker)   {1000 * statistics.fmean(cost['step_s']):7.1f} ms")
    for variant in ("sqlite", "server"):
        call = med(cost["per_call"][variant])
        print(
            f"{variant:7s} run time ratio to none {med(t[variant]) / med(t['none']):5.2f}   "
            f"log_metrics {1000 * call:6.1f} ms/step = {call / statistics.fmean(cost['step_s']):5.1%} of a step"
        )
    print(f"(run totals s: {json.dumps({k: [round(x, 2) for x in v] for k, v in t.items()})})")


if __name__ == "__main__":
    main()
