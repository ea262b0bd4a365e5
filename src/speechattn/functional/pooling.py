"""Temporal (statistics) pooling math with lengths: masked statistics and masked softmax over time.

Shape legend: ``b`` batch, ``f`` feature channels, ``t`` frames, ``h`` heads, ``q`` queries,
``c`` channels per head (``f = h * c``), ``s`` attention channels per head (1 or ``c``).

Pooling layers read conv-encoder layout ``(B, F, T)`` (time last), or ``(B, C, F, T)`` which is
flattened to ``(B, C*F, T)``. ``lengths`` are int64 ``(B,)`` valid-frame counts (``1 <= len <= T``);
inside, the keep-mask is bool with True = valid frame.

Guarantees, whatever the padding holds (even inf/NaN):

* padded frames are zeroed before anything reads them, softmax runs over valid frames only and
  statistics sum over valid frames only, so a padded item pools exactly as the same item trimmed;
* statistics are computed in (at least) float32, also under autocast;
* nothing returns NaN: a single valid frame gives ``std = sqrt(eps)`` (see
  :func:`temporal_mean_std` for the definition).

References:
    Snyder et al., "X-vectors: robust DNN embeddings for speaker recognition", ICASSP 2018 (TSTP).
    Okabe et al., "Attentive statistics pooling for deep speaker embedding", Interspeech 2018 (ASP).
    Desplanques et al., "ECAPA-TDNN", Interspeech 2020 (ASTP with global context).
    India et al., "Self multi-head attention for speaker recognition", Interspeech 2019 (MHASTP).
    Zhao et al., "Multi-query multi-head attention pooling and inter-topK penalty for speaker
    verification", ICASSP 2022 (MQMHASTP).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from speechattn.functional.masks import check_lengths, lengths_to_valid_mask

__all__ = [
    "PoolingInput",
    "attentive_mean_std",
    "attentive_mean_var",
    "attentive_pool_mean_std",
    "attentive_statistics_pooling",
    "head_attentive_statistics",
    "masked_batch_norm",
    "masked_softmax",
    "multi_head_attentive_statistics_pooling",
    "prepare_pooling_input",
    "temporal_mean_std",
]


class PoolingInput(NamedTuple):
    """A validated pooling input.

    Attributes:
        x: ``(B, F, T)`` features, padded frames zeroed when lengths were given.
        lengths: int64 ``(B,)`` or ``None`` (every item full length).
        valid_mask: bool ``(B, 1, T)`` keep-mask (True = valid frame) or ``None``.
    """

    x: Tensor
    lengths: Tensor | None
    valid_mask: Tensor | None


def _is_exporting() -> bool:
    """True while torch.export / ONNX / TorchScript tracing runs (no host syncs allowed)."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    if exporting is not None and exporting():
        return True
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling())


def prepare_pooling_input(
    x: Tensor, lengths: Tensor | None = None, *, name: str = "x", zero_padding: bool = True
) -> PoolingInput:
    """Validate and flatten a pooling input; zero padded frames.

    Args:
        x: float ``(B, F, T)`` or ``(B, C, F, T)`` (flattened to ``(B, C*F, T)``), time last.
        lengths: optional int64 ``(B,)`` valid-frame counts, ``1 <= lengths[b] <= T``; on x's
            device or on CPU.
        name: the argument's name for error messages.
        zero_padding: return x with padded frames zeroed (a copy); False when the caller zeroes
            them itself.

    Returns:
        :class:`PoolingInput` with padded frames of ``x`` set to 0 (a copy; x is not modified).

    Raises:
        TypeError: x not a floating tensor; lengths not an integer tensor.
        ValueError: x not 3-D/4-D, T = 0, or lengths of the wrong shape or out of range.
    """
    if not isinstance(x, Tensor):
        raise TypeError(
            f"Expected {name} to be a float tensor (B, F, T); found {type(x).__name__}."
        )
    if not x.dtype.is_floating_point:
        raise TypeError(
            f"Expected {name} to be a floating tensor (B, F, T); found dtype {x.dtype}. "
            f"Convert it with {name}.float()."
        )
    if x.dim() == 4:
        x = x.reshape(x.shape[0], x.shape[1] * x.shape[2], x.shape[3])
    elif x.dim() != 3:
        raise ValueError(
            f"Expected {name} of shape (B, F, T) or (B, C, F, T) with time last; found "
            f"{tuple(x.shape)}. Transpose (B, T, F) features with {name}.transpose(1, 2)."
        )
    batch, _, frames = x.shape
    if frames == 0:
        raise ValueError(
            f"Expected {name} with at least one frame; found T = 0 in {tuple(x.shape)}."
        )
    if lengths is None:
        return PoolingInput(x, None, None)
    if _is_exporting():
        lengths = lengths.to(device=x.device, dtype=torch.int64)
    else:
        lengths = check_lengths(lengths, "lengths", batch=batch, max_len=frames, device=x.device)
    valid_mask = lengths_to_valid_mask(lengths, frames).unsqueeze(1)
    if not zero_padding:  # the caller zeroes padded frames itself (tile by tile)
        return PoolingInput(x, lengths, valid_mask)
    # torch.where, not masked_fill: several times faster for a mask broadcast over features.
    return PoolingInput(torch.where(valid_mask, x, x.new_zeros(())), lengths, valid_mask)


@contextlib.contextmanager
def _fp32_region(x: Tensor) -> Iterator[None]:
    """Disable autocast (statistics stay in float32) when it is on for x's device."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        with torch.autocast(device_type=dev, enabled=False):
            yield
    else:
        yield


def _stat_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def temporal_mean_std(
    x: Tensor, lengths: Tensor | None = None, *, eps: float = 1e-7, valid_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation over the valid frames (TSTP, x-vector statistics).

    ``mean = sum_t x_t / n`` and ``std = sqrt(var + eps)`` with the unbiased
    ``var = sum_t (x_t - mean)^2 / max(n - 1, 1)`` over the ``n = lengths[b]`` valid frames. For
    ``n >= 2`` this is WeSpeaker's ``sqrt(torch.var(x, -1) + eps)``; for ``n = 1`` (where torch.var
    gives NaN) the sum of squares is 0, so ``std = sqrt(eps)``: finite, with finite gradients.

    Args:
        x: ``(B, F, T)``; padded frames must already be zero when lengths are given (as
            :func:`prepare_pooling_input` returns them).
        lengths: optional int64 ``(B,)`` valid frames.
        eps: added to the variance.
        valid_mask: optional precomputed bool ``(B, 1, T)`` mask matching lengths.

    Returns:
        ``(mean, std)``, each ``(B, F)`` in at least float32. Differentiable.
    """
    with _fp32_region(x):
        xf = x.to(_stat_dtype(x))
        frames = xf.shape[-1]
        if lengths is None:
            mean = xf.mean(-1)
            sq = (xf - mean.unsqueeze(-1)).square().sum(-1)
            var = sq / max(frames - 1, 1)
        else:
            if valid_mask is None:
                valid_mask = lengths_to_valid_mask(lengths, frames).unsqueeze(1)
            n = lengths.to(xf.dtype).unsqueeze(-1)
            mean = xf.sum(-1) / n
            centred = torch.where(valid_mask, xf - mean.unsqueeze(-1), xf.new_zeros(()))
            var = centred.square().sum(-1) / (n - 1).clamp(min=1.0)
        return mean, torch.sqrt(var + eps)


