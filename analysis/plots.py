"""One function per figure family of the paper (research/paper.md section 4); each returns a matplotlib Figure.

Inputs are the frames of ``analysis.mlflow_loader`` (so every function works on any selection of runs, and tests can
inspect the Axes): ``load_metrics`` long frames for training figures, ``load_tables`` frames for study figures; the
schedule figure needs no data. A function raises ``NoData`` (with the reason) when its input cannot support it.

(a) ``schedule_curves``, ``effective_schedule``  (b) ``entropy_by_position``  (c) ``branching``
(d) ``training_curves``  (e) ``tis_ablation``  (f) ``decay_ablation``  (g) ``inference_scaling``
(h) ``rollout_scaling``

Training curves are the mean over seeds with a 95% t confidence band; conditions keep their colour in every figure
(``analysis.style``), TIS variants differ by line style. Settings a figure is not about take their most common value
among the runs (the figure's title says which).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from analysis.mlflow_loader import canon_param, param_text
from analysis.stats import (
    METRICS,
    common_k,
    final_values,
    mean_ci,
    modal_subset,
    panel_keys,
    panel_labels,
    select_metric,
    setting_keys,
    task_keys,
)
from analysis.style import (
    canonical_condition,
    condition_colors,
    condition_order,
    legend_below,
    new_figure,
    sequential_colors,
    theme,
)
from ead_core.metrics import cumulative_entropy
from ead_core.schedule import EADSchedule

TIS_KEYS = ["tis.enabled", "tis.level", "tis.cap"]
DECAY_KEYS = ["sampling.d0", "sampling.d_cap", "sampling.d_growth"]
LINESTYLES = ["-", "--", ":", "-."]


class NoData(ValueError):
    """The runs given cannot support this figure; the message says why."""


# ---------------------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------------------


def tis_labels(runs: pd.DataFrame) -> pd.Series:
    """'TIS off', 'TIS token', 'TIS sequence cap=4' per run (cap and level only where they vary among TIS runs)."""
    if "tis.enabled" not in runs:
        return pd.Series("TIS ?", index=runs.index)
    on = runs["tis.enabled"].astype(str).str.lower().isin(["true", "1"])
    label = pd.Series("TIS on", index=runs.index)
    tis = runs[on]
    if "tis.level" in runs and param_text(tis["tis.level"]).nunique() > 1:
        label = "TIS " + param_text(runs["tis.level"])
    if "tis.cap" in runs and param_text(tis["tis.cap"]).nunique() > 1:
        label = label + " cap=" + param_text(runs["tis.cap"])
    return label.where(on, "TIS off")


def _runs_of(long: pd.DataFrame) -> pd.DataFrame:
    """The run rows of a long metrics frame (one per run)."""
    return long.drop_duplicates("run_id").set_index("run_id", drop=False)


def _restrict(long: pd.DataFrame, about: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """Keep the runs at the modal value of every varying setting the figure is not ``about``; a note saying so. A
    setting the panel already fixes (one value per panel: the late task's longer ``max_new_tokens``) is no nuisance."""
    runs = _runs_of(long)
    panels = panel_keys(runs)
    panel = panel_labels(runs, panels)
    nuisance = [
        k
        for k in setting_keys(runs)
        if k not in set(about) | set(panels) and param_text(runs[k]).groupby(panel.to_numpy()).nunique().max() > 1
    ]
    kept, chosen = modal_subset(runs, nuisance, compare=["condition", *about])
    note = ", ".join(f"{k}={canon_param(v)}" for k, v in chosen.items())
    return long[long["run_id"].isin(kept["run_id"])], note


def _compared(long: pd.DataFrame, column: str, what: str) -> pd.DataFrame:
    """Only the (condition, panel) cells that hold at least two values of ``column``: a figure about a setting shows
    the conditions that were run with more than one value of it."""
    n = long.groupby(["condition", "panel"])[column].transform("nunique")
    if not (n >= 2).any():
        found = sorted(long[column].astype(str).unique())
        raise NoData(f"no condition was run with two or more {what} (found {found})")
    return long[n >= 2]


def _with_labels(long: pd.DataFrame) -> pd.DataFrame:
    """Panel, TIS and canonical condition labels, computed once per run and mapped onto the rows."""
    runs = _runs_of(long)
    per_run = pd.DataFrame(
        {
            "panel": panel_labels(runs),
            "tis": tis_labels(runs),
            "condition": runs["condition"].fillna("").map(canonical_condition),
        }
    )
    at = per_run.index.get_indexer(long["run_id"])  # one vectorised lookup, then positional takes
    return long.assign(**{c: per_run[c].to_numpy()[at] for c in per_run.columns})


def _bounds(name: str) -> tuple[float, float] | None:
    """The range a metric's values (and so its bands) can take: [0, 1] for rates, None (unbounded) otherwise."""
    return (0.0, 1.0) if METRICS[name].is_rate else None


def _band(
    ax: Any,
    summ: pd.DataFrame,
    x: str,
    color: Any,
    linestyle: str,
    label: str,
    marker: str | None,
    bounds: tuple[float, float] | None = None,
) -> Any:
    """Mean line and its confidence band (where at least two seeds exist), the band cut to ``bounds`` (a rate's
    [0, 1]: a t band over two seeds can reach far past both ends)."""
    (line,) = ax.plot(summ[x], summ["mean"], color=color, linestyle=linestyle, marker=marker, label=label)
    if (summ["n"] >= 2).any():
        lo, hi = (summ["lo"], summ["hi"]) if bounds is None else (summ["lo"].clip(*bounds), summ["hi"].clip(*bounds))
        ax.fill_between(summ[x], lo, hi, color=color, alpha=0.18, linewidth=0)
    return line


def _draw_series(
    ax: Any,
    rows: pd.DataFrame,
    hue: str,
    colors: Mapping[Any, Any],
    style: str | None,
    styles: Mapping[Any, str],
    x: str = "step",
    bounds: tuple[float, float] | None = None,
) -> None:
    """One mean line (+ band over seeds, cut to ``bounds``) per hue (x style) value of ``rows`` (columns x, value,
    hue, style); an Axes without values says 'no data' (e.g. DAPO's clip fraction when every group was filtered out)."""
    rows = rows[rows["value"].notna()]
    if rows.empty:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")
        return
    by = [hue] + ([style] if style else [])
    summ = mean_ci(rows, [*by, x])
    few = rows[x].nunique() <= 12
    order = {h: i for i, h in enumerate(colors)}
    for keys, part in sorted(summ.groupby(by, sort=False), key=lambda kv: (order.get(kv[0][0], 99), str(kv[0]))):
        h = keys[0]
        s = keys[1] if style else None
        label = f"{h}, {s}" if style else str(h)
        _band(ax, part.sort_values(x), x, colors[h], styles.get(s, "-"), label, "o" if few else None, bounds)


def _legend(fig: Figure, colors: Mapping[Any, Any], styles: Mapping[Any, str], title: str | None = None) -> None:
    """Colour = condition, line style = TIS variant (when more than one), below the axes."""
    handles = [Line2D([], [], color=c, marker="o", markersize=3) for c in colors.values()]
    labels = [str(k) for k in colors]
    if len(styles) > 1:
        handles += [Line2D([], [], color="0.3", linestyle=ls) for ls in styles.values()]
        labels += [str(s) for s in styles]
    legend_below(fig, handles, labels, title)


def _style_map(values: Sequence[Any]) -> dict[Any, str]:
    """TIS variant -> line style: TIS on (or a TIS level) solid first, 'TIS off' dashed."""
    ordered = sorted(set(values), key=lambda v: (v == "TIS off", str(v)))
    return {v: LINESTYLES[i % len(LINESTYLES)] for i, v in enumerate(ordered)}


def _only(long: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """The rows of the named metrics (each run's own eval_k), before any per-row work; NoData when there are none."""
    return pd.concat(_metric_rows(long, names).values())


def _metric_rows(long: pd.DataFrame, names: Sequence[str]) -> dict[str, pd.DataFrame]:
    """{metric name: its rows} for the names the runs logged; NoData naming the keys when none was."""
    out = {n: select_metric(long, n) for n in names}
    out = {n: rows for n, rows in out.items() if not rows.empty}
    if not out:
        k = common_k(_runs_of(long))
        raise NoData(f"no run logged {', '.join(METRICS[n].key_for(k or 16) for n in names)}")
    return out


def _curve_grid(
    long: pd.DataFrame,
    names: Sequence[str],
    *,
    about: Sequence[str],
    metrics_as_rows: bool,
    width: str,
    title: str,
    hue: str = "condition",
    hue_colors: Mapping[Any, Any] | None = None,
    facet: str = "panel",
    need_style: bool = False,
) -> Figure:
    """Metrics over training steps: a grid of (metric x facet) Axes, hue lines with bands, TIS as line style."""
    if long.empty:
        raise NoData("no training runs with metrics")
    long, note = _restrict(_with_labels(_only(long, names)), about)
    if need_style:
        long = _compared(long, "tis", "TIS variants")
    k = common_k(_runs_of(long))
    title = title.replace("{k}", str(k if k is not None else "k"))
    rows_by_metric = _metric_rows(long, names)
    facets = sorted(long[facet].unique(), key=str)
    tis_values = sorted(long["tis"].unique())
    style = "tis" if len(tis_values) > 1 else None
    styles = _style_map(tis_values) if style else {}
    if hue_colors is None:
        present = long["condition"].unique()
        palette = condition_colors(present)
        hue_colors = {c: palette[c] for c in condition_order(present)}
    colors = hue_colors
    n_m, n_f = len(rows_by_metric), len(facets)
    nrows, ncols = (n_m, n_f) if metrics_as_rows else (n_f, n_m)
    with theme():
        fig, axes = new_figure(nrows, ncols, width=width, sharex=True)
        for i, (name, rows) in enumerate(rows_by_metric.items()):
            label = METRICS[name].label_for(k)
            for j, f in enumerate(facets):
                ax = axes[i][j] if metrics_as_rows else axes[j][i]
                part = rows[rows[facet] == f]
                _draw_series(ax, part, hue, colors, style, styles, bounds=_bounds(name))
                ax.set_ylabel(label)
                ax.set_xlabel("training step")
                ax.xaxis.label.set_visible(ax.get_subplotspec().is_last_row())  # the text stays (say, for tests)
                ax.set_title(f"{label} · {f}" if f != "" else label)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                if METRICS[name].is_rate:
                    _rate_ylim(ax)
        used = {c: colors[c] for c in colors if c in set(long[hue])}
        _legend(fig, used, styles)
        fig.suptitle(title + (f" ({note})" if note else ""), fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# (a) schedules
# ---------------------------------------------------------------------------------------------------------------------


def schedule_curves(
    ds: Sequence[float] = (25, 50, 100, 200),
    *,
    tau_max: float = 1.2,
    tau_min: float = 0.1,
    c: int = 10,
    scales: Sequence[str] = ("paper", "reference"),
    width: str = "double",
) -> Figure:
    """tau_t over response position for several decay lengths d (training step 0), one panel per decay scale:
    'paper' (exp(t / d)) and 'reference' (exp(t / 20 d), the authors' sampler). From ``ead_core.schedule``."""
    colors = sequential_colors(list(ds))
    with theme():
        fig, axes = new_figure(1, len(scales), width=width, row_height=2.4)
        for ax, scale in zip(axes[0], scales):
            schedules = {d: EADSchedule.preset(scale, d0=d, d_growth=0.0, c=c, tau_max=tau_max, tau_min=tau_min)
                         for d in ds}  # fmt: skip
            end = 1.15 * max(s.position_tau_min(0) for s in schedules.values())
            t = np.linspace(0, end, 600)
            for d, s in schedules.items():
                ax.plot(t, s.temperatures(t, 0), color=colors[d], label=f"d = {d:g}")
            ax.axhline(1.0, color="0.6", linewidth=0.7, linestyle=":")
            factor = schedules[ds[0]].d_scale
            ax.set_title(f"{scale} scale: exp(t / {factor:g}d)" if factor != 1 else f"{scale} scale: exp(t / d)")
            ax.set_xlabel("response position t")
            ax.set_ylabel(r"temperature $\tau_t$")
            ax.set_ylim(0, tau_max + 0.1)
        legend_below(fig, *axes[0][0].get_legend_handles_labels(), title=None)
        fig.suptitle(f"EAD schedule (c = {c}, τ_max = {tau_max:g}, τ_min = {tau_min:g})", fontsize=9)
    return fig


def effective_schedule(table: pd.DataFrame, *, width: str = "double") -> Figure:
    """tau over response position at several training steps, one panel per decay scale (the schedule study's
    ``effective_schedule`` table: scale, step, position, tau): with the reference scale the anneal fades."""
    need = {"scale", "step", "position", "tau"}
    if table.empty or not need <= set(table.columns):
        raise NoData(f"no effective_schedule table with columns {sorted(need)}")
    table = table.drop_duplicates(["scale", "step", "position"], keep="last")
    scales = sorted(table["scale"].unique())
    colors = sequential_colors(list(table["step"].unique()))
    with theme():
        fig, axes = new_figure(1, len(scales), width=width, row_height=2.4, sharey=True)
        for ax, scale in zip(axes[0], scales):
            part = table[table["scale"] == scale]
            for step, rows in part.groupby("step"):
                rows = rows.sort_values("position")
                ax.plot(rows["position"], rows["tau"], color=colors[step], label=f"step {step}")
            ax.set_title(f"{scale} scale")
            ax.set_xlabel("response position t")
            ax.set_ylabel(r"temperature $\tau_t$")
        legend_below(fig, *axes[0][0].get_legend_handles_labels(), title="training step")
        fig.suptitle("Effective EAD schedule over training", fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# (b) entropy by position, (c) branching
# ---------------------------------------------------------------------------------------------------------------------


def _series_parts(table: pd.DataFrame) -> tuple[pd.Series | None, pd.Series | None]:
    """(condition, source) of each row: the condition where every row has one, else None; the source only where rows
    of several policies (the warm start and trained policies) or task variants (``task_knobs.decision``) are drawn
    together ('trained with EAD', 'decision=late', or both joined by ' · '), else None."""
    cond = table["condition"].fillna("").astype(str).map(canonical_condition) if "condition" in table else None
    if cond is None or not (cond != "").all():
        return None, None
    parts = []
    policy = table.get("policy_source")
    if policy is not None and policy.nunique() > 1:
        parts.append(policy.astype(str))
    variant = task_keys(table)
    if variant:
        parts.append(panel_labels(table, variant))
    if not parts:
        return cond, None
    return cond, parts[0] if len(parts) == 1 else parts[0] + " · " + parts[1]


def _series_label(table: pd.DataFrame) -> pd.Series:
    """What tells study runs apart in a legend: the condition where it varies or is set (with the policy's source
    where studies of several policies are drawn: 'EAD · warm start', 'EAD · trained with fixed 1.0'), else the run
    name."""
    cond, source = _series_parts(table)
    if cond is None:
        return table.get("run_name", table["run_id"]).astype(str)
    return cond if source is None else cond + " · " + source


def entropy_by_position(
    table: pd.DataFrame,
    *,
    window: int | None = None,
    width: str = "double",
    title: str = "Policy entropy against response position",
) -> Figure:
    """Mean token entropy against response position, the tokens measured there, and the paper's cumulative "fixed
    start" curve (token-weighted mean over [0, p + window)), per condition: runs of one condition are pooled
    token-weighted. ``table``: ``entropy_by_position`` rows (position, entropy_mean, count) with run columns."""
    need = {"position", "entropy_mean", "count"}
    if table.empty or not need <= set(table.columns):
        raise NoData(f"no entropy_by_position table with columns {sorted(need)}")
    if window is None:  # the study's own window when it logged one, else the paper's 5
        windows = table["window"].dropna().unique() if "window" in table else []
        window = int(windows[0]) if len(windows) == 1 else 5
    t = table.assign(series=_series_label(table), weighted=table["entropy_mean"].fillna(0) * table["count"])
    pooled = t.groupby(["series", "position"], sort=True)[["weighted", "count"]].sum().reset_index()
    pooled["entropy"] = (pooled["weighted"] / pooled["count"]).where(pooled["count"] > 0)
    series = condition_order(pooled["series"].unique())
    colors, styles = condition_colors(series), dict.fromkeys(series, "-")
    cond, source = _series_parts(table)
    if source is not None:  # studies of several policies: colour = the sampler's condition, as in every other figure,
        # line style = the policy (warm start solid), so no two series look alike
        cond_of, source_of = dict(zip(t["series"], cond)), dict(zip(t["series"], source))
        palette = condition_colors(set(cond_of.values()))
        others = sorted(set(source_of.values()) - {"warm start"})
        dashes = dict(zip(others, ["--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))] * 4))
        colors = {s: palette[cond_of[s]] for s in series}
        styles = {s: dashes.get(source_of[s], "-") for s in series}
    with theme():
        fig, axes = new_figure(1, 3, width=width, row_height=2.3 + 0.12 * len(series))
        a_mean, a_cum, a_count = axes[0]
        for s in series:
            p = pooled[pooled["series"] == s].sort_values("position")
            pos, mean, count = p["position"].to_numpy(), p["entropy"].to_numpy(), p["count"].to_numpy()
            dense_mean = np.full(int(pos.max()) + 1, np.nan)
            dense_count = np.zeros(int(pos.max()) + 1)
            dense_mean[pos], dense_count[pos] = mean, count
            cum = cumulative_entropy(dense_mean, dense_count, np.arange(len(dense_count)), window=window)
            a_mean.plot(pos, mean, color=colors[s], linestyle=styles[s], marker="o", markersize=2.5, label=s)
            a_cum.plot(np.arange(len(cum)), cum, color=colors[s], linestyle=styles[s], label=s)
            a_count.plot(pos, count, color=colors[s], linestyle=styles[s], label=s)
        a_mean.set(title="entropy by position", xlabel="response position", ylabel="mean token entropy (nats)")
        a_cum.set(title=f"fixed start (window {window})", xlabel="response position p",
                  ylabel="mean entropy over [0, p + w)")  # fmt: skip
        a_count.set(title="tokens measured", xlabel="response position", ylabel="tokens")
        for ax in axes[0]:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        legend_below(fig, *a_mean.get_legend_handles_labels(), title=None)
        fig.suptitle(title, fontsize=9)
    return fig


def branching(table: pd.DataFrame, *, width: str = "double") -> Figure:
    """Maj@k and Pass@k against k for each prefix length K (continuations resampled after K tokens of a base
    response), the unbranched baseline (K = 0) dashed, and answer diversity against K; one row per condition.
    ``table``: ``branching`` rows (K, k, maj, pass, diversity) with run columns; seeds are averaged."""
    need = {"K", "k", "maj", "pass"}
    if table.empty or not need <= set(table.columns):
        raise NoData(f"no branching table with columns {sorted(need)}")
    t = table.assign(series=_series_label(table))
    facets = condition_order(t["series"].unique())
    prefixes = sorted(int(k) for k in t["K"].unique())
    colors = sequential_colors([k for k in prefixes if k != 0] or [1])
    with theme():
        fig, axes = new_figure(len(facets), 3, width=width, row_height=2.2)
        for row, f in zip(axes, facets):
            part = t[t["series"] == f]
            for col, (metric, label) in enumerate([("maj", "Maj@k"), ("pass", "Pass@k")]):
                ax = row[col]
                summ = mean_ci(part.rename(columns={metric: "value"}), ["K", "k"])
                for K in prefixes:
                    s = summ[summ["K"] == K].sort_values("k")
                    if K == 0:
                        _band(ax, s, "k", "0.15", "--", "unbranched (K = 0)", "o")
                    else:
                        _band(ax, s, "k", colors[K], "-", f"branch after K = {K}", "o")
                ax.set(xlabel="k (samples)", ylabel=label, title=f"{label} · {f}")
                ax.set_xscale("log", base=2)
                ax.set_xticks(sorted(part["k"].unique()), [str(int(v)) for v in sorted(part["k"].unique())])
            ax = row[2]
            if "diversity" in part:
                div = mean_ci(part.drop_duplicates(["run_id", "K"]).rename(columns={"diversity": "value"}), ["K"])
                _band(ax, div.sort_values("K"), "K", "0.3", "-", "answer diversity", "o")
            ax.set(xlabel="prefix length K (tokens)", ylabel="distinct answers / sample", title=f"diversity · {f}")
        legend_below(fig, *axes[0][0].get_legend_handles_labels(), title=None)
        fig.suptitle("Position branching: early vs late exploration", fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# (d) training curves, (e) TIS ablation, (h) rollout scaling
# ---------------------------------------------------------------------------------------------------------------------


def _rate_ylim(ax: Any) -> None:
    """A rate panel's y range starts at 0 and spans [0, 1] once its curves or bands pass 0.5; below that it ends
    just above them, so a Worst@16 of 0.05 is not drawn flat on the floor of a 0-1 axis."""
    top = ax.dataLim.y1 if np.isfinite(ax.dataLim.y1) else 0.0
    ax.set_ylim(-0.03, 1.03 if top > 0.5 else max(0.1, 1.2 * top + 0.02))


def training_curves(
    long: pd.DataFrame, metrics: Sequence[str] = ("pass", "worst"), *, width: str = "double", title: str | None = None
) -> Figure:
    """``metrics`` (names of ``analysis.stats.METRICS``: pass, worst, boot_pass, boot_worst, mean, entropy, length,
    ...) over training steps, one row per metric, one column per algorithm and model size; EAD against the fixed
    temperatures, mean over seeds with a 95% band; TIS variants as line styles. ``long``: ``load_metrics`` rows of
    training runs (keys for each run's eval_k). ``{k}`` in ``title`` becomes the runs' eval_k."""
    return _curve_grid(
        long, metrics, about=TIS_KEYS, metrics_as_rows=True, width=width, title=title or "Training curves"
    )


def tis_ablation(
    long: pd.DataFrame, metrics: Sequence[str] = ("worst", "clipfrac", "grad_norm"), *, width: str = "double"
) -> Figure:
    """Worst@k, clip fraction and gradient norm over training with and without TIS (line style), per condition
    (colour); one row per algorithm and model size."""
    return _curve_grid(
        long, metrics, about=TIS_KEYS, metrics_as_rows=False, width=width, title="TIS ablation", need_style=True
    )


def rollout_scaling(long: pd.DataFrame, metric: str = "pass", *, width: str = "double") -> Figure:
    """Pass@k over training for several rollouts per prompt (colour), one column per condition and one row per
    algorithm and model size."""
    if long.empty or "rollouts_per_prompt" not in long or long["rollouts_per_prompt"].nunique() < 2:
        found = sorted(long["rollouts_per_prompt"].unique()) if "rollouts_per_prompt" in long else []
        raise NoData(f"rollouts_per_prompt takes fewer than two values among the training runs ({found})")
    long, note = _restrict(_with_labels(_only(long, [metric])), ["rollouts_per_prompt"])
    long = _compared(long, "rollouts_per_prompt", "rollouts per prompt")
    runs = _runs_of(long)
    k = common_k(runs)
    rows = _metric_rows(long, [metric])[metric]
    rows = rows.assign(rollouts=rows["rollouts_per_prompt"].map(lambda v: f"n = {v}"))
    values = sorted(runs["rollouts_per_prompt"].unique())
    seq = sequential_colors(values)
    colors = {f"n = {v}": seq[v] for v in values}
    conds = condition_order(rows["condition"].unique())
    panels = sorted(rows["panel"].unique(), key=str)
    label = METRICS[metric].label_for(k)
    with theme():
        fig, axes = new_figure(len(panels), len(conds), width=width, sharex=True, sharey=True)
        for i, p in enumerate(panels):
            for j, c in enumerate(conds):
                ax = axes[i][j]
                cell = rows[(rows["panel"] == p) & (rows["condition"] == c)]
                _draw_series(ax, cell, "rollouts", colors, None, {}, bounds=_bounds(metric))
                ax.set(xlabel="training step", ylabel=label, title=f"{c} · {p}", ylim=(-0.03, 1.03))
                ax.xaxis.label.set_visible(ax.get_subplotspec().is_last_row())
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _legend(fig, colors, {}, title="rollouts per prompt")
        fig.suptitle("Rollout scaling" + (f" ({note})" if note else ""), fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# (f) decay ablation
# ---------------------------------------------------------------------------------------------------------------------


def decay_ablation(long: pd.DataFrame, metric: str = "pass", *, width: str = "double") -> Figure:
    """Final Pass@k of EAD runs against each decay parameter that varies (d0, d_cap = d_max, d_growth): runs as dots,
    mean and 95% interval over seeds; every other sampler (fixed temperatures, a reverse schedule) as a horizontal
    line at its mean, for reference. Other decay parameters are held at their most common value per panel."""
    if long.empty or "sampling.kind" not in long:
        raise NoData("no training runs with metrics")
    long, note = _restrict(_with_labels(_only(long, [metric])), DECAY_KEYS)
    rows = final_values(_metric_rows(long, [metric])[metric])
    ead = rows[rows["sampling.kind"] == "ead"]
    keys = [k for k in DECAY_KEYS if k in ead and param_text(ead[k]).nunique() > 1]
    if not keys:
        vals = {k: sorted(param_text(ead[k]).unique()) for k in DECAY_KEYS if k in ead}
        raise NoData(f"no decay parameter varies among the EAD runs ({vals})")
    others = rows[rows["sampling.kind"] != "ead"]
    other_mean = mean_ci(others, ["condition"]) if not others.empty else pd.DataFrame(columns=["condition", "mean"])
    colors = condition_colors(["EAD", *other_mean["condition"]])
    k = common_k(_runs_of(long))
    label = f"final {METRICS[metric].label_for(k)}"
    bounds = _bounds(metric)
    names = {"sampling.d0": "d0 (initial decay)", "sampling.d_cap": "d_max (decay cap)",
             "sampling.d_growth": "growth per step"}  # fmt: skip
    with theme():
        fig, axes = new_figure(1, len(keys), width=width, row_height=2.4, sharey=True)
        for ax, key in zip(axes[0], keys):
            held = [k2 for k2 in keys if k2 != key]
            sel, _ = modal_subset(ead.set_index("run_id", drop=False), held)
            sel = sel.assign(x=sel[key].astype(float))
            ax.scatter(sel["x"], sel["value"], color=colors["EAD"], alpha=0.35, s=10, label="EAD run")
            summ = mean_ci(sel, ["x"]).sort_values("x")
            lo, hi = summ["lo"].fillna(summ["mean"]), summ["hi"].fillna(summ["mean"])
            lo, hi = (lo, hi) if bounds is None else (lo.clip(*bounds), hi.clip(*bounds))
            ax.errorbar(summ["x"], summ["mean"], yerr=[summ["mean"] - lo, hi - summ["mean"]], color=colors["EAD"],
                        marker="o", capsize=2, label="EAD (mean, 95% CI)")  # fmt: skip
            for cond, m in zip(other_mean["condition"], other_mean["mean"]):
                ax.axhline(m, color=colors[cond], linestyle="--", linewidth=1.1, label=cond)
            xs = summ["x"].to_numpy()
            if len(xs) and xs.min() > 0 and xs.max() / xs.min() >= 8:
                ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
            ax.set(xlabel=names[key], ylabel=label, title=f"{label} vs {names[key].split(' (')[0]}", ylim=(-0.03, 1.03))
        legend_below(fig, *axes[0][0].get_legend_handles_labels(), title=None)
        fig.suptitle("Decay ablation" + (f" ({note})" if note else ""), fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# (g) inference-time scaling
# ---------------------------------------------------------------------------------------------------------------------


def inference_scaling(table: pd.DataFrame, *, width: str = "double") -> Figure:
    """Majority@N and Pass@N against N (log axis) for EAD and fixed temperatures, one row per policy (size) when
    several were studied. ``table``: ``infer_scaling`` rows (condition, N, maj, pass, maj_se) with run columns; runs
    of one setting are averaged with a 95% interval, a single run shows Maj@N +- 1.96 standard errors over prompts."""
    need = {"condition", "N", "maj", "pass"}
    if table.empty or not need <= set(table.columns):
        raise NoData(f"no infer_scaling table with columns {sorted(need)}")
    t = table.assign(condition=table["condition"].map(canonical_condition))
    facet_keys = [c for c in ("size", "policy_dir", "task") if c in t and param_text(t[c]).nunique() > 1]
    t["facet"] = t[facet_keys].apply(param_text).agg(" · ".join, axis=1) if facet_keys else ""
    conds = condition_order(t["condition"].unique())
    colors = condition_colors(conds)
    facets = sorted(t["facet"].unique())
    ns = sorted(int(n) for n in t["N"].unique())
    with theme():
        fig, axes = new_figure(len(facets), 2, width=width, row_height=2.4, sharex=True)
        for row, f in zip(axes, facets):
            part = t[t["facet"] == f]
            for ax, (metric, label) in zip(row, [("maj", "Majority@N"), ("pass", "Pass@N")]):
                for c in conds:
                    rows = part[part["condition"] == c]
                    if rows.empty:
                        continue
                    summ = mean_ci(rows.rename(columns={metric: "value"}), ["N"]).sort_values("N")
                    if metric == "maj" and "maj_se" in rows and summ["n"].max() == 1:
                        se = rows.groupby("N")["maj_se"].mean().reindex(summ["N"]).to_numpy()
                        summ = summ.assign(lo=summ["mean"] - 1.96 * se, hi=summ["mean"] + 1.96 * se, n=2)
                    _band(ax, summ, "N", colors[c], "-", c, "o", bounds=(0.0, 1.0))  # both are rates
                ax.set_xscale("log", base=2)
                ax.set_xticks(ns, [str(n) for n in ns])
                ax.set(xlabel="N (samples per prompt)", ylabel=label, title=f"{label} · {f}" if f else label)
        legend_below(fig, *axes[0][0].get_legend_handles_labels(), title=None)
        fig.suptitle("Inference-time scaling", fontsize=9)
    return fig
