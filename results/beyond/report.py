"""Per-preset verdicts, figures and README tables of the shared experiment `beyond` (README "Beyond the paper").

    .venv/bin/python results/beyond/report.py sqlite:///mlflow.db results/beyond/2026-12-05

For each of the six presets present in the store: its runs (``--condition`` / ``--where`` of analysis.verdict and
analysis.figures, so the numbers are the CLIs' own), the verdict against fixed 1.0 and, for the schedule variants,
against EAD; its figures (Pass@16 / Worst@16 and Mean@16 / entropy / length, at T=1.0 for every condition; entropy
by response position at each run's last evaluation, own sampler); then the README's table rows. A preset whose
conditions are not all in the store yet is reported as partial, with the seeds it has.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

from analysis import figures, verdict
from analysis.mlflow_loader import client_for, load_runs

EARLY = ["task_knobs.decision=early"]
# preset -> (label prefixes of its own conditions, --where, whether to add a verdict against EAD)
PRESETS = {
    "decision_position": ([], [], False),
    "reverse": (["reverse"], EARLY, True),
    "adaptive": (["entropy_target"], EARLY, True),
    "matched_entropy": (["fixed_matched"], EARLY, True),
    "growth_ablation": (["EAD d_growth="], EARLY, True),
    "cap_ablation": (["EAD d_cap="], EARLY, True),
}
EXPECTED = {"reverse": 1, "adaptive": 1, "matched_entropy": 1, "growth_ablation": 3, "cap_ablation": 2}
FIGURES = ("training_pass_worst", "training_dynamics", "entropy_by_position_training")


def rows(csv: Path) -> list[str]:
    """README rows of a verdict.csv (``analysis.verdict.summary``), each condition labelled with its setting."""
    v = verdict.summary(pd.read_csv(csv))
    setting = v["setting"].map(lambda s: "" if s == "all runs" else f" ({s.replace('task_knobs.', '')})")
    v = v.assign(condition=v["condition"] + setting).drop(columns="setting")
    return ["| " + " | ".join(r) + " |" for r in v.astype(str).itertuples(index=False)]


def main(uri: str, out_root: str) -> None:
    runs = load_runs("beyond", client=client_for(uri), jobs=["train"])
    labels = sorted(set(runs["condition"]))
    seeds = runs.groupby("condition")["seed"].nunique()
    print(f"{len(runs)} finished training runs; conditions: {dict(seeds)}")
    for preset, (prefixes, where, vs_ead) in PRESETS.items():
        own = [c for c in labels if any(c == p or c.startswith(p) for p in prefixes)]
        if prefixes and not own:
            print(f"\n## {preset}: no runs yet")
            continue
        partial = len(own) < EXPECTED.get(preset, 0) or min(seeds.get(c, 0) for c in [*own, "EAD", "fixed 1.0"]) < 3
        conds = [*own, "EAD", "fixed 1.0"]
        sel = [a for c in conds for a in ("--condition", c)] + [a for w in where for a in ("--where", w)]
        out = Path(out_root) / preset
        print(f"\n## {preset}{' (PARTIAL)' if partial else ''}: {', '.join(conds)}")
        table = []
        for base in ["fixed 1.0", *(["EAD"] if vs_ead else [])]:
            d = out / ("verdict" if base == "fixed 1.0" else "verdict_vs_ead")
            args = ["--experiment", "beyond", "--tracking-uri", uri, "--baseline", base, "--out", str(d), "--no-log"]
            if verdict.main([*args, *sel]) != 0:
                raise SystemExit(f"verdict of {preset} vs {base} failed")
            table += [f"| **vs {base}** |  |  |  |  |  |", *rows(d / "verdict.csv")]
        tmp = out / "figures"
        code = figures.main(["--experiment", "beyond", "--tracking-uri", uri, "--out", str(tmp), "--no-log", *sel])
        if code not in (0, 1):
            raise SystemExit(f"figures of {preset} failed ({code})")
        for name in FIGURES:
            shutil.copy(tmp / f"{name}.png", out / f"{name}.png")
        shutil.copy(tmp / "final_metrics.md", out / "final_metrics.md")
        shutil.rmtree(tmp)
        header = ["condition", "seeds", "Pass@16 diff [95% CI]", "Mean@16 diff [95% CI]", "greedy diff [95% CI]",
                  "verdict"]  # fmt: skip
        text = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *table]
        (out / "readme_table.md").write_text("\n".join(text) + "\n")
        print("\n".join(text))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
