"""Properties and error handling of ead_core.schedule."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ead_core.schedule import EADSchedule, FixedSchedule, anneal_temperature, schedule_from_dict

# Random schedules often have no exploratory phase; the tests of that warning below check it explicitly.
pytestmark = pytest.mark.filterwarnings("ignore:EADSchedule.*never samples above tau:UserWarning")

taus = st.floats(0.05, 3.0)


@st.composite
def schedules(draw):
    tau_min = draw(taus)
    tau_max = draw(st.floats(tau_min, 3.0))
    d0 = draw(st.floats(0.5, 500.0))
    return EADSchedule(
        tau_max=tau_max,
        tau_min=tau_min,
        d0=d0,
        c=draw(st.integers(0, 50)),
        d_growth=draw(st.floats(0.0, 50.0)),
        d_cap=d0 + draw(st.floats(0.0, 5000.0)),
        d_scale=draw(st.sampled_from([1.0, 20.0, 0.5, 3.0])),
    )


steps = st.integers(0, 20000)


def test_paper_values():
    s = EADSchedule.preset("paper")
    assert (s.tau_max, s.tau_min, s.d0, s.c, s.d_scale) == (1.2, 0.1, 25.0, 10, 1.0)
    assert s.temperature(0, 0) == 1.0 and s.temperature(9, 0) == 1.0
    assert s.temperature(10, 0) == pytest.approx(1 + 1.2 - math.exp(10 / 25))
    assert s.temperature(19, 0) == pytest.approx(max(2.2 - math.exp(19 / 25), 0.1))
    assert s.temperature(20, 0) == 0.1
    assert s.decay(0) == 25 and s.decay(10) == 75 and s.decay(10**9) == 40000


def test_reference_scale_matches_authors_effective_d():
    # The released sampler divides by 20 * d_s: tau reaches 1.0 near t = 91 and 0.1 near t = 371 at step 0.
    s = EADSchedule.preset("reference")
    assert s.decay(0) == 500.0
    assert s.position_tau_one(0) == pytest.approx(91.16, abs=0.01)
    assert s.position_tau_min(0) == pytest.approx(500 * math.log(2.1))
    assert s.temperature(91, 0) > 1.0 > s.temperature(92, 0)
    assert s.temperature(370, 0) > 0.1 == s.temperature(371, 0)


def test_preset_overrides_and_unknown():
    s = EADSchedule.preset("reference", tau_min=0.8, d0=50)
    assert s.tau_min == 0.8 and s.d0 == 50 and s.d_scale == 20
    with pytest.raises(ValueError, match="preset"):
        EADSchedule.preset("nope")
    with pytest.raises(ValueError, match="unknown"):
        EADSchedule.preset("paper", tau=1.0)


@settings(max_examples=200, deadline=None)
@given(schedules(), steps, st.integers(0, 5000))
def test_bounds_and_warmup(s, step, t):
    tau = s.temperature(t, step)
    if t < s.c:
        assert tau == 1.0
    else:
        assert s.tau_min - 1e-12 <= tau <= max(1.0, s.tau_max) + 1e-12


@settings(max_examples=200, deadline=None)
@given(schedules(), steps)
def test_non_increasing_after_c(s, step):
    t = np.arange(s.c, s.c + 3000, dtype=np.float64)
    tau = s.temperatures(t, step)
    assert np.all(np.diff(tau) <= 1e-12)


@settings(max_examples=200, deadline=None)
@given(schedules(), steps, steps)
def test_decay_monotone_and_capped(s, a, b):
    lo, hi = min(a, b), max(a, b)
    assert s.decay(lo) <= s.decay(hi) <= s.d_scale * s.d_cap * (1 + 1e-12)
    assert s.decay(0) == pytest.approx(s.d_scale * s.d0)


@settings(max_examples=200, deadline=None)
@given(schedules(), steps)
def test_crossings_within_one_token(s, step):
    """tau crosses 1.0 at decay*ln(tau_max) and reaches tau_min at decay*ln(1+tau_max-tau_min)."""
    d = s.decay(step)
    t_one = d * math.log(s.tau_max)
    if s.tau_max > 1.0 > s.tau_min and t_one >= s.c + 1 and t_one < 1e6:
        lo, hi = math.floor(t_one), math.ceil(t_one) + 1
        assert s.temperature(max(lo - 1, s.c), step) >= 1.0 - 1e-9
        assert s.temperature(hi, step) <= 1.0 + 1e-9
    t_min = d * math.log1p(s.tau_max - s.tau_min)
    if s.tau_max - s.tau_min > 1e-6 and s.c + 1 <= t_min < 1e6:
        assert s.temperature(math.ceil(t_min) + 1, step) == pytest.approx(s.tau_min)
        assert s.temperature(max(math.floor(t_min) - 1, s.c), step) > s.tau_min
        assert s.position_tau_min(step) == pytest.approx(t_min)


@settings(max_examples=100, deadline=None)
@given(schedules(), steps)
def test_numpy_and_torch_agree(s, step):
    t_np = np.arange(0, 4000, dtype=np.float64)
    a = s.temperatures(t_np, step)
    b = s.temperatures(torch.from_numpy(t_np), step)
    assert isinstance(b, torch.Tensor) and b.dtype == torch.float64
    np.testing.assert_allclose(a, b.numpy(), rtol=1e-12, atol=1e-12)
    b32 = s.temperatures(torch.arange(0, 4000, dtype=torch.float32), step)
    assert b32.dtype == torch.float32
    np.testing.assert_allclose(a, b32.numpy(), rtol=1e-5, atol=1e-5)


def test_kind_dtype_device_preserved():
    s = EADSchedule.preset("paper")
    for x in (np.arange(20, dtype=np.float32), torch.arange(20, dtype=torch.float16), torch.arange(20)):
        y = s.temperatures(x, 3)
        assert type(y) is type(x) and y.shape == x.shape
        if isinstance(x, torch.Tensor):
            assert y.device == x.device
            assert y.dtype == (x.dtype if x.is_floating_point() else torch.get_default_dtype())
        else:
            assert y.dtype == x.dtype
    assert s.temperatures([0, 10, 50], 0).dtype == np.float64
    assert s.temperatures(np.arange(6).reshape(2, 3), 0).shape == (2, 3)


def test_huge_positions_do_not_overflow():
    s = EADSchedule.preset("paper")
    with np.errstate(all="raise"):
        y = s.temperatures(np.array([1e6, 1e30], dtype=np.float32), 0)
    assert np.all(y == np.float32(0.1))
    assert torch.all(s.temperatures(torch.tensor([1e30]), 0) == torch.tensor(0.1))


def test_fixed_same_interface():
    f = FixedSchedule(0.6)
    assert f.temperature(0, 0) == 0.6 and f.temperature(500, 7) == 0.6
    assert math.isinf(f.decay(3))
    np.testing.assert_array_equal(f.temperatures(np.arange(5), 0), np.full(5, 0.6))
    y = f.temperatures(torch.arange(5, dtype=torch.float32), 0)
    assert y.dtype == torch.float32 and torch.allclose(y, torch.full((5,), 0.6))


@given(schedules())
def test_dict_round_trip(s):
    d = s.to_dict()
    assert d["kind"] == "ead"
    assert schedule_from_dict(d) == s
    assert schedule_from_dict({**d, "c": float(d["c"])}) == s  # JSON/MLflow may float ints


def test_fixed_round_trip_and_bad_dicts():
    assert schedule_from_dict(FixedSchedule(1.2).to_dict()) == FixedSchedule(1.2)
    with pytest.raises(ValueError, match="kind"):
        schedule_from_dict({"tau": 1.0})
    with pytest.raises(ValueError, match="kind"):
        schedule_from_dict({"kind": "annealed"})
    with pytest.raises(ValueError, match=r"missing field\(s\) \['d0', 'tau_max', 'tau_min'\]"):
        schedule_from_dict({"kind": "cosine"})  # a known kind without its fields: a ValueError, not a TypeError
    with pytest.raises(ValueError, match="unknown"):
        schedule_from_dict({"kind": "fixed", "tau": 1.0, "d0": 3})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"tau_min": 0.0}, "tau_min"),
        ({"tau_min": -0.1}, "tau_min"),
        ({"tau_max": 0.05}, "tau_max"),
        ({"d0": 0.0}, "d0"),
        ({"d_growth": -1.0}, "d_growth"),
        ({"d_cap": 10.0}, "d_cap"),
        ({"c": -1}, "c"),
        ({"c": 2.5}, "c"),
        ({"c": True}, "c"),
        ({"d_scale": 0.0}, "d_scale"),
        ({"tau_max": float("nan")}, "tau_max"),
        ({"tau_min": float("nan")}, "tau_min"),
        ({"d0": float("nan")}, "d0"),
        ({"d_growth": float("nan")}, "d_growth"),
        ({"d_cap": float("nan")}, "d_cap"),
        ({"d_scale": float("nan")}, "d_scale"),
        ({"d_scale": float("inf")}, "d_scale"),
    ],
)
def test_invalid_parameters_name_the_field(kwargs, name):
    params = {"tau_max": 1.2, "tau_min": 0.1, "d0": 25.0, **kwargs}
    with pytest.raises(ValueError, match=name) as err:
        EADSchedule(**params)
    assert "must" in str(err.value)


def test_invalid_range_message_states_range():
    with pytest.raises(ValueError, match=r"tau_min must be in \(0.0, inf\), got -0.1"):
        EADSchedule(tau_max=1.2, tau_min=-0.1, d0=25)
    with pytest.raises(ValueError, match="tau"):
        FixedSchedule(0.0)
    with pytest.raises(ValueError, match="tau"):
        FixedSchedule(float("nan"))


@pytest.mark.parametrize("sched", [EADSchedule.preset("paper"), FixedSchedule(1.0)])
def test_invalid_positions_and_steps(sched):
    with pytest.raises(ValueError, match="step"):
        sched.decay(-1)
    with pytest.raises(ValueError, match="step"):
        sched.temperatures(np.arange(3), float("nan"))
    with pytest.raises(ValueError, match="positions"):
        sched.temperatures(np.array([0, -1]), 0)
    with pytest.raises(ValueError, match="positions"):
        sched.temperatures(torch.tensor([0.0, float("nan")]), 0)
    with pytest.raises(ValueError, match="t must"):
        sched.temperature(-3, 0)


def test_anneal_kernel_broadcasts_per_row_parameters():
    """The kernel the vLLM processor uses: one row per request, each with its own schedule."""
    a, b = EADSchedule.preset("paper"), EADSchedule.preset("reference", tau_min=0.5, c=3)
    t = torch.arange(0, 600, dtype=torch.float32)
    rows = torch.stack([t, t])
    col = lambda *v: torch.tensor(v, dtype=torch.float32)[:, None]
    out = anneal_temperature(
        rows, col(a.tau_max, b.tau_max), col(a.tau_min, b.tau_min), col(a.decay(4), b.decay(4)), col(a.c, b.c)
    )
    torch.testing.assert_close(out[0], a.temperatures(t, 4))
    torch.testing.assert_close(out[1], b.temperatures(t, 4))


def test_schedule_that_never_explores_after_c_warns_once_with_the_numbers():
    """The paper preset (c = 10, d = 25) gives tau(10) = 0.708: no position after c samples above tau = 1 until d_s
    has grown past c / ln(tau_max) = 54.85 (step 6 at 5 per step)."""
    with pytest.warns(UserWarning, match=r"tau\(10\) = 0\.708 .*first does at step 6 .*54\.85") as rec:
        s = EADSchedule.preset("paper")
    assert len(rec) == 1
    assert s.temperature(10, 5) <= 1.0 < s.temperature(10, 6)  # the step the warning names is right
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # built once: using it never warns again
        s.temperatures(np.arange(50), 0)
        s.temperature(12, 3)
    with pytest.warns(UserWarning, match=r"tau\(10\) = 0\.708 .*never does in practice"):
        EADSchedule.preset("paper", d_growth=0.0)
    with pytest.warns(UserWarning, match=r"tau_max=1 <= 1"):
        EADSchedule(tau_max=1.0, tau_min=0.5, d0=8.0, c=1)
    with pytest.warns(UserWarning, match="tau = 1 after c"):
        schedule_from_dict(EADSchedule.preset("paper", d_growth=0.0).to_dict())  # validated again when rebuilt


@pytest.mark.parametrize(
    "make",
    [
        lambda: EADSchedule.preset("reference"),
        lambda: EADSchedule.preset("paper", c=0),
        lambda: EADSchedule(tau_max=1.2, tau_min=0.1, d0=8.0, c=1, d_growth=0.2),  # the local backend's default
        lambda: FixedSchedule(0.6),
    ],
)
def test_schedules_with_an_exploratory_phase_do_not_warn(make):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = make()
    assert s.kind == "fixed" or s.temperature(s.c, 0) > 1.0
