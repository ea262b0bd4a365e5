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
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from speechattn import kernels
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
        x: ``(B, F, T)`` float. Padding may hold anything when only ``lengths`` is given (it is
            zeroed here); with ``valid_mask`` too, padded frames must already be zero (as
            :func:`prepare_pooling_input` returns them).
        lengths: optional int64 ``(B,)`` valid frames, ``1 <= lengths[b] <= T``.
        eps: added to the variance.
        valid_mask: optional precomputed bool ``(B, 1, T)`` mask matching (already validated)
            lengths.

    Returns:
        ``(mean, std)``, each ``(B, F)`` in at least float32. Differentiable.

    Raises:
        TypeError: x not a floating tensor, lengths not an integer tensor.
        ValueError: x not ``(B, F, T)``, or lengths of the wrong shape or outside ``[1, T]``.
    """
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point:
        raise TypeError(
            f"Expected x to be a floating tensor (B, F, T); found "
            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}."
        )
    if x.dim() != 3:
        raise ValueError(f"Expected x of shape (B, F, T) with time last; found {tuple(x.shape)}.")
    zero_padding = False
    if lengths is not None and valid_mask is None:
        if _is_exporting():
            lengths = lengths.to(device=x.device, dtype=torch.int64)
        else:
            lengths = check_lengths(
                lengths, "lengths", batch=x.shape[0], max_len=x.shape[-1], device=x.device
            )
        valid_mask = lengths_to_valid_mask(lengths, x.shape[-1]).unsqueeze(1)
        zero_padding = True
    with _fp32_region(x):
        xf = x.to(_stat_dtype(x))
        frames = xf.shape[-1]
        if lengths is None or valid_mask is None:
            mean = xf.mean(-1)
            sq = (xf - mean.unsqueeze(-1)).square().sum(-1)
            var = sq / max(frames - 1, 1)
        else:
            if zero_padding:
                xf = torch.where(valid_mask, xf, xf.new_zeros(()))
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
        if not isinstance(valid_mask, Tensor) or valid_mask.dtype != torch.bool:
            raise TypeError(
                "Expected valid_mask to be a bool keep-mask (True = valid frame); found "
                f"{getattr(valid_mask, 'dtype', type(valid_mask).__name__)}. Convert a 0/1 "
                "mask with mask.bool(); an additive -inf mask is not supported."
            )
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
        impl: ``"torch"`` (this module's plain out-of-place ops: the specification; used while
            exporting), ``"fused"`` (query-by-query with a recomputing backward,
            :mod:`speechattn.kernels._tiled_pool`) or ``"auto"`` (fused unless exporting); see
            :func:`speechattn.kernels.implementations`.

    Returns:
        ``(mean, std)``, each ``(B, H, Q, c)`` in x's dtype. Differentiable in hidden, weight,
        bias and x, to any order (a double backward through ``"fused"`` differentiates the
        pure-torch specification).
    """
    heads, queries, s, k = weight.shape
    c = x.shape[1] // heads
    if s not in (1, c):
        raise ValueError(
            f"Expected the last layer to output 1 or c={c} channels per head; found {s}."
        )
    expected = heads * k if shared_hidden else heads * queries * k
    if hidden.shape[1] != expected:
        raise ValueError(f"Expected hidden with {expected} channels; found {tuple(hidden.shape)}.")
    name = "torch" if impl == "auto" and _is_exporting() else impl
    name = kernels.resolve("head_attentive_stats", name, x.device.type, x.dtype)
    if name == "torch":
        mean, var = _traceable_forward(hidden, weight, bias, x, valid_mask, shared_hidden)
    else:
        engine = kernels.load("head_attentive_stats", name)
        mean, var = engine.head_attentive_stats(hidden, weight, bias, x, valid_mask, shared_hidden)
    return mean, torch.sqrt(var.clamp(min=eps))


_RECOMPUTE_MODES = ("auto", "none", "softmax", "all")


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
            z = z + item_bias.view(batch, heads, queries, w0.shape[2], 1).to(z.dtype)
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
        impl: ``"torch"`` (this module's plain ops: the specification), ``"tiled"`` (alias
            ``"fused"``: batch-tiled, in-place into reused tile buffers, torch ops,
            :mod:`speechattn.kernels._tiled_pool`), ``"numba"`` (the same with the statistics
            and their gradients in one numba pass per row; CPU float32/float64, needs numba),
            ``"auto"`` (torch while exporting, else numba when available on CPU, else tiled).
        recompute: what the tiled backward recomputes instead of keeping from the forward:
            ``"none"`` keeps the softmax weights ``(B, H, Q, S, T)`` and the tanh activations
            ``(B, H, Q, o, T)`` (fastest; about what plain autograd keeps, once);
            ``"softmax"`` keeps the activations and recomputes the last layer and the softmax;
            ``"all"`` keeps nothing beyond x and recomputes the whole MLP (least memory);
            ``"auto"`` picks the first whose kept tensors fit in ``_SAVE_BUDGET_BYTES``
            (1 GiB). Ignored without autograd and by ``impl="torch"``.

    Returns:
        ``(mean, std)``, each ``(B, H, Q, c)``. Differentiable in x, weights, biases, item_bias,
        to any order (a double backward through the tiled engine differentiates the spec).
    """
    if recompute not in _RECOMPUTE_MODES:
        raise ValueError(f"Expected recompute in {_RECOMPUTE_MODES}; found {recompute!r}.")
    name = "torch" if impl == "auto" and _is_exporting() else impl
    name = kernels.resolve("attentive_pool", name, x.device.type, x.dtype)
    if name == "torch" or x.shape[0] == 0:  # an empty batch: (0, H, Q, c), nothing to tile
        mean, var = _pool_traceable(x, valid_mask, weights, biases, item_bias)
    else:
        engine = kernels.load("attentive_pool", name)
        mean, var = engine.attentive_pool(
            x,
            valid_mask,
            weights,
            biases,
            item_bias,
            recompute=recompute,
            numba_stats=name == "numba",
        )
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
