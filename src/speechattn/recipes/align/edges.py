"""Word edges where speech meets silence, placed on the audio's energy envelope.

The aligner decodes on frames of ``hop / sample_rate`` seconds (11.6 ms for the shipped one) and
its objective has no labels, so nothing in it says where, inside the frames where a word fades
into a pause, the word ends. The waveform does: a fine energy envelope (a 5 ms window every
~1 ms, :func:`energy_envelope`) falls below the utterance's speech level by a fixed amount where
the sound stops. :func:`place_silence_edges` moves two kinds of decoded word edges to that point:

- a word **end before silence** (a pause token that took frames, or the utterance's last word)
  goes to the last point, within :data:`END_SEARCH_FRAMES` frames (up to 4 back into the word, up
  to 8 on into the silence), where the envelope falls below ``level_db`` dB under the
  utterance's speech level after staying above it for :data:`MIN_RUN_S`;
- a word **start after silence** goes, within :data:`START_SEARCH_FRAMES` (only back into the
  silence, up to 4 frames), to the first point where the envelope rises to that level and stays
  there for :data:`MIN_RUN_S`.

No crossing in the window leaves the edge where the decoder put it. With ``endpoint`` (the
**endpoint rule**, :func:`speech_endpoints`), the utterance's first word then cannot start
before the audio's speech onset (the earliest rise to the same level that stays there for
:data:`MIN_RUN_S`) and its last word cannot end after its speech offset (the latest fall below
it after :data:`MIN_RUN_S` above it), wherever the decoder put them: an edge decoded many frames
into the opening or closing silence, beyond the search windows, moves onto the crossing. The level is relative to
the utterance, so a recording's gain does not matter: its speech level is the
:data:`SPEECH_PERCENTILE`-th percentile of its envelope (not the median, which a file with more
silence than speech puts in the silence), its quiet level the :data:`FLOOR_PERCENTILE`-th. An
utterance whose speech level is less than ``level_db`` + :data:`MIN_RANGE_MARGIN_DB` dB above its
quiet level (noise, or reverberation filling the pauses: no silence to speak of) keeps every
edge. Edges between two words that meet, and pauses that the decoder passed (0 frames), are not
touched; only the intervals move, the frame path (durations) stays as decoded.

The level (35 dB), the speech percentile, the windows and the sustain time were chosen on speech
engines held out of the aligner's training (benchmarks/RESULTS.md, "The aligner's tail at
silence edges"). The endpoint rule reuses them unchanged (nothing of it was tuned) and is on in
align's default decoding (:data:`DEFAULT_ENDPOINT`), adopted on engines held out of training
(benchmarks/RESULTS.md, "endpoint").

Boundaries inside speech (optional, off by default): :func:`refine_boundaries` moves each word
boundary where two words meet, and each phone boundary inside a word, to the strongest peak of
the utterance's spectral transition measure (:func:`spectral_transition`: the mean squared
regression slope of a 5 ms log-mel trajectory over +-20 ms, after Dusan & Rabiner, "On the
relation between maximum spectral transition positions and phone boundaries", Interspeech 2006)
within a radius of the decoded boundary, when that peak is above the utterance's median
transition, never past the neighbouring boundaries. Its settings were chosen on synthetic speech
engines; it helps an engine whose labels sit on spectral changes and not one whose labels do not
(benchmarks/RESULTS.md, "Boundaries where two words meet, on the audio's spectral change").
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from torch import Tensor

from speechattn.recipes.align.data import AlignItem

__all__ = [
    "DECAY_BOTTOM_DB",
    "DECAY_FLOOR_MARGIN_DB",
    "DECAY_MIN_SPAN_DB",
    "DECAY_SMOOTH_S",
    "DECAY_TOP_DB",
    "DEFAULT_ENDPOINT",
    "DEFAULT_REFINE_FRACTION",
    "DEFAULT_REFINE_RADIUS_S",
    "DEFAULT_SILENCE_EDGE_DB",
    "END_SEARCH_FRAMES",
    "ENVELOPE_HOP_S",
    "ENVELOPE_WINDOW_S",
    "FLOOR_PERCENTILE",
    "MAX_REFINE_RADIUS_S",
    "MIN_RANGE_MARGIN_DB",
    "MIN_RUN_S",
    "REFINE_PERCENTILE",
    "SPEECH_PERCENTILE",
    "START_SEARCH_FRAMES",
    "TRANSITION_CONTEXT",
    "TRANSITION_FLOOR_DB",
    "TRANSITION_HOP_S",
    "TRANSITION_MELS",
    "TRANSITION_WINDOW_S",
    "EnergyEnvelope",
    "SpectralTransition",
    "check_refine_fraction",
    "check_refine_radius_s",
    "check_silence_edge_db",
    "energy_envelope",
    "estimate_decay_time",
    "item_transitions",
    "place_silence_edges",
    "refine_boundaries",
    "refine_boundary_groups",
    "silence_edge_tokens",
    "spectral_transition",
    "speech_endpoints",
]

# How far below the utterance's speech level (dB) a word edge next to silence sits.
DEFAULT_SILENCE_EDGE_DB = 35.0
# The endpoint rule (place_silence_edges' endpoint) is on in align's default decoding.
DEFAULT_ENDPOINT = True
ENVELOPE_WINDOW_S = 0.005
ENVELOPE_HOP_S = 0.001
# The utterance's quiet level and its speech level: these percentiles of its envelope.
FLOOR_PERCENTILE = 5.0
SPEECH_PERCENTILE = 90.0
# Edges are placed only when the speech level is at least level_db + this above the quiet level.
MIN_RANGE_MARGIN_DB = 10.0
# The envelope must stay on the speech side of the level this long (seconds) for a crossing.
MIN_RUN_S = 0.010
# Search windows in aligner frames: (into the word, into the silence).
END_SEARCH_FRAMES = (4, 8)
START_SEARCH_FRAMES = (0, 4)

# The decay-time estimate (estimate_decay_time): the envelope smoothed over this many seconds
# falls from DECAY_TOP_DB under its speech level to DECAY_BOTTOM_DB under it (or to
# DECAY_FLOOR_MARGIN_DB above its quiet level when that is higher); fewer than DECAY_MIN_SPAN_DB
# between the two levels (noise, or pauses filled) and nothing is estimated. The fastest fall
# gives the estimate: a room decays no faster than its RT60, speech can stop more slowly.
DECAY_SMOOTH_S = 0.02
DECAY_TOP_DB = 5.0
DECAY_BOTTOM_DB = 35.0
DECAY_FLOOR_MARGIN_DB = 5.0
DECAY_MIN_SPAN_DB = 8.0

# The spectral transition measure (spectral_transition): a log-mel of TRANSITION_MELS bands over
# TRANSITION_WINDOW_S windows every TRANSITION_HOP_S, floored TRANSITION_FLOOR_DB under its
# loudest bin, and the regression slope of each band over +-TRANSITION_CONTEXT frames.
TRANSITION_HOP_S = 0.005
TRANSITION_WINDOW_S = 0.025
TRANSITION_MELS = 40
TRANSITION_CONTEXT = 4
TRANSITION_FLOOR_DB = 60.0
# refine_boundaries: how far (seconds) a boundary may move, and the percentile of the
# utterance's transition measure a peak must reach to count as clear.
DEFAULT_REFINE_RADIUS_S = 0.030
MAX_REFINE_RADIUS_S = 0.100
REFINE_PERCENTILE = 50.0
# The share of the way from the decoded boundary to the peak that a boundary moves (1: all of it).
DEFAULT_REFINE_FRACTION = 1.0


class SpectralTransition(NamedTuple):
    """An utterance's spectral transition measure: ``value[i]`` is the mean squared slope of the
    log-mel bands around ``i * hop_s`` seconds (larger: the spectrum changes faster)."""

    value: np.ndarray
    hop_s: float


class EnergyEnvelope(NamedTuple):
    """An utterance's short-time energy in dB: ``level_db[i]`` is the mean power of the window
    centred at ``i * hop_s`` seconds."""

    level_db: np.ndarray
    hop_s: float


def check_silence_edge_db(level_db: float | None) -> float | None:
    """``level_db`` when it is None (off) or a finite number > 0, else ``ValueError``."""
    if level_db is None:
        return None
    if isinstance(level_db, (bool, np.bool_)) or not isinstance(level_db, numbers.Real):
        raise TypeError(f"Expected silence_edge_db as a number or None; found {level_db!r}.")
    if not (0 < float(level_db) < math.inf):
        raise ValueError(f"Expected silence_edge_db > 0 dB (finite) or None; found {level_db}.")
    return float(level_db)


def _mono_wave(wave: Tensor | np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """``wave`` ``(n,)`` as a NumPy array and ``sample_rate`` as an int, checked: ``TypeError``
    for samples that are not real numbers (bool, complex); ``ValueError`` for a waveform that is
    not 1-D, empty or not finite, or a rate that is not an int > 0 (NumPy integers accepted)."""
    x = np.asarray(wave.detach().cpu().numpy() if isinstance(wave, Tensor) else wave)
    if x.dtype.kind not in "iuf":
        raise TypeError(
            f"Expected a real waveform (integer or floating samples); found dtype {x.dtype}."
        )
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"Expected a mono waveform of shape (n,), n > 0; found {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError("Expected a finite waveform; found NaN or inf samples.")
    if isinstance(sample_rate, np.integer):
        sample_rate = int(sample_rate)
    if not (isinstance(sample_rate, int) and not isinstance(sample_rate, bool) and sample_rate > 0):
        raise ValueError(f"Expected sample_rate as an int > 0; found {sample_rate!r}.")
    return x, sample_rate


def energy_envelope(
    wave: Tensor | np.ndarray,
    sample_rate: int,
    *,
    window_s: float = ENVELOPE_WINDOW_S,
    hop_s: float = ENVELOPE_HOP_S,
) -> EnergyEnvelope:
    """Short-time energy of a mono waveform ``(n,)``: mean power of ``window_s`` windows centred
    every ``hop_s`` (both rounded to whole samples), in dB (``10 log10(power + 1e-10)``).

    Zero padding beyond the waveform's ends counts as silence. ``ValueError`` for a waveform that
    is not 1-D, empty, or not finite, or a bad rate or window; ``TypeError`` for one whose
    samples are not real numbers (bool, complex).
    """
    x, sample_rate = _mono_wave(wave, sample_rate)
    if not (window_s > 0 and hop_s > 0):
        raise ValueError(f"Expected window_s > 0 and hop_s > 0; found {window_s}, {hop_s}.")
    n = max(1, round(sample_rate * window_s))
    h = max(1, round(sample_rate * hop_s))
    x = x.astype(np.float64)
    c = np.concatenate([[0.0], np.cumsum(np.pad(x * x, (n // 2, n - n // 2)))])
    starts = np.arange(0, x.size, h)
    power = np.maximum(c[starts + n] - c[starts], 0.0) / n
    return EnergyEnvelope(10.0 * np.log10(power + 1e-10), h / sample_rate)


def estimate_decay_time(envelope: EnergyEnvelope) -> float:
    """The recording's reverberation time (RT60, seconds) estimated from its own falls in level;
    0.0 when it has none to measure.

    Where speech stops, the level of a reverberant recording falls no faster than the room's
    decay (60 dB in RT60), while a dry recording's falls within a few milliseconds. The envelope
    (power-smoothed over :data:`DECAY_SMOOTH_S`) is cut into falls: from the moment it drops
    below :data:`DECAY_TOP_DB` under the speech level (the 90th percentile) to the moment it
    reaches the lower level (:data:`DECAY_BOTTOM_DB` under the speech level, or
    :data:`DECAY_FLOOR_MARGIN_DB` above the 5th percentile when that is higher) without rising
    back first. The shortest of them, scaled from the span between the two levels to 60 dB, is
    the estimate (speech may fade more slowly than its room; it cannot stop faster). No labels or alignment are used; a
    recording whose two levels are less than :data:`DECAY_MIN_SPAN_DB` apart (steady noise, or
    pauses filled by a long tail) or that never completes a fall gives 0.0.

    Args:
        envelope: :func:`energy_envelope` of the recording.

    Returns:
        RT60 in seconds (>= 0).
    """
    v = np.asarray(envelope.level_db, dtype=np.float64)
    hop = float(envelope.hop_s)
    if v.ndim != 1 or v.size < 3 or not hop > 0:
        return 0.0
    n = max(1, round(DECAY_SMOOTH_S / hop))
    power = np.convolve(10.0 ** (v / 10.0), np.ones(n) / n, mode="same")
    s = 10.0 * np.log10(power + 1e-10)
    speech, floor = np.percentile(s, [SPEECH_PERCENTILE, FLOOR_PERCENTILE])
    top = float(speech) - DECAY_TOP_DB
    bottom = max(float(speech) - DECAY_BOTTOM_DB, float(floor) + DECAY_FLOOR_MARGIN_DB)
    if top - bottom < DECAY_MIN_SPAN_DB:
        return 0.0
    above = s >= top
    below = s <= bottom
    falls: list[float] = []
    i, size = 1, s.size
    while i < size:
        if above[i - 1] and not above[i]:
            j = i
            while j < size and not above[j] and not below[j]:
                j += 1
            if j < size and below[j]:
                falls.append((j - i + 1) * hop)
            i = j + 1
        else:
            i += 1
    if not falls:
        return 0.0
    return min(falls) * 60.0 / (top - bottom)


def silence_edge_tokens(
    item: AlignItem, durations: Sequence[int] | np.ndarray
) -> list[tuple[int, str]]:
    """``(token edge index, "start" | "end")`` of each word edge next to silence on a decoded
    path: a word's first phone after a non-phone token that took frames (or the leading
    silence), a word's last phone before one (or the trailing silence). Token edge ``k`` is the
    start of token ``k`` (:func:`~speechattn.recipes.align.evaluate.token_edges`)."""
    d = np.asarray(durations, dtype=np.int64)
    n = int(item.tokens.shape[0])
    if d.shape != (n,):
        raise ValueError(f"Expected durations of shape ({n},) (one per token); found {d.shape}.")
    pidx = list(item.phone_token_index)
    phones = set(pidx)
    out: list[tuple[int, str]] = []
    for _, a, b in item.words:
        if b <= a:
            continue
        k = pidx[a]
        if k >= 1 and (k - 1) not in phones and (d[k - 1] > 0 or k - 1 == 0):
            out.append((k, "start"))
        k = pidx[b - 1]
        if k + 1 < n and (k + 1) not in phones and (d[k + 1] > 0 or k + 1 == n - 1):
            out.append((k + 1, "end"))
    return out


def _crossing(
    t: np.ndarray, v: np.ndarray, level: float, lo: float, hi: float, kind: str, run: int
) -> float | None:
    """Start: the earliest rise to ``>= level`` in ``[lo, hi]`` that stays there for ``run``
    points; end: the latest fall below ``level`` after ``run`` points at or above it. Linear
    interpolation between the two envelope points; None when there is none."""
    idx = np.flatnonzero((t >= lo) & (t <= hi))
    if idx.size < 2:
        return None
    above = v >= level
    if kind == "start":
        for j in idx[1:]:
            if above[j] and not above[j - 1] and above[j : j + run].all():
                f = (level - v[j - 1]) / (v[j] - v[j - 1])
                return float(t[j - 1] + f * (t[j] - t[j - 1]))
        return None
    for j in idx[:-1][::-1]:
        if above[j] and not above[j + 1] and above[max(0, j - run + 1) : j + 1].all():
            f = (v[j] - level) / (v[j] - v[j + 1])
            return float(t[j] + f * (t[j + 1] - t[j]))
    return None


def _speech_range(v: np.ndarray, level_db: float) -> float | None:
    """The level (dB) word edges next to silence go to on envelope values ``v``: ``level_db``
    under the speech level; None when there is no silence well below the speech (the guard)."""
    floor, speech = np.percentile(v, [FLOOR_PERCENTILE, SPEECH_PERCENTILE])
    if speech - floor < level_db + MIN_RANGE_MARGIN_DB:
        return None
    return float(speech) - level_db


def speech_endpoints(
    envelope: EnergyEnvelope, level_db: float = DEFAULT_SILENCE_EDGE_DB
) -> tuple[float | None, float | None]:
    """The audio's speech onset and offset (seconds) on its energy envelope, as the endpoint
    rule of :func:`place_silence_edges` reads them.

    The level is ``level_db`` dB under the utterance's speech level (its
    :data:`SPEECH_PERCENTILE`-th envelope percentile), as for the word edges next to silence.
    The onset is the earliest point where the envelope rises to the level and stays there for
    :data:`MIN_RUN_S` (at least; the envelope's end cuts that short); the offset, the latest
    point where it falls below the level after :data:`MIN_RUN_S` at or above it. Both are
    interpolated linearly between the two envelope points around the crossing. Either is None
    when there is none: an envelope at the level at its first point has no onset (the speech
    starts with the recording), one at the level at its last point no offset; and both are None
    for an utterance with no silence to speak of (its speech level less than ``level_db`` +
    :data:`MIN_RANGE_MARGIN_DB` dB above its :data:`FLOOR_PERCENTILE`-th percentile: noise, or
    reverberation filling the pauses), or an envelope of fewer than two points.

    Args:
        envelope: :func:`energy_envelope` of the utterance's audio, ``level_db`` of shape ``(t,)``.
        level_db: dB under the speech level (> 0).

    Returns:
        ``(onset, offset)`` in seconds, each a float or None.

    Raises:
        ValueError: ``level_db`` not a finite number > 0, an envelope that is not 1-D or holds
            NaN or inf, or ``hop_s`` not > 0.
        TypeError: ``level_db`` not a number.
    """
    checked = check_silence_edge_db(level_db)
    if checked is None:
        raise ValueError("Expected level_db > 0; found None.")
    v = np.asarray(envelope.level_db, dtype=np.float64)
    hop = float(envelope.hop_s)
    if v.ndim != 1:
        raise ValueError(f"Expected an envelope of shape (t,); found {v.shape}.")
    if not np.isfinite(v).all():
        raise ValueError(
            "Expected a finite envelope; found NaN or inf at point "
            f"{int(np.flatnonzero(~np.isfinite(v))[0])}."
        )
    if not hop > 0:
        raise ValueError(f"Expected envelope hop_s > 0; found {hop}.")
    if v.size < 2:
        return None, None
    level = _speech_range(v, checked)
    if level is None:
        return None, None
    run = max(1, round(MIN_RUN_S / hop))
    above = v >= level
    c = np.concatenate([[0], np.cumsum(above)])
    idx = np.arange(v.size)
    # starts[j]: above from j for run points (or to the end); ends[j]: above for run points up to j
    ahead = np.minimum(idx + run, v.size)
    starts = (c[ahead] - c[idx]) == (ahead - idx)
    behind = np.maximum(idx + 1 - run, 0)
    ends = (c[idx + 1] - c[behind]) == (idx + 1 - behind)
    onset = offset = None
    if starts.any():
        j = int(np.argmax(starts))
        if j > 0:
            f = (level - v[j - 1]) / (v[j] - v[j - 1])
            onset = (j - 1 + f) * hop
    if ends.any():
        j = int(v.size - 1 - np.argmax(ends[::-1]))
        if j < v.size - 1:
            f = (v[j] - level) / (v[j] - v[j + 1])
            offset = (j + f) * hop
    return onset, offset


def _clamp_to_endpoints(
    item: AlignItem,
    e: np.ndarray,
    onset: float | None,
    offset: float | None,
    frame_s: float,
) -> None:
    """In place: the first word's start no earlier than ``onset`` (at most its first phone's
    end minus half a frame), the last word's end no later than ``offset`` (at least its last
    phone's start plus half a frame); edges already inside stay."""
    pidx = list(item.phone_token_index)
    words = [(a, b) for _, a, b in item.words if b > a]
    if not words:
        return
    if onset is not None:
        k = pidx[words[0][0]]
        y = min(onset, float(e[k + 1]) - frame_s / 2)
        if y > e[k]:
            e[k] = y
    if offset is not None:
        k = pidx[words[-1][1] - 1] + 1
        y = max(offset, float(e[k - 1]) + frame_s / 2)
        if y < e[k]:
            e[k] = y


