"""Piper's per-phoneme-id durations onto phone spans (no Piper install needed)."""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("numpy")

from speechattn.data.engines._piper import _units


def test_blanks_go_to_the_next_phoneme_except_after_silence() -> None:
    #          ^   _   h   _   ˈ   _   a   _   ␠   _   b   _   ,   _   ␠   _   c   _   $
    symbols = ["^", "_", "h", "_", "ˈ", "_", "a", "_", " ", "_", "b", "_", ",", "_", " ", "_"]
    symbols += ["c", "_", "$"]
    samples = [10, 20, 5, 6, 2, 3, 7, 8, 4, 9, 5, 6, 30, 1, 2, 3, 5, 4, 10]
    units = _units(symbols, samples, 100)
    phones = [u for u in units if u[0].strip()]
    # the first phoneme of a sentence starts at its own id (the blank after ^ is silence)
    assert phones[0] == ("h", 130, 135)
    # inside a word, and across a plain space, a phoneme starts where the previous one ended
    assert phones[1] == ("ˈ", 135, 143) and phones[2] == ("a", 143, 153)
    assert phones[3] == ("b", 153, 179)
    # after punctuation the blanks are silence: the phoneme has its own id only
    assert phones[4] == ("c", 221, 226)
    # ^, spaces, punctuation and $ separate words as zero-length units
    breaks = [(a, b) for sym, a, b in units if not sym.strip()]
    assert breaks == [(100, 100), (161, 161), (185, 185), (216, 216), (230, 230)]
    # time never runs backwards and the spans never overlap
    spans = [(a, b) for _, a, b in phones]
    assert all(a < b for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(spans))
