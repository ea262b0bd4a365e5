"""Corpus formats, audio loading and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from speechattn.data import audio as audio_mod
from speechattn.data.audio import AudioError, decode_with_ffmpeg, load_audio
from speechattn.data.corpus import CorpusError, asterisk_available, load_corpus


def _tone(sr: int, seconds: float = 0.25, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def test_load_audio_resamples_and_mixes(tmp_path) -> None:
    p = tmp_path / "a.flac"
    sf.write(p, _tone(16000, channels=2), 16000)
    x = load_audio(p, sample_rate=22050)
    assert x.dtype == torch.float32 and x.dim() == 1
    assert abs(len(x) - int(0.25 * 22050)) <= 2
    # still a 440 Hz tone after resampling
    spec = np.abs(np.fft.rfft(x.numpy()))
    assert abs(np.argmax(spec) * 22050 / len(x) - 440) < 10
    native = load_audio(p, sample_rate=None)
    assert len(native) == 4000


def test_load_audio_errors(tmp_path) -> None:
    with pytest.raises(AudioError, match=r"missing\.wav"):
        load_audio(tmp_path / "missing.wav", sample_rate=16000)
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF0000WAVEjunkjunk")
    with pytest.raises(ValueError, match=r"corrupt\.wav"):
        load_audio(bad, sample_rate=16000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(empty, sample_rate=16000)


def test_load_audio_without_ffmpeg_names_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(audio_mod.shutil, "which", lambda name: None)
    bad = tmp_path / "recording.webm"
    bad.write_bytes(b"\x1aE\xdf\xa3 not really webm")
    with pytest.raises(AudioError, match=r"recording\.webm.*install ffmpeg"):
        load_audio(bad, sample_rate=16000)
    with pytest.raises(AudioError, match="ffmpeg is not installed"):
        decode_with_ffmpeg(bad)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH (optional decoder)")
def test_load_audio_decodes_webm_with_ffmpeg(tmp_path) -> None:
    """A browser-microphone format libsndfile can't read (webm/opus) goes through ffmpeg."""
    wav = tmp_path / "tone.wav"
    sf.write(wav, _tone(16000, seconds=1.0, freq=500.0), 16000)
    webm = tmp_path / "tone.webm"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(wav), "-c:a", "libopus", str(webm)],
        check=True,
    )
    with pytest.raises(Exception):  # noqa: B017 - soundfile alone can't read it
        sf.read(str(webm))
    x = load_audio(webm, sample_rate=16000).numpy()
    assert abs(len(x) - 16000) <= 0.03 * 16000  # opus pre-skip/padding: a few ms
    spec = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spec) * 16000 / len(x) - 500) < 5
    not_audio = tmp_path / "notes.webm"
    not_audio.write_text("not audio\n")
    with pytest.raises(AudioError, match=r"notes\.webm.*ffmpeg could not decode"):
        load_audio(not_audio, sample_rate=16000)


