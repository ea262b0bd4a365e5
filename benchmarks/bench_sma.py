"""Stepwise monotonic attention benchmarks: ours vs the keonlee reference, same process.

Sections (``--section NAME``, default all):

- ``layer``: the whole attention layer, train mode, ragged batch. Baseline: the reference layer
  re-stated in ``tests/reference/keonlee_reference.py`` (per-frame Python loop, per-item focused
  head). Ours: the compat adapter (same math, same weights) and the native module
  (``speechattn.nn.StepwiseMonotonicMultiheadAttention``, focus-rate head selection). Forward
  (autograd on) and forward+backward times (median), and the peak memory of one forward+backward
  measured in a fresh subprocess (high-water RSS above the pre-call RSS, with glibc's mmap
  threshold pinned so freed tensors go back to the OS).
- ``init``: not a speed test. A toy aligner (token embedding -> SMA -> token classifier on
  synthetic "mel" frames with known durations) trained from three stay-bias initialisations;
  reports the Viterbi frame accuracy against the true durations.
- ``recurrence``: the alignment recurrence alone, ``(B*H, U, T)`` stay probabilities, ragged
  lengths. Baseline: a per-frame torch loop as in the keonlee reference's ``expectation`` (slice
  frame i, multiply, shift with a zero pad and ``torch.cat``, append; ``torch.cat`` over frames;
  autograd through the loop, no masking). Ours: ``stepwise_monotonic_alignment`` with
  ``impl="torch"`` (spec) and ``impl="numba"``, ragged and full lengths. Forward (autograd on)
  and forward+backward (``torch.autograd.grad`` with a fixed output gradient) times, and peak
  memory measured like the layer section.

Usage::

    python benchmarks/bench_sma.py [--section layer] [--quick] [--json PATH] [--repeats N]
    python benchmarks/bench_sma.py --device cuda [--quick] [--json PATH]   # GPU: triton kernels

``--device cuda`` runs ``bench_sma_triton.py`` (reference loop vs ``impl="torch"`` vs
``impl="triton"`` at B=16, H=4, U=100, T=800 and U=400, T=3200); without CUDA it says so and
exits 0.
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
    """Subprocess entry: print the peak memory of one forward+backward (bytes, JSON).

    Peak = high-water RSS during the call minus RSS just before it, with the high-water mark
    reset right before the call (``/proc/self/clear_refs``), as in the recurrence section.
    """
    # Load/compile kernels and warm autograd on a tiny call so that is not counted.
    _layer_setup(dict(b=2, u=5, t=12, d=16, h=4), impl)(True)
    run = _layer_setup(QUICK if quick else FULL, impl)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kib("VmRSS")
        run(True)
        peak = _status_kib("VmHWM") - before
    except OSError:  # no clear_refs: fall back to the process-lifetime high-water mark
        before = _rss_bytes() // 1024
        run(True)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"peak_bytes": max(0, peak) * 1024}))


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
        if impl == "reference" and not quick:
            # The reference's backward takes tens of seconds here: one warm-up, one timed run.
            fwd = _timeit(lambda run=run: run(False), 1)
            t0 = time.perf_counter()
            run(True)
            fwd_bwd = time.perf_counter() - t0
        else:
            fwd = _timeit(lambda run=run: run(False), max(repeats, 5))
            fwd_bwd = _timeit(lambda run=run: run(True), max(repeats, 5))
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


# ------------------------------------------------------------------------------ init section


def _toy_batch(
    g: torch.Generator, protos: torch.Tensor, b: int, u_range: tuple[int, int]
) -> tuple[torch.Tensor, ...]:
    """Random token sequences; each token lasts 4-10 frames of its prototype vector + noise."""
    n_sym, feat = protos.shape
    text_len = torch.randint(u_range[0], u_range[1] + 1, (b,), generator=g)
    durs = [torch.randint(4, 11, (int(n),), generator=g) for n in text_len]
    mel_len = torch.stack([d.sum() for d in durs])
    tok = torch.zeros(b, int(text_len.max()), dtype=torch.long)
    mel = torch.zeros(b, int(mel_len.max()), feat)
    frame_tok = torch.full((b, int(mel_len.max())), -1)
    for i in range(b):
        n, t = int(text_len[i]), int(mel_len[i])
        tok[i, :n] = torch.randint(0, n_sym, (n,), generator=g)
        idx = torch.repeat_interleave(torch.arange(n), durs[i])
        frame_tok[i, :t] = idx
        mel[i, :t] = protos[tok[i, idx]] + 0.3 * torch.randn(t, feat, generator=g)
    return tok, text_len, mel, mel_len, frame_tok


def _train_toy_aligner(
    init: dict[str, float], seed: int, steps: int, u_range: tuple[int, int]
) -> tuple[float, float, float, float]:
    """Train embedding + SMA + token classifier; return (loss, Viterbi frame accuracy, ...)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n_sym, feat, d = 20, 16, 32
    protos = torch.randn(n_sym, feat, generator=g)
    emb = torch.nn.Embedding(n_sym, d)
    sma = StepwiseMonotonicMultiheadAttention(
        embed_dim=d, num_heads=2, kdim=feat, vdim=feat, dropout=0.0, **init
    )
    head = torch.nn.Linear(d, n_sym)
    opt = torch.optim.Adam([*emb.parameters(), *sma.parameters(), *head.parameters()], lr=3e-3)
    loss = torch.zeros(())
    for _ in range(steps):
        tok, tl, mel, ml, _ = _toy_batch(g, protos, 16, u_range)
        out = sma(emb(tok), mel, mel, query_lengths=tl, key_lengths=ml)
        valid = torch.arange(tok.shape[1])[None] < tl[:, None]
        loss = torch.nn.functional.cross_entropy(head(out.output)[valid], tok[valid])
        opt.zero_grad()
        loss.backward()
        opt.step()
    sma.eval()
    tok, tl, mel, ml, frame_tok = _toy_batch(
        torch.Generator().manual_seed(999), protos, 64, u_range
    )
    with torch.no_grad():
        vit = sma(emb(tok), mel, mel, query_lengths=tl, key_lengths=ml, mode="viterbi")
    fv = frame_tok >= 0
    acc = (vit.alignment.argmax(1)[fv] == frame_tok[fv]).float().mean()
    stay = torch.sigmoid(sma.stay_bias.detach()).mean()
    return float(loss.detach()), float(acc), float(vit.focus_rate.amax(-1).mean()), float(stay)


