"""The aligner's channel-robust front end: normalisation, band masking, training channels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speechattn.data.audio import resample
from speechattn.data.features import (
    LogMelSpectrogram,
    band_valid_mask,
    mel_center_frequencies,
    normalize_log_mel,
)
from speechattn.recipes.align.data import (
    FeatureConfig,
    TrainingChannel,
    demo_engine_options,
    utterance_features,
)

SR = 22050


def _noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(SR * seconds))).astype(np.float32)


def _band_limited(seconds: float, seed: int, rate: int) -> np.ndarray:
    """Full-band noise through ``rate`` and back to 22.05 kHz (as a resampled recording)."""
    low = resample(_noise(seconds, seed), SR, rate)
    return np.asarray(resample(low, rate, SR), dtype=np.float32)


def test_default_front_end_is_the_old_one_bit_for_bit() -> None:
    # The formula every aligner saved so far was trained and is applied with.
    wave = torch.from_numpy(_noise(1.0, 0))
    cfg = FeatureConfig()
    fe = LogMelSpectrogram(sample_rate=SR, n_fft=1024, win_length=1024, hop_length=256, n_mels=80)
    mel = fe(wave[None])[0]
    old = (mel - mel.mean(0, keepdim=True)) / (mel.std(0, keepdim=True) + 1e-3)
    assert torch.equal(utterance_features(wave, cfg), old)


def test_saved_configs_without_the_new_fields_load_with_the_old_behaviour() -> None:
    old_saved = {
        "sample_rate": 22050,
        "hop_length": 256,
        "n_fft": 1024,
        "n_mels": 80,
        "word_silences": False,
        "strip_stress": True,
    }
    cfg = FeatureConfig(**old_saved)
    assert (cfg.mel_norm, cfg.std_floor, cfg.band_mask) == ("bin", 1e-3, False)
    # ...and a default front end is saved exactly as before (older code reads it).
    assert cfg.to_dict() == old_saved
    masked = FeatureConfig(band_mask=True, band_mask_db=70.0)
    assert masked.to_dict()["band_mask"] is True and masked.to_dict()["mel_norm"] == "bin"
    assert FeatureConfig(**masked.to_dict()) == masked


def test_shipped_aligner_front_end() -> None:
    """The shipped aligner's saved front end computes what it says: per-bin normalised log-mels,
    and with its band mask, full-band audio untouched and the empty band of telephone audio zero."""
    from speechattn.recipes.align.pipeline import DEFAULT_ASSET, load_aligner

    if not DEFAULT_ASSET.exists():
        pytest.skip("no shipped aligner")
    _, _, feats, _ = load_aligner()
    assert feats.mel_norm == "bin"
    fe = LogMelSpectrogram(
        sample_rate=feats.sample_rate,
        n_fft=feats.n_fft,
        win_length=feats.n_fft,
        hop_length=feats.hop_length,
        n_mels=feats.n_mels,
    )
    wave = torch.from_numpy(_noise(0.5, 3))
    mel = fe(wave[None])[0]
    old = (mel - mel.mean(0, keepdim=True)) / (mel.std(0, keepdim=True) + feats.std_floor)
    torch.testing.assert_close(utterance_features(wave, feats), old, rtol=0, atol=1e-5)
    if not feats.band_mask:
        assert torch.equal(utterance_features(wave, feats), old)
        return
    tel = torch.from_numpy(_band_limited(1.0, 4, 8000))
    got = utterance_features(tel, feats, native_sample_rate=8000)
    centres = torch.as_tensor(mel_center_frequencies(sample_rate=feats.sample_rate, n_mels=80))
    assert got.shape[1] == feats.n_mels == 80
    assert (got[:, centres > 4000] == 0).all(), "a bin above the telephone band was kept"
    assert got[:, centres < 3500].std(0).gt(0.5).all(), "a bin inside the band was masked"


@pytest.mark.parametrize("rate", [8000, 16000])
def test_band_mask_finds_the_band_of_resampled_audio(rate: int) -> None:
    fe = LogMelSpectrogram()
    centres = mel_center_frequencies(sample_rate=SR, n_mels=80)
    mel = fe(torch.from_numpy(_band_limited(1.0, 1, rate)))
    keep = band_valid_mask(mel, sample_rate=SR, drop_db=80.0)
    nyq = rate / 2
    assert keep[centres < 0.9 * nyq].all(), "a bin inside the band was masked"
    assert not keep[centres > 1.02 * nyq].any(), "a bin above the band was kept"
    # The same audio at full band keeps every bin.
    full = band_valid_mask(fe(torch.from_numpy(_noise(1.0, 1))), sample_rate=SR, drop_db=80.0)
    assert full.all()


def test_band_mask_uses_the_native_rate() -> None:
    fe = LogMelSpectrogram()
    centres = mel_center_frequencies(sample_rate=SR, n_mels=80)
    mel = fe(torch.from_numpy(_noise(0.5, 2)))
    keep = band_valid_mask(mel, sample_rate=SR, native_sample_rate=16000)
    assert torch.equal(keep, centres <= 8000.0)


def test_band_mask_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="log_mel of shape"):
        band_valid_mask(torch.zeros(80), sample_rate=SR)
    with pytest.raises(ValueError, match="quantile"):
        band_valid_mask(torch.zeros(3, 80), sample_rate=SR, quantile=0.0)
    with pytest.raises(ValueError, match="drop_db"):
        band_valid_mask(torch.zeros(3, 80), sample_rate=SR, drop_db=-1.0)


def test_masked_bins_are_zero_instead_of_amplified_noise() -> None:
    wave = torch.from_numpy(_band_limited(1.0, 4, 8000))
    plain = utterance_features(wave, FeatureConfig())
    masked = utterance_features(wave, FeatureConfig(band_mask=True, band_mask_db=80.0))
    centres = mel_center_frequencies(sample_rate=SR, n_mels=80)
    top = centres > 4200.0
    # Per-bin normalisation blows the empty band's residue up to unit variance...
    assert float(plain[:, top].std()) > 0.5
    # ...the mask sets it to the normalised mean, and the band below is untouched.
    assert float(masked[:, top].abs().max()) == 0.0
    low = centres < 3500.0
    assert torch.allclose(masked[:, low], plain[:, low])


def test_utterance_norm_statistics_and_errors() -> None:
    x = torch.randn(50, 8, dtype=torch.float64) * 3 + 5
    keep = torch.tensor([True] * 6 + [False] * 2)
    y = normalize_log_mel(x, norm="utterance", std_floor=1e-9, band_valid=keep)
    assert abs(float(y[:, keep].mean())) < 1e-9
    assert abs(float(y[:, keep].std()) - 1.0) < 1e-6
    assert float(y[:, ~keep].abs().max()) == 0.0
    assert torch.equal(normalize_log_mel(x, norm="none"), x)
    with pytest.raises(ValueError, match="norm in"):
        normalize_log_mel(x, norm="global")
    with pytest.raises(ValueError, match="band_valid bool of shape"):
        normalize_log_mel(x, band_valid=torch.ones(7, dtype=torch.bool))
    with pytest.raises(ValueError, match="mel_norm"):
        FeatureConfig(mel_norm="cmvn")


def test_training_channel_is_reproducible_and_band_limits() -> None:
    x = _noise(1.0, 5)
    ch = TrainingChannel()
    a = ch(x, SR, np.random.default_rng(7))
    b = ch(x, SR, np.random.default_rng(7))
    assert np.array_equal(a, b) and a.shape == x.shape and np.isfinite(a).all()
    phone = TrainingChannel(
        p_resample=1.0, rates=(8000,), p_noise=0.0, p_reverb=0.0, p_real_room=0.0
    )
    y = phone(x, SR, np.random.default_rng(0))
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(y.size, 1 / SR)
    assert spec[f > 4500].sum() < 1e-4 * spec[f < 3500].sum()  # 40 dB down


def test_build_items_with_a_channel(tmp_path: Path) -> None:
    pytest.importorskip("espeakng_loader")
    import soundfile as sf

    from speechattn.data.corpus import Utterance
    from speechattn.recipes.align.data import build_items, new_symbol_table

    wav = tmp_path / "a.wav"
    sf.write(wav, _noise(1.0, 6), SR)
    utts = [Utterance("u1", wav, "Hello world.", "s", None, None)]
    symbols = new_symbol_table()
    cfg = FeatureConfig(band_mask=True)
    clean = build_items(utts, symbols, cfg, grow_symbols=True)
    ch = TrainingChannel(p_resample=1.0, rates=(8000,))
    aug = build_items(utts, symbols, cfg, channel=ch, channel_seed=3, id_suffix="~aug")
    again = build_items(utts, symbols, cfg, channel=ch, channel_seed=3, id_suffix="~aug")
    assert [it.id for it in aug] == ["u1~aug"]
    assert torch.equal(aug[0].tokens, clean[0].tokens)
    assert aug[0].mel.shape == clean[0].mel.shape
    assert not torch.equal(aug[0].mel, clean[0].mel)
    assert torch.equal(aug[0].mel, again[0].mel)
    centres = mel_center_frequencies(sample_rate=SR, n_mels=80)
    assert float(aug[0].mel[:, centres > 4200.0].abs().max()) == 0.0


def test_demo_engine_options() -> None:
    assert demo_engine_options(("espeak",)) == {}  # the default demo's corpus, unchanged
    opts = demo_engine_options(("espeak", "festival"), commercial_only=True)
    assert opts == {
        "engines": ["espeak", "festival"],
        "commercial_only": True,
        "include_reserved": False,
    }
    with pytest.raises(ValueError, match="distinct engines"):
        demo_engine_options(("espeak", "espeak"))
    with pytest.raises(ValueError, match="distinct engines"):
        demo_engine_options(("nope",))


def test_commercial_only_voices_leave_out_non_commercial_ones() -> None:
    from speechattn.data.engines import EngineUnavailable
    from speechattn.data.synth import pick_voices
    from speechattn.data.voices import get_voice, list_voices

    if not list_voices(engines=["festival"], installed_only=True):
        pytest.skip("festival voices not installed")
    try:
        every = pick_voices(
            ["festival"], len(list_voices(engines=["festival"], installed_only=True))
        )
    except EngineUnavailable:
        pytest.skip("festival not installed")
    n = len(list_voices(engines=["festival"], installed_only=True, commercial_only=True))
    if n == 0:
        pytest.skip("no commercial festival voice installed")
    chosen = pick_voices(["festival"], n, commercial_only=True)
    assert all(get_voice(k).commercial for k in chosen)
    assert set(chosen) <= set(every)


def test_demo_cli_rejects_unknown_engines(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "speechattn", "demo", "--engines", "espeak,nope"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert "--engines" in r.stderr and "nope" in r.stderr


def test_demo_record_of_a_default_run_is_unchanged() -> None:
    # Folders written by default demo runs before the corpus options existed still resume.
    import dataclasses

    from speechattn.recipes.align.pipeline import DemoConfig, demo_record

    cfg = DemoConfig()
    new = {"engines", "commercial_only", "augment", "mel_norm", "band_mask", "train_seed"}
    new |= {"n_fft", "hop_length", "mel_kernel_size", "fs_weight"}
    new |= {"warmup", "batching", "word_silences", "prior_warmup", "symbol_order", "emission"}
    old = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in new}
    assert demo_record(cfg) == old
    multi = dataclasses.replace(cfg, engines=("espeak", "festival"), band_mask=True)
    rec = demo_record(multi)
    assert rec["engines"] == ("espeak", "festival") and rec["band_mask"] is True
    # Another training seed on the same corpus is another run (recorded), the corpus seed unchanged.
    reseeded = demo_record(dataclasses.replace(multi, train_seed=1))
    assert reseeded["train_seed"] == 1 and reseeded["seed"] == cfg.seed
