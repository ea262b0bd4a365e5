"""The speaker front end: ``feature_norm`` (``cmn`` / ``gain``), carried by checkpoints, and the
statistics baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speechattn.recipes.speaker import data as D
from speechattn.recipes.speaker.config import SpeakerConfig
from speechattn.recipes.speaker.evaluate import envelope_baseline, stats_baseline

SR = 16000


def _wave(seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    x = 0.3 * np.sin(2 * np.pi * 140 * t * (1 + 0.05 * np.sin(5 * t)))
    return torch.from_numpy((x + 0.02 * rng.normal(size=t.size)).astype(np.float32))


def _tilted(wave: torch.Tensor) -> torch.Tensor:
    """A fixed equaliser: first-order pre-emphasis (high bands up, low bands down)."""
    return torch.cat([wave[:1], wave[1:] - 0.9 * wave[:-1]])


@pytest.mark.parametrize("norm", ["cmn", "gain"])
def test_a_gain_changes_nothing(norm: str) -> None:
    ext = D.feature_extractor(SpeakerConfig(feature_norm=norm))
    w = _wave()
    torch.testing.assert_close(D.features(3.0 * w, ext), D.features(w, ext), atol=1e-3, rtol=0)


def test_gain_keeps_the_spectral_envelope_that_cmn_removes() -> None:
    w = _wave()
    band_means = {}
    for norm in ("cmn", "gain"):
        ext = D.feature_extractor(SpeakerConfig(feature_norm=norm))
        a, b = D.features(w, ext), D.features(_tilted(w), ext)
        band_means[norm] = (b.mean(0) - a.mean(0)).abs().max().item()
        # both normalisations agree once the band means are removed
        torch.testing.assert_close(
            D.normalise_features(a, "cmn"), D.features(w, D.feature_extractor(SpeakerConfig()))
        )
    assert band_means["cmn"] < 1e-4  # the equaliser is gone
    assert band_means["gain"] > 1.0  # a tilt of several nepers between the bands stays


def test_bare_extractor_still_means_cmn() -> None:
    from speechattn.data.features import LogMelSpectrogram

    bare = LogMelSpectrogram(sample_rate=SR, n_fft=512, win_length=400, hop_length=160, n_mels=40)
    ext = D.feature_extractor(SpeakerConfig())
    torch.testing.assert_close(D.features(_wave(), bare), D.features(_wave(), ext))


def test_feature_norm_is_validated() -> None:
    with pytest.raises(ValueError, match="feature_norm"):
        SpeakerConfig(feature_norm="mvn").validated()
    with pytest.raises(ValueError, match="feature_norm"):
        D.normalise_features(torch.zeros(3, 4), "mvn")


def test_cli_rejects_a_bad_feature_norm(capsys: pytest.CaptureFixture[str]) -> None:
    from speechattn.cli import main

    assert main(["speaker", "--quick", "--set", "feature_norm=mvn", "--out", "/nonexistent/x"]) == 2
    assert "feature_norm" in capsys.readouterr().err


def test_checkpoint_carries_the_front_end(tmp_path: Path) -> None:
    import soundfile as sf

    from speechattn.recipes.speaker import embed_directory, load_checkpoint, save_encoder
    from speechattn.recipes.speaker.evaluate import embed_features
    from speechattn.recipes.speaker.model import build_encoder

    cfg = SpeakerConfig.quick()
    cfg.feature_norm = "gain"
    torch.manual_seed(0)
    model = build_encoder(cfg, "TSTP").eval()
    ckpt = save_encoder(model, "TSTP", cfg, tmp_path / "gain.pt")
    loaded, cfg2 = load_checkpoint(ckpt)
    assert cfg2.feature_norm == "gain"
    audio = tmp_path / "audio"
    audio.mkdir()
    waves = [_wave(0), _tilted(_wave(1))]
    for i, w in enumerate(waves):
        sf.write(audio / f"w{i}.wav", w.numpy(), SR)
    res = embed_directory(audio, tmp_path / "e.npz", checkpoint=ckpt)
    gain = D.feature_extractor(cfg)
    # soundfile writes 16-bit PCM by default: compare through the same rounding
    feats = [D.features(torch.from_numpy(sf.read(audio / f"w{i}.wav")[0]), gain) for i in (0, 1)]
    expected = embed_features(loaded, feats).numpy()
    np.testing.assert_allclose(res.embeddings, expected, atol=1e-4)
    cmn = D.feature_extractor(SpeakerConfig.quick())
    wrong = embed_features(
        loaded, [D.features(torch.from_numpy(sf.read(audio / f"w{i}.wav")[0]), cmn) for i in (0, 1)]
    ).numpy()
    assert not np.allclose(res.embeddings, wrong, atol=1e-2)


def test_baselines_do_not_depend_on_the_front_end() -> None:
    waves = [_wave(0), _tilted(_wave(1)), _wave(2)]
    feats = {
        norm: [D.features(w, D.feature_extractor(SpeakerConfig(feature_norm=norm))) for w in waves]
        for norm in ("cmn", "gain")
    }
    torch.testing.assert_close(stats_baseline(feats["cmn"]), stats_baseline(feats["gain"]))
    env = envelope_baseline(feats["gain"])
    assert env.shape == (3, 80)
    torch.testing.assert_close(env.norm(dim=-1), torch.ones(3))
    # a gain on one utterance does not move its envelope statistics
    louder = [
        D.features(3.0 * w, D.feature_extractor(SpeakerConfig(feature_norm="gain"))) for w in waves
    ]
    torch.testing.assert_close(envelope_baseline(louder), env, atol=1e-3, rtol=0)
