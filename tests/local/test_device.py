"""``device=auto|cpu|cuda``: the choice is validated before launch, stays out of the config hash, and on a GPU every
tensor of a rollout and of a training step lives there with the sampler still exact. The GPU tests need CUDA (an
allowed skip reason, tests/skip_policy.py); the CPU tests run everywhere."""

from __future__ import annotations

import pytest
import torch

from ead_core import EADSchedule
from experiments.local import RLVRConfig
from experiments.local.policy import DEVICES, load_policy, resolve_device
from experiments.local.rollout import group_prompts, sample, sequence_logprobs
from experiments.local.train import Trainer
from tests.local.helpers import Recorder, small_config

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (the local backend on device=cuda)")


def test_auto_is_cuda_exactly_when_torch_sees_a_gpu() -> None:
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("bad", ["tpu", "CUDA", "", "gpu"])
def test_an_unknown_device_is_named_with_the_allowed_values(bad: str) -> None:
    with pytest.raises(ValueError, match=r"device must be one of \['auto', 'cpu', 'cuda'\]"):
        RLVRConfig(device=bad).validate()
    assert DEVICES == ("auto", "cpu", "cuda")


def test_cuda_without_a_gpu_fails_validation_naming_device() -> None:
    if HAS_CUDA:
        assert RLVRConfig(device="cuda").validate().device == "cuda"
    else:
        with pytest.raises(ValueError, match=r"device.*cuda.*is_available\(\) is False"):
            RLVRConfig(device="cuda").validate()


def test_the_device_is_not_part_of_the_config_hash() -> None:
    """Where a run executes does not change which run it is: a run started on CPU resumes on a GPU node."""
    assert RLVRConfig(device="cpu").hash == RLVRConfig().hash == RLVRConfig(device="auto").hash


def test_the_trainer_puts_the_policy_on_the_resolved_device(tiny_policy_dir, tmp_path) -> None:
    trainer = Trainer(small_config(tiny_policy_dir, device="cpu"), tmp_path, Recorder())
    assert trainer.device == torch.device("cpu")
    assert {p.device for p in trainer.model.parameters()} == {torch.device("cpu")}


@needs_cuda
def test_a_cuda_rollout_lives_on_the_gpu_and_its_behaviour_logprobs_equal_a_recomputation(tiny_policy_dir) -> None:
    model, tok = load_policy(tiny_policy_dir, "cuda")
    schedule = EADSchedule.preset("paper", c=1, d0=8)
    rows, _ = group_prompts(["3 5 7>22:", "12 3 4>6:"], 8)
    r = sample(model, tok, rows, schedule, 5, 12, torch.Generator(device="cuda").manual_seed(1))
    for name in ("response_ids", "response_mask", "behavior_logprobs", "temperatures", "target_logprobs", "entropy"):
        assert getattr(r, name).device.type == "cuda", name
    with torch.no_grad():
        recomputed, _ = sequence_logprobs(model, r, temperatures=r.temperatures)
    torch.testing.assert_close(r.behavior_logprobs, recomputed, atol=1e-4, rtol=1e-4)


@needs_cuda
def test_greedy_responses_are_the_same_on_cpu_and_cuda(tiny_policy_dir) -> None:
    prompts = ["3 5 7>22:", "12 3 4>6:", "9 9 1>80:"]
    texts = {}
    for dev in ("cpu", "cuda"):
        model, tok = load_policy(tiny_policy_dir, dev)
        texts[dev] = sample(model, tok, prompts, EADSchedule.preset("paper"), 0, 12, greedy=True).texts
    assert texts["cpu"] == texts["cuda"]


@needs_cuda
def test_two_training_steps_run_on_cuda(tiny_policy_dir, tmp_path) -> None:
    trainer = Trainer(small_config(tiny_policy_dir, device="cuda", steps=2), tmp_path, Recorder())
    assert next(trainer.model.parameters()).device.type == "cuda"
    final = trainer.run(progress=False)
    assert 0.0 <= final["train/reward_mean"] <= 1.0 and torch.isfinite(torch.tensor(final["train/grad_norm"]))
