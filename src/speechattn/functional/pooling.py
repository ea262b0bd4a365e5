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

from speechattn.functional.masks import check_lengths, lengths_to_valid_mask

__all__ = [
    "PoolingInput",
    "attentive_mean_std",
    "attentive_mean_var",
    "attentive_statistics_pooling",
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
    x: Tensor, lengths: Tensor | None = None, *, name: str = "x"
) -> PoolingInput:
    """Validate and flatten a pooling input; zero padded frames.

    Args:
        x: float ``(B, F, T)`` or ``(B, C, F, T)`` (flattened to ``(B, C*F, T)``), time last.
        lengths: optional int64 ``(B,)`` valid-frame counts, ``1 <= lengths[b] <= T``; on x's
            device or on CPU.
        name: the argument's name for error messages.

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
    return PoolingInput(x.masked_fill(~valid_mask, 0.0), lengths, valid_mask)


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
            centred = (xf - mean.unsqueeze(-1)).masked_fill(~valid_mask, 0.0)
            var = centred.square().sum(-1) / (n - 1).clamp(min=1.0)
        return mean, torch.sqrt(var + eps)


def masked_softmax(
    scores: Tensor, valid_mask: Tensor | None = None, *, inplace: bool = False
) -> Tensor:
    """Softmax over the last (time) axis in float32, over valid frames only.

    Args:
        scores: ``(..., T)`` attention logits.
        valid_mask: bool keep-mask broadcastable to scores (True = valid frame) or ``None``.
        inplace: allowed to fill ``scores`` in place (saves one copy when scores are float32
            intermediates nobody else reads).

    Returns:
        float32 (or float64) weights, exactly 0 on masked frames; each row with a valid frame
        sums to 1. Rows with no valid frame never occur in this module (lengths >= 1).
    """
    s = scores.to(_stat_dtype(scores))
    if valid_mask is not None:
        fill = torch.finfo(s.dtype).min
        s = (
            s.masked_fill_(~valid_mask, fill)
            if (inplace and s is scores)
            else s.masked_fill(~valid_mask, fill)
        )
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

    Returns:
        ``(B, 2F)`` = ``[mean, std]``, at least float32. Differentiable in x and all weights.

    Naive equivalent (no lengths)::

        a = softmax(conv1d(tanh(conv1d(x, W1, b1)), W2, b2), -1)
        mu = (a * x).sum(-1); std = sqrt(((a * x * x).sum(-1) - mu**2).clamp(min=eps))
    """
    x, lengths, valid_mask = prepare_pooling_input(x, lengths)
    feat = x.shape[1]
    if global_context_att:
        if linear1_weight.shape[1] != 3 * feat:
            raise ValueError(
                f"Expected linear1_weight (D, 3F={3 * feat}, 1) for global context; found {tuple(linear1_weight.shape)}."
            )
        c_mean, c_std = temporal_mean_std(x, lengths, eps=eps, valid_mask=valid_mask)
        w = linear1_weight.squeeze(-1)
        ctx_bias = F.linear(c_mean.to(w.dtype), w[:, feat : 2 * feat]) + F.linear(
            c_std.to(w.dtype), w[:, 2 * feat :]
        )
        if linear1_bias is not None:
            ctx_bias = ctx_bias + linear1_bias
        h = F.conv1d(x, linear1_weight[:, :feat]) + ctx_bias.unsqueeze(-1).to(x.dtype)
    else:
        if linear1_weight.shape[1] != feat:
            raise ValueError(
                f"Expected linear1_weight (D, F={feat}, 1); found {tuple(linear1_weight.shape)}. "
                "Is global_context_att set as when the weights were trained?"
            )
        h = F.conv1d(x, linear1_weight, linear1_bias)
    scores = F.conv1d(torch.tanh(h), linear2_weight, linear2_bias)
    with _fp32_region(x):
        alpha = masked_softmax(scores, valid_mask, inplace=True)
        xf = x.to(alpha.dtype)
        mean, std = attentive_mean_std(alpha.unsqueeze(1), xf, eps=eps)
    return torch.cat([mean.squeeze(1), std.squeeze(1)], dim=1)


def multi_head_attentive_statistics_pooling(
    x: Tensor,
    lengths: Tensor | None = None,
    *,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    head_num: int,
    query_num: int = 1,
    eps: float = 1e-7,
) -> Tensor:
    """MHASTP / MQMHASTP with every head and query in one grouped conv per layer.

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

    Returns:
        ``(B, query_num * F * 2)`` ordered query, then head, then ``[mean (c), std (c)]`` (the
        WeSpeaker order), at least float32. Differentiable.

    Naive equivalent (no lengths): ``cat([cat([mu_qh, std_qh]) for h in heads]) for q in queries])``.
    """
    x, lengths, valid_mask = prepare_pooling_input(x, lengths)
    batch, feat, frames = x.shape
    if head_num < 1 or feat % head_num != 0:
        raise ValueError(f"Expected head_num >= 1 dividing F={feat}; found head_num={head_num}.")
    if len(weights) == 0 or len(weights) != len(biases):
        raise ValueError(
            f"Expected one weight and one bias entry per layer; found {len(weights)} weights, {len(biases)} biases."
        )
    c = feat // head_num
    h = x
    groups = head_num
    for i, (w, b) in enumerate(zip(weights, biases)):
        if w.dim() != 4 or w.shape[:2] != (head_num, query_num):
            raise ValueError(
                f"Expected weights[{i}] of shape (head_num={head_num}, query_num={query_num}, out, in); "
                f"found {tuple(w.shape)}."
            )
        if i > 0:
            h = torch.tanh(h)
        out_i, in_i = w.shape[2], w.shape[3]
        conv_w = w.reshape(head_num * query_num * out_i, in_i, 1)
        conv_b = None if b is None else b.reshape(-1)
        h = F.conv1d(h, conv_w, conv_b, groups=groups)
        groups = head_num * query_num
    s = weights[-1].shape[2]
    if s not in (1, c):
        raise ValueError(
            f"Expected the last layer to output 1 or c={c} channels per head; found {s}."
        )
    scores = h.view(batch * head_num, query_num, s, frames)
    mask = None if valid_mask is None else valid_mask.repeat_interleave(head_num, 0).unsqueeze(1)
    with _fp32_region(x):
        alpha = masked_softmax(scores, mask, inplace=True)
        xf = x.to(alpha.dtype).reshape(batch * head_num, c, frames)
        mean, std = attentive_mean_std(alpha, xf, eps=eps)  # (B*H, Q, c)
    stats = torch.stack([mean, std], dim=2).view(batch, head_num, query_num, 2 * c)
    return stats.transpose(1, 2).reshape(batch, query_num * feat * 2)
