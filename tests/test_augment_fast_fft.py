"""``fast_fft``: the channel augmentation's filters and convolutions at 5-smooth FFT lengths.

Checked against float64 loop references: the 5-smooth length by brute force, the zero-phase filter
by direct frequency sampling (an explicit DFT on the fast length's bins), the convolutions by the
direct sum. Off by default: the default path is the old formula bit for bit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tests.bench_module import load_benchmark

from speechattn.data import augment as A
from speechattn.recipes.align.data import TrainingChannel
from speechattn.recipes.speaker.config import SpeakerConfig
from speechattn.recipes.speaker.data import channel_augment

SR = 16000


def _is_5_smooth(m: int) -> bool:
    for p in (2, 3, 5):
        while m % p == 0:
            m //= p
    return m == 1


def test_next_fast_length_is_the_smallest_5_smooth_at_least_n() -> None:
    for n in range(1, 3000):
        m = A.next_fast_length(n)
        ref = n
        while not _is_5_smooth(ref):  # brute force: the first 5-smooth integer from n up
            ref += 1
        assert m == ref, n
    assert A.next_fast_length(2 * 70001) == 140625  # 3**2 * 5**6; 2N = 2 * 70001 has 70001 prime
    assert A.next_fast_length(np.int64(17)) == 18
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(ValueError, match="positive int"):
            A.next_fast_length(bad)  # type: ignore[arg-type]


def _filter_loop_reference(
    x: np.ndarray, freq: np.ndarray, gain: np.ndarray, m: int
) -> list[float]:
    """Zero-phase filtering of ``x`` by ``gain`` sampled on the bins of an even length ``m``
    (bin k at k / (m / 2) of Nyquist), as an explicit float64 DFT / inverse DFT in loops."""
    n = len(x)
    half = m // 2
    g = [float(np.interp(k / half, freq, gain)) for k in range(half + 1)]
    spec = []
    for k in range(half + 1):
        re = sum(float(x[t]) * math.cos(2 * math.pi * k * t / m) for t in range(n))
        im = -sum(float(x[t]) * math.sin(2 * math.pi * k * t / m) for t in range(n))
        spec.append((re * g[k], im * g[k]))
    out = []
    for t in range(n):
        acc = spec[0][0] + spec[half][0] * (-1) ** t
        for k in range(1, half):
            ang = 2 * math.pi * k * t / m
            acc += 2 * (spec[k][0] * math.cos(ang) - spec[k][1] * math.sin(ang))
        out.append(acc / m)
    return out


@pytest.mark.parametrize("n", [7, 23, 61])
def test_fast_filter_is_the_zero_phase_filter_on_its_bins(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n)
    freq = np.linspace(0, 1, 9)
    gain = rng.uniform(0.1, 2.0, size=9)
    m = 2 * A.next_fast_length(n)
    assert m >= 2 * n and m % 2 == 0
    fast = A._fft_filter(x, freq, gain, fast_fft=True)
    assert fast.shape == (n,) and fast.dtype == np.float64
    np.testing.assert_allclose(fast, _filter_loop_reference(x, freq, gain, m), rtol=0, atol=1e-10)
    # the default keeps the old length 2N
    old = A._fft_filter(x, freq, gain)
    np.testing.assert_allclose(
        old, _filter_loop_reference(x, freq, gain, 2 * n), rtol=0, atol=1e-10
    )


def test_fast_filters_match_the_old_length_on_speech_lengths() -> None:
    """Same filter, another bin grid: the two outputs differ only by the aliasing of the (smooth
    512-knot) gain curve's impulse response beyond N samples, measured at <= 3e-6 of the signal's
    RMS on 40 pool utterances (RESULTS spkfft); 1e-4 leaves a 30x margin, while a wrong grid (an
    odd length or bins mapped off by one) moves the telephone band's edges by whole bins."""
    x = np.random.default_rng(0).standard_normal(SR + 3)  # 2N = 32006 = 2 * 16003 (prime)
    assert A.next_fast_length(SR + 3) != SR + 3

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        return float(np.sqrt(np.mean((a64 - b64) ** 2) / np.mean(a64**2)))

    tel_old = A.telephone_band(x, SR, low_hz=250.0, high_hz=3300.0)
    tel_new = A.telephone_band(x, SR, low_hz=250.0, high_hz=3300.0, fast_fft=True)
    eq_old = A.random_equalizer(x, SR, np.random.default_rng(5))
    eq_new = A.random_equalizer(x, SR, np.random.default_rng(5), fast_fft=True)
    for old, new in ((tel_old, tel_new), (eq_old, eq_new)):
        assert new.shape == old.shape == (SR + 3,)
        assert new.dtype == old.dtype == np.float32
        assert not np.array_equal(new, old)  # another length, so not bit for bit
        assert rel(old, new) < 1e-4


