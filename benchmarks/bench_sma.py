"""Stepwise monotonic attention benchmarks: ours vs the keonlee reference, same process.

The baseline is the reference's own code: ``tests/reference/keonlee_reference.py`` runs the
operations of keonlee9420's ``sma.py`` in its order and shapes (its ``expectation`` loop, its
``focused_head`` and its layer ``forward``), and ``tests/test_compat_keonlee.py`` checks that
copy against the float64 equation oracle. Every figure is wall clock, median of runs, measured
at each ``--threads`` count (default ``2,1``: the machine's default and one thread).

Sections (``--section NAME``, default ``recurrence`` and ``layer``):

- ``recurrence``: the alignment recurrence alone, one head per item, B=16, U=100, T=800,
  float32, ``p = torch.rand``, ragged lengths (text 70-100, mel 560-800), loss ``alpha.sum()``.
  Baseline: ``expectation``'s loop (``reference_recurrence``; it has no lengths, so it runs the
  padded size, as the reference does). Ours: ``stepwise_monotonic_alignment`` (``impl="numba"``
  and ``"torch"``) with the lengths. Forward (autograd on) and forward+backward; the achieved
  memory traffic (padded tensors: fwd reads ``p`` and writes ``alpha``; bwd reads ``p``,
  ``alpha``, the incoming gradient and writes ``grad_p``) next to ``Tensor.copy_`` of a
  256 MiB tensor measured in the same process.
- ``layer``: the whole layer in train mode, B=16, U=100, T=800, d=256, 4 heads, the same
  ragged lengths, loss ``output.sum() + alignment.sum()``. Baseline: the reference layer. Ours:
  the compat adapter (same math and weights) and the native module
  (``speechattn.nn.StepwiseMonotonicMultiheadAttention``). The reference returns the context,
  the selected head's alignment and the focus rate, not every head's alignment, so the row
  ``native`` calls the module with ``need_weights=False`` (same outputs as the reference; the
  heads are ranked without storing their alignments) and ``native-w`` with the default
  ``need_weights=True`` (also returns the ``(b, h, u, t)`` per-head alignments). ``--profile`` prints a
  ``torch.profiler`` table of the native layer's forward+backward. The row ``native-dens``
  is the native module (``need_weights=False``) with its CPU fast-path switches off: the
  valid-block paths (context matmul per item, noise on valid cells, padding zeroed by slices),
  the bias-accumulating ranking matmul, the kept ranking buffer, the uniform-draw dropout and
  the key- and query-gradient hand-offs, the value and output projections as one product and
  the selected head's energies copied from the ranking, the alignment gradient's dense ``bmm``
  at several threads, for an A/B in the same process.
- Thread dispatch: the numba kernels run their items on torch's own OpenMP team where torch
  uses libgomp (the header says which); the rows ``numba-pyth`` (recurrence) and
  ``native-pyth`` (layer) run the same kernels on Python threads (the fallback dispatch) in
  the same process, for an A/B.
- ``floor``: the layer's training step (the ``native`` row) against this machine's matmul
  rate. Every matmul of one step is logged (autograd's backward included), its floating-point
  work counted and each replayed alone at its own shapes and strides (min of runs): their sum
  is the step's matmul floor as executed, printed next to the step's own time in the same
  process, with the work the reference's outputs and gradients need (valid cells, no
  recomputation) and the rate of a large square ``torch.mm``.
- ``kernels``: the registered numba forward (which checks the range of ``p`` as it reads it)
  and backward kernels alone (no autograd; outputs allocated per call), min of runs, and ns
  per valid cell; the backward also with ``alpha.sum()``'s broadcast (stride-0) gradient.
- ``init``: not a speed test. A toy aligner (token embedding -> SMA -> token classifier on
  synthetic "mel" frames with known durations) trained from three stay-bias initialisations;
  reports the Viterbi frame accuracy against the true durations.

Usage::

    python benchmarks/bench_sma.py [--section recurrence] [--threads 2,1] [--quick] [--json PATH]
    python benchmarks/bench_sma.py --section layer --profile
    python benchmarks/bench_sma.py --section floor [--threads 2,1]
    python benchmarks/bench_sma.py --device cuda [--quick] [--json PATH]   # GPU: triton kernels

``--device cuda`` runs ``bench_sma_triton.py`` (reference loop vs ``impl="torch"`` vs
``impl="triton"``); without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from reference.keonlee_reference import ReferenceSMA, reference_recurrence  # noqa: E402
from speechattn.compat.keonlee import StepwiseMonotonicMultiheadAttention as CompatSMA  # noqa: E402
from speechattn.functional import stepwise_monotonic_alignment  # noqa: E402
from speechattn.nn import StepwiseMonotonicMultiheadAttention  # noqa: E402

FULL = dict(b=16, u=100, t=800, d=256, h=4)
QUICK = dict(b=4, u=30, t=200, d=64, h=4)


def _ragged(shape: dict[str, int], g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Text lengths in [0.7 U, U], mel lengths in [0.7 T, T] (70-100 and 560-800 at full size)."""
    b, u, t = shape["b"], shape["u"], shape["t"]
    text_len = torch.randint(int(0.7 * u), u + 1, (b,), generator=g)
    mel_len = torch.randint(int(0.7 * t), t + 1, (b,), generator=g)
    return text_len, mel_len


