"""Slow numpy log-mel written from librosa's definitions (float64), the oracle for features.py.

- Slaney mel scale (librosa ``hz_to_mel(htk=False)``): linear ``f / (200/3)`` below 1 kHz,
  ``15 + log(f / 1000) / (log(6.4) / 27)`` above.
- ``librosa.filters.mel(norm="slaney")``: ``n_mels + 2`` edges equally spaced in mel between
  f_min and f_max; filter i is the triangle (edge i, edge i+1, edge i+2) evaluated at the FFT bin
  frequencies ``k * sr / n_fft``, scaled by ``2 / (edge_{i+2} - edge_i)``.
- ``librosa.stft(center=True, pad_mode="constant")``: zero-pad ``n_fft // 2`` both sides, frame t
  covers ``[t * hop, t * hop + n_fft)``, periodic Hann window ``0.5 - 0.5 cos(2 pi n / win)``
  zero-padded centrally to n_fft.
"""

from __future__ import annotations

import math

import numpy as np


def hz_to_mel(f: float) -> float:
    if f < 1000.0:
        return f / (200.0 / 3.0)
    return 15.0 + math.log(f / 1000.0) / (math.log(6.4) / 27.0)


def mel_to_hz(m: float) -> float:
    if m < 15.0:
        return m * (200.0 / 3.0)
    return 1000.0 * math.exp((math.log(6.4) / 27.0) * (m - 15.0))


def mel_filterbank(sr: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    lo, hi = hz_to_mel(f_min), hz_to_mel(f_max)
    edges = [mel_to_hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    fb = np.zeros((n_mels, n_fft // 2 + 1))
    for i in range(n_mels):
        left, centre, right = edges[i], edges[i + 1], edges[i + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            up = (f - left) / (centre - left)
            down = (right - f) / (right - centre)
            fb[i, k] = max(0.0, min(up, down)) * 2.0 / (right - left)
    return fb


def log_mel(
    wav: np.ndarray,
    *,
    sr: int,
    n_fft: int,
    win_length: int,
    hop: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    power: float = 1.0,
    floor: float = 1e-5,
) -> np.ndarray:
    """(N,) float64 -> (T, n_mels) float64."""
    f_max = sr / 2 if f_max is None else f_max
    x = np.concatenate([np.zeros(n_fft // 2), wav.astype(np.float64), np.zeros(n_fft // 2)])
    n = np.arange(win_length)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * n / win_length)
    full = np.zeros(n_fft)
    off = (n_fft - win_length) // 2
    full[off : off + win_length] = win
    frames = 1 + (len(x) - n_fft) // hop
    fb = mel_filterbank(sr, n_fft, n_mels, f_min, f_max)
    out = np.zeros((frames, n_mels))
    for t in range(frames):
        seg = x[t * hop : t * hop + n_fft] * full
        mag = np.abs(np.fft.rfft(seg)) ** power
        out[t] = np.log(np.maximum(fb @ mag, floor))
    return out
