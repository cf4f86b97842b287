"""Countdown with a written search: the CPU testbed where the first tokens choose the direction and the rest must be
exact (the structure EAD assumes; Stream of Search, Gandhi et al. 2024).

Prompt as in ``countdown``: ``"3 5 7>22:"``. The response (style ``dfs``, decision ``early``) is a depth-first
search over pairwise combinations written out as attempts, then ``|`` and the final expression::

    5*7=35 35-3=32>22#3+5=8 8*7=56>22#5*3=15 15+7=22>22|5*3+7

* An attempt is a path from the root: steps ``a op b=r`` (``a >= b``, only positive integer results) separated by
  spaces, each step taking two numbers of the current multiset and putting ``r`` back, then ``>`` and the target
  copied next to the last result (so the hit-or-miss check is a comparison of two adjacent numbers: without it the
  tiny warm start learned to stop after a miss). ``#`` ends a dead end and backtracks to the root (a deeper
  backtrack repeats the shared prefix in the next attempt).
* The first move of each attempt is a fresh random choice among the untried root moves (so samples over one prompt
  differ, and a policy trained on these traces has a real spread over first moves). Below the root the search is
  deterministic: canonical move order (pairs in state order; ``+ - * /``), the first ``WIDTH`` children, and at two
  numbers the one step that hits the target, else the step closest to it.
* ``budget`` attempts at most; a search that runs out ends ``...#|`` with no answer (reward 0), as a budgeted solver
  does. The policy can beat its teacher by choosing better first moves: exactly what exploration early should find.

``decision='late'`` is the reviewers' failure case: the response starts with a prompt-determined table (every root
move, canonical order, then ``:``), so the decisive choice (the first move of the search) comes only after it::

    5+3=8 5-3=2 5*3=15 7+3=10 7-3=4 7*3=21 7+5=12 7-5=2 7*5=35:3+5=8 8*7=56>22#5*3=15 15+7=22>22|5*3+7

``style='direct'`` is the answer alone (``5*3+7``), as in ``countdown``, for comparison.

The reward is 1 only for a correct final expression (``Countdown.verify``: exact rationals, each given number at most
once, never ``eval``, never raises); the trace's own correctness is a diagnostic (``diagnostics``: ``trace_valid``,
``trace_step_accuracy``, ``trace_attempts``), never rewarded. The train/eval split is ``tasks.split_problems``.
"""

from __future__ import annotations

import functools
import random
import re
from collections import Counter
from dataclasses import dataclass

from experiments.local.tasks import TASKS, Countdown, Problem, split_problems

STEP_SEP, TARGET_MARK, DEAD_END, ANSWER_SEP, TABLE_END = " ", ">", "#", "|", ":"
WIDTH = 2  # children explored below the root (between the root and the last step; only with 4 numbers)
MAX_RESPONSE_CHARS = 190  # the solver never writes more (a response plus EOS fits max_new_tokens = 200)
STYLES = ("dfs", "direct")
DECISIONS = ("early", "late")
_STEP = re.compile(r"(\d{1,6})([-+*/])(\d{1,6})=(\d{1,7})")

Move = tuple[str, int, tuple[int, ...]]  # (step text, result, state after the step)


