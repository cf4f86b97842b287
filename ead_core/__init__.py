"""ead_core: the dependency-light core of ead-harness (schedules, TIS, metrics).

Importing it pulls in numpy and torch only; the vLLM and Hugging Face adapters live in submodules
that import their frameworks themselves.
"""

from ead_core.metrics import (
    best_at_k,
    bootstrap_best_worst_at_k,
    correctness_metrics,
    cumulative_entropy,
    entropy_by_position,
    majority_at_k_bootstrap,
    majority_at_n,
    mean_at_k,
    pass_at_k,
    token_entropy,
    worst_at_k,
)
from ead_core.schedule import (
    EADSchedule,
    FixedSchedule,
    Schedule,
    anneal_temperature,
    condition_label,
    schedule_from_dict,
)
from ead_core.tis import truncated_is_weights

__all__ = [
    "EADSchedule",
    "FixedSchedule",
    "Schedule",
    "anneal_temperature",
    "best_at_k",
    "bootstrap_best_worst_at_k",
    "condition_label",
    "correctness_metrics",
    "cumulative_entropy",
    "entropy_by_position",
    "majority_at_k_bootstrap",
    "majority_at_n",
    "mean_at_k",
    "pass_at_k",
    "schedule_from_dict",
    "token_entropy",
    "truncated_is_weights",
    "worst_at_k",
]
__version__ = "0.1.0"
