"""Unsupervised text-to-speech alignment: forward-sum loss, monotonic alignment search, and a
monotonic HMM whose stay/move transitions are stepwise-monotonic-attention stay probabilities.

Shape legend: ``b`` batch, ``u`` tokens (text), ``t`` frames (mel). Every score tensor here is laid out
``(B, U, T)``, like :func:`speechattn.functional.stepwise_monotonic_alignment`. Lengths are int64
``(B,)``; tokens ``>= text_lengths[b]`` and frames ``>= mel_lengths[b]`` are padding and never change an
output.

* :func:`forward_sum_loss` -- RAD-TTS's unsupervised alignment objective (Shih et al. 2021, "RAD-TTS:
  parallel flow-based TTS with robust alignment learning"; Badlani et al. 2022, "One TTS alignment to
  rule them all"): the negative log of the total probability of all monotonic paths through the
  per-frame token distribution, computed as CTC with a blank class, via :func:`torch.nn.functional.ctc_loss`
  (as NeMo and RAD-TTS do).
* :func:`monotonic_alignment_search` -- MAS (Kim et al. 2020, Glow-TTS): the single most likely
  monotonic path (start on token 0, end on the last token, each frame stays or advances one token),
  so every token gets at least one frame and durations sum to the mel length.
* :func:`monotonic_hmm_log_likelihood` / :func:`monotonic_hmm_viterbi` -- a left-to-right HMM with one
  state per token whose transition out of token ``u`` at frame ``t`` has probability ``1 - p_t(u)`` and
  self-loop ``p_t(u)``: exactly the stepwise monotonic attention recurrence of He et al. 2019 (Eq. 8)
  with emissions, in log space, forced to end on the last token (cf. neural HMMs, Mehta et al. 2022).
  With zero transition scores it reduces to MAS (Viterbi) and the blank-free forward sum.
  ``skippable_mask`` marks optional tokens (pauses, edge silences) that the hard path may pass
  with 0 frames: the left-to-right HMM with skip transitions over optional states that forced
  aligners (HTK's tee models, Kaldi/MFA optional silence) use for short pauses.
* :func:`token_emissions` -- the emission an aligner reads from its ``(B, U, T)`` token-frame
  scores: the per-frame posterior over tokens (``"posterior"``), LoFTR's dual softmax
  (``"dual"``) or the hybrid NN/HMM scaled likelihood (``"scaled"``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from speechattn import kernels
from speechattn.functional.masks import (
    _layout_hint,
    check_lengths,
    check_nonempty_batch,
    lengths_to_valid_mask,
)

__all__ = [
    "EMISSIONS",
    "AlignmentPath",
    "forward_sum_loss",
    "mask_token_logits",
    "monotonic_alignment_search",
    "monotonic_hmm_log_likelihood",
    "monotonic_hmm_viterbi",
    "uniform_durations",
]

_NEG = -1e30  # "log 0" that stays finite in float32 and float64


class AlignmentPath(NamedTuple):
    """A hard monotonic alignment (also exported as ``MonotonicPath``).

    Attributes:
        path: float ``(B, U, T)`` (or ``(B, H, U, T)`` from
            :func:`~speechattn.functional.monotonic_viterbi`), one-hot over tokens for every valid
            frame, zero at padded tokens and frames; the input's dtype, no grad.
        durations: int64 ``(B, U)`` (or ``(B, H, U)``), frames per token; valid tokens get
            ``>= 1`` (``>= 0`` for tokens marked in a ``skippable_mask``) and each row sums to
            ``mel_lengths[b]``; padded tokens get 0.
    """

    path: Tensor
    durations: Tensor


def _check_scores(x: Tensor, name: str) -> tuple[int, int, int]:
    if not isinstance(x, Tensor):
        raise TypeError(
            f"Expected {name} to be a float tensor (B, U, T); found {type(x).__name__}."
        )
    if not x.dtype.is_floating_point:
        raise TypeError(f"Expected {name} to be a floating tensor; found dtype {x.dtype}.")
    if x.dim() != 3:
        raise ValueError(
            f"Expected {name} of shape (B, U, T) (batch, tokens, frames); found {tuple(x.shape)}. "
            "Add a batch dimension with .unsqueeze(0) for a single item."
        )
    b, u, t = x.shape
    if u == 0 or t == 0:  # (the compiled paths would index token -1 of an empty row)
        raise ValueError(
            f"Expected {name} with at least one token and one frame (U >= 1, T >= 1); found "
            f"{tuple(x.shape)}. Drop items with empty text or audio before aligning."
        )
    return b, u, t


def _check_pair(
    text_lengths: Tensor | None,
    mel_lengths: Tensor | None,
    b: int,
    u: int,
    t: int,
    device: torch.device,
    name: str = "log_attn",
) -> tuple[Tensor, Tensor]:
    tl, ml = _check_lengths_pair(text_lengths, mel_lengths, b, u, t, device, name)
    _check_enough_frames(ml, tl)
    return tl, ml


def _check_lengths_pair(
    text_lengths: Tensor | None,
    mel_lengths: Tensor | None,
    b: int,
    u: int,
    t: int,
    device: torch.device,
    name: str,
) -> tuple[Tensor, Tensor]:
    try:
        tl = check_lengths(text_lengths, "text_lengths", batch=b, max_len=u, device=device)
        ml = check_lengths(mel_lengths, "mel_lengths", batch=b, max_len=t, device=device)
    except ValueError as exc:
        hint = _layout_hint(text_lengths, mel_lengths, u, t, name)
        if hint:
            raise ValueError(f"{exc}{hint}") from None
        raise
    return tl, ml


def _check_enough_frames(ml: Tensor, need: Tensor, *, skippable: bool = False) -> None:
    """Raise unless ``mel_lengths[b] >= need[b]`` for every item: ``need`` counts the tokens that
    must take a frame (all valid tokens, or with ``skippable`` those that are not skippable)."""
    bad = ml < need
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        which = " that is not skippable" if skippable else ""
        its = "its tokens that are not skippable" if skippable else f"text_lengths[{i}]"
        raise ValueError(
            f"A monotonic path needs at least one frame per token{which}: expected "
            f"mel_lengths[{i}] >= {int(need[i])} ({its}); found {int(ml[i])}. Use a smaller hop "
            "length or drop the utterance."
        )


def mask_token_logits(logits: Tensor, text_lengths: Tensor) -> Tensor:
    """Fill padded tokens of ``(B, U, T)`` logits with a large negative number (for a softmax over U)."""
    valid = lengths_to_valid_mask(text_lengths, logits.shape[1]).unsqueeze(-1)
    return logits.masked_fill(~valid, torch.finfo(logits.dtype).min / 4)


# The emissions token_emissions computes (see its docstring).
EMISSIONS = ("posterior", "dual", "scaled")


def token_emissions(
    scores: Tensor,
    text_lengths: Tensor | None = None,
    mel_lengths: Tensor | None = None,
    *,
    emission: str = "posterior",
) -> Tensor:
    """Per-frame token log-emissions ``(B, U, T)`` from token-frame scores ``(B, U, T)``.

    With ``P[u, t] = softmax_u(scores)[u, t]`` over the item's valid tokens (the per-frame
    posterior) and ``Q[u, t] = softmax_t(scores)[u, t]`` over its valid frames:

    * ``"posterior"``: ``log P`` (each valid frame a distribution over the valid tokens; what
      the aligners used before the option existed).
    * ``"dual"``: ``0.5 * (log P + log Q)``, the dual softmax of LoFTR (Sun et al. 2021) in log
      space: a token's evidence is also normalised over the frames, so a token close to every
      frame gains nothing in ``Q``.
    * ``"scaled"``: ``log P[u, t] - log mean_t' P[u, t']`` (mean over the item's valid frames):
      the scaled likelihood of hybrid NN/HMM recognisers (Bourlard & Morgan 1994), the posterior
      divided by the token's prior, here the token's mean posterior over the utterance. The
      divisor is not detached: a token that raises its posterior at every frame by the same
      factor leaves its emission unchanged (exactly: ``log P - logsumexp_t log P + log T``), so
      training gets no reward for it; a detached divisor would keep that reward in the gradient.

    Every value outside the valid ``text_lengths[b] x mel_lengths[b]`` block is 0, and padding
    content never changes a valid value.

    Args:
        scores: float ``(B, U, T)`` token-frame scores (e.g. negative distances + log-prior).
        text_lengths: int64 ``(B,)`` valid tokens (``None`` = all ``U``).
        mel_lengths: int64 ``(B,)`` valid frames (``None`` = all ``T``).
        emission: one of :data:`EMISSIONS`.

    Returns:
        float ``(B, U, T)`` log-emissions, in the dtype of ``scores``.

    Raises:
        TypeError: ``scores`` not a floating tensor, lengths not integer tensors.
        ValueError: an unknown ``emission``, ``scores`` not 3-D or empty, lengths of another
            batch size or out of ``[1, U]`` / ``[1, T]``.
    """
    if emission not in EMISSIONS:
        raise ValueError(f"Expected emission in {EMISSIONS}; found {emission!r}.")
    b, u, t = _check_scores(scores, "scores")
    tl, ml = _check_lengths_pair(text_lengths, mel_lengths, b, u, t, scores.device, "scores")
    tv = lengths_to_valid_mask(tl, u)
    mv = lengths_to_valid_mask(ml, t)
    valid2 = tv.unsqueeze(-1) & mv.unsqueeze(1)
    log_p = torch.log_softmax(mask_token_logits(scores, tl), dim=1)
    if emission == "posterior":
        return log_p.masked_fill(~valid2, 0.0)
    neg = torch.finfo(scores.dtype).min / 4
    if emission == "dual":
        log_q = torch.log_softmax(scores.masked_fill(~mv.unsqueeze(1), neg), dim=2)
        out = 0.5 * (log_p + log_q)
    else:
        # log mean_t P[u, t] over the valid frames: logsumexp over them minus log T_b.
        log_mean = torch.logsumexp(log_p.masked_fill(~mv.unsqueeze(1), neg), dim=2)
        log_mean = log_mean - ml.to(scores.dtype).log().unsqueeze(-1)
        out = log_p - log_mean.unsqueeze(-1)
    return out.masked_fill(~valid2, 0.0)


def forward_sum_loss(
    log_attn: Tensor,
    text_lengths: Tensor | None = None,
    mel_lengths: Tensor | None = None,
    *,
    blank_logprob: float = -1.0,
) -> Tensor:
    """RAD-TTS forward-sum alignment loss (CTC over monotonic paths with a blank).

    For each item, every valid frame ``t`` gets a distribution over ``U_b + 1`` classes: a blank with
    unnormalised log-score ``blank_logprob`` and the valid tokens with scores ``log_attn[b, :U_b, t]``,
    renormalised by a log-softmax. The loss is the CTC negative log-likelihood of the target sequence
    ``1, 2, ..., U_b`` (every token once, in order), divided by ``U_b`` and averaged over the batch
    (``reduction="mean"`` of :func:`torch.nn.functional.ctc_loss`), as NeMo's ``ForwardSumLoss`` does.

    Args:
        log_attn: float ``(B, U, T)`` token log-scores per frame, typically
            ``log_softmax(energies + log_prior, dim=1)``. Padding content is ignored.
        text_lengths: int64 ``(B,)`` valid tokens (``None`` = all ``U``).
        mel_lengths: int64 ``(B,)`` valid frames (``None`` = all ``T``); ``>= text_lengths``.
        blank_logprob: log-score of the blank class before renormalisation (RAD-TTS uses -1).

    Returns:
        Scalar loss, differentiable w.r.t. ``log_attn`` (float32 or float64; lower precisions computed
        in float32). Infinite per-item losses (impossible paths) are zeroed (``zero_infinity``).

    Raises:
        ValueError: an empty batch (``B = 0``), lengths out of range or ``mel_lengths <
            text_lengths``.
    """
    b, u, t = _check_scores(log_attn, "log_attn")
    check_nonempty_batch(log_attn, "log_attn", where="forward_sum_loss")
    tl, ml = _check_pair(text_lengths, mel_lengths, b, u, t, log_attn.device)
    x = log_attn if log_attn.dtype in (torch.float32, torch.float64) else log_attn.float()
    frame_valid = lengths_to_valid_mask(ml, t).unsqueeze(1)
    x = mask_token_logits(
        torch.where(frame_valid, x, torch.zeros((), dtype=x.dtype, device=x.device)), tl
    )
    blank = torch.full((b, 1, t), float(blank_logprob), dtype=x.dtype, device=x.device)
    scores = torch.cat([blank, x], dim=1)  # (B, U+1, T), class 0 = blank
    log_probs = F.log_softmax(scores, dim=1).permute(2, 0, 1)  # (T, B, C)
    targets = torch.arange(1, u + 1, device=x.device).unsqueeze(0).expand(b, u)
    return F.ctc_loss(
        log_probs,
        targets,
        ml,
        tl,
        blank=0,
        reduction="mean",
        zero_infinity=True,
    )


# --------------------------------------------------------------------------------------------------
# Monotonic alignment search (MAS)
# --------------------------------------------------------------------------------------------------


def _viterbi_torch(value: Tensor, stay: Tensor, move: Tensor, tl: Tensor, ml: Tensor) -> Tensor:
    """Vectorised over batch and tokens, loop over frames. All inputs float64 ``(B, U, T)``."""
    b, u, t = value.shape
    dev = value.device
    neg = torch.tensor(_NEG, dtype=value.dtype, device=dev)
    tok = torch.arange(u, device=dev)
    acc = torch.full((b, u), _NEG, dtype=value.dtype, device=dev)
    acc[:, 0] = value[:, 0, 0]
    came_from_move = torch.zeros(b, u, t, dtype=torch.bool, device=dev)
    for j in range(1, t):
        s = acc + stay[:, :, j]
        m = torch.cat([neg.expand(b, 1), acc[:, :-1] + move[:, :-1, j]], dim=1)
        # Reachability: token u at frame j needs u <= j and U_b - 1 - u <= M_b - 1 - j.
        tk = tok.unsqueeze(0)
        ok = (tk <= j) & (tk < tl.unsqueeze(1)) & (tk - tl.unsqueeze(1) + ml.unsqueeze(1) - j >= 0)
        mv = m > s
        new = torch.where(mv, m, s) + value[:, :, j]
        new = torch.where(ok, new, neg)
        came_from_move[:, :, j] = mv
        # Frames past the item's end keep the accumulator frozen.
        live = (j < ml).unsqueeze(1)
        acc = torch.where(live, new, acc)
    # Backtrack (vectorised over batch).
    path = torch.zeros(b, u, t, dtype=value.dtype, device=dev)
    cur = tl - 1
    bidx = torch.arange(b, device=dev)
    for j in range(t - 1, -1, -1):
        live = j < ml
        path[bidx[live], cur[live], j] = 1.0
        step = came_from_move[bidx, cur, j] & live & (cur > 0)
        # Also force a move when the token index equals the frame index (no frames left before).
        step = step | (live & (cur == j) & (cur > 0))
        cur = cur - step.long()
    return path


def _shift_right(x: Tensor, fill: float | int) -> Tensor:
    """``y[:, u] = x[:, u - 1]``, ``y[:, 0] = fill`` for ``(B, U)`` tensors."""
    pad = torch.full_like(x[:, :1], fill)
    return torch.cat([pad, x[:, :-1]], dim=1)


def _viterbi_skip_torch(
    value: Tensor, stay: Tensor, move: Tensor, skip: Tensor, tl: Tensor, ml: Tensor
) -> Tensor:
    """Monotonic Viterbi with skip transitions over optional tokens; float64 ``(B, U, T)`` in,
    one-hot path out. ``skip`` ``(B, U)``: score of passing token ``u`` with 0 frames (``_NEG``
    for tokens that must take a frame, and for padding). Vectorised over batch and tokens.

    ``enter(u, t)``, the best score of arriving on ``u`` at frame ``t`` from an earlier token, is
    ``max(acc(u-1, t-1) + move(u-1, t), enter(u-1, t) + skip(u-1))``: a max-plus scan over tokens,
    computed as ``L`` relaxations where ``L`` is the longest run of optional tokens. Ties prefer
    staying, then the direct move, then the shorter skip; the path ends on the last valid token
    or on an earlier one when every token after it is optional (their skip scores added), ties
    preferring the later token.
    """
    b, u, t = value.shape
    dev = value.device
    tok = torch.arange(u, device=dev).unsqueeze(0).expand(b, u)
    tok_valid = tok < tl.unsqueeze(1)
    skip = torch.where(tok_valid, skip, torch.full_like(skip, _NEG))
    opt = skip > _NEG / 2
    # Longest run of consecutive optional tokens (the number of scan relaxations needed).
    run = torch.zeros(b, dtype=torch.int64, device=dev)
    longest = 0
    for k in range(u):
        run = torch.where(opt[:, k], run + 1, torch.zeros_like(run))
        longest = max(longest, int(run.max()) if b else 0)
    prev_skip = _shift_right(skip, _NEG)  # skip(u - 1)
    neg = torch.full((b, u), _NEG, dtype=value.dtype, device=dev)

    def scan(e: Tensor, src: Tensor) -> tuple[Tensor, Tensor]:
        for _ in range(longest):
            cand = _shift_right(e, _NEG) + prev_skip
            better = cand > e
            e = torch.where(better, cand, e).clamp_min(_NEG)
            src = torch.where(better, _shift_right(src, -1), src)
        return e, src

    # Frame 0: start on token 0, or on a later one by skipping every token before it.
    e0 = neg.clone()
    e0[:, 0] = 0.0
    e0, _ = scan(e0, torch.full((b, u), -1, dtype=torch.int64, device=dev))
    acc = torch.where(tok_valid, e0 + value[:, :, 0], neg)
    src_all = torch.full((b, u, t), -1, dtype=torch.int64, device=dev)
    for j in range(1, t):
        s = acc + stay[:, :, j]
        m = _shift_right(acc, _NEG) + _shift_right(move[:, :, j], 0.0)
        m = torch.where(tok == 0, neg, m)
        e, src = scan(m, (tok - 1).clone())
        from_stay = s >= e
        new = torch.where(from_stay, s, e) + value[:, :, j]
        new = torch.where(tok_valid, new.clamp_min(_NEG), neg)
        live = (j < ml).unsqueeze(1)
        acc = torch.where(live, new, acc)
        src_all[:, :, j] = torch.where(from_stay, tok, src)
    # End: the last valid token, or an earlier one with every later token skipped.
    tail_skip = torch.where(tok_valid, skip, torch.zeros_like(skip))
    tail = torch.flip(torch.cumsum(torch.flip(tail_skip, [1]), 1), [1])  # sum_{k >= u} skip(k)
    tail = torch.cat([tail[:, 1:], torch.zeros_like(tail[:, :1])], dim=1)  # sum_{k > u}
    end = torch.where(tok_valid, acc + tail, torch.full_like(acc, -float("inf")))
    cur = u - 1 - torch.argmax(torch.flip(end, [1]), dim=1)
    path = torch.zeros(b, u, t, dtype=value.dtype, device=dev)
    bidx = torch.arange(b, device=dev)
    for j in range(t - 1, -1, -1):
        live = j < ml
        path[bidx[live], cur[live], j] = 1.0
        if j > 0:
            cur = torch.where(live, src_all[bidx, cur, j], cur)
    return path


def _viterbi(
    value: Tensor, stay: Tensor, move: Tensor, tl: Tensor, ml: Tensor, name: str
) -> Tensor:
    """The one monotonic Viterbi: float64 ``(N, U, T)`` sanitised scores -> float64 one-hot path.

    ``name`` is a resolved ``"viterbi"`` implementation (``"torch"``: :func:`_viterbi_torch`,
    the spec; else a kernel from :mod:`speechattn.kernels`).
    """
    if name == "torch":
        return _viterbi_torch(value, stay, move, tl, ml)
    path = kernels.load("viterbi", name).viterbi(value, stay, move, tl, ml)
    return path.to(value.device)


def _viterbi_skip(
    value: Tensor, stay: Tensor, move: Tensor, skip: Tensor, tl: Tensor, ml: Tensor, name: str
) -> Tensor:
    """:func:`_viterbi` with skip transitions (``skip`` float64 ``(N, U)``, see
    :func:`_viterbi_skip_torch`, the spec)."""
    if name == "torch":
        return _viterbi_skip_torch(value, stay, move, skip, tl, ml)
    path = kernels.load("viterbi", name).viterbi_skip(value, stay, move, skip, tl, ml)
    return path.to(value.device)


def _check_skippable(
    skippable_mask: Tensor | None,
    log_skip: float | Tensor,
    tl: Tensor,
    ml: Tensor,
    b: int,
    u: int,
    device: torch.device,
) -> Tensor | None:
    """float64 ``(B, U)`` skip scores (``_NEG`` where a token must take a frame), or ``None``
    when no valid token is optional (then the path is the plain monotonic Viterbi's)."""
    if skippable_mask is None:
        return None
    if not isinstance(skippable_mask, Tensor) or skippable_mask.dtype != torch.bool:
        raise TypeError(
            "Expected skippable_mask to be a bool tensor (B, U), True = the token may take 0 "
            f"frames; found {getattr(skippable_mask, 'dtype', type(skippable_mask).__name__)}."
        )
    if tuple(skippable_mask.shape) != (b, u):
        raise ValueError(
            f"Expected skippable_mask of shape (B, U) = {(b, u)}; found "
            f"{tuple(skippable_mask.shape)}."
        )
    if skippable_mask.device != device:
        raise ValueError(
            f"Expected skippable_mask on {device} (the scores' device); found "
            f"{skippable_mask.device}."
        )
    opt = skippable_mask & lengths_to_valid_mask(tl, u)
    if not bool(opt.any()):
        return None
    if isinstance(log_skip, Tensor):
        if tuple(log_skip.shape) not in ((), (b, u)):
            raise ValueError(
                f"Expected log_skip to be a float or a (B, U) = {(b, u)} tensor; found shape "
                f"{tuple(log_skip.shape)}."
            )
        ls = log_skip.detach().to(device=device, dtype=torch.float64).expand(b, u)
    else:
        ls = torch.full((b, u), float(log_skip), dtype=torch.float64, device=device)
    if not bool(torch.isfinite(ls[opt]).all()):
        raise ValueError("Expected finite log_skip scores on skippable tokens; found inf or NaN.")
    return torch.where(opt, ls, torch.full_like(ls, _NEG))


def _prep_transitions(
    log_stay: Tensor | None, log_move: Tensor | None, ref: Tensor
) -> tuple[Tensor, Tensor]:
    zeros = torch.zeros_like(ref)
    stay = zeros if log_stay is None else log_stay
    move = zeros if log_move is None else log_move
    for name, x in (("log_stay", stay), ("log_move", move)):
        if x.shape != ref.shape:
            raise ValueError(
                f"Expected {name} of shape {tuple(ref.shape)} (B, U, T); found {tuple(x.shape)}."
            )
    return stay, move


def monotonic_hmm_viterbi(
    log_emission: Tensor,
    log_stay: Tensor | None = None,
    log_move: Tensor | None = None,
    text_lengths: Tensor | None = None,
    mel_lengths: Tensor | None = None,
    *,
    skippable_mask: Tensor | None = None,
    log_skip: float | Tensor = 0.0,
    impl: str = "auto",
) -> AlignmentPath:
    """Most likely monotonic path under emissions and stay/move transition scores.

    Score of a path ``u(0) = 0, ..., u(M-1) = U_b - 1`` (each step stays or advances one token):
    ``sum_t log_emission[u(t), t] + sum_{t>0} (log_stay[u(t), t] if u(t) == u(t-1) else log_move[u(t-1), t])``.
    Ties prefer staying. Not differentiable (the output is a hard path; compute it under ``no_grad``).

    Optional tokens (``skippable_mask``): the path may pass such a token with 0 frames. Moving
    at frame ``t`` from token ``a`` to token ``c > a + 1`` over optional tokens ``a+1 .. c-1``
    scores ``log_move[a, t]`` plus ``log_skip`` of each skipped token; leading optional tokens may
    be skipped at frame 0 (the path starts on the first token it occupies) and trailing ones at
    the end (the path ends on the last token it occupies), each adding its ``log_skip``. Ties
    prefer staying, then the direct move, then the shorter skip, then ending on the later token.
    Without optional tokens this is exactly the plain path above.

    Args:
        log_emission: float ``(B, U, T)``.
        log_stay: float ``(B, U, T)`` log probability of staying on token ``u`` at frame ``t``
            (e.g. ``log p_t(u)`` of SMA), or ``None`` for 0.
        log_move: float ``(B, U, T)`` log probability of leaving token ``u`` at frame ``t``
            (e.g. ``log(1 - p_t(u))``), or ``None`` for 0.
        text_lengths, mel_lengths: int64 ``(B,)``; ``mel_lengths >= text_lengths`` (else
            ``ValueError``), or with ``skippable_mask``, ``mel_lengths >=`` the number of valid
            tokens that are not optional.
        skippable_mask: optional bool ``(B, U)``, True = the token may take 0 frames (a pause or
            an edge silence); padding is ignored. ``None``: every token takes ``>= 1`` frame.
        log_skip: score added for each optional token passed with 0 frames: a float or a float
            ``(B, U)`` tensor (0: a pause of 0 frames costs nothing beyond the move).
        impl: ``"auto"`` (numba on CPU when installed, else torch), ``"numba"`` or ``"torch"``.

    Returns:
        :class:`AlignmentPath` with ``path`` in ``log_emission``'s dtype and device.

    Example (naive equivalent, one item, no optional tokens)::

        # best = max over monotonic paths u(0)=0 <= u(1) <= ... <= u(M-1)=U-1, steps of 0 or 1
        #        of sum_t log_emission[u(t), t] + transition scores

    """
    b, u, t = _check_scores(log_emission, "log_emission")
    device = log_emission.device
    tl, ml = _check_lengths_pair(text_lengths, mel_lengths, b, u, t, device, "log_emission")
    skip = _check_skippable(skippable_mask, log_skip, tl, ml, b, u, device)
    if skip is None:
        _check_enough_frames(ml, tl)
    else:
        need = (skip <= _NEG / 2).logical_and(lengths_to_valid_mask(tl, u)).sum(1)
        _check_enough_frames(ml, need, skippable=True)
    stay, move = _prep_transitions(log_stay, log_move, log_emission)
    name = kernels.resolve("viterbi", impl, log_emission.device.type)
    with torch.no_grad():
        valid = lengths_to_valid_mask(tl, u).unsqueeze(-1) & lengths_to_valid_mask(ml, t).unsqueeze(
            1
        )
        zero = torch.zeros((), dtype=torch.float64, device=log_emission.device)
        v = torch.where(valid, log_emission.detach().double(), zero)
        s = torch.where(valid, stay.detach().double(), zero)
        m = torch.where(valid, move.detach().double(), zero)
        if skip is None:
            path = _viterbi(v, s, m, tl, ml, name)
        else:
            path = _viterbi_skip(v, s, m, skip, tl, ml, name)
        durations = path.sum(-1).round().to(torch.int64)
        return AlignmentPath(path.to(log_emission.dtype), durations)


def monotonic_alignment_search(
    log_attn: Tensor,
    text_lengths: Tensor | None = None,
    mel_lengths: Tensor | None = None,
    *,
    skippable_mask: Tensor | None = None,
    log_skip: float | Tensor = 0.0,
    impl: str = "auto",
) -> AlignmentPath:
    """Monotonic alignment search (Glow-TTS MAS): the best monotonic path through ``log_attn``.

    Maximises ``sum_t log_attn[u(t), t]`` over paths that start on token 0 at frame 0, stay or advance
    exactly one token per frame, and end on the last valid token at the last valid frame. Every valid
    token gets at least one frame; durations sum to ``mel_lengths``. Equals
    :func:`monotonic_hmm_viterbi` with no transition scores.

    Args:
        log_attn: float ``(B, U, T)`` (log-probabilities or any scores; padding ignored).
        text_lengths, mel_lengths: int64 ``(B,)``; ``mel_lengths >= text_lengths``.
        skippable_mask, log_skip: optional tokens that may take 0 frames (see
            :func:`monotonic_hmm_viterbi`).
        impl: ``"auto"``, ``"numba"`` or ``"torch"``.

    Returns:
        :class:`AlignmentPath` (not differentiable).
    """
    return monotonic_hmm_viterbi(
        log_attn,
        None,
        None,
        text_lengths,
        mel_lengths,
        skippable_mask=skippable_mask,
        log_skip=log_skip,
        impl=impl,
    )


def monotonic_hmm_log_likelihood(
    log_emission: Tensor,
    log_stay: Tensor | None = None,
    log_move: Tensor | None = None,
    text_lengths: Tensor | None = None,
    mel_lengths: Tensor | None = None,
    *,
    impl: str = "auto",
) -> Tensor:
    """Log of the total score of all monotonic paths (the HMM forward algorithm), per item.

    ``log a_0(u) = log_emission[0, 0]`` if ``u == 0`` else ``-inf``;
    ``log a_t(u) = logsumexp(log a_{t-1}(u) + log_stay[u, t], log a_{t-1}(u-1) + log_move[u-1, t])
    + log_emission[u, t]``; the result is ``log a_{M-1}(U_b - 1)``. With ``log_stay = log p`` and
    ``log_move = log(1 - p)`` this is the stepwise monotonic attention recurrence (He et al. 2019, Eq. 8)
    weighted by emissions, with the path forced to end on the last token.

    Args:
        log_emission: float ``(B, U, T)``.
        log_stay, log_move: float ``(B, U, T)`` or ``None`` (0).
        text_lengths, mel_lengths: int64 ``(B,)``, ``mel_lengths >= text_lengths``.
        impl: ``"torch"`` (autograd through a loop over frames, vectorised over batch and tokens; the
            spec), ``"numba"`` (compiled forward-backward in float64 whose gradients are the state and
            transition posteriors; CPU tensors), or ``"auto"`` (numba for CPU inputs when installed).

    Returns:
        float ``(B,)`` log-likelihoods (float32 or float64; lower precisions are computed in
        float32), differentiable w.r.t. all score inputs. The gradient w.r.t.
        ``log_emission`` is the posterior occupancy of each (token, frame).
    """
    b, u, t = _check_scores(log_emission, "log_emission")
    tl, ml = _check_pair(text_lengths, mel_lengths, b, u, t, log_emission.device, "log_emission")
    stay, move = _prep_transitions(log_stay, log_move, log_emission)
    if log_emission.dtype not in (torch.float32, torch.float64):
        # float16 cannot hold the "log 0" of -1e30 (nor long sums of log-scores): float32
        log_emission, stay, move = log_emission.float(), stay.float(), move.float()
    name = kernels.resolve("hmm_forward_backward", impl, log_emission.device.type)
    dev, dt = log_emission.device, log_emission.dtype
    tok_valid = lengths_to_valid_mask(tl, u).unsqueeze(-1)
    frame_valid = lengths_to_valid_mask(ml, t).unsqueeze(1)
    neg = torch.full((b, 1), _NEG, dtype=dt, device=dev)
    zero = torch.zeros((), dtype=dt, device=dev)
    # Padding content never matters: padded frames/tokens are overwritten before use.
    emis = torch.where(frame_valid, log_emission, zero).masked_fill(~tok_valid, _NEG)
    stay = torch.where(frame_valid & tok_valid, stay, zero)
    move = torch.where(frame_valid & tok_valid, move, zero)
    first = torch.full((b, u), _NEG, dtype=dt, device=dev)
    first[:, 0] = 0.0
    if name != "torch":
        return kernels.load("hmm_forward_backward", name).hmm_log_likelihood(
            emis, stay, move, tl, ml
        )
    acc = first + emis[:, :, 0]
    result = torch.where(
        ml == 1,
        acc.gather(1, (tl - 1).unsqueeze(1)).squeeze(1),
        torch.zeros(b, dtype=dt, device=dev),
    )
    for j in range(1, t):
        s = acc + stay[:, :, j]
        m = torch.cat([neg, acc[:, :-1] + move[:, :-1, j]], dim=1)
        acc = torch.logaddexp(s, m) + emis[:, :, j]
        acc = acc.clamp_min(_NEG)
        end_here = ml == j + 1
        if bool(end_here.any()):
            val = acc.gather(1, (tl - 1).unsqueeze(1)).squeeze(1)
            result = torch.where(end_here, val, result)
    return result


def uniform_durations(
    text_lengths: Tensor, mel_lengths: Tensor, max_tokens: int | None = None
) -> Tensor:
    """Integer durations splitting each item's frames as evenly as possible (the floor baseline).

    Args:
        text_lengths: int64 ``(B,)`` tokens per item, ``>= 1``.
        mel_lengths: int64 ``(B,)`` frames per item, ``>= 1``; with fewer frames than tokens
            some tokens get 0 frames.
        max_tokens: padded token count ``U`` of the output (default ``max(text_lengths)``).

    Returns:
        int64 ``(B, U)``: each row sums to ``mel_lengths[b]``; padded tokens get 0.
    """
    for name, x in (("text_lengths", text_lengths), ("mel_lengths", mel_lengths)):
        if not isinstance(x, Tensor) or x.dtype.is_floating_point or x.dtype == torch.bool:
            raise TypeError(
                f"Expected {name} to be an integer tensor (B,); found "
                f"{getattr(x, 'dtype', type(x).__name__)}."
            )
    if text_lengths.dim() != 1 or text_lengths.shape != mel_lengths.shape:
        raise ValueError(
            "Expected text_lengths and mel_lengths of one shape (B,); found "
            f"{tuple(text_lengths.shape)} and {tuple(mel_lengths.shape)}."
        )
    if max_tokens is None:
        u = int(text_lengths.max()) if text_lengths.numel() else 0
    else:
        u = max_tokens
    check_lengths(text_lengths, "text_lengths", batch=text_lengths.shape[0], max_len=u)
    if bool((mel_lengths < 1).any()):
        i = int((mel_lengths < 1).nonzero()[0, 0])
        raise ValueError(
            f"Expected mel_lengths[b] >= 1; found mel_lengths[{i}] = {int(mel_lengths[i])}."
        )
    idx = torch.arange(u, device=text_lengths.device).unsqueeze(0)
    tlf = text_lengths.unsqueeze(1).double()
    mlf = mel_lengths.unsqueeze(1).double()
    edges = torch.floor((idx + 1) * mlf / tlf + 1e-9)
    start = torch.floor(idx * mlf / tlf + 1e-9)
    d = (edges - start).to(torch.int64)
    return torch.where(idx < text_lengths.unsqueeze(1), d, torch.zeros_like(d))
