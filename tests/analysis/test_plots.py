"""Each figure family on the session's real store: the Axes hold the expected series, labels and scales (matplotlib
objects, not pixels); every plotted line and band carries, by its label, the values computed here from the data
(numpy and scipy.stats, not analysis.stats), so swapping two conditions turns a test red; estimators never share a
label; colours are fixed per condition; figures say why they cannot be drawn.

The smoke store's eval metrics are all 0 (a tiny policy, two eval prompts), so the value checks use the metrics that
differ between conditions and seeds (train entropy, response length, gradient norm) and the study tables."""

from __future__ import annotations

from typing import Any

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis import plots
from analysis.mlflow_loader import load_metrics, load_runs, load_tables
from analysis.plots import NoData
from analysis.stats import metric_keys, with_decoder
from analysis.style import FIXED_COLORS
from tests.analysis.drawn import assert_drawn, expected_curve, held, rows_of, single, training_expectation

ALL = ["pass", "worst", "mean", "boot_pass", "boot_worst", "greedy", "entropy", "length", "clipfrac", "grad_norm"]
ALL += ["own_pass"]  # the own-sampler Pass@k, for the decoder test


@pytest.fixture(scope="module")
def runs(store: dict[str, Any]) -> pd.DataFrame:
    return load_runs(store["experiment"], store["uri"])


@pytest.fixture(scope="module")
def long(store: dict[str, Any], runs: pd.DataFrame) -> pd.DataFrame:
    train = runs[runs["job"] == "train"]
    return load_metrics(store["experiment"], metric_keys(ALL, train), runs=train, tracking_uri=store["uri"])


def table(store: dict[str, Any], runs: pd.DataFrame, job: str, name: str, **kw: Any) -> pd.DataFrame:
    return load_tables(store["experiment"], name, runs=runs[runs["job"] == job], tracking_uri=store["uri"], **kw)


def labels(ax: Any) -> list[str]:
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def color_of(ax: Any, label: str) -> str:
    return mcolors.to_hex(next(line.get_color() for line in ax.get_lines() if line.get_label() == label))


def legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def assert_legend_outside(fig: Figure) -> None:
    """One figure legend, below the axes; no legend drawn inside an Axes."""
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    fig.canvas.draw()
    legend_top = fig.legends[0].get_window_extent().y1
    assert all(legend_top <= ax.get_window_extent().y0 for ax in fig.axes)


def test_training_curves_draw_each_conditions_seed_mean_and_t_band(long: pd.DataFrame) -> None:
    fig = plots.training_curves(long, ("entropy", "length"))
    assert held(fig) == {"rollouts_per_prompt": "2"}
    banded = 0
    for ax in fig.axes:
        expected = training_expectation(fig, ax, long)
        assert_drawn(ax, expected)
        banded += sum((e["n"] >= 2).any() for e in expected.values())
        # The check can tell conditions apart: their curves differ in this data.
        assert not np.allclose(expected[labels(ax)[0]]["mean"], expected[labels(ax)[-1]]["mean"]), ax.get_title()
    assert banded >= 4  # grpo: EAD and fixed 1.0, TIS on and off, two seeds each, in both metrics


def test_tis_ablation_draws_the_data(long: pd.DataFrame) -> None:
    fig = plots.tis_ablation(long)
    for ax in fig.axes:
        assert_drawn(ax, training_expectation(fig, ax, long))


def test_rollout_scaling_draws_the_data(long: pd.DataFrame) -> None:
    fig = plots.rollout_scaling(long, metric="entropy")
    assert held(fig) == {"tis.enabled": "True"}
    for ax in fig.axes:
        condition, algorithm, size = ax.get_title().split(" · ")
        where = {"condition": condition, "algorithm.name": algorithm, "size": size, **held(fig)}
        expected = {f"n = {n}": expected_curve(rows_of(long, "train/entropy", rollouts_per_prompt=n, **where))
                    for n in (2, 4)}  # fmt: skip
        assert_drawn(ax, expected)
        assert not np.allclose(expected["n = 2"]["mean"], expected["n = 4"]["mean"])


