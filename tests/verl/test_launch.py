"""The launcher (exit codes, signals, run record, preflight) and the multi-node Slurm path (sbatch line, script).

verl's trainer cannot run here (no GPU, no vLLM), so ``cfg.python`` points at a stand-in executable that
records the command line and environment it was started with and exits as told: the launcher's own
behaviour (what it starts, how it maps exit codes and forwards signals) is what these tests check.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from experiments.verl import data as D
from experiments.verl.__main__ import main
from experiments.verl.config import from_dict, preset
from experiments.verl.launch import SBATCH_SCRIPT, preflight, run, sbatch_command
from experiments.verl.overrides import build_command

STAND_IN = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$EAD_TEST_DIR/argv"
env | grep -E '^(VERL_USE_EXTERNAL_MODULES|MLFLOW_[A-Z_]+|PYTHONUNBUFFERED)=' | sort > "$EAD_TEST_DIR/env"
trap 'echo USR1 > "$EAD_TEST_DIR/signal"; exit 42' USR1
if [[ "${EAD_TEST_SLEEP:-0}" != 0 ]]; then touch "$EAD_TEST_DIR/started"; sleep "$EAD_TEST_SLEEP" & wait; fi
exit "${EAD_TEST_EXIT:-0}"
"""


def verl_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    """(train parquet, validation parquet, stand-in trainer executable) in ``tmp_path``; the stand-in writes there."""
    numina = tmp_path / "numina.json"
    numina.write_text(json.dumps([{"problem": "1+1?", "solution": "\\boxed{2}"}]))
    math500 = tmp_path / "math500.json"
    math500.write_text(json.dumps([{"problem": "2+2?", "answer": "4"}]))
    train = D.prepare_numina(tmp_path / "train.parquet", source=str(numina))
    val = D.prepare_math500(tmp_path / "val.parquet", source=str(math500), n=4)
    fake = tmp_path / "fake-python"
    fake.write_text(STAND_IN)
    fake.chmod(0o755)
    monkeypatch.setenv("EAD_TEST_DIR", str(tmp_path))
    return train, val, fake


@pytest.fixture
def setup(tmp_path, monkeypatch):
    train, val, fake = verl_inputs(tmp_path, monkeypatch)
    cfg = preset(
        "smoke",
        python=str(fake),
        ckpt_root=str(tmp_path / "ckpt"),
        **{"data.train_files": [str(train)], "data.val_files": [str(val)]},
    )
    return cfg, tmp_path


def test_run_starts_verls_entry_point_and_records_the_command(setup):
    cfg, tmp = setup
    result = run(cfg)
    assert (result.returncode, result.status, result.ckpt_dir) == (0, "FINISHED", cfg.ckpt_dir)
    assert (tmp / "argv").read_text().splitlines() == build_command(cfg)[1:]
    env = dict(line.split("=", 1) for line in (tmp / "env").read_text().splitlines())
    assert env["VERL_USE_EXTERNAL_MODULES"] == "experiments.verl.trainer" and env["PYTHONUNBUFFERED"] == "1"
    record = json.loads((Path(cfg.ckpt_dir) / "ead_run.json").read_text())
    assert record["config_hash"] == cfg.hash and record["command"] == build_command(cfg)
    assert from_dict(record["config"]) == cfg


def test_failure_and_signal_map_to_mlflow_statuses(setup, monkeypatch):
    cfg, tmp = setup
    monkeypatch.setenv("EAD_TEST_EXIT", "3")
    failed = run(cfg)
    assert (failed.returncode, failed.status) == (3, "FAILED")
    monkeypatch.setenv("EAD_TEST_EXIT", "0")
    monkeypatch.setenv("EAD_TEST_SLEEP", "30")

    def send_usr1():  # Slurm's warning before the time limit, sent to the launcher
        for _ in range(200):
            if (tmp / "started").exists():
                break
            threading.Event().wait(0.05)
        os.kill(os.getpid(), signal.SIGUSR1)

    before = signal.getsignal(signal.SIGUSR1)
    threading.Thread(target=send_usr1, daemon=True).start()
    result = run(cfg)
    assert (result.returncode, result.status) == (42, "KILLED")
    assert (tmp / "signal").read_text().strip() == "USR1"  # forwarded to the trainer
    assert signal.getsignal(signal.SIGUSR1) == before  # the launcher's handlers are removed again


