"""Command line: ``python -m experiments.rlvr [--steps 100] [--algorithm.name dapo] [--sampling.kind fixed] ...``

Every field of RLVRConfig is an option (nested fields with dotted names); values are checked before
any work starts. Output goes to --run-dir (default runs/<config hash>): metrics.jsonl, tables/,
checkpoint.pt, policy/ and DONE.json. Re-running the same command resumes or returns at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import types
import typing
from typing import Any

from experiments.rlvr.config import RLVRConfig, from_dict
from experiments.rlvr.train import run


def _parser_type(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union else tp
    if base is bool:
        return lambda s: {"true": True, "false": False, "1": True, "0": False}[s.lower()]
    if base is dict:
        return json.loads
    return base


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.rlvr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run-dir", default=None, help="output directory (default: runs/<config hash>)")
    p.add_argument("--config", default=None, help="JSON file with (part of) the config; flags override it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    hints = typing.get_type_hints(RLVRConfig)
    defaults = RLVRConfig()
    for f in dataclasses.fields(RLVRConfig):
        sub = getattr(defaults, f.name)
        if dataclasses.is_dataclass(sub):
            sub_hints = typing.get_type_hints(type(sub))
            group = p.add_argument_group(f.name)
            for g in dataclasses.fields(sub):
                group.add_argument(
                    f"--{f.name}.{g.name}",
                    dest=f"{f.name}.{g.name}",
                    type=_parser_type(sub_hints[g.name]),
                    default=argparse.SUPPRESS,
                    help=f"{g.metadata.get('help', '')} (default: {getattr(sub, g.name)!r})",
                )
        else:
            p.add_argument(
                f"--{f.name.replace('_', '-')}",
                dest=f.name,
                type=_parser_type(hints[f.name]),
                default=argparse.SUPPRESS,
                help=f"{f.metadata.get('help', '')} (default: {sub!r})",
            )
    return p


def config_from_args(ns: argparse.Namespace) -> RLVRConfig:
    data: dict[str, Any] = json.load(open(ns.config)) if ns.config else {}
    for key, value in vars(ns).items():
        if key in ("run_dir", "config", "quiet"):
            continue
        if "." in key:
            top, sub = key.split(".", 1)
            data.setdefault(top, {})[sub] = value
        else:
            data[key] = value
    return from_dict(data)


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = config_from_args(ns).validate()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    final = run(cfg, run_dir=ns.run_dir, progress=not ns.quiet)
    keys = [k for k in final if k.startswith(("eval/", "eval_t1/pass", "eval_greedy"))]
    print(json.dumps({k: round(final[k], 4) for k in sorted(keys)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
