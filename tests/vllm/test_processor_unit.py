"""Engine-free tests of EADLogitsProcessor on vLLM's real interface types, for both model runners.

Model Runner V2 cannot start on this CPU (it needs Triton), so its path is exercised here with vLLM's
own ``LogitsContext`` and ``LogitsProcRequestState`` (only the pinned-memory prompt-length buffer is a
stand-in, since pinned memory needs an accelerator). The V1 path gets a randomised batch simulation
that follows vLLM's persistent-batch rules (removed, added into holes, condensed, swapped) on top of
the real-engine tests in test_engine.py. A contract test pins the interface signatures these rely on.
"""

from __future__ import annotations

import gc
import inspect
from dataclasses import dataclass, field, fields
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from ead_core import EADSchedule, FixedSchedule

pytestmark = pytest.mark.vllm

FQCN = "ead_core.vllm_processor:EADLogitsProcessor"


def _config(max_num_seqs: int = 8, speculative: Any = None) -> SimpleNamespace:
    """The parts of a VllmConfig the processor reads."""
    return SimpleNamespace(
        scheduler_config=SimpleNamespace(max_num_seqs=max_num_seqs),
        speculative_config=speculative,
        model_config=SimpleNamespace(logprobs_mode="processed_logprobs"),
    )


class _HostDeviceBuffer:
    """Stand-in for vLLM's UvaBackedTensor (``.np`` host view, ``.gpu`` device view) without pinned memory."""

    def __init__(self, values: list[int]) -> None:
        self.gpu = torch.tensor(values, dtype=torch.int32)
        self.np = self.gpu.numpy()


def _v2_state(prompt_lens: list[int], vocab: int = 16) -> Any:
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcRequestState

    return LogitsProcRequestState(
        device=torch.device("cpu"),
        max_num_reqs=len(prompt_lens),
        vocab_size=vocab,
        all_token_ids=None,
        prompt_len=_HostDeviceBuffer(prompt_lens),
        prefill_len=_HostDeviceBuffer(prompt_lens),
        total_len=None,
    )


def _ctx(slots: list[int], pos: list[int]) -> Any:
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext

    order = list(dict.fromkeys(slots))  # batch position -> slot
    return LogitsContext(
        expanded_idx_mapping=torch.tensor(slots, dtype=torch.int32),
        idx_mapping=torch.tensor(order, dtype=torch.int32),
        idx_mapping_np=np.array(order, dtype=np.int32),
        expanded_local_pos=torch.tensor([slots[:i].count(s) for i, s in enumerate(slots)], dtype=torch.int32),
        input_ids=torch.zeros(len(slots), dtype=torch.int32),
        pos=torch.tensor(pos, dtype=torch.int64),
        seq_lens_upper_bound_np=np.array(
            [max(p for s2, p in zip(slots, pos, strict=True) if s2 == s) + 1 for s in order]
        ),
    )


# ---- interface contract ------------------------------------------------------------------------------


def _params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_interface_contract_of_installed_vllm_v1() -> None:
    import vllm
    from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
    from vllm.v1.sample.logits_processor import LogitsProcessor as V1

    from ead_core.vllm_processor import EADLogitsProcessor

    ctx = f"vLLM {vllm.__version__} changed the logits-processor interface EADLogitsProcessor implements"
    assert _params(V1.__init__) == ["self", "vllm_config", "device", "is_pin_memory"], ctx
    assert _params(V1.apply) == ["self", "logits"], ctx
    assert _params(V1.update_state) == ["self", "batch_update"], ctx
    assert _params(V1.is_argmax_invariant) == ["self"], ctx
    assert V1.__abstractmethods__ <= {"__init__", "apply", "update_state", "is_argmax_invariant"}, ctx
    assert [f.name for f in fields(BatchUpdate)] == ["batch_size", "removed", "added", "moved"], ctx
    assert {m.name for m in MoveDirectionality} == {"SWAP", "UNIDIRECTIONAL"}, ctx
    assert isinstance(inspect.getattr_static(V1, "validate_params"), classmethod), ctx
    assert issubclass(EADLogitsProcessor, V1)
    assert not EADLogitsProcessor.__abstractmethods__


