"""``backend=verl`` in the sweep layer: the composed sweep config -> a validated :class:`VerlRunConfig`.

The sweep's shared vocabulary (the top-level keys of ``sweeps/config.yaml``: algorithm, sampling, tis,
rollouts_per_prompt, lr, steps, eval_interval, eval_k, seed, ...) means the same on both backends; this module maps
it onto the verl preset chosen by ``model=<preset>`` (``size`` holds the preset name) and adds the verl-only settings
of the ``backend`` node (``sweeps/backend/verl.yaml``). ``sweeps/backend/verl.yaml`` sets the paper's recipe for the
shared keys, so ``backend=verl model=qwen2.5-math-1.5b`` composes to exactly ``preset("qwen2.5-math-1.5b")``
(a test checks it for every preset).

Mapping (sweep key -> VerlRunConfig):

* ``size`` -> the preset (``model=`` option), ``backend.model`` -> ``model`` (None: the preset's checkpoint);
* ``algorithm.*``, ``sampling.*``, ``tis.*``, ``rollouts_per_prompt``, ``ppo_epochs``, ``lr``, ``steps``,
  ``eval_interval``, ``eval_k``, ``ckpt_interval``, ``seed`` -> the same names. ``algorithm.filter_groups`` and
  ``algorithm.loss_agg_mode`` left at None keep verl's preset values (filtering off, token-mean: the paper);
* ``prompts_per_step`` -> ``train_batch_size``; ``mini_batches`` -> ``ppo_mini_batch_size = prompts_per_step /
  mini_batches`` (optimizer steps per RL step, as on the local backend); ``max_new_tokens`` ->
  ``data.max_response_length``;
* ``backend.data`` / ``backend.resources`` / ``backend.algorithm`` (verl-only algorithm keys: kl_loss_coef,
  overlong_buffer, ...) -> those sections' fields (None keeps the preset's); ``backend.eval_n``,
  ``backend.position_edges``, ... -> the same names; ``backend.extra_overrides`` -> verbatim verl overrides.

Keys that only the local backend understands (task, task_knobs, init_from, sft_*, train_pool, eval_prompts, threads,
weight_decay, grad_clip) must stay at their defaults: a changed one is an error, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import signal
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from experiments.local.config import AlgorithmConfig, RLVRConfig
from experiments.sweep.knobs import task_knobs
from experiments.sweep.naming import plain
from experiments.tracking import MlflowRunLogger, Terminated
from experiments.verl.config import (
    PRESETS,
    DataConfig,
    ResourceConfig,
    VerlAlgorithmConfig,
    VerlRunConfig,
    apply_overrides,
    preset,
)

LOCAL_ONLY = (
    "task",
    "task_knobs",
    "init_from",
    "sft_steps",
    "sft_lr",
    "sft_batch_size",
    "train_pool",
    "eval_prompts",
    "threads",
    "device",
    "weight_decay",
    "grad_clip",
)
SHARED = ("rollouts_per_prompt", "ppo_epochs", "lr", "steps", "eval_interval", "eval_k", "ckpt_interval", "seed")
# AlgorithmConfig fields that VerlAlgorithmConfig has too (the rest of either is backend-specific).
_VERL_ALGORITHM = {g.name for g in dataclasses.fields(VerlAlgorithmConfig)}
SHARED_ALGORITHM = tuple(f.name for f in dataclasses.fields(AlgorithmConfig) if f.name in _VERL_ALGORITHM)


def _optional_schema(cls: type, exclude: tuple[str, ...] = ()) -> type:
    """A copy of dataclass ``cls`` with every field optional and None ("keep the preset's value"): the typed
    ``backend.data`` / ``backend.resources`` / ``backend.algorithm`` nodes (one place for the fields: ``cls``)."""
    hints = typing.get_type_hints(cls)
    specs = [
        (f.name, hints[f.name] | None, dataclasses.field(default=None))
        for f in dataclasses.fields(cls)
        if f.name not in exclude
    ]
    return dataclasses.make_dataclass(f"{cls.__name__}Override", specs)


VerlDataOverride = _optional_schema(DataConfig, exclude=("max_response_length",))  # = max_new_tokens
VerlResourcesOverride = _optional_schema(ResourceConfig)
VerlAlgorithmOverride = _optional_schema(VerlAlgorithmConfig, exclude=SHARED_ALGORITHM)


@dataclass
class VerlBackendConfig:
    """The ``backend`` node of ``backend=verl``: settings only verl has (the shared ones are top-level keys).
    Every None keeps the model preset's value."""

    name: str = "verl"
    model: str | None = None  # HF model id or local checkpoint directory; None: the model preset's
    data: VerlDataOverride = field(default_factory=VerlDataOverride)  # type: ignore[valid-type]
    resources: VerlResourcesOverride = field(default_factory=VerlResourcesOverride)  # type: ignore[valid-type]
    algorithm: VerlAlgorithmOverride = field(default_factory=VerlAlgorithmOverride)  # type: ignore[valid-type]
    eval_n: int | None = None  # samples per validation prompt (None: the preset's, 16)
    eval_before_train: bool = True
    position_edges: list[int] | None = None  # bucket edges of the EAD-by-position metrics (None: the preset's)
    dump_generations: bool = False
    python: str = "python"  # interpreter that runs verl's trainer (the verl environment's)
    extra_overrides: list[str] = field(default_factory=list)  # verbatim verl overrides, applied last


