"""Infrastructure around sweeps: a local MLflow tracking server, Slurm detection and the single-node test cluster.

Sweeps launched on Slurm must not let many jobs write one SQLite MLflow store ("database is locked", migration
races), so the launcher starts one ``mlflow server`` in front of the store and jobs log over HTTP
(:func:`start_mlflow_server`). Tests and local sweeps run against a real single-node Slurm cluster started by
``slurm/start_local_slurm.sh`` (:func:`ensure_local_slurm`). Only the standard library is imported here (no torch, no
mlflow), so launchers and test fixtures can import this module cheaply.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_SLURM_DIR",
    "LocalSlurmError",
    "REPO_ROOT",
    "START_SCRIPT",
    "STOP_SCRIPT",
    "TERMINAL_SLURM_STATES",
    "current_slurm_job_id",
    "ensure_local_slurm",
    "free_port",
    "local_slurm_conf",
    "mlflow_server",
    "slurm_available",
    "slurm_job_state",
    "start_mlflow_server",
    "stop_mlflow_server",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
START_SCRIPT = REPO_ROOT / "slurm" / "start_local_slurm.sh"
STOP_SCRIPT = REPO_ROOT / "slurm" / "stop_local_slurm.sh"
DEFAULT_SLURM_DIR = Path("/tmp/ead-slurm")

# Exit codes of slurm/start_local_slurm.sh that mean "this machine cannot host the local cluster" rather than
# "it should have started and did not": 2 = not root, 3 = the Debian packages cannot be installed.
_EXIT_NOT_ROOT = 2
_EXIT_NO_PACKAGES = 3


# --------------------------------------------------------------------------------------------------------------------
# MLflow tracking server
# --------------------------------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it; another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _health_ok(url: str, timeout: float = 2.0) -> bool:
    """True when ``GET {url}/health`` answers 200 (the MLflow server's liveness endpoint)."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _allowed_hosts(host: str) -> list[str]:
    """Host-header patterns for a server bound beyond loopback: MLflow's defaults (localhost, private IPv4
    ranges) plus this machine's names and the bound address, each with any port."""
    names = {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}
    if host not in ("0.0.0.0", ""):
        names.add(host)
    private = ["10.*", "192.168.*", "172.1[6-9].*", "172.2[0-9].*", "172.3[0-1].*"]
    return sorted(names) + sorted(f"{name}:*" for name in names) + private


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_mlflow_server(
    backend_store_uri: str,
    artifact_root: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    workers: int = 1,
    timeout: float = 90.0,
    log_path: str | os.PathLike[str] | None = None,
    extra_args: Sequence[str] = (),
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start ``mlflow server`` as a subprocess and wait until ``/health`` answers; return ``(url, process)``.

    The server runs with this interpreter (``sys.executable -m mlflow``) in its own process group, so
    :func:`stop_mlflow_server` can stop it together with its uvicorn workers. Artifacts are proxied by the server
    (``--serve-artifacts``, stored under ``artifact_root``), so jobs on other nodes need no shared file system.
    ``workers`` defaults to 1: with a SQLite backend one server process serialises writes, several would
    compete for the file lock again. With ``port=None`` a free port is picked, retried if another process grabs it
    first. stdout/stderr go to ``log_path`` (default: a temporary file); its tail is in the error raised when the
    server exits or does not answer within ``timeout`` seconds. Pass ``host="0.0.0.0"`` (and, beyond private
    networks, ``extra_args=["--allowed-hosts", ...]``) for jobs on other nodes.

    With ``host="0.0.0.0"`` (jobs on other nodes) the returned URL names this machine (``socket.gethostname()``)
    and, unless ``extra_args`` sets ``--allowed-hosts``, that name is added to the Host headers the server accepts:
    MLflow >= 3.5 answers 403 "Invalid Host header" to any name but localhost and private IPs.
    """
    artifact_dir = Path(artifact_root)
    if "://" not in str(artifact_root):
        artifact_dir.mkdir(parents=True, exist_ok=True)
        artifact_dest = str(artifact_dir.resolve())
    else:
        artifact_dest = str(artifact_root)
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="mlflow-server-", suffix=".log")
        os.close(fd)
        log_file = Path(name)
    else:
        log_file = Path(log_path)
        log_file.parent.mkdir(parents=True, exist_ok=True)

    loopback = host in ("127.0.0.1", "localhost", "::1")
    all_interfaces = host in ("0.0.0.0", "")
    extra = list(extra_args)
    if not loopback and "--allowed-hosts" not in extra:
        extra += ["--allowed-hosts", ",".join(_allowed_hosts(host))]
    env = dict(os.environ)
    # MLflow 3.x also starts a job runner with ~7 huey consumer processes (GenAI scorer jobs); the harness does not
    # use it and it makes start-up take ~50 s instead of ~15 s on a 2-core machine.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    attempts = 3 if port is None else 1
    last_error = ""
    for _ in range(attempts):
        chosen = port if port is not None else free_port("127.0.0.1" if all_interfaces else host)
        health_url = f"http://{'127.0.0.1' if all_interfaces else host}:{chosen}"
        url = f"http://{socket.gethostname() if all_interfaces else host}:{chosen}"
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend_store_uri,
            "--artifacts-destination",
            artifact_dest,
            "--host",
            host,
            "--port",
            str(chosen),
            "--workers",
            str(workers),
            *extra,
        ]
        with open(log_file, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if _health_ok(health_url):
                return url, process
            time.sleep(0.25)
        if process.poll() is None:
            stop_mlflow_server(process)
            raise RuntimeError(
                f"mlflow server on {url} did not answer /health within {timeout:.0f} s; "
                f"log {log_file}:\n{_tail(log_file)}"
            )
        last_error = _tail(log_file)
        if port is None and "address already in use" in last_error.lower():
            continue  # the free port was taken between picking and binding: pick another
        break
    raise RuntimeError(f"mlflow server exited with code {process.returncode}; log {log_file}:\n{last_error}")


def _exited_unreaped(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for child ``pid`` to exit *without reaping it*: while it is a zombie its pid (and
    so its process group id) cannot be reused, so signalling the group stays safe."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def stop_mlflow_server(process: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    """Stop a server started by :func:`start_mlflow_server` and its workers: SIGTERM to its process group, SIGKILL
    to what is left after ``timeout`` seconds. Returns the exit code. Safe to call twice."""
    if process.returncode is not None:
        return process.returncode
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    _exited_unreaped(process.pid, timeout)
    # Workers still in the group (or a main process that ignored SIGTERM) are ours to end.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait()


@contextlib.contextmanager
def mlflow_server(
    backend_store_uri: str,
    artifact_root: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int | None = None,
    **kwargs: Any,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Context manager around :func:`start_mlflow_server`: yields ``(url, process)``, stops the server on exit."""
    url, process = start_mlflow_server(backend_store_uri, artifact_root, host, port, **kwargs)
    try:
        yield url, process
    finally:
        stop_mlflow_server(process)


# --------------------------------------------------------------------------------------------------------------------
# Slurm
# --------------------------------------------------------------------------------------------------------------------


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
