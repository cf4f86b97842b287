"""The inference-time scaling study (experiments/studies/inference/) end to end on the real vLLM CPU engine.

One run of the real command line in a subprocess (one engine, three conditions, N up to 16) on a small
character-level policy that has partly memorised this test's eval prompts (60 SFT steps, about a second):
its accuracy is far from 0 and 1 and falls with temperature, so every metric has room to move. The tests
then check the logged metrics and tables: complete, in [0, 1], Pass@N non-decreasing and Worst@N
non-increasing in N, Pass@N >= Mean >= Worst@N, Maj@1 close to Mean, and that the conditions really
sampled differently. Config validation, condition parsing and the metric arithmetic are checked without an
engine (unmarked: they run in the main environment, as does publishing a finished run directory to MLflow).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 420
N_GRID = [1, 2, 4, 8, 16]
CONDITIONS = ["ead:local", "fixed:0.6", "fixed:1.2"]
LABELS = ["EAD", "fixed 0.6", "fixed 1.2"]
PROMPTS = 12
METRICS = ("maj_at_n", "pass_at_n", "worst_at_n", "mean_at_n")
MLFLOW_SAFE = re.compile(r"^[A-Za-z0-9_\-./: ]+$")


def build_memorised_policy(out_dir: Path, prompts: int, steps: int = 60, seed: int = 0) -> Path:
    """A 2-layer, 64-wide Llama with the project's character tokenizer, SFT'd briefly on the solutions of the
    first ``prompts`` countdown eval problems (seed 0), saved as an HF directory vLLM loads.

    Sixty full-batch steps leave it right about half the time at temperature 0.6 and less at 1.2, with
    some prompts solved and some not: a deliberately imperfect policy, built in about a second.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from experiments.local.policy import build_tokenizer, save_policy
    from experiments.local.tasks import make_task

    tok = build_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    rows, labels = [], []
    for p in make_task("countdown").problems("eval", prompts, seed=seed):
        a = [tok.bos_token_id, *tok.encode(p.prompt, add_special_tokens=False)]
        b = [*tok.encode(p.solution, add_special_tokens=False), tok.eos_token_id]
        rows.append(a + b)
        labels.append([-100] * len(a) + b)
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    target = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and, on a shared machine, faster than two contending threads
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = LlamaForCausalLM(cfg)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
            for _ in range(steps):
                loss = model(input_ids=ids, attention_mask=mask, labels=target).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return save_policy(model, tok, out_dir)


def _tail(path: Path, n: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no log>"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run ``python -m experiments.studies.inference`` once; return its run dir's params, metrics and tables."""
    work = tmp_path_factory.mktemp("inference_scaling")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # The import check runs beside the study: importing the module must not pull in vLLM, verl, Hydra or MLflow.
    probe = "import sys, experiments.studies.inference; print(sorted({m.split('.')[0] for m in sys.modules}))"
    imports = subprocess.Popen([sys.executable, "-c", probe], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    policy = build_memorised_policy(work / "policy", PROMPTS)
    run_dir, log = work / "run", work / "study.log"
    cmd = [sys.executable, "-m", "experiments.studies.inference", "--run-dir", str(run_dir), "--quiet"]
    cmd += ["--policy-dir", str(policy), "--eval-prompts", str(PROMPTS), "--n-grid", json.dumps(N_GRID)]
    cmd += ["--conditions", json.dumps(CONDITIONS), "--max-tokens", "16", "--n-bootstrap", "400"]
    # A step budget below the first step's prefill (192 prompts of ~10 tokens) makes the scheduler spread the
    # prefills over several steps: with chunked prefill on, that split seeded requests and crashed the CPU runner.
    cmd += ["--engine.max_num_seqs", "256", "--engine.max_num_batched_tokens", "512"]
    t0 = time.monotonic()
    with open(log, "wb") as f:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=TIMEOUT_S)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        pytest.fail(f"inference_scaling exited with {proc.returncode}:\n{_tail(log)}")
    modules, _ = imports.communicate(timeout=120)
    tables = run_dir / "tables"
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]
    return {
        "run_dir": run_dir,
        "policy": str(policy),
        "stdout": log.read_text(errors="replace"),
        "wall_s": wall,
        "params": json.loads((run_dir / "params.json").read_text()),
        "metrics": read(run_dir / "metrics.jsonl"),
        "rows": read(tables / "infer_scaling.jsonl"),
        "conditions": {r["condition"]: r for r in read(tables / "infer_conditions.jsonl")},
        "samples": read(tables / "infer_samples.jsonl"),
        "status": (run_dir / "status").read_text().strip(),
        "import_rc": imports.returncode,
        "modules": modules,
    }


