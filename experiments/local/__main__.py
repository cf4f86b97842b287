"""Command line: ``python -m experiments.local [--steps 100] [--algorithm.name dapo] [--sampling.kind fixed] ...``

Every field of RLVRConfig is an option (nested fields with dotted names); values are checked before
any work starts. Output goes to --run-dir (default runs/<config hash>): metrics.jsonl, tables/,
checkpoint.pt, policy/ and DONE.json. Re-running the same command resumes or returns at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from experiments.local.cli import add_dataclass_options, collect
from experiments.local.config import RLVRConfig, from_dict
from experiments.local.train import run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.local", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run-dir", default=None, help="output directory (default: runs/<config hash>)")
    p.add_argument("--config", default=None, help="JSON file with (part of) the config; flags override it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_options(p, RLVRConfig)
    return p


def config_from_args(ns: argparse.Namespace) -> RLVRConfig:
    data: dict[str, Any] = json.load(open(ns.config)) if ns.config else {}
    for key, value in collect(ns, skip=("run_dir", "config", "quiet")).items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) and key != "task_knobs" else value
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
