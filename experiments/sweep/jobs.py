"""The sweep layer's job: typed Hydra configs for a run, their validation, and the function every sweep job runs.

``sweep.py`` composes a :class:`SweepJobConfig` (the fields of ``experiments.local.RLVRConfig`` at the top level, plus
the sweep's own keys) from the config tree in ``sweeps/``; Hydra checks types against these dataclasses, and
:func:`prepare` checks values (``RLVRConfig.validate()``) and computes the config hash. The custom sweeper
(``hydra_plugins/ead_sweeper``) calls :func:`prepare` on every job of a multirun before any job is launched, and
:func:`run_job` calls it again inside the job.

:func:`run_job` is prepare -> :class:`~experiments.tracking.TrackedRun` -> ``job.run(logger, run_dir)``: the
lifecycle object finds, continues or creates the MLflow run of the config hash (a FINISHED one is skipped unless
``force=true``), locks the run directory ``<runs_root>/<experiment>/<hash>`` (checkpoint, JSONL log, policy), logs
tags, params and the config, backfills, and records the end state; the job only runs itself with the logger.

The sweep's own keys (``experiment_name``, ``tracking``, ``runs_root``, ``force``, ``dry_run``, ``progress``,
``config_hash``) say where and how a job runs, never what it computes: none of them is part of any config hash.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from experiments.local.config import RLVRConfig, from_dict
from experiments.local.policy import SIZES
from experiments.sweep.knobs import TaskKnobs, check_task_knobs, task_knobs
from experiments.sweep.naming import plain, run_name
from experiments.tracking import MlflowRunLogger, RunIdentity, TrackedRun, resolve_tracking_uri, safe_name
from experiments.tracking.hashing import flat_params
from experiments.tracking.store import check_tracking_uri

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

    # Every knob of every task, None = the task's default (experiments.sweep.knobs): task_knobs.X=... without '+'.
    task_knobs: TaskKnobs = field(default_factory=TaskKnobs)  # type: ignore[valid-type, assignment]
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
    """A composed, validated job: what to run, its identity and where it goes. It knows how to run itself with a
    logger and a run directory (:meth:`run`); everything around that is the lifecycle's (``TrackedRun``)."""

    backend: str  # local | verl
    kind: str  # train | entropy | branching | schedule
    config_hash: str
    config: Any  # RLVRConfig (local training), VerlRunConfig (verl training) or a study config
    experiment_name: str
    run_name: str
    progress: bool | None = field(default=None, compare=False)  # progress bar (None: when stderr is a terminal)

    def identity(self) -> RunIdentity:
        return RunIdentity(self.experiment_name, self.config_hash, self.backend, self.run_name, job=self.kind)

    def params(self) -> dict[str, Any]:
        """MLflow params the lifecycle logs (the local trainer logs its own config; verl its own under '/' keys)."""
        own: dict[str, Any] = {}
        if self.kind != "train":
            own = {**flat_params(self.config), "study": self.kind}
        elif self.backend == "verl":
            own = flat_params(self.config)
        return {"backend.name": self.backend, "experiment_name": self.experiment_name, **own}

    def config_dict(self) -> dict[str, Any]:
        """The job's own config as plain data (artifact ``config/job.json``)."""
        return self.config.to_dict() if self.kind == "train" else asdict(self.config)

    def run(self, logger: MlflowRunLogger, run_dir: Path) -> dict[str, Any]:
        """Do the work, logging through ``logger``, with ``run_dir`` for checkpoints and JSONL; return the summary's
        extra entries (final eval metrics of a local training run, the row count of a study)."""
        if self.kind != "train":
            from experiments.sweep.study_jobs import run_study_job

            return run_study_job(self.kind, self.config, logger, run_dir)
        if self.backend == "verl":
            from experiments.sweep.verl_jobs import run_verl_job

            return run_verl_job(self.config, logger, run_dir, experiment=self.experiment_name, run_name=self.run_name)
        from experiments.local.train import run as train

        progress = self.progress if self.progress is not None else sys.stderr.isatty()
        final = train(self.config, run_dir=run_dir, logger=logger, progress=progress)
        return {k: float(v) for k, v in final.items() if k.startswith("eval/")}


def _local_prepare(cfg: DictConfig) -> RLVRConfig:
    data = {k: plain(cfg[k]) for k in RLVR_KEYS}
    data["task_knobs"] = task_knobs(cfg.task_knobs)
    check_task_knobs(str(cfg.task), data["task_knobs"])
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


