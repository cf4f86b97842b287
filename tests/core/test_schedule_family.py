"""The schedule family (reverse, linear, cosine, fixed_matched, entropy_target): formulas, errors, the per-row
kernels, the matched-entropy calibration, and the same numbers from numpy, torch, the local sampler and the Hugging
Face processor (vLLM: tests/vllm/test_schedule_family.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ead_core.schedule import (
    SCHEDULE_KINDS,
    CosineSchedule,
    EADSchedule,
    EntropyTargetSchedule,
    FixedMatchedSchedule,
    FixedSchedule,
    LinearSchedule,
    ReverseSchedule,
    schedule_from_dict,
)
from ead_core.schedules import kernels as K
from ead_core.schedules.calibration import (
    behaviour_entropy,
    calibrate_temperature,
    matched_fixed_schedule,
    mean_entropy,
)
from ead_core.vllm_params import parse_extra_args, schedule_to_extra_args

pytestmark = pytest.mark.filterwarnings("ignore:EADSchedule.*never samples above tau:UserWarning")

ANNEALED = (EADSchedule, ReverseSchedule, LinearSchedule, CosineSchedule)


def _entropy(z: np.ndarray, tau: np.ndarray | float) -> np.ndarray:
    """Reference entropy of softmax(z / tau) in float64, written independently of the kernels."""
    x = np.asarray(z, dtype=np.float64) / np.reshape(np.asarray(tau, dtype=np.float64), (-1, 1))
    x = x - x.max(axis=1, keepdims=True)
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)


def _logits(rows: int = 64, vocab: int = 40, seed: int = 0) -> np.ndarray:
    """Rows from near-greedy to near-uniform (entropies spread over [0, log vocab])."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.05, 30.0, rows)[:, None]
    return (rng.standard_normal((rows, vocab)) * scale).astype(np.float32)


# ---- position-only kinds: formulas ------------------------------------------------------------------------------


def test_reverse_is_eads_mirror_in_tau():
    e, r = EADSchedule.preset("reference"), ReverseSchedule.preset("reference")
    t = np.arange(0, 3000, dtype=np.float64)
    for step in (0, 7, 500):
        te, tr = e.temperatures(t, step), r.temperatures(t, step)
        after = t >= r.c
        np.testing.assert_allclose(te[after] + tr[after], r.tau_max + r.tau_min, rtol=0, atol=1e-12)
        assert np.all(tr[~after] == 1.0)
        assert np.all(np.diff(tr[after]) >= -1e-15)  # rises
        assert tr[after].min() >= r.tau_min and tr.max() <= r.tau_max
    d = r.decay(0)  # 500: crosses 1.0 at d ln(2 - tau_min), reaches tau_max at d ln(1 + tau_max - tau_min)
    assert r.temperature(math.floor(d * math.log(1.9)), 0) < 1.0 < r.temperature(math.ceil(d * math.log(1.9)), 0)
    assert r.position_tau_max(0) == pytest.approx(d * math.log(2.1))
    assert r.temperature(math.ceil(d * math.log(2.1)), 0) == pytest.approx(1.2, abs=1e-12)
    assert r.temperature(math.floor(d * math.log(2.1)) - 1, 0) < 1.2
    assert r.temperature(10, 0) == pytest.approx(0.1 - 1 + math.exp(10 / 500))
    assert r.temperature(1e30, 0) == pytest.approx(1.2)  # no overflow


@pytest.mark.parametrize("cls", [LinearSchedule, CosineSchedule])
def test_linear_and_cosine_anneal_from_c_over_d_s(cls):
    s = cls(tau_max=1.5, tau_min=0.3, d0=20.0, c=4, d_growth=2.0)
    L = s.decay(5)  # 30
    assert L == 30.0
    assert s.temperature(3, 5) == 1.0 and s.temperature(0, 5) == 1.0
    assert s.temperature(4, 5) == pytest.approx(1.5)
    assert s.temperature(4 + L, 5) == pytest.approx(0.3) and s.temperature(4 + 10 * L, 5) == pytest.approx(0.3)
    assert s.temperature(4 + L / 2, 5) == pytest.approx(0.9)  # both pass the midpoint halfway
    quarter = 1.5 - 1.2 * (0.25 if cls is LinearSchedule else (1 - math.cos(math.pi / 4)) / 2)
    assert s.temperature(4 + L / 4, 5) == pytest.approx(quarter)
    tau = s.temperatures(np.arange(4, 200, dtype=np.float64), 5)
    assert np.all(np.diff(tau) <= 1e-15)
    assert s.temperature(4 + 20, 0) == pytest.approx(0.3)  # L grows with the step: 20 at step 0, 30 at step 5
    assert s.temperature(4 + 20, 5) > 0.31


