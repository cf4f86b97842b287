"""Cost of the EAD core relative to applying any temperature at all.

Prints, measured side by side in one run, the time to compute temperatures for 10^6 positions
(numpy and torch) and TIS for a 256 x 4096 batch, each as a ratio to one elementwise division
of a same-sized tensor (what dividing logits by a temperature costs per element).

    .venv/bin/python benchmarks/bench_core.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from ead_core import EADSchedule, truncated_is_weights


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    s = EADSchedule.preset("reference")
    n = 10**6
    pos_np = np.arange(n, dtype=np.float32) % 4096
    pos_t = torch.from_numpy(pos_np.copy())
    x_np, x_t = np.random.default_rng(0).random(n, dtype=np.float32), torch.rand(n)

    rows = []
    div_np = _time(lambda: x_np / 0.7, args.repeats)
    div_t = _time(lambda: x_t / 0.7, args.repeats)
    rows.append(("temperatures numpy 1e6 (validated)", _time(lambda: s.temperatures(pos_np, 10), args.repeats), div_np))
    rows.append(
        (
            "temperatures numpy 1e6 (hot path)",
            _time(lambda: s.temperatures(pos_np, 10, validate=False), args.repeats),
            div_np,
        )
    )
    rows.append(("temperatures torch 1e6 (validated)", _time(lambda: s.temperatures(pos_t, 10), args.repeats), div_t))
    rows.append(
        (
            "temperatures torch 1e6 (hot path)",
            _time(lambda: s.temperatures(pos_t, 10, validate=False), args.repeats),
            div_t,
        )
    )

    b, t = 256, 4096
    old = -torch.rand(b, t) * 3
    beh = old + torch.randn(b, t) * 0.3
    beh.clamp_(max=0)
    mask = torch.ones(b, t)
    div_bt = _time(lambda: old / 0.7, args.repeats // 5 or 1)
    rows.append(
        (
            "TIS token 256x4096 (weights + stats)",
            _time(lambda: truncated_is_weights(old, beh, mask, 2.0), args.repeats // 5 or 1),
            div_bt,
        )
    )
    rows.append(
        (
            "TIS sequence 256x4096",
            _time(lambda: truncated_is_weights(old, beh, mask, 2.0, level="sequence"), args.repeats // 5 or 1),
            div_bt,
        )
    )

    print(f"torch {torch.__version__}, numpy {np.__version__}, threads {torch.get_num_threads()}, median of repeats")
    print(f"{'measurement':40s} {'time':>10s} {'1 division':>11s} {'ratio':>7s}")
    for name, tm, base in rows:
        print(f"{name:40s} {tm * 1e3:8.2f}ms {base * 1e3:9.2f}ms {tm / base:7.1f}x")


if __name__ == "__main__":
    main()
