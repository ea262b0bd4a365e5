"""Tiled and fused autograd engines for attentive statistics pooling (imported on first use).

The pure-torch specification is :mod:`speechattn.functional.pooling` (``impl="torch"``:
``_pool_traceable`` and ``_traceable_forward``, plain out-of-place ops under autograd). The
engines here compute the same numbers with far less memory traffic:

* :func:`attentive_pool` (``impl="tiled"`` / ``"numba"``): the whole attention MLP, the masked
  softmax and the attentive statistics of every head and query, tiled over the batch, written
  into reused scratch buffers, with a custom backward; with ``"numba"`` the statistics and their
  gradients run in :mod:`speechattn.kernels._numba_pool`.
* :func:`head_attentive_stats` (``impl="fused"``): the last attention layer, softmax and
  statistics query by query with a recomputing backward (ASP).

Both backwards are first-order engines; a double backward (``create_graph=True``) re-runs the
pure-torch specification on the saved inputs and differentiates that instead, so higher-order
gradients are exact (and as slow as the spec).

Shape legend: ``b`` batch (a tile's items), ``h`` heads, ``q`` queries, ``c`` channels per head,
``s`` logits per head (1 or c), ``t`` frames.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from speechattn.functional.pooling import _pool_traceable, _traceable_forward

__all__ = ["attentive_pool", "head_attentive_stats"]

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
        if torch.is_grad_enabled():  # create_graph=True: differentiate the spec instead
            grads = _spec_grads(
                lambda: _traceable_forward(hidden, weight, bias, x, ctx.valid_mask, ctx.shared),
                [hidden, weight, bias, x],
                ctx.needs_input_grad[:4],
                (g_mean, g_var),
            )
            return (*grads, None, None)
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
        if buf is None or buf.numel() < numel:
            buf = self.ref.new_empty(max(numel, numel * self.tile // b))
            self.bufs[name] = buf
        return buf[:numel].view(*shape[:-1], b, shape[-1])


class _Tile(NamedTuple):
    """One batch tile: items ``order[start:stop]``, trimmed to its longest item's frames."""

    start: int  # position in the sorted order
    stop: int
    frames: int  # frames kept for this tile (T, or the longest valid length in it)
    items: list[int]  # original batch indices
    lengths: list[int] | None  # their valid lengths (prefix masks), None without / other masks
    offset: int  # columns (items x frames) of the tiles before it, for the kept buffers


def _plan(valid_mask: Tensor | None, batch: int, frames: int, tile: int) -> list[_Tile]:
    """Tiles over the batch. With prefix masks the items are sorted by length (longest first)
    and each tile keeps only ``max(lengths in tile)`` frames, so padded frames are mostly never
    computed on (the attention MLP, softmax and statistics of padding are skipped, not masked)."""
    lengths = _prefix_lengths(valid_mask)
    order = list(range(batch))
    if lengths is not None:
        order.sort(key=lambda i: -lengths[i])
    tiles: list[_Tile] = []
    offset = 0
    for b0 in range(0, batch, tile):
        b1 = min(batch, b0 + tile)
        items = order[b0:b1]
        lens = None if lengths is None else [lengths[i] for i in items]
        tt = frames if lens is None else max(lens)
        tiles.append(_Tile(b0, b1, tt, items, lens, offset))
        offset += (b1 - b0) * tt
    return tiles


def _columns(tiles: Sequence[_Tile]) -> int:
    return sum((t.stop - t.start) * t.frames for t in tiles)


def _kept_block(data: Tensor, shape: Sequence[int], t: _Tile) -> Tensor:
    """The tile's ``(*shape, b, frames)`` block of a kept buffer (blocks stored back to back)."""
    per_col = 1
    for d in shape:
        per_col *= d
    b = t.stop - t.start
    chunk = data[t.offset * per_col : (t.offset + b * t.frames) * per_col]
    return chunk.view(*shape, b, t.frames)


def _identity(tiles: Sequence[_Tile]) -> bool:
    return all(t.items == list(range(t.start, t.stop)) for t in tiles)


def _rows(v: Tensor, t: _Tile) -> Tensor:
    """Rows of a ``(B, ...)`` tensor for the tile's items (a view when they are contiguous)."""
    if t.items == list(range(t.start, t.stop)):
        return v[t.start : t.stop]
    return v[torch.tensor(t.items, device=v.device)]