def section_init(quick: bool, repeats: int) -> list[dict[str, Any]]:
    """Stay-bias initialisation of an aligner: r = 3.5 (paper) vs p0 = 1 - U/T vs r = 0."""
    del repeats
    u_range = (6, 12) if quick else (20, 40)
    steps, seeds = (60, (0,)) if quick else (300, (0, 1))
    mean_u = sum(u_range) / 2
    inits = {
        "bias 3.5 (paper)": dict(energy_bias_init=3.5),
        "p0 = 1 - U/T": dict(initial_stay_prob=1 - mean_u / (7 * mean_u)),
        "bias 0": dict(energy_bias_init=0.0),
    }
    rows = []
    print(
        f"\ninit: toy aligner, U in {u_range}, 4-10 frames per token, {steps} Adam steps, "
        "Viterbi frame accuracy on 64 held-out utterances"
    )
    print(f"{'init':<18}{'seed':>5}{'loss':>8}{'frame acc':>11}{'focus':>7}{'stay p':>8}")
    for name, kw in inits.items():
        for seed in seeds:
            loss, acc, fr, stay = _train_toy_aligner(kw, seed, steps, u_range)
            rows.append(
                dict(
                    section="init",
                    init=name,
                    seed=seed,
                    loss=loss,
                    frame_acc=acc,
                    focus_rate=fr,
                    learned_stay_prob=stay,
                    steps=steps,
                )
            )
            print(f"{name:<18}{seed:>5}{loss:>8.3f}{acc:>11.3f}{fr:>7.3f}{stay:>8.3f}")
    return rows


