"""Bad input fails the whole sweep before any job starts, naming its cause: unknown keys with or without ``+``, task
knobs the task lacks or out of their range (the real sweeper plans the sweep in-process: compose, validate)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.sweep.helpers import output, plan, run_sweep


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default store (sqlite:///mlflow.db) and runs/ resolve here


def plan_error(overrides: list[str]) -> str:
    """The sweeper's SweepConfigError for ``sweep.py -m OVERRIDES`` (matched by name: Hydra loads the plugin module
    on its own, so its classes are not the ones this module could import)."""
    with pytest.raises(Exception) as err:
        plan(overrides)
    assert type(err.value).__name__ == "SweepConfigError", err.value
    return str(err.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("+nosuchkey=1", "nosuchkey: unknown key (keys at the top level: task, task_knobs"),
        ("+stepz=5", "stepz: unknown key (did you mean steps?)"),
        ("++stepz=5", "stepz: unknown key (did you mean steps?)"),
        ("+sampling.tau_mx=1.2", "sampling.tau_mx: unknown key (did you mean sampling.tau_max?)"),
        ("+task_knobs.n_number=4", "task_knobs.n_number: unknown key (did you mean task_knobs.n_numbers?)"),
    ],
)
def test_unknown_keys_with_plus_fail_the_sweep_naming_the_key(override: str, expected: str) -> None:
    """Hydra adds ``+key=value`` to a typed config without complaint; the job would run with a config hash that
    ignores it. The sweeper's plan refuses the sweep (every job) before launching anything."""
    text = plan_error([override, "seed=1,2"])
    assert "2 of 2 sweep job(s) have an invalid config; nothing was launched" in text
    assert expected in text


def test_known_keys_with_plus_plus_still_plan() -> None:
    jobs = plan(["++steps=3", "seed=1,2"])  # '++' on an existing key overrides it, no error
    assert [pj.job.config.steps for pj in jobs] == [3, 3]


def test_task_knobs_of_the_default_task_work_without_plus_and_keep_config_hashes() -> None:
    """The README's example ``task_knobs.max_number=5`` with the default task (countdown), and knobs unset by the
    user leave config hashes as they were (the plain dict of the knobs that are set)."""
    from experiments.local.config import RLVRConfig

    default, knob = plan(["task_knobs.max_number=5,9"])
    assert knob.job.config.task_knobs == {"max_number": 9} and default.job.config.task_knobs == {"max_number": 5}
    assert knob.job.config_hash == RLVRConfig(task_knobs={"max_number": 9}).hash
    (plain,) = plan([])
    assert plain.job.config.task_knobs == {} and plain.job.config_hash == RLVRConfig().hash
    (easy,) = plan(["task=countdown_easy"])  # a task option that sets knobs in YAML
    assert easy.job.config.task_knobs == {"max_number": 5, "max_target": 12}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["task_knobs.n_numbers=50"], "task_knobs.n_numbers: countdown n_numbers must be 3 or 4, got 50"),
        (["task_knobs.max_number=500"], "task_knobs.max_number: countdown max_number must be in [2, 99], got 500"),
        (["task_knobs.digits=3"], "task_knobs.digits: task countdown has no knob 'digits'; its knobs: n_numbers"),
        (["task=arithmetic", "task_knobs.digits=9"], "task_knobs.digits: arithmetic digits must be in [1, 6]"),
    ],
)
def test_bad_task_knobs_name_the_knob_and_its_range(overrides: list[str], expected: str) -> None:
    text = plan_error(overrides)
    assert expected in text and "nothing was launched" in text


def test_an_unreachable_tracking_server_fails_the_plan_naming_tracking_uri() -> None:
    text = plan_error(["tracking=server", "tracking.uri=http://127.0.0.1:9", "seed=1,2"])
    assert "tracking.uri http://127.0.0.1:9 does not answer within 5 s" in text and "nothing was launched" in text


def test_sweep_py_with_an_unreachable_tracking_server_fails_in_seconds_naming_tracking_uri(tmp_path: Path) -> None:
    """MLflow's client retries for ~4 minutes and then prints a 110-line traceback that never names the setting;
    the check answers at once (the subprocess is bounded at 90 s: today's code runs into the bound)."""
    result = run_sweep(["tracking=server", "tracking.uri=http://127.0.0.1:9"], tmp_path, timeout=90)
    assert result.returncode != 0, output(result)
    assert "invalid config, nothing run: tracking.uri http://127.0.0.1:9 does not answer" in result.stderr
    assert "Traceback" not in result.stderr, output(result)
    assert not (tmp_path / "runs").exists()


@contextmanager
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody may write in: a read-only bind mount (root), else a directory without write permission."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    if os.geteuid() != 0:
        src.chmod(0o500)
        yield src
        src.chmod(0o700)
        return
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(ro)], capture_output=True).returncode == 0
    try:
        yield ro if mounted else Path("/proc/ead-no-such-dir")  # without mount rights: a path nobody can create
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)


def test_a_read_only_runs_root_fails_the_plan_before_any_job_starts(tmp_path: Path) -> None:
    with read_only_dir(tmp_path) as ro:
        text = plan_error([f"runs_root={ro}/runs", "seed=1,2"])
    assert f"runs_root {ro}/runs is not writable" in text and "nothing was launched" in text
