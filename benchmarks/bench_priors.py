"""Diagonal attention prior: the tfsr seed's approach vs ``diagonal_bias`` + SDPA.

Three contenders, same inputs, same process, ratios against the seed:

* ``seed``: the seed's code ported to torch: the penalty built by its Python loop of
  ``band_part(ones, n, n) - 1`` every call, explicit ``softmax(q k^T / sqrt(d) - 1e9 * pad)``,
  ``+ scale * penalty``, ``+ |min|``, renormalise, ``@ v``. The loop runs on one ``(Tq, Tk)`` matrix
  then broadcasts over batch and heads (kinder than the seed, which loops over a
  ``(B, H, L, L)`` tensor), so the speed-ups below are lower bounds.
* ``seed_cached``: the same with the penalty built once outside the timed region.
* ``ours``: ``diagonal_bias`` (built every call, relative distance, ragged lengths) +
  ``prior_attention`` with its default ``impl="auto"``: on one CPU thread the ``varlen`` path (explicit
  attention over each item's valid block, hand-written backward reusing the saved weights).
* ``ours_sdpa``: the same with ``impl="sdpa"`` (``F.scaled_dot_product_attention`` on the padded
  batch with the bias, padded rows zeroed): the path ``ours`` took before ``varlen`` existed.
* ``gemm`` (forward only): just ``q @ k^T`` and ``(.) @ v`` on the padded batch, no softmax: the
  matrix-multiply floor of any padded implementation, the seed's included.

Timings are the minimum over interleaved rounds of wall time (default) or of this thread's CPU
time (``--clock cpu``: robust to time-slicing on a shared machine, not to cache contention).
``--full-lengths`` makes every item full length (nothing for ``varlen`` to skip).

Also reported: ``diagonal_bias`` build time alone and the bytes of each approach's prior tensor
(the seed's is per head, ``(B, H, Tq, Tk)``; ours is ``(B, 1, Tq, Tk)``); on CUDA, peak memory.

Usage::

    python benchmarks/bench_priors.py             # B=16, H=4, d=64, 100x800 and 400x400, fp32
    python benchmarks/bench_priors.py --quick     # tiny shapes, seconds
    python benchmarks/bench_priors.py --json out.json --threads 2
    python benchmarks/bench_priors.py --threads 1 --clock cpu --full-lengths
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from speechattn.functional import diagonal_bias, prior_attention


def seed_penalty_loop(tq: int, tk: int, width: int, device: torch.device) -> torch.Tensor:
    """The seed's create_attention_penalty: accumulate band_part(ones, n, n) - 1 over n."""
    ones = torch.ones(tq, tk, device=device)
    accum = torch.zeros(tq, tk, device=device)
    for n in range(width - 1, max(tq, tk) - 1):
        accum += torch.tril(torch.triu(ones, -n), n) - 1  # tf.linalg.band_part(ones, n, n) - 1
    return accum


def seed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pad: torch.Tensor,
    penalty: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """The seed's scaled_dot_product_attention with the post-softmax penalty."""
    logits = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    logits = logits + pad[:, None, None, :] * -1e9
    w = torch.softmax(logits, dim=-1)
    w = w + penalty * scale
    w = w + w.min().abs()
    inv_sum = 1.0 / w.sum(dim=-1)
    w = torch.einsum("ijlm,ijl->ijlm", w, inv_sum)
    return torch.matmul(w, v)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCK = time.perf_counter  # set to time.thread_time by --clock cpu


def timeit(
    fn: Callable[[], object], device: torch.device, *, repeats: int, warmup: int = 1
) -> float:
    """Best (minimum) time of ``fn`` in ms."""
    return time_interleaved({"x": fn}, device, repeats=repeats, warmup=warmup)["x"]


def time_interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, *, repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Best (minimum) time in ms of each function (``CLOCK``), timed in interleaved rounds.

    Interleaving (A, B, C, A, B, C, ...) exposes every contender to the same load on a shared
    machine, and the minimum is the least noisy estimate of the unloaded time.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = CLOCK()
            fn()
            _sync(device)
            best[name] = min(best[name], (CLOCK() - t0) * 1e3)
    return best


