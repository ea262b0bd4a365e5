"""Log-mel spectrogram in pure torch, and interval -> frame-duration conversion.

Definitions follow librosa (``librosa.feature.melspectrogram`` with ``htk=False``,
``norm="slaney"``, ``center=True``, ``pad_mode="constant"``, periodic Hann window), so features
match the usual TTS/vocoder front ends; the log is ``log(clamp(mel, min=log_floor))``.
Tested against a float64 numpy implementation of librosa's formulas
(``tests/reference/mel_reference.py``): filterbank within 1e-10 relative, log-mel within 1e-8
absolute for float64 input and 2e-3 absolute for float32 (and against librosa 0.11 itself within
2e-3 when installed, ``-m slow``).

Shape legend: ``b`` batch, ``n`` samples, ``t`` frames, ``m`` mel bins, ``u`` intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "MEL_NORMS",
    "LogMelSpectrogram",
    "band_valid_mask",
    "hz_to_mel",
    "intervals_to_durations",
    "mel_center_frequencies",
    "mel_filterbank",
    "mel_to_hz",
    "normalize_log_mel",
]

MEL_NORMS = ("bin", "utterance", "none")

_F_SP = 200.0 / 3.0  # Slaney: linear below 1 kHz, 200/3 Hz per mel
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(freq: Tensor) -> Tensor:
    """Slaney mel scale (librosa ``hz_to_mel(htk=False)``), elementwise, any float dtype."""
    mel = freq / _F_SP
    log_part = _MIN_LOG_MEL + torch.log(torch.clamp(freq, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(freq >= _MIN_LOG_HZ, log_part, mel)


def mel_to_hz(mel: Tensor) -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    freq = mel * _F_SP
    log_part = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (mel - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log_part, freq)


def mel_filterbank(
    *,
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Slaney-normalised triangular mel filterbank ``(n_mels, n_fft // 2 + 1)``.

    Same as ``librosa.filters.mel(sr, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max,
    htk=False, norm="slaney")``: triangles between consecutive mel-spaced edges, each scaled by
    ``2 / (f_{i+2} - f_i)`` so every filter has unit area.
    """
    if f_max is None:
        f_max = sample_rate / 2.0
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(
            f"Expected 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2}; found "
            f"f_min={f_min}, f_max={f_max}."
        )
    fft_freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    mel_lo = hz_to_mel(torch.tensor(float(f_min), dtype=torch.float64))
    mel_hi = hz_to_mel(torch.tensor(float(f_max), dtype=torch.float64))
    mel_f = mel_to_hz(torch.linspace(float(mel_lo), float(mel_hi), n_mels + 2, dtype=torch.float64))
    fdiff = mel_f[1:] - mel_f[:-1]
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    return (weights * enorm[:, None]).to(dtype)


