"""Slurm helpers for the sweep layer: the current job id, availability, job states and the single-node test cluster
started by ``slurm/start_local_slurm.sh`` (:func:`ensure_local_slurm`). Standard library only."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
START_SCRIPT = REPO_ROOT / "slurm" / "start_local_slurm.sh"
STOP_SCRIPT = REPO_ROOT / "slurm" / "stop_local_slurm.sh"
DEFAULT_SLURM_DIR = Path("/tmp/ead-slurm")

# Exit codes of slurm/start_local_slurm.sh that mean "this machine cannot host the local cluster" rather than
# "it should have started and did not": 2 = not root, 3 = the Debian packages cannot be installed.
_EXIT_NOT_ROOT = 2
_EXIT_NO_PACKAGES = 3


def current_slurm_job_id() -> str | None:
    """The Slurm id of the job this process runs in: ``<array job id>_<task id>`` for an array task (the form
    ``squeue``/``scontrol`` accept and submitit uses), else ``SLURM_JOB_ID``; None outside Slurm."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def slurm_available(timeout: float = 10.0) -> tuple[bool, str]:
    """Whether a Slurm controller answers ``sinfo`` from this process; the string says which cluster or why not.

    ``sinfo`` retries for a minute when no slurm.conf is found, hence the ``timeout``.
    """
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return False, "sinfo is not on PATH (no Slurm client installed)"
    try:
        result = subprocess.run(
            [sinfo, "-h", "-o", "%R %a %D %T"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return False, f"sinfo did not answer within {timeout:.0f} s (no slurm.conf, or the controller is down)"
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        return False, f"sinfo failed (exit {result.returncode}): {message[-1] if message else 'no output'}"
    partitions = ", ".join(line.strip() for line in result.stdout.splitlines() if line.strip())
    return True, f"Slurm answers (SLURM_CONF={os.environ.get('SLURM_CONF', 'default')}): {partitions}"


# Job states after which a job will not run again by itself (squeue --states=all keeps them for MinJobAge seconds).
TERMINAL_SLURM_STATES = frozenset(
    {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT"}
)


def slurm_job_state(job_id: str, timeout: float = 10.0) -> str | None:
    """The state ``squeue`` reports for ``job_id`` (``"PENDING"``, ``"RUNNING"``, ``"COMPLETED"``, ...), or None when
    the controller no longer knows the job or does not answer.

    submitit learns job states from ``sacct``, which needs Slurm accounting; without it (as on the local cluster) a
    job that dies before writing its result is never seen as finished and ``job.result()`` waits forever. Polling
    this (a job in :data:`TERMINAL_SLURM_STATES` without a result file is lost) bounds such waits.
    """
    try:
        result = subprocess.run(
            ["squeue", "-h", "--states=all", "-j", job_id, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = result.stdout.split()
    return states[0] if result.returncode == 0 and states else None


class LocalSlurmError(RuntimeError):
    """slurm/start_local_slurm.sh should have started the local cluster on this machine and did not."""


def local_slurm_conf(state_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the slurm.conf that slurm/start_local_slurm.sh generates for ``state_dir`` (its EAD_SLURM_DIR)."""
    base = Path(state_dir) if state_dir is not None else Path(os.environ.get("EAD_SLURM_DIR", DEFAULT_SLURM_DIR))
    return base / "etc" / "slurm.conf"


def ensure_local_slurm(state_dir: str | os.PathLike[str] | None = None, timeout: float = 600.0) -> tuple[bool, str]:
    """Make sure the single-node test cluster (slurm/start_local_slurm.sh) is up; idempotent and cheap when it is.

    Returns ``(True, status)`` when the cluster answers, and ``(False, reason)`` only when this machine cannot host
    it: the Debian packages cannot be installed (no apt-get, no mirror), or they are missing/stopped and we are not
    root. Tests may skip on ``False`` and print the reason. Any other failure (a daemon does not start, the node
    stays down) raises :class:`LocalSlurmError` with the script's output, which includes the daemons' log tails.
    On success ``SLURM_CONF`` is set in ``os.environ`` to the generated slurm.conf, so ``sbatch``/submitit in this
    process and its children reach this cluster even when /etc/slurm/slurm.conf belongs to another one.
    """
    if sys.platform != "linux":
        return False, f"the local Slurm cluster needs Linux with apt-get (this is {sys.platform})"
    if shutil.which("bash") is None:
        return False, "bash is not installed"
    env = dict(os.environ)
    if state_dir is not None:
        env["EAD_SLURM_DIR"] = str(state_dir)
    env.pop("SLURM_CONF", None)  # the script sets it to its own file
    try:
        result = subprocess.run(
            ["bash", str(START_SCRIPT)], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalSlurmError(f"{START_SCRIPT} did not finish within {timeout:.0f} s") from exc
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr).strip()
    if result.returncode in (_EXIT_NOT_ROOT, _EXIT_NO_PACKAGES):
        return False, output.splitlines()[-1] if output else f"{START_SCRIPT} exited {result.returncode}"
    if result.returncode != 0:
        raise LocalSlurmError(f"{START_SCRIPT} failed (exit {result.returncode}):\n{output}")
    os.environ["SLURM_CONF"] = str(local_slurm_conf(state_dir))
    return True, output
