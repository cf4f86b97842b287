"""The EAD agent loop against verl's real single-turn agent loop, with a stand-in LLM server client.

The loop is built the way verl's ``AgentLoopWorker._run_agent_loop`` builds it: the registry entry from
our ``agent_loop.yaml`` (read with OmegaConf.load, as verl does) instantiated by ``hydra.utils.instantiate``
with the composed trainer config. The stand-in subclasses verl's ``LLMServerClient`` and answers
``generate`` with fixed tokens, recording what it was sent: it stands in for the vLLM server, which cannot
run here. The recorded ``extra_args`` are parsed with the vLLM processor's own parser
(``ead_core.vllm_params.parse_extra_args``), so the test checks what the processor would apply.
"""

from __future__ import annotations

import asyncio

import hydra
import numpy as np
import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.rollout.llm_server import FullyAsyncLLMServerClient, LLMServerClient
from verl.workers.rollout.replica import TokenOutput

from ead_core.schedule import EADSchedule, FixedSchedule
from ead_core.vllm_params import parse_extra_args
from experiments.verl.agent_loop import EADAgentLoop, mean_temperature
from experiments.verl.compose import compose_and_validate
from experiments.verl.config import preset

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

RESPONSE = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 2]
PROMPT = [{"role": "system", "content": "w1 w2"}, {"role": "user", "content": "w3 w4 w5"}]
TRAIN_PARAMS = dict(temperature=1.0, top_p=1.0, top_k=-1, repetition_penalty=1.0, logprobs=True)


class StandInServerClient(LLMServerClient):
    """verl's LLM server client interface; returns fixed tokens and records every request."""

    def __init__(self, config, tokens=RESPONSE, abort_after: int | None = None, **kwargs):
        super().__init__(config=config, **kwargs)
        self.tokens, self.abort_after, self.calls = list(tokens), abort_after, []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        self.calls.append({"prompt_ids": list(prompt_ids), "sampling_params": dict(sampling_params)})
        if self.abort_after is not None and len(self.calls) == 1:  # aborted mid-way (a weight sync)
            part = self.tokens[: self.abort_after]
            return TokenOutput(token_ids=part, log_probs=[-0.5] * len(part), stop_reason="aborted")
        rest = self.tokens[self.abort_after or 0 :] if len(self.calls) > 1 else self.tokens
        return TokenOutput(token_ids=rest, log_probs=[-0.5] * len(rest), stop_reason="completed")


class StandInAsyncClient(FullyAsyncLLMServerClient, StandInServerClient):
    """verl's async-mode client (resubmits prompt + partial output after an abort) over the stand-in."""


@pytest.fixture(scope="module")
def configs():
    ead = preset("smoke")
    fixed = preset("smoke", **{"sampling.kind": "fixed", "sampling.tau": 0.6})
    return {"ead": (ead, compose_and_validate(ead)), "fixed": (fixed, compose_and_validate(fixed))}


def _run(c, tokenizer, client, sampling_params=TRAIN_PARAMS, **kwargs):
    entries = OmegaConf.load(c.actor_rollout_ref.rollout.agent.agent_loop_config_path)
    entry = {e.name: e for e in entries}[c.actor_rollout_ref.rollout.agent.default_agent_loop]
    row = {"raw_prompt": PROMPT, "uid": "u0", "session_id": 0, "index": 0, "data_source": "numina_math"}

    async def go():
        loop = hydra.utils.instantiate(
            config=entry,
            trainer_config=DictConfigWrap(config=c),
            server_manager=client,
            tokenizer=tokenizer,
            processor=None,
            hf_model_type=None,
            dataset_cls=RLHFDataset,
            data_config=DictConfigWrap(c.data),
            tools=ToolListWrap([]),
        )
        assert isinstance(loop, EADAgentLoop)
        out = await loop.run(dict(sampling_params), **{**row, **kwargs})
        assert loop.server_manager is client  # the wrapper is removed after the run
        return out

    return asyncio.run(go())


@pytest.mark.parametrize("step", [0, 3, 50])
def test_stamps_schedule_step_aware_decay_and_origin(configs, chat_tokenizer, step):
    cfg, c = configs["ead"]
    client = StandInServerClient(c)
    out = _run(c, chat_tokenizer, client, global_steps=step)
    assert len(client.calls) == 1
    sent = client.calls[0]
    req = parse_extra_args(sent["sampling_params"]["extra_args"])
    assert req.schedule == cfg.schedule() and isinstance(req.schedule, EADSchedule)
    assert req.step == step
    _code, tau_max, tau_min, d, c_, *_ = req.kernel_args()  # (code, a, b, d, c, e, f)
    assert d == cfg.schedule().decay(step) == 20 * (25 + 5 * step)  # d_s grows with the step
    assert req.origin == len(sent["prompt_ids"]) == len(out.prompt_ids)
    # verl's own sampling parameters are passed through untouched.
    assert {k: v for k, v in sent["sampling_params"].items() if k != "extra_args"} == TRAIN_PARAMS
    # verl's single-turn output: the stand-in's tokens and log-probs, plus our bookkeeping fields.
    assert out.response_ids == RESPONSE and out.response_logprobs == [-0.5] * len(RESPONSE)
    assert out.extra_fields["ead_step"] == step and out.extra_fields["ead_sampler"] == "own"
    assert out.extra_fields["ead_decay"] == d
    assert out.extra_fields["ead_tau_mean"] == pytest.approx(
        float(np.mean(cfg.schedule().temperatures(np.arange(len(RESPONSE)), step)))
    )


