"""Boundary calibration: per-context time offsets that map an aligner's boundaries onto a labelling
convention, estimated from a few labelled utterances.

Why: an unsupervised aligner puts each boundary where its own acoustic model is most consistent,
which is not always where the annotator (or the synthesizer's event clock) puts it. The errors are
systematic per phone context, not random: on the synthetic corpus the SMA aligner starts a voiceless
stop in the middle of its closure silence, while espeak-ng's phone events start the stop at the burst
(the closure belongs to the phone before), so boundaries before /t k p tS/ are ~25 ms early on every
voice. A table of median offsets per ``(previous symbol, next symbol)`` context, with back-off to the
next symbol and to one global offset, learned on labelled utterances, removes that convention gap
(the same idea as forced aligners' boundary-refinement passes).

This uses labels, so it is *not* part of the unsupervised aligner: results with and without it are
reported separately, and calibration is only ever fitted on training utterances, never on the
utterances it is scored on. The shipped English aligner carries three tables fitted on its
synthetic training voices: the per-context table above (``speechattn align --calibration
contexts``; it maps onto espeak-ng's convention, half of the training corpus) and two class tables
(:func:`fit_class_offsets`: one offset per boundary class, each training engine counting once),
``engines`` (the median engine) and ``consensus`` (a shift every training engine agrees with), which
``speechattn align`` applies by default. Why: the engines' labelling conventions differ by about
25 ms and the aligner follows espeak-ng's, so it is late against every other engine, seen in
training or not (benchmarks/RESULTS.md, "Late boundaries on unseen engines").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from speechattn.recipes.align.data import SIL, token_symbol

__all__ = [
    "BOUNDARY_CLASSES",
    "BoundaryOffsets",
    "boundary_class",
    "boundary_errors",
    "fit_boundary_offsets",
    "fit_class_offsets",
    "shift_edges",
]

# Boundary classes of a class table (:func:`fit_class_offsets`): the end of a silence or pause
# and the start of speech, two sounds meeting, the end of speech and the start of a pause.
BOUNDARY_CLASSES = ("sil|speech", "speech|speech", "speech|sil")


def _sym(phone: str) -> str:
    """Stress-free symbol; every silence/pause token (``<sil>``, ``<sp>``) is ``"<sil>"``."""
    return SIL if phone.startswith("<") else token_symbol(phone, strip_stress=True)


@dataclass
class BoundaryOffsets:
    """Seconds to add to a boundary, by context (see the module docstring).

    Attributes:
        pair: ``"prev|next" -> seconds`` for contexts seen at least ``min_pair`` times.
        next: ``next -> seconds`` (back-off) for next symbols seen at least ``min_next`` times.
        default: global median offset (last back-off).
        boundaries: how many labelled boundaries the table was fitted on.
        classes: ``boundary class -> seconds`` (:data:`BOUNDARY_CLASSES`; a class table of
            :func:`fit_class_offsets`), the back-off after ``next`` and before ``default``.
        groups: the groups (speech engines) a class table balanced, in fitting order.
    """

    pair: dict[str, float] = field(default_factory=dict)
    next: dict[str, float] = field(default_factory=dict)
    default: float = 0.0
    boundaries: int = 0
    classes: dict[str, float] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)

    def offset(self, prev: str, nxt: str) -> float:
        """Offset (seconds) for the boundary between symbols ``prev`` and ``nxt``."""
        key = f"{prev}|{nxt}"
        if key in self.pair:
            return self.pair[key]
        if nxt in self.next:
            return self.next[nxt]
        return self.classes.get(boundary_class(prev, nxt), self.default)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> BoundaryOffsets | None:
        if not d:
            return None
        return cls(
            pair={str(k): float(v) for k, v in d.get("pair", {}).items()},
            next={str(k): float(v) for k, v in d.get("next", {}).items()},
            default=float(d.get("default", 0.0)),
            boundaries=int(d.get("boundaries", 0)),
            classes={str(k): float(v) for k, v in d.get("classes", {}).items()},
            groups=[str(g) for g in d.get("groups", [])],
        )


def boundary_class(prev: str, nxt: str) -> str:
    """The class of the boundary between symbols ``prev`` and ``nxt`` (``"<sil>"`` for a
    silence or pause): ``"sil|speech"``, ``"speech|speech"``, ``"speech|sil"`` or ``"sil|sil"``."""

    def kind(sym: str) -> str:
        return "sil" if sym == SIL else "speech"

    return f"{kind(prev)}|{kind(nxt)}"


def boundary_errors(
    phones: Sequence[tuple[float, float, str]], truth: Sequence[tuple[float, float]]
) -> list[tuple[str, str, float]]:
    """``(prev, next, truth - hypothesis)`` (seconds) for every boundary of an aligned utterance.

    A boundary is each phone's start, plus its end when the next aligned phone does not start there
    (the last phone, or a pause token in between). Contexts come from the hypothesis: stress-free
    symbols, ``"<sil>"`` for silence/pause tokens; ``truth`` holds one ``(start, end)`` per phone.
    """
    out: list[tuple[str, str, float]] = []
    for k, ((a, b, p), (ts, te)) in enumerate(zip(phones, truth)):
        contiguous = k > 0 and abs(phones[k - 1][1] - a) < 1e-9
        out.append((_sym(phones[k - 1][2]) if contiguous else SIL, _sym(p), ts - a))
        if not (k + 1 < len(phones) and abs(phones[k + 1][0] - b) < 1e-9):
            out.append((_sym(p), SIL, te - b))
    return out


def fit_boundary_offsets(
    results: Sequence[Any], *, min_pair: int = 5, min_next: int = 3
) -> BoundaryOffsets:
    """Fit a :class:`BoundaryOffsets` table on aligned utterances that have ground-truth phones.

    Each entry is the median of ``truth - hypothesis`` over the boundaries of its context.

    Args:
        results: :class:`~speechattn.recipes.align.evaluate.AlignmentResult` objects computed
            *without* calibration, whose items carry ``gt_phones`` (one per aligned phone).
        min_pair / min_next: minimum counts for a context / next-symbol entry (else back off).

    Raises:
        ValueError: when no result has usable ground truth.
    """
    pair: dict[str, list[float]] = defaultdict(list)
    nxt: dict[str, list[float]] = defaultdict(list)
    every: list[float] = []
    for r in results:
        gt = getattr(r.item, "gt_phones", None)
        if gt is None or len(gt) != len(r.phones):
            continue
        truth = [
            (float(g.start), float(g.end)) if hasattr(g, "start") else (float(g[0]), float(g[1]))
            for g in gt
        ]
        for p, n, e in boundary_errors(r.phones, truth):
            pair[f"{p}|{n}"].append(e)
            nxt[n].append(e)
            every.append(e)
    if not every:
        raise ValueError(
            "Expected aligned utterances with ground-truth phone intervals to fit boundary "
            "offsets; found none (no item has gt_phones matching its phones)."
        )
    return BoundaryOffsets(
        pair={k: float(np.median(v)) for k, v in pair.items() if len(v) >= min_pair},
        next={k: float(np.median(v)) for k, v in nxt.items() if len(v) >= min_next},
        default=float(np.median(every)),
        boundaries=len(every),
    )


def _word_boundary_errors(result: Any) -> list[tuple[str, float]]:
    """``(class, truth - hypothesis)`` (seconds) of each word start and end of an aligned utterance
    whose ground truth has its words (written words, or spoken ones merged per written word:
    :func:`~speechattn.recipes.align.data.word_truth`). A start is ``"sil|speech"`` when a pause
    (or the leading silence) took frames before it on the path, else ``"speech|speech"``; an end
    likewise."""
    from speechattn.recipes.align.data import word_truth

    words = list(result.words)
    gt = word_truth(result.item) if getattr(result.item, "gt_words", None) is not None else None
    if gt is None or len(gt) != len(words) or not words:
        return []
    out: list[tuple[str, float]] = []
    n = len(words)
    for i, ((a, b, _), (ts, te)) in enumerate(zip(words, gt)):
        gap_before = (words[i - 1][1] < a - 1e-9) if i else a > 1e-9
        gap_after = (b < words[i + 1][0] - 1e-9) if i + 1 < n else True
        out.append(("sil|speech" if gap_before else "speech|speech", ts - a))
        out.append(("speech|sil" if gap_after else "speech|speech", te - b))
    return out


def fit_class_offsets(
    results: Sequence[Any],
    groups: Sequence[str],
    *,
    min_count: int = 20,
    combine: str = "median",
) -> BoundaryOffsets:
    """A class table (:data:`BOUNDARY_CLASSES`) fitted on labelled word boundaries, each group
    (speech engine) counting once.

    For each group and class, the median of ``truth - hypothesis`` over the word boundaries of
    the group's utterances; each class's offset is the median of those group medians (groups
    with fewer than ``min_count`` boundaries of the class are left out of it), so an engine that
    contributed many utterances weighs no more than one that contributed few: each engine's
    labelling convention is one sample of the conventions an unseen engine may follow. With one
    group this is the median over its boundaries. Word boundaries are used because every engine
    gives word timings (not every engine's phones line up with the aligner's phonemes); phone
    boundaries inside words get the ``"speech|speech"`` offset.

    Args:
        results: :class:`~speechattn.recipes.align.evaluate.AlignmentResult` objects computed
            *without* calibration, with the decoding the table will be used with.
        groups: one group name per result (e.g. its speech engine).
        min_count: fewest boundaries of a class for a group to count in that class.
        combine: ``"median"`` (the median of the group medians) or ``"consensus"`` (the group
            median closest to 0 when every group's median has the same sign, else 0: a shift
            every group agrees with, which moves no group's boundaries past its own labels).

    Raises:
        ValueError: when ``groups`` does not match ``results`` or no result has word truth.
    """
    if combine not in ("median", "consensus"):
        raise ValueError(f"Expected combine in ('median', 'consensus'); found {combine!r}.")
    if len(groups) != len(results):
        raise ValueError(
            f"Expected one group per result; found {len(groups)} groups for {len(results)} results."
        )
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    n = 0
    for r, g in zip(results, groups):
        for cls, e in _word_boundary_errors(r):
            per[str(g)][cls].append(e)
            per[str(g)]["all"].append(e)
            n += 1
    if not n:
        raise ValueError(
            "Expected aligned utterances with ground-truth word intervals to fit class offsets; "
            "found none (no item has gt_words matching its words)."
        )
    names = sorted(per)
    classes: dict[str, float] = {}
    for cls in (*BOUNDARY_CLASSES, "all"):
        meds = [float(np.median(per[g][cls])) for g in names if len(per[g][cls]) >= min_count]
        if meds and combine == "median":
            classes[cls] = float(np.median(meds))
        elif meds:
            agree = all(m > 0 for m in meds) or all(m < 0 for m in meds)
            classes[cls] = min(meds, key=abs) if agree else 0.0
    default = classes.pop("all", 0.0)
    classes["sil|sil"] = 0.0  # a pause next to a silence: no speech boundary to move
    return BoundaryOffsets(default=default, boundaries=n, classes=classes, groups=names)


def shift_edges(
    edges: np.ndarray, labels: Sequence[str], offsets: BoundaryOffsets, min_gap: float
) -> np.ndarray:
    """Shift the inner edges of token intervals by their context offsets, keeping order.

    Args:
        edges: ``(U + 1,)`` seconds, ``edges[0] = 0`` and ``edges[U]`` = the end (both kept).
        labels: ``(U,)`` token symbols (``"<sil>"`` for silences).
        min_gap: every token keeps at least this many seconds (when the span allows).
    """
    e = np.asarray(edges, dtype=np.float64).copy()
    u = len(labels)
    for i in range(1, u):
        e[i] += offsets.offset(_sym(labels[i - 1]), _sym(labels[i]))
    gap = min(min_gap, (e[u] - e[0]) / max(u, 1))
    for i in range(1, u):  # forward: each token at least `gap` long
        e[i] = max(e[i], e[i - 1] + gap)
    for i in range(u - 1, 0, -1):  # backward: leave room for the tokens after
        e[i] = min(e[i], e[i + 1] - gap)
    return e
