"""A segment of a long recording read by range equals the cut of the whole decoded file.

The reference is the old path: ``load_audio`` of the whole file (decoded, mixed to mono,
resampled by soxr as one piece), cut at ``round(start * sr) : round(end * sr)``.

Why ``1e-5`` is the right bound: the range read resamples the segment plus
``RESAMPLE_MARGIN_S`` (0.1 s) of audio on each side, starting on a frame whose time is a whole
number of output samples, so its output samples sit on the whole file's grid. soxr's
high-quality filter responds for well under 20 ms at 8 kHz and above, so inside the segment the
two computations differ only in float32 rounding (measured: about 1e-7 on a 0.5-peak signal).
Without the margin, or with the grids one sample apart, the difference is 1e-3 to 1e-1 (the test
``test_the_bound_catches_a_missing_margin`` shows the bound fails then): 1e-5 lies between.
At the file's start and end the range read stops where the file does, as the whole read does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechattn.data import audio as audio_mod
from speechattn.data.audio import AudioError, load_audio, load_audio_segment
from speechattn.data.corpus import SEGMENT_END_TOLERANCE_S, Utterance

BOUND = 1e-5
SECONDS = 4.0


def _signal(sr: int, seconds: float = SECONDS, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Broadband test audio: white noise (the resampler's worst case) plus a tone, peak < 1."""
    rng = np.random.default_rng(seed + sr)
    n = round(sr * seconds)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * 220.0 * t)[:, None] + 0.2 * rng.uniform(-1, 1, (n, channels))
    return np.asarray(x if channels > 1 else x[:, 0], dtype=np.float32)


def _write(path: Path, sr: int, *, channels: int = 1, subtype: str = "FLOAT") -> Path:
    sf.write(str(path), _signal(sr, channels=channels), sr, subtype=subtype)
    return path


def _cut(path: Path, start: float, end: float | None, sr: int | None) -> torch.Tensor:
    whole = load_audio(path, sample_rate=sr)
    rate = sr if sr is not None else sf.info(str(path)).samplerate
    n = int(whole.shape[0])
    a = min(n, max(0, round(start * rate)))
    b = n if end is None else min(n, max(a, round(end * rate)))
    return whole[a:b]


# segments at the file's start, in the middle, up to the end exactly, to the end (None = -1)
SEGMENTS = [(0.0, 0.731), (1.2345, 2.5), (3.1, SECONDS), (2.9, None), (0.013, 0.05)]


@pytest.fixture
def no_whole_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if the whole file is decoded (the range read must not call load_audio)."""

    def refuse(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("the whole file was decoded")

    monkeypatch.setattr(audio_mod, "load_audio", refuse)


@pytest.mark.parametrize("src", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("out", [16000, 22050])
def test_range_read_equals_the_whole_file_cut(tmp_path: Path, src: int, out: int) -> None:
    path = _write(tmp_path / f"rec{src}.wav", src)
    expected = [_cut(path, a, b, out) for a, b in SEGMENTS]
    for (a, b), ref in zip(SEGMENTS, expected, strict=True):
        got = load_audio_segment(path, start=a, end=b, sample_rate=out)
        assert got.dtype == torch.float32 and got.shape == ref.shape, (a, b)
        assert float((got - ref).abs().max()) <= BOUND, (src, out, a, b)


def test_range_read_does_not_decode_the_whole_file(
    tmp_path: Path, no_whole_read: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "rec.flac", 44100, subtype="PCM_16")
    read: list[int] = []
    real = sf.SoundFile.read

    def counting(self: sf.SoundFile, frames: int = -1, *args: object, **kw: object) -> object:
        read.append(frames)
        return real(self, frames, *args, **kw)

    monkeypatch.setattr(sf.SoundFile, "read", counting)
    seg = load_audio_segment(path, start=1.0, end=1.5, sample_rate=16000)
    assert seg.shape == (8000,)
    # the segment and its margins (0.1 s each side, plus the grid step of 441 frames), not 4 s
    assert read and max(read) <= round(0.7 * 44100) + 441 + 2


def test_flac_and_pcm16_and_no_resampling(tmp_path: Path) -> None:
    flac = _write(tmp_path / "rec.flac", 48000, subtype="PCM_16")
    for a, b in SEGMENTS:
        ref = _cut(flac, a, b, 22050)
        got = load_audio_segment(flac, start=a, end=b, sample_rate=22050)
        assert got.shape == ref.shape and float((got - ref).abs().max()) <= BOUND
        # at the file's own rate the frames themselves: exactly equal
        same = load_audio_segment(flac, start=a, end=b, sample_rate=None)
        assert torch.equal(same, _cut(flac, a, b, None))


def test_stereo_is_averaged_as_load_audio_does(tmp_path: Path) -> None:
    path = _write(tmp_path / "st.wav", 44100, channels=2)
    ref = _cut(path, 1.0, 2.0, 16000)
    got = load_audio_segment(path, start=1.0, end=2.0, sample_rate=16000)
    assert got.shape == ref.shape and float((got - ref).abs().max()) <= BOUND


def test_the_bound_catches_a_missing_margin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The assertion above can fail: without the margin the segment's edges differ."""
    path = _write(tmp_path / "rec.wav", 22050)
    ref = _cut(path, 1.2345, 2.5, 16000)
    monkeypatch.setattr(audio_mod, "RESAMPLE_MARGIN_S", 0.0)
    got = load_audio_segment(path, start=1.2345, end=2.5, sample_rate=16000)
    assert got.shape == ref.shape and float((got - ref).abs().max()) > 100 * BOUND