def _series(study: dict[str, Any], label: str, metric: str) -> np.ndarray:
    by_step = {r["step"]: r for r in study["metrics"]}
    return np.array([by_step[n][f"infer/{label}/{metric}"] for n in N_GRID])


# ---------------------------------------------------------------------------------------------------------------
# The real run


@pytest.mark.vllm
def test_run_finished_and_logged_every_step_and_metric(study: dict[str, Any]) -> None:
    assert study["status"] == "FINISHED"
    assert [r["step"] for r in study["metrics"]] == N_GRID  # one record per N, step = N
    expected = {f"infer/{label}/{m}" for label in LABELS for m in METRICS}
    for rec in study["metrics"]:
        keys = set(rec) - {"step"}
        assert keys == expected, rec
        assert all(MLFLOW_SAFE.match(k) for k in keys)
        values = np.array([rec[k] for k in keys], dtype=float)
        assert np.all(np.isfinite(values)) and np.all((values >= 0) & (values <= 1)), rec
    p = study["params"]
    assert p["policy_dir_resolved"] == study["policy"] and p["samples_per_prompt"] == max(N_GRID)
    assert p["vote_resolved"] == "response"  # countdown votes on the solution text (see the module docstring)
    assert json.loads(p["condition.fixed 0.6"]) == {"kind": "fixed", "tau": 0.6, "step": 0}
    assert json.loads(p["condition.EAD"])["kind"] == "ead"


@pytest.mark.vllm
def test_table_matches_metrics(study: dict[str, Any]) -> None:
    rows = study["rows"]
    assert [(r["condition"], r["N"]) for r in rows] == [(label, n) for label in LABELS for n in N_GRID]
    for r in rows:
        assert set(r) == {"condition", "N", "maj", "pass", "worst", "mean", "maj_se"}
        rec = next(m for m in study["metrics"] if m["step"] == r["N"])
        base = f"infer/{r['condition']}"
        assert (r["maj"], r["pass"], r["worst"], r["mean"]) == (
            rec[f"{base}/maj_at_n"],
            rec[f"{base}/pass_at_n"],
            rec[f"{base}/worst_at_n"],
            rec[f"{base}/mean_at_n"],
        )
    assert len(study["samples"]) == len(LABELS) * PROMPTS
    assert all(len(s["votes"]) == len(s["correct"]) == max(N_GRID) for s in study["samples"])


@pytest.mark.vllm
@pytest.mark.parametrize("label", LABELS)
def test_pass_worst_mean_are_ordered_and_monotone_in_n(study: dict[str, Any], label: str) -> None:
    pass_n, worst_n, mean = (_series(study, label, m) for m in ("pass_at_n", "worst_at_n", "mean_at_n"))
    assert np.all(np.diff(pass_n) >= -1e-12), pass_n  # more samples, more chances
    assert np.all(np.diff(worst_n) <= 1e-12), worst_n
    assert np.all(pass_n >= mean - 1e-12) and np.all(mean >= worst_n - 1e-12)
    assert np.ptp(mean) == 0 and pass_n[0] == pytest.approx(mean[0]) == worst_n[0]  # N = 1: all three agree
    # the policy leaves room to move (the cold fixed 0.6 sampler reaches ~0.95-0.98 since the prompt-hash split)
    assert 0.05 < mean[0] < 0.99 and pass_n[-1] > mean[0] > worst_n[-1]


@pytest.mark.vllm
@pytest.mark.parametrize("label", LABELS)
def test_majority_at_one_is_the_mean(study: dict[str, Any], label: str) -> None:
    # Maj@1 votes with a single sample, so its expectation is the mean accuracy; 400 bootstrap draws per prompt.
    maj, mean = _series(study, label, "maj_at_n"), _series(study, label, "mean_at_n")
    assert maj[0] == pytest.approx(mean[0], abs=0.04)
    assert study["conditions"][label]["vote_ambiguity"] == 0.0  # the vote key decides correctness


