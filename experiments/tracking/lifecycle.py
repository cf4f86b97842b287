"""The life of one tracked run: :class:`TrackedRun` finds, continues or creates the MLflow run of a config, locks its
run directory, logs tags, params and config artifacts, backfills steps the run directory holds, and records how the
run ended (:class:`RunEndGuard`). Every job kind uses it: local and verl training, the study jobs and the
inference-scaling study.

Typical use (``experiments.sweep.jobs.run_job``)::

    tracked = TrackedRun(RunIdentity(experiment, config_hash, backend, run_name, job="train"), run_dir, uri=uri)
    summary = tracked.run(lambda logger: job.run(logger, run_dir), force=force, params=params)

or, for a caller that decides itself what to do with a finished run::

    if not tracked.finished:
        with tracked.open(params=params) as logger:   # locked; guarded; FINISHED on a clean exit
            work(logger)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from experiments.tracking.loggers import JsonlLogger
from experiments.tracking.store import (
    FAILED,
    FINISHED,
    KILLED,
    RUNNING,
    MlflowRunLogger,
    ensure_experiment,
    git_commit,
    host,
    latest_run,
    make_client,
    resolve_tracking_uri,
    source_tags,
)

if TYPE_CHECKING:
    from filelock import FileLock
    from mlflow.entities import Run

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
                with contextlib.suppress(Exception):
                    self.logger.flush(timeout=10)  # deliver the steps held so far first (bounded: we are dying)
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


# ---------------------------------------------------------------------------------------------------------------------
# One tracked run
# ---------------------------------------------------------------------------------------------------------------------

# Files in a run directory that belong to the lifecycle, not to the job (kept when ``force`` clears the directory).
LOCK_FILE = ".lock"


class RunDirBusy(RuntimeError):
    """Another live process holds the run directory's lock (the same config is running elsewhere)."""


class RunAlreadyFinished(RuntimeError):
    """:meth:`TrackedRun.open` on a config whose newest run FINISHED, without ``force``."""


@dataclass(frozen=True)
class RunIdentity:
    """What identifies a tracked run: its experiment, and in it the tags ``config_hash`` and ``backend`` (the newest
    run with both is the config's run). ``run_name`` is only for people; ``job`` (tag) says what kind of work it is
    (train, entropy, branching, schedule, inference_scaling)."""

    experiment: str
    config_hash: str
    backend: str
    run_name: str
    job: str = "train"


def lock_run_dir(run_dir: Path) -> FileLock:
    """Hold ``run_dir/.lock`` (``filelock``: an OS lock, released by the kernel when the holder dies, so a SIGKILLed
    job never leaves it behind). A live holder -> :class:`RunDirBusy` naming it (host and pid, written into the file
    by the holder). No soft-lock fallback: a stale soft lock after a kill would block the resume. Keep the returned
    lock referenced while the work runs (a dropped one is released) and ``release()`` it afterwards."""
    from filelock import FileLock, Timeout

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    me = f"{host()} pid {os.getpid()}\n".encode()

    def mark(fd: int) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, me, 0)

    lock = FileLock(path, timeout=0, fallback_to_soft=False, preserve_lock_file=True, on_acquired=mark)
    try:
        lock.acquire()
    except Timeout:
        holder = path.read_text(errors="replace").strip() or "unknown"
        raise RunDirBusy(
            f"{run_dir} is in use by another running job with the same config hash ({holder}); "
            "wait for it or stop it, then run again"
        ) from None
    return lock


def _clear(run_dir: Path) -> None:
    """Remove everything in ``run_dir`` but the lock (``force``: a fresh run starts from nothing)."""
    for child in run_dir.iterdir():
        if child.name != LOCK_FILE:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


