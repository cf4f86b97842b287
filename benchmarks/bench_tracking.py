"""Many jobs logging to one sweep server, with the server killed and restarted in the middle: throughput, the latency
of one log call, and lost or duplicated steps (both must be 0).

Method. For each N in ``--writers`` (default 4, 8, 16): N writer processes (this file with ``--writer``, real
subprocesses) log to ONE ``mlflow server`` in front of a fresh SQLite store, started as the sweeper starts it
(``experiments.tracking.server.supervised_mlflow_server`` on 127.0.0.1: a health-checking supervisor that restarts
it on the same store and port). Each writer opens its run as every job does (``TrackedRun.open``: run-directory
lock, tags, params, end-state guard; steps delivered by ``MlflowRunLogger``'s background thread, which holds them
while the server is away) and logs through the trainer's ``MultiLogger(JsonlLogger, MLflow)``: ``--steps`` steps of
``--step-s`` seconds of "training" (a sleep), each one ``log_metrics`` call with 12 metrics (a training step's
keys). Writers start together (a barrier file). Once the slowest writer has logged a quarter of its steps, the
server's process group is SIGKILLed (a crash, as the OOM killer would do it); the supervisor notices and starts it
again. After every writer has exited, every run is read back from the server.

Reported per N: aggregate steps per second while the writers log (N x steps / time from the barrier to the last
writer's last log call) and end to end (until the last writer exits: every step delivered, every run FINISHED); p50
and p99 of one ``log_metrics`` call over all writers (what a training loop waits for: the JSONL line with its fsync
plus queueing for delivery); how long the server was away; lost steps (expected (run, metric, step) points missing
in the server) and duplicated ones (present more than once). Load average at the start and the end of each N.

    .venv/bin/python benchmarks/bench_tracking.py [--writers 4 8 16] [--steps 200] [--step-s 0.1]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEYS = [
    "train/reward_mean", "train/response_length", "train/entropy", "train/pg_clipfrac", "train/grad_norm",
    "train/is_weight_mean", "train/is_weight_max", "train/is_truncated_frac", "train/is_ess", "train/kl_behavior_old",
    "perf/tokens_per_s", "perf/step_s",
]  # fmt: skip
EXPERIMENT = "bench-tracking"


def writer(uri: str, experiment_id: str, index: int, work: Path, steps: int, step_s: float) -> None:
    """One job: open its run like every job, wait for the others, log ``steps`` steps; write its timings as JSON."""
    from experiments.tracking import JsonlLogger, MultiLogger, RunIdentity, TrackedRun

    run_dir = work / f"run{index}"
    identity = RunIdentity(EXPERIMENT, f"{index:012x}", "local", f"writer-{index}")
    tracked = TrackedRun(identity, run_dir, uri=uri, experiment_id=experiment_id, source="bench_tracking.py")
    latencies, first, last = [], 0.0, 0.0
    with tracked.open(params={"index": index, "steps": steps, "step_s": step_s}) as mlflow_logger:
        logger = MultiLogger(JsonlLogger(run_dir), mlflow_logger)  # as experiments.local.train does
        (work / f"ready{index}").touch()
        while not (work / "go").exists():
            time.sleep(0.01)
        first = time.time()
        for step in range(steps):
            time.sleep(step_s)
            metrics = {k: float(index + step + i / 100) for i, k in enumerate(KEYS)}
            t0 = time.perf_counter()
            logger.log_metrics(metrics, step)
            latencies.append(time.perf_counter() - t0)
        last = time.time()
    # tracked.open's exit delivered every held step and ended the run FINISHED
    out = {"run_id": tracked.run_id, "latencies": latencies, "first": first, "last": last, "exit": time.time()}
    (work / f"writer{index}.json").write_text(json.dumps(out))


def logged(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def one_round(n: int, steps: int, step_s: float, tmp: Path) -> dict[str, Any]:
    from experiments.tracking import ensure_experiment, make_client, search_all_runs
    from experiments.tracking.server import supervised_mlflow_server

    work = tmp / f"n{n}"
    work.mkdir()
    store = f"sqlite:///{work / 'mlflow.db'}"
    ensure_experiment(make_client(store), EXPERIMENT, store)  # the sweeper makes the experiment before the server
    load0 = os.getloadavg()[0]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with supervised_mlflow_server(store, work / "artifacts", log_path=work / "server.log") as srv:
        experiment_id = str(make_client(srv.url).get_experiment_by_name(EXPERIMENT).experiment_id)
        cmd = [sys.executable, __file__, "--writer", srv.url, experiment_id]
        procs = []
        for i in range(n):
            with open(work / f"writer{i}.log", "wb") as log:
                procs.append(subprocess.Popen([*cmd, str(i), str(work), str(steps), str(step_s)], env=env,
                                              stdout=log, stderr=subprocess.STDOUT))  # fmt: skip

        def wait(done: Any, what: str, timeout: float = 600) -> None:
            deadline = time.monotonic() + timeout
            while not done():
                failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
                if failed or time.monotonic() > deadline:
                    logs = "".join((work / f"writer{i}.log").read_text()[-3000:] for i in failed)
                    raise RuntimeError(f"N={n}: writers {failed} failed or timed out waiting for {what}:\n{logs}")
                time.sleep(0.05)

        wait(lambda: all((work / f"ready{i}").exists() for i in range(n)), "every writer's run")
        (work / "go").touch()
        wait(lambda: min(logged(work / f"run{i}") for i in range(n)) >= steps // 4, "a quarter of the steps")
        first_pid = srv.process.pid
        os.killpg(first_pid, signal.SIGKILL)  # the server and its workers
        killed = time.monotonic()
        wait(lambda: srv.restarts >= 1 and srv.process.pid != first_pid, "the supervisor's restart")
        away_s = time.monotonic() - killed
        wait(lambda: all(p.poll() is not None for p in procs), "every writer's end", timeout=3600)
        results = [json.loads((work / f"writer{i}.json").read_text()) for i in range(n)]
        client = make_client(srv.url)
        runs = search_all_runs(client, [experiment_id])
        lost = dup = 0
        for r in results:
            for key in KEYS:
                counts = collections.Counter(m.step for m in client.get_metric_history(r["run_id"], key))
                lost += sum(1 for s in range(steps) if counts[s] == 0)
                dup += sum(c - 1 for c in counts.values() if c > 1) + sum(1 for s in counts if not 0 <= s < steps)
        unfinished = [r.info.run_id for r in runs if r.info.status != "FINISHED"]
    start = min(r["first"] for r in results)
    lat = sorted(x for r in results for x in r["latencies"])
    return {
        "n": n,
        "logging_steps_per_s": n * steps / (max(r["last"] for r in results) - start),
        "end_to_end_steps_per_s": n * steps / (max(r["exit"] for r in results) - start),
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "away_s": away_s,
        "runs": len(runs),
        "unfinished": len(unfinished),
        "lost": lost,
        "duplicated": dup,
        "points": n * steps * len(KEYS),
        "load": (load0, os.getloadavg()[0]),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        uri, experiment_id, index, work, steps, step_s = sys.argv[2:8]
        writer(uri, experiment_id, int(index), Path(work), int(steps), float(step_s))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writers", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--step-s", type=float, default=0.1)
    args = ap.parse_args()
    import experiments.tracking  # noqa: F401 - MLflow telemetry off for this process and its children

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        for n in args.writers:
            rows.append(one_round(n, args.steps, args.step_s, Path(tmp)))
            r = rows[-1]
            print(f"  N={n}: done ({r['lost']} lost, {r['duplicated']} duplicated)", file=sys.stderr, flush=True)
    print(f"# bench_tracking: {args.steps} steps of {args.step_s} s per writer, {len(KEYS)} metrics per step, one "
          f"server kill + supervised restart per N; {os.cpu_count()} CPUs")  # fmt: skip
    print("| writers | steps/s logging | steps/s end to end | log call p50 | log call p99 | server away | "
          "runs FINISHED | lost | duplicated | load avg (start, end) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['logging_steps_per_s']:.1f} | {r['end_to_end_steps_per_s']:.1f} | {r['p50_ms']:.2f} ms "
            f"| {r['p99_ms']:.2f} ms | {r['away_s']:.0f} s | {r['runs'] - r['unfinished']}/{r['n']} | "
            f"{r['lost']} of {r['points']} | {r['duplicated']} | {r['load'][0]:.1f}, {r['load'][1]:.1f} |"
        )
    if any(r["lost"] or r["duplicated"] or r["unfinished"] or r["runs"] != r["n"] for r in rows):
        sys.exit("LOST, DUPLICATED OR UNFINISHED RUNS")


if __name__ == "__main__":
    main()
