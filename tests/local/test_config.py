"""What identifies a local run (its config hash) and what a warm-start cache is keyed by."""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import experiments.local.config as config_module
import experiments.local.warmstart as warmstart_module
from experiments.local import RLVRConfig, from_dict
from experiments.local.config import EXECUTION_FIELDS
from experiments.local.warmstart import WarmStartConfig, warm_start
from experiments.tracking.hashing import config_hash, flat_params


def _changed(value):
    """A different value of the same kind (for every field type of RLVRConfig)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, dict):
        return {**value, "max_number": 7}
    if value is None:
        return "some/policy"
    raise TypeError(value)


def test_execution_settings_are_not_part_of_the_identity():
    """Runs that differ only in threads, checkpoint interval or device are one setting and seed: same hash (one run
    directory, one checkpoint to resume, one replicate); every other field changes the hash."""
    base = RLVRConfig()
    assert set(EXECUTION_FIELDS) == {"threads", "ckpt_interval", "device"}
    same = [RLVRConfig(threads=4), RLVRConfig(threads=1, ckpt_interval=50), RLVRConfig(ckpt_interval=1)]
    same.append(RLVRConfig(device="cpu"))
    assert {c.hash for c in same} == {base.hash}
    assert flat_params(RLVRConfig(threads=4).to_dict())["threads"] == 4  # still logged as a param
    for f in dataclasses.fields(RLVRConfig):
        if f.name in EXECUTION_FIELDS:
            continue
        value = getattr(base, f.name)
        if dataclasses.is_dataclass(value):
            sub = dataclasses.fields(value)[0]
            changed = dataclasses.replace(value, **{sub.name: _changed(getattr(value, sub.name))})
        else:
            changed = _changed(value)
        assert dataclasses.replace(base, **{f.name: changed}).hash != base.hash, f.name
    assert from_dict(base.to_dict()).hash == base.hash


def test_split_version_is_in_the_run_and_warm_start_keys(monkeypatch):
    """Problems changed with the train/eval split: runs and warm starts from an older split get other keys."""
    cfg, ws = RLVRConfig(), WarmStartConfig()
    run_hash, ws_key = cfg.hash, ws.key
    assert ws_key != config_hash(asdict(ws))  # not the key of the old, leaking split
    monkeypatch.setattr(config_module, "SPLIT_VERSION", 99)
    monkeypatch.setattr(warmstart_module, "SPLIT_VERSION", 99)
    assert cfg.hash != run_hash and ws.key != ws_key


def test_stale_warm_start_cache_is_not_reused(tmp_path):
    """A finished cache entry under the key of the old split (config hash without the split version) is ignored."""
    cfg = WarmStartConfig(task_knobs={"max_number": 5, "max_target": 12}, steps=1, batch_size=2, n_train=8)
    stale = tmp_path / "warmstart" / f"{cfg.size}-{cfg.task}-{config_hash(asdict(cfg))}"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    (stale / "DONE").write_text("ok\n")
    path = warm_start(cfg, cache_dir=tmp_path, progress=False)
    assert path != stale and (path / "DONE").exists()
    assert json.loads((path / "warmstart.json").read_text())["split_version"] == warmstart_module.SPLIT_VERSION


def test_warm_start_trains_under_no_grad(tmp_path):
    """A study runs under torch.no_grad and may be the first job on a machine to need the warm start: it still trains
    (the loss falls) instead of failing on backward."""
    cfg = WarmStartConfig(task_knobs={"max_number": 5, "max_target": 12}, steps=4, batch_size=4, n_train=16)
    with torch.no_grad():
        path = warm_start(cfg, cache_dir=tmp_path, progress=False)
    assert (path / "DONE").exists()
    with torch.no_grad():
        _, _, losses = warmstart_module.train_sft(cfg, progress=False)
    assert len(losses) == 4 and losses[-1] < losses[0]


def test_validation_warns_about_a_schedule_without_exploration():
    with pytest.warns(UserWarning, match=r"tau\(10\) = 0\.708"):
        from_dict({"sampling": {"preset": "paper", "c": 10, "d0": 25, "d_growth": 5}}).validate()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RLVRConfig().validate()  # the local default explores: tau(1) = 1.07 at step 0


def _warm_start_in_child(cache_dir: str, queue) -> None:  # noqa: ANN001 - a multiprocessing.Queue
    """Child process: warm-start and report whether this process trained the entry itself."""
    import logging

    torch.set_num_threads(1)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
    logging.getLogger("experiments.local.warmstart").addHandler(handler)
    logging.getLogger("experiments.local.warmstart").setLevel(logging.INFO)
    cfg = WarmStartConfig(task_knobs={"max_number": 5, "max_target": 12}, steps=2, batch_size=4, n_train=16)
    path = warm_start(cfg, cache_dir=cache_dir, progress=False)
    queue.put((str(path), any(m.startswith("training warm start") for m in records)))


def test_concurrent_jobs_train_a_warm_start_once(tmp_path):
    """Jobs of a sweep started together share one warm start: one trains it, the other waits and reuses it."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # the children inherit the imports: seconds, not a re-import of torch
    queue = ctx.Queue()
    procs = [ctx.Process(target=_warm_start_in_child, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0][0] == results[1][0]
    assert sorted(trained for _, trained in results) == [False, True]
    # an unfinished entry (a killed job's, no DONE) is replaced, not trusted
    path = Path(results[0][0])
    (path / "DONE").unlink()
    (path / "model.safetensors").write_bytes(b"truncated")
    cfg = WarmStartConfig(task_knobs={"max_number": 5, "max_target": 12}, steps=2, batch_size=4, n_train=16)
    assert warm_start(cfg, cache_dir=tmp_path, progress=False) == path and (path / "DONE").exists()
    assert (path / "model.safetensors").stat().st_size > 1000  # retrained


def test_warmstart_seed_shares_one_warm_start_across_run_seeds():
    """warmstart_seed fixes the warm start for every run seed (one SFT for a sweep); unset, each seed has its own
    and the config hash is the one runs had before the field existed."""
    own = [RLVRConfig(seed=s) for s in (0, 1)]
    shared = [RLVRConfig(seed=s, warmstart_seed=7) for s in (0, 1)]
    assert own[0].warmstart().key != own[1].warmstart().key
    assert shared[0].warmstart().key == shared[1].warmstart().key == RLVRConfig(seed=7).warmstart().key
    assert "warmstart_seed" not in own[0].identity() and shared[0].hash != own[0].hash
    assert shared[0].hash != shared[1].hash  # still two runs
    with pytest.raises(ValueError, match=r"warmstart_seed must be null \(the run's seed\) or an integer >= 0"):
        RLVRConfig(warmstart_seed=-1).validate()


def test_sft_batch_size_reaches_the_warm_start_and_keeps_default_hashes():
    """sft_batch_size sets the warm start's rows per step (its cache key with it); at the default 64 the config hash
    is the one runs had before the field existed, so earlier runs still resume and dedupe."""
    default, small = RLVRConfig(), RLVRConfig(sft_batch_size=32)
    assert default.warmstart().batch_size == 64 and small.warmstart().batch_size == 32
    assert default.warmstart().key != small.warmstart().key and default.hash != small.hash
    assert "sft_batch_size" not in default.identity() and small.identity()["sft_batch_size"] == 32
    with pytest.raises(ValueError, match=r"sft_batch_size must be an integer >= 1, got 0"):
        RLVRConfig(sft_batch_size=0).validate()