def _apply(op: str, a: int, b: int) -> int | None:
    """a op b for a >= b when the result is a positive integer (the search's move set), else None."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a > b else None
    if op == "*":
        return a * b
    return a // b if b > 1 and a % b == 0 else None  # "/1" would repeat "*1"


def moves(state: tuple[int, ...]) -> list[Move]:
    """Every move from ``state`` in canonical order (pairs i < j in state order, ops ``+ - * /``), without
    duplicates; the result is appended to the remaining numbers."""
    out, seen = [], set()
    for i in range(len(state)):
        for j in range(i + 1, len(state)):
            a, b = max(state[i], state[j]), min(state[i], state[j])
            rest = tuple(x for k, x in enumerate(state) if k not in (i, j))
            for op in "+-*/":
                r = _apply(op, a, b)
                text = f"{a}{op}{b}={r}"
                if r is not None and text not in seen:
                    seen.add(text)
                    out.append((text, r, (*rest, r)))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Expressions (the final answer is the successful attempt written as one expression)

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def _combine(op: str, left: tuple[str, int], right: tuple[str, int]) -> tuple[str, int]:
    """Expression text of ``left op right`` with only the parentheses the parser needs (left-associative)."""
    p = _PREC[op]
    lt = left[0] if left[1] >= p else f"({left[0]})"
    rt = right[0] if right[1] > p or (right[1] == p and op in "+*") else f"({right[0]})"
    return f"{lt}{op}{rt}", p


def _expression(numbers: tuple[int, ...], steps: list[str]) -> str:
    """Replay ``steps`` from ``numbers`` keeping an expression per number; the expression of the last result."""
    pool: list[tuple[int, tuple[str, int]]] = [(n, (str(n), 3)) for n in numbers]

    def take(v: int) -> tuple[str, int]:
        k = next(k for k, (x, _) in enumerate(pool) if x == v)
        return pool.pop(k)[1]

    for step in steps:
        a, op, b, r = _STEP.fullmatch(step).groups()  # type: ignore[union-attr]
        ea = take(int(a))
        eb = take(int(b))
        pool.append((int(r), _combine(op, ea, eb)))
    return pool[-1][1][0]


# ---------------------------------------------------------------------------------------------------------------------
# The solver


@functools.lru_cache(maxsize=65536)
def _reachable(state: tuple[int, ...]) -> frozenset[int]:
    """Values reachable using every number of ``state`` with the search's move set."""
    if len(state) == 1:
        return frozenset(state)
    return frozenset().union(*(_reachable(nxt) for _, _, nxt in moves(state)))


def _last_step(state: tuple[int, ...], target: int) -> Move:
    """At two numbers: the step that hits the target, else the one whose result is closest (first in canonical
    order on ties)."""
    return min(moves(state), key=lambda m: (m[1] != target, abs(m[1] - target)))


def _attempts(state: tuple[int, ...], target: int, prefix: list[str]) -> list[tuple[list[str], bool]]:
    """The deterministic search below a root move: the attempts it writes, each (steps, solved), stopping at a
    solution."""
    if len(state) == 1:  # the root move used every number (a two-number prompt): the attempt is that one step
        return [(prefix, state[0] == target)]
    if len(state) == 2:
        text, r, _ = _last_step(state, target)
        return [([*prefix, text], r == target)]
    out = []
    for text, _, nxt in moves(state)[:WIDTH]:
        out += _attempts(nxt, target, [*prefix, text])
        if out[-1][1]:
            break
    return out