def _median_wall(fn: Callable[[], object], repeats: int, *, warmup: int = 1) -> float:
    return _wall(fn, repeats, warmup=warmup)[0]


_CPU: list[float] = []  # mean process CPU seconds per call of the last _wall call


def _wall(fn: Callable[[], object], repeats: int, *, warmup: int = 1) -> tuple[float, float]:
    """(median, min) wall seconds per call after ``warmup`` calls; the process CPU time (all
    threads) per call, over all ``repeats`` calls together, goes to ``_CPU[-1]``.

    The CPU time is read once around the whole loop, not per call: Linux adds the run time of a
    thread busy on another core to the process total at its scheduler ticks (4 ms apart at
    ``CONFIG_HZ=250``) or context switches, so for a call shorter than a tick whose other threads never sleep (torch's
    spinning OpenMP worker) a per-call reading gets either none or a whole tick of their time,
    and the median flips between ~1x and ~1x + 4 ms as the call crosses half a tick
    (``benchmarks/sma_modes.py``)."""
    for _ in range(warmup):
        fn()
    times = []
    c0 = time.process_time()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    _CPU.append((time.process_time() - c0) / repeats)
    return statistics.median(times), min(times)


def _load() -> str:
    """1-minute load average and CPU count: the context every figure here needs."""
    try:
        return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    except OSError:  # pragma: no cover
        return "load unknown"


def _fwd_and_fwd_bwd(run: Callable[[bool], object], repeats: int) -> dict[str, Any]:
    """Time ``run(False)`` (forward) and ``run(True)`` (forward + backward): wall median and min,
    process CPU per call (mean over the timed calls), in ms, with the load at the end."""
    fwd, fwd_min = _wall(lambda: run(False), repeats)
    fwd_cpu = _CPU[-1]
    fwd_bwd, fwd_bwd_min = _wall(lambda: run(True), repeats)
    return dict(
        fwd_ms=fwd * 1e3,
        fwd_min_ms=fwd_min * 1e3,
        fwd_cpu_ms=fwd_cpu * 1e3,
        fwd_bwd_ms=fwd_bwd * 1e3,
        fwd_bwd_min_ms=fwd_bwd_min * 1e3,
        fwd_bwd_cpu_ms=_CPU[-1] * 1e3,
        load=_load(),
    )


def _add_speedups(rows: list[dict[str, Any]]) -> None:
    """Ratios of the first row (the reference) over each row."""
    base = rows[0]
    for r in rows:
        r["fwd_speedup"] = base["fwd_ms"] / r["fwd_ms"]
        r["fwd_bwd_speedup"] = base["fwd_bwd_ms"] / r["fwd_bwd_ms"]
        r["fwd_bwd_cpu_speedup"] = base["fwd_bwd_cpu_ms"] / r["fwd_bwd_cpu_ms"]


