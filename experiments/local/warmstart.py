"""Warm start: supervised fine-tuning of a fresh policy on solver-written solutions.

No pretrained weights can be downloaded, so the RL runs start from a policy the project trains
itself: enough SFT that the policy writes well-formed answers and is right some of the time
(eval Mean@16 between 0.1 and 0.7 for the default size and task), leaving Pass@16 and Worst@16
room to move. The result is an HF model directory cached under a hash of this config.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from filelock import FileLock
from tqdm.auto import tqdm

from experiments.local.policy import SIZES, build_policy, load_policy, save_policy
from experiments.local.tasks import SPLIT_VERSION, Problem, make_task
from experiments.tracking.hashing import config_hash

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$EAD_CACHE`` or ``~/.cache/ead-harness``: shared by every run on the machine."""
    return Path(os.environ.get("EAD_CACHE", Path.home() / ".cache" / "ead-harness"))


@dataclass(frozen=True)
class WarmStartConfig:
    """Everything that determines the warm-started weights (and hence the cache key)."""

    task: str = "countdown"
    task_knobs: dict = field(default_factory=dict)
    size: str = "tiny"
    seed: int = 0
    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    n_train: int = 20000

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"warm-start size must be one of {sorted(SIZES)}, got {self.size!r}")
        if self.steps < 0:
            raise ValueError(f"warm-start steps must be >= 0, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"warm-start batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"warm-start lr must be > 0, got {self.lr}")
        make_task(self.task, **self.task_knobs)  # validates the task name and knobs

    @property
    def key(self) -> str:
        """Cache key: the config and the train/eval split version (a cache from an older split held eval prompts)."""
        return config_hash({**asdict(self), "split_version": SPLIT_VERSION})


def sft_data(cfg: WarmStartConfig) -> list[Problem]:
    """The SFT problems: ``n_train`` draws of the task's train split (never an eval prompt, of any seed)."""
    return make_task(cfg.task, **cfg.task_knobs).problems("train", cfg.n_train, seed=cfg.seed)


def _sft_batch(tokenizer, texts: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded BOS + prompt + solution + EOS; labels only on solution and EOS."""
    ids, labels = [], []
    for prompt, sol in texts:
        p = [tokenizer.bos_token_id, *tokenizer.encode(prompt, add_special_tokens=False)]
        s = [*tokenizer.encode(sol, add_special_tokens=False), tokenizer.eos_token_id]
        ids.append(p + s)
        labels.append([-100] * len(p) + s)
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    label_t = torch.tensor([x + [-100] * (width - len(x)) for x in labels])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    return input_ids, mask, label_t


@torch.enable_grad()
def train_sft(cfg: WarmStartConfig, progress: bool = True, device: torch.device | str = "cpu"):
    """Train the warm start from scratch (deterministic in cfg.seed) on ``device`` and return (model, tokenizer,
    losses). The device is not part of the cache key: a GPU-trained entry serves CPU runs and the other way round.
    Gradients are on whatever the caller's mode: a study runs under ``torch.no_grad`` and may be the first job on a
    machine to need the warm start."""
    model, tok = build_policy(cfg.size, seed=cfg.seed)
    model.to(device)
    data = sft_data(cfg)
    rng = random.Random(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
    )
    model.train()
    losses = []
    bar = tqdm(range(cfg.steps), desc=f"warm start {cfg.size}/{cfg.task}", disable=not progress, leave=False)
    for _ in bar:
        batch = [(p.prompt, p.solution) for p in rng.sample(data, cfg.batch_size)]
        ids, mask, labels = (x.to(device) for x in _sft_batch(tok, batch))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return model, tok, losses


def cache_path(cfg: WarmStartConfig, cache_dir: str | Path | None = None) -> Path:
    """Where the warm start of ``cfg`` is (or will be) cached: ``<cache>/warmstart/<size>-<task>-<key>``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "warmstart" / f"{cfg.size}-{cfg.task}-{cfg.key}"


def warm_start(
    cfg: WarmStartConfig, cache_dir: str | Path | None = None, progress: bool = True, device: torch.device | str = "cpu"
) -> Path:
    """Path of the warm-started policy directory, training it first (on ``device``) unless cached."""
    path = cache_path(cfg, cache_dir)
    if _cached(path):
        log.info("warm start cached at %s", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Jobs of one sweep share warm starts: the first trains it, the others wait for it instead of training it too.
    with FileLock(str(path) + ".lock"):
        if _cached(path):
            log.info("warm start cached at %s (trained by another job)", path)
            return path
        return _train_and_save(cfg, path, progress, device)


def _cached(path: Path) -> bool:
    """A complete cache entry whose weight files are whole; a damaged one (truncated safetensors: disk full, a copy
    cut short) is reported naming the file and rebuilt by the caller (``_train_and_save`` replaces the entry)."""
    if not ((path / "config.json").exists() and (path / "DONE").exists()):
        return False
    from safetensors import safe_open

    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt"):  # reads and checks the header against the file's size
                pass
        except Exception as e:  # noqa: BLE001 - any unreadable file means: rebuild
            log.warning("warm start cache entry %s is damaged (%s: %s); rebuilding it", path, weights, e)
            return False
    return True


def _train_and_save(cfg: WarmStartConfig, path: Path, progress: bool, device: torch.device | str = "cpu") -> Path:
    """Train the warm start and move it into ``path`` whole (called under the entry's lock)."""
    log.info("training warm start %s -> %s", cfg, path)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model, tok, losses = train_sft(cfg, progress=progress, device=device)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_policy(model, tok, tmp)
    meta = {"config": asdict(cfg), "split_version": SPLIT_VERSION, "final_loss": losses[-1] if losses else None}
    (tmp / "warmstart.json").write_text(json.dumps(meta, indent=2))
    (tmp / "DONE").write_text("ok\n")
    if path.exists():  # an unfinished entry (no DONE) left by a killed job
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def load_warm_start(cfg: WarmStartConfig, cache_dir: str | Path | None = None, progress: bool = True):
    """(model, tokenizer) of the warm start, training it first if needed."""
    return load_policy(warm_start(cfg, cache_dir, progress))