@dataclass(frozen=True)
class CountdownTrace:
    """Countdown whose responses are written searches (module docstring). Knobs:

    ``n_numbers`` (2, 3 or 4), ``hard_share`` ([0, 1]: the share of prompts with one number more, a spread of
    difficulty: some prompts are solved every time, some never; needs n_numbers <= 3), ``max_number`` ([2, 30]:
    given numbers are 1..max_number), ``min_target`` and ``max_target`` ([1, 999]; targets are reachable using
    every number), ``style`` ('dfs' or 'direct'),
    ``decision`` ('early' or 'late'; 'late' needs 'dfs'), ``budget`` ([1, 20] attempts before the solver gives up).
    """

    n_numbers: int = 3
    hard_share: float = 0.0
    max_number: int = 9
    min_target: int = 10
    max_target: int = 60
    style: str = "dfs"
    decision: str = "early"
    budget: int = 6
    name: str = "countdown_trace"

    def __post_init__(self) -> None:
        def need(ok: bool, knob: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"countdown_trace {knob} must be {allowed}, got {getattr(self, knob)!r}")

        def integer(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        need(integer(self.n_numbers) and self.n_numbers in (2, 3, 4), "n_numbers", "2, 3 or 4")
        share = self.hard_share
        need(
            isinstance(share, (int, float)) and not isinstance(share, bool) and 0.0 <= share <= 1.0,
            "hard_share",
            "a number in [0, 1]",
        )
        need(share == 0 or self.n_numbers <= 3, "hard_share", "0 with n_numbers=4 (prompts have at most 4 numbers)")
        need(integer(self.max_number) and 2 <= self.max_number <= 30, "max_number", "an integer in [2, 30]")
        need(integer(self.min_target) and 1 <= self.min_target <= 999, "min_target", "an integer in [1, 999]")
        need(
            integer(self.max_target) and self.min_target <= self.max_target <= 999,
            "max_target",
            f"an integer in [min_target={self.min_target}, 999]",
        )
        need(self.style in STYLES, "style", f"one of {list(STYLES)}")
        need(self.decision in DECISIONS, "decision", f"one of {list(DECISIONS)}")
        need(self.decision == "early" or self.style == "dfs", "decision", "'early' with style='direct'")
        need(integer(self.budget) and 1 <= self.budget <= 20, "budget", "an integer in [1, 20]")

    def __repr__(self) -> str:
        """The dataclass repr without ``hard_share`` when it is 0: the repr seeds the train/eval draws
        (``split_problems``), so tasks from before the knob keep their prompts."""
        names = [f for f in self.__dataclass_fields__ if f != "hard_share" or self.hard_share]
        return f"CountdownTrace({', '.join(f'{f}={getattr(self, f)!r}' for f in names)})"

    # --- problems and traces -----------------------------------------------------------------------------------------
    def make(self, rng: random.Random) -> Problem:
        """A solvable problem (the target is reachable using every number) with one sampled solver trace."""
        for _ in range(10000):
            # no draw at hard_share=0: the default task's random stream (and so its prompts) stays as it was
            count = self.n_numbers + 1 if self.hard_share and rng.random() < self.hard_share else self.n_numbers
            nums = tuple(rng.randint(1, self.max_number) for _ in range(count))
            targets = sorted(t for t in _reachable(nums) if self.min_target <= t <= self.max_target)
            if targets:
                target = rng.choice(targets)
                prompt = " ".join(map(str, nums)) + f">{target}:"
                problem = Problem(prompt=prompt, target=target, numbers=nums)
                sol = self.solve(problem, rng)
                return Problem(prompt=prompt, target=target, numbers=nums, solution=sol, meta={"task": self.name})
        raise ValueError(f"{self}: no reachable target in [min_target, max_target]; widen the target range")

    def solve(self, problem: Problem, rng: random.Random) -> str:
        """One solver response for ``problem``; ``rng`` orders the root moves (different draws, different traces)."""
        target, nums = problem.target, problem.numbers
        root = moves(nums)
        order = rng.sample(root, len(root))
        solved: list[str] | None = None
        lines: list[str] = []
        for text, _, nxt in order[: self.budget]:
            found = False
            for steps, ok in _attempts(nxt, target, [text]):
                lines.append(STEP_SEP.join(steps) + f"{TARGET_MARK}{target}")
                if ok:
                    solved, found = steps, True
                    break
            if found:
                break
        if self.style == "direct":
            # the answer alone; a problem the budgeted search misses gets a (shortest) solution of the full search
            return _expression(nums, solved) if solved is not None else self._any_solution(problem)
        table = STEP_SEP.join(t for t, _, _ in root) + TABLE_END if self.decision == "late" else ""
        answer = _expression(nums, solved) if solved is not None else ""
        # keep the response within MAX_RESPONSE_CHARS: drop attempts from the end (then it is a failed search)
        while lines:
            search = DEAD_END.join(lines) + ("" if solved is not None else DEAD_END)
            text = f"{table}{search}{ANSWER_SEP}{answer}"
            if len(text) <= MAX_RESPONSE_CHARS:
                return text
            lines.pop()
            solved, answer = None, ""
        return f"{table}{ANSWER_SEP}"

    def _any_solution(self, problem: Problem) -> str:
        def search(state: tuple[int, ...], steps: list[str]) -> list[str] | None:
            if len(state) == 1:
                return steps if state[0] == problem.target else None
            for text, _, nxt in moves(state):
                found = search(nxt, [*steps, text])
                if found is not None:
                    return found
            return None

        steps = search(problem.numbers, [])
        assert steps is not None, "make() only draws reachable targets"
        return _expression(problem.numbers, steps)

    def problems(self, split: str, n: int, seed: int) -> list[Problem]:
        return split_problems(self, split, n, seed)

    # --- reward and diagnostics --------------------------------------------------------------------------------------
    def answer(self, response: str) -> str | None:
        """The final expression: the text after the first ``|`` (style 'dfs'; None without one), or all of it."""
        if self.style == "direct":
            return response
        head, sep, tail = response.partition(ANSWER_SEP)
        return tail if sep else None

    def verify(self, problem: Problem, response: str) -> float:
        """1.0 iff the final expression is correct (``Countdown.verify``); the trace is not checked."""
        try:
            final = self.answer(response)
            return 0.0 if final is None else Countdown.verify(Countdown(), problem, final)
        except Exception:  # the verifier never raises on model output
            return 0.0

    def extract_answer(self, problem: Problem, response: str) -> str | None:
        """The value of the final expression (for majority voting), None if there is none."""
        try:
            final = self.answer(response)
            return None if final is None else Countdown.extract_answer(Countdown(), problem, final)
        except Exception:
            return None

    def diagnostics(self, problem: Problem, response: str) -> dict[str, float]:
        """Trace metrics, never rewarded: ``trace_valid`` (1.0 iff the trace is well formed and every step is legal
        and exact), ``trace_step_accuracy`` (share of legal, exact steps; each attempt is replayed up to its first
        bad step) and ``trace_attempts``."""
        try:
            return _check_trace(problem, response, self.style, self.decision)
        except Exception:
            return {"trace_valid": 0.0, "trace_step_accuracy": 0.0, "trace_attempts": 0.0}

    def trace_valid(self, problem: Problem, response: str) -> float:
        return self.diagnostics(problem, response)["trace_valid"]


def _check_trace(problem: Problem, response: str, style: str, decision: str) -> dict[str, float]:
    """Replay every step of a response's trace against the prompt's numbers (each attempt from the root)."""
    if style == "direct":
        return {"trace_valid": 1.0, "trace_step_accuracy": 1.0, "trace_attempts": 0.0}
    head, sep, _ = response.partition(ANSWER_SEP)
    well_formed = bool(sep)
    good = total = 0
    if decision == "late":  # the table: root moves, each from the prompt's numbers (without one: malformed)
        table, tsep, search = head.partition(TABLE_END)
        well_formed &= bool(tsep)
        if tsep:
            head = search
            for s in table.split(STEP_SEP):
                good, total = good + _replay(problem.numbers, [s])[0], total + 1
    attempts = head.split(DEAD_END) if head else []
    if len(attempts) > 1 and attempts[-1] == "":  # "...#|": the search gave up after its last dead end
        attempts.pop()
    for att in attempts:
        path, mark, goal = att.rpartition(TARGET_MARK)
        steps = (path if mark else goal).split(STEP_SEP)
        if not mark or goal != str(problem.target) or len(steps) >= len(problem.numbers):
            well_formed = False
        pool = problem.numbers
        for s in steps:
            ok, pool = _replay(pool, [s])
            good, total = good + ok, total + 1
            if not ok:
                break
    acc = good / total if total else 0.0
    return {
        "trace_valid": float(well_formed and total > 0 and good == total),
        "trace_step_accuracy": acc,
        "trace_attempts": float(len(attempts)),
    }


def _replay(pool: tuple[int, ...], steps: list[str]) -> tuple[bool, tuple[int, ...]]:
    """Apply steps to the multiset ``pool``: (all legal and exact, the pool after them)."""
    have = Counter(pool)
    out = list(pool)
    for s in steps:
        m = _STEP.fullmatch(s)
        if m is None:
            return False, tuple(out)
        a, op, b, r = int(m[1]), m[2], int(m[3]), int(m[4])
        need = Counter([a, b])
        if a < b or any(have[v] < c for v, c in need.items()) or _apply(op, a, b) != r:
            return False, tuple(out)
        have -= need
        have[r] += 1
        out.remove(a)
        out.remove(b)
        out.append(r)
    return True, tuple(out)


TASKS.setdefault("countdown_trace", CountdownTrace)  # registered when experiments.local is imported (its __init__)