# The numba kernels run their items on torch's own OpenMP team where torch uses libgomp; the
# rows named PY_THREADS run the same kernels on Python threads instead (the fallback dispatch),
# for an A/B in the same process.
PY_THREADS = "numba-pyth"


def _dispatch() -> str:
    from speechattn.kernels._omp import describe

    return describe()


def _team_available() -> bool:
    from speechattn.kernels._omp import team

    return team() is not None


def _on_python_threads(run: Callable[[bool], object]) -> Callable[[bool], object]:
    """``run`` with the numba kernels' items on Python threads (the non-OpenMP fallback)."""
    from speechattn.kernels._omp import set_mode

    def wrapped(backward: bool) -> object:
        old = set_mode("python")
        try:
            return run(backward)
        finally:
            set_mode(old)

    return wrapped


# ----------------------------------------------------------------------------- recurrence section


def _copy_gib_s(repeats: int) -> float:
    """Large-tensor copy bandwidth (read + write bytes per second, GiB/s), current threads."""
    src = torch.ones(64 * 2**20)  # 256 MiB float32
    dst = torch.empty_like(src)
    sec = _median_wall(lambda: dst.copy_(src), repeats)
    return 2 * src.numel() * 4 / sec / 2**30


def _recurrence_runs(shape: dict[str, int]) -> dict[str, Callable[[bool], object]]:
    b, u, t = shape["b"], shape["u"], shape["t"]
    g = torch.Generator().manual_seed(0)
    p = torch.rand(b, u, t, generator=g)
    text_len, mel_len = _ragged(shape, g)
    aw_prev = torch.zeros(b, u, 1)
    aw_prev[:, 0:1] = 1.0
    runs: dict[str, Callable[[bool], object]] = {}

    def make(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[bool], object]:
        x = p.clone().requires_grad_(True)

        def run(backward: bool) -> object:
            alpha = fn(x)
            if backward:
                x.grad = None
                alpha.sum().backward()
            return alpha

        return run

    runs["reference"] = make(lambda x: reference_recurrence(x, aw_prev))
    for impl in ("torch", "numba"):
        runs[impl] = make(
            lambda x, impl=impl: stepwise_monotonic_alignment(x, text_len, mel_len, impl=impl)
        )
    if _team_available():
        runs[PY_THREADS] = _on_python_threads(
            make(lambda x: stepwise_monotonic_alignment(x, text_len, mel_len, impl="numba"))
        )
    return runs


def section_recurrence(
    quick: bool, repeats: int, threads: list[int], profile: bool
) -> list[dict[str, Any]]:
    del profile
    shape = QUICK if quick else FULL
    b, u, t = shape["b"], shape["u"], shape["t"]
    mib = b * u * t * 4 / 2**20  # one padded float32 (b, u, t) tensor
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        copy_bw = _copy_gib_s(max(repeats, 5))
        runs = _recurrence_runs(shape)
        sub = []
        for impl, run in runs.items():
            reps = repeats if impl == "reference" else max(repeats, 21)
            row = _fwd_and_fwd_bwd(run, reps)
            row.update(
                section="recurrence",
                impl=impl,
                threads=n_threads,
                b=b,
                u=u,
                t=t,
                fwd_gib_s=2 * mib / 1024 / (row["fwd_ms"] / 1e3),
                fwd_bwd_gib_s=6 * mib / 1024 / (row["fwd_bwd_ms"] / 1e3),
                copy_gib_s=copy_bw,
            )
            sub.append(row)
        _add_speedups(sub)
        print(
            f"\nrecurrence: B={b} (one head per item) U={u} T={t} float32, p=torch.rand, ragged "
            f"lengths, loss alpha.sum(), threads={n_threads}; Tensor.copy_ {copy_bw:.1f} GiB/s; "
            f"{_load()}; numba {_dispatch()}"
            + (f" ({PY_THREADS}: Python threads)" if _team_available() else "")
        )
        print(
            f"{'impl':<11}{'fwd ms':>9}{'(min)':>8}{'x ref':>8}{'GiB/s':>7}{'fwd+bwd ms':>12}"
            f"{'(min)':>8}{'x ref':>8}{'GiB/s':>7}{'f+b CPU ms':>12}{'x ref':>8}"
        )
        for r in sub:
            print(
                f"{r['impl']:<11}{r['fwd_ms']:>9.2f}{r['fwd_min_ms']:>8.2f}{r['fwd_speedup']:>8.1f}"
                f"{r['fwd_gib_s']:>7.1f}{r['fwd_bwd_ms']:>12.2f}{r['fwd_bwd_min_ms']:>8.2f}"
                f"{r['fwd_bwd_speedup']:>8.1f}{r['fwd_bwd_gib_s']:>7.1f}"
                f"{r['fwd_bwd_cpu_ms']:>12.2f}{r['fwd_bwd_cpu_speedup']:>8.1f}"
            )
        rows += sub
    return rows