def place_silence_edges(
    item: AlignItem,
    durations: Sequence[int] | np.ndarray,
    edges: Sequence[float] | np.ndarray,
    envelope: EnergyEnvelope,
    frame_s: float,
    level_db: float = DEFAULT_SILENCE_EDGE_DB,
    *,
    endpoint: bool = False,
) -> np.ndarray:
    """Token edges ``(U + 1,)`` (seconds) with each word edge next to silence
    (:func:`silence_edge_tokens`) moved to where ``envelope`` crosses ``level_db`` dB under the
    utterance's speech level (see the module docstring); the other edges are returned as given.

    Args:
        item: the decoded item (with any inserted pause tokens).
        durations: ``(U,)`` frames per token of its path.
        edges: ``(U + 1,)`` token edges in seconds of that path
            (:func:`~speechattn.recipes.align.evaluate.token_edges`).
        envelope: :func:`energy_envelope` of the item's audio.
        frame_s: the aligner's frame hop in seconds (the search windows are in frames).
        level_db: dB under the speech level (> 0).
        endpoint: then apply the endpoint rule: the first word starts no earlier than the
            audio's speech onset and the last word ends no later than its speech offset
            (:func:`speech_endpoints`, same level), however far from the decoded edge; an edge
            already inside stays. Off here; align's decoding turns it on
            (:data:`DEFAULT_ENDPOINT`).

    A moved edge stays inside its search window, after the start of the word's last phone plus
    half a frame (an end) and within the silence token next to it, so edges stay in order; the
    endpoint rule keeps the first word's start half a frame before its first phone's end and
    the last word's end half a frame after its last phone's start.
    """
    if not isinstance(endpoint, (bool, np.bool_)):
        raise TypeError(f"Expected endpoint as a bool; found {endpoint!r}.")
    checked = check_silence_edge_db(level_db)
    if checked is None:
        raise ValueError("Expected level_db > 0; found None (leave the edges as they are instead).")
    e = np.asarray(edges, dtype=np.float64).copy()
    n = int(item.tokens.shape[0])
    if e.shape != (n + 1,):
        raise ValueError(f"Expected edges of shape ({n + 1},) (tokens + 1); found {e.shape}.")
    if not frame_s > 0:
        raise ValueError(f"Expected frame_s > 0; found {frame_s}.")
    v = np.asarray(envelope.level_db, dtype=np.float64)
    if v.ndim != 1 or v.size < 2:
        return e
    found = _speech_range(v, checked)
    if found is None:
        return e  # no silence well below the speech: nothing to place edges on
    level = found
    t = np.arange(v.size) * float(envelope.hop_s)
    run = max(1, round(MIN_RUN_S / float(envelope.hop_s)))
    for k, kind in silence_edge_tokens(item, durations):
        x = float(e[k])
        if kind == "end":
            into_word, into_sil = END_SEARCH_FRAMES
            lo = max(x - into_word * frame_s, float(e[k - 1]) + frame_s / 2)
            hi = min(x + into_sil * frame_s, float(e[k + 1]))
        else:
            into_word, into_sil = START_SEARCH_FRAMES
            lo = max(x - into_sil * frame_s, float(e[k - 1]))
            hi = min(x + into_word * frame_s, float(e[k + 1]) - frame_s / 2)
        if hi <= lo:
            continue
        y = _crossing(t, v, level, lo, hi, kind, run)
        if y is not None:
            e[k] = min(max(y, lo), hi)
    if endpoint:
        onset, offset = speech_endpoints(envelope, checked)
        _clamp_to_endpoints(item, e, onset, offset, frame_s)
    return e


