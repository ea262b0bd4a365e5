"""Which voices the alignment demo holds out of training (``held_out_speakers``)."""

from __future__ import annotations

import random

import pytest
import torch

from speechattn.recipes.align.data import AlignItem
from speechattn.recipes.align.pipeline import _split, held_out_speakers

ENGINE = {
    "espeak-en-gb": "espeak",
    "espeak-en-us": "espeak",
    "espeak-en-029": "espeak",
    "pico-en-gb": "pico",
    "pico-en-us": "pico",
    "piper-joe": "piper",
}


def _engine_of(speaker: str) -> str:
    return ENGINE.get(speaker, speaker)


@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_one_engine_holds_out_the_last_speakers_in_sorted_order(count: int) -> None:
    speakers = ["en-us+m3", "en-gb+f1", "en+f2", "en-029+m1", "en-us+f4"]
    got = held_out_speakers(speakers, count, engine_of=lambda s: "espeak")
    assert got == sorted(speakers)[len(speakers) - count :]


def test_an_engine_with_one_voice_is_never_held_out_whole() -> None:
    # Sorted order alone would hold out pico-en-us and piper-joe: all of piper's speech.
    speakers = list(ENGINE)
    for count in range(1, 8):
        held = held_out_speakers(speakers, count, engine_of=_engine_of)
        assert "piper-joe" not in held
        for engine in ("espeak", "pico"):
            own = [s for s in speakers if ENGINE[s] == engine]
            assert len(set(own) - set(held)) >= 1, (count, engine, held)
        # All but one voice of each engine with several: 2 (espeak) + 1 (pico).
        assert len(held) == min(count, 3)


def test_held_out_voices_are_spread_over_the_engines() -> None:
    held = held_out_speakers(list(ENGINE), 2, engine_of=_engine_of)
    assert sorted(ENGINE[s] for s in held) == ["espeak", "pico"]
    # The largest engine gives first; within an engine, the last speaker in sorted order.
    assert held_out_speakers(list(ENGINE), 1, engine_of=_engine_of) == ["espeak-en-us"]


def test_held_out_speakers_are_deterministic_whatever_the_order() -> None:
    speakers = list(ENGINE) * 3  # one id per utterance, as the demo passes them
    want = held_out_speakers(speakers, 3, engine_of=_engine_of)
    for seed in range(5):
        random.Random(seed).shuffle(speakers)
        assert held_out_speakers(speakers, 3, engine_of=_engine_of) == want


def test_registry_speakers_group_by_their_engine() -> None:
    # The default engine_of reads the voice registry: piper-joe is piper's only voice.
    held = held_out_speakers(["piper-joe", "pico-en-gb", "pico-en-us"], 2)
    assert held == ["pico-en-us"]


def _item(i: int, speaker: str) -> AlignItem:
    return AlignItem(
        id=f"u{i}",
        speaker=speaker,
        text=f"sentence {i}",
        tokens=torch.zeros(3, dtype=torch.int64),
        mel=torch.zeros(5, 2),
        phones=["a"],
        phone_token_index=[1],
        words=[("a", 0, 1)],
        num_samples=100,
    )


def test_split_trains_on_every_engine() -> None:
    items = [_item(i, s) for i, s in enumerate(list(ENGINE) * 4)]
    train, dev, unseen, held = _split(items, 2, 4, seed=0)
    assert held == held_out_speakers(list(ENGINE), 2, engine_of=_engine_of)
    assert {it.speaker for it in unseen} == set(held)
    assert {ENGINE[it.speaker] for it in train} == {"espeak", "pico", "piper"}
    assert not {it.speaker for it in train + dev} & set(held)
    assert len(train) + len(dev) + len(unseen) == len(items)