# ----------------------------------------------------------------------------- layer section


def _layer_setup(shape: dict[str, int], impl: str) -> Callable[[bool], object]:
    """Build one layer (train mode) and a ragged batch; return ``run(backward)``."""
    b, u, t, d, h = shape["b"], shape["u"], shape["t"], shape["d"], shape["h"]
    g = torch.Generator().manual_seed(0)
    text = torch.randn(b, u, d, generator=g)
    mel = torch.randn(b, t, d, generator=g)
    text_len, mel_len = _ragged(shape, g)
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
                layer.zero_grad(set_to_none=True)
                (cv.sum() + attn.sum()).backward()
            return cv

    else:
        layer = StepwiseMonotonicMultiheadAttention(embed_dim=d, num_heads=h, layer_norm=True)
        layer.train()
        need_weights = impl == NATIVE_W

        def run(backward: bool) -> object:
            out = layer(
                text,
                mel,
                mel,
                query_lengths=text_len,
                key_lengths=mel_len,
                need_weights=need_weights,
            )
            if backward:
                layer.zero_grad(set_to_none=True)
                (out.output.sum() + out.alignment.sum()).backward()
            return out.output

    return run


NATIVE_W = "native-w"  # the native layer's default call: per-head alignments returned too
LAYER_IMPLS = ("reference", "compat", "native", NATIVE_W)
NATIVE_PY = "native-pyth"  # the native layer with the numba kernels on Python threads
# the native layer with its CPU fast-path switches off (dense bmm, full noise draw, a fresh
# ranking buffer, nn.Dropout, the dense key gradient): the A/B of those paths in one process
NATIVE_DENSE = "native-dens"


# (module, switch) pairs that native-dens turns off
_FAST_SWITCHES = (
    ("speechattn.functional.monotonic_attention", "FAST_VALID_BLOCKS"),
    ("speechattn.functional.monotonic_attention", "FUSED_RANKING_BIAS"),
    ("speechattn.functional.monotonic_attention", "RANKING_WORKSPACE"),
    ("speechattn.functional.monotonic_attention", "REUSE_RANKING_ENERGIES"),
    ("speechattn.functional.monotonic_attention", "DENSE_CONTEXT_GRAD"),
    ("speechattn.nn.monotonic", "FAST_DROPOUT"),
    ("speechattn.nn.monotonic", "FAST_KEY_GRAD"),
    ("speechattn.nn.monotonic", "FAST_QUERY_GRAD"),
    ("speechattn.nn.monotonic", "FAST_CHAINED_PROJ"),
)


def _with_dense_paths(run: Callable[[bool], object]) -> Callable[[bool], object]:
    """``run`` with the layer's CPU fast-path switches (``_FAST_SWITCHES``) off."""
    import importlib

    mods = [(importlib.import_module(m), name) for m, name in _FAST_SWITCHES]

    def wrapped(backward: bool) -> object:
        old = [getattr(m, name) for m, name in mods]
        for m, name in mods:
            setattr(m, name, False)
        try:
            return run(backward)
        finally:
            for (m, name), value in zip(mods, old, strict=True):
                setattr(m, name, value)

    return wrapped


