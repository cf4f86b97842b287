"""Regenerate every figure and table the runs of an MLflow experiment support, and log them to a figures run.

    python -m analysis.figures --experiment default [--out outputs/figures/default] [--tracking-uri URI]
                               [--decoder eval_t1|eval] [--condition LABEL ...] [--where PARAM=VALUE ...]

Loads the experiment's runs once (bulk queries, ``analysis.mlflow_loader``), draws each figure family of
``analysis.plots`` its runs support (PNG and PDF), writes the final-metrics table (Markdown and LaTeX), logs every file
as an artifact of a new run tagged ``job=figures`` in the (first) experiment (loaders leave such runs out), and prints
what it made and, for every figure it could not draw, why. Exit status: 0 when at least one figure was drawn, 1 when
none could be, 2 when an experiment does not exist, 3 when a figure failed with an error (a bug; the others are
still drawn).

``--condition`` and ``--where`` draw a subset: one preset of an experiment that several share (``beyond``:
``--condition reverse --condition EAD --condition "fixed 1.0" --where task_knobs.decision=early``). Condition labels
are those of the whole experiment, as its verdict names them.

Figures (file names): schedule_curves (needs no runs), effective_schedule, entropy_by_position (entropy study),
entropy_by_position_training (training runs' last evaluation), branching, training_pass_worst,
training_pass_worst_bootstrap, training_dynamics (Mean@k, entropy, response length), tis_ablation, decay_ablation,
inference_scaling, rollout_scaling; tables: final_metrics.{md,tex}.

Evaluation metrics (Pass@k, Worst@k, Mean@k and their bootstrap variants) are those of the common decoder by default:
every run scored at temperature 1.0 whatever it trained with (``eval_t1/*``), so conditions are compared on the same
footing; ``--decoder eval`` shows each run scored with its own sampler instead (``eval/*``). Every label and title
says which decoder it shows; greedy accuracy is its own decoder.
"""

from __future__ import annotations

import argparse
import functools
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import plots
from analysis.mlflow_loader import (
    client_for,
    load_metrics,
    load_runs,
    load_tables,
    log_report_run,
    missing_metrics,
    parse_where,
    select_runs,
)
from analysis.plots import NoData
from analysis.stats import COMMON_DECODER, DECODERS, decoder_note, metric_keys, with_decoder
from analysis.style import save
from analysis.tables import DEFAULT_TABLE_METRICS, final_metrics_table, format_table, to_latex, to_markdown
from experiments.tracking import safe_name

# Every metric a training figure or table may use (names of analysis.stats.METRICS).
TRAIN_METRICS = [
    "pass", "worst", "mean", "boot_pass", "boot_worst", "greedy", "entropy", "length", "clipfrac", "grad_norm",
]  # fmt: skip


