"""Run the vLLM engine scenarios behind tests/vllm/test_engine.py and write their raw results as JSON.

The engine spawns threads and (in multiprocessing mode) subprocesses, so it runs here, in a script
started by the test fixture, rather than inside pytest. The tests then recompute every expected
log-prob with transformers and assert on this file. Nothing is mocked: these are real vLLM engines
on the CPU build, each registering ``EADLogitsProcessor`` in a different way.

    python tests/vllm/engine_scenarios.py --model DIR --out results.json

Engines (all in this process, one after the other; VLLM_ENABLE_V1_MULTIPROCESSING=0 keeps the engine
in-process so one import of vLLM serves all of them):

* ``main``: entry point + engine argument as an FQCN string (the guard must keep EAD single), small
  ``max_num_seqs`` (requests are added, removed, moved and swapped all the time), a KV cache too small for
  the batch (preemption and recompute), prefix caching on, ``logprobs_mode="processed_logprobs"``.
  Scenarios: a mixed batch, n = 16, resubmission with ``ead_origin``, greedy requests, invalid requests.
* ``ep_and_class``: entry point + engine argument as a class object.
* ``ep_only``: the entry point alone.
* ``arg_only``: the engine argument alone (entry-point plugins switched off for this engine).
* ``specdec``: speculative decoding with the processor: must refuse to start.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from typing import Any

MAX_TOKENS = 48
ENGINE_KW: dict[str, Any] = dict(
    dtype="float32",
    enforce_eager=True,
    gpu_memory_utilization=0.2,
    max_model_len=256,
    seed=0,
    logprobs_mode="processed_logprobs",
)


def _word_ids(n: int, start: int) -> list[int]:
    """A prompt of n token ids from the tiny vocabulary (ids 3.. are ordinary words)."""
    return [3 + (start + 7 * i) % 400 for i in range(n)]


def _record(label: str, prompt: list[int], sp: Any, result: Any) -> dict[str, Any]:
    return {
        "label": label,
        "prompt_token_ids": list(result.prompt_token_ids or prompt),
        "extra_args": dict(sp.extra_args or {}),
        "temperature": sp.temperature,
        "top_k": sp.top_k,
        "outputs": [
            {
                "token_ids": list(o.token_ids),
                "logprobs": [lp[tok].logprob for tok, lp in zip(o.token_ids, o.logprobs or [], strict=False)],
            }
            for o in result.outputs
        ],
    }


def _metrics(llm: Any) -> dict[str, float]:
    wanted = {"vllm:num_preemptions": "preemptions", "vllm:prefix_cache_hits": "prefix_cache_hits"}
    return {wanted[m.name]: float(m.value) for m in llm.get_metrics() if m.name in wanted}


def _processors() -> list[Any]:
    """Every EADLogitsProcessor object in this process.

    vLLM gc.freeze()s its start-up objects, which hides them from gc.get_objects() until unfrozen. Weak proxies
    are passed over by their type: isinstance() on a dead one raises ReferenceError (vLLM 0.24 leaves some).
    """
    import gc
    import weakref

    from ead_core.vllm_processor import EADLogitsProcessor

    gc.unfreeze()
    proxies = (weakref.ProxyType, weakref.CallableProxyType)
    return [o for o in gc.get_objects() if type(o) not in proxies and isinstance(o, EADLogitsProcessor)]


def _instances_since(before: set[int]) -> dict[str, int]:
    """How many EADLogitsProcessor instances the last engine built, and how many of them are live."""
    new = [o for o in _processors() if id(o) not in before]
    return {"instances": len(new), "live": sum(o.is_live for o in new)}


def _existing_instances() -> set[int]:
    return {id(o) for o in _processors()}


def _generate(llm: Any, requests: list[tuple[str, list[int], Any]]) -> list[dict[str, Any]]:
    from vllm.inputs import TokensPrompt

    results = llm.generate([TokensPrompt(prompt_token_ids=p) for _, p, _ in requests], [sp for *_, sp in requests])
    return [_record(label, p, sp, r) for (label, p, sp), r in zip(requests, results, strict=True)]


def main_engine(model: str, out: dict[str, Any]) -> None:
    """Everything that needs a busy engine: mixed batch, n = 16, resume, greedy, invalid requests."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from ead_core import EADSchedule, FixedSchedule
    from ead_core.vllm_params import sampling_params
    from ead_core.vllm_processor import FQCN

    t0 = time.perf_counter()
    before = _existing_instances()
    llm = LLM(
        model=model,
        logits_processors=[FQCN],
        max_num_seqs=6,
        block_size=32,
        num_gpu_blocks_override=10,
        enable_prefix_caching=True,
        disable_log_stats=False,
        **ENGINE_KW,
    )
    out["timing"]["main_start_s"] = time.perf_counter() - t0
    out["instances"] = {"main": _instances_since(before)}

    a = EADSchedule(tau_max=1.2, tau_min=0.3, d0=20, c=4)
    b = EADSchedule.preset("paper", c=6, tau_min=0.5)
    r = EADSchedule.preset("reference", d0=2, c=3)
    kw = dict(max_tokens=MAX_TOKENS, ignore_eos=True, n=2)
    shared = _word_ids(40, 1)  # long shared prompt: full KV blocks for prefix-cache hits
    mixed: list[tuple[str, list[int], Any]] = [
        ("ead_a_s0", _word_ids(5, 2), sampling_params(a, 0, seed=1, **kw)),
        ("ead_a_s5", shared, sampling_params(a, 5, seed=2, **kw)),
        ("ead_a_s50", _word_ids(23, 3), sampling_params(a, 50, seed=3, **kw)),
        ("ead_a_s5_T0.8", shared, sampling_params(a, 5, seed=4, temperature=0.8, **kw)),
        ("ead_b_s2", _word_ids(11, 4), sampling_params(b, 2, seed=5, **kw)),
        ("ead_ref_s1", shared, sampling_params(r, 1, seed=6, **kw)),
        ("ead_a_s0_topk8", _word_ids(17, 5), sampling_params(a, 0, seed=7, top_k=8, **kw)),
        ("fixed_0.5", shared, sampling_params(FixedSchedule(0.5), 0, seed=8, **kw)),
        ("fixed_1.7", _word_ids(3, 6), sampling_params(FixedSchedule(1.7), 0, seed=9, **kw)),
        ("plain_T1", shared, SamplingParams(temperature=1.0, logprobs=0, seed=10, **kw)),
        ("plain_T0.7", _word_ids(29, 7), SamplingParams(temperature=0.7, logprobs=0, seed=11, **kw)),
    ]
    t0 = time.perf_counter()
    out["mixed"] = _generate(llm, mixed)
    out["timing"]["mixed_s"] = time.perf_counter() - t0
    out["metrics_after_mixed"] = _metrics(llm)

    t0 = time.perf_counter()
    out["n16"] = _generate(llm, [("ead_a_s5_n16", shared, sampling_params(a, 5, seed=12, n=16, max_tokens=32))])[0]
    out["timing"]["n16_s"] = time.perf_counter() - t0

    # Resubmission as prompt + partial output (what verl's async modes do after an abort).
    prompt = _word_ids(9, 8)
    first = _generate(llm, [("resume_part1", prompt, sampling_params(a, 5, seed=13, max_tokens=12, ignore_eos=True))])
    partial = first[0]["outputs"][0]["token_ids"]
    second = _generate(
        llm,
        [
            (
                "resume_part2",
                prompt + partial,
                sampling_params(a, 5, origin=len(prompt), seed=14, max_tokens=24, ignore_eos=True),
            )
        ],
    )
    out["resume"] = {"part1": first[0], "part2": second[0], "origin": len(prompt)}

    greedy_prompt = _word_ids(13, 9)
    out["greedy"] = _generate(
        llm,
        [
            ("greedy_plain", greedy_prompt, SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)),
            ("greedy_ead", greedy_prompt, sampling_params(a, 5, temperature=0.0, max_tokens=24, ignore_eos=True)),
        ],
    )

    bad_requests = {
        "tau_min_negative": dict(ead_kind="ead", ead_tau_max=1.2, ead_tau_min=-0.1, ead_d0=25, ead_step=0),
        "tau_max_below_min": dict(ead_kind="ead", ead_tau_max=0.2, ead_tau_min=0.5, ead_d0=25, ead_step=0),
        "missing_step": dict(ead_kind="ead", ead_tau_max=1.2, ead_tau_min=0.1, ead_d0=25),
        "unknown_key": dict(ead_kind="ead", ead_tau_max=1.2, ead_tau_min=0.1, ead_d0=25, ead_step=0, ead_d=500),
        "bad_kind": dict(ead_kind="cosine", ead_tau=1.0),
        "fixed_zero": dict(ead_kind="fixed", ead_tau=0.0),
        "min_p": "min_p",
    }
    out["invalid"] = {}
    for name, extra in bad_requests.items():
        if extra == "min_p":
            sp = SamplingParams(max_tokens=4, min_p=0.1, extra_args={"ead_kind": "fixed", "ead_tau": 0.5})
        else:
            sp = SamplingParams(max_tokens=4, extra_args=extra)
        try:
            llm.generate([TokensPrompt(prompt_token_ids=_word_ids(4, 10))], sp)
            out["invalid"][name] = {"raised": False}
        except Exception as e:  # noqa: BLE001 - recorded and asserted on by the tests
            out["invalid"][name] = {"raised": True, "type": type(e).__name__, "message": str(e)}

    # The engine still serves after the rejected requests.
    out["after_invalid"] = _generate(llm, [("after_invalid", _word_ids(4, 10), sampling_params(a, 0, max_tokens=8))])
    out["metrics"] = _metrics(llm)
    del llm


