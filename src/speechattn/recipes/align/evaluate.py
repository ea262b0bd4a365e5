"""Durations -> phone/word intervals, and boundary metrics against ground truth.

Frame ``j`` of the log-mel front end is centred at ``j * hop / sr``; a duration path's boundary
between frames ``j - 1`` and ``j`` is placed at ``j * hop / sr`` (the convention that maps the
ground truth snapped to frames back to within half a frame; the report prints that oracle score).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np
import torch
from torch import Tensor

from speechattn._io import atomic_write, write_text_atomic
from speechattn.recipes.align.calibrate import BoundaryOffsets, shift_edges
from speechattn.recipes.align.data import (
    SIL,
    SP,
    AlignItem,
    FeatureConfig,
    collate_items,
    word_truth,
)

if TYPE_CHECKING:
    from speechattn.recipes.align.edges import EnergyEnvelope, SpectralTransition

__all__ = [
    "ALIGNMENT_FORMATS",
    "AlignmentResult",
    "Metrics",
    "align_items",
    "calibrate_results",
    "durations_to_intervals",
    "frame_boundaries_to_seconds",
    "intervals_from_edges",
    "left_out_notes",
    "left_out_warned_once",
    "score",
    "token_edges",
    "write_alignment",
    "write_recording_alignment",
]


@dataclass
class AlignmentResult:
    """One utterance's hard alignment: per-token durations (frames) and intervals (seconds)."""

    item: AlignItem
    durations: np.ndarray  # (U,) int, sums to frames
    phones: list[tuple[float, float, str]]
    words: list[tuple[float, float, str]]
    soft: np.ndarray | None = None  # (U, T) soft alignment, kept for a few items only
    failure: bool = False
    focus: float = float("nan")
    # Pause intervals (start, end, "sil" | "sp") of the non-phone tokens that took frames.
    pauses: list[tuple[float, float, str]] = field(default_factory=list)


@dataclass
class Metrics:
    """Boundary accuracy on a set of utterances (None where no ground truth exists)."""

    utterances: int = 0
    phone_within_20ms: float | None = None
    phone_within_40ms: float | None = None
    phone_mean_abs_ms: float | None = None
    phone_mean_signed_ms: float | None = None
    word_within_40ms: float | None = None
    word_within_20ms: float | None = None
    word_mean_abs_ms: float | None = None
    focus_rate: float | None = None
    failures: int = 0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def frame_boundaries_to_seconds(
    frames: Sequence[int] | np.ndarray, config: FeatureConfig
) -> np.ndarray:
    """Times (seconds) of token boundaries given as frame indices ``k`` (a token starts at frame
    ``k``): ``max(k - 1/2, 0) * hop / sample_rate`` (centred frames, see :func:`durations_to_intervals`)."""
    k = np.asarray(frames, dtype=np.float64)
    return np.maximum(k - 0.5, 0.0) * config.frame_s


def durations_to_intervals(
    item: AlignItem,
    durations: Sequence[int] | np.ndarray,
    config: FeatureConfig,
    offsets: BoundaryOffsets | None = None,
) -> tuple[list[tuple[float, float, str]], list[tuple[float, float, str]]]:
    """Phone and word intervals (seconds) of an item from per-token frame counts.

    Frame geometry: the log-mel front end is centred (``center=True``), so frame ``k`` is centred at
    ``k * hop`` and covers ``[(k - 1/2) hop, (k + 1/2) hop)``. The boundary between a token ending at
    frame ``k - 1`` and the next one starting at frame ``k`` is therefore at ``(k - 1/2) * hop`` seconds,
    not ``k * hop`` (which would put every boundary half a frame late). The first edge is 0 and the
    last is the audio's duration.

    ``offsets`` (optional, :mod:`~speechattn.recipes.align.calibrate`) shifts each inner edge by
    its context's calibrated offset, keeping every token at least half a frame long. The integer
    durations themselves are not changed.
    """
    return intervals_from_edges(item, token_edges(item, durations, config, offsets))


def intervals_from_edges(
    item: AlignItem, edges: Sequence[float] | np.ndarray
) -> tuple[list[tuple[float, float, str]], list[tuple[float, float, str]]]:
    """Phone and word intervals (seconds) of an item from its ``(U + 1,)`` token edges."""
    phones = [
        (float(edges[k]), float(edges[k + 1]), p)
        for p, k in zip(item.phones, item.phone_token_index)
    ]
    words = [(phones[a][0], phones[b - 1][1], w) for w, a, b in item.words]
    return phones, words


