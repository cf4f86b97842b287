"""Shared by the reliability tests: the environment of a user's shell (MLflow telemetry on, as MLflow enables it by
default) and the check every reliability test that tracks runs ends with, nothing lost."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tests.sweep.helpers import sweep_env

# Variables that make MLflow turn its telemetry off by itself (mlflow.telemetry.utils: the CI markers it checks, its
# own switch and the DO_NOT_TRACK convention); a user's shell has none of them, CI and pytest set some.
QUIET_VARS = (
    "CI", "PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS", "TF_BUILD",
    "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION",
    "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK",
)  # fmt: skip


def user_env() -> dict[str, str]:
    """The environment of a user's shell for a subprocess (the repository on PYTHONPATH, no MLFLOW_TRACKING_URI):
    MLflow telemetry on unless the harness itself turns it off."""
    env = sweep_env()
    for name in QUIET_VARS:
        env.pop(name, None)
    return env


def assert_nothing_lost(uri: str, experiment: str, runs: int, metrics: Mapping[str, Sequence[int]]) -> list[Any]:
    """Nothing lost in the store at ``uri``: the experiment holds exactly ``runs`` runs and the Default experiment none
    (where a run lands when its job loses a race for the experiment), every run FINISHED, and each metric in
    ``metrics`` holds each expected step exactly once (a step delivered twice shows twice in MLflow's history).
    Returns the runs."""
    from experiments.tracking import make_client, search_all_runs

    client = make_client(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {uri}"
    found = search_all_runs(client, [exp.experiment_id])
    assert len(found) == runs, f"{len(found)} runs in {experiment!r}, expected {runs}"
    default = client.get_experiment_by_name("Default")
    strays = search_all_runs(client, [default.experiment_id]) if default is not None else []
    assert not strays, f"runs in the Default experiment: {[r.info.run_id for r in strays]}"
    problems = []
    for run in found:
        run_id = run.info.run_id
        if run.info.status != "FINISHED":
            problems.append(f"run {run_id} is {run.info.status} ({run.data.tags.get('end_reason')})")
        for key, expected in metrics.items():
            got = sorted(m.step for m in client.get_metric_history(run_id, key))
            if got != sorted(expected):
                problems.append(f"run {run_id} {key}: steps {got}, expected each of {sorted(expected)} once")
    assert not problems, "\n".join(problems)
    return found
