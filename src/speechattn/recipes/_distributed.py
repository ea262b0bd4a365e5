"""The process group of a recipe run under torchrun: started once, ended the same safe way.

``align``, ``speaker`` and ``audio2clip train`` start the default process group through
:func:`start_process_group` when ``WORLD_SIZE > 1`` and end it through :func:`end_process_group`
on the way out of the command:

* after a run that finished on this rank: ``barrier()`` first, so that no rank is still in a
  collective or still writing (rank 0 saves the outputs last) when a peer tears its side down,
  then ``destroy_process_group()``. Destroying without the barrier is the pattern under which
  gloo once aborted a rank in teardown (SIGABRT, "terminate called without an active
  exception") while rank 0 was still writing;
* after a failure or Ctrl-C on this rank: nothing. A barrier would wait for peers that may never
  come (the one that failed, or ranks stopped at another step), and destroying the group while a
  peer is still in a collective is the abort above; the process exits and torchrun stops the
  other ranks.

A group that speechattn did not start (a caller's own ``init_process_group``) is left alone.
"""

from __future__ import annotations

import os

__all__ = ["end_process_group", "start_process_group"]

_started = [False]  # whether this process's default group was started here


def start_process_group(backend: str | None = None) -> tuple[int, int]:
    """``(rank, world size)``; under torchrun (``WORLD_SIZE > 1``) the default process group is
    started here unless one is already up.

    Args:
        backend: ``"gloo"``, ``"nccl"`` or None (``"nccl"`` when CUDA is available, else
            ``"gloo"``).
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        _started[0] = True
    return dist.get_rank(), dist.get_world_size()


def end_process_group(*, ok: bool) -> None:
    """End the process group that :func:`start_process_group` started (see the module notes).

    Args:
        ok: True when this rank finished its work (barrier, then destroy); False after a
            failure or an interruption (the group is left to the process exit).
    """
    if not _started[0]:
        return
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        _started[0] = False
        return
    if not ok:
        return
    if dist.get_backend() == "nccl":  # name this rank's GPU (else NCCL guesses, with a warning)
        import torch

        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()
    dist.destroy_process_group()
    _started[0] = False