def token_edges(
    item: AlignItem,
    durations: Sequence[int] | np.ndarray,
    config: FeatureConfig,
    offsets: BoundaryOffsets | None = None,
) -> np.ndarray:
    """``(U + 1,)`` token edges in seconds (see :func:`durations_to_intervals`). A token with 0
    frames (an optional pause passed by the path) has equal edges; a path that passes the trailing
    silence ends its last phone at the audio's end."""
    d = np.asarray(durations, dtype=np.int64)
    cs = np.cumsum(d)[:-1]
    inner = frame_boundaries_to_seconds(cs, config)
    end = item.num_samples / config.sample_rate if item.num_samples else d.sum() * config.frame_s
    last = max(float(end), float(inner[-1])) if inner.size else float(end)
    inner = np.where(cs >= d.sum(), last, inner)
    edges = np.concatenate([[0.0], inner, [last]])
    if offsets is not None:
        labels = [SP] * len(d)
        labels[0] = labels[-1] = SIL
        for p, k in zip(item.phones, item.phone_token_index):
            labels[k] = p
        # Shift the edges of the tokens that took frames; a 0-frame token stays where the next
        # one starts.
        nz = np.flatnonzero(d > 0)
        kept = np.concatenate([edges[nz], [edges[-1]]])
        kept = shift_edges(kept, [labels[k] for k in nz], offsets, min_gap=0.5 * config.frame_s)
        edges = kept[np.searchsorted(nz, np.arange(len(d) + 1))]
    return edges


def _focus(soft: Tensor, u: int, t: int) -> float:
    a = soft[:u, :t].double()
    a = a / a.sum(0, keepdim=True).clamp_min(1e-12)
    return float(a.max(0).values.mean())


@torch.no_grad()
def _check_one_per_item(
    values: Sequence[Any] | None, n: int, what: str, option: str, pass_as: str
) -> None:
    """``ValueError`` unless ``values`` holds one ``what`` per item (``n``), as ``option`` needs;
    ``pass_as`` starts the call that makes them (``"envelopes=[energy_envelope"``)."""
    if values is None or len(values) != n:
        raise ValueError(
            f"Expected one {what} per item ({n}) with {option}; found "
            f"{'none' if values is None else len(values)}. Pass "
            f"{pass_as}(wave, config.sample_rate), ...] or {option}=None."
        )


