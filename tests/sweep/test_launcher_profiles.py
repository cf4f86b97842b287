"""The Slurm launcher profiles (slurm/profiles/hydra/launcher/*.yaml) compose as `hydra/launcher=<profile>`, hold only
keys hydra-submitit-launcher 1.2.0 and submitit accept, and the `local` one runs a real 2-job multirun."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import services
from tests.fixtures.services import REPO_ROOT, LocalSlurm, environment_with_repo_on_path

PROFILES_ROOT = REPO_ROOT / "slurm" / "profiles"
PROFILES = sorted(p.stem for p in (PROFILES_ROOT / "hydra" / "launcher").glob("*.yaml"))

# The fixture, made visible to this module (pytest allows `pytest_plugins` only in the root conftest).
slurm_cluster = services.slurm_cluster

APP = """
import json
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> int:
    out = {
        "x": cfg.x,
        "python": sys.executable,
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "hydra_job_id": HydraConfig.get().job.id,
    }
    with open(os.path.join(HydraConfig.get().runtime.output_dir, "result.json"), "w") as f:
        json.dump(out, f)
    return 2 * cfg.x


if __name__ == "__main__":
    main()
"""


def _write_app(root: Path) -> Path:
    """A throwaway Hydra app whose primary config puts slurm/profiles on the search path."""
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "config.yaml").write_text(
        textwrap.dedent(
            f"""\
            x: 1
            hydra:
              searchpath:
                - file://{PROFILES_ROOT}
            """
        )
    )
    (root / "app.py").write_text(APP)
    return root


def _launcher_params(config_dir: Path, profile: str, *overrides: str) -> dict[str, Any]:
    """Compose the app's config with ``hydra/launcher=<profile>`` and instantiate the launcher, as Hydra does."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={profile}", *overrides], return_hydra_config=True)
        launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    return dict(launcher.params)


def test_there_are_profiles() -> None:
    assert {"local", "gpu_a100", "gpu_h100"} <= set(PROFILES)


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_composes_and_submitit_accepts_it(profile: str, tmp_path: Path, monkeypatch) -> None:
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    for var in ("EAD_SLURM_PARTITION", "EAD_SLURM_ACCOUNT", "EAD_SLURM_QOS"):
        monkeypatch.delenv(var, raising=False)
    params = _launcher_params(_write_app(tmp_path / "app") / "conf", profile)

    assert params["partition"] == ("debug" if profile == "local" else "gpu")
    assert params["account"] is None and params["qos"] is None  # unset: not passed to sbatch at all
    assert params["additional_parameters"] == {"requeue": True}
    # Shorter limits make submitit call every USR2 a time-out, never a preemption (see local.yaml).
    assert params["timeout_min"] >= 60
    assert params["signal_delay_s"] < params["timeout_min"] * 60
    if profile != "local":
        assert params["gpus_per_node"] >= 1 and params["tasks_per_node"] == 1

    # Hand them to submitit exactly as hydra-submitit-launcher 1.2.0's launch() does; submitit rejects unknown keys.
    base = set(BaseQueueConf.__dataclass_fields__)
    init = {"submitit_folder", "max_num_timeout"}
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="debug")
    executor.update_parameters(**{(k if k in base else f"slurm_{k}"): v for k, v in params.items() if k not in init})


def test_account_and_partition_come_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EAD_SLURM_PARTITION", "h100")
    monkeypatch.setenv("EAD_SLURM_ACCOUNT", "proj-ead")
    monkeypatch.setenv("EAD_SLURM_QOS", "high")
    params = _launcher_params(_write_app(tmp_path / "app") / "conf", "gpu_h100")
    assert (params["partition"], params["account"], params["qos"]) == ("h100", "proj-ead", "high")


def test_profile_keys_are_checked_but_plus_overrides_pass_through(tmp_path: Path) -> None:
    """A profile file is merged into SlurmQueueConf, so a key 1.2.0 lacks (`use_srun`, only on the launcher's git
    main) fails composition. A `+hydra.launcher.use_srun=false` override, though, is added and reaches submitit
    (which knows use_srun/srun_args since 1.5): the hydra#2814 workaround works with 1.2.0."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    extra = tmp_path / "extra"
    (extra / "hydra" / "launcher").mkdir(parents=True)
    profile = "defaults:\n  - local\n  - _self_\nuse_srun: false\n"
    (extra / "hydra" / "launcher" / "with_use_srun.yaml").write_text(profile)
    conf = _write_app(tmp_path / "app") / "conf"
    searchpath = f"hydra.searchpath=[file://{PROFILES_ROOT},file://{extra}]"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(ConfigCompositionException) as excinfo:
            compose("config", overrides=[searchpath, "hydra/launcher=with_use_srun"], return_hydra_config=True)
        assert "use_srun" in f"{excinfo.value} {excinfo.value.__cause__}"
    assert _launcher_params(conf, "local", "+hydra.launcher.use_srun=false")["use_srun"] is False


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_local_profile_runs_a_two_job_multirun(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    app = _write_app(tmp_path / "app")
    sweep_dir = tmp_path / "multirun"
    result = subprocess.run(
        [sys.executable, "app.py", "--multirun", "x=1,2", "hydra/launcher=local", f"hydra.sweep.dir={sweep_dir}"],
        cwd=app,
        env=environment_with_repo_on_path(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = [json.loads((sweep_dir / str(i) / "result.json").read_text()) for i in (0, 1)]
    assert [o["x"] for o in outputs] == [1, 2]
    assert all(o["python"] == sys.executable for o in outputs)
    assert len({o["array_job_id"] for o in outputs}) == 1 and outputs[0]["array_job_id"] is not None
    assert [o["array_task_id"] for o in outputs] == ["0", "1"]
    assert [o["hydra_job_id"] for o in outputs] == [f"{outputs[0]['array_job_id']}_{i}" for i in (0, 1)]
