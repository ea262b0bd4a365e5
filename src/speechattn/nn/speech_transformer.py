"""Speech-Transformer building blocks (Dong, Xu & Xu, ICASSP 2018) with a diagonal attention prior.

* :class:`Conv2dSubsampling` — two 3x3 stride-2 convolutions over (time, frequency), ReLU, then a
  linear projection to ``embed_dim``; time is subsampled 4x and the lengths follow.
* :class:`SpeechTransformerEncoderLayer` — self-attention (with the prior) + feed-forward.
* :class:`SpeechTransformerDecoderLayer` — causal self-attention (*no* prior: the paper's
  exception, "except the first multi-head attention in the decoder"), encoder-decoder attention
  (with the prior; use ``distance="relative"`` so the prior follows each item's diagonal), and
  feed-forward.
* :class:`SpeechTransformerEncoder` — front end + sinusoidal positions + a stack of encoder layers.
* :class:`SpeechTransformerDecoder` — token embedding + positions + decoder layers + output layer.

The paper encourages attention to near positions "by adding a bigger penalty to the attention
weights of more distant position pairs"; here that is an additive logit bias
(:func:`speechattn.functional.diagonal_bias`), not the post-softmax penalty of the tfsr code. The
paper gives no penalty values: pass e.g. ``DiagonalPrior(kind="linear", distance="absolute",
scale=0.1)`` for the encoder and ``DiagonalPrior(kind="linear", scale=2.0)`` (relative) for the
decoder's cross-attention; ``prior=None`` disables it. The paper's optional 2-D attention module is
not implemented.

Shape legend: ``b`` batch, ``t`` frames, ``f`` mel bins, ``u`` tokens, ``d`` model dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechattn.functional.masks import check_lengths, lengths_to_valid_mask
from speechattn.functional.priors import DiagonalPrior, _check_positive_int
from speechattn.nn.attention import AttentionPrior, PriorMultiheadAttention, _check_dropout

__all__ = [
    "Conv2dSubsampling",
    "DecoderLayerOutput",
    "EncoderLayerOutput",
    "EncoderOutput",
    "SpeechTransformerDecoder",
    "SpeechTransformerDecoderLayer",
    "SpeechTransformerEncoder",
    "SpeechTransformerEncoderLayer",
    "sinusoidal_positions",
]


def _zero_pad(x: Tensor, lengths: Tensor) -> Tensor:
    """Zero frames ``t >= lengths[b]`` of ``(B, T, ...)`` (a ``where``: NaN padding is removed)."""
    valid = lengths_to_valid_mask(lengths, x.shape[1]).view(
        x.shape[0], x.shape[1], *([1] * (x.dim() - 2))
    )
    return torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))


def sinusoidal_positions(length: int, dim: int, *, device: torch.device | None = None) -> Tensor:
    """Sinusoidal position table ``(length, dim)`` (Vaswani et al. 2017), float32."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    half = torch.arange(0, dim, 2, dtype=torch.float32, device=device)
    angle = pos * torch.exp(-math.log(10000.0) * half / dim)
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return table