def align_items(
    model: Any,
    items: Sequence[AlignItem],
    config: FeatureConfig,
    *,
    batch_size: int = 16,
    keep_soft: int = 0,
    offsets: BoundaryOffsets | None = None,
    pauses: str = "forced",
    pause_skip: float = 0.0,
    min_pause_frames: int = 0,
    max_pause_loudness: float | None = None,
    reverse_pass: bool = False,
    silence_edge_db: float | None = None,
    envelopes: Sequence[EnergyEnvelope] | None = None,
    endpoint: bool = False,
    refine_radius_s: float | None = None,
    transitions: Sequence[SpectralTransition] | None = None,
    refine_fraction: float = 1.0,
) -> list[AlignmentResult]:
    """Hard-align items with a trained :class:`TextMelAligner`, or ``model="uniform"``.

    ``offsets``: boundary calibration applied to the intervals (not to the durations).
    ``pauses``: ``"auto"``, ``"none"`` or ``"forced"`` (see :mod:`~speechattn.recipes.align.pauses`);
    the uniform baseline always spreads the audio over the tokens as given. ``pause_skip``: the
    Viterbi score of passing an optional pause with 0 frames (higher: fewer, longer pauses,
    since a pause must then earn that much over the words' own scores). ``min_pause_frames``
    (``"auto"`` only; 0 = off): a pause between words shorter than this many frames is not a
    pause: the utterance is decoded again with a pause token only between the words whose
    pause took at least that many frames, so the two words meet where the path puts their
    boundary (again until no pause between words is shorter). ``max_pause_loudness``
    (``"auto"`` only; None = off): a pause between words none of whose frames is at most this
    loud (:func:`~speechattn.recipes.align.pauses.frame_loudness`: 0 = the utterance's 5th-percentile
    frame, 1 = its median frame) is not a pause: its frames go half to each word, which meet in
    its middle (:func:`~speechattn.recipes.align.pauses.split_word_pauses`; no second decoding).
    ``reverse_pass``: decode each utterance a second time reversed in time (its frames and
    tokens, the same tokens skippable) and put every token edge midway between the two paths'
    (rounded down to a frame): the forward path puts boundaries between two sounds late (the
    unsupervised aligner's objective does not say where in the transition a boundary goes) and
    the reversed path puts them early, so the midway edge cancels a lag that flips with the
    direction of time (benchmarks/RESULTS.md, "Word-boundary error on unseen engines: what it
    is made of"). The soft alignment and focus stay the forward pass's.
    ``silence_edge_db`` (None = off): after all of the above, each word start after silence and
    word end before silence moves to where the audio's energy envelope (``envelopes[i]``, one
    :func:`~speechattn.recipes.align.edges.energy_envelope` per item, required then) crosses
    this many dB under the utterance's speech level
    (:func:`~speechattn.recipes.align.edges.place_silence_edges`); the intervals move, the
    durations stay the path's. ``endpoint`` (with ``silence_edge_db``; default off): then the
    first word starts no earlier than the audio's speech onset and the last word ends no later
    than its speech offset on that envelope and level
    (:func:`~speechattn.recipes.align.edges.speech_endpoints`).
    ``refine_radius_s`` (None = off): last, each word boundary where two words meet and each
    phone boundary inside a word moves to the strongest clear peak of the audio's spectral
    transition measure (``transitions[i]``, one
    :func:`~speechattn.recipes.align.edges.spectral_transition` per item, required then) within
    this many seconds (:func:`~speechattn.recipes.align.edges.refine_boundaries`), or
    ``refine_fraction`` (in ``(0, 1]``, default 1) of the way to it; the intervals move, the
    durations stay the path's.
    Each result's ``item`` is the item as decoded (with any inserted pause tokens)."""
    from speechattn.recipes.align.edges import (
        check_refine_fraction,
        check_refine_radius_s,
        check_silence_edge_db,
        place_silence_edges,
        refine_boundaries,
    )
    from speechattn.recipes.align.pauses import (
        check_pause_mode,
        loud_word_pauses,
        pause_intervals,
        short_word_pauses,
        split_word_pauses,
    )

    check_pause_mode(pauses)
    silence_edge_db = check_silence_edge_db(silence_edge_db)
    if silence_edge_db is not None and model != "uniform":
        _check_one_per_item(
            envelopes,
            len(items),
            "energy envelope",
            "silence_edge_db",
            "envelopes=[energy_envelope",
        )
    refine_radius_s = check_refine_radius_s(refine_radius_s)
    refine_fraction = check_refine_fraction(refine_fraction)
    if refine_radius_s is not None and model != "uniform":
        _check_one_per_item(
            transitions,
            len(items),
            "spectral transition measure",
            "refine_radius_s",
            "transitions=[spectral_transition",
        )
    if min_pause_frames < 0:
        raise ValueError(f"Expected min_pause_frames >= 0; found {min_pause_frames}.")
    if max_pause_loudness is not None and not max_pause_loudness >= 0:
        raise ValueError(f"Expected max_pause_loudness >= 0 or None; found {max_pause_loudness}.")
    if hasattr(model, "eval"):
        model.eval()
    mode = "forced" if model == "uniform" else pauses
    out = _decode(
        model,
        items,
        range(len(items)),
        config,
        mode,
        {},
        batch_size,
        keep_soft,
        offsets,
        pause_skip,
    )
    pause_words: dict[int, set[int]] = {}
    while mode == "auto" and min_pause_frames > 1:
        again: dict[int, set[int]] = {}
        for i, r in out.items():
            short, kept = short_word_pauses(r.item, r.durations, min_pause_frames)
            if short:
                again[i] = kept
        if not again:
            break
        # Each pass drops at least one pause token of every utterance it decodes again, so
        # this ends; utterances with no short pause keep their path.
        pause_words.update(again)
        out.update(
            _decode(
                model,
                items,
                sorted(again),
                config,
                mode,
                pause_words,
                batch_size,
                keep_soft,
                offsets,
                pause_skip,
            )
        )
    if reverse_pass and model != "uniform":
        order = sorted(out, key=lambda i: int(items[i].mel.shape[0]))
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            rev = _reverse_durations(model, [out[i] for i in idx], mode, pause_skip)
            for i, d_rev in zip(idx, rev):
                r = out[i]
                e_fwd = np.concatenate([[0], np.cumsum(r.durations)])
                e_rev = np.concatenate([[0], np.cumsum(d_rev)])
                # floor keeps every token that has >= 1 frame on both paths at >= 1 frame
                mid = (e_fwd + e_rev) // 2
                out[i] = _with_durations(r, np.diff(mid).astype(np.int64), config, offsets)
    if mode == "auto" and max_pause_loudness is not None:
        for i, r in out.items():
            loud = loud_word_pauses(r.item, r.durations, max_pause_loudness)
            if loud:
                out[i] = _with_durations(
                    r, split_word_pauses(r.item, r.durations, loud), config, offsets
                )
    place = silence_edge_db is not None and envelopes is not None
    refine = refine_radius_s is not None and transitions is not None
    if model != "uniform" and (place or refine):
        for i, r in out.items():
            edges = token_edges(r.item, r.durations, config, offsets)
            if place and silence_edge_db is not None and envelopes is not None:
                edges = place_silence_edges(
                    r.item,
                    r.durations,
                    edges,
                    envelopes[i],
                    config.frame_s,
                    silence_edge_db,
                    endpoint=endpoint,
                )
            if refine and refine_radius_s is not None and transitions is not None:
                edges = refine_boundaries(
                    r.item,
                    edges,
                    transitions[i],
                    config.frame_s,
                    refine_radius_s,
                    fraction=refine_fraction,
                )
            ph, wd = intervals_from_edges(r.item, edges)
            pz = pause_intervals(r.item, edges, r.durations)
            out[i] = dataclasses.replace(r, phones=ph, words=wd, pauses=pz)
    return [out[i] for i in range(len(items))]


