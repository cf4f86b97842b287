"""Statistics over seeds and the choice of runs a figure compares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import (
    METRICS,
    final_values,
    mean_ci,
    metric_keys,
    modal_subset,
    select_metric,
    setting_keys,
    with_decoder,
)


def test_mean_ci_is_the_t_interval_over_seeds() -> None:
    frame = pd.DataFrame({"c": ["a", "a", "a", "b"], "value": [0.2, 0.4, 0.6, 0.5]})
    out = mean_ci(frame, ["c"]).set_index("c")
    half = 4.302652729749462 * 0.2 / np.sqrt(3)  # t(0.975, df=2) * sd / sqrt(n)
    assert out.loc["a", "mean"] == pytest.approx(0.4) and out.loc["a", "n"] == 3
    assert out.loc["a", "lo"] == pytest.approx(0.4 - half) and out.loc["a", "hi"] == pytest.approx(0.4 + half)
    assert out.loc["b", "n"] == 1 and np.isnan(out.loc["b", "lo"])  # one seed: no interval


def test_mean_ci_matches_scipys_one_sample_t_test_per_group() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"c": rng.choice(list("abcde"), 60), "value": rng.normal(0.5, 0.2, 60)})
    frame.loc[frame["c"] == "e", "value"] = 0.25  # identical seeds: a zero-width interval, not NaN
    out = mean_ci(frame, ["c"]).set_index("c")
    for c, values in frame.groupby("c")["value"]:
        spread = values.std() > 0
        ci = stats.ttest_1samp(values.to_numpy(), 0.0).confidence_interval(0.95) if spread else (0.25, 0.25)
        expected = (values.mean(), len(values), *ci)
        assert (out.loc[c, "mean"], out.loc[c, "n"], out.loc[c, "lo"], out.loc[c, "hi"]) == pytest.approx(expected)


def test_final_values_take_each_runs_last_step() -> None:
    long = pd.DataFrame(
        {
            "run_id": ["r1"] * 3 + ["r2"] * 2,
            "key": ["k"] * 5,
            "step": [0, 2, 1, 0, 5],
            "value": [1, 3, 2, 7, 9],
            "timestamp": [0, 1, 2, 3, 4],
        }  # fmt: skip
    )
    assert final_values(long).set_index("run_id")["value"].to_dict() == {"r1": 3, "r2": 9}


def test_metric_names_follow_each_runs_eval_k() -> None:
    runs = pd.DataFrame({"run_id": ["a", "b"], "eval_k": [2, 16]})
    assert metric_keys(["pass", "boot_pass"], runs) == [
        "eval_t1/pass_at_2", "eval_t1/pass_at_16", "eval_t1/boot_best_at_2", "eval_t1/boot_best_at_16",
    ]  # fmt: skip
    assert metric_keys(["own_pass"], runs) == ["eval/pass_at_2", "eval/pass_at_16"]
    long = pd.DataFrame({"run_id": ["a", "a", "b", "a", "b"], "eval_k": [2, 2, 16, 2, 16],
                         "key": ["eval/pass_at_2", "eval/pass_at_16", "eval/pass_at_16", "eval_t1/pass_at_2",
                                 "eval_t1/pass_at_16"]})  # fmt: skip
    assert select_metric(long, "own_pass")["key"].tolist() == ["eval/pass_at_2", "eval/pass_at_16"]
    assert select_metric(long, "pass")["key"].tolist() == ["eval_t1/pass_at_2", "eval_t1/pass_at_16"]
    labels = {m.label_for(16) for m in METRICS.values()}
    assert len(labels) == len(METRICS)  # no two quantities share a label: estimator and decoder both said
    assert METRICS["boot_pass"].label_for(16) == "Pass@16 (bootstrap; T=1.0)" != METRICS["pass"].label_for(16)
    assert METRICS["pass"].label_for(16) == "Pass@16 (T=1.0)"
    assert METRICS["own_worst"].label_for(None) == "Worst@k (own sampler)"
    assert METRICS["greedy"].label_for(16) == "greedy accuracy"


def test_figures_compare_conditions_under_the_common_decoder_unless_told() -> None:
    """Issue 12 item 4: evaluation names mean the T=1.0 decoder; with_decoder switches every sampled one, and only
    those (greedy and training metrics stay); an unknown decoder is refused by name."""
    names = ["pass", "worst", "mean", "boot_pass", "greedy", "entropy"]
    assert with_decoder(names, "eval_t1") == names
    assert with_decoder(names, "eval") == ["own_pass", "own_worst", "own_mean", "own_boot_pass", "greedy", "entropy"]
    assert with_decoder(["own_pass"], "eval_t1") == ["pass"]
    assert all(METRICS[n].key.startswith("eval_t1/") for n in names[:4])
    with pytest.raises(ValueError, match="decoder must be one of"):
        with_decoder(names, "eval_greedy")


def test_settings_and_the_value_a_figure_holds_them_at() -> None:
    runs = pd.DataFrame(
        {
            "run_id": list("abcdef"),
            "seed": [0, 1, 0, 1, 0, 0],
            "config_hash": list("abcdef"),
            "condition": ["EAD", "EAD", "fixed 1.0", "fixed 1.0", "EAD d0=4", "EAD"],
            "sampling.d0": [8, 8, 8, 8, 4, 8],
            "tis.enabled": [False, False, True, True, True, True],
            "rollouts_per_prompt": [8, 8, 8, 8, 8, 8],
        }  # fmt: skip
    )
    assert setting_keys(runs) == ["tis.enabled"]  # seeds, hashes and the sampler are not settings
    # A tie (3 runs each): the value under which the comparison (condition) is most complete wins.
    kept, chosen = modal_subset(runs, ["tis.enabled"], compare=["condition"])
    assert chosen == {"tis.enabled": True} and sorted(kept["run_id"]) == ["c", "d", "e", "f"]
    kept, chosen = modal_subset(runs, ["rollouts_per_prompt"])
    assert chosen == {} and len(kept) == 6