def check_refine_radius_s(radius_s: float | None) -> float | None:
    """``radius_s`` when it is None (off) or a number of seconds in ``(0, MAX_REFINE_RADIUS_S]``,
    else ``ValueError`` (``TypeError`` for a non-number)."""
    if radius_s is None:
        return None
    if isinstance(radius_s, (bool, np.bool_)) or not isinstance(radius_s, numbers.Real):
        raise TypeError(
            f"Expected refine radius as a number of seconds or None; found {radius_s!r}."
        )
    if not (0 < float(radius_s) <= MAX_REFINE_RADIUS_S):
        raise ValueError(
            f"Expected refine radius in (0, {MAX_REFINE_RADIUS_S}] seconds or None; found {radius_s}."
        )
    return float(radius_s)


def check_refine_fraction(fraction: float) -> float:
    """``fraction`` as a float when it is a number in ``(0, 1]``, else ``ValueError``
    (``TypeError`` for a non-number)."""
    if isinstance(fraction, (bool, np.bool_)) or not isinstance(fraction, numbers.Real):
        raise TypeError(f"Expected refine fraction as a number in (0, 1]; found {fraction!r}.")
    if not (0.0 < float(fraction) <= 1.0):
        raise ValueError(f"Expected refine fraction in (0, 1]; found {fraction}.")
    return float(fraction)


