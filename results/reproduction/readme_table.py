"""The README's verdict table from a verdict.csv (default results/reproduction/verdict.csv): one row per algorithm
and condition (``analysis.verdict.summary``); ``--worst`` adds the Worst@16 column (for a testbed whose warm start
solves some prompts 16 of 16, e.g. results/reproduction_mixed).

.venv/bin/python results/reproduction/readme_table.py [results/reproduction/2026-12-04/verdict.csv] [--worst]
"""

import sys

import pandas as pd

from analysis.verdict import SUMMARY_CELLS, SUMMARY_METRICS, summary


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--worst"]
    cells = tuple(m for m, _ in SUMMARY_METRICS) if "--worst" in sys.argv else SUMMARY_CELLS
    v = summary(pd.read_csv(args[0] if args else "results/reproduction/verdict.csv"), cells=cells)
    algorithm = v["setting"].str.split("=").str[1].str.upper()
    condition = v["condition"].str.replace(" vs fixed 1.0", "").str.replace(" · ", " with ")
    v = v.assign(setting=algorithm + " " + condition).drop(columns="condition")
    header = ["vs fixed 1.0 (same algorithm)", *v.columns[1:]]  # summary's own column names
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in v.astype(str).itertuples(index=False):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
