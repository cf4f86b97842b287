"""Expected behaviour log-probs, recomputed independently of vLLM and of the processor.

The raw logits come from a transformers forward pass of the same float32 model on prompt + output
tokens; the temperatures come from the schedule's public ``temperatures`` API (rebuilt from the request's
``extra_args`` by ``schedule_from_dict``), not from the processor's kernel arguments.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ead_core.schedule import Schedule, schedule_from_dict


def schedule_of(extra_args: dict[str, Any]) -> tuple[Schedule, float] | None:
    """(schedule, step) described by flat ``ead_`` extra_args, or None for a plain request."""
    if not extra_args or "ead_kind" not in extra_args:
        return None
    skip = {"ead_kind", "ead_step", "ead_origin"}
    params = {k[len("ead_") :]: v for k, v in extra_args.items() if k.startswith("ead_") and k not in skip}
    params = {k: float(v) if v == "inf" else v for k, v in params.items()}
    return schedule_from_dict({"kind": extra_args["ead_kind"], **params}), float(extra_args.get("ead_step", 0))


def taus(extra_args: dict[str, Any], n: int, first_position: int = 0) -> np.ndarray:
    """tau_t for response positions first_position .. first_position + n - 1 (ones for plain requests)."""
    parsed = schedule_of(extra_args)
    if parsed is None:
        return np.ones(n)
    schedule, step = parsed
    return schedule.temperatures(np.arange(first_position, first_position + n, dtype=np.float64), step)


def load_model(model_dir: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def raw_logits(model: Any, prompt: list[int], output: list[int]) -> np.ndarray:
    """float64 logits that produced each output token: rows len(prompt)-1 .. len(prompt)+len(output)-2."""
    import torch

    ids = torch.tensor([list(prompt) + list(output)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    start = len(prompt) - 1
    return logits[start : start + len(output)].numpy()


def behaviour_logprobs(
    logits: np.ndarray,
    output: list[int],
    tau: np.ndarray,
    temperature: float = 1.0,
    top_k: int = 0,
) -> np.ndarray:
    """log softmax(z_t / (temperature * tau_t))[y_t], with vLLM's top-k truncation when top_k > 0."""
    z = logits / (temperature * np.asarray(tau, dtype=np.float64)[:, None])
    if top_k and top_k > 0:
        kth = np.sort(z, axis=1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return logp[np.arange(len(output)), np.asarray(output)]


def max_error(model: Any, record: dict[str, Any], *, first_position: int = 0, tau_power: float = 1.0) -> float:
    """Largest |vLLM log-prob - expected| over all outputs of a request record from engine_scenarios.py.

    ``tau_power`` lets a test check competing hypotheses: 0 (no EAD) or 2 (EAD applied twice).
    """
    worst = 0.0
    for out in record["outputs"]:
        toks = out["token_ids"]
        z = raw_logits(model, record["prompt_token_ids"], toks)
        tau = taus(record["extra_args"], len(toks), first_position) ** tau_power
        expected = behaviour_logprobs(z, toks, tau, record["temperature"], record.get("top_k") or 0)
        worst = max(worst, float(np.max(np.abs(np.asarray(out["logprobs"]) - expected))))
    return worst