def spectral_transition(
    wave: Tensor | np.ndarray,
    sample_rate: int,
    *,
    hop_s: float = TRANSITION_HOP_S,
    window_s: float = TRANSITION_WINDOW_S,
    n_mels: int = TRANSITION_MELS,
    context: int = TRANSITION_CONTEXT,
    floor_db: float = TRANSITION_FLOOR_DB,
) -> SpectralTransition:
    """Spectral transition measure of a mono waveform ``(n,)`` (Dusan & Rabiner 2006).

    A log-mel spectrogram ``(t, n_mels)`` (Hann windows of ``window_s``, centred every ``hop_s``,
    both rounded to whole samples; natural log of the magnitude, floored ``floor_db`` dB under its
    largest value so that digital silence does not dominate), then for every frame the regression
    slope of each band over ``+-context`` frames (edge frames repeated), squared and averaged over
    the bands::

        slope[t, m] = sum_{n=-c..c} n * x[t + n, m] / sum_{n=-c..c} n**2
        value[t] = mean_m slope[t, m] ** 2

    Peaks of ``value`` mark where the spectrum changes fastest. No labels are used; a gain change
    of the recording does not change it. ``ValueError`` for a waveform that is not 1-D, empty,
    not finite, or bad settings; ``TypeError`` for one whose samples are not real numbers (bool,
    complex).

    Returns:
        :class:`SpectralTransition` with ``value`` of shape ``(1 + n // hop,)`` (float64).
    """
    import torch

    from speechattn.data.features import LogMelSpectrogram

    x, sample_rate = _mono_wave(wave, sample_rate)
    if not (hop_s > 0 and window_s >= hop_s):
        raise ValueError(
            f"Expected 0 < hop_s <= window_s; found hop_s={hop_s}, window_s={window_s}."
        )
    if not (isinstance(context, int) and context >= 1):
        raise ValueError(f"Expected context as an int >= 1 (frames); found {context!r}.")
    if not (isinstance(n_mels, int) and n_mels >= 1) or not floor_db > 0:
        raise ValueError(f"Expected n_mels >= 1 and floor_db > 0; found {n_mels!r}, {floor_db}.")
    hop = max(1, round(hop_s * sample_rate))
    win = max(2, round(window_s * sample_rate))
    n_fft = 1 << (win - 1).bit_length()
    front = LogMelSpectrogram(
        sample_rate=sample_rate,
        n_fft=n_fft,
        win_length=win,
        hop_length=hop,
        n_mels=n_mels,
        log_floor=1e-8,
    )
    with torch.no_grad():
        lm = front(torch.from_numpy(x.astype(np.float32))).double().numpy()
    lm = np.maximum(lm, lm.max() - floor_db / 20.0 * math.log(10.0))
    n = np.arange(-context, context + 1, dtype=np.float64)
    padded = np.pad(lm, ((context, context), (0, 0)), mode="edge")
    frames = lm.shape[0]
    slope = sum(n[i] * padded[i : i + frames] for i in range(2 * context + 1)) / float(
        (n * n).sum()
    )
    return SpectralTransition(np.asarray((slope * slope).mean(axis=1)), hop / sample_rate)