def section_layer(
    quick: bool, repeats: int, threads: list[int], profile: bool
) -> list[dict[str, Any]]:
    shape = QUICK if quick else FULL
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        sub = []
        impls = LAYER_IMPLS + (NATIVE_DENSE,) + ((NATIVE_PY,) if _team_available() else ())
        for impl in impls:
            if impl == NATIVE_PY:
                run = _on_python_threads(_layer_setup(shape, "native"))
            elif impl == NATIVE_DENSE:
                run = _with_dense_paths(_layer_setup(shape, "native"))
            else:
                run = _layer_setup(shape, impl)
            reps = repeats if impl == "reference" else max(repeats, 7)
            row = _fwd_and_fwd_bwd(run, reps)
            row.update(section="layer", impl=impl, threads=n_threads, **shape)
            sub.append(row)
        _add_speedups(sub)
        print(
            f"\nlayer: B={shape['b']} U={shape['u']} T={shape['t']} d={shape['d']} "
            f"H={shape['h']}, ragged, train mode, threads={n_threads}; {_load()}; "
            f"numba {_dispatch()}"
            + (f" ({NATIVE_PY}: Python threads)" if _team_available() else "")
        )
        print(
            f"{'impl':<11}{'fwd ms':>10}{'(min)':>9}{'x ref':>8}{'fwd+bwd ms':>12}{'(min)':>9}"
            f"{'x ref':>8}{'fwd CPU ms':>12}{'f+b CPU ms':>12}{'x ref':>8}"
        )
        for r in sub:
            print(
                f"{r['impl']:<11}{r['fwd_ms']:>10.1f}{r['fwd_min_ms']:>9.1f}{r['fwd_speedup']:>8.1f}"
                f"{r['fwd_bwd_ms']:>12.1f}{r['fwd_bwd_min_ms']:>9.1f}{r['fwd_bwd_speedup']:>8.1f}"
                f"{r['fwd_cpu_ms']:>12.1f}{r['fwd_bwd_cpu_ms']:>12.1f}{r['fwd_bwd_cpu_speedup']:>8.1f}"
            )
        rows += sub
        if profile:
            from torch.profiler import profile as torch_profile

            run = _layer_setup(shape, "native")
            run(True)
            with torch_profile() as prof:
                for _ in range(3):
                    run(True)
            print(f"\nnative layer fwd+bwd x3, threads={n_threads}, torch.profiler:")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
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


def section_init(
    quick: bool, repeats: int, threads: list[int], profile: bool
) -> list[dict[str, Any]]:
    """Stay-bias initialisation of an aligner: r = 3.5 (paper) vs p0 = 1 - U/T vs r = 0."""
    del repeats, threads, profile
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


# ----------------------------------------------------------------------------- kernels section