def _prefix_lengths(valid_mask: Tensor | None) -> list[int] | None:
    """Per-item valid counts when every row of the mask is a prefix, else None."""
    if valid_mask is None:
        return None
    batch, frames = valid_mask.shape[0], valid_mask.shape[-1]
    m = valid_mask.reshape(batch, frames)
    lengths = m.sum(-1)
    prefix = torch.arange(frames, device=m.device) < lengths.unsqueeze(-1)
    return [int(v) for v in lengths.tolist()] if torch.equal(prefix, m) else None


def _mask_tile_scores(scores: Tensor, valid_mask: Tensor | None, t: _Tile) -> None:
    """Set the logits ``(H, Q, S, b, frames)`` of padded frames to finfo.min (in place), so
    exp() gives exact zeros there. With prefix masks only the ragged items' tails are touched."""
    if valid_mask is None:
        return
    neg = torch.finfo(scores.dtype).min
    if t.lengths is None:  # not prefix masks: the tile is rows start:stop, all T frames
        keep = valid_mask[t.start : t.stop].reshape(t.stop - t.start, -1)
        scores.masked_fill_(~keep, neg)
        return
    for j, n in enumerate(t.lengths):
        if n < t.frames:
            scores[..., j, n:].fill_(neg)


def _tile_x(xv: Tensor, t: _Tile, valid_mask: Tensor | None, scratch: _Scratch) -> Tensor:
    """The folded ``(H, c, b, frames)`` tile of x with padded frames zeroed (a scratch buffer)."""
    _, heads, c, frames = xv.shape
    b = t.stop - t.start
    out = scratch.get("x", (heads, c, t.frames), b)
    if t.lengths is None:
        xt = xv[t.start : t.stop].permute(1, 2, 0, 3)
        if valid_mask is None:
            return out.copy_(xt)
        rows_keep = valid_mask[t.start : t.stop].reshape(-1, frames)  # not prefix masks
        return torch.where(rows_keep, xt, xt.new_zeros(()), out=out)
    # one gather and (when the tile is ragged) one masking op: few parallel regions per tile
    rows = _rows(xv[..., : t.frames], t)  # (b, H, c, frames)
    out.copy_(rows.permute(1, 2, 0, 3))
    for j, n in enumerate(t.lengths):  # zero the ragged items' tails only
        if n < t.frames:
            out[:, :, j, n:].zero_()
    return out


def _scatter_rows(dst: Tensor, src: Tensor, t: _Tile) -> None:
    """Write a tile's ``(H, c, b, frames)`` gradient into the items' rows of ``dst`` (B, H, c, T)."""
    frames = dst.shape[-1]
    if t.lengths is None:
        dst[t.start : t.stop].copy_(src.permute(2, 0, 1, 3))
        return
    # src is zero on the tile's padded frames; frames past the tile are padding of every item
    idx = torch.tensor(t.items, device=dst.device)
    dst[..., : t.frames].index_copy_(0, idx, src.permute(2, 0, 1, 3))
    if t.frames < frames:
        dst[..., t.frames :].index_fill_(0, idx, 0.0)


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
        # The last layer's bias is constant along time, and the softmax over time is invariant to
        # it: skipped (its gradient is exactly 0; the spec's is 0 up to rounding).
        if bi is not None and i < n - 1:
            dest.add_(bi.view(heads, queries, -1, 1, 1))
        if i == 0 and item_bias is not None:
            dest.add_(item_bias.view(b, heads, queries, -1).permute(1, 2, 3, 0).unsqueeze(-1))
        if i < n - 1:
            dest.tanh_()


