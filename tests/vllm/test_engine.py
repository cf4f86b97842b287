"""EAD against the real vLLM CPU engine: processed log-probs equal the schedule's behaviour policy.

All engines run once per session in tests/vllm/engine_scenarios.py; every expected value here is
recomputed with transformers (raw logits) and the schedule's public API (temperatures). Each check
also shows that the competing hypotheses (no EAD, EAD applied twice, another request's schedule)
would fail, so a pass cannot come from a tolerance that is too loose.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.vllm.reference import behaviour_logprobs, max_error, raw_logits, taus

pytestmark = pytest.mark.vllm

TOL = 1e-4  # vLLM's CPU kernels vs a transformers forward, float32, logits of size ~10
FAR = 1e-2  # how far a wrong hypothesis must be, at least

EAD_LABELS = ["ead_a_s0", "ead_a_s5", "ead_a_s50", "ead_a_s5_T0.8", "ead_b_s2", "ead_ref_s1", "ead_a_s0_topk8"]
FIXED_LABELS = ["fixed_0.5", "fixed_1.7"]
PLAIN_LABELS = ["plain_T1", "plain_T0.7"]


def _by_label(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["label"]: r for r in records}


def _no_engine_errors(engine_results: dict[str, Any], *names: str) -> None:
    errors = {k: v for k, v in engine_results["errors"].items() if k in names}
    assert not errors, "engine scenario failed:\n" + "\n".join(f"[{k}]\n{v}" for k, v in errors.items())


@pytest.fixture(scope="module")
def mixed(engine_results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    _no_engine_errors(engine_results, "main")
    return _by_label(engine_results["mixed"])


def test_scenarios_exercised_batch_churn_preemption_and_prefix_caching(engine_results: dict[str, Any]) -> None:
    _no_engine_errors(engine_results, "main")
    m = engine_results["metrics_after_mixed"]
    # 22 sequences through max_num_seqs=6 slots with a 10-block KV cache: constant adds/removes/moves,
    # requests preempted and recomputed, and the shared 40-token prompt served from the prefix cache.
    assert m["preemptions"] > 0, m
    assert m["prefix_cache_hits"] > 0, m
    assert sum(len(r["outputs"]) for r in engine_results["mixed"]) == 22


@pytest.mark.parametrize("label", EAD_LABELS)
def test_processed_logprobs_follow_ead_schedule(mixed: dict[str, dict[str, Any]], hf_model: Any, label: str) -> None:
    rec = mixed[label]
    assert len(rec["outputs"]) == 2 and all(len(o["token_ids"]) == 48 for o in rec["outputs"])
    assert max_error(hf_model, rec) < TOL
    assert max_error(hf_model, rec, tau_power=0.0) > FAR  # not the un-annealed policy
    assert max_error(hf_model, rec, tau_power=2.0) > FAR  # not EAD applied twice


@pytest.mark.parametrize("label", FIXED_LABELS)
def test_processed_logprobs_follow_fixed_temperature(
    mixed: dict[str, dict[str, Any]], hf_model: Any, label: str
) -> None:
    rec = mixed[label]
    assert max_error(hf_model, rec) < TOL
    assert max_error(hf_model, rec, tau_power=0.0) > FAR
    assert max_error(hf_model, rec, tau_power=2.0) > FAR


def test_ead_steps_change_the_schedule(mixed: dict[str, dict[str, Any]]) -> None:
    # The three steps of schedule A really are different behaviour policies over 48 positions.
    t0, t5, t50 = (taus(mixed[k]["extra_args"], 48) for k in ("ead_a_s0", "ead_a_s5", "ead_a_s50"))
    assert t0[-1] == pytest.approx(0.3) and t5[-1] == pytest.approx(0.3) and t50[-1] > 0.9
    assert np.abs(t0 - t5).max() > 0.3 and np.abs(t5 - t50).max() > 0.3


def test_mixed_batch_keeps_every_requests_own_schedule(mixed: dict[str, dict[str, Any]], hf_model: Any) -> None:
    for label in PLAIN_LABELS:  # plain requests: only vLLM's own temperature
        assert max_error(hf_model, mixed[label]) < TOL, label
    # Each annealed/fixed request matches its own schedule and no other request's.
    labels = EAD_LABELS + FIXED_LABELS + PLAIN_LABELS
    for label in EAD_LABELS + FIXED_LABELS:
        rec = mixed[label]
        own = taus(rec["extra_args"], 48)
        compared = 0
        for other in labels:
            tau = taus(mixed[other]["extra_args"], 48)
            if np.abs(tau - own).max() < 0.05:
                continue  # indistinguishable schedules over these positions (its own, at least)
            compared += 1
            worst = 0.0
            for out in rec["outputs"]:
                z = raw_logits(hf_model, rec["prompt_token_ids"], out["token_ids"])
                exp = behaviour_logprobs(z, out["token_ids"], tau, rec["temperature"], rec["top_k"] or 0)
                worst = max(worst, float(np.abs(np.asarray(out["logprobs"]) - exp).max()))
            assert worst > FAR, f"{label} also matches the schedule of {other}"
        assert compared >= 3, f"{label}: too few distinguishable schedules in the batch to tell them apart"


def test_parallel_sampling_n16(engine_results: dict[str, Any], hf_model: Any) -> None:
    _no_engine_errors(engine_results, "main")
    rec = engine_results["n16"]
    assert len(rec["outputs"]) == 16
    assert len({tuple(o["token_ids"]) for o in rec["outputs"]}) >= 8  # children draw different samples
    assert max_error(hf_model, rec) < TOL
    assert max_error(hf_model, rec, tau_power=2.0) > FAR


def test_resubmitted_request_keeps_counting_from_origin(engine_results: dict[str, Any], hf_model: Any) -> None:
    _no_engine_errors(engine_results, "main")
    r = engine_results["resume"]
    part1, part2 = r["part1"], r["part2"]
    n1 = len(part1["outputs"][0]["token_ids"])
    assert n1 == 12 and part2["extra_args"]["ead_origin"] == r["origin"]
    assert part2["prompt_token_ids"][r["origin"] :] == part1["outputs"][0]["token_ids"]
    assert max_error(hf_model, part1) < TOL
    assert max_error(hf_model, part2, first_position=n1) < TOL  # positions 12, 13, ...
    assert max_error(hf_model, part2, first_position=0) > FAR  # a restart at t = 0 would differ


def test_greedy_requests_are_unaffected(engine_results: dict[str, Any]) -> None:
    _no_engine_errors(engine_results, "main")
    plain, ead = _by_label(engine_results["greedy"]).values()
    assert ead["extra_args"]["ead_kind"] == "ead" and not plain["extra_args"]
    assert plain["outputs"][0]["token_ids"] == ead["outputs"][0]["token_ids"]


@pytest.mark.parametrize(
    ("case", "names"),
    [
        ("tau_min_negative", ["ead_tau_min", "(0.0, inf)"]),
        ("tau_max_below_min", ["ead_tau_max", "tau_min=0.5"]),
        ("missing_step", ["ead_step", "missing"]),
        ("unknown_key", ["ead_d", "allowed"]),
        ("bad_kind", ["ead_kind", "cosine"]),
        ("fixed_zero", ["ead_tau", "(0.0, inf)"]),
        ("min_p", ["min_p"]),
    ],
)
def test_invalid_requests_are_rejected_naming_the_field(
    engine_results: dict[str, Any], case: str, names: list[str]
) -> None:
    import vllm.exceptions

    _no_engine_errors(engine_results, "main")
    got = engine_results["invalid"][case]
    assert got["raised"], f"{case} was accepted"
    # What the OpenAI server maps to HTTP 400 (test_server.py checks the status on each version): vLLM 0.32 re-raises
    # validate_params' ValueError as VLLMValidationError, a VLLMClientError; 0.24 (verl 0.9.1's pin, .venv-recipe)
    # has no VLLMClientError, lets the ValueError through and answers any ValueError with 400.
    expected = "VLLMValidationError" if hasattr(vllm.exceptions, "VLLMClientError") else "ValueError"
    assert got["type"] == expected, got
    for name in names:
        assert name in got["message"], got["message"]


def test_engine_still_serves_after_rejections(engine_results: dict[str, Any], hf_model: Any) -> None:
    _no_engine_errors(engine_results, "main")
    assert max_error(hf_model, engine_results["after_invalid"][0]) < TOL


@pytest.mark.parametrize("registration", ["ep_and_class", "ep_only", "arg_only"])
def test_registration_applies_temperature_exactly_once(
    engine_results: dict[str, Any], hf_model: Any, registration: str
) -> None:
    # "main" already covers the entry point + FQCN string (every test above).
    _no_engine_errors(engine_results, registration)
    rec = engine_results["registration"][registration]
    assert max_error(hf_model, rec) < TOL
    assert max_error(hf_model, rec, tau_power=0.0) > FAR  # registered at all
    assert max_error(hf_model, rec, tau_power=2.0) > FAR  # and only once


@pytest.mark.parametrize(
    ("registration", "instances"),
    [("main", 2), ("ep_and_class", 2), ("ep_only", 1), ("arg_only", 1)],
)
def test_each_registration_builds_the_expected_instances_with_one_live(
    engine_results: dict[str, Any], registration: str, instances: int
) -> None:
    # Entry point + engine argument: vLLM builds the class twice and the guard leaves one live; either way
    # alone: one instance. (This also shows that "arg_only" really ran without the entry point.)
    _no_engine_errors(engine_results, registration)
    assert engine_results["instances"][registration] == {"instances": instances, "live": 1}


def test_speculative_decoding_is_refused(engine_results: dict[str, Any]) -> None:
    _no_engine_errors(engine_results, "specdec")
    got = engine_results["specdec"]
    assert got["raised"]
    assert any("speculative decoding" in m for m in got["messages"]), got["messages"]
