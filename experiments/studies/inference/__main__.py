"""Command line: ``python -m experiments.studies.inference --help`` (see the package docstring)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from experiments.studies.inference import __doc__ as PACKAGE_DOC
from experiments.studies.inference.cli import add_dataclass_options, collect
from experiments.studies.inference.config import BACKEND, EngineConfig, InferenceScalingConfig
from experiments.studies.inference.job import run
from experiments.tracking.loggers import JsonlLogger, MultiLogger, RunLogger

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.studies.inference",
        description=PACKAGE_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run-dir", default=None, help="output directory (default: runs/infer-<config hash>)")
    p.add_argument("--config", default=None, help="JSON file with (part of) the config; flags override it")
    p.add_argument(
        "--mlflow-uri",
        default=None,
        help="also log to MLflow (needs mlflow; .venv-vllm lacks it: rerun a finished run dir from .venv to publish)",
    )
    p.add_argument("--mlflow-experiment", default="ead-inference-scaling", help="MLflow experiment name")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_dataclass_options(p, InferenceScalingConfig)
    return p


def config_from_args(ns: argparse.Namespace) -> InferenceScalingConfig:
    """The config from --config JSON and flags (flags win; nested engine options merge)."""
    data: dict[str, Any] = json.loads(Path(ns.config).read_text()) if ns.config else {}
    skip = ("run_dir", "config", "mlflow_uri", "mlflow_experiment", "quiet")
    for key, value in collect(ns, skip=skip).items():
        data[key] = {**data.get(key, {}), **value} if key == "engine" else value
    known = {f.name for f in dataclasses.fields(InferenceScalingConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}")
    engine = data.pop("engine", {})
    unknown = sorted(set(engine) - {f.name for f in dataclasses.fields(EngineConfig)})
    if unknown:
        raise ValueError(f"unknown config key(s) {[f'engine.{k}' for k in unknown]}")
    return InferenceScalingConfig(**data, engine=EngineConfig(**engine))


def open_mlflow_run(
    uri: str, experiment: str, cfg: InferenceScalingConfig, run_dir: Path, *, finished_ok: bool
) -> tuple[Any, bool] | None:
    """``(MlflowRunLogger, already_finished)`` for this config's run in ``experiment``, or None without MLflow.

    Follows experiments.tracking's conventions: a run is identified by the tags ``config_hash`` and ``backend``, and
    the newest run of the hash is continued unless it is FINISHED. A FINISHED one is returned as such when
    ``finished_ok`` (the run directory is finished too: nothing to log); otherwise a fresh run is opened.
    ``mlflow`` is not in ``.venv-vllm``: run the study there, then publish the finished run directory from
    ``.venv`` with the same command plus ``--mlflow-uri``.
    """
    try:
        import mlflow  # noqa: F401

        from experiments import tracking
    except ImportError as e:
        log.warning("--mlflow-uri given but MLflow is not importable here (%s): logging JSONL only", e)
        return None
    uri = tracking.resolve_tracking_uri(uri, Path.cwd())
    client = tracking.make_client(uri)
    experiment_id = tracking.ensure_experiment(client, experiment, uri)
    latest = tracking.latest_run(client, experiment_id, cfg.hash, BACKEND)
    if latest is not None and latest.info.status == tracking.FINISHED:
        if finished_ok:
            return tracking.MlflowRunLogger(client, latest.info.run_id), True
        latest = None
    tags = {
        "config_hash": cfg.hash,
        "backend": BACKEND,
        "git_commit": tracking.git_commit(),
        "host": tracking.host(),
        "run_dir": str(run_dir.resolve()),
    }
    if latest is not None:
        run_id = latest.info.run_id
        client.update_run(run_id, status=tracking.RUNNING)
    else:
        run_id = client.create_run(experiment_id, run_name=run_dir.name, tags=tags).info.run_id
    ml = tracking.MlflowRunLogger(client, run_id)
    ml.set_tags(tags)
    return ml, False


def publish_run_dir(run_dir: Path, ml: Any) -> None:
    """Log a finished run directory (params, metrics by step, tables) into an MLflow run and finish it."""
    jsonl = JsonlLogger(run_dir)
    ml.log_params(json.loads((run_dir / "params.json").read_text()))
    for rec in jsonl.records():
        ml.log_metrics({k: v for k, v in rec.items() if k != "step"}, rec["step"])
    for path in sorted((run_dir / "tables").glob("*.jsonl")):
        ml.log_table(path.stem, [json.loads(line) for line in path.read_text().splitlines() if line.strip()])
    ml.set_tags({"end_reason": "completed"})
    ml.finish("FINISHED")


def format_table(rows: list[dict[str, Any]]) -> str:
    """The infer_scaling rows as aligned text."""
    lines = [f"{'condition':<24} {'N':>3} {'maj':>7} {'pass':>7} {'worst':>7} {'mean':>7}"]
    lines += [
        f"{r['condition']:<24} {r['N']:>3} {r['maj']:>7.4f} {r['pass']:>7.4f} {r['worst']:>7.4f} {r['mean']:>7.4f}"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = config_from_args(ns).validate()
    except (TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir = Path(ns.run_dir) if ns.run_dir else Path("runs") / f"infer-{cfg.hash}"
    table = run_dir / "tables" / "infer_scaling.jsonl"
    status = run_dir / "status"
    finished = status.exists() and status.read_text().strip() == "FINISHED" and table.exists()
    opened = None
    if ns.mlflow_uri:
        opened = open_mlflow_run(ns.mlflow_uri, ns.mlflow_experiment, cfg, run_dir, finished_ok=finished)
    ml, ml_finished = opened if opened is not None else (None, True)
    if finished:
        if ml is not None and not ml_finished:
            publish_run_dir(run_dir, ml)
            print(f"published {run_dir} to MLflow run {ml.run_id}")
        print(f"already finished: {run_dir}")
        print(format_table([json.loads(line) for line in table.read_text().splitlines()]))
        return 0
    # One in-process engine (no engine-core subprocess): simpler to stop, and the CPU build gains nothing from it.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    jsonl = JsonlLogger(run_dir)
    logger: RunLogger = MultiLogger(jsonl, ml) if ml is not None else jsonl
    guard = contextlib.nullcontext()
    if ml is not None:
        from experiments.tracking import RunEndGuard

        guard = RunEndGuard(ml)  # marks the MLflow run KILLED / FAILED with the reason
    try:
        with guard:
            out = run(cfg, logger, progress=not ns.quiet)
    except KeyboardInterrupt:
        jsonl.finish("KILLED")
        raise
    except BaseException:
        jsonl.finish("FAILED")
        raise
    if ml is not None:
        ml.set_tags({"end_reason": "completed"})
    logger.finish("FINISHED")
    print(format_table(out["rows"]))
    print(f"run dir: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
