"""Command line of the verl backend.

    python -m experiments.verl --preset qwen2.5-math-1.5b --dry-run            # print, start nothing
    python -m experiments.verl --preset qwen2.5-math-1.5b --dry-run --validate # + verl's own checks
    python -m experiments.verl --preset smoke --set algorithm.name=grpo --set tis.enabled=false run
    python -m experiments.verl run --config checkpoints/verl/<hash>/ead_config.json
    python -m experiments.verl --preset qwen2.5-math-7b --set resources.nnodes=2 sbatch [--submit]
    python -m experiments.verl prepare-data --out data/verl [--train-limit N] [--eval-n 16]
    python -m experiments.verl presets

Without a command (or with --dry-run) it prints the exact verl command and its overrides.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from experiments.verl.config import PRESETS, VerlRunConfig, apply_overrides, from_dict, preset
from experiments.verl.launch import dry_run


def _parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def load_config(args: argparse.Namespace) -> VerlRunConfig:
    """The config from --config (a JSON dict or a run record) or --preset, with --set overrides."""
    if args.config:
        data = json.loads(Path(args.config).read_text())
        cfg = from_dict(data.get("config", data) if "config_hash" in data else data)
    elif args.preset:
        cfg = preset(args.preset)
    else:
        raise SystemExit(f"give --preset (one of {sorted(PRESETS)}) or --config FILE")
    return apply_overrides(cfg, _parse_sets(args.set)).validate()


def _prepare_data(args: argparse.Namespace) -> None:
    from experiments.verl.data import EVAL_SAMPLERS, prepare_math500, prepare_numina

    out = Path(args.out)
    samplers = tuple(s for s in args.samplers.split(",") if s) if args.samplers else EVAL_SAMPLERS
    if not args.skip_train:
        p = prepare_numina(out / "numina_math" / "train.parquet", source=args.numina, limit=args.train_limit)
        print(f"train: {p}")
    p = prepare_math500(
        out / "math500" / "test.parquet", source=args.math500, samplers=samplers, n=args.eval_n, limit=args.eval_limit
    )
    print(f"eval:  {p}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.verl", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from a model preset")
    parser.add_argument("--config", help="JSON config (or an ead_run.json record) instead of a preset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted config override")
    parser.add_argument("--dry-run", action="store_true", help="print the verl command and overrides, start nothing")
    parser.add_argument("--validate", action="store_true", help="with --dry-run: compose and validate against verl")
    sub = parser.add_subparsers(dest="command")
    p_run = sub.add_parser("run", help="run verl's trainer here (on the Ray head node in a Slurm job)")
    p_run.add_argument("--config", dest="run_config", help="JSON config file (overrides the global --config)")
    p_run.add_argument("--no-check", action="store_true", help="skip the data-file preflight")
    p_sb = sub.add_parser("sbatch", help="print (or --submit) the multi-node Slurm command")
    p_sb.add_argument("--time", default="48:00:00")
    p_sb.add_argument("--submit", action="store_true", help="run sbatch instead of printing the command")
    p_data = sub.add_parser("prepare-data", help="write Numina-Math and MATH-500 in verl's parquet format")
    p_data.add_argument("--out", default="data/verl")
    p_data.add_argument("--numina", default="AI-MO/NuminaMath-CoT", help="hub name or local json/parquet file")
    p_data.add_argument("--math500", default="HuggingFaceH4/MATH-500", help="hub name or local json/parquet file")
    p_data.add_argument("--train-limit", type=int, default=None)
    p_data.add_argument("--eval-limit", type=int, default=None)
    p_data.add_argument("--eval-n", type=int, default=16, help="samples per validation prompt (sampled copies)")
    p_data.add_argument("--samplers", default=None, help="comma list of own,t1,greedy (default: all three)")
    p_data.add_argument("--skip-train", action="store_true")
    sub.add_parser("presets", help="list the presets")
    args = parser.parse_args(argv)

    if args.command == "presets":
        for name, spec in PRESETS.items():
            print(f"{name:24s} {spec['model']}")
        return 0
    if args.command == "prepare-data":
        _prepare_data(args)
        return 0
    if args.command == "run" and args.run_config:
        args.config = args.run_config
    cfg = load_config(args)
    if args.dry_run or args.command is None:
        print(dry_run(cfg, validate=args.validate))
        return 0
    if args.command == "run":
        from experiments.verl.launch import run

        result = run(cfg, check=not args.no_check)
        print(f"verl exited with {result.returncode} ({result.status}); checkpoints in {result.ckpt_dir}")
        return result.returncode
    if args.command == "sbatch":
        from experiments.verl.launch import sbatch_command

        cmd = sbatch_command(cfg, time=args.time)
        if args.submit:
            return subprocess.run(cmd, check=False).returncode
        print(" ".join(shlex.quote(c) for c in cmd))
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