class LogMelSpectrogram(nn.Module):
    """Log-mel spectrogram ``(B, N) -> (B, T, n_mels)`` (or ``(N,) -> (T, n_mels)``).

    ``T = 1 + N // hop_length`` (centred frames, see :meth:`num_frames`); frame ``t`` is centred
    on sample ``t * hop_length``. Computed in float32 (float64 input stays float64) on the
    input's device; differentiable with respect to the waveform.

    Args:
        sample_rate: Hz.
        n_fft: FFT size.
        win_length: Hann window length (<= n_fft, zero-padded to n_fft in the middle).
        hop_length: samples between frames.
        n_mels: mel bins.
        f_min, f_max: filterbank range in Hz (``f_max=None`` = Nyquist).
        power: 1.0 for magnitude, 2.0 for power spectrogram.
        log_floor: clamp before the natural log.
        center: pad ``n_fft // 2`` on both sides (librosa/torch default).
        pad_mode: padding for ``center`` (``"constant"`` is librosa's default, zeros).

    Padded batches: frames computed over padding are garbage; keep only
    ``num_frames(lengths)`` frames per item (the valid ones only see valid samples up to
    ``n_fft // 2`` samples past the end, which are zeros when the padding is zeros).
    """

    window: Tensor
    mel_basis: Tensor

    def __init__(
        self,
        *,
        sample_rate: int = 22050,
        n_fft: int = 1024,
        win_length: int = 1024,
        hop_length: int = 256,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        power: float = 1.0,
        log_floor: float = 1e-5,
        center: bool = True,
        pad_mode: str = "constant",
    ) -> None:
        super().__init__()
        for name, val in (
            ("sample_rate", sample_rate),
            ("n_fft", n_fft),
            ("win_length", win_length),
            ("hop_length", hop_length),
            ("n_mels", n_mels),
        ):
            if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
                raise ValueError(f"Expected {name} to be a positive int; found {val!r}.")
        if win_length > n_fft:
            raise ValueError(
                f"Expected win_length <= n_fft={n_fft}; found win_length={win_length}."
            )
        if power <= 0:
            raise ValueError(f"Expected power > 0; found {power}.")
        if log_floor <= 0:
            raise ValueError(f"Expected log_floor > 0; found {log_floor}.")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = f_max
        self.power = power
        self.log_floor = log_floor
        self.center = center
        self.pad_mode = pad_mode
        self.register_buffer(
            "window",
            torch.hann_window(win_length, periodic=True, dtype=torch.float64),
            persistent=False,
        )
        self.register_buffer(
            "mel_basis",
            mel_filterbank(
                sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, f_min=f_min, f_max=f_max
            ),
            persistent=False,
        )

    def num_frames(self, num_samples: Any) -> Any:
        """Frames for ``num_samples`` samples (int or int64 tensor): ``1 + n // hop`` when centred."""
        if self.center:
            return 1 + num_samples // self.hop_length
        return 1 + (num_samples - self.n_fft) // self.hop_length

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, win_length={self.win_length}, "
            f"hop_length={self.hop_length}, n_mels={self.n_mels}, f_min={self.f_min}, f_max={self.f_max}"
        )

    def forward(self, waveform: Tensor) -> Tensor:
        """Args: waveform ``(B, N)`` or ``(N,)`` float. Returns ``(B, T, n_mels)`` / ``(T, n_mels)``."""
        if not isinstance(waveform, Tensor):
            raise TypeError(
                f"Expected waveform to be a torch.Tensor; found {type(waveform).__name__}."
            )
        if not waveform.is_floating_point():
            raise TypeError(
                f"Expected a floating waveform (float32 in [-1, 1]); found dtype {waveform.dtype}. "
                "Convert int16 PCM with x.float() / 32768."
            )
        squeeze = waveform.dim() == 1
        if squeeze:
            waveform = waveform[None]
        if waveform.dim() != 2:
            raise ValueError(
                f"Expected waveform of shape (B, N) or (N,); found {tuple(waveform.shape)}."
            )
        min_len = self.n_fft // 2 + 1 if self.center else self.n_fft
        if waveform.shape[-1] < min_len:
            raise ValueError(
                f"Expected at least {min_len} samples per waveform; found {waveform.shape[-1]}."
            )
        dtype = torch.float64 if waveform.dtype == torch.float64 else torch.float32
        x = waveform.to(dtype)
        if self.center:
            pad = self.n_fft // 2
            x = torch.nn.functional.pad(x[:, None], (pad, pad), mode=self.pad_mode)[:, 0]
        spec = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(dtype),
            center=False,
            return_complex=True,
        ).abs()
        if self.power != 1.0:
            spec = spec.pow(self.power)
        mel = torch.matmul(self.mel_basis.to(dtype), spec)  # (B, M, T)
        out = torch.log(torch.clamp(mel, min=self.log_floor)).transpose(1, 2)
        return out[0] if squeeze else out