def test_decay_grows_across_steps(configs, chat_tokenizer):
    _, c = configs["ead"]
    decays = []
    for step in (0, 1, 10):
        client = StandInServerClient(c)
        _run(c, chat_tokenizer, client, global_steps=step)
        decays.append(parse_extra_args(client.calls[0]["sampling_params"]["extra_args"]).kernel_args()[3])  # d
    assert decays == [500.0, 600.0, 1500.0]


def test_fixed_temperature_is_stamped_through_the_same_path(configs, chat_tokenizer):
    cfg, c = configs["fixed"]
    client = StandInServerClient(c)
    out = _run(c, chat_tokenizer, client, global_steps=4)
    req = parse_extra_args(client.calls[0]["sampling_params"]["extra_args"])
    assert req.schedule == FixedSchedule(0.6) and req.kernel_args()[2] == 0.6  # the EAD curve's floor
    assert out.extra_fields["ead_tau_mean"] == pytest.approx(0.6)


def test_resubmission_after_abort_keeps_the_original_prompt_length(configs, chat_tokenizer):
    """verl's async client resubmits prompt + partial output; t must keep counting from the original prompt."""
    _, c = configs["ead"]
    client = StandInAsyncClient(c, abort_after=5)
    out = _run(c, chat_tokenizer, client, global_steps=2)
    first, second = client.calls
    origin = len(first["prompt_ids"])
    assert second["prompt_ids"] == first["prompt_ids"] + RESPONSE[:5]
    for call in (first, second):
        assert parse_extra_args(call["sampling_params"]["extra_args"]).origin == origin
        assert parse_extra_args(call["sampling_params"]["extra_args"]).step == 2
    assert out.response_ids == RESPONSE


@pytest.mark.parametrize(
    ("sampler", "temperature", "tau_mean"),
    [("t1", 1.0, 1.0), ("greedy", 0.0, None)],
)
def test_validation_samplers_t1_and_greedy_stamp_nothing(configs, chat_tokenizer, sampler, temperature, tau_mean):
    _, c = configs["ead"]
    client = StandInServerClient(c)
    out = _run(c, chat_tokenizer, client, global_steps=7, ead_sampler=sampler)
    sent = client.calls[0]["sampling_params"]
    assert "extra_args" not in sent or parse_extra_args(sent["extra_args"]) is None
    assert sent["temperature"] == temperature
    assert out.extra_fields["ead_sampler"] == sampler and out.extra_fields["ead_tau_mean"] == tau_mean


def test_own_sampler_in_validation_uses_the_schedule(configs, chat_tokenizer):
    cfg, c = configs["ead"]
    client = StandInServerClient(c)
    _run(c, chat_tokenizer, client, global_steps=0, ead_sampler="own")
    assert parse_extra_args(client.calls[0]["sampling_params"]["extra_args"]).schedule == cfg.schedule()


def test_greedy_request_from_verl_is_not_stamped(configs, chat_tokenizer):
    """verl's default validation is greedy (temperature 0): a temperature is meaningless there."""
    _, c = configs["ead"]
    client = StandInServerClient(c)
    _run(c, chat_tokenizer, client, sampling_params={**TRAIN_PARAMS, "temperature": 0.0}, global_steps=1)
    assert "extra_args" not in client.calls[0]["sampling_params"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({}, "global_steps"), ({"global_steps": 1, "ead_sampler": "hot"}, "ead_sampler must be one of")],
)
def test_bad_inputs_raise(configs, chat_tokenizer, kwargs, match):
    _, c = configs["ead"]
    with pytest.raises(ValueError, match=match):
        _run(c, chat_tokenizer, StandInServerClient(c), **kwargs)


def test_missing_ead_block_is_an_error(configs, chat_tokenizer):
    _, c = configs["ead"]
    bare = OmegaConf.masked_copy(c, [k for k in c if k != "ead"])
    # raised in the loop's constructor; hydra.utils.instantiate (verl's way of building it) wraps it
    with pytest.raises(InstantiationException, match="no ead.schedule block"):
        _run(bare, chat_tokenizer, StandInServerClient(bare), global_steps=1)


def test_mean_temperature_helper():
    s = EADSchedule.preset("reference")
    assert mean_temperature(s, 0, 10) == 1.0  # t < c = 10: tau = 1
    assert mean_temperature(s, 0, 0) != mean_temperature(s, 0, 0)  # NaN for an empty response
