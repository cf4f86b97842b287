"""Inference-time scaling study (the paper's Fig. 9) on vLLM: Maj@N, Pass@N and Worst@N against N.

One vLLM engine with ``EADLogitsProcessor`` samples, for every condition (EAD schedules at a chosen global
step, fixed temperatures), ``max(n_grid)`` responses per eval prompt in ONE ``generate`` call (``n`` parallel
samples per request, ``top_p=1``, ``top_k`` off; EAD and fixed temperatures both through the processor's
``extra_args``, so the baseline takes the same code path). The responses are verified, and for each N:

* ``maj_at_n``: majority-vote accuracy, by bootstrap WITHOUT replacement of N of the samples
  (``majority_at_k_bootstrap``), exactly (``majority_at_n`` over all samples) when N is the sample count;
* ``pass_at_n`` / ``worst_at_n``: the unbiased estimators from all samples; ``mean_at_n``: mean accuracy.

A vote needs a key that decides correctness: the task's final answer (arithmetic) or, for countdown, whose
extracted answer is the claimed value (almost always the target, right or wrong), the solution text; see
``vote`` and the ``vote_ambiguity`` statistic, which flags a key that does not decide correctness.

Metrics are logged through a ``RunLogger`` with step = N as ``infer/<label>/<metric>``; tables:
``infer_scaling`` (condition, N, maj, pass, worst, mean, maj_se), ``infer_conditions`` (per condition:
schedule, accuracy, vote diversity and ambiguity, behaviour NLL per token, response length, truncation,
timing) and ``infer_samples`` (per condition and prompt: vote keys and correctness, to recompute anything).

The same per-prompt seeds are used in every condition (common random numbers: vLLM draws the same noise
at each position, so differences between conditions come from the schedules rather than from the draw).

Conditions are compact strings (or dicts, see ``parse_condition``)::

    fixed:0.6                      fixed temperature 0.6                          label fixed_0.6
    ead:local                      the local RLVR default schedule (SamplingConfig())  label ead_local
    ead:paper@200                  EADSchedule.preset("paper") at global step 200  label ead_paper_s200
    ead:reference,tau_min=0.8      preset "reference" with an override             label ead_reference_tau_min0.8
    mine=ead:local,d0=4@50         an explicit label

    python -m experiments.studies.inference_scaling --help

This module imports neither vLLM nor verl, Hydra or MLflow at import time (vLLM only inside ``run``), so it
loads in both environments; running the study needs ``.venv-vllm``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ead_core.metrics import majority_at_k_bootstrap, majority_at_n, pass_at_k, worst_at_k
from ead_core.schedule import EADSchedule, FixedSchedule, Schedule
from experiments.local.cli import add_dataclass_options, collect
from experiments.local.config import SamplingConfig
from experiments.local.policy import SIZES
from experiments.local.tasks import EVAL_RESERVE, TASKS, Problem, Task, make_task
from experiments.local.warmstart import WarmStartConfig
from experiments.tracking.hashing import canonical, config_hash
from experiments.tracking.hashing import flat_params as flatten
from experiments.tracking.loggers import JsonlLogger, MultiLogger, RunLogger

if TYPE_CHECKING:
    from vllm import LLM

log = logging.getLogger(__name__)

MAX_N = 32  # the N grid's ceiling (the paper's Fig. 9 stops at 32)
PREFIX = "infer"
_SAFE_LABEL = re.compile(r"^[A-Za-z0-9_.\-: ]+$")  # MLflow metric-name characters, without "/"
_EAD_FIELDS = tuple(f.name for f in dataclasses.fields(EADSchedule))
_EAD_PRESETS = ("local", "paper", "reference")
VOTE_MODES = ("auto", "answer", "response")
# What Maj@N votes on when vote="auto". A vote is only meaningful if equal keys mean equal correctness.
# Arithmetic: the extracted number decides correctness. Countdown: extract_answer gives the CLAIMED value,
# and the policy nearly always claims the target (given in the prompt) whether or not its expression reaches
# it, so votes on it are degenerate; vote on the solution text instead (same text, same correctness).
_AUTO_VOTE = {"arithmetic": "answer", "countdown": "response"}


def _h(text: str) -> dict[str, str]:
    return {"help": text}


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass
class EngineConfig:
    """vLLM engine settings (defaults suit the CPU build; on a GPU use dtype auto and drop enforce_eager)."""

    dtype: str = field(default="float32", metadata=_h("model dtype"))
    enforce_eager: bool = field(default=True, metadata=_h("no CUDA graphs / compilation"))
    gpu_memory_utilization: float = field(default=0.2, metadata=_h("fraction of accelerator memory, in (0, 1]"))
    max_num_seqs: int = field(default=512, metadata=_h("concurrent sequences (n samples count individually)"))
    max_model_len: int | None = field(default=None, metadata=_h("context length (None: the model's)"))
    max_num_batched_tokens: int | None = field(default=None, metadata=_h("tokens per engine step (None: vLLM's)"))
    enable_chunked_prefill: bool | None = field(
        default=None,
        metadata=_h(
            "split prompts across steps (None: off on CPU, vLLM's default elsewhere; vLLM 0.32's CPU runner crashes "
            "with 'CPU Generator does not use offset' when a seeded request's prefill is split)"
        ),
    )
    extra: dict = field(default_factory=dict, metadata=_h("further vllm.LLM keyword arguments (JSON)"))


@dataclass
class InferenceScalingConfig:
    """The whole study. ``python -m experiments.studies.inference_scaling --help`` lists every field."""

    policy_dir: str | None = field(default=None, metadata=_h("HF policy directory (None: warm start one)"))
    task: str = field(default="countdown", metadata=_h("countdown | arithmetic"))
    task_knobs: dict = field(default_factory=dict, metadata=_h("task difficulty knobs, e.g. {n_numbers: 4}"))
    data_seed: int = field(
        default=0,
        metadata=_h(
            "seed of the eval split and the warm start (a policy's own seed: its first 256 eval prompts are held out)"
        ),
    )
    eval_prompts: int = field(default=64, metadata=_h(f"held-out eval prompts, in [1, {EVAL_RESERVE}]"))
    n_grid: list[int] = field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32],
        metadata=_h(f"N values, strictly increasing in [1, {MAX_N}]; max(n_grid) samples are drawn per prompt"),
    )
    conditions: list[str | dict] = field(
        default_factory=lambda: ["ead:local", "fixed:0.6", "fixed:1.0", "fixed:1.2"],
        metadata=_h("JSON list: 'fixed:TAU', 'ead:PRESET[,field=value...][@STEP]' (PRESET local|paper|reference)"),
    )
    max_tokens: int = field(default=16, metadata=_h("maximum response length in tokens"))
    seed: int = field(default=0, metadata=_h("sampling seed (per-prompt seeds derive from it)"))
    n_bootstrap: int = field(default=200, metadata=_h("bootstrap draws per prompt for Maj@N below the sample count"))
    vote: str = field(
        default="auto",
        metadata=_h("Maj@N votes on: 'answer' (task.extract_answer), 'response' (the whole answer text), 'auto'"),
    )
    size: str = field(default="tiny", metadata=_h("warm start: policy size (tiny | small | base)"))
    sft_steps: int = field(default=400, metadata=_h("warm start: SFT steps (400 = the RLVR runs' default)"))
    sft_lr: float = field(default=3e-3, metadata=_h("warm start: learning rate"))
    sft_batch_size: int = field(default=64, metadata=_h("warm start: batch size"))
    sft_n_train: int = field(default=20000, metadata=_h("warm start: training problems drawn from"))
    engine: EngineConfig = field(default_factory=EngineConfig)

    @property
    def samples(self) -> int:
        """Samples drawn per prompt and condition: the largest N."""
        return max(self.n_grid)

    def warmstart(self) -> WarmStartConfig:
        return WarmStartConfig(
            task=self.task,
            task_knobs=dict(self.task_knobs),
            size=self.size,
            seed=self.data_seed,
            steps=self.sft_steps,
            batch_size=self.sft_batch_size,
            lr=self.sft_lr,
            n_train=self.sft_n_train,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def hash(self) -> str:
        return config_hash(self.to_dict())

    def parsed_conditions(self) -> list[Condition]:
        """The conditions as schedules with unique, MLflow-safe labels (raises ValueError naming the entry)."""
        if not isinstance(self.conditions, list) or not self.conditions:
            raise ValueError(f"conditions must be a non-empty list, got {self.conditions!r}")
        out = [parse_condition(c, f"conditions[{i}]") for i, c in enumerate(self.conditions)]
        seen: dict[str, int] = {}
        for i, c in enumerate(out):
            if c.label in seen:
                raise ValueError(
                    f"conditions[{i}] has the label {c.label!r} of conditions[{seen[c.label]}]; "
                    "give one an explicit label ('name=ead:...' or {'label': ...})"
                )
            seen[c.label] = i
        return out

    def validate(self) -> InferenceScalingConfig:
        """Raise ValueError naming the first bad parameter and its allowed range; return self."""

        def need(ok: bool, name: str, allowed: str, value: Any) -> None:
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {value!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        need(self.task in TASKS, "task", f"one of {sorted(TASKS)}", self.task)
        need(isinstance(self.task_knobs, dict), "task_knobs", "a dict", self.task_knobs)
        try:
            make_task(self.task, **self.task_knobs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"task_knobs: {e}") from None
        need(
            is_int(self.eval_prompts) and 1 <= self.eval_prompts <= EVAL_RESERVE,
            "eval_prompts",
            f"an integer in [1, {EVAL_RESERVE}] (the eval prompts warm starts never train on)",
            self.eval_prompts,
        )
        grid = self.n_grid
        need(isinstance(grid, list) and len(grid) > 0, "n_grid", "a non-empty list of integers", grid)
        for i, n in enumerate(grid):
            need(is_int(n) and 1 <= n <= MAX_N, f"n_grid[{i}]", f"an integer in [1, {MAX_N}]", n)
        need(all(a < b for a, b in zip(grid, grid[1:])), "n_grid", "strictly increasing (sorted, no repeats)", grid)
        self.parsed_conditions()
        need(is_int(self.max_tokens) and self.max_tokens >= 1, "max_tokens", "an integer >= 1", self.max_tokens)
        need(is_int(self.seed) and 0 <= self.seed < 2**31, "seed", "an integer in [0, 2**31)", self.seed)
        need(is_int(self.data_seed) and self.data_seed >= 0, "data_seed", "an integer >= 0", self.data_seed)
        need(is_int(self.n_bootstrap) and self.n_bootstrap >= 1, "n_bootstrap", "an integer >= 1", self.n_bootstrap)
        need(self.vote in VOTE_MODES, "vote", f"one of {list(VOTE_MODES)}", self.vote)
        if self.policy_dir is None:
            need(self.size in SIZES, "size", f"one of {sorted(SIZES)}", self.size)
            for name in ("sft_steps", "sft_batch_size", "sft_n_train"):
                lo = 0 if name == "sft_steps" else 1
                v = getattr(self, name)
                need(is_int(v) and v >= lo, name, f"an integer >= {lo}", v)
            need(self.sft_lr > 0, "sft_lr", "> 0", self.sft_lr)
            need(self.sft_batch_size <= self.sft_n_train, "sft_batch_size", "<= sft_n_train", self.sft_batch_size)
        else:
            need(
                (Path(self.policy_dir) / "config.json").is_file(),
                "policy_dir",
                "a model directory with a config.json",
                self.policy_dir,
            )
        e = self.engine
        need(0 < e.gpu_memory_utilization <= 1, "engine.gpu_memory_utilization", "in (0, 1]", e.gpu_memory_utilization)
        need(is_int(e.max_num_seqs) and e.max_num_seqs >= 1, "engine.max_num_seqs", "an integer >= 1", e.max_num_seqs)
        need(
            e.max_model_len is None or (is_int(e.max_model_len) and e.max_model_len > self.max_tokens),
            "engine.max_model_len",
            f"None or an integer > max_tokens ({self.max_tokens})",
            e.max_model_len,
        )
        need(
            e.max_num_batched_tokens is None or (is_int(e.max_num_batched_tokens) and e.max_num_batched_tokens >= 1),
            "engine.max_num_batched_tokens",
            "None or an integer >= 1",
            e.max_num_batched_tokens,
        )
        need(isinstance(e.extra, dict), "engine.extra", "a dict of vllm.LLM keyword arguments", e.extra)
        return self


@dataclass(frozen=True)
class Condition:
    """One sampling condition: a schedule (EAD or fixed) evaluated at a global training step."""

    label: str
    schedule: Schedule
    step: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {**self.schedule.to_dict(), "step": self.step}


def _number(text: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(v) and not (name.endswith("d_cap") and v == math.inf):
        raise ValueError(f"{name} must be finite, got {text!r}")
    return v


def _ead_base(preset: str) -> dict[str, Any]:
    """Fields of a named EAD parameter set: 'local' = SamplingConfig()'s schedule, else EADSchedule.preset."""
    base = SamplingConfig().schedule() if preset == "local" else EADSchedule.preset(preset)
    return {k: v for k, v in base.to_dict().items() if k != "kind"}


