"""One front end for training and studies: ``python sweep.py key=value ...`` (one job; ``-m`` for a sweep). Invalid
values fail before anything starts, naming the parameter and its allowed range; ``--help`` and ``--cfg job`` show the
config. The sweep layer's own keys say where and how a job runs, never what it computes: they are in no config hash.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from experiments.sweep.jobs import prepare
from tests.sweep.helpers import composed, output, run_sweep

# Keys of SweepJobConfig that cannot change a result, each with a value other than its default.
SWEEP_OWN = [
    "progress=true",
    "dry_run=true",
    "force=true",
    "runs_root=/elsewhere/runs",
    "experiment_name=another",
    "tracking.uri='sqlite:////elsewhere/other.db'",
    "tracking.serve=always",
    "tracking.server_host=0.0.0.0",
    "tracking.experiment_id='7'",
]
JOBS = {
    "local training": ["experiment=smoke", "sampling=ead"],
    "verl training": ["experiment=verl_smoke"],
    "entropy study": ["study=entropy", "sampling=fixed_1.0"],
    "schedule study": ["study=schedule"],
}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def hash_of(overrides: list[str]) -> str:
    with composed(overrides) as cfg:
        return prepare(cfg).config_hash


@pytest.mark.parametrize("kind", sorted(JOBS))
def test_the_sweep_layers_own_keys_are_in_no_config_hash(kind: str) -> None:
    base = JOBS[kind]
    h = hash_of(base)
    for override in SWEEP_OWN:
        assert hash_of([*base, override]) == h, override
    assert hash_of([*base, "tracking=server", "tracking.uri=http://mlflow.example:5000"]) == h
    # A key that does change the result changes the hash (the check above could fail).
    changed = "study.steps=[0,7]" if kind == "schedule study" else "seed=3"
    assert hash_of([*base, changed]) != h


@pytest.mark.slow
def test_an_invalid_value_fails_before_anything_starts(tmp_path: Path) -> None:
    result = run_sweep(["experiment=smoke", "sampling.tau_min=-1"], tmp_path)
    assert result.returncode == 1, output(result)
    assert "invalid config, nothing run: sampling.tau_min must be in (0.0, inf), got -1.0" in result.stderr
    # No tracking store, no run directory: the job never started (Hydra's own outputs/ log is all there is).
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_help_lists_the_groups_and_cfg_job_prints_the_composed_job(tmp_path: Path) -> None:
    result = run_sweep(["--help"], tmp_path)
    assert result.returncode == 0, output(result)
    groups = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line and "," in line)
    assert {"fixed_1.2", "ead"} <= set(groups["sampling"].split(", "))
    assert {"entropy", "branching", "schedule"} <= set(groups["study"].split(", "))
    assert "tau_max: 1.2" in result.stdout

    result = run_sweep(["--cfg", "job", "study=entropy", "sampling=fixed_1.2", "seed=4"], tmp_path)
    assert result.returncode == 0, output(result)
    job = yaml.safe_load(result.stdout)
    assert (job["study"]["name"], job["sampling"]["kind"], job["sampling"]["tau"], job["seed"]) == (
        "entropy",
        "fixed",
        1.2,
        4,
    )
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
