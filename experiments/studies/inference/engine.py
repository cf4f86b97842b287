"""Sampling on vLLM: the engine with the EAD processor, one condition's samples in one ``generate`` call."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ead_core.schedule import FixedSchedule
from experiments.local.tasks import Problem
from experiments.studies.inference.conditions import Condition
from experiments.studies.inference.config import EngineConfig

if TYPE_CHECKING:
    from vllm import LLM

log = logging.getLogger(__name__)


@dataclass
class Samples:
    """One condition's responses, grouped by prompt: texts[i][j] is prompt i's j-th sample."""

    texts: list[list[str]]
    lengths: np.ndarray  # (P, S) generated tokens (EOS included)
    nll: np.ndarray  # (P, S) -sum of behaviour log-probs (processed: after T * tau_t)
    truncated: np.ndarray  # (P, S) bool: stopped by max_tokens
    seconds: float


def prompt_token_ids(tokenizer: Any, problems: list[Problem]) -> list[list[int]]:
    """BOS + the prompt's tokens, as the local sampler and the warm start encode prompts."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return [bos + tokenizer.encode(p.prompt, add_special_tokens=False) for p in problems]


def build_engine(policy_dir: str, engine: EngineConfig, seed: int) -> LLM:
    """A vLLM engine with the EAD processor and processed (behaviour) log-probs."""
    from vllm import LLM
    from vllm.platforms import current_platform

    from ead_core.vllm_processor import FQCN

    kwargs: dict[str, Any] = dict(
        model=policy_dir,
        dtype=engine.dtype,
        enforce_eager=engine.enforce_eager,
        gpu_memory_utilization=engine.gpu_memory_utilization,
        max_num_seqs=engine.max_num_seqs,
        seed=seed,
        logits_processors=[FQCN],
        logprobs_mode="processed_logprobs",
    )
    for name in ("max_model_len", "max_num_batched_tokens", "enable_chunked_prefill"):
        if getattr(engine, name) is not None:
            kwargs[name] = getattr(engine, name)
    if engine.enable_chunked_prefill is None and current_platform.is_cpu():
        # Every request here is seeded. When a prefill is split, the V1 runner rewinds the request's generator
        # by an offset, which only CUDA generators have: on CPU the engine dies. Unsplit prefills avoid it.
        log.info("CPU: chunked prefill off (seeded requests; see EngineConfig.enable_chunked_prefill)")
        kwargs["enable_chunked_prefill"] = False
    return LLM(**{**kwargs, **engine.extra})


def sample_condition(
    llm: LLM,
    tokenizer: Any,
    prompts: list[list[int]],
    cond: Condition,
    samples: int,
    max_tokens: int,
    seed: int,
    progress: bool = False,
) -> Samples:
    """``samples`` responses per prompt under ``cond`` in one ``generate`` call (n parallel samples each).

    Prompt i gets seed ``seed * 10**6 + i * 64`` (its n children use that + 0..n-1), identical in every
    condition. Responses are decoded with the policy's tokenizer, special tokens dropped.
    """
    from vllm.inputs import TokensPrompt

    from ead_core.vllm_params import sampling_params

    params = [
        sampling_params(
            cond.schedule,
            cond.step,
            n=samples,
            max_tokens=max_tokens,
            seed=seed * 10**6 + i * 64,
            detokenize=False,
        )
        for i in range(len(prompts))
    ]
    t0 = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=progress)
    seconds = time.perf_counter() - t0
    P = len(prompts)
    lengths, nll = np.zeros((P, samples), np.int64), np.zeros((P, samples))
    truncated = np.zeros((P, samples), bool)
    ids: list[list[int]] = []
    for i, out in enumerate(outs):
        if len(out.outputs) != samples:
            raise RuntimeError(f"vLLM returned {len(out.outputs)} samples for prompt {i}, expected {samples}")
        for j, o in enumerate(sorted(out.outputs, key=lambda o: o.index)):
            ids.append(list(o.token_ids))
            lengths[i, j] = len(o.token_ids)
            lp = o.cumulative_logprob
            if lp is None:  # older vLLM: sum the sampled tokens' log-probs
                lp = sum(d[t].logprob for t, d in zip(o.token_ids, o.logprobs or []))
            nll[i, j] = -lp
            truncated[i, j] = o.finish_reason == "length"
    flat = tokenizer.batch_decode(ids, skip_special_tokens=True)
    texts = [flat[i * samples : (i + 1) * samples] for i in range(P)]
    return Samples(texts=texts, lengths=lengths, nll=nll, truncated=truncated, seconds=seconds)


def warmup(llm: LLM, prompts: list[list[int]], samples: int) -> None:
    """A short run of the study's own shape (every prompt, n samples, through the processor), so that the first
    condition's timing does not include the engine's first-batch costs."""
    from vllm.inputs import TokensPrompt

    from ead_core.vllm_params import sampling_params

    sp = sampling_params(FixedSchedule(1.0), n=samples, max_tokens=4, seed=0, detokenize=False)
    llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sp, use_tqdm=False)
