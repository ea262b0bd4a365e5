"""Multi-head attention that takes an alignment prior and lengths, on SDPA.

Shape legend: ``b`` batch, ``h`` heads, ``q`` query positions, ``k`` key positions,
``d`` model dim.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from speechattn.functional.masks import check_lengths, lengths_to_valid_mask
from speechattn.functional.priors import (
    BetaBinomialPrior,
    DiagonalPrior,
    _check_positive_int,
    prior_attention,
)

__all__ = ["AttentionOutput", "AttentionPrior", "PriorMultiheadAttention"]


@runtime_checkable
class AttentionPrior(Protocol):
    """Anything with a ``bias(...)`` method building an additive logit bias for given lengths.

    :class:`~speechattn.functional.priors.DiagonalPrior` and
    :class:`~speechattn.functional.priors.BetaBinomialPrior` implement it; so can your own prior.
    The bias must be ``(B or 1, H or 1, Tq, Tk)``.
    """

    def bias(
        self,
        query_lengths: Tensor | None,
        key_lengths: Tensor | None,
        *,
        max_query_len: int,
        max_key_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor: ...


Prior = AttentionPrior | Tensor | None


class AttentionOutput(NamedTuple):
    """Output of :class:`PriorMultiheadAttention`.

    Attributes:
        output: ``(B, Tq, embed_dim)``; padded query rows are exactly 0.
        attn_weights: ``(B, H, Tq, Tk)`` float32 softmax weights when ``need_weights=True``
            (padded keys and padded rows exactly 0), else ``None``.
    """

    output: Tensor
    attn_weights: Tensor | None


def _check_dropout(p: float) -> float:
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"Expected 0 <= dropout < 1; found dropout = {p}.")
    return float(p)


def _check_prior(prior: object, name: str = "prior") -> None:
    if prior is None or isinstance(prior, Tensor) or isinstance(prior, AttentionPrior):
        return
    raise TypeError(
        f"Expected {name} to be None, a DiagonalPrior/BetaBinomialPrior (anything with a "
        f".bias(query_lengths, key_lengths, *, max_query_len, max_key_len, dtype, device) "
        f"method), or a float bias tensor (B or 1, H or 1, Tq, Tk); found {type(prior).__name__}."
    )


def _zero_padded_rows(x: Tensor, lengths: Tensor) -> Tensor:
    """``x`` ``(B, T, F)`` with rows ``t >= lengths[b]`` replaced by 0."""
    return torch.where(lengths_to_valid_mask(lengths, x.shape[1])[..., None], x, 0)


class PriorMultiheadAttention(nn.Module):
    """Multi-head attention with an additive alignment prior, lengths, and optional weights.

    ``softmax(q k^T / sqrt(d_head) + prior) v`` per head, over each item's valid keys, on
    ``F.scaled_dot_product_attention`` (see :func:`speechattn.functional.prior_attention`).
    ``need_weights=True`` computes the weights explicitly in float32 and returns them (the
    output is the same). Padded query rows output 0; padding content (even NaN or inf)
    never changes an output or a gradient.

    Args:
        embed_dim: model dim ``d`` (queries and output).
        num_heads: number of heads; must divide ``embed_dim``.
        kdim: key feature size (default ``embed_dim``).
        vdim: value feature size (default ``embed_dim``).
        dropout: dropout on the attention weights during training.
        bias: whether the projections have a bias.
        prior: default prior used when ``forward`` gets none: a
            :class:`~speechattn.functional.priors.DiagonalPrior`,
            :class:`~speechattn.functional.priors.BetaBinomialPrior` (queries = mel frames,
            keys = tokens), any :class:`AttentionPrior`, or ``None``.

    Shapes:
        query ``(B, Tq, embed_dim)``, key ``(B, Tk, kdim)``, value ``(B, Tk, vdim)``;
        lengths int64 ``(B,)``; output ``(B, Tq, embed_dim)``.

    Example::

        mha = PriorMultiheadAttention(embed_dim=256, num_heads=4,
                                      prior=DiagonalPrior(kind="gaussian", sigma=0.2))
        out, weights = mha(mel, text, text, query_lengths=mel_lengths,
                           key_lengths=text_lengths, need_weights=True)
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        num_heads: int,
        kdim: int | None = None,
        vdim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        prior: AttentionPrior | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int(embed_dim, "embed_dim")
        _check_positive_int(num_heads, "num_heads")
        if kdim is not None:
            _check_positive_int(kdim, "kdim")
        if vdim is not None:
            _check_positive_int(vdim, "vdim")
        if embed_dim % num_heads:
            raise ValueError(
                f"Expected embed_dim divisible by num_heads; found embed_dim={embed_dim}, "
                f"num_heads={num_heads}. Pick num_heads among the divisors of embed_dim."
            )
        dropout = _check_dropout(dropout)
        if isinstance(prior, Tensor):
            raise TypeError(
                "Expected prior in the constructor to be a prior config (DiagonalPrior, "
                "BetaBinomialPrior) or None; found a tensor. Pass bias tensors to forward(prior=...)."
            )
        _check_prior(prior)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.dropout = dropout
        self.prior = prior
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, prior={self.prior!r}"

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        query_lengths: Tensor | None = None,
        key_lengths: Tensor | None = None,
        prior: Prior = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> AttentionOutput:
        """Attend ``query`` to ``key``/``value`` (self-attention when both are ``None``).

        Args:
            query: ``(B, Tq, embed_dim)``.
            key: ``(B, Tk, kdim)``; ``None`` for self-attention (then ``key_lengths`` defaults
                to ``query_lengths``).
            value: ``(B, Tk, vdim)``; ``None`` means ``key``.
            query_lengths: int64 ``(B,)`` valid queries (``None``: all).
            key_lengths: int64 ``(B,)`` valid keys (``None``: all); 0 allowed (those rows
                output 0).
            prior: overrides the module's prior for this call: a prior config, or a float bias
                tensor ``(B or 1, H or 1, Tq, Tk)`` (e.g. from
                :func:`~speechattn.functional.diagonal_bias`).
            causal: mask keys ``j > i`` (decoder self-attention).
            need_weights: also return ``(B, H, Tq, Tk)`` weights (explicit, slower path).

        Returns:
            :class:`AttentionOutput` ``(output, attn_weights)``.
        """
        if key is None:
            key = query
            if key_lengths is None:
                key_lengths = query_lengths
        if value is None:
            value = key
        for t, name, feat in (
            (query, "query", self.embed_dim),
            (key, "key", self.kdim),
            (value, "value", self.vdim),
        ):
            if not isinstance(t, Tensor):
                raise TypeError(f"Expected {name} to be a tensor; found {type(t).__name__}.")
            if t.dim() != 3 or t.shape[-1] != feat:
                raise ValueError(
                    f"Expected {name} (B, T, {feat}); found {tuple(t.shape)}. The public layout "
                    "is (batch, time, features)."
                )
            w = self.q_proj.weight
            if t.dtype != w.dtype and not torch.is_autocast_enabled(t.device.type):
                raise TypeError(
                    f"Expected {name} of dtype {w.dtype} (the module's parameter dtype); found "
                    f"{t.dtype}. Cast the input or the module (module.to({t.dtype}))."
                )
        b, tq, _ = query.shape
        tk = key.shape[1]
        if key.shape[0] != b or value.shape[:2] != key.shape[:2]:
            raise ValueError(
                f"Expected key and value (B={b}, Tk, ·) with equal Tk; found key "
                f"{tuple(key.shape)}, value {tuple(value.shape)}."
            )
        dev = query.device
        lq = check_lengths(
            query_lengths, "query_lengths", batch=b, max_len=tq, device=dev, allow_zero=True
        )
        lk = check_lengths(
            key_lengths, "key_lengths", batch=b, max_len=tk, device=dev, allow_zero=True
        )
        use = self.prior if prior is None else prior
        _check_prior(use)
        bias_t: Tensor | None
        if use is None or isinstance(use, Tensor):
            bias_t = use
        else:
            bias_t = use.bias(
                lq, lk, max_query_len=tq, max_key_len=tk, dtype=query.dtype, device=dev
            )

        if torch.is_grad_enabled():
            # Padded rows zeroed before the projections (where lengths were given): their
            # output rows are masked, but the weights' gradients ``g^T x`` would still meet the
            # padded content (0 * NaN is NaN). Without autograd the projections are row by row.
            kv_same, qk_same = key is value, key is query and key_lengths is query_lengths
            if query_lengths is not None:
                query = _zero_padded_rows(query, lq)
            if key_lengths is not None:
                key = query if qk_same else _zero_padded_rows(key, lk)
                value = key if kv_same else _zero_padded_rows(value, lk)
        h, dh = self.num_heads, self.head_dim
        q = self.q_proj(query).view(b, tq, h, dh).transpose(1, 2)
        k = self.k_proj(key).view(b, tk, h, dh).transpose(1, 2)
        v = self.v_proj(value).view(b, tk, h, dh).transpose(1, 2)
        res = prior_attention(
            q,
            k,
            v,
            bias=bias_t,
            query_lengths=lq,
            key_lengths=lk,
            causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
            need_weights=need_weights,
            bias_masked=isinstance(use, (DiagonalPrior, BetaBinomialPrior)),
        )
        out = self.out_proj(res.output.transpose(1, 2).reshape(b, tq, self.embed_dim))
        row_valid = lengths_to_valid_mask(lq, tq) & (lk > 0)[:, None]
        out = torch.where(row_valid[:, :, None], out, torch.zeros((), dtype=out.dtype, device=dev))
        return AttentionOutput(out, res.attn_weights)
