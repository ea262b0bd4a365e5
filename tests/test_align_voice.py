"""Which phonemizer voice an engine corpus's utterances get (accent of the voice that spoke them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechattn.data.corpus import Utterance
from speechattn.data.voices import VOICES
from speechattn.recipes.align.pipeline import corpus_voice, phonemizer_voice

pytest.importorskip("espeakng_loader")


@pytest.mark.parametrize(
    ("speaker", "expected"),
    [
        # the default demo's speaker ids are espeak voice names: phonemized with themselves
        ("en-gb+f1", "en-gb+f1"),
        ("en-us-nyc+sa-s0-003", "en-us-nyc+sa-s0-003"),
        # engine corpora name espeak-ng speakers by registry person: their own voice, not en-us
        ("espeak-en-029+m6", "en-029+m6"),
        ("espeak-en-gb-x-gbclan+sa-s0-000", "en-gb-x-gbclan+sa-s0-000"),
        ("espeak-en-gb", "en-gb"),
        # other engines: the registry language of the person (British -> en-gb, else en-us)
        ("cstr-rab", "en-gb"),
        ("cstr-don", "en-gb"),
        ("mbrola-en1", "en-gb"),
        ("pico-en-gb", "en-gb"),
        ("ked", "en-us"),
        ("piper-joe", "en-us"),
        ("cmu-bdl", "en-us"),
        ("pico-en-us", "en-us"),
        # foreign-accented English and unknown speakers
        ("mbrola-de1", "en-us"),
        ("kokoro-jf_alpha", "en-us"),
        ("speaker-7", "en-us"),
        ("", "en-us"),
        ("espeak-xx-nonsense", "en-us"),
    ],
)
def test_phonemizer_voice_follows_the_speakers_accent(speaker: str, expected: str) -> None:
    assert phonemizer_voice(speaker) == expected


def test_every_registry_voice_gets_its_own_accent() -> None:
    for v in VOICES:
        got = phonemizer_voice(v.person)
        if v.engine == "espeak":
            assert got == v.voice_id, v.key
        elif v.language.startswith("en-gb"):
            assert got == "en-gb", v.key
        else:
            assert got == "en-us", v.key


def test_corpus_voice_changes_the_phones_of_accented_espeak_speakers() -> None:
    from speechattn.data.text import phonemize

    utt = Utterance(
        "u0", Path("u0.wav"), "Oscar went over the road.", "espeak-en-gb+f1", None, None
    )
    voice = corpus_voice(utt)
    assert voice == "en-gb+f1"
    # the point of the choice: en-gb and en-us phonemes of this sentence differ (non-rhotic "over")
    assert phonemize(utt.text, voice=voice) != phonemize(utt.text, voice="en-us")
