"""Alignment files: TextGrid tiers named as the Montreal Forced Aligner names them (``words``,
``phones``), readers that accept MFA's speaker-prefixed and older tier names, CTM output."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechattn.data.synth import Interval
from speechattn.data.textgrid import read_ctm, read_textgrid, write_ctm, write_textgrid

WORDS = [Interval(0.1, 0.5, "hello"), Interval(0.6, 1.0, "world")]
PHONES = [Interval(0.1, 0.3, "h"), Interval(0.3, 0.5, "ə"), Interval(0.6, 1.0, "w")]


def test_textgrid_tiers_are_mfa_names(tmp_path: Path) -> None:
    from praatio import textgrid

    path = write_textgrid(tmp_path / "u.TextGrid", words=WORDS, phones=PHONES, duration=1.2)
    tg = textgrid.openTextgrid(str(path), includeEmptyIntervals=False)
    assert list(tg.tierNames) == ["words", "phones"]


@pytest.mark.parametrize(
    ("word_tier", "phone_tier"),
    [("spk1 - words", "spk1 - phones"), ("word", "phone"), ("Words", "Phones")],
)
def test_reader_accepts_mfa_speaker_tiers_and_old_names(
    tmp_path: Path, word_tier: str, phone_tier: str
) -> None:
    from praatio import textgrid

    tg = textgrid.Textgrid()
    tg.addTier(textgrid.IntervalTier(word_tier, [tuple(w) for w in WORDS], 0.0, 1.2))
    tg.addTier(textgrid.IntervalTier(phone_tier, [tuple(p) for p in PHONES], 0.0, 1.2))
    path = tmp_path / "mfa.TextGrid"
    tg.save(str(path), format="long_textgrid", includeBlankSpaces=True)
    words, phones = read_textgrid(path)
    assert [w.label for w in words] == ["hello", "world"]
    assert [p.label for p in phones] == ["h", "ə", "w"]


def test_reader_names_missing_tiers(tmp_path: Path) -> None:
    from praatio import textgrid

    tg = textgrid.Textgrid()
    tg.addTier(textgrid.IntervalTier("syllables", [(0.1, 0.5, "x")], 0.0, 1.0))
    path = tmp_path / "x.TextGrid"
    tg.save(str(path), format="long_textgrid", includeBlankSpaces=True)
    with pytest.raises(ValueError, match=r"x\.TextGrid.*'words'.*syllables"):
        read_textgrid(path)


def test_ctm_round_trip(tmp_path: Path) -> None:
    path = write_ctm(tmp_path / "u.ctm", PHONES, utterance_id="utt 1")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "utt_1 1 0.100 0.200 h"
    back = read_ctm(path)["utt_1"]
    assert [iv.label for iv in back] == ["h", "ə", "w"]
    for a, b in zip(back, PHONES):
        assert abs(a.start - b.start) < 1e-6 and abs(a.end - b.end) < 1e-6
    bad = tmp_path / "bad.ctm"
    bad.write_text("u 1 0.1\n")
    with pytest.raises(ValueError, match=r"bad\.ctm:1"):
        read_ctm(bad)
