"""Functions the infra tests run in Slurm jobs or subprocesses.

They live in an importable module (not in the test files) so submitit pickles them by reference and the job
imports them from the repository, as real sweep jobs import experiments.*.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from experiments.infra import current_slurm_job_id


def describe(x: int) -> dict[str, Any]:
    """Return ``2 * x`` with where and how this ran: interpreter, working directory, Slurm ids."""
    return {
        "value": 2 * x,
        "python": sys.executable,
        "cwd": os.getcwd(),
        "hostname": socket.gethostname(),
        "job_id": current_slurm_job_id(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
    }


def _load(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"step": 0, "attempts": [], "steps_done_by": []}


def _save(path: Path, state: dict[str, Any]) -> None:
    # Atomic: a job killed mid-write (SIGKILL on requeue) leaves the previous complete state.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


class ResumableCounter(submitit.helpers.Checkpointable):
    """Count to ``total`` in steps of ``step_s`` seconds, as a stand-in for a training loop that must survive requeue.

    Progress is kept two ways, like a real trainer: a state file written after every step (survives any requeue,
    including ``scontrol requeue`` and SIGKILL, which do not call ``checkpoint``), and ``self.step``, which
    :meth:`checkpoint` ships inside the :class:`~submitit.helpers.DelayedSubmission` that submitit requeues on USR2
    (preemption or time limit). Each attempt resumes from the later of the two. The returned state records every
    attempt and which attempt did each step, so a test can tell "continued" from "restarted".
    """

    def __init__(self) -> None:
        self.step = 0
        self.checkpoints: list[int] = []

    def __call__(self, state_file: str, total: int, step_s: float) -> dict[str, Any]:
        path = Path(state_file)
        state = _load(path)
        state["attempts"].append(
            {
                "job_id": current_slurm_job_id(),
                "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
                "file_step": state["step"],
                "pickled_step": self.step,
                "checkpoints_seen": list(self.checkpoints),
            }
        )
        self.step = max(self.step, state["step"])
        state["step"] = self.step
        _save(path, state)
        attempt = len(state["attempts"]) - 1
        while self.step < total:
            time.sleep(step_s)
            # Save first, then advance self.step: a signal between the two leaves self.step <= the file's step.
            state["step"] = self.step + 1
            state["steps_done_by"].append(attempt)
            _save(path, state)
            self.step += 1
        state["checkpoints"] = list(self.checkpoints)
        return state

    def checkpoint(self, state_file: str, total: int, step_s: float) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on USR2 before it requeues the job: remember where we were, resubmit ``self``."""
        self.checkpoints.append(self.step)
        return submitit.helpers.DelayedSubmission(self, state_file, total, step_s)


def log_mlflow_run(url: str, experiment_id: str, index: int, barrier_dir: str, n_procs: int, steps: int) -> str:
    """Log one MLflow run (params, ``steps`` metric points, a dict artifact) to the server at ``url``.

    Every process first waits until all ``n_procs`` have imported mlflow (ready files in ``barrier_dir``), so the
    logging really overlaps. The experiment is created once by the caller and passed by id, as a sweep launcher
    must do: with MLflow 3.17, processes racing ``mlflow.set_experiment(name)`` on a new name can leave the loser's
    run in the Default experiment (the RESOURCE_ALREADY_EXISTS branch returns without activating the experiment).
    Returns the run id.
    """
    import mlflow

    mlflow.set_tracking_uri(url)
    barrier = Path(barrier_dir)
    (barrier / f"ready-{index}").touch()
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("ready-*"))) < n_procs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(barrier.glob('ready-*')))} of {n_procs} processes got ready")
        time.sleep(0.05)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"proc-{index}") as run:
        mlflow.log_params({"index": index, "pid": os.getpid()})
        mlflow.set_tag("ead.test", "concurrency")
        for step in range(steps):
            mlflow.log_metric("loss", 1.0 / (step + 1) + index, step=step)
            mlflow.log_metrics({"reward": float(index * step), "entropy": 0.5}, step=step)
        mlflow.log_dict({"index": index}, "config.json")
    return run.info.run_id


if __name__ == "__main__":
    # python -m tests.infra.jobs log_mlflow_run URL EXPERIMENT_ID INDEX BARRIER_DIR N_PROCS STEPS
    if len(sys.argv) != 8 or sys.argv[1] != "log_mlflow_run":
        sys.exit("usage: python -m tests.infra.jobs log_mlflow_run URL EXPERIMENT_ID INDEX BARRIER_DIR N_PROCS STEPS")
    _, _, url_, experiment_, index_, barrier_, n_, steps_ = sys.argv
    print(log_mlflow_run(url_, experiment_, int(index_), barrier_, int(n_), int(steps_)))
