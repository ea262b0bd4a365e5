"""Speaker recipe: channel-augmentation settings and formant pseudo-speakers in SpeakerConfig
(settable with ``--set``), and the commercial-licence filter for manifests of synthetic voices."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechattn._cli import CliError
from speechattn.recipes.speaker import data as D
from speechattn.recipes.speaker.cli import config_from_args
from speechattn.recipes.speaker.config import SpeakerConfig

SR = 16000


def _cfg(*items: str) -> SpeakerConfig:
    return config_from_args(argparse.Namespace(quick=True, set=list(items)))


def test_set_channel_and_formant_settings() -> None:
    cfg = _cfg("p_real_room=0.3", "p_noise=0", "formant_shift=0.9,1.15", "commercial_only=true")
    assert cfg.p_real_room == 0.3 and cfg.p_noise == 0.0 and cfg.commercial_only is True
    assert cfg.formant_shift == [0.9, 1.15]
    aug = D.channel_augment(cfg)
    assert (aug.p_real_room, aug.p_noise, aug.p_eq) == (0.3, 0.0, cfg.p_eq)
    # a config written before these fields existed loads with the defaults
    old = SpeakerConfig().to_dict()
    for key in ("p_real_room", "formant_shift", "commercial_only", "p_eq"):
        del old[key]
    back = SpeakerConfig.from_dict(old)
    assert back.p_real_room == 0.0 and back.formant_shift == [] and back.commercial_only is False


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("p_real_room=1.5", "p_real_room"),
        ("p_telephone=-0.1", "p_telephone"),
        ("formant_shift=1.0", "formant_shift"),
        ("formant_shift=2", "formant_shift"),
        ("commercial_only=maybe", "commercial_only"),
    ],
)
def test_bad_settings_are_usage_errors(item: str, words: str) -> None:
    with pytest.raises(CliError) as info:
        _cfg(item)
    assert info.value.status == 2 and words in str(info.value)


def _voiced(f0: float = 125.0, formants: tuple[float, ...] = (700.0, 1800.0)) -> np.ndarray:
    """One second of a pulse train at ``f0`` through two-pole resonators at ``formants``."""
    from scipy.signal import lfilter

    x = np.zeros(SR)
    x[:: int(SR / f0)] = 1.0
    for f in formants:
        r, th = np.exp(-np.pi * 100.0 / SR), 2 * np.pi * f / SR
        x = lfilter([1.0], [1.0, -2 * r * np.cos(th), r * r], x)
    return (x / np.abs(x).max()).astype(np.float32)


def _envelope_peak(y: np.ndarray, lo: float, hi: float) -> float:
    """Frequency of the spectral-envelope maximum in [lo, hi] (harmonic peaks, smoothed)."""
    from scipy.ndimage import maximum_filter1d, uniform_filter1d

    mag = np.log(np.abs(np.fft.rfft(y * np.hanning(len(y)))) + 1e-9)
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    env = uniform_filter1d(maximum_filter1d(mag, 125), 125)  # 1 Hz bins: one harmonic wide
    band = (freqs > lo) & (freqs < hi)
    return float(freqs[band][np.argmax(env[band])])


def _pitch(y: np.ndarray) -> float:
    seg = y[2000:6000]
    ac = np.correlate(seg, seg, "full")[len(seg) - 1 :]
    return SR / (int(np.argmax(ac[40:400])) + 40)


@pytest.mark.parametrize("factor", [0.8, 1.2])
def test_formant_shift_moves_formants_not_pitch(factor: float) -> None:
    x = _voiced()
    y = D.formant_shift(x, SR, factor)
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert _pitch(y) == pytest.approx(_pitch(x), rel=0.02)
    before = _envelope_peak(x, 1300.0, 2600.0)
    after = _envelope_peak(y, 1300.0, 2600.0)
    assert before == pytest.approx(1800.0, rel=0.06)
    assert after == pytest.approx(1800.0 * factor, rel=0.06)
    np.testing.assert_array_equal(D.formant_shift(x, SR, 1.0), x)


def _write(path: Path, f0: float) -> None:
    import soundfile as sf

    sf.write(path, _voiced(f0, (500.0 + f0, 1500.0 + 2 * f0)), SR)


def test_feature_set_uses_the_config_channel_and_formant_speakers(tmp_path: Path) -> None:
    utts = []
    for i, f0 in enumerate((110.0, 180.0)):
        _write(tmp_path / f"a{i}.wav", f0)
        utts.append(D.SpeakerUtterance(f"a{i}", tmp_path / f"a{i}.wav", f"s{i}"))
    off = _cfg("augment_copies=1", "p_eq=0", "p_reverb=0", "p_telephone=0", "p_noise=0")
    dry = D.load_feature_set(utts, off, train_labels={"s0"})
    # s0: original + its channel copy; s1 is not a training speaker
    assert dry.labels == ["s0", "s0", "s1"]
    torch.testing.assert_close(dry.feats[0], dry.feats[1])
    room = _cfg("augment_copies=1", "p_eq=0", "p_reverb=0", "p_telephone=0", "p_noise=0")
    room.p_real_room = 1.0
    wet = D.load_feature_set(utts, room, train_labels={"s0"})
    assert not torch.allclose(wet.feats[1], wet.feats[0], atol=1e-3)
    shifted = _cfg("augment_copies=0", "formant_shift=0.85,1.15")
    fs = D.load_feature_set(utts, shifted, train_labels={"s0", "s1"})
    want = [f"{s}{x}" for s in ("s0", "s1") for x in ("", "@formant0.85", "@formant1.15")]
    assert fs.labels == want
    assert [f.shape for f in fs.feats[:3]] == [fs.feats[0].shape] * 3
    assert not torch.allclose(fs.feats[1], fs.feats[0], atol=1e-2)


def test_commercial_filter_follows_the_registry() -> None:
    from speechattn.data.voices import list_voices

    reserved = next(v.key for v in list_voices(include_reserved=True) if v.reserved)
    keys = [
        "festival:ked_diphone",  # commercial
        "festival:us1_mbrola",  # MBROLA: non-commercial
        "rhvoice:Lyubov",  # non-commercial
        "espeak:en-us+f2",  # espeak variant, commercial
        "en-us+m3",  # a bare espeak voice name (espeak-only corpus): kept
        "nosuch:voice",  # unknown to the registry: not proven commercial
        reserved,  # evaluation-only
        None,  # the user's own recording
    ]
    utts = [
        D.SpeakerUtterance(f"u{i}", Path(f"u{i}.wav"), f"s{i}", None, k) for i, k in enumerate(keys)
    ]
    kept, dropped = D.commercial_filter(utts)
    assert [u.voice for u in kept] == ["festival:ked_diphone", "espeak:en-us+f2", "en-us+m3", None]
    assert dropped == sorted(["festival:us1_mbrola", "rhvoice:Lyubov", "nosuch:voice", reserved])


def test_train_commercial_only_on_a_multi_engine_manifest(tmp_path: Path) -> None:
    """A manifest as ``data synth --engines`` writes it (voice, person, engine): with
    ``commercial_only`` the MBROLA voice is neither trained on nor held out."""
    pytest.importorskip("matplotlib")
    from speechattn.recipes.speaker.train import run_speaker

    voices = [
        ("festival:ked_diphone", "ked", 110.0),
        ("festival:rab_diphone", "cstr-rab", 140.0),
        ("festival:don_diphone", "cstr-don", 170.0),
        ("rhvoice:Bdl", "cmu-bdl", 200.0),
        ("pico:en-US", "pico-en-us", 230.0),
        ("festival:us1_mbrola", "mbrola-us1", 260.0),
    ]
    lines = []
    for k, (voice, person, f0) in enumerate(voices):
        for j in range(3):
            name = f"v{k}_{j}.wav"
            _write(tmp_path / name, f0 + 7 * j)
            rec = {"id": name[:-4], "path": name, "speaker": person, "person": person}
            lines.append(json.dumps({**rec, "voice": voice, "engine": voice.split(":")[0]}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    cfg = _cfg("steps=3", "poolings=TAP", "augment_copies=0", "commercial_only=true")
    cfg.test_speakers, cfg.min_frames, cfg.max_frames = 2, 20, 60
    res = run_speaker(cfg, tmp_path / "run", corpus=tmp_path / "manifest.jsonl", progress=False)
    assert res["dropped_voices"] == ["festival:us1_mbrola"]
    assert "mbrola-us1" not in res["train_voices"] + res["test_voices"]
    assert len(res["train_voices"]) + len(res["test_voices"]) == 5


def test_test_speakers_zero_trains_on_every_speaker(tmp_path: Path) -> None:
    """``test_speakers=0`` without trials: every speaker trains, nothing is scored, and the
    checkpoint of the (only) pooling is saved."""
    pytest.importorskip("matplotlib")
    from speechattn.recipes.speaker import load_checkpoint
    from speechattn.recipes.speaker.train import run_speaker

    lines = []
    for k in range(3):
        for j in range(2):
            name = f"s{k}_{j}.wav"
            _write(tmp_path / name, 110.0 + 40 * k + 5 * j)
            lines.append(json.dumps({"path": name, "speaker": f"s{k}"}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    cfg = _cfg("steps=2", "poolings=TSTP", "augment_copies=0", "test_speakers=0")
    cfg.min_frames, cfg.max_frames = 20, 60
    ck = tmp_path / "enc.pt"
    res = run_speaker(
        cfg, tmp_path / "run", corpus=tmp_path / "m.jsonl", progress=False, save_checkpoint=ck
    )
    assert res["train_voices"] == ["s0", "s1", "s2"] and res["test_voices"] == []
    assert [r["pooling"] for r in res["rows"]] == ["TSTP"] and np.isnan(res["rows"][0]["eer"])
    _, saved = load_checkpoint(ck)
    assert saved.test_speakers == 0 and saved.poolings == ["TSTP"]


def test_an_unscored_pooling_says_so_instead_of_nan() -> None:
    """``test_speakers=0`` scores nothing: the summary line says so (it printed ``EER nan%``)."""
    from speechattn.recipes.speaker.cli import row_line

    line = row_line({"pooling": "ASTP", "eer": float("nan"), "min_dcf": float("nan")})
    assert "nan" not in line.lower() and "not scored" in line and "test_speakers=0" in line
    line = row_line({"pooling": "ASTP", "eer": 0.125, "min_dcf": 0.5})
    assert line.split() == ["ASTP", "EER", "12.50%", "minDCF", "0.500"]
