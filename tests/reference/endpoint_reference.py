"""Slow loop reference of the endpoint rule (:func:`speechattn.recipes.align.edges.speech_endpoints`
and the clamp of ``place_silence_edges(..., endpoint=True)``), written from the rule in plain
Python floats (float64): level under the speech percentile, the guard, the earliest sustained
rise and the latest sustained fall, linear interpolation, then the first word's start and the
last word's end held inside them."""

from __future__ import annotations

import math

__all__ = ["clamp_ends_ref", "speech_endpoints_ref"]


def _percentile(values: list[float], p: float) -> float:
    """Linear-interpolation percentile (numpy's default)."""
    s = sorted(values)
    pos = p / 100.0 * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def speech_endpoints_ref(
    level_db: list[float],
    hop_s: float,
    *,
    below_db: float,
    speech_pct: float,
    floor_pct: float,
    margin_db: float,
    run: int,
) -> tuple[float | None, float | None]:
    """(onset, offset) in seconds of an envelope ``level_db`` (one value every ``hop_s``)."""
    n = len(level_db)
    if n < 2:
        return None, None
    speech = _percentile(level_db, speech_pct)
    floor = _percentile(level_db, floor_pct)
    if speech - floor < below_db + margin_db:
        return None, None
    level = speech - below_db
    onset = offset = None
    for j in range(n):
        if all(level_db[i] >= level for i in range(j, min(j + run, n))):
            if j > 0:
                a, b = level_db[j - 1], level_db[j]
                onset = (j - 1 + (level - a) / (b - a)) * hop_s
            break
    for j in range(n - 1, -1, -1):
        if all(level_db[i] >= level for i in range(max(0, j - run + 1), j + 1)):
            if j < n - 1:
                a, b = level_db[j], level_db[j + 1]
                offset = (j + (a - level) / (a - b)) * hop_s
            break
    return onset, offset


def clamp_ends_ref(
    start: float,
    first_phone_end: float,
    end: float,
    last_phone_start: float,
    onset: float | None,
    offset: float | None,
    frame_s: float,
) -> tuple[float, float]:
    """The utterance's (first word start, last word end) after the endpoint rule."""
    if onset is not None and start < onset:
        start = max(start, min(onset, first_phone_end - frame_s / 2))
    if offset is not None and end > offset:
        end = min(end, max(offset, last_phone_start + frame_s / 2))
    return start, end
