"""mha aligner: 2 processes x batch 4 against 1 process x batch 8 (max abs weight difference).

Run from the repository root (``PYTHONPATH=src:.``); under torchrun it trains and saves rank 0's
weights to OUT, without torchrun it trains the 1-process run and compares it with OUT::

    python -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/ddp_mha_check.py OUT
    python benchmarks/ddp_mha_check.py OUT
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
from tests.align_toy import N_MELS, NUM_SYMBOLS, toy_items

from speechattn.recipes.align.model import AlignerConfig
from speechattn.recipes.align.train import TrainConfig, train_aligner

__all__: list[str] = []


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    cfg = AlignerConfig(kind="mha", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16, dropout=0.0)
    items = toy_items(16, 0)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=timedelta(seconds=60))
        res = train_aligner(cfg, items, TrainConfig(steps=3, batch_size=4), progress=False)
        if dist.get_rank() == 0:
            torch.save(res.model.state_dict(), out)
        dist.barrier()
        return
    one = train_aligner(cfg, items, TrainConfig(steps=3, batch_size=8), progress=False)
    ddp = torch.load(out, weights_only=True)
    diff = max(float((ddp[k] - v).abs().max()) for k, v in one.model.state_dict().items())
    print(f"{out}: max |w_2proc - w_1proc| = {diff:.2g}")


if __name__ == "__main__":
    main()