@dataclass
class Report:
    """What a regeneration made and what it could not, with reasons."""

    made: dict[str, list[Path]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    run_id: str | None = None

    @property
    def from_runs(self) -> list[str]:
        """Figures drawn from run data (the schedule figure needs none; tables are not figures)."""
        return [n for n in self.made if n not in ("schedule_curves", "final_metrics")]

    def lines(self) -> list[str]:
        out = [f"note: {n}" for n in self.notes]
        out += [f"made: {name}: {', '.join(str(p) for p in paths)}" for name, paths in self.made.items()]
        out += [f"missing: {name}: {why}" for name, why in self.missing.items()]
        out += [f"FAILED: {name}: {why}" for name, why in self.failed.items()]
        return out


def policy_sources(policy: pd.Series, train: pd.DataFrame) -> pd.Series:
    """Where a study's policy came from: 'warm start' (no policy given), 'trained with <condition>' for the
    ``policy/`` of a training run of the experiment (matched by the run directory's config hash), else the path."""
    by_hash = dict(zip(train["config_hash"].astype(str), train["condition"].astype(str))) if len(train) else {}

    def source(path: Any) -> str:
        if path is None or (isinstance(path, float) and pd.isna(path)) or str(path) in ("", "None"):
            return "warm start"
        run_dir = Path(str(path)).parent.name
        return f"trained with {by_hash[run_dir]}" if run_dir in by_hash else str(path)

    return policy.map(source)


def _studies(runs: pd.DataFrame, job: str) -> pd.DataFrame:
    return runs[runs["job"] == job] if "job" in runs else runs.iloc[:0]


def build_figures(
    runs: pd.DataFrame, client: Any, width: str = "double", decoder: str = COMMON_DECODER
) -> tuple[dict[str, Callable[[], Any]], dict[str, Callable[[], pd.DataFrame]], list[str]]:
    """Figure builders (name -> zero-argument function returning a Figure or raising NoData) and table builders for
    the runs, sharing one bulk load of the training metrics; plus notes on metrics some runs lack. Evaluation panels
    use ``decoder`` (default: the common decoder, temperature 1.0 for every condition); their labels say which."""
    train = _studies(runs, "train")
    dec = functools.partial(with_decoder, decoder=decoder)
    said = decoder_note(decoder)
    notes: list[str] = []
    cache: dict[str, pd.DataFrame] = {}

    def long() -> pd.DataFrame:
        if "long" not in cache:
            if train.empty:
                raise NoData("no finished training runs (job=train)")
            keys = metric_keys(dec(TRAIN_METRICS), train)
            cache["long"] = load_metrics([], keys, runs=train, client=client)
            gone = missing_metrics(cache["long"], train, keys)
            gone = gone[_own_k(gone, train)] if not gone.empty else gone
            for key, g in gone.groupby("key"):
                notes.append(f"{len(g)} of {len(train)} training run(s) never logged {key}")
        return cache["long"]

    def table(job: str, name: str, steps: str = "all") -> pd.DataFrame:
        sel = _studies(runs, job)
        if sel.empty:
            raise NoData(f"no finished runs with job={job}")
        t = load_tables([], name, runs=sel, client=client, steps=steps)
        if t.empty:
            raise NoData(f"none of the {len(sel)} job={job} run(s) logged table {name!r}")
        if "policy" in t:
            t["policy_source"] = policy_sources(t["policy"], train)
        return t

    def entropy_training() -> Any:
        t = table("train", "entropy_by_position", steps="last")
        title = (
            "Policy entropy against response position (own sampler's samples at each training run's last evaluation)"
        )
        return plots.entropy_by_position(t, width=width, title=title)

    figures: dict[str, Callable[[], Any]] = {
        "schedule_curves": lambda: plots.schedule_curves(width=width),
        "effective_schedule": lambda: plots.effective_schedule(table("schedule", "effective_schedule"), width=width),
        "entropy_by_position": lambda: plots.entropy_by_position(table("entropy", "entropy_by_position"), width=width),
        "entropy_by_position_training": entropy_training,
        "branching": lambda: plots.branching(table("branching", "branching"), width=width),
        "training_pass_worst": lambda: plots.training_curves(
            long(), dec(["pass", "worst"]), width=width, title=f"Pass@{{k}} and Worst@{{k}} (unbiased), {said}"
        ),
        "training_pass_worst_bootstrap": lambda: plots.training_curves(
            long(),
            dec(["boot_pass", "boot_worst"]),
            width=width,
            title=f"Pass@{{k}} and Worst@{{k}} (bootstrap, verl style), {said}",
        ),
        "training_dynamics": lambda: plots.training_curves(
            long(),
            dec(["mean", "entropy", "length"]),
            width=width,
            title=f"Mean@{{k}} ({said}), entropy and response length",
        ),
        "tis_ablation": lambda: plots.tis_ablation(long(), dec(["worst", "clipfrac", "grad_norm"]), width=width),
        "decay_ablation": lambda: plots.decay_ablation(long(), dec(["pass"])[0], width=width),
        "inference_scaling": lambda: plots.inference_scaling(table("inference", "infer_scaling"), width=width),
        "rollout_scaling": lambda: plots.rollout_scaling(long(), dec(["pass"])[0], width=width),
    }
    tables: dict[str, Callable[[], pd.DataFrame]] = {
        "final_metrics": lambda: final_metrics_table(long(), dec(DEFAULT_TABLE_METRICS))
    }
    return figures, tables, notes


def _own_k(gone: pd.DataFrame, runs: pd.DataFrame) -> pd.Series:
    """Which missing (run, key) rows count: an eval key only for runs evaluated with its k (a run with eval_k=2 never
    logs pass_at_16)."""
    k = gone["run_id"].map(runs.set_index("run_id")["eval_k"] if "eval_k" in runs else {}).fillna(16).astype(int)
    per_k = gone["key"].str.startswith("eval") & gone["key"].str.contains("_at_")
    own = pd.Series([key.endswith(f"_at_{kk}") for key, kk in zip(gone["key"], k)], index=gone.index, dtype=bool)
    return ~per_k | own


def make_figures(
    experiments: str | Sequence[str],
    out_dir: str | Path,
    tracking_uri: str | None = None,
    *,
    all_runs: bool = False,
    log_run: bool = True,
    width: str = "double",
    decoder: str = COMMON_DECODER,
    conditions: Sequence[str] | None = None,
    where: dict[str, Any] | None = None,
) -> Report:
    """Draw every figure and table the experiments' runs support into ``out_dir``; log them to a figures run.

    Raises ValueError when an experiment does not exist, or a condition or param of the selection does not.
    Unfinished runs (RUNNING, FAILED, KILLED) are left out unless ``all_runs`` (the report counts them).
    ``conditions`` / ``where``: only those runs (``analysis.mlflow_loader.select_runs``)."""
    names = [experiments] if isinstance(experiments, str) else list(experiments)
    client = client_for(tracking_uri)
    runs = load_runs(names, statuses=None, client=client)
    report = Report()
    if not runs.empty and not all_runs:
        dropped = runs[runs["status"] != "FINISHED"]
        for status, n in dropped["status"].value_counts().sort_index().items():
            report.notes.append(f"{n} {status} run(s) left out (--all-runs includes them)")
        runs = runs[runs["status"] == "FINISHED"]
    if conditions or where:
        runs = select_runs(runs, conditions, where)
        chosen = [*(conditions or []), *(f"{k}={v}" for k, v in (where or {}).items())]
        report.notes.append(f"{len(runs)} run(s) selected: {', '.join(chosen)}")
    out = Path(out_dir)
    figures, tables, notes = build_figures(runs, client, width, decoder)
    for name, build in figures.items():
        fig = _attempt(report, name, build)
        if fig is not None:
            report.made[name] = save(fig, out, name)
    for name, build in tables.items():
        frame = _attempt(report, name, build)
        if frame is None:
            continue
        if frame.empty:
            report.missing[name] = "no final metrics in the training runs"
            continue
        shown = format_table(frame)
        md, tex = out / f"{name}.md", out / f"{name}.tex"
        md.write_text(to_markdown(shown))
        caption = f"Final metrics per condition ({', '.join(names)}; {decoder_note(decoder)}): mean ± 95% CI over seeds"
        tex.write_text(to_latex(shown, caption=caption, label=f"tab:{safe_name(name)}"))
        report.made[name] = [md, tex]
    report.notes += notes
    if log_run and report.from_runs:
        report.run_id = log_figures_run(client, names[0], report, names)
    return report


def _attempt(report: Report, name: str, build: Callable[[], Any]) -> Any:
    """``build()``, or None with the reason recorded: NoData as missing, any other error as failed (a bug: shown with
    its traceback on stderr, and the exit status says so)."""
    try:
        return build()
    except NoData as e:
        report.missing[name] = str(e)
    except Exception as e:  # noqa: BLE001 - one broken figure must not hide the others
        traceback.print_exc()
        report.failed[name] = f"{type(e).__name__}: {e}"
    return None


def log_figures_run(client: Any, experiment: str, report: Report, sources: Sequence[str]) -> str:
    """A FINISHED run tagged job=figures in ``experiment`` holding the files made (artifact folder ``figures/``)."""
    files = [p for paths in report.made.values() for p in paths]
    texts = {"report.txt": "\n".join(report.lines()) + "\n"}
    return log_report_run(client, experiment, "figures", files, {"figures_of": ",".join(sources)}, texts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.figures", description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", action="append", required=True, help="MLflow experiment (repeat to pool several)")
    p.add_argument("--out", default=None, help="output directory (default: outputs/figures/<experiment>)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    p.add_argument("--all-runs", action="store_true", help="include RUNNING / FAILED / KILLED runs")
    p.add_argument("--width", choices=["single", "double"], default="double", help="column width of the figures")
    p.add_argument("--no-log", action="store_true", help="do not log the files to a figures run in MLflow")
    p.add_argument(
        "--decoder", choices=sorted(DECODERS), default=COMMON_DECODER,
        help="decoder of the evaluation panels: eval_t1 (T=1.0 for every condition, default) or eval (own sampler)",
    )  # fmt: skip
    p.add_argument("--condition", action="append", default=None, help="only this condition (repeatable)")
    p.add_argument("--where", action="append", default=[], help="only runs with PARAM=VALUE (repeatable)")
    ns = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    out = Path(ns.out or Path("outputs") / "figures" / safe_name("+".join(ns.experiment)))
    try:
        where = parse_where(ns.where)
        report = make_figures(
            ns.experiment,
            out,
            ns.tracking_uri,
            all_runs=ns.all_runs,
            log_run=not ns.no_log,
            width=ns.width,
            decoder=ns.decoder,
            conditions=ns.condition,
            where=where,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    print(f"{len(report.made)} made, {len(report.missing)} missing; files in {out.resolve()}")
    if report.run_id:
        print(f"logged to MLflow run {report.run_id} (tag job=figures)")
    if report.failed:
        print(f"error: {len(report.failed)} figure(s) failed (FAILED above)", file=sys.stderr)
        return 3
    if not report.from_runs:
        print("error: no figure could be drawn from the runs (see 'missing' above)", file=sys.stderr)
        return 1
    return 0


__all__ = ["Report", "build_figures", "log_figures_run", "main", "make_figures"]

if __name__ == "__main__":
    sys.exit(main())
