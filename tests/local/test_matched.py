"""The matched-entropy control as a training sampler (``sampling.kind=fixed_matched``): at every step one fixed
temperature whose mean token entropy equals EAD's at that step, on the model of that step."""

from __future__ import annotations

import pytest
import torch

from ead_core import EADSchedule
from ead_core.schedule import FixedMatchedSchedule
from ead_core.schedules.calibration import behaviour_entropy, mean_entropy
from experiments.local.rollout import group_prompts, response_logits, sample
from experiments.local.train import Trainer
from tests.local.helpers import Recorder, small_config

MATCHED = {"kind": "fixed_matched", "c": 1, "d0": 8.0, "d_growth": 2.0}


@pytest.fixture(scope="module")
def trainer(tiny_policy_dir, tmp_path_factory) -> Trainer:
    cfg = small_config(tiny_policy_dir, sampling=MATCHED, steps=2, eval_interval=1)
    return Trainer(cfg, tmp_path_factory.mktemp("matched"), Recorder())


def test_the_reference_is_ead_with_the_same_parameters(trainer: Trainer) -> None:
    ref = trainer.schedule
    assert isinstance(ref, EADSchedule) and (ref.d0, ref.c, ref.d_growth) == (8.0, 1, 2.0)
    assert trainer.cfg.sampling.matched and trainer.cfg.hash != small_config(trainer.cfg.init_from).hash


def test_the_calibrated_temperature_matches_eads_entropy_at_that_step(trainer: Trainer) -> None:
    """On EAD's responses of a step, the matched tau's mean entropy equals EAD's behaviour entropy there; a later step
    (longer decay: hotter along the response) calibrates a higher tau; the calibration is a function of the step."""
    model, tok = trainer.model, trainer.tok
    rows, _ = group_prompts([p.prompt for p in trainer.pool[:8]], 2)
    taus = {}
    for step in (0, 40):
        matched = trainer.calibrate(step)
        assert isinstance(matched, FixedMatchedSchedule)
        r = sample(model, tok, rows, trainer.schedule, step, 12, torch.Generator().manual_seed(step))
        logits = response_logits(model, r)
        mask = r.response_mask[:, : logits.shape[1]]
        positions = torch.arange(logits.shape[1], dtype=torch.float32)
        target = behaviour_entropy(trainer.schedule, logits, positions, step, mask)
        # the calibration used other responses of the same step: close, not equal, on these
        assert mean_entropy(logits, matched.tau, mask) == pytest.approx(target, abs=0.15)
        assert trainer.calibrate(step) == matched  # resumable: the same (seed, step, weights) calibrate the same
        taus[step] = matched.tau
    assert taus[40] > taus[0]


def test_a_step_samples_at_the_matched_temperature_and_logs_it(trainer: Trainer) -> None:
    matched = trainer.schedule_at(0)
    _, r, *_ = trainer.rollout(0)
    assert torch.all(r.temperatures == matched.tau)
    metrics = trainer.train_step(0)
    assert metrics["schedule/matched_tau"] == matched.tau
    assert metrics["schedule/matched_entropy"] == matched.target_entropy
    assert metrics["train/tau_mean"] == pytest.approx(matched.tau)
    assert trainer.schedule_at(1) is not matched  # each step calibrates on its own model
