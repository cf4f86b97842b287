#!/usr/bin/env bash
# The main command (README "Main command"): on a fresh machine, install the main environment, run the default small
# sweep locally (EAD vs fixed temperature 1.0, 2 seeds, tiny countdown policy; sweeps/experiment/default.yaml), run the
# entropy-by-position, position-branching and effective-schedule studies into the same MLflow experiment, regenerate
# every figure and table those runs support (python -m analysis.figures), and say where everything is.
#
#   bash scripts/main.sh                                  # as documented
#   bash scripts/main.sh hydra/launcher=submitit_local    # extra arguments go to sweep.py (Hydra overrides)
#
# Idempotent: finished runs are skipped (by config hash), interrupted ones resume from their checkpoints.
# Outputs (all git-ignored): mlflow.db + mlruns/ (tracking), runs/default/<hash>/ (checkpoints, JSONL logs),
# multirun/ (Hydra job dirs and logs), outputs/figures/default/ (figures as PNG + PDF, tables as Markdown + LaTeX).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

bash scripts/install.sh main

echo "== sweep: .venv/bin/python sweep.py -m experiment=default $*"
.venv/bin/python sweep.py -m experiment=default "$@"

echo "== studies: .venv/bin/python sweep.py -m study=entropy,branching,schedule sampling=fixed_1.0,ead experiment_name=default"
.venv/bin/python sweep.py -m study=entropy,branching,schedule sampling=fixed_1.0,ead experiment_name=default

echo "== figures: .venv/bin/python -m analysis.figures --experiment default --out outputs/figures/default"
.venv/bin/python -m analysis.figures --experiment default --out outputs/figures/default

cat <<MSG

Done.
  figures:  $ROOT/outputs/figures/default/   (*.png, *.pdf, final_metrics.md / .tex; also logged to MLflow)
  runs:     $ROOT/runs/default/<config hash>/   (metrics.jsonl, tables/, checkpoint.pt, policy/)
  MLflow:   $ROOT/mlflow.db
Browse the runs in the MLflow UI:
  $ROOT/.venv/bin/mlflow ui --backend-store-uri sqlite:///$ROOT/mlflow.db --host 127.0.0.1 --port 5000
  then open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning
  (MLflow 3.17 opens in its GenAI view, an empty traces dashboard, until "Model training" is picked at the top left;
  this address picks it. Experiment "default": compare runs, metrics eval/pass_at_16, eval/worst_at_16.)
MSG
