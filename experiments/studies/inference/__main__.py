"""Command line: ``python -m experiments.studies.inference --help`` (see the package docstring)."""

from __future__ import annotations

import argparse
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
from experiments.tracking.loggers import JsonlLogger, MultiLogger

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


def tracked_run(uri: str, experiment: str, cfg: InferenceScalingConfig, run_dir: Path) -> Any:
    """The config's ``TrackedRun`` in ``experiment`` (found by the tags ``config_hash`` and ``backend`` like every job's
    run), or None where MLflow is not installed: ``.venv-vllm`` lacks it, so run the study there, then publish the
    finished run directory from ``.venv`` with the same command plus ``--mlflow-uri``."""
    try:
        import mlflow  # noqa: F401

        from experiments.tracking import RunIdentity, TrackedRun
    except ImportError as e:
        log.warning("--mlflow-uri given but MLflow is not importable here (%s): logging JSONL only", e)
        return None
    identity = RunIdentity(experiment, cfg.hash, BACKEND, run_dir.name, job="inference_scaling")
    return TrackedRun(identity, run_dir, uri=uri, base_dir=Path.cwd(), source="python -m experiments.studies.inference")


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
    tracked = tracked_run(ns.mlflow_uri, ns.mlflow_experiment, cfg, run_dir) if ns.mlflow_uri else None
    if finished:
        if tracked is not None and not tracked.finished:
            print(f"published {run_dir} to MLflow run {tracked.publish()}")
        print(f"already finished: {run_dir}")
        print(format_table([json.loads(line) for line in table.read_text().splitlines()]))
        return 0
    # One in-process engine (no engine-core subprocess): simpler to stop, and the CPU build gains nothing from it.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    jsonl = JsonlLogger(run_dir)
    try:
        if tracked is None:
            out = run(cfg, jsonl, progress=not ns.quiet)
        else:  # locked, guarded (KILLED / FAILED with the reason), FINISHED on a clean exit
            with tracked.open(force=tracked.finished) as ml:
                out = run(cfg, MultiLogger(jsonl, ml), progress=not ns.quiet)
    except KeyboardInterrupt:
        jsonl.finish("KILLED")
        raise
    except BaseException:
        jsonl.finish("FAILED")
        raise
    jsonl.finish("FINISHED")
    print(format_table(out["rows"]))
    print(f"run dir: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
