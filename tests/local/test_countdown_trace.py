"""countdown_trace: the verifier rewards only the final expression and never raises, the solver's traces verify,
``late`` traces start with a prompt-determined part, the split keeps eval prompts out of training, knobs are checked,
and the Hydra presets compose into a valid run."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.local.countdown_trace import CountdownTrace, moves
from experiments.local.tasks import ALPHABET, Problem, make_task, prompt_split
from experiments.local.warmstart import WarmStartConfig, sft_data

EARLY, LATE, FOUR = CountdownTrace(), CountdownTrace(decision="late"), CountdownTrace(n_numbers=4, max_number=6)
DIRECT = CountdownTrace(style="direct")
MIXED, TWO = CountdownTrace(hard_share=0.3), CountdownTrace(n_numbers=2, max_number=30, max_target=200)
P = Problem(prompt="3 5 7>22:", target=22, numbers=(3, 5, 7))
TASKS = [EARLY, LATE, FOUR, DIRECT, CountdownTrace(n_numbers=4, decision="late", budget=3), MIXED, TWO]

# a step "a op b=r" whose numbers and result are arbitrary (almost always illegal or inexact)
step = st.builds(
    lambda a, op, b, r: f"{a}{op}{b}={r}", st.integers(0, 99), st.sampled_from("+-*/"), st.integers(0, 99),
    st.integers(0, 999),
)  # fmt: skip
trace = st.lists(st.lists(step, min_size=1, max_size=3).map(" ".join), max_size=5).map("#".join)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("5*3=15 15+7=22|5*3+7", 1.0),
        ("|5*3+7", 1.0),  # no trace at all: still the right answer
        ("3+5=8 8*7=56#|3*5+7=22", 1.0),  # an optional stated value that agrees
        ("5*3=15 15+7=22|5*3+7=21", 0.0),  # stated value disagrees
        ("5*3=15 15+7=22|", 0.0),  # gave up
        ("5*3=15 15+7=22", 0.0),  # no answer separator
        ("5*3+7", 0.0),  # style dfs needs the separator
        ("5*3=15|5*3+7|5*3+7", 0.0),  # one answer, not two
        ("x|5*3+7", 1.0),  # the trace is never checked by the reward
        ("|5*3*7", 0.0),  # wrong value
        ("|5*5-3", 0.0),  # 5 used twice
        ("|22", 0.0),  # a number that was not given
        ("|(5*3+7", 0.0),
        ("|__import__('os')", 0.0),
        ("|7/(5-5)+3", 0.0),
    ],
)
def test_verifier_cases(response, expected):
    assert EARLY.verify(P, response) == expected
    assert LATE.verify(P, response) == expected  # the reward does not depend on the decision variant


def test_direct_style_is_the_answer_alone():
    assert DIRECT.verify(P, "5*3+7") == 1.0
    assert DIRECT.verify(P, "|5*3+7") == 0.0
    assert DIRECT.extract_answer(P, "5*3+7") == "22"
    assert EARLY.extract_answer(P, "x|7*5-3") == "32" and EARLY.extract_answer(P, "7*5-3") is None


@pytest.mark.parametrize(
    ("task", "response", "valid", "accuracy", "attempts"),
    [
        (EARLY, "5*3=15 15+7=22>22|5*3+7", 1.0, 1.0, 1),
        (EARLY, "5+3=8 8*7=56>22#5*3=15 15+7=22>22|5*3+7", 1.0, 1.0, 2),
        (EARLY, "5+3=8 8*7=56>22#|", 1.0, 1.0, 1),  # an honest failed search is a valid trace
        (EARLY, "5*3=15 15+7=22>21|5*3+7", 0.0, 1.0, 1),  # the copied target is wrong
        (EARLY, "5*3=15 15+7=22|5*3+7", 0.0, 1.0, 1),  # no target mark
        (EARLY, "5*3=15 15+8=23>22|5*3+7", 0.0, 0.5, 1),  # 8 was not given
        (EARLY, "5*3=15 15+15=30>22#|", 0.0, 0.5, 1),  # only one 15 exists
        (EARLY, "5*3=16 16+7=23>22|5*3+7", 0.0, 0.0, 1),  # inexact: the replay of this attempt stops there
        (EARLY, "7-3=4 5*4=20 20+1=21>22#|", 0.0, 2 / 3, 1),  # more steps than numbers allow
        (LATE, "5+3=8 7*5=35:5*3=15 15+7=22>22|5*3+7", 1.0, 1.0, 1),
        (LATE, "5+3=9 7*5=35:5*3=15 15+7=22>22|5*3+7", 0.0, 0.75, 1),
        (LATE, "5*3=15 15+7=22>22|5*3+7", 0.0, 1.0, 1),  # no table
    ],
)
def test_trace_diagnostics_cases(task, response, valid, accuracy, attempts):
    d = task.diagnostics(P, response)
    assert d == {"trace_valid": valid, "trace_step_accuracy": pytest.approx(accuracy), "trace_attempts": attempts}


@settings(max_examples=200, deadline=None)
@given(trace, st.sampled_from(["5*3+7", "7+5*3", "(3*5)+7", "7+3*5=22"]))
def test_any_trace_with_a_right_answer_scores_1(text, answer):
    response = f"{text}|{answer}"
    assert EARLY.verify(P, response) == 1.0
    assert EARLY.extract_answer(P, response) == "22"
    assert EARLY.diagnostics(P, response)["trace_attempts"] == (len(text.split("#")) if text else 0)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6))
def test_wrong_traces_are_invalid_but_still_rewarded(seed):
    """A solver trace with one step's result off by one is flagged by trace_valid, and still scores 1."""
    rng = random.Random(seed)
    task = rng.choice([EARLY, LATE, FOUR])
    p = task.problems("train", 1, seed)[0]
    head, _, answer = p.solution.partition("|")
    steps = list(re.finditer(r"=(\d+)", head))
    if not answer or not steps:
        return
    m = rng.choice(steps)
    wrong = head[: m.start(1)] + str(int(m[1]) + 1) + head[m.end(1) :] + "|" + answer
    assert task.diagnostics(p, p.solution)["trace_valid"] == 1.0
    d = task.diagnostics(p, wrong)
    assert d["trace_valid"] == 0.0 and d["trace_step_accuracy"] < 1.0
    assert task.verify(p, wrong) == 1.0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*ALPHABET, "x", "é", "\n", "</s>", "1" * 30, "(" * 40]), max_size=60).map("".join))
