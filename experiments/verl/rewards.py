"""The verl custom reward function: binary math correctness by Math-Verify or by a boxed-answer match.

verl loads it with ``reward.custom_reward_function.path=pkg://experiments.verl.rewards`` and
``name=compute_score``; ``reward_kwargs.method`` selects the verifier. Both verifiers are verl's own:

* ``math_verify``: ``verl.utils.reward_score.math_verify.compute_score`` (Hugging Face Math-Verify in a
  subprocess pool with a timeout), the reward the paper states;
* ``boxed``: ``verl.utils.reward_score.math_reward.compute_score`` (last ``\\boxed{}`` of the response,
  string-normalised equality), the reward of the authors' released code.

The result is a dict, which verl's reward managers turn into ``reward_extra_info``: ``score`` (the reward),
``acc`` (the same 0/1, which validation metrics and DAPO's group filter read), ``pred`` (the last boxed
answer, for verl's majority-vote metrics) and, when the EAD agent loop recorded them, the sampler and the
mean temperature of the response.
"""

from __future__ import annotations

import functools
from typing import Any

METHODS = ("math_verify", "boxed")
_PASSED = ("ead_tau_mean",)  # numeric per-sample values from the agent loop, averaged by verl's validation


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox``) in ``text``, via verl's own parser."""
    from verl.utils.reward_score.math_reward import last_boxed_only_string, remove_boxed

    boxed = last_boxed_only_string(text)
    if boxed is None:
        return None
    try:
        return remove_boxed(boxed)
    except (AssertionError, IndexError):
        return None


@functools.cache
def _start_math_verify_worker() -> None:
    """Start verl's Math-Verify worker process and wait for it, once per process.

    verl's ``compute_score`` scores in a spawned worker with a 30 s timeout that also covers the worker's start-up
    (a fresh interpreter importing verl, torch and sympy); on a busy machine that alone passes 30 s and the first
    answer is scored 0 as a timeout. Paying the start-up here leaves the timeout to bound the verification only.
    """
    from verl.utils.reward_score import math_verify

    math_verify._get_pool().submit(math_verify._verify_in_subprocess, "\\boxed{1}", "1").result(timeout=600)


def verify(solution_str: str, ground_truth: str, method: str = "math_verify") -> float:
    """1.0 if the response's final answer equals ``ground_truth`` under ``method``, else 0.0."""
    if method == "math_verify":
        from verl.utils.reward_score import math_verify

        _start_math_verify_worker()
        return float(math_verify.compute_score(solution_str, ground_truth))
    if method == "boxed":
        from verl.utils.reward_score import math_reward

        return float(math_reward.compute_score(solution_str, ground_truth))
    raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: dict[str, Any] | None = None,
    method: str = "math_verify",
    **kwargs: Any,
) -> dict[str, Any]:
    """verl's custom-reward signature; returns ``{"score", "acc", "pred", ...}`` (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"reward_kwargs.method must be one of {list(METHODS)}, got {method!r}")
    score = verify(solution_str, str(ground_truth), method)
    result: dict[str, Any] = {"score": score, "acc": score, "pred": extract_boxed(solution_str)}
    info = extra_info or {}
    for key in _PASSED:
        value = info.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            result[key] = float(value)
    return result
