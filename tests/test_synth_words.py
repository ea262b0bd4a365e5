"""espeak-ng word events onto written words (multi-word dictionary entries, numbers, joins)."""

from __future__ import annotations

import pytest

from speechattn.data.synth import _word_spans


def test_word_spans_multi_word_entry() -> None:
    # espeak's events for "Most of the birch": the "of" of the entry "(most of)" comes at
    # the position of "Most" + 1
    text = "Most of the birch."
    assert _word_spans(text, [0, 1, 8, 12]) == ([0, 1, 2, 3], ["Most", "of", "the", "birch"])
    # a three-word entry repeats the same wrong position
    assert _word_spans("coup de grace was", [0, 1, 1, 14]) == (
        [0, 1, 2, 3],
        ["coup", "de", "grace", "was"],
    )


def test_word_spans_keeps_one_written_word_whole() -> None:
    # a number spoken as several words, a compound with an internal boundary, a join
    assert _word_spans("In 1990 he left.", [0, 3, 4, 8, 11]) == (
        [0, 1, 1, 2, 3],
        ["In", "1990", "he", "left"],
    )
    assert _word_spans("the lunchroom", [0, 4, 5]) == ([0, 1, 1], ["the", "lunchroom"])
    assert _word_spans("slid on the smooth", [0, 5, 12]) == (
        [0, 1, 2],
        ["slid", "on the", "smooth"],
    )
    assert _word_spans("", []) == ([], [])


SENTENCES = [
    ("Most of the birch canoe slid on the smooth planks.", ["Most", "of", "the", "birch"]),
    ("He said most of it, and most of them.", ["He", "said", "most", "of", "it", "and"]),
    ("In 1990 he left.", ["In", "1990", "he", "left"]),
]


@pytest.mark.parametrize(("text", "head"), SENTENCES)
def test_espeak_words_are_written_words(text: str, head: list[str]) -> None:
    pytest.importorskip("espeakng_loader")
    from speechattn.data.synth import synthesize

    res = synthesize(text, voice="en-us")
    labels = [w.label for w in res.words]
    assert labels[: len(head)] == head
    # every label is a run of whole written words, and together they spell the text
    assert " ".join(labels).split() == [t.strip(".,") for t in text.split()]
    for a, b in zip(res.words, res.words[1:]):
        assert a.start < a.end <= b.start < b.end
