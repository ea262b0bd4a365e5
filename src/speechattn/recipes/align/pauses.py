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
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from speechattn.recipes.align.data import AlignItem

__all__ = [
    "DEFAULT_PAUSE_SKIP",
    "PAUSE_LABELS",
    "PAUSE_MODES",
    "check_pause_mode",
    "pause_intervals",
    "pause_labels",
    "with_pauses",
]

PAUSE_MODES = ("auto", "none", "forced")
# Viterbi score of passing an optional pause with 0 frames (see benchmarks/RESULTS.md,
# "Aligner pauses and adaptation").
DEFAULT_PAUSE_SKIP = 0.0
PAUSE_LABELS = {"edge": "sil", "between": "sp"}


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


def with_pauses(item: AlignItem, mode: str) -> tuple[AlignItem, Tensor]:
    """The item to decode under ``mode`` and its bool ``(U,)`` skippable mask (True = may take 0
    frames).

    ``"auto"`` inserts a pause token before the first phone of every word after the first unless a
    non-phone token is already there; the inserted token is the item's own edge-silence symbol
    (``item.tokens[0]``); nothing is inserted when the item has fewer frames than the longer
    token sequence would need. ``phone_token_index`` of the returned item points at the same phones in
    the new token sequence; words, phones and ground truth are unchanged.
    """
    check_pause_mode(mode)
    n = int(item.tokens.shape[0])
    if mode == "forced":
        return item, torch.zeros(n, dtype=torch.bool)
    if mode == "auto":
        item = _insert_word_pauses(item)
        n = int(item.tokens.shape[0])
    skippable = torch.ones(n, dtype=torch.bool)
    skippable[torch.as_tensor(item.phone_token_index, dtype=torch.int64)] = False
    return item, skippable


def _insert_word_pauses(item: AlignItem) -> AlignItem:
    tokens = item.tokens.tolist()
    pidx = list(item.phone_token_index)
    starts = {pidx[a] for _, a, b in item.words[1:] if b > a}
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
