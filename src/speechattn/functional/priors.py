"""Diagonal alignment priors for attention: additive biases, flex_attention score mods, losses.

Speech attention between two sequences that advance together (frames and tokens, or frames and
frames) is close to diagonal. This module gives the standard ways of telling a model so:

* :func:`diagonal_bias` — an additive float bias ``(B, 1 or H, Tq, Tk)`` for
  :func:`torch.nn.functional.scaled_dot_product_attention`: linear (the Speech-Transformer penalty
  on distant positions, Dong et al. 2018), Gaussian, or band. Distance is measured from each item's
  own diagonal ``d = i / Lq - j / Lk`` (non-square and ragged batches work) or in positions
  ``|i - j|`` for square self-attention as the paper states.
* :func:`diagonal_score_mod` — the same bias as a ``score_mod`` for
  :func:`torch.nn.attention.flex_attention.flex_attention`.
* :func:`post_softmax_penalty_attention` and :func:`seed_attention_penalty` — the post-softmax
  variant from the tfsr Speech-Transformer code, reproduced for people porting it, with its defects stated.
* :func:`guided_attention_loss` — Tachibana et al. (2017) / ESPnet ``GuidedAttentionLoss``.
* :func:`beta_binomial_prior` / :func:`beta_binomial_bias` — the RAD-TTS / NeMo beta-binomial
  alignment prior ``(B, T_mel, U)``, each valid row a proper distribution, and its log as a bias.
* :class:`DiagonalPrior`, :class:`BetaBinomialPrior` — small frozen configs that build the bias for
  given lengths; :class:`speechattn.nn.PriorMultiheadAttention` takes them as ``prior=``.

Why a bias on the logits and not a penalty after the softmax: multiplying the softmax weights by a
positive factor ``f`` and renormalising equals adding ``log f`` to the logits,
``softmax(z) * f / sum(softmax(z) * f) == softmax(z + log f)``. A logit bias is therefore the
principled form of any multiplicative reweighting, it keeps every row a distribution over valid
keys, it fuses into SDPA / flash kernels, and it is built once per batch shape in a few vectorised
ops. Adding a penalty *after* the softmax (as the seed does) is not a reweighting at all; see
:func:`post_softmax_penalty_attention`.

Conventions: lengths are int64 ``(B,)``; queries index rows ``i``, keys index columns ``j``.
Bias values: finite everywhere; ``finfo(dtype).min`` on padded keys; exactly 0 on every padded
query row (and on every row of an item with no valid key) so no row is ever fully masked — such
rows must be zeroed by the caller (the modules in :mod:`speechattn.nn` do).

Shape legend: ``b`` batch, ``h`` heads, ``i``/``q`` query positions, ``j``/``k`` key positions,
``t`` mel frames, ``u`` tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from speechattn import kernels
from speechattn.functional.masks import check_lengths, lengths_to_valid_mask

__all__ = [
    "BetaBinomialPrior",
    "DiagonalPrior",
    "PriorAttentionOutput",
    "beta_binomial_bias",
    "beta_binomial_prior",
    "diagonal_bias",
    "diagonal_score_mod",
    "guided_attention_loss",
    "guided_attention_weights",
    "post_softmax_penalty_attention",
    "prior_attention",
    "seed_attention_penalty",
]

PriorKind = Literal["linear", "gaussian", "band"]
Distance = Literal["relative", "absolute"]

AttentionImpl = Literal["auto", "sdpa", "varlen"]

_KINDS = ("linear", "gaussian", "band")
_IMPLS = ("auto", "sdpa", "varlen")
# impl="auto" takes the varlen path on CPU with one intra-op thread when one item's scores
# (H * Tq * Tk) reach this size; below it the per-item Python loop costs more than the padding it
# skips. With more threads SDPA's fused kernel parallelises over (batch, head, query block) while
# varlen only parallelises inside each small GEMM; that case was not measurable on the shared
# 2-core development machine, so auto keeps SDPA there.
_VARLEN_MIN_SCORES = 16384
_DISTANCES = ("relative", "absolute")


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_float(value: float, name: str, *, lo: float, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Expected {name} to be a float; found {type(value).__name__}.")
    value = float(value)
    bad = (not math.isfinite(value)) or (value <= lo if lo_open else value < lo)
    if bad:
        rel = ">" if lo_open else ">="
        raise ValueError(f"Expected a finite {name} {rel} {lo}; found {name} = {value}.")
    return value


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected {name} to be an int >= 1; found {value!r}.")
    return value


def _check_float_dtype(dtype: torch.dtype, name: str = "dtype") -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"Expected {name} to be a floating torch.dtype (e.g. torch.float32); found {dtype}."
        )


def _batch_and_lengths(
    query_lengths: Tensor | None,
    key_lengths: Tensor | None,
    max_query_len: int | None,
    max_key_len: int | None,
    device: torch.device | str | None,
    qname: str = "query_lengths",
    kname: str = "key_lengths",
) -> tuple[Tensor, Tensor, int, int]:
    """Validate both lengths tensors; return (lq, lk, Tq, Tk) with lengths int64 on ``device``."""
    for lengths, name in ((query_lengths, qname), (key_lengths, kname)):
        if lengths is not None and not isinstance(lengths, Tensor):
            raise TypeError(
                f"Expected {name} to be an int64 tensor of shape (B,); found "
                f"{type(lengths).__name__}. Wrap it with torch.as_tensor(..., dtype=torch.int64)."
            )
    ref_lengths = query_lengths if query_lengths is not None else key_lengths
    if ref_lengths is None:
        batch = 1
    else:
        batch = int(ref_lengths.shape[0]) if ref_lengths.dim() == 1 else -1
    if device is None:
        device = ref_lengths.device if ref_lengths is not None else torch.device("cpu")
    device = torch.device(device)

    def _max(lengths: Tensor | None, given: int | None, name: str, maxname: str) -> int:
        if given is not None:
            if isinstance(given, bool) or not isinstance(given, int) or given < 0:
                raise ValueError(f"Expected {maxname} to be an int >= 0; found {given!r}.")
            return given
        if lengths is None:
            raise ValueError(
                f"Expected {name} or {maxname}; found neither. Pass the lengths tensor, or "
                f"{maxname} for a batch of full-length items."
            )
        if lengths.numel() == 0:
            return 0
        return int(lengths.max())

    tq = _max(query_lengths, max_query_len, qname, "max_query_len")
    tk = _max(key_lengths, max_key_len, kname, "max_key_len")
    if batch < 0:
        raise ValueError(
            f"Expected {qname} and {kname} of shape (B,); found "
            f"{None if query_lengths is None else tuple(query_lengths.shape)} and "
            f"{None if key_lengths is None else tuple(key_lengths.shape)}."
        )
    lq = check_lengths(
        query_lengths, qname, batch=batch, max_len=tq, device=device, allow_zero=True
    )
    lk = check_lengths(key_lengths, kname, batch=batch, max_len=tk, device=device, allow_zero=True)
    return lq, lk, tq, tk


def _check_slopes(slopes: Tensor | Sequence[float] | None, device: torch.device) -> Tensor | None:
    if slopes is None:
        return None
    if not isinstance(slopes, Tensor):
        try:
            slopes = torch.as_tensor(list(slopes), dtype=torch.float32)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"Expected slopes to be a float tensor (H,) or a sequence of floats; found "
                f"{type(slopes).__name__}."
            ) from err
    if not slopes.dtype.is_floating_point:
        slopes = slopes.to(torch.float32)
    if slopes.dim() != 1 or slopes.numel() == 0:
        raise ValueError(
            f"Expected slopes of shape (H,) with H >= 1 (one penalty scale per head); found "
            f"{tuple(slopes.shape)}."
        )
    if not bool(torch.isfinite(slopes.detach()).all()):
        raise ValueError("Expected finite slopes; found inf or NaN.")
    return slopes.to(device)


def _check_kind(kind: str, distance: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"Expected kind in {_KINDS}; found kind = {kind!r}.")
    if distance not in _DISTANCES:
        raise ValueError(f"Expected distance in {_DISTANCES}; found distance = {distance!r}.")


# --------------------------------------------------------------------------------------------
# diagonal bias
# --------------------------------------------------------------------------------------------


def _penalty_(d: Tensor, kind: str, width: float, sigma: float, scale: float) -> Tensor:
    """In place: ``d`` (signed distance) becomes ``-scale * penalty(d)``; returns ``d``."""
    if kind == "linear":
        d.abs_()
        if width > 0:
            d.sub_(width).clamp_min_(0.0)
        return d.mul_(-scale)
    if kind == "gaussian":
        return d.square_().mul_(-0.5 * scale / (sigma * sigma))
    return d.abs_().gt_(width).mul_(-scale)  # band: 1[|d| > width], kept in d's float dtype


def diagonal_bias(
    query_lengths: Tensor | None,
    key_lengths: Tensor | None,
    *,
    kind: PriorKind = "linear",
    scale: float = 1.0,
    width: float = 0.0,
    sigma: float = 0.4,
    distance: Distance = "relative",
    slopes: Tensor | Sequence[float] | None = None,
    max_query_len: int | None = None,
    max_key_len: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Additive diagonal prior for attention logits, ready for SDPA's ``attn_mask``.

    For query ``i`` and key ``j`` of item ``b`` the signed distance is

    * ``distance="relative"``: ``d = i / Lq[b] - j / Lk[b]`` (each item's own diagonal, so
      non-square and ragged batches work);
    * ``distance="absolute"``: ``d = i - j`` in positions (the Speech-Transformer paper's penalty
      for square self-attention; use it when queries and keys share a time axis).

    and the bias is ``-scale * slope[h] * penalty(d)`` with

    * ``kind="linear"``: ``penalty = max(0, |d| - width)`` (the paper's "larger penalty for
      more distant position pairs"; ``width`` is a penalty-free band. The tfsr code's loop-built
      matrix with ``attention_penalty_width=w`` equals ``distance="absolute", width=w - 1``);
    * ``kind="gaussian"``: ``penalty = d**2 / (2 * sigma**2)`` (log of a Gaussian around the
      diagonal, the additive form of guided attention);
    * ``kind="band"``: ``penalty = 1[|d| > width]`` (a soft stripe: ``-scale`` outside the band).

    Padded keys (``j >= Lk[b]``) get ``torch.finfo(dtype).min``. Padded query rows
    (``i >= Lq[b]``) and every row of an item with ``Lk[b] == 0`` get 0 everywhere, so no row is
    ever fully masked and SDPA never returns NaN; zero those rows' outputs afterwards.
    One vectorised build (a few in-place passes over a single buffer), no Python loop over
    rows, items or heads.

    Args:
        query_lengths: int64 ``(B,)`` valid query counts (``0 <= Lq <= Tq``), or ``None`` for all
            ``max_query_len``.
        key_lengths: int64 ``(B,)`` valid key counts, or ``None`` for all ``max_key_len``.
        kind: ``"linear"``, ``"gaussian"`` or ``"band"``.
        scale: penalty weight (finite, ``>= 0``).
        width: penalty-free half width for ``linear`` and ``band``, in the units of ``distance``
            (fraction of the sequence for relative, positions for absolute).
        sigma: Gaussian width (``> 0``), same units.
        distance: ``"relative"`` or ``"absolute"``.
        slopes: optional per-head multipliers ``(H,)`` (ALiBi-style); output has H heads.
            Differentiable: pass a tensor with ``requires_grad`` to learn them.
        max_query_len: padded query size ``Tq`` (default ``query_lengths.max()``, one host sync).
        max_key_len: padded key size ``Tk`` (default ``key_lengths.max()``).
        dtype: floating output dtype (the ``finfo.min`` used for padding follows it).
        device: output device (default: the lengths' device).

    Returns:
        Float bias ``(B, 1, Tq, Tk)``, or ``(B, H, Tq, Tk)`` with ``slopes``. Broadcasts over
        heads in ``F.scaled_dot_product_attention(q, k, v, attn_mask=bias)``.

    Raises:
        ValueError: unknown ``kind``/``distance``, negative or non-finite ``scale``/``width``,
            ``sigma <= 0``, bad lengths (the message names the batch index).
        TypeError: lengths not integer tensors, ``dtype`` not floating.

    Naive equivalent::

        for b, h, i, j: bias[b, h, i, j] = (
            0 if i >= Lq[b] or Lk[b] == 0 else
            finfo.min if j >= Lk[b] else
            -scale * slopes[h] * penalty(i / Lq[b] - j / Lk[b]))

    Reference: Dong, Xu & Xu, "Speech-Transformer: a no-recurrence sequence-to-sequence model for
    speech recognition", ICASSP 2018.
    """
    _check_kind(kind, distance)
    scale = _check_float(scale, "scale", lo=0.0)
    width = _check_float(width, "width", lo=0.0)
    sigma = _check_float(sigma, "sigma", lo=0.0, lo_open=True)
    _check_float_dtype(dtype)
    lq, lk, tq, tk = _batch_and_lengths(
        query_lengths, key_lengths, max_query_len, max_key_len, device
    )
    dev = lq.device
    slope_t = _check_slopes(slopes, dev)
    work = torch.float64 if dtype == torch.float64 else torch.float32

    # One output buffer, filled in place: the build is a handful of passes over (B, Tq, Tk) and
    # a single large allocation (fresh allocations of this size cost page faults on CPU).
    b = lq.shape[0]
    i = torch.arange(tq, device=dev, dtype=work)
    j = torch.arange(tk, device=dev, dtype=work)
    if distance == "relative":
        qpos = i[None, :, None] / lq.clamp_min(1).to(work)[:, None, None]  # (B, Tq, 1)
        kpos = j[None, None, :] / lk.clamp_min(1).to(work)[:, None, None]  # (B, 1, Tk)
        val = torch.empty(b, tq, tk, device=dev, dtype=work)
        torch.sub(qpos, kpos, out=val)
        _penalty_(val, kind, width, sigma, scale)
    else:
        small = _penalty_(i[:, None] - j[None, :], kind, width, sigma, scale)  # (Tq, Tk)
        val = small.expand(b, tq, tk).contiguous() if slope_t is None else small.unsqueeze(0)
    val = val.unsqueeze(1)  # (B or 1, 1, Tq, Tk)
    if slope_t is not None:
        val = val * slope_t.to(work).view(1, -1, 1, 1)  # (B or 1, H, Tq, Tk)
        if val.shape[0] != b:
            val = val.expand(b, -1, -1, -1).contiguous()
    if val.dtype != dtype:  # float16 overflows: penalties past its range become finfo.min,
        # not -inf (-inf * 0 on padded rows below would be NaN)
        val = val.clamp_min(torch.finfo(dtype).min).to(dtype)
    # Padding by broadcast min / multiply (an order of magnitude faster on CPU than
    # masked_fill_ with a broadcast bool mask): padded keys -> min(val, finfo.min) = finfo.min;
    # padded rows -> val * 0 = 0. ``val`` is a fresh finite tensor, so in-place is safe, also
    # for autograd through ``slopes``.
    fill = torch.finfo(dtype).min
    key_cap = torch.full((b, tk), math.inf, dtype=dtype, device=dev)  # (B, Tk)
    key_cap.masked_fill_(~lengths_to_valid_mask(lk, tk), fill)
    row_keep = (lengths_to_valid_mask(lq, tq) & (lk > 0)[:, None]).to(dtype)  # (B, Tq)
    val.clamp_max_(key_cap[:, None, None, :])
    return val.mul_(row_keep[:, None, :, None])