def masked_softmax(scores: Tensor, valid_mask: Tensor | None = None) -> Tensor:
    """Softmax over the last (time) axis in float32, over valid frames only.

    Args:
        scores: ``(..., T)`` attention logits.
        valid_mask: bool keep-mask broadcastable to scores (True = valid frame) or ``None``.

    Returns:
        float32 (or float64) weights, exactly 0 on masked frames; each row with a valid frame
        sums to 1. Rows with no valid frame never occur in this module (lengths >= 1).
    """
    s = scores.to(_stat_dtype(scores))
    if valid_mask is not None:
        s = torch.where(valid_mask, s, torch.finfo(s.dtype).min)
    return torch.softmax(s, dim=-1)


# ---------------------------------------------------------------------------------------------
# Attentive moments for many queries at once.
# Layout: alpha (N, Q, S, T) with S in {1, C}; x (N, C, T); outputs (N, Q, C).
# mean = sum_t a_t x_t and var = sum_t a_t (x_t - mean)^2: the centred form, which equals
# WeSpeaker's sum_t a_t x_t^2 - mean^2 for weights summing to 1, without its cancellation.
# ---------------------------------------------------------------------------------------------


def _mean_var_forward(alpha: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    xq = x.unsqueeze(1)  # (N, 1, C, T)
    if torch.is_grad_enabled() and (alpha.requires_grad or x.requires_grad):
        # Traced for export with autograd on: plain out-of-place ops.
        if alpha.shape[2] == 1:
            mean = torch.matmul(alpha.squeeze(2), x.transpose(1, 2))
        else:
            mean = (alpha * xq).sum(-1)
        return mean, ((xq - mean.unsqueeze(-1)).square() * alpha).sum(-1)
    if alpha.shape[2] == 1:
        mean = torch.matmul(alpha.squeeze(2), x.transpose(1, 2))  # (N, Q, C)
        buf = xq - mean.unsqueeze(-1)  # (N, Q, C, T): the one transient buffer
    else:
        buf = alpha * xq
        mean = buf.sum(-1)
        torch.sub(xq, mean.unsqueeze(-1), out=buf)
    var = buf.square_().mul_(alpha).sum(-1)
    return mean, var


class _AttentiveMeanVar(torch.autograd.Function):
    """Saves only (alpha, x, mean): no (N, Q, C, T) products are kept for backward."""

    @staticmethod
    def forward(ctx, alpha: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        mean, var = _mean_var_forward(alpha, x)
        ctx.save_for_backward(alpha, x, mean)
        return mean, var

    @staticmethod
    def backward(ctx, g_mean: Tensor, g_var: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        alpha, x, mean = ctx.saved_tensors
        # var = sum_t a_t (x_t - mean)^2 with mean = sum_t a_t x_t. With r = sum_t a_t (x_t - mean)
        # = mean (1 - sum_t a_t) (0 for normalised weights, kept so the gradient is exact):
        #   dL/da_t = g1 x_t + g_var (x_t - mean)^2,  dL/dx_t = a_t (g1 + 2 g_var (x_t - mean)),
        # where g1 = g_mean - 2 r g_var.
        s_full = alpha.shape[2] != 1
        r = mean * (1.0 - alpha.sum(-1))  # (N, Q, C) (broadcast from S = 1)
        g1 = g_mean - 2.0 * r * g_var
        grad_alpha = grad_x = None
        if not s_full:
            a = alpha.squeeze(2)  # (N, Q, T)
            if ctx.needs_input_grad[0]:
                # sum_c g1 x + g_var (x^2 - 2 mean x + mean^2)
                gm = g1 - 2.0 * g_var * mean
                grad_alpha = torch.matmul(gm, x) + torch.matmul(g_var, x * x)
                grad_alpha = (grad_alpha + (g_var * mean * mean).sum(-1, keepdim=True)).unsqueeze(2)
            if ctx.needs_input_grad[1]:
                # sum_q a_qt (g1 - 2 g_var mean)_qc + 2 x_ct sum_q a_qt g_var_qc
                ga = torch.matmul((g1 - 2.0 * g_var * mean).transpose(1, 2), a)
                gb = torch.matmul(g_var.transpose(1, 2), a)
                grad_x = torch.addcmul(ga, gb, x, value=2.0)
            return grad_alpha, grad_x
        xq = x.unsqueeze(1)
        m, g1, gv = mean.unsqueeze(-1), g1.unsqueeze(-1), g_var.unsqueeze(-1)
        if ctx.needs_input_grad[0]:
            grad_alpha = (xq - m).square_().mul_(gv).addcmul_(xq, g1)
        if ctx.needs_input_grad[1]:
            grad_x = (xq - m).mul_(2.0 * gv).add_(g1).mul_(alpha).sum(1)
        return grad_alpha, grad_x


def attentive_mean_var(alpha: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Attention-weighted mean and variance for Q queries.

    ``mean[n, q, c] = sum_t a[n, q, s(c), t] x[n, c, t]`` and
    ``var = sum_t a (x - mean)^2`` (WeSpeaker's ``sum_t a x^2 - mean^2`` when the weights sum to
    1), where ``s(c) = 0`` when ``S = 1`` (one weight per frame shared by
    all channels) and ``c`` when ``S = C`` (a weight per channel and frame). The variance is
    evaluated in the centred form (no cancellation for weights summing to 1), so it is more
    accurate than ``m2 - mean^2`` evaluated directly when the std is small against the mean.

    Args:
        alpha: ``(N, Q, S, T)`` weights, S in {1, C} (0 on padded frames).
        x: ``(N, C, T)``, same dtype as alpha.

    Returns:
        ``(mean, var)``, each ``(N, Q, C)``. Differentiable (a custom backward that keeps only
        alpha, x and mean; one ``(N, Q, C, T)`` transient buffer in forward).
    """
    if alpha.dim() != 4 or x.dim() != 3 or alpha.shape[0] != x.shape[0]:
        raise ValueError(
            f"Expected alpha (N, Q, S, T) and x (N, C, T); found {tuple(alpha.shape)} and {tuple(x.shape)}."
        )
    if alpha.shape[2] not in (1, x.shape[1]) or alpha.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"Expected alpha (N, Q, S in {{1, {x.shape[1]}}}, T={x.shape[-1]}); found {tuple(alpha.shape)}."
        )
    if torch.is_grad_enabled() and (alpha.requires_grad or x.requires_grad) and not _is_exporting():
        out = _AttentiveMeanVar.apply(alpha, x)
        return out[0], out[1]
    return _mean_var_forward(alpha, x)


def attentive_mean_std(alpha: Tensor, x: Tensor, *, eps: float = 1e-7) -> tuple[Tensor, Tensor]:
    """Attentive mean and ``std = sqrt(clamp(var, min=eps))`` (WeSpeaker's definition).

    A single valid frame gives ``var = 0`` hence ``std = sqrt(eps)``: finite, zero gradient
    through the clamp. Shapes as :func:`attentive_mean_var`.
    """
    mean, var = attentive_mean_var(alpha, x)
    return mean, torch.sqrt(var.clamp(min=eps))


# ---------------------------------------------------------------------------------------------
# Fused last layer (used by ASP): 1x1 conv -> masked softmax over time -> attentive mean/var, one query
# at a time, with a recomputing backward. Memory: per query one (B, H, S, T) weights buffer and
# one (B, F, T) work buffer; saved for backward: only the last hidden activations and x (the
# weights are recomputed), so training memory does not grow with heads x queries x frames.
# ---------------------------------------------------------------------------------------------


def _query_alpha(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    q: int,
    valid_mask: Tensor | None,
    shared: bool,
    stat_dtype: torch.dtype,
    heads: slice | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Softmax weights (B, h, S, T) of query q for a slice of heads, plus the conv operands."""
    n_heads, n_queries, _, k = weight.shape
    hs = slice(0, n_heads) if heads is None else heads
    batch, frames = hidden.shape[0], hidden.shape[-1]
    if shared:
        hq = hidden.view(batch, n_heads, k, frames)[:, hs]
    else:
        hq = hidden.view(batch, n_heads, n_queries, k, frames)[:, hs, q]  # (B, h, k, T) view
    wq = weight[hs, q].to(hq.dtype)  # (h, S, k)
    bq = None if bias is None else bias[hs, q].to(hq.dtype)  # (h, S)
    # A batched matmul, not a grouped conv1d: several times faster on CPU for 1x1 kernels.
    scores = torch.matmul(wq, hq)
    if bq is not None:
        scores = scores.add_(bq.unsqueeze(-1))
    scores = scores.to(stat_dtype)
    if valid_mask is not None:
        # additive 0 / finfo.min bias (B, 1, 1, T): one fast broadcast pass, exp() gives exact 0
        bias_t = torch.zeros(valid_mask.shape, dtype=stat_dtype, device=scores.device)
        scores.add_(bias_t.masked_fill_(~valid_mask, torch.finfo(stat_dtype).min).unsqueeze(1))
    return torch.softmax(scores, dim=-1), hq, wq, bq


def _head_chunks(heads: int) -> list[int]:
    """Heads in two chunks: per-query work buffers are half a copy of x each."""
    n_chunks = 2 if heads >= 2 else 1
    return [round(i * heads / n_chunks) for i in range(n_chunks + 1)]


def _fused_forward(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    x: Tensor,
    valid_mask: Tensor | None,
    shared: bool,
) -> tuple[Tensor, Tensor]:
    heads, queries, s, _ = weight.shape
    batch, feat, frames = x.shape
    c = feat // heads
    xv = x.view(batch, heads, c, frames)
    mean = x.new_empty(batch, heads, queries, c)
    var = x.new_empty(batch, heads, queries, c)
    for q in range(queries):
        for h0, h1 in itertools.pairwise(_head_chunks(heads)):
            hs = slice(h0, h1)
            xs = xv[:, hs]
            alpha = _query_alpha(hidden, weight, bias, q, valid_mask, shared, x.dtype, heads=hs)[0]
            if s == 1:
                mu = torch.matmul(alpha, xs.transpose(-1, -2)).squeeze(2)  # (B, h, c)
                buf = xs - mu.unsqueeze(-1)
            else:
                buf = alpha * xs
                mu = buf.sum(-1)
                torch.sub(xs, mu.unsqueeze(-1), out=buf)
            mean[:, hs, q] = mu
            var[:, hs, q] = buf.square_().mul_(alpha).sum(-1)
            del alpha, buf
    return mean, var


class _FusedAttentiveStats(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        x: Tensor,
        valid_mask: Tensor | None,
        shared: bool,
    ) -> tuple[Tensor, Tensor]:
        mean, var = _fused_forward(hidden, weight, bias, x, valid_mask, shared)
        ctx.save_for_backward(hidden, weight, bias, x, mean, var)
        ctx.valid_mask = valid_mask
        ctx.shared = shared
        return mean, var

    @staticmethod
    def backward(ctx, g_mean: Tensor, g_var: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        hidden, weight, bias, x, mean, var = ctx.saved_tensors
        need_h, need_w, need_b, need_x = ctx.needs_input_grad[:4]
        heads, queries, s, k = weight.shape
        batch, feat, frames = x.shape
        c = feat // heads
        xv = x.view(batch, heads, c, frames)
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if (need_b and bias is not None) else None
        grad_x = torch.zeros_like(x) if need_x else None
        gxv = None if grad_x is None else grad_x.view(batch, heads, c, frames)
        bounds = _head_chunks(heads)
        for q in range(queries):
            for h0, h1 in itertools.pairwise(bounds):
                hs = slice(h0, h1)
                a, hq, wq, bq = _query_alpha(
                    hidden, weight, bias, q, ctx.valid_mask, ctx.shared, x.dtype, heads=hs
                )
                xs = xv[:, hs]
                mu = mean[:, hs, q].unsqueeze(-1)  # (B, h, c, 1)
                gm = g_mean[:, hs, q].unsqueeze(-1)
                gv = g_var[:, hs, q].unsqueeze(-1)
                vq = var[:, hs, q].unsqueeze(-1)
                gxs = None if gxv is None else gxv[:, hs]
                u = xs - mu
                if s == 1:
                    # dL/ds_t = a_t sum_c (g_mean u + g_var (u^2 - var)); dL/dx = a (g_mean + 2 g_var u)
                    g_lin = torch.matmul(gm.transpose(-1, -2), u)  # (B, h, 1, T)
                    g_quad = torch.matmul(gv.transpose(-1, -2), u.square())
                    if gxs is not None:
                        gxs.addcmul_(a, gm)
                        gxs.addcmul_(u.mul_(a), gv, value=2.0)
                    gs = a * (g_lin + g_quad - (gv * vq).sum(2, keepdim=True))
                else:
                    if gxs is not None:
                        gxs.addcmul_(a, gm)
                    u.mul_(a)  # a u
                    if gxs is not None:
                        gxs.addcmul_(u, gv, value=2.0)
                    # dL/ds = a (g_mean u + g_var (u^2 - var)), built in a's buffer
                    gs = a.mul_(-(gv * vq))
                    gs.addcmul_(u, gm)
                    u.mul_(gv)
                    gs.addcmul_(u, xs).addcmul_(u, -mu)
                del u
                gs = gs.to(hq.dtype)  # (B, h, S, T)
                gi = torch.matmul(wq.transpose(-1, -2), gs) if need_h else None  # (B, h, k, T)
                gw = torch.matmul(gs, hq.transpose(-1, -2)).sum(0) if need_w else None  # (h, S, k)
                gb = gs.sum((0, 3)) if (need_b and bq is not None) else None
                del a, gs
                if grad_h is not None and gi is not None:
                    if ctx.shared:
                        grad_h.view(batch, heads, k, frames)[:, hs] += gi
                    else:
                        grad_h.view(batch, heads, queries, k, frames)[:, hs, q] += gi
                if grad_w is not None and gw is not None:
                    grad_w[hs, q] += gw.to(grad_w.dtype)
                if grad_b is not None and gb is not None:
                    grad_b[hs, q] += gb.to(grad_b.dtype)
                del gi
        return grad_h, grad_w, grad_b, grad_x, None, None


def _traceable_forward(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    x: Tensor,
    valid_mask: Tensor | None,
    shared: bool,
) -> tuple[Tensor, Tensor]:
    """Out-of-place twin of :func:`_fused_forward` (export, and plain autograd)."""
    heads, queries, s, k = weight.shape
    batch, feat, frames = x.shape
    c = feat // heads
    xv = x.view(batch, heads, c, frames)
    means, vars_ = [], []
    for q in range(queries):
        if shared:
            hq = hidden.view(batch, heads, k, frames)
        else:
            hq = hidden.view(batch, heads, queries, k, frames)[:, :, q]
        scores = torch.matmul(weight[:, q].to(hq.dtype), hq)
        if bias is not None:
            scores = scores + bias[:, q].to(hq.dtype).unsqueeze(-1)
        alpha = masked_softmax(scores, None if valid_mask is None else valid_mask.unsqueeze(1)).to(
            x.dtype
        )
        if s == 1:
            mu = torch.matmul(alpha, xv.transpose(-1, -2)).squeeze(2)
        else:
            mu = (alpha * xv).sum(-1)
        means.append(mu)
        vars_.append(((xv - mu.unsqueeze(-1)).square() * alpha).sum(-1))
    return torch.stack(means, 2), torch.stack(vars_, 2)


def head_attentive_statistics(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    x: Tensor,
    valid_mask: Tensor | None = None,
    *,
    shared_hidden: bool = False,
    eps: float = 1e-7,
    impl: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Last attention layer, softmax over valid frames and attentive mean/std, fused.

    For head h and query q: ``a = softmax_t(W[h, q] @ hidden[h, q] + b[h, q])`` (masked), then
    ``mean = sum_t a x_t`` and ``std = sqrt(clamp(sum_t a (x_t - mean)^2, eps))`` over the head's
    channels ``x[h]``. The centred variance equals WeSpeaker's ``sum a x^2 - mean^2`` without its
    cancellation.

    Args:
        hidden: ``(B, H*Q*K, T)`` last hidden activations ordered (head, query, k), or with
            ``shared_hidden`` a ``(B, H*K, T)`` input shared by every query (one-layer attention).
        weight: ``(H, Q, S, K)`` last-layer 1x1 weights, S = 1 (one weight per frame) or c.
        bias: ``(H, Q, S)`` or None.
        x: ``(B, H*c, T)`` features, padded frames already zero; float32/float64.
        valid_mask: bool ``(B, 1, T)`` keep-mask or None.
        shared_hidden: see ``hidden``.
        eps: variance clamp.
        impl: ``"fused"`` (query-by-query, recomputing backward; the default when autograd is
            live), ``"torch"`` (plain out-of-place ops; used while exporting), or ``"auto"``.

    Returns:
        ``(mean, std)``, each ``(B, H, Q, c)`` in x's dtype. Differentiable in hidden, weight,
        bias and x.
    """
    if impl not in ("auto", "fused", "torch"):
        raise ValueError(f"Expected impl in ('auto', 'fused', 'torch'); found {impl!r}.")
    heads, queries, s, k = weight.shape
    c = x.shape[1] // heads
    if s not in (1, c):
        raise ValueError(
            f"Expected the last layer to output 1 or c={c} channels per head; found {s}."
        )
    expected = heads * k if shared_hidden else heads * queries * k
    if hidden.shape[1] != expected:
        raise ValueError(f"Expected hidden with {expected} channels; found {tuple(hidden.shape)}.")
    if impl == "torch" or (impl == "auto" and _is_exporting()):
        mean, var = _traceable_forward(hidden, weight, bias, x, valid_mask, shared_hidden)
    elif torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias, x)
    ):
        out = _FusedAttentiveStats.apply(hidden, weight, bias, x, valid_mask, shared_hidden)
        mean, var = out[0], out[1]
    else:
        mean, var = _fused_forward(hidden, weight, bias, x, valid_mask, shared_hidden)
    return mean, torch.sqrt(var.clamp(min=eps))


# ---------------------------------------------------------------------------------------------
# Whole attention MLP + softmax + statistics, tiled over the batch (all heads and queries at
# once inside a tile). Inside a tile the layout is "folded", (H, Q, channels, b, T): each layer
# is one batched matmul over the H (or H*Q) weights with the tile's b*T frames as its columns
# (wider GEMMs run faster than b separate ones). Every tile writes into scratch buffers
# allocated once per call (``out=`` and in-place ops): on CPU a fresh multi-MiB tensor per op
# page-faults on first touch and costs more than the op itself. For backward the forward keeps,
# when they fit _SAVE_BUDGET_BYTES, the softmax weights (B, H, Q, S, T) and the tanh activations
# (what plain autograd keeps, once, instead of WeSpeaker's per-head products); otherwise the
# backward recomputes them tile by tile. With impl "numba" (the CPU default when numba is
# installed) the statistics and their gradients, chains of 6-10 elementwise passes in torch, run
# as one pass per row (speechattn.kernels._numba_pool); matmuls and softmax stay in torch.
# ---------------------------------------------------------------------------------------------

_TILE_ELEMENTS = 1 << 21  # ~8 MiB of float32 weights per tile
_SAVE_BUDGET_BYTES = 1 << 30  # recompute="auto": keep weights/activations up to this size
_RECOMPUTE_MODES = ("auto", "none", "softmax", "all")


def _tile_size(batch: int, per_item: int) -> int:
    return max(1, min(batch, _TILE_ELEMENTS // max(1, per_item)))


def _pool_tile(x: Tensor, weights: Sequence[Tensor]) -> int:
    """Items per tile: the (H, Q, max(S, o_0), b, T) tile holds about _TILE_ELEMENTS values."""
    heads, queries, s, _ = weights[-1].shape
    return _tile_size(x.shape[0], heads * queries * max(s, weights[0].shape[2]) * x.shape[-1])


class _Scratch:
    """Tile-sized buffers, allocated on first use and reused by every tile of one call."""

    def __init__(self, ref: Tensor, tile: int) -> None:
        self.ref = ref
        self.tile = tile
        self.bufs: dict[str, Tensor] = {}

    def get(self, name: str, shape: Sequence[int], b: int) -> Tensor:
        """A contiguous ``shape`` tensor whose batch axis (the second last) holds b <= tile."""
        numel = b
        for d in shape:
            numel *= d
        buf = self.bufs.get(name)
        if buf is None:
            buf = self.ref.new_empty(numel * self.tile // b)
            self.bufs[name] = buf
        return buf[:numel].view(*shape[:-1], b, shape[-1])


class _Kept:
    """A flat tensor holding per-tile (..., b, T) blocks back to back (kept for backward)."""

    def __init__(self, ref: Tensor, batch: int, shape: Sequence[int]) -> None:
        self.shape = tuple(shape)
        self.per_item = 1
        for d in shape:
            self.per_item *= d
        self.data = ref.new_empty(batch * self.per_item)

    @staticmethod
    def block(data: Tensor, shape: Sequence[int], sl: slice) -> Tensor:
        per_item = 1
        for d in shape:
            per_item *= d
        chunk = data[sl.start * per_item : sl.stop * per_item]
        return chunk.view(*shape[:-1], sl.stop - sl.start, shape[-1])


def _prefix_lengths(valid_mask: Tensor | None) -> list[int] | None:
    """Per-item valid counts when every row of the mask is a prefix, else None."""
    if valid_mask is None:
        return None
    batch, frames = valid_mask.shape[0], valid_mask.shape[-1]
    m = valid_mask.reshape(batch, frames)
    lengths = m.sum(-1)
    prefix = torch.arange(frames, device=m.device) < lengths.unsqueeze(-1)
    return [int(v) for v in lengths.tolist()] if torch.equal(prefix, m) else None


def _mask_bias(valid_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Additive 0 / finfo.min bias ``(B, T)``: exp() gives exact zeros on padding."""
    if valid_mask is None:
        return None
    batch, frames = valid_mask.shape[0], valid_mask.shape[-1]
    bias = torch.zeros(batch, frames, dtype=dtype, device=valid_mask.device)
    return bias.masked_fill_(~valid_mask.reshape(batch, frames), torch.finfo(dtype).min)


def _tile_x(
    xv: Tensor,
    sl: slice,
    valid_mask: Tensor | None,
    lengths: list[int] | None,
    scratch: _Scratch,
) -> Tensor:
    """The folded ``(H, c, b, T)`` tile of x with padded frames zeroed (a scratch buffer)."""
    _, heads, c, frames = xv.shape
    xt = xv[sl].permute(1, 2, 0, 3)
    out = scratch.get("x", (heads, c, frames), xt.shape[2])
    if valid_mask is None:
        return out.copy_(xt)
    if lengths is None:  # not prefix masks
        keep = valid_mask[sl].reshape(-1, frames)
        return torch.where(keep, xt, xt.new_zeros(()), out=out)
    out.copy_(xt)
    for j, n in enumerate(lengths[sl]):
        if n < frames:
            out[:, :, j, n:].zero_()
    return out


def _tile_mlp(
    xt: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    item_bias: Tensor | None,
    hidden: Sequence[Tensor],
    scores: Tensor,
    start: int = 0,
) -> None:
    """Attention MLP of one folded tile, written in place.

    Layer i < n - 1 writes its tanh activations into ``hidden[i]`` ``(H, Q, o_i, b, T)`` (the
    input of layer i + 1); the last layer writes the logits into ``scores`` ``(H, Q, S, b, T)``.
    Layers before ``start`` are taken as already in ``hidden``. ``item_bias`` is ``(b, H*Q*o_0)``.
    """
    heads, c, b, frames = xt.shape
    queries = weights[0].shape[1]
    n = len(weights)
    for i in range(start, n):
        dest = scores if i == n - 1 else hidden[i]
        w = weights[i]
        if i == 0:
            torch.bmm(
                w.reshape(heads, -1, c),
                xt.view(heads, c, b * frames),
                out=dest.view(heads, -1, b * frames),
            )
        else:
            torch.bmm(
                w.reshape(heads * queries, w.shape[2], w.shape[3]),
                hidden[i - 1].view(heads * queries, w.shape[3], b * frames),
                out=dest.view(heads * queries, -1, b * frames),
            )
        bi = biases[i]
        if bi is not None:
            dest.add_(bi.view(heads, queries, -1, 1, 1))
        if i == 0 and item_bias is not None:
            dest.add_(item_bias.view(b, heads, queries, -1).permute(1, 2, 3, 0).unsqueeze(-1))
        if i < n - 1:
            dest.tanh_()


def _tile_alpha(scores: Tensor, mask_bias: Tensor | None, out: Tensor) -> Tensor:
    """Softmax over time of one folded tile's logits (modified in place) into ``out``.

    Args:
        scores: ``(H, Q, S, b, T)`` logits.
        mask_bias: ``(b, T)`` additive bias (0 / finfo.min) or None.
        out: ``(H, Q, S, b, T)`` destination.
    """
    if mask_bias is not None:
        scores.add_(mask_bias)
    return torch.softmax(scores, dim=-1, out=out)


def _tile_stats(
    alpha: Tensor, xt: Tensor, buf: Tensor, mean: Tensor, var: Tensor, kernels: Any = None
) -> None:
    """Centred attentive mean/var of one folded tile into ``mean``/``var`` (H, Q, c, b).

    alpha ``(H, Q, S, b, T)``, xt ``(H, c, b, T)``, buf ``(H, Q, c, b, T)`` scratch; ``kernels``:
    the numba module (one fused pass) or None (torch ops).
    """
    if kernels is not None:
        kernels.stats_forward(alpha, xt, mean, var)
        return
    xq = xt.unsqueeze(1)  # (H, 1, c, b, T)
    torch.sum(torch.mul(alpha, xq, out=buf), -1, out=mean)
    torch.sub(xq, mean.unsqueeze(-1), out=buf)
    torch.sum(buf.square_().mul_(alpha), -1, out=var)


@functools.lru_cache(maxsize=1)
def _numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


def _pool_kernels(impl: str, x: Tensor) -> Any:
    """The numba statistics kernels for ``impl`` ("auto" | "numba"), or None (torch ops)."""
    if impl not in ("auto", "numba"):
        return None
    ok = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
    if impl == "numba" and not (ok and _numba_available()):
        raise ValueError(
            f"impl='numba' needs the numba package and a float32/float64 CPU tensor; found "
            f"{x.dtype} on {x.device}, numba {'installed' if _numba_available() else 'missing'}. "
            "Use impl='auto' (falls back to torch ops) or install numba."
        )
    if not (ok and _numba_available()):
        return None
    from speechattn.kernels import _numba_pool

    return _numba_pool


def _resolve_recompute(recompute: str, alpha_bytes: int, hidden_bytes: int) -> str:
    if recompute != "auto":
        return recompute
    if alpha_bytes + hidden_bytes <= _SAVE_BUDGET_BYTES:
        return "none"
    return "softmax" if hidden_bytes <= _SAVE_BUDGET_BYTES else "all"


def _folded(t: Tensor, sl: slice) -> Tensor:
    """(B, H, Q, c) -> the tile's (H, Q, c, b) view."""
    return t[sl].permute(1, 2, 3, 0)


def _pool_forward(
    x: Tensor,
    valid_mask: Tensor | None,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    item_bias: Tensor | None,
    recompute: str = "all",
    kernels: Any = None,
    tile: int | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, list[Tensor] | None]:
    """Tiled forward; returns mean, var and (per ``recompute``) the kept weights/activations."""
    heads, queries, s, _ = weights[-1].shape
    batch, feat, frames = x.shape
    c = feat // heads
    ws = [w.to(x.dtype) for w in weights]
    bs = [None if b is None else b.to(x.dtype) for b in biases]
    hid = [(heads, queries, w.shape[2], frames) for w in weights[:-1]]
    a_shape = (heads, queries, s, frames)
    u_shape = (heads, queries, c, frames)
    xv = x.view(batch, heads, c, frames)
    lengths = _prefix_lengths(valid_mask)
    mb = _mask_bias(valid_mask, x.dtype)
    mean = x.new_empty(batch, heads, queries, c)
    var = x.new_empty(batch, heads, queries, c)
    keep_alpha = x.new_empty(batch * heads * queries * s * frames) if recompute == "none" else None
    keep_hidden = (
        [x.new_empty(batch * heads * queries * hs[2] * frames) for hs in hid]
        if recompute in ("none", "softmax")
        else None
    )
    if tile is None:
        tile = _pool_tile(x, weights)
    scratch = _Scratch(x, tile)
    for b0 in range(0, batch, tile):
        sl = slice(b0, min(batch, b0 + tile))
        b = sl.stop - b0
        xt = _tile_x(xv, sl, valid_mask, lengths, scratch)
        if keep_hidden is not None:
            hidden = [_Kept.block(h, hs, sl) for h, hs in zip(keep_hidden, hid)]
        else:
            hidden = [scratch.get(f"h{i}", hs, b) for i, hs in enumerate(hid)]
        # the logits share the statistics buffer when S = c (dead before the statistics start)
        scores = scratch.get("u" if s == c else "scores", a_shape, b)
        ib = None if item_bias is None else item_bias[sl].to(x.dtype)
        _tile_mlp(xt, ws, bs, ib, hidden, scores)
        if keep_alpha is not None:
            alpha = _Kept.block(keep_alpha, a_shape, sl)
        else:
            alpha = scratch.get("alpha", a_shape, b)
        _tile_alpha(scores, None if mb is None else mb[sl], alpha)
        buf = scratch.get("u", u_shape, b)
        _tile_stats(alpha, xt, buf, _folded(mean, sl), _folded(var, sl), kernels)
    return mean, var, keep_alpha, keep_hidden


class _AttentivePool(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        valid_mask: Tensor | None,
        item_bias: Tensor | None,
        n_layers: int,
        recompute: str,
        kernels: Any,
        *params: Tensor | None,
    ):  # type: ignore[override]
        weights = list(params[:n_layers])
        biases = list(params[n_layers:])
        # the kept blocks are laid out per tile: backward must use the same tiles
        ctx.tile = _pool_tile(x, weights)  # type: ignore[arg-type]
        mean, var, alpha, hidden = _pool_forward(
            x,
            valid_mask,
            weights,  # type: ignore[arg-type]
            biases,
            item_bias,
            recompute,
            kernels,
            ctx.tile,
        )
        hid: list[Tensor | None] = list(hidden) if hidden is not None else [None] * (n_layers - 1)
        ctx.save_for_backward(x, item_bias, mean, var, alpha, *hid, *params)
        ctx.valid_mask = valid_mask
        ctx.n_layers = n_layers
        ctx.kernels = kernels
        return mean, var

    @staticmethod
    def backward(ctx, g_mean: Tensor, g_var: Tensor):  # type: ignore[override]
        n = ctx.n_layers
        x, item_bias, mean, var, kept_alpha, *rest = ctx.saved_tensors
        kept_hidden: list[Tensor | None] = list(rest[: n - 1])
        weights: list[Tensor] = list(rest[n - 1 : 2 * n - 1])
        biases: list[Tensor | None] = list(rest[2 * n - 1 :])
        need_x = ctx.needs_input_grad[0]
        need_ib = ctx.needs_input_grad[2] and item_bias is not None
        heads, queries, s, _ = weights[-1].shape
        batch, feat, frames = x.shape
        c = feat // heads
        o0 = weights[0].shape[2]
        dt = x.dtype
        ws = [w.to(dt) for w in weights]
        bs = [None if b is None else b.to(dt) for b in biases]
        # transposed weights (H*Q, in, out) and (H, c, Q*o0) for the input gradients
        wts = [w.transpose(-1, -2).reshape(heads * queries, w.shape[3], w.shape[2]) for w in ws]
        w0t = ws[0].reshape(heads, queries * o0, c).transpose(1, 2)
        hid = [(heads, queries, w.shape[2], frames) for w in weights[:-1]]
        a_shape = (heads, queries, s, frames)
        u_shape = (heads, queries, c, frames)
        xv = x.view(batch, heads, c, frames)
        lengths = _prefix_lengths(ctx.valid_mask)
        mb = _mask_bias(ctx.valid_mask, dt)
        grad_x = torch.empty_like(x) if need_x else None
        grad_ib = torch.zeros_like(item_bias, dtype=dt) if need_ib else None
        grad_w = [torch.zeros_like(w) for w in ws]
        grad_b = [None if b is None else torch.zeros_like(b) for b in bs]
        gm_all = g_mean.to(dt)
        gv_all = g_var.to(dt)
        gvv_all = gv_all * var
        tile = ctx.tile
        scratch = _Scratch(x, tile)
        have_hidden = n == 1 or kept_hidden[0] is not None
        for b0 in range(0, batch, tile):
            sl = slice(b0, min(batch, b0 + tile))
            b = sl.stop - b0
            xt = _tile_x(xv, sl, ctx.valid_mask, lengths, scratch)  # (H, c, b, T)
            u = scratch.get("u", u_shape, b)
            t = scratch.get("t", u_shape, b)
            if have_hidden:
                hidden = [
                    _Kept.block(h, hs, sl) for h, hs in zip(kept_hidden, hid) if h is not None
                ]
            else:
                hidden = [scratch.get(f"h{i}", hs, b) for i, hs in enumerate(hid)]
            if kept_alpha is not None:
                a = _Kept.block(kept_alpha, a_shape, sl)
            else:  # recompute the logits (and the activations unless kept) into scratch
                scores = u if s == c else scratch.get("scores", a_shape, b)
                ib = None if item_bias is None else item_bias[sl].to(dt)
                _tile_mlp(xt, ws, bs, ib, hidden, scores, start=n - 1 if have_hidden else 0)
                a = _tile_alpha(
                    scores, None if mb is None else mb[sl], scratch.get("alpha", a_shape, b)
                )
            mu = _folded(mean, sl).unsqueeze(-1)  # (H, Q, c, b, 1)
            gm = _folded(gm_all, sl).unsqueeze(-1)
            gv = _folded(gv_all, sl).unsqueeze(-1)
            gvv = _folded(gvv_all, sl).unsqueeze(-1)
            # dL/dx (statistics) = sum_q a (g_mean + 2 g_var u), u = x - mean;
            # dL/ds = a (u (g_mean + g_var u) - g_var var), summed over c when S = 1
            gx_buf = scratch.get("gx", (heads, c, frames), b)
            gxt: Tensor | None = gx_buf if grad_x is not None else None
            if ctx.kernels is not None:
                g = t if s == c else scratch.get("gs", a_shape, b)
                ctx.kernels.stats_backward(
                    a,
                    xt,
                    mu.squeeze(-1),
                    gm.squeeze(-1),
                    gv.squeeze(-1),
                    _folded(var, sl),
                    gx_buf,
                    g,
                )
            else:
                torch.sub(xt.unsqueeze(1), mu, out=u)
                if grad_x is not None:
                    torch.mul(u, gv * 2.0, out=t).add_(gm).mul_(a)
                    torch.sum(t, 1, out=gx_buf) if queries > 1 else gx_buf.copy_(t[:, 0])
                g = torch.mul(u, gv, out=t).add_(gm).mul_(u).sub_(gvv)
                g = g.mul_(a) if s == c else g.sum(2, keepdim=True).mul_(a)
            for i in range(n - 1, -1, -1):  # g: gradient w.r.t. layer i's output
                bi = grad_b[i]
                if bi is not None:
                    bi += g.sum((3, 4))
                gcols = g.reshape(heads * queries, -1, b * frames)
                if i == 0:
                    if grad_ib is not None:
                        gib = g.sum(-1).permute(3, 0, 1, 2).reshape(b, -1)
                        grad_ib[sl] += gib
                    g0 = g.view(heads, queries * o0, b * frames)
                    xcols = xt.view(heads, c, b * frames)
                    grad_w[0].view(heads, queries * o0, c).baddbmm_(g0, xcols.transpose(1, 2))
                    if gxt is not None:
                        gxt.view(heads, c, b * frames).baddbmm_(w0t, g0)
                else:
                    h = hidden[i - 1]  # input of layer i: (H, Q, k, b, T)
                    k = h.shape[2]
                    hcols = h.view(heads * queries, k, b * frames)
                    grad_w[i].view(heads * queries, -1, k).baddbmm_(gcols, hcols.transpose(1, 2))
                    gh = scratch.get(f"g{i}", hid[i - 1], b)
                    torch.bmm(wts[i], gcols, out=gh.view(heads * queries, k, b * frames))
                    tmp = scratch.get(f"d{i}", hid[i - 1], b)
                    g = gh.mul_(torch.mul(h, h, out=tmp).sub_(1.0)).neg_()  # through tanh
            if grad_x is not None and gxt is not None:
                grad_x.view(batch, heads, c, frames)[sl].copy_(gxt.permute(2, 0, 1, 3))
        grads_w = [gw.to(w.dtype) for gw, w in zip(grad_w, weights)]
        grads_b = [
            None if gb is None or b is None else gb.to(b.dtype) for gb, b in zip(grad_b, biases)
        ]
        if grad_ib is not None and item_bias is not None:
            grad_ib = grad_ib.to(item_bias.dtype)
        return (grad_x, None, grad_ib, None, None, None, *grads_w, *grads_b)


def _pool_traceable(
    x: Tensor,
    valid_mask: Tensor | None,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    item_bias: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Out-of-place, untiled twin of :func:`_pool_forward` (export; plain autograd)."""
    heads, queries, s, _ = weights[-1].shape
    batch, feat, frames = x.shape
    c = feat // heads
    xv = x.view(batch, heads, c, frames)
    if valid_mask is not None:
        xv = torch.where(valid_mask.unsqueeze(1), xv, xv.new_zeros(()))
    w0 = weights[0]
    z = torch.matmul(w0.reshape(heads, -1, c).to(x.dtype), xv).view(
        batch, heads, queries, w0.shape[2], frames
    )
    for i in range(len(weights)):
        if i > 0:
            z = torch.matmul(weights[i].to(z.dtype), torch.tanh(z))
        bi = biases[i]
        if bi is not None:
            z = z + bi.to(z.dtype).unsqueeze(-1)
        if i == 0 and item_bias is not None:
            z = z + item_bias.view(batch, heads, queries, -1, 1).to(z.dtype)
    mask = None if valid_mask is None else valid_mask.view(batch, 1, 1, 1, frames)
    alpha = masked_softmax(z, mask).to(x.dtype)
    xq = xv.unsqueeze(2)
    if s == 1:
        mean = torch.matmul(alpha.squeeze(3), xv.transpose(-1, -2))
    else:
        mean = (alpha * xq).sum(-1)
    var = ((xq - mean.unsqueeze(-1)).square() * alpha).sum(-1)
    return mean, var


def attentive_pool_mean_std(
    x: Tensor,
    valid_mask: Tensor | None,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    *,
    item_bias: Tensor | None = None,
    eps: float = 1e-7,
    impl: str = "auto",
    recompute: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Multi-head, multi-query attentive mean/std: the attention MLP, softmax and statistics fused.

    Layer 0 maps each head's ``c`` channels to ``o`` per query; later layers act per (head,
    query); tanh between layers; the last layer gives S = 1 or c logits; softmax over valid frames.

    Args:
        x: ``(B, H*c, T)`` features; float32/float64. Padded frames may hold anything: they are
            zeroed tile by tile (no full copy) and get zero gradient.
        valid_mask: bool ``(B, 1, T)`` or None.
        weights: per layer ``(H, Q, out, in)`` (``in_0 = c``, ``out_last = S``).
        biases: per layer ``(H, Q, out)`` or None.
        item_bias: optional ``(B, H*Q*out_0)`` bias added to layer 0 per item (ECAPA's global
            context enters here).
        eps: variance clamp for the std.
        impl: ``"fused"`` (batch-tiled, in-place into reused tile buffers, torch ops),
            ``"numba"`` (the same with the statistics and their gradients in one numba pass per
            row; CPU float32/float64, needs numba), ``"torch"`` (plain ops), ``"auto"``
            (torch while exporting, else numba when available on CPU, else fused).
        recompute: what the fused backward recomputes instead of keeping from the forward:
            ``"none"`` keeps the softmax weights ``(B, H, Q, S, T)`` and the tanh activations
            ``(B, H, Q, o, T)`` (fastest; about what plain autograd keeps, once);
            ``"softmax"`` keeps the activations and recomputes the last layer and the softmax;
            ``"all"`` keeps nothing beyond x and recomputes the whole MLP (least memory);
            ``"auto"`` picks the first whose kept tensors fit in ``_SAVE_BUDGET_BYTES``
            (1 GiB). Ignored without autograd and by ``impl="torch"``.

    Returns:
        ``(mean, std)``, each ``(B, H, Q, c)``. Differentiable in x, weights, biases, item_bias.
    """
    if impl not in ("auto", "fused", "numba", "torch"):
        raise ValueError(f"Expected impl in ('auto', 'fused', 'numba', 'torch'); found {impl!r}.")
    if recompute not in _RECOMPUTE_MODES:
        raise ValueError(f"Expected recompute in {_RECOMPUTE_MODES}; found {recompute!r}.")
    n = len(weights)
    if impl == "torch" or (impl == "auto" and _is_exporting()):
        mean, var = _pool_traceable(x, valid_mask, weights, biases, item_bias)
    elif torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, item_bias, *weights, *biases)
    ):
        heads, queries, s, _ = weights[-1].shape
        per_tq = x.shape[0] * heads * queries * x.shape[-1] * x.element_size()
        mode = _resolve_recompute(
            recompute, per_tq * s, per_tq * sum(w.shape[2] for w in weights[:-1])
        )
        kernels = _pool_kernels(impl, x)
        out = _AttentivePool.apply(x, valid_mask, item_bias, n, mode, kernels, *weights, *biases)
        mean, var = out[0], out[1]
    else:
        kernels = _pool_kernels(impl, x)
        mean, var = _pool_forward(x, valid_mask, weights, biases, item_bias, kernels=kernels)[:2]
    return mean, torch.sqrt(var.clamp(min=eps))


def masked_batch_norm(
    x: Tensor,
    valid_mask: Tensor | None,
    *,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    num_batches_tracked: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float | None,
    eps: float,
) -> Tensor:
    """``BatchNorm1d`` over ``(B, C, T)`` whose batch statistics use valid frames only.

    Without a mask, or in eval mode, this is exactly ``F.batch_norm``. In training mode with a
    mask, mean and biased variance come from the valid ``(b, t)`` positions; running statistics
    are updated like PyTorch (unbiased variance, ``momentum`` or a cumulative average when
    ``momentum is None``). Padded outputs are returned as computed (callers mask them).
    """
    use_batch = training or running_mean is None
    if valid_mask is None or not use_batch:
        if training and num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        mom = momentum
        if training and momentum is None and num_batches_tracked is not None:
            mom = 1.0 / float(num_batches_tracked)
        return F.batch_norm(x, running_mean, running_var, weight, bias, use_batch, mom or 0.0, eps)
    m = valid_mask.to(x.dtype)  # (B, 1, T)
    count = m.sum()
    mean = (x * m).sum(dim=(0, 2)) / count
    var = ((x - mean[None, :, None]).square() * m).sum(dim=(0, 2)) / count
    if training and running_mean is not None and running_var is not None:
        with torch.no_grad():
            if num_batches_tracked is not None:
                num_batches_tracked.add_(1)
            mom = momentum if momentum is not None else 1.0 / float(num_batches_tracked or 1)
            unbiased = var * count / (count - 1).clamp(min=1.0)
            running_mean.mul_(1 - mom).add_(mean.detach().to(running_mean.dtype), alpha=mom)
            running_var.mul_(1 - mom).add_(unbiased.detach().to(running_var.dtype), alpha=mom)
    y = (x - mean[None, :, None]) * torch.rsqrt(var + eps)[None, :, None]
    if weight is not None:
        y = y * weight[None, :, None]
    if bias is not None:
        y = y + bias[None, :, None]
    return y


def attentive_statistics_pooling(
    x: Tensor,
    lengths: Tensor | None = None,
    *,
    linear1_weight: Tensor,
    linear1_bias: Tensor | None,
    linear2_weight: Tensor,
    linear2_bias: Tensor | None,
    global_context_att: bool = False,
    eps: float = 1e-7,
    recompute: str = "auto",
) -> Tensor:
    """ASTP (ECAPA-TDNN): channel-wise attention ``softmax_t(V tanh(W x_t + b) + k)``, then stats.

    With ``global_context_att`` the attention input is ``[x_t, mean, std]`` (the utterance mean and
    std of :func:`temporal_mean_std` with eps 1e-7, over valid frames); the ``(B, 3F, T)``
    concatenation is never built: the context part of ``W`` is applied once per item as a bias.

    Args:
        x: ``(B, F, T)`` or ``(B, C, F, T)``.
        lengths: optional int64 ``(B,)`` valid frames.
        linear1_weight: ``(D, F, 1)`` or ``(D, 3F, 1)`` (Conv1d-shaped), linear1_bias ``(D,)``.
        linear2_weight: ``(F, D, 1)``, linear2_bias ``(F,)``.
        global_context_att: use the global context input.
        eps: clamp of the attentive variance.
        recompute: what the backward recomputes (see :func:`attentive_pool_mean_std`).

    Returns:
        ``(B, 2F)`` = ``[mean, std]``, at least float32. Differentiable in x and all weights.

    Naive equivalent (no lengths)::

        a = softmax(conv1d(tanh(conv1d(x, W1, b1)), W2, b2), -1)
        mu = (a * x).sum(-1); std = sqrt(((a * x * x).sum(-1) - mu**2).clamp(min=eps))
    """
    # padded frames are zeroed inside the fused pooling; only the global context needs them now
    x, lengths, valid_mask = prepare_pooling_input(x, lengths, zero_padding=global_context_att)
    feat = x.shape[1]
    w1 = linear1_weight.squeeze(-1)
    d = w1.shape[0]
    if linear2_weight.shape[:2] != (feat, d):
        raise ValueError(
            f"Expected linear2_weight ({feat}, {d}, 1); found {tuple(linear2_weight.shape)}."
        )
    with _fp32_region(x):
        xf = x.to(_stat_dtype(x))
        item_bias = None
        if global_context_att:
            if w1.shape[1] != 3 * feat:
                raise ValueError(
                    f"Expected linear1_weight (D, 3F={3 * feat}, 1) for global context; found {tuple(linear1_weight.shape)}."
                )
            c_mean, c_std = temporal_mean_std(xf, lengths, eps=eps, valid_mask=valid_mask)
            wf = w1.to(xf.dtype)
            item_bias = F.linear(c_mean, wf[:, feat : 2 * feat]) + F.linear(
                c_std, wf[:, 2 * feat :]
            )
        elif w1.shape[1] != feat:
            raise ValueError(
                f"Expected linear1_weight (D, F={feat}, 1); found {tuple(linear1_weight.shape)}. "
                "Is global_context_att set as when the weights were trained?"
            )
        weights = [w1[:, :feat].reshape(1, 1, d, feat), linear2_weight.reshape(1, 1, feat, d)]
        biases = [
            None if linear1_bias is None else linear1_bias.view(1, 1, d),
            None if linear2_bias is None else linear2_bias.view(1, 1, feat),
        ]
        mean, std = attentive_pool_mean_std(
            xf, valid_mask, weights, biases, item_bias=item_bias, eps=eps, recompute=recompute
        )
    return torch.cat([mean.view(-1, feat), std.view(-1, feat)], dim=1)


def multi_head_attentive_statistics_pooling(
    x: Tensor,
    lengths: Tensor | None = None,
    *,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    head_num: int,
    query_num: int = 1,
    eps: float = 1e-7,
    recompute: str = "auto",
) -> Tensor:
    """MHASTP / MQMHASTP with every head and query batched (see :func:`attentive_pool_mean_std`).

    The channels split into ``head_num`` contiguous heads of ``c = F / head_num``. For each query
    q and head h an n-layer 1x1-conv MLP with tanh between layers maps the head's frames to
    ``s`` logits (``s = 1``: one weight per frame; ``s = c``: one per channel), softmax over the
    valid frames gives the weights, and attentive mean and std are taken over the head's channels.

    Args:
        x: ``(B, F, T)`` or ``(B, C, F, T)``.
        lengths: optional int64 ``(B,)`` valid frames.
        weights: per layer i, ``(head_num, query_num, out_i, in_i)`` stacked 1x1-conv weights
            (``in_0 = c``, ``out_last = s``).
        biases: per layer i, ``(head_num, query_num, out_i)`` or ``None``.
        head_num: number of heads (divides F).
        query_num: number of queries.
        eps: clamp of the attentive variance.
        recompute: what the backward recomputes (see :func:`attentive_pool_mean_std`).

    Returns:
        ``(B, query_num * F * 2)`` ordered query, then head, then ``[mean (c), std (c)]`` (the
        WeSpeaker order), at least float32. Differentiable.

    Naive equivalent (no lengths): ``cat([cat([mu_qh, std_qh]) for h in heads]) for q in queries])``.
    """
    x, lengths, valid_mask = prepare_pooling_input(x, lengths, zero_padding=False)
    batch, feat, _ = x.shape
    if head_num < 1 or feat % head_num != 0:
        raise ValueError(f"Expected head_num >= 1 dividing F={feat}; found head_num={head_num}.")
    if len(weights) == 0 or len(weights) != len(biases):
        raise ValueError(
            f"Expected one weight and one bias entry per layer; found {len(weights)} weights, {len(biases)} biases."
        )
    c = feat // head_num
    for i, w in enumerate(weights):
        if w.dim() != 4 or w.shape[:2] != (head_num, query_num):
            raise ValueError(
                f"Expected weights[{i}] of shape (head_num={head_num}, query_num={query_num}, out, in); "
                f"found {tuple(w.shape)}."
            )
    if weights[0].shape[3] != c:
        raise ValueError(
            f"Expected weights[0] with in = c = F / head_num = {c}; found {tuple(weights[0].shape)}."
        )
    s = weights[-1].shape[2]
    if s not in (1, c):
        raise ValueError(
            f"Expected the last layer to output 1 or c={c} channels per head; found {s}."
        )
    with _fp32_region(x):
        xf = x.to(_stat_dtype(x))
        mean, std = attentive_pool_mean_std(
            xf, valid_mask, weights, biases, eps=eps, recompute=recompute
        )  # (B, H, Q, c)
    stats = torch.stack([mean, std], dim=3).view(batch, head_num, query_num, 2 * c)
    return stats.transpose(1, 2).reshape(batch, query_num * feat * 2)