def parse_condition(spec: str | dict, where: str = "condition") -> Condition:
    """A condition from a compact string or a dict; errors name ``where`` (e.g. ``conditions[2]``).

    Strings: ``[LABEL=]fixed:TAU`` or ``[LABEL=]ead:PRESET[,FIELD=VALUE...][@STEP]`` with PRESET ``local``
    (``SamplingConfig()``: the local runs' rescaled schedule), ``paper`` or ``reference``
    (``EADSchedule.preset``) and FIELD any ``EADSchedule`` field. Dicts: ``SamplingConfig`` fields (how an
    RLVR run names its schedule) plus optional ``label`` and ``step``.
    """
    if isinstance(spec, dict):
        d = dict(spec)
        label, step = d.pop("label", None), d.pop("step", 0)
        known = {f.name for f in dataclasses.fields(SamplingConfig)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: label, step, {sorted(known)}")
        try:
            schedule = SamplingConfig(**d).schedule()
            step = float(step)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None
        if label is None:
            label = (
                f"fixed_{schedule.tau!r}" if isinstance(schedule, FixedSchedule) else f"ead_{d.get('preset', 'paper')}"
            )
            label += f"_s{step:g}" if step and isinstance(schedule, EADSchedule) else ""
        return _finish(where, str(label), schedule, step)
    if not isinstance(spec, str):
        raise ValueError(f"{where} must be a string like 'fixed:0.6' / 'ead:local@0' or a dict, got {spec!r}")
    text = spec.strip()
    head, sep, body = text.partition(":")
    label = None
    if "=" in head:
        label, head = (s.strip() for s in head.split("=", 1))
    kind = head.strip()
    if not sep or kind not in ("ead", "fixed") or not body:
        raise ValueError(f"{where} must look like 'fixed:0.6' or 'ead:local[,field=value...][@step]', got {spec!r}")
    body, at, step_text = body.partition("@")
    if kind == "fixed":
        if at:
            raise ValueError(f"{where}: a fixed temperature takes no @step, got {spec!r}")
        try:
            schedule: Schedule = FixedSchedule(_number(body.strip(), f"{where} temperature"))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        return _finish(where, label or f"fixed_{body.strip()}", schedule, 0.0)
    preset, *pairs = (p.strip() for p in body.split(","))
    if preset not in _EAD_PRESETS:
        raise ValueError(f"{where}: EAD preset must be one of {list(_EAD_PRESETS)}, got {preset!r} in {spec!r}")
    params, auto = _ead_base(preset), f"ead_{preset}"
    for pair in pairs:
        name, eq, value = (s.strip() for s in pair.partition("="))
        if not eq or name not in _EAD_FIELDS:
            raise ValueError(f"{where}: expected FIELD=VALUE with FIELD in {list(_EAD_FIELDS)}, got {pair!r}")
        v = _number(value, f"{where} {name}")
        params[name] = int(v) if name == "c" and float(v).is_integer() else v
        auto += f"_{name}{value}"
    step = 0.0
    if at:
        step = _number(step_text.strip(), f"{where} step")
        auto += f"_s{step_text.strip()}"
    try:
        schedule = EADSchedule(**params)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return _finish(where, label or auto, schedule, step)


def _finish(where: str, label: str, schedule: Schedule, step: float) -> Condition:
    if not _SAFE_LABEL.match(label):
        raise ValueError(
            f"{where}: label {label!r} may only use letters, digits, '_', '-', '.', ':' and spaces (MLflow names)"
        )
    if not step >= 0:
        raise ValueError(f"{where}: step must be in [0, inf), got {step}")
    schedule.decay(step)  # validates the step for the schedule
    return Condition(label=label, schedule=schedule, step=float(step))


# ---------------------------------------------------------------------------------------------
# Sampling (vLLM) and scoring


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


def score(task: Task, problems: list[Problem], texts: list[list[str]]) -> tuple[np.ndarray, list[list[str | None]]]:
    """Correctness (P, S) and extracted final answers per prompt."""
    correct = np.array([[task.verify(p, t) for t in group] for p, group in zip(problems, texts)], dtype=np.float64)
    answers = [[task.extract_answer(p, t) for t in group] for p, group in zip(problems, texts)]
    return correct, answers


def vote_keys(mode: str, answers: list[list[str | None]], texts: list[list[str]]) -> list[list[str | None]]:
    """What each sample votes for: its extracted answer, or its whitespace-free text ("response").

    Samples without an extractable answer never vote (None), in either mode.
    """
    if mode == "answer":
        return answers
    return [[None if a is None else "".join(t.split()) for a, t in zip(ga, gt)] for ga, gt in zip(answers, texts)]


def vote_ambiguity(votes: list[list[Any]], correct: np.ndarray) -> float:
    """Fraction of voting samples whose key is shared with a sample of different correctness.

    Non-zero means the vote key does not determine correctness, so Maj@N depends on which carrier of the
    winning key is scored (``majority_at_n`` scores the first): a sign the key is the wrong one.
    """
    bad = total = 0
    for keys, ok in zip(votes, correct):
        seen: dict[Any, set[float]] = {}
        for k, c in zip(keys, ok):
            if k is not None:
                seen.setdefault(k, set()).add(float(c))
        bad += sum(1 for k in keys if k is not None and len(seen[k]) > 1)
        total += sum(1 for k in keys if k is not None)
    return bad / total if total else 0.0


def scaling_metrics(
    correct: np.ndarray, answers: list[list[Any]], n_grid: list[int], n_bootstrap: int = 200, seed: int = 0
) -> list[dict[str, float]]:
    """Per N: maj, pass, worst, mean (averaged over prompts) and maj_se (standard error over prompts).

    ``correct``: (P, S) 0/1 with S >= max(n_grid). Maj@N by bootstrap without replacement for N < S
    (prompt i's draws seeded ``seed + i``, the same in every condition), exactly for N = S.
    """
    P, S = correct.shape
    c = correct.sum(axis=1).astype(np.int64)
    mean = float(np.mean(c / S))
    rows = []
    for n in n_grid:
        if n == S:
            maj = np.array([majority_at_n(a, r) for a, r in zip(answers, correct)])
        else:
            maj = np.array(
                [
                    majority_at_k_bootstrap(a, r, n, n_bootstrap, seed=seed + i)
                    for i, (a, r) in enumerate(zip(answers, correct))
                ]
            )
        rows.append(
            {
                "N": n,
                "maj": float(maj.mean()),
                "pass": float(np.mean(pass_at_k(S, c, n))),
                "worst": float(np.mean(worst_at_k(S, c, n))),
                "mean": mean,
                "maj_se": float(maj.std(ddof=1) / math.sqrt(P)) if P > 1 else 0.0,
            }
        )
    return rows


def condition_stats(cond: Condition, s: Samples, correct: np.ndarray, votes: list[list[Any]]) -> dict[str, Any]:
    """What the condition's sampler did: accuracy, diversity, behaviour NLL per token, lengths, timing."""
    voted = [[a for a in group if a is not None] for group in votes]
    tokens = int(s.lengths.sum())
    return {
        "condition": cond.label,
        "schedule": json.dumps(canonical(cond.describe()), sort_keys=True),
        "mean_accuracy": float(correct.mean()),
        "answer_rate": float(np.mean([len(v) for v in voted]) / correct.shape[1]),
        "distinct_votes": float(np.mean([len(set(v)) for v in voted])),
        "vote_ambiguity": vote_ambiguity(votes, correct),
        "distinct_responses": float(np.mean([len(set(g)) for g in s.texts])),
        "nll_per_token": float(s.nll.sum() / max(tokens, 1)),
        "response_length": float(s.lengths.mean()),
        "truncated_frac": float(s.truncated.mean()),
        "generate_s": s.seconds,
        "tokens_per_s": tokens / s.seconds if s.seconds > 0 else float("nan"),
    }


def flat_params(cfg: InferenceScalingConfig) -> dict[str, Any]:
    """The config flattened to dotted keys (lists and dicts of conditions as JSON text), for params."""
    return flatten(cfg.to_dict(), leaf=lambda v: json.dumps(v) if isinstance(v, list) else v)


# ---------------------------------------------------------------------------------------------
# The job


def run(cfg: InferenceScalingConfig, logger: RunLogger, progress: bool = True) -> dict[str, Any]:
    """Run the study and log it through ``logger`` (the caller owns it and calls ``finish``).

    Returns ``{"rows": [...], "conditions": [...], "policy_dir": ...}``: the ``infer_scaling`` and
    ``infer_conditions`` tables. Steps already in the logger are skipped by it (a rerun recomputes all).
    """
    from transformers import AutoTokenizer

    cfg.validate()
    conditions = cfg.parsed_conditions()
    task = make_task(cfg.task, **cfg.task_knobs)
    problems = task.problems("eval", cfg.eval_prompts, seed=cfg.data_seed)
    if cfg.policy_dir is not None:
        policy_dir = cfg.policy_dir
    else:
        from experiments.local.warmstart import warm_start

        policy_dir = str(warm_start(cfg.warmstart(), progress=progress))
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    prompts = prompt_token_ids(tokenizer, problems)
    context = cfg.engine.max_model_len or json.loads((Path(policy_dir) / "config.json").read_text()).get(
        "max_position_embeddings"
    )
    longest = max(len(p) for p in prompts)
    if context is not None and longest + cfg.max_tokens > context:
        raise ValueError(
            f"max_tokens must be <= {context - longest} (context {context} - longest prompt {longest}), "
            f"got {cfg.max_tokens}"
        )
    S = cfg.samples
    vote = _AUTO_VOTE.get(cfg.task, "answer") if cfg.vote == "auto" else cfg.vote
    logger.log_params(
        flat_params(cfg)
        | {"config_hash": cfg.hash, "policy_dir_resolved": policy_dir, "samples_per_prompt": S, "vote_resolved": vote}
        | {f"condition.{c.label}": json.dumps(canonical(c.describe()), sort_keys=True) for c in conditions}
    )

    llm = build_engine(policy_dir, cfg.engine, cfg.seed)
    try:
        warmup(llm, prompts, S)
        results = []
        for cond in conditions:
            s = sample_condition(llm, tokenizer, prompts, cond, S, cfg.max_tokens, cfg.seed, progress)
            correct, answers = score(task, problems, s.texts)
            votes = vote_keys(vote, answers, s.texts)
            stats = condition_stats(cond, s, correct, votes)
            log.info("%s: mean accuracy %.3f, %.1f tokens/s", cond.label, stats["mean_accuracy"], stats["tokens_per_s"])
            if stats["vote_ambiguity"] > 0:
                log.warning(
                    "%s: %.1f%% of votes share their key with a sample of different correctness (vote=%r): "
                    "Maj@N then scores the first carrier of the winning key",
                    cond.label,
                    100 * stats["vote_ambiguity"],
                    vote,
                )
            results.append((cond, correct, votes, stats))
    finally:
        del llm

    rows: list[dict[str, Any]] = []
    by_n: dict[int, dict[str, float]] = {n: {} for n in cfg.n_grid}
    sample_rows: list[dict[str, Any]] = []
    for cond, correct, votes, _ in results:
        for r in scaling_metrics(correct, votes, cfg.n_grid, cfg.n_bootstrap, seed=cfg.seed):
            rows.append({"condition": cond.label, **r})
            base = f"{PREFIX}/{cond.label}"
            by_n[r["N"]].update(
                {
                    f"{base}/maj_at_n": r["maj"],
                    f"{base}/pass_at_n": r["pass"],
                    f"{base}/worst_at_n": r["worst"],
                    f"{base}/mean_at_n": r["mean"],
                }
            )
        sample_rows += [
            {"condition": cond.label, "prompt": p.prompt, "votes": v, "correct": c.tolist()}
            for p, v, c in zip(problems, votes, correct)
        ]
    for n in cfg.n_grid:
        logger.log_metrics(by_n[n], step=n)
    cond_rows = [stats for *_, stats in results]
    logger.log_table("infer_scaling", rows)
    logger.log_table("infer_conditions", cond_rows)
    logger.log_table("infer_samples", sample_rows)
    return {"rows": rows, "conditions": cond_rows, "policy_dir": policy_dir}


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.studies.inference_scaling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run-dir", default=None, help="output directory (default: runs/infer-<config hash>)")
    p.add_argument("--config", default=None, help="JSON file with (part of) the config; flags override it")
    p.add_argument(
        "--mlflow-uri",
        default=None,
        help="also log to MLflow (needs mlflow; .venv-vllm lacks it: rerun a finished run dir from .venv to publish)",
    )
    p.add_argument("--mlflow-experiment", default="ead-inference-scaling", help="MLflow experiment name")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_dataclass_options(p, InferenceScalingConfig)
    return p


def config_from_args(ns: argparse.Namespace) -> InferenceScalingConfig:
    """The config from --config JSON and flags (flags win; nested engine options merge)."""
    data: dict[str, Any] = json.loads(Path(ns.config).read_text()) if ns.config else {}
    skip = ("run_dir", "config", "mlflow_uri", "mlflow_experiment", "quiet")
    for key, value in collect(ns, skip=skip).items():
        data[key] = {**data.get(key, {}), **value} if key == "engine" else value
    known = {f.name for f in dataclasses.fields(InferenceScalingConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}")
    engine = data.pop("engine", {})
    unknown = sorted(set(engine) - {f.name for f in dataclasses.fields(EngineConfig)})
    if unknown:
        raise ValueError(f"unknown config key(s) {[f'engine.{k}' for k in unknown]}")
    return InferenceScalingConfig(**data, engine=EngineConfig(**engine))


BACKEND = "vllm_inference_scaling"  # the MLflow ``backend`` tag of these runs


def open_mlflow_run(
    uri: str, experiment: str, cfg: InferenceScalingConfig, run_dir: Path, *, finished_ok: bool
) -> tuple[Any, bool] | None:
    """``(MlflowRunLogger, already_finished)`` for this config's run in ``experiment``, or None without MLflow.

    Follows experiments.tracking's conventions: a run is identified by the tags ``config_hash`` and ``backend``, and
    the newest run of the hash is continued unless it is FINISHED. A FINISHED one is returned as such when
    ``finished_ok`` (the run directory is finished too: nothing to log); otherwise a fresh run is opened.
    ``mlflow`` is not in ``.venv-vllm``: run the study there, then publish the finished run directory from
    ``.venv`` with the same command plus ``--mlflow-uri``.
    """
    try:
        import mlflow  # noqa: F401

        from experiments import tracking
    except ImportError as e:
        log.warning("--mlflow-uri given but MLflow is not importable here (%s): logging JSONL only", e)
        return None
    uri = tracking.resolve_tracking_uri(uri, Path.cwd())
    client = tracking.make_client(uri)
    experiment_id = tracking.ensure_experiment(client, experiment, uri)
    latest = tracking.latest_run(client, experiment_id, cfg.hash, BACKEND)
    if latest is not None and latest.info.status == tracking.FINISHED:
        if finished_ok:
            return tracking.MlflowRunLogger(client, latest.info.run_id), True
        latest = None
    tags = {
        "config_hash": cfg.hash,
        "backend": BACKEND,
        "git_commit": tracking.git_commit(),
        "host": tracking.host(),
        "run_dir": str(run_dir.resolve()),
    }
    if latest is not None:
        run_id = latest.info.run_id
        client.update_run(run_id, status=tracking.RUNNING)
    else:
        run_id = client.create_run(experiment_id, run_name=run_dir.name, tags=tags).info.run_id
    ml = tracking.MlflowRunLogger(client, run_id)
    ml.set_tags(tags)
    return ml, False


def publish_run_dir(run_dir: Path, ml: Any) -> None:
    """Log a finished run directory (params, metrics by step, tables) into an MLflow run and finish it."""
    jsonl = JsonlLogger(run_dir)
    ml.log_params(json.loads((run_dir / "params.json").read_text()))
    for rec in jsonl.records():
        ml.log_metrics({k: v for k, v in rec.items() if k != "step"}, rec["step"])
    for path in sorted((run_dir / "tables").glob("*.jsonl")):
        ml.log_table(path.stem, [json.loads(line) for line in path.read_text().splitlines() if line.strip()])
    ml.set_tags({"end_reason": "completed"})
    ml.finish("FINISHED")


def format_table(rows: list[dict[str, Any]]) -> str:
    """The infer_scaling rows as aligned text."""
    lines = [f"{'condition':<24} {'N':>3} {'maj':>7} {'pass':>7} {'worst':>7} {'mean':>7}"]
    lines += [
        f"{r['condition']:<24} {r['N']:>3} {r['maj']:>7.4f} {r['pass']:>7.4f} {r['worst']:>7.4f} {r['mean']:>7.4f}"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = config_from_args(ns).validate()
    except (TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir = Path(ns.run_dir) if ns.run_dir else Path("runs") / f"infer-{cfg.hash}"
    table = run_dir / "tables" / "infer_scaling.jsonl"
    status = run_dir / "status"
    finished = status.exists() and status.read_text().strip() == "FINISHED" and table.exists()
    opened = None
    if ns.mlflow_uri:
        opened = open_mlflow_run(ns.mlflow_uri, ns.mlflow_experiment, cfg, run_dir, finished_ok=finished)
    ml, ml_finished = opened if opened is not None else (None, True)
    if finished:
        if ml is not None and not ml_finished:
            publish_run_dir(run_dir, ml)
            print(f"published {run_dir} to MLflow run {ml.run_id}")
        print(f"already finished: {run_dir}")
        print(format_table([json.loads(line) for line in table.read_text().splitlines()]))
        return 0
    # One in-process engine (no engine-core subprocess): simpler to stop, and the CPU build gains nothing from it.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    jsonl = JsonlLogger(run_dir)
    logger: RunLogger = MultiLogger(jsonl, ml) if ml is not None else jsonl
    guard = contextlib.nullcontext()
    if ml is not None:
        from experiments.tracking import RunEndGuard

        guard = RunEndGuard(ml)  # marks the MLflow run KILLED / FAILED with the reason
    try:
        with guard:
            out = run(cfg, logger, progress=not ns.quiet)
    except KeyboardInterrupt:
        jsonl.finish("KILLED")
        raise
    except BaseException:
        jsonl.finish("FAILED")
        raise
    if ml is not None:
        ml.set_tags({"end_reason": "completed"})
    logger.finish("FINISHED")
    print(format_table(out["rows"]))
    print(f"run dir: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
