"""Resume gives the metrics of an uninterrupted run, step for step, for every algorithm.

Clip-Cov draws from the global torch RNG inside verl's loss; the trainer seeds that RNG per step, so a run stopped
after k steps and resumed from its checkpoint repeats the draws. The global RNG is reset before each run, as a fresh
process would find it, so a draw that depended on how many steps this process had run would show.
"""

from __future__ import annotations

import pytest
import torch

from experiments.local import ALGORITHMS, run
from tests.local.helpers import Recorder, Stopped, differing_metrics, small_config

STEPS, STOP = 4, 2


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_stopped_and_resumed_run_equals_uninterrupted(tiny_policy_dir, tmp_path, algorithm):
    # clip_cov_lb 0: at this scale few tokens reach the default covariance band (1, 5); with a wider band the loss
    # picks 1 of many candidates at random every step, so an unseeded pick would show.
    algo = {"name": algorithm, **({"clip_cov_lb": 0.0} if algorithm == "clip_cov" else {})}
    cfg = small_config(tiny_policy_dir, steps=STEPS, algorithm=algo, prompts_per_step=8, lr=1e-4)
    torch.manual_seed(0)
    clean = Recorder()
    run(cfg, run_dir=tmp_path / "clean", logger=clean, progress=False)

    torch.manual_seed(0)
    stopped = Recorder(stop_at=STOP)
    with pytest.raises(Stopped):
        run(cfg, run_dir=tmp_path / "resumed", logger=stopped, progress=False)
    torch.manual_seed(0)
    resumed = Recorder()
    run(cfg, run_dir=tmp_path / "resumed", logger=resumed, progress=False)

    assert sorted(clean.steps) == list(range(STEPS + 1))
    assert sorted(stopped.steps) == list(range(STOP))
    assert sorted(resumed.steps) == list(range(STOP, STEPS + 1))  # resumed from the checkpoint, not from scratch
    for step in range(STEPS + 1):
        got = (stopped if step < STOP else resumed).steps[step]
        assert not differing_metrics(clean.steps[step], got), (step, differing_metrics(clean.steps[step], got))
    # Updates happened before and after the stop (otherwise equal metrics would say little); for Clip-Cov that
    # means random picks before the stop, which an unseeded resume would not repeat.
    signal = [clean.steps[s]["train/grad_norm"] > 0 for s in range(STEPS)]
    assert any(signal[:STOP]) and any(signal[STOP:]), signal
    if algorithm == "clip_cov":
        assert all(clean.steps[s]["train/pg_clipfrac"] > 0 for s, on in enumerate(signal) if on)