def item_transitions(
    items: Sequence[AlignItem], utts: Sequence[Any], sample_rate: int
) -> list[SpectralTransition]:
    """:func:`spectral_transition` of each item's audio (its utterance matched by id, read at
    ``sample_rate`` one file at a time; a segment cut from its recording,
    :class:`~speechattn.data.corpus.UtteranceAudio`)."""
    from speechattn.data.corpus import UtteranceAudio

    by_id = {str(u.id): u for u in utts}
    read_audio = UtteranceAudio(
        [by_id[it.id] for it in items if it.id in by_id], sample_rate=sample_rate
    )
    out = []
    for it in items:
        utt = by_id.get(it.id)
        if utt is None:
            raise ValueError(f"Expected an utterance with id {it.id!r} for its item; found none.")
        wav = read_audio(utt)
        out.append(spectral_transition(wav, sample_rate))
    return out


def refine_boundary_groups(
    item: AlignItem,
    edges: Sequence[float] | np.ndarray,
    *,
    phones: bool = True,
) -> list[tuple[int, int]]:
    """The boundaries :func:`refine_boundaries` may move, as inclusive token edge ranges
    ``(first, last)``, in time order: each word boundary where two words meet (the tokens between
    them, optional pauses passed with 0 frames, share one edge: the range moves as one) and, with
    ``phones``, each phone boundary inside a word (a single edge)."""
    e = np.asarray(edges, dtype=np.float64)
    pidx = list(item.phone_token_index)
    out: list[tuple[int, int]] = []
    words = [(a, b) for _, a, b in item.words if b > a]
    for i, (a, b) in enumerate(words):
        if phones:
            out.extend((pidx[j], pidx[j]) for j in range(a + 1, b))
        if i + 1 < len(words):
            k0, k1 = pidx[b - 1] + 1, pidx[words[i + 1][0]]
            if np.all(e[k0 : k1 + 1] == e[k0]):
                out.append((k0, k1))
    return out


