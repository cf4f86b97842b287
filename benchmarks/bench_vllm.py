"""Throughput of EAD sampling in vLLM, side by side in one run and one engine.

Three request kinds go through the same CPU engine (same model, same batch size, interleaved repeats):

* ``fixed``   vLLM's own temperature (0.7), no EAD keys: the baseline every sampler pays for;
* ``ead``     ``EADLogitsProcessor`` (vectorised, one tensor expression per step) with the reference
              schedule at step 0 (c = 10, so every step past the 10th divides by a per-row tau);
* ``adapter`` the same schedule wrapped per request with vLLM's ``AdapterLogitsProcessor`` (the style of the
              authors' vLLM V0 processor: one Python call per row per step that computes
              ``schedule.temperature(len(output_ids), step)`` and divides that row).

Output tokens/s is measured with 256 concurrent sequences (``max_num_seqs`` = number of prompts) and
printed with the ratios ead/fixed (target >= 0.98) and ead/adapter. End-to-end rates on a shared CPU are
noisy, so the time spent inside each processor's ``apply`` is also measured (a subclass and the adapter
time their own ``apply`` calls) and printed per step and as a share of the step time. The kinds run in
rotated order within each round and the ratios are also taken within rounds (adjacent runs share the
machine's load); the 1-minute load average is printed so a reader can judge the noise. Not part of the
test suite.

    .venv-vllm/bin/python benchmarks/bench_vllm.py [--num-seqs 256 --max-tokens 64 --repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-seqs", type=int, default=256, help="concurrent sequences (also max_num_seqs)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--model-dir", default=str(ROOT / ".cache" / "bench_vllm_model"))
    args = ap.parse_args()

    # One engine in this process, so the per-request adapter class can be passed as an object.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    sys.path.insert(0, str(ROOT))
    import torch
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    from ead_core import EADSchedule, schedule_from_dict
    from ead_core.vllm_params import sampling_params
    from ead_core.vllm_processor import EADLogitsProcessor
    from tests.vllm.tiny_model import build_tiny_llama

    apply_time: dict[str, list[float]] = {"ead": [0.0, 0], "adapter": [0.0, 0]}  # seconds, calls

    def timed(kind: str, apply: Any, *a: Any) -> Any:
        t0 = time.perf_counter()
        out = apply(*a)
        apply_time[kind][0] += time.perf_counter() - t0
        apply_time[kind][1] += 1
        return out

    class TimedEAD(EADLogitsProcessor):
        """EADLogitsProcessor timing its own apply (the guard makes this, the last registered, the live one)."""

        def apply(self, logits: torch.Tensor, ctx: Any = None) -> torch.Tensor:
            return timed("ead", super().apply, logits, ctx)

    class PerRequestEAD(AdapterLogitsProcessor):
        """The same schedule as a per-request processor on vLLM's adapter (a Python call per row per step)."""

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            return timed("adapter", super().apply, logits)

        def is_argmax_invariant(self) -> bool:
            return True  # same place in the sampler as EADLogitsProcessor

        def new_req_logits_processor(self, params: SamplingParams) -> Any:
            extra = params.extra_args or {}
            if "adapter_schedule" not in extra:
                return None
            schedule, step = schedule_from_dict(extra["adapter_schedule"]), extra["adapter_step"]
            return lambda output_ids, logits: logits / schedule.temperature(len(output_ids), step)

    model_dir = build_tiny_llama(
        args.model_dir,
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=max(1, args.hidden // 64),
        max_position_embeddings=args.prompt_len + args.max_tokens + 64,
    )
    llm = LLM(
        model=str(model_dir),
        dtype="float32",
        enforce_eager=True,
        gpu_memory_utilization=0.2,
        max_model_len=args.prompt_len + args.max_tokens + 64,
        max_num_seqs=args.num_seqs,
        max_num_batched_tokens=max(8192, args.num_seqs * args.prompt_len),
        enable_prefix_caching=False,
        seed=0,
        logprobs_mode="processed_logprobs",
        logits_processors=[TimedEAD, PerRequestEAD],
    )

    schedule = EADSchedule.preset("reference")
    common = dict(max_tokens=args.max_tokens, ignore_eos=True, logprobs=0, top_p=1.0, top_k=0)
    kinds = {
        "fixed": SamplingParams(temperature=0.7, **common),
        "ead": sampling_params(schedule, 0, **common),
        "adapter": SamplingParams(
            temperature=1.0, extra_args={"adapter_schedule": schedule.to_dict(), "adapter_step": 0}, **common
        ),
    }
    prompts = [
        TokensPrompt(prompt_token_ids=[3 + (97 * i + 13 * j) % (args.vocab - 3) for j in range(args.prompt_len)])
        for i in range(args.num_seqs)
    ]

    def run(kind: str) -> tuple[float, float, float]:
        """(output tokens/s, wall seconds per engine step, processor apply seconds per step) of one run."""
        for v in apply_time.values():
            v[:] = [0.0, 0]
        t0 = time.perf_counter()
        outs = llm.generate(prompts, kinds[kind], use_tqdm=False)
        wall = time.perf_counter() - t0
        tokens = sum(len(o.token_ids) for r in outs for o in r.outputs)
        assert tokens == args.num_seqs * args.max_tokens, tokens
        spent, calls = apply_time.get(kind, [0.0, 0])
        return tokens / wall, wall / args.max_tokens, spent / max(calls, 1)

    for kind in kinds:  # warm-up
        run(kind)
    load_before = os.getloadavg()[0]
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in kinds}
    round_ratios: dict[str, list[float]] = {"ead/fixed": [], "ead/adapter": [], "adapter/fixed": []}
    order = list(kinds)
    for r in range(args.repeats):
        rnd = {kind: run(kind) for kind in order[r % 3 :] + order[: r % 3]}  # rotated: no kind always first
        for kind, res in rnd.items():
            results[kind].append(res)
        for name in round_ratios:  # ratios within one round share the machine's load at that time
            a, b = name.split("/")
            round_ratios[name].append(rnd[a][0] / rnd[b][0])

    med = {k: statistics.median(x[0] for x in v) for k, v in results.items()}
    print(
        f"vLLM {vllm.__version__}, torch {torch.__version__}, CPU engine, {args.num_seqs} concurrent sequences x "
        f"{args.max_tokens} tokens, model: Llama hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; "
        f"{args.repeats} interleaved rounds; 1-min load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs"
    )
    for kind in kinds:
        runs = ", ".join(f"{x[0]:.0f}" for x in results[kind])
        print(f"  {kind:8s} median {med[kind]:7.0f} output tokens/s   (rounds: {runs})")
    for name, v in round_ratios.items():
        a, b = name.split("/")
        target = "   (target >= 0.98)" if name == "ead/fixed" else ""
        print(
            f"  ratio {name:14s} median over rounds {statistics.median(v):.3f}{target}   "
            f"(rounds: {', '.join(f'{x:.3f}' for x in v)}; ratio of medians {med[a] / med[b]:.3f})"
        )
    for kind in ("ead", "adapter"):
        a = statistics.median(x[2] for x in results[kind])
        st = statistics.median(x[1] for x in results[kind])
        print(f"  {kind:8s} processor apply: {a * 1e3:7.3f} ms per step = {100 * a / st:5.2f}% of its median step time")


if __name__ == "__main__":
    main()
