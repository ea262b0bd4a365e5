"""Torch custom ops around the Triton SMA kernels, so autograd and ``torch.compile`` see them.

Private module. Importing it registers ``torch.ops.speechattn.sma_triton_forward`` and
``torch.ops.speechattn.sma_triton_backward`` (with fake/meta implementations and the autograd
formula) and the ``"triton"`` SMA kernel in :mod:`speechattn.kernels` (``impl="triton"``, and
``impl="auto"`` on CUDA), but does NOT import ``triton``: the kernels module is imported on the
first real call. :mod:`speechattn.kernels` imports this module lazily (``_LAZY_SMA_KERNELS``).

* ``sma_triton_forward(p (N, U, T), alpha0 (N, U), text_lengths int64 (N,), mel_lengths int64 (N,),
  preserve: bool) -> alpha (N, U, T)``, differentiable in ``p`` and ``alpha0`` through the
  closed-form adjoint (one reverse pass, saves only ``p``, ``alpha0`` and ``alpha``).
* ``sma_triton_backward(grad_alpha, p, alpha, alpha0, text_lengths, mel_lengths, preserve)
  -> (grad_p, grad_alpha0)``. Not differentiable itself (no double backward).

Both run on CUDA tensors; on CPU tensors they run only under ``TRITON_INTERPRET=1`` (slow, for
tests). Neither performs a host sync.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "interpreter_enabled",
    "register",
    "sma_triton_backward",
    "sma_triton_forward",
]


def interpreter_enabled() -> bool:
    """True when ``TRITON_INTERPRET=1``: the kernels then run (slowly) on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def _check_device(p: Tensor) -> None:
    if p.device.type != "cuda" and not interpreter_enabled():
        raise ValueError(
            f"Expected p on a CUDA device for the Triton SMA kernel; found {p.device}. "
            'Use impl="numba" or impl="torch" on CPU (or set TRITON_INTERPRET=1 before importing '
            "triton to run the kernel in the slow interpreter)."
        )


@torch.library.custom_op("speechattn::sma_triton_forward", mutates_args=())
def sma_triton_forward(
    p: Tensor, alpha0: Tensor, text_lengths: Tensor, mel_lengths: Tensor, preserve: bool
) -> Tensor:
    """Stepwise monotonic alignment forward (Triton kernel); see the module docstring."""
    _check_device(p)
    from speechattn.kernels._triton_sma import sma_forward

    return sma_forward(p, alpha0, text_lengths, mel_lengths, preserve)


@sma_triton_forward.register_fake
def _sma_triton_forward_fake(
    p: Tensor, alpha0: Tensor, text_lengths: Tensor, mel_lengths: Tensor, preserve: bool
) -> Tensor:
    return torch.empty_like(p, memory_format=torch.contiguous_format)


@torch.library.custom_op("speechattn::sma_triton_backward", mutates_args=())
def sma_triton_backward(
    grad_alpha: Tensor,
    p: Tensor,
    alpha: Tensor,
    alpha0: Tensor,
    text_lengths: Tensor,
    mel_lengths: Tensor,
    preserve: bool,
) -> tuple[Tensor, Tensor]:
    """Closed-form adjoint of :func:`sma_triton_forward` (Triton kernel)."""
    _check_device(p)
    from speechattn.kernels._triton_sma import sma_backward

    return sma_backward(grad_alpha, p, alpha, alpha0, text_lengths, mel_lengths, preserve)


@sma_triton_backward.register_fake
def _sma_triton_backward_fake(
    grad_alpha: Tensor,
    p: Tensor,
    alpha: Tensor,
    alpha0: Tensor,
    text_lengths: Tensor,
    mel_lengths: Tensor,
    preserve: bool,
) -> tuple[Tensor, Tensor]:
    return (
        torch.empty_like(p, memory_format=torch.contiguous_format),
        torch.empty_like(alpha0, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    p, alpha0, text_lengths, mel_lengths, preserve = inputs
    ctx.save_for_backward(p, alpha0, text_lengths, mel_lengths, output)
    ctx.preserve = preserve


def _backward(ctx: Any, grad_alpha: Tensor) -> tuple[Tensor | None, ...]:
    p, alpha0, text_lengths, mel_lengths, alpha = ctx.saved_tensors
    grad_p, grad_alpha0 = sma_triton_backward(
        grad_alpha.contiguous(), p, alpha, alpha0, text_lengths, mel_lengths, ctx.preserve
    )
    return (
        grad_p if ctx.needs_input_grad[0] else None,
        grad_alpha0 if ctx.needs_input_grad[1] else None,
        None,
        None,
        None,
    )


sma_triton_forward.register_autograd(_backward, setup_context=_setup_context)


def register() -> None:
    """Register the ops as the ``"triton"`` SMA kernel in :mod:`speechattn.kernels`.

    Devices: ``("cuda",)``, plus ``"cpu"`` when :func:`interpreter_enabled` (tests).
    """
    from speechattn.kernels import register_sma_kernel

    devices: tuple[str, ...] = ("cuda", "cpu") if interpreter_enabled() else ("cuda",)
    register_sma_kernel("triton", sma_triton_forward, sma_triton_backward, devices=devices)


# Importing this module is how speechattn.kernels loads the lazy "triton" entry.
register()