@pytest.mark.parametrize("cls", ANNEALED)
def test_numpy_torch_dtypes_and_round_trip(cls):
    s = cls.preset("reference", c=3)
    t = np.arange(0, 5000, dtype=np.float64)
    a = s.temperatures(t, 11)
    b = s.temperatures(torch.from_numpy(t), 11)
    assert isinstance(b, torch.Tensor) and b.dtype == torch.float64
    np.testing.assert_allclose(a, b.numpy(), rtol=1e-13, atol=1e-13)
    b32 = s.temperatures(torch.arange(0, 5000, dtype=torch.float32), 11)
    assert b32.dtype == torch.float32
    np.testing.assert_allclose(a, b32.numpy(), rtol=1e-5, atol=1e-5)
    assert s.temperatures([0, 10], 0).dtype == np.float64
    assert schedule_from_dict(s.to_dict()) == s and s.to_dict()["kind"] == cls.kind
    assert schedule_from_dict({**s.to_dict(), "c": 3.0}) == s


def test_every_kind_round_trips_and_has_a_label():
    schedules = [
        EADSchedule.preset("reference"),
        FixedSchedule(0.7),
        ReverseSchedule.preset("paper"),
        LinearSchedule(1.2, 0.1, 30.0),
        CosineSchedule(1.2, 0.1, 30.0),
        FixedMatchedSchedule(tau=0.83, target_entropy=1.25),
        EntropyTargetSchedule(h_max=2.0, h_min=0.5, d0=40.0, tau_hi=3.0),
    ]
    assert sorted(s.kind for s in schedules) == sorted(SCHEDULE_KINDS)
    labels = {s.label for s in schedules}
    assert len(labels) == len(schedules)
    for s in schedules:
        assert schedule_from_dict(s.to_dict()) == s
        extra = schedule_to_extra_args(s, 4)
        req = parse_extra_args(extra)
        assert req.schedule == s and req.kernel_args() == s.kernel_args(4)
    assert FixedMatchedSchedule(0.83, 1.25) != FixedSchedule(0.83)
    np.testing.assert_array_equal(FixedMatchedSchedule(0.83, 1.25).temperatures(np.arange(4), 9), np.full(4, 0.83))


@pytest.mark.parametrize("cls", [ReverseSchedule, LinearSchedule, CosineSchedule, EntropyTargetSchedule])
def test_step_is_required_for_growing_kinds(cls):
    s = cls(1.2, 0.1, 20.0)
    with pytest.raises(ValueError, match="step is required"):
        schedule_to_extra_args(s)
    extra = schedule_to_extra_args(s, 3)
    del extra["ead_step"]
    with pytest.raises(ValueError, match="ead_step"):
        parse_extra_args(extra)
    assert parse_extra_args(schedule_to_extra_args(FixedMatchedSchedule(0.5, 1.0))).step == 0


# ---- errors -----------------------------------------------------------------------------------------------------

BASE = {
    "reverse": {"tau_max": 1.2, "tau_min": 0.1, "d0": 25.0},
    "linear": {"tau_max": 1.2, "tau_min": 0.1, "d0": 25.0},
    "cosine": {"tau_max": 1.2, "tau_min": 0.1, "d0": 25.0},
    "entropy_target": {"h_max": 2.0, "h_min": 0.1, "d0": 25.0},
    "fixed_matched": {"tau": 0.9, "target_entropy": 1.0},
}


