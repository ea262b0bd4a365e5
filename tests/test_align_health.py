"""The collapse sign of a trained aligner: median over utterances of the longest aligned phone."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import pytest

from speechattn.recipes.align.health import (
    COLLAPSE_LONGEST_PHONE_MS,
    check_collapse,
    longest_phone_median_ms,
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
