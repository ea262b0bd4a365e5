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
  where the first pass found a long enough pause.
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
    "DEFAULT_MIN_PAUSE_S",
    "DEFAULT_PAUSE_SKIP",
    "PAUSE_LABELS",
    "PAUSE_MODES",
    "check_pause_mode",
    "min_pause_frames",
    "pause_intervals",
    "pause_labels",
    "short_word_pauses",
    "with_pauses",
]

PAUSE_MODES = ("auto", "none", "forced")
# Viterbi score of passing an optional pause with 0 frames (see benchmarks/RESULTS.md,
# "Aligner pauses and adaptation").
DEFAULT_PAUSE_SKIP = 0.0
# Shortest pause between words that ``"auto"`` keeps (seconds): a shorter one is decoded again
# as no pause (see benchmarks/RESULTS.md, "Late boundaries on unseen engines").
DEFAULT_MIN_PAUSE_S = 0.05
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
