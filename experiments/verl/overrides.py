"""Translate a ``VerlRunConfig`` into verl 0.9.1 Hydra overrides for ``python -m verl.trainer.main_ppo``.

Every setting maps to verl's own keys; nothing in verl is copied or patched. Our additions reach verl
only through its documented extension points:

* the EAD logits processor as a vLLM engine argument
  (``+actor_rollout_ref.rollout.engine_kwargs.vllm.logits_processors=[ead_core.vllm_processor:EADLogitsProcessor]``);
* the EAD agent loop, registered by ``rollout.agent.agent_loop_config_path`` (agent_loop.yaml) and selected
  by ``rollout.agent.default_agent_loop``; it reads the schedule from the harness-owned ``+ead`` block;
* the reward function ``reward.custom_reward_function`` (``pkg://experiments.verl.rewards``);
* the metrics hook: trainer mode ``ead_sync`` (``experiments.verl.trainer``, imported in every
  Ray worker through verl's ``VERL_USE_EXTERNAL_MODULES``), a subclass of verl's sync trainer;
* verl's MLflow logger, given the tracking URI and run id through the Ray runtime environment.
"""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any

from ead_core.schedule import EADSchedule
from experiments.verl.config import VerlRunConfig

# ead_core.vllm_processor imports vLLM at import time, so the name is spelled out here; a test checks it
# against the module's own FQCN constant without importing it.
PROCESSOR_FQCN = "ead_core.vllm_processor:EADLogitsProcessor"
AGENT_LOOP_NAME = "ead_single_turn"
AGENT_LOOP_CONFIG = str(Path(__file__).with_name("agent_loop.yaml").resolve())
REWARD_PATH = "pkg://experiments.verl.rewards"
REWARD_NAME = "compute_score"
TRAINER_MODE = "ead_sync"
TRAINER_MODULE = "experiments.verl.trainer"
ENTRY_POINT = "verl.trainer.main_ppo"
RAY_ENV = "+ray_kwargs.ray_init.runtime_env.env_vars"

_PLAIN = re.compile(r"^[A-Za-z0-9_./:+\-]+$")


def fmt(value: Any) -> str:
    """A Python value as a Hydra override value (quoted when it holds characters Hydra would parse)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(fmt(v) for v in value) + "]"
    text = str(value)
    if (
        _PLAIN.match(text)
        and text.lower() not in ("null", "true", "false", "inf", "-inf", "nan")
        and not _numeric(text)
    ):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _numeric(text: str) -> bool:
    """Whether Hydra would read ``text`` as a number (a config hash like "12e4..." must stay a string)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def local_path(path: str) -> str:
    """An absolute local path (Ray workers do not share the launcher's working directory); URLs unchanged."""
    return path if "://" in path else str(Path(path).expanduser().resolve())


def override_key(override: str) -> str:
    """The config key of an override (``+a.b=1`` -> ``a.b``)."""
    return override.split("=", 1)[0].lstrip("+~")


def ead_block(cfg: VerlRunConfig) -> dict[str, Any]:
    """The harness-owned top-level ``ead`` section: the schedule the agent loop stamps and the metrics read."""
    sched = cfg.schedule().to_dict()
    return {
        "schedule": sched,
        "tis_cap": float(cfg.tis.cap),
        "tis_level": cfg.tis.level,
        "tis_enabled": bool(cfg.tis.enabled),
        "position_edges": list(cfg.position_edges),
        "eval_k": int(cfg.eval_k),
        "config_hash": cfg.hash,
    }


def ray_env_vars(cfg: VerlRunConfig) -> dict[str, str]:
    """Environment of every Ray worker (TaskRunner included): the metrics hook module and MLflow's run."""
    env = {"VERL_USE_EXTERNAL_MODULES": TRAINER_MODULE}
    if cfg.tracking.uri:
        env["MLFLOW_TRACKING_URI"] = cfg.tracking.uri
    if cfg.tracking.run_id:
        env["MLFLOW_RUN_ID"] = cfg.tracking.run_id
    return env