class Conv2dSubsampling(nn.Module):
    """Two 3x3 stride-2 conv layers over (time, frequency) + ReLU, then ``Linear`` to ``embed_dim``.

    Output length ``T' = ((T - 3) // 2 + 1 - 3) // 2 + 1`` (4x subsampling, no padding), so every
    valid output frame sees only valid input frames; padded frames are zeroed before each conv,
    hence padding content never changes an output. Items shorter than 7 frames get length 0.

    Args:
        in_features: mel bins ``F`` (``>= 7``).
        embed_dim: output dim ``d``.
        channels: conv channels (the paper uses 64).

    Shapes:
        ``x (B, T, F)``, ``lengths (B,)`` -> ``(B, T', d)``, ``(B,)``; needs ``T >= 7``.
    """

    def __init__(self, *, in_features: int, embed_dim: int, channels: int = 64) -> None:
        super().__init__()
        _check_positive_int(in_features, "in_features")
        _check_positive_int(embed_dim, "embed_dim")
        _check_positive_int(channels, "channels")
        if in_features < 7:
            raise ValueError(
                f"Expected in_features >= 7 (two 3x3 stride-2 convs); found {in_features}."
            )
        self.in_features = in_features
        self.embed_dim = embed_dim
        self.conv1 = nn.Conv2d(1, channels, 3, stride=2)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2)
        f_out = self.output_length(self.output_length(in_features, 1), 1)
        self.proj = nn.Linear(channels * f_out, embed_dim)

    @staticmethod
    def output_length(length: int, num_convs: int = 2) -> int:
        """Length after ``num_convs`` 3x3 stride-2 convs: ``(L - 3) // 2 + 1`` each (>= 0)."""
        for _ in range(num_convs):
            length = max(0, (length - 3) // 2 + 1)
        return length

    @staticmethod
    def output_lengths(lengths: Tensor, num_convs: int = 2) -> Tensor:
        """Tensor version of :meth:`output_length` for int64 ``(B,)`` lengths."""
        for _ in range(num_convs):
            lengths = torch.div(lengths - 3, 2, rounding_mode="floor").add(1).clamp_min(0)
        return lengths

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Subsample ``x (B, T, F)``; return ``(y (B, T', d), lengths' (B,))``."""
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Expected x (B, T, F={self.in_features}); found "
                f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}."
            )
        b, t, _ = x.shape
        if t < 7:
            raise ValueError(
                f"Expected at least 7 frames (T' = ((T-3)//2+1-3)//2+1 >= 1); found T = {t}."
            )
        lengths = check_lengths(
            lengths, "lengths", batch=b, max_len=t, device=x.device, allow_zero=True
        )
        h = _zero_pad(x, lengths).unsqueeze(1)  # (B, 1, T, F)
        h = F.relu(self.conv1(h))
        l1 = self.output_lengths(lengths, 1)
        h = _zero_pad(h.transpose(1, 2), l1).transpose(1, 2)
        h = F.relu(self.conv2(h))  # (B, C, T', F')
        l2 = self.output_lengths(l1, 1)
        h = h.permute(0, 2, 1, 3).flatten(2)  # (B, T', C * F')
        return _zero_pad(self.proj(h), l2), l2


class EncoderLayerOutput(NamedTuple):
    """``output (B, T, d)`` (padded frames 0) and ``attn_weights (B, H, T, T)`` or ``None``."""

    output: Tensor
    attn_weights: Tensor | None


class DecoderLayerOutput(NamedTuple):
    """``output (B, U, d)``, ``self_attn_weights (B, H, U, U)``, ``cross_attn_weights (B, H, U, T)``."""

    output: Tensor
    self_attn_weights: Tensor | None
    cross_attn_weights: Tensor | None


class _FeedForward(nn.Module):
    def __init__(self, embed_dim: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embed_dim, ffn_dim)
        self.lin2 = nn.Linear(ffn_dim, embed_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(self.drop(F.relu(self.lin1(x))))


class _ResidualLayer(nn.Module):
    """Base of the encoder and decoder layers: one residual branch at a time (``_block``)."""

    norm_first: bool
    drop: nn.Dropout

    def _block(
        self, x: Tensor, norm: nn.Module, fn: Callable[[Tensor], tuple[Tensor, Tensor | None]]
    ) -> tuple[Tensor, Tensor | None]:
        """``x + dropout(fn(x))`` with ``norm`` before ``fn`` (pre-norm) or after the sum
        (post-norm); also returns ``fn``'s attention weights (or ``None``)."""
        h = norm(x) if self.norm_first else x
        out, weights = fn(h)
        x = x + self.drop(out)
        return (x if self.norm_first else norm(x)), weights


class SpeechTransformerEncoderLayer(_ResidualLayer):
    """Encoder layer: self-attention with the diagonal prior, then feed-forward.

    Post-norm as in the paper (``norm_first=False``) or pre-norm.

    Args:
        embed_dim: model dim ``d``.
        num_heads: attention heads.
        ffn_dim: feed-forward inner dim.
        dropout: dropout on attention weights and residual branches.
        prior: the penalty on distant positions (any :class:`~speechattn.nn.AttentionPrior`,
            e.g. ``DiagonalPrior(kind="linear", distance="absolute", scale=0.1)``), or ``None``.
        norm_first: pre-norm instead of post-norm.

    Shapes: ``x (B, T, d)``, ``lengths (B,)`` -> ``(B, T, d)`` with padded frames 0.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        prior: AttentionPrior | None = None,
        norm_first: bool = False,
    ) -> None:
        super().__init__()
        _check_positive_int(ffn_dim, "ffn_dim")
        dropout = _check_dropout(dropout)
        self.self_attn = PriorMultiheadAttention(
            embed_dim=embed_dim, num_heads=num_heads, dropout=dropout, prior=prior
        )
        self.ffn = _FeedForward(embed_dim, ffn_dim, dropout)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.drop = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, *, need_weights: bool = False
    ) -> EncoderLayerOutput:
        """Run the layer on ``x (B, T, d)`` with valid ``lengths (B,)``."""
        if not isinstance(x, Tensor) or x.dim() != 3:
            raise ValueError(f"Expected x (B, T, d); found {getattr(x, 'shape', type(x))}.")
        lengths = check_lengths(
            lengths,
            "lengths",
            batch=x.shape[0],
            max_len=x.shape[1],
            device=x.device,
            allow_zero=True,
        )
        x, weights = self._block(
            _zero_pad(x, lengths),
            self.norm1,
            lambda h: self.self_attn(h, query_lengths=lengths, need_weights=need_weights),
        )
        x, _ = self._block(x, self.norm2, lambda h: (self.ffn(h), None))
        return EncoderLayerOutput(_zero_pad(x, lengths), weights)


class SpeechTransformerDecoderLayer(_ResidualLayer):
    """Decoder layer: causal self-attention (no prior), cross-attention with the prior, FFN.

    The prior is applied to the encoder-decoder attention only: the paper penalises every
    attention "except the first multi-head attention in the decoder" (the masked self-attention).
    Queries are tokens, keys are encoder frames: use a relative-distance prior
    (``DiagonalPrior(distance="relative")``) so it follows each item's own diagonal.

    Args:
        embed_dim, num_heads, ffn_dim, dropout, norm_first: as in
            :class:`SpeechTransformerEncoderLayer`.
        prior: the cross-attention prior, or ``None``.

    Shapes: ``x (B, U, d)``, ``memory (B, T, d)``, lengths ``(B,)`` -> ``(B, U, d)``.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        prior: AttentionPrior | None = None,
        norm_first: bool = False,
    ) -> None:
        super().__init__()
        _check_positive_int(ffn_dim, "ffn_dim")
        dropout = _check_dropout(dropout)
        self.self_attn = PriorMultiheadAttention(
            embed_dim=embed_dim, num_heads=num_heads, dropout=dropout, prior=None
        )
        self.cross_attn = PriorMultiheadAttention(
            embed_dim=embed_dim, num_heads=num_heads, dropout=dropout, prior=prior
        )
        self.ffn = _FeedForward(embed_dim, ffn_dim, dropout)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.norm3 = nn.LayerNorm(embed_dim)
        self.embed_dim = embed_dim
        self.drop = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        *,
        x_lengths: Tensor | None = None,
        memory_lengths: Tensor | None = None,
        need_weights: bool = False,
    ) -> DecoderLayerOutput:
        """Run the layer on token states ``x (B, U, d)`` attending to ``memory (B, T, d)``."""
        _check_decoder_inputs(x, memory, "x", self.embed_dim)
        b = x.shape[0]
        lx = check_lengths(
            x_lengths, "x_lengths", batch=b, max_len=x.shape[1], device=x.device, allow_zero=True
        )
        lm = check_lengths(
            memory_lengths,
            "memory_lengths",
            batch=b,
            max_len=memory.shape[1],
            device=x.device,
            allow_zero=True,
        )
        x = _zero_pad(x, lx)
        memory = _zero_pad(memory, lm)
        x, w_self = self._block(
            x,
            self.norm1,
            lambda h: self.self_attn(h, query_lengths=lx, causal=True, need_weights=need_weights),
        )
        x, w_cross = self._block(
            x,
            self.norm2,
            lambda h: self.cross_attn(
                h, memory, query_lengths=lx, key_lengths=lm, need_weights=need_weights
            ),
        )
        x, _ = self._block(x, self.norm3, lambda h: (self.ffn(h), None))
        return DecoderLayerOutput(_zero_pad(x, lx), w_self, w_cross)


