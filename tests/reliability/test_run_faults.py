"""Faults around one tracked run, against a real SQLite MLflow store and real subprocesses: MLflow telemetry off in the
harness's processes, a failure right after the run is created ends it FAILED, a SIGKILLed attempt is counted in
``interruptions`` and the next one lands each step once, a tracking URI that is not an MLflow server is named. (The
same SIGKILL through ``python sweep.py``, resumed from the trainer's checkpoint: tests/sweep/test_cli.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.tracking import RunIdentity, TrackedRun, make_client
from experiments.tracking.store import MlflowRunLogger
from tests.fixtures.services import environment_with_repo_on_path
from tests.reliability.helpers import assert_nothing_lost, user_env


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('faults') / 'mlflow.db'}"


def tracked(uri: str, run_dir: Path, experiment: str) -> TrackedRun:
    return TrackedRun(RunIdentity(experiment, "0123456789ab", "local", "run-012345"), run_dir, uri=uri)


_PROBE = """
import json, os, sys
if sys.argv[1] == "harness":
    import experiments.tracking  # what every harness module that uses MLflow imports first
import mlflow
from mlflow.telemetry.client import get_telemetry_client
print(json.dumps({"client": get_telemetry_client() is not None, "env": os.environ.get("MLFLOW_DISABLE_TELEMETRY")}))
"""


def test_mlflow_telemetry_is_off_in_harness_processes_and_their_children() -> None:
    """MLflow 3.17's telemetry thread corrupts os.environ under load (KeyError in a random tracking call); CI never
    sees it (CI=true turns it off). In a user's environment the harness turns it off before mlflow is imported."""

    def probe(mode: str) -> dict[str, object]:
        out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=user_env(), capture_output=True, text=True,
                             timeout=120, check=True)  # fmt: skip
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert probe("plain") == {"client": True, "env": None}  # the environment really has telemetry on
    # ... and the harness turns it off, for itself and (through os.environ) for the jobs and servers it starts
    assert probe("harness") == {"client": False, "env": "true"}


def test_a_failure_right_after_the_run_is_created_ends_it_failed(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store call that failed in the field (the telemetry KeyError while reading the run's history) came between
    creating the run and guarding it: the run stayed RUNNING with no params. Every failure after creation ends the
    run FAILED, naming the exception."""

    def broken(self: MlflowRunLogger) -> int | None:
        raise KeyError("_MLFLOW_TELEMETRY_SESSION_ID")

    monkeypatch.setattr(MlflowRunLogger, "_history_last_step", broken)
    with pytest.raises(KeyError):
        tracked(uri, tmp_path / "run", "fails-early").run(lambda lg: None, params={"lr": 0.1})
    monkeypatch.undo()
    t = tracked(uri, tmp_path / "run", "fails-early")
    assert t.latest is not None and t.latest.info.status == "FAILED"
    assert t.latest.data.tags["end_reason"].startswith("exception: KeyError")
    assert t.latest.data.params == {"lr": "0.1"}  # params are logged before anything that reads the history


_SIGKILLED = """
import os, signal, sys
from pathlib import Path
from experiments.tracking import RunIdentity, TrackedRun

t = TrackedRun(RunIdentity("sigkill", "0123456789ab", "local", "r"), Path(sys.argv[2]), uri=sys.argv[1])
with t.open() as logger:
    logger.log_metrics({"x": 0.0}, 0)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_sigkilled_attempt_is_counted_in_interruptions(uri: str, tmp_path: Path) -> None:
    """SIGKILL leaves the run RUNNING and nobody can tag it; the next attempt (holding the run directory's lock, so
    the old holder is dead) counts the stop. Each step still lands once."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-c", _SIGKILLED, uri, str(run_dir)]
    proc = subprocess.run(cmd, env=environment_with_repo_on_path(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    t = tracked(uri, run_dir, "sigkill")
    assert t.latest is not None and t.latest.info.status == "RUNNING"
    assert t.latest.data.tags.get("interruptions", "0") == "0"
    with t.open() as logger:
        run = make_client(uri).get_run(logger.run_id)
        assert (run.data.tags["attempt"], run.data.tags["interruptions"]) == ("2", "1")
        for step in range(3):
            logger.log_metrics({"x": float(step)}, step)
    [run] = assert_nothing_lost(uri, "sigkill", runs=1, metrics={"x": [0, 1, 2]})
    assert run.info.run_id == t.run_id and run.data.tags["interruptions"] == "1"
    assert os.path.exists(run_dir / ".lock")


def test_a_tracking_uri_that_is_not_an_mlflow_server_is_named(tmp_path: Path) -> None:
    """Something answers at the URL, but not MLflow (a web server, a proxy without the path): named at once."""
    import functools
    import http.server
    import threading

    from experiments.tracking.store import check_tracking_uri

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        uri = f"http://127.0.0.1:{web.server_address[1]}"
        with pytest.raises(ValueError, match=rf"tracking.uri {uri} answers HTTP 404 to MLflow's API"):
            check_tracking_uri(uri)
        web.shutdown()
    with pytest.raises(ValueError, match=rf"tracking.uri {uri} answers HTTP 404"):  # remembered for the sweep's plan
        check_tracking_uri(uri)
