"""The verdict: paired differences with a two-level bootstrap, on generated data with a known effect and with none,
and end to end from a real MLflow store (runs with per-prompt ``eval_counts`` tables, and runs without them)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.verdict import (
    BETTER,
    SAME,
    WORSE,
    curve_area,
    in_words,
    main,
    paired_bootstrap,
    per_prompt_values,
    verdict,
)

K = 16


def generated(effect: float, seeds: int = 5, steps: int = 4, prompts: int = 128, rng=None) -> tuple[np.ndarray, ...]:
    """Per-prompt Mean@16 of a baseline and a condition whose success probability is the baseline's + ``effect``
    (clipped), paired by seed (a seed-level offset shared by both) and prompt. Returns cond, base, true effect."""
    rng = rng or np.random.default_rng(0)
    p = np.clip(rng.beta(2, 3, size=(1, 1, prompts)) + rng.normal(0, 0.1, size=(seeds, 1, 1)), 0.02, 0.98)
    p = np.broadcast_to(p, (seeds, steps, prompts))
    q = np.clip(p + effect, 0.0, 1.0)
    base = per_prompt_values(f"eval_t1/mean_at_{K}", rng.binomial(K, p), np.full(p.shape, K))
    cond = per_prompt_values(f"eval_t1/mean_at_{K}", rng.binomial(K, q), np.full(q.shape, K))
    return cond, base, float((q - p).mean())


@pytest.mark.parametrize("effect", [0.08, -0.08])
def test_known_effect_is_covered_with_the_right_sign(effect):
    cond, base, truth = generated(effect)
    d = paired_bootstrap(cond, base, steps=[0, 10, 20, 30], n_boot=1000)
    assert d.final_lo <= truth <= d.final_hi and d.auc_lo <= truth <= d.auc_hi
    assert in_words(d.final_lo, d.final_hi) == (BETTER if effect > 0 else WORSE)
    assert np.sign(d.final) == np.sign(effect) and d.seeds == 5 and d.prompts == 128


def test_no_effect_is_mostly_no_detectable_difference():
    rng = np.random.default_rng(1)
    words = []
    for _ in range(50):
        cond, base, _ = generated(0.0, rng=rng)
        d = paired_bootstrap(cond, base, steps=[0, 10, 20, 30], n_boot=500, seed=int(rng.integers(1 << 30)))
        words.append(in_words(d.final_lo, d.final_hi))
    assert words.count(SAME) >= 45, words


def test_intervals_widen_with_fewer_prompts_and_one_seed_has_none():
    cond, base, _ = generated(0.05)
    wide = paired_bootstrap(cond[:, :, :16], base[:, :, :16], steps=[0, 1, 2, 3], n_boot=500)
    narrow = paired_bootstrap(cond, base, steps=[0, 1, 2, 3], n_boot=500)
    assert wide.final_hi - wide.final_lo > narrow.final_hi - narrow.final_lo
    one = paired_bootstrap(cond[:1], base[:1], steps=[0, 1, 2, 3])
    assert np.isnan(one.final_lo) and in_words(one.final_lo, one.final_hi) == "too few seeds"


def test_pairing_removes_shared_seed_noise():
    """A huge seed-level offset shared by both conditions must not hide a small effect."""
    rng = np.random.default_rng(2)
    offset = rng.normal(0, 5.0, size=(6, 1, 1))
    base = offset + rng.normal(0, 0.05, size=(6, 3, 64))
    cond = base + 0.05
    d = paired_bootstrap(cond, base, steps=[0, 5, 10], n_boot=500)
    assert d.final == pytest.approx(0.05) and d.final_lo == pytest.approx(0.05) and d.final_hi == pytest.approx(0.05)


def test_curve_area_and_per_prompt_values():
    assert curve_area(np.array([0.0, 1.0, 2.0]), np.array([0, 5, 10])) == pytest.approx(1.0)
    assert curve_area(np.array([0.0, 0.0, 3.0]), np.array([0, 9, 10])) == pytest.approx(0.15)
    assert curve_area(np.array([[0.4]]), np.array([7])) == pytest.approx([0.4])
    correct, n = np.array([0, 1, 16]), np.array([16, 16, 16])
    assert per_prompt_values("eval/pass_at_16", correct, n).tolist() == [0.0, 1.0, 1.0]
    assert per_prompt_values("eval/worst_at_16", correct, n).tolist() == [0.0, 0.0, 1.0]
    assert per_prompt_values("eval/pass_at_1", correct, n) == pytest.approx([0, 1 / 16, 1])
    assert per_prompt_values("eval_greedy/accuracy", np.array([0, 1]), np.array([1, 1])).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="metric must look like"):
        per_prompt_values("eval/pass16", correct, n)


def long_frame(cond: np.ndarray, base: np.ndarray, steps: list[int], names=("EAD", "fixed 1.0")) -> pd.DataFrame:
    rows = []
    for label, cube in zip(names, (cond, base)):
        S, T, P = cube.shape
        for s in range(S):
            for t in range(T):
                rows += [
                    {
                        "setting": "grpo",
                        "condition": label,
                        "seed": s,
                        "step": steps[t],
                        "metric": "eval_t1/mean_at_16",
                        "prompt": p,
                        "value": cube[s, t, p],
                        "resampled": "seeds x prompts",
                    }  # fmt: skip
                    for p in range(P)
                ]
    return pd.DataFrame(rows)


def test_verdict_table_pairs_by_seed_and_common_steps():
    cond, base, truth = generated(0.1, seeds=3, steps=3, prompts=32)
    frame = long_frame(cond, base, [0, 10, 20])
    frame = frame[~((frame["condition"] == "EAD") & (frame["seed"] == 2))]  # seed 2 only in the baseline
    extra = frame[(frame["step"] == 20)].assign(step=30)  # a step only some runs have
    frame = pd.concat([frame, extra[extra["condition"] == "EAD"]])
    table = verdict(frame, "fixed 1.0", ["eval_t1/mean_at_16"], n_boot=500)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["seeds"] == 2 and row["final_step"] == 20 and row["condition"] == "EAD"
    assert row["diff_final"] == pytest.approx((cond[:2, -1] - base[:2, -1]).mean())
    assert row["verdict"] == BETTER


# ---------------------------------------------------------------------------------------------------------------------
# End to end from MLflow
# ---------------------------------------------------------------------------------------------------------------------


def make_store(tmp_path, effect: float, with_counts: bool = True) -> str:
    from experiments.tracking import MlflowRunLogger, ensure_experiment, make_client

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = make_client(uri)
    exp = ensure_experiment(client, "verdict-test", uri)
    rng = np.random.default_rng(5)
    p = rng.beta(2, 3, size=48)
    for seed in range(3):
        for kind, tau, shift in (("ead", 1.0, effect), ("fixed", 1.0, 0.0)):
            run = client.create_run(exp, tags={"job": "train", "config_hash": f"{kind}{seed}", "backend": "local"})
            lg = MlflowRunLogger(client, run.info.run_id)
            lg.log_params({"sampling.kind": kind, "sampling.tau": tau, "seed": seed, "algorithm.name": "grpo"})
            for step in (0, 10, 20):
                counts = rng.binomial(K, np.clip(p + shift * step / 20, 0, 1))
                if with_counts:
                    lg.log_table(
                        "eval_counts",
                        [{"decoder": "eval_t1", "prompt": i, "correct": int(c), "n": K} for i, c in enumerate(counts)],
                        step,
                    )
                lg.log_metrics({"eval_t1/mean_at_16": float(counts.mean() / K)}, step)
            lg.finish("FINISHED")
    return uri


@pytest.mark.parametrize("with_counts", [True, False])
def test_cli_from_a_real_store(tmp_path, capsys, with_counts):
    uri = make_store(tmp_path, effect=0.3, with_counts=with_counts)
    out = tmp_path / "out"
    code = main(["--experiment", "verdict-test", "--tracking-uri", uri, "--metric", "eval_t1/mean_at_16",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "EAD vs fixed 1.0" in text and "eval_t1" in text
    table = pd.read_csv(out / "verdict.csv")
    assert table["verdict"].tolist() == [BETTER]
    assert table["resampled"].tolist() == ["seeds x prompts" if with_counts else "seeds"]
    assert (out / "verdict.tex").read_text().startswith("\\begin{tabular}")
    from analysis.mlflow_loader import load_runs

    assert load_runs("verdict-test", uri, jobs=["verdict"])["job"].tolist() == ["verdict"]
    assert "verdict" not in set(load_runs("verdict-test", uri)["job"])  # report runs are not results


def test_cli_names_a_bad_baseline_and_metric(tmp_path, capsys):
    uri = make_store(tmp_path, effect=0.0)
    assert main(["--experiment", "verdict-test", "--tracking-uri", uri, "--baseline", "fixed 0.7", "--no-log"]) == 2
    assert "--baseline 'fixed 0.7' is not a condition" in capsys.readouterr().err
    assert main(["--experiment", "verdict-test", "--tracking-uri", uri, "--metric", "pass16", "--no-log"]) == 2
    assert "metric must look like" in capsys.readouterr().err


def test_cli_compares_the_selected_runs_only(tmp_path, capsys):
    """--condition / --where pick one preset's runs out of a shared experiment; a selection naming nothing that
    exists is an error that says what does."""
    uri = make_store(tmp_path, effect=0.3)
    base = ["--experiment", "verdict-test", "--tracking-uri", uri, "--metric", "eval_t1/mean_at_16", "--no-log"]
    out = tmp_path / "out"
    assert main([*base, "--condition", "EAD", "--condition", "fixed 1.0", "--where", "algorithm.name=grpo",
                 "--out", str(out)]) == 0  # fmt: skip
    assert pd.read_csv(out / "verdict.csv")["verdict"].tolist() == [BETTER]
    capsys.readouterr()
    assert main([*base, "--where", "algorithm.name=dapo"]) == 2
    assert "matches --condition / --where" in capsys.readouterr().err
    assert main([*base, "--condition", "fixed 9"]) == 2
    assert "--condition 'fixed 9' is not a condition of these runs; conditions: ['EAD', 'fixed 1.0']" in (
        capsys.readouterr().err
    )
    assert main([*base, "--where", "decision"]) == 2
    assert "--where: expected PARAM=VALUE" in capsys.readouterr().err
    assert main([*base, "--where", "task_knobs.decision=late"]) == 2
    assert "--where task_knobs.decision: no run has this param" in capsys.readouterr().err


def test_conditions_name_tis_only_for_a_sampler_run_both_ways():
    """The reproduction runs EAD with and without TIS and fixed temperatures with TIS only: the EAD conditions say
    which, the fixed ones keep their plain names (so --baseline "fixed 1.0" still names the baseline); the algorithm
    is the setting."""
    from analysis.verdict import _settings_and_conditions

    rows = [
        ("grpo", "EAD", True),
        ("grpo", "EAD", False),
        ("grpo", "fixed 1.0", True),
        ("grpo", "fixed 0.6", True),
        ("dapo", "EAD", True),
        ("dapo", "fixed 1.0", True),
    ]
    runs = pd.DataFrame(
        [
            {"algorithm.name": a, "condition": c, "tis.enabled": str(t), "tis.level": "token", "seed": s}
            for a, c, t in rows
            for s in (0, 1)
        ]
    )
    setting, condition = _settings_and_conditions(runs)
    got = sorted(set(zip(setting, condition)))
    assert got == [
        ("algorithm.name=dapo", "EAD · TIS on"),  # one spelling per sampler and TIS across the experiment
        ("algorithm.name=dapo", "fixed 1.0"),
        ("algorithm.name=grpo", "EAD · TIS off"),
        ("algorithm.name=grpo", "EAD · TIS on"),
        ("algorithm.name=grpo", "fixed 0.6"),
        ("algorithm.name=grpo", "fixed 1.0"),
    ]


def test_summary_says_what_moved_and_quotes_the_final_differences():
    from analysis.verdict import TOO_FEW, summary

    def row(cond, metric, final, area, d=0.0):
        return {"setting": "algorithm.name=grpo", "condition": cond, "metric": metric, "seeds": 3, "diff_final": d,
                "final_lo": d - 0.01, "final_hi": d + 0.01, "verdict": final, "verdict_auc": area}  # fmt: skip

    metrics = ["eval_t1/pass_at_16", "eval_t1/mean_at_16", "eval_t1/worst_at_16", "eval_greedy/accuracy"]
    table = pd.DataFrame(
        [row("reverse vs fixed 1.0", m, SAME, WORSE if m.endswith("mean_at_16") else SAME, d=0.1 * i)
         for i, m in enumerate(metrics)]
        + [row("EAD vs fixed 1.0", m, SAME, SAME) for m in metrics]
        + [row("late vs fixed 1.0", m, TOO_FEW, TOO_FEW) for m in metrics]
    )  # fmt: skip
    s = summary(table)
    assert s["condition"].tolist() == ["reverse vs fixed 1.0", "EAD vs fixed 1.0", "late vs fixed 1.0"]
    assert s["verdict"].tolist() == ["worse on Mean@16 (area)", SAME, f"{TOO_FEW} (one paired seed)"]
    first = s.iloc[0]
    assert first["Pass@16 diff [95% CI]"] == "+0.000 [-0.010, +0.010]"
    assert first["Mean@16 diff [95% CI]"] == "+0.100 [+0.090, +0.110]"
    assert first["greedy diff [95% CI]"] == "+0.300 [+0.290, +0.310]"
    assert first["seeds"] == 3 and first["setting"] == "algorithm.name=grpo"
    assert "Worst@16 diff [95% CI]" not in s.columns
    worst = summary(table, cells=("eval_t1/worst_at_16", "eval_t1/mean_at_16"))
    assert list(worst.columns[3:5]) == ["Worst@16 diff [95% CI]", "Mean@16 diff [95% CI]"]
    assert worst.iloc[0]["Worst@16 diff [95% CI]"] == "+0.200 [+0.190, +0.210]"