def section_kernels(
    quick: bool, repeats: int, threads: list[int], profile: bool
) -> list[dict[str, Any]]:
    """The registered numba kernels alone (no validation, no autograd), min of runs."""
    del profile
    from speechattn.kernels import get_sma_kernel

    shape = QUICK if quick else FULL
    b, u, t = shape["b"], shape["u"], shape["t"]
    g = torch.Generator().manual_seed(0)
    p = torch.rand(b, u, t, generator=g)
    grad = torch.ones(b, u, t)
    bcast = torch.ones(()).expand(b, u, t)  # alpha.sum()'s stride-0 gradient
    text_len, mel_len = _ragged(shape, g)
    alpha0 = torch.zeros(b, u)
    alpha0[:, 0] = 1.0
    kernel = get_sma_kernel("numba")
    alpha = kernel.forward(p, alpha0, text_len, mel_len, True)
    cells = float((text_len * mel_len).sum())
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        reps = max(repeats, 30)
        fwd = _wall(lambda: kernel.forward(p, alpha0, text_len, mel_len, True), reps)[1]
        bwd = _wall(lambda: kernel.backward(grad, p, alpha, alpha0, text_len, mel_len, True), reps)[
            1
        ]
        bwd_b = _wall(
            lambda: kernel.backward(bcast, p, alpha, alpha0, text_len, mel_len, True), reps
        )[1]
        rows.append(
            dict(
                section="kernels",
                threads=n_threads,
                b=b,
                u=u,
                t=t,
                load=_load(),
                fwd_min_ms=fwd * 1e3,
                bwd_min_ms=bwd * 1e3,
                bwd_broadcast_min_ms=bwd_b * 1e3,
                fwd_ns_per_cell=fwd * 1e9 / cells,
                bwd_ns_per_cell=bwd * 1e9 / cells,
            )
        )
        print(
            f"\nkernels (numba, mass='preserve'): B={b} U={u} T={t} float32, ragged, "
            f"threads={n_threads}, min of {reps}; {_load()}\n"
            f"forward {fwd * 1e3:.3f} ms ({fwd * 1e9 / cells:.2f} ns/valid cell), "
            f"backward {bwd * 1e3:.3f} ms ({bwd * 1e9 / cells:.2f} ns/valid cell), "
            f"backward of a broadcast gradient {bwd_b * 1e3:.3f} ms"
        )
    return rows


# ------------------------------------------------------------------------------- floor section

_GEMM_OPS = ("mm", "addmm", "bmm", "baddbmm")


def _log_gemms(fn: Callable[[], object]) -> list[tuple[Any, ...]]:
    """Every matmul ``fn()`` dispatches (autograd's backward included): ``(op, (shape, stride)
    of each operand, accumulator or None)``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls: list[tuple[Any, ...]] = []

    def spec(x: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return tuple(x.shape), tuple(x.stride())

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            name = func.overloadpacket.__name__.rstrip("_")
            if name in _GEMM_OPS:
                if name in ("mm", "bmm"):
                    calls.append((name, spec(args[0]), spec(args[1]), None))
                else:
                    calls.append((name, spec(args[1]), spec(args[2]), spec(args[0])))
            return func(*args, **(kwargs or {}))

    with Log():
        fn()
    return calls


def _gemm_flops(call: tuple[Any, ...]) -> int:
    """2 * m * k * n (times the batch for bmm/baddbmm)."""
    name, (sa, _), (sb, _), _ = call
    if name in ("mm", "addmm"):
        return 2 * sa[0] * sa[1] * sb[1]
    return 2 * sa[0] * sa[1] * sa[2] * sb[2]


def _replay_gemm(call: tuple[Any, ...], repeats: int) -> float:
    """Min wall seconds of one matmul of ``call``'s shapes and strides, alone."""
    name, (sa, sta), (sb, stb), acc = call
    a = torch.empty_strided(sa, sta).normal_()
    b = torch.empty_strided(sb, stb).normal_()
    if name == "mm":
        out = torch.empty(sa[0], sb[1])
        fn: Callable[[], object] = lambda: torch.mm(a, b, out=out)  # noqa: E731
    elif name == "bmm":
        out = torch.empty(sa[0], sa[1], sb[2])
        fn = lambda: torch.bmm(a, b, out=out)  # noqa: E731
    elif name == "addmm":
        c = torch.empty_strided(*acc).normal_()
        out = torch.empty(sa[0], sb[1])
        fn = lambda: torch.addmm(c, a, b, out=out)  # noqa: E731
    else:
        c = torch.empty_strided(*acc).normal_()
        fn = lambda: c.baddbmm_(a, b)  # noqa: E731
    return _wall(fn, repeats, warmup=2)[1]


