"""Cost of every schedule kind against a fixed temperature, side by side in one run (not a timed test).

Two samplers, one subcommand each (each needs its own environment):

* ``local`` (.venv): the local sampler ``experiments.local.rollout.sample`` on the tiny policy, rows x tokens
  per call, conditions interleaved in rotated order round after round; prints the median time per call, each
  kind's ratio to ``fixed`` (median of the per-round ratios, where adjacent calls share the machine's load, and
  the ratio of medians). Targets: position-only kinds <= 1.02, entropy_target <= 1.10.
* ``vllm`` (.venv-vllm): one CPU engine (V1 runner), all kinds as requests through ``EADLogitsProcessor``
  against vLLM's own temperature; prints tokens/s ratios and the processor's own ``apply`` time per step as a
  share of the step (the part a schedule costs, less exposed to load noise than the throughput).

The 1-minute load average (``uptime``) is printed before and after: on a shared machine, read the ratios with it.

    .venv/bin/python benchmarks/bench_schedules.py local [--rows 128 --tokens 16 --repeats 9]
    .venv-vllm/bin/python benchmarks/bench_schedules.py vllm [--num-seqs 64 --max-tokens 32 --vocab 8192]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = {"entropy_target": 1.10}  # others: 1.02


def schedules(c: int, d0: float, h_max: float, h_min: float) -> dict[str, Any]:
    """One schedule per kind at the sampler's scale (c, d0); the entropy target is chosen so that most tokens
    need the search (the costly case: a token already above the target costs two entropy evaluations only)."""
    from ead_core.schedule import (
        CosineSchedule,
        EADSchedule,
        EntropyTargetSchedule,
        FixedMatchedSchedule,
        FixedSchedule,
        LinearSchedule,
        ReverseSchedule,
    )

    return {
        "fixed": FixedSchedule(1.0),
        "ead": EADSchedule(tau_max=1.2, tau_min=0.1, d0=d0, c=c, d_growth=0.2),
        "reverse": ReverseSchedule(tau_max=1.2, tau_min=0.1, d0=d0, c=c, d_growth=0.2),
        "linear": LinearSchedule(tau_max=1.2, tau_min=0.1, d0=d0, c=c, d_growth=0.2),
        "cosine": CosineSchedule(tau_max=1.2, tau_min=0.1, d0=d0, c=c, d_growth=0.2),
        "fixed_matched": FixedMatchedSchedule(tau=0.9, target_entropy=1.0),
        "entropy_target": EntropyTargetSchedule(h_max=h_max, h_min=h_min, d0=d0, c=c, d_growth=0.2, tau_hi=3.0),
    }


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def interleaved(conds: dict[str, Callable[[], float]], repeats: int) -> tuple[dict[str, list[float]], list[dict]]:
    """Run every condition once per round in rotated order; return the values and the rounds."""
    for fn in conds.values():
        fn()  # warm-up
    values: dict[str, list[float]] = {k: [] for k in conds}
    rounds = []
    order = list(conds)
    for r in range(repeats):
        shift = r % len(order)
        rnd = {k: conds[k]() for k in order[shift:] + order[:shift]}
        for k, v in rnd.items():
            values[k].append(v)
        rounds.append(rnd)
    return values, rounds


def report(values: dict[str, list[float]], rounds: list[dict], base: str, unit: str, lower_is_better: bool) -> None:
    med = {k: statistics.median(v) for k, v in values.items()}
    for k, v in values.items():
        print(f"  {k:16s} median {med[k]:10.4g} {unit}   rounds: {', '.join(f'{x:.4g}' for x in v)}")
    print(f"  ratios to {base} (> 1: slower; target {TARGET.get('entropy_target')} for entropy_target, 1.02 others):")
    for k in values:
        if k == base:
            continue
        per_round = [(r[k] / r[base]) if lower_is_better else (r[base] / r[k]) for r in rounds]
        of_medians = med[k] / med[base] if lower_is_better else med[base] / med[k]
        target = TARGET.get(k, 1.02)
        verdict = "ok" if statistics.median(per_round) <= target else "OVER"
        print(
            f"    {k:16s} {statistics.median(per_round):.3f} (median of per-round ratios; ratio of medians "
            f"{of_medians:.3f})  target <= {target:.2f}: {verdict}"
        )


def bench_local(args: argparse.Namespace) -> None:
    import torch

    from experiments.local.policy import build_policy, never_end
    from experiments.local.rollout import sample
    from experiments.local.tasks import make_task

    torch.set_num_threads(args.threads)
    model, tok = build_policy(args.size, seed=0)
    model.eval()
    # every call decodes exactly rows x tokens tokens: EOS is never sampled (the sampler ends a row at the tokenizer's
    # EOS and drops it from the batch, so without this a colder schedule decoded more tokens - other work, not cost)
    never_end(model, tok.eos_token_id)
    prompts = [p.prompt for p in make_task("countdown").problems("train", args.rows, seed=0)]
    kinds = schedules(c=1, d0=8.0, h_max=3.2, h_min=3.2)  # the random policy is near uniform (log 25 = 3.22)
    raised: list[float] = []

    inside: dict[str, list[float]] = {k: [] for k in kinds}

    class Timed:
        """The schedule, timing the calls the sampler makes to it (the whole cost a schedule adds)."""

        def __init__(self, kind: str, schedule: Any) -> None:
            self.kind, self.schedule, self.spent = kind, schedule, 0.0

        def __getattr__(self, name: str) -> Any:
            attr = getattr(self.schedule, name)
            if name not in ("temperatures", "temperatures_for_logits"):
                return attr

            def timed(*a: Any, **kw: Any) -> Any:
                t0 = time.process_time()
                out = attr(*a, **kw)
                self.spent += time.process_time() - t0
                return out

            return timed

    def call(kind: str) -> Callable[[], float]:
        def run() -> float:
            g = torch.Generator().manual_seed(0)
            timed = Timed(kind, kinds[kind])
            t0 = time.process_time()  # CPU time of this (single-threaded) process: waiting for a core does not count
            r = sample(model, tok, prompts, timed, 3, args.tokens, g)
            cpu = time.process_time() - t0
            assert r.response_ids.shape[1] == args.tokens  # no early stop: every kind decodes the same steps
            inside[kind].append(timed.spent / cpu)
            if kind == "entropy_target":
                raised.append(float((r.row_temperatures > 1.0).float().mean()))
            return cpu

        return run

    print(f"before: {load()}")
    values, rounds = interleaved({k: call(k) for k in kinds}, args.repeats)
    print(
        f"local sampler: torch {torch.__version__}, {args.threads} thread(s), policy {args.size} (vocab {len(tok)}), "
        f"{args.rows} rows x {args.tokens} tokens per call, {args.repeats} interleaved rounds, CPU seconds per call"
    )
    report(values, rounds, "fixed", "CPU s/call", lower_is_better=True)
    print("  share of the call spent in the schedule (temperatures / temperatures_for_logits), median:")
    for k, v in inside.items():
        print(f"    {k:16s} {100 * statistics.median(v):6.2f}%")
    print(f"  entropy_target raised the temperature of {100 * statistics.median(raised):.0f}% of the tokens")
    print(f"after: {load()}")


def bench_vllm(args: argparse.Namespace) -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # see bench_vllm.py: one compute thread on a shared machine
    import torch
    import vllm
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from benchmarks.bench_vllm import tiny_engine
    from ead_core.vllm_params import sampling_params
    from ead_core.vllm_processor import EADLogitsProcessor

    spent = {"s": 0.0, "n": 0}

    class TimedEAD(EADLogitsProcessor):
        """EADLogitsProcessor timing its own apply (registered last: the live instance)."""

        def apply(self, logits: torch.Tensor, ctx: Any = None) -> torch.Tensor:
            t0 = time.perf_counter()
            out = super().apply(logits, ctx)
            spent["s"] += time.perf_counter() - t0
            spent["n"] += 1
            return out

    llm = tiny_engine(args, ROOT / ".cache" / "bench_vllm_model", [TimedEAD])
    common = dict(max_tokens=args.max_tokens, ignore_eos=True, logprobs=0, top_p=1.0, top_k=0)
    kinds = schedules(c=10, d0=25.0, h_max=3.0, h_min=1.0)  # the tiny Llama's logits are peaked (scaled x40)
    params = {"plain T=1": SamplingParams(temperature=1.0, **common)}
    for k, s in kinds.items():
        params[k] = sampling_params(s, 3 if s.step_dependent else None, **common)
    prompts = [
        TokensPrompt(prompt_token_ids=[3 + (97 * i + 13 * j) % (args.vocab - 3) for j in range(args.prompt_len)])
        for i in range(args.num_seqs)
    ]
    apply_share: dict[str, list[float]] = {k: [] for k in params}

    def call(kind: str) -> Callable[[], float]:
        def run() -> float:
            spent.update(s=0.0, n=0)
            t0 = time.perf_counter()
            outs = llm.generate(prompts, params[kind], use_tqdm=False)
            wall = time.perf_counter() - t0
            tokens = sum(len(o.token_ids) for r in outs for o in r.outputs)
            apply_share[kind].append(spent["s"] / wall)
            return tokens / wall

        return run

    print(f"before: {load()}")
    values, rounds = interleaved({k: call(k) for k in params}, args.repeats)
    print(
        f"vLLM {vllm.__version__} CPU engine (V1 runner), {args.num_seqs} sequences x {args.max_tokens} tokens, "
        f"Llama hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}, 1 thread, {args.repeats} rounds"
    )
    report(values, rounds, "plain T=1", "tokens/s", lower_is_better=False)
    print("  EADLogitsProcessor.apply share of the generate wall time (median over rounds):")
    for k, v in apply_share.items():
        print(f"    {k:16s} {100 * statistics.median(v[1:] or v):6.2f}%")
    print(f"after: {load()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="sampler", required=True)
    lo = sub.add_parser("local", help="the local sampler (.venv)")
    lo.add_argument("--rows", type=int, default=128, help="rows per call (default config: 16 prompts x 8)")
    lo.add_argument("--tokens", type=int, default=16, help="response tokens (default config: 16)")
    lo.add_argument("--repeats", type=int, default=9)
    lo.add_argument("--size", default="tiny")
    lo.add_argument("--threads", type=int, default=1)
    vl = sub.add_parser("vllm", help="vLLM's CPU engine (.venv-vllm)")
    vl.add_argument("--num-seqs", type=int, default=64)
    vl.add_argument("--max-tokens", type=int, default=32)
    vl.add_argument("--prompt-len", type=int, default=16)
    vl.add_argument("--repeats", type=int, default=5)
    vl.add_argument("--vocab", type=int, default=8192)
    vl.add_argument("--hidden", type=int, default=256)
    vl.add_argument("--layers", type=int, default=4)
    args = ap.parse_args()
    bench_local(args) if args.sampler == "local" else bench_vllm(args)


if __name__ == "__main__":
    main()
