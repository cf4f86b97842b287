"""Tasks: generators, solver, and a verifier that parses safely, computes exactly and never raises."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.local.tasks import ALPHABET, Arithmetic, Countdown, ParseError, Problem, make_task, parse_expression

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


def test_splits_are_seeded_and_disjoint():
    a = CD.problems("train", 300, seed=3)
    assert a == CD.problems("train", 300, seed=3)
    assert a != CD.problems("train", 300, seed=4)
    ev = {p.prompt for p in CD.problems("eval", 100, seed=3)}
    assert len(ev) == 100  # no duplicate eval prompts
    assert not ev & {p.prompt for p in a}
    with pytest.raises(ValueError, match="split"):
        CD.problems("test", 1, 0)
    tiny = Arithmetic(digits=1, ops="+")  # 81 distinct prompts: all reserved for eval
    with pytest.raises(ValueError, match="too few"):
        tiny.problems("train", 10, 0)
    with pytest.raises(ValueError, match="too few"):
        tiny.problems("eval", 100, 0)


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
