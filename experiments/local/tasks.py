"""Synthetic verifiable tasks: countdown and multi-digit arithmetic.

Each task draws seeded train/eval ``Problem``s (``split_problems``; which split a prompt belongs to is a hash of
its text, ``prompt_split``, so the splits are disjoint for every seed), a solver-written reference
solution for warm-start SFT, and a verifier that parses the model's text safely (a small
recursive-descent parser over exact rationals, never ``eval``), returns 0.0 for malformed output
and never raises. ``extract_answer`` gives the final answer used for majority voting.

Formats (character level, one line):
  countdown   prompt "3 5 7>22:"   response "3*5+7=22"   (expression, optionally "=value")
  arithmetic  prompt "347+589="    response "936"
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

# Every character a prompt or response may contain (the tokenizer's alphabet).
ALPHABET = "0123456789+-*/()=>: #|"  # "#" and "|": dead ends and the answer separator of countdown_trace


@dataclass(frozen=True)
class Problem:
    """One prompt with what the verifier needs: the numbers allowed and the target value."""

    prompt: str
    target: int
    numbers: tuple[int, ...] = ()
    solution: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)


class Task(Protocol):
    """What training, evaluation and the studies need from a task."""

    name: str

    def problems(self, split: str, n: int, seed: int) -> list[Problem]: ...
    def verify(self, problem: Problem, response: str) -> float: ...
    def extract_answer(self, problem: Problem, response: str) -> str | None: ...


class SplitSource(Protocol):
    """What ``split_problems`` needs: one random problem per call, and a stable ``repr`` that seeds the draws."""

    def make(self, rng: random.Random) -> Problem: ...


# ---------------------------------------------------------------------------------------------
# Safe exact expression parsing


class ParseError(ValueError):
    """The text is not a well-formed expression."""


_TOKEN = re.compile(r"\s*(?:(\d+)|(.))")
_MAX_DIGITS = 12  # refuse absurd literals so exact arithmetic stays cheap


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            break
        num, op = m.groups()
        if num is not None:
            if len(num) > _MAX_DIGITS:
                raise ParseError("number too long")
            tokens.append(num)
        elif op in "+-*/()":
            tokens.append(op)
        elif not op.isspace():
            raise ParseError(f"unexpected character {op!r}")
        pos = m.end()
    return tokens


def parse_expression(text: str) -> tuple[Fraction, list[int]]:
    """Value (exact rational) of an expression over + - * / and parentheses, and the literals it used.

    Unary minus is not allowed (countdown uses the given numbers only). Raises ParseError for any
    malformed input, including division by zero and nesting deeper than 32.
    """
    tokens = _tokenize(text)
    pos = 0
    used: list[int] = []

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ParseError("unexpected end")
        pos += 1
        return tokens[pos - 1]

    def expr(depth: int) -> Fraction:
        value = term(depth)
        while peek() in ("+", "-"):
            op = take()
            rhs = term(depth)
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(depth: int) -> Fraction:
        value = atom(depth)
        while peek() in ("*", "/"):
            op = take()
            rhs = atom(depth)
            if op == "*":
                value = value * rhs
            elif rhs == 0:
                raise ParseError("division by zero")
            else:
                value = value / rhs
        return value

    def atom(depth: int) -> Fraction:
        if depth > 32:
            raise ParseError("nesting too deep")
        tok = take()
        if tok == "(":
            value = expr(depth + 1)
            if take() != ")":
                raise ParseError("missing )")
            return value
        if tok.isdigit():
            used.append(int(tok))
            return Fraction(int(tok))
        raise ParseError(f"unexpected token {tok!r}")

    if not tokens:
        raise ParseError("empty expression")
    value = expr(0)
    if pos != len(tokens):
        raise ParseError("trailing tokens")
    return value, used


def _fraction_text(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _multiset_within(used: list[int], allowed: tuple[int, ...]) -> bool:
    pool = list(allowed)
    for u in used:
        if u not in pool:
            return False
        pool.remove(u)
    return True


# ---------------------------------------------------------------------------------------------
# Countdown


@functools.lru_cache(maxsize=65536)
def _all_expressions(numbers: tuple[int, ...]) -> dict[Fraction, str]:
    """Every value reachable with each number used at most once, with one expression for it."""
    n = len(numbers)
    table: dict[int, dict[Fraction, str]] = {}
    for mask in range(1, 1 << n):
        idx = [i for i in range(n) if mask >> i & 1]
        if len(idx) == 1:
            table[mask] = {Fraction(numbers[idx[0]]): str(numbers[idx[0]])}
            continue
        out: dict[Fraction, str] = {}
        sub = (mask - 1) & mask
        while sub:
            rest = mask ^ sub
            if sub < rest:  # each unordered split once; ordered ops handled below
                for (a, ea), (b, eb) in itertools.product(table[sub].items(), table[rest].items()):
                    for v, e in (
                        (a + b, f"{ea}+{eb}"),
                        (a * b, f"({ea})*({eb})"),
                        (a - b, f"{ea}-({eb})"),
                        (b - a, f"{eb}-({ea})"),
                    ):
                        out.setdefault(v, e)
                    if b != 0:
                        out.setdefault(a / b, f"({ea})/({eb})")
                    if a != 0:
                        out.setdefault(b / a, f"({eb})/({ea})")
            sub = (sub - 1) & mask
        table[mask] = out
    merged: dict[Fraction, str] = {}
    for mask in sorted(table, key=lambda m: -bin(m).count("1")):  # prefer expressions using all numbers
        for v, e in table[mask].items():
            merged.setdefault(v, e)
    return merged


def simplify_parentheses(expr: str) -> str:
    """Drop parentheses around single literals, e.g. '(3)*(5)' -> '3*5' (value unchanged)."""
    prev = None
    while prev != expr:
        prev, expr = expr, re.sub(r"\((\d+)\)", r"\1", expr)
    return expr


@dataclass(frozen=True)
class Countdown:
    """Reach a target with 3-4 numbers, each used at most once, and + - * / with parentheses.

    Knobs: ``n_numbers`` (3 or 4), ``max_number`` (largest given number), ``max_target``.
    Targets are positive integers reachable from the numbers (checked by exhaustive search), so
    every problem has a solution; the reference solution uses all numbers when possible.
    """

    n_numbers: int = 3
    max_number: int = 9
    max_target: int = 60
    name: str = "countdown"

    def __post_init__(self) -> None:
        if self.n_numbers not in (3, 4):
            raise ValueError(f"countdown n_numbers must be 3 or 4, got {self.n_numbers}")
        if not 2 <= self.max_number <= 99:
            raise ValueError(f"countdown max_number must be in [2, 99], got {self.max_number}")
        if not 1 <= self.max_target <= 9999:
            raise ValueError(f"countdown max_target must be in [1, 9999], got {self.max_target}")

    def make(self, rng: random.Random) -> Problem:
        while True:
            nums = tuple(rng.randint(1, self.max_number) for _ in range(self.n_numbers))
            reach = _all_expressions(nums)
            targets = sorted(int(v) for v in reach if v.denominator == 1 and 1 <= v <= self.max_target)
            # prefer targets that need several numbers: skip ones equal to a given number
            targets = [t for t in targets if t not in nums] or targets
            if targets:
                target = rng.choice(targets)
                sol = simplify_parentheses(reach[Fraction(target)])
                prompt = " ".join(map(str, nums)) + f">{target}:"
                return Problem(prompt=prompt, target=target, numbers=nums, solution=f"{sol}={target}")

    def problems(self, split: str, n: int, seed: int) -> list[Problem]:
        return split_problems(self, split, n, seed)

    def _evaluate(self, problem: Problem, response: str) -> tuple[Fraction, str | None] | None:
        text = response.strip()
        expr, _, stated = text.partition("=")
        try:
            value, used = parse_expression(expr)
        except (ParseError, RecursionError, ValueError, ZeroDivisionError):
            return None
        if not _multiset_within(used, problem.numbers):
            return None
        return value, stated.strip() or None

    def verify(self, problem: Problem, response: str) -> float:
        """1.0 iff the expression is well formed, uses given numbers at most once each, equals the target,
        and any stated "=value" equals it too."""
        try:
            got = self._evaluate(problem, response)
            if got is None:
                return 0.0
            value, stated = got
            if stated is not None and stated != _fraction_text(value):
                return 0.0
            return float(value == problem.target)
        except Exception:  # the verifier never raises on model output
            return 0.0

    def extract_answer(self, problem: Problem, response: str) -> str | None:
        """The claimed final value: the stated "=value" if any, else the expression's value."""
        try:
            got = self._evaluate(problem, response)
            if got is None:
                return None
            value, stated = got
            return stated if stated is not None else _fraction_text(value)
        except Exception:
            return None