def contenders(
    b: int,
    h: int,
    d: int,
    tq: int,
    tk: int,
    *,
    device: torch.device,
    width: int,
    full_lengths: bool = False,
) -> tuple[dict[str, Callable[..., torch.Tensor]], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The timed functions (``seed``, ``seed_cached``, ``ours``, ``ours_sdpa``, ``gemm``,
    ``build``, ``loop``) and q, k, v."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(b, h, tq, d, generator=gen).to(device)
    k = torch.randn(b, h, tk, d, generator=gen).to(device)
    v = torch.randn(b, h, tk, d, generator=gen).to(device)
    # Ragged batch: item 0 full length, others between 60% and 100%.
    lq = torch.randint(int(0.6 * tq), tq + 1, (b,), generator=gen)
    lk = torch.randint(int(0.6 * tk), tk + 1, (b,), generator=gen)
    lq[0], lk[0] = tq, tk
    if full_lengths:
        lq.fill_(tq)
        lk.fill_(tk)
    lq, lk = lq.to(device), lk.to(device)
    pad = (torch.arange(tk, device=device) >= lk[:, None]).float()
    scale = 1.0
    cached = seed_penalty_loop(tq, tk, width, device).expand(b, h, tq, tk)

    def seed(qq=q, kk=k, vv=v):  # type: ignore[no-untyped-def]
        pen = seed_penalty_loop(tq, tk, width, device).expand(b, h, tq, tk)
        return seed_attention(qq, kk, vv, pad, pen, scale)

    def seed_c(qq=q, kk=k, vv=v):  # type: ignore[no-untyped-def]
        return seed_attention(qq, kk, vv, pad, cached, scale)

    def build():  # type: ignore[no-untyped-def]
        return diagonal_bias(
            lq, lk, kind="linear", scale=scale, max_query_len=tq, max_key_len=tk, device=device
        )

    def ours(qq=q, kk=k, vv=v):  # type: ignore[no-untyped-def]
        return prior_attention(
            qq, kk, vv, bias=build(), query_lengths=lq, key_lengths=lk, bias_masked=True
        ).output

    def ours_sdpa(qq=q, kk=k, vv=v):  # type: ignore[no-untyped-def]
        return prior_attention(
            qq,
            kk,
            vv,
            bias=build(),
            query_lengths=lq,
            key_lengths=lk,
            bias_masked=True,
            impl="sdpa",
        ).output

    def gemm(qq=q, kk=k, vv=v):  # type: ignore[no-untyped-def]
        return torch.matmul(torch.matmul(qq, kk.transpose(-2, -1)), vv)

    fns: dict[str, Callable[..., torch.Tensor]] = {
        "seed": seed,
        "seed_cached": seed_c,
        "ours": ours,
        "ours_sdpa": ours_sdpa,
        "gemm": gemm,
        "build": build,
        "loop": lambda: seed_penalty_loop(tq, tk, width, device),
    }
    return fns, (q, k, v)


def _fwd_bwd(fn: Callable[..., torch.Tensor], qkv: tuple[torch.Tensor, ...]) -> Callable[[], None]:
    qg, kg, vg = (t.clone().requires_grad_(True) for t in qkv)

    def run() -> None:
        out = fn(qg, kg, vg)
        out.sum().backward()
        qg.grad = kg.grad = vg.grad = None

    return run


def vm_hwm_kib() -> int:
    """Peak resident set size of this process so far (Linux ``/proc/self/status`` VmHWM), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def peak_rss_mib(
    name: str, b: int, h: int, d: int, tq: int, tk: int, width: int, full_lengths: bool = False
) -> float:
    """Peak resident memory added by one fwd+bwd of a contender, in a fresh process (CPU)."""
    # VmHWM (this process's RSS high-water mark) rather than ru_maxrss, which a child started
    # by a large parent inherits on Linux.
    code = (
        "import sys, torch; sys.argv = ['x']; "
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
        "import bench_priors as bp; torch.set_num_threads(1); "
        f"fns, qkv = bp.contenders({b}, {h}, {d}, {tq}, {tk}, device=torch.device('cpu'), "
        f"width={width}, full_lengths={full_lengths}); "
        f"run = bp._fwd_bwd(fns[{name!r}], qkv); "
        "r0 = bp.vm_hwm_kib(); run(); print((bp.vm_hwm_kib() - r0) / 1024)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(res.stdout.strip().splitlines()[-1])


def run_shape(
    b: int,
    h: int,
    d: int,
    tq: int,
    tk: int,
    *,
    device: torch.device,
    repeats: int,
    width: int,
    faithful_iters: int,
    memory: bool = False,
    full_lengths: bool = False,
) -> dict[str, float | int | str]:
    fns, qkv = contenders(b, h, d, tq, tk, device=device, width=width, full_lengths=full_lengths)
    seed, seed_c, ours, build = fns["seed"], fns["seed_cached"], fns["ours"], fns["build"]

    def with_bwd(fn):  # type: ignore[no-untyped-def]
        return _fwd_bwd(fn, qkv)

    row: dict[str, float | int | str] = {
        "B": b,
        "H": h,
        "d": d,
        "Tq": tq,
        "Tk": tk,
        "dtype": "fp32",
        "lengths": "full" if full_lengths else "ragged 60-100%",
    }
    with torch.no_grad():
        fwd = time_interleaved(
            {
                "seed": seed,
                "seed_cached": seed_c,
                "ours": ours,
                "ours_sdpa": fns["ours_sdpa"],
                "gemm": fns["gemm"],
                "build": build,
                "loop": fns["loop"],
            },
            device,
            repeats=repeats,
        )
    row["fwd_seed_ms"] = fwd["seed"]
    row["fwd_seed_cached_ms"] = fwd["seed_cached"]
    row["fwd_ours_ms"] = fwd["ours"]
    row["fwd_ours_sdpa_ms"] = fwd["ours_sdpa"]
    row["fwd_gemm_ms"] = fwd["gemm"]
    row["bias_build_ms"] = fwd["build"]
    row["penalty_loop_ms"] = fwd["loop"]
    both = time_interleaved(
        {
            "seed": with_bwd(seed),
            "seed_cached": with_bwd(seed_c),
            "ours": with_bwd(ours),
            "ours_sdpa": with_bwd(fns["ours_sdpa"]),
        },
        device,
        repeats=repeats,
    )
    row["fwdbwd_seed_ms"] = both["seed"]
    row["fwdbwd_seed_cached_ms"] = both["seed_cached"]
    row["fwdbwd_ours_ms"] = both["ours"]
    row["fwdbwd_ours_sdpa_ms"] = both["ours_sdpa"]
    row["prior_bytes_seed"] = b * h * tq * tk * 4  # the seed materialises (B, H, L, L)
    if faithful_iters > 0:
        # The seed's loop really runs on (B, H, L, L) tensors; too slow to time whole, so time
        # a few iterations and extrapolate to all max(Tq, Tk) - width of them.
        ones = torch.ones(b, h, tq, tk, device=device)
        acc = torch.zeros(b, h, tq, tk, device=device)

        def some_iters():  # type: ignore[no-untyped-def]
            for n in range(faithful_iters):
                acc.add_(torch.tril(torch.triu(ones, -n), n) - 1)

        per_iter = timeit(some_iters, device, repeats=1, warmup=0) / faithful_iters
        n_iters = max(tq, tk) - 1 - (width - 1)
        row["penalty_loop_bhll_ms_extrapolated"] = per_iter * n_iters
        row["fwd_speedup_vs_seed_bhll_extrapolated"] = (
            per_iter * n_iters + float(row["fwd_seed_cached_ms"])
        ) / float(row["fwd_ours_ms"])
    row["prior_bytes_ours"] = build().untyped_storage().nbytes()
    if memory and device.type == "cpu":
        for name in ("seed", "seed_cached", "ours", "ours_sdpa"):
            row[f"peak_rss_mib_fwdbwd_{name}"] = peak_rss_mib(
                name, b, h, d, tq, tk, width, full_lengths
            )
    if device.type == "cuda":
        for name, fn in (
            ("seed", seed),
            ("seed_cached", seed_c),
            ("ours", ours),
            ("ours_sdpa", fns["ours_sdpa"]),
        ):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            with_bwd(fn)()
            row[f"peak_mib_fwdbwd_{name}"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    for kind in ("fwd", "fwdbwd"):
        row[f"{kind}_speedup_vs_seed"] = float(row[f"{kind}_seed_ms"]) / float(
            row[f"{kind}_ours_ms"]
        )
        row[f"{kind}_speedup_vs_cached"] = float(row[f"{kind}_seed_cached_ms"]) / float(
            row[f"{kind}_ours_ms"]
        )
        row[f"{kind}_sdpa_speedup_vs_cached"] = float(row[f"{kind}_seed_cached_ms"]) / float(
            row[f"{kind}_ours_sdpa_ms"]
        )
    # Sanity: both compute a finite output of the same shape.
    with torch.no_grad():
        if not (torch.isfinite(ours()).all() and ours().shape == seed_c().shape):
            raise RuntimeError("ours produced a non-finite output or a different shape")
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--width", type=int, default=1, help="the seed's attention_penalty_width")
    p.add_argument(
        "--faithful-iters",
        type=int,
        default=0,
        help="also time this many iterations of the seed's loop on (B, H, L, L) and extrapolate",
    )
    p.add_argument(
        "--memory",
        action="store_true",
        help="measure peak RSS of one fwd+bwd per contender in a fresh process (CPU)",
    )
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="minimum wall time, or minimum CPU time of this thread (use with --threads 1)",
    )
    p.add_argument(
        "--full-lengths", action="store_true", help="every item full length (no padding)"
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    global CLOCK
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.quick:
        shapes, b, h, d, repeats = [(20, 160), (80, 80)], 4, 4, 32, 2
    else:
        shapes, b, h, d, repeats = [(100, 800), (400, 400)], 16, 4, 64, args.repeats
    rows = [
        run_shape(
            b,
            h,
            d,
            tq,
            tk,
            device=device,
            repeats=repeats,
            width=args.width,
            faithful_iters=args.faithful_iters,
            memory=args.memory,
            full_lengths=args.full_lengths,
        )
        for tq, tk in shapes
    ]
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"best of {repeats} ({args.clock} ms), lengths {rows[0]['lengths']}"
    )
    hdr = (
        f"{'shape':>16} {'pass':>7} {'seed':>9} {'seed_cached':>12} {'ours_sdpa':>10} "
        f"{'ours':>8} {'gemm':>7} {'x seed':>7} {'x cached':>9} {'sdpa x cached':>14}"
    )
    print(hdr)
    for r in rows:
        shape = f"{r['B']}x{r['H']}x{r['Tq']}x{r['Tk']}"
        for kind in ("fwd", "fwdbwd"):
            gemm = f"{float(r['fwd_gemm_ms']):7.1f}" if kind == "fwd" else f"{'':>7}"
            print(
                f"{shape:>16} {kind:>7} {r[f'{kind}_seed_ms']:9.1f} "
                f"{r[f'{kind}_seed_cached_ms']:12.1f} {r[f'{kind}_ours_sdpa_ms']:10.1f} "
                f"{r[f'{kind}_ours_ms']:8.1f} {gemm} {r[f'{kind}_speedup_vs_seed']:7.1f} "
                f"{r[f'{kind}_speedup_vs_cached']:9.2f} "
                f"{r[f'{kind}_sdpa_speedup_vs_cached']:14.2f}"
            )
    print(
        f"{'shape':>16} {'bias build ms':>14} {'seed loop ms':>13} {'prior MiB seed':>15} {'ours':>6}"
    )
    for r in rows:
        shape = f"{r['B']}x{r['H']}x{r['Tq']}x{r['Tk']}"
        print(
            f"{shape:>16} {r['bias_build_ms']:14.2f} {r['penalty_loop_ms']:13.1f} "
            f"{int(r['prior_bytes_seed']) / 2**20:15.1f} {int(r['prior_bytes_ours']) / 2**20:6.1f}"
        )
    for r in rows:
        if "peak_rss_mib_fwdbwd_ours" in r:
            print(
                f"peak RSS of one fwd+bwd, {r['Tq']}x{r['Tk']} (MiB): "
                f"seed {float(r['peak_rss_mib_fwdbwd_seed']):.0f}, "
                f"seed_cached {float(r['peak_rss_mib_fwdbwd_seed_cached']):.0f}, "
                f"ours_sdpa {float(r['peak_rss_mib_fwdbwd_ours_sdpa']):.0f}, "
                f"ours {float(r['peak_rss_mib_fwdbwd_ours']):.0f}"
            )
    for r in rows:
        if "penalty_loop_bhll_ms_extrapolated" in r:
            print(
                f"seed loop on (B, H, L, L) as the seed runs it, {r['Tq']}x{r['Tk']}: "
                f"~{float(r['penalty_loop_bhll_ms_extrapolated']):.0f} ms per call "
                f"(extrapolated from {args.faithful_iters} iterations); forward speed-up "
                f"~{float(r['fwd_speedup_vs_seed_bhll_extrapolated']):.0f}x"
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "torch": torch.__version__,
                    "device": str(device),
                    "threads": torch.get_num_threads(),
                    "clock": args.clock,
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
