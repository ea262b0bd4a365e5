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

Early check (option, default off: ``--collapse-check-at STEP``): the same value, read at step
``STEP`` of a training on up to :data:`EARLY_CHECK_UTTERANCES` of its training utterances
(:func:`early_check_sample`, :func:`early_check_hooks`), stops an attempt above :data:`EARLY_COLLAPSE_LONGEST_PHONE_MS`
(:class:`StoppedEarly`), and :func:`train_with_restarts` starts the next restart at once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np

__all__ = [
    "COLLAPSE_LONGEST_PHONE_MS",
    "COLLAPSE_WHY",
    "DEFAULT_COLLAPSE_RETRIES",
    "EARLY_CHECK_UTTERANCES",
    "EARLY_COLLAPSE_LONGEST_PHONE_MS",
    "NON_PHONE_LABELS",
    "RESTART_SEED_STRIDE",
    "UNDERTRAINED_NOTE",
    "CollapseAttempt",
    "StoppedEarly",
    "check_collapse",
    "check_collapse_check_at",
    "check_collapse_retries",
    "early_check_hooks",
    "early_check_sample",
    "longest_phone_median_ms",
    "restart_seed",
    "stopped_early",
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

#: Above this median longest aligned phone (ms) at the early check (``--collapse-check-at``)
#: an attempt is stopped and the next restart starts at once. From RESULTS "collapsefix": at
#: step 300 the 10 runs trained to 1000 steps (espeak-ng held out only) read <= 273 ms when they
#: ended healthy and >= 610 ms when they ended collapsed or flagged; 450 ms lies near the middle
#: of that gap (arithmetic mean 441, geometric 408), ~1.6x the highest healthy value, so a
#: healthy run must more than double-stretch its longest phone to be stopped, and ~0.74x the
#: lowest bad one. Above :data:`COLLAPSE_LONGEST_PHONE_MS`: early in training a healthy run
#: still reads higher than at its end (at step 100: 313 ms). One engine, 10 runs: hence off by
#: default.
EARLY_COLLAPSE_LONGEST_PHONE_MS = 450.0

#: The early check decodes at most this many training utterances (the collapse probe's count).
EARLY_CHECK_UTTERANCES = 100

#: History keys of the early check's record (the step's record of ``train_aligner``).
_EARLY_MS = "early_longest_phone_ms"
_EARLY_N = "early_check_utterances"
_EARLY_STOP = "early_collapse_stop"
_EARLY_TH = "early_threshold_ms"


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
    #: :func:`longest_phone_median_ms` of its training decoding (an attempt stopped early: the
    #: early check's value)
    longest_phone_ms: float
    #: the step at which the early check stopped it (``None``: trained to the end)
    stopped_at: int | None = None


class StoppedEarly(Exception):
    """Raised by a training attempt that the early collapse check stopped (see
    :func:`stopped_early`); :func:`train_with_restarts` catches it and restarts at once."""

    def __init__(
        self, step: int, longest_phone_ms: float, *, utterances: int = 0, threshold_ms: float
    ) -> None:
        super().__init__(
            f"stopped early at step {step} ({longest_phone_ms:.0f} ms > {threshold_ms:g} ms)"
        )
        self.step = int(step)
        self.longest_phone_ms = float(longest_phone_ms)
        self.utterances = int(utterances)
        self.threshold_ms = float(threshold_ms)


def check_collapse_check_at(check_at: int | None, *, steps: int) -> int | None:
    """``check_at`` as an ``int`` (or ``None``: no early check) when it is a step inside a
    training of ``steps`` steps (``1 <= check_at < steps``); else ``TypeError`` / ``ValueError``
    naming what was expected and found."""
    if check_at is None:
        return None
    if isinstance(check_at, bool) or not isinstance(check_at, (int, np.integer)):
        raise TypeError(
            "Expected collapse_check_at to be an integer step (or None: off); found "
            f"{type(check_at).__name__}."
        )
    if not 1 <= check_at < steps:
        raise ValueError(
            f"Expected collapse_check_at to be a step from 1 to {steps - 1} (before the last of "
            f"--steps {steps}); found {check_at}."
        )
    return int(check_at)


def early_check_sample(items: Sequence[T], *, n: int = EARLY_CHECK_UTTERANCES) -> list[T]:
    """At most ``n`` of ``items``, evenly spaced over them (item ``floor(i * len / n)`` for
    ``i < n``; all of them when there are ``n`` or fewer): a corpus sorted by id keeps its
    engines' shares, where its first ``n`` items could all be one engine's."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"Expected n to be a positive integer; found {n!r}.")
    total = len(items)
    if total <= n:
        return list(items)
    return [items[(i * total) // n] for i in range(int(n))]


def early_check_hooks(
    decode: Callable[[Any], Sequence[Any]],
    *,
    check_at: int,
    who: str,
    on_eval: Callable[[Any, int], dict] | None = None,
    eval_every: int = 0,
    log: Callable[[str], Any] = print,
    threshold_ms: float = EARLY_COLLAPSE_LONGEST_PHONE_MS,
) -> tuple[Callable[[Any, int], dict], int, Callable[[list[dict]], bool]]:
    """The trainer hooks of the early collapse check: ``(on_eval, eval_every, should_stop)`` for
    ``train_aligner``.

    At step ``check_at`` the returned ``on_eval`` decodes with ``decode(model)`` (alignment
    results with ``phones``: the run's training utterances, up to
    :data:`EARLY_CHECK_UTTERANCES`), records :func:`longest_phone_median_ms` in that step's
    history record and, above ``threshold_ms``, marks it so that ``should_stop`` ends the
    training there (before the next step; a run resumed from that step's checkpoint stops
    again). A value at or below the threshold is logged (``who``: the log line's subject) and
    training goes on; the caller reads a stop with :func:`stopped_early`. The caller's own
    ``on_eval`` still runs every ``eval_every`` steps (0: never): the hooks run every
    ``gcd(eval_every, check_at)`` steps and do nothing at the other steps.
    """
    every = math.gcd(int(eval_every), int(check_at)) if eval_every else int(check_at)

    def hook(model: Any, step: int) -> dict:
        rec: dict = {}
        if on_eval is not None and eval_every and step % eval_every == 0:
            rec.update(on_eval(model, step))
        if step == check_at:
            results = decode(model)
            value = longest_phone_median_ms(results)
            stop = value > threshold_ms
            n = _phone_utterances(results)
            rec.update({_EARLY_MS: value, _EARLY_N: n, _EARLY_STOP: stop, _EARLY_TH: threshold_ms})
            if not stop:
                log(
                    f"{who}: step {step}: longest aligned phone, median over {n} training "
                    f"utterances: {value:.0f} ms, not above {threshold_ms:g} ms (early check): "
                    "training on"
                )
        return rec

    def should_stop(history: list[dict]) -> bool:
        return bool(history) and bool(history[-1].get(_EARLY_STOP))

    return hook, every, should_stop


def stopped_early(history: Sequence[dict]) -> StoppedEarly | None:
    """A :class:`StoppedEarly` when a training's ``history`` ended at the early check's stop
    (its last record is the step :func:`early_check_hooks` marked), else ``None``."""
    if not history or not history[-1].get(_EARLY_STOP):
        return None
    rec = history[-1]
    return StoppedEarly(
        int(rec["step"]),
        float(rec[_EARLY_MS]),
        utterances=int(rec.get(_EARLY_N, 0)),
        threshold_ms=float(rec.get(_EARLY_TH, EARLY_COLLAPSE_LONGEST_PHONE_MS)),
    )


def train_with_restarts(
    attempt: Callable[[int, int], tuple[T, Sequence[Any] | None]],
    *,
    kind: str,
    seed: int,
    retries: int = DEFAULT_COLLAPSE_RETRIES,
    log: Callable[[str], Any] = print,
    threshold_ms: float = COLLAPSE_LONGEST_PHONE_MS,
    finish: Callable[[int, int], tuple[T, Sequence[Any] | None]] | None = None,
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

    Early check (:func:`early_check_hooks`): an attempt may raise :class:`StoppedEarly`; it
    counts as an attempt (recorded with ``stopped_at`` and the early value, never kept) and the
    next restart starts at once. When every attempt stopped early, ``finish(k, seed_k)`` trains
    the last one on to the end without the check (resuming it) and returns as ``attempt`` does;
    that one is kept and a ``UserWarning`` says so.

    Args:
        attempt: ``(k, seed_k) -> (outcome, decoding or None)``; may raise
            :class:`StoppedEarly`.
        kind: the aligner kind, for the log lines.
        seed: the run's training seed (attempt 0's).
        retries: most restarts after the first attempt (0: log and warn only).
        log: where the lines go.
        threshold_ms: the collapse threshold (:data:`COLLAPSE_LONGEST_PHONE_MS`).
        finish: ``(k, seed_k) -> (outcome, decoding)``: attempt ``k`` trained to the end with
            the early check off (needed only when every attempt stopped early).

    Returns:
        ``(kept outcome, attempts, index of the kept attempt)``; ``attempts`` is empty when the
        first attempt had no decoding to check.

    Raises:
        TypeError / ValueError: ``retries`` not an integer >= 0, ``seed`` not one >= 0; every
            attempt stopped early and no ``finish`` was given, or it gave no decoding.
    """
    retries = check_collapse_retries(retries)
    restart_seed(seed, 0)  # checks seed
    kept: T | None = None
    attempts: list[CollapseAttempt] = []
    best: int | None = None

    def who(k: int, seed_k: int) -> str:
        return f"aligner {kind} seed {seed}" + (f" restart {k} (seed {seed_k})" if k else "")

    def then(k: int) -> str:
        return (
            f"training it again, restart {k + 1} of up to {retries} with seed "
            f"{restart_seed(seed, k + 1)} (same data)"
        )

    for k in range(int(retries) + 1):
        seed_k = restart_seed(seed, k)
        try:
            outcome, decoding = attempt(k, seed_k)
        except StoppedEarly as stop:
            attempts.append(CollapseAttempt(k, seed_k, stop.longest_phone_ms, stop.step))
            log(
                f"{who(k, seed_k)}: stopped early at step {stop.step}: longest aligned phone, "
                f"median over {stop.utterances} training utterances: "
                f"{stop.longest_phone_ms:.0f} ms > {stop.threshold_ms:g} ms (early check)"
                + (f"; {then(k)}" if k < retries else "")
            )
            continue
        if decoding is None:
            if k == 0:
                return outcome, [], 0
            raise ValueError(
                f"Expected a training decoding from restart {k} of aligner {kind} seed {seed}, "
                "as from its first attempt; found None."
            )
        value = longest_phone_median_ms(decoding)
        attempts.append(CollapseAttempt(k, seed_k, value))
        if best is None or value < attempts[best].longest_phone_ms:
            kept, best = outcome, k
        again = value > threshold_ms and k < retries
        log(
            f"{who(k, seed_k)}: longest aligned phone, median over "
            f"{_phone_utterances(decoding)} training utterances: {value:.0f} ms"
            + (f"; above {threshold_ms:g} ms (looks collapsed): {then(k)}" if again else "")
        )
        if not again:
            break
    if best is None:  # every attempt stopped early: the last one is trained to the end
        last = attempts[-1]
        if finish is None:
            raise ValueError(
                f"Expected a way to train attempt {last.attempt} of aligner {kind} seed {seed} "
                "to the end (every attempt stopped early); found finish=None."
            )
        warnings.warn(
            f"aligner {kind} seed {seed}: every attempt ({len(attempts)}) stopped early at the "
            f"collapse check (above {EARLY_COLLAPSE_LONGEST_PHONE_MS:g} ms); training "
            + ("the first attempt" if last.attempt == 0 else f"restart {last.attempt}")
            + f" (seed {last.seed}) on to the end without the check; train again with another "
            "--seed",
            UserWarning,
            stacklevel=2,
        )
        outcome, decoding = finish(last.attempt, last.seed)
        if decoding is None:
            raise ValueError(
                f"Expected a training decoding from attempt {last.attempt} of aligner {kind} "
                f"seed {seed} trained to the end; found None."
            )
        value = longest_phone_median_ms(decoding)
        attempts[-1] = CollapseAttempt(last.attempt, last.seed, value)
        kept, best = outcome, last.attempt
        log(
            f"{who(last.attempt, last.seed)}: trained to the end after its early stop: longest "
            f"aligned phone, median over {_phone_utterances(decoding)} training utterances: "
            f"{value:.0f} ms"
        )
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
