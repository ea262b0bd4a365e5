"""Stepwise monotonic alignment: the recurrence, its Viterbi decode, durations and focus rate.

Shape legend: ``b`` batch, ``h`` heads, ``u`` tokens (text), ``t`` frames (mel).

The stepwise monotonic attention of He, Deng and He (2019), "Robust Sequence-to-Sequence
Acoustic Modeling with Stepwise Monotonic Attention for Neural TTS" (Interspeech), Eq. 8:
at every frame the alignment either stays on its token (probability ``p_t(u)``) or moves
exactly one token forward (``1 - p_t(u)``)::

    alpha_t(u) = alpha_{t-1}(u) * p_t(u) + alpha_{t-1}(u - 1) * (1 - p_t(u - 1))

with ``alpha_{-1}`` one-hot on token 0. ``alpha`` is ``(b, u, t)`` (or ``(b, h, u, t)``): the
column at frame ``t`` is the distribution over tokens, the row sum of token ``u`` its expected
duration in frames.

Masks: text/mel lengths are int64 ``(B,)``; tokens ``u >= text_lengths[b]`` and frames
``t >= mel_lengths[b]`` are exactly zero, take no mass and get zero gradient. Padding content
(any value, NaN included) never changes an output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from speechattn import kernels
from speechattn.functional.alignment import AlignmentPath, _viterbi
from speechattn.functional.masks import _layout_hint, check_lengths, lengths_to_valid_mask
from speechattn.kernels import get_sma_kernel

__all__ = [
    "MonotonicPath",
    "alignment_to_durations",
    "focus_rate",
    "monotonic_viterbi",
    "stepwise_monotonic_alignment",
]

_MODES = ("soft", "hard")
_MASSES = ("drop", "preserve")
# Log-probabilities are clamped at log(_LOG_EPS) so a path through p = 0 or p = 1 stays finite
# (the forced end on the last token is then always reachable).
_LOG_EPS = 1e-12


MonotonicPath = AlignmentPath
"""The hard monotonic path type; the same class as :class:`~speechattn.functional.AlignmentPath`."""


# --------------------------------------------------------------------------------------------
# Validation (one host sync for all value checks)
# --------------------------------------------------------------------------------------------


def _check_prob_tensor(p: Any, name: str) -> None:
    if not isinstance(p, Tensor):
        raise TypeError(
            f"Expected {name} to be a float tensor of shape (B, U, T) or (B, H, U, T); "
            f"found {type(p).__name__}."
        )
    if not p.is_floating_point():
        raise TypeError(
            f"Expected {name} to be a floating-point tensor (float32/float64/bf16/fp16); "
            f"found dtype {p.dtype}. Convert it with .float()."
        )
    if p.dim() not in (3, 4):
        raise ValueError(
            f"Expected {name} of shape (B, U, T) or (B, H, U, T); found {p.dim()} dims "
            f"{tuple(p.shape)}."
        )


def _first_bad(bad: Tensor, values: Tensor) -> Tensor:
    """``[any, index, value]`` (float64) of the first True in ``bad`` (no sync)."""
    idx = bad.to(torch.int64).argmax() if bad.numel() else bad.new_zeros((), dtype=torch.int64)
    val = values[idx] if values.numel() else values.new_zeros(())
    return torch.stack([bad.any().double(), idx.double(), val.double()])


def _prepare(
    p: Tensor,
    text_lengths: Tensor | None,
    mel_lengths: Tensor | None,
    *,
    name: str,
    check_range: bool = True,
    need_mel_ge_text: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate; return flattened ``(N, U, T)`` view and int64 ``(N,)`` lengths (N = B*H)."""
    _check_prob_tensor(p, name)
    B, U, T = p.shape[0], p.shape[-2], p.shape[-1]
    H = p.shape[1] if p.dim() == 4 else 1
    tl = check_lengths(
        text_lengths, "text_lengths", batch=B, max_len=U, device=p.device, check_values=False
    )
    ml = check_lengths(
        mel_lengths, "mel_lengths", batch=B, max_len=T, device=p.device, check_values=False
    )
    if B > 0 and p.device.type == "cpu":
        _check_host(p, tl, ml, name, check_range, need_mel_ge_text)
    elif B > 0:
        checks = [
            _first_bad((tl < 1) | (tl > U), tl),
            _first_bad((ml < 1) | (ml > T), ml),
        ]
        if need_mel_ge_text:
            checks.append(_first_bad(ml < tl, ml))
        have_range = check_range and p.numel() > 0
        if have_range:
            # Fast path: the whole tensor in [0, 1] (aminmax propagates NaN).
            mn, mx = torch.aminmax(p)
            checks.append(torch.stack([mn.double(), mx.double(), mn.double()]))
        # One host sync for every value check.
        vals = torch.stack(checks).cpu().tolist()
        for (bad, idx, val), lname, lim in zip(
            vals[:2], ("text_lengths", "mel_lengths"), (U, T), strict=False
        ):
            if bad:
                raise ValueError(
                    f"Expected 1 <= {lname}[b] <= {lim} (the padded size of {name}); "
                    f"found {lname}[{int(idx)}] = {int(val)}."
                    + _layout_hint(text_lengths, mel_lengths, U, T, name)
                )
        if need_mel_ge_text and vals[2][0]:
            b = int(vals[2][1])
            raise ValueError(
                f"Expected mel_lengths[b] >= text_lengths[b] (every token needs a frame); found "
                f"mel_lengths[{b}] = {int(vals[2][2])} < text_lengths[{b}]. Drop or trim item {b}."
            )
        if have_range and not (vals[-1][0] >= 0.0 and vals[-1][1] <= 1.0):
            _check_range_masked(p, tl, ml, name)
    if H > 1 or p.dim() == 4:
        tl = tl[:, None].expand(B, H).reshape(-1)
        ml = ml[:, None].expand(B, H).reshape(-1)
    return p.reshape(B * H, U, T), tl, ml


