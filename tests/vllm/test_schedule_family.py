"""The schedule family through vLLM: the same temperatures as numpy, torch and the HF processor on the same logits,
on both runners, and processed log-probs of a real CPU engine equal to a recomputation for every kind.

The engine runs once per module in a subprocess (this file, run as a script: vLLM spawns threads and processes);
every expected value is recomputed from a transformers forward of the same model and the schedules' public API.

    .venv-vllm/bin/python -m pytest -q -m vllm tests/vllm/test_schedule_family.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ead_core.schedule import (
    CosineSchedule,
    EADSchedule,
    EntropyTargetSchedule,
    FixedMatchedSchedule,
    FixedSchedule,
    LinearSchedule,
    ReverseSchedule,
)
from tests.vllm.test_processor_unit import _config, _ctx, _v2_state

pytestmark = pytest.mark.vllm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TIMEOUT_S = 420
MAX_TOKENS = 40
TOL = 1e-4  # vLLM's CPU kernels vs a transformers forward, float32 (as in test_engine.py)
FAR = 1e-2

STEP = 3
KINDS: dict[str, Any] = {
    "ead": EADSchedule(tau_max=1.3, tau_min=0.3, d0=10.0, c=2, d_growth=1.0),
    "fixed": FixedSchedule(0.7),
    "reverse": ReverseSchedule(tau_max=1.6, tau_min=0.3, d0=6.0, c=2, d_growth=1.0),
    "linear": LinearSchedule(tau_max=1.6, tau_min=0.3, d0=12.0, c=2, d_growth=1.0),
    "cosine": CosineSchedule(tau_max=1.6, tau_min=0.3, d0=12.0, c=2, d_growth=1.0),
    "fixed_matched": FixedMatchedSchedule(tau=0.85, target_entropy=1.1),
    "entropy_target": EntropyTargetSchedule(h_max=2.5, h_min=0.6, d0=10.0, c=2, d_growth=1.0, tau_hi=3.0),
}


def _expected_tau(schedule: Any, logits: np.ndarray, t: np.ndarray) -> np.ndarray:
    """tau per row from the schedule's public API (float64 for position-only kinds)."""
    if schedule.needs_logits:
        return np.array([schedule.temperatures_for_logits(logits[i : i + 1], t[i], STEP)[0] for i in range(len(t))])
    return np.array([schedule.temperatures(np.array([float(x)]), STEP)[0] for x in t])


# ---- engine-free: V1 and Model Runner V2 against numpy, torch and the HF processor ---------------------------------


def _batch(rng: np.random.Generator, vocab: int = 64) -> tuple[list[tuple[str, Any]], np.ndarray, np.ndarray]:
    """Rows of every kind (and plain rows) at assorted positions, logits from near-greedy to near-uniform."""
    rows = [(k, s) for k, s in KINDS.items() for _ in range(6 if k == "entropy_target" else 3)]
    rows += [("plain", None)] * 2
    t = rng.integers(2, 14, size=len(rows))  # inside every curve's anneal window (no two kinds coincide there)
    t[0] = 1  # one row in the warm-up (t < c)
    scale = np.geomspace(0.2, 12.0, len(rows))[rng.permutation(len(rows))]
    ent = [i for i, (k, _) in enumerate(rows) if k == "entropy_target"]
    scale[ent] = [0.1, 0.2, 0.5, 4.0, 8.0, 16.0]  # near-uniform rows (left alone) and confident rows (raised)
    logits = (rng.standard_normal((len(rows), vocab)) * scale[:, None]).astype(np.float32)
    return rows, t, logits


