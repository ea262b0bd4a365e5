"""Written words in alignments against truth in spoken form ("1999" -> "nineteen ninety nine").

The aligner's word tier holds the transcript's written words; manifests, engines and
pocketsphinx give truth in spoken words. Scoring merges the spoken truth per written word.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from speechattn.data.corpus import Utterance
from speechattn.data.synth import Interval
from speechattn.recipes.align.calibrate import _word_boundary_errors
from speechattn.recipes.align.data import (
    AlignItem,
    FeatureConfig,
    merge_spoken_intervals,
    new_symbol_table,
    spoken_word_counts,
    word_truth,
)
from speechattn.recipes.align.evaluate import AlignmentResult, score

TEXT = "It was 1999."
NUMBER = ["one", "thousand", "nine", "hundred", "ninety", "nine"]  # normalize_text's "1999"
SPOKEN = [["It"], ["was"], NUMBER]


def _item(gt_words: list[Interval] | None, word_spoken: list[list[str]] | None) -> AlignItem:
    """Three written words of one phone each; truth in whole milliseconds (exact in binary
    only through the same float() the scorer applies, so comparisons are exact)."""
    return AlignItem(
        id="u1",
        speaker="s",
        text=TEXT,
        tokens=torch.arange(5),
        mel=torch.zeros(10, 4),
        phones=["a", "b", "c"],
        phone_token_index=[1, 2, 3],
        words=[("It", 0, 1), ("was", 1, 2), ("1999", 2, 3)],
        num_samples=2560,
        gt_words=gt_words,
        word_spoken=word_spoken,
    )


def _spoken_truth() -> list[Interval]:
    edges = [0, 100, 300, 400, 500, 600, 700, 800, 1000]  # ms: It | was | one | ... | nine
    labels = ["It", "was", *NUMBER]
    return [Interval(a / 1000, b / 1000, w) for a, b, w in zip(edges, edges[1:], labels)]


def test_merge_spoken_intervals_spans_first_start_to_last_end() -> None:
    truth = _spoken_truth()
    got = merge_spoken_intervals(truth, [1, 1, 6])
    assert got == [
        (truth[0].start, truth[0].end),
        (truth[1].start, truth[1].end),
        (truth[2].start, truth[7].end),
    ]
    assert merge_spoken_intervals([(1, 2, "x"), (2, 3, "y")], [2]) == [(1.0, 3.0)]
    with pytest.raises(ValueError, match="add up to the 8 intervals; found"):
        merge_spoken_intervals(truth, [1, 1, 2])
    with pytest.raises(ValueError, match="at least 1"):
        merge_spoken_intervals(truth, [2, 0, 6])


def test_word_truth_merges_spoken_takes_written_and_refuses_other_counts() -> None:
    truth = _spoken_truth()
    item = _item(truth, SPOKEN)
    assert spoken_word_counts(item) == [1, 1, 6]
    assert word_truth(item) == [(0.0, 0.1), (0.1, 0.3), (0.3, 1.0)]
    written = [Interval(0.0, 0.1, "It"), Interval(0.1, 0.3, "was"), Interval(0.3, 1.0, "1999")]
    assert word_truth(_item(written, SPOKEN)) == [(0.0, 0.1), (0.1, 0.3), (0.3, 1.0)]
    assert word_truth(_item(truth[:4], SPOKEN)) is None  # neither 3 nor 8 words
    assert word_truth(_item(None, SPOKEN)) is None
    # an item without word_spoken: one spoken word per written word (as before)
    assert spoken_word_counts(_item(truth, None)) == [1, 1, 1]
    assert word_truth(_item(truth, None)) is None
    with pytest.raises(ValueError, match="one non-empty list per written word"):
        spoken_word_counts(_item(truth, [["it"], ["was"]]))


def test_word_truth_checks_labels_where_a_count_matches_by_chance() -> None:
    # "He paid $5 for the bread.": 6 written words, 7 spoken; espeak-ng joins "for the" into one
    # label, so its truth has 6 intervals, as many as the written words, yet not the same words
    labels = ["He", "paid", "five", "dollars", "for the", "bread"]
    truth = [Interval(k / 10, (k + 1) / 10, w) for k, w in enumerate(labels)]
    written = ["He", "paid", "$5", "for", "the", "bread"]
    item = dataclasses.replace(
        _item(truth, None),
        words=[(w, k, k + 1) for k, w in enumerate(written)],
        word_spoken=[["He"], ["paid"], ["five", "dollars"], ["for"], ["the"], ["bread"]],
    )
    assert word_truth(item) is None
    # the same truth without labels can only be matched by its count
    unlabelled = dataclasses.replace(item, gt_words=[(iv.start, iv.end) for iv in truth])
    assert word_truth(unlabelled) == [(iv.start, iv.end) for iv in truth]
    # labels in another case and with edge punctuation still match
    said = [Interval(k / 10, (k + 1) / 10, w) for k, w in enumerate(["HE", "paid,", "$5"])]
    three = dataclasses.replace(
        item, words=item.words[:3], word_spoken=item.word_spoken[:3], gt_words=said
    )
    assert word_truth(three) == [(iv.start, iv.end) for iv in said]


def _result(item: AlignItem, words: list[tuple[float, float, str]]) -> AlignmentResult:
    return AlignmentResult(item=item, durations=np.zeros(5, dtype=np.int64), phones=[], words=words)


def test_score_and_calibration_compare_written_words_with_merged_spoken_truth() -> None:
    # the alignment is off by exactly +50 ms at the start of "1999" and -100 ms at its end
    hyp = [(0.0, 0.1, "It"), (0.1, 0.35, "was"), (0.35, 0.9, "1999")]
    res = _result(_item(_spoken_truth(), SPOKEN), hyp)
    m = score([res])
    assert m.extra["word_utterances"] == 1
    assert "word_utterances_left_out" not in m.extra
    # errors (ms): 0, 0 | 0, +50 | +50, -100 -> 4 of 6 within 40 ms, 3 of 6 within 20 ms
    assert m.word_within_20ms == 50.0
    errs = _word_boundary_errors(res)
    assert [c for c, _ in errs] == ["speech|speech"] * 5 + ["speech|sil"]
    assert len(errs) == 6  # three written words, a start and an end each


def test_truth_that_matches_no_word_form_is_left_out_and_counted() -> None:
    hyp = [(0.0, 0.1, "It"), (0.1, 0.3, "was"), (0.3, 1.0, "1999")]
    bad = _result(_item(_spoken_truth()[:4], SPOKEN), hyp)
    good = _result(_item(_spoken_truth(), SPOKEN), hyp)
    with pytest.warns(UserWarning, match=r"1 of 2 utterance\(s\) with word truth left out"):
        m = score([good, bad])
    assert m.extra["word_utterances"] == 1
    assert m.extra["word_utterances_left_out"] == 1
    assert _word_boundary_errors(bad) == []


def test_left_out_warning_named_once_per_recipe_run() -> None:
    from speechattn.recipes.align.evaluate import left_out_warned_once, warn_left_out_once

    hyp = [(0.0, 0.1, "It"), (0.1, 0.3, "was"), (0.3, 1.0, "1999")]
    bad = _result(_item(_spoken_truth()[:4], SPOKEN), hyp)
    other = dataclasses.replace(bad, item=dataclasses.replace(bad.item, id="other"))
    good = _result(_item(_spoken_truth(), SPOKEN), hyp)

    def left_out_messages(fn: Callable[[], None]) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
        return [str(w.message) for w in caught if "left out of word scoring" in str(w.message)]

    def rows() -> None:  # one split under several rows, then another set left out
        for _ in range(3):
            m = score([good, bad])
            assert m.extra["word_utterances_left_out"] == 1  # still counted every time
        score([good, other])

    # outside a run every call warns (library users scoring by hand)
    assert len(left_out_messages(rows)) == 4
    with left_out_warned_once():
        said = left_out_messages(rows)
    assert len(said) == 2 and "'other'" in said[1]
    # the recipes' entry points run inside it; each run starts afresh
    wrapped = warn_left_out_once(rows)
    assert len(left_out_messages(wrapped)) == 2
    assert len(left_out_messages(wrapped)) == 2
    assert left_out_messages(lambda: score([good, bad])) != []  # the block ended
    from speechattn.recipes.align.pipeline import run_align

    assert run_align.__kwdefaults__ == run_align.__wrapped__.__kwdefaults__  # type: ignore[attr-defined]


def _synth_utterance(tmp_path: Path) -> Utterance:
    pytest.importorskip("espeakng_loader")
    import soundfile as sf

    from speechattn.data.synth import synthesize
    from speechattn.data.text import normalize_text

    # `speechattn data synth` speaks (and labels) the normalised text; the corpus keeps the
    # transcript as written, as real corpora and pocketsphinx silver truth do
    res = synthesize(normalize_text(TEXT), voice="en-us")
    path = tmp_path / "u1.wav"
    sf.write(path, np.asarray(res.waveform, dtype=np.float32), res.sample_rate)
    return Utterance("u1", path, TEXT, "en-us", list(res.words), list(res.phones))


def test_synthesized_number_utterance_is_word_scored(tmp_path: Path) -> None:
    from speechattn.recipes.align.data import build_items
    from speechattn.recipes.align.evaluate import align_items

    utt = _synth_utterance(tmp_path)
    assert utt.words is not None
    # manifest truth is in spoken words, as `speechattn data synth` writes it
    assert [w.label for w in utt.words] == ["It", "was", *NUMBER]
    feats = FeatureConfig()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no word dropped, no utterance left out
        items = build_items([utt], new_symbol_table(), feats, grow_symbols=True)
        assert [w for w, _, _ in items[0].words] == ["It", "was", "1999"]
        assert items[0].word_spoken == [["It"], ["was"], NUMBER]
        m = score(align_items("uniform", items, feats))
    assert m.extra["word_utterances"] == 1
    assert word_truth(items[0]) == [
        (utt.words[0].start, utt.words[0].end),
        (utt.words[1].start, utt.words[1].end),
        (utt.words[2].start, utt.words[7].end),
    ]


def test_pocketsphinx_peer_aligns_spoken_words_and_is_scored_on_written_ones(
    tmp_path: Path,
) -> None:
    from speechattn.recipes.align.peers import PEERS_INSTALL, pocketsphinx_available

    if not pocketsphinx_available():
        pytest.skip(f"pocketsphinx is not installed ({PEERS_INSTALL})")
    from speechattn.recipes.align.data import build_items
    from speechattn.recipes.align.peers import pocketsphinx_metrics

    utt = _synth_utterance(tmp_path)
    items = build_items([utt], new_symbol_table(), FeatureConfig(), grow_symbols=True)
    m = pocketsphinx_metrics(items, {"u1": utt.audio_path})
    assert m.failures == 0
    assert m.extra["word_utterances"] == 1
    assert m.extra["added_words"] == []  # "1999" was never looked up: its spoken words were