def test_preflight_catches_missing_data_and_small_validation_n(setup, tmp_path):
    cfg, _ = setup
    preflight(cfg)
    missing = preset("smoke", **{"data.train_files": [str(tmp_path / "nope.parquet")]})
    with pytest.raises(FileNotFoundError, match=r"data.train_files: .*nope.parquet.* not found"):
        preflight(missing)
    big_k = from_dict({**cfg.to_dict(), "eval_n": 16, "eval_k": 16})
    with pytest.raises(ValueError, match=r"__rollout_n__ \[4\] < eval_k \(16\)"):
        preflight(big_k)


def test_sbatch_command_one_task_per_node_explicit_counts(setup, monkeypatch):
    cfg, tmp = setup
    monkeypatch.setenv("EAD_SLURM_PARTITION", "gpu-long")
    monkeypatch.delenv("EAD_SLURM_ACCOUNT", raising=False)
    big = from_dict(
        {**cfg.to_dict(), "resources": {**cfg.to_dict()["resources"], "nnodes": 2, "cpus_per_node": 32, "mem_gb": 500}}
    )
    cmd = sbatch_command(big, time="12:00:00")
    assert cmd[0] == "sbatch"
    for flag in (
        "--nodes=2",
        "--ntasks-per-node=1",
        "--gpus-per-task=1",
        "--cpus-per-task=32",
        "--mem=500G",
        "--time=12:00:00",
        "--requeue",
        "--signal=B:USR1@300",
        "--partition=gpu-long",
        f"--job-name=ead-verl-{big.hash}",
    ):
        assert flag in cmd, flag
    assert not any(c.startswith("--account") for c in cmd)
    i = cmd.index(str(SBATCH_SCRIPT))
    assert cmd[i + 1 :][:5] == [big.python, "-m", "experiments.verl", "run", "--config"]
    assert from_dict(json.loads(Path(cmd[-1]).read_text())) == big
    assert Path(cmd[-1]).parent == Path(big.ckpt_dir)  # next to the checkpoints: keyed by the config hash


def test_sbatch_script_starts_a_ray_head_then_workers_then_the_command(tmp_path):
    env = {
        **os.environ,
        "EAD_SLURM_DRY_RUN": "1",
        "SLURM_JOB_NODELIST": "gpu01,gpu02,gpu03",
        "SLURM_CPUS_PER_TASK": "64",
        "SLURM_GPUS_PER_TASK": "h100:8",
    }
    out = subprocess.run(
        ["bash", str(SBATCH_SCRIPT), "python", "-m", "experiments.verl", "run", "--config", "/c.json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    steps = [line for line in out if line.startswith("+ ")]
    assert steps[0].startswith("+ srun --nodes=1 --ntasks=1 -w gpu01 ray start --head")
    assert "--num-cpus=64 --num-gpus=8" in steps[0]
    assert steps[1] == (
        "+ srun --nodes=1 --ntasks=1 -w gpu02 ray start --address=gpu01:6379 --num-cpus=64 --num-gpus=8 --block"
    )
    assert steps[2].startswith("+ srun --nodes=1 --ntasks=1 -w gpu03 ray start --address=gpu01:6379")
    assert steps[3] == "+ env RAY_ADDRESS=gpu01:6379 python -m experiments.verl run --config /c.json"
    bad = subprocess.run(["bash", str(SBATCH_SCRIPT)], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_pass_shellcheck():
    root = SBATCH_SCRIPT.parents[1]
    subprocess.run(["shellcheck", str(SBATCH_SCRIPT), str(root / "scripts" / "verl_gpu_smoke.sh")], check=True)


def test_cli_sbatch_prints_the_command(setup, capsys):
    cfg, tmp = setup
    config = tmp / "cfg.json"
    config.write_text(json.dumps(cfg.to_dict()))
    assert main(["--config", str(config), "--set", "resources.nnodes=2", "sbatch"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("sbatch ") and "--nodes=2" in line and str(SBATCH_SCRIPT) in line


def test_preemption_notice_reaches_the_previous_handler_too(setup, monkeypatch):
    """Under a Hydra submitit launcher, submitit's handler requeues the job: the launcher must not swallow it."""
    cfg, tmp = setup
    monkeypatch.setenv("EAD_TEST_SLEEP", "30")
    seen: list[int] = []
    before = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:

        def send_usr1():
            for _ in range(200):
                if (tmp / "started").exists():
                    break
                threading.Event().wait(0.05)
            os.kill(os.getpid(), signal.SIGUSR1)

        threading.Thread(target=send_usr1, daemon=True).start()
        result = run(cfg)
    finally:
        signal.signal(signal.SIGUSR1, before)
    assert result.status == "KILLED" and (tmp / "signal").read_text().strip() == "USR1"
    assert seen == [signal.SIGUSR1]
