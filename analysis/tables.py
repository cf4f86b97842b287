"""Tables of final metrics per condition: mean and 95% t interval over seeds, as a frame, Markdown and LaTeX.

    table = final_metrics_table(long)          # one row per setting x condition; <metric> mean/lo/hi/n columns
    text = to_markdown(format_table(table))    # '0.612 ± 0.034' cells
    tex = to_latex(format_table(table), caption="Final metrics")

Markdown comes from ``DataFrame.to_markdown`` (tabulate), LaTeX from pandas' ``Styler.to_latex`` (jinja2), both in the
``analysis`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.stats import METRICS, PANEL_KEYS, common_k, final_values, mean_ci, select_metric, setting_keys
from analysis.style import canonical_condition, condition_order

DEFAULT_TABLE_METRICS = ("pass", "worst", "mean", "boot_pass", "boot_worst", "greedy")


def final_metrics_table(long: pd.DataFrame, metrics: Sequence[str] = DEFAULT_TABLE_METRICS) -> pd.DataFrame:
    """Each run's final value of each metric (its last logged step), summarised per setting and condition over seeds:
    columns = the grouping keys, then ``<label> mean``, ``<label> lo``, ``<label> hi`` per metric and ``seeds``."""
    if long.empty:
        return pd.DataFrame()
    runs = long.drop_duplicates("run_id")
    k = common_k(runs)
    groups = [c for c in PANEL_KEYS if c in runs] + [c for c in setting_keys(runs) if c not in PANEL_KEYS]
    by = [*groups, "condition"]
    parts = []
    for name in metrics:
        rows = final_values(select_metric(long, name))
        if rows.empty:
            continue
        rows = rows.assign(condition=rows["condition"].fillna("").map(canonical_condition))
        summ = mean_ci(rows, by)
        label = METRICS[name].label_for(k)
        summ = summ.rename(columns={"mean": f"{label} mean", "lo": f"{label} lo", "hi": f"{label} hi", "n": "seeds"})
        parts.append(summ.drop(columns="sd").set_index(by))
    if not parts:
        return pd.DataFrame()
    seeds = pd.concat([p["seeds"] for p in parts], axis=1).max(axis=1)
    table = pd.concat([p.drop(columns="seeds") for p in parts], axis=1).assign(seeds=seeds).reset_index()
    order = {c: i for i, c in enumerate(condition_order(table["condition"]))}
    return table.sort_values([*groups, "condition"], key=lambda s: s.map(order) if s.name == "condition" else s)


def format_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Display form: one '<mean> ± <half-width>' column per metric (just the mean where one seed)."""
    if table.empty:
        return table
    labels = [c[: -len(" mean")] for c in table.columns if c.endswith(" mean")]
    keys = [c for c in table.columns if not any(c.startswith(f"{lab} ") for lab in labels) and c != "seeds"]
    out = table[keys].astype(str).copy()
    for lab in labels:
        mean, lo, hi = table[f"{lab} mean"], table[f"{lab} lo"], table[f"{lab} hi"]
        half = np.maximum(mean - lo, hi - mean)
        out[lab] = [
            "–" if pd.isna(m) else (f"{m:.{digits}f}" if pd.isna(h) else f"{m:.{digits}f} ± {h:.{digits}f}")
            for m, h in zip(mean, half)
        ]
    out["seeds"] = table["seeds"].astype(int).astype(str)
    return out.reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of the (string) frame (``DataFrame.to_markdown``; cells kept as written, '|'
    escaped)."""
    cells = table.astype(str).map(lambda v: v.replace("|", "\\|"))
    cells.columns = [str(c).replace("|", "\\|") for c in table.columns]
    return cells.to_markdown(index=False, tablefmt="github", disable_numparse=True) + "\n"


# pandas escapes cells and headers (escape="latex") but writes the caption as given: it gets the same escaping here.
_TEX = str.maketrans({"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                      "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"})  # fmt: skip


def to_latex(table: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    """A booktabs ``table`` float of the (string) frame (pandas ``Styler.to_latex``), special characters escaped;
    '±' written as ``$\\pm$`` and '–' as ``--`` so any TeX engine reads them."""
    styler = table.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    tex = styler.to_latex(
        column_format="l" * table.shape[1],
        position="t",
        position_float="centering",
        hrules=True,
        caption=caption.translate(_TEX) if caption else None,
        label=label,
    )
    return tex.replace("±", r"$\pm$").replace("–", "--")
