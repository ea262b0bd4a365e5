"""Alignments on disk: Praat TextGrid (through praatio 6), JSON and CTM.

TextGrids have two interval tiers named as the Montreal Forced Aligner names them, ``words`` and
``phones``, so tools built for MFA output read ours; gaps (pauses) are written as blank
intervals and dropped again on reading. The reader also takes MFA's multi-speaker tier names
(``<speaker> - words``, one speaker at a time) and singular or capitalised names (``word``,
``Phones``); :func:`write_textgrid_tiers` writes such multi-speaker grids. CTM (Kaldi/NIST
time-marked conversation) files hold one ``<utterance> <channel> <start> <duration> <label>``
line per interval. Praat cannot hold zero-length intervals (espeak emits a
few, e.g. an elided /l/): :func:`write_textgrid` gives each one ``min_interval`` seconds taken
from the end of the interval before it (or from the start of the next), so times read back
differ from the originals by at most ``min_interval`` for those intervals and their neighbours.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speechattn._io import atomic_write, write_text_atomic
from speechattn.data.synth import Interval

__all__ = [
    "read_alignment_json",
    "read_ctm",
    "read_textgrid",
    "write_alignment_json",
    "write_ctm",
    "write_textgrid",
    "write_textgrid_tiers",
]

TIER_NAMES = ("words", "phones")


def _as_intervals(items: Sequence[Any], name: str) -> list[Interval]:
    out = []
    for i, it in enumerate(items):
        try:
            start, end, label = it
            out.append(Interval(float(start), float(end), str(label)))
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"Expected {name}[{i}] to be (start, end, label); found {it!r}."
            ) from exc
    for i, iv in enumerate(out):
        if iv.end < iv.start:
            raise ValueError(f"Expected {name}[{i}] with start <= end; found {iv}.")
        if i and iv.start < out[i - 1].end - 1e-9:
            raise ValueError(
                f"Expected {name} sorted and non-overlapping; {name}[{i}]={iv} starts before "
                f"{name}[{i - 1}] ends at {out[i - 1].end}."
            )
    return out


def _fix_zero_length(ivs: list[Interval], min_interval: float) -> list[Interval]:
    starts = [iv.start for iv in ivs]
    ends = [iv.end for iv in ivs]
    for i in range(len(ivs)):
        if ends[i] - starts[i] >= min_interval:
            continue
        need = min_interval - (ends[i] - starts[i])
        if (
            i > 0
            and ends[i - 1] - starts[i - 1] > need + min_interval
            and ends[i - 1] >= starts[i] - 1e-12
        ):
            ends[i - 1] -= need
            starts[i] -= need
        elif i + 1 < len(ivs) and ends[i + 1] - starts[i + 1] > need + min_interval:
            starts[i + 1] += need
            ends[i] += need
        else:
            ends[i] += need  # room in a following gap (checked by praatio on save)
    return [Interval(a, b, iv.label) for a, b, iv in zip(starts, ends, ivs)]


def write_textgrid(
    path: str | os.PathLike[str],
    *,
    words: Sequence[Any],
    phones: Sequence[Any],
    duration: float,
    min_interval: float = 1e-3,
) -> Path:
    """Write a Praat long-format TextGrid with ``words`` and ``phones`` interval tiers.

    Args:
        path: output file (``.TextGrid``).
        words, phones: time-ordered ``(start, end, label)`` items in seconds (e.g.
            :class:`~speechattn.data.synth.Interval`).
        duration: length of the audio in seconds (the tiers' end time).
        min_interval: shortest interval Praat gets (see the module notes).

    Returns:
        ``Path(path)``.
    """
    return write_textgrid_tiers(
        path, [("words", words), ("phones", phones)], duration=duration, min_interval=min_interval
    )


def write_textgrid_tiers(
    path: str | os.PathLike[str],
    tiers: Sequence[tuple[str, Sequence[Any]]],
    *,
    duration: float,
    min_interval: float = 1e-3,
) -> Path:
    """Write a Praat long-format TextGrid with the given interval tiers, in order.

    :func:`write_textgrid` is this with ``[("words", ...), ("phones", ...)]``; a recording with
    several speakers gets MFA's ``<speaker> - words`` and ``<speaker> - phones`` pairs.

    Args:
        path: output file (``.TextGrid``).
        tiers: ``(name, intervals)`` pairs; each tier's intervals time-ordered,
            non-overlapping ``(start, end, label)`` items in seconds. Names must be unique.
        duration: length of the audio in seconds (the tiers' end time).
        min_interval: shortest interval Praat gets (see the module notes).

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: a repeated tier name, an interval out of order, or one ending after
            ``duration``.
    """
    from praatio import textgrid

    names = [str(n) for n, _ in tiers]
    if len(set(names)) != len(names):
        raise ValueError(f"Expected unique tier names; found {names}.")
    fixed = [
        (name, _fix_zero_length(_as_intervals(ivs, name), min_interval)) for name, ivs in tiers
    ]
    last = max([iv.end for _, ivs in fixed for iv in ivs], default=0.0)
    if duration < last - 1e-6:
        raise ValueError(
            f"Expected duration >= the last interval end {last}; found duration={duration}."
        )
    duration = max(duration, last)
    tg = textgrid.Textgrid()
    for name, ivs in fixed:
        tg.addTier(textgrid.IntervalTier(name, [tuple(iv) for iv in ivs], 0.0, duration))
    out = Path(path)
    with atomic_write(out) as tmp:  # a write cut short leaves the earlier file, never half a grid
        tg.save(str(tmp), format="long_textgrid", includeBlankSpaces=True, reportingMode="error")
    return out


def read_textgrid(
    path: str | os.PathLike[str], *, speaker: str | None = None
) -> tuple[list[Interval], list[Interval]]:
    """Read ``(words, phones)`` from a TextGrid with tiers named ``words`` and ``phones``.

    ``speaker``: read that speaker's tiers of a multi-speaker TextGrid (MFA's
    ``<speaker> - words`` and ``<speaker> - phones``); None takes ``words``/``phones`` or the
    first speaker's. Blank intervals (pauses) are dropped. Raises ``ValueError`` naming the file
    when it cannot be parsed or lacks a tier.
    """
    from praatio import textgrid

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: TextGrid not found")
    try:
        tg = textgrid.openTextgrid(str(p), includeEmptyIntervals=False, reportingMode="silence")
    except Exception as exc:
        raise ValueError(f"{p}: could not parse TextGrid ({exc})") from exc
    out = []
    for name in TIER_NAMES:
        if speaker is not None:
            want = f"{speaker} - {name}"
            found = want if want in tg.tierNames else None
            if found is None:
                raise ValueError(
                    f"{p}: expected a tier named {want!r}; found tiers {list(tg.tierNames)}."
                )
        else:
            found = _find_tier(list(tg.tierNames), name)
        if found is None:
            raise ValueError(
                f"{p}: expected a tier named {name!r} (or {name[:-1]!r}, '<speaker> - {name}'); "
                f"found tiers {list(tg.tierNames)}."
            )
        tier = tg.getTier(found)
        out.append(
            [
                Interval(float(e.start), float(e.end), str(e.label))
                for e in tier.entries
                if e.label.strip()
            ]
        )
    return out[0], out[1]


def _find_tier(names: list[str], want: str) -> str | None:
    """The tier holding ``want`` (``words``/``phones``): exact name first, then MFA's
    ``<speaker> - words``, then singular or capitalised spellings."""
    if want in names:
        return want
    ok = {want, want[:-1]}
    for n in names:
        base = n.rsplit(" - ", 1)[-1].strip().lower()
        if base in ok:
            return n
    return None


def write_ctm(
    path: str | os.PathLike[str],
    intervals: Sequence[Any],
    *,
    utterance_id: str,
    channel: int = 1,
) -> Path:
    """Write ``(start, end, label)`` items as CTM lines ``<id> <channel> <start> <dur> <label>``.

    Times are in seconds with 3 decimals; labels may not contain whitespace (it is replaced by
    ``_``), nor may the utterance id.
    """
    ivs = _as_intervals(intervals, "intervals")
    uid = "_".join(str(utterance_id).split()) or "utt"
    lines = []
    for iv in ivs:
        label = "_".join(iv.label.split()) or "<unk>"
        lines.append(f"{uid} {int(channel)} {iv.start:.3f} {iv.end - iv.start:.3f} {label}")
    return write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


def read_ctm(path: str | os.PathLike[str]) -> dict[str, list[Interval]]:
    """Read a CTM file: utterance id -> its ``Interval`` items (in file order)."""
    p = Path(path)
    out: dict[str, list[Interval]] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith(";;"):
            continue
        parts = line.split()
        if len(parts) < 5:
            raise ValueError(f"{p}:{n}: expected '<id> <channel> <start> <duration> <label>'.")
        try:
            start, dur = float(parts[2]), float(parts[3])
        except ValueError as exc:
            raise ValueError(f"{p}:{n}: start and duration must be numbers.") from exc
        out.setdefault(parts[0], []).append(Interval(start, start + dur, parts[4]))
    return out


def write_alignment_json(
    path: str | os.PathLike[str],
    *,
    words: Sequence[Any],
    phones: Sequence[Any],
    duration: float,
    text: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``{"duration", "text", "words": [[s, e, label]...], "phones": [...], **extra}``."""
    w = _as_intervals(words, "words")
    p = _as_intervals(phones, "phones")
    rec: dict[str, Any] = {
        "duration": float(duration),
        "text": text,
        "words": [list(iv) for iv in w],
        "phones": [list(iv) for iv in p],
    }
    if extra:
        rec.update(extra)
    return write_text_atomic(path, json.dumps(rec, ensure_ascii=False, indent=1))


def read_alignment_json(path: str | os.PathLike[str]) -> tuple[list[Interval], list[Interval]]:
    """Read ``(words, phones)`` written by :func:`write_alignment_json`."""
    p = Path(path)
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc.msg})") from exc
    if not isinstance(rec, dict) or "words" not in rec or "phones" not in rec:
        raise ValueError(f"{p}: expected an object with 'words' and 'phones'.")
    return _as_intervals(rec["words"], "words"), _as_intervals(rec["phones"], "phones")
