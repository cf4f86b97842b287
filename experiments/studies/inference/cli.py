"""Command-line options generated from config dataclasses, for the inference study in `.venv-vllm` (no Hydra there;
every other job takes Hydra overrides through sweep.py). One option per field, nested with dots."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any


def _parser_type(tp: Any) -> Any:
    union = isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union
    base = [a for a in typing.get_args(tp) if a is not type(None)][0] if union else tp
    if base is bool:
        return lambda s: {"true": True, "false": False, "1": True, "0": False}[s.lower()]
    if base in (dict, list) or typing.get_origin(base) in (dict, list):
        return json.loads
    return base


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--field`` (``--a-b`` for a_b) and ``--sub.field`` options for every field of ``cls``.

    Defaults are suppressed, so only given options reach ``collect``; help shows the real default.
    """
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            group = parser.add_argument_group(f.name)
            sub_hints = typing.get_type_hints(type(value))
            for g in dataclasses.fields(value):
                group.add_argument(
                    f"--{f.name}.{g.name}",
                    dest=f"{f.name}.{g.name}",
                    type=_parser_type(sub_hints[g.name]),
                    default=argparse.SUPPRESS,
                    help=f"{g.metadata.get('help', '')} (default: {getattr(value, g.name)!r})",
                )
        else:
            parser.add_argument(
                f"--{f.name.replace('_', '-')}",
                dest=f.name,
                type=_parser_type(hints[f.name]),
                default=argparse.SUPPRESS,
                help=f"{f.metadata.get('help', '')} (default: {value!r})",
            )


def collect(ns: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Nested dict of the options given on the command line (``a.b`` -> {"a": {"b": ...}})."""
    data: dict[str, Any] = {}
    for key, value in vars(ns).items():
        if key in skip:
            continue
        if "." in key:
            top, sub = key.split(".", 1)
            data.setdefault(top, {})[sub] = value
        else:
            data[key] = value
    return data