@pytest.mark.parametrize(
    ("kind", "bad", "message"),
    [
        *[
            (k, bad, msg)
            for k in ("reverse", "linear", "cosine")
            for bad, msg in [
                ({"tau_min": 0.0}, r"tau_min must be in \(0.0, inf\), got 0.0"),
                ({"tau_max": 0.05}, r"tau_max must be in \[tau_min=0.1, inf\), got 0.05"),
                ({"d0": -1.0}, r"d0 must be in \(0.0, inf\)"),
                ({"c": 1.5}, r"c must be an integer >= 0"),
                ({"d_growth": -1.0}, r"d_growth must be in \[0.0, inf\)"),
                ({"d_cap": 3.0}, r"d_cap must be in \[d0=25.0, inf\]"),
                ({"d_scale": float("nan")}, "d_scale must not be NaN"),
            ]
        ],
        ("entropy_target", {"h_min": -0.5}, r"h_min must be in \[0.0, inf\), got -0.5"),
        ("entropy_target", {"h_max": 0.05}, r"h_max must be in \[h_min=0.1, inf\), got 0.05"),
        ("entropy_target", {"h_max": float("inf")}, "h_max must be finite"),
        ("entropy_target", {"tau_lo": 0.0}, r"tau_lo must be in \(0.0, inf\)"),
        ("entropy_target", {"tau_hi": 0.5}, r"tau_hi must be in \[tau_lo=1.0, inf\), got 0.5"),
        ("entropy_target", {"d_cap": 1.0}, r"d_cap must be in \[d0=25.0, inf\]"),
        ("entropy_target", {"c": -2}, "c must be an integer >= 0"),
        ("fixed_matched", {"tau": 0.0}, r"tau must be in \(0.0, inf\)"),
        ("fixed_matched", {"target_entropy": -1.0}, r"target_entropy must be in \[0.0, inf\)"),
    ],
)
def test_invalid_parameters_name_the_field_and_range(kind, bad, message):
    with pytest.raises(ValueError, match=message):
        schedule_from_dict({"kind": kind, **BASE[kind], **bad})
    extra = {"ead_kind": kind, "ead_step": 0, **{f"ead_{k}": v for k, v in {**BASE[kind], **bad}.items()}}
    with pytest.raises(ValueError, match=r"extra_args\['ead_"):
        parse_extra_args(extra)


def test_positions_and_logits_are_checked():
    e = EntropyTargetSchedule(h_max=2.0, h_min=0.1, d0=25.0)
    with pytest.raises(ValueError, match="temperatures_for_logits"):
        e.temperatures(np.arange(3), 0)
    with pytest.raises(ValueError, match="positions must be in"):
        e.temperatures_for_logits(_logits(4), np.array([0, 1, -1, 2]), 0)
    with pytest.raises(ValueError, match="one per row"):
        e.temperatures_for_logits(_logits(4), np.arange(3), 0)
    with pytest.raises(ValueError, match="rows, vocab"):
        e.temperatures_for_logits(_logits(4)[None], 0, 0)
    with pytest.raises(ValueError, match="step"):
        e.temperatures_for_logits(_logits(4), 0, -1)
    with pytest.raises(ValueError, match="positions must not contain NaN"):
        ReverseSchedule(1.2, 0.1, 5.0).temperatures(np.array([1.0, np.nan]), 0)
    with pytest.raises(ValueError, match="backend"):
        K.solve_entropy_temperature(_logits(2), 1.0, 1.0, 2.0, backend="jax")


# ---- per-row kernels (what the vLLM processor runs) ---------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.integers(0, 400))
def test_family_kernel_per_row_matches_each_schedule(seed, step):
    rng = np.random.default_rng(seed)
    schedules = []
    for _ in range(12):
        kind = rng.integers(0, 5)
        if kind == 4:
            schedules.append(FixedSchedule(float(rng.uniform(0.2, 2.0))))
        else:
            lo = float(rng.uniform(0.05, 1.0))
            schedules.append(ANNEALED[kind](lo + float(rng.uniform(0, 1.5)), lo, float(rng.uniform(1, 60)),
                                            c=int(rng.integers(0, 8)), d_growth=float(rng.uniform(0, 3))))  # fmt: skip
    t = rng.uniform(0, 300, size=len(schedules))
    args = np.array([s.kernel_args(step) for s in schedules]).T  # (7, rows)
    got = K.family_temperature(args[0], t, *args[1:5])
    expected = np.array([s.temperatures(np.array([x]), step)[0] for s, x in zip(schedules, t, strict=True)])
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13)
    got_torch = K.family_temperature(*(torch.from_numpy(np.ascontiguousarray(v)) for v in (args[0], t, *args[1:5])))
    np.testing.assert_allclose(got_torch.numpy(), expected, rtol=1e-13, atol=1e-13)
    present = set(args[0].tolist())
    np.testing.assert_array_equal(K.family_temperature(args[0], t, *args[1:5], present=present), got)


