"""espeak-ng synthesis: timings, determinism, voices, corpus writing."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from speechattn.data import synth
from speechattn.data.synth import (
    Interval,
    generate_sentences,
    make_voices,
    synth_corpus,
    synthesize,
)


def _check_timings(res: synth.SynthResult) -> None:
    dur = len(res.waveform) / res.sample_rate
    assert res.phones and res.words
    for ivs in (res.words, res.phones):
        for a, b in itertools.pairwise(ivs):
            assert a.start <= a.end <= b.start <= b.end
        assert ivs[0].start >= 0.0
        assert ivs[-1].end <= dur + 1e-9
    # every phone inside exactly one word, words cover their phones
    k = 0
    for w in res.words:
        n = 0
        while k < len(res.phones) and res.phones[k].end <= w.end + 1e-9:
            assert res.phones[k].start >= w.start - 1e-9
            k += 1
            n += 1
        assert n >= 1, f"word {w} has no phones"
    assert k == len(res.phones)


@pytest.mark.parametrize("voice", ["en-us", "en-gb+f2", "en-gb-scotland+m3"])
def test_timings_monotone_and_within_audio(voice: str) -> None:
    text = "Hello there, the quick brown fox jumped over the lazy dog."
    res = synthesize(text, voice=voice)
    assert res.waveform.dtype == np.float32 and res.waveform.ndim == 1
    assert res.sample_rate == 22050
    assert np.abs(res.waveform).max() <= 1.0
    assert np.abs(res.waveform).max() > 0.05  # not silent
    _check_timings(res)
    assert [w.label for w in res.words] == [
        "Hello", "there", "the", "quick", "brown", "fox", "jumped", "over", "the", "lazy", "dog",
    ]  # fmt: skip


def test_phones_are_ipa_and_audio_is_voiced_inside_phones() -> None:
    res = synthesize("The green window opened the boat.", voice="en-us")
    labels = [p.label for p in res.phones]
    assert labels[:3] == ["ð", "ə", "ɡ"]
    # energy inside phone spans is much larger than in the leading silence
    sr = res.sample_rate
    first = res.phones[0]
    lead = res.waveform[: int(first.start * sr)]
    speech = res.waveform[int(first.start * sr) : int(res.phones[-1].end * sr)]
    assert len(lead) > 0
    assert np.sqrt(np.mean(speech**2)) > 10 * (np.sqrt(np.mean(lead**2)) + 1e-6)


def test_resample_keeps_timings() -> None:
    a = synthesize("A small red boat.", voice="en-us")
    b = synthesize("A small red boat.", voice="en-us", sample_rate=16000)
    assert b.sample_rate == 16000
    assert abs(len(b.waveform) - len(a.waveform) * 16000 / 22050) <= 2
    assert a.phones == b.phones


def test_timings_deterministic_across_history() -> None:
    text = "Yesterday, the tired farmer quietly slept."
    voices = make_voices(6, seed=3)
    first = {v: synthesize(text, voice=v) for v in voices}
    second = {v: synthesize(text, voice=v) for v in reversed(voices)}
    for v in voices:
        assert first[v].phones == second[v].phones
        assert first[v].words == second[v].words
        assert len(first[v].waveform) == len(second[v].waveform)


def test_make_voices_stable_distinct_prefix() -> None:
    a = make_voices(30, seed=5)
    b = make_voices(30, seed=5)
    c = make_voices(31, seed=5)
    d = make_voices(30, seed=6)
    assert a == b == c[:30]
    assert len(set(a)) == 30
    assert a != d
    assert any("+sa-s5-" in v for v in a) and any("+sa-" not in v for v in a)
    # random variants differ audibly: different voices give different waveforms
    w = [synthesize("A red boat.", voice=v).waveform for v in a[:4]]
    assert len({len(x) for x in w}) > 1 or not np.allclose(w[0][:1000], w[1][:1000])


def test_random_variant_recreated_on_demand() -> None:
    name = "sa-s77-001"
    path = synth._espeak.variants_dir() / name
    path.unlink(missing_ok=True)
    res = synthesize("Hello.", voice=f"en-us+{name}")
    assert path.is_file() and res.phones


def test_voice_file_limit_respected(tmp_path, monkeypatch) -> None:
    # a private data directory of its own, so deleting variants cannot disturb other processes
    monkeypatch.setenv("SPEECHATTN_ESPEAK_DATA", str(tmp_path / "espeak-data"))
    data = synth._espeak.ensure_data_dir()
    assert data == tmp_path / "espeak-data"
    limit = synth._espeak.VOICE_FILE_LIMIT
    a = make_voices(400, seed=901)  # 200 random variant files
    assert synth._espeak.count_voice_files(data) <= limit
    b = make_voices(400, seed=902)  # 200 more: seed 901's files make room
    assert synth._espeak.count_voice_files(data) <= limit
    assert not (data / "voices" / "!v" / "sa-s901-000").exists()
    # a deleted variant comes back on demand, identical, still within the limit
    old = next(v for v in a if "+sa-s901-" in v)
    synth._check_voice(old)
    name = old.split("+")[1]
    assert (data / "voices" / "!v" / name).is_file()
    assert synth._espeak.count_voice_files(data) <= limit
    assert make_voices(400, seed=901) == a and set(a) != set(b)
    with pytest.raises(ValueError, match="num_speakers"):
        make_voices(10_000, seed=1)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="empty"):
        synthesize("   ")
    with pytest.raises(TypeError, match="text"):
        synthesize(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="variant"):
        synthesize("Hello.", voice="en-us+no_such_variant")
    with pytest.raises(ValueError, match="voice"):
        synthesize("Hello.", voice="xx-nonexistent")
    with pytest.raises(ValueError, match="num_speakers"):
        make_voices(0)
    with pytest.raises(ValueError, match="num_speakers"):
        make_voices(100000)


def test_generate_sentences_deterministic() -> None:
    a = generate_sentences(20, seed=1)
    assert a == generate_sentences(20, seed=1)
    assert a != generate_sentences(20, seed=2)
    assert all(s[0].isupper() and s[-1] in ".?" and not any(ch.isdigit() for ch in s) for s in a)
    assert len(set(a)) > 15


def test_synth_corpus_deterministic(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(synth, "_BLOCK", 8)  # 5 blocks spread over the workers
    synthesize("Leave some state behind in this process.", voice="en-gb+f2")
    m1 = synth_corpus(tmp_path / "a", utterances=40, speakers=3, seed=4, workers=1, progress=False)
    synthesize("And some more, with another voice.", voice="en-us+m3")
    m2 = synth_corpus(tmp_path / "b", utterances=40, speakers=3, seed=4, workers=2, progress=False)
    m0 = synth_corpus(tmp_path / "c", utterances=40, speakers=3, seed=4, workers=0, progress=False)
    r1 = [json.loads(x) for x in m1.read_text().splitlines()]
    r2 = [json.loads(x) for x in m2.read_text().splitlines()]
    r0 = [json.loads(x) for x in m0.read_text().splitlines()]
    assert r1 == r2 == r0  # texts, speakers, timings identical whatever the worker count
    # worker processes: byte-identical audio too, whatever this process did before
    for r in r1:
        assert (m1.parent / r["path"]).read_bytes() == (m2.parent / r["path"]).read_bytes()
    r1 = r1[:12]
    assert len(r1) == 12 and len({r["speaker"] for r in r1}) == 3
    import soundfile as sf

    for r in r1:
        info = sf.info(str(m1.parent / r["path"]))
        assert info.samplerate == 22050
        assert abs(info.frames / 22050 - r["duration"]) < 1e-4
        assert r["phones"][-1][1] <= r["duration"] + 1e-6
        assert [w[2] for w in r["words"]] == [t.strip(",.?") for t in r["text"].split()]


def test_synth_corpus_user_texts(tmp_path) -> None:
    f = tmp_path / "lines.txt"
    f.write_text("Good morning.\n\nIt costs 5 dollars.\n ... !!\n")
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        m = synth_corpus(
            tmp_path / "c", utterances=3, speakers=1, texts=f, workers=1, progress=False
        )
    recs = [json.loads(x) for x in m.read_text().splitlines()]
    assert [r["text"] for r in recs] == ["Good morning.", "It costs five dollars.", "Good morning."]
    with pytest.raises(ValueError, match="not a file"):
        synth_corpus(tmp_path / "d", utterances=1, speakers=1, texts=str(tmp_path / "missing.txt"))


def test_interval_is_tuple() -> None:
    iv = Interval(0.0, 1.0, "a")
    assert tuple(iv) == (0.0, 1.0, "a")


def test_sound_lies_inside_phone_intervals() -> None:
    # "the end": espeak's glottal onset before a stressed vowel belongs to the vowel
    texts = ["Hello there, my friend. The end.", *generate_sentences(8, seed=21)]
    voices = make_voices(8, seed=21)
    for i, text in enumerate(texts):
        res = synthesize(text, voice=voices[i % len(voices)])
        sr = res.sample_rate
        loud = np.abs(res.waveform) * 32768 > 16
        inside = np.zeros(len(loud), dtype=bool)
        for p in res.phones:
            inside[round(p.start * sr) : round(p.end * sr)] = True
        assert not (loud & ~inside).any(), (text, np.flatnonzero(loud & ~inside)[:5] / sr)
        assert (loud & inside).sum() > 0.5 * inside.sum()  # phones are mostly sound


def test_threads_share_the_engine_safely() -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = generate_sentences(12, seed=8)
    voices = make_voices(4, seed=8)
    jobs = [(t, voices[i % 4]) for i, t in enumerate(texts)]
    serial = [synthesize(t, voice=v) for t, v in jobs]
    with ThreadPoolExecutor(4) as ex:
        threaded = list(ex.map(lambda tv: synthesize(tv[0], voice=tv[1]), jobs))
    for a, b in zip(serial, threaded):
        assert a.phones == b.phones and a.words == b.words and a.voice == b.voice
