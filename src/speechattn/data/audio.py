"""Audio loading: decode with soundfile (ffmpeg as a fallback), mix to mono, resample with soxr.

:func:`load_audio` reads a whole file; :func:`load_audio_segment` reads one segment of a long
recording (Kaldi ``segments``, TextGrid transcripts) by range: only the segment's frames, plus a
margin for the resampler, are decoded and resampled.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "AudioError",
    "check_waveform",
    "decode_with_ffmpeg",
    "load_audio",
    "load_audio_segment",
    "multichannel_files",
    "resample",
]

# Peak amplitude below which a recording counts as silent (about -80 dBFS).
SILENCE_PEAK = 1e-4
# Containers whose seek libsndfile makes sample-exact (PCM and FLAC): a segment of them is read by
# range. Others (Ogg Vorbis, MP3: libsndfile's seek there can land off by a few samples or return
# other samples near the end; formats only ffmpeg reads) are decoded whole and cut.
RANGE_READ_FORMATS = frozenset({"WAV", "WAVEX", "W64", "RF64", "AIFF", "CAF", "AU", "FLAC"})
# Audio read on each side of a segment for the resampler (seconds). soxr's high-quality filter
# responds for well under 20 ms at 8 kHz and above (less at higher rates): with this margin the
# samples it computes inside the segment are those of the whole file, up to float32 rounding.
RESAMPLE_MARGIN_S = 0.1


class AudioError(ValueError):
    """An audio file is missing, unreadable, empty or otherwise unusable; ``.path`` names it."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a float ``(N,)`` array with soxr (high quality); returns float32."""
    if orig_sr == target_sr:
        return np.asarray(waveform, dtype=np.float32)
    import soxr

    return np.asarray(
        soxr.resample(np.asarray(waveform, dtype=np.float32), orig_sr, target_sr), dtype=np.float32
    )


def decode_with_ffmpeg(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Decode any format ffmpeg reads (webm/opus from browser microphones, m4a, ...).

    Returns ``(samples (N, C) float32, sample_rate)``; the file's own rate and channels are kept.

    Raises:
        AudioError: ffmpeg is not on ``PATH``, or it cannot decode the file.
    """
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise AudioError(
            path, "ffmpeg is not installed (it is needed for formats libsndfile can't read)"
        )
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="speechattn-ffmpeg-") as tmp:
        out = Path(tmp) / "decoded.wav"
        cmd = [
            exe,
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-vn",
            "-c:a",
            "pcm_f32le",
            str(out),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not out.is_file():
            detail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            raise AudioError(path, f"ffmpeg could not decode it ({detail[0]})")
        data, sr = sf.read(str(out), dtype="float32", always_2d=True)
    return data, int(sr)


def load_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None,
    validate: bool = False,
    min_samples: int = 1,
    allow_silence: bool = False,
) -> torch.Tensor:
    """Read an audio file as a mono float32 tensor ``(N,)`` at ``sample_rate``.

    Any format libsndfile reads (wav, flac, ogg/vorbis/opus, mp3 with libsndfile >= 1.1); other
    formats (webm from browser microphones, m4a/aac, ...) are decoded with ffmpeg when it is on
    ``PATH``. Multichannel audio is averaged to mono; other rates are resampled with soxr;
    ``sample_rate=None`` keeps the file's rate.

    With ``validate=True`` the decoded (mono, resampled) waveform also goes through
    :func:`check_waveform` (``min_samples``, finite samples, not silent unless
    ``allow_silence``): commands that walk a folder call
    ``load_audio(path, sample_rate=sr, validate=True, min_samples=n_fft)`` and skip a file
    that raises :class:`AudioError` with one warning naming it.

    Raises:
        AudioError (a ``ValueError``): the file is missing, cannot be decoded, or holds no
            samples; with ``validate=True`` also too short, NaN/inf samples, or silent. The
            message names the file and the reason.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioError(p, "audio file not found (check the corpus paths)")
    if sample_rate is not None and (
        isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0
    ):
        raise ValueError(
            f"Expected sample_rate to be a positive int or None; found {sample_rate!r}."
        )
    import soundfile as sf

    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        if shutil.which("ffmpeg") is None:
            raise AudioError(
                p,
                f"could not decode audio ({exc}); the file is corrupt or not audio, or a format "
                "only ffmpeg reads (webm, m4a: install ffmpeg)",
            ) from exc
        try:
            data, sr = decode_with_ffmpeg(p)
        except AudioError as ff_exc:
            raise AudioError(
                p, f"could not decode audio ({exc}; {ff_exc}); the file is corrupt or not audio"
            ) from exc
    if data.shape[0] == 0:
        raise AudioError(p, "audio file holds no samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if validate and not np.isfinite(mono).all():  # before soxr smears NaN over the file
        check_waveform(mono, p, allow_silence=True)
    if sample_rate is not None:
        mono = resample(mono, int(sr), sample_rate)
    if validate:
        check_waveform(mono, p, min_samples=min_samples, allow_silence=allow_silence)
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))