@pytest.mark.vllm
def test_conditions_sample_differently(study: dict[str, Any]) -> None:
    c = study["conditions"]
    cold, hot, ead = c["fixed 0.6"], c["fixed 1.2"], c["EAD"]
    # Same prompts and seeds: the hotter temperature has a higher behaviour NLL per token, more distinct
    # responses and lower accuracy; EAD matches neither (a processor that ignored extra_args would give
    # three identical samplers here, since every condition uses the same per-prompt seeds).
    assert hot["nll_per_token"] > 1.3 * cold["nll_per_token"]
    assert hot["distinct_responses"] > cold["distinct_responses"]
    assert hot["mean_accuracy"] < cold["mean_accuracy"]
    assert len({round(x["nll_per_token"], 6) for x in (cold, hot, ead)}) == 3
    assert all(x["response_length"] > 1 and x["truncated_frac"] < 0.5 for x in (cold, hot, ead))


@pytest.mark.vllm
def test_module_import_is_light(study: dict[str, Any]) -> None:
    assert study["import_rc"] == 0
    loaded = set(json.loads(study["modules"].strip().splitlines()[-1].replace("'", '"')))
    assert not loaded & {"vllm", "verl", "hydra", "mlflow"}, loaded


@pytest.mark.vllm
def test_rerun_of_a_finished_run_returns_at_once(study: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from experiments.studies.inference.__main__ import main

    assert main(["--run-dir", str(study["run_dir"]), "--policy-dir", study["policy"]]) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "fixed 1.2" in out


# ---------------------------------------------------------------------------------------------------------------
# No engine: validation, condition parsing, metric arithmetic


def _cfg(**kw: Any) -> Any:
    from experiments.studies.inference import EngineConfig, InferenceScalingConfig

    engine = kw.pop("engine", {})
    return InferenceScalingConfig(**kw, engine=EngineConfig(**engine))


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"n_grid": [4, 2]}, "n_grid"),
        ({"n_grid": [1, 1]}, "n_grid"),
        ({"n_grid": []}, "n_grid"),
        ({"n_grid": [0, 2]}, "n_grid[0]"),
        ({"n_grid": [1, 33]}, "n_grid[1]"),
        ({"n_grid": [1, 2.0]}, "n_grid[1]"),
        ({"conditions": []}, "conditions"),
        ({"conditions": ["fixed:-1"]}, "conditions[0]"),
        ({"conditions": ["ead:fast"]}, "conditions[0]"),
        ({"conditions": ["ead:paper,tau_min=2"]}, "conditions[0]"),
        ({"conditions": ["ead:paper,gamma=2"]}, "conditions[0]"),
        ({"conditions": ["ead:paper@-1"]}, "conditions[0]"),
        ({"conditions": ["fixed:0.6@3"]}, "conditions[0]"),
        ({"conditions": ["temp:0.6"]}, "conditions[0]"),
        ({"conditions": ["fixed:0.6", {"kind": "fixed", "tau": 0.6}]}, "conditions[1]"),
        ({"conditions": [{"kind": "fixed", "temperature": 0.6}]}, "conditions[0]"),
        ({"conditions": ["a/b=fixed:0.6"]}, "label"),
        ({"eval_prompts": 0}, "eval_prompts"),
        ({"eval_prompts": 257}, "eval_prompts"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"vote": "plurality"}, "vote"),
        ({"task": "sudoku"}, "task"),
        ({"task_knobs": {"n_numbers": 7}}, "task_knobs"),
        ({"policy_dir": "/nonexistent/policy"}, "policy_dir"),
        ({"sft_steps": -1}, "sft_steps"),
        ({"engine": {"gpu_memory_utilization": 0.0}}, "engine.gpu_memory_utilization"),
        ({"engine": {"max_model_len": 8}, "max_tokens": 16}, "engine.max_model_len"),
    ],
)
def test_bad_config_names_the_parameter(kw: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(name)):
        _cfg(**kw).validate()


def test_command_line_refuses_bad_input_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    from experiments.studies.inference.__main__ import main

    assert main(["--n-grid", "[8, 4]"]) == 2
    assert "n_grid" in capsys.readouterr().err


