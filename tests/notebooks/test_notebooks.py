"""The notebooks in notebooks/ execute top to bottom (a real Jupyter kernel through nbclient) on the session's MLflow
store of a real smoke sweep with training and study jobs (tests/fixtures/analysis_store.py), and show what they
promise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(name: str, store: dict[str, Any]) -> list[Any]:
    """Run notebooks/<name>.ipynb against the store; return its code cells' outputs (one list per cell)."""
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
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
    return [c.outputs for c in book.cells if c.cell_type == "code"]


def text(outputs: list[Any]) -> str:
    parts = []
    for o in outputs:
        parts.append(o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def figures(outputs: list[Any]) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs if o.output_type in ("display_data", "execute_result"))


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


def test_entropy_by_position_notebook(analysis_store: dict[str, Any]) -> None:
    cells = execute("entropy_by_position", analysis_store)
    assert "entropy" in text(cells[0]) and "train" in text(cells[0])  # runs by job and condition
    assert "entropy_mean" in text(cells[1]) and "fixed_start_mean" in text(cells[1])
    assert figures(cells[2]) == 1


def test_position_branching_notebook(analysis_store: dict[str, Any]) -> None:
    cells = execute("position_branching", analysis_store)
    assert "maj" in text(cells[1]) and "pass" in text(cells[1])
    assert figures(cells[2]) == 1 and "diversity" in text(cells[3])


def test_training_curves_notebook(analysis_store: dict[str, Any]) -> None:
    cells = execute("training_curves", analysis_store)
    assert [figures(c) for c in cells[1:4]] == [1, 1, 1]
    table = text(cells[4])
    assert "| EAD |" in table and "| fixed 1.0 |" in table and "Pass@2" in table and "Pass@2 (bootstrap)" in table