def _check_memory(memory: Tensor, batch: int, embed_dim: int, against: str) -> None:
    if not isinstance(memory, Tensor) or memory.dim() != 3:
        raise ValueError(
            f"Expected memory (B, T, d={embed_dim}) from the encoder; found "
            f"{tuple(memory.shape) if isinstance(memory, Tensor) else type(memory).__name__}."
        )
    if memory.shape[0] != batch or memory.shape[2] != embed_dim:
        raise ValueError(
            f"Expected memory (B={batch}, T, d={embed_dim}) with the batch of {against}; found "
            f"{tuple(memory.shape)}. Pass the encoder output of the same batch."
        )


def _check_decoder_inputs(x: Tensor, memory: Tensor, name: str, embed_dim: int) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(
            f"Expected {name} (B, U, d={embed_dim}); found "
            f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}."
        )
    _check_memory(memory, x.shape[0], embed_dim, name)


class EncoderOutput(NamedTuple):
    """``output (B, T', d)`` (padded frames 0), ``lengths (B,)`` after subsampling."""

    output: Tensor
    lengths: Tensor


class SpeechTransformerEncoder(nn.Module):
    """Conv2d subsampling, scaled input + sinusoidal positions, then ``num_layers`` encoder layers.

    Args:
        in_features: mel bins.
        embed_dim, num_heads, ffn_dim, dropout, norm_first: per layer.
        num_layers: encoder depth (the paper uses 12).
        prior: the self-attention prior of every layer (default: the Speech-Transformer linear
            penalty on absolute distance, ``DiagonalPrior(kind="linear", distance="absolute",
            scale=0.1)``; ``None`` disables it).
        channels: front-end conv channels.
    """

    def __init__(
        self,
        *,
        in_features: int,
        embed_dim: int = 256,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        num_layers: int = 6,
        dropout: float = 0.1,
        prior: AttentionPrior | None = DiagonalPrior(kind="linear", distance="absolute", scale=0.1),  # noqa: B008
        channels: int = 64,
        norm_first: bool = False,
    ) -> None:
        super().__init__()
        _check_positive_int(num_layers, "num_layers")
        self.embed_dim = embed_dim
        self.frontend = Conv2dSubsampling(
            in_features=in_features, embed_dim=embed_dim, channels=channels
        )
        self.layers = nn.ModuleList(
            SpeechTransformerEncoderLayer(
                embed_dim=embed_dim,
                num_heads=num_heads,
                ffn_dim=ffn_dim,
                dropout=dropout,
                prior=prior,
                norm_first=norm_first,
            )
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """Encode ``features (B, T, F)`` with ``lengths (B,)``."""
        x, lengths = self.frontend(features, lengths)
        x = x * math.sqrt(self.embed_dim) + sinusoidal_positions(
            x.shape[1], self.embed_dim, device=x.device
        ).to(x.dtype)
        for layer in self.layers:
            x = layer(x, lengths).output
        return EncoderOutput(_zero_pad(self.final_norm(x), lengths), lengths)


class SpeechTransformerDecoder(nn.Module):
    """Token embedding (scaled) + sinusoidal positions + ``num_layers`` decoder layers + output.

    Every layer's causal self-attention runs without prior; its encoder-decoder attention uses
    ``prior`` (default: the linear penalty on the relative distance from each item's diagonal,
    ``DiagonalPrior(kind="linear", scale=2.0)``; ``None`` disables it).

    Args:
        vocab_size: output classes (and embedding rows).
        embed_dim, num_heads, ffn_dim, dropout, norm_first: per layer.
        num_layers: decoder depth (the paper uses 6).
        prior: the cross-attention prior of every layer.

    Shapes: ``tokens (B, U)`` int64, ``memory (B, T, d)``, lengths ``(B,)`` -> logits
    ``(B, U, vocab_size)`` (padded token rows 0).
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        embed_dim: int = 256,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        num_layers: int = 6,
        dropout: float = 0.1,
        prior: AttentionPrior | None = DiagonalPrior(kind="linear", scale=2.0),  # noqa: B008
        norm_first: bool = False,
    ) -> None:
        super().__init__()
        _check_positive_int(vocab_size, "vocab_size")
        _check_positive_int(num_layers, "num_layers")
        self.embed_dim = embed_dim
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.layers = nn.ModuleList(
            SpeechTransformerDecoderLayer(
                embed_dim=embed_dim,
                num_heads=num_heads,
                ffn_dim=ffn_dim,
                dropout=dropout,
                prior=prior,
                norm_first=norm_first,
            )
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()
        self.out = nn.Linear(embed_dim, vocab_size)

    def forward(
        self,
        tokens: Tensor,
        memory: Tensor,
        *,
        token_lengths: Tensor | None = None,
        memory_lengths: Tensor | None = None,
    ) -> Tensor:
        """Logits ``(B, U, vocab_size)`` for teacher-forced ``tokens (B, U)``."""
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype != torch.int64:
            raise ValueError(
                f"Expected tokens int64 (B, U); found "
                f"{(tokens.dtype, tuple(tokens.shape)) if isinstance(tokens, Tensor) else type(tokens).__name__}."
            )
        b, u = tokens.shape
        _check_memory(memory, b, self.embed_dim, "tokens")
        lt = check_lengths(
            token_lengths,
            "token_lengths",
            batch=b,
            max_len=u,
            device=tokens.device,
            allow_zero=True,
        )
        valid = lengths_to_valid_mask(lt, u)
        safe = torch.where(valid, tokens, torch.zeros((), dtype=tokens.dtype, device=tokens.device))
        vocab = self.embed.num_embeddings
        bad = (safe < 0) | (safe >= vocab)
        if bool(bad.any()):  # (an IndexError from the embedding, a device assert on CUDA)
            i, j = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"Expected token ids in [0, vocab_size={vocab}) at valid positions; found "
                f"tokens[{i}, {j}] = {int(tokens[i, j])}. Padding ids (e.g. -100) are fine "
                "past token_lengths."
            )
        x = self.embed(safe) * math.sqrt(self.embed_dim)
        x = x + sinusoidal_positions(u, self.embed_dim, device=x.device).to(x.dtype)
        for layer in self.layers:
            x = layer(x, memory, x_lengths=lt, memory_lengths=memory_lengths).output
        return _zero_pad(self.out(self.final_norm(x)), lt)
