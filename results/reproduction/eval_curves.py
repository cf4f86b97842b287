"""Per-run eval curves of a reproduction experiment (common decoders and the run's own sampler) from its MLflow store.

    .venv/bin/python results/reproduction/eval_curves.py sqlite:////work/repro/mlflow.db \
        results/reproduction/eval_curves.csv [EXPERIMENT (default reproduction)]
"""

import sys

from analysis.mlflow_loader import client_for, load_metrics, load_runs

KEYS = ["eval_t1/mean_at_16", "eval_t1/pass_at_16", "eval_t1/worst_at_16", "eval_greedy/accuracy", "eval/mean_at_16"]


def main(uri: str, out: str, experiment: str = "reproduction") -> None:
    client = client_for(uri)
    runs = load_runs(experiment, client=client, jobs=["train"])
    long = load_metrics(experiment, KEYS, runs, client=client)
    tis = runs["tis.enabled"].astype(str).map({"True": "on", "False": "off"})
    runs = runs.assign(tis=tis.fillna(runs["tis.enabled"].astype(str)))
    cols = ["run_id", "algorithm.name", "condition", "tis", "seed"]
    long = long.drop(columns=[c for c in cols[1:] if c in long]).merge(runs[cols], on="run_id")
    index = ["algorithm.name", "condition", "tis", "seed", "step"]
    table = long.pivot_table(index=index, columns="key", values="value").reset_index()
    table = table.sort_values(["seed", "algorithm.name", "condition", "tis", "step"])
    table.to_csv(out, index=False)
    print(table.round(3).to_markdown(index=False))


if __name__ == "__main__":
    main(*sys.argv[1:4])