def _reverse_durations(
    model: Any, results: Sequence[AlignmentResult], mode: str, pause_skip: float
) -> list[np.ndarray]:
    """Per-token durations of each result's item decoded reversed in time (frames and tokens
    flipped), given back in forward token order; the tokens that are not phones may take 0
    frames unless ``mode`` is ``"forced"``."""
    batch, skip = [], []
    for r in results:
        it = r.item
        n = int(it.tokens.shape[0])
        sk = torch.zeros(n, dtype=torch.bool)
        if mode != "forced":
            sk[:] = True
            sk[torch.as_tensor(it.phone_token_index, dtype=torch.int64)] = False
        batch.append(dataclasses.replace(it, tokens=it.tokens.flip(0), mel=it.mel.flip(0)))
        skip.append(sk.flip(0))
    tokens, tl, mels, ml = collate_items(batch)
    if mode == "forced":
        path, _ = model.align(tokens, tl, mels, ml)
    else:
        skippable = torch.zeros(tokens.shape, dtype=torch.bool)
        for j, sk in enumerate(skip):
            skippable[j, : sk.shape[0]] = sk
        path, _ = model.align(tokens, tl, mels, ml, skippable_mask=skippable, log_skip=pause_skip)
    return [path.durations[j, : int(tl[j])].numpy()[::-1].copy() for j in range(len(results))]


def _with_durations(
    r: AlignmentResult,
    durations: np.ndarray,
    config: FeatureConfig,
    offsets: BoundaryOffsets | None,
) -> AlignmentResult:
    """``r`` with new durations and the intervals and pauses they give (soft, focus kept)."""
    from speechattn.recipes.align.pauses import pause_intervals

    ph, wd = durations_to_intervals(r.item, durations, config, offsets)
    pz = pause_intervals(r.item, token_edges(r.item, durations, config, offsets), durations)
    return dataclasses.replace(r, durations=durations, phones=ph, words=wd, pauses=pz)


