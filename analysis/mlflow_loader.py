"""MLflow -> tidy pandas frames: one row per run (params and tags as columns), one row per (run, metric, step), and the
table artifacts of runs (``tables/<name>.json``, ``tables/<name>_step<k>.json``) as one frame.

Queries are bulk: the runs of an experiment come from paged ``search_runs`` calls (1000 runs per request, params and
tags included); metric histories of a SQL tracking store (the sweeps' SQLite file, or a database behind a server
reached directly) come from one SELECT per key chunk on MLflow's own ``metrics`` table, and over HTTP from concurrent
``get_metric_history`` requests (8 at a time). Loaded histories and tables are cached in this process per run version
(status + end time): a finished run never changes without being set RUNNING again (``experiments.tracking``), and
runs still RUNNING are always read afresh.

    from analysis.mlflow_loader import load_runs, load_metrics, load_tables
    runs = load_runs("default")                                    # run_id, run_name, status, job, condition, ...
    curves = load_metrics("default", ["eval/pass_at_16"], runs)    # run_id, key, step, value + the run columns
    ent = load_tables("default", "entropy_by_position", runs[runs.job == "entropy"])

A sweep is one MLflow experiment (its ``experiment_name``); pass several names (or ids) to pool sweeps, ``tags`` and
``params`` to select runs. Runs carry a ``job`` column: the ``job`` tag (``train``, ``entropy``, ``branching``,
``schedule``, ``figures``), ``inference`` for inference-scaling runs, and ``train`` for training runs logged before the
tag existed. The figures runs of ``python -m analysis.figures`` are left out unless asked for.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ead_core.schedule import condition_label, tau_text
from experiments.tracking import DEFAULT_TRACKING_URI, make_client, resolve_tracking_uri, search_all_runs
from experiments.tracking.hashing import param_text as canon_param
from experiments.tracking.hashing import typed_param

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

# Columns every runs frame has, first; then every param (dotted names as logged) and the tags below.
RUN_COLUMNS = [
    "run_id", "run_name", "status", "experiment", "job", "start_time", "end_time", "condition", "artifact_uri",
]  # fmt: skip
TAGS = ["config_hash", "backend", "git_commit", "slurm_job_id", "host", "attempt", "interruptions", "end_reason"]
# EAD parameters that, when they differ between the EAD runs of an experiment, become part of the condition label.
EAD_KEYS = [
    "sampling.preset", "sampling.tau_max", "sampling.tau_min", "sampling.d0", "sampling.c", "sampling.d_growth",
    "sampling.d_cap", "sampling.d_scale",
]  # fmt: skip
INFERENCE_BACKEND = "vllm_inference_scaling"  # experiments.studies.inference.BACKEND
TERMINAL = ("FINISHED", "FAILED", "KILLED")
REPORT_JOBS = ("figures", "verdict")  # runs that hold reports about other runs, not results
_SQL_CHUNK = 500  # run ids per SELECT (SQLite allows 32766 bound variables; stay far below)


def client_for(tracking_uri: str | None = None) -> MlflowClient:
    """A client for ``tracking_uri`` (default: the sweep's SQLite file in the working directory)."""
    return make_client(resolve_tracking_uri(tracking_uri or DEFAULT_TRACKING_URI, "."))


def _fmt(value: Any) -> str:
    """Numbers as written in configs: 1 -> '1.0', 0.6 -> '0.6' (params hold canonical ints for round floats)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return tau_text(value)
    return str(value)


def param_text(values: pd.Series) -> pd.Series:
    """``values`` as canonical text (``canon_param``): what to compare, group and print params by."""
    return values.map(canon_param).astype(object)


def condition_labels(runs: pd.DataFrame) -> pd.Series:
    """'EAD' or 'fixed 0.6' per run (another ``sampling.kind``, e.g. a reverse schedule, is its own name). Where EAD
    parameters vary between the EAD runs, the runs that differ from the most common EAD setting say how ('EAD d0=4'),
    so the main EAD condition stays 'EAD'. Runs without ``sampling.kind`` (studies without a sampler) get ''."""
    if runs.empty:
        return pd.Series(dtype=str)
    if "sampling.kind" not in runs:
        return pd.Series("", index=runs.index)
    kind = runs["sampling.kind"]
    is_ead = kind == "ead"
    extra = pd.Series("", index=runs.index)
    for k in EAD_KEYS:
        if k not in runs:
            continue
        text = param_text(runs[k])
        counts = text[is_ead].value_counts()
        if len(counts) <= 1:
            continue
        modal = sorted(counts[counts == counts.max()].index)[0]
        differs = is_ead & (text != modal)
        extra = extra.where(~differs, extra + f" {k.split('.', 1)[1]}=" + text)
    taus = runs.get("sampling.tau", pd.Series(np.nan, index=runs.index))
    fixed = taus.map(lambda tau: condition_label("fixed", float(tau)) if pd.notna(tau) and tau != "" else "fixed")
    ead_label = extra.map(lambda detail: condition_label("ead", detail=detail.strip()))
    other = kind.fillna("").astype(str)
    return pd.Series(np.where(kind == "fixed", fixed, np.where(is_ead, ead_label, other)), index=runs.index)


def job_kinds(runs: pd.DataFrame) -> pd.Series:
    """The ``job`` of each run: its ``job`` tag; inference-scaling runs 'inference'; untagged (older) runs 'train'."""
    tag = runs["job"] if "job" in runs else pd.Series(None, index=runs.index, dtype=object)
    backend = runs["backend"] if "backend" in runs else pd.Series(None, index=runs.index, dtype=object)
    fallback = pd.Series(np.where(backend == INFERENCE_BACKEND, "inference", "train"), index=runs.index)
    return tag.where(tag.notna() & (tag.astype(str) != ""), fallback).astype(str)


def experiment_ids(client: MlflowClient, experiments: str | Sequence[str]) -> dict[str, str]:
    """{experiment id: name} for names (or ids); unknown names raise ValueError listing the known ones."""
    names = [experiments] if isinstance(experiments, str) else list(experiments)
    out = {}
    for name in names:
        exp = client.get_experiment_by_name(name)
        if exp is None and name.isdigit():
            exp = client.get_experiment(name)
        if exp is None:
            known = sorted(e.name for e in client.search_experiments())
            raise ValueError(f"experiment {name!r} not found in {client.tracking_uri}; known: {known}")
        out[str(exp.experiment_id)] = exp.name
    return out


def _quote(value: Any) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def _param_matches(column: pd.Series, wanted: Any) -> pd.Series:
    """Rows whose (typed) param equals ``wanted``, or is one of a list of wanted values."""
    values = wanted if isinstance(wanted, (list, tuple, set)) else [wanted]
    return param_text(column).isin({canon_param(v) for v in values})


def parse_where(items: Sequence[str]) -> dict[str, str]:
    """``["task_knobs.decision=early", ...]`` (the ``--where`` of analysis commands) as {param: value}."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--where: expected PARAM=VALUE (e.g. task_knobs.decision=early), got {item!r}")
        out[key.strip()] = value.strip()
    return out