def _algorithm(cfg: VerlRunConfig) -> list[tuple[str, Any]]:
    a = cfg.algorithm
    low, high = a.resolved_clip
    actor = "actor_rollout_ref.actor"
    items: list[tuple[str, Any]] = [
        # Every algorithm here is group-relative: GRPO advantages, no critic, no KL in the reward.
        ("algorithm.adv_estimator", "grpo"),
        ("algorithm.norm_adv_by_std_in_grpo", a.norm_adv_by_std),
        ("algorithm.use_kl_in_reward", False),
        (f"{actor}.use_kl_loss", a.kl_loss_coef > 0),
        (f"{actor}.kl_loss_coef", float(a.kl_loss_coef)),
        (f"{actor}.kl_loss_type", "low_var_kl"),
        (f"{actor}.entropy_coeff", 0),
        (f"{actor}.clip_ratio", low),
        (f"{actor}.clip_ratio_low", low),
        (f"{actor}.clip_ratio_high", high),
        (f"{actor}.clip_ratio_c", float(a.clip_ratio_c)),
        (f"{actor}.loss_agg_mode", a.loss_agg_mode),
        (f"{actor}.policy_loss.loss_mode", a.loss_mode),
    ]
    if a.name == "clip_cov":
        items += [
            (f"{actor}.policy_loss.clip_cov_ratio", float(a.clip_cov_ratio)),
            (f"{actor}.policy_loss.clip_cov_lb", float(a.clip_cov_lb)),
            (f"{actor}.policy_loss.clip_cov_ub", float(a.clip_cov_ub)),
        ]
    elif a.name == "kl_cov":
        items += [
            (f"{actor}.policy_loss.kl_cov_ratio", float(a.kl_cov_ratio)),
            (f"{actor}.policy_loss.ppo_kl_coef", float(a.ppo_kl_coef)),
        ]
    # DAPO's dynamic sampling (verl's V1 replay buffer) and overlong shaping (verl's "dapo" reward manager),
    # off unless asked for, as in the paper's runs. Allowed with any algorithm (the EntropyMech recipes used it).
    items.append(("algorithm.filter_groups.enable", a.filter_groups))
    if a.filter_groups:
        items += [
            ("algorithm.filter_groups.metric", a.filter_groups_metric),
            ("algorithm.filter_groups.max_inflight_gen_batches", a.max_inflight_gen_batches),
        ]
    items.append(("reward.reward_manager.name", "dapo" if a.overlong_buffer else "naive"))
    if a.overlong_buffer:
        items += [
            ("+reward.reward_kwargs.overlong_buffer_cfg.enable", True),
            ("+reward.reward_kwargs.overlong_buffer_cfg.len", a.overlong_buffer_len),
            ("+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor", float(a.overlong_penalty_factor)),
            ("+reward.reward_kwargs.overlong_buffer_cfg.log", True),
            ("+reward.reward_kwargs.max_resp_len", cfg.data.max_response_length),
        ]
    return items