def test_arbitrary_text_never_raises(text):
    for task in TASKS:
        assert task.verify(P, text) in (0.0, 1.0)
        a = task.extract_answer(P, text)
        assert a is None or isinstance(a, str)
        d = task.diagnostics(P, text)
        assert set(d) == {"trace_valid", "trace_step_accuracy", "trace_attempts"}
        assert 0.0 <= d["trace_step_accuracy"] <= 1.0 and d["trace_valid"] in (0.0, 1.0)


@pytest.mark.parametrize("response", ["", "|", "#|", "5*3=15 15+7=22", "5*3=15 15+7=22|", "5*3=16 16+7=23|"])
def test_malformed_and_unanswered_text_scores_0(response):
    assert EARLY.verify(P, response) == 0.0
    assert EARLY.extract_answer(P, response) is None


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(["train", "eval"]))
def test_solver_traces_verify(seed, split):
    for task in TASKS:
        for p in task.problems(split, 8, seed):
            assert all(set(s) <= set(ALPHABET) for s in (p.prompt, p.solution))
            assert len(p.solution) <= 190
            assert task.diagnostics(p, p.solution)["trace_valid"] == 1.0, p.solution
            solved = task.verify(p, p.solution)
            if task.style == "direct":
                assert solved == 1.0  # the answer alone: always a solution
            else:  # a solved search ends in its answer; a failed one ends "#|" with none
                assert solved == 1.0 or p.solution.endswith("#|"), p.solution
            assert task.min_target <= p.target <= task.max_target
            assert len(p.numbers) in ((task.n_numbers, task.n_numbers + 1) if task.hard_share else (task.n_numbers,))


