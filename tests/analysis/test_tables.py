"""Final metrics per condition with confidence intervals, as a frame, Markdown and LaTeX: every cell against an
independent computation from the runs' metric histories (numpy and scipy's one-sample t test, by condition label)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.mlflow_loader import load_metrics, load_runs
from analysis.stats import metric_keys
from analysis.tables import final_metrics_table, format_table, to_latex, to_markdown

KEYS = ["algorithm.name", "size", "rollouts_per_prompt", "tis.enabled", "condition"]
METRICS = {"Pass@2 (T=1.0)": "eval_t1/pass_at_2", "Worst@2 (T=1.0)": "eval_t1/worst_at_2",
           "Pass@2 (bootstrap; T=1.0)": "eval_t1/boot_best_at_2",
           "greedy accuracy": "eval_greedy/accuracy", "entropy (train rollouts)": "train/entropy"}  # fmt: skip
# The smoke store's eval metrics are all 0 (tiny policy, 2 eval prompts); train entropy differs between seeds, so the
# intervals are checked on real spreads too.
NAMES = ["pass", "worst", "boot_pass", "greedy", "entropy"]


@pytest.fixture(scope="module")
def long(store: dict[str, Any]) -> pd.DataFrame:
    runs = load_runs(store["experiment"], store["uri"], jobs=["train"])
    keys = metric_keys(NAMES, runs)
    return load_metrics(store["experiment"], keys, runs=runs, tracking_uri=store["uri"])


@pytest.fixture(scope="module")
def table(long: pd.DataFrame) -> pd.DataFrame:
    return final_metrics_table(long, NAMES)


def seeds_of(long: pd.DataFrame, key: str, row: pd.Series) -> np.ndarray:
    """The final value (last step) of ``key`` of each run in the table row's setting and condition."""
    rows = long[long["key"] == key]
    for k in KEYS:
        rows = rows[rows[k].astype(str) == str(row[k])]
    return rows.sort_values("step").groupby("run_id")["value"].last().to_numpy()


def test_one_row_per_setting_and_condition_over_seeds(table: pd.DataFrame) -> None:
    assert list(table.columns[:5]) == KEYS
    assert len(table) == 10 and not table.duplicated(KEYS).any()
    grpo = table[(table["algorithm.name"] == "grpo") & (table["rollouts_per_prompt"] == 2)]
    assert set(grpo["seeds"]) == {1, 2}  # two seeds per main condition, one per decay variant
    assert {"Pass@2 (bootstrap; T=1.0) mean", "greedy accuracy mean", "Worst@2 (T=1.0) hi"} <= set(table.columns)
    assert list(table.loc[table["algorithm.name"] == "dapo", "condition"]) == ["EAD", "fixed 1.0"]


def test_every_mean_and_interval_is_the_t_interval_of_its_seeds(long: pd.DataFrame, table: pd.DataFrame) -> None:
    checked = 0
    for _, row in table.iterrows():
        for label, key in METRICS.items():
            values = seeds_of(long, key, row)
            assert len(values) == row["seeds"], (row[KEYS].tolist(), label)
            if len(values) < 2:
                lo = hi = np.nan  # no interval from one seed
            elif values.std() == 0:
                lo = hi = values[0]
            else:
                lo, hi = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
                checked += 1
            got = row[[f"{label} mean", f"{label} lo", f"{label} hi"]].to_numpy(dtype=float)
            assert got == pytest.approx([values.mean(), lo, hi], nan_ok=True), (row[KEYS].tolist(), label)
    assert checked >= 4  # real intervals, not only single seeds


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_markdown_and_latex_hold_the_formatted_cells(table: pd.DataFrame) -> None:
    shown = format_table(table)
    assert list(shown.columns) == [*KEYS, *METRICS, "seeds"]
    two = shown[shown["seeds"] == "2"]
    assert two["Pass@2 (T=1.0)"].str.fullmatch(r"\d\.\d{3} ± \d+\.\d{3}").all()
    assert shown.loc[shown["seeds"] == "1", "Pass@2 (T=1.0)"].str.fullmatch(r"\d\.\d{3}").all()
    i = table.index.get_indexer(table.index[table["seeds"] == 2])[0]
    half = max(
        table["Pass@2 (T=1.0) mean"].iloc[i] - table["Pass@2 (T=1.0) lo"].iloc[i],
        table["Pass@2 (T=1.0) hi"].iloc[i] - table["Pass@2 (T=1.0) mean"].iloc[i],
    )
    assert shown["Pass@2 (T=1.0)"].iloc[i] == f"{table['Pass@2 (T=1.0) mean'].iloc[i]:.3f} ± {half:.3f}"

    md = to_markdown(shown).splitlines()
    assert cells(md[0]) == list(shown.columns) and set("".join(cells(md[1]))) == {"-"}
    assert [cells(line) for line in md[2:]] == shown.to_numpy().tolist()  # same rows, same order, cells as written

    tex = to_latex(shown, caption="Final metrics_x ± CI", label="tab:final")
    assert tex.startswith("\\begin{table}[t]\n\\centering\n\\caption{Final metrics\\_x $\\pm$ CI}\n\\label{tab:final}")
    assert "\\begin{tabular}{" + "l" * 11 + "}" in tex and tex.rstrip().endswith("\\end{table}")
    body = tex.split("\\toprule\n")[1].split("\\bottomrule")[0]
    head, rows = body.split("\\midrule\n")
    plain = lambda line: [
        c.strip().replace("\\_", "_").replace("$\\pm$", "±").replace("--", "–")
        for c in line.split("\\\\")[0].split("&")
    ]  # noqa: E731
    assert "rollouts\\_per\\_prompt" in head and plain(head) == list(shown.columns)  # escaped, then the same text
    assert [plain(line) for line in rows.strip().splitlines()] == shown.to_numpy().tolist()


def test_cells_are_written_as_formatted() -> None:
    """Numbers formatted as text keep their digits (tabulate would re-parse '0.100' as 0.1) and '|' is escaped."""
    shown = pd.DataFrame({"condition": ["EAD|x", "fixed 1.0"], "Pass@2": ["0.100", "0.250"], "seeds": ["1", "1"]})
    md = to_markdown(shown).splitlines()
    assert md[2].startswith("| EAD\\|x ") and [cells(line)[-2:] for line in md[2:]] == [["0.100", "1"], ["0.250", "1"]]