def _rollout(cfg: VerlRunConfig) -> list[tuple[str, Any]]:
    r = "actor_rollout_ref.rollout"
    res = cfg.resources
    items: list[tuple[str, Any]] = [
        (f"{r}.name", "vllm"),
        (f"{r}.mode", "async"),
        (f"{r}.n", cfg.rollouts_per_prompt),
        # The engine samples at temperature 1.0 and the processor divides by tau_t, so the behaviour
        # policy is softmax(z / tau_t); verl recomputes pi_old at this same scalar temperature (1.0).
        (f"{r}.temperature", 1.0),
        (f"{r}.top_p", 1.0),
        (f"{r}.top_k", -1),
        (f"{r}.do_sample", True),
        (f"{r}.calculate_log_probs", True),
        (f"{r}.logprobs_mode", "processed_logprobs"),
        (f"{r}.seed", cfg.seed),
        (f"{r}.tensor_model_parallel_size", res.rollout_tp),
        (f"{r}.gpu_memory_utilization", float(res.gpu_memory_utilization)),
        (f"{r}.log_prob_micro_batch_size_per_gpu", res.log_prob_micro_batch_size_per_gpu),
        (f"+{r}.engine_kwargs.vllm.logits_processors", [PROCESSOR_FQCN]),
        # Neutral vLLM defaults instead of the model's generation_config.json (no hidden min_p / top_k).
        (f"+{r}.engine_kwargs.vllm.generation_config", "vllm"),
        (f"{r}.agent.agent_loop_config_path", AGENT_LOOP_CONFIG),
        (f"{r}.agent.default_agent_loop", AGENT_LOOP_NAME),
        # Validation: n samples at temperature 1.0 per row; each row's `ead_sampler` column says whether the
        # agent loop stamps the run's schedule ("own"), nothing ("t1") or samples greedily ("greedy").
        (f"{r}.val_kwargs.n", cfg.eval_n),
        (f"{r}.val_kwargs.do_sample", True),
        (f"{r}.val_kwargs.temperature", 1.0),
        (f"{r}.val_kwargs.top_p", 1.0),
        (f"{r}.val_kwargs.top_k", -1),
        ("actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu", res.log_prob_micro_batch_size_per_gpu),
    ]
    return items


def _tis(cfg: VerlRunConfig) -> list[tuple[str, Any]]:
    rc = "algorithm.rollout_correction"
    # TIS enabled: token-level (or sequence-level) truncated IS in decoupled mode. Disabled: rollout_is=null,
    # for which verl still logs its rollout_corr/* diagnostics. Never bypass mode: it would make the
    # annealed behaviour policy the PPO anchor, a different estimator.
    return [
        (f"{rc}.rollout_is", cfg.tis.level if cfg.tis.enabled else None),
        (f"{rc}.rollout_is_threshold", float(cfg.tis.cap)),
        (f"{rc}.rollout_is_batch_normalize", False),
        (f"{rc}.rollout_rs", None),
        (f"{rc}.bypass_mode", False),
    ]


def _actor(cfg: VerlRunConfig) -> list[tuple[str, Any]]:
    actor = "actor_rollout_ref.actor"
    res = cfg.resources
    return [
        ("actor_rollout_ref.model.path", cfg.model),
        ("actor_rollout_ref.model.use_remove_padding", True),
        ("actor_rollout_ref.model.enable_gradient_checkpointing", True),
        (f"{actor}.optim.lr", float(cfg.lr)),
        (f"{actor}.ppo_mini_batch_size", cfg.ppo_mini_batch_size),
        (f"{actor}.ppo_micro_batch_size_per_gpu", res.micro_batch_size_per_gpu),
        (f"{actor}.use_dynamic_bsz", False),
        (f"{actor}.ppo_epochs", cfg.ppo_epochs),
        (f"{actor}.shuffle", False),
        (f"{actor}.data_loader_seed", cfg.seed),
        (f"{actor}.fsdp_config.param_offload", res.param_offload),
        (f"{actor}.fsdp_config.optimizer_offload", res.optimizer_offload),
    ]


def _data(cfg: VerlRunConfig) -> list[tuple[str, Any]]:
    d = cfg.data
    return [
        ("data.train_files", [local_path(f) for f in d.train_files]),
        ("data.val_files", [local_path(f) for f in d.val_files]),
        ("data.prompt_key", "prompt"),
        ("data.max_prompt_length", d.max_prompt_length),
        ("data.max_response_length", d.max_response_length),
        ("data.train_batch_size", cfg.train_batch_size),
        ("data.filter_overlong_prompts", d.filter_overlong_prompts),
        ("data.truncation", "error"),
        ("data.shuffle", True),
        ("data.seed", cfg.seed),
        ("reward.custom_reward_function.path", REWARD_PATH),
        ("reward.custom_reward_function.name", REWARD_NAME),
        ("+reward.custom_reward_function.reward_kwargs.method", d.reward),
    ]


