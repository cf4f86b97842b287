"""Every evaluation logs per-prompt correct counts per decoder (``eval_counts``): the data the verdict resamples.
The counts must reproduce the logged metrics exactly, so a verdict and a figure never disagree."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.verdict import per_prompt_values
from ead_core import EADSchedule
from experiments.local.evaluation import evaluate
from experiments.local.policy import load_policy
from experiments.local.tasks import make_task
from tests.conftest import EASY_COUNTDOWN


def test_counts_reproduce_every_logged_metric(tiny_policy_dir):
    model, tok = load_policy(tiny_policy_dir)
    task = make_task("countdown", **EASY_COUNTDOWN)
    problems = task.problems("eval", 12, seed=0)
    metrics, tables = evaluate(model, tok, task, problems, EADSchedule.preset("paper", c=1, d0=8), 0, 12, seed=3, k=4)
    counts = tables["eval_counts"]
    assert {r["decoder"] for r in counts} == {"eval", "eval_t1", "eval_greedy"}
    for decoder, n in (("eval", 4), ("eval_t1", 4), ("eval_greedy", 1)):
        rows = [r for r in counts if r["decoder"] == decoder]
        assert [r["prompt"] for r in rows] == list(range(len(problems))) and {r["n"] for r in rows} == {n}
        c = np.array([r["correct"] for r in rows])
        names = ["accuracy"] if decoder == "eval_greedy" else ["pass_at_4", "worst_at_4", "mean_at_4"]
        for name in names:
            key = f"{decoder}/{name}"
            assert per_prompt_values(key, c, np.full(len(c), n)).mean() == pytest.approx(metrics[key]), key
    assert tables["entropy_by_position"] and "position" in tables["entropy_by_position"][0]