def mel_center_frequencies(
    *, sample_rate: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> Tensor:
    """Centre frequency (Hz, float64 ``(n_mels,)``) of each :func:`mel_filterbank` triangle."""
    if f_max is None:
        f_max = sample_rate / 2.0
    lo = hz_to_mel(torch.tensor(float(f_min), dtype=torch.float64))
    hi = hz_to_mel(torch.tensor(float(f_max), dtype=torch.float64))
    return mel_to_hz(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64))[1:-1]


def band_valid_mask(
    log_mel: Tensor,
    *,
    sample_rate: int,
    native_sample_rate: int | None = None,
    drop_db: float = 60.0,
    quantile: float = 0.9,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> Tensor:
    """Which mel bins of one utterance carry signal: bool ``(m,)``, True = keep (inside the band).

    Band-limited input (8 kHz telephone audio or 16 kHz audio resampled to 22.05 kHz) has empty
    bands at the top of the spectrum. A bin is kept when both hold:

    * its centre frequency is at most the Nyquist frequency of the audio's native rate
      (``native_sample_rate / 2``; skipped when ``None``);
    * it lies at or below the highest bin whose level (the ``quantile`` of its log-mel over
      frames: the loud frames) is within ``drop_db`` dB of the loudest bin's level. The kept band
      is a prefix: a quiet bin below a loud one is kept.

    Args:
        log_mel: ``(t, m)`` natural-log magnitude mel spectrogram (:class:`LogMelSpectrogram`,
            ``power=1``), valid frames only.
        sample_rate: the spectrogram's sample rate (after any resampling).
        native_sample_rate: the file's own rate before resampling, when known.
        drop_db: how far below the loudest bin (in dB of magnitude) a bin still counts as signal.
        quantile: over frames, in ``(0, 1]``.
        f_min, f_max: the filterbank's range (as given to :class:`LogMelSpectrogram`).

    Returns:
        bool ``(m,)``; at least the first bin is always kept.

    Example::

        keep = band_valid_mask(log_mel, sample_rate=22050)
        log_mel = normalize_log_mel(log_mel, band_valid=keep)   # bins above the band -> 0
    """
    if not isinstance(log_mel, Tensor) or log_mel.dim() != 2 or log_mel.shape[0] < 1:
        found = tuple(log_mel.shape) if isinstance(log_mel, Tensor) else type(log_mel).__name__
        raise ValueError(f"Expected log_mel of shape (T>=1, M); found {found}.")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"Expected 0 < quantile <= 1; found {quantile}.")
    if drop_db <= 0:
        raise ValueError(f"Expected drop_db > 0; found {drop_db}.")
    m = log_mel.shape[1]
    level = torch.quantile(log_mel.double(), quantile, dim=0)  # (m,)
    live = level >= level.max() - drop_db * math.log(10.0) / 20.0
    last = int(torch.nonzero(live).max())
    keep = torch.arange(m, device=log_mel.device) <= last
    if native_sample_rate is not None:
        if native_sample_rate <= 0:
            raise ValueError(f"Expected native_sample_rate > 0; found {native_sample_rate}.")
        centres = mel_center_frequencies(
            sample_rate=sample_rate, n_mels=m, f_min=f_min, f_max=f_max
        ).to(log_mel.device)
        keep &= centres <= native_sample_rate / 2.0
    keep[0] = True
    return keep


