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


def test_runs_of_a_seed_share_their_common_decoders_at_step_0(tiny_policy_dir, tmp_path):
    """The common decoders (eval_t1, greedy) of the same weights, problems and seed are computed once and read back
    by the next run: the same numbers as computing them (common random numbers make them equal), and really read
    (a planted value comes back). Other weights, another seed or another step get their own entry."""
    import json

    import torch

    from ead_core.schedule import FixedSchedule
    from experiments.local.evaluation import shared_eval_key

    model, tok = load_policy(tiny_policy_dir)
    task = make_task("countdown", **EASY_COUNTDOWN)
    problems = task.problems("eval", 12, seed=0)
    ead, t1 = EADSchedule.preset("paper", c=1, d0=8), FixedSchedule(1.0)
    alone = {
        name: evaluate(model, tok, task, problems, s, 0, 12, seed=5, k=4) for name, s in (("ead", ead), ("t1", t1))
    }
    key = shared_eval_key(model, problems, 4, 12, 5, 0)
    shared = (tmp_path / "evals", key)

    def same(a: object, b: object) -> bool:  # equal, NaN included (positions no row reached have NaN entropy)
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)

    first = evaluate(model, tok, task, problems, ead, 0, 12, seed=5, k=4, shared=shared)
    assert same(first, alone["ead"])  # computing and sharing changes no number
    entries = sorted(p.name for p in (tmp_path / "evals").glob("*.json"))
    assert entries == [f"{key}-eval_greedy.json", f"{key}-eval_t1.json"]
    # a temperature-1.0 run reads eval_t1 (also its own eval) and greedy; its entropy table is of the same samples
    again = evaluate(model, tok, task, problems, t1, 0, 12, seed=5, k=4, shared=shared)
    assert same(again, alone["t1"])
    # planted values come back: the entry is read, not recomputed
    entry = tmp_path / "evals" / f"{key}-eval_t1.json"
    data = json.loads(entry.read_text())
    data["metrics"]["eval_t1/mean_at_4"] = 0.123456
    entry.write_text(json.dumps(data))
    planted = evaluate(model, tok, task, problems, ead, 0, 12, seed=5, k=4, shared=shared)[0]
    assert planted["eval_t1/mean_at_4"] == 0.123456 and planted["eval/mean_at_4"] == alone["ead"][0]["eval/mean_at_4"]
    # what the numbers depend on is in the key
    assert shared_eval_key(model, problems, 4, 12, 6, 0) != key != shared_eval_key(model, problems, 4, 12, 5, 1)
    assert shared_eval_key(model, problems[:6], 4, 12, 5, 0) != key
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert shared_eval_key(model, problems, 4, 12, 5, 0) != key
