"""First-call cost of the numba kernels: an empty numba cache, then a warm one.

Runs itself twice in fresh processes with the same temporary ``NUMBA_CACHE_DIR`` (empty for the
first), and prints, per op, the first call's wall and CPU seconds and a later call's time.

    python benchmarks/bench_first_call.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time


def _child() -> None:
    t0 = time.perf_counter()
    c0 = time.process_time()
    import torch

    import speechattn.functional as F
    from speechattn.nn import MQMHASTP

    print(
        f"  {'import torch + speechattn':<44} {time.perf_counter() - t0:6.2f} s wall "
        f"{time.process_time() - c0:6.2f} s CPU"
    )
    torch.manual_seed(0)
    p = torch.rand(2, 8, 20, requires_grad=True)
    e = torch.randn(2, 8, 20)
    eg = e.clone().requires_grad_(True)
    pool = MQMHASTP(64, head_num=2)
    x = torch.randn(2, 64, 30, requires_grad=True)
    cases = [
        ("SMA fwd+bwd (numba, float32)", lambda: F.stepwise_monotonic_alignment(p, impl="numba").sum().backward()),
        ("MAS / Viterbi (numba)", lambda: F.monotonic_alignment_search(e, impl="numba")),
        ("HMM log-likelihood fwd+bwd (numba)", lambda: F.monotonic_hmm_log_likelihood(eg, impl="numba").sum().backward()),
        ("MQMHASTP fwd+bwd (numba statistics)", lambda: pool(x, torch.tensor([30, 17])).sum().backward()),
    ]  # fmt: skip
    for name, fn in cases:
        t, c = time.perf_counter(), time.process_time()
        fn()
        first, first_cpu = time.perf_counter() - t, time.process_time() - c
        t = time.perf_counter()
        fn()
        later = time.perf_counter() - t
        print(
            f"  {name:<44} {first:6.2f} s wall {first_cpu:6.2f} s CPU; later call {later * 1e3:7.1f} ms"
        )


def main() -> int:
    if "--child" in sys.argv:
        _child()
        return 0
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"load average {load}")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("empty numba cache", "warm numba cache (second process)"):
            print(f"first calls, {label}:")
            subprocess.run([sys.executable, __file__, "--child"], env=env, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
