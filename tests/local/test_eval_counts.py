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


def test_common_decoder_draws_common_random_numbers(tiny_policy_dir):
    """Same policy and seed: eval_t1 is the same samples whatever the run's own sampler (the verdict's paired
    difference is exactly 0 at step 0), and a temperature-1.0 run's own eval is its eval_t1 (scored once)."""
    from ead_core.schedule import FixedSchedule

    model, tok = load_policy(tiny_policy_dir)
    task = make_task("countdown", **EASY_COUNTDOWN)
    problems = task.problems("eval", 12, seed=0)
    runs = {
        name: evaluate(model, tok, task, problems, sched, 0, 12, seed=5, k=4)
        for name, sched in (
            ("ead", EADSchedule.preset("paper", c=1, d0=8)),
            ("t1", FixedSchedule(1.0)),
            ("t06", FixedSchedule(0.6)),
        )
    }

    def decoder(name: str, which: str) -> list[dict]:
        return [r for r in runs[name][1]["eval_counts"] if r["decoder"] == which]

    def t1_metrics(name: str) -> dict[str, float]:
        return {k: v for k, v in runs[name][0].items() if k.startswith("eval_t1/")}

    assert decoder("ead", "eval_t1") == decoder("t1", "eval_t1") == decoder("t06", "eval_t1")
    assert t1_metrics("ead") == t1_metrics("t1") == t1_metrics("t06")
    # a temperature-1.0 run's own eval is its eval_t1; another sampler's own eval is its own draw
    assert [r | {"decoder": "eval_t1"} for r in decoder("t1", "eval")] == decoder("t1", "eval_t1")
    assert runs["t1"][0]["eval/mean_at_4"] == runs["t1"][0]["eval_t1/mean_at_4"]
    assert runs["t06"][0]["eval/response_length"] != runs["t06"][0]["eval_t1/response_length"]
