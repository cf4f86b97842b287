"""A sweep's own MLflow server under faults and exposure, for real: killed mid-run it comes back on the same store and
port while a writer job keeps going and loses nothing; a server for other nodes binds one address and refuses
requests without the sweep's credentials, which reach jobs only through the environment."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from experiments.tracking import make_client
from experiments.tracking.server import CREDENTIAL_VARS, cluster_address, supervised_mlflow_server
from experiments.tracking.store import MlflowRunLogger
from tests.fixtures.services import environment_with_repo_on_path
from tests.reliability.helpers import assert_nothing_lost
from tests.sweep.helpers import wait_for

STEPS = 30

_WRITER = """
import sys, time
from pathlib import Path
from experiments.tracking import RunIdentity, TrackedRun

uri, run_dir, progress = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
t = TrackedRun(RunIdentity("server-restart", "0123456789ab", "local", "writer"), run_dir, uri=uri)
with t.open(params={"lr": 0.1}) as logger:
    for step in range(int(sys.argv[4])):
        logger.log_metrics({"train/loss": float(step)}, step)
        progress.write_text(str(step))
        time.sleep(0.2)
print(t.run_id)
"""


def test_a_killed_sweep_server_comes_back_on_its_port_with_its_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The sweep's server killed (OOM killer, a careless kill -9) comes back within seconds at the URL its jobs hold,
    on the same store; a job's logger holds its steps meanwhile and delivers them (the external-server test below
    shows the job side in a real subprocess). The tags a job sets at its end wait with the held steps: never in
    MLflow's own retries (a backoff that delays them up to 16 s after the server is back and fails the job after
    ~2 minutes away)."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with supervised_mlflow_server(store, tmp_path / "artifacts", log_path=tmp_path / "server.log", interval=0.5) as srv:
        url, first = srv.url, srv.process.pid
        client = make_client(url)
        run_id = client.create_run(client.create_experiment("restart")).info.run_id
        logger = MlflowRunLogger(client, run_id, background=True)
        logger.log_metrics({"x": 0.0}, 0)
        assert logger.flush(timeout=60)
        os.killpg(first, signal.SIGKILL)  # the server and its workers
        for step in range(1, 4):  # while it is away: held, never blocking
            logger.log_metrics({"x": float(step)}, step)
        with caplog.at_level(logging.WARNING, logger="urllib3"):
            logger.set_tags({"end_reason": "completed"})  # a job's end: waits, held, until the server answers
        assert "Retrying" not in caplog.text, caplog.text
        assert client.get_run(run_id).data.tags["end_reason"] == "completed"
        wait_for(lambda: srv.restarts >= 1, 180, "the supervisor's restart")
        assert srv.process.pid != first and srv.url == url
        logger.finish()  # delivers what it holds, then ends the run
        assert_nothing_lost(url, "restart", runs=1, metrics={"x": [0, 1, 2, 3]})


def _status(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1")
    if auth is not None:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_a_server_for_other_nodes_binds_one_address_and_refuses_requests_without_credentials(
    tmp_path: Path,
) -> None:
    address = cluster_address()
    assert not address.startswith("127.") and address != "0.0.0.0", address
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = {name: os.environ.get(name) for name in CREDENTIAL_VARS}
    log = tmp_path / "server.log"
    with supervised_mlflow_server(store, tmp_path / "artifacts", host=address, auth=True, log_path=log) as srv:
        assert srv.url.startswith(f"http://{address}:")
        user, password = (os.environ[name] for name in CREDENTIAL_VARS)  # what jobs started now inherit
        assert _status(srv.url) == 401  # anyone else on the network
        assert _status(srv.url, (user, "wrong")) == 401
        assert _status(srv.url, (user, password)) == 200
        port = srv.url.rsplit(":", 1)[1]
        with pytest.raises(urllib.error.URLError):  # not on every interface: loopback does not answer
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
        client = make_client(srv.url)  # MLflow's client reads the credentials from the environment
        exp = client.create_experiment("authenticated")
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "x", 1.0, step=0)
        assert password not in log.read_text()
        assert oct((tmp_path / "mlflow-auth.ini").stat().st_mode & 0o777) == "0o600"
    assert {name: os.environ.get(name) for name in CREDENTIAL_VARS} == before


def test_a_job_keeps_training_while_an_external_server_is_away_and_delivers_every_step_when_it_returns(
    tmp_path: Path,
) -> None:
    """A server the user runs (not supervised by us) goes away mid-run: the job does not wait for it (it finishes
    its steps while the server is down), holds the steps, and delivers each exactly once when the server is back."""
    from experiments.tracking.server import free_port, start_mlflow_server, stop_mlflow_server

    store, port = f"sqlite:///{tmp_path / 'mlflow.db'}", free_port()
    kw = {"log_path": tmp_path / "server.log"}
    url, server = start_mlflow_server(store, tmp_path / "artifacts", port=port, **kw)
    progress = tmp_path / "progress"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, url, str(tmp_path / "run"), str(progress), str(STEPS)],
        env=environment_with_repo_on_path(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: progress.exists() and int(progress.read_text() or 0) >= 3, 120, "the writer's third step")
        stop_mlflow_server(server)
        # Down: training goes on to its last step (today's code blocks in MLflow's retries for minutes instead).
        wait_for(lambda: int(progress.read_text() or 0) == STEPS - 1, 60, "the last step while the server is away")
        assert writer.poll() is None  # ... and waits to deliver
        _, server = start_mlflow_server(store, tmp_path / "artifacts", port=port, **kw)
        out, err = writer.communicate(timeout=180)
        assert writer.returncode == 0, err[-3000:]
        assert "holding" in err and "answers again" in err
    finally:
        writer.kill()
        stop_mlflow_server(server)
    [run] = assert_nothing_lost(store, "server-restart", runs=1, metrics={"train/loss": range(STEPS)})
    assert run.info.run_id == out.strip().splitlines()[-1]
