"""Exploratory annealed decoding as a vLLM logits processor, for both of vLLM's model runners.

``EADLogitsProcessor`` divides each logits row by the temperature tau_t that the request's schedule gives
at its response position t. Requests carry their schedule and training step as flat
``SamplingParams.extra_args`` (see ``ead_core.vllm_params``); requests without ``ead_`` keys are untouched.

One class serves both runners, because each runner's loader only checks ``issubclass`` against its own
interface and a registration (engine argument or entry point) names one class:

* V1 runner (``vllm.v1.sample.logits_processor.LogitsProcessor``; the CPU build, and GPUs without Triton):
  constructed as ``(vllm_config, device, is_pin_memory)``, told about batch changes through
  ``update_state``, ``apply(logits)`` runs after vLLM's own temperature. t is the length of the request's
  live output-token list (plus an offset when ``ead_origin`` is given).
* Model Runner V2 (``vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor``; GPUs with Triton):
  constructed as ``(vllm_config, req_states)``, told about requests through ``add_request``,
  ``apply(logits, ctx)`` runs before vLLM's temperature. t = pos + 1 - prompt_len, all on device.

Either way the per-slot parameters live in arrays (``kernel_args`` of the request's schedule: a kind code and six
numbers) and ``apply`` is vectorised through the kernels of ``ead_core.schedules.kernels``, the ones the schedule
classes use: EAD, fixed and plain rows take one ``anneal_temperature`` call as before; reverse, linear and cosine
rows their own kernel; ``entropy_target`` rows solve their temperature from this step's logits (a safeguarded Newton
search on log tau over those rows at once). Dividing by a positive number commutes with vLLM's temperature, so
the behaviour policy is softmax(z / (T * tau_t)). For ``entropy_target`` the temperature is solved on z / T on both
runners (the V1 runner applies T before custom processors; on Model Runner V2 the processor divides by the request's
T itself before solving), so the two runners sample from the same distribution.

Registration: the engine argument ``logits_processors=[EADLogitsProcessor]`` (or the string
``"ead_core.vllm_processor:EADLogitsProcessor"``) and the ``vllm.logits_processors`` entry point that
ead-harness installs. vLLM concatenates both lists without de-duplication, so an engine may construct
the class twice; a guard keeps only the instance constructed last for a given engine configuration
active, so the temperature is applied exactly once however the class was registered.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from vllm.logger import init_logger
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor

try:  # Model Runner V2's interface (vLLM >= 0.32); import-light by vLLM's design.
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2LogitsProcessor
except ImportError:  # pragma: no cover - older vLLM: the class then serves the V1 runner only
    V2LogitsProcessor = object  # type: ignore[assignment,misc]

from ead_core.schedules import kernels as K
from ead_core.schedules.kernels import anneal_temperature
from ead_core.vllm_params import EADRequest, check_sampling_options, parse_extra_args

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.sampling_params import SamplingParams
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState

logger = init_logger(__name__)

FQCN = "ead_core.vllm_processor:EADLogitsProcessor"

# Kernel arguments (code, a, b, d, c, e, f) that give tau = 1 exactly at every position: a request
# without EAD is the fixed temperature 1.0 (see EADRequest.kernel_args).
_IDENTITY = K.IDENTITY
_SAMPLING_EPS = 1e-5  # vLLM treats temperatures below this as greedy (and divides those rows by 1)
_NO_TOKENS: tuple[int, ...] = ()

# Double-registration guard: id(vllm_config) -> weak reference to the live instance for that engine.
_LIVE: dict[int, weakref.ref[EADLogitsProcessor]] = {}


def _parse_or_log(params: SamplingParams | None) -> EADRequest | None:
    """Parse a request's EAD arguments inside the engine, where raising would kill every request.

    ``validate_params`` has already refused bad arguments at admission; anything that still fails
    here (a request that bypassed the frontend) is logged and sampled without EAD.
    """
    if params is None:
        return None
    try:
        return parse_extra_args(params.extra_args)
    except ValueError as e:
        logger.error("EAD: ignoring invalid extra_args %r: %s", params.extra_args, e)
        return None


class _V1Slots:
    """Per-slot state for the V1 runner: kernel arguments by slot plus each slot's live output-token list."""

    CODE, A, B, D, C, E, F, OFFSET = range(8)
    ROWS = 8

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.device = torch.device(device)
        self.params = np.empty((self.ROWS, 0), dtype=np.float64)
        self.outs: list[Sequence[int]] = []
        self.active = np.zeros(0, dtype=bool)
        self.num_active = 0
        self.num_other = 0  # active slots whose kind is not on the EAD kernel (reverse, linear, ...)
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        old = self.params.shape[1]
        if capacity <= old:
            return
        params = np.empty((self.ROWS, capacity), dtype=np.float64)
        params[:, :old] = self.params
        params[: self.OFFSET, old:] = np.array(_IDENTITY)[:, None]
        params[self.OFFSET, old:] = 0.0
        self.params = params
        self.outs.extend([_NO_TOKENS] * (capacity - old))
        self.active = np.concatenate([self.active, np.zeros(capacity - old, dtype=bool)])

    def _clear(self, i: int) -> None:
        self.params[: self.OFFSET, i] = _IDENTITY
        self.params[self.OFFSET, i] = 0.0
        self.outs[i] = _NO_TOKENS
        self.active[i] = False

    def _set(self, i: int, req: EADRequest, prompt: Sequence[int] | None, out: Sequence[int]) -> None:
        offset = 0
        if req.origin is not None:
            if prompt is None or req.origin > len(prompt):
                logger.warning(
                    "EAD: ead_origin=%s but the prompt has %s tokens; counting positions from the prompt end",
                    req.origin,
                    None if prompt is None else len(prompt),
                )
            else:
                offset = len(prompt) - req.origin  # tokens of an earlier partial response now in the prompt
        self.params[: self.OFFSET, i] = req.kernel_args()
        self.params[self.OFFSET, i] = offset
        self.outs[i] = out  # vLLM's live list: its length is the number of tokens generated so far
        self.active[i] = True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Apply vLLM's batch changes in its documented order: removed, added, moved."""
        if batch_update is None:
            return
        for i in batch_update.removed:
            self._clear(i)
        for i, params, prompt, out in batch_update.added:
            self._grow(i + 1)
            req = _parse_or_log(params)
            if req is None:
                self._clear(i)  # an added request replaces whatever occupied the slot
            else:
                self._set(i, req, prompt, out)
        for a, b, direction in batch_update.moved:
            self._grow(max(a, b) + 1)
            if direction == MoveDirectionality.SWAP:
                self.params[:, [a, b]] = self.params[:, [b, a]]
                self.active[[a, b]] = self.active[[b, a]]
                self.outs[a], self.outs[b] = self.outs[b], self.outs[a]
            else:  # UNIDIRECTIONAL: a's request now lives at b, a is empty
                self.params[:, b] = self.params[:, a]
                self.active[b] = self.active[a]
                self.outs[b] = self.outs[a]
                self._clear(a)
        self.num_active = int(np.count_nonzero(self.active))
        self.num_other = int(np.count_nonzero(self.params[self.CODE] != K.EAD))  # empty slots hold EAD's identity

    def temperatures(self, logits: torch.Tensor) -> np.ndarray:
        """tau for each logits row (rows are slots on the V1 runner); 1.0 for plain requests."""
        num_rows = logits.shape[0]
        self._grow(num_rows)
        p = self.params[:, :num_rows]
        t = np.fromiter(map(len, self.outs[:num_rows]), dtype=np.float64, count=num_rows)
        t += p[self.OFFSET]
        if not self.num_other:  # only EAD, fixed and plain rows: one kernel call
            return anneal_temperature(t, p[self.A], p[self.B], p[self.D], p[self.C])
        tau = K.family_temperature(p[self.CODE], t, p[self.A], p[self.B], p[self.D], p[self.C])
        rows = np.flatnonzero(p[self.CODE] == K.ENTROPY)
        if rows.size:  # the logits-dependent kind: solve on this step's logits of its rows only
            z = logits[torch.from_numpy(rows).to(logits.device)]
            if z.device.type == "cpu":
                z = z.numpy()  # the numpy solver, as every CPU sampler uses it
            q = p[:, rows]
            args = (t[rows], q[self.A], q[self.B], q[self.D], q[self.C], q[self.E], q[self.F])
            tau_rows = K.entropy_target_temperature(z, *args)
            tau[rows] = tau_rows.cpu().numpy() if isinstance(tau_rows, torch.Tensor) else tau_rows
        return tau

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.num_active:
            return logits
        tau = self.temperatures(logits)
        if (tau == 1.0).all():  # every schedule row is at tau = 1 (warm-up t < c, or left alone): nothing to divide
            return logits
        tau_t = torch.from_numpy(tau.astype(np.float32))
        if logits.device.type != "cpu":
            tau_t = tau_t.to(logits.device, non_blocking=True)  # pageable source: safe to reuse at once
        return logits.div_(tau_t.unsqueeze(1))


