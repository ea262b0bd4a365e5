"""The collapse sign of a trained aligner: median over utterances of the longest aligned phone."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import pytest

from speechattn.recipes.align.health import (
    COLLAPSE_LONGEST_PHONE_MS,
    RESTART_SEED_STRIDE,
    check_collapse,
    check_collapse_retries,
    longest_phone_median_ms,
    restart_seed,
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
