"""Worker for the 2-process gloo test of distributed contrastive negatives (run as a script).

Usage: python _contrastive_dist_worker.py INPUTS.pt OUT_DIR
Each rank takes its half of the batch, computes the loss with gather_distributed=True,
backpropagates, and saves (loss, grad of its audio slice) to OUT_DIR/rank{r}.pt.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _run(rank: int, world: int, inputs_path: str, out_dir: str, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from speechattn.functional import pooled_contrastive_loss, sequence_contrastive_loss

    data = torch.load(inputs_path)
    b = data["audio"].shape[0] // world
    sl = slice(rank * b, (rank + 1) * b)
    results = {}
    for case in data["cases"]:
        audio = data["audio"][sl].clone().requires_grad_(True)
        text = data["text"][sl].clone()
        if case["kind"] == "sequence":
            lengths = None if case["text_lengths"] is None else case["text_lengths"][sl]
            loss = sequence_contrastive_loss(
                audio,
                text,
                temperature=0.15,
                text_lengths=lengths,
                direction=case["direction"],
                gather_distributed=True,
            )
        else:
            loss = pooled_contrastive_loss(
                audio, text, temperature=0.1, direction=case["direction"], gather_distributed=True
            )
        loss.backward()
        assert audio.grad is not None
        results[case["name"]] = (loss.detach(), audio.grad.detach())
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    inputs_path, out_dir = sys.argv[1], sys.argv[2]
    world = 2
    init_file = os.path.join(out_dir, "init")
    mp.spawn(_run, args=(world, inputs_path, out_dir, init_file), nprocs=world, join=True)


if __name__ == "__main__":
    main()
