"""Configuration of an RLVR run on the local backend (one dataclass tree; the Hydra configs mirror it).

Every value is checked by ``RLVRConfig.validate()`` before any work starts, with errors that name
the parameter (dotted path) and its allowed range.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ead_core.schedule import PRESET_SCALES, EntropyTargetSchedule, FixedSchedule, Schedule, schedule_from_dict
from experiments.local.policy import SIZES, resolve_device
from experiments.local.tasks import SPLIT_VERSION, TASKS, make_task
from experiments.local.warmstart import WarmStartConfig
from experiments.tracking.hashing import EXECUTION_FIELDS, config_hash

ALGORITHMS = ("grpo", "dapo", "clip_cov", "kl_cov")
SAMPLING_KINDS = ("ead", "fixed", "reverse", "linear", "cosine", "entropy_target", "fixed_matched")


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class SamplingConfig:
    """Behaviour policy: EAD (annealed), a fixed temperature or another schedule kind, through the same sampler.

    Kinds (ead_core.schedule): ead, fixed, reverse (EAD's mirror: tau_min -> tau_max), linear and cosine (tau_max ->
    tau_min over d_s tokens after c), entropy_target (per token, the tau in [tau_lo, tau_hi] whose entropy is
    max(h_min, h_max exp(-t / d_s))), fixed_matched (the matched-entropy control: at every step one fixed temperature,
    calibrated on the model of that step so that its mean token entropy equals that of EAD with this config's EAD
    parameters; see ``experiments.local.train.Trainer.schedule_at``). The decaying kinds share tau_max/tau_min (not
    entropy_target), d0, c, d_growth, d_cap and the preset's d_scale.
    """

    kind: str = field(
        default="ead", metadata=_h("ead | fixed | reverse | linear | cosine | entropy_target | fixed_matched")
    )
    preset: str = field(default="paper", metadata=_h("decay scale preset: 'paper' (x1) or 'reference' (x20)"))
    tau_max: float = field(default=1.2, metadata=_h("EAD starting temperature"))
    tau_min: float = field(default=0.1, metadata=_h("EAD floor temperature"))
    d0: float = field(default=8.0, metadata=_h("EAD decay length at step 0 (scaled to ~10-token responses)"))
    c: int = field(default=1, metadata=_h("EAD: positions t < c sample at tau = 1"))
    d_growth: float = field(default=0.2, metadata=_h("EAD: decay length growth per training step"))
    d_cap: float = field(default=40000.0, metadata=_h("EAD: cap on d0 + d_growth * step"))
    d_scale: float | None = field(default=None, metadata=_h("EAD decay scale; None takes the preset's"))
    tau: float = field(default=1.0, metadata=_h("fixed temperature (kind='fixed')"))
    h_max: float = field(default=1.0, metadata=_h("entropy_target: target entropy (nats) at t = 0"))
    h_min: float = field(default=0.0, metadata=_h("entropy_target: floor of the target entropy (nats)"))
    tau_lo: float = field(default=1.0, metadata=_h("entropy_target: lowest temperature (1: never cools)"))
    tau_hi: float = field(default=2.0, metadata=_h("entropy_target: highest temperature"))

    @property
    def matched(self) -> bool:
        """The matched-entropy control: ``schedule()`` is its EAD reference, calibrated per step by the trainer."""
        return self.kind == "fixed_matched"

    def schedule(self) -> Schedule:
        """The ONE schedule object used by the sampler and the trainer (for fixed_matched: the EAD reference that the
        trainer calibrates a fixed temperature against at every step)."""
        if self.matched:
            return replace(self, kind="ead").schedule()
        if self.kind == "fixed":
            return FixedSchedule(self.tau)
        if self.kind not in SAMPLING_KINDS:
            others = ", ".join(repr(k) for k in SAMPLING_KINDS[2:])
            raise ValueError(f"sampling.kind must be 'ead' or 'fixed' or one of {others}, got {self.kind!r}")
        if self.preset not in PRESET_SCALES:
            raise ValueError(f"sampling.preset must be one of {sorted(PRESET_SCALES)}, got {self.preset!r}")
        scale = PRESET_SCALES[self.preset] if self.d_scale is None else self.d_scale
        decay = {"d0": self.d0, "c": self.c, "d_growth": self.d_growth, "d_cap": self.d_cap, "d_scale": scale}
        if self.kind == EntropyTargetSchedule.kind:
            ends = {"h_max": self.h_max, "h_min": self.h_min, "tau_lo": self.tau_lo, "tau_hi": self.tau_hi}
        else:
            ends = {"tau_max": self.tau_max, "tau_min": self.tau_min}
        try:
            return schedule_from_dict({"kind": self.kind, **ends, **decay})
        except ValueError as e:
            raise ValueError(f"sampling.{e}") from None


@dataclass
class TISConfig:
    """Truncated importance sampling between the behaviour policy and pi_old (temperature 1)."""

    enabled: bool = field(default=True, metadata=_h("multiply the policy-gradient loss by the TIS weights"))
    cap: float = field(default=2.0, metadata=_h("truncation threshold (> 0)"))
    level: str = field(default="token", metadata=_h("'token' or 'sequence'"))


@dataclass
class AlgorithmConfig:
    """The RL algorithm; advantages and policy losses come from verl's registries."""

    name: str = field(default="grpo", metadata=_h("grpo | dapo | clip_cov | kl_cov"))
    clip_ratio_low: float | None = field(default=None, metadata=_h("PPO lower clip (None: algorithm default)"))
    clip_ratio_high: float | None = field(default=None, metadata=_h("PPO upper clip (None: 0.28 dapo, else 0.2)"))
    clip_ratio_c: float = field(default=3.0, metadata=_h("dual-clip bound (> 1)"))
    loss_agg_mode: str | None = field(default=None, metadata=_h("verl loss aggregation (None: token-mean)"))
    filter_groups: bool | None = field(default=None, metadata=_h("drop all-correct/all-wrong groups (dapo default)"))
    norm_adv_by_std: bool = field(default=True, metadata=_h("GRPO: divide advantages by the group std"))
    clip_cov_ratio: float = field(default=0.0002, metadata=_h("Clip-Cov: fraction of tokens clipped"))
    clip_cov_lb: float = field(default=1.0, metadata=_h("Clip-Cov lower covariance bound"))
    clip_cov_ub: float = field(default=5.0, metadata=_h("Clip-Cov upper covariance bound"))
    kl_cov_ratio: float = field(default=0.0002, metadata=_h("KL-Cov: fraction of tokens penalised"))
    ppo_kl_coef: float = field(default=1.0, metadata=_h("KL-Cov penalty coefficient"))

    def resolved(self) -> AlgorithmConfig:
        """Fill None fields with the algorithm's defaults (DAPO: clip-higher 0.2/0.28, token-mean, filter)."""
        dapo = self.name == "dapo"
        return AlgorithmConfig(
            **{
                **asdict(self),
                "clip_ratio_low": 0.2 if self.clip_ratio_low is None else self.clip_ratio_low,
                "clip_ratio_high": (0.28 if dapo else 0.2) if self.clip_ratio_high is None else self.clip_ratio_high,
                "loss_agg_mode": "token-mean" if self.loss_agg_mode is None else self.loss_agg_mode,
                "filter_groups": dapo if self.filter_groups is None else self.filter_groups,
            }
        )

    @property
    def loss_mode(self) -> str:
        return {"grpo": "vanilla", "dapo": "vanilla", "clip_cov": "clip_cov", "kl_cov": "kl_cov"}[self.name]