def test_interface_contract_of_installed_vllm_mrv2(mrv2: None) -> None:
    import vllm
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2

    from ead_core.vllm_processor import EADLogitsProcessor

    ctx = f"vLLM {vllm.__version__} changed the logits-processor interface EADLogitsProcessor implements"
    assert _params(V2.__init__) == ["self", "vllm_config", "req_states"], ctx
    assert _params(V2.apply) == ["self", "logits", "ctx"], ctx
    assert _params(V2.add_request) == ["self", "req_idx", "sampling_params"], ctx
    assert _params(V2.apply_staged_writes) == ["self"], ctx
    assert V2.__abstractmethods__ <= {"apply"}, ctx
    assert {"expanded_idx_mapping", "idx_mapping_np", "pos"} <= {f.name for f in fields(LogitsContext)}, ctx
    assert {"device", "max_num_reqs", "prompt_len"} <= {f.name for f in fields(LogitsProcRequestState)}, ctx
    assert isinstance(inspect.getattr_static(V2, "validate_params"), classmethod), ctx
    assert issubclass(EADLogitsProcessor, V2)


def test_vllm_loaders_accept_the_class_by_name_and_entry_point() -> None:
    from importlib.metadata import entry_points

    from vllm.v1.sample import logits_processor as v1_loader

    from ead_core.vllm_processor import EADLogitsProcessor

    eps = [ep for ep in entry_points(group="vllm.logits_processors") if ep.value == FQCN]
    assert eps, "the vllm.logits_processors entry point is not installed (re-run scripts/install.sh vllm)"
    assert v1_loader._load_logitsprocs_by_fqcns([FQCN]) == [EADLogitsProcessor]
    assert EADLogitsProcessor in v1_loader._load_logitsprocs_plugins()


def test_mrv2_loader_accepts_the_class_by_name_and_entry_point(mrv2: None) -> None:
    from vllm.v1.worker.gpu.sample.logits_processor import loader as v2_loader

    from ead_core.vllm_processor import EADLogitsProcessor

    assert v2_loader._load_v2_logitsprocs_by_fqcns([FQCN]) == [EADLogitsProcessor]
    assert EADLogitsProcessor in v2_loader._load_v2_logitsprocs_plugins()  # MRV2 rejects V1-only plugins


def test_model_runner_v2_runs_the_processor_or_vllm_falls_back_to_v1(tiny_model_dir: str) -> None:
    """With the processor registered, vLLM either keeps Model Runner V2 (it has the interface: 0.32) or lists
    custom logits processors as unsupported and runs the V1 runner (0.24, verl 0.9.1's pin, on GPUs too)."""
    from vllm.engine.arg_utils import EngineArgs

    from tests.vllm.conftest import has_mrv2_interface

    config = EngineArgs(
        model=tiny_model_dir, logits_processors=[FQCN], dtype="float32", enforce_eager=True, max_model_len=128
    ).create_engine_config()
    unsupported = config._get_v2_model_runner_unsupported_features()
    assert ("custom logits processors" in unsupported) is not has_mrv2_interface(), unsupported


def test_import_ead_core_does_not_import_vllm() -> None:
    import subprocess
    import sys

    code = "import sys, ead_core, ead_core.vllm_params; assert 'vllm' not in sys.modules, 'vllm imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- Model Runner V2 -------------------------------------------------------------------------------------


def test_mrv2_per_row_temperatures_with_spec_rows_plain_slots_and_origin(mrv2: None) -> None:
    from vllm import SamplingParams

    from ead_core.vllm_params import sampling_params
    from ead_core.vllm_processor import EADLogitsProcessor

    prompt_lens = [5, 7, 3, 20, 4]
    proc = EADLogitsProcessor(_config(5), _v2_state(prompt_lens))
    a = EADSchedule(tau_max=1.2, tau_min=0.3, d0=20, c=4)
    assert proc.add_request(0, sampling_params(a, 3)) is True
    assert proc.add_request(1, SamplingParams()) is False
    assert proc.add_request(2, sampling_params(FixedSchedule(0.5))) is True
    assert proc.add_request(3, sampling_params(a, 0, origin=12)) is True  # resubmitted: 8 tokens already made
    assert proc.add_request(4, sampling_params(EADSchedule.preset("reference"), 7)) is True
    proc.apply_staged_writes()

    # Slot 0 has three rows (speculative draft positions), the rest one each; rows are not in slot order.
    slots = [2, 0, 0, 0, 1, 3, 4]
    pos = [9, 14, 15, 16, 30, 25, 300]
    logits = torch.randn(len(slots), 16)
    out = proc.apply(logits.clone(), _ctx(slots, pos))

    t = [pos[i] + 1 - (12 if s == 3 else prompt_lens[s]) for i, s in enumerate(slots)]
    expected_tau = [
        0.5,
        *a.temperatures(np.array(t[1:4], dtype=np.float64), 3),
        1.0,
        a.temperature(t[5], 0),
        EADSchedule.preset("reference").temperature(t[6], 7),
    ]
    torch.testing.assert_close(out, logits / torch.tensor(expected_tau, dtype=torch.float32)[:, None])
    assert t[5] == 14  # counted from the original prompt, not from the resubmitted one (t would be 6)


