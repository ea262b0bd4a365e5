"""Audio loading: decode with soundfile (ffmpeg as a fallback), mix to mono, resample with soxr."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "AudioError",
    "check_waveform",
    "decode_with_ffmpeg",
    "load_audio",
    "multichannel_files",
    "resample",
]

# Peak amplitude below which a recording counts as silent (about -80 dBFS).
SILENCE_PEAK = 1e-4


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
