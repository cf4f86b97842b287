"""Per-request EAD arguments: flat extra_args round trips, errors that name the key, the SamplingParams builder."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from ead_core import EADSchedule, FixedSchedule, anneal_temperature
from ead_core.vllm_params import EADRequest, allowed_keys, parse_extra_args, schedule_to_extra_args

pytestmark = pytest.mark.vllm

A = EADSchedule(tau_max=1.3, tau_min=0.2, d0=30, c=7, d_growth=2.5, d_cap=math.inf, d_scale=20)


@pytest.mark.parametrize(
    ("schedule", "step", "origin"),
    [(A, 12, None), (A, 0, 33), (EADSchedule.preset("paper"), 3.5, 0), (FixedSchedule(0.6), None, None)],
)
def test_round_trip_through_json(schedule, step, origin) -> None:
    extra = schedule_to_extra_args(schedule, step, origin=origin)
    assert all(isinstance(v, (str, int, float)) for v in extra.values())  # flat: fits vllm_xargs
    back = parse_extra_args(json.loads(json.dumps(extra)))  # what the OpenAI server hands over
    assert back == EADRequest(schedule=schedule, step=step or 0, origin=origin)
    assert back.schedule.decay(back.step) == schedule.decay(step or 0)


def test_plain_requests_and_foreign_keys_are_not_ead() -> None:
    assert parse_extra_args(None) is None
    assert parse_extra_args({}) is None
    assert parse_extra_args({"other_processor": 1, "eadx": 2}) is None


def test_numeric_strings_are_accepted() -> None:
    extra = {"ead_kind": "ead", "ead_tau_max": "1.2", "ead_tau_min": "0.1", "ead_d0": "25", "ead_c": "10"}
    req = parse_extra_args({**extra, "ead_step": "4", "ead_origin": "17"})
    assert req == EADRequest(EADSchedule(tau_max=1.2, tau_min=0.1, d0=25, c=10), step=4, origin=17)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ead_tau": 0.5}, "no 'ead_kind'"),
        ({"ead_kind": "annealed"}, "'ead_kind'.*one of \\['cosine', 'ead', 'entropy_target', 'fixed'"),
        ({"ead_kind": "fixed", "ead_tau": 0.5, "ead_tau_max": 1.2}, "unknown EAD key.*'ead_tau_max'"),
        ({"ead_kind": "fixed"}, "missing \\['ead_tau'\\]"),
        ({"ead_kind": "ead", "ead_tau_max": 1.2, "ead_tau_min": 0.1, "ead_d0": 25}, "missing \\['ead_step'\\]"),
        ({"ead_kind": "ead", "ead_tau_min": 0.1, "ead_step": 0}, "missing \\['ead_tau_max', 'ead_d0'\\]"),
        ({"ead_kind": "fixed", "ead_tau": -1}, "'ead_tau'.*tau must be in \\(0.0, inf\\), got -1"),
        ({"ead_kind": "fixed", "ead_tau": "warm"}, "'ead_tau'.*must be a number"),
        ({"ead_kind": "fixed", "ead_tau": True}, "'ead_tau'.*must be a number"),
        ({"ead_kind": "fixed", "ead_tau": 0.5, "ead_origin": -2}, "'ead_origin'.*>= 0"),
        ({"ead_kind": "fixed", "ead_tau": 0.5, "ead_step": -1}, "'ead_step'.*\\[0.0, inf\\)"),
    ],
)
def test_errors_name_the_key(extra, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_extra_args(extra)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tau_min", 0.0, "tau_min must be in \\(0.0, inf\\)"),
        ("tau_max", 0.05, "tau_max must be in \\[tau_min=0.1, inf\\)"),
        ("d0", -3, "d0 must be in \\(0.0, inf\\)"),
        ("c", 2.5, "c must be an integer >= 0"),
        ("d_growth", -1, "d_growth must be in \\[0.0, inf\\)"),
        ("d_cap", 1.0, "d_cap must be in \\[d0=25.0, inf\\]"),
        ("d_scale", 0, "d_scale must be in \\(0.0, inf\\)"),
    ],
)
def test_schedule_field_errors_name_the_ead_key(field, value, message) -> None:
    extra = {"ead_kind": "ead", "ead_tau_max": 1.2, "ead_tau_min": 0.1, "ead_d0": 25, "ead_step": 0}
    with pytest.raises(ValueError, match=f"extra_args\\['ead_{field}'\\].*{message}"):
        parse_extra_args({**extra, f"ead_{field}": value})


def test_allowed_keys() -> None:
    assert allowed_keys("fixed") == ["ead_kind", "ead_origin", "ead_step", "ead_tau"]
    assert {"ead_tau_max", "ead_d_scale", "ead_tau"} <= set(allowed_keys())


def test_kernel_args_reproduce_the_schedule_exactly() -> None:
    # The processor feeds kernel_args() to anneal_temperature; a fixed temperature must come out exact.
    t = np.arange(0, 5000, dtype=np.float64)
    for schedule, step in [(A, 0), (A, 40), (EADSchedule.preset("paper"), 7)]:
        code, tau_max, tau_min, d, c, *_ = EADRequest(schedule, step).kernel_args()
        assert code == 0  # the EAD kernel
        assert d == schedule.decay(step)
        np.testing.assert_array_equal(anneal_temperature(t, tau_max, tau_min, d, c), schedule.temperatures(t, step))
        rows = [np.full_like(t, a) for a in (tau_max, tau_min, d, c)]  # per-row parameters, as in the processor
        np.testing.assert_allclose(anneal_temperature(t, *rows), schedule.temperatures(t, step), rtol=1e-12)
    for tau in (0.1, 0.6, 1.0, 1.7, 3.0):
        args = EADRequest(FixedSchedule(tau)).kernel_args()[1:5]
        np.testing.assert_array_equal(anneal_temperature(t, *args), np.full_like(t, tau))
        vec = [np.full_like(t, a) for a in args]  # the per-row (array) path of the kernel too
        np.testing.assert_array_equal(anneal_temperature(t, *vec), np.full_like(t, tau))


def test_sampling_params_builder() -> None:
    from ead_core.vllm_params import sampling_params

    sp = sampling_params(A, 9, origin=4, max_tokens=7, extra_args={"other": 1})
    assert (sp.temperature, sp.top_p, sp.logprobs, sp.max_tokens) == (1.0, 1.0, 0, 7)
    assert sp.top_k in (0, -1)  # disabled
    assert sp.extra_args == {"other": 1, **schedule_to_extra_args(A, 9, origin=4)}
    assert parse_extra_args(sp.extra_args) == EADRequest(A, 9, 4)
    assert parse_extra_args(sampling_params(FixedSchedule(0.5)).extra_args) == EADRequest(FixedSchedule(0.5))

    with pytest.raises(ValueError, match="step is required"):
        sampling_params(A)
    with pytest.raises(ValueError, match="min_p must be 0"):
        sampling_params(A, 0, min_p=0.05)
    with pytest.raises(ValueError, match="already holds EAD key"):
        sampling_params(A, 0, extra_args={"ead_step": 3})
    with pytest.warns(UserWarning, match="bias truncated importance sampling"):
        sampling_params(A, 0, top_p=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampling_params(A, 0, top_k=-1)
