"""MLflow tracking for sweep jobs: tracking URIs, experiments, run identity by config hash, and a ``RunLogger``.

Conventions (README "Sweeps and configs"):

- One MLflow experiment per preset or sweep name, created ONCE by the launching process
  (:func:`ensure_experiment`): several jobs creating it at once race, and the loser's run lands in "Default". It is
  tagged ``mlflow.experimentKind = custom_model_development`` so the MLflow UI shows it as model training (runs,
  metrics, charts) rather than as a GenAI app (traces).
- Every run carries MLflow's own source tags (:func:`source_tags`: ``mlflow.source.name`` = the entry point,
  ``mlflow.source.type``, ``mlflow.source.git.commit``, ``mlflow.user``), which fill the UI's Source and User columns.
- One run per job, identified by the tags ``config_hash`` and ``backend``. The latest run of a hash defines its
  state (:func:`latest_run`): FINISHED means done (a sweep skips it unless ``force``), anything else (RUNNING after a
  SIGKILL, KILLED, FAILED) is continued by the next job with that hash, so a requeued or restarted job keeps logging
  into the SAME run.
- :class:`MlflowRunLogger` logs each step's metrics in one ``log_batch`` call and ignores steps the run already holds
  (read back from the run's metric history), so a resumed job lands every step exactly once.
- ``experiments.tracking.lifecycle.TrackedRun`` puts these together for one job (find or continue, lock, tags,
  params, backfill, end state); ``RunEndGuard`` ends the run as KILLED (signal, requeue, Ctrl-C) or FAILED
  (exception) with an ``end_reason`` tag: MLflow itself would mark a crashed run FINISHED, or leave a killed one
  RUNNING.

Only the standard library is imported at module level; ``mlflow`` is imported where a client is made.
"""

from __future__ import annotations

import collections
import functools
import getpass
import json
import logging
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.tracking.loggers import json_safe

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
FINISHED, RUNNING, KILLED, FAILED = "FINISHED", "RUNNING", "KILLED", "FAILED"
# The experiment tag the MLflow UI (3.x) reads to choose an experiment's view; without it MLflow 3.17 opens every
# experiment as a GenAI app (an empty traces dashboard). Values: custom_model_development | genai_development.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"

# MLflow keys allow letters, digits, underscore, dash, period, slash, colon and space.
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-./: ]")
_MAX_BATCH_PARAMS = 100  # MLflow's limit per log_batch call
_MAX_BATCH_METRICS = 1000


# ---------------------------------------------------------------------------------------------------------------------
# URIs, clients, experiments
# ---------------------------------------------------------------------------------------------------------------------


def is_sqlite_uri(uri: str) -> bool:
    return uri.startswith("sqlite:")


def resolve_tracking_uri(uri: str, base_dir: str | os.PathLike[str]) -> str:
    """``uri`` with a relative SQLite path made absolute against ``base_dir`` (the directory the sweep was launched
    from), so jobs that run elsewhere (Slurm, another working directory) open the same file. Other URIs unchanged.

    ``sqlite:///mlflow.db`` is relative (three slashes), ``sqlite:////abs/mlflow.db`` absolute (four).
    """
    if not is_sqlite_uri(uri):
        return uri
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        raise ValueError(f"tracking.uri must look like sqlite:///relative.db or sqlite:////abs/path.db, got {uri!r}")
    path = uri[len(prefix) :]
    if path.startswith("/"):
        return uri
    return prefix + str((Path(base_dir) / path).resolve())


_REACHABLE: set[str] = set()  # URIs checked in this process (a sweep plans many jobs against one store)


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, naming ``tracking.uri``, when the store cannot be used: an HTTP(S) server that does not answer
    within ``timeout`` seconds or refuses our credentials, or a SQLite file whose directory cannot be written. MLflow's
    own client would retry for minutes and then raise a long traceback that never names the setting. The server must
    answer MLflow's experiment search (what every job calls first) with 200. Other schemes are left to MLflow."""
    if uri in _REACHABLE:
        return
    seen = _UNREACHABLE.get(uri)
    if seen is not None and time.monotonic() - seen[0] < 60:  # a sweep of many jobs on one dead store waits once
        raise ValueError(seen[1])
    try:
        _check_store(uri, timeout)
    except ValueError as e:
        _UNREACHABLE[uri] = (time.monotonic(), str(e))
        raise
    _REACHABLE.add(uri)