def load_audio_segment(
    path: str | os.PathLike[str],
    *,
    start: float,
    end: float | None,
    sample_rate: int | None,
    validate: bool = False,
    min_samples: int = 1,
    allow_silence: bool = False,
) -> torch.Tensor:
    """Read the segment ``[start, end)`` seconds of an audio file as mono float32 ``(n,)`` at
    ``sample_rate``, decoding only that part of the file.

    The result is the cut ``load_audio(path, sample_rate=sr)[round(start * sr) : round(end *
    sr)]`` (``sr`` the output rate; indices clamped to the resampled file's length) without
    decoding or resampling the whole recording: for a PCM or FLAC file (:data:`RANGE_READ_FORMATS`)
    only the segment's frames and :data:`RESAMPLE_MARGIN_S` on each side are read (the read
    starts on a frame whose time is a whole number of output samples, so the output grids agree)
    and resampled, then cut. The margin makes the resampler's edge effects vanish inside the
    segment: the samples equal the whole-file cut up to float32 rounding (about 1e-7; at the
    file's start and end the read stops where the file does, as the whole-file read does). Other
    formats are decoded whole and cut (:func:`load_audio`).

    Args:
        path: the recording.
        start: the segment's start (seconds, ``>= 0``).
        end: its end (seconds, ``> start``), or None for the recording's end (Kaldi's ``-1``).
        sample_rate: rate of the waveform returned (Hz); None keeps the file's rate.
        validate: check the segment's samples (:func:`check_waveform`: at least
            ``min_samples``, finite, not silent unless ``allow_silence``).

    Returns:
        float32 ``(n,)``, ``n = round(end * sr) - round(start * sr)`` (the recording's end for
        an ``end`` within :data:`~speechattn.data.corpus.SEGMENT_END_TOLERANCE_S` past it).

    Raises:
        ValueError: ``start`` / ``end`` / ``sample_rate`` out of range (names them).
        AudioError: the file is missing or cannot be decoded; the segment starts at or after
            the audio's end or ends past it by more than ``SEGMENT_END_TOLERANCE_S`` (as
            :func:`~speechattn.data.corpus.load_corpus` refuses such a segment); with
            ``validate`` a segment too short, not finite or silent. The message names the file
            and the segment's times.

    Example::

        seg = load_audio_segment("talk.flac", start=61.2, end=64.9, sample_rate=22050)
        # naive: load_audio("talk.flac", sample_rate=22050)[round(61.2 * 22050):round(64.9 * 22050)]
    """
    from speechattn.data.corpus import SEGMENT_END_TOLERANCE_S

    if (
        isinstance(start, bool)
        or not isinstance(start, (int, float))
        or not (math.isfinite(start) and start >= 0)
    ):
        raise ValueError(f"Expected start to be a finite number of seconds >= 0; found {start!r}.")
    if end is not None and (
        isinstance(end, bool)
        or not isinstance(end, (int, float))
        or not (math.isfinite(end) and end > start)
    ):
        raise ValueError(
            f"Expected end to be a number of seconds > start ({start!r}), or None for the "
            f"recording's end; found {end!r}."
        )
    if sample_rate is not None and (
        isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0
    ):
        raise ValueError(
            f"Expected sample_rate to be a positive int or None; found {sample_rate!r}."
        )
    p = Path(path)
    if not p.is_file():
        raise AudioError(p, "audio file not found (check the corpus paths)")
    where = f"{p} [{float(start):.3f}-{'end' if end is None else f'{float(end):.3f}'} s]"
    import soundfile as sf

    try:
        f = sf.SoundFile(str(p))
    except Exception:  # a format only ffmpeg reads, or a corrupt file: load_audio says which
        f = None
    seg = None
    if f is not None:
        with f:
            if f.format in RANGE_READ_FORMATS and f.seekable():
                seg = _read_range(
                    f, p, start, end, sample_rate, SEGMENT_END_TOLERANCE_S, where, validate
                )
    if seg is None:  # no exact seek (or the seek was refused): decode whole and cut
        whole = load_audio(p, sample_rate=sample_rate)
        out_rate = sample_rate if sample_rate is not None else _file_rate(p)
        a, b = _segment_bounds(
            start,
            end,
            int(whole.shape[0]),
            out_rate,
            int(whole.shape[0]) / out_rate,
            SEGMENT_END_TOLERANCE_S,
            where,
        )
        seg = whole[a:b].clone()
    if validate:
        check_waveform(seg, where, min_samples=min_samples, allow_silence=allow_silence)
    return seg