def _tile_alpha(scores: Tensor, valid_mask: Tensor | None, t: _Tile, out: Tensor) -> Tensor:
    """Softmax over time of one folded tile's logits (modified in place) into ``out``.

    Args:
        scores: ``(H, Q, S, b, frames)`` logits.
        valid_mask: the call's bool ``(B, 1, T)`` keep-mask or None.
        t: the tile.
        out: ``(H, Q, S, b, frames)`` destination.
    """
    _mask_tile_scores(scores, valid_mask, t)
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
    tiles: Sequence[_Tile] | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, list[Tensor] | None]:
    """Tiled forward; returns mean and var in tile order (see :func:`_plan`) and (per
    ``recompute``) the kept weights/activations."""
    heads, queries, s, _ = weights[-1].shape
    batch, feat, frames = x.shape
    c = feat // heads
    ws = [w.to(x.dtype) for w in weights]
    bs = [None if b is None else b.to(x.dtype) for b in biases]
    if tiles is None:
        tiles = _plan(valid_mask, batch, frames, _pool_tile(x, weights))
    cols = _columns(tiles)
    xv = x.view(batch, heads, c, frames)
    mean = x.new_empty(batch, heads, queries, c)
    var = x.new_empty(batch, heads, queries, c)
    keep_alpha = x.new_empty(cols * heads * queries * s) if recompute == "none" else None
    keep_hidden = (
        [x.new_empty(cols * heads * queries * w.shape[2]) for w in weights[:-1]]
        if recompute in ("none", "softmax")
        else None
    )
    scratch = _Scratch(x, max(t.stop - t.start for t in tiles))
    for t in tiles:
        b, tt = t.stop - t.start, t.frames
        sl = slice(t.start, t.stop)
        hid = [(heads, queries, w.shape[2], tt) for w in weights[:-1]]
        a_shape = (heads, queries, s, tt)
        xt = _tile_x(xv, t, valid_mask, scratch)
        if keep_hidden is not None:
            hidden = [_kept_block(h, hs[:-1], t) for h, hs in zip(keep_hidden, hid)]
        else:
            hidden = [scratch.get(f"h{i}", hs, b) for i, hs in enumerate(hid)]
        # the logits share the statistics buffer when S = c (dead before the statistics start)
        scores = scratch.get("u" if s == c else "scores", a_shape, b)
        ib = None if item_bias is None else _rows(item_bias, t).to(x.dtype)
        _tile_mlp(xt, ws, bs, ib, hidden, scores)
        if keep_alpha is not None:
            alpha = _kept_block(keep_alpha, a_shape[:-1], t)
        else:
            alpha = scratch.get("alpha", a_shape, b)
        _tile_alpha(scores, valid_mask, t, alpha)
        buf = scratch.get("u", (heads, queries, c, tt), b)
        _tile_stats(alpha, xt, buf, _folded(mean, sl), _folded(var, sl), kernels)
    return mean, var, keep_alpha, keep_hidden


def _order(tiles: Sequence[_Tile], device: torch.device) -> Tensor | None:
    """Original index of each tile-ordered item, or None when the order is the identity."""
    if _identity(tiles):
        return None
    return torch.tensor([i for t in tiles for i in t.items], device=device)