def _decode(
    model: Any,
    items: Sequence[AlignItem],
    which: Sequence[int] | range,
    config: FeatureConfig,
    mode: str,
    pause_words: dict[int, set[int]],
    batch_size: int,
    keep_soft: int,
    offsets: BoundaryOffsets | None,
    pause_skip: float,
) -> dict[int, AlignmentResult]:
    """One decoding pass over ``items[i]`` for ``i`` in ``which`` (see :func:`align_items`);
    ``pause_words[i]``: the word indices an ``"auto"`` pause is inserted before (default all)."""
    from speechattn.functional.alignment import uniform_durations
    from speechattn.recipes.align.pauses import pause_intervals, with_pauses

    order = sorted(which, key=lambda i: int(items[i].mel.shape[0]))
    out: dict[int, AlignmentResult] = {}
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        decoded = [with_pauses(items[i], mode, words=pause_words.get(i)) for i in idx]
        batch = [it for it, _ in decoded]
        tokens, tl, mels, ml = collate_items(batch)
        if model == "uniform":
            dur = uniform_durations(tl, ml, tokens.shape[1])
            soft = None
        else:
            if mode == "forced":
                path, soft = model.align(tokens, tl, mels, ml)
            else:
                skippable = torch.zeros(tokens.shape, dtype=torch.bool)
                for j, (_, sk) in enumerate(decoded):
                    skippable[j, : sk.shape[0]] = sk
                path, soft = model.align(
                    tokens, tl, mels, ml, skippable_mask=skippable, log_skip=pause_skip
                )
            dur = path.durations
        for j, i in enumerate(idx):
            u, t = int(tl[j]), int(ml[j])
            d = dur[j, :u].numpy()
            it = batch[j]
            ph, wd = durations_to_intervals(it, d, config, offsets)
            res = AlignmentResult(item=it, durations=d, phones=ph, words=wd)
            if model != "uniform":
                res.pauses = pause_intervals(it, token_edges(it, d, config, offsets), d)
            if soft is not None:
                sj = soft[j]
                res.focus = _focus(sj, u, t)
                track = sj[:u, :t].argmax(0)
                res.failure = bool(int(track.max()) < u - 2)
                if i < keep_soft:
                    res.soft = sj[:u, :t].numpy()
            out[i] = res
    return out


def calibrate_results(
    results: Sequence[AlignmentResult], config: FeatureConfig, offsets: BoundaryOffsets
) -> list[AlignmentResult]:
    """The same alignments (durations, soft, focus, failures) with calibrated intervals.

    No model call: only the interval times are recomputed from each result's durations."""
    from speechattn.recipes.align.pauses import pause_intervals

    out = []
    for r in results:
        ph, wd = durations_to_intervals(r.item, r.durations, config, offsets)
        pz = pause_intervals(r.item, token_edges(r.item, r.durations, config, offsets), r.durations)
        out.append(dataclasses.replace(r, phones=ph, words=wd, pauses=pz if r.pauses else []))
    return out


def _boundaries(intervals: Sequence[Any]) -> np.ndarray:
    return np.array([[float(iv[0]), float(iv[1])] for iv in intervals], dtype=np.float64).reshape(
        -1
    )


_P = ParamSpec("_P")
_R = TypeVar("_R")

#: The left-out sets :func:`score` has already named inside :func:`left_out_warned_once`
#: (``None`` outside it: every call warns).
_LEFT_OUT_WARNED: ContextVar[set[tuple[str, ...]] | None] = ContextVar(
    "_left_out_warned", default=None
)


@contextmanager
def left_out_warned_once() -> Iterator[None]:
    """Inside the block, :func:`score` names a given set of left-out utterances in one warning.

    A recipe scores one split under many rows (each aligner, calibrated or not, each table),
    which repeated the same warning for every row. Python's own once-per-location filter
    cannot do it: other code resets the warning filters in between.
    """
    token = _LEFT_OUT_WARNED.set(set())
    try:
        yield
    finally:
        _LEFT_OUT_WARNED.reset(token)


