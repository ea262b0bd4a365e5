"""Bad audio inputs written on demand (no binaries in git): see :func:`write_bad_inputs`.

Each case is ``<name>.wav`` plus a same-stem ``.txt`` transcript, so the folder is also a corpus
that ``load_corpus`` reads. ``GOOD`` files are usable speech-like tones; ``BAD`` files must be
skipped with one warning line each by every command that walks a folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["BAD", "GOOD", "write_bad_inputs"]

# name -> why it is unusable (the reason a warning should give, as a regex fragment)
BAD = {
    "corrupt": "decode",
    "empty": "decode|no samples",
    "header_only": "too short|no samples",
    "truncated": "decode|too short",
    "nan": "NaN",
    "silent": "silent",
}
# Usable inputs that a loader must convert (mix to mono, resample) rather than reject.
GOOD = ("stereo", "rate_8k", "rate_48k", "clean")

TEXT = "the cat sat on the mat"


def _speechlike(sr: int, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    x = env * sum(np.sin(k * phase) / k for k in range(1, 8))
    x = x + 0.01 * rng.standard_normal(t.shape)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def write_bad_inputs(folder: Path, *, sample_rate: int = 22050, seconds: float = 1.2) -> Path:
    """Write every case of :data:`BAD` and :data:`GOOD` into ``folder``; returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sr = sample_rate
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk not audio")
    (folder / "empty.wav").write_bytes(b"")
    # A valid header with 8 samples: decodes, far too short for one analysis frame.
    sf.write(folder / "header_only.wav", np.zeros(8, np.float32) + 0.1, sr, subtype="PCM_16")
    # A long file cut mid-stream: the header promises more than the file holds.
    full = folder / "truncated.wav"
    sf.write(full, _speechlike(sr, seconds, 1), sr, subtype="PCM_16")
    data = full.read_bytes()
    full.write_bytes(data[:60])
    nan = _speechlike(sr, seconds, 2)
    nan[len(nan) // 3 : len(nan) // 3 + 50] = np.nan
    sf.write(folder / "nan.wav", nan, sr, subtype="FLOAT")
    sf.write(folder / "silent.wav", np.zeros(int(sr * seconds), np.float32), sr, subtype="PCM_16")
    stereo = np.stack([_speechlike(sr, seconds, 3), _speechlike(sr, seconds, 4)], axis=1)
    sf.write(folder / "stereo.wav", stereo, sr, subtype="PCM_16")
    sf.write(folder / "rate_8k.wav", _speechlike(8000, seconds, 5), 8000, subtype="PCM_16")
    sf.write(folder / "rate_48k.wav", _speechlike(48000, seconds, 6), 48000, subtype="PCM_16")
    sf.write(folder / "clean.wav", _speechlike(sr, seconds, 7), sr, subtype="PCM_16")
    for name in (*BAD, *GOOD):
        (folder / f"{name}.txt").write_text(TEXT + "\n")
    return folder