def diagonal_score_mod(
    query_lengths: Tensor,
    key_lengths: Tensor,
    *,
    kind: PriorKind = "linear",
    scale: float = 1.0,
    width: float = 0.0,
    sigma: float = 0.4,
    distance: Distance = "relative",
    slopes: Tensor | Sequence[float] | None = None,
) -> Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]:
    """The :func:`diagonal_bias` prior as a ``score_mod`` for ``flex_attention``.

    ``flex_attention(q, k, v, score_mod=diagonal_score_mod(lq, lk, ...))`` computes the same
    attention as ``F.scaled_dot_product_attention(q, k, v, attn_mask=diagonal_bias(lq, lk, ...))``
    without materialising the ``(B, 1, Tq, Tk)`` bias: padded keys get ``finfo(score.dtype).min``,
    padded query rows (and items with no valid key) keep their raw scores (zero bias), so no row is
    fully masked. Zero padded query rows' outputs afterwards, as with the bias.

    Args:
        query_lengths: int64 ``(B,)`` valid query counts; ``B`` must match ``q.shape[0]``.
        key_lengths: int64 ``(B,)`` valid key counts, on the same device as the queries.
        kind, scale, width, sigma, distance, slopes: as in :func:`diagonal_bias`; ``slopes`` has
            one entry per head of ``q``.

    Returns:
        ``score_mod(score, b, h, q_idx, kv_idx) -> score`` (a closure over the lengths).

    Note:
        In torch 2.13 ``flex_attention`` on CPU is forward-only: it raises ``NotImplementedError``
        ("FlexAttention does not support backward on CPU") when an input requires grad. Use it for
        inference on CPU; train with :func:`diagonal_bias` + SDPA on CPU, or flex_attention on CUDA.
        Without ``torch.compile`` it runs an unfused reference path and warns once.
    """
    _check_kind(kind, distance)
    scale = _check_float(scale, "scale", lo=0.0)
    width = _check_float(width, "width", lo=0.0)
    sigma = _check_float(sigma, "sigma", lo=0.0, lo_open=True)
    if query_lengths is None or key_lengths is None:
        raise ValueError(
            "Expected query_lengths and key_lengths tensors for diagonal_score_mod; found None. "
            "Pass torch.full((B,), T) for full-length items."
        )
    lq, lk, _, _ = _batch_and_lengths(query_lengths, key_lengths, None, None, None)
    slope_t = _check_slopes(slopes, lq.device)
    lq_f = lq.clamp_min(1).to(torch.float32)
    lk_f = lk.clamp_min(1).to(torch.float32)
    relative = distance == "relative"

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        if relative:
            d = q_idx.to(torch.float32) / lq_f[b] - kv_idx.to(torch.float32) / lk_f[b]
        else:
            d = (q_idx - kv_idx).to(torch.float32)
        if kind == "linear":
            pen = (d.abs() - width).clamp_min(0.0)
        elif kind == "gaussian":
            pen = d * d * (0.5 / (sigma * sigma))
        else:
            pen = (d.abs() > width).to(torch.float32)
        coef = -scale * slope_t[h] if slope_t is not None else -scale
        biased = score + (pen * coef).to(score.dtype)
        masked = torch.where(kv_idx < lk[b], biased, torch.finfo(score.dtype).min)
        row_ok = (q_idx < lq[b]) & (lk[b] > 0)
        return torch.where(row_ok, masked, score)

    return score_mod