class TrackedRun:
    """The MLflow run of one config, from lookup to end state. Making it resolves the URI (relative SQLite paths
    against ``base_dir``), opens a client, gets the experiment (``experiment_id`` from the sweeper, else get-or-create
    by name) and looks up the config's newest run (:attr:`latest`).

    - :attr:`finished`: the newest run FINISHED (a sweep skips it unless ``force``);
    - :meth:`open`: lock the run directory, then continue the newest unfinished run (``attempt`` + 1) or create a
      run (none yet, or ``force`` after a FINISHED one, which also clears the run directory); log tags (identity,
      :func:`~experiments.tracking.store.source_tags`, ``extra_tags``), params and config artifacts; backfill steps
      the run directory holds that MLflow lacks; yield the logger under :class:`RunEndGuard`; FINISHED on a clean
      exit, KILLED / FAILED with ``end_reason`` otherwise;
    - :meth:`run`: skip-or-open around ``work(logger)``, returning :meth:`summary`;
    - :meth:`publish`: log a finished run directory (params.json, every step, every table) into the config's run.
    """

    def __init__(
        self,
        identity: RunIdentity,
        run_dir: str | os.PathLike[str],
        *,
        uri: str,
        base_dir: str | os.PathLike[str] | None = None,
        experiment_id: str | None = None,
        source: str = "sweep.py",
        extra_tags: dict[str, Any] | None = None,
    ) -> None:
        self.identity = identity
        self.run_dir = Path(run_dir)
        self.uri = resolve_tracking_uri(uri, base_dir if base_dir is not None else Path.cwd())
        self.client = make_client(self.uri)
        self.experiment_id = experiment_id or ensure_experiment(self.client, identity.experiment, self.uri)
        self.source = source
        self.extra_tags = dict(extra_tags or {})
        self.latest: Run | None = self.find()
        self.run_id: str | None = None
        self.attempt = 0

    # --- state ---------------------------------------------------------------------------------------------------
    def find(self) -> Run | None:
        """The newest run of this config hash and backend in the experiment (None: never run here)."""
        return latest_run(self.client, self.experiment_id, self.identity.config_hash, self.identity.backend)

    @property
    def finished(self) -> bool:
        return self.latest is not None and self.latest.info.status == FINISHED

    def summary(self, status: str, **extra: Any) -> dict[str, Any]:
        """What a job returns: identity, where it went, how it ended."""
        run_id = self.run_id or (self.latest.info.run_id if self.latest is not None else None)
        return {
            "config_hash": self.identity.config_hash,
            "run_dir": str(self.run_dir),
            "experiment_id": self.experiment_id,
            "run_id": run_id,
            "status": status,
            **extra,
        }

    def tags(self) -> dict[str, Any]:
        """Tags every attempt (re)writes: identity, provenance and MLflow's source tags."""
        i = self.identity
        return {
            "config_hash": i.config_hash,
            "backend": i.backend,
            "job": i.job,
            "experiment": i.experiment,
            "run_dir": str(self.run_dir),
            "git_commit": git_commit(),
            "host": host(),
            **source_tags(self.source),
            **self.extra_tags,
        }

    # --- the run -------------------------------------------------------------------------------------------------
    def _start(self, latest: Run | None, force: bool) -> tuple[str, int, int]:
        """(run id, attempt, interruptions so far): continue ``latest`` unless it FINISHED, else a new run."""
        name = self.identity.run_name
        if latest is not None and latest.info.status != FINISHED:
            run_id = latest.info.run_id
            attempt = int(latest.data.tags.get("attempt", "1")) + 1
            interruptions = int(latest.data.tags.get("interruptions", "0"))
            if latest.info.status == RUNNING:
                # Nobody recorded the end (SIGKILL, OOM, node failure, tracking server away while dying); we hold
                # the run directory's lock, so its last holder is dead: count that stop here.
                interruptions += 1
                log.warning("%s: MLflow run %s was left RUNNING by a job that died; counted as interruption %d",
                            name, run_id, interruptions)  # fmt: skip
            self.client.update_run(run_id, status=RUNNING)
            log.info("%s: continuing MLflow run %s (%s), attempt %d", name, run_id, latest.info.status, attempt)
            return run_id, attempt, interruptions
        if latest is not None:
            if not force:
                raise RunAlreadyFinished(
                    f"{name}: MLflow run {latest.info.run_id} of config {self.identity.config_hash} FINISHED; "
                    "force=true starts a new run"
                )
            log.info("%s: force=true, re-running (previous run %s FINISHED)", name, latest.info.run_id)
            _clear(self.run_dir)
        tags = {k: str(v) for k, v in self.tags().items()}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        log.info("%s: new MLflow run %s in experiment %s", name, run.info.run_id, self.experiment_id)
        return run.info.run_id, 1, 0

    @contextlib.contextmanager
    def open(
        self,
        *,
        force: bool = False,
        params: dict[str, Any] | None = None,
        artifacts: dict[str, str | dict[str, Any]] | None = None,
    ) -> Iterator[MlflowRunLogger]:
        """Lock the run directory and yield the run's logger (see the class doc). ``artifacts``: path in the run ->
        text (logged as is) or dict (logged as JSON). Raises :class:`RunDirBusy` when another live job holds the
        directory and :class:`RunAlreadyFinished` for a FINISHED config without ``force``."""
        lock = lock_run_dir(self.run_dir)
        try:
            self.latest = self.find()  # again, under the lock: another job may have finished it meanwhile
            run_id, self.attempt, interruptions = self._start(self.latest, force)
            self.run_id = run_id
            # Calls no store (nothing can fail before the guard); delivers steps in the background, holding them
            # while the store is away (a tracking server restarting), so the job never waits for it.
            logger = MlflowRunLogger(self.client, run_id, background=True)
            with RunEndGuard(logger, interruptions):  # from here on any failure ends the run FAILED or KILLED
                logger.set_tags(
                    {**self.tags(), "attempt": self.attempt, "interruptions": interruptions, "end_reason": "running"}
                )
                if params:
                    logger.log_params(params)
                for path, content in (artifacts or {}).items():
                    if isinstance(content, str):
                        self.client.log_text(run_id, content, path)
                    else:
                        self.client.log_dict(run_id, content, path)
                added = backfill_from_run_dir(logger, JsonlLogger(self.run_dir).records(), self.run_dir / "tables")
                if added:
                    log.info("%s: backfilled %d step(s) from %s", self.identity.run_name, added, self.run_dir)
                yield logger
                logger.set_tags({"end_reason": "completed"})
                logger.finish(FINISHED)
        finally:
            lock.release()

    def run(
        self,
        work: Callable[[MlflowRunLogger], dict[str, Any] | None],
        *,
        force: bool = False,
        params: dict[str, Any] | None = None,
        artifacts: dict[str, str | dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Skip a FINISHED config (unless ``force``), else ``work(logger)`` inside :meth:`open`; return
        :meth:`summary` with what ``work`` returned."""
        name = self.identity.run_name
        if self.finished and not force:
            assert self.latest is not None
            log.info("%s: FINISHED in MLflow run %s; skipped (force=true re-runs)", name, self.latest.info.run_id)
            return self.summary("skipped")
        t0 = time.perf_counter()
        try:
            with self.open(force=force, params=params, artifacts=artifacts) as logger:
                out = work(logger) or {}
        except RunAlreadyFinished as e:  # finished by another job between the lookup and the lock
            log.info("%s; skipped", e)
            return self.summary("skipped")
        log.info("%s: FINISHED in %.1f s (MLflow run %s)", name, time.perf_counter() - t0, self.run_id)
        return self.summary(FINISHED, **out)

    def publish(self, params: dict[str, Any] | None = None) -> str:
        """Log a finished run directory into the config's run and finish it: ``params`` (default: the directory's
        params.json), every metrics record, stepped tables (backfill) and unstepped ``tables/NAME.jsonl``. For work
        done where MLflow is not installed (the vLLM environment). A config whose run FINISHED already is left as it
        is. Returns the run id."""
        if self.finished:
            assert self.latest is not None
            return self.latest.info.run_id
        if params is None and (self.run_dir / "params.json").exists():
            params = json.loads((self.run_dir / "params.json").read_text())
        with self.open(params=params) as logger:
            for path in sorted((self.run_dir / "tables").glob("*.jsonl")):
                if not _TABLE_FILE.match(path.name):
                    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
                    logger.log_table(path.stem, rows)
        assert self.run_id is not None
        return self.run_id