def _needed_flops(shape: dict[str, int], text_len: torch.Tensor, mel_len: torch.Tensor) -> dict:
    """Matmul work the reference's outputs and their gradients need, by part (MFLOP), with the
    native layer's algorithm on valid rows and cells only: every head's energies (the focus-rate
    ranking), the selected head's energies reused (no recomputation), the context, the value and
    output projections as one product (``W_out @ W_v``), and in the backward only the selected
    head's blocks of the query and key projections (no input gradients: the benchmark's text and
    mel do not require them)."""
    d, h = shape["d"], shape["h"]
    dk = d // h
    ru, rt = int(text_len.sum()), int(mel_len.sum())
    cells = int((text_len * mel_len).sum())
    m = 1e-6
    return {
        "query and key projections, valid rows": 2 * (ru + rt) * d * d * m,
        "energies of every head, valid cells": 2 * h * cells * dk * m,
        "context alignment @ values, valid cells": 2 * cells * d * m,
        "value+output projection, valid tokens": (2 * ru * d * d + 2 * d**3) * m,
        "bwd: projection, input and weights": (4 * ru * d * d + 4 * d**3) * m,
        "bwd: context, alignment gradient": 2 * cells * d * m,
        "bwd: selected head's energies (q and k)": 4 * cells * dk * m,
        "bwd: q/k projection weights, selected block": 2 * (ru + rt) * dk * d * m,
    }


def _profile_step(
    step_fn: Callable[[], object], steps: int, top: int = 15
) -> tuple[float, list[tuple[str, float, float]]]:
    """``steps`` calls under ``torch.profiler``: (the matmuls' self CPU ms per step, the ``top``
    ops by self CPU as ``(name, ms per step, calls per step)``)."""
    from torch.profiler import profile as torch_profile

    with torch_profile() as prof:
        for _ in range(steps):
            step_fn()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    gemm = sum(
        e.self_cpu_time_total
        for e in events
        if e.key.removeprefix("aten::").rstrip("_") in _GEMM_OPS
    )
    rows = [(e.key, e.self_cpu_time_total / steps / 1e3, e.count / steps) for e in events[:top]]
    return gemm / steps / 1e3, rows