# ----------------------------------------------------------------------------- recurrence section

REC_FULL = dict(b=16, h=4, u=100, t=800)
REC_QUICK = dict(b=4, h=4, u=30, t=200)
REC_IMPLS = ("reference-loop", "torch", "numba", "numba-full-lengths")


def _reference_style_loop(p: torch.Tensor) -> torch.Tensor:
    """The keonlee reference's per-frame recurrence, re-stated: ``p`` ``(N, U, T)`` -> alpha."""
    n, u, t = p.shape
    aw_prev = p.new_zeros(n, u, 1)
    aw_prev[:, 0:1] = 1.0
    frames = []
    for i in range(t):
        p_i = p[:, :, i : i + 1]
        pad = torch.zeros([n, 1, 1], dtype=aw_prev.dtype).to(aw_prev.device)
        advanced = aw_prev[:, :-1, :] * (1.0 - p_i[:, :-1, :])
        aw_prev = aw_prev * p_i + torch.cat((pad, advanced), dim=1)
        frames.append(aw_prev)
    return torch.cat(frames, dim=-1) if t > 1 else frames[-1]


def _timeit_wall_cpu(
    fn: Callable[[], object], repeats: int, *, warmup: bool
) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds (all threads) per call."""
    if warmup:
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def _recurrence_setup(shape: dict[str, int], impl: str) -> Callable[[bool], object]:
    """Inputs for one recurrence variant; returns ``run(backward)``."""
    from speechattn.functional import stepwise_monotonic_alignment

    b, h, u, t = shape["b"], shape["h"], shape["u"], shape["t"]
    g = torch.Generator().manual_seed(0)
    # Stay probabilities as a trained aligner produces them: mostly high, ragged batch.
    p = torch.sigmoid(torch.randn(b, h, u, t, generator=g) + 2.0)
    grad_out = torch.randn(b, h, u, t, generator=g)
    text_len = torch.randint(u // 2, u + 1, (b,), generator=g)
    mel_len = torch.randint(t // 2, t + 1, (b,), generator=g)
    text_len[0], mel_len[0] = u, t
    if impl == "reference-loop":
        p3 = p.reshape(b * h, u, t).requires_grad_(True)
        g3 = grad_out.reshape(b * h, u, t)

        def run(backward: bool) -> object:
            alpha = _reference_style_loop(p3)
            if backward:
                return torch.autograd.grad(alpha, p3, g3)
            return alpha

        return run
    kernel = "numba" if impl.startswith("numba") else "torch"
    tl, ml = (None, None) if impl.endswith("full-lengths") else (text_len, mel_len)
    p.requires_grad_(True)

    def run_ours(backward: bool) -> object:
        alpha = stepwise_monotonic_alignment(p, tl, ml, impl=kernel)
        if backward:
            return torch.autograd.grad(alpha, p, grad_out)
        return alpha

    return run_ours


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _recurrence_probe(impl: str, quick: bool) -> None:
    """Subprocess entry: print the peak memory of one forward+backward (bytes, JSON).

    Peak = high-water RSS during the call minus RSS just before it. The high-water mark is
    reset right before the call (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) so earlier
    peaks (imports, compilation, input construction) are not counted.
    """
    _recurrence_setup(dict(b=2, h=1, u=5, t=12), impl)(True)  # load/compile, autograd warm-up
    run = _recurrence_setup(REC_QUICK if quick else REC_FULL, impl)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_kib("VmRSS")
        run(True)
        peak = _status_kib("VmHWM") - before
    except OSError:  # no clear_refs: fall back to the process-lifetime high-water mark
        before = _rss_bytes() // 1024
        run(True)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"peak_bytes": max(0, peak) * 1024}))


def section_recurrence(quick: bool, repeats: int) -> list[dict[str, Any]]:
    shape = REC_QUICK if quick else REC_FULL
    # Sanity: at full lengths ours computes exactly the baseline's recurrence.
    check_ref = _recurrence_setup(shape, "reference-loop")(False)
    check_ours = _recurrence_setup(shape, "numba-full-lengths")(False)
    diff = check_ref.detach().reshape(check_ours.shape) - check_ours.detach()  # type: ignore[attr-defined]
    max_diff = float(diff.abs().max())
    rows = []
    for impl in REC_IMPLS:
        run = _recurrence_setup(shape, impl)
        slow = impl == "reference-loop" and not quick
        # The baseline's backward takes tens of seconds at the full shape: one timed run.
        # Ours: at least 7 runs (median), as this shared machine is noisy.
        reps = repeats if impl == "reference-loop" else max(repeats, 7)
        fwd, fwd_cpu = _timeit_wall_cpu(lambda run=run: run(False), reps, warmup=True)
        fwd_bwd, fwd_bwd_cpu = _timeit_wall_cpu(
            lambda run=run: run(True), 1 if slow else reps, warmup=not slow
        )
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
        cmd = [sys.executable, __file__, "--_recurrence-probe", impl] + (
            ["--quick"] if quick else []
        )
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        peak = int(json.loads(res.stdout.strip().splitlines()[-1])["peak_bytes"])
        rows.append(
            dict(
                section="recurrence",
                impl=impl,
                **shape,
                fwd_s=fwd,
                fwd_bwd_s=fwd_bwd,
                fwd_cpu_s=fwd_cpu,
                fwd_bwd_cpu_s=fwd_bwd_cpu,
                peak_mib=peak / 2**20,
                max_abs_diff_vs_reference=max_diff,
            )
        )
    base = rows[0]
    for r in rows:
        r["fwd_speedup"] = base["fwd_s"] / r["fwd_s"]
        r["fwd_bwd_speedup"] = base["fwd_bwd_s"] / r["fwd_bwd_s"]
        r["fwd_bwd_cpu_speedup"] = base["fwd_bwd_cpu_s"] / r["fwd_bwd_cpu_s"]
        r["peak_ratio"] = r["peak_mib"] / base["peak_mib"] if base["peak_mib"] else float("nan")
    print(
        f"\nrecurrence: B={shape['b']} H={shape['h']} U={shape['u']} T={shape['t']} float32, "
        f"ragged lengths, torch threads={torch.get_num_threads()}; "
        f"max |alpha diff| vs baseline at full lengths = {max_diff:.2e}"
    )
    print(
        f"{'impl':<20}{'fwd ms':>10}{'x ref':>9}{'fwd+bwd ms':>12}{'x ref':>9}"
        f"{'f+b CPU ms':>12}{'x ref':>9}{'peak MiB':>10}{'/ ref':>7}"
    )
    for r in rows:
        print(
            f"{r['impl']:<20}{r['fwd_s'] * 1e3:>10.1f}{r['fwd_speedup']:>9.1f}"
            f"{r['fwd_bwd_s'] * 1e3:>12.1f}{r['fwd_bwd_speedup']:>9.1f}"
            f"{r['fwd_bwd_cpu_s'] * 1e3:>12.1f}{r['fwd_bwd_cpu_speedup']:>9.1f}"
            f"{r['peak_mib']:>10.1f}{r['peak_ratio']:>7.2f}"
        )
    return rows


SECTIONS: dict[str, Callable[[bool, int], list[dict[str, Any]]]] = {
    "layer": section_layer,
    "init": section_init,
    "recurrence": section_recurrence,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--section", choices=sorted(SECTIONS), action="append")
    ap.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write all rows to this JSON file")
    ap.add_argument("--_memory-probe", dest="memory_probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_recurrence-probe", dest="rec_probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: the GPU comparison (reference loop / torch / triton) of bench_sma_triton.py",
    )
    args = ap.parse_args(argv)
    if args.device == "cuda":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_sma_triton import main as cuda_main

        extra = ["--quick"] if args.quick else []
        extra += ["--repeats", str(args.repeats)] if args.repeats else []
        extra += ["--json", str(args.json)] if args.json else []
        return cuda_main(["--device", "cuda", *extra])
    if args.rec_probe:
        _recurrence_probe(args.rec_probe, args.quick)
        return 0
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
