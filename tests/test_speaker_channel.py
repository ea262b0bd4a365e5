"""Speaker recipe: the training channel with lower sample rates (``p_resample``,
``resample_rates``), its settings and what it does to a training copy."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from speechattn._cli import CliError
from speechattn.data.augment import ChannelAugment
from speechattn.recipes.speaker import data as D
from speechattn.recipes.speaker.cli import config_from_args
from speechattn.recipes.speaker.config import SpeakerConfig

SR = 16000
QUIET = ("p_eq=0", "p_reverb=0", "p_telephone=0", "p_noise=0")


def _cfg(*items: str) -> SpeakerConfig:
    return config_from_args(argparse.Namespace(quick=True, set=list(items)))


def _noise_wav(path: Path, seed: int) -> np.ndarray:
    import soundfile as sf

    x = 0.1 * np.random.default_rng(seed).standard_normal(SR).astype(np.float32)
    sf.write(path, x, SR)
    return x


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freq = np.fft.rfftfreq(x.size, 1 / SR)
    return float(spec[(freq >= lo) & (freq < hi)].sum())


def test_default_channel_is_unchanged_without_resampling() -> None:
    cfg = _cfg()
    assert cfg.p_resample == 0.0 and cfg.resample_rates == [8000, 11025]
    aug = D.channel_augment(cfg)
    assert isinstance(aug, ChannelAugment)
    # the same channel (and random stream) as the plain ChannelAugment of these settings
    x = 0.1 * np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    plain = ChannelAugment(p_eq=cfg.p_eq, p_reverb=cfg.p_reverb, p_real_room=cfg.p_real_room)
    np.testing.assert_array_equal(
        aug(x, SR, np.random.default_rng(3)), plain(x, SR, np.random.default_rng(3))
    )


def test_training_channel_draws_from_every_room_with_or_without_resampling() -> None:
    # the aligner's TrainingChannel defaults to its training rooms; the speaker recipe's channel
    # keeps all packaged rooms on both paths, as its feature caches and LOEO tables assume
    assert D.channel_augment(_cfg()).real_rooms == "all"
    assert D.channel_augment(_cfg("p_resample=0.5")).real_rooms == "all"


@pytest.mark.parametrize(("rate", "edge"), [(8000, 4000.0), (11025, 5512.5)])
def test_resampling_band_limits_the_copy(rate: int, edge: float) -> None:
    x = 0.1 * np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    cfg = _cfg(*QUIET, "p_resample=1", f"resample_rates={rate}")
    channel = D.channel_augment(cfg)
    y = channel(x, SR, np.random.default_rng(0))
    assert y.shape == x.shape
    # energy above the lower rate's Nyquist frequency is gone, the band below it is kept
    above = _band_energy(y, edge + 300, SR / 2) / _band_energy(x, edge + 300, SR / 2)
    below = _band_energy(y, 200, edge - 500) / _band_energy(x, 200, edge - 500)
    assert above < 1e-3, above
    assert 0.8 < below < 1.2, below
    # with p_resample=0 (and the other effects off) the copy is the input
    same = D.channel_augment(_cfg(*QUIET))(x, SR, np.random.default_rng(0))
    np.testing.assert_allclose(same, x, atol=1e-6)


def test_feature_set_copies_through_lower_rates(tmp_path: Path) -> None:
    utts = []
    for i in range(2):
        _noise_wav(tmp_path / f"a{i}.wav", i)
        utts.append(D.SpeakerUtterance(f"a{i}", tmp_path / f"a{i}.wav", f"s{i}"))
    cfg = _cfg(*QUIET, "augment_copies=2", "p_resample=1", "resample_rates=8000", "n_mels=40")
    cfg.feature_norm = "gain"
    fs = D.load_feature_set(utts, cfg, train_labels={"s0"})
    assert fs.labels == ["s0", "s0", "s0", "s1"]
    clean, copy = fs.feats[0], fs.feats[1]
    assert copy.shape == clean.shape
    # the top mel bands (above 4 kHz) lose most of their energy in the copies; the low ones
    # keep their shape (they move together: the level normalisation shifts them all)
    drop = clean - copy
    low = drop[:, :10]
    assert float(drop[:, -8:].mean() - low.mean()) > 3.0
    assert float((low - low.mean()).abs().mean()) < 0.5


@pytest.mark.parametrize(
    ("items", "words"),
    [
        (("p_resample=1.5",), "p_resample"),
        (("resample_rates=16000",), "resample_rates"),
        (("resample_rates=2000",), "resample_rates"),
    ],
)
def test_bad_resample_settings_are_usage_errors(items: tuple[str, ...], words: str) -> None:
    with pytest.raises(CliError) as info:
        _cfg(*items)
    assert info.value.status == 2 and words in str(info.value)


def test_resample_settings_round_trip_and_old_configs_load() -> None:
    cfg = _cfg("p_resample=0.5", "resample_rates=8000,12000")
    back = SpeakerConfig.from_dict(cfg.to_dict())
    assert back.p_resample == 0.5 and back.resample_rates == [8000, 12000]
    old = SpeakerConfig().to_dict()
    del old["p_resample"], old["resample_rates"]
    assert SpeakerConfig.from_dict(old).p_resample == 0.0
    with pytest.raises(ValueError, match="resample_rates"):
        SpeakerConfig(p_resample=0.5, resample_rates=[]).validated()
    with pytest.raises(ValueError, match="resample_rates"):
        SpeakerConfig(resample_rates=[8000.5]).validated()  # type: ignore[list-item]


def test_feature_copies_are_seeded(tmp_path: Path) -> None:
    _noise_wav(tmp_path / "a.wav", 0)
    utts = [D.SpeakerUtterance("a", tmp_path / "a.wav", "s")]
    cfg = _cfg("augment_copies=2", "p_resample=0.5")
    a = D.load_feature_set(utts, cfg, train_labels={"s"})
    b = D.load_feature_set(utts, cfg, train_labels={"s"})
    for x, y in zip(a.feats, b.feats):
        torch.testing.assert_close(x, y)
    cfg.seed = 1
    c = D.load_feature_set(utts, cfg, train_labels={"s"})
    assert not torch.allclose(a.feats[1], c.feats[1], atol=1e-3)