def test_condition_specs() -> None:
    from ead_core.schedule import EADSchedule, FixedSchedule
    from experiments.local.config import SamplingConfig
    from experiments.studies.inference import parse_condition

    c = parse_condition("ead:paper@200")
    assert (c.label, c.schedule, c.step) == ("EAD paper step:200", EADSchedule.preset("paper"), 200.0)
    c = parse_condition("ead:local")
    assert (c.label, c.schedule, c.step) == ("EAD", SamplingConfig().schedule(), 0.0)
    c = parse_condition("mine=ead:reference,tau_min=0.8,c=3@5")
    assert (c.label, c.schedule, c.step) == ("mine", EADSchedule.preset("reference", tau_min=0.8, c=3), 5.0)
    assert parse_condition("ead:reference,tau_min=0.8").label == "EAD reference tau_min:0.8"
    c = parse_condition("fixed:1.0")
    assert (c.label, c.schedule) == ("fixed 1.0", FixedSchedule(1.0))
    c = parse_condition({"kind": "ead", "preset": "reference", "d0": 25, "c": 10, "d_growth": 5, "step": 37})
    assert (
        c.label == "EAD reference step:37"
        and c.schedule == SamplingConfig("ead", "reference", d0=25, c=10, d_growth=5).schedule()
    )
    assert parse_condition({"kind": "fixed", "tau": 0.6, "label": "base"}).label == "base"
    assert parse_condition({"kind": "fixed", "tau": 1}).label == "fixed 1.0"


def test_warm_start_settings_follow_the_config() -> None:
    ws = _cfg(task_knobs={"max_number": 5}, data_seed=3, sft_steps=120, sft_batch_size=32, sft_n_train=4000).warmstart()
    assert (ws.task, ws.task_knobs, ws.seed, ws.steps, ws.batch_size, ws.n_train) == (
        "countdown",
        {"max_number": 5},
        3,
        120,
        32,
        4000,
    )


def test_scaling_metrics_arithmetic() -> None:
    from ead_core.metrics import majority_at_n
    from experiments.studies.inference import scaling_metrics

    # Prompt 0: 1 of 4 correct (the brief's test vectors: pass@1 .25, pass@2 .5, pass@4 1, worst@2 0);
    # prompt 1: 3 of 4 correct (worst@2 .5), and the wrong answer "b" never wins a vote of 4.
    correct = np.array([[0, 1, 0, 0], [1, 1, 0, 1]], dtype=float)
    votes = [["a", "c", "a", None], ["x", "x", "b", "x"]]
    rows = {r["N"]: r for r in scaling_metrics(correct, votes, [1, 2, 4], n_bootstrap=2000)}
    assert [rows[n]["pass"] for n in (1, 2, 4)] == pytest.approx([(0.25 + 0.75) / 2, (0.5 + 1) / 2, 1.0])
    assert [rows[n]["worst"] for n in (1, 2, 4)] == pytest.approx([(0.25 + 0.75) / 2, (0 + 0.5) / 2, 0.0])
    assert rows[4]["maj"] == np.mean([majority_at_n(v, c) for v, c in zip(votes, correct)]) == 0.5  # exact at N = S
    assert rows[1]["maj"] == pytest.approx(rows[1]["mean"], abs=0.03)


def test_finished_run_dir_is_published_to_mlflow_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # mlflow lives in .venv, vLLM in .venv-vllm: a run directory finished in one is published from the other.
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from experiments.studies.inference import BACKEND, InferenceScalingConfig
    from experiments.studies.inference.__main__ import main
    from experiments.tracking.loggers import JsonlLogger

    run_dir, uri = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db"
    jl = JsonlLogger(run_dir)
    jl.log_params({"task": "countdown", "n_grid": "[1, 2]"})
    for n in (1, 2):
        jl.log_metrics({"infer/fixed_0.6/maj_at_n": 0.5 / n, "infer/fixed_0.6/pass_at_n": 0.4 * n}, step=n)
    rows = [
        {"condition": "fixed_0.6", "N": n, "maj": 0.5 / n, "pass": 0.4 * n, "worst": 0.1, "mean": 0.3} for n in (1, 2)
    ]
    jl.log_table("infer_scaling", rows)
    jl.finish("FINISHED")
    argv = ["--run-dir", str(run_dir), "--mlflow-uri", uri, "--mlflow-experiment", "infer-test"]
    assert main(argv) == 0
    assert "published" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("infer-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["config_hash"] == InferenceScalingConfig().hash and run.data.tags["backend"] == BACKEND
    history = client.get_metric_history(run.info.run_id, "infer/fixed_0.6/pass_at_n")
    assert sorted((m.step, m.value) for m in history) == [(1, pytest.approx(0.4)), (2, pytest.approx(0.8))]
    assert run.data.params["task"] == "countdown"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "tables")] == ["tables/infer_scaling.json"]
    assert main(argv) == 0  # already in MLflow: nothing logged twice, no second run
    assert "published" not in capsys.readouterr().out
    assert len(client.search_runs([exp.experiment_id])) == 1
