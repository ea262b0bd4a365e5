"""Log-mel vs a numpy reference from librosa's formulas; interval -> frame durations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.mel_reference import log_mel, mel_filterbank
from speechattn.data.features import LogMelSpectrogram, intervals_to_durations
from speechattn.data.features import mel_filterbank as torch_filterbank

# Tolerances: float64 path vs the float64 reference: 1e-8 absolute on log-mel (same math,
# different FFT). float32 path: 2e-3 absolute on log-mel for bins above the 1e-5 floor.


@pytest.mark.parametrize(
    ("sr", "n_fft", "win", "hop", "n_mels", "fmin", "fmax"),
    [(22050, 1024, 1024, 256, 80, 0.0, None), (16000, 512, 400, 160, 40, 20.0, 7600.0)],
)
def test_filterbank_matches_reference(sr, n_fft, win, hop, n_mels, fmin, fmax) -> None:
    ref = mel_filterbank(sr, n_fft, n_mels, fmin, fmax if fmax else sr / 2)
    got = torch_filterbank(sample_rate=sr, n_fft=n_fft, n_mels=n_mels, f_min=fmin, f_max=fmax)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("sr", "n_fft", "win", "hop", "n_mels", "fmin", "fmax", "power"),
    [
        (22050, 1024, 1024, 256, 80, 0.0, None, 1.0),
        (16000, 512, 400, 160, 40, 20.0, 7600.0, 2.0),
    ],
)
def test_log_mel_matches_reference(sr, n_fft, win, hop, n_mels, fmin, fmax, power) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(int(0.3 * sr)) / sr
    wav = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))
    ref = log_mel(
        wav,
        sr=sr,
        n_fft=n_fft,
        win_length=win,
        hop=hop,
        n_mels=n_mels,
        f_min=fmin,
        f_max=fmax,
        power=power,
    )
    fe = LogMelSpectrogram(
        sample_rate=sr,
        n_fft=n_fft,
        win_length=win,
        hop_length=hop,
        n_mels=n_mels,
        f_min=fmin,
        f_max=fmax,
        power=power,
    )
    got64 = fe(torch.from_numpy(wav))
    assert got64.dtype == torch.float64 and got64.shape == ref.shape
    assert got64.shape[0] == fe.num_frames(len(wav))
    np.testing.assert_allclose(got64.numpy(), ref, atol=1e-8)
    got32 = fe(torch.from_numpy(wav).float())
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), ref, atol=2e-3)


@pytest.mark.slow  # librosa's first call JIT-compiles with numba (~10 s); run with -m slow
def test_librosa_agrees_when_installed() -> None:
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(1)
    wav = rng.standard_normal(8000).astype(np.float32) * 0.1
    ref = librosa.feature.melspectrogram(
        y=wav, sr=22050, n_fft=1024, hop_length=256, win_length=1024, n_mels=80, power=1.0,
        center=True, pad_mode="constant", htk=False, norm="slaney",
    )  # fmt: skip
    got = LogMelSpectrogram()(torch.from_numpy(wav))
    np.testing.assert_allclose(got.numpy(), np.log(np.maximum(ref, 1e-5)).T, atol=2e-3)


def test_batch_equals_single_and_grad() -> None:
    fe = LogMelSpectrogram(n_fft=256, win_length=256, hop_length=64, n_mels=20)
    x = torch.randn(3, 2000) * 0.1
    batch = fe(x)
    assert batch.shape == (3, fe.num_frames(2000), 20)
    for i in range(3):
        torch.testing.assert_close(batch[i], fe(x[i]))
    xg = x[:1].clone().requires_grad_(True)
    fe(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_feature_errors() -> None:
    fe = LogMelSpectrogram()
    with pytest.raises(TypeError, match="floating"):
        fe(torch.zeros(4000, dtype=torch.int16))
    with pytest.raises(ValueError, match="at least"):
        fe(torch.zeros(10))
    with pytest.raises(ValueError, match="shape"):
        fe(torch.zeros(1, 1, 4000))
    with pytest.raises(ValueError, match="win_length"):
        LogMelSpectrogram(n_fft=256, win_length=512)
    with pytest.raises(ValueError, match="f_max"):
        LogMelSpectrogram(sample_rate=16000, f_max=9000.0)


def test_durations_simple_case() -> None:
    # hop 100 at 1000 Hz: frame t centred at t / 10 s; 11 frames for 1 s
    ivs = [(0.05, 0.3, "a"), (0.3, 0.6, "b"), (0.7, 0.95, "c")]
    d = intervals_to_durations(ivs, num_frames=11, sample_rate=1000, hop_length=100)
    # boundaries: 0, ceil(3.0)=3, ceil(7.0)=7, 11
    assert d.tolist() == [3, 4, 4]
    assert d.dtype == torch.int64


@settings(max_examples=60, deadline=None)
@given(
    starts=st.lists(st.floats(0.0, 3.0, allow_nan=False), min_size=1, max_size=30),
    num_frames=st.integers(1, 400),
    min_frames=st.integers(0, 2),
)
def test_durations_sum_to_frames(starts, num_frames, min_frames) -> None:
    starts = sorted(starts)
    ivs = [(s, s + 0.01, "x") for s in starts]
    if num_frames < len(ivs) * min_frames:
        with pytest.raises(ValueError, match="num_frames"):
            intervals_to_durations(
                ivs, num_frames=num_frames, sample_rate=22050, hop_length=256, min_frames=min_frames
            )
        return
    d = intervals_to_durations(
        ivs, num_frames=num_frames, sample_rate=22050, hop_length=256, min_frames=min_frames
    )
    assert d.shape == (len(ivs),)
    assert int(d.sum()) == num_frames
    assert (d >= min_frames).all()


def test_durations_match_synth_audio() -> None:
    pytest.importorskip("espeakng_loader")
    from speechattn.data.synth import synthesize

    res = synthesize("The careful teacher opened the window.", voice="en-us")
    fe = LogMelSpectrogram()
    mel = fe(torch.from_numpy(res.waveform))
    d = intervals_to_durations(
        res.phones, num_frames=mel.shape[0], sample_rate=22050, hop_length=256, min_frames=1
    )
    assert int(d.sum()) == mel.shape[0] and (d >= 1).all()
    # interior phone boundaries land within one frame of the true times
    bounds = torch.cumsum(d, 0)[:-1].tolist()
    for b, ph in zip(bounds, res.phones[1:]):
        assert abs(b - ph.start * 22050 / 256) <= 1.0 + 1e-9 or not math.isfinite(ph.start)


def test_durations_errors() -> None:
    with pytest.raises(ValueError, match="at least one"):
        intervals_to_durations([], num_frames=3, sample_rate=100, hop_length=1)
    with pytest.raises(ValueError, match="time order"):
        intervals_to_durations(
            [(0.5, 0.6, "a"), (0.1, 0.2, "b")], num_frames=100, sample_rate=100, hop_length=1
        )
