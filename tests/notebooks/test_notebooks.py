"""The notebooks in notebooks/ execute top to bottom (a real Jupyter kernel through nbclient) on the session's MLflow
store of a real smoke sweep with training and study jobs (tests/fixtures/analysis_store.py), and what they show is the
data of that store: after the notebook's own cells, one more cell (added in memory, never saved) pickles the objects the
notebook displayed (IPython's ``Out``: tables and figures); the figures' lines and bands are compared, by label, with
values computed here from the store (tests/analysis/drawn.py), the tables with the logged table artifacts."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from nbclient import NotebookClient

from analysis.mlflow_loader import client_for, load_metrics, load_runs
from analysis.stats import metric_keys
from analysis.tables import final_metrics_table, format_table
from tests.analysis.drawn import assert_drawn, single, training_expectation

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PROBE = """
import pickle as _pickle
with open({path!r}, "wb") as _f:
    _pickle.dump({{n: Out[n] for n in sorted(Out)}}, _f)
"""


def execute(name: str, store: dict[str, Any], tmp_path: Path) -> tuple[list[Any], list[Any]]:
    """Run notebooks/<name>.ipynb against the store. Returns (the code cells' outputs, the objects the code cells
    displayed, in order: ``Out`` of the kernel)."""
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    n_code = sum(c.cell_type == "code" for c in book.cells)
    dump = tmp_path / f"{name}.pkl"
    book.cells.append(nbformat.v4.new_code_cell(PROBE.format(path=str(dump))))
    env = {"EAD_TRACKING_URI": store["uri"], "EAD_EXPERIMENT": store["experiment"]}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment
    try:
        NotebookClient(
            book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
        ).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    code = [c for c in book.cells if c.cell_type == "code"][:n_code]
    shown = pickle.loads(dump.read_bytes())
    return [c.outputs for c in code], [shown[n] for n in sorted(shown)]


def figures(outputs: list[Any]) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs if o.output_type in ("display_data", "execute_result"))


def logged_table(store: dict[str, Any], job: str, name: str) -> pd.DataFrame:
    """The table artifact ``tables/<name>.json`` of the FINISHED runs tagged ``job``, read from the artifact files
    through the MLflow client (not analysis.mlflow_loader); each row gets its run's condition as logged."""
    client = client_for(store["uri"])
    exp = client.get_experiment_by_name(store["experiment"])
    frames = []
    for run in client.search_runs([exp.experiment_id], f"tags.job = '{job}' and attributes.status = 'FINISHED'"):
        path = Path(client.download_artifacts(run.info.run_id, f"tables/{name}.json"))
        text = path.read_text()
        rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines()]
        frames.append(pd.DataFrame(rows).assign(run_id=run.info.run_id))
    return pd.concat(frames, ignore_index=True)


def runs_by_job(store: dict[str, Any]) -> dict[str, int]:
    """FINISHED runs per job tag, counted through the MLflow client (figures runs excluded)."""
    client = client_for(store["uri"])
    exp = client.get_experiment_by_name(store["experiment"])
    counts: dict[str, int] = {}
    for run in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=10000):
        job = run.data.tags.get("job") or (
            "inference" if run.data.tags.get("backend") == "vllm_inference_scaling" else "train"
        )
        if job not in ("figures", "verdict"):
            counts[job] = counts.get(job, 0) + 1
    return counts


def assert_run_counts(shown: pd.DataFrame, store: dict[str, Any]) -> None:
    """The first cell's table: runs per (job, condition), summing to the store's FINISHED runs per job."""
    assert shown["runs"].groupby(level="job").sum().to_dict() == runs_by_job(store)