def _v1_taus(rows: list[tuple[str, Any]], t: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate

    from ead_core.vllm_params import sampling_params
    from ead_core.vllm_processor import EADLogitsProcessor

    proc = EADLogitsProcessor(_config(len(rows)), torch.device("cpu"), False)
    added = []
    for i, ((_, s), n) in enumerate(zip(rows, t, strict=True)):
        sp = SamplingParams() if s is None else sampling_params(s, STEP if s.step_dependent else None)
        added.append((i, sp, [5, 6, 7], [9] * int(n)))  # live output lists: t tokens generated so far
    proc.update_state(BatchUpdate(len(rows), [], added, []))
    x = torch.from_numpy(logits.copy())
    out = proc.apply(x)
    return logits / out.numpy(), out


def _v2_taus(
    rows: list[tuple[str, Any]], t: np.ndarray, logits: np.ndarray, temperature: float = 1.0
) -> tuple[np.ndarray, torch.Tensor]:
    from vllm import SamplingParams

    from ead_core.vllm_params import sampling_params
    from ead_core.vllm_processor import EADLogitsProcessor

    prompt_lens = [4 + i % 5 for i in range(len(rows))]
    proc = EADLogitsProcessor(_config(len(rows)), _v2_state(prompt_lens))
    for i, (_, s) in enumerate(rows):
        kw = {"temperature": temperature}
        sp = SamplingParams(**kw) if s is None else sampling_params(s, STEP if s.step_dependent else None, **kw)
        assert proc.add_request(i, sp) is (s is not None)
    proc.apply_staged_writes()
    order = list(np.random.default_rng(7).permutation(len(rows)))  # logits rows in another order than slots
    pos = [int(t[i]) + prompt_lens[i] - 1 for i in order]  # t = pos + 1 - prompt_len
    out = proc.apply(torch.from_numpy(logits[order].copy()), _ctx(order, pos))
    back = np.empty_like(logits)
    back[order] = out.numpy()
    return logits / back, out


@pytest.mark.parametrize("runner", ["V1", "MRV2"])
def test_both_runners_give_every_kinds_temperatures_on_the_same_logits(runner: str, request: Any) -> None:
    if runner == "MRV2":
        request.getfixturevalue("mrv2")  # skips where vLLM has no MRV2 logits-processor interface (0.24)
    rng = np.random.default_rng(0)
    rows, t, logits = _batch(rng)
    expected = np.ones(len(rows))
    for i, (_, s) in enumerate(rows):
        if s is not None:
            expected[i] = _expected_tau(s, logits[i : i + 1], t[i : i + 1])[0]
    v1, v1_out = _v1_taus(rows, t, logits)
    kinds = np.array([k for k, _ in rows])
    for name, got in [(runner, v1 if runner == "V1" else _v2_taus(rows, t, logits)[0])]:
        for k in set(kinds):
            sel = kinds == k
            # every column of a row gives the same ratio: one tau per row
            assert np.ptp(got[sel], axis=1).max() < 1e-5 * got[sel].max(), (name, k)
            np.testing.assert_allclose(got[sel, 0], expected[sel], rtol=2e-6, err_msg=f"{name} {k}")
    # V1 divides by exactly the numbers the schedules give (float32 division by float32 tau)
    exp32 = torch.from_numpy(logits) / torch.from_numpy(expected.astype(np.float32))[:, None]
    torch.testing.assert_close(v1_out, exp32, rtol=3e-7, atol=0)
    ent = kinds == "entropy_target"
    raised = (expected[ent] > 1.0) & (t[ent] >= 2)
    assert raised.any() and (expected[ent] == 1.0).any()  # both raised and left-alone rows are in the batch
    for k, s in KINDS.items():  # a row on another kind's kernel would fail the checks above
        for other, o in KINDS.items():
            if other != k and not (s.needs_logits or o.needs_logits):
                sel = kinds == k
                assert np.abs(expected[sel] - _expected_tau(o, logits[sel], t[sel])).max() > 1e-3, (k, other)


def test_entropy_target_reaches_the_same_distribution_on_both_runners_with_a_request_temperature(mrv2: None) -> None:
    """V1 applies vLLM's temperature T before the processor, Model Runner V2 after it; both must sample from
    softmax(z / (T tau)) with tau solved on z / T."""
    rng = np.random.default_rng(1)
    s = KINDS["entropy_target"]
    rows = [("entropy_target", s)] * 12
    t = rng.integers(2, 30, size=12)
    z = (rng.standard_normal((12, 64)) * np.geomspace(0.5, 8, 12)[:, None]).astype(np.float32)
    T = 0.6
    _, v1_out = _v1_taus(rows, t, z / np.float32(T))  # V1 sees z / T
    _, v2_out = _v2_taus(rows, t, z, temperature=T)  # MRV2 sees z; vLLM divides by T afterwards
    order = list(np.random.default_rng(7).permutation(12))
    v2_final = np.empty_like(z)
    v2_final[order] = v2_out.numpy() / T
    np.testing.assert_allclose(v2_final, v1_out.numpy(), rtol=2e-5, atol=1e-5)
    tau_on_zT = s.temperatures_for_logits(z / np.float32(T), t, STEP)
    tau_on_z = s.temperatures_for_logits(z, t, STEP)
    assert np.abs(tau_on_zT - tau_on_z).max() > 0.05  # where it is solved matters: the test can fail


def test_hf_processor_agrees_with_the_vllm_processor() -> None:
    from ead_core.hf import EADTemperatureProcessor

    rng = np.random.default_rng(2)
    logits = (rng.standard_normal((10, 64)) * np.geomspace(0.3, 10, 10)[:, None]).astype(np.float32)
    for kind, s in KINDS.items():
        for t in (0, 2, 7, 33):
            rows = [(kind, s)] * 10
            v1, _ = _v1_taus(rows, np.full(10, t), logits)
            hf = EADTemperatureProcessor(s, step=STEP, prompt_length=3)
            out = hf(torch.zeros(10, 3 + t, dtype=torch.long), torch.from_numpy(logits.copy()))
            np.testing.assert_allclose(logits / out.numpy(), v1, rtol=1e-6, err_msg=f"{kind} t={t}")


# ---- a real engine -------------------------------------------------------------------------------------------------


def _engine_main(model: str, out_path: str) -> None:
    from vllm import LLM

    from ead_core.vllm_params import sampling_params
    from ead_core.vllm_processor import FQCN
    from tests.vllm.engine_scenarios import ENGINE_KW, _generate, _word_ids

    llm = LLM(model=model, logits_processors=[FQCN], max_num_seqs=4, **ENGINE_KW)  # 4 slots: constant churn
    kw = dict(max_tokens=MAX_TOKENS, ignore_eos=True, n=2)
    requests = []
    for i, (kind, s) in enumerate(KINDS.items()):
        step = STEP if s.step_dependent else None
        requests.append((kind, _word_ids(5 + 3 * i, i), sampling_params(s, step, seed=20 + i, **kw)))
    et = KINDS["entropy_target"]
    requests.append(
        ("entropy_target_T0.7", _word_ids(9, 30), sampling_params(et, STEP, seed=40, temperature=0.7, **kw))
    )
    out = {"records": _generate(llm, requests)}
    with open(out_path, "w") as f:
        json.dump(out, f)


@pytest.fixture(scope="module")
def engine_records(tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("family") / "records.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    cmd = [sys.executable, str(Path(__file__)), "--model", tiny_model_dir, "--out", str(out)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the engine run passed {TIMEOUT_S}s:\n{(e.stdout or '')[-4000:]}")
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"the engine run exited with {proc.returncode}:\n{(proc.stdout + proc.stderr)[-6000:]}")
    return {r["label"]: r for r in json.loads(out.read_text())["records"]}


