"""The collapse sign of a trained aligner: median over utterances of the longest aligned phone."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import pytest

from speechattn.recipes.align.health import (
    COLLAPSE_LONGEST_PHONE_MS,
    EARLY_COLLAPSE_LONGEST_PHONE_MS,
    RESTART_SEED_STRIDE,
    StoppedEarly,
    check_collapse,
    check_collapse_check_at,
    check_collapse_retries,
    early_check_hooks,
    early_check_sample,
    longest_phone_median_ms,
    restart_seed,
    stopped_early,
    train_with_restarts,
)


@dataclass
class _Res:
    phones: list[tuple[float, float, str]]
    words: list[tuple[float, float, str]] = field(default_factory=list)


def _utt(durs_s: list[float], labels: list[str] | None = None, start: float = 0.3) -> _Res:
    """Consecutive phone intervals with the given durations after ``start`` s of silence."""
    labels = labels or [f"p{i}" for i in range(len(durs_s))]
    out, t = [], start
    for d, lab in zip(durs_s, labels):
        out.append((t, t + d, lab))
        t += d
    return _Res(out)


def _reference_ms(utts: list[list[float]]) -> float:
    """Float64 loop reference: the median (mean of the middle two for even counts) of maxima."""
    maxima = []
    for durs in utts:
        best = 0.0
        for d in durs:
            if d > best:
                best = d
        maxima.append(best)
    maxima.sort()
    n = len(maxima)
    mid = maxima[n // 2] if n % 2 else (maxima[n // 2 - 1] + maxima[n // 2]) / 2.0
    return 1000.0 * mid


HEALTHY = [
    [0.06, 0.09, 0.15, 0.07],
    [0.05, 0.16, 0.08],
    [0.12, 0.04, 0.11, 0.09, 0.17],
    [0.08, 0.10],
]


def test_healthy_results_match_the_loop_reference_and_stay_under_the_threshold() -> None:
    got = longest_phone_median_ms([_utt(d) for d in HEALTHY])
    assert got == pytest.approx(_reference_ms(HEALTHY), abs=1e-9)
    assert got == pytest.approx(155.0, abs=1e-9)  # maxima 150, 160, 170, 100 ms
    assert got < COLLAPSE_LONGEST_PHONE_MS


def test_one_stretched_phone_per_utterance_crosses_the_threshold() -> None:
    # A collapsed model: one phone (ə) absorbs the pause in most utterances.
    stretched = [list(d) for d in HEALTHY]
    for d in stretched[:3]:
        d[0] = 0.55
    got = longest_phone_median_ms([_utt(d) for d in stretched])
    assert got == pytest.approx(_reference_ms(stretched), abs=1e-9)
    assert got > COLLAPSE_LONGEST_PHONE_MS
    # One stretched utterance among many does not move the median.
    one = [list(d) for d in HEALTHY] + [[0.9, 0.1]]
    assert longest_phone_median_ms([_utt(d) for d in one]) < COLLAPSE_LONGEST_PHONE_MS


def test_silence_pause_and_padding_intervals_are_excluded() -> None:
    res = [
        _utt([0.8, *d, 0.7], ["sil", *(f"p{i}" for i in range(len(d))), "sp"], start=0.0)
        for d in HEALTHY
    ]
    res.append(_utt([1.2, 0.9], ["<pad>", ""]))  # no phone at all: skipped
    assert longest_phone_median_ms(res) == pytest.approx(_reference_ms(HEALTHY), abs=1e-9)


def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(ValueError, match="Expected at least one alignment result"):
        longest_phone_median_ms([])
    with pytest.raises(ValueError, match="found 1 result"):
        longest_phone_median_ms([_utt([0.5], ["sil"])])
    with pytest.raises(TypeError, match="Expected a sequence of alignment results; found int"):
        longest_phone_median_ms(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`phones` list.*found dict"):
        longest_phone_median_ms([{"phones": []}])


def test_check_collapse_logs_one_line_and_warns_only_above_the_threshold() -> None:
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy model gives no warning
        v = check_collapse([_utt(d) for d in HEALTHY], kind="sma", seed=3, log=lines.append)
    assert v == pytest.approx(155.0)
    assert lines == [
        "aligner sma seed 3: longest aligned phone, median over 4 training utterances: 155 ms"
    ]
    bad = [_utt([0.45, 0.1]) for _ in range(5)]
    with pytest.warns(UserWarning, match=r"aligner fs seed 7 looks collapsed \(450 ms > 300 ms"):
        check_collapse(bad, kind="fs", seed=7, log=lines.append)
    assert lines[-1].startswith("aligner fs seed 7: longest aligned phone, median over 5 ")
    with pytest.warns(UserWarning, match="train again with another --seed"):
        check_collapse(bad, kind="fs", seed=7, log=lambda s: None)
    # a short run reads above the line too: the warning says so
    with pytest.warns(UserWarning, match=r"after few --steps, it is undertrained"):
        check_collapse(bad, kind="fs", seed=7, log=lambda s: None)


# --- restarts of a collapsed aligner (train_with_restarts, restart_seed) ---------------------

COLLAPSED = [[0.6, 0.08, 0.1], [0.05, 0.7], [0.45, 0.09]]  # median longest phone 600 ms


def _ms(utts: list[list[float]]) -> float:
    return _reference_ms(utts)


def _attempts(*decodings: list[list[float]]):  # type: ignore[no-untyped-def]
    """A fake trainer: attempt k returns ``("model k", decoding k)`` and records its seed."""
    seeds: list[int] = []

    def attempt(k: int, seed: int) -> tuple[str, list[_Res]]:
        seeds.append(seed)
        return f"model {k}", [_utt(d) for d in decodings[k]]

    return attempt, seeds


def test_restart_seed_changes_only_with_the_attempt_and_checks_its_input() -> None:
    assert restart_seed(7, 0) == 7
    assert restart_seed(7, 1) == 7 + RESTART_SEED_STRIDE
    assert restart_seed(0, 3) == 3 * RESTART_SEED_STRIDE
    with pytest.raises(TypeError, match="Expected attempt to be an integer; found float"):
        restart_seed(1, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected seed >= 0; found -1"):
        restart_seed(-1, 1)


def test_a_collapsed_first_attempt_is_trained_again_and_the_healthy_restart_kept() -> None:
    attempt, seeds = _attempts(COLLAPSED, HEALTHY, HEALTHY)
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the kept attempt is healthy: no warning
        kept, tries, best = train_with_restarts(
            attempt, kind="sma", seed=4, retries=2, log=lines.append
        )
    # A healthy restart ends the loop: two attempts of the three allowed.
    assert seeds == [4, 4 + RESTART_SEED_STRIDE]
    assert (kept, best) == ("model 1", 1)
    assert [t.attempt for t in tries] == [0, 1]
    assert tries[0].longest_phone_ms == pytest.approx(_ms(COLLAPSED), abs=1e-9)
    assert tries[1].longest_phone_ms == pytest.approx(_ms(HEALTHY), abs=1e-9)
    assert lines[0].startswith(
        "aligner sma seed 4: longest aligned phone, median over 3 training utterances: 600 ms; "
        "above 300 ms (looks collapsed): training it again, restart 1 of up to 2 with seed 1000004"
    )
    assert lines[1].startswith("aligner sma seed 4 restart 1 (seed 1000004): longest aligned")
    assert lines[2] == "aligner sma seed 4: kept restart 1 (seed 1000004), 155 ms, of 2 attempts"
    assert len(lines) == 3


def test_all_attempts_collapsed_keeps_the_lowest_and_warns() -> None:
    worse = [[0.7, 0.1], [0.9, 0.1], [0.8]]  # 800 ms
    best_bad = [[0.4, 0.1], [0.35], [0.5, 0.2]]  # 400 ms
    attempt, seeds = _attempts(COLLAPSED, worse, best_bad)
    lines: list[str] = []
    with pytest.warns(
        UserWarning,
        match=r"aligner fs seed 0 looks collapsed \(400 ms > 300 ms.*"
        r"after 2 restart\(s\), keeping the lowest \(seed 2000000\)",
    ):
        kept, tries, best = train_with_restarts(
            attempt, kind="fs", seed=0, retries=2, log=lines.append
        )
    assert seeds == [0, RESTART_SEED_STRIDE, 2 * RESTART_SEED_STRIDE]
    assert (kept, best) == ("model 2", 2)
    assert [round(t.longest_phone_ms) for t in tries] == [600, 800, 400]
    assert lines[-1] == "aligner fs seed 0: kept restart 2 (seed 2000000), 400 ms, of 3 attempts"
    # A tie keeps the earlier attempt.
    attempt, _ = _attempts(COLLAPSED, COLLAPSED)
    with pytest.warns(UserWarning, match="after 1 restart"):
        kept, _, best = train_with_restarts(attempt, kind="fs", seed=0, retries=1, log=print)
    assert (kept, best) == ("model 0", 0)


def test_zero_retries_warns_only_exactly_as_check_collapse() -> None:
    attempt, seeds = _attempts(COLLAPSED, HEALTHY)
    lines: list[str] = []
    with pytest.warns(UserWarning) as got:
        kept, tries, best = train_with_restarts(
            attempt, kind="sma", seed=2, retries=0, log=lines.append
        )
    assert seeds == [2] and (kept, best) == ("model 0", 0) and len(tries) == 1
    ref_lines: list[str] = []
    with pytest.warns(UserWarning) as ref:
        check_collapse([_utt(d) for d in COLLAPSED], kind="sma", seed=2, log=ref_lines.append)
    assert lines == ref_lines
    assert [str(w.message) for w in got] == [str(w.message) for w in ref]


def test_a_healthy_first_attempt_is_the_only_one_and_no_decoding_means_no_check() -> None:
    attempt, seeds = _attempts(HEALTHY, HEALTHY)
    lines: list[str] = []
    kept, tries, best = train_with_restarts(
        attempt, kind="sma", seed=0, retries=3, log=lines.append
    )
    assert seeds == [0] and kept == "model 0" and best == 0 and len(tries) == 1
    assert lines == [
        "aligner sma seed 0: longest aligned phone, median over 4 training utterances: 155 ms"
    ]
    lines.clear()
    kept, tries, best = train_with_restarts(
        lambda k, s: ("unchecked", None), kind="sma", seed=0, retries=3, log=lines.append
    )
    assert (kept, tries, best, lines) == ("unchecked", [], 0, [])


def test_bad_retries_raise_clear_errors() -> None:
    attempt, seeds = _attempts(HEALTHY)
    with pytest.raises(ValueError, match=r"Expected collapse_retries >= 0 .*found -1"):
        train_with_restarts(attempt, kind="sma", seed=0, retries=-1)
    with pytest.raises(TypeError, match="Expected collapse_retries to be an integer >= 0; found"):
        train_with_restarts(attempt, kind="sma", seed=0, retries=True)
    with pytest.raises(TypeError, match="found str"):
        check_collapse_retries("1")  # type: ignore[arg-type]
    assert seeds == []  # refused before any training


# --- the early collapse check (collapse_check_at) --------------------------------------------

STRETCHED = [[0.5, 0.1], [0.05, 0.9], [0.6, 0.2, 0.1]]  # median longest phone 600 ms


def _early(step: int, utts: list[list[float]]) -> StoppedEarly:
    return StoppedEarly(step, _ms(utts), utterances=len(utts), threshold_ms=450.0)


def test_the_early_threshold_lies_between_collapsefix_healthy_and_bad_step_300_values() -> None:
    # RESULTS "collapsefix": at step 300 healthy <= 273 ms, collapsed or flagged >= 610 ms.
    assert 273.0 < EARLY_COLLAPSE_LONGEST_PHONE_MS < 610.0
    assert EARLY_COLLAPSE_LONGEST_PHONE_MS > COLLAPSE_LONGEST_PHONE_MS


def test_an_early_stop_counts_as_an_attempt_and_the_restart_starts_at_once() -> None:
    seeds: list[tuple[int, int]] = []

    def attempt(k: int, seed: int) -> tuple[str, list[_Res]]:
        seeds.append((k, seed))
        if k == 0:
            raise _early(300, STRETCHED)
        return f"model {k}", [_utt(d) for d in HEALTHY]

    finished: list[int] = []
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the kept restart is healthy: no warning
        kept, tries, best = train_with_restarts(
            attempt,
            kind="sma",
            seed=4,
            retries=2,
            log=lines.append,
            finish=lambda k, s: (finished.append(k), ("unused", None))[1],
        )
    assert seeds == [(0, 4), (1, 4 + RESTART_SEED_STRIDE)]
    assert finished == []  # a restart finished: the early-stopped attempt is not trained on
    assert (kept, best) == ("model 1", 1)
    assert [(t.attempt, t.stopped_at) for t in tries] == [(0, 300), (1, None)]
    assert tries[0].longest_phone_ms == pytest.approx(_ms(STRETCHED), abs=1e-9)
    assert lines[0] == (
        "aligner sma seed 4: stopped early at step 300: longest aligned phone, median over 3 "
        "training utterances: 600 ms > 450 ms (early check); training it again, restart 1 of "
        "up to 2 with seed 1000004 (same data)"
    )
    assert lines[-1] == "aligner sma seed 4: kept restart 1 (seed 1000004), 155 ms, of 2 attempts"
    # An early-stopped attempt is never kept, even when its value is the lowest.
    low = [[0.46, 0.1]]  # 460 ms at the early check, below the finished restart's 600 ms

    def attempt2(k: int, seed: int) -> tuple[str, list[_Res]]:
        if k == 0:
            raise _early(100, low)
        return f"model {k}", [_utt(d) for d in COLLAPSED]

    with pytest.warns(UserWarning, match=r"looks collapsed \(600 ms > 300 ms"):
        kept, tries, best = train_with_restarts(attempt2, kind="fs", seed=0, retries=1, log=print)
    assert (kept, best) == ("model 1", 1) and tries[0].stopped_at == 100


def test_every_attempt_stopped_early_trains_the_last_to_the_end_and_warns() -> None:
    calls: list[tuple[str, int, int]] = []

    def attempt(k: int, seed: int) -> tuple[str, list[_Res]]:
        calls.append(("attempt", k, seed))
        raise _early(300, STRETCHED if k == 0 else COLLAPSED)

    def finish(k: int, seed: int) -> tuple[str, list[_Res]]:
        calls.append(("finish", k, seed))
        return f"model {k} finished", [_utt(d) for d in HEALTHY]

    lines: list[str] = []
    with pytest.warns(UserWarning) as got:
        kept, tries, best = train_with_restarts(
            attempt, kind="sma", seed=1, retries=1, log=lines.append, finish=finish
        )
    restart = 1 + RESTART_SEED_STRIDE
    assert calls == [("attempt", 0, 1), ("attempt", 1, restart), ("finish", 1, restart)]
    assert (kept, best) == ("model 1 finished", 1)
    assert [(t.attempt, t.stopped_at) for t in tries] == [(0, 300), (1, None)]
    assert tries[1].longest_phone_ms == pytest.approx(_ms(HEALTHY), abs=1e-9)
    (w,) = got  # the finished attempt is healthy: only the early-stop warning
    assert str(w.message).startswith(
        "aligner sma seed 1: every attempt (2) stopped early at the collapse check (above 450 ms); "
        "training restart 1 (seed 1000001) on to the end without the check"
    )
    assert lines[1].endswith("600 ms > 450 ms (early check)")  # no restart left: no "again"
    assert lines[2].startswith("aligner sma seed 1 restart 1 (seed 1000001): trained to the end")
    # Without a way to finish, a clear error; one retry of 0 stops and finishes attempt 0.
    with pytest.raises(ValueError, match=r"every attempt stopped early.*found finish=None"):
        train_with_restarts(attempt, kind="sma", seed=1, retries=1, log=print)
    calls.clear()
    with pytest.warns(UserWarning, match="every attempt \\(1\\) stopped early"):
        kept, tries, best = train_with_restarts(
            attempt, kind="sma", seed=1, retries=0, log=print, finish=finish
        )
    assert calls == [("attempt", 0, 1), ("finish", 0, 1)] and kept == "model 0 finished"


def test_early_check_hooks_stop_above_the_line_and_go_on_below_it() -> None:
    decoded: list[int] = []
    outcomes = {"healthy": HEALTHY, "stretched": STRETCHED}
    for name, utts in outcomes.items():
        lines: list[str] = []
        evals: list[int] = []

        def decode(model: str, utts: list[list[float]] = utts) -> list[_Res]:
            decoded.append(1)
            return [_utt(d) for d in utts]

        hook, every, should_stop = early_check_hooks(
            decode,
            check_at=300,
            who="aligner sma seed 0",
            on_eval=lambda m, step, evals=evals: (evals.append(step), {"dev": 1.0})[1],
            eval_every=100,
            log=lines.append,
        )
        assert every == 100  # gcd(100, 300)
        history: list[dict] = []
        for step in range(100, 1001, every):
            rec = {"step": step, "loss": 1.0, **hook("model", step)}
            history.append(rec)
            if should_stop(history):
                break
        stop = stopped_early(history)
        if name == "healthy":
            assert stop is None and history[-1]["step"] == 1000
            assert lines == [
                "aligner sma seed 0: step 300: longest aligned phone, median over 4 training "
                "utterances: 155 ms, not above 450 ms (early check): training on"
            ]
            assert evals == list(range(100, 1001, 100))
        else:
            assert lines == [] and history[-1]["step"] == 300 and evals == [100, 200, 300]
            assert stop is not None
            assert (stop.step, stop.utterances, stop.threshold_ms) == (300, 3, 450.0)
            assert stop.longest_phone_ms == pytest.approx(_ms(STRETCHED), abs=1e-9)
            # A run resumed from that step's checkpoint (its history) stops again at once.
            assert should_stop(list(history))
        assert history[2]["dev"] == 1.0  # the caller's own record at step 300 is kept
    assert len(decoded) == 2  # one decoding per training, at the check step only
    # Without the caller's hook the check runs alone, every check_at steps.
    hook, every, _ = early_check_hooks(lambda m: [], check_at=7, who="x", eval_every=0)
    assert every == 7 and hook("model", 3) == {}


def test_early_check_sample_spreads_over_the_items() -> None:
    items = list(range(250))
    sample = early_check_sample(items)
    assert len(sample) == 100 and len(set(sample)) == 100
    assert sample[:4] == [0, 2, 5, 7] and sample[-1] == 247  # floor(i * 250 / 100)
    assert [s // 50 for s in sample].count(0) == 20  # each fifth of the items gives a fifth
    assert early_check_sample(items[:30]) == items[:30]
    assert early_check_sample(items, n=3) == [0, 83, 166]
    with pytest.raises(ValueError, match="Expected n to be a positive integer; found 0"):
        early_check_sample(items, n=0)


def test_collapse_check_at_is_a_step_inside_the_training() -> None:
    assert check_collapse_check_at(None, steps=10) is None
    assert check_collapse_check_at(1, steps=10) == 1
    assert check_collapse_check_at(9, steps=10) == 9
    for bad in (0, 10, 11, -3):
        with pytest.raises(ValueError, match=rf"from 1 to 9 .*--steps 10\); found {bad}\."):
            check_collapse_check_at(bad, steps=10)
    for bad_type in (True, 3.0, "300"):
        with pytest.raises(TypeError, match="Expected collapse_check_at to be an integer step"):
            check_collapse_check_at(bad_type, steps=1000)  # type: ignore[arg-type]
