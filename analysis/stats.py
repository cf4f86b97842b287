"""Statistics over seeds: mean and a t-based confidence interval per group, final values of runs, and the choice of
which runs a figure compares (metric names per eval_k, settings that vary, the modal value of nuisance settings).

Seeds are the replicates: a group is every run that shares all settings but the seed, so an interval is over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis.mlflow_loader import RUN_COLUMNS, TAGS, param_text
from experiments.tracking.hashing import EXECUTION_FIELDS

# Params that differ between replicates of one setting (never a reason to split a figure or a table).
REPLICATE_KEYS = {"seed", "config_hash", "init_from", "run_dir", "experiment_name", "policy_dir_resolved"}
# Params that change how a job runs, not what it computes (the trainer's execution fields and the sweep's own keys).
NOT_SETTINGS = {*EXECUTION_FIELDS, "backend.name", "progress", "dry_run", "force"}
# Columns of long frames and labels added by figures (not settings of a run).
DERIVED = {"key", "step", "value", "timestamp", "table_step", "panel", "tis", "series", "facet"}
# Panels of training figures: one per algorithm and model size (the paper's grid); ``panel_keys`` adds the task keys
# that vary, so runs on different tasks (or task variants) never share an axis.
PANEL_KEYS = ["algorithm.name", "size"]


# The decoders every evaluation scores with (local and verl backends alike): metric prefix -> what a label says.
# ``eval_t1`` is the common decoder (temperature 1.0 for every condition, whatever it trained with), so figures and
# tables compare conditions under it by default; ``eval`` is each run's own sampler (EAD scored with EAD).
DECODERS = {"eval_t1": "T=1.0", "eval": "own sampler"}
COMMON_DECODER = "eval_t1"
OWN_PREFIX = "own_"  # metric name prefix of the own-sampler variants: "own_pass" is Pass@k under the run's sampler


@dataclass(frozen=True)
class Metric:
    """A plotted quantity: the MLflow key (``{k}`` is the run's eval_k) and its axis label; sampled-evaluation
    metrics name their decoder, and the label says it ('Pass@16 (T=1.0)', 'Pass@16 (bootstrap; own sampler)')."""

    key: str
    label: str
    decoder: str | None = None

    def key_for(self, k: int) -> str:
        return self.key.format(k=k)

    def label_for(self, k: int | None) -> str:
        text = self.label.format(k=k if k is not None else "k")
        if self.decoder is None:
            return text
        said = DECODERS[self.decoder]
        return f"{text[:-1]}; {said})" if text.endswith(")") else f"{text} ({said})"

    @property
    def is_rate(self) -> bool:
        """A fraction of prompts or samples (plotted on [0, 1])."""
        return self.key.startswith("eval")


_SAMPLED = {
    "pass": ("pass_at_{k}", "Pass@{k}"),
    "worst": ("worst_at_{k}", "Worst@{k}"),
    "mean": ("mean_at_{k}", "Mean@{k}"),
    "boot_pass": ("boot_best_at_{k}", "Pass@{k} (bootstrap)"),
    "boot_worst": ("boot_worst_at_{k}", "Worst@{k} (bootstrap)"),
}
# One name per quantity; unbiased and bootstrap estimators never share a label, nor do two decoders.
METRICS: dict[str, Metric] = {
    **{n: Metric(f"{COMMON_DECODER}/{key}", label, COMMON_DECODER) for n, (key, label) in _SAMPLED.items()},
    **{OWN_PREFIX + n: Metric(f"eval/{key}", label, "eval") for n, (key, label) in _SAMPLED.items()},
    "greedy": Metric("eval_greedy/accuracy", "greedy accuracy"),
    "entropy": Metric("train/entropy", "entropy (train rollouts)"),
    "length": Metric("train/response_length", "response length (tokens)"),
    "clipfrac": Metric("train/pg_clipfrac", "clip fraction"),
    "grad_norm": Metric("train/grad_norm", "gradient norm"),
    "reward": Metric("train/reward_mean", "train reward"),
    "is_truncated": Metric("train/is_truncated_frac", "TIS truncated fraction"),
}


def with_decoder(names: Sequence[str], decoder: str) -> list[str]:
    """The metric names scored with ``decoder`` (a key of DECODERS): sampled-evaluation names switch to that
    decoder's variant ('pass' -> 'own_pass' for ``eval``), the others stay."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
    out = []
    for n in names:
        base = n.removeprefix(OWN_PREFIX)
        out.append(n if base not in _SAMPLED else (base if decoder == COMMON_DECODER else OWN_PREFIX + base))
    return out


def decoder_note(decoder: str) -> str:
    """What a figure's title says about the decoder of its evaluation panels."""
    if decoder == COMMON_DECODER:
        return "evaluated at T=1.0 for every condition"
    return "evaluated with each run's own sampler"


def eval_ks(runs: pd.DataFrame) -> list[int]:
    """The eval_k values of the runs (16 where a run does not say)."""
    ks = runs["eval_k"] if "eval_k" in runs else pd.Series(16, index=runs.index)
    return sorted({int(k) for k in ks.fillna(16)})


def metric_keys(names: Sequence[str], runs: pd.DataFrame) -> list[str]:
    """MLflow keys of the named metrics for every eval_k among the runs."""
    return list(dict.fromkeys(METRICS[n].key_for(k) for n in names for k in eval_ks(runs)))


def select_metric(long: pd.DataFrame, name: str) -> pd.DataFrame:
    """Rows of metric ``name``, each run's own eval_k (a run's eval/pass_at_2 with eval_k=2, not a stray key)."""
    m = METRICS[name]
    if "{k}" not in m.key:
        return long[long["key"] == m.key]
    ks = eval_ks(long.drop_duplicates("run_id"))
    rows = long[long["key"].isin([m.key_for(k) for k in ks])]
    if len(ks) == 1:
        return rows
    own = rows.drop_duplicates("run_id").set_index("run_id")["eval_k"].fillna(16).astype(int).map(m.key_for)
    return rows[rows["key"] == rows["run_id"].map(own)]


def common_k(runs: pd.DataFrame) -> int | None:
    """The runs' common eval_k, or None when they differ (labels then say 'k')."""
    ks = eval_ks(runs)
    return ks[0] if len(ks) == 1 else None


def t_interval(mean: pd.Series, sd: pd.Series, n: pd.Series, level: float = 0.95) -> tuple[pd.Series, pd.Series]:
    """Two-sided t confidence interval of a mean from (mean, sd, n): ``scipy.stats.t.interval`` with n - 1 degrees of
    freedom, scaled by the standard error sd / sqrt(n); vectorised; NaN where n < 2 (no interval from one seed)."""
    n = n.astype(float)
    df = n.where(n >= 2) - 1  # NaN degrees of freedom give NaN quantiles
    q_lo, q_hi = sps.t.interval(level, df.to_numpy())
    se = sd / np.sqrt(n)
    return mean + q_lo * se, mean + q_hi * se


def mean_ci(frame: pd.DataFrame, by: Sequence[str], value: str = "value", level: float = 0.95) -> pd.DataFrame:
    """Per group of ``by``: mean, sd, n and the t interval [lo, hi] of ``value`` over the rows (seeds)."""
    g = frame.groupby(list(by), dropna=False, sort=True)[value]
    out = g.agg(mean="mean", sd="std", n="count").reset_index()
    out["lo"], out["hi"] = t_interval(out["mean"], out["sd"], out["n"], level)
    return out


def final_values(long: pd.DataFrame) -> pd.DataFrame:
    """Each run's value of each key at its last logged step (the final evaluation after the last training step)."""
    if long.empty:
        return long
    last = long.sort_values(["run_id", "key", "step", "timestamp"], kind="stable")
    return last.drop_duplicates(["run_id", "key"], keep="last").reset_index(drop=True)


def varying(runs: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """The columns among ``columns`` whose value differs between the runs."""
    return [c for c in columns if c in runs and param_text(runs[c]).nunique() > 1]


def setting_keys(runs: pd.DataFrame) -> list[str]:
    """Params that vary between the runs and are neither the sampler (the condition says it) nor a replicate key."""
    skip = set(RUN_COLUMNS) | set(TAGS) | REPLICATE_KEYS | NOT_SETTINGS | DERIVED
    return varying(runs, sorted(c for c in runs.columns if c not in skip and not c.startswith("sampling.")))


def modal_subset(
    runs: pd.DataFrame, keys: Sequence[str], compare: Sequence[str] = ()
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Hold each of ``keys`` at one value: a figure that is not about a setting shows one value of it. The value kept
    is the one under which the figure's comparison (the columns ``compare``, e.g. condition and d0) is most complete,
    then the most common, then the first in sorted order. Returns the runs kept and {key: value kept}."""
    chosen: dict[str, object] = {}
    present = [c for c in compare if c in runs]
    for k in keys:
        if k not in runs or param_text(runs[k]).nunique() <= 1:
            continue
        text = param_text(runs[k])
        combos = runs[present].apply(param_text).agg("|".join, axis=1) if present else None
        cover = combos.groupby(text).nunique() if combos is not None else None
        counts = text.value_counts()

        def score(v: str, cover: pd.Series | None = cover, counts: pd.Series = counts) -> tuple[int, int]:
            return (int(cover[v]) if cover is not None else 0, int(counts[v]))

        best = sorted(counts.index, key=lambda v: (-score(v)[0], -score(v)[1], v))[0]
        runs = runs[text == best]
        chosen[k] = runs[k].iloc[0]
    return runs, chosen


def task_keys(runs: pd.DataFrame) -> list[str]:
    """The task params (``task``, ``task_knobs.*``) that vary between the runs: each value is its own panel."""
    return varying(runs, sorted(c for c in runs.columns if c == "task" or c.startswith("task_knobs.")))


def panel_keys(runs: pd.DataFrame) -> list[str]:
    """What splits training figures into panels: PANEL_KEYS, then the varying task keys."""
    return [*PANEL_KEYS, *task_keys(runs)]


def panel_labels(runs: pd.DataFrame, keys: Sequence[str] | None = None) -> pd.Series:
    """'grpo · tiny' per run from the panel keys present (every key, varying or not: a panel says what it shows);
    a task knob reads 'decision=late'. ``keys`` default: ``panel_keys(runs)``."""
    keys = panel_keys(runs) if keys is None else keys
    present = [k for k in keys if k in runs]
    if not present:
        return pd.Series("", index=runs.index)
    parts = runs[present].apply(param_text)
    for k in present:
        if k.startswith("task_knobs."):
            parts[k] = k.split(".", 1)[1] + "=" + parts[k].astype(str)
    return parts.apply(lambda r: " · ".join(r), axis=1) if len(parts) else pd.Series(dtype=str)