def _unsort(v: Tensor, order: Tensor | None) -> Tensor:
    if order is None:
        return v
    return torch.empty_like(v).index_copy_(0, order, v)


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
        ctx.tiles = _plan(valid_mask, x.shape[0], x.shape[-1], _pool_tile(x, weights))  # type: ignore[arg-type]
        mean, var, alpha, hidden = _pool_forward(
            x,
            valid_mask,
            weights,  # type: ignore[arg-type]
            biases,
            item_bias,
            recompute,
            kernels,
            ctx.tiles,
        )
        order = _order(ctx.tiles, x.device)
        hid: list[Tensor | None] = list(hidden) if hidden is not None else [None] * (n_layers - 1)
        ctx.save_for_backward(x, item_bias, mean, var, alpha, order, *hid, *params)
        ctx.valid_mask = valid_mask
        ctx.n_layers = n_layers
        ctx.kernels = kernels
        return _unsort(mean, order), _unsort(var, order)

    @staticmethod
    def backward(ctx, g_mean: Tensor, g_var: Tensor):  # type: ignore[override]
        n = ctx.n_layers
        x, item_bias, mean, var, kept_alpha, order, *rest = ctx.saved_tensors
        kept_hidden: list[Tensor | None] = list(rest[: n - 1])
        weights: list[Tensor] = list(rest[n - 1 : 2 * n - 1])
        biases: list[Tensor | None] = list(rest[2 * n - 1 :])
        if torch.is_grad_enabled():  # create_graph=True: differentiate the spec instead
            needs = ctx.needs_input_grad
            gx, gib, *gp = _spec_grads(
                lambda: _pool_traceable(x, ctx.valid_mask, weights, biases, item_bias),
                [x, item_bias, *weights, *biases],
                (needs[0], needs[2], *needs[6:]),
                (g_mean, g_var),
            )
            return (gx, None, gib, None, None, None, *gp)
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
        xv = x.view(batch, heads, c, frames)
        grad_x = torch.empty_like(x) if need_x else None
        grad_xv = None if grad_x is None else grad_x.view(batch, heads, c, frames)
        grad_ib = torch.zeros_like(item_bias, dtype=dt) if need_ib else None
        grad_w = [torch.zeros_like(w) for w in ws]
        grad_b = [None if b is None else torch.zeros_like(b) for b in bs]
        gm_all = g_mean.to(dt)
        gv_all = g_var.to(dt)
        if order is not None:  # into tile order, as mean and var are kept
            gm_all = gm_all.index_select(0, order)
            gv_all = gv_all.index_select(0, order)
        gvv_all = gv_all * var
        tiles: list[_Tile] = ctx.tiles
        scratch = _Scratch(x, max(t.stop - t.start for t in tiles))
        have_hidden = n == 1 or kept_hidden[0] is not None
        for tl in tiles:
            b, tt = tl.stop - tl.start, tl.frames
            sl = slice(tl.start, tl.stop)
            hid = [(heads, queries, w.shape[2], tt) for w in weights[:-1]]
            a_shape = (heads, queries, s, tt)
            u_shape = (heads, queries, c, tt)
            xt = _tile_x(xv, tl, ctx.valid_mask, scratch)  # (H, c, b, tt)
            u = scratch.get("u", u_shape, b)
            t = scratch.get("t", u_shape, b)
            if have_hidden:
                hidden = [
                    _kept_block(h, hs[:-1], tl) for h, hs in zip(kept_hidden, hid) if h is not None
                ]
            else:
                hidden = [scratch.get(f"h{i}", hs, b) for i, hs in enumerate(hid)]
            if kept_alpha is not None:
                a = _kept_block(kept_alpha, a_shape[:-1], tl)
            else:  # recompute the logits (and the activations unless kept) into scratch
                scores = u if s == c else scratch.get("scores", a_shape, b)
                ib = None if item_bias is None else _rows(item_bias, tl).to(dt)
                _tile_mlp(xt, ws, bs, ib, hidden, scores, start=n - 1 if have_hidden else 0)
                a = _tile_alpha(
                    scores,
                    ctx.valid_mask,
                    tl,
                    scratch.get("alpha", a_shape, b),
                )
            mu = _folded(mean, sl).unsqueeze(-1)  # (H, Q, c, b, 1)
            gm = _folded(gm_all, sl).unsqueeze(-1)
            gv = _folded(gv_all, sl).unsqueeze(-1)
            gvv = _folded(gvv_all, sl).unsqueeze(-1)
            # dL/dx (statistics) = sum_q a (g_mean + 2 g_var u), u = x - mean;
            # dL/ds = a (u (g_mean + g_var u) - g_var var), summed over c when S = 1
            gx_buf = scratch.get("gx", (heads, c, tt), b)
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
                if bi is not None and i < n - 1:  # the last bias gets 0 (see _tile_mlp)
                    bi += g.sum((3, 4))
                gcols = g.reshape(heads * queries, -1, b * tt)
                if i == 0:
                    if grad_ib is not None:
                        gib = g.sum(-1).permute(3, 0, 1, 2).reshape(b, -1)
                        grad_ib.index_add_(0, torch.tensor(tl.items, device=gib.device), gib)
                    g0 = g.view(heads, queries * o0, b * tt)
                    xcols = xt.view(heads, c, b * tt)
                    grad_w[0].view(heads, queries * o0, c).baddbmm_(g0, xcols.transpose(1, 2))
                    if gxt is not None:
                        gxt.view(heads, c, b * tt).baddbmm_(w0t, g0)
                else:
                    h = hidden[i - 1]  # input of layer i: (H, Q, k, b, tt)
                    k = h.shape[2]
                    hcols = h.view(heads * queries, k, b * tt)
                    grad_w[i].view(heads * queries, -1, k).baddbmm_(gcols, hcols.transpose(1, 2))
                    gh = scratch.get(f"g{i}", hid[i - 1], b)
                    torch.bmm(wts[i], gcols, out=gh.view(heads * queries, k, b * tt))
                    # through tanh: g = gh (1 - h^2), one fused pass
                    g = torch.ops.aten.tanh_backward.grad_input(gh, h, grad_input=gh)
            if grad_xv is not None and gxt is not None:
                _scatter_rows(grad_xv, gxt, tl)
        grads_w = [gw.to(w.dtype) for gw, w in zip(grad_w, weights)]
        grads_b = [
            None if gb is None or b is None else gb.to(b.dtype) for gb, b in zip(grad_b, biases)
        ]
        if grad_ib is not None and item_bias is not None:
            grad_ib = grad_ib.to(item_bias.dtype)
        return (grad_x, None, grad_ib, None, None, None, *grads_w, *grads_b)