# ---------------------------------------------------------------------------------------------
# Arithmetic


@dataclass(frozen=True)
class Arithmetic:
    """Multi-digit integer arithmetic: ``a op b =`` with the exact result as the final answer.

    Knobs: ``digits`` (operand length), ``ops`` (subset of "+-*").
    """

    digits: int = 3
    ops: str = "+-"
    name: str = "arithmetic"

    def __post_init__(self) -> None:
        if not 1 <= self.digits <= 6:
            raise ValueError(f"arithmetic digits must be in [1, 6], got {self.digits}")
        if not self.ops or any(o not in "+-*" for o in self.ops):
            raise ValueError(f"arithmetic ops must be a non-empty subset of '+-*', got {self.ops!r}")

    def make(self, rng: random.Random) -> Problem:
        lo, hi = 10 ** (self.digits - 1), 10**self.digits - 1
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        op = rng.choice(self.ops)
        target = a + b if op == "+" else a - b if op == "-" else a * b
        return Problem(prompt=f"{a}{op}{b}=", target=target, numbers=(a, b), solution=str(target))

    def problems(self, split: str, n: int, seed: int) -> list[Problem]:
        return split_problems(self, split, n, seed)

    def extract_answer(self, problem: Problem, response: str) -> str | None:
        m = re.fullmatch(r"\s*(-?\d{1,20})\s*", response)
        return str(int(m.group(1))) if m else None

    def verify(self, problem: Problem, response: str) -> float:
        try:
            ans = self.extract_answer(problem, response)
            return float(ans is not None and int(ans) == problem.target)
        except Exception:
            return 0.0


