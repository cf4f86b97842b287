"""Sweeps of RLVR runs with Hydra: ``python sweep.py`` runs one default job here; ``python sweep.py -m
experiment=paper_grid`` runs a preset's grid; add ``hydra/launcher=submitit_slurm`` (or a profile from slurm/profiles:
``local``, ``gpu_a100``, ``gpu_h100``) to submit it to Slurm. The config tree is in sweeps/ (README "Sweeps and
configs"); every job is composed and validated before any is launched (hydra_plugins/ead_sweeper), and each job logs
one MLflow run (experiments/sweep/jobs.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent
# hydra.searchpath in sweeps/config.yaml finds the Slurm launcher profiles through ${oc.env:EAD_ROOT}.
os.environ["EAD_ROOT"] = str(ROOT)

from experiments.sweep.jobs import describe, preflight, prepare, register_configs, run_job  # noqa: E402 - after EAD_ROOT
from hydra_plugins.ead_sweeper.ead_sweeper import SweepConfigError  # noqa: E402

register_configs()
log = logging.getLogger("sweep")


@hydra.main(version_base="1.3", config_path="sweeps", config_name="config")
def main(cfg: DictConfig) -> dict[str, Any]:
    """One job: train (or resume, or skip when finished) and log one MLflow run."""
    try:
        job = prepare(cfg)  # the sweeper validated multirun jobs already; a single run is checked here
        if cfg.tracking.experiment_id is None:  # not launched by the sweeper (which checked before launching)
            preflight(cfg)
    except ValueError as e:
        raise SweepConfigError(f"invalid config, nothing run: {e}") from None
    if cfg.dry_run:
        log.info("dry_run=true: config valid, hash %s, run name %s; nothing run", job.config_hash, job.run_name)
        text = describe(job, cfg)  # verl jobs: the exact verl command and where it would write
        if text:
            print(text, flush=True)
        return {"status": "dry_run", "config_hash": job.config_hash}
    return run_job(cfg)


if __name__ == "__main__":
    main()
