"""Stepwise monotonic multi-head attention (SMA) module.

Shape legend: ``b`` batch, ``h`` heads, ``u`` text tokens (queries), ``t`` mel frames
(keys/values), ``d`` model dim (``embed_dim``).
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechattn.functional.masks import check_lengths, check_nonempty_batch, lengths_to_valid_mask
from speechattn.functional.monotonic_attention import (
    KEY_GRAD_SINK,
    QUERY_GRAD_SINK,
    _head_rows_index,
    _select_head_rows,
    expected_stay_prob,
    stepwise_monotonic_attention,
    stepwise_stay_probability,
)

__all__ = ["SMAOutput", "StepwiseMonotonicMultiheadAttention"]

_MODES = ("soft", "hard", "viterbi")


class SMAOutput(NamedTuple):
    """Outputs of :class:`StepwiseMonotonicMultiheadAttention`.

    Attributes:
        output: ``(b, u, d)`` text-length fusion of the mel values; 0 on padded tokens.
        alignment: ``(b, u, t)`` monotonic ``alpha`` of the selected head (soft, hard or Viterbi
            path), or the selected head's softmax with ``tunable=False``. Row ``u`` sums to the
            token's (expected) duration in frames.
        attn_weights: ``(b, h, u, t)`` per-head alignments; ``None`` with
            ``forward(..., need_weights=False)``.
        focus_rate: ``(b, h)`` FastSpeech focus rate of each head's soft alignment.
        head_index: ``(b,)`` int64 selected head per item (argmax of ``focus_rate``).
        p_choose: ``(b, u, t)`` stay probabilities of the selected head; ``None`` with
            ``tunable=False``.
    """

    output: Tensor
    alignment: Tensor
    attn_weights: Tensor | None
    focus_rate: Tensor
    head_index: Tensor
    p_choose: Tensor | None


# Project only the valid key frames (one matmul per item) in training; False: padded frames
# zeroed, then one F.linear over every frame (for A/B benchmarks).
FAST_KEY_ROWS = True

# Dropout on the projected context from one uniform draw (``rand >= p``, the same Bernoulli
# keep mask and ``1 / (1 - p)`` scale as ``nn.Dropout``; about half the time of CPU
# ``bernoulli_``); False: ``self.dropout(x)`` (for A/B benchmarks).
FAST_DROPOUT = True


# The key projection's backward takes the selected head's key-gradient rows from the attention's
# backward directly (no dense (b, h, t, dk) zero-filled gradient scattered and gathered again);
# False: the dense gradient (for A/B benchmarks and tests).
FAST_KEY_GRAD = True

# The same hand-off for the query projection: with focus-rate selection only the selected
# head's query rows get gradient, so its weight gradient is one ``dh``-wide block per item;
# False: the dense (b, u, h*dh) gradient through ``F.linear`` (for A/B benchmarks and tests).
FAST_QUERY_GRAD = True
# How the query projection skips padded tokens there: True, padded rows zeroed then one dense
# product (and a dense weight-gradient ``bmm``); False, one matmul per item over its valid rows
# (the key's way). The query has few rows per item (u << t), and per-item products of that
# size barely use a second thread.
QUERY_ZEROED_ROWS = True

# With focus-rate selection the value projection is applied to the context (see ``forward``),
# and it is followed by the output projection with nothing in between: one product with
# ``W = W_out @ W_v`` (``_ChainedLinear``) instead of two, forward and backward (4 instead of
# 6 (rows x d x d) matmuls plus three (d x d x d) ones), when the context has at least
# ``2 * max(embed_dim, vdim)`` rows; False: the two projections (for A/B benchmarks and tests).
FAST_CHAINED_PROJ = True


class _HeadHint:
    """The selected head per item, filled in by the layer once its forward has chosen it, and
    (as the key's gradient sink, see ``KEY_GRAD_SINK``) the selected head's key-gradient rows
    ``(b, t, dh)`` deposited by the attention's backward."""

    __slots__ = ("grad_rows", "head_index")

    def __init__(self) -> None:
        self.head_index: Tensor | None = None
        self.grad_rows: Tensor | None = None


class _HeadBlockLinear(torch.autograd.Function):
    """``F.linear(x, weight, bias)`` whose backward skips all-zero head blocks of the gradient.

    With focus-rate selection only one head per item receives gradients, so the key
    projection's gradient ``(b, t, h*dh)`` is zero outside one ``dh``-wide block per item. The
    backward multiplies only that block per item (1/h of the dense work). The layer passes a
    :class:`_HeadHint` holding the selected heads (exact: its forward routes gradients to those
    blocks only); without one the backward finds the block per item and falls back to the dense
    products when an item has gradient in several heads. Exact up to summation order.
    With ``lengths`` (CPU, contiguous ``x``) the forward projects only each item's valid rows
    and returns 0 in padded rows (see :func:`_linear_valid_rows`); with ``lengths`` and
    ``zeroed_input`` (or on another device, or a strided ``x``) it replaces the padded rows of
    ``x`` by 0 and projects every row at once (padded output rows hold the bias and must not be
    read with gradient, as the layer never does). Either way padded input content reaches no
    output row that is read and no gradient.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        num_heads: int,
        hint: _HeadHint | None = None,
        lengths: Tensor | None = None,
        zeroed_input: bool = False,
    ) -> Tensor:
        ctx.num_heads = num_heads
        ctx.has_bias = bias is not None
        ctx.hint = hint
        if lengths is not None and (zeroed_input or not _rows_projectable(x)):
            # padded rows of x replaced by 0, then one dense product (padded output rows hold
            # the bias; nothing that reads them gets gradient): the backward's dense weight
            # product then never meets padded content. Also where the rows cannot be projected
            # item by item (another device, a strided x).
            x = torch.where(lengths_to_valid_mask(lengths, x.shape[1])[..., None], x, 0)
            out, ctx.valid = F.linear(x, weight, bias), None
        else:
            out, ctx.valid = _linear_valid_rows(x, weight, bias, lengths)
        ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        h = ctx.num_heads
        b, t, d_out = grad.shape
        dh = d_out // h
        g4 = grad.view(b, t, h, dh)
        need_x, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias
        hint = ctx.hint
        valid = ctx.valid  # valid rows per item when padded rows were not projected, else None
        # padded output rows are constant 0 when not projected: no gradient flows through them
        sel = None  # the selected head's gradient rows (b, t, dh), when deposited
        if hint is not None and hint.grad_rows is not None and hint.head_index is not None:
            sel, hint.grad_rows = hint.grad_rows.to(grad.dtype), None
            if any(grad.stride()):  # another consumer's gradient too: add the rows to it
                dense = grad.contiguous().clone()
                idx = _head_rows_index(b, t, h, hint.head_index)
                dense.view(b * t * h, dh).index_add_(0, idx, sel.reshape(b * t, dh))
                grad, g4, sel = dense, dense.view(b, t, h, dh), None
        if sel is not None:
            head = hint.head_index  # type: ignore[union-attr]
        elif hint is not None and hint.head_index is not None:
            head = hint.head_index
        else:
            nonzero = g4.abs().amax(dim=(1, 3)) != 0  # (b, h); amax propagates NaN: nonzero
            if bool((nonzero.sum(1) > 1).any()):  # several heads per item: the dense products
                if valid is not None:
                    rows = lengths_to_valid_mask(torch.tensor(valid), t)[..., None]
                    grad, x = torch.where(rows, grad, 0), torch.where(rows, x, 0)
                gx = grad @ weight if need_x else None
                gw = grad.reshape(-1, d_out).t() @ x.reshape(-1, x.shape[-1]) if need_w else None
                gb = grad.sum((0, 1)) if need_b and ctx.needs_input_grad[2] else None
                return gx, gw, gb, None, None, None, None
            head = nonzero.to(torch.int64).argmax(1)  # (b,); items without gradient use head 0
        g_sel = sel if sel is not None else _select_head_rows(g4.transpose(1, 2), head)
        if valid is not None:  # a new tensor: zero its padded rows in place
            for i, m in enumerate(valid):
                g_sel[i, m:].zero_()
        w_h = weight.view(h, dh, -1)
        gx = torch.bmm(g_sel, w_h[head]) if need_x else None
        gw = None
        if need_w:
            if valid is None:
                gw_sel = torch.bmm(g_sel.transpose(1, 2), x)  # (b, dh, d_in)
            else:  # valid rows only (padded rows of x may hold anything)
                gw_sel = x.new_empty((b, dh, x.shape[-1]))
                for i, m in enumerate(valid):
                    torch.mm(g_sel[i, :m].t(), x[i, :m], out=gw_sel[i])
            gw = torch.zeros_like(w_h).index_add_(0, head, gw_sel).view_as(weight)
        gb = None
        if need_b and ctx.needs_input_grad[2]:
            gb = torch.zeros((h, dh), dtype=grad.dtype, device=grad.device)
            gb = gb.index_add_(0, head, g_sel.sum(1)).view(-1)
        return gx, gw, gb, None, None, None, None


class _ChainedLinear(torch.autograd.Function):
    """``F.linear(F.linear(x, w_v) + rows * b_v, w_o, b_o)`` as one product with the composed
    weight ``w = w_o @ w_v``: two linear maps with nothing between them.

    ``x`` ``(..., d_in)``, ``rows`` ``(..., 1)`` (or ``None`` without ``b_v``), ``w_v``
    ``(d_mid, d_in)``, ``w_o`` ``(d_out, d_mid)``. Forward: ``x @ w^T + rows * (w_o @ b_v) +
    b_o``. Backward, with ``g`` the output gradient and ``G = g^T x``: ``grad_x = g @ w``,
    ``grad_w_o = G @ w_v^T + (g^T rows) b_v^T``, ``grad_w_v = w_o^T @ G``, ``grad_b_v = w_o^T
    (g^T rows)``, ``grad_rows = g @ (w_o @ b_v)``: two (n x d x d) matmuls where autograd
    through two ``F.linear`` needs four. The same numbers up to summation order.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        rows: Tensor | None,
        w_v: Tensor,
        b_v: Tensor | None,
        w_o: Tensor,
        b_o: Tensor | None,
    ) -> Tensor:
        w = w_o @ w_v
        x2 = x.reshape(-1, x.shape[-1])
        out = torch.mm(x2, w.t()) if b_o is None else torch.addmm(b_o, x2, w.t())
        c = None
        if rows is not None and b_v is not None:
            c = torch.mv(w_o, b_v)
            out.addr_(rows.reshape(-1), c)
        ctx.save_for_backward(x, rows, w_v, b_v, w_o, w, c)
        ctx.has_bo = b_o is not None
        return out.view(*x.shape[:-1], w.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, rows, w_v, b_v, w_o, w, c = ctx.saved_tensors
        need_x, need_rows, need_wv, need_bv, need_wo, need_bo = ctx.needs_input_grad
        g2 = grad.reshape(-1, grad.shape[-1])
        x2 = x.reshape(-1, x.shape[-1])
        gx = torch.mm(g2, w).view_as(x) if need_x else None
        g_rows = torch.mv(g2, c).view_as(rows) if need_rows and c is not None else None
        s = torch.mv(g2.t(), rows.reshape(-1)) if c is not None else None  # g^T rows
        g_wv = g_wo = g_bv = None
        if need_wv or need_wo:
            big_g = torch.mm(g2.t(), x2)  # (d_out, d_in)
            if need_wv:
                g_wv = torch.mm(w_o.t(), big_g)
            if need_wo:
                g_wo = torch.mm(big_g, w_v.t())
                if s is not None:
                    g_wo.addr_(s, b_v)
        if need_bv and s is not None:
            g_bv = torch.mv(w_o.t(), s)
        g_bo = g2.sum(0) if ctx.has_bo and need_bo else None
        return gx, g_rows, g_wv, g_bv, g_wo, g_bo


def _zero_padded_rows(x: Tensor, lengths: Tensor | None) -> Tensor:
    """``x`` ``(b, n, f)`` with rows ``>= lengths[i]`` of item ``i`` replaced by 0 (``x`` itself
    without lengths or without autograd).

    Before a plain ``F.linear`` whose padded output rows are masked afterwards: their gradient is
    0, but the weight's gradient ``g^T x`` would still meet the padded content (``0 * NaN`` is
    NaN). Without autograd the projection is row by row and the masking suffices.
    """
    if lengths is None or not torch.is_grad_enabled():
        return x
    return torch.where(lengths_to_valid_mask(lengths, x.shape[1])[..., None], x, 0)


def _autocast_device(x: object) -> str | None:
    """The device type of ``x`` when autocast is on there (mixed precision), else ``None``."""
    if not isinstance(x, Tensor):
        return None
    dev = x.device.type
    return dev if torch.is_autocast_enabled(dev) else None


def _to_dtype(x: Any, dtype: torch.dtype) -> Any:
    """``x`` cast to ``dtype`` when it is a floating tensor (anything else is left for the
    input checks to report)."""
    if isinstance(x, Tensor) and x.is_floating_point() and x.dtype != dtype:
        return x.to(dtype)
    return x


def _rows_projectable(x: Tensor) -> bool:
    """Whether :func:`_linear_valid_rows` projects ``x``'s valid rows item by item (CPU,
    contiguous ``(b, t, d_in)``) rather than every row with one ``F.linear``."""
    return x.device.type == "cpu" and x.dim() == 3 and x.is_contiguous()


def _linear_valid_rows(
    x: Tensor, weight: Tensor, bias: Tensor | None, lengths: Tensor | None
) -> tuple[Tensor, list[int] | None]:
    """``F.linear(x, weight, bias)`` of ``(b, t, d_in)``, on CPU with rows ``>= lengths[i]`` of
    item ``i`` set to 0 instead of projected (one matmul per item over its valid rows; the
    layer never reads padded key rows): ``(out, valid rows per item)``. Other cases (no
    lengths, no padding, another device): ``(F.linear(...), None)``."""
    if lengths is None or not _rows_projectable(x):
        return F.linear(x, weight, bias), None
    b, t = x.shape[0], x.shape[1]
    valid = lengths.tolist()
    if min(valid) >= t:
        return F.linear(x, weight, bias), None
    out = x.new_empty((b, t, weight.shape[0]))
    wt = weight.t()
    for i, m in enumerate(valid):
        if bias is None:
            torch.mm(x[i, :m], wt, out=out[i, :m])
        else:
            torch.addmm(bias, x[i, :m], wt, out=out[i, :m])
        out[i, m:].zero_()
    return out, valid


class StepwiseMonotonicMultiheadAttention(nn.Module):
    """Stepwise monotonic multi-head attention from text (queries) to mel frames (keys/values).

    He et al. 2019, "Robust Sequence-to-Sequence Acoustic Modeling with Stepwise Monotonic
    Attention for Neural TTS"; multi-head form with focus-rate head selection as in
    keonlee9420/Stepwise_Monotonic_Multihead_Attention (for the exact reference API and
    checkpoints use :class:`speechattn.compat.keonlee.StepwiseMonotonicMultiheadAttention`).

    Per head ``h``: ``p_t(u) = sigmoid(q_u . k_t / sqrt(d/h) + r_h + N(0, noise_std))`` (noise in
    training only) is the probability that frame ``t`` stays on token ``u``; the stepwise
    recurrence along frames gives the alignment ``alpha`` (``(b, h, u, t)``) and each head's
    focus rate picks ``head_index``. The context is ``alignment @ values`` (see
    ``head_selection``), then::

        output = dropout(out_proj(context))
        if residual:   output = query + output
        if layer_norm: output = LayerNorm(output)

    so dropout acts on the projected context, never on the alignment (which would break its
    column sums); ``residual=False, layer_norm=True`` is the reference layout
    (``LayerNorm(Dropout(Linear(cv)))``, no residual). Outputs on padded tokens are 0, and
    padding content (even NaN or inf) changes no output and no gradient, on every path.

    Differences from the keonlee reference (kept in the compat adapter, not here): the reference
    uses ``p = sigmoid(softmax over frames)`` so ``p`` lies in ``[0.5, 0.73]`` (an expected dwell of 2 to 3.7
    frames per token, whatever the data's speaking rate); here ``p`` comes from
    the energies plus a learnable per-head bias, so it spans ``(0, 1)``. The reference lets
    alignment mass flow into padded frames and tokens and normalises the focus rate by the mel
    length only; here padding takes no mass (``mass="preserve"`` keeps every valid frame's column
    summing to 1) and the focus rate is FastSpeech's (per frame over valid tokens, mean over valid
    frames).

    Choosing the stay-probability bias: He et al. use ``r = 3.5`` (``p ~ 0.97``) with a Tacotron
    decoder. As a text-to-mel aligner (``t / u ~ 5-10`` frames per token) a prototype here
    collapsed with 3.5 (the alignment crawls ~1 token per 30 frames and the gradients push all
    mass onto the first tokens) and trained when the initial stay probability was near
    ``1 - u/t``: pass ``initial_stay_prob=expected_stay_prob(text_lengths, mel_lengths)`` (see
    :meth:`expected_stay_prob`) for aligners. A toy aligner here (``benchmarks/bench_sma.py
    --section init``) did not collapse with 3.5 but learned far more slowly and ended behind
    ``1 - u/t`` (Viterbi frame accuracy 0.86 vs 0.90 after 300 steps).

    Args:
        embed_dim: ``d``, size of the queries and of the output.
        num_heads: ``h``; must divide ``embed_dim``.
        kdim: key feature size (default ``embed_dim``).
        vdim: value feature size (default ``embed_dim``).
        dropout: dropout on the projected context (on CPU in training its keep mask comes from
            ``torch.rand``: ``nn.Dropout``'s distribution and scale, another random stream).
        noise_std: std of the Gaussian noise on the energies in training (encourages discrete
            alignments); 0 disables it.
        energy_bias_init: initial stay bias ``r`` (all heads); ignored if ``initial_stay_prob``
            is given.
        initial_stay_prob: initialise ``r = logit(initial_stay_prob)`` instead, in ``(0, 1)``.
        tunable: monotonic attention (True) or plain multi-head softmax attention (False, the
            reference's ``is_tunable=False``, e.g. to warm up).
        head_selection: ``"focus_rate"`` (the best head's alignment attends over all heads'
            values, as the reference) or ``"per_head"`` (each head attends with its own
            alignment).
        mass: ``"preserve"`` (the last valid token absorbs: durations sum to the mel length) or
            ``"drop"`` (the paper: mass may leave past the last token).
        eval_mode: alignment mode used in eval when ``forward(mode=None)``: ``"soft"``, ``"hard"``
            (``p > 0.5`` path) or ``"viterbi"`` (most likely path ending on the last token).
        residual: add the query to the projected context (needs the output size = ``embed_dim``,
            always true here).
        layer_norm: LayerNorm on the output.
        bias: biases in the four projections.
        impl: recurrence implementation passed to
            :func:`speechattn.functional.stepwise_monotonic_alignment`.

    Shapes, dtypes, devices: ``query (b, u, d)``, ``key (b, t, kdim)``, ``value (b, t, vdim)``,
    all of the module's parameter dtype and device (under autocast, any float dtype: the layer
    runs in its parameters' dtype); lengths int64 ``(b,)``. Differentiable in
    soft mode (hard/Viterbi alignments pass gradients to the values only).

    Example:
        >>> sma = StepwiseMonotonicMultiheadAttention(embed_dim=32, num_heads=4, dropout=0.0)
        >>> text, mel = torch.randn(2, 5, 32), torch.randn(2, 40, 32)
        >>> out = sma(text, mel, mel, query_lengths=torch.tensor([5, 3]),
        ...           key_lengths=torch.tensor([40, 25]))
        >>> out.output.shape, out.alignment.shape, out.attn_weights.shape
        (torch.Size([2, 5, 32]), torch.Size([2, 5, 40]), torch.Size([2, 4, 5, 40]))
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        num_heads: int,
        kdim: int | None = None,
        vdim: int | None = None,
        dropout: float = 0.1,
        noise_std: float = 1.0,
        energy_bias_init: float = 3.5,
        initial_stay_prob: float | None = None,
        tunable: bool = True,
        head_selection: Literal["focus_rate", "per_head"] = "focus_rate",
        mass: Literal["preserve", "drop"] = "preserve",
        eval_mode: Literal["soft", "hard", "viterbi"] = "soft",
        residual: bool = False,
        layer_norm: bool = False,
        bias: bool = True,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        for name, val in (
            ("embed_dim", embed_dim),
            ("num_heads", num_heads),
            ("kdim", embed_dim if kdim is None else kdim),
            ("vdim", embed_dim if vdim is None else vdim),
        ):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"Expected {name} to be a positive int; found {val!r}.")
        if embed_dim % num_heads:
            raise ValueError(
                f"Expected num_heads to divide embed_dim; found embed_dim={embed_dim}, "
                f"num_heads={num_heads}. Pick num_heads among the divisors of {embed_dim}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Expected 0 <= dropout < 1; found {dropout}.")
        if noise_std < 0:
            raise ValueError(f"Expected noise_std >= 0; found {noise_std}.")
        if initial_stay_prob is not None and not 0.0 < initial_stay_prob < 1.0:
            raise ValueError(f"Expected 0 < initial_stay_prob < 1; found {initial_stay_prob}.")
        if head_selection not in ("focus_rate", "per_head"):
            raise ValueError(
                f"Expected head_selection 'focus_rate' or 'per_head'; found {head_selection!r}."
            )
        if mass not in ("preserve", "drop"):
            raise ValueError(f"Expected mass 'preserve' or 'drop'; found {mass!r}.")
        if eval_mode not in _MODES:
            raise ValueError(f"Expected eval_mode in {_MODES}; found {eval_mode!r}.")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.noise_std = float(noise_std)
        self.tunable = tunable
        self.head_selection = head_selection
        self.mass = mass
        self.eval_mode = eval_mode
        self.residual = residual
        self.impl = impl
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        init = (
            math.log(initial_stay_prob / (1.0 - initial_stay_prob))
            if initial_stay_prob is not None
            else float(energy_bias_init)
        )
        #: learnable stay bias ``r``, one per head.
        self.stay_bias = nn.Parameter(torch.full((num_heads,), init))
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(embed_dim) if layer_norm else None

    expected_stay_prob = staticmethod(expected_stay_prob)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, kdim={self.kdim}, "
            f"vdim={self.vdim}, tunable={self.tunable}, head_selection={self.head_selection!r}, "
            f"mass={self.mass!r}, eval_mode={self.eval_mode!r}, noise_std={self.noise_std}, "
            f"residual={self.residual}"
        )

    def _check(self, name: str, x: Tensor, last: int, batch: int | None) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"Expected {name} to be a torch.Tensor; found {type(x).__name__}.")
        if x.dim() != 3 or x.shape[-1] != last or (batch is not None and x.shape[0] != batch):
            lead = "B" if batch is None else str(batch)
            raise ValueError(
                f"Expected {name} of shape ({lead}, N, {last}); found {tuple(x.shape)}. "
                "Inputs are batch-first (b, n, features)."
            )
        w = self.q_proj.weight
        if x.device != w.device:
            raise ValueError(
                f"Expected {name} on {w.device} (the module's device); found {x.device}. "
                f"Move it with .to({str(w.device)!r}) or move the module."
            )
        if x.dtype != w.dtype:
            raise TypeError(
                f"Expected {name} of dtype {w.dtype} (the module's parameter dtype); found "
                f"{x.dtype}. Cast the input or the module (module.to({x.dtype}))."
            )

    def _check_qk(self, query: Tensor, key: Tensor) -> int:
        self._check("query", query, self.embed_dim, None)
        check_nonempty_batch(query, "query", where=type(self).__name__)
        b = query.shape[0]
        self._check("key", key, self.kdim, b)
        return b

    def _dropout(self, x: Tensor) -> Tensor:
        """``self.dropout(x)``; on CPU in training the keep mask comes from ``torch.rand``
        (global RNG, as ``nn.Dropout``): the same distribution, a different random stream."""
        drop = self.dropout
        if not (
            FAST_DROPOUT
            and type(drop) is nn.Dropout
            and drop.training
            and 0.0 < drop.p < 1.0
            and not drop.inplace
            and x.device.type == "cpu"
        ):
            return drop(x)
        # the keep mask as 0 / 1 in the draw's own buffer, then scaled: no bool mask or copy
        keep = torch.rand(x.shape, dtype=x.dtype, device=x.device).ge_(drop.p)
        return x * keep.mul_(1.0 / (1.0 - drop.p))

    def _split(self, proj: nn.Linear, x: Tensor) -> Tensor:
        """``(b, n, features) -> (b, h, n, head_dim)`` (a view of the projection)."""
        b, n = x.shape[0], x.shape[1]
        return proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def _split_head_block(
        self,
        proj: nn.Linear,
        x: Tensor,
        hint: _HeadHint,
        lengths: Tensor | None,
        zeroed_input: bool,
        sink: str | None,
    ) -> Tensor:
        """:meth:`_split` through :class:`_HeadBlockLinear` (a block-sparse backward told the
        selected heads by ``hint``); with ``sink`` the result carries ``hint`` under that
        attribute, for the attention to deposit the selected head's gradient rows."""
        b, n = x.shape[0], x.shape[1]
        out = _HeadBlockLinear.apply(
            x, proj.weight, proj.bias, self.num_heads, hint, lengths, zeroed_input
        )
        out = out.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        if sink is not None:
            setattr(out, sink, hint)
        return out

    def stay_probability(
        self,
        query: Tensor,
        key: Tensor,
        *,
        query_lengths: Tensor | None = None,
        key_lengths: Tensor | None = None,
    ) -> Tensor:
        """Per-head stay probabilities only (no alignment, context or output projection).

        The first step of :meth:`forward`, through the same projections and
        :func:`speechattn.functional.stepwise_stay_probability`: for callers that need only
        ``p`` (e.g. an aligner scoring paths with a monotonic HMM). Noise is added in training.

        Args:
            query: ``(b, u, embed_dim)`` text encodings.
            key: ``(b, t, kdim)`` mel encodings.
            query_lengths: int64 ``(b,)`` valid tokens (``None``: all valid).
            key_lengths: int64 ``(b,)`` valid frames (``None``: all valid).

        Returns:
            ``(b, h, u, t)`` stay probabilities, 0 on padded tokens and frames.
        """
        autocast_dev = _autocast_device(query)
        if autocast_dev is not None:  # mixed precision: see forward
            dt = self.q_proj.weight.dtype
            with torch.autocast(device_type=autocast_dev, enabled=False):
                return self.stay_probability(
                    _to_dtype(query, dt),
                    _to_dtype(key, dt),
                    query_lengths=query_lengths,
                    key_lengths=key_lengths,
                )
        self._check_qk(query, key)
        b, u, t = query.shape[0], query.shape[1], key.shape[1]
        q_len = check_lengths(
            query_lengths, "query_lengths", batch=b, max_len=u, device=query.device
        )
        k_len = check_lengths(key_lengths, "key_lengths", batch=b, max_len=t, device=query.device)
        # padded rows zeroed before the projections (only where lengths were given)
        q_pad = None if query_lengths is None else q_len
        k_pad = None if key_lengths is None else k_len
        return stepwise_stay_probability(
            self._split(self.q_proj, _zero_padded_rows(query, q_pad)),
            self._split(self.k_proj, _zero_padded_rows(key, k_pad)),
            query_lengths=q_len,
            key_lengths=k_len,
            stay_bias=self.stay_bias,
            noise_std=self.noise_std if self.training else 0.0,
        )

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        *,
        query_lengths: Tensor | None = None,
        key_lengths: Tensor | None = None,
        mode: Literal["soft", "hard", "viterbi"] | None = None,
        initial_alignment: Tensor | None = None,
        need_weights: bool = True,
    ) -> SMAOutput:
        """Attend from text to mel.

        Args:
            query: ``(b, u, embed_dim)`` text encodings.
            key: ``(b, t, kdim)`` mel encodings.
            value: ``(b, t, vdim)`` mel encodings.
            query_lengths: int64 ``(b,)`` valid tokens, ``1 <= . <= u`` (``None``: all valid).
            key_lengths: int64 ``(b,)`` valid frames, ``1 <= . <= t`` (``None``: all valid).
            mode: ``"soft"``, ``"hard"`` or ``"viterbi"``; ``None`` = ``"soft"`` in training and
                ``eval_mode`` in eval. Viterbi needs ``key_lengths >= query_lengths``.
            initial_alignment: ``(b, u)`` alignment before frame 0 (default one-hot on token 0).
            need_weights: also return the per-head ``attn_weights`` ``(b, h, u, t)``; False
                returns ``None`` there (as :class:`torch.nn.MultiheadAttention`) and, with
                focus-rate head selection on CPU, ranks the heads without storing their
                alignments (faster; every other output is the same).

        Returns:
            :class:`SMAOutput`.

        Under autocast (mixed precision) the layer runs in its parameters' dtype with autocast
        off (the recurrence needs float32): inputs in the autocast dtype are cast to it, and the
        outputs come back in it.
        """
        autocast_dev = _autocast_device(query)
        if autocast_dev is not None:
            dt = self.q_proj.weight.dtype
            with torch.autocast(device_type=autocast_dev, enabled=False):
                return self.forward(
                    _to_dtype(query, dt),
                    _to_dtype(key, dt),
                    _to_dtype(value, dt),
                    query_lengths=query_lengths,
                    key_lengths=key_lengths,
                    mode=mode,
                    initial_alignment=_to_dtype(initial_alignment, dt),
                    need_weights=need_weights,
                )
        b = self._check_qk(query, key)
        self._check("value", value, self.vdim, b)
        if key.shape[1] != value.shape[1]:
            raise ValueError(
                f"Expected key and value with the same number of frames; found key "
                f"{tuple(key.shape)} and value {tuple(value.shape)}."
            )
        if mode is None:
            mode = "soft" if self.training else self.eval_mode
        elif mode not in _MODES:
            raise ValueError(f"Expected mode in {_MODES} or None; found {mode!r}.")
        if not self.tunable:
            mode = "soft"
        u, t = query.shape[1], key.shape[1]
        q_len = check_lengths(
            query_lengths, "query_lengths", batch=b, max_len=u, device=query.device
        )
        k_len = check_lengths(key_lengths, "key_lengths", batch=b, max_len=t, device=query.device)
        h = self.num_heads
        # Padded rows go through a plain projection zeroed (see ``_zero_padded_rows``), only
        # where lengths were given; the fast projections below skip padded rows themselves.
        q_pad = None if query_lengths is None else q_len
        k_pad = None if key_lengths is None else k_len
        # With focus-rate selection one alignment attends over all heads' values, so the value
        # projection commutes with it: alpha @ (value W^T + b) = (alpha @ value) W^T +
        # rowsum(alpha) b. Projecting the (b, u, vdim) context instead of the (b, t, vdim)
        # values skips the largest matmul of the layer (t >> u), forward and backward.
        late_v = self.tunable and self.head_selection == "focus_rate" and self.vdim % h == 0
        value_z = None  # the value with padded rows zeroed, when projected here
        if late_v:
            v_in = value.view(b, t, h, self.vdim // h).transpose(1, 2)
        else:
            value_z = _zero_padded_rows(value, k_pad)
            v_in = self._split(self.v_proj, value_z)
        hint = None
        if late_v and torch.is_grad_enabled() and key.dim() == 3:
            # Only the selected head's key block gets gradient: a block-sparse backward, told
            # the selected heads once the forward has picked them.
            hint = _HeadHint()
            k_in = self._split_head_block(
                self.k_proj,
                key,
                hint,
                k_len if FAST_KEY_ROWS else k_pad,
                not FAST_KEY_ROWS,  # False: padded rows zeroed, one product over every frame
                KEY_GRAD_SINK if FAST_KEY_GRAD else None,
            )
        else:
            key_z = value_z if key is value and value_z is not None else None
            k_in = self._split(
                self.k_proj, _zero_padded_rows(key, k_pad) if key_z is None else key_z
            )
        hint_q = None
        if hint is not None and FAST_QUERY_GRAD and query.dim() == 3:
            # the same for the query: only the selected head's block gets gradient
            hint_q = _HeadHint()
            q_in = self._split_head_block(
                self.q_proj, query, hint_q, q_len, QUERY_ZEROED_ROWS, QUERY_GRAD_SINK
            )
        else:
            q_in = self._split(self.q_proj, _zero_padded_rows(query, q_pad))
        res = stepwise_monotonic_attention(
            q_in,
            k_in,
            v_in,
            query_lengths=q_len,
            key_lengths=k_len,
            stay_bias=self.stay_bias,
            noise_std=self.noise_std if self.training else 0.0,
            tunable=self.tunable,
            mode=mode,
            head_selection=self.head_selection,  # type: ignore[arg-type]
            mass=self.mass,  # type: ignore[arg-type]
            initial_alignment=initial_alignment,
            impl=self.impl,
            need_weights=need_weights,
        )
        if hint is not None:
            hint.head_index = res.head_index
        if hint_q is not None:
            hint_q.head_index = res.head_index
        context = res.context
        if late_v:
            row_mass = None
            if self.v_proj.bias is not None:
                row_mass = res.alignment.sum(-1, keepdim=True).to(context.dtype)
            if FAST_CHAINED_PROJ and b * u >= 2 * max(self.embed_dim, self.vdim):
                projected = _ChainedLinear.apply(
                    context,
                    row_mass,
                    self.v_proj.weight,
                    self.v_proj.bias,
                    self.out_proj.weight,
                    self.out_proj.bias,
                )
            else:
                context = F.linear(context, self.v_proj.weight)
                if row_mass is not None:
                    context = context + row_mass * self.v_proj.bias
                projected = self.out_proj(context)
        else:
            projected = self.out_proj(context)
        out = self._dropout(projected)
        if self.residual:  # padded query rows zeroed: no NaN into the LayerNorm's gradients
            out = _zero_padded_rows(query, q_pad) + out
        if self.norm is not None:
            out = self.norm(out)
        out = torch.where(lengths_to_valid_mask(q_len, u)[..., None], out, 0)
        return SMAOutput(
            out, res.alignment, res.attn_weights, res.focus_rate, res.head_index, res.p_choose
        )
