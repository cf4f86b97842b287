#!/usr/bin/env bash
# The main command (README "Main command"): on a fresh machine, install the main environment, run the reduced testbed
# sweep locally (sweeps/experiment/default.yaml: EAD vs fixed temperatures 1.0 and 0.6, 3 seeds, countdown_trace,
# one shared warm start), the entropy-by-position and position-branching studies (on the warm start and on the
# trained seed-0 policies) and the effective-schedule study into the same MLflow experiment, regenerate every figure
# and table those runs support (python -m analysis.figures), and end with the verdict: does each condition beat
# fixed 1.0 (python -m analysis.verdict)?
#
#   bash scripts/main.sh                                  # as documented
#   bash scripts/main.sh hydra/launcher=submitit_local    # extra arguments go to the training sweep (Hydra overrides)
#
# Idempotent: finished runs are skipped (by config hash), interrupted ones resume from their checkpoints.
# Outputs (all git-ignored): mlflow.db + mlruns/ (tracking), runs/default/<hash>/ (checkpoints, JSONL logs),
# multirun/ (Hydra job dirs and logs), outputs/figures/default/ (figures as PNG + PDF, tables as Markdown + LaTeX),
# outputs/verdict/default/ (verdict.md / .tex / .csv).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

bash scripts/install.sh main

# OpenMP threads that sleep while they wait (PASSIVE) degrade in proportion when another process shares the cores;
# spinning ones collapsed 30-100x (benchmarks/bench_contention.py), which is why threads=0 means one thread unless
# this is set.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
# Jobs at once: one per core (at most 4: beyond that the runs of a seed wait on each other's shared evaluations).
JOBS=$(nproc); JOBS=$(( JOBS > 4 ? 4 : JOBS ))

if [ $# -eq 0 ]; then
  # The first run alone, on every core: it trains the warm start all nine runs share (a single-run job of the same
  # config hash as the sweep's EAD seed-0 run, so the sweep below skips it).
  echo "== first run: .venv/bin/python sweep.py experiment=default"
  .venv/bin/python sweep.py experiment=default
fi
# The rest as local processes, $JOBS at a time, one torch thread each (threads is not part of the config hash).
echo "== sweep: .venv/bin/python sweep.py -m experiment=default hydra/launcher=submitit_local" \
  "hydra.sweeper.max_batch_size=$JOBS threads=1 $*"
.venv/bin/python sweep.py -m experiment=default hydra/launcher=submitit_local "hydra.sweeper.max_batch_size=$JOBS" \
  threads=1 "$@"

# The studies on the warm start every run starts from and on the trained seed-0 policies (one per condition), with
# the testbed's task and response length, at reduced sizes. In this process, one job after the other: a study job
# computes for ~4 s, while a job process of its own costs ~15 s of imports and the sweep's MLflow server ~16 s more
# (measured 2026-12-04: the 8 entropy jobs took 47 s in process, 2 min 51 s as two local processes at a time).
TRAINED=$(.venv/bin/python -m analysis.policies --experiment default --seed 0)
POLICIES="null${TRAINED:+,$TRAINED}"
STUDY=(task=countdown_trace max_new_tokens=128 sft_steps=300 experiment_name=default "sampling=fixed_1.0,ead_trace"
       "init_from=$POLICIES")
echo "== study: .venv/bin/python sweep.py -m study=entropy ${STUDY[*]} study.prompts=16"
.venv/bin/python sweep.py -m study=entropy "${STUDY[@]}" study.prompts=16
echo "== study: .venv/bin/python sweep.py -m study=branching ${STUDY[*]} study.prompts=8 study.prefixes=[0,2,8,32]"
.venv/bin/python sweep.py -m study=branching "${STUDY[@]}" study.prompts=8 "study.prefixes=[0,2,8,32]"
echo "== study: .venv/bin/python sweep.py study=schedule experiment_name=default"
.venv/bin/python sweep.py study=schedule experiment_name=default

echo "== figures: .venv/bin/python -m analysis.figures --experiment default --out outputs/figures/default"
.venv/bin/python -m analysis.figures --experiment default --out outputs/figures/default

echo "== verdict: .venv/bin/python -m analysis.verdict --experiment default --baseline 'fixed 1.0'"
.venv/bin/python -m analysis.verdict --experiment default --baseline "fixed 1.0"

cat <<MSG

Done.
  verdict:  $ROOT/outputs/verdict/default/   (verdict.md / .tex / .csv; printed above; also logged to MLflow)
  figures:  $ROOT/outputs/figures/default/   (*.png, *.pdf, final_metrics.md / .tex; also logged to MLflow)
  runs:     $ROOT/runs/default/<config hash>/   (metrics.jsonl, tables/, checkpoint.pt, policy/)
  MLflow:   $ROOT/mlflow.db
Browse the runs in the MLflow UI:
  $ROOT/.venv/bin/mlflow ui --backend-store-uri sqlite:///$ROOT/mlflow.db --host 127.0.0.1 --port 5000
  then open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning
  (MLflow 3.17 opens in its GenAI view, an empty traces dashboard, until "Model training" is picked at the top left;
  this address picks it. Experiment "default": compare runs, metrics eval_t1/pass_at_16, eval_t1/worst_at_16.)
MSG