def normalize_log_mel(
    log_mel: Tensor,
    *,
    norm: str = "bin",
    std_floor: float = 1e-3,
    band_valid: Tensor | None = None,
) -> Tensor:
    """Per-utterance mean/variance normalisation of a log-mel ``(t, m) -> (t, m)``.

    * ``norm="bin"``: each bin minus its mean over frames, divided by ``std + std_floor``
      (cepstral mean/variance normalisation on log-mels: removes a fixed channel gain per bin);
    * ``norm="utterance"``: one mean and one standard deviation over all frames and kept bins
      (keeps the spectral tilt, removes the level);
    * ``norm="none"``: unchanged.

    With ``band_valid`` (bool ``(m,)``, True = keep, e.g. :func:`band_valid_mask`) the statistics
    use the kept bins only and the other bins are set to 0 (their normalised mean), so an
    empty band above a band-limited input's Nyquist frequency does not turn into amplified noise.
    """
    if norm not in MEL_NORMS:
        raise ValueError(f"Expected norm in {MEL_NORMS}; found {norm!r}.")
    if std_floor <= 0:
        raise ValueError(f"Expected std_floor > 0; found {std_floor}.")
    if log_mel.dim() != 2:
        raise ValueError(f"Expected log_mel of shape (T, M); found {tuple(log_mel.shape)}.")
    if band_valid is not None and (
        band_valid.dtype != torch.bool or tuple(band_valid.shape) != (log_mel.shape[1],)
    ):
        raise ValueError(
            f"Expected band_valid bool of shape ({log_mel.shape[1]},); found "
            f"{band_valid.dtype} {tuple(band_valid.shape)}."
        )
    x = log_mel
    if norm == "bin":
        x = (x - x.mean(0, keepdim=True)) / (x.std(0, keepdim=True) + std_floor)
    elif norm == "utterance":
        sel = x if band_valid is None else x[:, band_valid]
        x = (x - sel.mean()) / (sel.std() + std_floor)
    if band_valid is not None:
        x = x.masked_fill(~band_valid.to(x.device)[None, :], 0.0)
    return x


def intervals_to_durations(
    intervals: Sequence[Any],
    *,
    num_frames: int,
    sample_rate: int,
    hop_length: int,
    min_frames: int = 0,
) -> Tensor:
    """Integer frame counts per interval that sum exactly to ``num_frames``.

    Frame ``t`` (centred on sample ``t * hop_length``) belongs to the last interval that starts
    at or before its centre: boundaries are ``ceil(start_i * sample_rate / hop_length)``, the
    first is forced to 0 (leading silence joins the first interval) and the end is
    ``num_frames`` (gaps after an interval - pauses - join it, as does trailing silence).
    Boundaries are then made non-decreasing, and with ``min_frames=k`` pushed apart so every
    interval gets at least ``k`` frames (what a monotonic aligner that visits every token needs).

    Args:
        intervals: time-ordered items with ``.start`` (seconds), e.g. synth phones
            (``Interval``) or ``(start, end, label)`` tuples.
        num_frames: frames of the matching spectrogram (``LogMelSpectrogram.num_frames``).
        sample_rate, hop_length: of that spectrogram.
        min_frames: lower bound per interval (0 or more).

    Returns:
        int64 ``(U,)`` with ``sum == num_frames``.

    Raises:
        ValueError: no intervals, starts not non-decreasing, or
            ``num_frames < U * min_frames``.
    """
    starts = [float(iv[0]) for iv in intervals]
    u = len(starts)
    if u == 0:
        raise ValueError("Expected at least one interval; found none.")
    if num_frames < u * min_frames or num_frames < 1:
        raise ValueError(
            f"Expected num_frames >= {max(1, u * min_frames)} for {u} intervals with "
            f"min_frames={min_frames}; found num_frames={num_frames}."
        )
    for i in range(1, u):
        if starts[i] < starts[i - 1]:
            raise ValueError(
                f"Expected interval starts in time order; interval {i} starts at {starts[i]} "
                f"before interval {i - 1} at {starts[i - 1]}."
            )
    frames_per_s = sample_rate / hop_length
    bounds = [0] + [min(num_frames, max(0, math.ceil(s * frames_per_s - 1e-9))) for s in starts[1:]]
    bounds.append(num_frames)
    # forward: non-decreasing with min gap; backward: leave room for the rest
    for i in range(1, u):
        bounds[i] = max(bounds[i], bounds[i - 1] + min_frames)
    for i in range(u - 1, 0, -1):
        bounds[i] = min(bounds[i], bounds[i + 1] - min_frames)
    b = torch.tensor(bounds, dtype=torch.int64)
    return b[1:] - b[:-1]
