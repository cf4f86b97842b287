"""A local ``mlflow server`` in front of a SQLite store.

Sweeps whose jobs run in other processes (submitit, Slurm) must not let many jobs write one SQLite MLflow store
("database is locked", migration races), so the launcher starts one ``mlflow server`` in front of the store and jobs
log over HTTP (:func:`start_mlflow_server`). Only the standard library is imported here (no torch, no mlflow), so
launchers and test fixtures can import this module cheaply.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SupervisedServer",
    "cluster_address",
    "free_port",
    "mlflow_server",
    "start_mlflow_server",
    "stop_mlflow_server",
    "supervised_mlflow_server",
    "write_auth_config",
]

log = logging.getLogger(__name__)


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
    auth_config: str | os.PathLike[str] | None = None,
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

    ``auth_config``: an ini file written by :func:`write_auth_config`; the server then runs MLflow's basic-auth app
    (``--app-name basic-auth``) and answers 401 to any request without those credentials (``/health`` stays open).
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
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if auth_config is not None:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(Path(auth_config).resolve())
        # The auth app's CSRF key: secret and the same across restarts, so derived from the (0600) auth config.
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", hashlib.sha256(Path(auth_config).read_bytes()).hexdigest())
        extra += ["--app-name", "basic-auth"]
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


def cluster_address() -> str:
    """The IPv4 address other nodes of a cluster reach this machine at, for a server that must not listen on every
    interface: the host name's address unless it is loopback (Debian maps the name to 127.0.1.1), else the source
    address of the default route (a UDP "connect" sends nothing). ``tracking.server_host`` overrides it."""
    with contextlib.suppress(OSError):
        address = socket.gethostbyname(socket.gethostname())
        if not address.startswith("127."):
            return address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
        s.connect(("10.255.255.255", 1))
        return str(s.getsockname()[0])
    return "127.0.0.1"


CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def write_auth_config(directory: str | os.PathLike[str], username: str, password: str) -> Path:
    """Write MLflow's basic-auth config (mode 0600) for a server whose only user is ``username`` (admin), with its
    user store next to it (kept across restarts of the server). Every other request gets 401: the default
    permission is NO_PERMISSIONS."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "mlflow-auth.ini"
    text = (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{(directory / 'mlflow-auth.db').resolve()}\n"
        f"admin_username = {username}\n"
        f"admin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


class SupervisedServer:
    """An ``mlflow server`` (:func:`start_mlflow_server`) watched by a thread: every ``interval`` s it checks that the
    process lives and ``/health`` answers; a dead server, or one that fails ``failures`` checks in a row (5 s each), is
    stopped and started again on the same store, artifact root and port (so the URL jobs hold stays valid). Jobs'
    loggers hold their steps meanwhile and deliver them once it answers. ``restarts`` counts the restarts."""

    def __init__(self, start: Any, url: str, process: subprocess.Popen[bytes], health_url: str,
                 interval: float = 1.0, failures: int = 5) -> None:  # fmt: skip
        self._start, self.url, self.process, self._health_url = start, url, process, health_url
        self.interval, self.failures, self.restarts = interval, failures, 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mlflow-server-supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        bad = 0
        while not self._stopping.wait(self.interval):
            alive = self.process.poll() is None
            # A live server gets ``failures`` checks of 5 s each: one busy with many writers is slow, not dead.
            if alive and _health_ok(self._health_url, timeout=5.0):
                bad = 0
                continue
            bad += 1
            if alive and bad < self.failures:
                continue
            why = f"exited with code {self.process.returncode}" if not alive else f"failed {bad} health checks"
            log.warning("mlflow server at %s %s: restarting it on the same store and port", self.url, why)
            stop_mlflow_server(self.process, timeout=5)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)  # workers left by a main process that died alone
            if self._stopping.is_set():
                return
            try:
                _, self.process = self._start()
            except RuntimeError as e:  # e.g. the port is still taken: try again at the next check
                log.error("restarting the mlflow server at %s failed (retrying): %s", self.url, e)
                continue
            self.restarts += 1
            bad = 0
            log.warning("mlflow server at %s is back (restart %d)", self.url, self.restarts)

    def stop(self) -> int | None:
        """Stop watching, then stop the server (idempotent)."""
        self._stopping.set()
        self._thread.join(timeout=30)
        return stop_mlflow_server(self.process)


@contextlib.contextmanager
def supervised_mlflow_server(
    backend_store_uri: str,
    artifact_root: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    auth: bool = False,
    interval: float = 1.0,
    **kwargs: Any,
) -> Iterator[SupervisedServer]:
    """A sweep's own server: :func:`start_mlflow_server` under a :class:`SupervisedServer`, stopped on exit.

    ``auth=True`` (a server other nodes can reach): MLflow's basic-auth app with one user and a random password,
    made here and put into ``os.environ`` (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``) for the
    block's duration, so the jobs this process starts (local subprocesses, Slurm jobs: sbatch exports the submitting
    environment) authenticate, while the credentials stay out of configs, params, tags and logs. The auth config
    and user store go next to ``log_path`` (mode 0600)."""
    saved = {name: os.environ.get(name) for name in CREDENTIAL_VARS}
    if auth:
        user, password = "ead-sweep", secrets.token_urlsafe(24)
        where = Path(kwargs["log_path"]).parent if kwargs.get("log_path") else Path(tempfile.mkdtemp(prefix="mlflow-"))
        kwargs["auth_config"] = write_auth_config(where, user, password)
    url, process = start_mlflow_server(backend_store_uri, artifact_root, host, port, **kwargs)
    bound = int(url.rsplit(":", 1)[1])
    health_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{bound}"

    def again() -> tuple[str, subprocess.Popen[bytes]]:
        return start_mlflow_server(backend_store_uri, artifact_root, host, bound, **kwargs)

    server = SupervisedServer(again, url, process, health_url, interval=interval)
    if auth:
        os.environ.update(dict(zip(CREDENTIAL_VARS, (user, password), strict=True)))
    try:
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
