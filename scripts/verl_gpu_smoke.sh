#!/usr/bin/env bash
# GPU smoke test of the verl backend: two verl training steps (plus validation) with a small model on one
# GPU, through the same launcher the sweeps use. NOT part of CI (scripts/test.sh never runs it).
#
# Needs: one CUDA GPU (>= 24 GB); an environment with verl 0.9.1 and its vLLM extra
#   pip install "verl[vllm]==0.9.1"      # vllm 0.24.0, torch 2.11, transformers 5.9, TransferQueue
#   pip install -e ".[verl,sweep]"       # this repository (verl's Ray workers and vLLM import it by name)
# the model (EAD_SMOKE_MODEL: hub id or local directory, default Qwen/Qwen2.5-0.5B-Instruct) and the data
# (EAD_SMOKE_NUMINA / EAD_SMOKE_MATH500: hub names or local json/parquet files; defaults: the hub datasets).
#
# What it checks: verl exits 0; the MLflow run (a local SQLite store under EAD_SMOKE_DIR, explicit URI)
# holds the shared metric names and the EAD metrics with finite values and ends FINISHED; the checkpoint
# directory <ckpt_root>/<config hash>/global_step_2 exists; a second start of the same config resumes from it
# and exits without training. It prints the EAD metrics by position bucket: tokens before c = 10 sample at
# tau = 1, so their TIS log-ratios show only the engine/trainer mismatch, later buckets the annealing.
#
#   bash scripts/verl_gpu_smoke.sh            # EAD_SMOKE_DIR=/tmp/ead-verl-smoke by default
set -euo pipefail
cd "$(dirname "$0")/.."

py=${PYTHON:-python}
out=${EAD_SMOKE_DIR:-/tmp/ead-verl-smoke}
model=${EAD_SMOKE_MODEL:-Qwen/Qwen2.5-0.5B-Instruct}
numina=${EAD_SMOKE_NUMINA:-AI-MO/NuminaMath-CoT}
math500=${EAD_SMOKE_MATH500:-HuggingFaceH4/MATH-500}
mkdir -p "$out"

"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print('GPU:', torch.cuda.get_device_name(0))"
"$py" -c "import vllm, verl, transfer_queue; print('vllm', vllm.__version__, 'verl', verl.__version__)"

echo "== data"
"$py" -m experiments.verl prepare-data --out "$out/data" --numina "$numina" --math500 "$math500" \
  --train-limit 256 --eval-limit 8 --eval-n 4

echo "== MLflow run (explicit tracking URI, never verl's /tmp default)"
uri="sqlite:///$out/mlflow.db"
run_id=$("$py" -c "
import mlflow
mlflow.set_tracking_uri('$uri')
exp = mlflow.set_experiment('ead-verl-smoke')
print(mlflow.MlflowClient().create_run(exp.experiment_id, run_name='smoke').info.run_id)")
echo "run id: $run_id"

sets=(
  --set "model=$model"
  --set "data.train_files=[$out/data/numina_math/train.parquet]"
  --set "data.val_files=[$out/data/math500/test.parquet]"
  --set "ckpt_root=$out/ckpt"
  --set "tracking.uri=$uri"
  --set "tracking.run_id=$run_id"
)

echo "== dry run"
"$py" -m experiments.verl --preset smoke "${sets[@]}" --dry-run --validate

echo "== two verl steps"
"$py" -m experiments.verl --preset smoke "${sets[@]}" run

echo "== checks"
"$py" - "$uri" "$run_id" "$out/ckpt" <<'EOF'
import glob, math, sys
from mlflow import MlflowClient

uri, run_id, ckpt_root = sys.argv[1:4]
client = MlflowClient(tracking_uri=uri)
run = client.get_run(run_id)
assert run.info.status == "FINISHED", run.info.status
m = run.data.metrics
need = [
    "train/reward_mean", "train/response_length", "train/entropy", "train/pg_clipfrac", "train/grad_norm",
    "train/is_weight_mean", "train/is_weight_max", "train/is_truncated_frac", "train/is_ess",
    "train/kl_behavior_old", "train/tau_mean", "perf/step_s", "perf/tokens_per_s",
    "eval/pass_at_4", "eval/worst_at_4", "eval/boot_best_at_4", "eval_t1/pass_at_4", "eval_greedy/accuracy",
    "rollout_corr/rollout_is_mean",
]
missing = [k for k in need if k not in m]
assert not missing, f"missing metrics: {missing}"
bad = [k for k in need if not math.isfinite(m[k])]
assert not bad, f"non-finite metrics: {bad}"
assert m["train/tau_mean"] != 1.0, "tau_mean is 1.0: was the schedule stamped?"
for k in sorted(k for k in m if "/pos_" in k):
    print(f"{k:45s} {m[k]:.5f}")
steps = sorted(glob.glob(f"{ckpt_root}/*/global_step_*"))
assert any(s.endswith("global_step_2") for s in steps), steps
print("OK:", len(m), "metrics; checkpoints:", steps)
EOF

echo "== resume: the same config again finds global_step_2 and does not train"
"$py" -m experiments.verl --preset smoke "${sets[@]}" run 2>&1 | tee "$out/resume.log" | tail -5
grep -q "global_step_2" "$out/resume.log"
echo "smoke test passed"
