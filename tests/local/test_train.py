"""Local RLVR training: every algorithm x {EAD, fixed}, resume after a kill, and input validation."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments.local import ALGORITHMS, RLVRConfig, from_dict, run
from experiments.tracking.loggers import JsonlLogger
from tests.conftest import EASY_COUNTDOWN

REPO = Path(__file__).resolve().parents[2]
TRAIN_KEYS = [
    "train/reward_mean", "train/response_length", "train/entropy", "train/pg_clipfrac", "train/grad_norm",
    "train/is_weight_mean", "train/is_weight_max", "train/is_truncated_frac", "train/is_ess",
    "train/kl_behavior_old", "perf/tokens_per_s", "perf/step_s",
]  # fmt: skip
EVAL_KEYS = ["eval/pass_at_4", "eval/worst_at_4", "eval/best_at_4", "eval/mean_at_4", "eval/boot_best_at_4",
             "eval/boot_worst_at_4", "eval_t1/pass_at_4", "eval_t1/worst_at_4", "eval_greedy/accuracy"]  # fmt: skip


def small(policy_dir: str, **kw) -> RLVRConfig:
    base = dict(
        init_from=policy_dir, steps=3, prompts_per_step=4, rollouts_per_prompt=4, mini_batches=2,
        max_new_tokens=12, eval_interval=2, eval_prompts=4, eval_k=4, ckpt_interval=1, threads=1, lr=1e-3,
        train_pool=200, task_knobs=EASY_COUNTDOWN,
    )  # fmt: skip
    base.update(kw)
    return from_dict(base)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("sampling", [{"kind": "ead"}, {"kind": "fixed", "tau": 0.6}])
def test_three_steps_each_algorithm(tiny_policy_dir, tmp_path, algorithm, sampling):
    cfg = small(tiny_policy_dir, algorithm={"name": algorithm}, sampling=sampling,
                tis={"enabled": algorithm != "kl_cov"})  # fmt: skip
    final = run(cfg, run_dir=tmp_path, progress=False)
    records = JsonlLogger(tmp_path).records()
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    for r in records[:3]:
        for k in TRAIN_KEYS:
            assert k in r, k
        assert 0.0 <= r["train/reward_mean"] <= 1.0
        assert 1.0 <= r["train/response_length"] <= 12
        assert r["train/grad_norm"] is None or r["train/grad_norm"] >= 0
    for step in (0, 2, 3):
        rec = next(r for r in records if r["step"] == step)
        for k in EVAL_KEYS:
            assert k in rec and 0.0 <= rec[k] <= 1.0, k
        assert rec["eval/worst_at_4"] <= rec["eval/mean_at_4"] <= rec["eval/pass_at_4"]
    tau_mean = records[0]["train/tau_mean"]
    if sampling["kind"] == "fixed":
        assert tau_mean == pytest.approx(0.6)
        assert records[0]["schedule/decay"] is None  # infinite decay length is logged as null
    else:
        assert tau_mean < 1.0  # the anneal reached below tau = 1 within 12 tokens
        assert records[2]["schedule/decay"] > records[0]["schedule/decay"]  # d_s grows with the step
    assert (tmp_path / "policy" / "config.json").exists() and (tmp_path / "DONE.json").exists()
    assert final["eval/pass_at_4"] == records[-1]["eval/pass_at_4"]
    # The update moved the weights away from the starting policy.
    from safetensors.torch import load_file

    start = load_file(Path(tiny_policy_dir) / "model.safetensors")
    end = load_file(tmp_path / "policy" / "model.safetensors")
    moved = any(not torch.equal(start[k], end[k]) for k in start)
    signal = any((r["train/grad_norm"] or 0.0) > 0 for r in records[:3])
    # Weights move exactly when some group had mixed rewards (GRPO advantages are 0 otherwise; no decay).
    assert moved == signal
    # A finished run is not redone.
    assert run(cfg, run_dir=tmp_path, progress=False) == json.loads((tmp_path / "DONE.json").read_text())


# The trainer in a process of its own (a config as JSON, the run directory), so it can be SIGKILLed.
_TRAIN = (
    "import json, sys; from experiments.local import from_dict, run; "
    "run(from_dict(json.loads(sys.argv[1])).validate(), run_dir=sys.argv[2], progress=False)"
)


def _config(policy_dir: str, steps: int) -> dict:
    return dict(
        init_from=policy_dir, steps=steps, prompts_per_step=4, rollouts_per_prompt=4, max_new_tokens=12,
        eval_interval=2, eval_prompts=4, eval_k=4, ckpt_interval=2, threads=1, train_pool=200, lr=1e-3,
        task_knobs=EASY_COUNTDOWN,
    )  # fmt: skip


def test_resume_after_kill_matches_uninterrupted(tiny_policy_dir, tmp_path):
    """SIGKILL a real training process after step 2 is logged; the restart continues from the checkpoint
    and the metrics equal an uninterrupted run's, every step exactly once."""
    steps = 6
    cfg = _config(tiny_policy_dir, steps)
    run(from_dict(cfg).validate(), run_dir=tmp_path / "clean", progress=False)
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", _TRAIN, json.dumps(cfg), str(killed)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        recs = JsonlLogger(killed).records() if killed.exists() else []
        if any(r["step"] >= 2 for r in recs) or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "DONE.json").exists(), "the job finished before it could be killed"
    assert subprocess.run(cmd, cwd=REPO, env=env, capture_output=True).returncode == 0

    clean, resumed = JsonlLogger(tmp_path / "clean").records(), JsonlLogger(killed).records()
    assert [r["step"] for r in resumed] == list(range(steps + 1))  # each step exactly once
    for a, b in zip(clean, resumed):
        assert a.keys() == b.keys()
        for k in a:
            if k.startswith("perf/"):
                continue
            va, vb = a[k], b[k]
            assert (va is None and vb is None) or math.isclose(va, vb, rel_tol=1e-6, abs_tol=1e-7), (
                a["step"],
                k,
                va,
                vb,
            )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algorithm": {"name": "ppo"}}, "algorithm.name must be one of"),
        ({"task": "sudoku"}, "task must be one of"),
        ({"size": "huge"}, "size must be one of"),
        ({"rollouts_per_prompt": 1}, "rollouts_per_prompt must be an integer >= 2"),
        ({"prompts_per_step": 3, "rollouts_per_prompt": 3, "mini_batches": 2}, "mini_batches must be a divisor"),
        ({"max_new_tokens": 1, "sampling": {"c": 1}}, r"max_new_tokens must be > sampling.c \(1\)"),
        ({"sampling": {"tau_min": 0}}, "sampling.tau_min must be in"),
        ({"sampling": {"kind": "sawtooth"}}, "sampling.kind must be"),  # cosine is a kind now
        ({"tis": {"cap": 0}}, "tis.cap must be > 0"),
        ({"task_knobs": {"n_numbers": 7}}, "task_knobs: countdown n_numbers"),
        ({"lr": -1}, "lr must be > 0"),
    ],
)
def test_bad_config_rejected_before_work(overrides, message):
    with pytest.raises(ValueError, match=message):
        from_dict(overrides).validate()


def test_unknown_keys_are_rejected():
    """Unknown keys fail here; the command line (sweep.py) is tested in tests/sweep/test_front_end.py."""
    with pytest.raises(ValueError, match="unknown config key"):
        from_dict({"sampling": {"tau_maxx": 1.0}})