def _seeks_exactly(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` opens with soundfile as a seekable :data:`RANGE_READ_FORMATS` file
    (:func:`load_audio_segment` then reads a segment by range); False for other formats and for
    files that do not open (their error comes from the read)."""
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            return bool(f.format in RANGE_READ_FORMATS and f.seekable())
    except Exception:
        return False


def _file_rate(path: Path) -> int:
    """The file's own rate, for a file read whole (soundfile's header, else ffmpeg's)."""
    import soundfile as sf

    try:
        return int(sf.info(str(path)).samplerate)
    except Exception:
        return decode_with_ffmpeg(path)[1]


def _segment_bounds(
    start: float,
    end: float | None,
    n: int,
    rate: int,
    seconds: float,
    tolerance: float,
    where: str,
) -> tuple[int, int]:
    """Sample indices ``[a, b)`` of the segment in a waveform of ``n`` samples at ``rate``
    (``seconds`` of audio in the file), as :class:`~speechattn.data.corpus.UtteranceAudio` cut
    them; AudioError for a segment outside the audio."""
    if not start < seconds:
        raise AudioError(where, f"the segment starts after the audio's end ({seconds:.3f} s)")
    if end is not None and end > seconds + tolerance:
        raise AudioError(where, f"the segment ends after the audio's end ({seconds:.3f} s)")
    a = min(n, max(0, round(float(start) * rate)))
    b = n if end is None else min(n, max(a, round(float(end) * rate)))
    return a, b


def _read_range(
    f: Any,
    path: Path,
    start: float,
    end: float | None,
    sample_rate: int | None,
    tolerance: float,
    where: str,
    validate: bool,
) -> torch.Tensor | None:
    """The segment of an open seekable soundfile ``f`` (see :func:`load_audio_segment`); None
    when libsndfile refuses the seek (the file is then read whole)."""
    src = int(f.samplerate)
    frames = int(f.frames)
    if frames <= 0 or src <= 0:
        raise AudioError(path, "audio file holds no samples")
    out = src if sample_rate is None else int(sample_rate)
    # the resampled file's length, as soxr gives it for the whole file
    n = frames if out == src else int(frames * out / src + 0.5)
    a, b = _segment_bounds(start, end, n, out, frames / src, tolerance, where)
    if out == src:
        s0, s1 = a, b
    else:
        # Start on a frame whose time is a whole number of output samples (a multiple of
        # src / gcd(src, out) frames): the chunk's output grid is then the file's, offset by an
        # integer ``off``. Read RESAMPLE_MARGIN_S more on each side for the resampler's filter.
        step = src // math.gcd(src, out)
        margin = math.ceil(RESAMPLE_MARGIN_S * src)
        s0 = max(0, (a * src // out - margin) // step * step)
        s1 = min(frames, -(-b * src // out) + margin)
    try:
        f.seek(s0)
    except Exception:  # libsndfile refused the seek after all: the caller reads the file whole
        return None
    try:
        data = f.read(s1 - s0, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(path, f"could not decode audio ({exc}); the file is corrupt") from exc
    if data.shape[0] != s1 - s0:
        raise AudioError(
            path,
            f"could not decode audio (expected {s1 - s0} frames from {s0}; found "
            f"{data.shape[0]}): the file is truncated or corrupt",
        )
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if validate and not np.isfinite(mono).all():  # before soxr smears NaN over it
        check_waveform(mono, where, allow_silence=True)
    if out != src:
        off = s0 * out // src  # exact: s0 is a multiple of src / gcd(src, out)
        mono = resample(mono, src, out)[a - off : b - off]
        if mono.shape[0] != b - a:  # cannot happen for soxr's length rule; never cut short silently
            raise AudioError(
                path, f"resampled segment holds {mono.shape[0]} samples; expected {b - a}"
            )
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))


def multichannel_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The files among ``paths`` whose header says 2 or more channels (soundfile; files it
    cannot read are left out): :func:`load_audio` averages their channels to mono, which a
    command says once rather than per file."""
    import soundfile as sf

    out = []
    for p in paths:
        try:
            if sf.info(str(p)).channels > 1:
                out.append(Path(p))
        except Exception:  # unreadable files are reported where they are decoded
            continue
    return out


def check_waveform(
    waveform: torch.Tensor | np.ndarray,
    path: str | os.PathLike[str],
    *,
    min_samples: int = 1,
    allow_silence: bool = False,
) -> None:
    """Check that a decoded mono waveform ``(N,)`` is usable; raise :class:`AudioError` naming ``path``.

    Usable means: at least ``min_samples`` samples (e.g. one STFT window), every sample finite,
    and (unless ``allow_silence``) a peak amplitude above ``SILENCE_PEAK`` (about -80 dBFS).
    Commands that walk a folder call this on each file and skip the file with one warning.
    """
    x = (
        waveform.detach().cpu().numpy()
        if isinstance(waveform, torch.Tensor)
        else np.asarray(waveform)
    )
    n = int(x.shape[-1]) if x.ndim else 0
    if n < min_samples:
        raise AudioError(
            path, f"too short: {n} samples, at least {min_samples} needed (one analysis frame)"
        )
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise AudioError(path, f"{bad} samples are NaN or infinite")
    if not allow_silence and float(np.abs(x).max()) < SILENCE_PEAK:
        raise AudioError(path, "silent (peak below -80 dBFS)")