def test_decay_ablation_draws_final_values_per_d0(long: pd.DataFrame) -> None:
    fig = plots.decay_ablation(long, metric="entropy")
    (ax,) = fig.axes
    final = rows_of(long, "train/entropy", **held(fig)).sort_values("step").groupby("run_id").tail(1)
    ead = final[final["sampling.kind"] == "ead"].assign(x=lambda f: f["sampling.d0"].astype(float))
    exp = expected_curve(ead, x="x")
    assert list(exp.index) == [4, 8, 16] and exp["n"].max() >= 2
    (container,) = ax.containers  # the errorbar: mean per d0 and its interval
    data_line, _, (bars,) = container.lines
    np.testing.assert_allclose(data_line.get_xydata(), np.c_[exp.index, exp["mean"]])
    segments = {float(seg[0, 0]): (seg[:, 1].min(), seg[:, 1].max()) for seg in bars.get_segments()}
    for x, row in exp.iterrows():
        assert segments[float(x)] == pytest.approx((row["lo"], row["hi"]) if row["n"] >= 2 else (row["mean"],) * 2)
    (runs,) = [c for c in ax.collections if c.get_label() == "EAD run"]  # every run as a dot
    dots = np.asarray(sorted(map(tuple, runs.get_offsets().tolist())))
    np.testing.assert_allclose(dots, np.asarray(sorted(zip(ead["x"], ead["value"]))))
    fixed = final.loc[final["condition"] == "fixed 1.0", "value"].mean()
    (ref,) = [line for line in ax.get_lines() if line.get_label() == "fixed 1.0"]
    np.testing.assert_allclose(ref.get_ydata(), fixed)


def test_study_figures_draw_their_tables(store: dict[str, Any], runs: pd.DataFrame) -> None:
    entropy = table(store, runs, "entropy", "entropy_by_position")
    fig = plots.entropy_by_position(entropy)
    mean, _, count = fig.axes
    for ax, column in [(mean, "entropy_mean"), (count, "count")]:
        assert_drawn(
            ax, {c: single(entropy[entropy["condition"] == c], "position", column) for c in ("EAD", "fixed 1.0")}
        )
    assert not np.allclose(*(entropy.loc[entropy["condition"] == c, "entropy_mean"] for c in ("EAD", "fixed 1.0")))

    branching = table(store, runs, "branching", "branching")
    fig = plots.branching(branching)
    maj, pas, div = fig.axes
    for ax, column in [(maj, "maj"), (pas, "pass")]:
        names = {0: "unbranched (K = 0)", 2: "branch after K = 2", 4: "branch after K = 4"}
        assert_drawn(ax, {name: single(branching[branching["K"] == k], "k", column) for k, name in names.items()})
    assert_drawn(div, {"answer diversity": single(branching.drop_duplicates("K"), "K", "diversity")})
    assert branching.drop_duplicates("K")["diversity"].nunique() > 1

    schedule = table(store, runs, "schedule", "effective_schedule")
    fig = plots.effective_schedule(schedule)
    for ax in fig.axes:
        scale = ax.get_title().split()[0]
        at = {s: schedule[(schedule["scale"] == scale) & (schedule["step"] == s)] for s in (0, 50, 200)}
        assert_drawn(ax, {f"step {s}": single(rows, "position", "tau") for s, rows in at.items()})


def test_inference_scaling_draws_each_conditions_table(store: dict[str, Any], runs: pd.DataFrame) -> None:
    infer = table(store, runs, "inference", "infer_scaling")
    fig = plots.inference_scaling(infer)
    maj, pas = fig.axes
    logged = {"EAD": "ead_local", "fixed 0.6": "fixed_0.6", "fixed 1.0": "fixed_1.0", "fixed 1.2": "fixed_1.2"}
    expected_maj, expected_pass = {}, {}
    for label, raw in logged.items():
        rows = infer[infer["condition"] == raw].set_index("N").sort_index()
        # One run: Maj@N with +- 1.96 standard errors over prompts, cut to [0, 1]; Pass@N without a band.
        half = 1.96 * rows["maj_se"]
        expected_maj[label] = pd.DataFrame({"mean": rows["maj"], "lo": (rows["maj"] - half).clip(0, 1),
                                            "hi": (rows["maj"] + half).clip(0, 1), "n": 2})  # fmt: skip
        expected_pass[label] = expected_curve(rows.reset_index(), x="N", value="pass", bounds=(0, 1))
    assert_drawn(maj, expected_maj)
    assert_drawn(pas, expected_pass)
    assert len({tuple(e["mean"]) for e in expected_maj.values()}) == 4  # the conditions differ


