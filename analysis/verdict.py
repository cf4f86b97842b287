"""Does a condition beat the baseline? Paired differences with a bootstrap over seeds and eval prompts.

    python -m analysis.verdict --experiment NAME [--baseline "fixed 1.0"] [--metric eval_t1/pass_at_16 ...]
                               [--condition LABEL ...] [--where PARAM=VALUE ...]

For each condition against the baseline, within each setting (algorithm, model size, task: whatever varies besides
the sampler and the seed), the verdict pairs runs by seed - same seed, same eval prompts, same warm start - and
reports two differences of a metric (condition minus baseline):

* at the final evaluation, and
* in the area under the eval curve (the trapezoid over the eval steps, divided by their span: the curve's mean
  height, so it is on the metric's own scale),

each with a 95% percentile interval from a two-level bootstrap: seeds drawn with replacement, then, within each
drawn seed, eval prompts drawn with replacement (the same prompts for condition and baseline: they are paired). The
plain-words column says ``better`` when the interval lies above 0, ``worse`` when below, and ``no detectable
difference`` otherwise. Per-prompt data comes from each run's ``eval_counts`` tables (correct samples per prompt
and decoder at every evaluation); runs without them fall back to the logged metric, resampling seeds only (the
``resampled`` column says which). The two-level resampling is why this is written out rather than taken from
``scipy.stats.bootstrap``, which resamples one level.

Metric names are the logged ones (``docs/metrics.md``); by default the common decoders that score every condition
alike: ``eval_t1/pass_at_16``, ``eval_t1/mean_at_16``, ``eval_t1/worst_at_16`` and ``eval_greedy/accuracy``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ead_core.metrics import mean_at_k, pass_at_k, worst_at_k

DEFAULT_METRICS = ("eval_t1/pass_at_16", "eval_t1/mean_at_16", "eval_t1/worst_at_16", "eval_greedy/accuracy")
COUNTS_TABLE = "eval_counts"
BETTER, WORSE, SAME, TOO_FEW = "better", "worse", "no detectable difference", "too few seeds"
_METRIC = re.compile(r"^(?P<decoder>[A-Za-z0-9_]+)/(?P<kind>pass|worst|mean|best)_at_(?P<k>\d+)$")


# ---------------------------------------------------------------------------------------------------------------------
# The statistics (pure)
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedDifference:
    """Condition minus baseline: point estimates and percentile intervals, at the final step and for the area."""

    final: float
    final_lo: float
    final_hi: float
    auc: float
    auc_lo: float
    auc_hi: float
    seeds: int
    prompts: int


def curve_area(values: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Mean height of the curve(s) ``values[..., t]`` over ``steps`` (trapezoid / span); for one step, the value."""
    steps = np.asarray(steps, dtype=np.float64)
    if steps.size == 1:
        return values[..., 0]
    return np.trapezoid(values, steps, axis=-1) / (steps[-1] - steps[0])


