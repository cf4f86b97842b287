"""Finished run directories carried between machines (``experiments.tracking.archive``): what is packed, byte-stable
archives, restore into a fresh machine (then a fresh MLflow store is backfilled from it and training does not run
again), and what restore must not touch."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from experiments.tracking import JsonlLogger, RunDirBusy, RunIdentity, TrackedRun, lock_run_dir, make_client
from experiments.tracking.archive import main, restore, save


def finished_run(run_dir: Path, steps: int = 3, done: bool = True) -> None:
    """A run directory as a local training job leaves it: record files, checkpoints and a policy folder."""
    jl = JsonlLogger(run_dir)
    jl.log_params({"seed": 1, "config_hash": run_dir.name})
    for s in range(steps):
        jl.log_table("eval_counts", [{"decoder": "eval_t1", "prompt": 0, "correct": s, "n": 4}], step=s)
        jl.log_metrics({"train/reward_mean": 0.1 * s, "eval_t1/pass_at_4": 0.25 * s}, s)
    (run_dir / "checkpoint.pt").write_bytes(b"\0" * 4096)
    (run_dir / "checkpoint.prev.pt").write_bytes(b"\0" * 4096)
    (run_dir / "policy").mkdir()
    (run_dir / "policy" / "model.safetensors").write_bytes(b"\0" * 4096)
    if done:
        (run_dir / "DONE.json").write_text(json.dumps({"eval_t1/pass_at_4": 0.5}))


def test_save_packs_the_record_of_finished_runs_only_and_is_byte_stable(tmp_path: Path) -> None:
    runs = tmp_path / "runs" / "exp"
    finished_run(runs / "aaa111")
    finished_run(runs / "bbb222", done=False)  # still training: not archived
    out = tmp_path / "archive"
    assert save(runs, out) == [out / "aaa111.tar.gz"]
    with tarfile.open(out / "aaa111.tar.gz") as tar:
        names = sorted(tar.getnames())
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    assert names == sorted(
        ["DONE.json", "metrics.jsonl", "params.json"] + [f"tables/eval_counts_step{s}.jsonl" for s in range(3)]
    )
    first = (out / "aaa111.tar.gz").read_bytes()
    assert save(runs, out) == []  # unchanged: nothing rewritten
    (runs / "aaa111" / "metrics.jsonl").touch()  # a new mtime alone changes nothing
    assert save(runs, out) == [] and (out / "aaa111.tar.gz").read_bytes() == first
    JsonlLogger(runs / "aaa111").log_metrics({"train/reward_mean": 9.0}, 7)
    assert save(runs, out) == [out / "aaa111.tar.gz"]  # changed content: rewritten


def test_restore_on_a_fresh_machine_backfills_mlflow_and_training_does_not_run_again(tmp_path: Path) -> None:
    old = tmp_path / "old" / "runs" / "exp"
    finished_run(old / "abc123def456")
    archive = tmp_path / "archive"
    save(old, archive)

    new = tmp_path / "new" / "runs" / "exp"
    assert restore(archive, new) == [new / "abc123def456"]
    run_dir = new / "abc123def456"
    assert JsonlLogger(run_dir).records() == JsonlLogger(old / "abc123def456").records()
    assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / "policy").exists()
    assert restore(archive, new) == []  # finished here now: left alone

    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    identity = RunIdentity("exp", "abc123def456", "local", "run-abc123", job="train")
    t = TrackedRun(identity, run_dir, uri=uri)
    ran = []
    out = t.run(lambda lg: ran.append(lg.last_logged_step()) or {})
    assert out["status"] == "FINISHED" and ran == [2]  # the job sees every step already logged
    history = make_client(uri).get_metric_history(t.run_id, "eval_t1/pass_at_4")
    assert [(m.step, m.value) for m in history] == [(0, 0.0), (1, 0.25), (2, 0.5)]
    tables = {a.path for a in make_client(uri).list_artifacts(t.run_id, "tables")}
    assert tables == {f"tables/eval_counts_step{s}.json" for s in range(3)}


def test_local_training_returns_the_restored_result_without_training(tmp_path: Path) -> None:
    from experiments.local.config import RLVRConfig
    from experiments.local.train import run

    finished_run(tmp_path / "old" / "h")
    save(tmp_path / "old", tmp_path / "archive")
    restore(tmp_path / "archive", tmp_path / "new")
    assert run(RLVRConfig(steps=1), tmp_path / "new" / "h", progress=False) == {"eval_t1/pass_at_4": 0.5}
    assert not (tmp_path / "new" / "h" / "checkpoint.pt").exists()  # no trainer was built


def test_restore_replaces_an_interrupted_attempt_but_never_a_live_one(tmp_path: Path) -> None:
    finished_run(tmp_path / "old" / "h")
    save(tmp_path / "old", tmp_path / "archive")
    runs = tmp_path / "new"
    finished_run(runs / "h", steps=1, done=False)  # an interrupted attempt of the same run on this machine
    lock = lock_run_dir(runs / "h")
    try:
        with pytest.raises(RunDirBusy):
            restore(tmp_path / "archive", runs)
        assert not (runs / "h" / "DONE.json").exists() and (runs / "h" / "checkpoint.pt").exists()
    finally:
        lock.release()
    assert restore(tmp_path / "archive", runs) == [runs / "h"]
    assert sorted(p.name for p in (runs / "h").iterdir() if p.name != ".lock") == [
        "DONE.json", "metrics.jsonl", "params.json", "tables",
    ]  # fmt: skip
    assert len(JsonlLogger(runs / "h").records()) == 3


def test_cli_names_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["save", str(tmp_path / "nope"), str(tmp_path / "a")]) == 2
    assert "runs_dir" in capsys.readouterr().out
    assert main(["restore", str(tmp_path / "nope"), str(tmp_path / "r")]) == 2
    assert "archive_dir" in capsys.readouterr().out
    finished_run(tmp_path / "runs" / "h")
    assert main(["save", str(tmp_path / "runs"), str(tmp_path / "a")]) == 0
    assert "saved 1 new or changed" in capsys.readouterr().out