# --------------------------------------------------------------------------------------------
# tfsr's post-softmax variant
# --------------------------------------------------------------------------------------------


def seed_attention_penalty(
    query_len: int,
    key_len: int | None = None,
    *,
    width: int = 1,
    batch_size: int = 1,
    num_heads: int = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The tfsr code's ``create_attention_penalty`` matrix, vectorised: ``-max(0, |i - j| - w + 1)``.

    The seed accumulates ``band_part(ones, n, n) - 1`` for ``n`` in ``[w - 1, L - 2]``; entry
    ``(i, j)`` collects ``-1`` for every ``n < |i - j|``, i.e. ``-max(0, |i - j| - (w - 1))``.
    Like the seed it depends only on the padded sizes (the batch maximum), is anchored at the
    top-left corner ``(0, 0)`` (so for ``Tq != Tk`` it is not the items' diagonal) and is
    replicated over batch and heads. It is here for porting and benchmarking; prefer
    :func:`diagonal_bias` (``distance="absolute", kind="linear", width=w - 1`` is its logit form).

    Returns:
        ``(batch_size, num_heads, query_len, key_len)`` (an expanded view; values ``<= 0``).
    """
    key_len = query_len if key_len is None else key_len
    for v, n in (
        (query_len, "query_len"),
        (key_len, "key_len"),
        (batch_size, "batch_size"),
        (num_heads, "num_heads"),
    ):
        _check_positive_int(v, n)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"Expected width (attention_penalty_width) int >= 1; found {width!r}.")
    _check_float_dtype(dtype)
    i = torch.arange(query_len, device=device)
    j = torch.arange(key_len, device=device)
    pen = -((i[:, None] - j[None, :]).abs() - (width - 1)).clamp_min(0).to(dtype)
    return pen.expand(batch_size, num_heads, query_len, key_len)


def post_softmax_penalty_attention(
    scores: Tensor,
    penalty: Tensor,
    *,
    scale: float,
    key_valid_mask: Tensor | None = None,
) -> Tensor:
    """The tfsr code's post-softmax penalty, reproduced exactly (tfsr ``scaled_dot_product_attention``).

    Steps, as in the seed: ``w = softmax(scores - 1e9 * pad)``; ``w += scale * penalty``;
    ``w += |min(w)|`` (minimum over the *whole batch*); ``w /= w.sum(-1)``.

    Defects (why :func:`diagonal_bias` exists):

    * **Weight on padded keys.** The shift by ``|min|`` lifts every entry, padded keys included:
      after renormalisation padded keys carry non-zero weight, so padding content leaks into the
      output.
    * **Outputs depend on the rest of the batch.** The minimum is taken over all items, heads and
      rows (and the tfsr penalty is sized by the batch's longest item): adding a longer or
      different item to the batch changes every other item's weights.
    * **Not a reweighting.** An additive term after the softmax is not equivalent to any logit
      bias; with a large ``scale`` the shifted penalty dominates and the weights stop depending on
      the content. The principled form of a post-softmax factor is multiplicative, and
      ``softmax(z) * f`` renormalised equals ``softmax(z + log f)``: a logit bias.
    * **Corner-anchored for non-square.** The tfsr band matrix is anchored at ``(0, 0)``; for
      encoder-decoder attention (``Tq != Tk``) its "diagonal" is not the alignment's diagonal.
    * **Slow.** The penalty is rebuilt by a Python loop over band widths each step, held per head,
      and the explicit weights defeat fused attention kernels.

    Args:
        scores: scaled logits ``(B, H, Tq, Tk)`` (``q @ k^T / sqrt(d)``).
        penalty: ``(B or 1, H or 1, Tq, Tk)`` values ``<= 0`` (see :func:`seed_attention_penalty`).
        scale: tfsr's ``att_penalty_scale``; ``<= 0`` skips the penalty as tfsr does.
        key_valid_mask: optional bool ``(B, Tk)``, True = keep (tfsr's mask has 1 = pad).

    Returns:
        Weights ``(B, H, Tq, Tk)``, rows summing to 1 (over *all* keys, padded ones included).
    """
    if scores.dim() != 4:
        raise ValueError(f"Expected scores (B, H, Tq, Tk); found shape {tuple(scores.shape)}.")
    logits = scores
    if key_valid_mask is not None:
        logits = scores + (~key_valid_mask)[:, None, None, :].to(scores.dtype) * -1e9
    w = torch.softmax(logits, dim=-1)
    if scale > 0:
        w = w + penalty * scale
        w = w + w.min().abs()
        w = w / w.sum(dim=-1, keepdim=True)
    return w


# --------------------------------------------------------------------------------------------
# guided attention loss
# --------------------------------------------------------------------------------------------


def guided_attention_weights(
    query_lengths: Tensor | None,
    key_lengths: Tensor | None,
    *,
    sigma: float = 0.4,
    max_query_len: int | None = None,
    max_key_len: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Guided-attention penalty ``W = 1 - exp(-(i/Lq - j/Lk)^2 / (2 sigma^2))``, ``(B, Tq, Tk)``.

    Zero on padded rows and keys. See :func:`guided_attention_loss`.
    """
    sigma = _check_float(sigma, "sigma", lo=0.0, lo_open=True)
    _check_float_dtype(dtype)
    lq, lk, tq, tk = _batch_and_lengths(
        query_lengths, key_lengths, max_query_len, max_key_len, device
    )
    work = torch.float64 if dtype == torch.float64 else torch.float32
    i = torch.arange(tq, device=lq.device, dtype=work)
    j = torch.arange(tk, device=lq.device, dtype=work)
    d = (
        i[None, :, None] / lq.clamp_min(1).to(work)[:, None, None]
        - j[None, None, :] / lk.clamp_min(1).to(work)[:, None, None]
    )
    w = 1.0 - torch.exp(-d.square() / (2.0 * sigma * sigma))
    valid = lengths_to_valid_mask(lq, tq)[:, :, None] & lengths_to_valid_mask(lk, tk)[:, None, :]
    return torch.where(valid, w, torch.zeros((), dtype=work, device=lq.device)).to(dtype)


def guided_attention_loss(
    attn: Tensor,
    query_lengths: Tensor | None,
    key_lengths: Tensor | None,
    *,
    sigma: float = 0.4,
) -> Tensor:
    """Guided attention loss (Tachibana et al. 2017; ESPnet ``GuidedAttentionLoss``).

    ``loss = mean over valid (b, h, i, j) of A[b, h, i, j] * (1 - exp(-(i/Lq - j/Lk)^2 / (2 sigma^2)))``
    where valid means ``i < Lq[b]`` and ``j < Lk[b]`` (ESPnet's ``masked_select`` mean). Rows are
    the attention's queries (decoder steps / mel frames, ESPnet's ``olens``), columns its keys
    (encoder positions / tokens, ESPnet's ``ilens``). Padding content (even NaN) never reaches the
    loss. Returns 0 when no entry is valid.

    Args:
        attn: attention weights ``(B, Tq, Tk)`` or ``(B, H, Tq, Tk)``, float.
        query_lengths: int64 ``(B,)`` valid rows (``None``: all ``Tq``).
        key_lengths: int64 ``(B,)`` valid columns (``None``: all ``Tk``).
        sigma: width of the penalty-free diagonal band (``> 0``), in fractions of the sequence.

    Returns:
        Scalar tensor, differentiable w.r.t. ``attn``; dtype of ``attn``.

    Reference: Tachibana, Uenoyama & Aihara, "Efficiently trainable text-to-speech system based
    on deep convolutional networks with guided attention", ICASSP 2018 (arXiv:1710.08969).
    """
    if not isinstance(attn, Tensor):
        raise TypeError(f"Expected attn to be a tensor; found {type(attn).__name__}.")
    if attn.dim() not in (3, 4):
        raise ValueError(
            f"Expected attn (B, Tq, Tk) or (B, H, Tq, Tk); found shape {tuple(attn.shape)}."
        )
    if not attn.dtype.is_floating_point:
        raise TypeError(f"Expected floating attn; found dtype {attn.dtype}.")
    batch, tq, tk = attn.shape[0], attn.shape[-2], attn.shape[-1]
    lq = check_lengths(
        query_lengths, "query_lengths", batch=batch, max_len=tq, device=attn.device, allow_zero=True
    )
    lk = check_lengths(
        key_lengths, "key_lengths", batch=batch, max_len=tk, device=attn.device, allow_zero=True
    )
    w = guided_attention_weights(
        lq, lk, sigma=sigma, max_query_len=tq, max_key_len=tk, dtype=attn.dtype
    )
    valid = lengths_to_valid_mask(lq, tq)[:, :, None] & lengths_to_valid_mask(lk, tk)[:, None, :]
    heads = 1
    if attn.dim() == 4:
        w, valid, heads = w[:, None], valid[:, None], attn.shape[1]
    terms = torch.where(valid, attn * w, torch.zeros((), dtype=attn.dtype, device=attn.device))
    count = (lq * lk).sum() * heads
    return terms.sum() / count.clamp_min(1).to(attn.dtype)


# --------------------------------------------------------------------------------------------
# beta-binomial prior
# --------------------------------------------------------------------------------------------


def _beta_binomial_logpmf(
    text_lengths: Tensor | None,
    mel_lengths: Tensor | None,
    scaling: float,
    max_text_len: int | None,
    max_mel_len: int | None,
    device: torch.device | str | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """float64 log-pmf ``(B, T, U)`` (garbage outside the valid block), row and key masks."""
    scaling = _check_float(scaling, "scaling", lo=0.0, lo_open=True)
    lt, lu, tt, tu = _batch_and_lengths(
        mel_lengths, text_lengths, max_mel_len, max_text_len, device, "mel_lengths", "text_lengths"
    )
    f64 = torch.float64
    dev = lt.device
    n = (lu - 1).clamp_min(0).to(f64)[:, None, None]  # support {0, ..., U_b - 1}
    k = torch.arange(tu, device=dev, dtype=f64)[None, None, :]
    k = torch.minimum(k, n)  # keep lgamma arguments valid outside the support; masked below
    i = torch.arange(1, tt + 1, device=dev, dtype=f64)[None, :, None]
    tb = lt.clamp_min(1).to(f64)[:, None, None]
    i = torch.minimum(i, tb)
    a = scaling * i
    b = scaling * (tb + 1.0 - i)
    lg = torch.lgamma
    log_choose = lg(n + 1.0) - lg(k + 1.0) - lg(n - k + 1.0)
    log_beta_num = lg(k + a) + lg(n - k + b) - lg(n + a + b)
    log_beta_den = lg(a) + lg(b) - lg(a + b)
    logpmf = log_choose + log_beta_num - log_beta_den
    row_valid = lengths_to_valid_mask(lt, tt) & (lu > 0)[:, None]  # (B, T)
    key_valid = lengths_to_valid_mask(lu, tu)  # (B, U)
    return logpmf, row_valid, key_valid


def beta_binomial_prior(
    text_lengths: Tensor | None,
    mel_lengths: Tensor | None,
    *,
    scaling: float = 1.0,
    max_text_len: int | None = None,
    max_mel_len: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Beta-binomial alignment prior (RAD-TTS / NeMo), batched, ``(B, T_mel, U)``.

    For item ``b`` with ``U = text_lengths[b]`` tokens and ``T = mel_lengths[b]`` frames, mel frame
    ``t`` (1-based ``i = t + 1``) gets the beta-binomial pmf over tokens ``k = 0..U-1``::

        P(k) = C(n, k) B(k + a, n - k + b) / B(a, b),  n = U - 1,
        a = scaling * i,  b = scaling * (T + 1 - i)

    so each valid mel row is a proper distribution over the valid tokens (sums to 1). NeMo's
    ``beta_binomial_prior_distribution`` uses ``n = U`` and evaluates ``pmf`` on ``0..U-1`` only,
    dropping the mass of the ``k = U`` bin (rows sum to less than 1, most for the last frames);
    we use ``n = U - 1``. Computed in float64 with ``torch.lgamma`` (no scipy, any device), then
    cast to ``dtype``. Padded tokens and padded mel rows are 0; an item with ``U = 0`` is all 0.

    Args:
        text_lengths: int64 ``(B,)`` token counts ``U`` (``None``: all ``max_text_len``).
        mel_lengths: int64 ``(B,)`` frame counts ``T`` (``None``: all ``max_mel_len``).
        scaling: NeMo's ``scaling_factor`` (``> 0``); smaller values give a flatter prior.
        max_text_len: padded token size (default ``text_lengths.max()``).
        max_mel_len: padded frame size (default ``mel_lengths.max()``).
        dtype: floating output dtype. device: output device (default: the lengths').

    Returns:
        Probabilities ``(B, T_mel, U)`` (mel frames are rows, tokens columns, as NeMo lays it
        out). Not differentiable (a constant of the lengths). Use :func:`beta_binomial_bias` for
        the log-prior to add to attention logits.

    Reference: Badlani et al., "One TTS alignment to rule them all", ICASSP 2022.
    """
    _check_float_dtype(dtype)
    logpmf, row_valid, key_valid = _beta_binomial_logpmf(
        text_lengths, mel_lengths, scaling, max_text_len, max_mel_len, device
    )
    valid = row_valid[:, :, None] & key_valid[:, None, :]
    probs = torch.where(
        valid, logpmf.exp(), torch.zeros((), dtype=torch.float64, device=valid.device)
    )
    return probs.to(dtype)


def beta_binomial_bias(
    text_lengths: Tensor | None,
    mel_lengths: Tensor | None,
    *,
    scaling: float = 1.0,
    weight: float = 1.0,
    max_text_len: int | None = None,
    max_mel_len: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The beta-binomial prior as a log-prior on attention logits, ``(B, 1, T_mel, U)``.

    ``weight * log P`` (see :func:`beta_binomial_prior`) computed directly in log space, so it is
    finite even where ``P`` underflows. Adding it to the logits of attention with mel-frame queries
    and token keys multiplies the softmax by ``P**weight`` and renormalises (RAD-TTS's
    ``attn_logprob + log prior``). Padded tokens get ``finfo(dtype).min``; padded mel rows and
    items with no token get 0 (never a fully masked row). Pass it as ``attn_mask`` to SDPA.

    Args:
        text_lengths, mel_lengths, scaling, max_text_len, max_mel_len, dtype, device: as in
            :func:`beta_binomial_prior`.
        weight: prior strength (finite, ``>= 0``).

    Returns:
        Float bias ``(B, 1, T_mel, U)``.
    """
    _check_float_dtype(dtype)
    weight = _check_float(weight, "weight", lo=0.0)
    logpmf, row_valid, key_valid = _beta_binomial_logpmf(
        text_lengths, mel_lengths, scaling, max_text_len, max_mel_len, device
    )
    fill = torch.finfo(dtype).min
    val = (logpmf * weight).clamp_min(fill).to(dtype)
    bias = torch.where(
        key_valid[:, None, :], val, torch.tensor(fill, dtype=dtype, device=val.device)
    )
    bias = torch.where(row_valid[:, :, None], bias, torch.zeros((), dtype=dtype, device=val.device))
    return bias.unsqueeze(1)


# --------------------------------------------------------------------------------------------
# configs the modules take as ``prior=``
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiagonalPrior:
    """Config for :func:`diagonal_bias`; ``bias(...)`` builds it for given lengths.

    Attributes mirror :func:`diagonal_bias`'s keyword arguments. ``slopes`` (per-head scales) is a
    tuple of floats here; pass a tensor to :func:`diagonal_bias` directly to learn them.
    """

    kind: PriorKind = "linear"
    scale: float = 1.0
    width: float = 0.0
    sigma: float = 0.4
    distance: Distance = "relative"
    slopes: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        _check_kind(self.kind, self.distance)
        _check_float(self.scale, "scale", lo=0.0)
        _check_float(self.width, "width", lo=0.0)
        _check_float(self.sigma, "sigma", lo=0.0, lo_open=True)
        if self.slopes is not None:
            object.__setattr__(self, "slopes", tuple(float(s) for s in self.slopes))

    def bias(
        self,
        query_lengths: Tensor | None,
        key_lengths: Tensor | None,
        *,
        max_query_len: int,
        max_key_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``(B, 1 or H, Tq, Tk)`` additive bias (see :func:`diagonal_bias`)."""
        return diagonal_bias(
            query_lengths,
            key_lengths,
            kind=self.kind,
            scale=self.scale,
            width=self.width,
            sigma=self.sigma,
            distance=self.distance,
            slopes=self.slopes,
            max_query_len=max_query_len,
            max_key_len=max_key_len,
            dtype=dtype,
            device=device,
        )


@dataclass(frozen=True)
class BetaBinomialPrior:
    """Config for :func:`beta_binomial_bias`: queries are mel frames, keys are tokens."""

    scaling: float = 1.0
    weight: float = 1.0

    def __post_init__(self) -> None:
        _check_float(self.scaling, "scaling", lo=0.0, lo_open=True)
        _check_float(self.weight, "weight", lo=0.0)

    def bias(
        self,
        query_lengths: Tensor | None,
        key_lengths: Tensor | None,
        *,
        max_query_len: int,
        max_key_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``(B, 1, T_mel, U)`` log-prior bias (see :func:`beta_binomial_bias`)."""
        return beta_binomial_bias(
            key_lengths,
            query_lengths,
            scaling=self.scaling,
            weight=self.weight,
            max_text_len=max_key_len,
            max_mel_len=max_query_len,
            dtype=dtype,
            device=device,
        )


# --------------------------------------------------------------------------------------------
# attention with an additive prior
# --------------------------------------------------------------------------------------------


class PriorAttentionOutput(NamedTuple):
    """Output of :func:`prior_attention`.

    Attributes:
        output: ``(B, H, Tq, Dv)``; padded query rows (and rows with no valid key) are 0.
        attn_weights: ``(B, H, Tq, Tk)`` float32 (float64 for float64 inputs) softmax weights
            (before dropout) when ``need_weights=True``, else ``None``. Padded keys are exactly 0,
            padded rows are 0.
    """

    output: Tensor
    attn_weights: Tensor | None


def prior_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    bias: Tensor | None = None,
    query_lengths: Tensor | None = None,
    key_lengths: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    bias_masked: bool = False,
    impl: AttentionImpl = "auto",
) -> PriorAttentionOutput:
    """Scaled dot-product attention with an additive prior, key padding and safe padded rows.

    ``softmax(q k^T / sqrt(d) + bias) v`` over the valid keys of each item, on
    ``F.scaled_dot_product_attention`` (fused kernels) when ``need_weights=False``; with
    ``need_weights=True`` the weights are computed explicitly, softmax in float32, and returned
    (aligners need them; fused kernels cannot give them). Both paths give the same output.

    Masking: keys ``j >= key_lengths[b]`` get weight exactly 0; with ``causal`` keys ``j > i``
    too. Query rows ``i >= query_lengths[b]`` and rows of items with no valid key output 0
    (never NaN). Padded positions of ``query``/``key``/``value`` are zeroed first, so padding
    content (even NaN) never reaches an output or a gradient.

    Args:
        query: ``(B, H, Tq, D)`` float.
        key: ``(B, H, Tk, D)``, same dtype and device.
        value: ``(B, H, Tk, Dv)``.
        bias: optional additive logit bias broadcastable as ``(B or 1, H or 1, Tq, Tk)``, e.g.
            :func:`diagonal_bias` or :func:`beta_binomial_bias`. Differentiable.
        query_lengths: int64 ``(B,)`` (``None``: all ``Tq``); 0 allowed.
        key_lengths: int64 ``(B,)`` (``None``: all ``Tk``); 0 allowed.
        causal: also mask keys ``j > i`` (top-left aligned, as SDPA's ``is_causal``).
        dropout_p: dropout on the weights (pass 0.0 at eval).
        need_weights: return the attention weights.
        bias_masked: promise that ``bias`` already holds ``finfo(dtype).min`` on every padded
            key and 0 on every padded row for these lengths (as :func:`diagonal_bias` and
            :func:`beta_binomial_bias` build it); skips two passes over the bias. Leave False
            for any other bias.
        impl: ``"sdpa"``: ``F.scaled_dot_product_attention`` on the padded batch (fused kernels;
            the choice on CUDA). ``"varlen"``: an explicit softmax attention over each item's
            valid ``(Lq, Lk)`` block only, looping over items in Python, with a hand-written
            backward (``dS = P * (dP - rowsum(dO * O))``) that reuses the saved weights; it
            does no work on padding and allocates no ``(B, H, Tq, Tk)`` tensor (CPU, float32 /
            float64; no dropout, no ``need_weights``). ``"auto"`` (default): ``"varlen"`` on
            CPU with ``torch.get_num_threads() == 1`` when it applies and the batch is not
            tiny, else ``"sdpa"``. All give the same
            output up to float rounding. ``need_weights=True`` always uses the explicit padded
            path.

    Returns:
        :class:`PriorAttentionOutput` ``(output, attn_weights)``. Differentiable w.r.t. query,
        key, value and bias.
    """
    for t, name in ((query, "query"), (key, "key"), (value, "value")):
        if not isinstance(t, Tensor):
            raise TypeError(f"Expected {name} to be a tensor; found {type(t).__name__}.")
        if t.dim() != 4:
            raise ValueError(f"Expected {name} (B, H, T, D); found shape {tuple(t.shape)}.")
    if not query.dtype.is_floating_point:
        raise TypeError(f"Expected floating query; found dtype {query.dtype}.")
    b, h, tq, dq = query.shape
    tk = key.shape[2]
    if key.shape[:2] != (b, h) or key.shape[3] != dq:
        raise ValueError(f"Expected key (B={b}, H={h}, Tk, D={dq}); found {tuple(key.shape)}.")
    if value.shape[:3] != (b, h, tk):
        raise ValueError(f"Expected value (B={b}, H={h}, Tk={tk}, Dv); found {tuple(value.shape)}.")
    if key.dtype != query.dtype or value.dtype != query.dtype:
        raise TypeError(
            f"Expected query, key and value of one dtype; found {query.dtype}, {key.dtype}, "
            f"{value.dtype}."
        )
    dev = query.device
    lq = check_lengths(
        query_lengths, "query_lengths", batch=b, max_len=tq, device=dev, allow_zero=True
    )
    lk = check_lengths(key_lengths, "key_lengths", batch=b, max_len=tk, device=dev, allow_zero=True)
    if impl not in _IMPLS:
        raise ValueError(f"Expected impl in {_IMPLS}; found impl = {impl!r}.")
    if not 0.0 <= float(dropout_p) < 1.0:
        raise ValueError(f"Expected 0 <= dropout_p < 1; found dropout_p = {dropout_p}.")
    dtype = query.dtype
    if bias is not None:
        if not isinstance(bias, Tensor) or not bias.dtype.is_floating_point:
            raise TypeError(
                "Expected bias to be a float tensor (B or 1, H or 1, Tq, Tk); found "
                f"{type(bias).__name__ if not isinstance(bias, Tensor) else bias.dtype}."
            )
        ok = (
            bias.dim() == 4
            and bias.shape[0] in (1, b)
            and bias.shape[1] in (1, h)
            and bias.shape[2:] == (tq, tk)
        )
        if not ok:
            raise ValueError(
                f"Expected bias broadcastable as (B={b} or 1, H={h} or 1, Tq={tq}, Tk={tk}); "
                f"found {tuple(bias.shape)}. Build it with max_query_len={tq}, max_key_len={tk}."
            )
        bias = bias.to(device=dev, dtype=dtype)

    varlen_ok = not need_weights and dropout_p == 0.0 and dtype in (torch.float32, torch.float64)
    if impl == "varlen" and not varlen_ok:
        raise ValueError(
            "Expected impl='varlen' with need_weights=False, dropout_p=0.0 and float32/float64 "
            f"inputs; found need_weights={need_weights}, dropout_p={dropout_p}, dtype={dtype}. "
            "Use impl='sdpa' (or 'auto') for these."
        )
    if impl == "varlen" or (
        impl == "auto"
        and varlen_ok
        and dev.type == "cpu"
        and torch.get_num_threads() == 1
        and h * tq * tk >= _VARLEN_MIN_SCORES
    ):
        engine = kernels.load("prior_attention", "varlen")  # speechattn.kernels._varlen_attention
        out = engine.varlen_attention(
            query, key, value, bias, lq.tolist(), lk.tolist(), causal=causal
        )
        return PriorAttentionOutput(out, None)

    key_valid = lengths_to_valid_mask(lk, tk)  # (B, Tk)
    row_valid = lengths_to_valid_mask(lq, tq) & (lk > 0)[:, None]  # (B, Tq)
    fill = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=dev)
    zero = torch.zeros((), dtype=dtype, device=dev)

    kv4 = key_valid[:, None, :, None]
    query = torch.where(row_valid[:, None, :, None], query, zero)
    key = torch.where(kv4, key, zero)
    value = torch.where(kv4, value, zero)

    if bias is None:
        mask = torch.where(key_valid[:, None, None, :], zero, fill)  # (B, 1, 1, Tk)
    else:
        mask = bias
        if not bias_masked:
            mask = torch.where(key_valid[:, None, None, :], mask, fill)
    if causal:
        future = torch.ones(tq, tk, dtype=torch.bool, device=dev).triu_(1)
        mask = torch.where(future, fill, mask)
    if bias is None or causal or not bias_masked:
        mask = torch.where(row_valid[:, None, :, None], mask, zero)  # never a fully masked row

    weights: Tensor | None = None
    if not need_weights:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p)
    else:
        work = torch.float64 if dtype == torch.float64 else torch.float32
        scores = torch.matmul(query.to(work), key.to(work).transpose(-2, -1)) / math.sqrt(dq)
        weights = torch.softmax(scores + mask.to(work), dim=-1)
        weights = torch.where(
            row_valid[:, None, :, None], weights, torch.zeros((), dtype=work, device=dev)
        )
        w = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
        out = torch.matmul(w.to(dtype), value)
    out = torch.where(row_valid[:, None, :, None], out, zero)
    return PriorAttentionOutput(out, weights)
