"""Attention with an additive bias over each item's valid region only (the "varlen" path).

Kernel of :func:`speechattn.functional.prior_attention` (``impl="varlen"``, reached through the
:mod:`speechattn.kernels` registry as op ``prior_attention``). For a ragged
batch, item ``b`` attends from its ``Lq[b]`` valid queries to its ``Lk[b]`` valid keys; padded
rows, padded keys and the bias outside the valid ``(Lq[b], Lk[b])`` block are never read, so
padding costs no arithmetic and its content (even NaN) cannot reach an output or a gradient.

Per item and group of heads, the explicit form is used::

    S = baddbmm(bias[b, :, :Lq, :Lk], q[b, :, :Lq], k[b, :, :Lk]^T, alpha=1/sqrt(d))
    P = softmax(S, -1)
    O[b, :, :Lq] = P @ v[b, :, :Lk]            (padded rows of O are 0)

and the backward is the softmax-attention gradient written out (a custom
:class:`torch.autograd.Function`, not autograd through the loop)::

    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - rowsum(dO * O)),
    dQ = dS K / sqrt(d),   dK = dS^T Q / sqrt(d),   dBias = dS (summed over broadcast heads)

with ``rowsum(dP * P) == rowsum(dO * O)``. ``P`` is saved from the forward when all of it fits in
:data:`SAVE_P_MAX_BYTES` (one GEMM fewer in the backward), else recomputed per block.

Why this is fast on CPU: every GEMM and the softmax run on one item's block of at most
``heads_per_block * Lq * Lk`` scores (a few hundred KiB, cache-resident), no
``(B, H, Tq, Tk)`` tensor is allocated (fresh large allocations cost page faults), and no work is
spent on padding. The fused SDPA kernel cannot skip padding and, on CPU with short query blocks,
runs below GEMM speed. On CUDA prefer the fused kernel (``impl="sdpa"``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["SAVE_P_MAX_BYTES", "SCORE_BLOCK_BYTES", "varlen_attention"]

#: Save the softmax weights for the backward when all of them fit in this many bytes.
SAVE_P_MAX_BYTES = 512 * 2**20
#: Heads of one item are processed together while their score block fits in this many bytes.
SCORE_BLOCK_BYTES = 2**20


def _head_blocks(h: int, a: int, c: int, itemsize: int) -> list[tuple[int, int]]:
    """Split ``h`` heads into near-equal groups whose ``(heads, a, c)`` scores fit the budget."""
    per_head = max(1, a * c * itemsize)
    n_blocks = min(h, -(-h * per_head // SCORE_BLOCK_BYTES))  # ceil, at most one head per block
    step = -(-h // max(1, n_blocks))
    return [(h0, min(h, h0 + step)) for h0 in range(0, h, step)]


def _heads(x: Tensor, h0: int, h1: int) -> Tensor:
    """Heads ``h0:h1`` of a ``(H, ...)`` view; a size-1 head axis broadcasts and is kept."""
    if x.shape[0] == 1 or (h0 == 0 and h1 == x.shape[0]):
        return x
    return x[h0:h1]


def _items(x: Tensor | None, b_n: int) -> list[Tensor] | list[None]:
    """Per-item views ``x[b]`` (a size-1 batch axis broadcasts); ``[None] * b_n`` for ``None``."""
    if x is None:
        return [None] * b_n
    parts = x.unbind(0)
    return list(parts) if len(parts) == b_n else [parts[0]] * b_n


def _probs(
    qb: Tensor, kb: Tensor, bb: Tensor | None, scale: float, future: Tensor | None
) -> Tensor:
    """softmax(q k^T * scale + bias) for one block ``(h, a, c)``; masked (future) keys get 0."""
    kt = kb.transpose(1, 2)
    if bb is None:
        s = torch.empty(qb.shape[0], qb.shape[1], kt.shape[2], dtype=qb.dtype, device=qb.device)
        torch.baddbmm(s, qb, kt, beta=0.0, alpha=scale, out=s)  # beta=0: s is not read
    else:
        s = torch.baddbmm(bb, qb, kt, alpha=scale)
    if future is not None:
        s.masked_fill_(future, -math.inf)  # key 0 is always allowed: no row is fully masked
    return torch.softmax(s, dim=-1)


class _VarlenAttention(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        bias: Tensor | None,
        lq: list[int],
        lk: list[int],
        causal: bool,
        grad_enabled: bool,
    ) -> Tensor:
        b_n, h_n, tq, d = query.shape
        tk = key.shape[2]
        scale = 1.0 / math.sqrt(d)
        item = query.element_size()
        need_grad = grad_enabled and any(ctx.needs_input_grad[:4])
        total_p = sum(h_n * a * c for a, c in zip(lq, lk)) * item
        save_p = need_grad and total_p <= SAVE_P_MAX_BYTES
        future = (
            torch.ones(tq, tk, dtype=torch.bool, device=query.device).triu_(1) if causal else None
        )
        out = query.new_empty(b_n, h_n, tq, value.shape[-1])
        probs: list[Tensor] = []
        blocks: list[list[tuple[int, int]]] = []  # per item; the backward reuses them
        items = zip(
            query.unbind(0), key.unbind(0), value.unbind(0), out.unbind(0), _items(bias, b_n)
        )
        for b, (qi, ki, vi, oi, bi) in enumerate(items):
            a, c = lq[b], lk[b]
            blocks.append(_head_blocks(h_n, a, c, item))
            if a == 0 or c == 0:
                oi.zero_()
                continue
            if a < tq:
                oi[:, a:].zero_()
            qi, ki, vi, oi = qi[:, :a], ki[:, :c], vi[:, :c], oi[:, :a]
            bi = None if bi is None else bi[:, :a, :c]
            fut = None if future is None else future[:a, :c]
            for h0, h1 in blocks[b]:
                bb = None if bi is None else _heads(bi, h0, h1)
                p = _probs(_heads(qi, h0, h1), _heads(ki, h0, h1), bb, scale, fut)
                torch.bmm(p, _heads(vi, h0, h1), out=_heads(oi, h0, h1))
                if save_p:
                    probs.append(p)
        if need_grad:
            ctx.save_for_backward(query, key, value, bias, out)
            ctx.probs = probs if save_p else None
            ctx.lq, ctx.lk, ctx.causal, ctx.scale, ctx.blocks = lq, lk, causal, scale, blocks
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        query, key, value, bias, out = ctx.saved_tensors
        lq, lk, scale = ctx.lq, ctx.lk, ctx.scale
        probs: list[Tensor] | None = ctx.probs
        ctx.probs = None
        b_n, tq, tk = query.shape[0], query.shape[2], key.shape[2]
        grad_out = grad_out.to(out.dtype)
        dq = torch.empty_like(query)
        dk = torch.empty_like(key)
        dv = torch.empty_like(value)
        need_db = bias is not None and ctx.needs_input_grad[3]
        db = torch.zeros_like(bias) if need_db else None
        future = (
            torch.ones(tq, tk, dtype=torch.bool, device=query.device).triu_(1)
            if ctx.causal
            else None
        )
        n = 0
        items = zip(
            query.unbind(0),
            key.unbind(0),
            value.unbind(0),
            out.unbind(0),
            grad_out.unbind(0),
            dq.unbind(0),
            dk.unbind(0),
            dv.unbind(0),
            _items(bias, b_n),
            _items(db, b_n),
        )
        for b, (qi, ki, vi, oi, gi, dqi, dki, dvi, bi, dbi) in enumerate(items):
            a, c = lq[b], lk[b]
            if a == 0 or c == 0:
                dqi.zero_()
                dki.zero_()
                dvi.zero_()
                continue
            if a < tq:
                dqi[:, a:].zero_()
            if c < tk:
                dki[:, c:].zero_()
                dvi[:, c:].zero_()
            qi, ki, vi, oi, gi = qi[:, :a], ki[:, :c], vi[:, :c], oi[:, :a], gi[:, :a]
            dqi, dki, dvi = dqi[:, :a], dki[:, :c], dvi[:, :c]
            bi = None if bi is None else bi[:, :a, :c]
            dbi = None if dbi is None else dbi[:, :a, :c]
            fut = None if future is None else future[:a, :c]
            for h0, h1 in ctx.blocks[b]:
                qb, kb, vb = _heads(qi, h0, h1), _heads(ki, h0, h1), _heads(vi, h0, h1)
                if probs is not None:
                    p = probs[n]
                    n += 1
                else:
                    bb = None if bi is None else _heads(bi, h0, h1)
                    p = _probs(qb, kb, bb, scale, fut)
                g = _heads(gi, h0, h1)
                torch.bmm(p.transpose(1, 2), g, out=_heads(dvi, h0, h1))
                ds = torch.bmm(g, vb.transpose(1, 2))  # dP
                delta = (g * _heads(oi, h0, h1)).sum(-1, keepdim=True)  # rowsum(dP * P)
                ds.sub_(delta).mul_(p)  # dS, the gradient of the logits (and of the bias)
                if dbi is not None:
                    tgt = _heads(dbi, h0, h1)
                    tgt.add_(ds.sum(0, keepdim=True) if tgt.shape[0] == 1 else ds)
                # dQ = dS K * scale, dK = dS^T Q * scale (beta=0: the outputs are not read)
                dqb, dkb = _heads(dqi, h0, h1), _heads(dki, h0, h1)
                torch.baddbmm(dqb, ds, kb, beta=0.0, alpha=scale, out=dqb)
                torch.baddbmm(dkb, ds.transpose(1, 2), qb, beta=0.0, alpha=scale, out=dkb)
        return dq, dk, dv, db, None, None, None, None


def varlen_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    bias: Tensor | None,
    query_lengths: list[int],
    key_lengths: list[int],
    *,
    causal: bool = False,
) -> Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v`` over each item's valid block; padded rows are 0.

    Inputs are validated by the caller (:func:`speechattn.functional.prior_attention`).

    Args:
        query: ``(B, H, Tq, D)`` float32 or float64 (any strides with a unit last stride).
        key: ``(B, H, Tk, D)``; value: ``(B, H, Tk, Dv)``; same dtype and device.
        bias: ``(B or 1, H or 1, Tq, Tk)`` additive logit bias of the same dtype, or ``None``.
            Only ``bias[b, :, :Lq[b], :Lk[b]]`` is read. Differentiable.
        query_lengths: ``B`` ints, ``0 <= Lq[b] <= Tq`` (host list: the loop needs them).
        key_lengths: ``B`` ints, ``0 <= Lk[b] <= Tk``.
        causal: also mask keys ``j > i`` (top-left aligned).

    Returns:
        ``(B, H, Tq, Dv)``; rows ``i >= Lq[b]`` and items with ``Lk[b] == 0`` are 0. Gradients
        w.r.t. padded positions of query, key, value and bias are 0.
    """
    out = _VarlenAttention.apply(
        query, key, value, bias, query_lengths, key_lengths, causal, torch.is_grad_enabled()
    )
    return out  # type: ignore[no-any-return]