# ---- entropy_target ---------------------------------------------------------------------------------------------


def test_entropy_target_hits_the_target_raises_confident_rows_and_leaves_uncertain_ones_alone():
    z = _logits(64, 40)
    s = EntropyTargetSchedule(h_max=2.0, h_min=0.5, d0=30.0, c=2, tau_lo=1.0, tau_hi=4.0)
    for t in (5, 25, 200):
        tau = s.temperatures_for_logits(z, t, 0)
        target = max(0.5, 2.0 * math.exp(-t / 30.0))
        assert float(s.target_entropy(np.array([t]), 0)[0]) == pytest.approx(target)
        h1, h_at = _entropy(z, 1.0), _entropy(z, tau)
        uncertain = h1 >= target
        assert np.all(tau[uncertain] == 1.0)  # exactly: logits untouched
        hot = _entropy(z, 4.0) < target
        assert np.all(tau[hot] == 4.0)
        solved = ~uncertain & ~hot
        assert solved.sum() >= 5 and uncertain.sum() >= 5
        np.testing.assert_allclose(h_at[solved], target, atol=2e-5)
        assert np.all(tau[solved] > 1.0) and np.all(tau[solved] < 4.0)
    assert np.all(s.temperatures_for_logits(z, 1, 0) == 1.0)  # t < c
    per_row = s.temperatures_for_logits(z, np.arange(64), 0)  # one position per row
    for i in (0, 20, 63):
        assert per_row[i] == s.temperatures_for_logits(z[i : i + 1], i, 0)[0]


def test_entropy_target_with_tau_lo_below_one_cools_uncertain_rows():
    z = _logits(64, 40)
    s = EntropyTargetSchedule(h_max=1.0, h_min=1.0, d0=30.0, c=0, tau_lo=0.2, tau_hi=4.0)
    tau = s.temperatures_for_logits(z, 10, 0)
    ok = (tau > 0.2) & (tau < 4.0)
    assert (tau[ok] < 1.0).sum() >= 5 and (tau[ok] > 1.0).sum() >= 5
    np.testing.assert_allclose(_entropy(z, tau)[ok], 1.0, atol=2e-5)


def test_entropy_target_grows_with_the_step():
    z = _logits(64, 40)
    s = EntropyTargetSchedule(h_max=2.5, h_min=0.0, d0=10.0, c=0, d_growth=10.0, tau_hi=4.0)
    early, late = s.temperatures_for_logits(z, 30, 0), s.temperatures_for_logits(z, 30, 20)
    assert np.all(late >= early) and np.any(late > early + 0.1)  # d_s 10 -> 210: a higher target at t = 30


def test_entropy_target_same_numbers_from_numpy_torch_and_both_backends():
    z = _logits(48, 33, seed=3)
    z[::5, :7] = -np.inf  # masked-out vocabulary (vLLM's bad words / allowed ids)
    s = EntropyTargetSchedule(h_max=2.2, h_min=0.4, d0=12.0, c=1, tau_hi=3.0)
    pos = np.arange(48) % 17
    a = s.temperatures_for_logits(z, pos, 2)
    b = s.temperatures_for_logits(torch.from_numpy(z), torch.from_numpy(pos), 2)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    assert isinstance(b, torch.Tensor) and b.dtype == torch.float32
    np.testing.assert_array_equal(a, b.numpy())  # CPU tensors take the numpy path: identical
    c = s.temperatures_for_logits(torch.from_numpy(z), torch.from_numpy(pos), 2, backend="torch")
    np.testing.assert_allclose(c.numpy(), a, rtol=2e-6)  # the device path, run on the CPU
    d = s.temperatures_for_logits(z.astype(np.float64), pos, 2)
    np.testing.assert_allclose(d, a, rtol=2e-6)
    assert np.all(np.isfinite(a)) and np.any(a > 1.0)
    args = s.kernel_args(2)  # the per-row kernel with one parameter row per request (vLLM's call)
    rows = [np.full(48, v) for v in args[1:]]
    np.testing.assert_array_equal(K.entropy_target_temperature(z, pos.astype(np.float64), *rows), a)
    half = s.temperatures_for_logits(torch.from_numpy(z).to(torch.bfloat16), 5, 2)
    assert half.dtype == torch.float32


