"""Throughput of EAD sampling in vLLM, side by side in one run and one engine.

Four request kinds go through the same CPU engine (same model, 256 concurrent sequences, interleaved):

* ``fixed``      vLLM's own temperature, no EAD keys: the baseline every sampler pays for;
* ``ead``        ``EADLogitsProcessor`` (vectorised: one tensor expression per step) with the reference
                 schedule at step 0 (c = 10: from the 10th token on, every row is divided by its own tau);
* ``ead_fixed``  ``FixedSchedule`` through ``EADLogitsProcessor``: the same distribution as ``fixed``, so
                 ``ead_fixed / fixed`` is the processor's cost alone;
* ``adapter``    the reference schedule wrapped per request with vLLM's ``AdapterLogitsProcessor`` (the style
                 of the authors' vLLM V0 processor: one Python call per row per step that computes
                 ``schedule.temperature(len(output_ids), step)`` and divides that row).

vLLM's CPU sampler (a fused Gumbel-max kernel) costs more the flatter the distribution, so a baseline at a
colder temperature than the schedule would flatter it: ``fixed`` and ``ead_fixed`` therefore sample at
the schedule's mean temperature over the generated positions.

Printed: output tokens/s per kind, the same per CPU-second of the engine thread (the engine runs in this
process's main thread, so time spent waiting for a core does not count), the ratios (taken within each
round, where adjacent runs share the machine's load, and as ratios of medians), and the time each
processor spends in its own ``apply`` per step. The 1-minute load average is printed so that a reader can
judge the noise on a shared machine. Not part of the test suite.

    .venv-vllm/bin/python benchmarks/bench_vllm.py [--num-seqs 256 --max-tokens 48 --repeats 7]
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
RATIOS = ("ead/fixed", "ead_fixed/fixed", "ead/adapter", "adapter/fixed")


def tiny_engine(args: argparse.Namespace, model_dir: Path, logits_processors: list[Any]) -> Any:
    """A CPU vLLM engine on a tiny random Llama shaped by ``args`` (vocab, hidden, layers, prompt and response
    lengths, concurrent sequences), with ``logits_processors`` registered: the engine every vLLM benchmark times."""
    from vllm import LLM

    from tests.vllm.tiny_model import build_tiny_llama

    max_len = args.prompt_len + args.max_tokens + 64
    built = build_tiny_llama(
        model_dir,
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=max(1, args.hidden // 64),
        max_position_embeddings=max_len,
    )
    return LLM(
        model=str(built),
        dtype="float32",
        enforce_eager=True,
        gpu_memory_utilization=0.2,
        max_model_len=max_len,
        max_num_seqs=args.num_seqs,
        max_num_batched_tokens=max(8192, args.num_seqs * args.prompt_len),
        enable_prefix_caching=False,
        seed=0,
        logprobs_mode="processed_logprobs",
        logits_processors=logits_processors,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-seqs", type=int, default=256, help="concurrent sequences (also max_num_seqs)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--model-dir", default=str(ROOT / ".cache" / "bench_vllm_model"))
    args = ap.parse_args()

    # One engine in this process, so the per-request adapter class can be passed as an object. One compute
    # thread: on a shared machine a second OpenMP thread that loses its core makes the first spin at every
    # barrier, which inflates both wall and CPU time by factors; with one thread both stay comparable.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch
    import vllm
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    from ead_core import EADSchedule, FixedSchedule, schedule_from_dict
    from ead_core.vllm_params import sampling_params
    from ead_core.vllm_processor import EADLogitsProcessor

    apply_time: dict[tuple[str, str], list[float]] = {}  # (request kind, processor) -> [seconds, calls]
    active = {"kind": ""}

    def timed(processor: str, apply: Any, *a: Any) -> Any:
        t0 = time.perf_counter()
        out = apply(*a)
        acc = apply_time.setdefault((active["kind"], processor), [0.0, 0])
        acc[0] += time.perf_counter() - t0
        acc[1] += 1
        return out

    class TimedEAD(EADLogitsProcessor):
        """EADLogitsProcessor timing its own apply (the guard makes this, registered last, the live one)."""

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

    llm = tiny_engine(args, Path(args.model_dir), [TimedEAD, PerRequestEAD])

    schedule = EADSchedule.preset("reference")
    mean_tau = float(np.mean(schedule.temperatures(np.arange(args.max_tokens, dtype=np.float64), 0)))
    common = dict(max_tokens=args.max_tokens, ignore_eos=True, logprobs=0, top_p=1.0, top_k=0)
    kinds = {
        "fixed": SamplingParams(temperature=mean_tau, **common),
        "ead": sampling_params(schedule, 0, **common),
        "ead_fixed": sampling_params(FixedSchedule(mean_tau), **common),
        "adapter": SamplingParams(
            temperature=1.0, extra_args={"adapter_schedule": schedule.to_dict(), "adapter_step": 0}, **common
        ),
    }
    prompts = [
        TokensPrompt(prompt_token_ids=[3 + (97 * i + 13 * j) % (args.vocab - 3) for j in range(args.prompt_len)])
        for i in range(args.num_seqs)
    ]

    def run(kind: str) -> tuple[float, float, float, float]:
        """Tokens per wall second, tokens per engine-thread CPU second, wall s per step, apply s per step."""
        active["kind"] = kind
        processor = "adapter" if kind == "adapter" else "ead"
        apply_time.pop((kind, processor), None)
        t0, c0 = time.perf_counter(), time.thread_time()
        outs = llm.generate(prompts, kinds[kind], use_tqdm=False)
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        tokens = sum(len(o.token_ids) for r in outs for o in r.outputs)
        assert tokens == args.num_seqs * args.max_tokens, tokens
        spent, calls = apply_time.get((kind, processor), [0.0, 0])
        return tokens / wall, tokens / cpu, wall / args.max_tokens, spent / max(calls, 1)

    for kind in kinds:  # warm-up
        run(kind)
    load_before = os.getloadavg()[0]
    results: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in kinds}
    per_round: dict[int, dict[str, list[float]]] = {i: {name: [] for name in RATIOS} for i in (0, 1)}
    order = list(kinds)
    for r in range(args.repeats):
        shift = r % len(order)
        rnd = {kind: run(kind) for kind in order[shift:] + order[:shift]}  # rotated: no kind always first
        for kind, res in rnd.items():
            results[kind].append(res)
        for i in (0, 1):
            for name in RATIOS:
                a, b = name.split("/")
                per_round[i][name].append(rnd[a][i] / rnd[b][i])

    print(
        f"vLLM {vllm.__version__}, torch {torch.__version__}, CPU engine (V1 runner), {args.num_seqs} concurrent "
        f"sequences x {args.max_tokens} tokens, Llama hidden {args.hidden}, {args.layers} layers, vocab "
        f"{args.vocab}; reference EAD schedule at step 0, fixed temperatures {mean_tau:.4f} (its mean tau); "
        f"{args.repeats} interleaved rounds; 1-min load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs"
    )
    for i, unit in ((0, "output tokens/s"), (1, "tokens per engine CPU-s")):
        print(f"  {unit}:")
        med = {k: statistics.median(x[i] for x in v) for k, v in results.items()}
        for kind in kinds:
            print(
                f"    {kind:10s} median {med[kind]:7.0f}   (rounds: {', '.join(f'{x[i]:.0f}' for x in results[kind])})"
            )
        for name in RATIOS:
            a, b = name.split("/")
            target = "  target >= 0.98" if name in ("ead/fixed", "ead_fixed/fixed") else ""
            rounds = ", ".join(f"{x:.3f}" for x in per_round[i][name])
            print(
                f"    ratio {name:16s} {statistics.median(per_round[i][name]):.3f} (median over rounds; ratio of "
                f"medians {med[a] / med[b]:.3f}){target}   rounds: {rounds}"
            )
    for kind in ("ead", "ead_fixed", "adapter"):
        a = statistics.median(x[3] for x in results[kind])
        st = statistics.median(x[2] for x in results[kind])
        print(f"  {kind:10s} processor apply {a * 1e3:7.3f} ms per step = {100 * a / st:5.2f}% of its median step time")


if __name__ == "__main__":
    main()