def _check_host(
    p: Tensor, tl: Tensor, ml: Tensor, name: str, check_range: bool, need_mel_ge_text: bool
) -> None:
    """The value checks of :func:`_prepare` for CPU tensors: the same errors, read on the host
    directly (numpy views of the lengths) instead of through the single-sync device path."""
    U, T = p.shape[-2], p.shape[-1]
    tln, mln = tl.numpy(), ml.numpy()
    for vals, lname, lim in ((tln, "text_lengths", U), (mln, "mel_lengths", T)):
        bad = (vals < 1) | (vals > lim)
        if bad.any():
            i = int(bad.argmax())
            raise ValueError(
                f"Expected 1 <= {lname}[b] <= {lim} (the padded size of {name}); "
                f"found {lname}[{i}] = {int(vals[i])}." + _layout_hint(tl, ml, U, T, name)
            )
    if need_mel_ge_text:
        bad = mln < tln
        if bad.any():
            i = int(bad.argmax())
            raise ValueError(
                f"Expected mel_lengths[b] >= text_lengths[b] (every token needs a frame); found "
                f"mel_lengths[{i}] = {int(mln[i])} < text_lengths[{i}]. Drop or trim item {i}."
            )
    if check_range and p.numel() > 0:
        mn, mx = torch.aminmax(p)  # propagates NaN: then the exact check below
        if not (mn.item() >= 0.0 and mx.item() <= 1.0):
            _check_range_masked(p, tl, ml, name)


def _check_range_masked(p: Tensor, tl: Tensor, ml: Tensor, name: str) -> None:
    """Exact check of ``p`` in [0, 1] at valid positions only (padding may hold anything).

    The rare path, taken when a cheap whole-tensor check failed; ``p`` is ``(B, [H,] U, T)``
    with ``(B,)`` lengths. Raises with the min/max found, or returns if the valid part is fine.
    """
    U, T = p.shape[-2], p.shape[-1]
    tv = lengths_to_valid_mask(ml, T)
    uv = lengths_to_valid_mask(tl, U)
    valid = uv[:, :, None] & tv[:, None, :]
    if p.dim() == 4:
        valid = valid[:, None]
    pv = torch.where(valid, p, torch.full((), 0.5, dtype=p.dtype, device=p.device))
    mn, mx = torch.aminmax(pv)
    mn_v, mx_v, has_nan = (
        torch.stack([mn.double(), mx.double(), torch.isnan(pv).any().double()]).cpu().tolist()
    )
    _raise_bad_range(name, mn_v, mx_v, bool(has_nan))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# Pure-torch kernel pair (the spec; same contract as speechattn.kernels)
