"""``python -m experiments.studies {entropy,branching,schedule} [--option value ...] [--run-dir DIR]``"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from experiments.local.cli import add_dataclass_options, collect
from experiments.studies import STUDIES, run_study
from experiments.tracking.hashing import config_hash
from experiments.tracking.loggers import JsonlLogger


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.studies", description=__doc__)
    sub = p.add_subparsers(dest="study", required=True)
    for name, cls in STUDIES.items():
        sp = sub.add_parser(name, help=(cls.__doc__ or name).strip().splitlines()[0])
        sp.add_argument("--run-dir", default=None, help="output directory (default: runs/study-<name>-<hash>)")
        add_dataclass_options(sp, cls)
    ns = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cls = STUDIES[ns.study]
    data = collect(ns, skip=("run_dir", "study"))
    try:
        kwargs = {}
        for k, v in data.items():
            default = getattr(cls(), k)
            kwargs[k] = dataclasses.replace(default, **v) if dataclasses.is_dataclass(default) else v
        cfg = cls(**kwargs).validate()
    except (TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir = Path(ns.run_dir or f"runs/study-{ns.study}-{config_hash(dataclasses.asdict(cfg))}")
    logger = JsonlLogger(run_dir)
    logger.log_params(dataclasses.asdict(cfg))
    rows = run_study(ns.study, cfg, logger)
    logger.finish("FINISHED")
    print(json.dumps({"run_dir": str(run_dir), "rows": len(rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