# ---------------------------------------------------------------------------------------------


SPLIT_VERSION = 2  # bump whenever prompt_split changes: warm-start caches and config hashes include it
EVAL_FRACTION = 0.1  # share of all prompts (of every task and difficulty) that is eval-only
EVAL_RESERVE = 256  # the most eval prompts the studies ask for (every eval prompt is held out of training)
_SPLITS = ("train", "eval")


def prompt_split(prompt: str) -> str:
    """'eval' or 'train' for a prompt: a property of its text alone, not of a seed, a size or a task's knobs.

    A salted sha256 of the text (stable across processes and machines, unlike Python's ``hash``) sends a fixed
    fraction EVAL_FRACTION of all prompts to eval, so no seed's training pool or warm-start data ever holds an eval
    prompt of any seed.
    """
    digest = hashlib.sha256(f"ead-split-v{SPLIT_VERSION}\0{prompt}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") < EVAL_FRACTION * 2**64 else "train"


def split_problems(task: SplitSource, split: str, n: int, seed: int) -> list[Problem]:
    """``n`` problems of ``split`` drawn with ``task.make`` from a generator seeded by (task, split, seed).

    Works for any task with a ``make(rng)`` and a stable ``repr`` (a frozen dataclass). Draws whose prompt belongs to
    the other split (``prompt_split``) are skipped, so train and eval are disjoint whatever the seeds and sizes.
    Eval problems are distinct; train draws may repeat (a pool sampled with replacement).
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"{task}/{split}/{seed}")
    out: list[Problem] = []
    seen: set[str] = set()
    for _ in range(int(100 * n / (EVAL_FRACTION if split == "eval" else 1 - EVAL_FRACTION)) + 10000):
        if len(out) == n:
            break
        p = task.make(rng)
        if prompt_split(p.prompt) != split or (split == "eval" and p.prompt in seen):
            continue
        seen.add(p.prompt)
        out.append(p)
    if len(out) < n:
        raise ValueError(
            f"{task} has too few distinct {split} prompts for n={n} ({len(seen)} found; {split} is "
            f"{EVAL_FRACTION if split == 'eval' else 1 - EVAL_FRACTION:.0%} of all prompts); make it harder"
        )
    return out


TASKS = {"countdown": Countdown, "arithmetic": Arithmetic}


def make_task(name: str, **knobs: object) -> Countdown | Arithmetic:
    """Build a task by name with its difficulty knobs; unknown names or knobs raise ValueError."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    cls = TASKS[name]
    allowed = {f for f in cls.__dataclass_fields__ if f != "name"}
    unknown = set(knobs) - allowed
    if unknown:
        raise ValueError(f"unknown {name} knob(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return cls(**knobs)
