"""Stepwise monotonic multi-head attention: the layer's math after the projections.

Shape legend: ``b`` batch, ``h`` heads, ``u`` query tokens (text), ``t`` key frames (mel),
``dk``/``dv`` per-head key/value sizes.

The query (text) attends over the keys (mel frames). With ``tunable=True`` each head turns its
energies into stay probabilities ``p_t(u) = sigmoid(q_u . k_t * scale + r_h (+ noise))`` and the
stepwise recurrence of He et al. (2019, "Robust Sequence-to-Sequence Acoustic Modeling with
Stepwise Monotonic Attention for Neural TTS", Eq. 8),
``alpha_t(u) = alpha_{t-1}(u) p_t(u) + alpha_{t-1}(u-1) (1 - p_t(u-1))``, gives a monotonic
alignment ``alpha`` ``(b, h, u, t)``; the context of token ``u`` is ``sum_t alpha_t(u) v_t``.
``tunable=False`` is plain multi-head softmax attention over frames.

This module holds no parameters; :class:`speechattn.nn.StepwiseMonotonicMultiheadAttention`
wraps it with projections.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from speechattn.functional.masks import check_lengths, lengths_to_valid_mask
from speechattn.functional.monotonic import (
    _check_range_masked,
    _resolve_impl,
    focus_rate,
    monotonic_viterbi,
    stepwise_monotonic_alignment,
)

__all__ = [
    "MonotonicAttentionResult",
    "expected_stay_prob",
    "select_heads",
    "stepwise_monotonic_attention",
    "stepwise_stay_probability",
]

Mode = Literal["soft", "hard", "viterbi"]
HeadSelection = Literal["focus_rate", "per_head"]
Mass = Literal["preserve", "drop"]

_MODES = ("soft", "hard", "viterbi")
_SELECTIONS = ("focus_rate", "per_head")
_MASSES = ("preserve", "drop")

# CPU focus-rate path: the context matmul and its gradients over each item's valid block only
# (one ``mm`` per item), and the selected head's training noise drawn for valid cells only.
# False: the dense ``bmm`` / a full ``(b, u, t)`` draw (for A/B benchmarks and tests).
FAST_VALID_BLOCKS = True
# The alignment's gradient in ``_ValidContext``'s backward with several intra-op threads: one
# dense ``bmm`` then the padded cells zeroed, instead of one ``mm`` per item over its valid block.
# The per-item products ((q_i, dv) x (dv, k_i), small M) barely use a second thread in MKL (a
# micro-benchmark of B16 U100 T800 dv=256: 10.1 ms per item vs 6.1 ms dense at 2 threads; at 1
# thread the per-item loop, which skips the padded cells, is faster: 9.3 vs 10.5 ms, and is kept).
# False: always per item (for A/B benchmarks and tests).
DENSE_CONTEXT_GRAD = True
# Attribute name a ``key`` tensor may carry: an object whose ``grad_rows`` receives the selected
# head's key gradient ``(b, t, dk)`` (rows of ``key[i, head_index[i]]``) in the backward, and the
# gradient returned for ``key`` is then an expanded zero (no dense ``(b, h, t, dk)`` scatter).
# The producer of ``key`` (the module's key projection) must add those rows to its gradient.
KEY_GRAD_SINK = "_speechattn_key_grad_sink"
# The same for ``query``: the sink's ``grad_rows`` receives the selected head's query gradient
# ``(b, u, dk)`` (rows of ``query[i, head_index[i]]``) and ``query`` gets an expanded zero.
QUERY_GRAD_SINK = "_speechattn_query_grad_sink"

# The heads' ranking energies start from the stay bias and the matmul accumulates onto it
# (``fill_`` + ``baddbmm_``) instead of a separate ``add_`` pass; False: ``bmm`` then ``add_``.
FUSED_RANKING_BIAS = True
# The CPU ranking energies live in a buffer kept per thread between calls (see
# ``_ranking_buffer``); False: a fresh tensor per call (for A/B benchmarks).
RANKING_WORKSPACE = True
# Training on CPU: the heads' ranking keeps its energies (the sigmoid writes a second kept
# buffer) and the selected head's energies are copied from them instead of recomputed by a
# ``(b, u, dk) x (b, dk, t)`` matmul; False: recomputed (for A/B benchmarks and tests).
REUSE_RANKING_ENERGIES = True


class MonotonicAttentionResult(NamedTuple):
    """Outputs of :func:`stepwise_monotonic_attention`.

    Attributes:
        context: ``(b, u, h*dv)`` attended values, heads concatenated (head-major features);
            exactly 0 on padded tokens.
        alignment: ``(b, u, t)`` alignment of the selected head (``head_index``): the monotonic
            ``alpha`` (soft, hard or Viterbi path) when tunable, the softmax otherwise.
        attn_weights: ``(b, h, u, t)`` per-head alignments (see
            :func:`stepwise_monotonic_attention` for which ones carry gradients); ``None``
            with ``need_weights=False``.
        focus_rate: ``(b, h)`` FastSpeech focus rate of each head's soft alignment (no gradient).
        head_index: ``(b,)`` int64, argmax of ``focus_rate`` over heads.
        p_choose: ``(b, u, t)`` stay probabilities of the selected head (``None`` when not
            tunable); 0 on padding.
    """

    context: Tensor
    alignment: Tensor
    attn_weights: Tensor | None
    focus_rate: Tensor
    head_index: Tensor
    p_choose: Tensor | None


def select_heads(x: Tensor, head_index: Tensor) -> Tensor:
    """Pick one head per batch item: ``x[b, head_index[b]]``.

    Args:
        x: ``(b, h, ...)``.
        head_index: int64 ``(b,)`` in ``[0, h)``.

    Returns:
        ``(b, ...)``; differentiable with respect to ``x``.
    """
    idx = head_index.view(-1, *([1] * (x.dim() - 1))).expand(-1, 1, *x.shape[2:])
    return x.gather(1, idx).squeeze(1)


def _as_counts(x: object, name: str) -> Tensor:
    try:
        t = x if isinstance(x, Tensor) else torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError):
        t = None
    if t is None or t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise TypeError(
            f"Expected {name} to be integer counts (a (n,) tensor or a list of ints); found "
            f"{getattr(x, 'dtype', type(x).__name__)}."
        )
    return t


def expected_stay_prob(text_lengths: Tensor, mel_lengths: Tensor) -> float:
    """Stay probability that walks ``U`` tokens in ``T`` frames on average: ``1 - sum U / sum T``.

    A good ``initial_stay_prob`` for an aligner: with it the initial alignment advances at the
    data's mean speaking rate instead of staying stuck on the first tokens. Clamped to
    ``[0.05, 0.95]``.

    Args:
        text_lengths: int ``(n,)`` token counts of (a sample of) the training set (a tensor or
            a sequence of ints).
        mel_lengths: int ``(n,)`` frame counts of the same utterances.
    """
    text_lengths = _as_counts(text_lengths, "text_lengths")
    mel_lengths = _as_counts(mel_lengths, "mel_lengths")
    if text_lengths.shape != mel_lengths.shape or text_lengths.dim() != 1:
        raise ValueError(
            "Expected text_lengths and mel_lengths of the same shape (n,); found "
            f"{tuple(text_lengths.shape)} and {tuple(mel_lengths.shape)}."
        )
    total_t = float(mel_lengths.sum())
    if total_t <= 0:
        raise ValueError(f"Expected sum(mel_lengths) > 0; found {total_t}.")
    return min(0.95, max(0.05, 1.0 - float(text_lengths.sum()) / total_t))


def _focus_rate_zero_padded(alpha: Tensor, key_lengths: Tensor) -> Tensor:
    """:func:`focus_rate` of ``(n, u, t)`` alignments that are exactly 0 at padded cells.

    The same numbers without the masking passes (the recurrence already zeroed padding).
    """
    col = alpha.sum(1)  # (n, t)
    has_mass = col > 0
    peak = torch.where(has_mass, alpha.amax(1) / torch.where(has_mass, col, 1.0), 0.0)
    return peak.sum(-1) / key_lengths.to(alpha.dtype)


_WORKSPACE = threading.local()


def _ranking_buffer(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, slot: str = "buf"
) -> Tensor:
    """An uninitialised tensor for the heads' ranking energies (used and released inside one
    call, never returned).

    On CPU with ``RANKING_WORKSPACE`` it is a view of one buffer per thread and ``slot``, kept
    between calls and grown to the largest size seen: a fresh tensor of this size
    (``h*b*u*t``, e.g. 20 MB) would be new memory on every training step, and the operating
    system's page faults on its first touch cost more than filling it. Slots: ``"buf"`` the
    energies, ``"p"`` their sigmoid when the energies are kept (``REUSE_RANKING_ENERGIES``).
    """
    numel = math.prod(shape)
    if not (RANKING_WORKSPACE and device.type == "cpu"):
        return torch.empty(shape, dtype=dtype, device=device)
    buf = getattr(_WORKSPACE, slot, None)
    if buf is None or buf.dtype != dtype or buf.numel() < numel:
        setattr(_WORKSPACE, slot, None)  # release the old buffer first
        # a normal tensor even under inference_mode (an inference tensor could not be
        # written in place by a later call outside it)
        with torch.inference_mode(False):
            buf = torch.empty(numel, dtype=dtype)
        setattr(_WORKSPACE, slot, buf)
    return buf[:numel].view(shape)


def _ranking_alignments(
    p: Tensor,
    text_lengths: Tensor,
    mel_lengths: Tensor,
    mass: Mass,
    alpha0: Tensor | None,
    impl: str,
    need_alpha: bool,
) -> tuple[Tensor | None, Tensor]:
    """Soft alignments ``(n, u, t)`` (``None`` when not ``need_alpha`` and a kernel can skip
    them) and their focus rates ``(n,)`` of stay probabilities ``p`` ``(n, u, t)``, no
    autograd.

    A kernel with the ``forward.focus`` capability (see :mod:`speechattn.kernels`) computes the
    focus rate in the recurrence's own pass and, without ``need_alpha``, never stores the
    alignment; otherwise :func:`stepwise_monotonic_alignment` and the focus rate of its
    output (the same numbers up to summation order).
    """
    _, fwd, _ = _resolve_impl(impl, p.device)
    focus = getattr(fwd, "focus", None)
    if focus is None:
        w = stepwise_monotonic_alignment(
            p,
            text_lengths,
            mel_lengths,
            mode="soft",
            mass=mass,
            initial_alignment=alpha0,
            impl=impl,
        )
        return w, _focus_rate_zero_padded(w, mel_lengths)
    if alpha0 is None:
        alpha0 = torch.zeros(p.shape[:2], dtype=p.dtype, device=p.device)
        alpha0[:, 0] = 1.0
    w, fr, ok = focus(p, alpha0, text_lengths, mel_lengths, mass == "preserve", need_alpha)
    if not bool(ok.all()):  # exact re-check of flagged items: raises with what was found
        _check_range_masked(p, text_lengths, mel_lengths, "p_choose")
    return w, fr


def _check_inputs(query: Tensor, key: Tensor, value: Tensor) -> None:
    for name, x in (("query", query), ("key", key), ("value", value)):
        if not isinstance(x, Tensor):
            raise TypeError(f"Expected {name} to be a torch.Tensor; found {type(x).__name__}.")
        if not x.is_floating_point():
            raise TypeError(f"Expected {name} to be a floating tensor; found dtype {x.dtype}.")
        if x.dim() != 4:
            raise ValueError(
                f"Expected {name} of rank 4 (b, h, n, d) (per-head layout); found shape "
                f"{tuple(x.shape)}. Split heads first: x.view(b, n, h, d).transpose(1, 2)."
            )
    b, h, _, dk = query.shape
    if key.shape[:2] != (b, h) or key.shape[-1] != dk:
        raise ValueError(
            f"Expected key of shape ({b}, {h}, t, {dk}) to match query {tuple(query.shape)}; "
            f"found {tuple(key.shape)}."
        )
    if value.shape[:3] != key.shape[:3]:
        raise ValueError(
            f"Expected value of shape ({b}, {h}, {key.shape[2]}, dv) to match key "
            f"{tuple(key.shape)}; found {tuple(value.shape)}."
        )
    for name, x in (("key", key), ("value", value)):
        if x.device != query.device:
            raise ValueError(
                f"Expected {name} on {query.device} (the query's device); found {x.device}."
            )
        if x.dtype != query.dtype:
            raise TypeError(
                f"Expected {name} of dtype {query.dtype} (the query's dtype); found {x.dtype}."
            )


def _stay_probs(q: Tensor, k: Tensor, scale: float, bias: Tensor, noise: Tensor | None) -> Tensor:
    """``sigmoid(q k^T * scale + bias (+ noise))`` on zero-padded, compute-dtype inputs.

    In place on the fresh matmul output: one ``(..., u, t)`` buffer, no extra passes. Shared by
    :func:`stepwise_stay_probability` and :func:`stepwise_monotonic_attention`.
    """
    e = torch.matmul(q * scale, k.transpose(-1, -2)).add_(bias)
    if noise is not None:
        e.add_(noise)
    return e.sigmoid_()


def _head_rows_index(b: int, n: int, h: int, head_index: Tensor) -> Tensor:
    """Row numbers of ``x[i, :, head_index[i]]`` in a ``(b, n, h, d)`` tensor seen as ``(b*n*h, d)``."""
    base = torch.arange(b * n, device=head_index.device).view(b, n) * h
    return (base + head_index[:, None]).reshape(-1)


def _select_head_rows(x: Tensor, head_index: Tensor) -> Tensor:
    """``x[i, head_index[i]]`` of a ``(b, h, n, d)`` tensor: ``(b, n, d)``, a new tensor.

    When ``x`` is the head split of a ``(b, n, h*d)`` tensor (its memory ``(b, n, h, d)``), one
    ``index_select`` of contiguous ``d``-rows (an order of magnitude faster than advanced
    indexing of the strided view).
    """
    b, h, n, d = x.shape
    xt = x.transpose(1, 2)
    if xt.is_contiguous():
        idx = _head_rows_index(b, n, h, head_index)
        return xt.reshape(b * n * h, d).index_select(0, idx).view(b, n, d)
    return x[torch.arange(b, device=x.device), head_index]


def _scatter_head_rows(
    like: tuple[torch.Size, tuple[int, ...], torch.dtype], head_index: Tensor, rows: Tensor
) -> Tensor:
    """Zeros of ``like = (shape (b, h, n, d), strides, dtype)`` with ``rows`` ``(b, n, d)`` in
    head ``head_index[i]`` of item ``i``: the adjoint of :func:`_select_head_rows` (laid out as
    the tensor it selected from, so the gradient flows back through views without a copy)."""
    shape, stride, dtype = like
    b, h, n, d = shape
    rows = rows.to(dtype)
    dev = rows.device
    if torch.empty_strided(shape, stride, device="meta").transpose(1, 2).is_contiguous():
        out = torch.zeros((b, n, h, d), dtype=dtype, device=dev)
        idx = _head_rows_index(b, n, h, head_index)
        out.view(b * n * h, d).index_copy_(0, idx, rows.reshape(b * n, d))
        return out.transpose(1, 2)
    out = torch.zeros(shape, dtype=dtype, device=dev)
    out[torch.arange(b, device=dev), head_index] = rows
    return out


def _ranking_rows(e_hm: Tensor, head_index: Tensor) -> Tensor:
    """``e_hm[head_index[i], i]`` of head-major ``(h, b, u, t)`` energies: ``(b, u, t)``, a new
    tensor (one ``index_select`` of contiguous ``u * t`` rows)."""
    h, b, u, t = e_hm.shape
    rows = head_index * b + torch.arange(b, device=head_index.device)
    return e_hm.view(h * b, u * t).index_select(0, rows).view(b, u, t)


def _add_valid_cell_noise(e: Tensor, noise: Tensor, q_lens: list[int], k_lens: list[int]) -> None:
    """Add ``noise`` ``(sum_i q_i * k_i,)`` (one draw for the valid cells only: item by item,
    row-major within item ``i``'s ``(q_i, k_i)`` block) to ``e`` ``(b, u, t)``, in place."""
    off = 0
    for i, (m, n) in enumerate(zip(q_lens, k_lens, strict=True)):
        e[i, :m, :n].add_(noise[off : off + m * n].view(m, n))
        off += m * n


def _zero_outside_blocks(x: Tensor, q_lens: list[int], k_lens: list[int]) -> Tensor:
    """Zero ``x`` ``(b, u, t)`` outside each item's valid ``(q_i, k_i)`` block, in place (two
    slice fills per item: only padded cells are written)."""
    for i, (m, n) in enumerate(zip(q_lens, k_lens, strict=True)):
        x[i, m:].zero_()
        x[i, :m, n:].zero_()
    return x


class _ValidContext(torch.autograd.Function):
    """``bmm(alignment, values)`` over each item's valid block: ``(b, u, t) x (b, t, dv)``.

    Item ``i`` multiplies ``alignment[i, :q_i, :k_i]`` by ``values[i, :k_i]`` (one ``mm``);
    padded tokens of the output are 0. The alignment is 0 outside the valid block, so this is
    the dense product without its padded work and without reading padded value rows (they may
    hold anything). Backward: the alignment's gradient on the valid block (0 elsewhere) and the
    values' gradient on valid frames (0 on padded ones).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, alignment: Tensor, values: Tensor, q_lens: list[int], k_lens: list[int]
    ) -> Tensor:
        b, u, _ = alignment.shape
        out = alignment.new_empty((b, u, values.shape[-1]))
        for i, (m, n) in enumerate(zip(q_lens, k_lens, strict=True)):
            torch.mm(alignment[i, :m, :n], values[i, :n], out=out[i, :m])
            out[i, m:].zero_()
        ctx.save_for_backward(alignment, values)
        ctx.lens = (q_lens, k_lens)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        alignment, values = ctx.saved_tensors
        q_lens, k_lens = ctx.lens
        ga = gv = None
        if ctx.needs_input_grad[0]:
            ga = torch.empty_like(alignment)
            if DENSE_CONTEXT_GRAD and torch.get_num_threads() > 1:
                # One bmm over the padded batch, then the cells outside the valid blocks
                # (whatever padded values or gradient rows gave there) overwritten with 0.
                torch.bmm(grad, values.transpose(1, 2), out=ga)
                _zero_outside_blocks(ga, q_lens, k_lens)
            else:
                for i, (m, n) in enumerate(zip(q_lens, k_lens, strict=True)):
                    torch.mm(grad[i, :m], values[i, :n].t(), out=ga[i, :m, :n])
                    ga[i, :m, n:].zero_()
                    ga[i, m:].zero_()
        if ctx.needs_input_grad[1]:
            gv = values.new_empty(values.shape)
            for i, (m, n) in enumerate(zip(q_lens, k_lens, strict=True)):
                torch.mm(alignment[i, :m, :n].t(), grad[i, :m], out=gv[i, :n])
                gv[i, n:].zero_()
        return ga, gv, None, None


class _SelectedStayProb(torch.autograd.Function):
    """Stay probabilities of the selected head per item, with a hand-written backward.

    ``p = sigmoid(q_sel . k_sel * scale + bias[head] (+ noise))`` at valid cells and 0 at padded
    ones, ``(b, u, t)``, where ``q_sel``/``k_sel`` are the selected head's rows of the scaled
    queries and the keys (gathered without autograd; padded rows zeroed). The same numbers as
    autograd through ``gather``, ``where``, ``matmul`` and ``sigmoid`` without their
    intermediate tensors: gradients reach only the selected head's rows of ``query``/``key``
    and of ``bias``, never padded tokens or frames. ``energies`` ``(b, u, t)``: the selected
    head's ``q_sel . k_sel * scale + bias[head]`` already computed (the heads' ranking), written
    in place; ``None``: computed here.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        query: Tensor,
        key: Tensor,
        bias: Tensor,
        qs: Tensor,
        kc: Tensor,
        head_index: Tensor,
        tok_valid: Tensor,
        frm_valid: Tensor,
        cell_valid: Tensor | None,
        noise: Tensor | None,
        scale: float,
        lens: tuple[list[int], list[int]] | None = None,
        energies: Tensor | None = None,
    ) -> Tensor:
        q_sel = _select_head_rows(qs, head_index)  # scaled; new tensors, zeroed at padding
        k_sel = _select_head_rows(kc, head_index)
        if lens is not None:  # two slice fills per item instead of a masked pass over each
            for i, (m, n) in enumerate(zip(*lens, strict=True)):
                q_sel[i, m:].zero_()
                k_sel[i, n:].zero_()
        else:
            q_sel = torch.where(tok_valid[:, :, None], q_sel, 0)
            k_sel = torch.where(frm_valid[:, :, None], k_sel, 0)
        if energies is not None:  # the selected head's energies (with its bias), a fresh copy
            e = energies
        else:
            e = torch.bmm(q_sel, k_sel.transpose(1, 2)).add_(bias[head_index].view(-1, 1, 1))
        if noise is not None and noise.dim() == 1:  # one value per valid cell (needs lens)
            assert lens is not None
            _add_valid_cell_noise(e, noise, *lens)
        elif noise is not None:
            e.add_(noise)
        e.sigmoid_()  # in place (no second (b, u, t) buffer)
        if lens is not None:
            p = _zero_outside_blocks(e, *lens)
        else:
            assert cell_valid is not None
            p = e.masked_fill_(~cell_valid, 0)
        ctx.save_for_backward(q_sel, k_sel, p, head_index, cell_valid)
        ctx.lens = lens
        ctx.scale = scale
        ctx.num_heads = bias.shape[0]
        # The inputs' shapes, strides and dtypes (the gradients' layout).
        ctx.like = tuple((x.shape, x.stride(), x.dtype) for x in (query, key))
        ctx.key_sink = getattr(key, KEY_GRAD_SINK, None)
        ctx.query_sink = getattr(query, QUERY_GRAD_SINK, None)
        return p

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q_sel, k_sel, p, head, cell_valid = ctx.saved_tensors
        # sigmoid's derivative, zero at padded cells whatever the incoming gradient holds there
        d = torch.ops.aten.sigmoid_backward(grad, p)
        if ctx.lens is not None:
            _zero_outside_blocks(d, *ctx.lens)
        else:
            d.masked_fill_(~cell_valid, 0)
        grad_q = grad_k = grad_b = None
        q_like, k_like = ctx.like
        if ctx.needs_input_grad[0]:
            rows_q = torch.bmm(d, k_sel).mul_(ctx.scale)
            if ctx.query_sink is not None:  # the producer of ``query`` takes the rows directly
                ctx.query_sink.grad_rows = rows_q
                grad_q = rows_q.new_zeros(()).expand(q_like[0])
            else:
                grad_q = _scatter_head_rows(q_like, head, rows_q)
        if ctx.needs_input_grad[1]:
            # q_sel holds the scaled queries: d e / d k = scale * q
            rows = torch.bmm(d.transpose(1, 2), q_sel)
            sink = ctx.key_sink
            if sink is not None:  # the producer of ``key`` takes the selected rows directly
                sink.grad_rows = rows
                grad_k = rows.new_zeros(()).expand(k_like[0])
            else:
                grad_k = _scatter_head_rows(k_like, head, rows)
        if ctx.needs_input_grad[2]:
            grad_b = d.new_zeros(ctx.num_heads).index_add_(0, head, d.sum((1, 2)))
        return grad_q, grad_k, grad_b, None, None, None, None, None, None, None, None, None, None