def verl_config(cfg: DictConfig) -> VerlRunConfig:
    """The validated verl run of a composed sweep job; ValueError names the sweep parameter at fault."""
    size = str(cfg.size)
    if size not in PRESETS:
        raise ValueError(
            f"model must be a verl model preset with backend=verl: one of {sorted(PRESETS)} (model=<name>), "
            f"got size {size!r}"
        )
    defaults = RLVRConfig()
    value = {k: task_knobs(cfg[k]) if k == "task_knobs" else plain(cfg[k]) for k in LOCAL_ONLY}
    changed = [k for k in LOCAL_ONLY if value[k] != getattr(defaults, k)]
    if changed:
        raise ValueError(
            f"{', '.join(changed)} only apply to backend=local; with backend=verl leave them at their defaults "
            "(data: backend.data.train_files / val_files, policy: backend.model)"
        )
    prompts, minis = int(cfg.prompts_per_step), int(cfg.mini_batches)
    if minis < 1 or prompts % minis:
        raise ValueError(
            f"mini_batches must divide prompts_per_step ({prompts}) with backend=verl (verl's ppo_mini_batch_size "
            f"= prompts_per_step / mini_batches), got {minis!r}"
        )
    algo = plain(cfg.algorithm)
    over: dict[str, Any] = {k: plain(cfg[k]) for k in SHARED}
    over.update({f"algorithm.{k}": algo[k] for k in SHARED_ALGORITHM if algo.get(k) is not None})
    over.update({f"sampling.{k}": v for k, v in plain(cfg.sampling).items()})
    over.update({f"tis.{k}": v for k, v in plain(cfg.tis).items()})
    over.update(
        {
            "train_batch_size": prompts,
            "ppo_mini_batch_size": prompts // minis,
            "data.max_response_length": int(cfg.max_new_tokens),
        }
    )
    b = cfg.backend
    for section in ("data", "resources", "algorithm"):
        over.update({f"{section}.{k}": v for k, v in plain(b[section]).items() if v is not None})
    for k in ("eval_n", "position_edges", "model"):
        if b[k] is not None:
            over[k] = plain(b[k])
    over.update(
        {
            "eval_before_train": bool(b.eval_before_train),
            "dump_generations": bool(b.dump_generations),
            "python": str(b.python),
            "extra_overrides": list(plain(b.extra_overrides)),
        }
    )
    try:
        out = preset(size, **over)
    except ValueError as e:
        raise ValueError(f"backend=verl: {e}") from None
    if out.resources.nnodes != 1:
        raise ValueError(
            f"backend.resources.nnodes must be 1 in a sweep (a sweep job is one Slurm task on one node), got "
            f"{out.resources.nnodes}; multi-node runs: python -m experiments.verl --preset {size} "
            f"--set resources.nnodes={out.resources.nnodes} ... sbatch (slurm/verl_multinode.sbatch)"
        )
    return out


def for_run(
    vcfg: VerlRunConfig, *, tracking_uri: str, run_id: str | None, experiment: str, run_name: str, ckpt_root: str
) -> VerlRunConfig:
    """The run's config with the sweep's MLflow run and checkpoint root (``<ckpt_root>/<config hash>``) filled in;
    none of these change the config hash."""
    over = {
        "tracking.uri": tracking_uri,
        "tracking.run_id": run_id,
        "tracking.experiment": experiment,
        "tracking.run_name": run_name,
        "ckpt_root": ckpt_root,
    }
    out = apply_overrides(vcfg, over).validate()
    assert out.hash == vcfg.hash
    return out


def run_verl_job(
    vcfg: VerlRunConfig, logger: MlflowRunLogger, run_dir: Path, *, experiment: str, run_name: str
) -> dict[str, Any]:
    """Run verl's trainer inside the job's MLflow run (verl's own MLflow logger continues ``logger.run_id``), with
    checkpoints in ``run_dir``. A KILLED trainer raises :class:`Terminated` (the lifecycle marks the run KILLED and a
    requeued job continues it); a failed one raises RuntimeError (FAILED)."""
    from experiments.verl.launch import run as run_verl

    cfg = for_run(
        vcfg,
        tracking_uri=logger.tracking_uri,
        run_id=logger.run_id,
        experiment=experiment,
        run_name=run_name,
        ckpt_root=str(run_dir.parent),
    )
    result = run_verl(cfg, finalize_mlflow=False)
    logger.set_tags({"verl_exit_code": result.returncode, "verl_ckpt_dir": result.ckpt_dir})
    if result.status == "KILLED":
        raise Terminated(signal.SIGTERM)
    if result.returncode != 0:
        raise RuntimeError(f"verl's trainer exited with {result.returncode}; see its output above")
    return {}
