"""A label-free sign of a collapsed aligner (issue 19; benchmarks/RESULTS.md, section "collapse").

A training seed of the aligner can collapse: one phone (usually ə) models silence and is
stretched by hundreds of ms, and word boundaries are then 75-184 ms off instead of ~25 ms. The
median over utterances of each utterance's LONGEST aligned phone, decoding the model's own
training utterances, separates the two: healthy models 151-185 ms, collapsed ones >= 435 ms over
32 models (every collapse seen was on a corpus with Kokoro voices); the threshold chosen on half
of the models was 304.8 ms, rounded to :data:`COLLAPSE_LONGEST_PHONE_MS`.

The signal reads audio + text + the model only (no labels). A value above the threshold is a
warning, not a verdict: train again with another seed. :func:`train_with_restarts` does that
for the recipes (``speechattn demo``, ``speechattn align --from-scratch``): a flagged aligner is
trained again with a restart seed (:func:`restart_seed`: model initialisation and batch order
only, never the data split) and the attempt with the lowest value is kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np

__all__ = [
    "COLLAPSE_LONGEST_PHONE_MS",
    "COLLAPSE_WHY",
    "DEFAULT_COLLAPSE_RETRIES",
    "NON_PHONE_LABELS",
    "RESTART_SEED_STRIDE",
    "UNDERTRAINED_NOTE",
    "CollapseAttempt",
    "check_collapse",
    "check_collapse_retries",
    "longest_phone_median_ms",
    "restart_seed",
    "train_with_restarts",
]

T = TypeVar("T")

#: Above this median longest aligned phone (ms) an aligner looks collapsed (RESULTS "collapse":
#: 32 models, healthy 151-185 ms, collapsed >= 435 ms, split-half threshold 304.8 ms).
COLLAPSE_LONGEST_PHONE_MS = 300.0

#: Why a value above the line matters, for the warnings (training, combining, adapting).
COLLAPSE_WHY = 'one phone absorbs silence; benchmarks/RESULTS.md "collapse"'
#: Added for freshly trained aligners: the line was set on 1000-step models, and a model trained
#: for a few dozen steps reads above it too (20 steps: 557-586 ms, RESULTS "readme4").
UNDERTRAINED_NOTE = "or, after few --steps, it is undertrained"

#: Interval labels that are not phones (silence, pauses, padding): never counted. The
#: recipe's ``AlignmentResult.phones`` holds phone tokens only; these are excluded as well in
#: case a caller's intervals carry them.
NON_PHONE_LABELS = frozenset({"", "sil", "sp", "spn", "pau", "<pad>", "<sil>", "<sp>"})

#: Extra training attempts the recipes make when a freshly trained aligner looks collapsed
#: (``--collapse-retries``; 0: log and warn only).
DEFAULT_COLLAPSE_RETRIES = 1

#: Restart ``k`` of a run trained with seed ``s`` trains with seed ``s + k * RESTART_SEED_STRIDE``
#: (see :func:`restart_seed`).
RESTART_SEED_STRIDE = 1_000_000


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
    log(
        f"aligner {kind} seed {seed}: longest aligned phone, median over "
        f"{_phone_utterances(results)} training utterances: {value:.0f} ms"
    )
    if value > threshold_ms:
        warnings.warn(
            f"aligner {kind} seed {seed} looks collapsed ({value:.0f} ms > {threshold_ms:g} ms: "
            f"{COLLAPSE_WHY}; {UNDERTRAINED_NOTE}); train again with another --seed",
            UserWarning,
            stacklevel=2,
        )
    return value


def _phone_utterances(results: Sequence[Any]) -> int:
    """How many of ``results`` have a phone interval (the utterances the median is over)."""
    return sum(1 for r in results if any(lab not in NON_PHONE_LABELS for _, _, lab in r.phones))


def check_collapse_retries(retries: int) -> int:
    """``retries`` as an ``int`` when it is a valid number of collapse restarts (an integer
    >= 0); else ``TypeError`` / ``ValueError`` naming what was expected and found."""
    if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)):
        raise TypeError(
            f"Expected collapse_retries to be an integer >= 0; found {type(retries).__name__}."
        )
    if retries < 0:
        raise ValueError(
            f"Expected collapse_retries >= 0 (0: warn only); found {retries}. Pass "
            "--collapse-retries 0 or more."
        )
    return int(retries)


def restart_seed(seed: int, attempt: int) -> int:
    """The training seed of attempt ``attempt`` of a run trained with seed ``seed``.

    Attempt 0 is the run itself (``seed``); restart ``k >= 1`` trains with
    ``seed + k * RESTART_SEED_STRIDE``. The recipes pass it to the trainer only (the model's
    initialisation and the batch order): the corpus, the held-out split, the held-out voices and
    the channel copies keep ``seed``, so a restart trains on exactly the same utterances.

    Raises:
        TypeError: ``seed`` or ``attempt`` not an integer.
        ValueError: ``seed`` or ``attempt`` negative.
    """
    for name, value in (("seed", seed), ("attempt", attempt)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"Expected {name} to be an integer; found {type(value).__name__}.")
        if value < 0:
            raise ValueError(f"Expected {name} >= 0; found {value}.")
    return int(seed) + int(attempt) * RESTART_SEED_STRIDE


class CollapseAttempt(NamedTuple):
    """One training attempt of :func:`train_with_restarts`."""

    attempt: int  #: 0 = the first training, k = restart k
    seed: int  #: the training seed it used (:func:`restart_seed`)
    longest_phone_ms: float  #: :func:`longest_phone_median_ms` of its training decoding


def train_with_restarts(
    attempt: Callable[[int, int], tuple[T, Sequence[Any] | None]],
    *,
    kind: str,
    seed: int,
    retries: int = DEFAULT_COLLAPSE_RETRIES,
    log: Callable[[str], Any] = print,
    threshold_ms: float = COLLAPSE_LONGEST_PHONE_MS,
) -> tuple[T, list[CollapseAttempt], int]:
    """Train an aligner, and again while it looks collapsed, up to ``retries`` more times.

    ``attempt(k, seed_k)`` trains attempt ``k`` with the training seed ``seed_k``
    (:func:`restart_seed` of ``seed``) and returns ``(outcome, decoding)``: anything the caller
    keeps (the model, its decodings) and its decoding of its training utterances (alignment
    results with ``phones``), or ``None`` when there is none to check (then nothing is logged and
    no restart is made). Each attempt logs one line with its :func:`longest_phone_median_ms`;
    while the value is above ``threshold_ms`` and restarts are left, the next attempt follows.
    The attempt with the lowest value is kept (the earlier one on a tie). When the kept value is
    still above ``threshold_ms`` a ``UserWarning`` says so (with ``retries=0`` exactly
    :func:`check_collapse`'s line and warning). A healthy first attempt is the only one made.

    Args:
        attempt: ``(k, seed_k) -> (outcome, decoding or None)``.
        kind: the aligner kind, for the log lines.
        seed: the run's training seed (attempt 0's).
        retries: most restarts after the first attempt (0: log and warn only).
        log: where the lines go.
        threshold_ms: the collapse threshold (:data:`COLLAPSE_LONGEST_PHONE_MS`).

    Returns:
        ``(kept outcome, attempts, index of the kept attempt)``; ``attempts`` is empty when the
        first attempt had no decoding to check.

    Raises:
        TypeError / ValueError: ``retries`` not an integer >= 0, ``seed`` not one >= 0.
    """
    retries = check_collapse_retries(retries)
    restart_seed(seed, 0)  # checks seed
    kept: T | None = None
    attempts: list[CollapseAttempt] = []
    best = 0
    for k in range(int(retries) + 1):
        seed_k = restart_seed(seed, k)
        outcome, decoding = attempt(k, seed_k)
        if decoding is None:
            if k == 0:
                return outcome, [], 0
            raise ValueError(
                f"Expected a training decoding from restart {k} of aligner {kind} seed {seed}, "
                "as from its first attempt; found None."
            )
        value = longest_phone_median_ms(decoding)
        attempts.append(CollapseAttempt(k, seed_k, value))
        if k == 0 or value < attempts[best].longest_phone_ms:
            kept, best = outcome, k
        again = value > threshold_ms and k < retries
        who = f"aligner {kind} seed {seed}" + (f" restart {k} (seed {seed_k})" if k else "")
        log(
            f"{who}: longest aligned phone, median over {_phone_utterances(decoding)} training "
            f"utterances: {value:.0f} ms"
            + (
                f"; above {threshold_ms:g} ms (looks collapsed): training it again, restart "
                f"{k + 1} of up to {retries} with seed {restart_seed(seed, k + 1)} (same data)"
                if again
                else ""
            )
        )
        if not again:
            break
    chosen = attempts[best]
    if len(attempts) > 1:
        log(
            f"aligner {kind} seed {seed}: kept "
            + ("the first attempt" if best == 0 else f"restart {best} (seed {chosen.seed})")
            + f", {chosen.longest_phone_ms:.0f} ms, of {len(attempts)} attempts"
        )
    if chosen.longest_phone_ms > threshold_ms:
        tried = (
            f" after {len(attempts) - 1} restart(s), keeping the lowest (seed {chosen.seed})"
            if len(attempts) > 1
            else ""
        )
        warnings.warn(
            f"aligner {kind} seed {seed} looks collapsed ({chosen.longest_phone_ms:.0f} ms > "
            f"{threshold_ms:g} ms: {COLLAPSE_WHY}; {UNDERTRAINED_NOTE})"
            f"{tried}; train again with another --seed",
            UserWarning,
            stacklevel=2,
        )
    return kept, attempts, best  # type: ignore[return-value]
