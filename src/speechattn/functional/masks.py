"""Length and mask helpers shared by every mechanism.

Masks are bool with True = keep (``*_valid_mask``), as SDPA, flex_attention and
HF use. Lengths are int64 ``(B,)`` tensors of valid prefix sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "check_lengths",
    "check_nonempty_batch",
    "lengths_to_valid_mask",
    "valid_mask_to_lengths",
]


def check_lengths(
    lengths: Tensor | None,
    name: str,
    *,
    batch: int,
    max_len: int,
    device: torch.device | None = None,
    allow_zero: bool = False,
    check_values: bool = True,
) -> Tensor:
    """Validate a ``(B,)`` lengths tensor and return it as int64.

    ``None`` means every item is full length (``max_len``).

    Args:
        lengths: int ``(B,)`` tensor or ``None``.
        name: the argument's name, used in error messages.
        batch: expected batch size B.
        max_len: the padded size the lengths index into.
        device: device of the data; lengths must live there too (or on CPU, then moved).
        allow_zero: accept zero-length items.
        check_values: check the range of the values (one host sync). Callers that batch their
            value checks into a single sync of their own pass False and get type, shape and
            device checks only.

    Raises:
        TypeError: not a tensor, or not an integer dtype.
        ValueError: wrong shape, or a value outside ``[1, max_len]`` (``[0, max_len]`` with
            ``allow_zero``); the message names the first failing batch index.
    """
    if lengths is None:
        return torch.full((batch,), max_len, dtype=torch.int64, device=device)
    if not isinstance(lengths, Tensor):
        raise TypeError(
            f"Expected {name} to be an int64 tensor of shape ({batch},); found {type(lengths).__name__}. "
            f"Wrap it with torch.as_tensor(..., dtype=torch.int64)."
        )
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
        raise TypeError(
            f"Expected {name} to be an integer tensor (int64); found dtype {lengths.dtype}. "
            "Pass frame/token counts, not relative lengths."
        )
    if lengths.shape != (batch,):
        raise ValueError(f"Expected {name} of shape ({batch},); found {tuple(lengths.shape)}.")
    if device is not None and lengths.device != device:
        if lengths.device.type == "cpu":
            lengths = lengths.to(device)
        else:
            raise ValueError(f"Expected {name} on {device} (or CPU); found it on {lengths.device}.")
    if not check_values:
        return lengths.to(torch.int64)
    lo = 0 if allow_zero else 1
    bad = (lengths < lo) | (lengths > max_len)
    # One host sync on the validation path only: the price of a clear error message.
    if bool(bad.any()):
        idx = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"Expected {lo} <= {name}[b] <= {max_len} (the padded size); "
            f"found {name}[{idx}] = {int(lengths[idx])}."
        )
    return lengths.to(torch.int64)


def check_nonempty_batch(x: Tensor, name: str, *, where: str) -> None:
    """Raise a clear error for an empty batch (``x.shape[0] == 0``).

    Many ops (reshapes with ``-1``, CTC, reductions) fail on ``B = 0`` with messages that do not
    say what is wrong; callers check first.

    Args:
        x: the batched input (batch axis first).
        name: the argument's name for the message.
        where: the function or layer, for the message.

    Raises:
        ValueError: ``x`` has batch size 0.
    """
    if isinstance(x, Tensor) and x.dim() >= 1 and x.shape[0] == 0:
        raise ValueError(
            f"{where}: expected a batch of at least one item; found {name} of shape "
            f"{tuple(x.shape)} (B = 0). Skip empty batches before calling."
        )


def _layout_hint(text_lengths: object, mel_lengths: object, u: int, t: int, name: str) -> str:
    """A sentence for a lengths error when the scores look mel-major: ``(B, T, U)`` (as RAD-TTS
    and VITS keep attention, and :func:`~speechattn.functional.beta_binomial_prior` returns its
    prior) where ``(B, U, T)`` is expected; else ``""``."""
    if not isinstance(text_lengths, Tensor) or not isinstance(mel_lengths, Tensor):
        return ""
    if text_lengths.numel() == 0 or mel_lengths.numel() == 0:
        return ""
    if text_lengths.dtype.is_floating_point or mel_lengths.dtype.is_floating_point:
        return ""
    tmax, mmax = int(text_lengths.max()), int(mel_lengths.max())
    if t < mmax <= u and tmax <= t:
        return (
            f" {name} looks mel-major, (B, T={u}, U={t}); it is tokens first, (B, U, T): pass "
            f"{name}.transpose(-1, -2)."
        )
    return ""


def lengths_to_valid_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Bool keep-mask ``(B, max_len)``: True where ``t < lengths[b]``."""
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(-1)


def valid_mask_to_lengths(valid_mask: Tensor) -> Tensor:
    """Lengths ``(B,)`` of a prefix keep-mask ``(B, T)``.

    Raises:
        ValueError: if the mask is not a prefix mask (a True after a False).
    """
    if valid_mask.dtype != torch.bool:
        raise TypeError(f"Expected a bool keep-mask; found dtype {valid_mask.dtype}.")
    lengths = valid_mask.sum(-1)
    if not torch.equal(lengths_to_valid_mask(lengths, valid_mask.shape[-1]), valid_mask):
        raise ValueError(
            "Expected a prefix keep-mask (True for the first lengths[b] positions, then False); "
            "found a mask with gaps. Pass lengths instead."
        )
    return lengths.to(torch.int64)