def test_folder_corpus_with_bad_entries(tmp_path) -> None:
    spk = tmp_path / "alice"
    spk.mkdir()
    sf.write(spk / "u1.wav", _tone(16000), 16000)
    (spk / "u1.txt").write_text("Hello world.\n")
    sf.write(spk / "u2.flac", _tone(22050), 22050)
    (spk / "u2.txt").write_text("  Second   one. ")
    sf.write(spk / "orphan.wav", _tone(16000), 16000)  # no transcript
    (spk / "lonely.txt").write_text("no audio")  # no audio
    (spk / "bad.wav").write_bytes(b"not audio at all")
    (spk / "bad.txt").write_text("corrupt audio")
    sf.write(spk / "silent.wav", _tone(16000), 16000)
    (spk / "silent.txt").write_text("   ")  # empty text
    with pytest.warns(UserWarning) as rec:
        utts = load_corpus(tmp_path)
    msgs = [str(r.message) for r in rec]
    assert len(msgs) == 5 and "skipped 4 bad entries" in msgs[-1]  # one each, then the count
    for name in ("orphan.wav", "lonely.txt", "bad.wav", "silent.txt"):  # one warning each
        assert sum(name in m for m in msgs[:-1]) == 1
    assert [u.id for u in utts] == ["alice/u1", "alice/u2"]
    assert utts[1].text == "Second one." and utts[0].speaker == "alice"
    assert utts[0].words is None and utts[0].audio_path.is_absolute()
    with pytest.raises(CorpusError, match=r"(orphan\.wav|lonely\.txt|bad\.wav|silent\.txt)"):
        load_corpus(tmp_path, on_error="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_corpus(tmp_path, on_error="skip")) == 2


def test_ljspeech_corpus(tmp_path) -> None:
    root = tmp_path / "LJ"
    (root / "wavs").mkdir(parents=True)
    for i in range(3):
        sf.write(root / "wavs" / f"LJ001-000{i}.wav", _tone(22050), 22050)
    (root / "metadata.csv").write_text(
        "LJ001-0000|Printing, 1st.|Printing, first.\n"
        "LJ001-0001|Only raw text|\n"
        'LJ001-0002|In being "comparatively" modern.|In being "comparatively" modern.\n'
        "LJ001-0009|missing audio|missing audio\n"
    )
    with pytest.warns(UserWarning) as rec:
        utts = load_corpus(root / "metadata.csv")
    msgs = [str(r.message) for r in rec]
    assert len(msgs) == 2 and "LJ001-0009.wav: audio file not found" in msgs[0]
    assert "skipped 1 bad entry" in msgs[1]
    assert [u.id for u in utts] == ["LJ001-0000", "LJ001-0001", "LJ001-0002"]
    assert utts[0].text == "Printing, first." and utts[1].text == "Only raw text"
    assert utts[2].text == 'In being "comparatively" modern.'
    assert utts[0].speaker == "LJ"
    # the folder itself is recognised too
    with pytest.warns(UserWarning):
        assert len(load_corpus(root)) == 3


def test_manifest_corpus_and_errors(tmp_path) -> None:
    (tmp_path / "w").mkdir()
    sf.write(tmp_path / "w" / "a.wav", _tone(22050), 22050)
    recs = [
        {"id": "a", "path": "w/a.wav", "text": "hi there", "speaker": "s1",
         "words": [[0.0, 0.1, "hi"], [0.1, 0.2, "there"]], "phones": [[0.0, 0.05, "h"], [0.05, 0.1, "aɪ"]]},
        {"id": "b", "path": "w/missing.wav", "text": "gone"},
        {"id": "c", "path": "w/a.wav", "text": ""},
        {"id": "d", "path": "w/a.wav", "text": "wrong rate", "sample_rate": 16000},
        {"id": "e", "path": "w/a.wav", "text": "wrong file", "duration": 3.0},
        {"id": "f", "path": "w/a.wav", "text": "too long", "phones": [[0.0, 0.2, "a"], [0.2, 0.9, "b"]]},
        {"id": "g", "path": "w/a.wav", "text": "bad phones", "phones": [[0.0, "x"]]},
        {"id": "h", "path": "w/a.wav", "text": "ok", "sample_rate": 22050, "duration": 0.25},
    ]  # fmt: skip
    lines = [json.dumps(r) for r in recs] + ["{not json"]
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning) as rec:
        utts = load_corpus(tmp_path)
    msgs = [str(r.message) for r in rec]
    assert len(msgs) == 8 and "skipped 7 bad entries" in msgs[-1]  # one per bad line, the count
    for n in range(2, 10):  # each bad line named once (line 8 is good)
        assert sum(f"manifest.jsonl:{n}" in m for m in msgs[:-1]) == (n != 8), n
    msg = " ".join(msgs)
    assert "16000" in msg and "wrong file" in msg and "mismatched" in msg
    assert [u.id for u in utts] == ["a", "h"]
    u = utts[0]
    assert u.id == "a" and u.speaker == "s1" and u.words is not None and u.phones is not None
    assert u.words[1].label == "there" and u.phones[1].label == "aɪ"
    with pytest.raises(CorpusError, match=r"missing\.wav"):
        load_corpus(tmp_path / "manifest.jsonl", on_error="raise")


