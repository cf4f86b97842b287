"""A 2-job sweep through hydra-submitit-launcher's ``submitit_local`` logging to a real ``mlflow server`` on 127.0.0.1;
re-running it submits nothing; the figure command reads it back from the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.sweep.helpers import EVAL_KEYS, TAGS, TRAIN_KEYS, client, output, run_sweep, runs_of, smoke, steps

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (SQLite store) on a free loopback port, for this module."""
    from experiments.tracking.server import mlflow_server

    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", log_path=root / "server.log") as (url, _):
        yield url


@pytest.fixture(scope="module")
def sweep(server: str, tiny_policy_dir: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cwd = tmp_path_factory.mktemp("local-sweep")
    args = ["-m", *smoke(tiny_policy_dir), "hydra/launcher=submitit_local", "tracking=server", f"tracking.uri={server}"]
    result = run_sweep(args, cwd)
    return {"cwd": cwd, "args": args, "result": result, "uri": server}


def _job_dirs(cwd: Path) -> set[Path]:
    """Per-job submitit folders (named by job id; ``%j`` is submitit's staging folder)."""
    return {p for p in cwd.rglob(".submitit/*") if p.is_dir() and "%" not in p.name}


@pytest.mark.timeout(600)
def test_two_jobs_run_as_submitit_local_jobs_into_two_mlflow_runs(sweep: dict[str, Any]) -> None:
    result, uri = sweep["result"], sweep["uri"]
    text = result.stdout + result.stderr
    assert result.returncode == 0, output(result)
    assert "submitted 2 local job(s)" in text and "mlflow server for" not in text  # the given server, none started
    assert len(_job_dirs(sweep["cwd"])) == 2
    runs = runs_of(uri, "smoke")
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert {r.data.params["sampling.kind"] for r in runs} == {"ead", "fixed"}
    hashes = {r.data.tags["config_hash"] for r in runs}
    assert len(hashes) == 2
    for run in runs:
        run_id, tags = run.info.run_id, run.data.tags
        assert all(tags.get(t) is not None for t in TAGS), tags
        assert tags["backend"] == "local" and tags["slurm_job_id"] == "" and len(tags["git_commit"]) >= 40
        assert run.data.params["config_hash"] == tags["config_hash"] and run.data.params["backend.name"] == "local"
        for key in TRAIN_KEYS:
            assert steps(uri, run_id, key) == [0, 1], key
        for key in EVAL_KEYS:
            assert steps(uri, run_id, key) == [0, 1, 2], key
        c = client(uri)
        resolved = yaml.safe_load(Path(c.download_artifacts(run_id, "config/resolved.yaml")).read_text())
        assert resolved["experiment_name"] == "smoke" and resolved["config_hash"] == tags["config_hash"]
        assert resolved["tracking"]["uri"] == uri
        tables = {a.path for a in c.list_artifacts(run_id, "tables")}
        assert tables == {f"tables/{t}_step{s}.json" for t in ("entropy_by_position", "eval_counts") for s in (0, 1, 2)}
        # Hydra's per-job output directory carries the config hash (same-second sweeps cannot collide).
        assert list(sweep["cwd"].glob(f"multirun/smoke/*/*_{tags['config_hash']}"))


@pytest.mark.timeout(300)
def test_rerunning_the_finished_sweep_submits_nothing(sweep: dict[str, Any]) -> None:
    before = _job_dirs(sweep["cwd"])
    assert sweep["result"].returncode == 0
    again = run_sweep(sweep["args"], sweep["cwd"])
    text = again.stdout + again.stderr
    assert again.returncode == 0, output(again)
    assert "sweep plan: 2 job(s), 0 to launch, 2 skipped" in text and "nothing to launch" in text
    assert _job_dirs(sweep["cwd"]) == before
    assert len(runs_of(sweep["uri"], "smoke")) == 2


@pytest.mark.timeout(300)
def test_training_curves_figure_from_the_server(sweep: dict[str, Any], tmp_path: Path, capsys) -> None:
    from analysis.mlflow_loader import load_metrics, load_runs
    from analysis.training_curves import main

    assert sweep["result"].returncode == 0
    code = main(["--experiment", "smoke", "--out", str(tmp_path), "--tracking-uri", sweep["uri"]])
    printed = capsys.readouterr().out
    assert code == 0
    png = tmp_path / "training_curves_smoke.png"
    assert f"figure: {png}" in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    data = pd.read_csv(tmp_path / "training_curves_smoke.csv")
    assert set(data["condition"]) == {"EAD", "fixed 1.0"}
    # By default the figure compares conditions under the common decoder (T = 1.0) ...
    assert sorted(data["key"].unique()) == ["eval_t1/pass_at_2", "eval_t1/worst_at_2"]
    assert len(data) == 2 * 2 * 3  # runs x metrics x eval steps
    # ... and under each run's own sampler on request.
    own_args = ["--experiment", "smoke", "--out", str(tmp_path / "own"), "--tracking-uri", sweep["uri"]]
    assert main([*own_args, "--decoder", "eval"]) == 0
    own = pd.read_csv(tmp_path / "own" / "training_curves_smoke.csv")
    assert sorted(own["key"].unique()) == ["eval/pass_at_2", "eval/worst_at_2"] and len(own) == 2 * 2 * 3
    runs = load_runs("smoke", sweep["uri"])
    assert {"run_id", "condition", "seed", "sampling.kind", "config_hash"} <= set(runs.columns)
    assert runs["seed"].tolist() == [0, 0] and runs["steps"].tolist() == [2, 2]
    long = load_metrics("smoke", ["train/reward_mean"], runs=runs, tracking_uri=sweep["uri"])
    assert sorted(long.groupby("run_id")["step"].apply(list).tolist()) == [[0, 1], [0, 1]]
    assert main(["--experiment", "nope", "--out", str(tmp_path), "--tracking-uri", sweep["uri"]]) == 2
