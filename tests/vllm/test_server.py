"""`vllm serve <tiny model> --logits-processors ead_core.vllm_processor:EADLogitsProcessor` on 127.0.0.1.

The schedule travels in the OpenAI request's ``vllm_xargs`` (flat keys); the server runs in vLLM's
default multiprocessing mode, so the processor is imported by name in the worker process and also
loaded through the entry point (the guard keeps it single). A bad schedule must come back as HTTP 400
naming the field.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from ead_core import EADSchedule, FixedSchedule
from ead_core.vllm_params import schedule_to_extra_args
from tests.vllm.reference import max_error

pytestmark = pytest.mark.vllm

TOL = 1e-4
FAR = 1e-2
PROMPT = [3 + (5 * i) % 300 for i in range(9)]


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _completion(server_url: str, model: str, xargs: dict[str, Any] | None, seed: int) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": 32,
        "temperature": 1.0,
        "logprobs": 0,
        "ignore_eos": True,
        "seed": seed,
        "return_tokens_as_token_ids": True,
    }
    if xargs is not None:
        body["vllm_xargs"] = xargs
    return _post(f"{server_url}/v1/completions", body)


def _record(resp: dict[str, Any], xargs: dict[str, Any] | None) -> dict[str, Any]:
    lp = resp["choices"][0]["logprobs"]
    tokens = [int(t.split(":", 1)[1]) for t in lp["tokens"]]
    return {
        "prompt_token_ids": PROMPT,
        "extra_args": xargs or {},
        "temperature": 1.0,
        "top_k": 0,
        "outputs": [{"token_ids": tokens, "logprobs": lp["token_logprobs"]}],
    }


@pytest.mark.parametrize(
    "schedule",
    [EADSchedule(tau_max=1.2, tau_min=0.3, d0=20, c=4), FixedSchedule(0.6)],
    ids=["ead", "fixed"],
)
def test_completion_with_schedule_in_vllm_xargs(
    server_url: str, tiny_model_dir: str, hf_model: Any, schedule: Any
) -> None:
    xargs = schedule_to_extra_args(schedule, step=4)
    status, resp = _completion(server_url, tiny_model_dir, xargs, seed=1)
    assert status == 200, resp
    rec = _record(resp, xargs)
    assert len(rec["outputs"][0]["token_ids"]) == 32
    assert max_error(hf_model, rec) < TOL
    assert max_error(hf_model, rec, tau_power=0.0) > FAR  # EAD was applied
    assert max_error(hf_model, rec, tau_power=2.0) > FAR  # exactly once (entry point + --logits-processors)


def test_plain_completion_is_untouched(server_url: str, tiny_model_dir: str, hf_model: Any) -> None:
    status, resp = _completion(server_url, tiny_model_dir, None, seed=2)
    assert status == 200, resp
    assert max_error(hf_model, _record(resp, None)) < TOL


@pytest.mark.parametrize(
    ("xargs", "field"),
    [
        ({"ead_kind": "ead", "ead_tau_max": 1.2, "ead_tau_min": -1.0, "ead_d0": 25, "ead_step": 0}, "ead_tau_min"),
        ({"ead_kind": "ead", "ead_tau_max": 1.2, "ead_tau_min": 0.1, "ead_d0": 25}, "ead_step"),
        ({"ead_kind": "fixed", "ead_tau": "hot"}, "ead_tau"),
    ],
    ids=["tau_min_negative", "missing_step", "not_a_number"],
)
def test_bad_schedule_is_http_400_naming_the_field(
    server_url: str, tiny_model_dir: str, xargs: dict[str, Any], field: str
) -> None:
    status, resp = _completion(server_url, tiny_model_dir, xargs, seed=3)
    assert status == 400, resp
    assert field in json.dumps(resp), resp