def paired_bootstrap(
    cond: np.ndarray, base: np.ndarray, steps: Sequence[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> PairedDifference:
    """Differences of ``cond`` and ``base``, arrays (seeds, steps, prompts) of per-prompt values paired by seed and
    prompt, with a two-level percentile bootstrap (seeds, then prompts within each drawn seed)."""
    cond, base = np.asarray(cond, dtype=np.float64), np.asarray(base, dtype=np.float64)
    if cond.shape != base.shape or cond.ndim != 3:
        raise ValueError(
            f"cond and base must be (seeds, steps, prompts) arrays of one shape, got {cond.shape}, {base.shape}"
        )
    S, T, P = cond.shape
    steps_arr = np.asarray(steps, dtype=np.float64)
    if steps_arr.shape != (T,):
        raise ValueError(f"steps must hold one value per step ({T}), got {steps_arr.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = cond - base  # (S, T, P)
    point = d.mean(axis=(0, 2))
    final, auc = float(point[-1]), float(curve_area(point, steps_arr))
    if S < 2:
        nan = float("nan")
        return PairedDifference(final, nan, nan, auc, nan, nan, S, P)
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, S, size=(n_boot, S))
    prompt_idx = rng.integers(0, P, size=(n_boot, S, P))
    # per draw: mean over the drawn seeds' drawn prompts of the per-step differences -> (n_boot, T)
    per_seed = np.stack([d[seed_idx[:, s][:, None], :, prompt_idx[:, s, :]].mean(axis=1) for s in range(S)], axis=1)
    curves = per_seed.mean(axis=1)
    tail = (1 - level) / 2 * 100
    f_lo, f_hi = np.percentile(curves[:, -1], [tail, 100 - tail])
    a_lo, a_hi = np.percentile(curve_area(curves, steps_arr), [tail, 100 - tail])
    return PairedDifference(final, float(f_lo), float(f_hi), auc, float(a_lo), float(a_hi), S, P)


def in_words(lo: float, hi: float) -> str:
    """'better' when the interval lies above 0, 'worse' below, else 'no detectable difference'."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return TOO_FEW
    return BETTER if lo > 0 else WORSE if hi < 0 else SAME


def check_metric(metric: str) -> None:
    """Raise ValueError unless ``metric`` names a per-prompt metric the verdict can compute."""
    if not (metric.endswith("/accuracy") or _METRIC.match(metric)):
        raise ValueError(
            "metric must look like '<decoder>/pass_at_<k>' (pass|worst|mean|best) or '<decoder>/accuracy', "
            f"got {metric!r}"
        )


def per_prompt_values(metric: str, correct: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per-prompt values of ``metric`` (``<decoder>/pass_at_16``, ``.../accuracy``) from correct counts of n samples."""
    if metric.endswith("/accuracy"):
        return np.asarray(correct, dtype=np.float64) / np.asarray(n, dtype=np.float64)
    check_metric(metric)
    m = _METRIC.match(metric)
    assert m is not None
    k, kind = int(m["k"]), m["kind"]
    fn = {"pass": pass_at_k, "best": pass_at_k, "worst": worst_at_k, "mean": mean_at_k}[kind]
    return np.asarray(fn(np.asarray(n), np.asarray(correct), k), dtype=np.float64)


def decoder_of(metric: str) -> str:
    """The decoder a metric is scored with: 'eval' (the run's own sampler), 'eval_t1', 'eval_greedy'."""
    return metric.split("/", 1)[0]


# ---------------------------------------------------------------------------------------------------------------------
# From runs to a table
# ---------------------------------------------------------------------------------------------------------------------


def _arrays(frame: pd.DataFrame, seeds: Sequence[Any], steps: Sequence[float]) -> np.ndarray | None:
    """(seeds, steps, prompts) of ``value`` from a long frame with seed, step, prompt, value; None when incomplete."""
    cube = frame.pivot_table(index=["seed", "step"], columns="prompt", values="value", aggfunc="last")
    full = pd.MultiIndex.from_product([list(seeds), list(steps)], names=["seed", "step"])
    cube = cube.reindex(full)
    if cube.isna().to_numpy().any():
        return None
    return cube.to_numpy().reshape(len(seeds), len(steps), cube.shape[1])


def verdict(
    values: pd.DataFrame,
    baseline: str = "fixed 1.0",
    metrics: Sequence[str] = DEFAULT_METRICS,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """The verdict table from per-prompt values.

    ``values``: long frame with columns setting, condition, seed, step, metric, prompt, value (one row per prompt; a
    run without per-prompt data has a single prompt 0 holding the metric itself) and ``resampled`` ('seeds x prompts'
    or 'seeds'). Each (setting, condition other than the baseline, metric) gives a row over the seeds both share and
    the eval steps every one of those runs logged.
    """
    rows = []
    for (setting, metric), grp in values.groupby(["setting", "metric"], sort=False):
        if metric not in metrics:
            continue
        base = grp[grp["condition"] == baseline]
        for condition, cond in grp.groupby("condition", sort=False):
            if condition == baseline:
                continue
            row: dict[str, Any] = {"setting": setting, "condition": condition, "baseline": baseline, "metric": metric}
            seeds = sorted(set(cond["seed"]) & set(base["seed"]))
            both = pd.concat([cond, base])
            both = both[both["seed"].isin(seeds)]
            per_run_steps = both.groupby(["condition", "seed"])["step"].agg(lambda s: frozenset(s))
            steps = sorted(frozenset.intersection(*per_run_steps)) if len(per_run_steps) else []
            c = _arrays(cond[cond["seed"].isin(seeds)], seeds, steps) if seeds and steps else None
            b = _arrays(base[base["seed"].isin(seeds)], seeds, steps) if seeds and steps else None
            if c is None or b is None or c.shape != b.shape:
                rows.append(row | {"seeds": len(seeds), "verdict": TOO_FEW if len(seeds) < 2 else "no paired data"})
                continue
            diff = paired_bootstrap(c, b, steps, n_boot=n_boot, seed=seed)
            rows.append(
                row
                | {
                    "final_step": steps[-1],
                    "baseline_final": float(b[:, -1].mean()),
                    "condition_final": float(c[:, -1].mean()),
                    "diff_final": diff.final,
                    "final_lo": diff.final_lo,
                    "final_hi": diff.final_hi,
                    "diff_auc": diff.auc,
                    "auc_lo": diff.auc_lo,
                    "auc_hi": diff.auc_hi,
                    "seeds": diff.seeds,
                    "prompts": diff.prompts,
                    "resampled": str(both["resampled"].iloc[0]),
                    "verdict": in_words(diff.final_lo, diff.final_hi),
                    "verdict_auc": in_words(diff.auc_lo, diff.auc_hi),
                }
            )
    return pd.DataFrame(rows)


def _fmt_interval(point: float, lo: float, hi: float) -> str:
    if not np.isfinite(point):
        return ""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{point:+.3f}"
    return f"{point:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def format_verdict(table: pd.DataFrame) -> pd.DataFrame:
    """The table as people read it: one row per comparison, intervals as text, decoder named."""
    if table.empty:
        return pd.DataFrame(columns=["setting", "condition", "metric", "decoder", "verdict"])
    t = table.copy()
    for col in (
        "diff_final",
        "final_lo",
        "final_hi",
        "diff_auc",
        "auc_lo",
        "auc_hi",
        "baseline_final",
        "condition_final",
    ):
        if col not in t:
            t[col] = np.nan
    out = pd.DataFrame(
        {
            "setting": t["setting"],
            "condition": t["condition"] + " vs " + t["baseline"],
            "metric": t["metric"],
            "decoder": t["metric"].map(decoder_of),
            "baseline": t["baseline_final"].map(lambda v: f"{v:.3f}" if np.isfinite(v) else ""),
            "condition value": t["condition_final"].map(lambda v: f"{v:.3f}" if np.isfinite(v) else ""),
            "final diff [95% CI]": [_fmt_interval(*v) for v in zip(t["diff_final"], t["final_lo"], t["final_hi"])],
            "area diff [95% CI]": [_fmt_interval(*v) for v in zip(t["diff_auc"], t["auc_lo"], t["auc_hi"])],
            "seeds": t["seeds"],
            "resampled": t.get("resampled", pd.Series("", index=t.index)).fillna(""),
            "verdict (final)": t["verdict"],
            "verdict (area)": t.get("verdict_auc", pd.Series("", index=t.index)).fillna(""),
        }
    )
    return out


def to_markdown(table: pd.DataFrame) -> str:
    return format_verdict(table).to_markdown(index=False)


def to_latex(table: pd.DataFrame) -> str:
    return format_verdict(table).to_latex(index=False, escape=True)


# The compact view the README's verdict tables show: three final differences, and in words every metric that moved.
SUMMARY_METRICS = (("eval_t1/pass_at_16", "Pass@16"), ("eval_t1/mean_at_16", "Mean@16"),
                   ("eval_t1/worst_at_16", "Worst@16"), ("eval_greedy/accuracy", "greedy"))  # fmt: skip
SUMMARY_CELLS = ("eval_t1/pass_at_16", "eval_t1/mean_at_16", "eval_greedy/accuracy")


def summary(table: pd.DataFrame, cells: Sequence[str] = SUMMARY_CELLS) -> pd.DataFrame:
    """One row per (setting, condition) of a ``verdict`` table (or its verdict.csv), in its order: seeds, the final
    difference [95% interval] of each of ``cells`` (SUMMARY_METRICS keys; Worst@16 is left out by default, as it is
    0 wherever no prompt is solved 16 of 16) as text, and ``verdict``: every SUMMARY_METRICS interval that
    excludes 0, at the final step or in the area, in words ('worse on Mean@16 (area)'), else 'no detectable
    difference' (or 'too few seeds' where nothing could be said)."""
    names = dict(SUMMARY_METRICS)
    rows = []
    for (setting, cond), g in table.groupby(["setting", "condition"], sort=False):
        g = g.set_index("metric")
        words = [
            f"{g.loc[m, col]} on {name} ({kind})"
            for m, name in SUMMARY_METRICS
            for kind, col in (("final", "verdict"), ("area", "verdict_auc"))
            if m in g.index and g.loc[m, col] != SAME
        ]
        if words and all(w.startswith(TOO_FEW) for w in words):
            words = [f"{TOO_FEW} (one paired seed)"]
        row = {"setting": setting, "condition": cond, "seeds": int(g["seeds"].iloc[0])}
        for m in cells:
            r = g.loc[m]
            row[f"{names[m]} diff [95% CI]"] = f"{r.diff_final:+.3f} [{r.final_lo:+.3f}, {r.final_hi:+.3f}]"
        row["verdict"] = "; ".join(words) or SAME
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------------
# Reading runs from MLflow
# ---------------------------------------------------------------------------------------------------------------------


def _settings_and_conditions(runs: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per run: its setting (what varies besides sampler, TIS and seed) and its condition (sampler, plus TIS for a
    sampler run both with and without it: 'EAD · TIS on', 'EAD · TIS off', but 'fixed 1.0' where only one variant
    ran, so a baseline keeps its plain name)."""
    from analysis.plots import tis_labels
    from analysis.stats import setting_keys

    keys = [k for k in setting_keys(runs) if not k.startswith("tis.")]
    setting = (
        runs[keys].astype(str).apply(lambda r: ", ".join(f"{k}={v}" for k, v in r.items()), axis=1)
        if keys
        else pd.Series("all runs", index=runs.index)
    )
    condition = runs["condition"].astype(str)
    tis = tis_labels(runs)
    varies = tis.groupby(condition).transform("nunique") > 1
    return setting, condition.where(~varies, condition + " · " + tis)


def load_values(
    experiments: str | Sequence[str],
    metrics: Sequence[str],
    tracking_uri: str | None = None,
    client: Any = None,
    conditions: Sequence[str] | None = None,
    where: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """The long per-prompt frame ``verdict`` takes, from the FINISHED training runs of the experiment(s); with
    ``conditions`` / ``where``, of those runs only (``analysis.mlflow_loader.select_runs``: one preset of a shared
    experiment)."""
    from analysis.mlflow_loader import align_steps, client_for, load_metrics, load_runs, load_tables, select_runs

    client = client or client_for(tracking_uri)
    runs = load_runs(experiments, client=client, jobs=["train"])
    if runs.empty:
        raise ValueError(f"no FINISHED training runs in {experiments}")
    if conditions or where:
        runs = select_runs(runs, conditions, where).reset_index(drop=True)
        if runs.empty:
            raise ValueError(f"no FINISHED training run in {experiments} matches --condition / --where")
    setting, condition = _settings_and_conditions(runs)
    meta = pd.DataFrame({"run_id": runs["run_id"], "setting": setting, "condition": condition, "seed": runs["seed"]})
    parts = []
    counts = load_tables(experiments, COUNTS_TABLE, runs, client=client)
    with_counts: set[str] = set()
    if not counts.empty:
        counts = counts.rename(columns={"table_step": "step"})
        for metric in metrics:
            rows = counts[counts["decoder"] == decoder_of(metric)]
            if rows.empty:
                continue
            vals = per_prompt_values(metric, rows["correct"].to_numpy(), rows["n"].to_numpy())
            parts.append(
                pd.DataFrame(
                    {
                        "run_id": rows["run_id"],
                        "step": rows["step"].astype(float),
                        "prompt": rows["prompt"],
                        "metric": metric,
                        "value": vals,
                        "resampled": "seeds x prompts",
                    }  # fmt: skip
                )
            )
            with_counts |= set(rows["run_id"])
    rest = runs[~runs["run_id"].isin(with_counts)]
    if not rest.empty:
        hist = align_steps(load_metrics(experiments, list(metrics), rest, client=client))
        if not hist.empty:
            parts.append(
                pd.DataFrame(
                    {
                        "run_id": hist["run_id"],
                        "step": hist["step"].astype(float),
                        "prompt": 0,
                        "metric": hist["key"],
                        "value": hist["value"].astype(float),
                        "resampled": "seeds",
                    }  # fmt: skip
                )
            )
    if not parts:
        return pd.DataFrame(columns=["setting", "condition", "seed", "step", "metric", "prompt", "value", "resampled"])
    return pd.concat(parts, ignore_index=True).merge(meta, on="run_id")


def log_verdict_run(client: Any, experiment: str, files: Sequence[Path], baseline: str) -> str:
    """A FINISHED run tagged job=verdict in ``experiment`` holding the tables (artifact folder ``verdict/``)."""
    from analysis.mlflow_loader import log_report_run

    return log_report_run(client, experiment, "verdict", files, {"baseline": baseline})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.verdict", description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", action="append", required=True, help="MLflow experiment (repeat to pool several)")
    p.add_argument("--baseline", default="fixed 1.0", help="the condition every other is compared with")
    p.add_argument(
        "--metric", action="append", default=None, help=f"metric (repeatable; default {list(DEFAULT_METRICS)})"
    )
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    p.add_argument("--out", default=None, help="directory for verdict.md / verdict.tex (default outputs/verdict/<exp>)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap draws")
    p.add_argument("--no-log", action="store_true", help="do not log the tables to a verdict run in MLflow")
    p.add_argument("--condition", action="append", default=None, help="only this condition (repeatable)")
    p.add_argument("--where", action="append", default=[], help="only runs with PARAM=VALUE (repeatable)")
    ns = p.parse_args(argv)
    from analysis.mlflow_loader import client_for, parse_where
    from experiments.tracking import safe_name

    if ns.n_boot < 100:
        print(f"error: --n-boot must be >= 100, got {ns.n_boot}", file=sys.stderr)
        return 2
    metrics = ns.metric or list(DEFAULT_METRICS)
    try:
        for m in metrics:
            check_metric(m)
        client = client_for(ns.tracking_uri)
        values = load_values(
            ns.experiment, metrics, client=client, conditions=ns.condition, where=parse_where(ns.where)
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    conditions = sorted(set(values["condition"]))
    if ns.baseline not in conditions:
        print(
            f"error: --baseline {ns.baseline!r} is not a condition of these runs; conditions: {conditions}",
            file=sys.stderr,
        )
        return 2
    table = verdict(values, ns.baseline, metrics, n_boot=ns.n_boot)
    out = Path(ns.out or Path("outputs") / "verdict" / safe_name("+".join(ns.experiment)))
    out.mkdir(parents=True, exist_ok=True)
    md, tex = out / "verdict.md", out / "verdict.tex"
    md.write_text(to_markdown(table) + "\n")
    tex.write_text(to_latex(table))
    table.to_csv(out / "verdict.csv", index=False)
    print(to_markdown(table))
    print(f"\nfiles in {out.resolve()}")
    if not ns.no_log:
        run_id = log_verdict_run(client, ns.experiment[0], [md, tex, out / "verdict.csv"], ns.baseline)
        print(f"logged to MLflow run {run_id} (tag job=verdict)")
    return 0


__all__ = ["PairedDifference", "curve_area", "format_verdict", "in_words", "load_values", "main", "paired_bootstrap",
           "per_prompt_values", "summary", "verdict"]  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
