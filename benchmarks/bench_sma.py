"""Stepwise monotonic attention benchmarks: ours vs the keonlee reference, same process.

Sections (``--section NAME``, default all):

- ``layer``: the whole attention layer, train mode, ragged batch. Baseline: the reference layer
  re-stated in ``tests/reference/keonlee_reference.py`` (per-frame Python loop, per-item focused
  head). Ours: the compat adapter (same math, same weights) and the native module
  (``speechattn.nn.StepwiseMonotonicMultiheadAttention``, focus-rate head selection). Forward
  (autograd on) and forward+backward times (median), and the peak memory of one forward+backward
  measured in a fresh subprocess (high-water RSS above the pre-call RSS, with glibc's mmap
  threshold pinned so freed tensors go back to the OS).

Usage::

    python benchmarks/bench_sma.py [--section layer] [--quick] [--json PATH] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from reference.keonlee_reference import ReferenceSMA  # noqa: E402
from speechattn.compat.keonlee import StepwiseMonotonicMultiheadAttention as CompatSMA  # noqa: E402
from speechattn.nn import StepwiseMonotonicMultiheadAttention  # noqa: E402

FULL = dict(b=16, u=100, t=800, d=256, h=4)
QUICK = dict(b=4, u=30, t=200, d=64, h=4)


def _timeit(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (kernel compilation, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----------------------------------------------------------------------------- layer section


def _layer_setup(shape: dict[str, int], impl: str) -> Callable[[bool], object]:
    """Build one layer and a ragged batch; return ``run(backward)``."""
    b, u, t, d, h = shape["b"], shape["u"], shape["t"], shape["d"], shape["h"]
    g = torch.Generator().manual_seed(0)
    text = torch.randn(b, u, d, generator=g)
    mel = torch.randn(b, t, d, generator=g)
    text_len = torch.randint(u // 2, u + 1, (b,), generator=g)
    mel_len = torch.randint(t // 2, t + 1, (b,), generator=g)
    text_len[0], mel_len[0] = u, t
    tok_pad = torch.arange(u)[None] >= text_len[:, None]
    frm_pad = torch.arange(t)[None] >= mel_len[:, None]
    mask = tok_pad[:, :, None] | frm_pad[:, None, :]
    query_mask = tok_pad[:, :, None]
    torch.manual_seed(0)
    if impl in ("reference", "compat"):
        cls = ReferenceSMA if impl == "reference" else CompatSMA
        layer: torch.nn.Module = cls(d, d // h, d // h, n_head=h, is_tunable=True)
        layer.train()

        def run(backward: bool) -> object:
            cv, attn, _ = layer(text, mel, mel, mel_len, mask=mask, query_mask=query_mask)
            if backward:
                (cv.sum() + attn.sum()).backward()
            return cv

    else:
        selection = "per_head" if impl == "native-per-head" else "focus_rate"
        layer = StepwiseMonotonicMultiheadAttention(
            embed_dim=d, num_heads=h, layer_norm=True, head_selection=selection
        )
        layer.train()

        def run(backward: bool) -> object:
            out = layer(text, mel, mel, query_lengths=text_len, key_lengths=mel_len)
            if backward:
                (out.output.sum() + out.alignment.sum()).backward()
            return out.output

    return run


LAYER_IMPLS = ("reference", "compat", "native", "native-per-head")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _memory_probe(impl: str, quick: bool) -> None:
    """Subprocess entry: print the peak memory of one forward+backward (bytes, JSON)."""
    run = _layer_setup(QUICK if quick else FULL, impl)
    if impl != "reference":
        # Compile kernels on a tiny call first so JIT memory is not counted.
        _layer_setup(dict(b=2, u=5, t=12, d=16, h=4), impl)(True)
    before = _rss_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    run(True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_bytes": max(0, peak - max(before, 0)), "prev_peak": peak_before}))


def _peak_memory(impl: str, quick: bool) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, __file__, "--_memory-probe", impl] + (["--quick"] if quick else [])
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return int(json.loads(res.stdout.strip().splitlines()[-1])["peak_bytes"])


def section_layer(quick: bool, repeats: int) -> list[dict[str, Any]]:
    shape = QUICK if quick else FULL
    rows = []
    for impl in LAYER_IMPLS:
        run = _layer_setup(shape, impl)
        fwd = _timeit(lambda run=run: run(False), repeats)
        fwd_bwd = _timeit(lambda run=run: run(True), repeats)
        rows.append(
            dict(
                section="layer",
                impl=impl,
                **shape,
                fwd_s=fwd,
                fwd_bwd_s=fwd_bwd,
                peak_mib=_peak_memory(impl, quick) / 2**20,
            )
        )
    base = rows[0]
    for r in rows:
        r["fwd_speedup"] = base["fwd_s"] / r["fwd_s"]
        r["fwd_bwd_speedup"] = base["fwd_bwd_s"] / r["fwd_bwd_s"]
        r["peak_ratio"] = r["peak_mib"] / base["peak_mib"] if base["peak_mib"] else float("nan")
    print(
        f"\nlayer: B={shape['b']} U={shape['u']} T={shape['t']} d={shape['d']} "
        f"H={shape['h']}, ragged, train mode, torch threads={torch.get_num_threads()}"
    )
    print(
        f"{'impl':<16}{'fwd ms':>10}{'x ref':>8}{'fwd+bwd ms':>12}{'x ref':>8}"
        f"{'peak MiB':>10}{'/ ref':>7}"
    )
    for r in rows:
        print(
            f"{r['impl']:<16}{r['fwd_s'] * 1e3:>10.1f}{r['fwd_speedup']:>8.1f}"
            f"{r['fwd_bwd_s'] * 1e3:>12.1f}{r['fwd_bwd_speedup']:>8.1f}"
            f"{r['peak_mib']:>10.1f}{r['peak_ratio']:>7.2f}"
        )
    return rows


SECTIONS: dict[str, Callable[[bool, int], list[dict[str, Any]]]] = {
    "layer": section_layer,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--section", choices=sorted(SECTIONS), action="append")
    ap.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write all rows to this JSON file")
    ap.add_argument("--_memory-probe", dest="memory_probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_probe:
        _memory_probe(args.memory_probe, args.quick)
        return 0
    repeats = args.repeats or (2 if args.quick else 5)
    rows: list[dict[str, Any]] = []
    for name in args.section or list(SECTIONS):
        rows += SECTIONS[name](args.quick, repeats)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