def test_solver_success_grows_with_budget_and_searches_really_fail():
    rates = []
    for budget in (1, 3, 6, 12):
        task = CountdownTrace(budget=budget)
        probs = task.problems("train", 400, 0)
        rates.append(sum(task.verify(p, p.solution) for p in probs) / len(probs))
    assert rates == sorted(rates) and rates[0] < 0.5 < rates[-1]
    assert 0.6 < rates[2] < 0.95  # the default budget: a teacher that sometimes fails, so the policy has room


def test_hard_share_mixes_in_prompts_with_one_number_more_that_the_solver_solves_less_often():
    """The difficulty spread: about ``hard_share`` of the prompts have 4 numbers, and the solver (whose traces the warm
    start imitates) solves them less often, so some prompts are solved every time and some rarely."""
    probs = MIXED.problems("train", 1000, 0)
    four = [p for p in probs if len(p.numbers) == 4]
    three = [p for p in probs if len(p.numbers) == 3]
    assert 0.25 < len(four) / len(probs) < 0.35
    rate = {n: sum(MIXED.verify(p, p.solution) for p in ps) / len(ps) for n, ps in ((3, three), (4, four))}
    assert rate[4] < rate[3] - 0.2
    assert sum(len(p.solution) for p in four) / len(four) > sum(len(p.solution) for p in three) / len(three)


def test_two_number_prompts_are_one_step_searches():
    for p in TWO.problems("train", 50, 0):
        attempts = p.solution.partition("|")[0].split("#")
        assert all(a.count("=") == 1 for a in attempts if a), p.solution
        assert TWO.verify(p, p.solution) == 1.0  # a two-number search tries every move: it never fails


def test_the_default_task_draws_the_prompts_it_drew_before_hard_share_existed():
    """The repr seeds the split; hard_share=0 leaves it (and hence every earlier run's prompts) as it was."""
    assert repr(EARLY) == (
        "CountdownTrace(n_numbers=3, max_number=9, min_target=10, max_target=60, style='dfs', decision='early', "
        "budget=6, name='countdown_trace')"
    )
    assert "hard_share=0.3" in repr(MIXED)
    assert [p.prompt for p in EARLY.problems("eval", 3, 0)] == ["8 1 4>12:", "2 3 2>12:", "8 2 2>18:"]


def test_early_traces_spread_over_first_moves():
    """Different draws over one prompt start with different root moves (the warm start sees a real spread)."""
    firsts = {EARLY.solve(P, random.Random(i)).split(" ")[0] for i in range(60)}
    assert firsts <= {m[0] for m in moves(P.numbers)}
    assert len(firsts) >= 6


def test_late_traces_are_prompt_determined_in_their_first_part():
    for p in LATE.problems("train", 30, 1):
        traces = {LATE.solve(p, random.Random(i)) for i in range(20)}
        tables = {t.partition(":")[0] for t in traces}
        assert tables == {" ".join(m[0] for m in moves(p.numbers))}  # every root move, canonical order
        assert all(t.index(":") >= 30 for t in traces)  # the decision comes after a long fixed part
    searches = {LATE.solve(P, random.Random(i)).partition(":")[2] for i in range(30)}
    assert len(searches) > 3  # ...and the part after it is where the draws differ
    early = {EARLY.solve(P, random.Random(i))[:20] for i in range(30)}
    assert len(early) > 3  # the early variant has no such fixed part