class _V2Slots:
    """Per-slot state for Model Runner V2: kernel arguments staged on the host, mirrored on the device."""

    CODE, A, B, D, C, E, F, ORIGIN, TEMP = range(9)
    ROWS = 9

    def __init__(self, req_states: LogitsProcRequestState) -> None:
        n = req_states.max_num_reqs
        self.req_states = req_states
        self.host = np.empty((self.ROWS, n), dtype=np.float32)
        self.host[: self.ORIGIN] = np.array(_IDENTITY, dtype=np.float32)[:, None]
        self.host[self.ORIGIN] = -1.0  # -1: count from the request's prompt_len
        self.host[self.TEMP] = 1.0
        self.active = np.zeros(n, dtype=bool)
        self.device_params = torch.from_numpy(self.host.copy()).to(req_states.device)
        self.dirty = False

    def add_request(self, slot: int, params: SamplingParams) -> bool:
        req = _parse_or_log(params)
        self.host[: self.ORIGIN, slot] = _IDENTITY if req is None else req.kernel_args()
        self.host[self.ORIGIN, slot] = -1.0 if req is None or req.origin is None else req.origin
        # vLLM divides by the request's temperature T after custom processors on this runner (before them on V1):
        # entropy_target solves on logits / T so that both runners reach the same behaviour distribution.
        temperature = getattr(params, "temperature", 1.0) if req is not None else 1.0
        self.host[self.TEMP, slot] = temperature if temperature >= _SAMPLING_EPS else 1.0
        self.active[slot] = req is not None
        self.dirty = True
        return req is not None

    def apply_staged_writes(self) -> None:
        if self.dirty:
            # From pageable host memory the copy is staged before copy_ returns, so the host array can
            # be rewritten by the next add_request without racing the transfer.
            self.device_params.copy_(torch.from_numpy(self.host), non_blocking=True)
            self.dirty = False

    def temperatures(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        """tau per logits row (one row per draft token under speculative decoding), on the device."""
        slot = ctx.expanded_idx_mapping.long()
        q = self.device_params.index_select(1, slot)
        prompt_len = self.req_states.prompt_len.gpu.index_select(0, slot).to(q.dtype)
        origin = torch.where(q[self.ORIGIN] >= 0, q[self.ORIGIN], prompt_len)
        t = (ctx.pos.to(q.dtype) + 1.0 - origin).clamp_(min=0.0)  # partial-prefill rows: t < 0, discarded
        present = set(self.host[self.CODE, ctx.idx_mapping_np].tolist())  # host-side: no device sync
        if present <= {K.EAD}:
            return anneal_temperature(t, q[self.A], q[self.B], q[self.D], q[self.C])
        tau = K.family_temperature(q[self.CODE], t, q[self.A], q[self.B], q[self.D], q[self.C], present=present)
        if K.ENTROPY in present:  # all rows at once (no data-dependent shapes); other kinds' rows are discarded
            z = logits.float() / q[self.TEMP].unsqueeze(1)
            args = (t, q[self.A], q[self.B], q[self.D], q[self.C], q[self.E], q[self.F])
            tau_e = K.entropy_target_temperature(z, *args, backend="torch")
            tau = torch.where(q[self.CODE] == K.ENTROPY, tau_e.to(tau.dtype), tau)
        return tau

    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        if not self.active[ctx.idx_mapping_np].any():  # host-side check: no device sync
            return logits
        return logits.div_(self.temperatures(logits, ctx).unsqueeze(1))


class EADLogitsProcessor(V1LogitsProcessor, V2LogitsProcessor):
    """Per-token EAD temperatures for vLLM's V1 runner and Model Runner V2 (see the module docstring)."""

    def __init__(self, vllm_config: VllmConfig, *args: Any) -> None:
        """V1: ``(vllm_config, device, is_pin_memory)``; Model Runner V2: ``(vllm_config, req_states)``."""
        if getattr(vllm_config, "speculative_config", None) is not None:
            raise ValueError(
                "EADLogitsProcessor does not support speculative decoding: the V1 runner cannot apply "
                "custom logits processors to draft tokens, and the annealed target distribution under "
                "speculative decoding has not been verified on Model Runner V2. Disable speculative "
                "decoding (speculative_config) to sample with EAD."
            )
        self._v1: _V1Slots | None = None
        self._v2: _V2Slots | None = None
        if len(args) == 2:
            device, _is_pin_memory = args
            self._v1 = _V1Slots(vllm_config.scheduler_config.max_num_seqs, device)
            runner = "V1 model runner"
        elif len(args) == 1:
            self._v2 = _V2Slots(args[0])
            runner = "Model Runner V2"
        else:
            raise TypeError(
                "EADLogitsProcessor takes (vllm_config, device, is_pin_memory) on the V1 runner or "
                f"(vllm_config, req_states) on Model Runner V2, got {1 + len(args)} arguments"
            )

        self._config_ref = vllm_config  # keeps id(vllm_config) unique while this instance lives
        self._key = id(vllm_config)
        previous = _LIVE.get(self._key)
        if previous is not None and previous() is not None:
            logger.warning(
                "EADLogitsProcessor was constructed twice for one engine (the vllm.logits_processors entry "
                "point and the logits_processors engine argument both name it); only the last instance "
                "applies temperatures, so EAD is applied once."
            )
        _LIVE[self._key] = weakref.ref(self, lambda ref, key=self._key: _forget(key, ref))

        mode = getattr(getattr(vllm_config, "model_config", None), "logprobs_mode", None)
        if mode is not None and mode != "processed_logprobs":
            logger.warning(
                "EAD: logprobs_mode=%s; returned log-probs are not the behaviour policy's. Use "
                "logprobs_mode='processed_logprobs' when the log-probs feed truncated importance sampling.",
                mode,
            )
        logger.info("EAD logits processor ready on the %s", runner)

    @property
    def is_live(self) -> bool:
        """Whether this instance applies temperatures (False for a duplicate registration)."""
        ref = _LIVE.get(self._key)
        return ref is not None and ref() is self

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Refuse a bad per-request schedule at admission (vLLM turns the ValueError into an HTTP 400)."""
        if parse_extra_args(sampling_params.extra_args) is not None:
            check_sampling_options(min_p=sampling_params.min_p)

    # ---- V1 model runner -------------------------------------------------------------------------
    def is_argmax_invariant(self) -> bool:
        """Dividing a row by a positive temperature keeps its argmax: vLLM may skip it for greedy batches."""
        return True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if self._v1 is not None and self.is_live:
            self._v1.update_state(batch_update)

    # ---- Model Runner V2 ---------------------------------------------------------------------------
    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        """Set up slot ``req_idx``; True when the request needs EAD (feeds vLLM's needs_logits_processing)."""
        if self._v2 is None or not self.is_live:
            return False
        return self._v2.add_request(req_idx, sampling_params)

    def apply_staged_writes(self) -> None:
        if self._v2 is not None:
            self._v2.apply_staged_writes()

    # ---- both ----------------------------------------------------------------------------------------
    def apply(self, logits: torch.Tensor, ctx: LogitsContext | None = None) -> torch.Tensor:
        """Divide each row by its tau_t in place (V1: ``apply(logits)``; Model Runner V2: ``apply(logits, ctx)``)."""
        if not self.is_live:
            return logits
        if self._v1 is not None:
            return self._v1.apply(logits)
        if ctx is None:
            raise TypeError("Model Runner V2 calls apply(logits, ctx); ctx is missing")
        assert self._v2 is not None
        return self._v2.apply(logits, ctx)


def _forget(key: int, ref: weakref.ref[EADLogitsProcessor]) -> None:
    """Weak-reference callback: drop the guard entry of a collected instance (unless replaced since)."""
    if _LIVE.get(key) is ref:
        del _LIVE[key]


__all__ = ["FQCN", "EADLogitsProcessor"]
