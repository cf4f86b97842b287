"""Shared helpers of the sweep tests: run sweep.py for real, plan sweeps in-process, read MLflow back."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.fixtures.services import REPO_ROOT, environment_with_repo_on_path

SWEEP = REPO_ROOT / "sweep.py"
SWEEPS = REPO_ROOT / "sweeps"
PRESETS = sorted(p.stem for p in (SWEEPS / "experiment").glob("*.yaml"))
# The beyond-the-paper presets: they log into one shared experiment, `beyond`, where their common conditions run once.
BEYOND = ("reverse", "growth_ablation", "cap_ablation", "adaptive", "decision_position", "matched_entropy")
# Brief section 7: every backend logs these (eval names with the run's eval_k; 2 in the smoke preset).
TRAIN_KEYS = [
    "train/reward_mean", "train/response_length", "train/entropy", "train/pg_clipfrac", "train/grad_norm",
    "train/is_weight_mean", "train/is_weight_max", "train/is_truncated_frac", "train/is_ess", "train/kl_behavior_old",
    "perf/tokens_per_s", "perf/step_s",
]  # fmt: skip
EVAL_KEYS = [
    "eval/pass_at_2", "eval/worst_at_2", "eval/best_at_2", "eval/mean_at_2", "eval/boot_best_at_2",
    "eval/boot_worst_at_2", "eval_t1/pass_at_2", "eval_t1/worst_at_2", "eval_greedy/accuracy",
]  # fmt: skip
TAGS = ["config_hash", "git_commit", "backend", "slurm_job_id", "host"]


def smoke(policy_dir: str, *extra: str) -> list[str]:
    """Overrides of the smoke preset starting from the session's warm-started tiny policy (no warm start in jobs)."""
    return ["experiment=smoke", f"init_from={policy_dir}", *extra]


def sweep_env() -> dict[str, str]:
    env = environment_with_repo_on_path()
    env.pop("MLFLOW_TRACKING_URI", None)  # the sweep takes its URI from the config only
    return env


def run_sweep(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python sweep.py ARGS`` in ``cwd``, waited for; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, str(SWEEP), *args], cwd=cwd, env=sweep_env(), capture_output=True, text=True, timeout=timeout
    )


def start_sweep(args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python sweep.py ARGS`` in the background, output to ``log``; ``env`` defaults to :func:`sweep_env`."""
    out = open(log, "ab")  # noqa: SIM115 - closed when the process is reaped (the test owns it)
    cmd = [sys.executable, str(SWEEP), *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env or sweep_env(), stdout=out, stderr=out)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def jsonl_steps(run_dir: Path) -> int:
    """Number of complete metric records in a run directory's metrics.jsonl (0 when absent)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.endswith("}"))


def sqlite_run_status(db: Path, run_id: str) -> str | None:
    """A run's status read straight from an MLflow SQLite file (read-only; safe while a server writes it)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
        row = con.execute("SELECT status FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
    return row[0] if row else None


def client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_of(uri: str, experiment: str) -> list[Any]:
    """All runs of an experiment (any status), oldest first; [] when the experiment does not exist."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(reversed(c.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])))


def steps(uri: str, run_id: str, key: str) -> list[int]:
    """Steps of a metric's history in logging order (duplicates kept: a step logged twice shows twice)."""
    return [m.step for m in client(uri).get_metric_history(run_id, key)]


@contextmanager
def sweeper(overrides: list[str]) -> Iterator[Any]:
    """The real EAD sweeper for ``sweep.py -m OVERRIDES``, set up in-process through Hydra's own plugin machinery (for
    planning only: compose, validate, deduplicate; nothing is launched)."""
    os.environ["EAD_ROOT"] = str(REPO_ROOT)
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext, RunMode

    from experiments.sweep.jobs import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        # The master config of a multirun, composed as `sweep.py -m` composes it (sweep values allowed).
        cfg = loader.load_configuration("config", overrides, run_mode=RunMode.MULTIRUN, from_shell=False)
        ctx = HydraContext(config_loader=loader, callbacks=Callbacks(cfg))
        yield Plugins.instance().instantiate_sweeper(hydra_context=ctx, task_function=lambda c: None, config=cfg)


def plan(overrides: list[str], create_experiments: bool = False) -> list[Any]:
    """The sweeper's plan for ``sweep.py -m OVERRIDES`` (list of PlannedJob)."""
    with sweeper(overrides) as sw:
        return sw.plan(overrides, create_experiments=create_experiments)


@contextmanager
def composed(overrides: list[str]) -> Iterator[Any]:
    """A job config composed as ``sweep.py OVERRIDES`` would (run mode), for calling the job function in-process."""
    os.environ["EAD_ROOT"] = str(REPO_ROOT)
    from hydra import compose, initialize_config_dir

    from experiments.sweep.jobs import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
        yield compose("config", overrides=overrides)