def _trainer(cfg: VerlRunConfig) -> list[tuple[str, Any]]:
    t = cfg.tracking
    items: list[tuple[str, Any]] = [
        ("trainer.use_v1", True),
        ("trainer.v1.trainer_mode", TRAINER_MODE),
        ("trainer.nnodes", cfg.resources.nnodes),
        ("trainer.n_gpus_per_node", cfg.resources.n_gpus_per_node),
        # The loop ends at total_training_steps; epochs only need to be enough to get there.
        ("trainer.total_epochs", 1000),
        ("trainer.total_training_steps", cfg.steps),
        ("trainer.test_freq", cfg.eval_interval),
        ("trainer.val_before_train", cfg.eval_before_train),
        ("trainer.save_freq", cfg.ckpt_interval),
        ("trainer.resume_mode", "auto"),
        ("trainer.default_local_dir", local_path(cfg.ckpt_dir)),
        ("trainer.project_name", t.experiment),
        ("trainer.experiment_name", t.run_name or cfg.hash),
        ("trainer.logger", ["console", "mlflow"] if t.uri else ["console"]),
        ("trainer.log_val_generations", 0),
    ]
    if cfg.dump_generations:
        items += [
            ("trainer.rollout_data_dir", local_path(f"{cfg.ckpt_dir}/rollouts")),
            ("trainer.validation_data_dir", local_path(f"{cfg.ckpt_dir}/validation")),
        ]
    for key, value in ray_env_vars(cfg).items():
        items.append((f"{RAY_ENV}.{key}", value))
    return items


def to_verl_overrides(cfg: VerlRunConfig) -> list[str]:
    """verl 0.9.1 Hydra overrides for ``cfg`` (validated first); ``cfg.extra_overrides`` replace same keys."""
    cfg.validate()
    items = _actor(cfg) + _algorithm(cfg) + _rollout(cfg) + _tis(cfg) + _data(cfg) + _trainer(cfg)
    for key, value in _flatten("+ead", ead_block(cfg)):
        items.append((key, value))
    out = [f"{k}={fmt(v)}" for k, v in items]
    extra = {override_key(o): o for o in cfg.extra_overrides}
    out = [o for o in out if override_key(o) not in extra] + list(cfg.extra_overrides)
    keys = [override_key(o) for o in out]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"extra_overrides sets key(s) {dupes} more than once")
    return out


def _flatten(prefix: str, obj: Any) -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out += _flatten(f"{prefix}.{k}", v)
        return out
    return [(prefix, obj)]


def build_command(cfg: VerlRunConfig) -> list[str]:
    """The exact verl command (argv) for ``cfg``: ``python -m verl.trainer.main_ppo <overrides>``."""
    return [cfg.python, "-m", ENTRY_POINT, *to_verl_overrides(cfg)]


def format_command(argv: list[str]) -> str:
    """A copy-pasteable shell form of ``argv``: one argument per line."""
    head = " ".join(shlex.quote(a) for a in argv[:3])
    rest = [shlex.quote(a) for a in argv[3:]]
    return " \\\n    ".join([head, *rest])


def describe(cfg: VerlRunConfig) -> str:
    """The dry-run text: what would run and where it would write, without starting anything."""
    sched = cfg.schedule()
    decay = f", d_s(step 0) = {sched.decay(0):g}" if isinstance(sched, EADSchedule) else ""
    lines = [
        f"# preset: {cfg.preset or '-'}   config hash: {cfg.hash}",
        f"# model: {cfg.model}   algorithm: {cfg.algorithm.name}   sampling: {sched.label}{decay}",
        f"# TIS: {'on' if cfg.tis.enabled else 'off'} ({cfg.tis.level}, cap {cfg.tis.cap:g})   "
        f"rollouts/prompt: {cfg.rollouts_per_prompt}   steps: {cfg.steps}",
        f"# checkpoints / resume: {cfg.ckpt_dir}",
        f"# MLflow: {cfg.tracking.uri or 'off'}   run id: {cfg.tracking.run_id or '-'}",
        f"# GPUs: {cfg.resources.nnodes} node(s) x {cfg.resources.n_gpus_per_node}",
        "",
        format_command(build_command(cfg)),
    ]
    return "\n".join(lines)