def registration_engine(model: str, name: str, out: dict[str, Any]) -> None:
    """One EAD request on an engine with the processor registered in one particular way."""
    import gc

    import vllm.v1.sample.logits_processor as v1lp
    from vllm import LLM

    from ead_core import EADSchedule
    from ead_core.vllm_params import sampling_params
    from ead_core.vllm_processor import EADLogitsProcessor

    processors: dict[str, list[Any] | None] = {
        "ep_and_class": [EADLogitsProcessor],
        "ep_only": None,
        "arg_only": [EADLogitsProcessor],
    }
    load_plugins = v1lp._load_logitsprocs_plugins
    if name == "arg_only":  # an environment without the entry point (vLLM loads plugins through this)
        v1lp._load_logitsprocs_plugins = lambda: []
    t0 = time.perf_counter()
    try:
        before = _existing_instances()
        llm = LLM(model=model, logits_processors=processors[name], **ENGINE_KW)
        out["timing"][f"{name}_start_s"] = time.perf_counter() - t0
        out.setdefault("instances", {})[name] = _instances_since(before)
        s = EADSchedule(tau_max=1.2, tau_min=0.3, d0=20, c=4)
        out["registration"][name] = _generate(
            llm, [(name, _word_ids(7, 11), sampling_params(s, 3, seed=15, max_tokens=32, ignore_eos=True))]
        )[0]
        del llm
    finally:
        v1lp._load_logitsprocs_plugins = load_plugins
        gc.collect()