@pytest.mark.parametrize("task", [EARLY, LATE, FOUR, MIXED], ids=["early", "late", "four", "mixed"])
def test_eval_prompts_never_trained_on(task):
    knobs = {f: getattr(task, f) for f in task.__dataclass_fields__ if f != "name"}
    seeds = (0, 1, 5)
    evals = {p.prompt for s in seeds for p in task.problems("eval", 60, s)}
    train = {p.prompt for s in seeds for p in task.problems("train", 800, s)}
    cfgs = [WarmStartConfig(task="countdown_trace", task_knobs=knobs, seed=s, n_train=800) for s in seeds]
    sft = {p.prompt for cfg in cfgs for p in sft_data(cfg)}
    assert len(evals) >= 60 and len(train) > 300 and len(sft) > 300
    assert not evals & train and not evals & sft
    assert all(prompt_split(p) == "eval" for p in evals)


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"n_numbers": 5}, "n_numbers must be 2, 3 or 4, got 5"),
        ({"n_numbers": True}, "n_numbers must be 2, 3 or 4"),
        ({"hard_share": 1.5}, r"hard_share must be a number in \[0, 1\], got 1.5"),
        ({"hard_share": -0.1}, r"hard_share must be a number in \[0, 1\]"),
        ({"hard_share": "0.3"}, r"hard_share must be a number in \[0, 1\]"),
        ({"n_numbers": 4, "hard_share": 0.2}, "hard_share must be 0 with n_numbers=4"),
        ({"max_number": 1}, r"max_number must be an integer in \[2, 30\], got 1"),
        ({"max_number": 31}, r"max_number must be an integer in \[2, 30\]"),
        ({"min_target": 0}, r"min_target must be an integer in \[1, 999\], got 0"),
        ({"min_target": 20, "max_target": 10}, r"max_target must be an integer in \[min_target=20, 999\], got 10"),
        ({"max_target": 1000}, r"max_target must be an integer in \[min_target=10, 999\]"),
        ({"style": "bfs"}, r"style must be one of \['dfs', 'direct'\], got 'bfs'"),
        ({"decision": "middle"}, r"decision must be one of \['early', 'late'\], got 'middle'"),
        ({"style": "direct", "decision": "late"}, "decision must be 'early' with style='direct'"),
        ({"budget": 0}, r"budget must be an integer in \[1, 20\], got 0"),
        ({"budget": 2.5}, r"budget must be an integer in \[1, 20\]"),
        ({"width": 3}, r"unknown countdown_trace knob\(s\) \['width'\]"),
    ],
)
def test_knob_validation_names_the_knob_and_its_range(knobs, message):
    with pytest.raises(ValueError, match=message):
        make_task("countdown_trace", **knobs)


def test_unreachable_target_range_fails_clearly():
    with pytest.raises(ValueError, match="widen the target range"):
        CountdownTrace(max_number=2, min_target=900, max_target=999).make(random.Random(0))


@pytest.mark.parametrize(
    ("overrides", "knobs"),
    [
        (["task=countdown_trace", "sampling=ead_trace"], {}),
        (["task=countdown_trace_late", "sampling=ead_trace"], {"decision": "late"}),
        (["task=countdown_trace_mixed", "sampling=ead_trace"], {"hard_share": 0.3, "n_numbers": 3}),
    ],
)
def test_presets_compose_into_a_valid_run(overrides, knobs):
    from omegaconf import OmegaConf

    from experiments.sweep.jobs import prepare
    from tests.sweep.helpers import composed

    with composed(overrides) as cfg:
        job = prepare(cfg)
    run = job.config
    assert run.task == "countdown_trace" and {k: run.task_knobs[k] for k in knobs} == knobs
    task = make_task(run.task, **run.task_knobs)
    longest = max(len(p.solution) for p in task.problems("train", 300, 0))
    assert longest < run.max_new_tokens <= 200  # the solver's responses (and EOS) fit
    sched = run.sampling.schedule()
    assert sched.c == 1 and sched.decay(0) == pytest.approx(50.0) and sched.decay(5) == pytest.approx(100.0)
    assert OmegaConf.select(cfg, "sampling.preset") == "paper"