def test_schedule_curves_both_scales() -> None:
    fig = plots.schedule_curves(ds=(25, 100))
    paper, reference = fig.axes
    assert "paper" in paper.get_title() and "reference" in reference.get_title() and "20d" in reference.get_title()
    for ax in fig.axes:
        assert labels(ax) == ["d = 25", "d = 100"]
        assert ax.get_xlabel() == "response position t" and "tau" in ax.get_ylabel()
    # The reference scale anneals 20x more slowly: its x range is 20x longer.
    assert reference.get_xlim()[1] == pytest.approx(20 * paper.get_xlim()[1], rel=0.01)
    first = paper.get_lines()[0].get_ydata()
    assert first[0] == 1.0 and min(first) == pytest.approx(0.1)  # tau = 1 before c, floor tau_min
    assert_legend_outside(fig)
    assert plots.schedule_curves(width="single").get_figwidth() == 3.5


def test_effective_schedule_from_the_study_table(store: dict[str, Any], runs: pd.DataFrame) -> None:
    fig = plots.effective_schedule(table(store, runs, "schedule", "effective_schedule"))
    assert [ax.get_title() for ax in fig.axes] == ["paper scale", "reference scale"]
    assert all(labels(ax) == ["step 0", "step 50", "step 200"] for ax in fig.axes)
    with pytest.raises(NoData, match="effective_schedule"):
        plots.effective_schedule(pd.DataFrame())


def test_entropy_by_position_study_and_training(store: dict[str, Any], runs: pd.DataFrame) -> None:
    fig = plots.entropy_by_position(table(store, runs, "entropy", "entropy_by_position"))
    mean, cum, count = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["entropy by position", "fixed start (window 5)", "tokens measured"]
    assert mean.get_xlabel() == "response position" and "entropy" in mean.get_ylabel()
    assert all(labels(ax) == ["EAD", "fixed 1.0"] for ax in fig.axes)
    assert color_of(mean, "EAD") == FIXED_COLORS["EAD"] and color_of(cum, "fixed 1.0") == FIXED_COLORS["fixed 1.0"]
    study = table(store, runs, "entropy", "entropy_by_position")
    one = study[study["condition"] == "fixed 1.0"].sort_values("position")
    drawn = next(line for line in cum.get_lines() if line.get_label() == "fixed 1.0").get_ydata()
    assert drawn[: len(one)] == pytest.approx(one["fixed_start_mean"].to_numpy(), nan_ok=True)  # = the study's curve
    trained = plots.entropy_by_position(table(store, runs, "train", "entropy_by_position", steps="last"))
    assert labels(trained.axes[0]) == ["EAD", "EAD d0=4", "EAD d0=16", "fixed 1.0"]
    assert_legend_outside(fig)


def test_entropy_by_position_of_several_policies_colours_by_sampler_and_styles_by_policy(
    store: dict[str, Any], runs: pd.DataFrame
) -> None:
    """Studies of the warm start and of trained policies (the main command's): each sampler keeps its condition colour
    and each policy has its own line style, so no two of the series look alike."""
    study = table(store, runs, "entropy", "entropy_by_position")
    sources = ["warm start", "trained with EAD", "trained with fixed 1.0"]
    both = pd.concat([study.assign(policy_source=s) for s in sources], ignore_index=True)
    fig = plots.entropy_by_position(both)
    mean = fig.axes[0]
    assert sorted(labels(mean)) == sorted(f"{c} · {s}" for c in ("EAD", "fixed 1.0") for s in sources)
    lines = {line.get_label(): line for line in mean.get_lines()}
    for s in sources:
        assert color_of(mean, f"EAD · {s}") == FIXED_COLORS["EAD"]
        assert color_of(mean, f"fixed 1.0 · {s}") == FIXED_COLORS["fixed 1.0"]
    assert lines["EAD · warm start"].get_linestyle() == "-"
    looks = {(line.get_color(), line.get_linestyle()) for line in lines.values()}
    assert len(looks) == len(lines)  # every series distinguishable


def test_entropy_by_position_of_two_task_variants_keeps_them_apart(store: dict[str, Any], runs: pd.DataFrame) -> None:
    """Training runs on the early and the late variant of a task are never pooled: each condition has one series
    per variant (colour = condition, line style = variant), and each series holds its own variant's counts."""
    trained = table(store, runs, "train", "entropy_by_position", steps="last")
    trained = trained[trained["condition"].isin(["EAD", "fixed 1.0"])]
    late = trained.assign(run_id=trained["run_id"] + "-late", count=trained["count"] * 3)
    both = pd.concat(
        [trained.assign(**{"task_knobs.decision": "early"}), late.assign(**{"task_knobs.decision": "late"})]
    )
    fig = plots.entropy_by_position(both, title="t")
    mean, _, count = fig.axes
    assert sorted(labels(mean)) == [f"{c} · decision={v}" for c in ("EAD", "fixed 1.0") for v in ("early", "late")]
    assert color_of(mean, "EAD · decision=late") == FIXED_COLORS["EAD"] == color_of(mean, "EAD · decision=early")
    drawn = {line.get_label(): line.get_ydata() for line in count.get_lines()}
    assert np.allclose(drawn["EAD · decision=late"], 3 * drawn["EAD · decision=early"])