def test_solver_is_precise_converges_in_a_few_iterations_and_handles_flat_rows():
    z = _logits(32, 50, seed=9)
    z[0] = 0.0  # uniform row: entropy log(50) at every tau
    target = np.linspace(0.3, 3.5, 32).astype(np.float32)
    tau = K.solve_entropy_temperature(z, target, 0.1, 10.0)
    h = _entropy(z, tau)
    inside = (tau > 0.1) & (tau < 10.0)
    np.testing.assert_allclose(h[inside], target[inside], atol=2e-5)
    assert tau[0] == 0.1  # entropy log 50 >= target already at tau_lo
    coarse = K.solve_entropy_temperature(z, target, 0.1, 10.0, steps=1)
    assert np.abs(_entropy(z, coarse)[inside] - target[inside]).max() > 1e-3  # the steps matter
    # Newton steps: 6 iterations already reach the answer (halvings alone would leave a bracket of log(100) / 2^6)
    few = K.solve_entropy_temperature(z, target, 0.1, 10.0, steps=6)
    np.testing.assert_allclose(few[inside], tau[inside], rtol=2e-6)
    np.testing.assert_allclose(_entropy(z, few)[inside], target[inside], atol=2e-5)
    torch_few = K.solve_entropy_temperature(torch.from_numpy(z), torch.from_numpy(target), 0.1, 10.0, steps=6,
                                            backend="torch")  # fmt: skip
    np.testing.assert_allclose(torch_few.numpy()[inside], tau[inside], rtol=2e-6)


# ---- the matched-entropy control ----------------------------------------------------------------------------------


def test_calibrate_temperature_by_bisection():
    assert calibrate_temperature(lambda tau: math.log(tau) + 2.0, 2.5) == pytest.approx(math.exp(0.5), rel=1e-9)
    calls = []
    calibrate_temperature(lambda tau: calls.append(tau) or tau, 1.0, steps=10)
    assert len(calls) == 12  # two ends, then one evaluation per step
    with pytest.raises(ValueError, match=r"outside the range reachable with tau in \[0.05, 20\]"):
        calibrate_temperature(lambda tau: tau, 30.0)
    with pytest.raises(ValueError, match="tau_hi must be in"):
        calibrate_temperature(lambda tau: tau, 1.0, tau_lo=2.0, tau_hi=1.0)
    with pytest.raises(ValueError, match="target must not be NaN"):
        calibrate_temperature(lambda tau: tau, float("nan"))


@pytest.mark.parametrize("kind", ["ead", "entropy_target"])
def test_matched_fixed_schedule_has_the_references_entropy(kind):
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.standard_normal((8, 30, 25)).astype(np.float32) * 3)  # (rows, positions, vocab)
    mask = torch.ones(8, 30)
    mask[3, 12:] = 0
    if kind == "ead":
        ref = EADSchedule(tau_max=1.5, tau_min=0.3, d0=10.0, c=2)
    else:
        ref = EntropyTargetSchedule(h_max=3.0, h_min=1.0, d0=10.0, c=2, tau_hi=3.0)
    positions = torch.arange(30.0)
    fm = matched_fixed_schedule(ref, logits, positions, 4, mask)
    assert isinstance(fm, FixedMatchedSchedule)
    target = behaviour_entropy(ref, logits, positions, 4, mask)
    assert fm.target_entropy == pytest.approx(target)
    assert mean_entropy(logits, fm.tau, mask) == pytest.approx(target, abs=1e-6)
    # the reference's entropy, recomputed token by token
    z = logits.numpy().reshape(-1, 25)
    if kind == "ead":
        taus = np.broadcast_to(ref.temperatures(np.arange(30.0), 4), (8, 30)).reshape(-1)
    else:
        taus = ref.temperatures_for_logits(z, np.tile(np.arange(30), 8), 4)
    keep = mask.numpy().reshape(-1) > 0
    assert target == pytest.approx(_entropy(z, taus)[keep].mean(), abs=1e-5)
    assert mean_entropy(logits, fm.tau) != pytest.approx(target, abs=1e-4)  # the mask matters


