"""Benchmark: stepwise monotonic alignment on the GPU, reference loop vs pure torch vs Triton.

    python benchmarks/bench_sma_triton.py --device cuda [--quick] [--json PATH]
    python benchmarks/bench_sma.py --device cuda [--quick] [--json PATH]   # the same

Shapes (4 heads, ragged lengths, float32): B=16, U=100, T=800 and B=16, U=400, T=3200.
Implementations, all in one process on the same inputs:

* ``reference``: a per-frame torch loop with autograd through every step, like the public
  reference implementation (keonlee9420/Stepwise_Monotonic_Multihead_Attention);
* ``torch``: ``stepwise_monotonic_alignment(impl="torch")`` (frame loop, closed-form adjoint);
* ``triton``: ``stepwise_monotonic_alignment(impl="triton")`` (one program per sequence).

Reports the median wall time of forward and forward+backward (CUDA-synchronised), the speed-up
over ``reference`` and the peak memory. ``--device cpu`` runs reference/torch/numba instead (a
smoke test of this script; the CPU figures belong to ``bench_sma.py``). Without CUDA,
``--device cuda`` prints that CUDA is required and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from speechattn.functional import stepwise_monotonic_alignment


def reference_loop(p: torch.Tensor, text_lengths: torch.Tensor, mel_lengths: torch.Tensor):
    """Per-frame torch loop (autograd through every step), ``p`` ``(B, H, U, T)``."""
    B, H, U, T = p.shape
    uv = (torch.arange(U, device=p.device) < text_lengths[:, None])[:, None, :].to(p.dtype)
    tv = (torch.arange(T, device=p.device) < mel_lengths[:, None])[:, None, None, :].to(p.dtype)
    prev = F.one_hot(torch.zeros(B, H, dtype=torch.int64, device=p.device), U).to(p.dtype)
    cols = []
    for t in range(T):
        p_t = p[..., t]
        moved = F.pad(prev[..., :-1] * (1 - p_t[..., :-1]), (1, 0))
        prev = (prev * p_t + moved) * uv
        cols.append(prev)
    return torch.stack(cols, -1) * tv


def _inputs(B: int, H: int, U: int, T: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    p = torch.sigmoid(torch.randn(B, H, U, T, generator=g) + 2.0)
    text_lengths = torch.randint(U // 2, U + 1, (B,), generator=g)
    mel_lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    text_lengths[0], mel_lengths[0] = U, T
    return p.to(device), text_lengths.to(device), mel_lengths.to(device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn: Callable[[], object], device: str, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_mb(fn: Callable[[], object], device: str) -> float | None:
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _closures(
    impl: str, p: torch.Tensor, tl: torch.Tensor, ml: torch.Tensor, grad: torch.Tensor
) -> tuple[Callable[[], torch.Tensor], Callable[[], None]]:
    """(forward without grad, forward + backward) for one implementation."""

    def fwd() -> torch.Tensor:
        with torch.no_grad():
            if impl == "reference":
                return reference_loop(p, tl, ml)
            return stepwise_monotonic_alignment(p, tl, ml, impl=impl)

    def fwd_bwd() -> None:
        x = p.detach().requires_grad_(True)
        if impl == "reference":
            out = reference_loop(x, tl, ml)
        else:
            out = stepwise_monotonic_alignment(x, tl, ml, impl=impl)
        out.backward(grad)

    return fwd, fwd_bwd


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    device = args.device
    impls = (
        ["reference", "torch", "triton"] if device == "cuda" else ["reference", "torch", "numba"]
    )
    shapes = [(16, 4, 100, 800), (16, 4, 400, 3200)]
    if args.quick:
        shapes = [(4, 4, 50, 200)]
    rows: list[dict[str, object]] = []
    for B, H, U, T in shapes:
        p, tl, ml = _inputs(B, H, U, T, device)
        grad = torch.randn_like(p)
        ref_time: dict[str, float] = {}
        # Agreement check (max abs difference to the reference forward), same inputs.
        with torch.no_grad():
            ref_alpha = reference_loop(p, tl, ml)
        for impl in impls:
            fwd, fwd_bwd = _closures(impl, p, tl, ml, grad)
            slow = impl == "reference" and T > 1000
            reps = 1 if (slow or args.quick) else args.repeats
            warm = 0 if slow else 1
            err = float((fwd() - ref_alpha).abs().max())
            for what, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
                sec = _time(fn, device, reps, warm)
                if impl == "reference":
                    ref_time[what] = sec
                rows.append(
                    {
                        "shape": f"B={B} H={H} U={U} T={T}",
                        "impl": impl,
                        "pass": what,
                        "ms": sec * 1e3,
                        "speedup_vs_reference": ref_time[what] / sec,
                        "peak_mb": _peak_mb(fn, device),
                        "max_abs_diff_vs_reference": err,
                        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                    }
                )
                r = rows[-1]
                peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
                print(
                    f"{r['shape']:<26} {impl:<10} {what:<8} {r['ms']:>10.3f} ms "
                    f"{r['speedup_vs_reference']:>9.1f}x  peak {peak:>6} MB  "
                    f"|diff| {err:.1e}",
                    flush=True,
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="one small shape, one repeat")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=str, default=None, help="write the rows to this file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_sma_triton: CUDA is required for --device cuda (no GPU here); nothing run.")
        return 0
    print(f"torch {torch.__version__}, device {args.device}")
    print(f"{'shape':<26} {'impl':<10} {'pass':<8} {'time':>13} {'vs ref':>10}")
    rows = run(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
