"""Triton kernels for the stepwise monotonic alignment (SMA) recurrence and its adjoint.

Private module: import it lazily (it imports ``triton`` at import time). The public entry point
is :func:`speechattn.functional.stepwise_monotonic_alignment` with ``impl="triton"`` (or
``"auto"`` on CUDA); this module also registers the torch custom ops
``torch.ops.speechattn.sma_triton_forward`` / ``sma_triton_backward`` so that autograd and
``torch.compile`` see one opaque node per call (see :mod:`speechattn.kernels._triton_sma_ops`).

Shape legend (heads already flattened into the sequence axis, ``N = B * H``):
``n`` sequences, ``u`` tokens, ``t`` frames.

Recurrence (He et al. 2019, "Robust Sequence-to-Sequence Acoustic Modeling with Stepwise
Monotonic Attention for Neural TTS", Eq. 8), per sequence ``n`` with ``U_n`` valid tokens and
``T_n`` valid frames::

    alpha_t(u) = alpha_{t-1}(u) p_t(u) + alpha_{t-1}(u-1) (1 - p_t(u-1)),   alpha_{-1} = alpha0

for ``u < U_n``, ``t < T_n``; everything else is exactly 0. ``preserve`` treats ``p`` at the last
valid token as 1 (absorbing), so no mass leaves the valid tokens. The adjoint, with
``g_t = dL/dalpha_t`` (total) and ``G_t`` the incoming gradient, runs in one reverse pass::

    g_{t-1}(u) = G_{t-1}(u) + g_t(u) p_t(u) + g_t(u+1) (1 - p_t(u))
    dL/dp_t(u) = alpha_{t-1}(u) (g_t(u) - g_t(u+1)),        dL/dalpha0 = g_{-1}

Kernel layout: one program per sequence; tokens live in lanes (``BLOCK_U``, a power of two up to
:data:`MAX_BLOCK_U`), the frame loop runs inside the kernel and the state (alpha or g) stays in
registers. The only cross-lane traffic is the one-token shift per frame, done either

* with ``tl.gather`` (register/shuffle level; the compiler inserts whatever synchronisation its
  lowering needs), the default where ``triton.language`` has it, or
* through a tiny per-program global scratch row plus ``tl.debug_barrier()``: each frame stores the
  shifted quantity, barriers, then loads it back one lane over. The scratch is double-buffered by
  frame parity so one barrier per frame is enough (a thread can only overwrite buffer ``t % 2`` at
  frame ``t + 2`` after every thread has passed the barrier of frame ``t + 1``, i.e. after all
  reads of frame ``t``). NOTE: the Triton interpreter runs one program's lanes as a single numpy
  array, so a missing barrier can never show up in the CPU tests; it only matters on a GPU.

When ``U`` exceeds one block, the kernel loops over token blocks (forward: first to last;
backward: last to first). Block ``b`` only needs, at every frame, one value from its neighbour
block (the mass ``alpha_{t-1}(u) (1 - p_t(u))`` leaving the neighbour's last token, or the
neighbour's ``g_t`` at its first token); that value is written to a per-program carry row of
length ``T`` while the neighbour block runs, and read after a ``tl.debug_barrier()`` separating
the block passes (rows alternate between two buffers, so reads and writes never alias).

All arithmetic runs in float32 (float64 for float64 inputs); bf16/fp16 inputs are loaded and
accumulated in float32 and the output is stored in the input dtype.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.compiler.errors import CompilationError

__all__ = [
    "MAX_BLOCK_U",
    "has_gather",
    "sma_backward",
    "sma_forward",
]

#: Largest token block one program keeps in registers; longer texts loop over blocks.
MAX_BLOCK_U = 1024


def has_gather() -> bool:
    """Whether this Triton has ``tl.gather`` (3.2+), used for the register-level token shift."""
    return hasattr(tl, "gather")


@triton.jit
def _shift_down(x, lanes, scr, t, BLOCK_U: tl.constexpr, USE_GATHER: tl.constexpr):
    """``y[i] = x[i - 1]`` for ``i >= 1`` and ``y[0] = 0`` (moves values to the next token)."""
    if USE_GATHER:
        y = tl.gather(x, tl.maximum(lanes - 1, 0), 0)
        y = tl.where(lanes == 0, 0.0, y)
    else:
        # Scratch row of BLOCK_U + 1 values per parity; slot 0 is never written (stays 0).
        buf = scr + (t % 2) * (BLOCK_U + 1)
        tl.store(buf + 1 + lanes, x)
        tl.debug_barrier()
        y = tl.load(buf + lanes).to(x.dtype)
    return y


@triton.jit
def _shift_up(x, lanes, scr, t, BLOCK_U: tl.constexpr, USE_GATHER: tl.constexpr):
    """``y[i] = x[i + 1]`` for ``i < BLOCK_U - 1`` and ``y[BLOCK_U - 1] = 0``."""
    if USE_GATHER:
        y = tl.gather(x, tl.minimum(lanes + 1, BLOCK_U - 1), 0)
        y = tl.where(lanes == BLOCK_U - 1, 0.0, y)
    else:
        # Slot BLOCK_U is never written (stays 0).
        buf = scr + (t % 2) * (BLOCK_U + 1)
        tl.store(buf + lanes, x)
        tl.debug_barrier()
        y = tl.load(buf + 1 + lanes).to(x.dtype)
    return y


@triton.jit
def _sma_fwd_kernel(
    p_ptr,
    alpha0_ptr,
    text_len_ptr,
    mel_len_ptr,
    out_ptr,
    carry_ptr,
    scr_ptr,
    U,
    T,
    PRESERVE: tl.constexpr,
    BLOCK_U: tl.constexpr,
    USE_GATHER: tl.constexpr,
    ACC: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    # Clamped so that bad lengths can never index out of bounds (the API validates them).
    un = tl.minimum(tl.maximum(tl.load(text_len_ptr + n), 0), U).to(tl.int32)
    tn = tl.minimum(tl.maximum(tl.load(mel_len_ptr + n), 0), T).to(tl.int32)
    lanes = tl.arange(0, BLOCK_U)
    # Scalar conditions are broadcast through `zero` (the interpreter rejects scalar & vector masks).
    zero = lanes * 0
    p_seq = p_ptr + n * U * T
    out_seq = out_ptr + n * U * T
    carry = carry_ptr + n * 2 * T
    scr = scr_ptr + n * 2 * (BLOCK_U + 1)
    num_blocks = (un + BLOCK_U - 1) // BLOCK_U
    for b in range(0, num_blocks):
        u = b * BLOCK_U + lanes
        valid = u < un
        is_last = u == un - 1
        carry_in = carry + (b % 2) * T
        carry_out = carry + ((b + 1) % 2) * T
        row = u.to(tl.int64) * T
        alpha = tl.load(alpha0_ptr + n * U + u, mask=valid, other=0.0).to(ACC)
        p_next = tl.load(p_seq + row, mask=valid & (zero + tn > 0), other=0.0).to(ACC)
        for t in range(0, tn):
            p_t = p_next
            # Prefetch the next frame's column: independent of the recurrence.
            p_next = tl.load(p_seq + row + t + 1, mask=valid & (zero + t + 1 < tn), other=0.0).to(
                ACC
            )
            if PRESERVE:
                p_t = tl.where(is_last, 1.0, p_t)
            leave = alpha * (1.0 - p_t)  # mass moving from token u to u + 1
            arrive = _shift_down(leave, lanes, scr, t, BLOCK_U, USE_GATHER)
            # Mass arriving at this block's first token from the previous block's last token.
            arrive += tl.load(
                carry_in + t + zero, mask=(lanes == 0) & (zero + b > 0), other=0.0
            ).to(ACC)
            tl.store(carry_out + t + zero, leave, mask=lanes == BLOCK_U - 1)
            alpha = tl.where(valid, alpha * p_t + arrive, 0.0)
            tl.store(out_seq + row + t, alpha.to(out_ptr.dtype.element_ty), mask=valid)
        # The next block reads this block's carry row: make it visible to every thread.
        tl.debug_barrier()


@triton.jit
def _sma_bwd_kernel(
    grad_ptr,
    p_ptr,
    alpha_ptr,
    alpha0_ptr,
    text_len_ptr,
    mel_len_ptr,
    grad_p_ptr,
    grad_alpha0_ptr,
    carry_ptr,
    scr_ptr,
    U,
    T,
    PRESERVE: tl.constexpr,
    BLOCK_U: tl.constexpr,
    USE_GATHER: tl.constexpr,
    ACC: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    # Clamped so that bad lengths can never index out of bounds (the API validates them).
    un = tl.minimum(tl.maximum(tl.load(text_len_ptr + n), 0), U).to(tl.int32)
    tn = tl.minimum(tl.maximum(tl.load(mel_len_ptr + n), 0), T).to(tl.int32)
    lanes = tl.arange(0, BLOCK_U)
    # Scalar conditions are broadcast through `zero` (the interpreter rejects scalar & vector masks).
    zero = lanes * 0
    base = n * U * T
    carry = carry_ptr + n * 2 * T
    scr = scr_ptr + n * 2 * (BLOCK_U + 1)
    num_blocks = (un + BLOCK_U - 1) // BLOCK_U
    for bb in range(0, num_blocks):
        b = num_blocks - 1 - bb  # last block first: g flows from token u + 1 to u
        u = b * BLOCK_U + lanes
        valid = u < un
        is_last = u == un - 1
        carry_in = carry + (bb % 2) * T
        carry_out = carry + ((bb + 1) % 2) * T
        row = base + u.to(tl.int64) * T
        # g = g_{T_n - 1} = G_{T_n - 1}
        g = tl.load(grad_ptr + row + tn - 1, mask=valid & (zero + tn > 0), other=0.0).to(ACC)
        t0 = tn - 1
        p_nx = tl.load(p_ptr + row + t0, mask=valid & (zero + t0 >= 0), other=0.0).to(ACC)
        a_nx = tl.load(alpha_ptr + row + t0 - 1, mask=valid & (zero + t0 >= 1), other=0.0).to(ACC)
        a_nx += tl.load(alpha0_ptr + n * U + u, mask=valid & (zero + t0 == 0), other=0.0).to(ACC)
        gin_nx = tl.load(grad_ptr + row + t0 - 1, mask=valid & (zero + t0 >= 1), other=0.0).to(ACC)
        for tt in range(0, tn):
            t = tn - 1 - tt
            p_t = p_nx
            a_prev = a_nx  # alpha_{t-1}
            g_in = gin_nx  # G_{t-1}
            # Prefetch frame t - 1's operands: independent of the recurrence.
            s = t - 1
            p_nx = tl.load(p_ptr + row + s, mask=valid & (zero + s >= 0), other=0.0).to(ACC)
            a_nx = tl.load(alpha_ptr + row + s - 1, mask=valid & (zero + s >= 1), other=0.0).to(ACC)
            a_nx += tl.load(alpha0_ptr + n * U + u, mask=valid & (zero + s == 0), other=0.0).to(ACC)
            gin_nx = tl.load(grad_ptr + row + s - 1, mask=valid & (zero + s >= 1), other=0.0).to(
                ACC
            )
            if PRESERVE:
                p_t = tl.where(is_last, 1.0, p_t)
            g_up = _shift_up(g, lanes, scr, t, BLOCK_U, USE_GATHER)  # g_t(u + 1)
            # g_t at the next block's first token, written there during the previous pass.
            g_up += tl.load(
                carry_in + t + zero, mask=(lanes == BLOCK_U - 1) & (zero + bb > 0), other=0.0
            ).to(ACC)
            tl.store(carry_out + t + zero, g, mask=lanes == 0)
            d_p = a_prev * (g - g_up)
            if PRESERVE:
                d_p = tl.where(is_last, 0.0, d_p)
            tl.store(grad_p_ptr + row + t, d_p.to(grad_p_ptr.dtype.element_ty), mask=valid)
            g = tl.where(valid, g_in + g * p_t + g_up * (1.0 - p_t), 0.0)
        tl.store(grad_alpha0_ptr + n * U + u, g.to(grad_alpha0_ptr.dtype.element_ty), mask=valid)
        # The next (lower) block reads this block's carry row.
        tl.debug_barrier()


def _acc_dtype(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _launch_config(U: int, block_u: int | None) -> tuple[int, int]:
    """(BLOCK_U, num_warps) for U tokens; ``block_u`` caps the block (tests use small caps)."""
    cap = MAX_BLOCK_U if block_u is None else int(block_u)
    if cap < 2 or cap & (cap - 1):
        raise ValueError(f"Expected block_u to be a power of two >= 2; found {block_u}.")
    block = max(16, min(triton.next_power_of_2(max(U, 1)), cap)) if cap >= 16 else cap
    # ~4-8 tokens per thread: 1 warp up to 128 tokens (shifts stay inside one warp), up to 8 warps.
    num_warps = max(1, min(8, block // 128))
    return block, num_warps


# Set when this Triton/GPU failed to compile the tl.gather shift; later launches use the scratch.
_GATHER_FAILED = False


def _shift_mode(shift: str | None) -> str:
    mode = shift or os.environ.get("SPEECHATTN_TRITON_SHIFT", "gather")
    if mode not in ("gather", "scratch"):
        raise ValueError(
            f"Expected shift (or SPEECHATTN_TRITON_SHIFT) 'gather' or 'scratch'; found {mode!r}."
        )
    return mode


def _launch(
    kernel: Any,
    N: int,
    tensors: tuple[Tensor, ...],
    carry: Tensor,
    U: int,
    T: int,
    *,
    block: int,
    shift: str | None,
    **meta: Any,
) -> None:
    """Launch one program per sequence with the tl.gather shift, or the scratch + barrier one.

    If compiling the gather variant fails (a Triton without a lowering for it on this GPU) and
    the caller did not ask for ``shift="gather"`` explicitly, warn once and use the scratch
    variant from then on. Runtime errors are never caught.
    """
    global _GATHER_FAILED
    mode = _shift_mode(shift)
    if mode == "gather" and has_gather() and not _GATHER_FAILED:
        try:
            # The scratch pointer is never dereferenced in the gather variant: pass carry.
            kernel[(N,)](*tensors, carry, U, T, BLOCK_U=block, USE_GATHER=True, **meta)
            return
        except (CompilationError, RuntimeError) as exc:
            # Only on a GPU: under the interpreter every error is a real one.
            if shift == "gather" or carry.device.type != "cuda":
                raise
            _GATHER_FAILED = True
            warnings.warn(
                f"Triton could not compile the tl.gather token shift ({type(exc).__name__}); "
                "using the shared-scratch shift instead.",
                RuntimeWarning,
                stacklevel=3,
            )
    scr = torch.zeros((N, 2, block + 1), dtype=carry.dtype, device=carry.device)
    kernel[(N,)](*tensors, scr, U, T, BLOCK_U=block, USE_GATHER=False, **meta)


def _check(p: Tensor, alpha0: Tensor, text_lengths: Tensor, mel_lengths: Tensor) -> None:
    if p.dim() != 3:
        raise ValueError(f"Expected p of shape (N, U, T); found {tuple(p.shape)}.")
    N, U, _ = p.shape
    if alpha0.shape != (N, U):
        raise ValueError(f"Expected alpha0 of shape ({N}, {U}); found {tuple(alpha0.shape)}.")
    for name, x in (("text_lengths", text_lengths), ("mel_lengths", mel_lengths)):
        if x.shape != (N,) or x.dtype != torch.int64:
            raise ValueError(
                f"Expected {name} int64 of shape ({N},); found {x.dtype} {tuple(x.shape)}."
            )
        if x.device != p.device:
            raise ValueError(f"Expected {name} on {p.device}; found {x.device}.")
    if alpha0.device != p.device:
        raise ValueError(f"Expected alpha0 on {p.device}; found {alpha0.device}.")


def sma_forward(
    p: Tensor,
    alpha0: Tensor,
    text_lengths: Tensor,
    mel_lengths: Tensor,
    preserve: bool,
    *,
    block_u: int | None = None,
    shift: str | None = None,
) -> Tensor:
    """SMA forward with the Triton kernel (kernel contract of ``speechattn.kernels``).

    Args:
        p: stay probabilities ``(N, U, T)``, float16/bfloat16/float32/float64 (cast to contiguous).
        alpha0: initial alignment ``(N, U)``; tokens ``>= text_lengths[n]`` are ignored.
        text_lengths: int64 ``(N,)`` valid tokens per sequence (``0 <= len <= U``, not checked).
        mel_lengths: int64 ``(N,)`` valid frames per sequence (``0 <= len <= T``, not checked).
        preserve: make the last valid token absorbing (``mass="preserve"``).
        block_u: cap on the token block (power of two); default :data:`MAX_BLOCK_U`.
        shift: ``"gather"`` (default) or ``"scratch"`` token shift (see the module docstring).

    Returns:
        alpha ``(N, U, T)`` in ``p``'s dtype; zero at invalid tokens/frames. No host sync.
        Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``.
    """
    _check(p, alpha0, text_lengths, mel_lengths)
    p = p.contiguous()
    alpha0 = alpha0.to(p.dtype).contiguous()
    N, U, T = p.shape
    out = torch.zeros_like(p)
    if N == 0 or U == 0 or T == 0:
        return out
    block, num_warps = _launch_config(U, block_u)
    acc_t = torch.float64 if p.dtype == torch.float64 else torch.float32
    carry = torch.empty((N, 2, T), dtype=acc_t, device=p.device)
    _launch(
        _sma_fwd_kernel,
        N,
        (p, alpha0, text_lengths.contiguous(), mel_lengths.contiguous(), out, carry),
        carry,
        U,
        T,
        block=block,
        shift=shift,
        PRESERVE=bool(preserve),
        ACC=_acc_dtype(p.dtype),
        num_warps=num_warps,
    )
    return out


def sma_backward(
    grad_alpha: Tensor,
    p: Tensor,
    alpha: Tensor,
    alpha0: Tensor,
    text_lengths: Tensor,
    mel_lengths: Tensor,
    preserve: bool,
    *,
    block_u: int | None = None,
    shift: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Closed-form adjoint of :func:`sma_forward` in one reverse pass over frames.

    Args:
        grad_alpha: ``dL/dalpha`` ``(N, U, T)`` (entries at invalid tokens/frames are ignored).
        p, alpha0, text_lengths, mel_lengths, preserve, block_u, shift: as in :func:`sma_forward`.
        alpha: the forward output for these inputs (only ``alpha_{t-1}`` is read).

    Returns:
        ``(grad_p (N, U, T), grad_alpha0 (N, U))`` in ``p``'s / ``alpha0``'s dtype, zero at
        invalid positions (and at the last valid token when ``preserve``). No host sync.
    """
    _check(p, alpha0, text_lengths, mel_lengths)
    if grad_alpha.shape != p.shape or alpha.shape != p.shape:
        raise ValueError(
            f"Expected grad_alpha and alpha of shape {tuple(p.shape)}; "
            f"found {tuple(grad_alpha.shape)} and {tuple(alpha.shape)}."
        )
    p = p.contiguous()
    grad_alpha = grad_alpha.to(p.dtype).contiguous()
    alpha = alpha.to(p.dtype).contiguous()
    alpha0_c = alpha0.to(p.dtype).contiguous()
    N, U, T = p.shape
    grad_p = torch.zeros_like(p)
    grad_alpha0 = torch.zeros_like(alpha0_c)
    if N == 0 or U == 0 or T == 0:
        return grad_p, grad_alpha0.to(alpha0.dtype)
    block, num_warps = _launch_config(U, block_u)
    acc_t = torch.float64 if p.dtype == torch.float64 else torch.float32
    carry = torch.empty((N, 2, T), dtype=acc_t, device=p.device)
    _launch(
        _sma_bwd_kernel,
        N,
        (
            grad_alpha,
            p,
            alpha,
            alpha0_c,
            text_lengths.contiguous(),
            mel_lengths.contiguous(),
            grad_p,
            grad_alpha0,
            carry,
        ),
        carry,
        U,
        T,
        block=block,
        shift=shift,
        PRESERVE=bool(preserve),
        ACC=_acc_dtype(p.dtype),
        num_warps=num_warps,
    )
    return grad_p, grad_alpha0.to(alpha0.dtype)
