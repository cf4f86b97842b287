"""The README's verdict table from a verdict.csv (default results/reproduction/verdict.csv): one row per algorithm
and condition (``analysis.verdict.summary``).

.venv/bin/python results/reproduction/readme_table.py [results/reproduction/2026-12-04/verdict.csv]
"""

import sys

import pandas as pd

from analysis.verdict import summary

HEADER = ["vs fixed 1.0 (same algorithm)", "seeds", "Pass@16 diff [95% CI]", "Mean@16 diff [95% CI]",
          "greedy diff [95% CI]", "verdict"]  # fmt: skip


def main() -> None:
    v = summary(pd.read_csv(sys.argv[1] if len(sys.argv) > 1 else "results/reproduction/verdict.csv"))
    algorithm = v["setting"].str.split("=").str[1].str.upper()
    condition = v["condition"].str.replace(" vs fixed 1.0", "").str.replace(" · ", " with ")
    v = v.assign(setting=algorithm + " " + condition).drop(columns="condition")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in v.astype(str).itertuples(index=False):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
