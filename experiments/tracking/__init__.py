"""Tracking: config hashes, run loggers (JSONL, MLflow), MLflow stores and run lifecycles, the local MLflow server.

Standard library only at import time; ``mlflow`` is imported where a client is made.

- ``hashing``: canonical config form, ``config_hash``, ``flat_params`` (the params every job logs).
- ``loggers``: the ``RunLogger`` protocol, ``JsonlLogger`` (run directory) and ``MultiLogger``.
- ``store``: tracking URIs, clients, experiments, run lookup by config hash, ``MlflowRunLogger``.
- ``lifecycle``: ``TrackedRun``, one tracked run from lookup to end state (find or continue, lock, tags, params,
  backfill, guard, summary), used by every job kind.
- ``server``: a local ``mlflow server`` in front of a SQLite store; a sweep's own one supervised (restarted on the
  same store and port) and, for other nodes, bound to one address behind MLflow's basic auth.

Importing this package turns MLflow's usage telemetry off for this process and its children
(``MLFLOW_DISABLE_TELEMETRY=true`` unless the user set it): MLflow reads it once, when ``mlflow`` is imported, and
its telemetry thread, when it cannot reach its endpoint, removes ``_MLFLOW_TELEMETRY_SESSION_ID`` from
``os.environ`` while ``requests`` iterates the environment (a ``KeyError`` in a random tracking call; CI never sees
it because ``CI=true`` turns telemetry off). Every harness module that uses MLflow imports this package first.
"""

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from experiments.tracking.hashing import canonical, config_hash, flat_params  # noqa: E402 - after the switch
from experiments.tracking.lifecycle import (  # noqa: E402
    RunAlreadyFinished,
    RunDirBusy,
    RunEndGuard,
    RunIdentity,
    Terminated,
    TrackedRun,
    backfill_from_run_dir,
    lock_run_dir,
)
from experiments.tracking.loggers import JsonlLogger, MultiLogger, RunLogger, json_safe  # noqa: E402
from experiments.tracking.store import (  # noqa: E402
    DEFAULT_TRACKING_URI,
    EXPERIMENT_KIND_TAG,
    FAILED,
    FINISHED,
    KILLED,
    MODEL_TRAINING_KIND,
    RUNNING,
    MlflowRunLogger,
    ensure_experiment,
    git_commit,
    host,
    is_sqlite_uri,
    latest_run,
    latest_runs_by_hash,
    make_client,
    mlflow_key,
    resolve_tracking_uri,
    safe_name,
    search_all_runs,
    source_tags,
    sqlite_path,
)

__all__ = [
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_KIND_TAG",
    "FAILED",
    "FINISHED",
    "KILLED",
    "MODEL_TRAINING_KIND",
    "RUNNING",
    "JsonlLogger",
    "MlflowRunLogger",
    "MultiLogger",
    "RunAlreadyFinished",
    "RunDirBusy",
    "RunEndGuard",
    "RunIdentity",
    "RunLogger",
    "Terminated",
    "TrackedRun",
    "backfill_from_run_dir",
    "canonical",
    "config_hash",
    "ensure_experiment",
    "flat_params",
    "git_commit",
    "host",
    "is_sqlite_uri",
    "json_safe",
    "latest_run",
    "latest_runs_by_hash",
    "lock_run_dir",
    "make_client",
    "mlflow_key",
    "resolve_tracking_uri",
    "safe_name",
    "search_all_runs",
    "source_tags",
    "sqlite_path",
]