def specdec_engine(model: str, out: dict[str, Any]) -> None:
    """Speculative decoding with the processor registered: the engine must refuse to start."""
    from vllm import LLM

    from ead_core.vllm_processor import FQCN

    try:
        llm = LLM(
            model=model,
            logits_processors=[FQCN],
            speculative_config={"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_max": 3},
            **ENGINE_KW,
        )
        out["specdec"] = {"raised": False}
        del llm
    except Exception as e:  # noqa: BLE001 - recorded and asserted on by the tests
        chain, err = [], e
        while err is not None:
            chain.append(f"{type(err).__name__}: {err}")
            err = err.__cause__ or err.__context__
        out["specdec"] = {"raised": True, "messages": chain}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--engines", default="main,ep_and_class,ep_only,arg_only,specdec")
    args = ap.parse_args()
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0":
        raise SystemExit("run with VLLM_ENABLE_V1_MULTIPROCESSING=0 (engines share this process)")

    out: dict[str, Any] = {"timing": {}, "registration": {}, "errors": {}}
    t_all = time.perf_counter()
    for name in args.engines.split(","):
        try:
            if name == "main":
                main_engine(args.model, out)
            elif name == "specdec":
                specdec_engine(args.model, out)
            else:
                registration_engine(args.model, name, out)
        except Exception:  # noqa: BLE001 - one failing engine must not hide the others' results
            out["errors"][name] = traceback.format_exc()
        with open(args.out, "w") as f:  # write after each engine: partial results survive a crash
            json.dump(out, f)
    out["timing"]["total_s"] = time.perf_counter() - t_all
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
