"""``python -m analysis.training_curves``: the Pass@k / Worst@k figure and its data, from the training runs only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis.training_curves import main


def test_figure_and_csv_use_the_runs_eval_k(store: dict[str, Any], tmp_path: Path, capsys) -> None:
    code = main(["--experiment", store["experiment"], "--out", str(tmp_path), "--tracking-uri", store["uri"]])
    printed = capsys.readouterr().out
    assert code == 0
    png = tmp_path / "training_curves_smoke.png"
    assert f"figure: {png}" in printed and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "training_curves_smoke.pdf").exists()
    data = pd.read_csv(tmp_path / "training_curves_smoke.csv")
    assert sorted(data["key"].unique()) == ["eval_t1/pass_at_2", "eval_t1/worst_at_2"]
    assert data["run_id"].nunique() == 14 and len(data) == 14 * 2 * 3  # training runs only: runs x metrics x evals
    assert set(data["condition"]) == {"EAD", "EAD d0=4", "EAD d0=16", "fixed 1.0"}
    assert main(["--experiment", "nope", "--out", str(tmp_path), "--tracking-uri", store["uri"]]) == 2
    assert main(["--experiment", "empty", "--out", str(tmp_path), "--tracking-uri", store["uri"]]) == 2