def warn_left_out_once(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorator: run ``fn`` inside :func:`left_out_warned_once`."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with left_out_warned_once():
            return fn(*args, **kwargs)

    # the wrapped function's keyword defaults stay readable where callers look for them
    # (`run_align.__kwdefaults__`; `inspect.signature` follows `__wrapped__`); the wrapper has
    # no keyword-only parameters, so they change nothing at call time
    wrapper.__kwdefaults__ = fn.__kwdefaults__  # type: ignore[attr-defined]
    return wrapper


def score(results: Sequence[AlignmentResult]) -> Metrics:
    """Boundary metrics over utterances that have ground truth (phone starts and ends both count).

    Word boundaries: each word's start and end (pauses are gaps between words, not scored). The
    words are the transcript's written words; truth in spoken form (``"five dollars"`` for
    ``$5``) is merged per written word first (:func:`~speechattn.recipes.align.data.word_truth`).
    ``extra["word_utterances"]`` counts the utterances scored; those with word truth that matches
    neither the written nor the spoken words are left out, counted in
    ``extra["word_utterances_left_out"]`` (only when there are any) and named in one warning
    (once per set of utterances inside :func:`left_out_warned_once`, as the recipes run).
    """
    perr: list[np.ndarray] = []
    werr: list[np.ndarray] = []
    left_out: list[str] = []
    focus = [r.focus for r in results if not np.isnan(r.focus)]
    for r in results:
        gt = r.item.gt_phones
        if gt is not None and len(gt) == len(r.phones):
            g = _boundaries([(iv.start, iv.end) if hasattr(iv, "start") else iv for iv in gt])
            perr.append(_boundaries(r.phones) - g)
        if r.item.gt_words is None:
            continue
        gw = word_truth(r.item)
        if gw is not None and len(gw) == len(r.words):
            werr.append(_boundaries(r.words) - _boundaries(gw))
        else:
            left_out.append(r.item.id)
    m = Metrics(utterances=len(results), failures=sum(int(r.failure) for r in results))
    if perr:
        e = np.concatenate(perr) * 1000.0
        m.phone_within_20ms = float(np.mean(np.abs(e) <= 20.0) * 100)
        m.phone_within_40ms = float(np.mean(np.abs(e) <= 40.0) * 100)
        m.phone_mean_abs_ms = float(np.mean(np.abs(e)))
        m.phone_mean_signed_ms = float(np.mean(e))
    if werr:
        e = np.concatenate(werr) * 1000.0
        m.word_within_40ms = float(np.mean(np.abs(e) <= 40.0) * 100)
        m.word_within_20ms = float(np.mean(np.abs(e) <= 20.0) * 100)
        m.word_mean_abs_ms = float(np.mean(np.abs(e)))
        m.extra["word_utterances"] = len(werr)
    seen = _LEFT_OUT_WARNED.get()
    if left_out:
        m.extra["word_utterances_left_out"] = len(left_out)
    if left_out and (seen is None or tuple(left_out) not in seen):
        if seen is not None:
            seen.add(tuple(left_out))
        warnings.warn(
            f"{len(left_out)} of {len(left_out) + len(werr)} utterance(s) with word truth left out "
            f"of word scoring: their truth has neither the transcript's written words nor its "
            f"spoken words (e.g. {left_out[0]!r}).",
            stacklevel=2,
        )
    if focus:
        m.focus_rate = float(np.mean(focus))
    return m


def left_out_notes(table: Mapping[str, Mapping[str, Metrics]]) -> list[str]:
    """One report line per row of ``table[split][aligner]`` whose word scoring left utterances
    out (:func:`score`'s ``extra["word_utterances_left_out"]``): how many, of how many with
    word truth, and why. Empty when none was left out."""
    out = []
    for split, by in table.items():
        for name, m in by.items():
            n = int(m.extra.get("word_utterances_left_out", 0))
            if n:
                scored = int(m.extra.get("word_utterances", 0))
                out.append(
                    f"{split}, {name}: {n} of {n + scored} utterance(s) with word truth left out "
                    "of word scoring (their truth has neither the transcript's written words "
                    "nor its spoken words; the command's warning names one)."
                )
    return out


ALIGNMENT_FORMATS = ("textgrid", "json", "ctm")


def write_alignment(
    result: AlignmentResult,
    out_dir: Path,
    config: FeatureConfig,
    *,
    formats: Sequence[str] = ("textgrid", "json"),
    name: str | None = None,
) -> tuple[Path, ...]:
    """Write one utterance's alignment in each of ``formats`` (paths returned in that order).

    ``textgrid``: ``<name>.TextGrid`` with ``words`` and ``phones`` tiers (the Montreal Forced
    Aligner's names); ``json``: ``<name>.json``; ``ctm``: ``<name>.ctm`` (words) and
    ``<name>.phones.ctm`` (phones), lines ``<id> 1 <start> <duration> <label>``.

    A segment of a longer recording (Kaldi ``segments``: ``item.extra["segment"]``) is written
    as its own utterance, times from the segment's start (as the file ``extract-segments``
    would cut); its JSON record says where it lies (``"segment": {"recording", "start",
    "end"}``), so adding ``start`` gives recording times.

    ``name``: the file name relative to ``out_dir`` without suffix, ``/`` making subfolders
    (default: :func:`~speechattn.recipes.align.outputs.alignment_names` of the item's id, so
    the id ``spk1/utt1`` of a folder corpus is written as ``spk1/utt1.TextGrid``).
    """
    unknown = [f for f in formats if f not in ALIGNMENT_FORMATS]
    if unknown or not formats:
        raise ValueError(f"Expected formats from {ALIGNMENT_FORMATS}; found {tuple(formats)!r}.")
    from speechattn.recipes.align.outputs import alignment_names

    item = result.item
    rel = name if name is not None else alignment_names([item.id])[0]
    base = out_dir / rel
    base.parent.mkdir(parents=True, exist_ok=True)
    duration = item.num_samples / config.sample_rate
    total = float(np.sum(result.durations)) * config.frame_s
    xmax = max(duration, total)
    tg = base.with_name(f"{base.name}.TextGrid")
    js = base.with_name(f"{base.name}.json")
    words = [(a, min(b, xmax), w) for a, b, w in result.words]
    phones = [(a, min(b, xmax), p) for a, b, p in result.phones]
    # The TextGrid's phones tier also shows the pauses (sil / sp, as MFA writes them); the words
    # tier leaves them as empty intervals; CTM files list words and phones only.
    tier = sorted([*phones, *((a, min(b, xmax), p) for a, b, p in result.pauses)])
    written: list[Path] = []
    if "textgrid" in formats:
        _write_textgrid(tg, words, tier, xmax)
        written.append(tg)
    if "json" in formats:
        _write_json(js, result, config)
        written.append(js)
    if "ctm" in formats:
        from speechattn.data.textgrid import write_ctm

        uid = rel.replace("/", "_")  # a CTM utterance id is one token
        written.append(write_ctm(base.with_name(f"{base.name}.ctm"), words, utterance_id=uid))
        written.append(
            write_ctm(base.with_name(f"{base.name}.phones.ctm"), phones, utterance_id=uid)
        )
    return tuple(written)


def _write_textgrid(tg: Path, words: list, phones: list, xmax: float) -> None:
    try:
        from speechattn.data.synth import Interval
        from speechattn.data.textgrid import write_textgrid
    except ImportError:
        _write_textgrid_praatio(tg, words, phones, xmax)
    else:
        write_textgrid(
            tg,
            words=[Interval(*w) for w in words],
            phones=[Interval(*p) for p in phones],
            duration=xmax,
        )


def _json_payload(
    result: AlignmentResult, config: FeatureConfig, *, offset: float = 0.0, end: float = np.inf
) -> dict[str, Any]:
    item = result.item
    segment = item.extra.get("segment")

    def ivs(intervals: Sequence[tuple[float, float, str]]) -> list[dict[str, Any]]:
        return [
            {"start": a + offset, "end": min(b + offset, end), "label": lab}
            for a, b, lab in intervals
        ]

    return {
        "id": item.id,
        "text": item.text,
        "speaker": item.speaker,
        **({"segment": dict(segment)} if segment is not None else {}),
        "frame_seconds": config.frame_s,
        "durations_frames": [int(x) for x in result.durations],
        "tokens": _token_labels(item) if len(result.durations) == len(item.tokens) else None,
        "words": ivs(result.words),
        "phones": ivs(result.phones),
        "pauses": ivs(result.pauses),
    }


def _write_json(js: Path, result: AlignmentResult, config: FeatureConfig) -> None:
    payload = _json_payload(result, config)
    write_text_atomic(js, json.dumps(payload, indent=1, ensure_ascii=False))


def write_recording_alignment(
    results: Sequence[AlignmentResult],
    out_dir: Path,
    config: FeatureConfig,
    *,
    name: str,
    duration: float,
    formats: Sequence[str] = ("textgrid", "json"),
) -> tuple[Path, ...]:
    """Write the alignments of the utterances of one recording (segments of a TextGrid
    transcript) into one set of files at the recording's times, as the Montreal Forced Aligner
    does for TextGrid input.

    ``textgrid``: ``<name>.TextGrid`` with a ``<speaker> - words`` and a ``<speaker> - phones``
    tier per speaker (the input's tier names, sorted; the phones tier also shows the pauses);
    ``json``: ``<name>.json``, ``{"recording", "duration", "utterances": [...]}`` with each
    utterance's record as :func:`write_alignment` writes it, times in the recording;
    ``ctm``: ``<name>.ctm`` / ``<name>.phones.ctm``, one line per word / phone of every
    utterance in time order, the recording as CTM id.

    Each utterance's intervals are its own alignment moved by its segment's start
    (``item.extra["segment"]``) and cut at its segment's end, so they stay inside the
    segment. An utterance that was skipped leaves its interval blank.

    Args:
        results: the aligned utterances of the recording, each with ``item.extra["segment"]``.
        out_dir: the alignments folder; ``name`` (``/`` making subfolders) is the file name
            relative to it, without suffix.
        duration: the recording's length in seconds (the tiers' end).
        formats: any of ``textgrid``, ``json``, ``ctm``.

    Returns:
        The paths written, in the order of ``formats``.

    Raises:
        ValueError: unknown formats, or a result without a segment.
    """
    unknown = [f for f in formats if f not in ALIGNMENT_FORMATS]
    if unknown or not formats:
        raise ValueError(f"Expected formats from {ALIGNMENT_FORMATS}; found {tuple(formats)!r}.")
    placed = []
    for r in results:
        seg = r.item.extra.get("segment")
        if seg is None:
            raise ValueError(
                f"Expected results of segments (item.extra['segment']); found none in {r.item.id!r}."
            )
        placed.append(
            (float(seg["start"]), float(seg["end"]), str(seg.get("tier", r.item.speaker)), r)
        )
    placed.sort(key=lambda x: (x[2], x[0]))
    xmax = max([float(duration), *(e for _, e, _, _ in placed)])

    def moved(
        ivs: Sequence[tuple[float, float, str]], a: float, e: float
    ) -> list[tuple[float, float, str]]:
        return [(min(s + a, e), min(b + a, e), lab) for s, b, lab in ivs]

    words: dict[str, list] = {}
    phones: dict[str, list] = {}
    for a, e, spk, r in placed:
        words.setdefault(spk, []).extend(moved(r.words, a, e))
        phones.setdefault(spk, []).extend(sorted(moved([*r.phones, *r.pauses], a, e)))
    base = out_dir / name
    base.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "textgrid" in formats:
        from speechattn.data.textgrid import write_textgrid_tiers

        tiers = []
        for spk in words:
            tiers += [(f"{spk} - words", words[spk]), (f"{spk} - phones", phones[spk])]
        tg = base.with_name(f"{base.name}.TextGrid")
        written.append(write_textgrid_tiers(tg, tiers, duration=xmax))
    if "json" in formats:
        js = base.with_name(f"{base.name}.json")
        payload = {
            "recording": name,
            "duration": xmax,
            "utterances": [_json_payload(r, config, offset=a, end=e) for a, e, _, r in placed],
        }
        write_text_atomic(js, json.dumps(payload, indent=1, ensure_ascii=False))
        written.append(js)
    if "ctm" in formats:
        uid = "_".join(name.replace("/", "_").split()) or "recording"
        for suffix, tier in ((".ctm", "words"), (".phones.ctm", "phones")):
            ivs = []
            for a, e, _, r in placed:
                ivs += moved(r.words if tier == "words" else r.phones, a, e)
            lines = [
                f"{uid} 1 {s:.3f} {b - s:.3f} {'_'.join(lab.split()) or '<unk>'}"
                for s, b, lab in sorted(ivs)
            ]
            path = base.with_name(f"{base.name}{suffix}")
            written.append(write_text_atomic(path, "\n".join(lines) + ("\n" if lines else "")))
    return tuple(written)


def _token_labels(item: AlignItem) -> list[str]:
    """One label per token: the phone, or ``<sil>`` / ``<sp>`` for edge silences and pauses."""
    labels = [SIL if k in (0, len(item.tokens) - 1) else SP for k in range(len(item.tokens))]
    for p, k in zip(item.phones, item.phone_token_index):
        labels[k] = p
    return labels


def _write_textgrid_praatio(path: Path, words: list, phones: list, xmax: float) -> None:
    """TextGrid with word and phone tiers through praatio (used when the data front end lacks it)."""
    from praatio import textgrid as ptg

    grid = ptg.Textgrid(0.0, xmax)
    for name, ivs in (("words", words), ("phones", phones)):
        entries = [(float(a), float(b), str(lab)) for a, b, lab in ivs if b > a]
        grid.addTier(ptg.IntervalTier(name, entries, 0.0, xmax))
    with atomic_write(path) as tmp:
        grid.save(str(tmp), format="long_textgrid", includeBlankSpaces=True)
