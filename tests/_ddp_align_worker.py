"""Run under torchrun: trains a tiny aligner with DDP on 2 CPU processes (gloo), writes weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.align_toy import N_MELS, NUM_SYMBOLS, toy_items

from speechattn.recipes.align.model import AlignerConfig
from speechattn.recipes.align.train import TrainConfig, dist_info, train_aligner


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    rank, world = dist_info()
    items = toy_items(24, 0)
    cfg = AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16, dropout=0.0)
    res = train_aligner(
        cfg,
        items,
        TrainConfig(steps=6, batch_size=4, checkpoint_every=3),
        checkpoint=out / "ck.pt",
        progress=False,
    )
    torch.save(res.model.state_dict(), out / f"rank{rank}.pt")
    print(f"rank {rank}/{world} done")


if __name__ == "__main__":
    main()
