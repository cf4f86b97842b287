"""The life of one tracked run: ending it as KILLED or FAILED when the job dies, and backfilling steps from its run
directory."""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from experiments.tracking.store import FAILED, KILLED, MlflowRunLogger

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Ending runs on signals and exceptions
# ---------------------------------------------------------------------------------------------------------------------


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM when nobody else handles it (exit status 128 + 15)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class RunEndGuard:
    """Context manager: ends an MLflow run as KILLED or FAILED when the job dies, and says why (``end_reason`` tag).

    - exception: FAILED, ``end_reason = exception: <type>: <message>``;
    - Ctrl-C / SystemExit: KILLED;
    - SIGUSR2 under submitit (preemption or time limit; submitit then requeues the job and exits): KILLED,
      ``end_reason = preempted or timed out (SIGUSR2): requeued``; submitit's own handler still runs;
    - SIGTERM (scancel, ``scontrol requeue``, node shutdown; SIGKILL usually follows): KILLED. Under submitit, which
      deliberately ignores SIGTERM, the run is marked at once and the job keeps running; elsewhere
      :class:`Terminated` is raised and the run is marked while unwinding.

    A run left RUNNING (SIGKILL, OOM) is continued by the next job with its config hash. Each ending also increments
    the ``interruptions`` tag, so a run that finished after a preemption is distinguishable from one that never stopped.
    Handlers are installed only in the main thread and restored on exit.
    """

    def __init__(self, logger: MlflowRunLogger, interruptions: int = 0) -> None:
        self.logger = logger
        self.interruptions = interruptions
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}
        self._marked = False

    def _mark(self, status: str, reason: str) -> None:
        """Record the end state once per attempt; bounded in time (a tracking server that is down must not hang a dying
        job). A failed attempt is retried by the next call (``__exit__`` after a handler)."""
        if self._marked:
            return
        done = threading.Event()

        def work() -> None:
            try:
                self.logger.set_tags({"end_reason": reason[:5000], "interruptions": self.interruptions + 1})
                self.logger.finish(status)
                done.set()
            except Exception as e:  # noqa: BLE001 - best effort while dying
                log.warning("could not mark MLflow run %s %s: %s", self.logger.run_id, status, e)

        t = threading.Thread(target=work, daemon=True)
        t.start()
        t.join(timeout=20)
        if done.is_set():
            self._marked = True
            self.interruptions += 1
            log.warning("MLflow run %s marked %s: %s", self.logger.run_id, status, reason)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.reason = f"signal {signal.Signals(signum).name}"
        previous = self._previous.get(signum)
        if callable(previous) or previous == signal.SIG_IGN:
            # submitit ignores SIGTERM on purpose (a requeue or SIGKILL follows): record the end now, keep running.
            self._mark(KILLED, self.reason)
            if callable(previous):
                previous(signum, frame)
            return
        # Unwind first and mark in __exit__: here the main thread may be inside a tracking-store transaction.
        raise Terminated(signum)

    def _on_usr2(self, signum: int, frame: FrameType | None) -> None:
        self.reason = "preempted or timed out (SIGUSR2): requeued"
        # submitit's handler requeues the job, after which Slurm kills it within KillWait: mark before that.
        self._mark(KILLED, self.reason)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)  # submitit: checkpoint(), `scontrol requeue`, sys.exit

    def __enter__(self) -> RunEndGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
            usr2 = signal.getsignal(signal.SIGUSR2)
            if callable(usr2):  # only where someone (submitit) handles it; the default action would kill us
                self._previous[signal.SIGUSR2] = signal.signal(signal.SIGUSR2, self._on_usr2)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if exc is None:
            return
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            self._mark(KILLED, self.reason or f"{type(exc).__name__}")
        elif type(exc).__name__ == "UncompletedJobError":  # submitit: timed out too many times, not requeued
            self._mark(KILLED, f"not requeued: {exc}")
        else:
            self._mark(FAILED, f"exception: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------------------------------------
# Backfill from a run directory
# ---------------------------------------------------------------------------------------------------------------------

_TABLE_FILE = re.compile(r"^(?P<name>.+)_step(?P<step>\d+)\.jsonl$")


def backfill_from_run_dir(logger: MlflowRunLogger, records: Iterable[dict[str, Any]], tables_dir: Path) -> int:
    """Log the steps a run directory holds (metrics.jsonl records, tables/NAME_stepK.jsonl) that the MLflow run lacks,
    in step order, tables before the metrics of their step. Returns the number of steps added.

    This covers a job that died between the JSONL and the MLflow write, and a finished run directory whose MLflow run
    is new (a fresh tracking store): the trainer returns at once then, and the run would stay empty.
    """
    last = logger.last_logged_step()
    tables: dict[int, list[tuple[str, Path]]] = {}
    if tables_dir.is_dir():
        for path in sorted(tables_dir.iterdir()):
            m = _TABLE_FILE.match(path.name)
            if m:
                tables.setdefault(int(m["step"]), []).append((m["name"], path))
    added = 0
    for record in sorted(records, key=lambda r: r["step"]):
        step = int(record["step"])
        if last is not None and step <= last:
            continue
        for name, path in tables.get(step, []):
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            logger.log_table(name, rows, step)
        logger.log_metrics({k: v for k, v in record.items() if k != "step"}, step)
        added += 1
    return added