# ---- the same numbers in the local sampler and the Hugging Face processor --------------------------------------------


def _kinds():
    return [
        ReverseSchedule(tau_max=1.5, tau_min=0.3, d0=4.0, c=1),
        LinearSchedule(tau_max=1.5, tau_min=0.3, d0=6.0, c=1),
        CosineSchedule(tau_max=1.5, tau_min=0.3, d0=6.0, c=1),
        FixedMatchedSchedule(tau=0.7, target_entropy=0.9),
        EntropyTargetSchedule(h_max=1.2, h_min=0.3, d0=4.0, c=1, tau_hi=3.0),
    ]


def test_hf_processor_gives_the_schedules_numbers_on_the_same_logits():
    from ead_core.hf import EADTemperatureProcessor

    z = torch.from_numpy(_logits(16, 25, seed=5))
    for s in _kinds():
        for t in (0, 1, 3, 9):
            proc = EADTemperatureProcessor(s, step=2, prompt_length=7)
            out = proc(torch.zeros(16, 7 + t, dtype=torch.long), z.clone())
            if s.needs_logits:
                tau_np = s.temperatures_for_logits(z.numpy(), t, 2)
                tau_t = s.temperatures_for_logits(z, t, 2)
            else:
                tau_np = np.full(16, s.temperatures(np.array([float(t)]), 2)[0])
                tau_t = s.temperatures(torch.full((16,), float(t)), 2)
            # float32 vs float64 evaluation of the same formula: within float32 rounding (entropy_target: identical)
            np.testing.assert_allclose(tau_t.numpy(), tau_np, rtol=3e-7 if s.needs_logits else 2e-7, atol=0)
            if s.needs_logits:
                np.testing.assert_array_equal(tau_t.numpy(), tau_np)
            torch.testing.assert_close(out, z / torch.from_numpy(np.asarray(tau_np, dtype=np.float32))[:, None])


@pytest.fixture(scope="module")
def policy(tiny_policy_dir):
    from experiments.local.policy import load_policy

    return load_policy(tiny_policy_dir)


@pytest.mark.parametrize("schedule", _kinds(), ids=lambda s: s.kind)
def test_local_sampler_behaviour_logprobs_equal_recomputation(policy, schedule):
    from experiments.local.rollout import group_prompts, sample, sequence_logprobs

    model, tok = policy
    rows, _ = group_prompts(["3 5 7>22:", "12 3 4>6:", "9 9 1>80:"], 8)
    r = sample(model, tok, rows, schedule, 3, 12, torch.Generator().manual_seed(1))
    valid = r.response_mask.bool()
    with torch.no_grad():
        recomputed, _ = sequence_logprobs(model, r, temperatures=r.row_temperatures)
        at_t1, _ = sequence_logprobs(model, r)
        p = r.prompt_ids.shape[1]
        ids = torch.cat([r.prompt_ids, r.response_ids], 1)
        attn = torch.cat([r.prompt_mask, torch.ones_like(r.response_ids)], 1)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(1) - 1).clamp(min=0)).logits
        logits = logits[:, p - 1 : p - 1 + r.response_ids.shape[1]].float()
    torch.testing.assert_close(r.behavior_logprobs, recomputed, atol=2e-5, rtol=1e-5)
    assert (r.behavior_logprobs[valid] - at_t1[valid]).abs().max() > 1e-3  # a temperature was really applied
    if schedule.needs_logits:
        # tau of every token, recomputed independently from the model's logits at that position
        for t in range(r.response_ids.shape[1]):
            live = valid[:, t]
            if live.any():
                expected = schedule.temperatures_for_logits(logits[live, t], t, 3)
                torch.testing.assert_close(r.row_temperatures[live, t], expected, rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(r.temperatures[t], expected.mean(), rtol=1e-5, atol=1e-6)
        taken = r.row_temperatures[valid]
        assert (taken == 1.0).any() and (taken > 1.0).any()  # both branches: left alone and raised
    else:
        expected = schedule.temperatures(torch.arange(12, dtype=torch.float32), 3)
        torch.testing.assert_close(r.temperatures, expected)
        torch.testing.assert_close(r.row_temperatures, expected.expand(len(rows), -1))
