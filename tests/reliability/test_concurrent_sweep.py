"""Six jobs at once through ``hydra/launcher=submitit_local`` into a fresh SQLite store, as a user runs them: MLflow
telemetry on in the environment the sweep starts from (no CI markers: the harness must turn it off itself; on, its
thread corrupted ``os.environ`` and failed a job), and the sweep's own ``mlflow server`` SIGKILLed once the first steps
have landed (the supervisor restarts it on the same store and port; the jobs hold their steps and deliver them). One
sweep covers both, to keep CI short. Nothing is lost: no job failed or restarted, every run FINISHED in the
sweep's experiment, each step exactly once."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from experiments.tracking.store import store_answers
from tests.reliability.helpers import assert_nothing_lost, user_env
from tests.sweep.helpers import EVAL_KEYS, TRAIN_KEYS, smoke, start_sweep, wait_for

pytestmark = pytest.mark.slow

STEPS = 3  # the server is killed after a first step landed: the jobs still have steps and an evaluation to deliver
SEEDS = "0,1,2"  # x the smoke preset's two samplings: six jobs
JOBS = 6


def processes(*needles: str, under: int | None = None) -> dict[int, str]:
    """Live processes (pid -> command line) whose command line contains every one of ``needles``; with ``under``,
    only descendants of that pid."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        table[int(entry.name)] = (ppid, argv)

    def descends(pid: int) -> bool:
        seen = set()
        while pid in table and pid not in seen:
            seen.add(pid)
            pid = table[pid][0]
            if pid == under:
                return True
        return False

    return {pid: argv for pid, (_, argv) in table.items()
            if argv and all(n in argv for n in needles) and (under is None or descends(pid))}  # fmt: skip


def environ(pid: int) -> dict[str, str]:
    """The environment a process started with (what its parent gave it)."""
    raw = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def server_pid(db: Path) -> int | None:
    """The sweep's ``mlflow server`` for ``db``: the leader of its process group (the workers are in the group)."""
    leaders = [pid for pid in processes("mlflow", "server", "--backend-store-uri", str(db)) if _leads(pid)]
    return leaders[0] if len(leaders) == 1 else None


def _leads(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def landed(db: Path) -> tuple[int, int, int]:
    """(runs, runs FINISHED, train steps) in the SQLite store, read-only while the server writes it."""
    if not db.exists():
        return 0, 0, 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
            runs, done = con.execute("SELECT COUNT(*), COALESCE(SUM(status = 'FINISHED'), 0) FROM runs").fetchone()
            (train,) = con.execute("SELECT COUNT(*) FROM metrics WHERE key = 'train/reward_mean'").fetchone()
    except sqlite3.OperationalError:  # the store's tables are not made yet
        return 0, 0, 0
    return int(runs), int(done), int(train)


@pytest.mark.timeout(900)
def test_six_concurrent_jobs_with_telemetry_on_and_the_server_killed_mid_sweep_lose_nothing(
    tiny_policy_dir: str, tmp_path: Path
) -> None:
    db, log = tmp_path / "mlflow.db", tmp_path / "sweep.log"
    env = user_env()
    assert "MLFLOW_DISABLE_TELEMETRY" not in env and "CI" not in env and "PYTEST_CURRENT_TEST" not in env
    args = [
        "-m",
        *smoke(tiny_policy_dir, f"steps={STEPS}", "eval_interval=100", f"seed={SEEDS}"),
        "hydra/launcher=submitit_local",
        f"hydra.sweeper.max_batch_size={JOBS}",  # all six at once
        "tracking=sqlite",  # a fresh store in tmp_path, served to the jobs by the sweep's own supervised server
    ]
    t0 = time.monotonic()
    sweep = start_sweep(args, tmp_path, log, env=env)
    try:
        first = wait_for(lambda: server_pid(db), 180, "the sweep's mlflow server", interval=0.5)
        # Every job has made its run and a first training step has landed in the store: kill the server.
        wait_for(lambda: landed(db)[0] == JOBS and landed(db)[2] >= 1 or sweep.poll() is not None, 600,
                 "six runs and a first step in the store", interval=0.5)  # fmt: skip
        assert sweep.poll() is None, log.read_text()[-6000:]
        jobs = processes("submitit", under=sweep.pid)  # submitit's per-job controllers and the jobs themselves
        assert jobs, "no job process is running"
        runs, done, _ = landed(db)
        assert done < JOBS, "every job finished before the server was killed: raise STEPS"
        # The harness, not the environment, turned telemetry off, for the jobs and the server alike.
        for pid in [first, *jobs]:
            assert environ(pid).get("MLFLOW_DISABLE_TELEMETRY") == "true", (pid, processes(str(pid)))
        url = re.search(r"mlflow server for \S+ at (http://\S+) ", log.read_text()).group(1)
        os.killpg(first, signal.SIGKILL)  # the server and its workers, as the OOM killer would
        killed_at = time.monotonic()
        wait_for(lambda: not store_answers(url), 30, "the killed server to stop answering")
        again = wait_for(lambda: store_answers(url) and server_pid(db), 120, "the restarted server", interval=0.5)
        restart_s = time.monotonic() - killed_at
        assert again != first
        assert sweep.wait(timeout=600) == 0, log.read_text()[-6000:]
    finally:
        if sweep.poll() is None:  # a failed test: end the sweep, its jobs and its server (all started here)
            left = processes(under=sweep.pid)
            sweep.kill()
            sweep.wait()
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    print(f"sweep of {JOBS} jobs: {time.monotonic() - t0:.0f} s; server back {restart_s:.0f} s after the kill "
          f"(pid {first} -> {again}); {runs - done} of {JOBS} runs unfinished at the kill")  # fmt: skip
    assert "restarting it on the same store and port" in text and "is back (restart 1)" in text, text[-6000:]
    assert "FAILED" not in text and text.count(": FINISHED (MLflow run") == JOBS, text[-6000:]
    # At least one job tried to deliver while the server was away, held its records and delivered them later.
    job_logs = "".join(p.read_text(errors="replace") for p in tmp_path.rglob(".submitit/*/*_log.*"))
    assert "holding" in job_logs and "answers again" in job_logs, job_logs[-6000:]
    runs_ = assert_nothing_lost(
        f"sqlite:///{db}", "smoke", runs=JOBS, metrics={**dict.fromkeys(TRAIN_KEYS, range(STEPS)),
                                                        **dict.fromkeys(EVAL_KEYS, [0, STEPS])},
    )  # fmt: skip
    # No job failed or was started twice: one attempt each, never interrupted.
    assert {(r.data.tags["attempt"], r.data.tags["interruptions"]) for r in runs_} == {("1", "0")}
    assert len({r.data.tags["config_hash"] for r in runs_}) == JOBS