@dataclass
class RLVRConfig:
    """A whole local RLVR run. ``python sweep.py --cfg job`` prints every field with its value."""

    task: str = field(default="countdown", metadata=_h("countdown | arithmetic"))
    task_knobs: dict = field(default_factory=dict, metadata=_h("task difficulty knobs, e.g. {n_numbers: 4}"))
    size: str = field(default="tiny", metadata=_h("policy size: tiny | small | base"))
    init_from: str | None = field(default=None, metadata=_h("policy directory to start from (skips warm start)"))
    warmstart_seed: int | None = field(
        default=None, metadata=_h("seed of the warm start (None: the run's seed); fixed: every seed shares one")
    )
    sft_steps: int = field(default=400, metadata=_h("warm-start SFT steps"))
    sft_lr: float = field(default=3e-3, metadata=_h("warm-start learning rate"))
    sft_batch_size: int = field(default=WarmStartConfig.batch_size, metadata=_h("warm-start rows per SFT step"))
    steps: int = field(default=100, metadata=_h("RL steps"))
    prompts_per_step: int = field(default=16, metadata=_h("prompts per RL step"))
    rollouts_per_prompt: int = field(default=8, metadata=_h("responses per prompt (group size, >= 2)"))
    mini_batches: int = field(default=4, metadata=_h("optimizer steps per RL step (must divide the batch)"))
    ppo_epochs: int = field(default=1, metadata=_h("passes over each RL batch"))
    lr: float = field(default=2e-5, metadata=_h("AdamW learning rate"))
    weight_decay: float = field(default=0.0, metadata=_h("AdamW weight decay"))
    grad_clip: float = field(default=1.0, metadata=_h("gradient-norm clip (> 0)"))
    max_new_tokens: int = field(default=16, metadata=_h("maximum response length (> sampling.c)"))
    train_pool: int = field(default=5000, metadata=_h("number of training problems drawn from"))
    eval_interval: int = field(default=10, metadata=_h("evaluate every this many steps (and at the end)"))
    eval_prompts: int = field(default=64, metadata=_h("held-out prompts per evaluation"))
    eval_k: int = field(default=16, metadata=_h("samples per eval prompt (Pass@k, Worst@k)"))
    ckpt_interval: int = field(default=5, metadata=_h("checkpoint every this many steps (and at the end)"))
    seed: int = field(default=0, metadata=_h("seed of the run (rollouts, prompt order, warm start)"))
    threads: int = field(default=0, metadata=_h("torch threads (0: 1, torch's default if OMP_WAIT_POLICY=PASSIVE)"))
    device: str = field(default="auto", metadata=_h("auto | cpu | cuda: where the policy and every tensor live"))
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    tis: TISConfig = field(default_factory=TISConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)

    # --- derived -------------------------------------------------------------------------------
    @property
    def batch_rows(self) -> int:
        return self.prompts_per_step * self.rollouts_per_prompt

    def warmstart(self) -> WarmStartConfig:
        return WarmStartConfig(
            task=self.task,
            task_knobs=dict(self.task_knobs),
            size=self.size,
            seed=self.seed if self.warmstart_seed is None else self.warmstart_seed,
            steps=self.sft_steps,
            batch_size=self.sft_batch_size,
            lr=self.sft_lr,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """What determines the run's results: every field but EXECUTION_FIELDS, plus the train/eval split version."""
        d = {k: v for k, v in self.to_dict().items() if k not in EXECUTION_FIELDS}
        if d["warmstart_seed"] is None:  # the default (the run's seed) keeps the hashes runs had before the field
            del d["warmstart_seed"]
        if d["sft_batch_size"] == WarmStartConfig.batch_size:  # likewise the default batch (runs before the field)
            del d["sft_batch_size"]
        return {**d, "split_version": SPLIT_VERSION}

    @property
    def hash(self) -> str:
        """Config hash of ``identity()``: the run directory, checkpoint owner and MLflow tag of a setting and seed."""
        return config_hash(self.identity())

    # --- validation ----------------------------------------------------------------------------
    def validate(self) -> RLVRConfig:
        """Raise ValueError naming the first bad parameter and its allowed range; return self."""

        def need(ok: bool, name: str, allowed: str, value: Any) -> None:
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {value!r}")

        need(self.task in TASKS, "task", f"one of {sorted(TASKS)}", self.task)
        try:
            make_task(self.task, **self.task_knobs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"task_knobs: {e}") from None
        need(self.size in SIZES, "size", f"one of {sorted(SIZES)}", self.size)
        need(self.algorithm.name in ALGORITHMS, "algorithm.name", f"one of {list(ALGORITHMS)}", self.algorithm.name)
        for name in ("steps", "sft_steps"):
            need(getattr(self, name) >= 0, name, "an integer >= 0", getattr(self, name))
        for name in (
            "sft_batch_size",
            "prompts_per_step",
            "mini_batches",
            "ppo_epochs",
            "eval_interval",
            "eval_prompts",
            "ckpt_interval",
            "train_pool",
            "eval_k",
        ):
            need(getattr(self, name) >= 1, name, "an integer >= 1", getattr(self, name))
        need(
            self.rollouts_per_prompt >= 2,
            "rollouts_per_prompt",
            f"an integer >= 2 (group-relative advantages for {self.algorithm.name})",
            self.rollouts_per_prompt,
        )
        need(
            self.batch_rows % self.mini_batches == 0,
            "mini_batches",
            f"a divisor of prompts_per_step * rollouts_per_prompt = {self.batch_rows}",
            self.mini_batches,
        )
        need(
            self.prompts_per_step <= self.train_pool,
            "prompts_per_step",
            f"<= train_pool ({self.train_pool})",
            self.prompts_per_step,
        )
        for name in ("lr", "sft_lr", "grad_clip"):
            need(getattr(self, name) > 0, name, "> 0", getattr(self, name))
        need(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        need(self.threads >= 0, "threads", "an integer >= 0", self.threads)
        resolve_device(self.device)  # raises naming device (a value not in DEVICES, or cuda without a GPU)
        ws = self.warmstart_seed
        need(ws is None or ws >= 0, "warmstart_seed", "null (the run's seed) or an integer >= 0", ws)
        sched = self.sampling.schedule()  # validates sampling.*
        c = getattr(sched, "c", 0)
        need(self.max_new_tokens > c, "max_new_tokens", f"> sampling.c ({c})", self.max_new_tokens)
        need(self.max_new_tokens <= 200, "max_new_tokens", "<= 200 (the policy's context is 256)", self.max_new_tokens)
        need(self.tis.level in ("token", "sequence"), "tis.level", "'token' or 'sequence'", self.tis.level)
        need(self.tis.cap > 0, "tis.cap", "> 0", self.tis.cap)
        a = self.algorithm.resolved()
        need(0 <= a.clip_ratio_low < 1, "algorithm.clip_ratio_low", "in [0, 1)", a.clip_ratio_low)
        need(a.clip_ratio_high >= 0, "algorithm.clip_ratio_high", ">= 0", a.clip_ratio_high)
        need(a.clip_ratio_c > 1, "algorithm.clip_ratio_c", "> 1", a.clip_ratio_c)
        modes = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
        need(a.loss_agg_mode in modes, "algorithm.loss_agg_mode", f"one of {list(modes)}", a.loss_agg_mode)
        return self


def from_dict(d: dict[str, Any]) -> RLVRConfig:
    """Build an RLVRConfig from nested plain data (Hydra, JSON); unknown keys raise ValueError."""

    def build(cls: type, data: dict[str, Any], path: str) -> Any:
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"unknown config key(s) {sorted(f'{path}{k}' for k in unknown)}")
        kwargs = {}
        for k, v in data.items():
            sub = {"sampling": SamplingConfig, "tis": TISConfig, "algorithm": AlgorithmConfig}.get(k)
            kwargs[k] = build(sub, v, f"{path}{k}.") if (cls is RLVRConfig and sub and isinstance(v, dict)) else v
        return cls(**kwargs)

    return build(RLVRConfig, dict(d), "")