def test_formats_without_exact_seek_are_read_whole(tmp_path: Path) -> None:
    """Ogg Vorbis: libsndfile's seek is not sample-exact there, so the file is decoded whole and
    cut: exactly the old result."""
    path = tmp_path / "rec.ogg"
    sf.write(str(path), _signal(22050), 22050, format="OGG", subtype="VORBIS")
    for a, b in [(0.5, 1.0), (3.5, None)]:
        assert torch.equal(
            load_audio_segment(path, start=a, end=b, sample_rate=16000), _cut(path, a, b, 16000)
        )


def test_unseekable_subtypes_and_refused_seeks_are_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WAV of GSM 6.10 (libsndfile cannot seek in it) is decoded whole and cut; so is a file
    whose seek libsndfile refuses, rather than being called corrupt."""
    gsm = tmp_path / "gsm.wav"
    sf.write(str(gsm), _signal(8000), 8000, format="WAV", subtype="GSM610")
    assert torch.equal(
        load_audio_segment(gsm, start=1.0, end=2.0, sample_rate=16000), _cut(gsm, 1.0, 2.0, 16000)
    )
    pcm = _write(tmp_path / "pcm.wav", 16000)

    real = sf.SoundFile.seek
    refused: list[int] = []

    def refuse(self: sf.SoundFile, frames: int, whence: int = sf.SEEK_SET) -> int:
        if not refused and whence == sf.SEEK_SET and frames > 0:  # the range read's seek
            refused.append(frames)
            raise sf.LibsndfileError(0, prefix="Seek attempted on unseekable file type. ")
        return int(real(self, frames, whence))

    monkeypatch.setattr(sf.SoundFile, "seek", refuse)
    assert torch.equal(
        load_audio_segment(pcm, start=1.0, end=2.0, sample_rate=22050), _cut(pcm, 1.0, 2.0, 22050)
    )
    assert len(refused) == 1


def test_segments_outside_the_audio_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "rec.wav", 16000)
    with pytest.raises(AudioError, match=r"rec\.wav \[4\.000-4\.500 s\].*starts after"):
        load_audio_segment(path, start=SECONDS, end=4.5, sample_rate=16000)
    with pytest.raises(AudioError, match="ends after the audio's end"):
        load_audio_segment(path, start=3.0, end=SECONDS + 0.2, sample_rate=16000)
    # within the tolerance the end is the audio's end, as load_corpus reads it
    near = load_audio_segment(
        path, start=3.0, end=SECONDS + SEGMENT_END_TOLERANCE_S / 2, sample_rate=22050
    )
    assert torch.equal(near, load_audio_segment(path, start=3.0, end=None, sample_rate=22050))
    assert near.shape == _cut(path, 3.0, None, 22050).shape
    with pytest.raises(AudioError, match="not found"):
        load_audio_segment(tmp_path / "none.wav", start=0.0, end=1.0, sample_rate=16000)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start": -0.1, "end": 1.0}, "start"),
        ({"start": float("nan"), "end": 1.0}, "start"),
        ({"start": 1.0, "end": 1.0}, "end"),
        ({"start": 1.0, "end": -1}, "end"),
        ({"start": 0.0, "end": 1.0, "sample_rate": 0}, "sample_rate"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, float], match: str) -> None:
    path = _write(tmp_path / "rec.wav", 16000)
    args = {"sample_rate": 16000, **kwargs}
    with pytest.raises(ValueError, match=match):
        load_audio_segment(path, **args)  # type: ignore[arg-type]


def test_validate_names_the_segment(tmp_path: Path) -> None:
    x = _signal(16000)
    x[16000:32000] = 0.0  # seconds 1-2 are silent
    path = tmp_path / "rec.wav"
    sf.write(str(path), x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"\[1\.200-1\.800 s\]: silent"):
        load_audio_segment(path, start=1.2, end=1.8, sample_rate=16000, validate=True)
    assert load_audio_segment(path, start=2.5, end=3.0, sample_rate=16000, validate=True).numel()


def test_speech_dataset_reads_a_segment_by_range(tmp_path: Path, no_whole_read: None) -> None:
    """SpeechDataset's random access: a segment item is read by range (load_audio is refused
    here) and equals the cut of the whole file."""
    from speechattn.data.collate import SpeechDataset
    from speechattn.data.features import LogMelSpectrogram

    path = _write(tmp_path / "talk.wav", 44100)
    utts = [
        Utterance("a", path, "a", "s", None, None, start=0.4, end=1.9, recording="talk"),
        Utterance("b", path, "b", "s", None, None, start=3.0, end=None, recording="talk"),
    ]
    ds = SpeechDataset(
        utts, features=LogMelSpectrogram(), frontend="characters", return_waveform=True
    )
    items = [ds[1], ds[0]]
    assert all(it is not None for it in items)
    for it, u in zip(items, utts[::-1], strict=True):
        assert it is not None
        wav = it["waveform"]
        ref = _cut(path, float(u.start or 0.0), u.end, 22050)
        assert wav.shape == ref.shape and float((wav - ref).abs().max()) <= BOUND


def test_kaldi_end_minus_one_through_the_dataset(tmp_path: Path) -> None:
    """A Kaldi segment with end -1 (to the recording's end) reads to the end."""
    from speechattn.data.collate import SpeechDataset
    from speechattn.data.corpus import load_corpus

    d = tmp_path / "kaldi"
    d.mkdir()
    _write(d / "rec.wav", 16000)
    (d / "wav.scp").write_text("rec rec.wav\n")
    (d / "segments").write_text("u1 rec 0.25 1.5\nu2 rec 2.75 -1\n")
    (d / "text").write_text("u1 hello there\nu2 general kenobi\n")
    utts = load_corpus(d)
    ds = SpeechDataset(utts, frontend="characters", return_waveform=True)
    by_id = {u.id: i for i, u in enumerate(utts)}
    tail = ds[by_id["u2"]]
    assert tail is not None
    ref = _cut(d / "rec.wav", 2.75, None, 22050)
    assert tail["waveform"].shape == ref.shape == (round(SECONDS * 22050) - round(2.75 * 22050),)
    assert float((tail["waveform"] - ref).abs().max()) <= BOUND


def test_audio_durations_of_a_segment_to_the_end(tmp_path: Path) -> None:
    from speechattn.data.collate import audio_durations

    path = _write(tmp_path / "rec.wav", 16000)
    utts = [
        Utterance("w", path, "x", "s", None, None),
        Utterance("a", path, "x", "s", None, None, start=1.0, end=2.5),
        Utterance("b", path, "x", "s", None, None, start=2.75, end=None),
    ]
    assert audio_durations(utts) == pytest.approx([SECONDS, 1.5, SECONDS - 2.75])


@pytest.mark.parametrize("fmt", ["WAV", "OGG"])
def test_utterance_audio_refuses_a_segment_outside_the_audio(tmp_path: Path, fmt: str) -> None:
    """By range (WAV) or read once and cut (Ogg): a segment past the audio's end is an
    AudioError naming the file and times (it used to come back empty or cut short)."""
    from speechattn.data.corpus import UtteranceAudio

    path = tmp_path / f"rec.{fmt.lower()}"
    sf.write(str(path), _signal(16000), 16000, format=fmt)
    past = Utterance("p", path, "x", "s", None, None, start=SECONDS + 1.0, end=SECONDS + 2.0)
    long = Utterance("l", path, "x", "s", None, None, start=3.0, end=SECONDS + 1.0)
    ok = Utterance("o", path, "x", "s", None, None, start=3.0, end=None)
    read = UtteranceAudio([past, long, ok], sample_rate=16000)
    with pytest.raises(AudioError, match=r"rec\.\w+ \[5\.000-6\.000 s\].*starts after"):
        read(past)
    with pytest.raises(AudioError, match=r"\[3\.000-5\.000 s\].*ends after"):
        read(long)
    assert read(ok).shape == (16000,)


@pytest.mark.parametrize("src", [11025, 12000, 24000, 32000, 96000])
def test_random_segments_at_other_rates(tmp_path: Path, src: int) -> None:
    """Seeded random segments (some to the end) at rates whose grid step is long (96 kHz ->
    44.1 kHz: 320 frames) or odd (11025 -> 8000): lengths equal, samples within the bound."""
    rng = np.random.default_rng(src)
    n = round(src * 3.3) + int(rng.integers(0, src))
    x = (0.3 * np.sin(np.arange(n) * 0.03) + 0.2 * rng.uniform(-1, 1, n)).astype(np.float32)
    path = tmp_path / "r.wav"
    sf.write(str(path), x, src, subtype="FLOAT")
    for out in (8000, 44100):
        for _ in range(8):
            a = float(rng.uniform(0, n / src - 0.01))
            b = None if rng.random() < 0.25 else float(min(n / src, a + rng.uniform(0.01, 2)))
            ref = _cut(path, a, b, out)
            got = load_audio_segment(path, start=a, end=b, sample_rate=out)
            assert got.shape == ref.shape, (out, a, b)
            assert float((got - ref).abs().max()) <= BOUND, (out, a, b)