def _direct_convolution(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The linear convolution's first ``len(x)`` samples by the direct float64 sum, energy
    matched to ``x`` as the augmentation does."""
    n, k = len(x), len(h)
    y = [sum(float(x[t - s]) * float(h[s]) for s in range(min(k, t + 1))) for t in range(n)]
    y64 = np.array(y)
    return y64 * np.sqrt(np.mean(np.asarray(x, np.float64) ** 2) / np.mean(y64**2))


@pytest.mark.parametrize("fast", [False, True])
def test_convolutions_are_the_linear_convolution(fast: bool) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(97)  # 97 + 13 - 1 = 109, a prime: the fast length is 120
    h = rng.standard_normal(13) * np.exp(-np.arange(13) / 4)
    y = A.convolve_impulse_response(x, h, fast_fft=fast)
    assert y.shape == (97,) and y.dtype == np.float32
    np.testing.assert_allclose(y, _direct_convolution(x, h), rtol=1e-5, atol=1e-6)
    # reverberate: the same room response (same draws) through either length
    r_old = A.reverberate(x, SR, np.random.default_rng(4), rt60=0.003)
    r_new = A.reverberate(x, SR, np.random.default_rng(4), rt60=0.003, fast_fft=fast)
    assert r_new.shape == (97,) and r_new.dtype == np.float32
    np.testing.assert_allclose(r_new, r_old, rtol=1e-5, atol=1e-6)


def test_default_is_the_old_formula_bit_for_bit() -> None:
    x = np.random.default_rng(1).standard_normal(4001)
    freq = np.linspace(0, 1, 512)
    gain = np.linspace(1.0, 0.2, 512)
    spec = np.fft.rfft(x, n=2 * 4001)  # the pre-fast_fft code, verbatim
    old = np.fft.irfft(spec * np.interp(np.linspace(0, 1, spec.size), freq, gain), n=8002)[:4001]
    np.testing.assert_array_equal(A._fft_filter(x, freq, gain), old)
    assert A.ChannelAugment().fast_fft is False
    assert TrainingChannel().fast_fft is False
    assert SpeakerConfig().fast_fft is False
    assert SpeakerConfig.from_dict({"steps": 10}).fast_fft is False  # an older checkpoint's config
    aug = A.ChannelAugment(p_eq=1, p_reverb=1, p_telephone=1, p_mu_law=1, p_noise=1)
    a = aug(x, SR, np.random.default_rng(2))
    b = A.ChannelAugment(p_eq=1, p_reverb=1, p_telephone=1, p_mu_law=1, p_noise=1, fast_fft=False)(
        x, SR, np.random.default_rng(2)
    )
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("resample", [0.0, 1.0])
def test_fast_channel_draws_the_same_stream(resample: float) -> None:
    """The speaker recipe's channel with ``fast_fft``: the same random draws (the generator ends
    in the same state), the same length and dtype, and audio within the filters' tolerance."""
    x = np.random.default_rng(6).standard_normal(12007).astype(np.float32)
    outs, states = [], []
    for fast in (False, True):
        cfg = SpeakerConfig(
            p_eq=1.0, p_reverb=1.0, p_real_room=1.0, p_telephone=1.0, p_mu_law=0.0, p_noise=0.0,
            p_resample=resample, fast_fft=fast,
        )  # fmt: skip
        ch = channel_augment(cfg)
        assert getattr(ch, "fast_fft", None) is fast
        rng = np.random.default_rng(7)
        outs.append(ch(x, SR, rng))
        states.append(rng.bit_generator.state)
    assert states[0] == states[1]
    assert outs[1].shape == outs[0].shape == x.shape and outs[1].dtype == np.float32
    a, b = outs[0].astype(np.float64), outs[1].astype(np.float64)
    assert np.sqrt(np.mean((a - b) ** 2) / np.mean(a**2)) < 1e-4


def test_fast_fft_rejects_non_bools() -> None:
    x = np.ones(100)
    with pytest.raises(TypeError, match="fast_fft to be a bool; found str"):
        A.telephone_band(x, SR, fast_fft="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fast_fft to be a bool; found int"):
        A.ChannelAugment(fast_fft=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fast_fft true or false"):
        SpeakerConfig(fast_fft="on").validated()  # type: ignore[arg-type]


def test_bench_channel_fast_fft_reports_both_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark("bench_channel_fast_fft")
    rows = []
    for i, n in enumerate((8011, 12007)):
        sf.write(tmp_path / f"u{i}.wav", 0.1 * np.random.default_rng(i).standard_normal(n), SR)
        rows.append(json.dumps({"path": f"u{i}.wav"}))
    (tmp_path / "m.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "r.json"
    argv = [str(tmp_path / "m.jsonl"), "--copies", "2", "--repeats", "1", "--json", str(out)]
    argv += ["--feature-set"]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["files"] == 2 and len(res["cpu_s"]["fast"]) == 1
    assert 0 < res["rel_rms_diff_max"] < 1e-4  # another length, the same filters
    assert set(res["feature_set_cpu_s"]) == {"double", "fast"}
    assert "ratio" in capsys.readouterr().out
