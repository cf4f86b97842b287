"""The EAD agent loop: verl's own single-turn agent loop, with the run's schedule stamped on every request.

verl 0.9.1 has no config key for per-request sampling arguments; its agent loops are the supported hook.
``EADAgentLoop`` subclasses verl's ``SingleTurnAgentLoop`` and changes one thing: while it runs, the LLM
server client it talks to is wrapped so that each ``generate`` call carries, in
``sampling_params["extra_args"]``, the flat keys of ``ead_core.vllm_params.schedule_to_extra_args``:

* the schedule of the run (the ``ead.schedule`` block of the trainer config, written by
  ``experiments.verl.overrides``), so the vLLM processor computes tau_t per token;
* ``ead_step`` = the global training step of the prompt (``kwargs["global_steps"]``, put on every sample
  by verl's V1 trainer: 0 for the validation before training, s during step s), so d_s = decay(s) grows;
* ``ead_origin`` = the length of the original prompt, so a request that verl's async client resubmits as
  prompt + partial output after an abort keeps counting t from the original prompt.

Registered through ``rollout.agent.agent_loop_config_path`` (``agent_loop.yaml``: name ``ead_single_turn``)
and selected with ``rollout.agent.default_agent_loop``. A dataset row may carry an ``ead_sampler`` column:
``own`` (default: the run's schedule), ``t1`` (nothing stamped: plain temperature 1.0) or ``greedy``
(temperature 0); the MATH-500 validation file holds one copy per sampler, so one verl validation reports
the run's own sampler, a common T = 1.0 sampler and greedy decoding side by side.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

from ead_core.schedule import Schedule, schedule_from_dict
from ead_core.vllm_params import PREFIX, schedule_to_extra_args

logger = logging.getLogger(__name__)

SAMPLERS = ("own", "t1", "greedy")
SAMPLER_KEY = "ead_sampler"


def schedule_from_trainer_config(config: DictConfig) -> Schedule:
    """The run's schedule from the trainer config's ``ead.schedule`` block (a ``schedule.to_dict()``)."""
    block = config.get("ead") if config is not None else None
    if block is None or block.get("schedule") is None:
        raise ValueError(
            "the trainer config has no ead.schedule block: launch verl through experiments.verl "
            "(its overrides add +ead.schedule.* next to the agent loop)"
        )
    return schedule_from_dict(OmegaConf.to_container(block.schedule, resolve=True))


def sampler_of(kwargs: dict[str, Any]) -> str:
    """The row's ``ead_sampler`` (``own`` when the column is absent, as in the training data)."""
    value = kwargs.get(SAMPLER_KEY)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "own"
    value = str(value)
    if value not in SAMPLERS:
        raise ValueError(f"{SAMPLER_KEY} must be one of {list(SAMPLERS)}, got {value!r}")
    return value


def step_of(kwargs: dict[str, Any]) -> int:
    """The global training step verl's V1 trainer attaches to every sample (``global_steps``)."""
    if kwargs.get("global_steps") is None:
        raise ValueError(
            "EADAgentLoop needs kwargs['global_steps'] (verl's V1 trainer, trainer.use_v1=true, puts it on every "
            "sample); without it d_s would silently stay at d0"
        )
    step = int(np.asarray(kwargs["global_steps"]).item())
    if step < 0:
        raise ValueError(f"global_steps must be >= 0, got {step}")
    return step


def mean_temperature(schedule: Schedule, step: int, length: int) -> float:
    """Mean tau over response positions 0 .. length-1 (the tokens one request sampled); NaN if empty."""
    if length <= 0:
        return float("nan")
    return float(np.mean(schedule.temperatures(np.arange(length, dtype=np.float64), step)))


class ScheduleStampingClient:
    """Wraps verl's LLM server client; ``generate`` adds the EAD ``extra_args`` (schedule, step, origin).

    The original prompt length is taken from the first call and kept for later calls of the same
    trajectory. Every other attribute is the wrapped client's.
    """

    def __init__(self, inner: Any, extra_args: dict[str, Any]) -> None:
        self._inner = inner
        self._extra_args = dict(extra_args)
        self.origin: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def generate(self, request_id: Any, *, prompt_ids: list[int], sampling_params: dict[str, Any], **kwargs):
        if self.origin is None:
            self.origin = len(prompt_ids)
        params = dict(sampling_params)
        extra = dict(params.get("extra_args") or {})
        clash = sorted(k for k in extra if isinstance(k, str) and k.startswith(PREFIX))
        if clash:
            raise ValueError(f"sampling_params['extra_args'] already holds EAD key(s) {clash}")
        extra.update(self._extra_args)
        extra["ead_origin"] = self.origin
        params["extra_args"] = extra
        return await self._inner.generate(request_id, prompt_ids=prompt_ids, sampling_params=params, **kwargs)


class EADAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn agent loop with the run's EAD schedule (or fixed temperature) on every request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schedule = schedule_from_trainer_config(self.config)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        sampler = sampler_of(kwargs)
        step = step_of(kwargs)
        params = dict(sampling_params)
        if sampler == "greedy":
            params.update(temperature=0.0, top_p=1.0, top_k=-1)
        stamp = sampler == "own" and float(params.get("temperature", 1.0)) > 0
        if stamp:
            inner = self.server_manager
            self.server_manager = ScheduleStampingClient(inner, schedule_to_extra_args(self.schedule, step))
            try:
                output = await super().run(params, **kwargs)
            finally:
                self.server_manager = inner
        else:
            output = await super().run(params, **kwargs)

        length = int(sum(output.response_mask))
        if stamp:
            tau_mean = mean_temperature(self.schedule, step, length)
        elif sampler == "t1":
            tau_mean = 1.0
        else:
            tau_mean = None  # greedy: no temperature
        output.extra_fields.update(
            {
                SAMPLER_KEY: sampler,
                "ead_step": step,
                "ead_decay": float(self.schedule.decay(step)) if stamp else None,
                "ead_tau_mean": tau_mean,
            }
        )
        return output