def select_runs(
    runs: pd.DataFrame, conditions: Sequence[str] | None = None, where: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """The runs of ``conditions`` (labels as ``condition_labels`` gives them over the whole experiment, so a preset's
    figure names its conditions as the experiment's verdict does) whose params equal ``where`` ({param: value}, value
    compared as canonical text). Raises ValueError naming an unknown condition or param and what exists."""
    keep = pd.Series(True, index=runs.index)
    if conditions:
        known = sorted(set(runs["condition"].dropna().astype(str)) - {""})
        unknown = [c for c in conditions if c not in known]
        if unknown:
            raise ValueError(f"--condition {unknown[0]!r} is not a condition of these runs; conditions: {known}")
        keep &= runs["condition"].isin(list(conditions))
    for k, v in (where or {}).items():
        if k not in runs:
            raise ValueError(f"--where {k}: no run has this param (params look like task_knobs.decision, seed)")
        keep &= _param_matches(runs[k], v)
    return runs[keep]


def log_report_run(
    client: MlflowClient,
    experiment: str,
    job: str,
    files: Sequence[Path | str],
    tags: Mapping[str, str] | None = None,
    texts: Mapping[str, str] | None = None,
) -> str:
    """A FINISHED run tagged ``job`` (one of REPORT_JOBS, which loaders leave out) in ``experiment`` holding ``files``
    and ``texts`` ({file name: content}) under the artifact folder ``job``; FAILED if logging breaks. Returns its id."""
    if job not in REPORT_JOBS:
        raise ValueError(f"job must be one of {list(REPORT_JOBS)}, got {job!r}")
    exp_id = next(iter(experiment_ids(client, experiment)))
    name = f"{job}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = client.create_run(exp_id, tags={"job": job, "mlflow.runName": name, **(tags or {})}).info.run_id
    try:
        for f in files:
            client.log_artifact(run_id, str(f), job)
        for file_name, text in (texts or {}).items():
            client.log_text(run_id, text, f"{job}/{file_name}")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def load_runs(
    experiments: str | Sequence[str],
    tracking_uri: str | None = None,
    statuses: Sequence[str] | None = ("FINISHED",),
    client: MlflowClient | None = None,
    *,
    jobs: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    latest_only: bool = True,
) -> pd.DataFrame:
    """One row per run of the experiment(s): RUN_COLUMNS, every param (typed), TAGS.

    ``statuses``: keep runs in these states (None: all, the ``status`` column tells them apart). ``jobs``: keep these
    job kinds (None: all but REPORT_JOBS). ``tags`` filter in the query (exact strings); ``params`` after typing
    ({'seed': 0, 'sampling.kind': ['ead', 'fixed']}). ``latest_only``: of several runs of one config hash (a forced
    re-run), keep the newest, so a seed is never counted twice.
    """
    client = client or client_for(tracking_uri)
    ids = experiment_ids(client, experiments)
    clauses = []
    if statuses and len(statuses) == 1:  # MLflow filters have no OR: several statuses are filtered below
        clauses.append(f"attributes.status = {_quote(statuses[0])}")
    clauses += [f"tags.`{k}` = {_quote(v)}" for k, v in (tags or {}).items()]
    rows = []
    for run in search_all_runs(client, list(ids), " and ".join(clauses)):
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "experiment": ids[str(run.info.experiment_id)],
            "job": run.data.tags.get("job"),
            "start_time": pd.to_datetime(run.info.start_time, unit="ms"),
            "end_time": pd.to_datetime(run.info.end_time, unit="ms") if run.info.end_time else pd.NaT,
            "artifact_uri": run.info.artifact_uri,
        }
        row.update({k: typed_param(v) for k, v in run.data.params.items()})
        row.update({t: run.data.tags.get(t) for t in TAGS})
        rows.append(row)
    # Object columns keep each param as logged (2 stays 2, not 2.0, in a column where another run lacks it).
    frame = pd.DataFrame(rows, dtype=object)
    if not frame.empty:
        frame[["start_time", "end_time"]] = frame[["start_time", "end_time"]].apply(pd.to_datetime)
    if frame.empty:
        return pd.DataFrame(columns=RUN_COLUMNS + TAGS)
    frame["job"] = job_kinds(frame)
    keep = frame["job"].isin(list(jobs)) if jobs is not None else ~frame["job"].isin(list(REPORT_JOBS))
    if statuses:
        keep &= frame["status"].isin(list(statuses))
    for k, v in (params or {}).items():
        keep &= _param_matches(frame[k], v) if k in frame else False
    frame = frame[keep]
    if latest_only and not frame.empty:  # newest first (search order): drop older runs of the same config hash
        hashed = frame["config_hash"].notna()
        dup = frame[hashed].duplicated(["experiment", "backend", "job", "config_hash"], keep="first")
        frame = frame.drop(dup[dup].index)
    frame = frame.reset_index(drop=True)
    if frame.empty:
        return pd.DataFrame(columns=RUN_COLUMNS + TAGS)
    frame["condition"] = condition_labels(frame)
    rest = [c for c in frame.columns if c not in RUN_COLUMNS]
    return frame[RUN_COLUMNS + rest]


