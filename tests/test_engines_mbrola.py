"""The MBROLA engine: espeak-ng phones and durations rendered by the ``mbrola`` program."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from speechattn.data.engines import get_engine, synthesize
from speechattn.data.engines._mbrola import _pho_lines
from speechattn.data.text import normalize_text, phonemize, words_of
from speechattn.data.voices import get_voice, list_voices

TEXT = "Most of the birch canoe slid on the smooth planks, and Anna smiled. It rained!"


def _need(voice: str) -> None:
    eng = get_engine("mbrola")
    reason = eng.missing()
    if reason is not None:
        pytest.skip(f"mbrola: {reason}; install: {eng.install}")
    if voice not in eng.installed_voices():
        pytest.skip(f"mbrola voice {voice} is not installed; install: {eng.install}")


def test_registry_mbrola_voices() -> None:
    mb = list_voices(engines=["mbrola"])
    ids = {v.voice_id for v in mb}
    assert {"us1", "us2", "us3", "en1", "de1-en", "sw2-en"} <= ids
    for v in mb:
        assert not v.commercial and not v.reserved and v.phones
        assert "MBROLA" in v.licence and v.person == f"mbrola-{v.voice_id.split('-')[0]}"
    # one recorded person per database, shared with Festival's MBROLA voices
    assert get_voice("mbrola:us1").person == get_voice("festival:us1_mbrola").person
    assert get_voice("mbrola:en1").person == get_voice("festival:en1_mbrola").person
    assert get_voice("mbrola:de1-en").accent == "German" and get_voice("mbrola:de1-en").sex == "f"
    assert not list_voices(engines=["mbrola"], commercial_only=True)


def test_absent_mbrola_reports_install_command(monkeypatch) -> None:
    from speechattn.data.engines import EngineUnavailable, _mbrola

    monkeypatch.setattr(_mbrola.shutil, "which", lambda name: None)
    eng = get_engine("mbrola")
    assert eng.missing() == "the 'mbrola' program is not on PATH"
    assert eng.installed_voices() == []
    with pytest.raises(EngineUnavailable, match="apt-get install espeak-ng mbrola mbrola-us1"):
        synthesize("Hello.", "mbrola:us1")


def test_pho_lines() -> None:
    assert _pho_lines("m\t65\n") == [("m", 65)]
    assert _pho_lines("@U\t60\t 0 232 80 215\nU\t30\t 0 1\n_ \t20\n\n") == [
        ("@U", 60),
        ("U", 30),
        ("_", 20),
    ]


@pytest.mark.parametrize("voice", ["us1", "en1", "de1-en", "sw2-en"])
def test_mbrola_round_trip(voice: str) -> None:
    _need(voice)
    text = normalize_text(TEXT)
    res = synthesize(text, f"mbrola:{voice}")
    sr = res.sample_rate
    dur = len(res.waveform) / sr
    assert res.engine == "mbrola" and res.timings == "engine" and sr in (16000, 22050)
    assert dur > 2.0 and 0.05 < np.abs(res.waveform).max() <= 1.0
    # every written word, in order ("Most of" is one dictionary entry, two words); as in
    # espeak-ng, an unstressed word may join the next one ("on the")
    labels = [w.label for w in res.words]
    assert " ".join(labels).split() == words_of(text) and labels[:3] == ["Most", "of", "the"]
    for a, b in itertools.pairwise(res.words):
        assert a.start < a.end <= b.start < b.end
    assert res.words[0].start >= 0.0 and res.words[-1].end <= dur
    # phones and gaps tile the audio in order; each phone inside one word
    assert res.phones is not None
    edges = [0.0] + [t for p in res.phones for t in (p.start, p.end)] + [dur]
    assert (np.diff(edges) >= -1e-9).all()
    assert abs(float(np.diff(edges).sum()) - dur) < 1e-9
    assert sum(p.end - p.start for p in res.phones) > 0.6 * dur
    assert dur - res.phones[-1].end < 0.1 and res.phones[0].start < 0.05
    for w in res.words:
        inside = [p for p in res.phones if w.start - 1e-9 <= p.start and p.end <= w.end + 1e-9]
        assert inside and inside[0].start == w.start and inside[-1].end == w.end
    assert sum(
        len([p for p in res.phones if w.start <= p.start < w.end]) for w in res.words
    ) == len(res.phones)
    # the project's phone set: espeak-ng IPA, as phonemize gives it for the voice's language
    lang = "en-us" if voice.startswith("us") else "en-gb"
    expected = [p for w in phonemize(text, voice=lang) for p in w]
    assert sum(a == b.label for a, b in zip(expected, res.phones)) >= 0.9 * len(expected)
    # louder inside words than in the pauses between them
    inside_mask = np.zeros(len(res.waveform), dtype=bool)
    for w in res.words:
        inside_mask[round(w.start * sr) : round(w.end * sr)] = True
    rms_in = float(np.sqrt(np.mean(res.waveform[inside_mask] ** 2)))
    rms_out = float(np.sqrt(np.mean(res.waveform[~inside_mask] ** 2)))
    assert rms_in > 3 * rms_out


def test_mbrola_deterministic_across_voices_and_history() -> None:
    _need("us1")
    _need("en1")
    a = synthesize("A small red boat.", "mbrola:us1")
    synthesize("Something else, said before.", "mbrola:en1")
    synthesize("And something else.", "mbrola:us1")
    b = synthesize("A small red boat.", "mbrola:us1")
    assert np.array_equal(a.waveform, b.waveform)
    assert a.words == b.words and a.phones == b.phones