_UNREACHABLE: dict[str, tuple[float, str]] = {}


def _check_store(uri: str, timeout: float) -> None:
    if is_sqlite_uri(uri):
        directory = sqlite_path(resolve_tracking_uri(uri, Path.cwd())).parent
        existing = next((p for p in (directory, *directory.parents) if p.exists()), directory)
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"tracking.uri {uri}: cannot create or write the SQLite store in {directory} "
                             f"({existing} is not writable); choose a writable path")  # fmt: skip
    elif uri.startswith(("http://", "https://")):
        _check_http(uri, timeout)


def _check_http(uri: str, timeout: float) -> None:
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
        request.add_header("Authorization", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise ValueError(
                f"tracking.uri {uri} refused our credentials (HTTP {e.code}): set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment"
            ) from None
        raise ValueError(
            f"tracking.uri {uri} answers HTTP {e.code} to MLflow's API ({request.full_url}): not an MLflow tracking "
            "server at this URL, or a failing one"
        ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ValueError(
            f"tracking.uri {uri} does not answer within {timeout:.0f} s ({reason}): start the MLflow server, or set "
            "tracking.uri to one that runs (tracking=sqlite needs no server)"
        ) from None


def sqlite_path(uri: str) -> Path:
    """The database file of an absolute ``sqlite:////...`` URI."""
    return Path(uri[len("sqlite:///") :])


def make_client(uri: str) -> MlflowClient:
    """An ``MlflowClient`` bound to ``uri`` (never the process-global tracking URI)."""
    from mlflow import MlflowClient

    if is_sqlite_uri(uri):
        sqlite_path(uri).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def safe_name(name: str) -> str:
    """A file-system-safe form of an experiment name (for run directories)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "experiment"


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """Id of the experiment ``name``, created if missing. Call it once, in the launching process.

    With a SQLite store the artifacts go to ``<db dir>/mlruns/<name>`` (absolute, so jobs that run in another
    directory, or log through an ``mlflow server`` in front of the same file, write to the same place); with a server
    URI the server chooses. The experiment is marked as model training (:data:`EXPERIMENT_KIND_TAG`), also when it
    exists without that mark (made by an older version or by hand); a kind set by a user is kept.
    """
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ValueError(
                f"experiment_name {name!r} is a deleted MLflow experiment (id {exp.experiment_id}) in {uri}: "
                "restore it with `mlflow experiments restore` or choose another experiment_name"
            )
        if EXPERIMENT_KIND_TAG not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return str(exp.experiment_id)
    location = None
    if is_sqlite_uri(uri):
        location = str(sqlite_path(uri).parent / "mlruns" / safe_name(name))
    try:
        exp_id = client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
        )
        log.info("created MLflow experiment %r (id %s) in %s", name, exp_id, uri)
        return str(exp_id)
    except MlflowException as e:  # created concurrently by someone else
        if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
            raise
        again = client.get_experiment_by_name(name)
        assert again is not None
        return str(again.experiment_id)


def search_all_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str = "") -> list[Run]:
    """Every active run matching ``filter_string`` (all pages), newest first."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string, max_results=1000, order_by=["attributes.start_time DESC"], page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def latest_runs_by_hash(client: MlflowClient, experiment_id: str, backend: str) -> dict[str, Run]:
    """The newest run of each config hash of ``backend`` in the experiment: one query for a whole sweep."""
    out: dict[str, Run] = {}
    for run in search_all_runs(client, [experiment_id], f"tags.backend = '{backend}'"):
        h = run.data.tags.get("config_hash")
        if h and h not in out:  # newest first
            out[h] = run
    return out


def latest_run(client: MlflowClient, experiment_id: str, config_hash: str, backend: str) -> Run | None:
    """The newest run of ``config_hash`` (and backend) in the experiment, or None."""
    runs = search_all_runs(
        client, [experiment_id], f"tags.config_hash = '{config_hash}' and tags.backend = '{backend}'"
    )
    return runs[0] if runs else None


# ---------------------------------------------------------------------------------------------------------------------
# Run metadata
# ---------------------------------------------------------------------------------------------------------------------


@functools.cache
def git_commit() -> str:
    """HEAD of the repository (``+dirty`` when tracked files changed), or ``unknown`` without git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("EAD_GIT_COMMIT", "unknown")
    return head + ("+dirty" if dirty else "")


def source_tags(entry_point: str) -> dict[str, str]:
    """MLflow's own run tags for where a run comes from (the UI's Source and User columns): ``mlflow.source.name``
    (``entry_point``, e.g. ``sweep.py``), ``mlflow.source.type`` (JOB under Slurm, else LOCAL),
    ``mlflow.source.git.commit`` (HEAD; our ``git_commit`` tag also says ``+dirty``) and ``mlflow.user``."""
    tags = {
        "mlflow.source.name": entry_point,
        "mlflow.source.type": "JOB" if os.environ.get("SLURM_JOB_ID") else "LOCAL",
        "mlflow.user": _user(),
    }
    head = git_commit().split("+", 1)[0]
    if head != "unknown":
        tags["mlflow.source.git.commit"] = head
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return os.environ.get("USER", "unknown")


def mlflow_key(name: str) -> str:
    """``name`` with characters MLflow rejects replaced (``@`` becomes ``_at_``, anything else ``_``)."""
    return _BAD_KEY_CHARS.sub("_", name.replace("@", "_at_"))


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's limit on a param value


# ---------------------------------------------------------------------------------------------------------------------
# The logger
# ---------------------------------------------------------------------------------------------------------------------


class MlflowRunLogger:
    """``experiments.tracking.loggers.RunLogger`` for one MLflow run (through ``MlflowClient``, no global active run).

    ``log_metrics`` is one ``log_batch`` call per step (atomic in MLflow's SQL store) and ignores steps the run already
    holds; ``last_logged_step`` is read from the run's metric history when the logger is made, so a job resumed from a
    checkpoint that recomputes a few steps logs each of them once. Tables become JSON artifacts
    ``tables/<name>_step<step>.json``; a table of a step the run already holds is skipped too.

    ``background=True`` (every job, through ``TrackedRun``): steps and tables are delivered by a thread, in order, so
    training never waits for the store. While the store does not answer (a tracking server restarting or away) the
    thread holds them and retries, and delivers them when it answers again; the job's ``metrics.jsonl`` has them
    meanwhile. :meth:`flush` waits for delivery, :meth:`finish` flushes first (up to ``hold_s``). A call the store
    answers with an error 3 times is an error in the job (raised at its next call), as without the thread.
    """

    def __init__(self, client: MlflowClient, run_id: str, *, background: bool = False, hold_s: float = 3600.0) -> None:
        self.client = client
        self.run_id = run_id
        self._last_read = False  # the run's last step is read on first use: making a logger never calls the store
        self._last_step: int | None = None
        self.background, self.hold_s = background, hold_s
        self._queue: collections.deque[Callable[[], None]] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False  # the thread is delivering the queue's first item
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def _last(self) -> int | None:
        if not self._last_read:
            self._last_step = self._history_last_step()
            self._last_read = True
        return self._last_step

    @_last.setter
    def _last(self, step: int | None) -> None:
        self._last_step, self._last_read = step, True

    @property
    def tracking_uri(self) -> str:
        """The store this run lives in (a job that starts its own MLflow writer, like verl's trainer, needs it)."""
        return str(self.client.tracking_uri)

    def _history_last_step(self) -> int | None:
        run = self.client.get_run(self.run_id)
        steps = [m.step for key in run.data.metrics for m in self.client.get_metric_history(self.run_id, key)]
        return max(steps) if steps else None

    # --- delivery ----------------------------------------------------------------------------------------------
    def _send(self, call: Callable[[], None]) -> None:
        """Run ``call`` now, or (background) queue it for the delivery thread."""
        if not self.background:
            call()
            return
        with self._cond:
            self._raise_error()
            self._queue.append(call)
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._deliver, name=f"mlflow-{self.run_id[:8]}", daemon=True)
                self._thread.start()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _deliver(self) -> None:
        failures, away_since = 0, None
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                call, self._busy = self._queue[0], True
            try:
                # Probe first (one cheap GET for a server): a call into a server that is down would sit in MLflow's
                # own retries (minutes of backoff) and deliver late after the server is back.
                if not store_answers(self.tracking_uri):
                    raise ConnectionError("no answer to /health")
                call()
            except Exception as e:  # noqa: BLE001 - classified below: store away (hold) or a real error (raise)
                if not store_answers(self.tracking_uri):
                    if away_since is None:
                        away_since = time.monotonic()
                        log.warning("MLflow store %s does not answer (%s); holding %d record(s) of run %s until it "
                                    "does (metrics.jsonl has them)", self.tracking_uri, e, len(self._queue),
                                    self.run_id)  # fmt: skip
                    time.sleep(1.0)
                    continue
                failures += 1
                if failures < 3:
                    time.sleep(1.0)
                    continue
                with self._cond:
                    self._error = e
                    self._queue.clear()  # the run directory keeps them; a re-run backfills
                    self._busy = False
                    self._cond.notify_all()
                failures = 0
                continue
            if away_since is not None:
                log.warning("MLflow store %s answers again after %.0f s: delivering %d held record(s)",
                            self.tracking_uri, time.monotonic() - away_since, len(self._queue))  # fmt: skip
                away_since = None
            failures = 0
            with self._cond:
                self._queue.popleft()
                self._busy = False
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued record is delivered (True) or ``timeout`` s passed (False); raise a delivery
        error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue and self._error is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(timeout=left if left is not None else 5.0)
            self._raise_error()
        return True

    def pending(self) -> int:
        """Records queued and not yet delivered."""
        with self._cond:
            return len(self._queue)

    # --- the RunLogger interface ---------------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        """Params are immutable in MLflow: re-logging the same values (a resumed job) is fine, others raise."""
        from mlflow.entities import Param

        items = [Param(mlflow_key(k), _param_value(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), _MAX_BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=items[i : i + _MAX_BATCH_PARAMS])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if self._last is not None and step <= self._last:
            return
        now = int(time.time() * 1000)
        items = []
        for k, v in metrics.items():
            if v is None:
                continue
            value = float(v.item() if hasattr(v, "item") else v)
            items.append(Metric(mlflow_key(k), value, now, int(step)))
        for i in range(0, len(items), _MAX_BATCH_METRICS):
            batch = items[i : i + _MAX_BATCH_METRICS]
            # Metric objects carry their timestamp: a batch sent again after a lost answer is deduplicated by the store
            self._send(lambda batch=batch: self.client.log_batch(self.run_id, metrics=batch))
        self._last = int(step)

    def log_table(self, name: str, rows: list[dict[str, Any]], step: int | None = None) -> None:
        if step is not None and self._last is not None and step <= self._last:
            return
        clean = [{k: json_safe(v) for k, v in r.items()} for r in rows]
        suffix = f"_step{step}" if step is not None else ""
        text, path = json.dumps(clean, indent=1), f"tables/{mlflow_key(name)}{suffix}.json"
        self._send(lambda: self.client.log_text(self.run_id, text, path))

    def last_logged_step(self) -> int | None:
        return self._last

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set tags now (after what is held, in background mode)."""
        from mlflow.entities import RunTag

        self._call_now(lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]))

    def finish(self, status: str = FINISHED) -> None:
        """Deliver what is held (up to ``hold_s``), then end the run with ``status``."""
        self._call_now(lambda: self.client.set_terminated(self.run_id, status))

    def _call_now(self, call: Callable[[], None]) -> None:
        """Run ``call`` and wait for it. In background mode it goes through the delivery thread after what is queued,
        so while the store is away it is held like the steps (up to ``hold_s``): called directly it would sit in
        MLflow's own retries (backoff up to 16 s after the store is back) and fail the job after ~2 minutes away."""
        if not self.background:
            call()
            return
        self._send(call)
        if not self.flush(timeout=self.hold_s):
            raise RuntimeError(
                f"MLflow store {self.tracking_uri} did not answer for {self.hold_s:.0f} s; {self.pending()} record(s) "
                f"of run {self.run_id} undelivered (metrics.jsonl has them: re-running the job backfills them)"
            )


def store_answers(uri: str, timeout: float = 3.0) -> bool:
    """Whether the tracking store at ``uri`` answers at all: for HTTP(S), any HTTP response to ``/health``; other
    stores (SQLite files) always count as answering (their errors are real errors)."""
    if not uri.startswith(("http://", "https://")):
        return True
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def host() -> str:
    return socket.gethostname()
