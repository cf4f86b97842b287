"""Final metrics per condition with confidence intervals, as a frame, Markdown and LaTeX."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from analysis.mlflow_loader import load_metrics, load_runs
from analysis.stats import metric_keys
from analysis.tables import final_metrics_table, format_table, to_latex, to_markdown


@pytest.fixture(scope="module")
def table(store: dict[str, Any]) -> pd.DataFrame:
    runs = load_runs(store["experiment"], store["uri"], jobs=["train"])
    keys = metric_keys(["pass", "worst", "boot_pass", "greedy"], runs)
    long = load_metrics(store["experiment"], keys, runs=runs, tracking_uri=store["uri"])
    return final_metrics_table(long, ["pass", "worst", "boot_pass", "greedy"])


def test_one_row_per_setting_and_condition_over_seeds(table: pd.DataFrame) -> None:
    keys = ["algorithm.name", "size", "rollouts_per_prompt", "tis.enabled", "condition"]
    assert list(table.columns[:5]) == keys
    assert len(table) == 10 and not table.duplicated(keys).any()
    grpo = table[(table["algorithm.name"] == "grpo") & (table["rollouts_per_prompt"] == 2)]
    assert set(grpo["seeds"]) == {1, 2}  # two seeds per main condition, one per decay variant
    two = grpo[grpo["seeds"] == 2]
    assert (two["Pass@2 lo"] <= two["Pass@2 mean"]).all() and (two["Pass@2 mean"] <= two["Pass@2 hi"]).all()
    assert grpo.loc[grpo["seeds"] == 1, "Pass@2 lo"].isna().all()  # no interval from one seed
    assert {"Pass@2 (bootstrap) mean", "greedy accuracy mean", "Worst@2 hi"} <= set(table.columns)
    assert list(table.loc[table["algorithm.name"] == "dapo", "condition"]) == ["EAD", "fixed 1.0"]


def test_markdown_and_latex(table: pd.DataFrame) -> None:
    shown = format_table(table)
    assert list(shown.columns) == ["algorithm.name", "size", "rollouts_per_prompt", "tis.enabled", "condition",
                                   "Pass@2", "Worst@2", "Pass@2 (bootstrap)", "greedy accuracy", "seeds"]  # fmt: skip
    two = shown[shown["seeds"] == "2"]
    assert two["Pass@2"].str.fullmatch(r"\d\.\d{3} ± \d+\.\d{3}").all()
    assert shown.loc[shown["seeds"] == "1", "Pass@2"].str.fullmatch(r"\d\.\d{3}").all()
    md = to_markdown(shown)
    lines = md.splitlines()
    assert lines[0].startswith("| algorithm.name | size |") and lines[1].startswith("| --- |") and len(lines) == 12
    tex = to_latex(shown, caption="Final metrics_x", label="tab:final")
    assert "\\begin{tabular}{llllllllll}" in tex and "\\toprule" in tex and "\\bottomrule" in tex
    assert "rollouts\\_per\\_prompt" in tex and "$\\pm$" in tex and "metrics\\_x" in tex and "\\label{tab:final}" in tex
    assert tex.count("\\\\\n") == 1 + len(shown)  # header + one line per row
