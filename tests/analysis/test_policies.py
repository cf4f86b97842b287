"""Studies of trained policies: finding an experiment's trained policies, and labelling study series by where their
policy came from (warm start, or trained with which condition)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis.figures import policy_sources
from analysis.mlflow_loader import load_runs
from analysis.plots import _series_label
from analysis.policies import main, trained_policies


def test_trained_policies_are_the_seeds_finished_runs_policy_dirs(store: dict[str, Any], capsys) -> None:
    root = Path(store["root"]) / "runs"
    found = trained_policies(store["experiment"], 0, root, store["uri"])
    runs = load_runs(store["experiment"], tracking_uri=store["uri"], jobs=["train"], params={"seed": 0})
    assert set(found) == set(runs["condition"]) and len(found) >= 2
    hashes = set(runs["config_hash"].astype(str))
    for condition, path in found.items():
        assert (path / "config.json").exists() and path.name == "policy" and path.parent.name in hashes
        assert runs.loc[runs["config_hash"] == path.parent.name, "condition"].iloc[0] == condition
    assert trained_policies(store["experiment"], 99, root, store["uri"]) == {}  # no runs of that seed
    main(["--experiment", store["experiment"], "--seed", "0", "--runs-root", str(root), "--tracking-uri", store["uri"]])
    assert capsys.readouterr().out.strip().split(",") == [str(p) for p in found.values()]


def test_study_series_name_the_policy_source_only_when_it_varies() -> None:
    train = pd.DataFrame({"config_hash": ["aaa111", "bbb222"], "condition": ["EAD", "fixed 1.0"]})
    policy = pd.Series([None, "/x/runs/default/aaa111/policy", "/x/runs/default/bbb222/policy", "/elsewhere/p"])
    assert policy_sources(policy, train).tolist() == [
        "warm start",
        "trained with EAD",
        "trained with fixed 1.0",
        "/elsewhere/p",
    ]
    t = pd.DataFrame({"condition": ["EAD", "EAD", "fixed 1.0"], "run_id": ["1", "2", "3"]})
    t["policy_source"] = ["warm start", "trained with EAD", "warm start"]
    assert _series_label(t).tolist() == ["EAD · warm start", "EAD · trained with EAD", "fixed 1.0 · warm start"]
    t["policy_source"] = "warm start"
    assert _series_label(t).tolist() == ["EAD", "EAD", "fixed 1.0"]
