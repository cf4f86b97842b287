"""A run directory's checkpoint that cannot be read (truncated by a full disk or a kill mid-copy, or not a plain
checkpoint at all) never fails the run: the trainer falls back to the previous checkpoint, else restarts at step 0,
with a warning naming the file; and it never unpickles code from the run directory (``weights_only=True``)."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import pytest

from experiments.local import run
from tests.local.helpers import Recorder, Stopped, differing_metrics, small_config

STEPS = 3


def stopped_run(policy_dir: str, run_dir: Path, stop_at: int = 2) -> Recorder:
    """Steps 0 .. stop_at-1 with a checkpoint after each (checkpoint.pt = next step stop_at, prev = stop_at-1)."""
    rec = Recorder(stop_at=stop_at)
    with pytest.raises(Stopped):
        run(small_config(policy_dir, steps=STEPS), run_dir=run_dir, logger=rec, progress=False)
    return rec


def jsonl_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(
    tiny_policy_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    before = stopped_run(tiny_policy_dir, run_dir)
    assert (run_dir / "checkpoint.prev.pt").exists()  # two kept
    truncate(run_dir / "checkpoint.pt")
    resumed = Recorder()
    with caplog.at_level(logging.WARNING, logger="experiments.local.train"):
        run(small_config(tiny_policy_dir, steps=STEPS), run_dir=run_dir, logger=resumed, progress=False)
    assert f"checkpoint {run_dir / 'checkpoint.pt'} is unreadable" in caplog.text
    assert sorted(resumed.steps) == [1, 2, 3]  # from checkpoint.prev.pt (next step 1), not from scratch
    assert not differing_metrics(before.steps[1], resumed.steps[1])  # ... and it restored that state exactly
    assert jsonl_steps(run_dir) == [0, 1, 2, 3]  # each step once in the run directory


def test_no_readable_checkpoint_restarts_at_step_0_and_code_in_one_is_never_run(
    tiny_policy_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    stopped_run(tiny_policy_dir, run_dir)
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):  # what a planted checkpoint would run under weights_only=False
            return (Path.touch, (marker,))

    (run_dir / "checkpoint.pt").write_bytes(pickle.dumps({"model": Payload()}))
    truncate(run_dir / "checkpoint.prev.pt")
    resumed = Recorder()
    with caplog.at_level(logging.WARNING, logger="experiments.local.train"):
        run(small_config(tiny_policy_dir, steps=STEPS), run_dir=run_dir, logger=resumed, progress=False)
    assert not marker.exists()
    assert f"checkpoint {run_dir / 'checkpoint.prev.pt'} is unreadable" in caplog.text
    assert "no readable checkpoint" in caplog.text and "training restarts at step 0" in caplog.text
    assert sorted(resumed.steps) == [0, 1, 2, 3]
    assert jsonl_steps(run_dir) == [0, 1, 2, 3]


def test_a_truncated_warm_start_cache_entry_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from experiments.local.policy import load_policy
    from experiments.local.warmstart import WarmStartConfig, warm_start

    cfg = WarmStartConfig(steps=2, batch_size=4, n_train=200, task_knobs={"max_number": 5, "max_target": 12})
    path = warm_start(cfg, cache_dir=tmp_path, progress=False)
    weights = path / "model.safetensors"
    whole = weights.read_bytes()
    truncate(weights)
    with caplog.at_level(logging.WARNING, logger="experiments.local.warmstart"):
        again = warm_start(cfg, cache_dir=tmp_path, progress=False)
    assert again == path and f"warm start cache entry {path} is damaged ({weights}" in caplog.text
    assert weights.read_bytes() == whole  # rebuilt: the same seeded warm start, whole again
    load_policy(again)
