"""Tasks: generators, solver, and a verifier that parses safely, computes exactly and never raises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.local.tasks import (
    ALPHABET,
    EVAL_FRACTION,
    SPLIT_VERSION,
    Arithmetic,
    Countdown,
    ParseError,
    Problem,
    make_task,
    parse_expression,
    prompt_split,
)
from experiments.local.warmstart import WarmStartConfig, sft_data
from tests.conftest import EASY_COUNTDOWN

REPO = Path(__file__).resolve().parents[2]

CD = Countdown()
P = Problem(prompt="3 5 7>22:", target=22, numbers=(3, 5, 7))


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("3*5+7", 1.0),
        ("3*5+7=22", 1.0),
        ("7+5*3=22", 1.0),
        ("(3*5)+7", 1.0),
        ("3*5+7=21", 0.0),  # stated value disagrees
        ("3*5+7+0", 0.0),  # 0 is not a given number
        ("3*3+7", 0.0),  # 3 used twice
        ("22", 0.0),  # a number that was not given
        ("3*(5+7)", 0.0),  # valid but wrong value
        ("3*5+", 0.0),
        ("(3*5+7", 0.0),
        ("-3+25", 0.0),
        ("", 0.0),
        ("__import__('os').system('true')", 0.0),
        ("7/0+3", 0.0),
    ],
)
def test_countdown_verifier_cases(response, expected):
    assert CD.verify(P, response) == expected


def test_exact_rational_arithmetic():
    p = Problem(prompt="1 3 3>1:", target=1, numbers=(1, 3, 3))
    assert CD.verify(p, "1/3*3") == 1.0  # exact: 1/3 * 3 == 1, no float rounding
    assert parse_expression("7/3*3")[0] == Fraction(7)
    assert CD.extract_answer(p, "1/3") == "1/3"
    assert CD.extract_answer(p, "1+3=99") == "99"
    assert CD.extract_answer(p, "1+") is None
    with pytest.raises(ParseError):
        parse_expression("(" * 100 + "1" + ")" * 100)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(ALPHABET) + ["x", "é", "\n", "<", "</s>", "1" * 30]), max_size=40).map("".join))
def test_random_strings_never_crash(text):
    for task, prob in ((CD, P), (Arithmetic(), Problem(prompt="12+30=", target=42, numbers=(12, 30)))):
        v = task.verify(prob, text)
        assert v in (0.0, 1.0)
        a = task.extract_answer(prob, text)
        assert a is None or isinstance(a, str)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([3, 4]), st.sampled_from(["train", "eval"]))
def test_solver_output_always_verifies(seed, n_numbers, split):
    task = Countdown(n_numbers=n_numbers, max_number=6 if n_numbers == 4 else 12, max_target=100)
    for p in task.problems(split, 5, seed):
        assert task.verify(p, p.solution) == 1.0
        assert len(p.numbers) == n_numbers and 1 <= p.target <= 100


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10**6), st.integers(2, 5), st.sampled_from(["+", "-", "*", "+-*"]))
def test_arithmetic_solutions_verify(seed, digits, ops):
    task = Arithmetic(digits=digits, ops=ops)
    for p in task.problems("train", 5, seed):
        assert task.verify(p, p.solution) == 1.0
        assert task.verify(p, str(p.target + 1)) == 0.0


SPLIT_TASKS = [Countdown(), Countdown(**EASY_COUNTDOWN), Arithmetic(digits=2, ops="+-*"), make_task("countdown_trace")]


@pytest.mark.parametrize("task", SPLIT_TASKS, ids=repr)
def test_no_eval_prompt_of_any_seed_is_trained_on(task):
    """Eval prompts of every seed and size stay out of every seed's training pool and warm-start SFT data (the old
    per-seed reserve leaked: 19 of 300 same-seed eval prompts sat in the train pool, 53 of 64 in another seed's
    warm-start data)."""
    seeds = (0, 1, 2, 17)
    evals = {p.prompt for s in seeds for n in (1, 30, 60) for p in task.problems("eval", n, s)}
    train = {p.prompt for s in seeds for n in (10, 1500) for p in task.problems("train", n, s)}
    name = task.name
    knobs = {f: getattr(task, f) for f in task.__dataclass_fields__ if f != "name"}
    sft = {
        p.prompt for s in seeds for p in sft_data(WarmStartConfig(task=name, task_knobs=knobs, seed=s, n_train=1500))
    }
    assert len(evals) >= 60 and len(train) > 400 and len(sft) > 400  # the sets are big enough to collide by chance
    assert not evals & train
    assert not evals & sft
    assert all(prompt_split(p) == "eval" for p in evals) and all(prompt_split(p) == "train" for p in train | sft)


def test_split_is_a_fixed_share_of_prompts_and_seeded_draws():
    prompts = [f"{a}+{b}=" for a in range(100, 300) for b in range(100, 200)]
    share = sum(prompt_split(p) == "eval" for p in prompts) / len(prompts)
    assert share == pytest.approx(EVAL_FRACTION, abs=0.01)
    a = CD.problems("train", 300, seed=3)
    assert a == CD.problems("train", 300, seed=3)
    assert a != CD.problems("train", 300, seed=4)
    ev = CD.problems("eval", 100, seed=3)
    assert len({p.prompt for p in ev}) == 100  # no duplicate eval prompts
    assert ev[:10] == CD.problems("eval", 10, seed=3)  # a smaller eval set is a prefix of a larger one
    assert {p.prompt for p in ev} != {p.prompt for p in CD.problems("eval", 100, seed=4)}
    with pytest.raises(ValueError, match="split"):
        CD.problems("test", 1, 0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        CD.problems("eval", -1, 0)
    tiny = Arithmetic(digits=1, ops="+")  # 81 distinct prompts, about 8 of them eval
    assert len(tiny.problems("train", 200, 0)) == 200  # train draws repeat
    with pytest.raises(ValueError, match="too few distinct eval prompts"):
        tiny.problems("eval", 40, 0)


# Pinned: if this changes, the split changed; bump SPLIT_VERSION (warm-start caches and config hashes carry it).
PINNED_EVAL = ["7 9 9>1:", "7 8 9>2:", "8 5 4>44:", "3 5 7>10:", "100+107="]


def test_split_is_stable_across_processes():
    """sha256 of the text, not Python's salted hash(): other processes (other PYTHONHASHSEED) agree."""
    code = (
        "from experiments.local.tasks import Countdown, prompt_split; import json; "
        "print(json.dumps([[p.prompt for p in Countdown().problems('eval', 30, 5)], "
        f"[prompt_split(p) for p in {PINNED_EVAL + ['3 5 7>22:']!r}]]))"
    )
    here = [[p.prompt for p in CD.problems("eval", 30, 5)], [prompt_split(p) for p in PINNED_EVAL + ["3 5 7>22:"]]]
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(out.stdout) == here
    assert SPLIT_VERSION == 2 and here[1] == ["eval"] * len(PINNED_EVAL) + ["train"]


def test_make_task_errors_name_the_parameter():
    with pytest.raises(ValueError, match="task must be one of"):
        make_task("sudoku")
    with pytest.raises(ValueError, match="unknown countdown knob"):
        make_task("countdown", digits=3)
    with pytest.raises(ValueError, match="n_numbers"):
        make_task("countdown", n_numbers=5)
    with pytest.raises(ValueError, match="digits"):
        make_task("arithmetic", digits=0)
    assert make_task("arithmetic", digits=2, ops="*").ops == "*"