def test_mrv2_slot_reuse_and_batches_without_ead(mrv2: None) -> None:
    from vllm import SamplingParams

    from ead_core.vllm_params import sampling_params
    from ead_core.vllm_processor import EADLogitsProcessor

    proc = EADLogitsProcessor(_config(3), _v2_state([4, 4, 4]))
    proc.add_request(0, sampling_params(FixedSchedule(0.25)))
    proc.add_request(1, SamplingParams())
    proc.apply_staged_writes()
    x = torch.randn(2, 16)
    got = proc.apply(x.clone(), _ctx([1, 0], [10, 11]))
    assert torch.equal(got[0], x[0])
    torch.testing.assert_close(got[1], x[1] / 0.25)
    only_plain = torch.randn(1, 16)
    before = only_plain.clone()
    assert proc.apply(only_plain, _ctx([1], [10])) is only_plain  # host-side early exit, nothing computed
    assert torch.equal(only_plain, before)

    # A new request in slot 0 fully replaces the previous occupant's schedule.
    assert proc.add_request(0, SamplingParams()) is False
    proc.apply_staged_writes()
    x = torch.randn(2, 16)
    assert torch.equal(proc.apply(x.clone(), _ctx([0, 1], [10, 11])), x)


def test_refuses_speculative_decoding() -> None:
    from ead_core.vllm_processor import EADLogitsProcessor

    with pytest.raises(ValueError, match="speculative decoding"):
        EADLogitsProcessor(_config(4, speculative=SimpleNamespace(method="ngram")), torch.device("cpu"), False)


def test_refuses_speculative_decoding_on_mrv2(mrv2: None) -> None:
    from ead_core.vllm_processor import EADLogitsProcessor

    with pytest.raises(ValueError, match="speculative decoding"):
        EADLogitsProcessor(_config(4, speculative=SimpleNamespace(method="ngram")), _v2_state([3] * 4))


def test_double_registration_guard_keeps_one_live_instance_per_engine(mrv2: None) -> None:
    from ead_core.vllm_params import sampling_params
    from ead_core.vllm_processor import EADLogitsProcessor

    cfg = _config(2)
    state = _v2_state([3, 3])
    first, second = EADLogitsProcessor(cfg, state), EADLogitsProcessor(cfg, state)  # entry point + engine arg
    other_engine = EADLogitsProcessor(_config(2), _v2_state([3, 3]))
    assert (first.is_live, second.is_live, other_engine.is_live) == (False, True, True)

    sp = sampling_params(FixedSchedule(0.5))
    assert first.add_request(0, sp) is False and second.add_request(0, sp) is True
    for p in (first, second):
        p.apply_staged_writes()
    logits = torch.randn(1, 16)
    once = second.apply(first.apply(logits.clone(), _ctx([0], [5])), _ctx([0], [5]))
    torch.testing.assert_close(once, logits / 0.5)  # divided by tau once, not tau^2
    del second
    gc.collect()
    assert not first.is_live  # the duplicate never takes over


# ---- V1 runner: randomised persistent-batch simulation --------------------------------------------------


@dataclass
class _Req:
    params: Any
    prompt: list[int]
    out: list[int] = field(default_factory=list)
    schedule: Any = None
    step: float = 0.0
    offset: int = 0

    def tau(self) -> float:
        if self.schedule is None:
            return 1.0
        return float(
            self.schedule.temperatures(np.array([len(self.out) + self.offset], dtype=np.float64), self.step)[0]
        )


