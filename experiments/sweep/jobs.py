"""The sweep layer's job: typed Hydra configs for a run, their validation, and the function every sweep job runs.

``sweep.py`` composes a :class:`SweepJobConfig` (the fields of ``experiments.local.RLVRConfig`` at the top level, plus
the sweep's own keys) from the config tree in ``sweeps/``; Hydra checks types against these dataclasses, and
:func:`prepare` checks values (``RLVRConfig.validate()``) and computes the config hash. The custom sweeper
(``hydra_plugins/ead_sweeper``) calls :func:`prepare` on every job of a multirun before any job is launched, and
:func:`run_job` calls it again inside the job.

:func:`run_job` makes the job resumable and idempotent: its run directory is ``<runs_root>/<experiment>/<hash>``
(checkpoint, JSONL log, policy), its MLflow run is found by the ``config_hash`` tag and continued (see
``experiments.tracking``), and a hash whose latest run FINISHED is skipped unless ``force=true``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from experiments.local.config import RLVRConfig, from_dict
from experiments.local.policy import SIZES
from experiments.sweep.naming import plain, run_name
from experiments.tracking import (
    FINISHED,
    RUNNING,
    MlflowRunLogger,
    RunEndGuard,
    Terminated,
    backfill_from_run_dir,
    ensure_experiment,
    git_commit,
    host,
    latest_run,
    make_client,
    resolve_tracking_uri,
    safe_name,
)
from experiments.tracking.hashing import flat_params

log = logging.getLogger(__name__)

RLVR_KEYS = tuple(f.name for f in dataclasses.fields(RLVRConfig))


# ---------------------------------------------------------------------------------------------------------------------
# Schema (registered with Hydra's ConfigStore; defaults of the training config come from RLVRConfig itself)
# ---------------------------------------------------------------------------------------------------------------------


class ServeMode(Enum):
    """Whether the sweep starts an ``mlflow server`` in front of a SQLite store for its jobs."""

    auto = "auto"  # when jobs run in other processes (submitit launchers) and the store is a SQLite file
    always = "always"
    never = "never"


@dataclass
class TrackingConfig:
    """Where runs are tracked. ``uri``: any MLflow tracking URI; a relative ``sqlite:///file.db`` is relative to the
    directory the sweep is launched from. Set by the `tracking` group (sqlite: ``sqlite:///mlflow.db``;
    server: yours)."""

    uri: str = MISSING
    serve: ServeMode = ServeMode.auto
    # Interface the auto-started server binds: None = 127.0.0.1 for local launchers, 0.0.0.0 for Slurm (other nodes).
    server_host: str | None = None
    # Set by the sweeper after creating the experiment once (jobs must not create it concurrently); leave unset.
    experiment_id: str | None = None


@dataclass
class LocalBackendConfig:
    """The CPU backend in ``experiments.local`` (``backend=verl``: experiments.sweep.verl_jobs.VerlBackendConfig)."""

    name: str = "local"


@dataclass
class SweepJobConfig(RLVRConfig):
    """One sweep job: every ``RLVRConfig`` field (typed, with its defaults) plus the sweep's own keys."""

    backend: Any = MISSING  # an option of the `backend` group (typed by its own schema, e.g. LocalBackendConfig)
    experiment_name: str = "default"  # MLflow experiment (one per preset or sweep); also names runs_root/<experiment>
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    runs_root: str = "runs"  # run directories: <runs_root>/<experiment>/<config hash>; relative to the launch directory
    force: bool = False  # re-run jobs whose config hash already FINISHED in this experiment
    dry_run: bool = False  # multirun: compose, validate and list the jobs, launch nothing
    progress: bool | None = None  # progress bar in the job (None: when stderr is a terminal)
    config_hash: str | None = None  # set by the sweeper (output paths, consistency check); leave unset
    study: Any = None  # an option of the `study` group (entropy | branching | schedule); None: an RL training run


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent): ``sweep_schema`` for the primary config,
    ``backend/{local,verl}_schema`` for the backends, ``study/<name>_schema`` for the study jobs."""
    from hydra.core.config_store import ConfigStore

    from experiments.sweep.study_jobs import SCHEMAS
    from experiments.sweep.verl_jobs import VerlBackendConfig

    cs = ConfigStore.instance()
    cs.store(name="sweep_schema", node=SweepJobConfig)
    cs.store(group="backend", name="local_schema", node=LocalBackendConfig)
    cs.store(group="backend", name="verl_schema", node=VerlBackendConfig)
    for name, schema in SCHEMAS.items():
        cs.store(group="study", name=f"{name}_schema", node=schema)


# ---------------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedJob:
    """A composed, validated job: what to run, its identity and where it goes."""

    backend: str  # local | verl
    kind: str  # train | entropy | branching | schedule
    config_hash: str
    config: Any  # RLVRConfig (local training), VerlRunConfig (verl training) or a study config
    experiment_name: str
    run_name: str


def _local_prepare(cfg: DictConfig) -> RLVRConfig:
    data = {k: plain(cfg[k]) for k in RLVR_KEYS}
    try:
        return from_dict(data).validate()
    except ValueError as e:
        if str(cfg.size) not in SIZES:
            raise ValueError(f"{e}; model={cfg.size} is a verl model preset: it needs backend=verl") from None
        raise


def _verl_prepare(cfg: DictConfig) -> Any:
    from experiments.sweep.verl_jobs import verl_config

    return verl_config(cfg)


# name -> function turning the composed config into a validated training config (RLVRConfig or VerlRunConfig).
BACKENDS: dict[str, Callable[[DictConfig], Any]] = {"local": _local_prepare, "verl": _verl_prepare}


def prepare(cfg: DictConfig) -> PreparedJob:
    """Validate a composed job config; raise ValueError naming the parameter (dotted) and its allowed values."""
    try:
        backend = cfg.backend.name
    except MissingMandatoryValue:
        raise ValueError("backend must be chosen, e.g. backend=local") from None
    if backend not in BACKENDS:
        raise ValueError(f"backend.name must be one of {sorted(BACKENDS)}, got {backend!r}")
    try:
        uri = cfg.tracking.uri
    except MissingMandatoryValue:
        raise ValueError("tracking.uri must be set with tracking=server, e.g. tracking.uri=http://host:5000") from None
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"tracking.uri must be a non-empty MLflow tracking URI, got {uri!r}")
    resolve_tracking_uri(uri, ".")  # checks the sqlite form
    if not str(cfg.experiment_name).strip():
        raise ValueError("experiment_name must be a non-empty string")
    if cfg.get("study") is not None:
        from experiments.sweep.study_jobs import study_config, study_hash, study_run_name

        kind, config = study_config(cfg)
        h = study_hash(kind, config)
        name = study_run_name(kind, config, h)
    else:
        kind, config = "train", BACKENDS[backend](cfg)
        h = config.hash
        name = run_name(config, h)
    if cfg.config_hash is not None and cfg.config_hash != h:
        raise ValueError(
            f"config_hash is set by the sweeper and must match the composed config ({h}), got {cfg.config_hash!r}; "
            "the job composed a different config than the sweeper did (config files changed mid-sweep?)"
        )
    return PreparedJob(backend, kind, h, config, str(cfg.experiment_name), name)


def describe(job: PreparedJob, cfg: DictConfig) -> str:
    """What a dry run shows for a job beyond its line in the plan: the exact verl command for verl jobs."""
    if job.backend != "verl" or job.kind != "train":
        return ""
    from experiments.verl.launch import dry_run

    return dry_run(_verl_for_run(job, cfg, run_id=None))


# ---------------------------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------------------------


def launch_dir() -> Path:
    """The directory the sweep was launched from (Hydra's runtime.cwd when under Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.cwd)
    except (ImportError, ValueError):
        return Path.cwd()


def run_dir_for(runs_root: str | Path, experiment_name: str, config_hash: str, base: Path) -> Path:
    root = Path(runs_root)
    if not root.is_absolute():
        root = base / root
    return root / safe_name(experiment_name) / config_hash


def _slurm_job_id() -> str:
    from experiments.sweep.slurm import current_slurm_job_id

    return current_slurm_job_id() or ""


def _hydra_overrides() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return " ".join(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return ""


class RunDirBusy(RuntimeError):
    """Another live process holds the run directory's lock (the same config is running elsewhere)."""


def _lock(run_dir: Path) -> Any:
    run_dir.mkdir(parents=True, exist_ok=True)
    f = open(run_dir / ".lock", "w")  # noqa: SIM115 - held for the job's lifetime
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RunDirBusy(f"{run_dir} is in use by another running job with the same config hash") from None
    f.write(f"{host()} {os.getpid()}\n")
    f.flush()
    return f


def _verl_for_run(job: PreparedJob, cfg: DictConfig, run_id: str | None) -> Any:
    """The verl config with this sweep's tracking URI, MLflow run and checkpoint root (runs_root/<experiment>)."""
    from experiments.sweep.verl_jobs import for_run

    base = launch_dir()
    return for_run(
        job.config,
        tracking_uri=resolve_tracking_uri(cfg.tracking.uri, base),
        run_id=run_id,
        experiment=job.experiment_name,
        run_name=job.run_name,
        ckpt_root=str(run_dir_for(cfg.runs_root, job.experiment_name, job.config_hash, base).parent),
    )


def _params(job: PreparedJob) -> dict[str, Any]:
    """MLflow params of a job (the local trainer logs its own config; verl logs its own under '/'-separated keys)."""
    if job.kind != "train":
        return {**flat_params(job.config), "study": job.kind}
    if job.backend == "verl":
        return flat_params(job.config)
    return {}


def _execute(job: PreparedJob, cfg: DictConfig, run_dir: Path, logger: MlflowRunLogger, progress: bool) -> dict:
    """Run the job's work with ``logger`` (MLflow) and the run directory; return its final metrics."""
    from experiments.tracking.loggers import JsonlLogger, MultiLogger

    if job.kind != "train":
        from experiments.studies import run_study

        both = MultiLogger(JsonlLogger(run_dir), logger)
        rows = run_study(job.kind, job.config, both)
        return {"rows": len(rows)}
    if job.backend == "verl":
        from experiments.verl.launch import run as run_verl

        vcfg = _verl_for_run(job, cfg, logger.run_id)
        result = run_verl(vcfg, finalize_mlflow=False)
        logger.set_tags({"verl_exit_code": result.returncode, "verl_ckpt_dir": result.ckpt_dir})
        if result.status == "KILLED":  # the guard marks the MLflow run KILLED; a requeued job continues it
            raise Terminated(signal.SIGTERM)
        if result.returncode != 0:
            raise RuntimeError(f"verl's trainer exited with {result.returncode}; see its output above")
        return {}
    from experiments.local.train import run as train

    added = backfill_from_run_dir(logger, JsonlLogger(run_dir).records(), run_dir / "tables")
    if added:
        log.info("%s: backfilled %d step(s) from %s into MLflow", job.run_name, added, run_dir)
    return train(job.config, run_dir=run_dir, logger=logger, progress=progress)


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """Run one sweep job to completion (or resume it, or skip it when already finished); return a small summary.

    Steps: validate; open the MLflow experiment (id from the sweeper, else get-or-create by name); look up the newest
    run with this config hash: FINISHED -> skip unless ``force``; unfinished -> continue it; none (or ``force``) ->
    a new run (``force`` also clears the run directory). Then lock the run directory, log tags, params and the
    resolved config, backfill steps the run directory holds but MLflow lacks, and train with the MLflow logger
    under :class:`~experiments.tracking.RunEndGuard`.
    """
    job = prepare(cfg)
    base = launch_dir()
    uri = resolve_tracking_uri(cfg.tracking.uri, base)
    client = make_client(uri)
    experiment_id = cfg.tracking.experiment_id or ensure_experiment(client, job.experiment_name, uri)
    run_dir = run_dir_for(cfg.runs_root, job.experiment_name, job.config_hash, base)
    summary: dict[str, Any] = {"config_hash": job.config_hash, "run_dir": str(run_dir), "experiment_id": experiment_id}

    latest = latest_run(client, experiment_id, job.config_hash, job.backend)
    if latest is not None and latest.info.status == FINISHED and not cfg.force:
        log.info("%s: FINISHED in MLflow run %s; skipped (force=true re-runs)", job.run_name, latest.info.run_id)
        return {**summary, "status": "skipped", "run_id": latest.info.run_id}

    lock = _lock(run_dir)
    try:
        tags = {
            "config_hash": job.config_hash,
            "backend": job.backend,
            "git_commit": git_commit(),
            "slurm_job_id": _slurm_job_id(),
            "host": host(),
            "experiment": job.experiment_name,
            "run_dir": str(run_dir),
            "hydra_overrides": _hydra_overrides()[:5000],
            "job": job.kind,
        }
        if latest is not None and latest.info.status != FINISHED:
            run_id = latest.info.run_id
            attempt = int(latest.data.tags.get("attempt", "1")) + 1
            interruptions = int(latest.data.tags.get("interruptions", "0"))
            client.update_run(run_id, status=RUNNING)
            log.info("%s: continuing MLflow run %s (%s), attempt %d", job.run_name, run_id, latest.info.status, attempt)
        else:
            if latest is not None:  # force: a fresh run and a fresh run directory
                log.info("%s: force=true, re-running (previous run %s FINISHED)", job.run_name, latest.info.run_id)
                for child in run_dir.iterdir():
                    if child.name != ".lock":
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
            run = client.create_run(experiment_id, run_name=job.run_name, tags=tags)
            run_id, attempt, interruptions = run.info.run_id, 1, 0
            log.info("%s: new MLflow run %s in experiment %s", job.run_name, run_id, experiment_id)
        logger = MlflowRunLogger(client, run_id)
        logger.set_tags({**tags, "attempt": attempt, "end_reason": "running"})
        logger.log_params({"backend.name": job.backend, "experiment_name": job.experiment_name, **_params(job)})
        client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
        client.log_dict(run_id, job.config.to_dict() if job.kind == "train" else asdict(job.config), "config/job.json")
        summary["run_id"] = run_id

        progress = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
        t0 = time.perf_counter()
        with RunEndGuard(logger, interruptions):
            final = _execute(job, cfg, run_dir, logger, progress)
            logger.set_tags({"end_reason": "completed"})
            logger.finish(FINISHED)
        log.info("%s: FINISHED in %.1f s (MLflow run %s)", job.run_name, time.perf_counter() - t0, run_id)
        keys = [k for k in final if k.startswith("eval/")]
        return {**summary, "status": FINISHED, **{k: float(final[k]) for k in keys}}
    finally:
        lock.close()