def test_corpus_path_errors(tmp_path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "nope")
    with pytest.raises(CorpusError, match="no usable"):
        load_corpus(tmp_path)
    with pytest.raises(ValueError, match="on_error"):
        load_corpus(tmp_path, on_error="ignore")


def test_synth_corpus_roundtrip(tmp_path) -> None:
    pytest.importorskip("espeakng_loader")
    from speechattn.data.synth import synth_corpus

    m = synth_corpus(
        tmp_path, utterances=4, speakers=2, seed=1, workers=1, sample_rate=16000, progress=False
    )
    utts = load_corpus(m)
    assert len(utts) == 4 and all(u.phones for u in utts)
    for u in utts:
        x = load_audio(u.audio_path, sample_rate=16000)
        assert u.phones is not None and u.phones[-1].end <= len(x) / 16000 + 1e-6


@pytest.mark.skipif(
    not asterisk_available(),
    reason="Debian asterisk-core-sounds-en-wav + asterisk-core-sounds-en not installed",
)
def test_asterisk_corpus() -> None:
    utts = load_corpus("asterisk", check_audio=False)
    assert len(utts) > 400
    u = (
        next(x for x in utts if x.id == "vm-goodbye")
        if any(x.id == "vm-goodbye" for x in utts)
        else utts[0]
    )
    assert u.text and u.audio_path.is_file()
    x = load_audio(u.audio_path, sample_rate=16000)
    assert len(x) > 1600 and float(x.abs().max()) > 0.01  # real speech, not silence


def test_asterisk_notes_are_not_spoken(monkeypatch, tmp_path) -> None:
    """Bracketed and parenthesised notes of the prompt listing are dropped; a prompt that is only
    a note (silence, a tone) is not an utterance."""
    import soundfile as sf

    import speechattn.data.corpus as corpus

    names = ["silence-1", "spy-iax2", "vm-intro", "tone", "vm-goodbye"]
    for name in names:
        sf.write(tmp_path / f"{name}.wav", np.zeros(800, dtype=np.float32), 8000)
    listing = tmp_path / "core-sounds-en.txt"
    listing.write_text(
        "silence-1: (1 second of silence)\n"
        'spy-iax2: IAX (note: does not say "2")\n'
        "vm-intro: Please leave your message after the tone. (simple tone sound plays)\n"
        "tone: [beep]\n"
        "vm-goodbye: Goodbye.\n"
    )
    monkeypatch.setattr(corpus, "_asterisk_dir", lambda: tmp_path)
    monkeypatch.setattr(corpus, "_asterisk_transcripts", lambda: listing)
    utts = {u.id: u.text for u in load_corpus("asterisk", check_audio=False)}
    assert utts == {
        "spy-iax2": "IAX",
        "vm-intro": "Please leave your message after the tone.",
        "vm-goodbye": "Goodbye.",
    }


def test_asterisk_absent_error(monkeypatch, tmp_path) -> None:
    from speechattn.data import corpus

    monkeypatch.setattr(corpus, "ASTERISK_DIRS", (tmp_path / "none",))
    with pytest.raises(CorpusError, match="asterisk-core-sounds-en-wav"):
        load_corpus("asterisk")


def test_asterisk_recordings_without_transcripts_name_the_missing_package(
    monkeypatch, tmp_path
) -> None:
    """The -wav package alone (its Recommends left out) gives recordings but no transcripts:
    the error names the package that is missing and the install line that gives both."""
    from speechattn.data import corpus

    (tmp_path / "vm-goodbye.wav").write_bytes(b"")
    monkeypatch.setattr(corpus, "ASTERISK_DIRS", (tmp_path,))
    monkeypatch.setattr(corpus, "_asterisk_transcripts", lambda: None)
    with pytest.raises(CorpusError) as exc:
        load_corpus("asterisk")
    text = str(exc.value)
    assert "the prompt transcripts (asterisk-core-sounds-en)" in text
    assert "prompt recordings" not in text
    assert "apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en" in text