def test_notebooks_are_thin_and_stored_without_outputs() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        book = nbformat.read(path, as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has stored outputs"
        assert not any("def " in c.source for c in code), f"{path.name} defines functions: logic belongs in analysis/"
    assert {p.stem for p in NOTEBOOKS.glob("*.ipynb")} == {
        "entropy_by_position",
        "position_branching",
        "training_curves",
    }


def test_entropy_by_position_notebook(analysis_store: dict[str, Any], tmp_path: Path) -> None:
    outputs, (counts, table, fig) = execute("entropy_by_position", analysis_store, tmp_path)
    assert_run_counts(counts, analysis_store)
    logged = logged_table(analysis_store, "entropy", "entropy_by_position")
    # The notebook's table: per condition and position, the logged values (one run per condition here).
    runs = load_runs(analysis_store["experiment"], analysis_store["uri"], jobs=["entropy"]).set_index("run_id")
    logged["condition"] = logged["run_id"].map(runs["condition"])
    expected = logged.groupby(["condition", "position"])[["entropy_mean", "count", "fixed_start_mean"]].mean()
    pd.testing.assert_frame_equal(table, expected.head(12))
    # Its figure: each condition's mean-entropy and token-count lines are that condition's logged rows.
    assert isinstance(fig, Figure) and figures(outputs[2]) == 1
    mean, _, count = fig.axes
    for ax, column in [(mean, "entropy_mean"), (count, "count")]:
        assert_drawn(
            ax, {c: single(logged[logged["condition"] == c], "position", column) for c in ("EAD", "fixed 1.0")}
        )


def test_position_branching_notebook(analysis_store: dict[str, Any], tmp_path: Path) -> None:
    outputs, (counts, pivot, fig, diversity) = execute("position_branching", analysis_store, tmp_path)
    assert_run_counts(counts, analysis_store)
    logged = logged_table(analysis_store, "branching", "branching")
    expected = logged.pivot_table(index="K", columns="k", values=["maj", "pass"]).round(3)
    pd.testing.assert_frame_equal(pivot, expected)
    assert figures(outputs[2]) == 1
    maj, pas, div = fig.axes
    names = {0: "unbranched (K = 0)", 2: "branch after K = 2", 4: "branch after K = 4"}
    for ax, column in [(maj, "maj"), (pas, "pass")]:
        assert_drawn(ax, {name: single(logged[logged["K"] == k], "k", column) for k, name in names.items()})
    assert_drawn(div, {"answer diversity": single(logged.drop_duplicates("K"), "K", "diversity")})
    pd.testing.assert_frame_equal(diversity, logged.groupby("K")[["diversity", "mean", "prompts"]].first())


@pytest.fixture(scope="module")
def train_long(analysis_store: dict[str, Any]) -> pd.DataFrame:
    runs = load_runs(analysis_store["experiment"], analysis_store["uri"], jobs=["train"])
    names = ["pass", "worst", "mean", "boot_pass", "boot_worst", "greedy", "entropy", "length"]
    return load_metrics(
        analysis_store["experiment"], metric_keys(names, runs), runs=runs, tracking_uri=analysis_store["uri"]
    )


def test_training_curves_notebook(analysis_store: dict[str, Any], tmp_path: Path, train_long: pd.DataFrame) -> None:
    outputs, (counts, *figs) = execute("training_curves", analysis_store, tmp_path)
    assert_run_counts(counts, analysis_store)
    assert [figures(c) for c in outputs[1:4]] == [1, 1, 1] and len(figs) == 3
    drawn = {}
    for fig in figs:
        for ax in fig.axes:
            assert_drawn(ax, training_expectation(fig, ax, train_long))
            drawn[ax.get_ylabel()] = drawn.get(ax.get_ylabel(), 0) + 1
    assert drawn == dict.fromkeys(["Pass@2 (T=1.0)", "Worst@2 (T=1.0)", "Pass@2 (bootstrap; T=1.0)",
                                   "Worst@2 (bootstrap; T=1.0)", "Mean@2 (T=1.0)", "entropy (train rollouts)",
                                   "response length (tokens)"], 2)  # fmt: skip
    # The printed table is the final-metrics table of the store's training runs, row for row.
    printed = "".join(o.get("text", "") for o in outputs[4] if o.output_type == "stream").splitlines()
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in printed if line.startswith("|")]
    expected = format_table(final_metrics_table(train_long))
    assert rows[0] == list(expected.columns) and rows[2:] == expected.to_numpy().tolist()
    assert np.isin(["EAD", "fixed 1.0"], expected["condition"]).all()
