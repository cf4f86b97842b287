"""The README's verdict table from results/reproduction/verdict.csv: one row per algorithm and condition.

.venv/bin/python results/reproduction/readme_table.py
"""

import pandas as pd

METRICS = [("eval_t1/pass_at_16", "Pass@16"), ("eval_t1/mean_at_16", "Mean@16"),
           ("eval_t1/worst_at_16", "Worst@16"), ("eval_greedy/accuracy", "greedy")]  # fmt: skip
HEADER = ["vs fixed 1.0 (same algorithm)", "seeds", "Pass@16 diff [95% CI]", "Mean@16 diff [95% CI]",
          "greedy diff [95% CI]", "verdict"]  # fmt: skip


def cell(r: pd.Series) -> str:
    return f"{r.diff_final:+.3f} [{r.final_lo:+.3f}, {r.final_hi:+.3f}]"


def main() -> None:
    v = pd.read_csv("results/reproduction/verdict.csv")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for (setting, cond), g in v.groupby(["setting", "condition"], sort=False):
        g = g.set_index("metric")
        words = [
            f"{g.loc[m, col]} on {name} ({kind})"
            for m, name in METRICS
            for kind, col in (("final", "verdict"), ("area", "verdict_auc"))
            if g.loc[m, col] != "no detectable difference"
        ]
        label = f"{setting.split('=')[1].upper()} {cond.replace(' vs fixed 1.0', '').replace(' · ', ' with ')}"
        cells = [label, str(int(g["seeds"].iloc[0]))]
        cells += [cell(g.loc[m]) for m in ("eval_t1/pass_at_16", "eval_t1/mean_at_16", "eval_greedy/accuracy")]
        cells.append("; ".join(words) or "no detectable difference")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