def unknown_keys(node: Any, prefix: str = "") -> list[tuple[str, list[str]]]:
    """Keys of a composed config that its schema lacks, as (dotted key, known keys at that level). Hydra rejects an
    unknown ``key=value`` but adds ``+key=value`` to a typed node; either way it is a typo or a key this harness does
    not have, which would run with a config hash that ignores it. Only typed (dataclass) nodes are checked: free-form
    dicts (``task_knobs``, checked per task) may hold any key."""
    if not isinstance(node, DictConfig):
        return []
    schema = OmegaConf.get_type(node)
    known = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    out: list[tuple[str, list[str]]] = []
    for key in node.keys():
        if prefix == "" and key == "hydra":
            continue  # Hydra's own node (present in the sweeper's composed configs)
        if known is not None and key not in known:
            out.append((f"{prefix}{key}", known))
        elif OmegaConf.is_dict(node._get_node(key)):
            out.extend(unknown_keys(node[key], f"{prefix}{key}."))
    return out


def _check_keys(cfg: DictConfig) -> None:
    unknown = unknown_keys(cfg)
    if not unknown:
        return
    lines = []
    for key, known in unknown:
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
        hint = f"did you mean {key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close[0]}?" if close else ""
        where = key.rsplit(".", 1)[0] if "." in key else "the top level"
        lines.append(f"{key}: unknown key ({hint or f'keys at {where}: ' + ', '.join(known)})")
    raise ValueError("unknown config key(s), with or without '+': " + "; ".join(lines))


def prepare(cfg: DictConfig) -> PreparedJob:
    """Validate a composed job config; raise ValueError naming the parameter (dotted) and its allowed values."""
    _check_keys(cfg)
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
    return PreparedJob(backend, kind, h, config, str(cfg.experiment_name), name, progress=cfg.progress)


def preflight(cfg: DictConfig) -> None:
    """What a job needs from the world, checked before anything is launched (the sweeper's plan, a single run of
    sweep.py), each store and directory once per process: the tracking store answers within seconds
    (``tracking.uri``) and ``runs_root`` is writable. ValueError names the setting. Not part of :func:`prepare`,
    which only reads the config (it is also what config hashes are computed with)."""
    base = launch_dir()
    check_tracking_uri(resolve_tracking_uri(cfg.tracking.uri, base))
    check_runs_root(cfg.runs_root, base)


def describe(job: PreparedJob, cfg: DictConfig) -> str:
    """What a dry run shows for a job beyond its line in the plan: the exact verl command for verl jobs."""
    if job.backend != "verl" or job.kind != "train":
        return ""
    from experiments.sweep.verl_jobs import for_run
    from experiments.verl.launch import dry_run

    base = launch_dir()
    run_dir = run_dir_for(cfg.runs_root, job.experiment_name, job.config_hash, base)
    uri = resolve_tracking_uri(cfg.tracking.uri, base)
    return dry_run(for_run(job.config, tracking_uri=uri, run_id=None, experiment=job.experiment_name,
                           run_name=job.run_name, ckpt_root=str(run_dir.parent)))  # fmt: skip


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


def check_runs_root(runs_root: str | Path, base: Path) -> None:
    """ValueError naming ``runs_root`` when run directories cannot be made there (read-only file system, no
    permission, a file in the way): found before any job starts rather than by every job. Creates nothing: a
    temporary file is made and removed in ``runs_root``, or in its nearest existing parent (jobs create the rest)."""
    root = Path(runs_root) if Path(runs_root).is_absolute() else base / runs_root
    if root in _WRITABLE:
        return
    existing = next(p for p in (root, *root.parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ValueError(
            f"runs_root {root} is not writable ({e.strerror or e}): run directories (checkpoints, metrics.jsonl) go "
            "there; set runs_root=<a writable directory>"
        ) from None
    _WRITABLE.add(root)


_WRITABLE: set[Path] = set()


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


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """Run one sweep job to completion (or resume it, or skip it when already finished); return a small summary.

    prepare (validate, hash) -> :class:`~experiments.tracking.TrackedRun` (experiment id from the sweeper, else
    get-or-create; newest run of the hash: FINISHED -> skip unless ``force``, unfinished -> continue, none -> new;
    lock, tags, params, the resolved config, backfill, end state) -> :meth:`PreparedJob.run`.
    """
    job = prepare(cfg)
    base = launch_dir()
    run_dir = run_dir_for(cfg.runs_root, job.experiment_name, job.config_hash, base)
    tracked = TrackedRun(
        job.identity(),
        run_dir,
        uri=cfg.tracking.uri,
        base_dir=base,
        experiment_id=cfg.tracking.experiment_id,
        source="sweep.py",
        extra_tags={"slurm_job_id": _slurm_job_id(), "hydra_overrides": _hydra_overrides()[:5000]},
    )
    artifacts = {"config/resolved.yaml": OmegaConf.to_yaml(cfg, resolve=True), "config/job.json": job.config_dict()}
    return tracked.run(
        lambda logger: job.run(logger, run_dir), force=bool(cfg.force), params=job.params(), artifacts=artifacts
    )