# --------------------------------------------------------------------------------------------


def _masks(
    N: int, U: int, T: int, tl: Tensor, ml: Tensor, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    uv = lengths_to_valid_mask(tl, U)  # (N, U)
    tv = lengths_to_valid_mask(ml, T)  # (N, T)
    last = torch.arange(U, device=device) == (tl[:, None] - 1)  # (N, U)
    return uv, tv, last


def _torch_sma_forward(
    p: Tensor, alpha0: Tensor, text_lengths: Tensor, mel_lengths: Tensor, preserve: bool
) -> Tensor:
    """Pure-torch forward of the kernel contract: a loop over frames, vectorised over (N, U).

    Args:
        p: ``(N, U, T)`` stay probabilities (float32/float64).
        alpha0: ``(N, U)`` alignment before frame 0.
        text_lengths, mel_lengths: int64 ``(N,)``.
        preserve: treat the last valid token's stay probability as 1.

    Returns:
        alpha ``(N, U, T)``, zero at padded tokens and frames.
    """
    N, U, T = p.shape
    uv, tv, last = _masks(N, U, T, text_lengths, mel_lengths, p.device)
    valid_tm = (tv.t()[:, :, None] & uv[None]).contiguous()  # (T, N, U) bool
    # Time-major sanitised copy of p, so each step reads one contiguous (N, U) slab.
    pe = torch.where(valid_tm, p.permute(2, 0, 1), torch.zeros((), dtype=p.dtype, device=p.device))
    pe = pe.contiguous()
    if preserve:
        pe.masked_fill_(valid_tm & last[None], 1.0)
    a = torch.where(uv, alpha0, torch.zeros((), dtype=p.dtype, device=p.device))
    pad_tm = ~valid_tm
    out = torch.empty((T, N, U), dtype=p.dtype, device=p.device)
    for t in range(T):
        new = torch.mul(a, pe[t], out=out[t])  # stay: alpha_{t-1}(u) p_t(u)
        new[:, 1:].add_(a[:, :-1] - new[:, :-1])  # advance: alpha_{t-1}(u-1) (1 - p_t(u-1))
        new.masked_fill_(pad_tm[t], 0.0)  # padded tokens and frames hold exactly 0
        a = new
    return out.permute(1, 2, 0).contiguous()


def _torch_sma_backward(
    grad_alpha: Tensor,
    p: Tensor,
    alpha: Tensor,
    alpha0: Tensor,
    text_lengths: Tensor,
    mel_lengths: Tensor,
    preserve: bool,
) -> tuple[Tensor, Tensor]:
    """Pure-torch closed-form adjoint of :func:`_torch_sma_forward` (one reverse pass).

    With ``g_t`` the total gradient of ``alpha_t`` (zero at padded tokens/frames and at
    ``u = U``)::

        g_{t-1} = G_{t-1} + g_t * p_t + shift_up(g_t) * (1 - p_t)
        dL/dp_t(u) = alpha_{t-1}(u) * (g_t(u) - g_t(u + 1))

    Returns:
        ``(grad_p (N, U, T), grad_alpha0 (N, U))``.
    """
    N, U, T = p.shape
    uv, tv, last = _masks(N, U, T, text_lengths, mel_lengths, p.device)
    zero = torch.zeros((), dtype=p.dtype, device=p.device)
    valid_tm = (tv.t()[:, :, None] & uv[None]).contiguous()  # (T, N, U) bool
    # Advance probabilities 1 - p, time-major (padding: any finite value; 0 here).
    q = torch.where(valid_tm, p.permute(2, 0, 1), torch.ones((), dtype=p.dtype, device=p.device))
    q = q.contiguous()
    q.neg_().add_(1.0)
    pgrad_tm = valid_tm
    if preserve:  # the absorbing token never advances and its p gets no gradient
        absorbing = valid_tm & last[None]
        q.masked_fill_(absorbing, 0.0)
        pgrad_tm = valid_tm & ~absorbing
    G = torch.where(valid_tm, grad_alpha.permute(2, 0, 1), zero).contiguous()
    a_tm = alpha.permute(2, 0, 1)
    a0 = torch.where(uv, alpha0, zero)
    pad_tm = ~valid_tm
    grad_p = torch.empty((T, N, U), dtype=p.dtype, device=p.device)
    h = torch.zeros((N, U), dtype=p.dtype, device=p.device)  # propagated from frame t + 1
    for t in range(T - 1, -1, -1):
        g = torch.add(G[t], h).masked_fill_(pad_tm[t], 0.0)  # g_t, zero at padding
        diff = g.clone()
        diff[:, :-1].sub_(g[:, 1:])  # g_t(u) - g_t(u + 1)
        torch.mul(a_tm[t - 1] if t > 0 else a0, diff, out=grad_p[t])
        h = torch.addcmul(g, diff, q[t], value=-1.0)  # g p + shift_up(g) (1 - p)
    grad_p.masked_fill_(~pgrad_tm, 0.0)
    grad_alpha0 = h * uv.to(p.dtype)
    return grad_p.permute(1, 2, 0).contiguous(), grad_alpha0


class _SMAFunction(torch.autograd.Function):
    """alpha = SMA(p, alpha0); saves only p, alpha and alpha0; backward is the closed-form adjoint."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        p: Tensor,
        alpha0: Tensor,
        text_lengths: Tensor,
        mel_lengths: Tensor,
        preserve: bool,
        forward_fn: Any,
        backward_fn: Any,
    ) -> Tensor:
        alpha = forward_fn(p, alpha0, text_lengths, mel_lengths, preserve)
        ctx.save_for_backward(p, alpha, alpha0, text_lengths, mel_lengths)
        ctx.preserve = preserve
        ctx.backward_fn = backward_fn
        return alpha

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_alpha: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        p, alpha, alpha0, tl, ml = ctx.saved_tensors
        if not getattr(ctx.backward_fn, "accepts_strided_grad", False):
            grad_alpha = grad_alpha.contiguous()
        grad_p, grad_a0 = ctx.backward_fn(grad_alpha, p, alpha, alpha0, tl, ml, ctx.preserve)
        return (
            grad_p if ctx.needs_input_grad[0] else None,
            grad_a0 if ctx.needs_input_grad[1] else None,
            None,
            None,
            None,
            None,
            None,
        )


def _resolve_impl(impl: Any, device: torch.device) -> tuple[str, Any, Any]:
    name = kernels.resolve("sma", impl, device.type)
    if impl == "auto":
        if name != "torch":
            try:
                kernel = get_sma_kernel(name)
            except (ImportError, ValueError):  # a broken optional backend: fall back to the spec
                name = "torch"
    if name == "torch":
        return "torch", _torch_sma_forward, _torch_sma_backward
    kernel = get_sma_kernel(name)
    if device.type not in kernel.devices:
        raise ValueError(
            f"impl={name!r} runs on {'/'.join(kernel.devices)} tensors; found p_choose on "
            f"{device}. Pass impl='auto' or impl='torch'."
        )
    return name, kernel.forward, kernel.backward


def _raise_bad_range(name: str, mn_v: float, mx_v: float, has_nan: bool) -> None:
    if has_nan:
        raise ValueError(f"Expected {name} in [0, 1]; found NaN at a valid (unpadded) position.")
    if mn_v < 0.0 or mx_v > 1.0:
        raise ValueError(
            f"Expected {name} (stay probabilities) in [0, 1]; found min {mn_v:.6g}, "
            f"max {mx_v:.6g} over valid positions. Apply torch.sigmoid to energies first."
        )


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def stepwise_monotonic_alignment(
    p_choose: Tensor,
    text_lengths: Tensor | None = None,
    mel_lengths: Tensor | None = None,
    *,
    mode: str = "soft",
    mass: str = "drop",
    initial_alignment: Tensor | None = None,
    impl: str = "auto",
) -> Tensor:
    """Stepwise monotonic alignment ``alpha`` from stay probabilities (He et al. 2019, Eq. 8).

    ``alpha_t(u) = alpha_{t-1}(u) p_t(u) + alpha_{t-1}(u-1) (1 - p_t(u-1))`` with
    ``alpha_{-1} = initial_alignment`` (default one-hot on token 0).

    Args:
        p_choose: ``(B, U, T)`` or ``(B, H, U, T)`` probability that frame ``t`` stays on token
            ``u`` (values in ``[0, 1]`` at valid positions; padding is ignored).
            float32/float64; bf16/fp16 are computed in float32 and returned in their dtype.
        text_lengths: int64 ``(B,)`` valid tokens per item (``1 <= len <= U``); ``None`` = all.
        mel_lengths: int64 ``(B,)`` valid frames per item (``1 <= len <= T``); ``None`` = all.
        mode: ``"soft"`` (differentiable expectation) or ``"hard"`` (``p`` replaced by
            ``p > 0.5``: a one-hot path that stays or advances one token; not differentiable,
            returned without grad). Use :func:`monotonic_viterbi` for the most likely path.
        mass: ``"drop"`` lets mass advance past the last valid token and vanish (paper);
            ``"preserve"`` makes the last valid token absorbing (its stay probability is
            treated as 1, with zero gradient) so every valid frame's column sums to 1.
        initial_alignment: optional ``(B, U)`` / ``(B, H, U)`` alignment before frame 0 (same
            dtype and device as ``p_choose``); differentiable. Padded tokens are ignored.
        impl: ``"auto"`` (triton on CUDA when registered, numba on CPU when installed, else
            torch), ``"torch"`` (the pure-torch spec), or a registered kernel name such as
            ``"numba"`` (see :func:`speechattn.kernels.register_sma_kernel`).

    Returns:
        alpha, same shape and dtype as ``p_choose``: zero at tokens ``>= text_lengths[b]`` and
        frames ``>= mel_lengths[b]``; each column sums to at most 1 (exactly 1 on valid frames
        with ``mass="preserve"`` and a normalised initial alignment); row sums are expected
        durations. Differentiable in soft mode w.r.t. ``p_choose`` and ``initial_alignment``
        through a custom backward that stores only ``p``, ``alpha`` and ``alpha0`` (first
        order only: no double backward). One host sync (input validation).

    Raises:
        TypeError: non-tensor or non-float input, integer-typed lengths expected.
        ValueError: wrong rank/shape, lengths out of ``[1, size]``, ``p`` outside ``[0, 1]`` or
            NaN at valid positions, mismatched devices/dtypes, unknown mode/mass/impl.

    Example (naive equivalent, one item, no padding)::

        alpha = torch.zeros(U, T); prev = torch.zeros(U); prev[0] = 1
        for t in range(T):
            a = prev * p[:, t]
            a[1:] += prev[:-1] * (1 - p[:-1, t])
            alpha[:, t] = prev = a
    """
    if mode not in _MODES:
        raise ValueError(f"Expected mode in {_MODES}; found {mode!r}.")
    if mass not in _MASSES:
        raise ValueError(f"Expected mass in {_MASSES}; found {mass!r}.")
    _check_prob_tensor(p_choose, "p_choose")
    _, fwd, bwd = _resolve_impl(impl, p_choose.device)
    # A kernel whose forward checks p's range as it reads it (``forward.checked`` returns
    # ``(alpha, ok)``, ok False for items with a valid entry outside [0, 1] or NaN) saves the
    # separate pass; other paths use one aminmax inside _prepare.
    checked_fwd = getattr(fwd, "checked", None) if mode == "soft" else None
    p3, tl, ml = _prepare(
        p_choose, text_lengths, mel_lengths, name="p_choose", check_range=checked_fwd is None
    )
    N, U = p3.shape[0], p3.shape[1]
    in_dtype = p_choose.dtype
    cdtype = _compute_dtype(in_dtype)
    if initial_alignment is None:
        alpha0 = torch.zeros((N, U), dtype=cdtype, device=p_choose.device)
        if U > 0:
            alpha0.select(1, 0).fill_(1.0)
    else:
        if not isinstance(initial_alignment, Tensor):
            raise TypeError(
                f"Expected initial_alignment to be a tensor of shape {tuple(p_choose.shape[:-1])}; "
                f"found {type(initial_alignment).__name__}."
            )
        if tuple(initial_alignment.shape) != tuple(p_choose.shape[:-1]):
            raise ValueError(
                f"Expected initial_alignment of shape {tuple(p_choose.shape[:-1])} (p_choose "
                f"without its frame axis); found {tuple(initial_alignment.shape)}."
            )
        if initial_alignment.dtype != in_dtype:
            raise TypeError(
                f"Expected initial_alignment with dtype {in_dtype} (that of p_choose); found "
                f"{initial_alignment.dtype}. Cast it with .to(p_choose.dtype)."
            )
        if initial_alignment.device != p_choose.device:
            raise ValueError(
                f"Expected initial_alignment on {p_choose.device} (the device of p_choose); "
                f"found {initial_alignment.device}."
            )
        alpha0 = initial_alignment.reshape(N, U).to(cdtype).contiguous()
    preserve = mass == "preserve"
    pc = p3.to(cdtype).contiguous()
    if mode == "hard":
        with torch.no_grad():
            hard = (pc > 0.5).to(cdtype)
            alpha = fwd(hard, alpha0.detach(), tl, ml, preserve)
    elif checked_fwd is not None:
        flags: list[Tensor] = []

        def fwd_and_check(*args: Any) -> Tensor:
            alpha, ok = checked_fwd(*args)
            flags.append(ok)
            return alpha

        alpha = _SMAFunction.apply(pc, alpha0, tl, ml, preserve, fwd_and_check, bwd)
        if not bool(flags[0].all()):
            # Exact re-check of the flagged input (-0.0 is flagged but valid): raises with the
            # min/max found, or returns.
            _check_range_masked(pc, tl, ml, "p_choose")
    else:
        alpha = _SMAFunction.apply(pc, alpha0, tl, ml, preserve, fwd, bwd)
    return alpha.reshape(p_choose.shape).to(in_dtype)


def alignment_to_durations(
    alignment: Tensor, text_lengths: Tensor | None = None, mel_lengths: Tensor | None = None
) -> Tensor:
    """Frames per token of a hard (one-hot) alignment: row sums over valid frames.

    Args:
        alignment: ``(B, U, T)`` or ``(B, H, U, T)``, one-hot over tokens per valid frame
            (e.g. ``stepwise_monotonic_alignment(..., mode="hard", mass="preserve")`` or
            ``monotonic_viterbi(...).path``). A soft alignment gives rounded expected durations.
        text_lengths: int64 ``(B,)`` or ``None``; padded tokens get 0.
        mel_lengths: int64 ``(B,)`` or ``None``; padded frames are not counted.

    Returns:
        int64 ``(B, U)`` or ``(B, H, U)``; not differentiable. For a hard alignment with
        ``mass="preserve"`` the valid durations sum to ``mel_lengths``.
    """
    a3, tl, ml = _prepare(alignment, text_lengths, mel_lengths, name="alignment", check_range=False)
    N, U, T = a3.shape
    uv, tv, _ = _masks(N, U, T, tl, ml, a3.device)
    valid = uv[:, :, None] & tv[:, None, :]
    sums = torch.where(valid, a3.detach(), torch.zeros((), dtype=a3.dtype, device=a3.device))
    dur = sums.to(torch.float64).sum(-1).round().to(torch.int64)
    return dur.reshape(alignment.shape[:-1])


def focus_rate(
    attn: Tensor, text_lengths: Tensor | None = None, mel_lengths: Tensor | None = None
) -> Tensor:
    """FastSpeech focus rate: how sharply each frame attends to one token.

    Each valid frame's attention over valid tokens is normalised to sum to 1, its maximum taken,
    and the maxima averaged over valid frames (Ren et al. 2019, FastSpeech, Sec. 3.3). A hard
    (one-hot) alignment scores 1.0; a uniform one ``1 / text_lengths``. Frames whose valid
    attention sums to 0 (e.g. mass dropped past the last token) count as 0; NaN at a valid
    position makes the item's focus rate NaN (padding content is ignored).

    Args:
        attn: ``(B, U, T)`` or ``(B, H, U, T)`` non-negative attention (tokens x frames).
        text_lengths, mel_lengths: int64 ``(B,)`` or ``None``.

    Returns:
        ``(B,)`` for 3-D input, ``(B, H)`` for 4-D: computed in float32 (float64 for float64
        input) and returned in ``attn``'s dtype. Differentiable; one host sync (input
        validation), none in the computation.
    """
    a3, tl, ml = _prepare(attn, text_lengths, mel_lengths, name="attn", check_range=False)
    N, U, T = a3.shape
    uv, tv, _ = _masks(N, U, T, tl, ml, a3.device)
    cdtype = _compute_dtype(attn.dtype)
    a = torch.where(uv[:, :, None], a3.to(cdtype), torch.zeros((), dtype=cdtype, device=a3.device))
    col = a.sum(1)  # (N, T)
    # Columns summing to exactly 0 count as 0; NaN (and inf) propagate, never silently 0.
    empty = col == 0
    safe = torch.where(empty, torch.ones_like(col), col)
    peak = torch.where(empty, torch.zeros_like(col), a.amax(1) / safe)
    peak = torch.where(tv, peak, torch.zeros_like(peak))
    fr = peak.sum(-1) / ml.to(cdtype)
    return fr.reshape(attn.shape[:-2]).to(attn.dtype)


def monotonic_viterbi(
    p_choose: Tensor,
    text_lengths: Tensor | None = None,
    mel_lengths: Tensor | None = None,
    *,
    impl: str = "auto",
) -> AlignmentPath:
    """Most likely stepwise monotonic path under stay prob ``p`` / advance prob ``1 - p``.

    The path is on token 0 at frame 0; at each later frame ``t`` it stays on its token ``u``
    (log-score ``log p_t(u)``) or advances exactly one token (``log(1 - p_t(u))``), and it is
    forced to end on the last valid token at the last valid frame, so every valid token gets at
    least one frame. Log-probabilities are clamped at ``log(1e-12)``; ties prefer staying.
    Computed in float64 by the one monotonic Viterbi of
    :func:`~speechattn.functional.monotonic_hmm_viterbi` (no emissions, stay ``log p``, move
    ``log(1 - p)``): numba on CPU when installed, else a vectorised torch DP.

    Args:
        p_choose: ``(B, U, T)`` or ``(B, H, U, T)`` stay probabilities in ``[0, 1]``.
        text_lengths, mel_lengths: int64 ``(B,)`` or ``None``; requires
            ``mel_lengths[b] >= text_lengths[b]``.
        impl: ``"auto"`` (numba on CPU when installed, else torch), ``"torch"`` or ``"numba"``.

    Returns:
        :class:`AlignmentPath` (alias ``MonotonicPath``) ``(path, durations)``: ``path`` one-hot over tokens per valid
        frame (``p_choose``'s shape and dtype, zero elsewhere, no grad); ``durations`` int64
        ``(B, U)`` / ``(B, H, U)`` summing to ``mel_lengths``.

    Raises:
        ValueError: as :func:`stepwise_monotonic_alignment`, and when some
            ``mel_lengths[b] < text_lengths[b]`` (names ``b``).
    """
    p3, tl, ml = _prepare(
        p_choose, text_lengths, mel_lengths, name="p_choose", need_mel_ge_text=True
    )
    name = kernels.resolve("viterbi", impl, p3.device.type)
    with torch.no_grad():
        pd = p3.detach().to(torch.float64)
        lp = torch.log(pd.clamp(min=_LOG_EPS))
        l1p = torch.log((1.0 - pd).clamp(min=_LOG_EPS))
        # The HMM Viterbi with no emissions, stay log p, move log(1 - p) (padding zeroed).
        N, U, T = pd.shape
        uv, tv, _ = _masks(N, U, T, tl, ml, pd.device)
        valid = uv[:, :, None] & tv[:, None, :]
        zero = torch.zeros((), dtype=torch.float64, device=pd.device)
        path = _viterbi(
            torch.zeros_like(pd),
            torch.where(valid, lp, zero),
            torch.where(valid, l1p, zero),
            tl,
            ml,
            name,
        )
        dur = path.sum(-1).round()
    out_shape = p_choose.shape
    return AlignmentPath(
        path.to(p_choose.dtype).reshape(out_shape), dur.to(torch.int64).reshape(out_shape[:-1])
    )