def _spec_grads(
    spec: Any,
    inputs: Sequence[Tensor | None],
    needs: Sequence[bool],
    grad_outputs: tuple[Tensor, Tensor],
) -> list[Tensor | None]:
    """Gradients of ``spec()`` (the pure-torch twin) w.r.t. ``inputs``, as a differentiable graph."""
    with torch.enable_grad():
        outs = spec()
    wanted = [i for i, (t, need) in enumerate(zip(inputs, needs)) if need and t is not None]
    result: list[Tensor | None] = [None] * len(inputs)
    if not wanted:
        return result
    grads = torch.autograd.grad(
        outs,
        [t for i in wanted if (t := inputs[i]) is not None],
        grad_outputs,
        create_graph=True,
        allow_unused=True,
    )
    for i, g in zip(wanted, grads):
        t = inputs[i]
        result[i] = torch.zeros_like(t) if g is None and t is not None else g
    return result


def attentive_pool(
    x: Tensor,
    valid_mask: Tensor | None,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    item_bias: Tensor | None,
    *,
    recompute: str,
    numba_stats: bool,
) -> tuple[Tensor, Tensor]:
    """Tiled attentive mean and variance (see :func:`speechattn.functional.attentive_pool_mean_std`).

    Args:
        x: ``(B, H*c, T)`` float features (padded frames may hold anything).
        valid_mask: bool ``(B, 1, T)`` or None.
        weights, biases: per layer ``(H, Q, out, in)`` / ``(H, Q, out)`` or None.
        item_bias: ``(B, H*Q*o_0)`` or None.
        recompute: ``"auto" | "none" | "softmax" | "all"`` (what the backward recomputes).
        numba_stats: run the statistics and their gradients in numba (CPU float32/float64).

    Returns:
        ``(mean, var)``, each ``(B, H, Q, c)`` in x's dtype; differentiable.
    """
    kernels: Any = None
    if numba_stats:
        from speechattn.kernels import _numba_pool

        kernels = _numba_pool
    n = len(weights)
    if torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, item_bias, *weights, *biases)
    ):
        heads, queries, s, _ = weights[-1].shape
        per_tq = x.shape[0] * heads * queries * x.shape[-1] * x.element_size()
        mode = _resolve_recompute(
            recompute, per_tq * s, per_tq * sum(w.shape[2] for w in weights[:-1])
        )
        out = _AttentivePool.apply(x, valid_mask, item_bias, n, mode, kernels, *weights, *biases)
        return out[0], out[1]
    tiles = _plan(valid_mask, x.shape[0], x.shape[-1], _pool_tile(x, weights))
    mean, var = _pool_forward(
        x, valid_mask, weights, biases, item_bias, kernels=kernels, tiles=tiles
    )[:2]
    order = _order(tiles, x.device)
    return _unsort(mean, order), _unsort(var, order)


def head_attentive_stats(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    x: Tensor,
    valid_mask: Tensor | None,
    shared: bool,
) -> tuple[Tensor, Tensor]:
    """Fused last layer + softmax + statistics (see
    :func:`speechattn.functional.head_attentive_statistics`); ``(mean, var)`` ``(B, H, Q, c)``."""
    if torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias, x)
    ):
        out = _FusedAttentiveStats.apply(hidden, weight, bias, x, valid_mask, shared)
        return out[0], out[1]
    return _fused_forward(hidden, weight, bias, x, valid_mask, shared)
