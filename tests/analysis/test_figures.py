"""``python -m analysis.figures`` on the session's store: every figure family drawn (PNG + PDF), the tables written,
all of it logged to a figures run that loaders leave out; what is missing is printed with the reason; exit codes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from analysis.figures import main
from analysis.mlflow_loader import client_for, load_runs

FIGURES = [
    "schedule_curves", "effective_schedule", "entropy_by_position", "entropy_by_position_training", "branching",
    "training_pass_worst", "training_pass_worst_bootstrap", "training_dynamics", "tis_ablation", "decay_ablation",
    "inference_scaling", "rollout_scaling",
]  # fmt: skip


def test_every_figure_and_table_is_made_and_logged(store: dict[str, Any], tmp_path: Path, capsys) -> None:
    before = set(load_runs(store["experiment"], store["uri"], statuses=None)["run_id"])
    code = main(["--experiment", store["experiment"], "--out", str(tmp_path), "--tracking-uri", store["uri"]])
    out = capsys.readouterr().out
    assert code == 0, out
    made = re.findall(r"^made: (\S+): ", out, flags=re.M)
    assert made == [*FIGURES, "final_metrics"] and "missing:" not in out
    assert "note: 1 FAILED run(s) left out" in out and "note: 1 RUNNING run(s) left out" in out
    for name in FIGURES:
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    header = (tmp_path / "final_metrics.md").read_text().splitlines()[0]
    assert [cell.strip() for cell in header.split("|")][:2] == ["", "algorithm.name"]  # tabulate pads the cells
    assert "\\begin{tabular}" in (tmp_path / "final_metrics.tex").read_text()
    run_id = re.search(r"logged to MLflow run (\w+) \(tag job=figures\)", out)[1]
    client = client_for(store["uri"])
    run = client.get_run(run_id)
    assert run.data.tags["job"] == "figures" and run.info.status == "FINISHED"
    logged = {Path(a.path).name for a in client.list_artifacts(run_id, "figures")}
    assert {f"{n}.{ext}" for n in FIGURES for ext in ("png", "pdf")} | {"final_metrics.md", "report.txt"} <= logged
    # Loaders leave the figures run out: the next regeneration sees the same runs.
    assert set(load_runs(store["experiment"], store["uri"], statuses=None)["run_id"]) == before


def test_missing_data_is_named_and_nothing_drawn_is_an_error(store: dict[str, Any], tmp_path: Path, capsys) -> None:
    code = main(["--experiment", "empty", "--out", str(tmp_path), "--tracking-uri", store["uri"], "--no-log"])
    captured = capsys.readouterr()
    assert code == 1
    missing = dict(re.findall(r"^missing: (\S+): (.+)$", captured.out, flags=re.M))
    assert set(missing) == set(FIGURES[1:]) | {"final_metrics"}  # the schedule figure needs no runs
    assert missing["training_pass_worst"] == "no finished training runs (job=train)"
    assert missing["branching"] == "no finished runs with job=branching"
    assert "no figure could be drawn from the runs" in captured.err
    assert main(["--experiment", "nope", "--out", str(tmp_path), "--tracking-uri", store["uri"]]) == 2
    assert "experiment 'nope' not found" in capsys.readouterr().err


def test_all_runs_includes_unfinished_ones(store: dict[str, Any], tmp_path: Path, capsys) -> None:
    args = ["--experiment", store["experiment"], "--out", str(tmp_path), "--tracking-uri", store["uri"]]
    assert main([*args, "--no-log", "--all-runs", "--width", "single"]) == 0
    out = capsys.readouterr().out
    assert "left out" not in out
    # The killed and crashed runs logged one eval metric before they stopped: reported, not fatal.
    assert "note: 2 of 16 training run(s) never logged eval_t1/worst_at_2" in out


def test_a_selection_draws_its_runs_only(store: dict[str, Any], tmp_path: Path, capsys) -> None:
    args = ["--experiment", store["experiment"], "--out", str(tmp_path), "--tracking-uri", store["uri"], "--no-log"]
    assert main([*args, "--condition", "fixed 1.0", "--where", "algorithm.name=grpo"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^note: \d+ run\(s\) selected: fixed 1.0, algorithm.name=grpo$", out, flags=re.M), out
    rows = [r for r in (tmp_path / "final_metrics.md").read_text().splitlines()[2:] if r.strip()]
    assert rows and all("fixed 1.0" in r and "grpo" in r for r in rows)
    assert main([*args, "--condition", "reverse"]) == 2
    assert "--condition 'reverse' is not a condition of these runs" in capsys.readouterr().err