def _check_bias(stay_bias: Tensor | float, h: int, dev: torch.device) -> Tensor:
    if isinstance(stay_bias, Tensor):
        if stay_bias.shape not in ((h,), (), (1,)):
            raise ValueError(
                f"Expected stay_bias of shape ({h},) or (); found {tuple(stay_bias.shape)}."
            )
        if stay_bias.device != dev:
            raise ValueError(f"Expected stay_bias on {dev}; found {stay_bias.device}.")
        return stay_bias.reshape(-1).expand(h)
    return torch.full((h,), float(stay_bias), device=dev)


def _check_common(
    query: Tensor,
    key: Tensor,
    query_lengths: Tensor | None,
    key_lengths: Tensor | None,
    stay_bias: Tensor | float,
    noise_std: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Checks shared by the stay step and the whole attention: ``(q_len, k_len, bias)``."""
    if noise_std < 0 or not math.isfinite(noise_std):
        raise ValueError(f"Expected noise_std >= 0; found {noise_std}.")
    b, h, u, _ = query.shape
    t, dev = key.shape[2], query.device
    q_len = check_lengths(query_lengths, "query_lengths", batch=b, max_len=u, device=dev)
    k_len = check_lengths(key_lengths, "key_lengths", batch=b, max_len=t, device=dev)
    return q_len, k_len, _check_bias(stay_bias, h, dev)


def stepwise_stay_probability(
    query: Tensor,
    key: Tensor,
    *,
    query_lengths: Tensor | None = None,
    key_lengths: Tensor | None = None,
    stay_bias: Tensor | float = 0.0,
    noise_std: float = 0.0,
    scale: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Stay probabilities of stepwise monotonic attention, without the alignment.

    ``p_t(u) = sigmoid(q_u . k_t * scale + stay_bias[h] + N(0, noise_std))`` per head: the
    probability that frame ``t`` stays on token ``u`` (He et al. 2019). This is the first step
    of :func:`stepwise_monotonic_attention` (the same computation, shared); use it when only the
    probabilities are needed, e.g. to score paths with a monotonic HMM.

    Args:
        query: ``(b, h, u, dk)`` projected text queries.
        key: ``(b, h, t, dk)`` projected mel keys (same dtype and device).
        query_lengths: int64 ``(b,)`` valid tokens (``None``: all ``u``).
        key_lengths: int64 ``(b,)`` valid frames (``None``: all ``t``).
        stay_bias: ``(h,)`` tensor or float added to every energy.
        noise_std: std of the Gaussian noise on the energies (0 outside training).
        scale: energy scale, default ``1 / sqrt(dk)``.
        generator: RNG for the noise.

    Returns:
        ``(b, h, u, t)`` probabilities in ``(0, 1)``, exactly 0 on padded tokens and frames
        (padding content never changes them). float32/float64 inputs compute in their dtype;
        float16/bfloat16 in float32 (returned in float32). Differentiable.

    Raises:
        ValueError / TypeError: wrong ranks, sizes, devices, dtypes or lengths.

    Example (naive equivalent, no padding)::

        p = torch.sigmoid(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + r.view(1, -1, 1, 1))
    """
    _check_inputs(query, key, key)
    q_len, k_len, bias = _check_common(query, key, query_lengths, key_lengths, stay_bias, noise_std)
    b, h, u, dk = query.shape
    t = key.shape[2]
    dev = query.device
    cdtype = query.dtype if query.dtype in (torch.float32, torch.float64) else torch.float32
    tok_valid = lengths_to_valid_mask(q_len, u)
    frm_valid = lengths_to_valid_mask(k_len, t)
    q = torch.where(tok_valid[:, None, :, None], query, 0).to(cdtype)
    k = torch.where(frm_valid[:, None, :, None], key, 0).to(cdtype)
    noise = None
    if noise_std > 0:
        noise = torch.randn((b, h, u, t), generator=generator, device=dev, dtype=cdtype)
        noise.mul_(noise_std)
    sc = 1.0 / math.sqrt(dk) if scale is None else float(scale)
    p = _stay_probs(q, k, sc, bias.to(cdtype).view(1, h, 1, 1), noise)
    cell_valid = tok_valid[:, None, :, None] & frm_valid[:, None, None, :]
    return torch.where(cell_valid, p, 0)


def stepwise_monotonic_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    query_lengths: Tensor | None = None,
    key_lengths: Tensor | None = None,
    stay_bias: Tensor | float = 0.0,
    noise_std: float = 0.0,
    tunable: bool = True,
    mode: Mode = "soft",
    head_selection: HeadSelection = "focus_rate",
    mass: Mass = "preserve",
    initial_alignment: Tensor | None = None,
    scale: float | None = None,
    generator: torch.Generator | None = None,
    impl: str = "auto",
    need_weights: bool = True,
) -> MonotonicAttentionResult:
    """Stepwise monotonic multi-head attention on projected, head-split inputs.

    Text tokens (queries) attend over mel frames (keys). Tunable path, per head ``h``:
    ``p = sigmoid(q k^T * scale + stay_bias[h] + N(0, noise_std))``, ``alpha`` from the stepwise
    recurrence (:func:`speechattn.functional.stepwise_monotonic_alignment`) along frames. Each
    head's focus rate (FastSpeech) is measured on its soft ``alpha``; ``head_index`` is the best
    head per item.

    ``head_selection="focus_rate"`` (as the keonlee reference): the selected head's alignment
    attends over the values of all heads concatenated, ``context = alpha_sel @ [v_1 .. v_h]``.
    Heads are ranked on their noise-free alignments (as the reference ranks its noise-free
    softmax); the training noise then perturbs only the selected head, whose ``p`` is recomputed
    with autograd, so only the selected head's energies receive gradients. The per-head
    ``attn_weights`` are these noise-free alignments, without gradient (for monitoring).
    ``head_selection="per_head"``: every head attends with its own alignment,
    ``context = [alpha_1 @ v_1 .. alpha_h @ v_h]``; ``attn_weights`` carry gradients.

    Modes: ``"soft"`` the expected alignment (differentiable), ``"hard"`` the same recurrence with
    ``p > 0.5`` (a one-hot path; note it never advances while ``p`` stays above 0.5),
    ``"viterbi"`` the most likely monotonic path under ``log p`` / ``log(1 - p)`` forced to end on
    the last valid token at the last valid frame (needs ``key_lengths >= query_lengths``). Hard and
    Viterbi alignments carry no gradient to the energies (only to the values).

    ``tunable=False``: plain multi-head attention, softmax over valid frames in float32 per head,
    ``context = [softmax_1 @ v_1 .. softmax_h @ v_h]``; ``alignment`` is the selected head's
    softmax and ``p_choose`` is ``None``.

    Padding: frames ``>= key_lengths[b]`` and tokens ``>= query_lengths[b]`` are zeroed before
    use (or never read), get exactly zero weight, and every output is exactly zero there, so
    padding content (even NaN or inf) never changes an output, and the gradients at padded
    positions are exactly 0.

    Args:
        query: ``(b, h, u, dk)`` projected text queries.
        key: ``(b, h, t, dk)`` projected mel keys.
        value: ``(b, h, t, dv)`` projected mel values.
        query_lengths: int64 ``(b,)`` valid tokens (``None``: all ``u``).
        key_lengths: int64 ``(b,)`` valid frames (``None``: all ``t``).
        stay_bias: ``(h,)`` tensor or float ``r`` added to every energy (learnable in the module).
        noise_std: std of the Gaussian noise added to the energies before the sigmoid (pass 0
            outside training). With ``head_selection="focus_rate"`` on CPU it is one draw of
            ``sum(query_lengths * key_lengths)`` values for the valid cells only (item by item,
            row-major), not a ``(b, u, t)`` draw.
        tunable: monotonic attention (True) or plain softmax attention (False).
        mode: ``"soft"``, ``"hard"`` or ``"viterbi"`` (tunable only).
        head_selection: ``"focus_rate"`` or ``"per_head"`` (see above).
        mass: ``"preserve"`` (the last valid token absorbs, columns sum to 1) or ``"drop"`` (the
            paper: mass may leave past the last token).
        initial_alignment: ``(b, u)`` alignment before frame 0 (default one-hot on token 0);
            soft and hard modes only.
        scale: energy scale, default ``1 / sqrt(dk)``.
        generator: RNG for the noise.
        impl: recurrence implementation (``"auto"``, ``"torch"`` or a kernel name).
        need_weights: return the per-head ``attn_weights``; False returns ``None`` there and,
            with ``head_selection="focus_rate"`` on a kernel that supports it (numba on CPU),
            ranks the heads without storing their alignments (the focus rates come from the
            recurrence's own pass). Every other output is the same.

    Returns:
        :class:`MonotonicAttentionResult`. Float32/float64 inputs compute in their dtype;
        float16/bfloat16 compute the probabilities and the recurrence in float32 and return the
        context in the input dtype.

    Raises:
        ValueError / TypeError: wrong ranks, sizes, devices, dtypes, lengths or options.

    Example (naive equivalent of the tunable, per-head, soft path, no padding)::

        e = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + r.view(1, -1, 1, 1)
        alpha = stepwise_monotonic_alignment(torch.sigmoid(e), mass="preserve")
        context = (alpha @ v).transpose(1, 2).flatten(2)
    """
    _check_inputs(query, key, value)
    if mode not in _MODES:
        raise ValueError(f"Expected mode in {_MODES}; found {mode!r}.")
    if head_selection not in _SELECTIONS:
        raise ValueError(f"Expected head_selection in {_SELECTIONS}; found {head_selection!r}.")
    if mass not in _MASSES:
        raise ValueError(f"Expected mass in {_MASSES}; found {mass!r}.")
    if not tunable and mode != "soft":
        raise ValueError(
            f"mode={mode!r} needs the monotonic path; found tunable=False (plain softmax "
            "attention has only mode='soft')."
        )
    if not isinstance(need_weights, bool):
        raise TypeError(f"Expected need_weights to be a bool; found {need_weights!r}.")
    q_len, k_len, bias = _check_common(query, key, query_lengths, key_lengths, stay_bias, noise_std)
    b, h, u, dk = query.shape
    t = key.shape[2]
    dev = query.device
    weights: Tensor | None
    if initial_alignment is not None:
        if mode == "viterbi":
            raise ValueError(
                "initial_alignment is not supported with mode='viterbi' (the path starts on "
                "token 0); use mode='soft' or 'hard'."
            )
        if initial_alignment.shape != (b, u):
            raise ValueError(
                f"Expected initial_alignment of shape ({b}, {u}); found "
                f"{tuple(initial_alignment.shape)}."
            )
        if initial_alignment.device != dev:
            raise ValueError(
                f"Expected initial_alignment on {dev}; found {initial_alignment.device}."
            )

    out_dtype = query.dtype
    cdtype = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32
    tok_valid = lengths_to_valid_mask(q_len, u)  # (b, u)
    frm_valid = lengths_to_valid_mask(k_len, t)  # (b, t)
    # Zero padding first: padded content (even inf/NaN) then never reaches an output. (The
    # focus-rate path below zeroes only what it reads with autograd.)
    if tunable and head_selection == "focus_rate":
        q = k = v = query
    else:
        q = torch.where(tok_valid[:, None, :, None], query, 0).to(cdtype)
        k = torch.where(frm_valid[:, None, :, None], key, 0).to(cdtype)
        v = torch.where(frm_valid[:, None, :, None], value, 0).to(cdtype)
    sc = 1.0 / math.sqrt(dk) if scale is None else float(scale)
    # CPU focus-rate path: the valid blocks come from the lengths as Python ints (no masks)
    blocks = FAST_VALID_BLOCKS and dev.type == "cpu"
    cell_valid = None
    if not (blocks and tunable and head_selection == "focus_rate"):
        cell_valid = tok_valid[:, None, :, None] & frm_valid[:, None, None, :]  # (b, 1, u, t)

    if not tunable:
        assert cell_valid is not None
        e = torch.matmul(q, k.transpose(-1, -2)).float() * sc
        e = e.masked_fill(~frm_valid[:, None, None, :], torch.finfo(torch.float32).min)
        w = torch.softmax(e, dim=-1).to(cdtype)
        w = torch.where(cell_valid, w, 0)
        fr = focus_rate(w.detach(), q_len, k_len)
        head_index = fr.argmax(dim=-1)
        ctx = torch.matmul(w, v).transpose(1, 2).reshape(b, u, -1)
        return MonotonicAttentionResult(
            ctx.to(out_dtype),
            select_heads(w, head_index),
            w if need_weights else None,
            fr,
            head_index,
            None,
        )

    bias_c = bias.to(cdtype).view(1, h, 1, 1)

    def draw_noise(shape: tuple[int, ...]) -> Tensor | None:
        if noise_std <= 0:
            return None
        # the values of randn(shape) * noise_std, scaled in the draw's own pass
        noise = torch.empty(shape, device=dev, dtype=cdtype)
        return noise.normal_(0.0, noise_std, generator=generator)

    alpha0 = None if initial_alignment is None else initial_alignment.to(cdtype)

    def stay_probs(qq: Tensor, kk: Tensor, bb: Tensor, nn_: Tensor | None) -> Tensor:
        return _stay_probs(qq, kk, sc, bb, nn_)

    def align(p: Tensor, m: Mode, a0: Tensor | None) -> Tensor:
        if m == "viterbi":
            return monotonic_viterbi(p.detach(), q_len, k_len).path.to(p.dtype)
        return stepwise_monotonic_alignment(
            p, q_len, k_len, mode=m, mass=mass, initial_alignment=a0, impl=impl
        )

    def expand0(a0: Tensor | None) -> Tensor | None:
        return None if a0 is None else a0[:, None, :].expand(b, h, u)

    if head_selection == "per_head":
        assert cell_valid is not None
        p = stay_probs(q, k, bias_c, draw_noise((b, h, u, t)))
        soft = align(p, "soft", expand0(alpha0))
        fr = focus_rate(soft.detach(), q_len, k_len)
        head_index = fr.argmax(dim=-1)
        weights = soft if mode == "soft" else align(p, mode, expand0(alpha0))
        ctx = torch.matmul(weights, v).transpose(1, 2).reshape(b, u, -1)
        p_sel = torch.where(cell_valid[:, 0], select_heads(p, head_index), 0)
        alignment = select_heads(weights, head_index)
    else:
        needs_grad = torch.is_grad_enabled() and (
            query.requires_grad or key.requires_grad or bias_c.requires_grad
        )
        # Heads are ranked on their noise-free alignments (as the reference ranks the noise-free
        # softmax), without autograd, in the head-major layout ``(h*b, u, t)`` that per-head
        # bmm calls write directly (no transposed copy of the keys). Padded cells are never read:
        # the recurrence skips them and its alignment is exactly 0 there.
        with torch.no_grad():
            qs = query.to(cdtype) * sc
            kc = key.to(cdtype)
            e_hm = _ranking_buffer((h, b, u, t), cdtype, dev)
            if FUSED_RANKING_BIAS and dev.type == "cpu":  # bias as the matmul's accumulator
                for j, r in enumerate(bias_c.view(h).tolist()):
                    e_hm[j].fill_(r).baddbmm_(qs[:, j], kc[:, j].transpose(1, 2))
            else:
                for j in range(h):
                    torch.bmm(qs[:, j], kc[:, j].transpose(1, 2), out=e_hm[j])
                e_hm.add_(bias_c.view(h, 1, 1, 1))
            # keep the energies for the selected head when it is recomputed below (training)
            keep_e = (
                REUSE_RANKING_ENERGIES
                and RANKING_WORKSPACE
                and FUSED_RANKING_BIAS
                and dev.type == "cpu"
                and (needs_grad or noise_std > 0)
            )
            if keep_e:
                p_hm = torch.sigmoid(e_hm, out=_ranking_buffer((h, b, u, t), cdtype, dev, "p"))
                p_hm = p_hm.view(h * b, u, t)
            else:
                p_hm = e_hm.sigmoid_().view(h * b, u, t)
            q_len_h, k_len_h = q_len.repeat(h), k_len.repeat(h)
            w_hm, fr_hm = _ranking_alignments(
                p_hm,
                q_len_h,
                k_len_h,
                mass,
                None if alpha0 is None else alpha0.repeat(h, 1),
                impl,
                need_weights,
            )
            fr = fr_hm.view(h, b).t()
            head_index = fr.argmax(dim=-1)
            weights = None if w_hm is None else w_hm.view(h, b, u, t).transpose(0, 1)
        lens = (q_len.tolist(), k_len.tolist()) if blocks else None
        if needs_grad or noise_std > 0:
            # Recompute only the selected head, with a hand-written backward: 1/h of the energy
            # work, and the saved tensors are (b, u, t) instead of (b, h, u, t). On CPU the
            # noise is drawn for the valid cells only (padded cells are masked anyway).
            if lens is not None and noise_std > 0:
                count = sum(m * n for m, n in zip(*lens, strict=True))
                noise = draw_noise((count,))
            else:
                noise = draw_noise((b, u, t))
            p_sel = _SelectedStayProb.apply(
                query,
                key,
                bias_c.view(h),
                qs,
                kc,
                head_index,
                tok_valid,
                frm_valid,
                None if cell_valid is None else cell_valid[:, 0],
                noise,
                sc,
                lens,
                _ranking_rows(e_hm, head_index) if keep_e else None,
            )
            soft_sel = align(p_sel, "soft", alpha0) if mode == "soft" else None
        else:
            p_sel = p_hm.view(h, b, u, t)[head_index, torch.arange(b, device=dev)]  # a copy
            if lens is not None:
                _zero_outside_blocks(p_sel, *lens)
            else:
                assert cell_valid is not None
                p_sel = torch.where(cell_valid[:, 0], p_sel, 0)
            soft_sel = None
            if mode == "soft":
                soft_sel = (
                    select_heads(weights, head_index)
                    if weights is not None
                    else align(p_sel, "soft", alpha0)
                )
        alignment = soft_sel if soft_sel is not None else align(p_sel, mode, alpha0)
        # (b, t, h*dv), head-major features, zero on padded frames; a view when ``value`` is the
        # head split of a (b, t, h*dv) projection.
        v_cat = value.transpose(1, 2).reshape(b, t, -1)
        if lens is not None:  # padded value rows are never read
            ctx = _ValidContext.apply(alignment, v_cat.to(cdtype), *lens)
        else:
            v_cat = torch.where(frm_valid[:, :, None], v_cat, 0).to(cdtype)
            ctx = torch.bmm(alignment, v_cat)
    if not need_weights:
        weights = None
    return MonotonicAttentionResult(ctx.to(out_dtype), alignment, weights, fr, head_index, p_sel)
