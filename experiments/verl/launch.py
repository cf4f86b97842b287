"""Start verl's trainer for a ``VerlRunConfig`` (here, or as a multi-node Slurm job) and close its MLflow run.

``run(cfg)`` runs ``python -m verl.trainer.main_ppo <overrides>`` as a child process, forwards SIGTERM /
SIGINT / SIGUSR1 / SIGUSR2 to it, and afterwards sets the MLflow run's final status: verl's MLflow logger
ends the run as FINISHED even when training crashed (``mlflow.end_run()`` without a status), so the
launcher, which sees the exit code, marks it FAILED or KILLED. A requeued job resumes the same MLflow run
(verl re-opens ``MLFLOW_RUN_ID``) and the same checkpoint directory (``<ckpt_root>/<config hash>``).

``sbatch_command(cfg)`` writes the config next to its checkpoints and returns the ``sbatch`` line that
starts ``slurm/verl_multinode.sbatch`` (Ray head on the first node, workers on the others, one task per
node, explicit CPU and GPU counts), which then runs ``python -m experiments.verl run --config ...``
on the head node.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.verl.config import VerlRunConfig
from experiments.verl.overrides import build_command, ray_env_vars

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SBATCH_SCRIPT = REPO_ROOT / "slurm" / "verl_multinode.sbatch"
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


@dataclass
class RunResult:
    """How a verl run ended: the trainer's exit code and the MLflow status it maps to."""

    returncode: int
    status: str  # FINISHED | FAILED | KILLED
    ckpt_dir: str


def dry_run(cfg: VerlRunConfig, validate: bool = False) -> str:
    """The exact verl command for ``cfg`` and where it would write, without starting anything.

    With ``validate``, also compose verl's ``ppo_trainer`` config with the overrides and run verl's own
    checks (imports verl: about 20 s).
    """
    from experiments.verl.overrides import describe

    text = describe(cfg)
    if validate:
        from experiments.verl.compose import compose_and_validate

        compose_and_validate(cfg)
        text += "\n\n# composed against verl's ppo_trainer config: validate_config and dataclass checks passed"
    return text


def preflight(cfg: VerlRunConfig) -> None:
    """Checks verl would only fail on after Ray and the models are up: data files and validation counts."""
    from experiments.verl.data import val_rollout_counts

    cfg.validate()
    for name in ("train_files", "val_files"):
        missing = [f for f in getattr(cfg.data, name) if not Path(f).exists()]
        if missing:
            raise FileNotFoundError(
                f"data.{name}: {missing} not found (python -m experiments.verl prepare-data writes them)"
            )
    for src, ns in val_rollout_counts(cfg.data.val_files).items():
        bad = sorted(n for n in ns if n != 1 and n < cfg.eval_k)
        if bad:
            raise ValueError(
                f"validation source {src!r} has __rollout_n__ {bad} < eval_k ({cfg.eval_k}); prepare it with --eval-n"
            )


def write_run_record(cfg: VerlRunConfig, path: str | Path | None = None) -> Path:
    """Write the config (``from_dict``-loadable), its hash and the exact command to ``<ckpt_dir>/ead_run.json``."""
    path = Path(path) if path is not None else Path(cfg.ckpt_dir) / "ead_run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"config": cfg.to_dict(), "config_hash": cfg.hash, "command": build_command(cfg)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


def child_env(cfg: VerlRunConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the trainer process: the caller's, plus the variables the Ray workers also get."""
    env = dict(os.environ if base is None else base)
    env.update(ray_env_vars(cfg))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def finish_mlflow_run(cfg: VerlRunConfig, status: str) -> None:
    """Set the MLflow run's terminal status (verl's logger always ends it as FINISHED)."""
    if not (cfg.tracking.uri and cfg.tracking.run_id):
        return
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=cfg.tracking.uri).set_terminated(cfg.tracking.run_id, status=status)


def run(cfg: VerlRunConfig, *, check: bool = True, finalize_mlflow: bool = True) -> RunResult:
    """Run verl's trainer for ``cfg`` to completion (or until signalled); return how it ended.

    ``check`` runs ``preflight`` first; ``finalize_mlflow`` sets the MLflow run status afterwards
    (turn it off if the caller's own logger finishes the run).
    """
    if check:
        preflight(cfg)
    write_run_record(cfg)
    argv = build_command(cfg)
    log.info("starting verl: %s", " ".join(argv[:3]))
    proc = subprocess.Popen(argv, env=child_env(cfg))
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)
        # Preemption notices go on to whoever handled them before (submitit's requeue handler under a Hydra
        # submitit launcher); SIGTERM / SIGINT just wait for the trainer to exit.
        before = previous.get(signum)
        if signum in (signal.SIGUSR1, signal.SIGUSR2) and callable(before):
            before(signum, frame)

    previous: dict[int, Any] = {}
    for s in _FORWARDED:
        previous[s] = signal.signal(s, forward)
    try:
        rc = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    status = "FINISHED" if rc == 0 else ("KILLED" if received or rc < 0 else "FAILED")
    if finalize_mlflow:
        try:
            finish_mlflow_run(cfg, status)
        except Exception as e:  # the run's outcome matters more than its bookkeeping
            log.warning("could not set MLflow run %s to %s: %s", cfg.tracking.run_id, status, e)
    return RunResult(returncode=rc, status=status, ckpt_dir=cfg.ckpt_dir)


def sbatch_command(
    cfg: VerlRunConfig,
    *,
    time: str = "48:00:00",
    extra_args: list[str] | None = None,
    config_path: str | Path | None = None,
) -> list[str]:
    """The ``sbatch`` argv that runs ``cfg`` on ``cfg.resources.nnodes`` nodes (writes the config file).

    Partition, account and QOS come from ``EAD_SLURM_PARTITION`` / ``EAD_SLURM_ACCOUNT`` / ``EAD_SLURM_QOS``
    (as the Hydra launcher profiles in slurm/profiles). The job is requeueable and gets SIGUSR1 five minutes
    before its time limit; the launcher forwards it, and the requeued job resumes from the checkpoints.
    """
    cfg.validate()
    r = cfg.resources
    path = Path(config_path) if config_path is not None else Path(cfg.ckpt_dir) / "ead_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    argv = [
        "sbatch",
        f"--job-name=ead-verl-{cfg.hash}",
        f"--nodes={r.nnodes}",
        "--ntasks-per-node=1",
        f"--gpus-per-task={r.n_gpus_per_node}",
        f"--cpus-per-task={r.cpus_per_node}",
        f"--time={time}",
        "--requeue",
        "--signal=B:USR1@300",
        f"--output={Path(cfg.ckpt_dir).resolve()}/slurm-%j.out",
    ]
    if r.mem_gb:
        argv.append(f"--mem={r.mem_gb}G")
    for env, flag in (("EAD_SLURM_PARTITION", "partition"), ("EAD_SLURM_ACCOUNT", "account"), ("EAD_SLURM_QOS", "qos")):
        if os.environ.get(env):
            argv.append(f"--{flag}={os.environ[env]}")
    argv += list(extra_args or [])
    argv += [str(SBATCH_SCRIPT), cfg.python, "-m", "experiments.verl", "run", "--config", str(path.resolve())]
    return argv
