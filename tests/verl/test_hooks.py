"""The hooks into verl that cannot run here, pinned against verl 0.9.1's source, and verl's MLflow logger.

``experiments.verl.trainer`` imports verl's V1 trainer, which needs ``transfer_queue`` (absent in
this environment), so instead of importing it these tests read verl's installed source and check every
name the hook relies on: the methods it overrides (and their signatures), the batch fields it reads,
the trainer registry, the module-import variable, and the MLflow environment variables. verl's MLflow
logger itself (``verl.utils.tracking.Tracking``) does import here and is run against a real MLflow store.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import inspect
from pathlib import Path

import verl

from experiments.verl import overrides as ov

VERL = Path(verl.__file__).parent
HOOK = Path(__file__).parents[2] / "experiments" / "verl" / "trainer.py"


def _class(path: Path, name: str) -> ast.ClassDef:
    tree = ast.parse(path.read_text())
    return next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)


def _signature(fn: ast.FunctionDef) -> list[str]:
    return [a.arg for a in fn.args.args]


def test_overridden_methods_exist_in_verls_trainer_with_the_same_signatures():
    verl_cls = _class(VERL / "trainer/ppo/v1/trainer_base.py", "PPOTrainer")
    verl_methods = {n.name: n for n in verl_cls.body if isinstance(n, ast.FunctionDef)}
    ours = _class(HOOK, "EADSyncTrainer")
    overridden = [n for n in ours.body if isinstance(n, ast.FunctionDef) and n.name != "__init__"]
    assert {n.name for n in overridden} == {"_compute_advantage", "_compute_metrics", "_val_metrics_update"}
    for fn in overridden:
        assert _signature(fn) == _signature(verl_methods[fn.name]), fn.name
    assert _signature(verl_methods["__init__"]) == ["self", "config"]
    base = _class(VERL / "trainer/ppo/v1/trainer_sync.py", "PPOTrainerSync")
    assert [b.id for b in base.bases] == ["PPOTrainer"]
    assert "register_trainer('sync')" in [ast.unparse(d) for d in base.decorator_list]


def test_fields_the_hook_reads_are_fields_verl_writes():
    src = (VERL / "trainer/ppo/v1/trainer_base.py").read_text()
    for field in ("old_log_probs", "rollout_log_probs", "response_mask"):
        assert f'"{field}"' in src
    assert "trainer_cls = get_trainer_cls(config.trainer.v1.trainer_mode)" in (VERL / "trainer/main_ppo.py").read_text()
    # The mode is compared by name in verl's trainer, which is why the hook sets it back to "sync".
    assert 'self.trainer_mode == "sync"' in src
    # Validation metrics are built by _val_metrics_update from reward_extra_infos_dict, which holds "acc".
    assert "return self._val_metrics_update(" in src and "expected_acc_counts=expected_acc_counts" in src


def test_verl_imports_modules_named_in_verl_use_external_modules():
    src = (VERL / "__init__.py").read_text()
    assert 'os.getenv("VERL_USE_EXTERNAL_MODULES", "")' in src and "import_external_libs(modules)" in src
    assert ov.ray_env_vars(_cfg())["VERL_USE_EXTERNAL_MODULES"] == "experiments.verl.trainer"
    assert importlib.util.find_spec("experiments.verl.trainer") is not None


def test_hook_on_the_real_v1_trainer(composed):
    """The real trainer class (verl's V1 trainer needs TransferQueue, installed with the verl extra), built on the
    composed config, is verl's sync trainer and adds our eval metrics next to verl's validation metrics."""
    from verl.trainer.ppo.v1.trainer_base import get_trainer_cls

    from experiments.verl.trainer import EADSyncTrainer

    assert get_trainer_cls(ov.TRAINER_MODE) is EADSyncTrainer
    cfg, c = composed["smoke"]
    trainer = EADSyncTrainer(copy.deepcopy(c))
    assert trainer.trainer_mode == "sync" and type(trainer.replay_buffer).__name__ == "ReplayBuffer"
    assert trainer.ead_schedule == cfg.schedule() and trainer.ead_eval_k == cfg.eval_k
    sources, uids = ["math500"] * 8 + ["math500_greedy"] * 2, ["a"] * 4 + ["b"] * 4 + ["a", "b"]
    acc = [1, 0, 0, 0, 1, 1, 1, 1, 1, 0]
    m = trainer._val_metrics_update(sources, uids, {"reward": acc, "acc": acc}, [2] * 10)
    assert m["eval/pass_at_4"] == 1.0 and m["eval/worst_at_4"] == 0.5 and m["eval_greedy/accuracy"] == 0.5
    assert m["val-core/math500/acc/mean@4"] == 0.625  # verl's own metrics are still there


def test_verls_tracking_reads_the_mlflow_variables_we_set():
    from verl.utils.tracking import Tracking

    src = inspect.getsource(Tracking.__init__)
    assert 'os.environ.get("MLFLOW_TRACKING_URI"' in src and 'os.environ.get("MLFLOW_RUN_ID")' in src
    env = ov.ray_env_vars(_cfg(uri="http://m:5000", run_id="r1"))
    assert env["MLFLOW_TRACKING_URI"] == "http://m:5000" and env["MLFLOW_RUN_ID"] == "r1"


def test_verls_mlflow_logger_logs_into_our_run(tmp_path, monkeypatch):
    """verl's own Tracking, configured as our overrides configure its Ray workers, writes into the given run."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from verl.utils.tracking import Tracking

    from experiments.verl.launch import finish_mlflow_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("sweep")
    run_id = client.create_run(exp, run_name="made-by-the-sweep-layer").info.run_id
    cfg = _cfg(uri=uri, run_id=run_id)
    for k, v in ov.ray_env_vars(cfg).items():
        monkeypatch.setenv(k, v)
    mlflow.set_tracking_uri(uri)
    tracking = Tracking("ead-verl", "ignored-when-a-run-id-is-given", default_backend=["mlflow"], config={"a": 1})
    tracking.log({"train/reward_mean": 0.5, "val-core/math500/acc/best@16/mean": 0.9}, step=3)
    tracking.finish(exit_code=1)  # verl ignores the exit code: the run ends FINISHED
    run = client.get_run(run_id)
    assert run.info.experiment_id == exp and run.info.run_name == "made-by-the-sweep-layer"
    assert run.data.metrics["train/reward_mean"] == 0.5
    assert run.data.metrics["val-core/math500/acc/best_at_16/mean"] == 0.9  # verl turns @ into _at_
    assert [m.step for m in client.get_metric_history(run_id, "train/reward_mean")] == [3]
    assert run.info.status == "FINISHED"
    finish_mlflow_run(cfg, "FAILED")  # what the launcher does when verl exited non-zero
    assert client.get_run(run_id).info.status == "FAILED"
    assert len(client.search_runs([exp])) == 1  # one MLflow run among the sweep's, not a new one


def _cfg(uri: str | None = None, run_id: str | None = None):
    from experiments.verl.config import preset

    return preset("smoke", **{"tracking.uri": uri, "tracking.run_id": run_id})