def section_floor(
    quick: bool, repeats: int, threads: list[int], profile: bool
) -> list[dict[str, Any]]:
    """The layer's training step against this machine's matmul rate.

    Logs every matmul of one native training step (``native`` row of the layer section), counts
    its floating-point work and replays each matmul alone at its own shapes and strides (min of
    runs): the sum is the step's matmul floor as executed. Also the work the reference's outputs
    need (``_needed_flops``) at the best rate measured for the step's shapes, the rate of one
    large square ``torch.mm``, and the step itself (median and min) in the same process.
    """
    del profile
    from collections import Counter

    shape = QUICK if quick else FULL
    g = torch.Generator().manual_seed(0)
    torch.randn(shape["b"], shape["u"], shape["d"], generator=g)
    torch.randn(shape["b"], shape["t"], shape["d"], generator=g)
    text_len, mel_len = _ragged(shape, g)  # the layer section's lengths (same draws)
    needed = _needed_flops(shape, text_len, mel_len)
    need_total = sum(needed.values())
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        run = _layer_setup(shape, "native")
        run(True)
        step_fn = functools.partial(run, True)
        calls = Counter(_log_gemms(step_fn))
        executed = sum(_gemm_flops(c) * n for c, n in calls.items()) * 1e-6
        reps = max(repeats, 10)
        floor_s, best = 0.0, 0.0
        by_op: dict[str, list[float]] = {}
        for c, n in calls.items():
            sec = _replay_gemm(c, reps)
            floor_s += sec * n
            rate = _gemm_flops(c) / sec * 1e-9
            best = max(best, rate)
            acc = by_op.setdefault(c[0], [0.0, 0.0, 0.0])
            acc[0] += n
            acc[1] += _gemm_flops(c) * n * 1e-6
            acc[2] += sec * n * 1e3
        big = 1024 if quick else 2048
        a, b2, o = torch.randn(big, big), torch.randn(big, big), torch.empty(big, big)
        square_fn = functools.partial(torch.mm, a, b2, out=o)
        square = 2 * big**3 / _wall(square_fn, 5, warmup=2)[1] * 1e-9
        step, step_min = _wall(step_fn, max(repeats, 7))
        in_step, top = _profile_step(step_fn, 5)
        print(
            f"\nfloor: B={shape['b']} U={shape['u']} T={shape['t']} d={shape['d']} H={shape['h']}, "
            f"native train step (need_weights=False), threads={n_threads}; {_load()}"
        )
        print(f"{'matmul op':<10}{'calls':>7}{'MFLOP':>10}{'alone ms':>10}{'GFLOP/s':>9}")
        for op, (n, mf, ms) in sorted(by_op.items()):
            print(f"{op:<10}{int(n):>7}{mf:>10.1f}{ms:>10.2f}{mf / ms:>9.1f}")
        print(
            f"executed {executed:.1f} MFLOP in {sum(calls.values())} matmuls; alone they take "
            f"{floor_s * 1e3:.1f} ms ({executed / floor_s * 1e-3:.1f} GFLOP/s); best shape "
            f"{best:.1f} GFLOP/s; {big}^3 torch.mm {square:.1f} GFLOP/s"
        )
        print("needed (the reference's outputs and gradients, valid cells, no recomputation):")
        for name, mf in needed.items():
            print(f"  {name:<46}{mf:>9.1f} MFLOP")
        agg = executed / floor_s * 1e-3  # GFLOP/s of the step's own matmuls, alone
        print(
            f"  {'total':<46}{need_total:>9.1f} MFLOP = {need_total / agg:.1f} ms at the step's "
            f"matmul rate ({agg:.1f} GFLOP/s), {need_total / best:.1f} ms at the best shape's"
        )
        print(
            f"step {step * 1e3:.1f} ms median ({step_min * 1e3:.1f} min): "
            f"{step / floor_s:.2f}x its matmuls alone, {step * agg * 1e3 / need_total:.2f}x the "
            f"needed work at the step's matmul rate"
        )
        print(
            f"in the step (torch.profiler, 5 steps): matmuls {in_step:.1f} ms self CPU per step "
            f"({in_step / floor_s * 1e-3:.2f}x their time alone); top ops by self CPU per step:"
        )
        for name, ms, n in top:
            print(f"  {name:<40}{ms:>8.2f} ms{n:>7.1f} calls")
        rows.append(
            dict(
                section="floor",
                matmuls_in_step_ms=in_step,
                top_ops=[dict(op=n, ms=ms, calls=c) for n, ms, c in top],
                threads=n_threads,
                executed_mflop=executed,
                matmul_calls=sum(calls.values()),
                matmuls_alone_ms=floor_s * 1e3,
                best_gflop_s=best,
                square_gflop_s=square,
                needed_mflop=need_total,
                needed_ms_at_best=need_total / best,
                needed_ms_at_step_rate=need_total / (executed / floor_s * 1e-3),
                step_ms=step * 1e3,
                step_min_ms=step_min * 1e3,
                by_op={k: dict(calls=v[0], mflop=v[1], alone_ms=v[2]) for k, v in by_op.items()},
                load=_load(),
                **shape,
            )
        )
    return rows


SECTIONS: dict[str, Callable[[bool, int, list[int], bool], list[dict[str, Any]]]] = {
    "floor": section_floor,
    "recurrence": section_recurrence,
    "layer": section_layer,
    "init": section_init,
    "kernels": section_kernels,
}


def _threads(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected e.g. 2,1; found {text!r}") from exc
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected positive thread counts; found {text!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--section", choices=sorted(SECTIONS), action="append")
    ap.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument(
        "--threads",
        type=_threads,
        default=[2, 1],
        help="torch thread counts to measure at, comma-separated (default 2,1)",
    )
    ap.add_argument("--profile", action="store_true", help="layer: torch.profiler table")
    ap.add_argument("--json", type=Path, default=None, help="write all rows to this JSON file")
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
    repeats = args.repeats or (2 if args.quick else 5)
    rows: list[dict[str, Any]] = []
    for name in args.section or ["recurrence", "layer"]:
        rows += SECTIONS[name](args.quick, repeats, args.threads, args.profile)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
