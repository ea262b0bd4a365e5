"""Benchmark: WeSpeaker-style pooling (no lengths) vs speechattn pooling (with lengths).

Settings from the issue: B=64, T=200; MQMHASTP at F=2560 (ResNet34: 32*8 channels x 10 freq bins,
WeSpeaker defaults: 2 queries, 8 heads, d_s = c, 2 layers, bottleneck 64) and ASTP at F=1536
(ECAPA-TDNN, bottleneck 128; with and without global context). Forward (no_grad) and
forward+backward (x and parameters require grad); median time over repeats (reference and ours
measured alternately), and the peak of
tensor memory allocated during the call (inputs and parameters excluded), tracked op by op with a
TorchDispatchMode so it is exact and allocator-independent on CPU; on CUDA
``torch.cuda.max_memory_allocated`` is used.

The baseline is WeSpeaker's own pooling classes, kept op for op (same tensor ops, order and shapes:
per-head Python loop, ``m2 - mean^2``) in ``tests/reference/wespeaker_pooling_reference.py``, with
WeSpeaker's module tree so the same state dict drives both; each case first checks that both give
the same numbers without lengths. Ratios are reference / ours. "ours full" times ours without
lengths (every frame valid), to show what skipping padded frames contributes.

    python benchmarks/bench_pooling.py            # the issue's sizes
    python benchmarks/bench_pooling.py --quick    # small sizes, seconds
    python benchmarks/bench_pooling.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from speechattn.nn import ASTP, MQMHASTP

# ----------------------------------------------------------------------------------------------
# The baseline: WeSpeaker's pooling classes (wespeaker/models/pooling_layers.py) as kept, op for op,
# in tests/reference/wespeaker_pooling_reference.py: no lengths, per-head loop, m2 - mean^2.
# ----------------------------------------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference.wespeaker_pooling_reference import (
    ASTP as RefASTP,
)
from reference.wespeaker_pooling_reference import (
    MQMHASTP as RefMQMHASTP,
)

# ----------------------------------------------------------------------------------------------
# Peak tensor memory on CPU: count storages created by ops while they are alive.
# ----------------------------------------------------------------------------------------------


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storages allocated inside the context (views/in-place not double counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.external: set[int] = set()
        self.current = 0
        self.peak = 0
        self._refs: list[Any] = []

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)
        self.external.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        for t in torch.utils._pytree.tree_leaves((args, kwargs)):
            if isinstance(t, Tensor) and t.device.type == "cpu":
                key = t.untyped_storage().data_ptr()
                if key not in self.live:
                    self.external.add(key)  # inputs, parameters: allocated before the call
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if not isinstance(t, Tensor) or t.device.type != "cpu":
                continue
            st = t.untyped_storage()
            key = st.data_ptr()
            if key in self.live or key in self.external or st.nbytes() == 0:
                continue
            self.live[key] = st.nbytes()
            self.current += st.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(st, self._release, key)
        return out


CLOCK: Callable[[], float] = time.perf_counter


def _time(fn: Callable[[], Any], repeats: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = CLOCK()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(CLOCK() - t0)
    return statistics.median(times)


def _time_pair(
    fr: Callable[[], Any], fo: Callable[[], Any], repeats: int, warmup: int, device: torch.device
) -> tuple[float, float]:
    """Median times of two contenders measured alternately (load drifts hit both alike)."""
    for _ in range(warmup):
        fr()
        fo()
    t_ref, t_ours = [], []
    for _ in range(repeats):
        t_ref.append(_time(fr, 1, 0, device))
        t_ours.append(_time(fo, 1, 0, device))
    return statistics.median(t_ref), statistics.median(t_ours)


def _peak(fn: Callable[[], Any], device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    tracker = PeakTensorMemory()
    with tracker:
        fn()
    return tracker.peak


def run_case(
    name: str,
    ref: nn.Module,
    ours: nn.Module,
    x: Tensor,
    lengths: Tensor,
    *,
    repeats: int,
    warmup: int,
    device: torch.device,
) -> list[dict[str, Any]]:
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():  # sanity: same numbers without lengths
        diff = (ref(x) - ours(x)).abs().max().item()
    rows = []
    xg = x.detach().clone().requires_grad_(True)

    def fwd_ref() -> None:
        with torch.no_grad():
            ref(x)

    def fwd_ours() -> None:
        with torch.no_grad():
            ours(x, lengths)

    def bwd_ref() -> None:
        ref(xg).sum().backward()
        xg.grad = None

    def bwd_ours() -> None:
        ours(xg, lengths).sum().backward()
        xg.grad = None

    def fwd_full() -> None:
        with torch.no_grad():
            ours(x)

    def bwd_full() -> None:
        ours(xg).sum().backward()
        xg.grad = None

    for mode, fr, fo, ff in [
        ("fwd", fwd_ref, fwd_ours, fwd_full),
        ("fwd+bwd", bwd_ref, bwd_ours, bwd_full),
    ]:
        t_ref, t_ours = _time_pair(fr, fo, repeats, warmup, device)
        t_full = _time(ff, max(1, repeats // 2), 1, device)
        m_ref = _peak(fr, device)
        m_ours = _peak(fo, device)
        rows.append(
            {
                "case": name,
                "mode": mode,
                "ref_s": t_ref,
                "ours_s": t_ours,
                "speedup": t_ref / t_ours,
                "ours_full_s": t_full,
                "ref_peak_mib": m_ref / 2**20,
                "ours_peak_mib": m_ours / 2**20,
                "mem_ratio": m_ours / max(m_ref, 1),
                "max_abs_diff_no_lengths": diff,
            }
        )
    for p in list(ref.parameters()) + list(ours.parameters()):
        p.grad = None
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes (B=8, T=50, F/8)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    ap.add_argument("--json", default=None, help="write the rows to this JSON file")
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: perf_counter; cpu: process CPU seconds (load-independent on a shared machine; use --threads 1)",
    )
    ap.add_argument(
        "--cases", nargs="+", default=["mqmhastp", "astp", "astp-glob"], help="subset to run"
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    if args.clock == "cpu":
        if args.device != "cpu":
            raise SystemExit("--clock cpu only makes sense with --device cpu")
        CLOCK = time.process_time
    device = torch.device(args.device)
    torch.manual_seed(0)
    b, t, scale = (8, 50, 8) if args.quick else (64, 200, 1)
    f_mq, f_astp = 2560 // scale, 1536 // scale
    lengths = torch.randint(t // 2, t + 1, (b,), device=device)
    lengths[0] = t
    rows: list[dict[str, Any]] = []
    # ResNet34 output (B, 256 channels, 80 / 8 = 10 bins, T): C * F' = 2560 (/ scale)
    x_mq = torch.randn(b, 256 // scale, 10, t, device=device)
    if "mqmhastp" in args.cases:
        rows += run_case(
            f"MQMHASTP F={f_mq}",
            RefMQMHASTP(f_mq).to(device),
            MQMHASTP(f_mq).to(device),
            x_mq,
            lengths,
            repeats=args.repeats,
            warmup=args.warmup,
            device=device,
        )
    x_astp = torch.randn(b, f_astp, t, device=device)
    for glob in (False, True):
        if ("astp-glob" if glob else "astp") not in args.cases:
            continue
        rows += run_case(
            f"ASTP F={f_astp}{' glob' if glob else ''}",
            RefASTP(f_astp, global_context_att=glob).to(device),
            ASTP(f_astp, global_context_att=glob).to(device),
            x_astp,
            lengths,
            repeats=args.repeats,
            warmup=args.warmup,
            device=device,
        )
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(
        f"device={device} clock={args.clock} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"load average {load} "
        f"python={platform.python_version()} B={b} T={t} lengths in [{t // 2}, {t}]"
    )
    hdr = (
        f"{'case':<22}{'mode':<9}{'ref s':>9}{'ours s':>9}{'speedup':>9}{'full s':>9}"
        f"{'ref MiB':>10}{'ours MiB':>10}{'mem ratio':>10}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['case']:<22}{r['mode']:<9}{r['ref_s']:>9.4f}{r['ours_s']:>9.4f}{r['speedup']:>9.2f}"
            f"{r['ours_full_s']:>9.4f}"
            f"{r['ref_peak_mib']:>10.1f}{r['ours_peak_mib']:>10.1f}{r['mem_ratio']:>10.2f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"device": str(device), "torch": torch.__version__, "B": b, "T": t, "rows": rows},
                fh,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
