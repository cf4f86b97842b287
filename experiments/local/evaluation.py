"""Held-out evaluation with k samples per prompt: Pass@k, Worst@k, Best@k, Mean@k (unbiased), the
verl-style bootstrap variants (``boot_`` names), Maj@k, greedy accuracy and entropy by position."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ead_core.metrics import correctness_metrics, entropy_by_position
from ead_core.schedule import FixedSchedule, Schedule
from experiments.local.rollout import Rollout, group_prompts, sample, sequence_logprobs
from experiments.local.tasks import Problem, Task

log = logging.getLogger(__name__)

_DECODER_STREAM = {"eval_t1": 0, "eval": 1}  # each decoder's random stream within an evaluation's seed
# Bump when what a common decoder computes changes (sampler, metrics, counts): shared entries of older code are unused.
SHARED_EVAL_VERSION = 1


def own_is_common_decoder(schedule: Schedule) -> bool:
    """A temperature-1.0 run's own sampler is the common decoder ``eval_t1``: its evaluation samples once for both."""
    return isinstance(schedule, FixedSchedule) and schedule.tau == 1.0


def sample_groups(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    n: int,
    schedule: Schedule,
    step: int,
    max_new_tokens: int,
    generator: torch.Generator,
    chunk_rows: int = 512,
) -> list[Rollout]:
    """n samples per problem, in chunks of at most ``chunk_rows`` rows (rows grouped by problem)."""
    per_chunk = max(1, chunk_rows // n)
    out = []
    for i in range(0, len(problems), per_chunk):
        rows, _ = group_prompts([p.prompt for p in problems[i : i + per_chunk]], n)
        out.append(sample(model, tokenizer, rows, schedule, step, max_new_tokens, generator))
    return out


def score(task: Task, problems: Sequence[Problem], texts: Sequence[str], n: int) -> tuple[np.ndarray, list]:
    """Correctness (P, n) and extracted answers per problem for grouped texts."""
    correct = np.zeros((len(problems), n))
    answers = []
    for i, p in enumerate(problems):
        group = texts[i * n : (i + 1) * n]
        correct[i] = [task.verify(p, t) for t in group]
        answers.append([task.extract_answer(p, t) for t in group])
    return correct, answers


def k_metrics(correct: np.ndarray, answers: list[list], k: int, prefix: str, seed: int = 0) -> dict[str, float]:
    """``ead_core.correctness_metrics`` of a (P, n) correctness matrix under ``prefix/``."""
    return {f"{prefix}/{name}": v for name, v in correctness_metrics(correct, k, answers, seed=seed).items()}


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    problems: Sequence[Problem],
    schedule: Schedule,
    step: int,
    max_new_tokens: int,
    seed: int,
    k: int = 16,
    plain_t1: bool = True,
    greedy: bool = True,
    shared: tuple[Path, str] | None = None,
) -> tuple[dict[str, float], dict[str, list[dict]]]:
    """Metrics under ``eval/`` (the run's own schedule), ``eval_t1/`` (temperature 1.0, the same decoder for every
    condition) and ``eval_greedy/accuracy``, and two tables: ``entropy_by_position`` of the run's own samples and
    ``eval_counts`` (per decoder and prompt: correct samples out of n), from which analysis resamples prompts.

    Each decoder draws from its own generator seeded by (``seed``, decoder), so the common decoder ``eval_t1`` of
    runs with the same seed and policy draws the same random numbers whatever their own sampler (common random
    numbers: the paired differences of the verdict carry no sampling noise of their own at step 0). A run whose own
    schedule is temperature 1.0 scores one set of samples for both ``eval`` and ``eval_t1``.

    ``shared`` = (directory, ``shared_eval_key(...)``): the common decoders (``eval_t1`` and greedy), which do not
    depend on the run's sampler, are read from or written to that directory, so runs that evaluate the same weights
    on the same problems with the same seed (every condition of a seed at step 0) compute them once."""
    metrics: dict[str, float] = {}
    t1_is_own = own_is_common_decoder(schedule)
    decoders = ([("eval_t1", FixedSchedule(1.0))] if plain_t1 else []) + [("eval", schedule)]
    table: list[dict] = []
    counts: list[dict] = []
    chunks: list[Rollout] = []

    def t1_generator() -> torch.Generator:
        return torch.Generator(device=model.device).manual_seed(
            int(np.random.default_rng([seed, _DECODER_STREAM["eval_t1"]]).integers(2**62))
        )

    def t1() -> tuple[dict[str, float], list[dict]]:
        nonlocal chunks
        m, rows, chunks = _sampled(
            model, tokenizer, task, problems, FixedSchedule(1.0), step, max_new_tokens, t1_generator(), k, "eval_t1",
            seed,
        )  # fmt: skip
        return m, rows

    def greedy_decoder() -> tuple[dict[str, float], list[dict]]:
        r = sample(model, tokenizer, [p.prompt for p in problems], schedule, step, max_new_tokens, greedy=True)
        ok = [task.verify(p, t) for p, t in zip(problems, r.texts)]
        rows = [{"decoder": "eval_greedy", "prompt": i, "correct": int(c), "n": 1} for i, c in enumerate(ok)]
        return {"eval_greedy/accuracy": float(np.mean(ok))}, rows

    common = {"eval_t1": t1, "eval_greedy": greedy_decoder}
    for prefix, sched in decoders:
        if prefix == "eval" and plain_t1 and t1_is_own:
            metrics.update({"eval/" + k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("eval_t1/")})
            counts += [r | {"decoder": "eval"} for r in counts if r["decoder"] == "eval_t1"]
        elif prefix in common:
            m, rows = _shared(shared, prefix, common[prefix])
            metrics.update(m)
            counts += rows
        else:
            g = torch.Generator(device=model.device).manual_seed(
                int(np.random.default_rng([seed, _DECODER_STREAM[prefix]]).integers(2**62))
            )
            m, rows, chunks = _sampled(
                model, tokenizer, task, problems, sched, step, max_new_tokens, g, k, prefix, seed
            )
            metrics.update(m)
            counts += rows
        if prefix == "eval":
            if not chunks:  # own sampler = the common decoder, read from a shared entry: its samples, drawn again
                chunks = sample_groups(model, tokenizer, problems, k, sched, step, max_new_tokens, t1_generator())
            table = entropy_table(model, chunks)
            ent = [row for row in table if row["count"] > 0]
            metrics["eval/entropy"] = float(
                sum(r["entropy_mean"] * r["count"] for r in ent) / max(1, sum(r["count"] for r in ent))
            )
    if greedy:
        m, rows = _shared(shared, "eval_greedy", common["eval_greedy"])
        metrics.update(m)
        counts += rows
    return metrics, {"entropy_by_position": table, "eval_counts": counts}


