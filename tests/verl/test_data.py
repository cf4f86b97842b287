"""Data preprocessing round trips: local files -> datasets.load_dataset -> verl parquet -> verl's RLHFDataset."""

from __future__ import annotations

import json

import datasets
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf
from verl.utils.dataset.rl_dataset import RLHFDataset

from experiments.verl import data as D

NUMINA = [
    {"source": "cn_k12", "problem": "What is 1+1?", "solution": "We add. The answer is $\\boxed{2}$."},
    {"source": "olympiads", "problem": "Find x if 2x=1.", "solution": "So $x=\\boxed{\\frac{1}{2}}$."},
    {"source": "amc", "problem": "No final answer here.", "solution": "A proof without a boxed result."},
    {"source": "aops", "problem": "Nested?", "solution": "first \\boxed{1} then \\boxed{\\sqrt{\\{3\\}}}"},
]
MATH500 = [
    {
        "problem": "Compute 3*4.",
        "solution": "...",
        "answer": "12",
        "subject": "Algebra",
        "level": 1,
        "unique_id": "a/1",
    },
    {
        "problem": "Simplify 2/4.",
        "solution": "...",
        "answer": "\\frac12",
        "subject": "Algebra",
        "level": 2,
        "unique_id": "a/2",
    },
]


@pytest.fixture
def files(tmp_path):
    numina = tmp_path / "numina.json"
    numina.write_text(json.dumps(NUMINA))
    math500 = tmp_path / "math500.jsonl"
    math500.write_text("".join(json.dumps(r) + "\n" for r in MATH500))
    parquet = tmp_path / "math500.parquet"
    datasets.Dataset.from_list(MATH500).to_parquet(str(parquet))
    return {"numina": numina, "math500": math500, "parquet": parquet, "dir": tmp_path}


def test_numina_round_trip(files):
    out = D.prepare_numina(files["dir"] / "out" / "train.parquet", source=str(files["numina"]))
    rows = datasets.load_dataset("parquet", data_files=str(out), split="train").to_list()
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["2", "\\frac{1}{2}", "\\sqrt{\\{3\\}}"]
    first = rows[0]
    assert first["data_source"] == "numina_math" and first["ability"] == "math"
    assert first["prompt"] == [
        {"role": "system", "content": D.SYSTEM_PROMPT},
        {"role": "user", "content": "What is 1+1?" + D.USER_SUFFIX},
    ]
    assert first["reward_model"]["style"] == "rule"
    assert first["extra_info"]["split"] == "train" and first["extra_info"]["origin"] == "cn_k12"
    assert [r["extra_info"]["index"] for r in rows] == [0, 1, 3]  # index of the source row
    assert "ead_sampler" not in rows[0]  # training rows use the run's own schedule (the loop's default)
    limited = D.prepare_numina(files["dir"] / "out" / "t2.parquet", source=str(files["numina"]), limit=2)
    assert pq.read_table(limited).num_rows == 2


@pytest.mark.parametrize("fmt", ["math500", "parquet"])
def test_math500_round_trip_one_copy_per_sampler(files, fmt):
    out = D.prepare_math500(files["dir"] / "eval.parquet", source=str(files[fmt]), n=16)
    rows = datasets.load_dataset("parquet", data_files=str(out), split="train").to_list()
    assert len(rows) == 3 * len(MATH500)
    by_source: dict[str, list] = {}
    for r in rows:
        by_source.setdefault(r["data_source"], []).append(r)
    assert sorted(by_source) == ["math500", "math500_greedy", "math500_t1"]
    for src, sampler, n in [("math500", "own", 16), ("math500_t1", "t1", 16), ("math500_greedy", "greedy", 1)]:
        group = by_source[src]
        assert [r["reward_model"]["ground_truth"] for r in group] == ["12", "\\frac12"]
        assert {r["ead_sampler"] for r in group} == {sampler} and {r["__rollout_n__"] for r in group} == {n}
        assert group[0]["extra_info"]["unique_id"] == "a/1"
        assert group[1]["prompt"][1]["content"] == "Simplify 2/4." + D.USER_SUFFIX
    assert D.val_rollout_counts([str(out)]) == {"math500": {16}, "math500_t1": {16}, "math500_greedy": {1}}


def test_verls_dataset_reads_our_parquet(files, composed, chat_tokenizer, tmp_path):
    """verl's RLHFDataset (the trainer's loader) with the composed data config: prompts, columns, filter."""
    train = D.prepare_numina(tmp_path / "train.parquet", source=str(files["numina"]))
    val = D.prepare_math500(tmp_path / "val.parquet", source=str(files["math500"]), samplers=("own", "greedy"), n=4)
    _, c = composed["smoke"]
    data = OmegaConf.to_container(c, resolve=True)["data"]
    data_cfg = OmegaConf.create({**data, "cache_dir": str(tmp_path / "cache")})
    ds = RLHFDataset(data_files=[str(train)], tokenizer=chat_tokenizer, config=data_cfg)
    assert len(ds) == 3
    item = ds[0]
    assert item["raw_prompt"] == D.make_prompt("What is 1+1?") and item["data_source"] == "numina_math"
    assert item["reward_model"]["ground_truth"] == "2" and item["index"] == 0
    vds = RLHFDataset(data_files=[str(val)], tokenizer=chat_tokenizer, config=data_cfg)
    greedy = [vds[i] for i in range(len(vds)) if vds[i]["data_source"] == "math500_greedy"]
    assert len(greedy) == 2 and all(g["ead_sampler"] == "greedy" and g["__rollout_n__"] == 1 for g in greedy)
    short = OmegaConf.create(
        {**data, "cache_dir": str(tmp_path / "cache"), "max_prompt_length": 12}
    )  # every chat prompt is longer than 12 tokens
    assert len(RLHFDataset(data_files=[str(train)], tokenizer=chat_tokenizer, config=short)) == 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda f: D.prepare_math500(f["dir"] / "x.parquet", source=str(f["math500"]), samplers=("hot",)), "samplers"),
        (lambda f: D.prepare_math500(f["dir"] / "x.parquet", source=str(f["math500"]), n=0), "n must be"),
        (lambda f: D.prepare_math500(f["dir"] / "x.parquet", source=str(f["numina"])), "lacks column"),
        (lambda f: D.prepare_numina(f["dir"] / "x.parquet", source=str(f["math500"])), "no usable rows"),
        (lambda f: D.prepare_numina(f["dir"] / "x.parquet", source=str(f["numina"]), limit=0), "limit must be"),
        (
            lambda f: D.load_source(str(f["dir"] / "numina.json").replace(".json", ".txt"), "train"),
            "must end in one of",
        ),
    ],
)
def test_bad_inputs(files, call, match):
    (files["dir"] / "numina.txt").write_text("x")
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        call(files)


def test_hub_defaults():
    assert D.NUMINA_HUB == "AI-MO/NuminaMath-CoT" and D.MATH500_HUB == "HuggingFaceH4/MATH-500"
