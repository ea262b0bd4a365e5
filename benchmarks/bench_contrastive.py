"""Sequence contrastive loss: seed 004's broadcast formula vs speechattn's contraction.

Compares, in the same process, forward+backward time and peak memory (tracked per tensor
allocation with torch's MemTracker, so CPU works too; CUDA also reports max_memory_allocated),
checks value and gradient equality in float64, and shows how both grow with the batch size.

    python benchmarks/bench_contrastive.py            # B=32, L=77, D=1024 + growth to B=256
    python benchmarks/bench_contrastive.py --quick    # small shapes, seconds
    python benchmarks/bench_contrastive.py --json out.json
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
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from speechattn.functional import sequence_contrastive_loss


def seed_loss(embeddings1: Tensor, embeddings2: Tensor, temperature: float = 0.15) -> Tensor:
    """Seed 004's Contrastive_loss (broadcasts to B x B x L x D)."""
    cos_sim = torch.cosine_similarity(embeddings1.unsqueeze(1), embeddings2.unsqueeze(0), dim=-1)
    cos_sim = cos_sim / temperature
    labels = torch.arange(embeddings1.size(0)).unsqueeze(1).repeat(1, embeddings1.size(1))
    return F.cross_entropy(cos_sim, labels.to(embeddings1.device))


def ours_loss(a: Tensor, t: Tensor) -> Tensor:
    return sequence_contrastive_loss(a, t, temperature=0.15)


def _inputs(b: int, length: int, d: int, dtype: torch.dtype, device: str) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(b)
    a = torch.randn(b, length, d, generator=g, dtype=dtype).to(device).requires_grad_(True)
    t = torch.randn(b, length, d, generator=g, dtype=dtype).to(device)  # frozen text side
    return a, t


def _step(fn: Callable[[Tensor, Tensor], Tensor], a: Tensor, t: Tensor) -> Tensor:
    a.grad = None
    loss = fn(a, t)
    loss.backward()
    return loss.detach()


def peak_mib(fn: Callable[[Tensor, Tensor], Tensor], a: Tensor, t: Tensor) -> float:
    """Peak memory of one forward+backward above what existed before (MiB)."""
    if a.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _step(fn, a, t)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    with tracker:
        _step(fn, a, t)
    snap = tracker.get_tracker_snapshot("peak")
    return max(v["Total"] for v in snap.values()) / 2**20


def time_ms(fn: Callable[[Tensor, Tensor], Tensor], a: Tensor, t: Tensor, reps: int) -> float:
    _step(fn, a, t)  # warm-up
    times = []
    for _ in range(reps):
        if a.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        _step(fn, a, t)
        if a.is_cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def check_equal(b: int, length: int, d: int, device: str) -> dict[str, float]:
    a, t = _inputs(b, length, d, torch.float64, device)
    t.requires_grad_(True)
    ref = seed_loss(a, t)
    ref.backward()
    ga, gt = a.grad.clone(), t.grad.clone()  # type: ignore[union-attr]
    a.grad, t.grad = None, None
    ours = ours_loss(a, t)
    ours.backward()
    return {
        "B": b,
        "loss_seed": float(ref.detach()),
        "loss_ours": float(ours.detach()),
        "abs_err_loss": abs(float(ref.detach()) - float(ours.detach())),
        "max_abs_err_grad_audio": float((a.grad - ga).abs().max()),  # type: ignore[operator]
        "max_abs_err_grad_text": float((t.grad - gt).abs().max()),  # type: ignore[operator]
        "max_abs_grad_audio": float(ga.abs().max()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small shapes (L=16, D=64, B<=32)")
    p.add_argument("--length", type=int, default=77)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32, help="headline batch size")
    p.add_argument("--max-batch", type=int, default=256)
    p.add_argument(
        "--seed-max-batch", type=int, default=32, help="largest B run with the seed formula"
    )
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.quick:
        args.length, args.dim, args.batch, args.max_batch, args.seed_max_batch = 16, 64, 16, 32, 16
        args.reps = 3
    length, d, dev = args.length, args.dim, args.device
    print(
        f"device={dev} threads={torch.get_num_threads()} torch={torch.__version__} L={length} D={d}"
    )

    eq = check_equal(args.batch, length, d, dev)
    print(
        f"float64 equality at B={args.batch}: |loss diff|={eq['abs_err_loss']:.2e} "
        f"max|grad audio diff|={eq['max_abs_err_grad_audio']:.2e} "
        f"max|grad text diff|={eq['max_abs_err_grad_text']:.2e} (max|grad|={eq['max_abs_grad_audio']:.2e})"
    )

    rows = []
    sizes = sorted({b for b in (8, 16, 32, 64, 128, 256) if b <= args.max_batch} | {args.batch})
    print(
        f"{'B':>4} {'input MiB':>9} {'seed ms':>9} {'ours ms':>8} {'speedup':>8} "
        f"{'seed MiB':>9} {'ours MiB':>9} {'mem ratio':>9} {'ours/input':>10}"
    )
    for b in sizes:
        a, t = _inputs(b, length, d, torch.float32, dev)
        input_mib = a.numel() * a.element_size() / 2**20
        row: dict[str, float | int | None] = {"B": b, "input_mib": input_mib}
        row["ours_ms"] = time_ms(ours_loss, a, t, args.reps)
        row["ours_mib"] = peak_mib(ours_loss, a, t)
        if b <= args.seed_max_batch:
            row["seed_ms"] = time_ms(seed_loss, a, t, max(1, args.reps // 2))
            row["seed_mib"] = peak_mib(seed_loss, a, t)
        else:
            row["seed_ms"] = row["seed_mib"] = None
        rows.append(row)

        def fmt(x: float | int | None, spec: str) -> str:
            width = int(spec.split(".")[0])
            return "-".rjust(width) if x is None else format(x, spec)

        speed = None if row["seed_ms"] is None else row["seed_ms"] / row["ours_ms"]  # type: ignore[operator]
        mem = None if row["seed_mib"] is None else row["seed_mib"] / row["ours_mib"]  # type: ignore[operator]
        row["speedup"], row["mem_ratio"] = speed, mem
        print(
            f"{b:>4} {input_mib:>9.1f} {fmt(row['seed_ms'], '9.1f')} {row['ours_ms']:>8.2f} "
            f"{fmt(speed, '8.1f')} {fmt(row['seed_mib'], '9.1f')} {row['ours_mib']:>9.1f} "
            f"{fmt(mem, '9.1f')} {row['ours_mib'] / input_mib:>10.2f}"  # type: ignore[operator]
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "equality": eq, "rows": rows},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
