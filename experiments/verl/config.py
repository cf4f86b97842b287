"""Typed configuration of one RLVR run on verl (the ``backend=verl`` job), its presets and its hash.

The vocabulary mirrors the local backend (``experiments.local.config``): ``algorithm.name`` is one of
grpo / dapo / clip_cov / kl_cov with the same field names, ``sampling`` and ``tis`` ARE the local
backend's ``SamplingConfig`` and ``TISConfig`` (with the paper's EAD defaults instead of the tiny-task
ones), and ``rollouts_per_prompt``, ``lr``, ``steps``, ``eval_interval``, ``seed`` mean the same thing.
``experiments.verl.overrides`` translates a validated config into verl 0.9.1 Hydra overrides.

Validation errors are ``ValueError`` naming the dotted parameter and its allowed range.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import yaml

from ead_core.schedule import EADSchedule, Schedule
from experiments.local.config import ALGORITHMS, SamplingConfig, TISConfig
from experiments.tracking.hashing import config_hash

REWARDS = ("math_verify", "boxed")
LOSS_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
# Fields that do not change what is trained: excluded from the config hash (resume / checkpoint key).
UNHASHED = ("preset", "tracking", "ckpt_root", "python")


def _h(text: str) -> dict[str, str]:
    return {"help": text}


def paper_sampling(tau_min: float = 0.1) -> SamplingConfig:
    """EAD with the paper's schedule (tau 1.2 -> tau_min, d0 25, c 10, d_s growth 5/step, cap 40000).

    Decay scale preset "reference" (x20, the authors' released sampler, which produced the paper's
    curves); "paper" (x1) is the formula as printed. See README "The core" and the brief, section 1.
    """
    return SamplingConfig(
        kind="ead", preset="reference", tau_max=1.2, tau_min=tau_min, d0=25.0, c=10, d_growth=5.0, d_cap=40000.0
    )


@dataclass
class VerlAlgorithmConfig:
    """The RL algorithm, as verl 0.9.1 keys (same field names as the local backend's AlgorithmConfig)."""

    name: str = field(default="dapo", metadata=_h("grpo | dapo | clip_cov | kl_cov"))
    clip_ratio_low: float | None = field(default=None, metadata=_h("PPO lower clip (None: 0.2)"))
    clip_ratio_high: float | None = field(default=None, metadata=_h("PPO upper clip (None: 0.28 dapo, else 0.2)"))
    clip_ratio_c: float = field(default=3.0, metadata=_h("dual-clip bound (> 1)"))
    loss_agg_mode: str = field(default="token-mean", metadata=_h("verl loss aggregation"))
    norm_adv_by_std: bool = field(default=True, metadata=_h("GRPO advantages divided by the group std"))
    kl_loss_coef: float = field(default=0.0, metadata=_h("KL loss to the reference policy (0: off, the paper)"))
    filter_groups: bool = field(default=False, metadata=_h("DAPO dynamic sampling (off in the paper's runs)"))
    filter_groups_metric: str = field(default="acc", metadata=_h("reward_extra_info key groups are filtered on"))
    max_inflight_gen_batches: int = field(default=1, metadata=_h("filter_groups: prompt batches in flight"))
    overlong_buffer: bool = field(default=False, metadata=_h("DAPO overlong reward shaping (off in the paper)"))
    overlong_buffer_len: int = field(default=512, metadata=_h("tokens before max length where shaping starts"))
    overlong_penalty_factor: float = field(default=1.0, metadata=_h("maximum overlong penalty"))
    clip_cov_ratio: float = field(default=0.0002, metadata=_h("Clip-Cov: fraction of tokens clipped"))
    clip_cov_lb: float = field(default=1.0, metadata=_h("Clip-Cov lower covariance bound"))
    clip_cov_ub: float = field(default=5.0, metadata=_h("Clip-Cov upper covariance bound"))
    kl_cov_ratio: float = field(default=0.0002, metadata=_h("KL-Cov: fraction of tokens penalised"))
    ppo_kl_coef: float = field(default=1.0, metadata=_h("KL-Cov penalty coefficient"))

    @property
    def resolved_clip(self) -> tuple[float, float]:
        """(low, high): clip-higher 0.2/0.28 for DAPO, symmetric 0.2 otherwise, unless set."""
        low = 0.2 if self.clip_ratio_low is None else self.clip_ratio_low
        high = (0.28 if self.name == "dapo" else 0.2) if self.clip_ratio_high is None else self.clip_ratio_high
        return float(low), float(high)

    @property
    def loss_mode(self) -> str:
        """verl's ``actor.policy_loss.loss_mode`` for the algorithm."""
        return {"grpo": "vanilla", "dapo": "vanilla", "clip_cov": "clip_cov", "kl_cov": "kl_cov"}[self.name]


@dataclass
class DataConfig:
    """verl parquet files (``python -m experiments.verl prepare-data`` writes them) and the reward."""

    train_files: list[str] = field(default_factory=lambda: ["data/verl/numina_math/train.parquet"])
    val_files: list[str] = field(default_factory=lambda: ["data/verl/math500/test.parquet"])
    reward: str = field(default="math_verify", metadata=_h("math_verify (the paper) | boxed (the authors' code)"))
    max_prompt_length: int = field(default=1024, metadata=_h("prompt tokens (longer prompts are filtered out)"))
    max_response_length: int = field(default=3072, metadata=_h("response tokens"))
    filter_overlong_prompts: bool = field(default=True, metadata=_h("drop prompts over max_prompt_length"))


@dataclass
class ResourceConfig:
    """GPUs, nodes and the memory/parallelism knobs of a model size (performance only)."""

    nnodes: int = field(default=1, metadata=_h("Slurm nodes (one task per node, one Ray node each)"))
    n_gpus_per_node: int = field(default=8, metadata=_h("GPUs per node"))
    cpus_per_node: int = field(default=64, metadata=_h("CPUs per node given to Ray and Slurm"))
    mem_gb: int = field(default=0, metadata=_h("memory per node for Slurm (0: the site's default)"))
    rollout_tp: int = field(default=1, metadata=_h("vLLM tensor parallel size (divides n_gpus_per_node)"))
    gpu_memory_utilization: float = field(default=0.6, metadata=_h("vLLM KV-cache share of GPU memory"))
    micro_batch_size_per_gpu: int = field(default=4, metadata=_h("actor update micro-batch (sequences)"))
    log_prob_micro_batch_size_per_gpu: int = field(default=8, metadata=_h("log-prob recompute micro-batch"))
    param_offload: bool = field(default=False, metadata=_h("FSDP parameter offload"))
    optimizer_offload: bool = field(default=False, metadata=_h("FSDP optimizer offload"))


@dataclass
class TrackingConfig:
    """verl's MLflow logger: an explicit tracking URI and the run the sweep layer created."""

    uri: str | None = field(default=None, metadata=_h("MLflow tracking URI (None: no MLflow, console only)"))
    run_id: str | None = field(default=None, metadata=_h("existing MLflow run to log into (needs uri)"))
    experiment: str = field(default="ead-verl", metadata=_h("verl project_name (MLflow experiment if no run_id)"))
    run_name: str | None = field(default=None, metadata=_h("verl experiment_name (None: the config hash)"))


@dataclass
class VerlRunConfig:
    """One RLVR run on verl. ``preset(name)`` gives the paper's settings for a model."""

    preset: str | None = field(default=None, metadata=_h("preset this config started from (label only)"))
    model: str = field(default="Qwen/Qwen2.5-Math-1.5B", metadata=_h("HF model id or local directory"))
    algorithm: VerlAlgorithmConfig = field(default_factory=VerlAlgorithmConfig)
    sampling: SamplingConfig = field(default_factory=paper_sampling)
    tis: TISConfig = field(default_factory=TISConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollouts_per_prompt: int = field(default=16, metadata=_h("responses per prompt (group size, >= 2)"))
    train_batch_size: int = field(default=1024, metadata=_h("prompts per RL step"))
    ppo_mini_batch_size: int = field(default=256, metadata=_h("prompts per optimizer step"))
    ppo_epochs: int = field(default=1, metadata=_h("passes over each RL batch"))
    lr: float = field(default=4e-6, metadata=_h("actor learning rate (paper: 4e-6 for 16 rollouts)"))
    steps: int = field(default=200, metadata=_h("RL steps (the paper does not state its count)"))
    eval_interval: int = field(default=10, metadata=_h("validate every this many steps (and at the end)"))
    eval_before_train: bool = field(default=True, metadata=_h("validate at step 0"))
    eval_n: int = field(default=16, metadata=_h("samples per validation prompt"))
    eval_k: int = field(default=16, metadata=_h("k of Pass@k / Worst@k (<= eval_n)"))
    ckpt_interval: int = field(default=10, metadata=_h("checkpoint every this many steps (and at the end)"))
    seed: int = field(default=0, metadata=_h("data shuffling, vLLM and actor data-loader seed"))
    position_edges: list[int] = field(
        default_factory=lambda: [10, 100, 300, 1000],
        metadata=_h("response-position bucket edges of the EAD metrics (tau, TIS truncation)"),
    )
    dump_generations: bool = field(default=False, metadata=_h("verl's JSONL dumps of rollouts and validation"))
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    ckpt_root: str = field(default="checkpoints/verl", metadata=_h("checkpoints go to <ckpt_root>/<config hash>"))
    python: str = field(default="python", metadata=_h("interpreter that runs verl's trainer"))
    extra_overrides: list[str] = field(default_factory=list, metadata=_h("verbatim verl overrides, applied last"))

    # --- derived -------------------------------------------------------------------------------
    def schedule(self) -> Schedule:
        """The ONE schedule object of the run (stamped on requests, used by the metrics)."""
        return self.sampling.schedule()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def hash(self) -> str:
        """Config hash over everything that changes the training (not tracking, paths or labels)."""
        d = self.to_dict()
        for k in UNHASHED:
            d.pop(k, None)
        return config_hash(d)

    @property
    def ckpt_dir(self) -> str:
        """verl's ``trainer.default_local_dir``: resume finds the latest global_step_* there."""
        return f"{self.ckpt_root.rstrip('/')}/{self.hash}"

    @property
    def n_gpus(self) -> int:
        return self.resources.nnodes * self.resources.n_gpus_per_node

    # --- validation ----------------------------------------------------------------------------
    def validate(self) -> VerlRunConfig:
        """Raise ValueError naming the first bad parameter and its allowed range; return self."""

        def need(ok: bool, name: str, allowed: str, value: Any) -> None:
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {value!r}")

        a, d, r, t = self.algorithm, self.data, self.resources, self.tracking
        need(isinstance(self.model, str) and bool(self.model), "model", "a non-empty model id or path", self.model)
        need(a.name in ALGORITHMS, "algorithm.name", f"one of {list(ALGORITHMS)}", a.name)
        low, high = a.resolved_clip
        need(0 <= low < 1, "algorithm.clip_ratio_low", "in [0, 1)", low)
        need(high >= 0, "algorithm.clip_ratio_high", ">= 0", high)
        need(a.clip_ratio_c > 1, "algorithm.clip_ratio_c", "> 1", a.clip_ratio_c)
        need(
            a.loss_agg_mode in LOSS_AGG_MODES,
            "algorithm.loss_agg_mode",
            f"one of {list(LOSS_AGG_MODES)}",
            a.loss_agg_mode,
        )
        need(a.kl_loss_coef >= 0, "algorithm.kl_loss_coef", ">= 0 (0 disables the KL loss)", a.kl_loss_coef)
        need(
            a.max_inflight_gen_batches >= 1,
            "algorithm.max_inflight_gen_batches",
            "an integer >= 1",
            a.max_inflight_gen_batches,
        )
        need(
            bool(a.filter_groups_metric),
            "algorithm.filter_groups_metric",
            "a non-empty reward key",
            a.filter_groups_metric,
        )
        need(a.overlong_buffer_len > 0, "algorithm.overlong_buffer_len", "an integer > 0", a.overlong_buffer_len)
        if a.overlong_buffer:
            need(
                a.overlong_buffer_len < d.max_response_length,
                "algorithm.overlong_buffer_len",
                f"< data.max_response_length ({d.max_response_length}) when algorithm.overlong_buffer is on",
                a.overlong_buffer_len,
            )
        need(a.overlong_penalty_factor >= 0, "algorithm.overlong_penalty_factor", ">= 0", a.overlong_penalty_factor)
        for name in ("clip_cov_ratio", "kl_cov_ratio"):
            need(0 < getattr(a, name) <= 1, f"algorithm.{name}", "in (0, 1]", getattr(a, name))
        need(
            a.clip_cov_lb <= a.clip_cov_ub, "algorithm.clip_cov_lb", f"<= clip_cov_ub ({a.clip_cov_ub})", a.clip_cov_lb
        )
        need(a.ppo_kl_coef >= 0, "algorithm.ppo_kl_coef", ">= 0", a.ppo_kl_coef)

        sched = self.schedule()  # validates sampling.* (ValueError names sampling.<field>)
        only_local = "a kind verl samples with ('fixed_matched' calibrates per step on the local backend only)"
        need(not self.sampling.matched, "sampling.kind", only_local, self.sampling.kind)
        c = sched.c if isinstance(sched, EADSchedule) else 0
        need(self.tis.level in ("token", "sequence"), "tis.level", "'token' or 'sequence'", self.tis.level)
        need(self.tis.cap > 0 and math.isfinite(self.tis.cap), "tis.cap", "a finite number > 0", self.tis.cap)

        need(d.reward in REWARDS, "data.reward", f"one of {list(REWARDS)}", d.reward)
        for name in ("train_files", "val_files"):
            files = getattr(d, name)
            need(
                isinstance(files, list) and len(files) > 0 and all(isinstance(f, str) and f for f in files),
                f"data.{name}",
                "a non-empty list of parquet paths",
                files,
            )
        need(d.max_prompt_length >= 1, "data.max_prompt_length", "an integer >= 1", d.max_prompt_length)
        need(d.max_response_length > c, "data.max_response_length", f"> sampling.c ({c})", d.max_response_length)

        need(
            self.rollouts_per_prompt >= 2,
            "rollouts_per_prompt",
            "an integer >= 2 (group-relative advantages)",
            self.rollouts_per_prompt,
        )
        for name in (
            "train_batch_size",
            "ppo_mini_batch_size",
            "ppo_epochs",
            "steps",
            "eval_interval",
            "ckpt_interval",
            "eval_k",
        ):
            need(
                isinstance(getattr(self, name), int) and getattr(self, name) >= 1,
                name,
                "an integer >= 1",
                getattr(self, name),
            )
        need(
            self.train_batch_size % self.ppo_mini_batch_size == 0,
            "ppo_mini_batch_size",
            f"a divisor of train_batch_size ({self.train_batch_size})",
            self.ppo_mini_batch_size,
        )
        need(self.eval_n >= self.eval_k, "eval_n", f">= eval_k ({self.eval_k})", self.eval_n)
        need(self.lr > 0, "lr", "> 0", self.lr)
        need(isinstance(self.seed, int) and self.seed >= 0, "seed", "an integer >= 0", self.seed)
        edges = self.position_edges
        need(
            isinstance(edges, list)
            and all(isinstance(e, int) and e > 0 for e in edges)
            and edges == sorted(set(edges)),
            "position_edges",
            "a strictly increasing list of positive integers",
            edges,
        )

        need(r.nnodes >= 1, "resources.nnodes", "an integer >= 1", r.nnodes)
        need(r.n_gpus_per_node >= 1, "resources.n_gpus_per_node", "an integer >= 1", r.n_gpus_per_node)
        need(r.cpus_per_node >= 1, "resources.cpus_per_node", "an integer >= 1", r.cpus_per_node)
        need(r.mem_gb >= 0, "resources.mem_gb", "an integer >= 0 (0: site default)", r.mem_gb)
        need(
            r.rollout_tp >= 1 and r.n_gpus_per_node % r.rollout_tp == 0,
            "resources.rollout_tp",
            f"a divisor of resources.n_gpus_per_node ({r.n_gpus_per_node})",
            r.rollout_tp,
        )
        need(
            0 < r.gpu_memory_utilization <= 1, "resources.gpu_memory_utilization", "in (0, 1]", r.gpu_memory_utilization
        )
        for name in ("micro_batch_size_per_gpu", "log_prob_micro_batch_size_per_gpu"):
            need(getattr(r, name) >= 1, f"resources.{name}", "an integer >= 1", getattr(r, name))
        rows = self.train_batch_size * self.rollouts_per_prompt
        need(
            rows % self.n_gpus == 0,
            "train_batch_size",
            f"such that train_batch_size * rollouts_per_prompt is a multiple of the GPU count ({self.n_gpus})",
            self.train_batch_size,
        )
        mini_rows = self.ppo_mini_batch_size * self.rollouts_per_prompt
        need(
            mini_rows % self.n_gpus == 0 and (mini_rows // self.n_gpus) % r.micro_batch_size_per_gpu == 0,
            "resources.micro_batch_size_per_gpu",
            f"a divisor of the per-GPU mini-batch (ppo_mini_batch_size * rollouts_per_prompt / GPUs "
            f"= {mini_rows / self.n_gpus:g})",
            r.micro_batch_size_per_gpu,
        )

        need(
            t.run_id is None or bool(t.uri),
            "tracking.uri",
            "set when tracking.run_id is set (never verl's /tmp default)",
            t.uri,
        )
        need(bool(t.experiment), "tracking.experiment", "a non-empty name", t.experiment)
        need(bool(self.ckpt_root), "ckpt_root", "a non-empty directory", self.ckpt_root)
        for o in self.extra_overrides:
            need(isinstance(o, str) and "=" in o, "extra_overrides", "a list of 'key=value' strings", o)
        return self


# --- presets ------------------------------------------------------------------------------------
# The paper's recipe (research/paper.md section 3): 1024 prompts per step, mini-batch 256, micro-batch 4 per
# GPU, 16 rollouts per prompt with lr 4e-6, prompts <= 1024 and responses <= 3072 tokens, no KL loss, DAPO
# (clip-higher 0.2/0.28, token-mean) without dynamic sampling or overlong shaping, validation every 10 steps
# with 16 samples, checkpoints every 10 steps. tau_min: 0.1 for the 1B/1.5B models, 0.8 for the 7B model.
PRESETS: dict[str, dict[str, Any]] = {
    "qwen2.5-math-1.5b": {"model": "Qwen/Qwen2.5-Math-1.5B", "sampling": {"tau_min": 0.1}},
    "llama-3.2-1b-instruct": {"model": "meta-llama/Llama-3.2-1B-Instruct", "sampling": {"tau_min": 0.1}},
    "qwen2.5-math-7b": {
        "model": "Qwen/Qwen2.5-Math-7B",
        "sampling": {"tau_min": 0.8},
        "resources": {"rollout_tp": 2, "micro_batch_size_per_gpu": 2, "log_prob_micro_batch_size_per_gpu": 4},
    },
    # Not a paper setting: one or two verl steps on one GPU with a small model (scripts/verl_gpu_smoke.sh).
    "smoke": {
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "rollouts_per_prompt": 4,
        "train_batch_size": 8,
        "ppo_mini_batch_size": 8,
        "steps": 2,
        "eval_interval": 1,
        "eval_n": 4,
        "eval_k": 4,
        "ckpt_interval": 1,
        "position_edges": [10, 50, 100],
        "data": {"max_prompt_length": 512, "max_response_length": 256},
        "algorithm": {"overlong_buffer_len": 64},  # so overlong shaping can be switched on in a smoke run
        "resources": {
            "n_gpus_per_node": 1,
            "cpus_per_node": 8,
            "gpu_memory_utilization": 0.4,
            "micro_batch_size_per_gpu": 4,
            "log_prob_micro_batch_size_per_gpu": 8,
        },
    },
}


def preset(name: str, **overrides: Any) -> VerlRunConfig:
    """The paper's settings for ``name`` (see ``PRESETS``) with dotted-key overrides, validated.

    ``preset("qwen2.5-math-1.5b", **{"algorithm.name": "grpo", "tis.enabled": False})``.
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    base = copy.deepcopy(PRESETS[name])
    sampling = paper_sampling(base.pop("sampling", {}).get("tau_min", 0.1))
    cfg = from_dict({**base, "preset": name, "sampling": asdict(sampling)})
    return apply_overrides(cfg, overrides).validate()


# --- building from plain data -------------------------------------------------------------------
_SECTIONS: dict[str, type] = {
    "algorithm": VerlAlgorithmConfig,
    "sampling": SamplingConfig,
    "tis": TISConfig,
    "data": DataConfig,
    "resources": ResourceConfig,
    "tracking": TrackingConfig,
}


def from_dict(d: dict[str, Any]) -> VerlRunConfig:
    """A VerlRunConfig from nested plain data (JSON, Hydra); unknown keys raise ValueError naming them.

    Sections not given keep their defaults (``sampling`` defaults to the paper's EAD schedule).
    """
    known = {f.name for f in fields(VerlRunConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; allowed: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for k, v in d.items():
        if k in _SECTIONS and isinstance(v, dict):
            cls = _SECTIONS[k]
            sub_known = {f.name for f in fields(cls)}
            bad = sorted(set(v) - sub_known)
            if bad:
                raise ValueError(f"unknown config key(s) {[f'{k}.{b}' for b in bad]}; allowed: {sorted(sub_known)}")
            base = asdict(paper_sampling()) if k == "sampling" else {}
            kwargs[k] = cls(**{**base, **v})
        else:
            kwargs[k] = copy.deepcopy(v)
    return VerlRunConfig(**kwargs)


def _parse_value(text: str) -> Any:
    """A CLI value: numbers (``1e-6``, ``inf``), YAML scalars and lists (``true``, ``null``, ``[a, b]``), else text."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: VerlRunConfig, overrides: dict[str, Any]) -> VerlRunConfig:
    """A copy of ``cfg`` with dotted keys replaced (``{"algorithm.name": "grpo", "lr": 1e-6}``).

    String values are parsed as YAML (so the CLI's ``--set lr=1e-6`` gives a float). Unknown keys raise.
    """
    d = cfg.to_dict()
    for key, value in overrides.items():
        parts = key.split(".")
        node = d
        for i, p in enumerate(parts):
            if not isinstance(node, dict) or p not in node:
                raise ValueError(f"unknown config key {key!r} (no {'.'.join(parts[: i + 1])!r})")
            if i == len(parts) - 1:
                node[p] = _parse_value(value) if isinstance(value, str) else copy.deepcopy(value)
            else:
                node = node[p]
    return from_dict(d)