def _sampled(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    problems: Sequence[Problem],
    schedule: Schedule,
    step: int,
    max_new_tokens: int,
    generator: torch.Generator,
    k: int,
    prefix: str,
    seed: int,
) -> tuple[dict[str, float], list[dict], list[Rollout]]:
    """One sampled decoder: its ``prefix/`` metrics, per-prompt correct counts and the rollouts."""
    chunks = sample_groups(model, tokenizer, problems, k, schedule, step, max_new_tokens, generator)
    texts = [t for r in chunks for t in r.texts]
    correct, answers = score(task, problems, texts, k)
    metrics = k_metrics(correct, answers, k, prefix, seed)
    metrics[f"{prefix}/response_length"] = float(np.mean([float(r.lengths.mean()) for r in chunks]))
    rows = [
        {"decoder": prefix, "prompt": i, "correct": int(c), "n": int(correct.shape[1])}
        for i, c in enumerate(correct.sum(axis=1))
    ]
    return metrics, rows, chunks


def shared_eval_key(
    model: PreTrainedModel, problems: Sequence[Problem], k: int, max_new_tokens: int, seed: int, step: int
) -> str:
    """What a common decoder's result depends on: the weights (their bytes), the eval problems, k, the response
    length, the evaluation seed and step, the device kind and torch's thread count (float reductions may differ)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    h.update(json.dumps([[p.prompt, p.target, list(p.numbers)] for p in problems]).encode())
    parts = [SHARED_EVAL_VERSION, _code_fingerprint(), k, max_new_tokens, seed, step, model.device.type,
             torch.get_num_threads()]  # fmt: skip
    h.update(json.dumps(parts).encode())
    return h.hexdigest()[:20]


@functools.cache
def _code_fingerprint() -> str:
    """A hash of the code a common decoder's numbers come from (sampler, tasks, verifiers, metrics, policy): an
    edit to any of it makes older shared entries unused, so a cached result never outlives the code that made it."""
    root = Path(__file__).resolve().parents[2]
    files = sorted((root / "experiments" / "local").glob("*.py")) + sorted((root / "ead_core").rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _shared(
    shared: tuple[Path, str] | None,
    decoder: str,
    compute: Callable[[], tuple[dict[str, float], list[dict]]],
) -> tuple[dict[str, float], list[dict]]:
    """A common decoder's (metrics, counts): computed, or read from the shared entry ``<dir>/<key>-<decoder>.json``
    that another run with the same weights, problems and seed wrote (runs of one seed share their warm start, so
    their step-0 evaluations under ``eval_t1`` and greedy are the same numbers). Written whole (temporary file,
    then rename) under a lock, so concurrent jobs compute an entry once."""
    if shared is None:
        return compute()
    root, key = shared
    path = root / f"{key}-{decoder}.json"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            try:
                entry = json.loads(path.read_text())
                return entry["metrics"], entry["counts"]
            except (ValueError, KeyError) as e:
                log.warning("shared evaluation %s is unreadable (%s); computing it again", path, e)
        metrics, counts = compute()
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"metrics": metrics, "counts": counts}))
        os.replace(tmp, path)
        return metrics, counts


@torch.no_grad()
def entropy_table(model: PreTrainedModel, chunks: Sequence[Rollout]) -> list[dict]:
    """Per response position: mean entropy of the temperature-1 policy over sampled tokens, and the count.

    Taken from the sampler's own logits when the rollout carries them (``Rollout.entropy``: no second forward pass),
    else recomputed with ``sequence_logprobs``; the two agree to float rounding (tests/local/test_rollout.py)."""
    width = max(r.response_ids.shape[1] for r in chunks)
    ents, masks = [], []
    for r in chunks:
        ent = r.entropy if r.entropy is not None else sequence_logprobs(model, r, with_entropy=True)[1]
        pad = width - ent.shape[1]
        ents.append(torch.nn.functional.pad(ent, (0, pad)))
        masks.append(torch.nn.functional.pad(r.response_mask, (0, pad)))
    mean, count = entropy_by_position(torch.cat(ents), torch.cat(masks))
    return [{"position": i, "entropy_mean": float(m), "count": int(c)} for i, (m, c) in enumerate(zip(mean, count))]