def test_branching_maj_at_k_per_prefix(store: dict[str, Any], runs: pd.DataFrame) -> None:
    fig = plots.branching(table(store, runs, "branching", "branching"))
    maj, pas, div = fig.axes
    assert maj.get_ylabel() == "Maj@k" and pas.get_ylabel() == "Pass@k" and maj.get_xlabel() == "k (samples)"
    assert labels(maj) == ["unbranched (K = 0)", "branch after K = 2", "branch after K = 4"]
    assert maj.get_lines()[0].get_linestyle() == "--"  # the baseline stands out
    assert list(maj.get_lines()[0].get_xdata()) == [1, 2, 4] and maj.get_xscale() == "log"
    assert div.get_xlabel() == "prefix length K (tokens)" and list(div.get_lines()[0].get_xdata()) == [0, 2, 4]
    assert "EAD" in maj.get_title()


def test_training_curves_panel_per_algorithm_with_the_runs_eval_k(long: pd.DataFrame) -> None:
    fig = plots.training_curves(long, ("pass", "worst"), title="Pass@{k}")
    axes = fig.axes
    assert len(axes) == 4  # rows Pass/Worst x columns dapo/grpo
    assert [ax.get_title() for ax in axes] == [
        f"{m}@2 (T=1.0) · {a} · tiny" for m in ("Pass", "Worst") for a in ("dapo", "grpo")
    ]
    assert [ax.get_ylabel() for ax in axes] == [
        "Pass@2 (T=1.0)",
        "Pass@2 (T=1.0)",
        "Worst@2 (T=1.0)",
        "Worst@2 (T=1.0)",
    ]
    assert all(ax.get_xlabel() == "training step" for ax in axes)
    assert "16" not in " ".join(ax.get_title() for ax in axes) and fig.get_suptitle().startswith("Pass@2")
    grpo = axes[1]
    # grpo: EAD and fixed 1.0 with TIS on and off (style), EAD decay variants with TIS on; rollouts held at 2.
    assert sorted(labels(grpo)) == sorted(["EAD, TIS on", "EAD, TIS off", "fixed 1.0, TIS on", "fixed 1.0, TIS off",
                                           "EAD d0=4, TIS on", "EAD d0=16, TIS on"])  # fmt: skip
    assert "rollouts_per_prompt=2" in fig.get_suptitle()
    style = {line.get_label(): line.get_linestyle() for line in grpo.get_lines()}
    assert style["EAD, TIS on"] == "-" and style["EAD, TIS off"] == "--"
    assert color_of(grpo, "EAD, TIS off") == FIXED_COLORS["EAD"] == color_of(axes[0], "EAD, TIS on")
    assert color_of(grpo, "fixed 1.0, TIS on") == FIXED_COLORS["fixed 1.0"]
    assert sorted(labels(axes[0])) == ["EAD, TIS on", "fixed 1.0, TIS on"]  # dapo was run with TIS only
    # Mean over two seeds with a band: one filled area per line with >= 2 seeds at a step.
    assert len(grpo.collections) >= 4
    assert {"EAD", "fixed 1.0", "TIS on", "TIS off"} <= set(legend_texts(fig))
    assert_legend_outside(fig)


def test_unbiased_and_bootstrap_estimators_never_share_a_label(long: pd.DataFrame) -> None:
    fig = plots.training_curves(long, ("pass", "boot_pass", "worst", "boot_worst"))
    ylabels = [ax.get_ylabel() for ax in fig.axes[::2]]
    assert ylabels == ["Pass@2 (T=1.0)", "Pass@2 (bootstrap; T=1.0)", "Worst@2 (T=1.0)", "Worst@2 (bootstrap; T=1.0)"]
    titles = [ax.get_title() for ax in fig.axes]
    assert len(set(titles)) == len(titles) == 8
    unbiased = {t for t in titles if "bootstrap" not in t}
    assert unbiased and all(t.replace("@2 (", "@2 (bootstrap; ", 1) in titles for t in unbiased)
    dynamics = plots.training_curves(long, ("mean", "entropy", "length"))
    assert [ax.get_ylabel() for ax in dynamics.axes[::2]] == ["Mean@2 (T=1.0)", "entropy (train rollouts)",
                                                              "response length (tokens)"]  # fmt: skip


