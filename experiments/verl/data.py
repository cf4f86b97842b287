"""Numina-Math (training) and MATH-500 (evaluation) in verl's RL parquet format, with ``datasets`` loaders.

A row of verl's format (what ``verl.utils.dataset.rl_dataset.RLHFDataset`` reads) is::

    data_source   str                       which dataset (our reward does not route on it)
    prompt        [{"role", "content"}]     chat messages; verl applies the model's chat template
    ability       "math"
    reward_model  {"style": "rule", "ground_truth": <final answer>}
    extra_info    {"split", "index", "problem", "answer", ...}

Prompt format of the paper's runs (research/paper.md 3.3): system "Please reason step by step, and put
your final answer within \\boxed{}." and the problem followed by " Let's think step by step and output the
final answer within \\boxed{}.".

Training: ``AI-MO/NuminaMath-CoT`` (about 860k problems); the ground truth is the last ``\\boxed{}`` of the
reference solution (verl's parser), rows without one are dropped. Prompts longer than
``data.max_prompt_length`` tokens are dropped by verl at load time (``filter_overlong_prompts``).

Evaluation: ``HuggingFaceH4/MATH-500`` (its ``answer`` column), written once per validation sampler so one
verl validation reports all of them (see ``experiments.verl.agent_loop``): data_source ``math500``
(the run's own schedule), ``math500_t1`` (plain temperature 1.0) and ``math500_greedy``; each row carries
``ead_sampler`` and verl's per-row sample count ``__rollout_n__`` (n for sampled copies, 1 for greedy).

Sources are hub names or local files (``.json``, ``.jsonl``, ``.parquet``, ``.csv``), both loaded with
``datasets.load_dataset``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.verl.rewards import extract_boxed

SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
USER_SUFFIX = " Let's think step by step and output the final answer within \\boxed{}."
NUMINA_HUB = "AI-MO/NuminaMath-CoT"
MATH500_HUB = "HuggingFaceH4/MATH-500"
TRAIN_SOURCE = "numina_math"
EVAL_SOURCE = "math500"
EVAL_SAMPLERS = ("own", "t1", "greedy")
_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def eval_data_source(base: str, sampler: str) -> str:
    """``math500`` for the run's own sampler, ``math500_t1`` / ``math500_greedy`` for the others."""
    if sampler not in EVAL_SAMPLERS:
        raise ValueError(f"sampler must be one of {list(EVAL_SAMPLERS)}, got {sampler!r}")
    return base if sampler == "own" else f"{base}_{sampler}"


def load_source(source: str, split: str):
    """A ``datasets.Dataset`` from a local file (by extension) or a Hugging Face hub name."""
    import datasets

    path = Path(source)
    if path.exists():
        builder = _BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"source file must end in one of {sorted(_BUILDERS)}, got {source!r}")
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    return datasets.load_dataset(source, split=split)


def make_prompt(problem: str) -> list[dict[str, str]]:
    """The paper's chat prompt for one problem."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": problem.strip() + USER_SUFFIX}]


def make_row(problem: str, answer: str, data_source: str, split: str, index: int, **extra: Any) -> dict[str, Any]:
    """One row of verl's RL parquet format."""
    return {
        "data_source": data_source,
        "prompt": make_prompt(problem),
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": {"split": split, "index": index, "problem": problem, "answer": answer, **extra},
    }


def _check_columns(ds: Any, needed: Sequence[str], source: str) -> None:
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise ValueError(f"{source} lacks column(s) {missing}; it has {ds.column_names}")


def prepare_numina(
    out: str | Path,
    source: str = NUMINA_HUB,
    split: str = "train",
    limit: int | None = None,
    problem_key: str = "problem",
    solution_key: str = "solution",
    num_proc: int | None = None,
) -> Path:
    """Write Numina-Math training prompts to ``out`` (parquet); return the path.

    ``limit`` keeps the first ``limit`` usable rows (None: all). The ground truth is the last boxed answer
    of the reference solution; rows without one are dropped.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be None or an integer >= 1, got {limit!r}")
    ds = load_source(source, split)
    _check_columns(ds, [problem_key, solution_key], source)
    has_origin = "source" in ds.column_names

    def convert(ex: dict[str, Any], idx: int) -> dict[str, Any]:
        answer = extract_boxed(ex[solution_key] or "")
        origin = ex["source"] if has_origin else None
        row = make_row(ex[problem_key] or "", answer or "", TRAIN_SOURCE, split, idx, origin=origin)
        row["_keep"] = bool(answer) and bool((ex[problem_key] or "").strip())
        return row

    ds = ds.map(convert, with_indices=True, remove_columns=ds.column_names, num_proc=num_proc)
    ds = ds.filter(lambda keep: keep, input_columns="_keep").remove_columns("_keep")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    if len(ds) == 0:
        raise ValueError(f"no usable rows in {source} (no problem with a boxed answer in {solution_key!r})")
    return _write(ds, out)


def prepare_math500(
    out: str | Path,
    source: str = MATH500_HUB,
    split: str = "test",
    samplers: Sequence[str] = EVAL_SAMPLERS,
    n: int = 16,
    limit: int | None = None,
    problem_key: str = "problem",
    answer_key: str = "answer",
) -> Path:
    """Write MATH-500 once per validation sampler to ``out`` (parquet); return the path.

    ``n`` is the number of samples per prompt of the sampled copies (``__rollout_n__``); greedy rows get 1.
    """
    import datasets

    if not samplers or any(s not in EVAL_SAMPLERS for s in samplers) or len(set(samplers)) != len(samplers):
        raise ValueError(f"samplers must be distinct values from {list(EVAL_SAMPLERS)}, got {list(samplers)!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be None or an integer >= 1, got {limit!r}")
    ds = load_source(source, split)
    _check_columns(ds, [problem_key, answer_key], source)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    has_id = "unique_id" in ds.column_names

    copies = []
    for sampler in samplers:

        def convert(ex: dict[str, Any], idx: int, sampler: str = sampler) -> dict[str, Any]:
            uid = ex["unique_id"] if has_id else None
            row = make_row(
                ex[problem_key], str(ex[answer_key]), eval_data_source(EVAL_SOURCE, sampler), split, idx, unique_id=uid
            )
            row["ead_sampler"] = sampler
            row["__rollout_n__"] = 1 if sampler == "greedy" else n
            return row

        copies.append(ds.map(convert, with_indices=True, remove_columns=ds.column_names))
    return _write(datasets.concatenate_datasets(copies), out)


def _write(ds: Any, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(out))
    return out


def val_rollout_counts(val_files: Sequence[str]) -> dict[str, set[int]]:
    """``{data_source: {__rollout_n__ values}}`` of existing validation files (for the launcher's check)."""
    import pyarrow.parquet as pq

    out: dict[str, set[int]] = {}
    for f in val_files:
        if not Path(f).exists():
            continue
        table = pq.read_table(f, columns=None)
        if "__rollout_n__" not in table.column_names:
            continue
        for src, n in zip(table.column("data_source").to_pylist(), table.column("__rollout_n__").to_pylist()):
            out.setdefault(src, set()).add(int(n))
    return out