def _errors(hf_model: Any, rec: dict[str, Any], schedule: Any, solve_on_t: bool = True) -> tuple[float, float, list]:
    """(max |vLLM - expected|, max |vLLM - untempered|, taus) over a record's outputs."""
    from tests.vllm.reference import behaviour_logprobs, raw_logits

    worst, plain, taus = 0.0, 0.0, []
    T = rec["temperature"]
    for out in rec["outputs"]:
        toks = out["token_ids"]
        z = raw_logits(hf_model, rec["prompt_token_ids"], toks)
        t = np.arange(len(toks))
        if schedule.needs_logits:
            zz = (z / T if solve_on_t else z).astype(np.float32)
            tau = schedule.temperatures_for_logits(zz, t, STEP).astype(np.float64)
        else:
            tau = schedule.temperatures(t.astype(np.float64), STEP)
        got = np.asarray(out["logprobs"])
        worst = max(worst, float(np.abs(got - behaviour_logprobs(z, toks, tau, T)).max()))
        plain = max(plain, float(np.abs(got - behaviour_logprobs(z, toks, np.ones(len(toks)), T)).max()))
        taus.append(tau)
    return worst, plain, taus


@pytest.mark.parametrize("label", [*KINDS, "entropy_target_T0.7"])
def test_engine_processed_logprobs_equal_a_recomputation(
    engine_records: dict[str, dict[str, Any]], hf_model: Any, label: str
) -> None:
    rec = engine_records[label]
    schedule = KINDS[label.split("_T")[0]]
    assert len(rec["outputs"]) == 2 and all(len(o["token_ids"]) == MAX_TOKENS for o in rec["outputs"])
    worst, plain, taus = _errors(hf_model, rec, schedule)
    assert worst < TOL, worst
    assert plain > FAR, plain  # not the untempered policy
    if schedule.needs_logits:
        tau = np.concatenate(taus)
        assert (tau > 1.05).sum() >= 5 and (tau == 1.0).sum() >= 3  # raised and left-alone tokens both sampled
        if rec["temperature"] != 1.0:
            assert _errors(hf_model, rec, schedule, solve_on_t=False)[0] > FAR  # solved on z / T, not on z


def _main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    _engine_main(args.model, args.out)


if __name__ == "__main__":
    _main()
