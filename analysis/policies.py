"""The trained policies of an experiment, for study jobs: ``init_from=`` takes a run directory's ``policy/``.

    python -m analysis.policies --experiment default --seed 0 [--runs-root runs]   # prints dir1,dir2,...

One policy per condition among the FINISHED training runs of that seed (the main command studies the warm start and
these with the same entropy and branching jobs; figures label them 'trained with <condition>').
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.mlflow_loader import load_runs
from experiments.sweep.jobs import run_dir_for


def trained_policies(
    experiment: str, seed: int, runs_root: str | Path = "runs", tracking_uri: str | None = None
) -> dict[str, Path]:
    """{condition: policy directory} of the experiment's finished training runs of ``seed`` that saved a policy."""
    runs = load_runs(experiment, tracking_uri=tracking_uri, jobs=["train"], params={"seed": seed})
    out: dict[str, Path] = {}
    for _, run in runs.sort_values("condition").iterrows():
        policy = run_dir_for(runs_root, experiment, str(run["config_hash"]), Path.cwd()) / "policy"
        if (policy / "config.json").exists():
            out.setdefault(str(run["condition"]), policy)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs-root", default="runs")
    ap.add_argument("--tracking-uri", default=None)
    ns = ap.parse_args(argv)
    found = trained_policies(ns.experiment, ns.seed, ns.runs_root, ns.tracking_uri)
    for condition, path in found.items():
        print(f"{condition}: {path}", file=sys.stderr)
    print(",".join(str(p) for p in found.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
