"""Training curves of a sweep from MLflow: Pass@k and Worst@k over training steps, EAD against fixed temperatures,
mean over seeds with a +-1 standard deviation band.

    python -m analysis.training_curves --experiment default --out figures/
    python -m analysis.training_curves --experiment paper_grid --out figures/ --tracking-uri http://host:5000

k is the runs' ``eval_k`` (16 by default; the metrics are the unbiased ``eval/pass_at_<k>`` and
``eval/worst_at_<k>``). One row of panels per setting that differs between runs other than the sampler and the seed
(algorithm, model size, TIS, ...). Writes ``<out>/training_curves_<experiment>.png`` and the tidy data it plotted as
``<out>/training_curves_<experiment>.csv``, and prints both paths.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from analysis.mlflow_loader import client_for, load_metrics, load_runs
from experiments.tracking import safe_name

log = logging.getLogger(__name__)

# Settings that split the figure into rows when they differ between runs (the sampler and the seed never do).
ROW_KEYS = ["backend", "task", "size", "algorithm.name", "tis.enabled", "tis.level", "tis.cap", "steps"]


def _condition_order(conditions: pd.Series) -> list[str]:
    """EAD variants first, then fixed temperatures from cold to hot."""

    def key(c: str) -> tuple[int, float, str]:
        if c.startswith("fixed "):
            try:
                return (1, float(c.split()[1]), c)
            except ValueError:
                return (1, 0.0, c)
        return (0, 0.0, c)

    return sorted(conditions.unique(), key=key)


def eval_k(runs: pd.DataFrame, k: int | None) -> int:
    """The k to plot: given, or the runs' common ``eval_k``."""
    if k is not None:
        return k
    ks = sorted({int(v) for v in runs.get("eval_k", pd.Series([16])).dropna()})
    if len(ks) != 1:
        raise ValueError(f"runs were evaluated with different eval_k {ks}; choose one with --k")
    return ks[0]


def row_labels(runs: pd.DataFrame) -> pd.Series:
    varying = [c for c in ROW_KEYS if c in runs and runs[c].astype(str).nunique() > 1]
    if not varying:
        return pd.Series("", index=runs.index)
    return runs.apply(lambda r: ", ".join(f"{c.split('.')[0]}={r[c]}" for c in varying), axis=1)


def plot(data: pd.DataFrame, k: int, title: str, out_png: Path) -> Path:
    """Draw the grid (rows: settings, columns: Pass@k, Worst@k) and save it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    metrics = [(f"eval/pass_at_{k}", f"Pass@{k}"), (f"eval/worst_at_{k}", f"Worst@{k}")]
    rows = sorted(data["row"].unique())
    order = _condition_order(data["condition"])
    seeds = data.groupby("condition")["run_id"].nunique()
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.6 * len(rows)), squeeze=False, sharex=True)
    for i, row in enumerate(rows):
        for j, (key, name) in enumerate(metrics):
            ax = axes[i][j]
            part = data[(data["row"] == row) & (data["key"] == key)]
            sns.lineplot(
                data=part,
                x="step",
                y="value",
                hue="condition",
                hue_order=[c for c in order if c in set(part["condition"])],
                palette=palette,
                errorbar="sd",
                marker="o",
                markersize=4,
                ax=ax,
                legend=(i == 0 and j == 1),
            )
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel(name)
            ax.set_xlabel("training step")
            ax.set_title(f"{name}{' - ' + row if row else ''}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = axes[0][1].get_legend_handles_labels()
    if axes[0][1].get_legend() is not None:
        axes[0][1].get_legend().remove()
    labels = [f"{lab} (n={seeds.get(lab, 0)})" for lab in labels]
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), title="sampling (runs)")
    fig.suptitle(f"{title}: mean over seeds, band = +-1 sd")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return out_png


def make_figure(
    experiment: str, out_dir: str | Path, tracking_uri: str | None = None, k: int | None = None, all_runs: bool = False
) -> tuple[Path, Path]:
    """Load the experiment's runs and their Pass@k / Worst@k histories from MLflow, plot, save; return (png, csv)."""
    client = client_for(tracking_uri)
    runs = load_runs(experiment, statuses=None if all_runs else ("FINISHED",), client=client)
    if runs.empty:
        which = "runs" if all_runs else "FINISHED runs (--all includes unfinished ones)"
        raise ValueError(f"experiment {experiment!r} has no {which} in {client.tracking_uri}")
    k = eval_k(runs, k)
    runs = runs.assign(row=row_labels(runs))
    data = load_metrics(experiment, [f"eval/pass_at_{k}", f"eval/worst_at_{k}"], runs=runs, client=client)
    if data.empty:
        raise ValueError(f"runs of {experiment!r} have no eval/pass_at_{k} or eval/worst_at_{k} metrics")
    out = Path(out_dir)
    stem = f"training_curves_{safe_name(experiment)}"
    png = plot(data, k, f"{experiment} ({len(runs)} runs)", out / f"{stem}.png")
    csv = out / f"{stem}.csv"
    cols = ["run_id", "run_name", "condition", "row", "seed", "key", "step", "value", "config_hash"]
    data[[c for c in cols if c in data]].to_csv(csv, index=False)
    return png, csv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.training_curves", description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", required=True, help="MLflow experiment (the sweep's experiment_name)")
    p.add_argument("--out", required=True, help="output directory for the PNG and CSV")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    p.add_argument("--k", type=int, default=None, help="k of Pass@k / Worst@k (default: the runs' eval_k)")
    p.add_argument("--all", action="store_true", help="include unfinished runs (default: FINISHED only)")
    ns = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        png, csv = make_figure(ns.experiment, ns.out, ns.tracking_uri, ns.k, ns.all)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"figure: {png.resolve()}")
    print(f"data:   {csv.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