def test_evaluation_panels_show_the_decoder_they_name(long: pd.DataFrame) -> None:
    """The smoke store's own-sampler and T=1.0 scores are both 0 (tiny policy), so here they are made to differ: the
    default panel draws eval_t1's curve under a 'T=1.0' label, the own-sampler panel eval's under 'own sampler'."""
    own = long["key"] == "eval/pass_at_2"
    moved = long.assign(value=long["value"].where(~own, long["value"] + 0.5))
    for names, label, key in [(["pass"], "Pass@2 (T=1.0)", "eval_t1/pass_at_2"),
                              (with_decoder(["pass"], "eval"), "Pass@2 (own sampler)", "eval/pass_at_2")]:  # fmt: skip
        fig = plots.training_curves(moved, names)
        grpo = next(ax for ax in fig.axes if "grpo" in ax.get_title())
        assert grpo.get_ylabel() == label
        line = next(ln for ln in grpo.get_lines() if ln.get_label() == "EAD, TIS on")
        rows = rows_of(moved, key, **{"algorithm.name": "grpo", "condition": "EAD", "tis.enabled": True}, **held(fig))
        assert np.allclose(line.get_ydata(), expected_curve(rows)["mean"]), key


def test_tis_ablation(long: pd.DataFrame) -> None:
    fig = plots.tis_ablation(long)
    assert [ax.get_ylabel() for ax in fig.axes] == ["Worst@2 (T=1.0)", "clip fraction", "gradient norm"]
    # Only conditions run with and without TIS (grpo: EAD and fixed 1.0); TIS off dashed.
    for ax in fig.axes:
        assert sorted(labels(ax)) == ["EAD, TIS off", "EAD, TIS on", "fixed 1.0, TIS off", "fixed 1.0, TIS on"]
        assert {line.get_linestyle() for line in ax.get_lines() if "TIS off" in line.get_label()} == {"--"}
    assert "grpo" in fig.axes[0].get_title()
    with pytest.raises(NoData, match="two or more TIS variants"):
        plots.tis_ablation(long[long["tis.enabled"] == True])  # noqa: E712


def test_decay_ablation(long: pd.DataFrame) -> None:
    fig = plots.decay_ablation(long)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "d0 (initial decay)" and ax.get_ylabel() == "final Pass@2 (T=1.0)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4", "8", "16"] and ax.get_xscale() == "linear"
    assert "fixed 1.0" in labels(ax)  # a reference line per other sampler
    assert color_of(ax, "fixed 1.0") == FIXED_COLORS["fixed 1.0"]
    assert "EAD (mean, 95% CI)" in legend_texts(fig)
    with pytest.raises(NoData, match="no decay parameter varies"):
        plots.decay_ablation(long[long["condition"].isin(["EAD", "fixed 1.0"])])


def test_rollout_scaling(long: pd.DataFrame) -> None:
    fig = plots.rollout_scaling(long)
    assert [ax.get_title() for ax in fig.axes] == ["EAD · grpo · tiny", "fixed 1.0 · grpo · tiny"]
    assert all(labels(ax) == ["n = 2", "n = 4"] and ax.get_ylabel() == "Pass@2 (T=1.0)" for ax in fig.axes)
    assert "tis.enabled=True" in fig.get_suptitle()  # held at the value both rollout counts were run with
    with pytest.raises(NoData, match="rollouts_per_prompt"):
        plots.rollout_scaling(long[long["rollouts_per_prompt"] == 2])


def test_inference_scaling_log_axis(store: dict[str, Any], runs: pd.DataFrame) -> None:
    fig = plots.inference_scaling(table(store, runs, "inference", "infer_scaling"))
    maj, pas = fig.axes
    assert maj.get_ylabel() == "Majority@N" and pas.get_ylabel() == "Pass@N"
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.get_xlabel() == "N (samples per prompt)"
        assert labels(ax) == ["EAD", "fixed 0.6", "fixed 1.0", "fixed 1.2"]
        assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 4, 8]
        assert {color_of(ax, c) for c in labels(ax)} == set(FIXED_COLORS.values())
    assert_legend_outside(fig)
    with pytest.raises(NoData, match="infer_scaling"):
        plots.inference_scaling(pd.DataFrame(columns=["condition", "N"]))


