"""A label-free sign of a collapsed aligner (issue 19; benchmarks/RESULTS.md, section "collapse").

A training seed of the aligner can collapse: one phone (usually ə) models silence and is
stretched by hundreds of ms, and word boundaries are then 75-184 ms off instead of ~25 ms. The
median over utterances of each utterance's LONGEST aligned phone, decoding the model's own
training utterances, separates the two: healthy models 151-185 ms, collapsed ones >= 435 ms over
32 models (every collapse seen was on a corpus with Kokoro voices); the threshold chosen on half
of the models was 304.8 ms, rounded to :data:`COLLAPSE_LONGEST_PHONE_MS`.

The signal reads audio + text + the model only (no labels). A value above the threshold is a
warning, not a verdict: train again with another seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "COLLAPSE_LONGEST_PHONE_MS",
    "NON_PHONE_LABELS",
    "check_collapse",
    "longest_phone_median_ms",
]

#: Above this median longest aligned phone (ms) an aligner looks collapsed (RESULTS "collapse":
#: 32 models, healthy 151-185 ms, collapsed >= 435 ms, split-half threshold 304.8 ms).
COLLAPSE_LONGEST_PHONE_MS = 300.0

#: Interval labels that are not phones (silence, pauses, padding): never counted. The
#: recipe's ``AlignmentResult.phones`` holds phone tokens only; these are excluded as well in
#: case a caller's intervals carry them.
NON_PHONE_LABELS = frozenset({"", "sil", "sp", "spn", "pau", "<pad>", "<sil>", "<sp>"})


def longest_phone_median_ms(results: Sequence[Any]) -> float:
    """Median over utterances of the longest aligned phone, in ms.

    ``results``: alignment results, one per utterance, each with ``phones``, a list of
    ``(start_s, end_s, label)`` intervals (e.g. :class:`~speechattn.recipes.align.evaluate.
    AlignmentResult`). Intervals labelled as silence, pause or padding
    (:data:`NON_PHONE_LABELS`) are skipped; an utterance without any phone interval is skipped.
    Raises ``ValueError`` when no utterance has a phone interval.
    """
    if isinstance(results, (str, bytes)) or not isinstance(results, Sequence):
        raise TypeError(
            f"Expected a sequence of alignment results; found {type(results).__name__}."
        )
    longest: list[float] = []
    for res in results:
        phones = getattr(res, "phones", None)
        if phones is None:
            raise TypeError(
                "Expected alignment results with a `phones` list of (start, end, label); "
                f"found {type(res).__name__}."
            )
        durs = [
            float(end) - float(start) for start, end, lab in phones if lab not in NON_PHONE_LABELS
        ]
        if durs:
            longest.append(max(durs))
    if not longest:
        raise ValueError(
            f"Expected at least one alignment result with a phone interval; found {len(results)} "
            "result(s) and none with a phone."
        )
    return 1000.0 * float(np.median(np.asarray(longest, dtype=np.float64)))


def check_collapse(
    results: Sequence[Any],
    *,
    kind: str,
    seed: int,
    log: Callable[[str], Any] = print,
    threshold_ms: float = COLLAPSE_LONGEST_PHONE_MS,
) -> float:
    """Log :func:`longest_phone_median_ms` of one trained aligner's decoding of its training
    utterances ``results`` and warn (``UserWarning``) when it is above ``threshold_ms``.

    Returns the value in ms.
    """
    value = longest_phone_median_ms(results)
    n = sum(1 for r in results if any(lab not in NON_PHONE_LABELS for _, _, lab in r.phones))
    log(
        f"aligner {kind} seed {seed}: longest aligned phone, median over {n} training "
        f"utterances: {value:.0f} ms"
    )
    if value > threshold_ms:
        warnings.warn(
            f"aligner {kind} seed {seed} looks collapsed ({value:.0f} ms > {threshold_ms:g} ms: "
            'one phone absorbs silence; benchmarks/RESULTS.md "collapse"); train again with '
            "another --seed",
            UserWarning,
            stacklevel=2,
        )
    return value
