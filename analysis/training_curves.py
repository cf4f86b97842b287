"""Training curves of a sweep from MLflow: Pass@k and Worst@k over training steps, EAD against fixed temperatures,
mean over seeds with a 95% confidence band (``analysis.plots.training_curves``; all figures: ``analysis.figures``).

    python -m analysis.training_curves --experiment default --out figures/
    python -m analysis.training_curves --experiment paper_grid --out figures/ --tracking-uri http://host:5000

k is the runs' ``eval_k`` (16 by default; the metrics are the unbiased ``eval_t1/pass_at_<k>`` and
``eval_t1/worst_at_<k>``: every run scored at temperature 1.0, whatever it trained with; ``--decoder eval`` plots
``eval/*``, each run scored with its own sampler). One column of panels per algorithm and model size. Writes
``<out>/training_curves_<experiment>.png`` (and ``.pdf``) and the tidy data it plotted as
``<out>/training_curves_<experiment>.csv``, and prints the paths.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from analysis.mlflow_loader import client_for, load_metrics, load_runs
from analysis.plots import NoData, training_curves
from analysis.stats import COMMON_DECODER, DECODERS, decoder_note, eval_ks, metric_keys, select_metric, with_decoder
from analysis.style import save
from experiments.tracking import safe_name

log = logging.getLogger(__name__)


def eval_k(runs: pd.DataFrame, k: int | None) -> int:
    """The k to plot: given, or the runs' common ``eval_k``."""
    if k is not None:
        return k
    ks = eval_ks(runs)
    if len(ks) != 1:
        raise ValueError(f"runs were evaluated with different eval_k {ks}; choose one with --k")
    return ks[0]


def make_figure(
    experiment: str,
    out_dir: str | Path,
    tracking_uri: str | None = None,
    k: int | None = None,
    all_runs: bool = False,
    decoder: str = COMMON_DECODER,
) -> tuple[Path, Path]:
    """Load the experiment's training runs and their Pass@k / Worst@k histories from MLflow, plot, save; return
    (png, csv)."""
    client = client_for(tracking_uri)
    runs = load_runs(experiment, statuses=None if all_runs else ("FINISHED",), client=client, jobs=["train"])
    if runs.empty:
        which = "training runs" if all_runs else "FINISHED training runs (--all includes unfinished ones)"
        raise ValueError(f"experiment {experiment!r} has no {which} in {client.tracking_uri}")
    k = eval_k(runs, k)
    runs = runs.assign(eval_k=k)  # plot this k for every run
    names = with_decoder(["pass", "worst"], decoder)
    data = load_metrics(experiment, metric_keys(names, runs), runs=runs, client=client)
    data = pd.concat([select_metric(data, n) for n in names])
    try:
        fig = training_curves(data, names, title=f"{experiment} ({len(runs)} runs), {decoder_note(decoder)}")
    except NoData as e:
        raise ValueError(f"runs of {experiment!r}: {e}") from None
    out = Path(out_dir)
    stem = f"training_curves_{safe_name(experiment)}"
    png, _ = save(fig, out, stem)
    csv = out / f"{stem}.csv"
    cols = ["run_id", "run_name", "condition", "algorithm.name", "size", "seed", "key", "step", "value", "config_hash"]
    data[[c for c in cols if c in data]].to_csv(csv, index=False)
    return png, csv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.training_curves", description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True, help="MLflow experiment (the sweep's experiment_name)")
    p.add_argument("--out", required=True, help="output directory for the PNG, PDF and CSV")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    p.add_argument("--k", type=int, default=None, help="k of Pass@k / Worst@k (default: the runs' eval_k)")
    p.add_argument("--all", action="store_true", help="include unfinished runs (default: FINISHED only)")
    p.add_argument(
        "--decoder", choices=sorted(DECODERS), default=COMMON_DECODER,
        help="eval_t1: every run scored at T=1.0 (default); eval: each run scored with its own sampler",
    )  # fmt: skip
    ns = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        png, csv = make_figure(ns.experiment, ns.out, ns.tracking_uri, ns.k, ns.all, ns.decoder)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"figure: {png.resolve()}")
    print(f"data:   {csv.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