def test_a_condition_keeps_its_colour_in_every_figure(store: dict[str, Any], runs: pd.DataFrame, long) -> None:
    figs = [
        plots.training_curves(long),
        plots.entropy_by_position(table(store, runs, "entropy", "entropy_by_position")),
        plots.inference_scaling(table(store, runs, "inference", "infer_scaling")),
    ]
    seen: dict[str, set[str]] = {}
    for fig in figs:
        for ax in fig.axes:
            for line in ax.get_lines():
                name = line.get_label().split(", TIS")[0]
                if name in FIXED_COLORS:
                    seen.setdefault(name, set()).add(mcolors.to_hex(line.get_color()))
    assert seen["EAD"] == {FIXED_COLORS["EAD"]} and seen["fixed 1.0"] == {FIXED_COLORS["fixed 1.0"]}


def test_no_training_runs_is_no_data() -> None:
    with pytest.raises(NoData):
        plots.training_curves(pd.DataFrame())


def test_training_curves_split_panels_by_task_variant(long: pd.DataFrame) -> None:
    """Runs of two task variants (decision early / late, the late one with its own longer max_new_tokens) get a panel
    each: the variant is part of the panel, and a setting the panel fixes is not held at one value."""
    grpo = long["algorithm.name"] == "grpo"
    early = long.assign(**{"task_knobs.decision": "early"})
    late = long[grpo].assign(
        run_id=long["run_id"] + "-late", value=long["value"] + 0.25, max_new_tokens=192,
        **{"task_knobs.decision": "late"},
    )  # fmt: skip
    both = pd.concat([early, late], ignore_index=True)
    fig = plots.training_curves(both, ("entropy",))
    titles = [ax.get_title() for ax in fig.axes]
    panels = ("dapo · tiny · decision=early", "grpo · tiny · decision=early", "grpo · tiny · decision=late")
    assert titles == [f"entropy (train rollouts) · {p}" for p in panels]
    assert "max_new_tokens" not in fig.get_suptitle()
    by_title = dict(zip(titles, fig.axes))
    ax_early, ax_late = by_title[titles[1]], by_title[titles[2]]
    for label in labels(ax_early):
        y_early = next(ln.get_ydata() for ln in ax_early.get_lines() if ln.get_label() == label)
        y_late = next(ln.get_ydata() for ln in ax_late.get_lines() if ln.get_label() == label)
        assert np.allclose(np.asarray(y_late) - np.asarray(y_early), 0.25), label


def test_rate_bands_stay_inside_zero_one(long: pd.DataFrame) -> None:
    """Seeds that disagree completely (seed 0 scores 0, seed 1 scores 1) give a t band far past both ends of a rate; it
    is drawn cut to [0, 1]. Unbounded metrics (entropy) keep their band."""
    split = long.assign(value=long["seed"].astype(int) % 2 * 1.0)
    fig = plots.training_curves(split, ("pass", "entropy"))
    ys = {ax.get_title(): np.concatenate([p.get_paths()[0].vertices[:, 1] for p in ax.collections])
          for ax in fig.axes if ax.collections}  # fmt: skip
    rate = [t for t in ys if t.startswith("Pass")]
    assert rate and all(ys[t].min() == 0.0 and ys[t].max() == 1.0 for t in rate), ys
    others = [t for t in ys if t not in rate]
    assert others and all(ys[t].min() < 0.0 and ys[t].max() > 1.0 for t in others), ys


def test_rate_panels_start_at_zero_and_zoom_only_below_one_half(long: pd.DataFrame) -> None:
    """Rates keep 0 at the floor; a panel whose curves and bands stay below 0.5 ends just above them (all 0: at 0.1),
    one that passes 0.5 spans [0, 1]."""
    is_worst = long["key"].str.contains("worst")
    fig = plots.training_curves(long.assign(value=np.where(is_worst, 0.0, 0.9)), ("pass", "worst"))
    tops = {ax.get_title(): ax.get_ylim() for ax in fig.axes}
    assert all(lim == pytest.approx((-0.03, 1.03 if t.startswith("Pass") else 0.1)) for t, lim in tops.items())
    fig = plots.training_curves(long.assign(value=np.where(is_worst, 0.2, 0.9)), ("pass", "worst"))
    tops = {ax.get_title(): ax.get_ylim()[1] for ax in fig.axes}
    assert tops and all(
        top == pytest.approx(1.03 if t.startswith("Pass") else 1.2 * 0.2 + 0.02) for t, top in tops.items()
    )
