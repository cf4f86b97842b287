"""A real MLflow tracking server with a SQLite store: concurrent writers over HTTP, proxied artifacts, clean stop."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from experiments.tracking.server import mlflow_server as running_mlflow_server
from tests.fixtures import services
from tests.fixtures.services import REPO_ROOT, MlflowServer, environment_with_repo_on_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

# The fixture, made visible to this module (pytest allows `pytest_plugins` only in the root conftest).
mlflow_server = services.mlflow_server

N_PROCS = 3
STEPS = 10


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _create_experiment(url: str, name: str) -> str:
    """Create an experiment with the REST API (POST /api/2.0/mlflow/experiments/create); returns its id."""
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/experiments/create",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["experiment_id"])


def _group_alive(pgid: int) -> list[str]:
    """Live (not zombie) processes in process group ``pgid``: the server and its uvicorn worker."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 3) for line in out.splitlines() if line.strip()]
    return [" ".join(row) for row in rows if int(row[1]) == pgid and not row[2].startswith("Z")]


def test_concurrent_writers_all_land_and_the_server_stops_cleanly(mlflow_server: MlflowServer, tmp_path: Path):
    # Created once here, as the sweep launcher must (see tests.fixtures.jobs.log_mlflow_run on the set_experiment race).
    # Over plain REST, so the writers start before this process spends seconds importing mlflow.
    experiment_id = _create_experiment(mlflow_server.url, "ead-infra-concurrency")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.fixtures.jobs", "log_mlflow_run"]
            + [mlflow_server.url, experiment_id, str(i), str(barrier), str(N_PROCS), str(STEPS)],
            cwd=REPO_ROOT,
            env=environment_with_repo_on_path(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(N_PROCS)
    ]
    from mlflow.tracking import MlflowClient  # imported while the writers run

    client = MlflowClient(tracking_uri=mlflow_server.url)
    outputs = [p.communicate(timeout=100) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, f"writer failed:\n{out}\n{err}"
        assert "database is locked" not in err
    run_ids = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(run_ids) == N_PROCS

    runs = client.search_runs([experiment_id])
    assert {r.info.run_id for r in runs} == run_ids
    for run in runs:
        assert run.info.status == "FINISHED"
        index = int(run.data.params["index"])
        history = client.get_metric_history(run.info.run_id, "loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(STEPS))
        assert len(client.get_metric_history(run.info.run_id, "reward")) == STEPS
        assert run.data.metrics["reward"] == float(index * (STEPS - 1))
        # Artifacts go through the server (mlflow-artifacts:/ proxy) into its artifact root, not the client's disk.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.json"]
    stored = sorted(p.name for p in mlflow_server.artifact_root.rglob("config.json"))
    assert stored == ["config.json"] * N_PROCS
    assert "database is locked" not in mlflow_server.log()

    # Stopping (what the fixture does at teardown) ends the CLI process and its uvicorn worker. Checked here rather
    # than in a test of its own because every server start costs 15-30 s of imports.
    pgid = mlflow_server.process.pid  # the server runs in its own session: its group is the CLI and its workers
    assert len(_group_alive(pgid)) >= 2, _group_alive(pgid)
    mlflow_server.stop()
    assert mlflow_server.process.returncode is not None
    assert not _healthy(mlflow_server.url)
    assert _group_alive(pgid) == []
    mlflow_server.stop()  # idempotent: the fixture's teardown calls it again


def _search_status(url: str) -> int:
    """HTTP status of an experiments search at ``url`` (403 when the server rejects the Host header)."""
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/experiments/search",
        data=json.dumps({"max_results": 1}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.timeout(150)
def test_server_for_other_nodes_answers_to_this_machines_name(tmp_path: Path) -> None:
    """Bound to 0.0.0.0 (jobs on other nodes), the URL names this host and MLflow accepts that Host header; by
    default MLflow >= 3.5 answers 403 to any name but localhost and private IPs."""
    with running_mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", host="0.0.0.0") as (
        url,
        process,
    ):
        port = url.rsplit(":", 1)[1]
        assert url == f"http://{socket.gethostname()}:{port}"
        for name in (socket.gethostname(), "localhost", "127.0.0.1"):
            assert _search_status(f"http://{name}:{port}") == 200, name
    assert process.returncode is not None and _group_alive(process.pid) == []
