"""Optional pause tokens for hard alignment: which tokens may take 0 frames, and where pauses go.

Every aligner token sequence is ``<sil> phones... <sil>`` (with ``<sp>`` between words when the
aligner's front end has ``word_silences``). The ``pauses`` setting of decoding says what the
Viterbi path may do with the tokens that are not phones:

- ``"auto"`` (the ``speechattn align`` default, with or without adaptation): a pause token sits between every two
  words
  (the aligner's own ``<sp>``, or, when it was trained without one, an inserted copy of its
  edge-silence symbol ``<sil>``, the token it learned silence on), and every pause and edge
  silence is optional: it takes the frames of a pause in the audio, or 0 frames when there is
  none. A pause in the audio becomes a pause interval instead of being absorbed into a word.
  A pause shorter than a minimum (``speechattn align --min-pause-ms``, default 50 ms) is not
  one: the path would otherwise put a few silent-looking frames (a stop's closure, a weak
  onset) into a pause token between two words that meet, ending the first word early and
  starting the second late; such utterances are decoded a second time with a pause token only
  where the first pass found a long enough pause. A pause must also be quiet: one with no frame
  near the utterance's quietest ones (``speechattn align --max-pause-loudness``, :func:`frame_loudness`)
  is a stop's closure or a weak onset, not a pause, and its frames are split between the two
  words, which then meet in its middle (:func:`split_word_pauses`).
- ``"none"``: no pause token is inserted; the edge silences (and an aligner's own ``<sp>``) are
  optional.
- ``"forced"``: the tokens as the aligner was trained, each taking at least one frame (every
  edge silence and ``<sp>`` gets a frame even where the audio has none).

Training never sees inserted tokens: they exist only at decoding, where
:func:`~speechattn.functional.alignment.monotonic_hmm_viterbi` takes them through its
``skippable_mask``. Pause intervals are labelled as the Montreal Forced Aligner labels them in its
``phones`` tier: ``sil`` for the leading and trailing silence, ``sp`` between words; the ``words``
tier shows them as empty intervals.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Sequence

import numpy as np
import torch
from torch import Tensor

from speechattn.recipes.align.data import AlignItem

__all__ = [
    "DEFAULT_MAX_PAUSE_LOUDNESS",
    "DEFAULT_MIN_PAUSE_S",
    "DEFAULT_PAUSE_SKIP",
    "LOUDNESS_FLOOR_PERCENTILE",
    "PAUSE_LABELS",
    "PAUSE_MODES",
    "check_pause_mode",
    "frame_loudness",
    "loud_word_pauses",
    "min_pause_frames",
    "pause_intervals",
    "pause_labels",
    "short_word_pauses",
    "split_word_pauses",
    "with_pauses",
]

PAUSE_MODES = ("auto", "none", "forced")
# Viterbi score of passing an optional pause with 0 frames (see benchmarks/RESULTS.md,
# "Aligner pauses and adaptation").
DEFAULT_PAUSE_SKIP = 0.0
# Shortest pause between words that ``"auto"`` keeps (seconds): a shorter one is decoded again
# as no pause (see benchmarks/RESULTS.md, "Late boundaries on unseen engines").
DEFAULT_MIN_PAUSE_S = 0.05
# Loudest a pause between words may be at its quietest frame (:func:`frame_loudness`: 0 = the
# utterance's 5th-percentile frame, 1 = its median frame); a louder one is split between its two words
# (see benchmarks/RESULTS.md, "Word-boundary error on unseen engines: what it is made of").
DEFAULT_MAX_PAUSE_LOUDNESS = 0.3
# The frame of :func:`frame_loudness` 0: this percentile of the utterance's frames (its quietest
# frame alone is an outlier in noise: at 10 dB SNR the real pauses sit well above it).
LOUDNESS_FLOOR_PERCENTILE = 5.0
PAUSE_LABELS = {"edge": "sil", "between": "sp"}


def min_pause_frames(seconds: float, frame_s: float) -> int:
    """The fewest frames of a kept pause: ``ceil(seconds / frame_s)`` (0 keeps every pause)."""
    if not seconds >= 0:
        raise ValueError(f"Expected a minimum pause >= 0 seconds; found {seconds}.")
    return math.ceil(seconds / frame_s - 1e-9) if seconds > 0 else 0


def check_pause_mode(mode: str) -> str:
    """``mode`` when it is one of :data:`PAUSE_MODES`, else ``ValueError``."""
    if mode not in PAUSE_MODES:
        raise ValueError(f"Expected pauses in {PAUSE_MODES}; found {mode!r}.")
    return mode


def pause_labels(item: AlignItem) -> dict[int, str]:
    """Token index -> pause label (``sil`` at the edges, ``sp`` between words) for every token of
    ``item`` that is not a phone."""
    phones = set(item.phone_token_index)
    n = int(item.tokens.shape[0])
    return {
        k: PAUSE_LABELS["edge"] if k in (0, n - 1) else PAUSE_LABELS["between"]
        for k in range(n)
        if k not in phones
    }


def with_pauses(
    item: AlignItem, mode: str, *, words: Collection[int] | None = None
) -> tuple[AlignItem, Tensor]:
    """The item to decode under ``mode`` and its bool ``(U,)`` skippable mask (True = may take 0
    frames).

    ``"auto"`` inserts a pause token before the first phone of every word after the first unless a
    non-phone token is already there; the inserted token is the item's own edge-silence symbol
    (``item.tokens[0]``); nothing is inserted when the item has fewer frames than the longer
    token sequence would need. ``words`` (``"auto"`` only): insert before these word indices
    (``1 .. len(item.words) - 1``) only; ``None`` (default): before every word after the first.
    ``phone_token_index`` of the returned item points at the same phones in the new token
    sequence; words, phones and ground truth are unchanged.
    """
    check_pause_mode(mode)
    n = int(item.tokens.shape[0])
    if mode == "forced":
        return item, torch.zeros(n, dtype=torch.bool)
    if mode == "auto":
        item = _insert_word_pauses(item, words)
        n = int(item.tokens.shape[0])
    skippable = torch.ones(n, dtype=torch.bool)
    skippable[torch.as_tensor(item.phone_token_index, dtype=torch.int64)] = False
    return item, skippable


def _insert_word_pauses(item: AlignItem, words: Collection[int] | None = None) -> AlignItem:
    tokens = item.tokens.tolist()
    pidx = list(item.phone_token_index)
    starts = {
        pidx[a]
        for w, (_, a, b) in enumerate(item.words)
        if w > 0 and b > a and (words is None or w in words)
    }
    is_phone = set(pidx)
    pause_id = tokens[0]
    new_tokens: list[int] = []
    remap: dict[int, int] = {}
    for k, tok in enumerate(tokens):
        if k in starts and (k - 1) in is_phone:  # two words meet with no pause token between
            new_tokens.append(pause_id)
        remap[k] = len(new_tokens)
        new_tokens.append(tok)
    if len(new_tokens) == len(tokens) or len(new_tokens) > int(item.mel.shape[0]):
        return item  # nothing to insert, or too few frames for the extra tokens
    return dataclasses.replace(
        item,
        tokens=torch.tensor(new_tokens, dtype=item.tokens.dtype),
        phone_token_index=[remap[k] for k in pidx],
    )


def short_word_pauses(item: AlignItem, durations: Sequence[int] | np.ndarray, min_frames: int):
    """Word indices ``w`` whose pause token before word ``w`` (an inserted or own pause between
    words) took between 1 and ``min_frames - 1`` frames on a decoded path, and the word indices
    whose pause took ``min_frames`` or more.

    Returns:
        ``(short, kept)``: two sets of word indices (``1 .. len(item.words) - 1``).
    """
    pidx = list(item.phone_token_index)
    phones = set(pidx)
    short: set[int] = set()
    kept: set[int] = set()
    for w, (_, a, b) in enumerate(item.words):
        if w == 0 or b <= a:
            continue
        k = pidx[a] - 1
        if k <= 0 or k in phones:
            continue
        d = int(durations[k])
        if 0 < d < min_frames:
            short.add(w)
        elif d >= min_frames:
            kept.add(w)
    return short, kept


def frame_loudness(mel: Tensor) -> np.ndarray:
    """Relative loudness ``(T,)`` of an utterance's frames from the aligner's normalised log-mel
    ``(T, n_mels)``: 0 for its quiet frames (the 5th percentile of its frames,
    :data:`LOUDNESS_FLOOR_PERCENTILE`; not its quietest frame alone, an outlier in noisy audio),
    1 for its median frame; quieter frames are negative.

    The aligner's features are normalised per utterance, so the absolute level is gone; the mean
    over bins of the normalised log-mel still orders frames by loudness. Scaling it between the
    utterance's quiet and median frames makes it independent of the recording level and of any
    affine map of the frames' means (a fixed gain, the normalisation, bins a band mask set to
    0 in every frame). An utterance whose frames are all alike gives 0 everywhere.
    """
    if mel.dim() != 2:
        raise ValueError(f"Expected mel of shape (T, n_mels); found {tuple(mel.shape)}.")
    q = mel.detach().double().mean(-1).cpu().numpy()
    if q.size == 0:
        return q
    lo, mid = float(np.percentile(q, LOUDNESS_FLOOR_PERCENTILE)), float(np.median(q))
    if mid - lo <= 1e-9:
        return np.zeros_like(q)
    return (q - lo) / (mid - lo)


def _between_word_pauses(item: AlignItem, durations: np.ndarray):
    """``(word index, pause token)`` of each pause token that took frames between two words whose
    neighbouring tokens are phones."""
    pidx = list(item.phone_token_index)
    phones = set(pidx)
    for w, (_, a, b) in enumerate(item.words):
        if w == 0 or b <= a:
            continue
        k = pidx[a] - 1
        if k <= 0 or k in phones or (k - 1) not in phones or int(durations[k]) <= 0:
            continue
        yield w, k


def loud_word_pauses(
    item: AlignItem, durations: Sequence[int] | np.ndarray, max_loudness: float
) -> set[int]:
    """Word indices ``w`` whose pause token before word ``w`` took frames on a decoded path and
    has no frame at most ``max_loudness`` loud (:func:`frame_loudness`: 0 = the utterance's
    5th-percentile frame, 1 = its median frame).

    Such a stretch between two words is speech, not a pause: on held-out speech engines it is
    the closure of a word-initial stop or a weak onset (/w s k r/) that the pause token took.
    """
    d = np.asarray(durations, dtype=np.int64)
    if d.shape != (int(item.tokens.shape[0]),):
        raise ValueError(
            f"Expected durations of shape ({int(item.tokens.shape[0])},) (one per token); "
            f"found {tuple(d.shape)}."
        )
    loud = frame_loudness(item.mel)
    starts = np.concatenate([[0], np.cumsum(d)])
    return {
        w
        for w, k in _between_word_pauses(item, d)
        if float(loud[starts[k] : starts[k + 1]].min()) > max_loudness
    }


def split_word_pauses(
    item: AlignItem, durations: Sequence[int] | np.ndarray, words: Collection[int]
) -> np.ndarray:
    """Durations ``(U,)`` with the frames of the pause token before each word in ``words`` given
    to its two words: the later half (one more frame when odd) to the first phone after it, the
    rest to the last phone before it, so the words meet in the pause's middle (half a frame
    before it when odd)."""
    d = np.asarray(durations, dtype=np.int64).copy()
    for w, k in _between_word_pauses(item, d):
        if w in words:
            nxt = (int(d[k]) + 1) // 2
            d[k - 1] += int(d[k]) - nxt
            d[k + 1] += nxt
            d[k] = 0
    return d


def pause_intervals(
    item: AlignItem,
    edges: Sequence[float] | np.ndarray,
    durations: Sequence[int] | np.ndarray,
) -> list[tuple[float, float, str]]:
    """``(start, end, label)`` of each pause token that took frames, given the token edges
    (seconds, ``U + 1``) of a decoded path."""
    out = []
    for k, lab in sorted(pause_labels(item).items()):
        if int(durations[k]) > 0 and edges[k + 1] > edges[k]:
            out.append((float(edges[k]), float(edges[k + 1]), lab))
    return out
