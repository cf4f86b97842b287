"""MLflow -> tidy pandas frames: one row per run (params and tags as columns), one row per (run, metric, step).

Queries are bulk: the runs of an experiment come from paged ``search_runs`` calls (1000 runs per request, params and
tags included), and metric histories are fetched concurrently (one request per run and key, 8 at a time) instead of
one after the other. The default store is the sweep's: ``sqlite:///mlflow.db`` in the working directory.

    from analysis.mlflow_loader import load_runs, load_metrics
    runs = load_runs("default")                                    # run_id, run_name, status, condition, seed, ...
    curves = load_metrics("default", ["eval/pass_at_16"], runs)    # run_id, key, step, value + the run columns
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pandas as pd

from experiments.tracking import DEFAULT_TRACKING_URI, make_client, resolve_tracking_uri, search_all_runs

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Columns every runs frame has, first; then every param (dotted names as logged) and the tags below.
RUN_COLUMNS = ["run_id", "run_name", "status", "experiment", "start_time", "end_time", "condition"]
TAGS = ["config_hash", "backend", "git_commit", "slurm_job_id", "host", "attempt", "interruptions", "end_reason"]
# EAD parameters that, when they differ between the EAD runs of an experiment, become part of the condition label.
EAD_KEYS = ["sampling.preset", "sampling.tau_max", "sampling.tau_min", "sampling.d0", "sampling.c", "sampling.d_growth"]


def client_for(tracking_uri: str | None = None) -> MlflowClient:
    """A client for ``tracking_uri`` (default: the sweep's SQLite file in the working directory)."""
    return make_client(resolve_tracking_uri(tracking_uri or DEFAULT_TRACKING_URI, "."))


def _number(text: Any) -> Any:
    """MLflow params are strings: give back numbers, booleans and None where the text is one."""
    if not isinstance(text, str):
        return text
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in lowered else value


def _fmt(value: Any) -> str:
    """Numbers as written in configs: 1 -> '1.0', 0.6 -> '0.6' (params hold canonical ints for round floats)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = f"{float(value):g}"
        return text if any(c in text for c in ".e") else f"{text}.0"
    return str(value)


def condition_labels(runs: pd.DataFrame) -> pd.Series:
    """'EAD' or 'fixed 0.6' per run; EAD parameters that vary between the EAD runs are appended ('EAD d0=4')."""
    if runs.empty:
        return pd.Series(dtype=str)
    kind = runs.get("sampling.kind", pd.Series("ead", index=runs.index))
    ead = runs[kind == "ead"]
    varying = [k for k in EAD_KEYS if k in ead and ead[k].astype(str).nunique() > 1]

    def label(row: pd.Series) -> str:
        if row.get("sampling.kind") == "fixed":
            return f"fixed {_fmt(row.get('sampling.tau'))}"
        extra = " ".join(f"{k.split('.', 1)[1]}={row[k]}" for k in varying)
        return f"EAD {extra}".strip()

    return runs.apply(label, axis=1)


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


def load_runs(
    experiments: str | Sequence[str],
    tracking_uri: str | None = None,
    statuses: Sequence[str] | None = ("FINISHED",),
    client: MlflowClient | None = None,
) -> pd.DataFrame:
    """One row per run of the experiment(s) with ``statuses`` (None: all): RUN_COLUMNS, every param (typed), TAGS."""
    client = client or client_for(tracking_uri)
    ids = experiment_ids(client, experiments)
    flt = " or ".join(f"attributes.status = '{s}'" for s in statuses) if statuses else ""
    rows = []
    for run in search_all_runs(client, list(ids), flt):
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "experiment": ids[str(run.info.experiment_id)],
            "start_time": pd.to_datetime(run.info.start_time, unit="ms"),
            "end_time": pd.to_datetime(run.info.end_time, unit="ms") if run.info.end_time else pd.NaT,
        }
        row.update({k: _number(v) for k, v in run.data.params.items()})
        row.update({t: run.data.tags.get(t) for t in TAGS})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=RUN_COLUMNS + TAGS)
    frame["condition"] = condition_labels(frame)
    rest = [c for c in frame.columns if c not in RUN_COLUMNS]
    return frame[RUN_COLUMNS + rest].reset_index(drop=True)


def metric_history(
    client: MlflowClient, run_ids: Sequence[str], keys: Sequence[str], max_workers: int = 8
) -> pd.DataFrame:
    """Tidy histories: columns run_id, key, step, value, timestamp (ms); requests run concurrently."""
    pairs = [(r, k) for r in run_ids for k in keys]

    def fetch(pair: tuple[str, str]) -> list[dict[str, Any]]:
        run_id, key = pair
        return [
            {"run_id": run_id, "key": key, "step": m.step, "value": m.value, "timestamp": m.timestamp}
            for m in client.get_metric_history(run_id, key)
        ]

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(pairs)))) as pool:
        rows = [row for chunk in pool.map(fetch, pairs) for row in chunk]
    frame = pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])
    return frame.sort_values(["run_id", "key", "step"]).reset_index(drop=True)


def load_metrics(
    experiments: str | Sequence[str],
    keys: Sequence[str],
    runs: pd.DataFrame | None = None,
    tracking_uri: str | None = None,
    client: MlflowClient | None = None,
) -> pd.DataFrame:
    """Histories of ``keys`` for the runs (default: the FINISHED runs of the experiments), each row joined with its
    run's columns: a long frame ready for seaborn (x="step", y="value", hue="condition")."""
    client = client or client_for(tracking_uri)
    runs = runs if runs is not None else load_runs(experiments, client=client)
    hist = metric_history(client, list(runs["run_id"]), keys)
    return hist.merge(runs, on="run_id", how="left")