# ---------------------------------------------------------------------------------------------------------------------
# Metric histories
# ---------------------------------------------------------------------------------------------------------------------

HISTORY_COLUMNS = ["run_id", "key", "step", "value", "timestamp"]


# The bulk path reads MLflow's own ``metrics`` table through its ORM definition (``mlflow.store.tracking.dbmodels``,
# not a public API): measured ~15x faster than the public ``get_metric_history`` (README "Figures and analysis"), so
# MLflow is pinned to the tested minor version in pyproject.toml and tests/analysis/test_mlflow_loader.py fails when
# this path breaks.
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def _sql_store(client: MlflowClient) -> Any:
    """The client's SQLAlchemy tracking store, or None (HTTP, file store)."""
    return sql_store_of(getattr(getattr(client, "_tracking_client", None), "store", None), client.tracking_uri)


def sql_store_of(store: Any, tracking_uri: str) -> Any:
    """``store`` when it is the SQLAlchemy store the bulk path reads, None for HTTP or file stores. A database URI whose
    store does not look like the one this module was tested with is an error, never a silent switch to the API."""
    if hasattr(store, "engine") and hasattr(store, "ManagedSessionMaker"):
        return store
    scheme = str(tracking_uri).split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in SQL_SCHEMES:
        import mlflow

        raise RuntimeError(
            f"MLflow {mlflow.__version__}'s tracking store for {tracking_uri} ({type(store).__name__}) has no "
            "SQLAlchemy engine: analysis.mlflow_loader reads metric histories through MLflow's SQL store (tested with "
            "the version pinned in pyproject.toml); install that version or pass method='api' (public API, slower)"
        )
    return None


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Cyclic GC paused while millions of row tuples are made and dropped (it would rescan them again and again,
    doubling the time of a large fetch); they hold no cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _history_sql(store: Any, run_ids: Sequence[str], keys: Sequence[str]) -> pd.DataFrame:
    """All values of ``keys`` for ``run_ids``: one SELECT per key and chunk of runs on MLflow's ``metrics`` table
    (through its own ORM table definition) on the database driver's cursor, rows unpacked column-wise into arrays."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    t = SqlMetric.__table__
    runs, names = sorted(set(run_ids)), sorted(set(keys))
    run_code = {r: i for i, r in enumerate(runs)}
    parts: list[tuple[np.ndarray, ...]] = []
    with _no_gc(), store.engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()  # plain tuples: no per-row Row objects
        for key_code, key in enumerate(names):
            for i in range(0, len(runs), _SQL_CHUNK):
                stmt = sa.select(t.c.run_uuid, t.c.step, t.c.value, t.c.timestamp, t.c.is_nan).where(
                    t.c.key == key, t.c.run_uuid.in_(runs[i : i + _SQL_CHUNK])
                )
                # Values rendered as SQL literals (quoted by the dialect): no DBAPI parameter style to match.
                cursor.execute(str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})))
                rows = cursor.fetchall()
                if not rows:
                    continue
                run, step, value, stamp, is_nan = zip(*rows)
                value = np.asarray(value, dtype=np.float64)
                value[np.asarray(is_nan, dtype=bool)] = np.nan
                codes = np.fromiter(map(run_code.__getitem__, run), dtype=np.int32, count=len(run))
                parts.append((codes, np.full(len(run), key_code, np.int32), np.asarray(step, np.int64), value,
                              np.asarray(stamp, np.int64)))  # fmt: skip
    cols = [np.concatenate(c) for c in zip(*parts)] if parts else [np.zeros(0, np.int64)] * 5
    return _history_frame(cols, runs, names)


def _history_frame(cols: Sequence[np.ndarray], runs: Sequence[str], names: Sequence[str]) -> pd.DataFrame:
    """The history frame from (run code, key code, step, value, timestamp) arrays, sorted by run, key, step and time;
    run_id and key categorical (sorted categories), so sorting and joining run columns work on integer codes."""
    run, key, step, value, stamp = cols
    order = np.lexsort((stamp, step, key, run))
    return pd.DataFrame(
        {
            "run_id": pd.Categorical.from_codes(run[order], categories=runs),
            "key": pd.Categorical.from_codes(key[order], categories=names),
            "step": step[order].astype(np.int64),
            "value": value[order].astype(np.float64),
            "timestamp": stamp[order].astype(np.int64),
        }
    )


def _history_api(client: MlflowClient, run_ids: Sequence[str], keys: Sequence[str], workers: int) -> pd.DataFrame:
    """The same through the public API: one ``get_metric_history`` per (run, key), ``workers`` at a time."""
    pairs = [(r, k) for r in run_ids for k in keys]

    def fetch(pair: tuple[str, str]) -> list[tuple[Any, ...]]:
        run_id, key = pair
        return [(run_id, key, m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(pairs)))) as pool:
        rows = [row for chunk in pool.map(fetch, pairs) for row in chunk]
    runs, names = sorted(set(run_ids)), sorted(set(keys))
    rc, kc = {r: i for i, r in enumerate(runs)}, {k: i for i, k in enumerate(names)}
    run, key, step, value, stamp = zip(*rows) if rows else ((), (), (), (), ())
    cols = [np.asarray([rc[r] for r in run], np.int32), np.asarray([kc[k] for k in key], np.int32),
            np.asarray(step, np.int64), np.asarray(value, np.float64), np.asarray(stamp, np.int64)]  # fmt: skip
    return _history_frame(cols, runs, names)


@functools.lru_cache(maxsize=32)
def _cached_history(uri: str, versions: tuple[tuple[str, str], ...], keys: tuple[str, ...], method: str) -> Any:
    return _fetch_history(make_client(uri), [r for r, _ in versions], keys, method, 8)


def _fetch_history(
    client: MlflowClient, run_ids: Sequence[str], keys: Sequence[str], method: str, workers: int
) -> pd.DataFrame:
    store = _sql_store(client) if method in ("auto", "sql") else None
    if method == "sql" and store is None:
        raise ValueError(f"method='sql' needs a SQL tracking store, got {client.tracking_uri}")
    if not run_ids or not keys:
        return _history_frame([np.zeros(0, np.int64)] * 5, sorted(set(run_ids)), sorted(set(keys)))
    if store is not None:
        return _history_sql(store, run_ids, keys)
    return _history_api(client, run_ids, keys, workers)


def _history(
    client: MlflowClient,
    run_ids: Sequence[str],
    keys: Sequence[str],
    workers: int,
    runs: pd.DataFrame | None,
    method: str,
) -> pd.DataFrame:
    """Histories with categorical run_id / key, from the cache when every run has ended."""
    if method not in ("auto", "sql", "api"):
        raise ValueError(f"method must be 'auto', 'sql' or 'api', got {method!r}")
    run_ids, keys = list(dict.fromkeys(run_ids)), list(dict.fromkeys(keys))
    if runs is not None and len(run_ids) and set(run_ids) <= set(runs["run_id"]):
        sel = runs.set_index("run_id").loc[run_ids]
        if sel["status"].isin(TERMINAL).all() and sel["end_time"].notna().all():
            versions = tuple(zip(run_ids, (f"{s}@{t}" for s, t in zip(sel["status"], sel["end_time"]))))
            return _cached_history(client.tracking_uri, versions, tuple(keys), method).copy()
    return _fetch_history(client, run_ids, keys, method, workers)


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """run_id and key as plain strings."""
    return frame.assign(run_id=frame["run_id"].astype(str), key=frame["key"].astype(str))


def metric_history(
    client: MlflowClient,
    run_ids: Sequence[str],
    keys: Sequence[str],
    max_workers: int = 8,
    *,
    runs: pd.DataFrame | None = None,
    method: str = "auto",
) -> pd.DataFrame:
    """Tidy histories: columns run_id, key, step, value, timestamp (ms), sorted by run, key, step and time; every
    logged value (a step logged twice shows twice: ``align_steps`` keeps the last).

    ``method``: 'sql' (bulk SELECTs, SQL stores only), 'api' (public API, any store), 'auto' (sql where possible).
    With ``runs`` (a ``load_runs`` frame holding these run ids) the result is cached when every run has ended.
    """
    return _plain(_history(client, run_ids, keys, max_workers, runs, method))


def clear_cache() -> None:
    """Forget cached histories and tables (tests; a store edited behind MLflow's back)."""
    _cached_history.cache_clear()
    _cached_tables.cache_clear()


def load_metrics(
    experiments: str | Sequence[str],
    keys: Sequence[str],
    runs: pd.DataFrame | None = None,
    tracking_uri: str | None = None,
    client: MlflowClient | None = None,
    *,
    method: str = "auto",
) -> pd.DataFrame:
    """Histories of ``keys`` for the runs (default: the FINISHED runs of the experiments), each row joined with its
    run's columns: a long frame ready for seaborn (x="step", y="value", hue="condition")."""
    client = client or client_for(tracking_uri)
    runs = runs if runs is not None else load_runs(experiments, client=client)
    hist = _history(client, list(runs["run_id"]), keys, 8, runs, method)
    # Join the run columns by position (the history's run codes index the runs): no hash join over every point.
    cols = _run_columns(runs, HISTORY_COLUMNS).set_index("run_id").reindex(hist["run_id"].cat.categories)
    joined = cols.take(hist["run_id"].cat.codes.to_numpy()).reset_index(drop=True)
    return pd.concat([_plain(hist), joined], axis=1)


def _run_columns(runs: pd.DataFrame, taken: Sequence[str]) -> pd.DataFrame:
    """The run columns to join onto rows: params none of these runs has dropped (a study's ``step`` param among
    training runs), and a param named like a row column renamed ``run.<name>``."""
    empty = [c for c in runs.columns if c not in RUN_COLUMNS and runs[c].isna().all()]
    runs = runs.drop(columns=empty)
    return runs.rename(columns={c: f"run.{c}" for c in runs.columns if c in set(taken) and c != "run_id"})


def align_steps(long: pd.DataFrame) -> pd.DataFrame:
    """One value per (run, key, step): the last one logged (a step recomputed after a resume is logged again)."""
    if long.empty:
        return long
    order = long.sort_values(["run_id", "key", "step", "timestamp"], kind="stable")
    return order.drop_duplicates(["run_id", "key", "step"], keep="last").reset_index(drop=True)


def wide_metrics(long: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Run x step rows, one column per metric (NaN where a run did not log a key at a step): steps aligned across
    keys, e.g. train metrics every step and eval metrics every ``eval_interval``. Run columns joined when given."""
    aligned = align_steps(long[["run_id", "key", "step", "value", "timestamp"]])
    wide = aligned.pivot(index=["run_id", "step"], columns="key", values="value").reset_index()
    wide.columns.name = None
    return wide.merge(_run_columns(runs, list(wide.columns)), on="run_id", how="left") if runs is not None else wide


def missing_metrics(long: pd.DataFrame, runs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """(run_id, run_name, key) for every requested key a run never logged: report it, do not fail on it."""
    pairs = long[["run_id", "key"]].drop_duplicates() if not long.empty else long
    have = set(zip(pairs["run_id"].astype(str), pairs["key"].astype(str))) if not long.empty else set()
    rows = [
        (r, n, k) for r, n in zip(runs["run_id"], runs.get("run_name", runs["run_id"])) for k in keys
        if (r, k) not in have
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["run_id", "run_name", "key"])


# ---------------------------------------------------------------------------------------------------------------------
# Table artifacts
# ---------------------------------------------------------------------------------------------------------------------

_STEP = re.compile(r"^(?P<name>.+?)(?:_step(?P<step>\d+))?\.json$")


def _local_dir(artifact_uri: Any) -> Path | None:
    """The directory of a local artifact URI (plain path or file://), else None."""
    if not isinstance(artifact_uri, str) or not artifact_uri:
        return None
    if artifact_uri.startswith("file://"):
        return Path(artifact_uri[len("file://") :])
    return Path(artifact_uri) if "://" not in artifact_uri and ":" not in artifact_uri.split("/")[0] else None


def _pick(files: list[tuple[str, int | None]], steps: str | int) -> list[tuple[str, int | None]]:
    if steps == "last" and files:
        stepped = [f for f in files if f[1] is not None]
        return [max(stepped, key=lambda f: f[1])] if stepped else files
    if isinstance(steps, int):
        return [f for f in files if f[1] == steps]
    return files


def _read_tables(
    client: MlflowClient, run_id: str, artifact_uri: Any, name: str, steps: str | int, method: str
) -> list[dict[str, Any]]:
    """Rows of the run's ``tables/<name>[_step<k>].json``: read in place from a local artifact store, else through
    the API (``method='api'`` forces that)."""
    local = _local_dir(artifact_uri) if method == "auto" else None
    if local is not None:
        paths = sorted((local / "tables").glob("*.json"))
        names = [(f"tables/{p.name}", _STEP.match(p.name)) for p in paths]
    else:
        names = [(a.path, _STEP.match(Path(a.path).name)) for a in client.list_artifacts(run_id, "tables")]
    files = _pick([(p, int(m["step"]) if m["step"] else None) for p, m in names if m and m["name"] == name], steps)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for path, step in files:
            src = local / path if local is not None else Path(client.download_artifacts(run_id, path, tmp))
            rows += [{**r, "run_id": run_id, "table_step": step} for r in json.loads(src.read_text())]
    return rows


def _fetch_tables(
    client: MlflowClient, runs: Sequence[tuple[str, Any]], name: str, steps: str | int, method: str
) -> pd.DataFrame:
    def read(run: tuple[str, Any]) -> list[dict[str, Any]]:
        return _read_tables(client, run[0], run[1], name, steps, method)

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(runs)))) as pool:
        rows = [r for chunk in pool.map(read, runs) for r in chunk]
    return pd.DataFrame(rows)


