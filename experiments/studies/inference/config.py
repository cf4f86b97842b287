"""The inference-scaling study's configuration: the vLLM engine and the study itself."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from experiments.local.policy import SIZES
from experiments.local.tasks import EVAL_RESERVE, TASKS, make_task
from experiments.local.warmstart import WarmStartConfig
from experiments.studies.inference.conditions import Condition, parse_condition
from experiments.tracking.hashing import config_hash

BACKEND = "vllm_inference_scaling"  # the MLflow ``backend`` tag of these runs
PREFIX = "infer"  # metric keys: infer/<condition label>/<metric>
MAX_N = 32  # the N grid's ceiling (the paper's Fig. 9 stops at 32)
VOTE_MODES = ("auto", "answer", "response")
# What Maj@N votes on when vote="auto". A vote is only meaningful if equal keys mean equal correctness.
# Arithmetic: the extracted number decides correctness. Countdown: extract_answer gives the CLAIMED value,
# and the policy nearly always claims the target (given in the prompt) whether or not its expression reaches
# it, so votes on it are degenerate; vote on the solution text instead (same text, same correctness).
AUTO_VOTE = {"arithmetic": "answer", "countdown": "response"}


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class EngineConfig:
    """vLLM engine settings (defaults suit the CPU build; on a GPU use dtype auto and drop enforce_eager)."""

    dtype: str = field(default="float32", metadata=_h("model dtype"))
    enforce_eager: bool = field(default=True, metadata=_h("no CUDA graphs / compilation"))
    gpu_memory_utilization: float = field(default=0.2, metadata=_h("fraction of accelerator memory, in (0, 1]"))
    max_num_seqs: int = field(default=512, metadata=_h("concurrent sequences (n samples count individually)"))
    max_model_len: int | None = field(default=None, metadata=_h("context length (None: the model's)"))
    max_num_batched_tokens: int | None = field(default=None, metadata=_h("tokens per engine step (None: vLLM's)"))
    enable_chunked_prefill: bool | None = field(
        default=None,
        metadata=_h(
            "split prompts across steps (None: off on CPU, vLLM's default elsewhere; vLLM 0.32's CPU runner crashes "
            "with 'CPU Generator does not use offset' when a seeded request's prefill is split)"
        ),
    )
    extra: dict = field(default_factory=dict, metadata=_h("further vllm.LLM keyword arguments (JSON)"))


@dataclass
class InferenceScalingConfig:
    """The whole study. ``python -m experiments.studies.inference --help`` lists every field."""

    policy_dir: str | None = field(default=None, metadata=_h("HF policy directory (None: warm start one)"))
    task: str = field(default="countdown", metadata=_h("countdown | arithmetic"))
    task_knobs: dict = field(default_factory=dict, metadata=_h("task difficulty knobs, e.g. {n_numbers: 4}"))
    data_seed: int = field(
        default=0,
        metadata=_h(
            "seed of the eval draw and the warm start (every eval prompt is held out of training, whatever the seed)"
        ),
    )
    eval_prompts: int = field(default=64, metadata=_h(f"held-out eval prompts, in [1, {EVAL_RESERVE}]"))
    n_grid: list[int] = field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32],
        metadata=_h(f"N values, strictly increasing in [1, {MAX_N}]; max(n_grid) samples are drawn per prompt"),
    )
    conditions: list[str | dict] = field(
        default_factory=lambda: ["ead:local", "fixed:0.6", "fixed:1.0", "fixed:1.2"],
        metadata=_h("JSON list: 'fixed:TAU', 'ead:PRESET[,field=value...][@STEP]' (PRESET local|paper|reference)"),
    )
    max_tokens: int = field(default=16, metadata=_h("maximum response length in tokens"))
    seed: int = field(default=0, metadata=_h("sampling seed (per-prompt seeds derive from it)"))
    n_bootstrap: int = field(default=200, metadata=_h("bootstrap draws per prompt for Maj@N below the sample count"))
    vote: str = field(
        default="auto",
        metadata=_h("Maj@N votes on: 'answer' (task.extract_answer), 'response' (the whole answer text), 'auto'"),
    )
    size: str = field(default="tiny", metadata=_h("warm start: policy size (tiny | small | base)"))
    sft_steps: int = field(default=400, metadata=_h("warm start: SFT steps (400 = the RLVR runs' default)"))
    sft_lr: float = field(default=3e-3, metadata=_h("warm start: learning rate"))
    sft_batch_size: int = field(default=64, metadata=_h("warm start: batch size"))
    sft_n_train: int = field(default=20000, metadata=_h("warm start: training problems drawn from"))
    engine: EngineConfig = field(default_factory=EngineConfig)

    @property
    def samples(self) -> int:
        """Samples drawn per prompt and condition: the largest N."""
        return max(self.n_grid)

    def warmstart(self) -> WarmStartConfig:
        return WarmStartConfig(
            task=self.task,
            task_knobs=dict(self.task_knobs),
            size=self.size,
            seed=self.data_seed,
            steps=self.sft_steps,
            batch_size=self.sft_batch_size,
            lr=self.sft_lr,
            n_train=self.sft_n_train,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def hash(self) -> str:
        return config_hash(self.to_dict())

    def parsed_conditions(self) -> list[Condition]:
        """The conditions as schedules with unique, MLflow-safe labels (raises ValueError naming the entry)."""
        if not isinstance(self.conditions, list) or not self.conditions:
            raise ValueError(f"conditions must be a non-empty list, got {self.conditions!r}")
        out = [parse_condition(c, f"conditions[{i}]") for i, c in enumerate(self.conditions)]
        seen: dict[str, int] = {}
        for i, c in enumerate(out):
            if c.label in seen:
                raise ValueError(
                    f"conditions[{i}] has the label {c.label!r} of conditions[{seen[c.label]}]; "
                    "give one an explicit label ('name=ead:...' or {'label': ...})"
                )
            seen[c.label] = i
        return out

    def validate(self) -> InferenceScalingConfig:
        """Raise ValueError naming the first bad parameter and its allowed range; return self."""

        def need(ok: bool, name: str, allowed: str, value: Any) -> None:
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {value!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        need(self.task in TASKS, "task", f"one of {sorted(TASKS)}", self.task)
        need(isinstance(self.task_knobs, dict), "task_knobs", "a dict", self.task_knobs)
        try:
            make_task(self.task, **self.task_knobs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"task_knobs: {e}") from None
        need(
            is_int(self.eval_prompts) and 1 <= self.eval_prompts <= EVAL_RESERVE,
            "eval_prompts",
            f"an integer in [1, {EVAL_RESERVE}]",
            self.eval_prompts,
        )
        grid = self.n_grid
        need(isinstance(grid, list) and len(grid) > 0, "n_grid", "a non-empty list of integers", grid)
        for i, n in enumerate(grid):
            need(is_int(n) and 1 <= n <= MAX_N, f"n_grid[{i}]", f"an integer in [1, {MAX_N}]", n)
        need(all(a < b for a, b in zip(grid, grid[1:])), "n_grid", "strictly increasing (sorted, no repeats)", grid)
        self.parsed_conditions()
        need(is_int(self.max_tokens) and self.max_tokens >= 1, "max_tokens", "an integer >= 1", self.max_tokens)
        need(is_int(self.seed) and 0 <= self.seed < 2**31, "seed", "an integer in [0, 2**31)", self.seed)
        need(is_int(self.data_seed) and self.data_seed >= 0, "data_seed", "an integer >= 0", self.data_seed)
        need(is_int(self.n_bootstrap) and self.n_bootstrap >= 1, "n_bootstrap", "an integer >= 1", self.n_bootstrap)
        need(self.vote in VOTE_MODES, "vote", f"one of {list(VOTE_MODES)}", self.vote)
        if self.policy_dir is None:
            need(self.size in SIZES, "size", f"one of {sorted(SIZES)}", self.size)
            for name in ("sft_steps", "sft_batch_size", "sft_n_train"):
                lo = 0 if name == "sft_steps" else 1
                v = getattr(self, name)
                need(is_int(v) and v >= lo, name, f"an integer >= {lo}", v)
            need(self.sft_lr > 0, "sft_lr", "> 0", self.sft_lr)
            need(self.sft_batch_size <= self.sft_n_train, "sft_batch_size", "<= sft_n_train", self.sft_batch_size)
        else:
            need(
                (Path(self.policy_dir) / "config.json").is_file(),
                "policy_dir",
                "a model directory with a config.json",
                self.policy_dir,
            )
        e = self.engine
        need(0 < e.gpu_memory_utilization <= 1, "engine.gpu_memory_utilization", "in (0, 1]", e.gpu_memory_utilization)
        need(is_int(e.max_num_seqs) and e.max_num_seqs >= 1, "engine.max_num_seqs", "an integer >= 1", e.max_num_seqs)
        need(
            e.max_model_len is None or (is_int(e.max_model_len) and e.max_model_len > self.max_tokens),
            "engine.max_model_len",
            f"None or an integer > max_tokens ({self.max_tokens})",
            e.max_model_len,
        )
        need(
            e.max_num_batched_tokens is None or (is_int(e.max_num_batched_tokens) and e.max_num_batched_tokens >= 1),
            "engine.max_num_batched_tokens",
            "None or an integer >= 1",
            e.max_num_batched_tokens,
        )
        need(isinstance(e.extra, dict), "engine.extra", "a dict of vllm.LLM keyword arguments", e.extra)
        return self