def refine_boundaries(
    item: AlignItem,
    edges: Sequence[float] | np.ndarray,
    transition: SpectralTransition,
    frame_s: float,
    radius_s: float = DEFAULT_REFINE_RADIUS_S,
    *,
    percentile: float = REFINE_PERCENTILE,
    phones: bool = True,
    fraction: float = DEFAULT_REFINE_FRACTION,
) -> np.ndarray:
    """Token edges ``(U + 1,)`` (seconds) with each boundary between two sounds moved to the
    clearest nearby spectral change.

    Each boundary of :func:`refine_boundary_groups` (word boundaries where two words meet; with
    ``phones``, phone boundaries inside words), in time order, goes to the strongest local maximum
    of ``transition`` within ``radius_s`` of it (refined between frames by a parabola through the
    peak and its neighbours) whose value is at least the ``percentile``-th percentile of the
    utterance's transition values; with no such peak it stays. With ``fraction`` below 1 it moves
    only that share of the way from where it was to the peak. A moved boundary stays at least
    half a frame (``frame_s / 2``) after the boundary before it (as already moved) and before the
    boundary after it, so boundaries keep their order and no phone vanishes. Edges next to
    silence, pauses, and the utterance's ends are returned as given.

    Args:
        item: the decoded item (with any inserted pause tokens).
        edges: ``(U + 1,)`` token edges in seconds of its path.
        transition: :func:`spectral_transition` of the item's audio.
        frame_s: the aligner's frame hop in seconds.
        radius_s: how far a boundary may move, in ``(0, MAX_REFINE_RADIUS_S]`` seconds.
        percentile: in ``[0, 100]``; the peak must reach this percentile of the utterance's values.
        phones: also move phone boundaries inside words (else word boundaries only).
        fraction: in ``(0, 1]``, the share of the way to the peak a boundary moves (1: to it).

    Returns:
        ``(U + 1,)`` float64 edges.

    Raises:
        ValueError: bad settings, edges that are not finite or not in time order, or a
            transition measure that is not 1-D or holds NaN or inf.
    """
    radius = check_refine_radius_s(radius_s)
    if radius is None:
        raise ValueError("Expected radius_s > 0; found None (leave the edges as they are instead).")
    if not (0.0 <= float(percentile) <= 100.0):
        raise ValueError(f"Expected percentile in [0, 100]; found {percentile}.")
    if not frame_s > 0:
        raise ValueError(f"Expected frame_s > 0; found {frame_s}.")
    frac = check_refine_fraction(fraction)
    e = np.asarray(edges, dtype=np.float64).copy()
    n_tok = int(item.tokens.shape[0])
    if e.shape != (n_tok + 1,):
        raise ValueError(f"Expected edges of shape ({n_tok + 1},) (tokens + 1); found {e.shape}.")
    if not np.isfinite(e).all():
        raise ValueError(
            f"Expected finite edges; found NaN or inf at index {int(np.flatnonzero(~np.isfinite(e))[0])}."
        )
    if np.any(np.diff(e) < 0):
        k = int(np.flatnonzero(np.diff(e) < 0)[0])
        raise ValueError(
            f"Expected non-decreasing edges (seconds, in time order); found edge {k + 1} at "
            f"{e[k + 1]:g} s before edge {k} at {e[k]:g} s."
        )
    s = np.asarray(transition.value, dtype=np.float64)
    hop = float(transition.hop_s)
    if s.ndim != 1 or not hop > 0:
        raise ValueError(
            f"Expected a transition measure of shape (t,) with hop_s > 0; found {s.shape}, {hop}."
        )
    if not np.isfinite(s).all():
        raise ValueError(
            "Expected a finite transition measure; found NaN or inf at frame "
            f"{int(np.flatnonzero(~np.isfinite(s))[0])}."
        )
    if s.size < 3:
        return e
    level = float(np.percentile(s, percentile))
    peak = np.zeros(s.size, dtype=bool)
    peak[1:-1] = (s[1:-1] >= s[:-2]) & (s[1:-1] > s[2:]) & (s[1:-1] >= level)
    gap = frame_s / 2.0
    for k0, k1 in refine_boundary_groups(item, e, phones=phones):
        x = float(e[k0])
        lo = max(x - radius, float(e[k0 - 1]) + gap)
        hi = min(x + radius, float(e[k1 + 1]) - gap)
        if hi <= lo:
            continue
        i0 = max(1, math.ceil(lo / hop))
        i1 = min(s.size - 2, math.floor(hi / hop))
        if i1 < i0:
            continue
        cand = np.flatnonzero(peak[i0 : i1 + 1]) + i0
        if cand.size == 0:
            continue
        j = int(cand[np.argmax(s[cand])])
        curve = s[j - 1] - 2.0 * s[j] + s[j + 1]
        shift = 0.5 * (s[j - 1] - s[j + 1]) / curve if curve < 0 else 0.0
        y = min(max((j + min(max(shift, -0.5), 0.5)) * hop, lo), hi)
        if frac < 1.0:
            y = min(max(x + frac * (y - x), lo), hi)
        e[k0 : k1 + 1] = y
    return e
