"""Training-step cost of the speaker trunks (TDNN vs ECAPA-TDNN-style), as a ratio to the TDNN.

One optimiser step (forward, AAM softmax over 480 classes, backward, Adam) on a batch of the
recipe's shape: 48 crops of 100-250 frames x 40 log-mels, ASTP pooling. Prints seconds per step,
the ratio to the shipped TDNN (64 channels) measured in the same process, and the minutes 2000
steps would take (the recipe's default), at the given thread count.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_speaker_trunks.py --threads 1
    PYTHONPATH=src python benchmarks/bench_speaker_trunks.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from speechattn.recipes.speaker.config import SpeakerConfig
from speechattn.recipes.speaker.model import AAMSoftmax, build_encoder

CASES = [("tdnn", 64), ("ecapa", 64), ("ecapa", 96), ("ecapa", 128)]


def _step_seconds(trunk: str, channels: int, *, repeats: int, pooling: str) -> tuple[float, int]:
    torch.manual_seed(0)
    cfg = SpeakerConfig(trunk=trunk, channels=channels)
    model = build_encoder(cfg, pooling)
    head = AAMSoftmax(cfg.embed_dim, 480, margin=0.2, scale=30.0)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()])
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(100, 251, (48,), generator=g)
    x = torch.randn(48, int(lengths.max()), cfg.n_mels, generator=g)
    y = torch.randint(0, 480, (48,), generator=g)
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        loss = head(model(x, lengths), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7, help="timed steps per case (median)")
    ap.add_argument("--pooling", default="ASTP")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    base = None
    for trunk, channels in CASES:
        sec, params = _step_seconds(trunk, channels, repeats=args.repeats, pooling=args.pooling)
        base = base if base is not None else sec
        rows.append(
            {
                "trunk": trunk,
                "channels": channels,
                "params": params,
                "s_per_step": sec,
                "ratio_vs_tdnn64": sec / base,
                "minutes_2000_steps": sec * 2000 / 60,
                "threads": args.threads,
            }
        )
    print(f"threads={args.threads} pooling={args.pooling} batch 48 x 100-250 frames")
    print("| trunk | channels | params | s/step | x TDNN-64 | 2000 steps (min) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['trunk']} | {r['channels']} | {r['params']:,} | {r['s_per_step']:.3f} | "
            f"{r['ratio_vs_tdnn64']:.2f} | {r['minutes_2000_steps']:.1f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
