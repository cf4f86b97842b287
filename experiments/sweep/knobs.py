"""Typed ``task_knobs`` in the sweep: ``python sweep.py task_knobs.max_number=5`` works with any task.

The ``task_knobs`` node of the sweep schema (:data:`TaskKnobs`) has every knob of every registered task (fields and
types from the task dataclasses in ``experiments.local.tasks.TASKS``: one place for them), each None by default, so
Hydra accepts ``task_knobs.X=...`` without ``+`` and checks its type. None means "the task's default" and is dropped
before the training config is built (:func:`task_knobs`), so config hashes are those of the plain dict. Knobs the
chosen task does not have, and values out of range, are reported by :func:`check_task_knobs` naming the knob, the
task's knobs with their defaults, and the task's own range message.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import experiments.local  # noqa: F401 - registers every task (countdown_trace) in TASKS
from experiments.local.tasks import TASKS
from experiments.sweep.naming import plain


def _schema() -> type:
    hints: dict[str, Any] = {}
    for cls in TASKS.values():
        types = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "name":
                continue
            hint = types[f.name]
            hints[f.name] = hint if hints.get(f.name, hint) == hint else Any  # same name, other type: untyped
    specs = [(n, (h | None) if h is not Any else Any, dataclasses.field(default=None)) for n, h in hints.items()]
    return dataclasses.make_dataclass("TaskKnobs", specs)


TaskKnobs = _schema()


def task_knobs(node: Any) -> dict[str, Any]:
    """The knobs a composed config sets (``task_knobs`` node or dict) as a plain dict, unset (None) ones dropped."""
    return {k: v for k, v in (plain(node) or {}).items() if v is not None}


def defaults(task: str) -> dict[str, Any]:
    """A task's knobs and their default values."""
    cls = TASKS[task]
    return {f.name: f.default for f in dataclasses.fields(cls) if f.name != "name"}


def check_task_knobs(task: str, knobs: dict[str, Any]) -> None:
    """ValueError naming the knob when ``task`` lacks one of ``knobs`` or a value is out of the task's range."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    own = defaults(task)
    listed = ", ".join(f"{k} (default {v!r})" for k, v in own.items())
    for key in knobs:
        if key not in own:
            raise ValueError(f"task_knobs.{key}: task {task} has no knob {key!r}; its knobs: {listed}")
    try:
        TASKS[task](**knobs)
    except (TypeError, ValueError) as e:
        bad = next((k for k in knobs if f" {k} " in f" {e} "), None)
        where = f"task_knobs.{bad}" if bad else "task_knobs"
        raise ValueError(f"{where}: {e} (task {task}; its knobs: {listed})") from None