def _random_request(rng: np.random.Generator) -> _Req:
    from vllm import SamplingParams

    from ead_core.vllm_params import sampling_params

    prompt = list(rng.integers(3, 100, size=int(rng.integers(1, 30))))
    kind = rng.integers(0, 4)
    if kind == 0:
        return _Req(SamplingParams(), prompt)
    if kind == 1:
        s = FixedSchedule(float(rng.uniform(0.2, 2.0)))
        return _Req(sampling_params(s), prompt, schedule=s)
    s = EADSchedule(
        tau_max=float(rng.uniform(1.0, 1.5)), tau_min=float(rng.uniform(0.1, 0.9)), d0=float(rng.uniform(2, 40)), c=3
    )
    step = int(rng.integers(0, 20))
    if kind == 2:
        return _Req(sampling_params(s, step), prompt, schedule=s, step=step)
    origin = int(rng.integers(0, len(prompt) + 1))  # resubmitted: the prompt holds len - origin old tokens
    return _Req(sampling_params(s, step, origin=origin), prompt, schedule=s, step=step, offset=len(prompt) - origin)


def test_v1_batch_changes_keep_each_slot_on_its_own_schedule() -> None:
    from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

    from ead_core.vllm_processor import EADLogitsProcessor

    rng = np.random.default_rng(0)
    capacity = 8
    proc = EADLogitsProcessor(_config(capacity), torch.device("cpu"), False)
    slots: list[_Req | None] = []
    counts = {"removed": 0, "added": 0, "moved": 0, "swapped": 0}
    for _ in range(300):
        # vLLM's order: remove; add into the lowest holes, then at the end; condense; reorder by swaps.
        occupied = [i for i, r in enumerate(slots) if r is not None]
        removed = [i for i in occupied if rng.random() < 0.15]
        for i in removed:
            slots[i] = None
        holes = sorted(removed)
        added = []
        for _ in range(int(rng.integers(0, 4))):
            if sum(r is not None for r in slots) >= capacity:
                break
            req = _random_request(rng)
            i = holes.pop(0) if holes else len(slots)
            if i == len(slots):
                slots.append(None)
            slots[i] = req
            added.append((i, req.params, req.prompt, req.out))
        moved = []
        while holes:
            last = max(i for i, r in enumerate(slots) if r is not None) if any(slots) else -1
            if holes[0] >= last:
                break
            h = holes.pop(0)
            slots[h], slots[last] = slots[last], None
            moved.append((last, h, MoveDirectionality.UNIDIRECTIONAL))
        while slots and slots[-1] is None:
            slots.pop()
        if len(slots) >= 2 and rng.random() < 0.4:
            i, j = (int(x) for x in rng.choice(len(slots), 2, replace=False))
            slots[i], slots[j] = slots[j], slots[i]
            moved.append((i, j, MoveDirectionality.SWAP))
        update = BatchUpdate(batch_size=len(slots), removed=sorted(holes, reverse=True), added=added, moved=moved)
        proc.update_state(update if (removed or added or moved) else None)
        counts["removed"] += len(removed)
        counts["added"] += len(added)
        counts["moved"] += sum(m[2] == MoveDirectionality.UNIDIRECTIONAL for m in moved)
        counts["swapped"] += sum(m[2] == MoveDirectionality.SWAP for m in moved)

        if slots:
            assert all(r is not None for r in slots)
            logits = torch.ones(len(slots), 4)
            got = proc.apply(logits)[:, 0].numpy()
            expected = np.array([1.0 / r.tau() for r in slots], dtype=np.float32)
            np.testing.assert_allclose(got, expected, rtol=1e-6)
        for r in slots:
            r.out.append(int(rng.integers(3, 100)))  # one sampled token per request per step
    assert min(counts.values()) > 20, counts  # every kind of batch change happened often


def test_v1_batch_with_only_plain_or_warmup_rows_is_not_touched() -> None:
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate

    from ead_core.vllm_params import sampling_params
    from ead_core.vllm_processor import EADLogitsProcessor

    proc = EADLogitsProcessor(_config(4), torch.device("cpu"), False)
    out: list[int] = []
    ead = sampling_params(EADSchedule(tau_max=1.2, tau_min=0.3, d0=20, c=4), 0)
    proc.update_state(BatchUpdate(2, [], [(0, SamplingParams(), [5], []), (1, ead, [5], out)], []))
    x = torch.randn(2, 8)
    before = x.clone()
    assert proc.apply(x) is x and torch.equal(x, before)  # t = 0 < c: tau = 1 everywhere, nothing divided
    out.extend([7] * 10)
    y = torch.randn(2, 8)
    z = proc.apply(y.clone())
    assert torch.equal(z[0], y[0]) and not torch.equal(z[1], y[1])
    assert proc.is_argmax_invariant()