@functools.lru_cache(maxsize=64)
def _cached_tables(
    uri: str, versions: tuple[tuple[str, str, Any], ...], name: str, steps: str | int, method: str
) -> pd.DataFrame:
    return _fetch_tables(make_client(uri), [(r, a) for r, _, a in versions], name, steps, method)


def load_tables(
    experiments: str | Sequence[str],
    name: str,
    runs: pd.DataFrame | None = None,
    tracking_uri: str | None = None,
    client: MlflowClient | None = None,
    *,
    steps: str | int = "all",
    method: str = "auto",
) -> pd.DataFrame:
    """The rows of table ``name`` (``MlflowRunLogger.log_table``) of every run that logged it, one frame, each row
    joined with its run's columns; ``table_step`` is the step of a per-step table (``<name>_step<k>.json``), NaN for
    a run-level one. ``steps``: 'all', 'last' (each run's latest step) or one step. Runs without the table add
    nothing (an empty frame when none has it). A run column named like a table column is renamed ``run.<name>``.
    ``method``: 'auto' reads a local artifact store in place, 'api' always goes through MLflow's artifact API."""
    if not (steps in ("all", "last") or (isinstance(steps, int) and not isinstance(steps, bool))):
        raise ValueError(f"steps must be 'all', 'last' or an int, got {steps!r}")
    if method not in ("auto", "api"):
        raise ValueError(f"method must be 'auto' or 'api', got {method!r}")
    client = client or client_for(tracking_uri)
    runs = runs if runs is not None else load_runs(experiments, client=client)
    uris = runs["artifact_uri"] if "artifact_uri" in runs else pd.Series(None, index=runs.index)
    pairs = list(zip(runs["run_id"], uris))
    ended = bool(len(runs)) and runs["status"].isin(TERMINAL).all() and runs["end_time"].notna().all()
    if ended:
        versions = tuple((r, f"{s}@{t}", a) for (r, a), s, t in zip(pairs, runs["status"], runs["end_time"]))
        rows = _cached_tables(client.tracking_uri, versions, name, steps, method).copy()
    else:
        rows = _fetch_tables(client, pairs, name, steps, method) if pairs else pd.DataFrame()
    if rows.empty:
        return pd.DataFrame(columns=["run_id", "table_step", *runs.columns[1:]])
    return rows.merge(_run_columns(runs, list(rows.columns)), on="run_id", how="left")
