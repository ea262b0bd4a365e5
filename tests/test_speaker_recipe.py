"""Speaker recipe: metrics against hand-checked cases, padding invariance, a --quick run, embed."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from speechattn.recipes.speaker import (
    POOLINGS,
    SpeakerConfig,
    SpeakerEncoder,
    compute_eer,
    compute_min_dcf,
    save_encoder,
)


def test_eer_hand_checked() -> None:
    # perfectly separated -> 0; perfectly inverted -> 1
    assert compute_eer([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 0.0
    assert compute_eer([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 1.0
    # one target below one non-target out of 2 each: EER = 0.5 at the crossing
    assert compute_eer([0.9, 0.3, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.5)
    # 4 targets, 4 non-targets, one swap -> miss 1/4 meets fa 1/4
    s = [0.9, 0.8, 0.7, 0.4, 0.6, 0.3, 0.2, 0.1]
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    assert compute_eer(s, y) == pytest.approx(0.25)


def test_min_dcf_hand_checked() -> None:
    assert compute_min_dcf([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 0.0
    # p_t = 0.5: cost of the best threshold with one swap among 2+2 -> 0.5 * 0.5 / 0.5 = 0.5
    assert compute_min_dcf([0.9, 0.3, 0.5, 0.1], [1, 1, 0, 0], p_target=0.5) == pytest.approx(0.5)
    # random scores give minDCF <= 1 (accept-all / reject-all bound)
    rng = np.random.default_rng(0)
    assert compute_min_dcf(rng.normal(size=200), rng.integers(0, 2, 200)) <= 1.0
    with pytest.raises(ValueError, match="target"):
        compute_eer([0.1, 0.2], [1, 1])


@pytest.mark.parametrize("trunk", ["tdnn", "ecapa"])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_encoder_padding_invariance(pooling: str, trunk: str) -> None:
    torch.manual_seed(0)
    m = SpeakerEncoder(n_mels=12, channels=16, embed_dim=8, pooling=pooling, trunk=trunk).eval()
    a, b = torch.randn(30, 12), torch.randn(17, 12)
    x = torch.randn(2, 30, 12) * 100  # garbage padding
    x[0], x[1, :17] = a, b
    with torch.no_grad():
        both = m(x, torch.tensor([30, 17]))
        alone = m(b.unsqueeze(0), torch.tensor([17]))
    torch.testing.assert_close(both[1:], alone, atol=1e-4, rtol=1e-4)


def test_encoder_rejects_wrong_features() -> None:
    m = SpeakerEncoder(n_mels=12, channels=16, embed_dim=8, pooling="TSTP")
    with pytest.raises(ValueError, match=r"feats \(B, T, n_mels=12\)"):
        m(torch.randn(2, 30, 10), torch.tensor([30, 20]))
    with pytest.raises(ValueError, match="trunk"):
        SpeakerEncoder(n_mels=12, channels=16, embed_dim=8, pooling="TSTP", trunk="lstm")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("matplotlib")
    from speechattn.cli import main

    out = tmp_path_factory.mktemp("speaker")
    ckpt = out / "ckpt.pt"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a fixed reduction order: the same losses on every run
    try:
        rc = main(
            [
                "speaker",
                "--quick",
                "--out-dir",  # the old spelling of --out still works
                str(out),
                "--no-progress",
                "--seed",
                "0",
                "--save-checkpoint",
                str(ckpt),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    return out


def test_quick_run_writes_report(quick_run: Path) -> None:
    res = json.loads((quick_run / "results.json").read_text())
    names = [r["pooling"] for r in res["rows"]]
    assert names[1:] == list(POOLINGS)
    assert not set(res["train_voices"]) & set(res["test_voices"])
    for r in res["rows"]:
        assert 0.0 <= r["eer"] <= 1.0 and np.isfinite(r["min_dcf"])
    k = 10
    for r in res["rows"][1:]:
        losses = np.asarray(r["losses"])
        assert len(losses) == SpeakerConfig.quick().steps and np.isfinite(losses).all()
        # every pooling trains: the loss of a fixed probe batch (eval mode, full margin) falls
        # by a clear margin, and the last k batch losses average below the first k
        assert r["probe_loss_end"] < 0.8 * r["probe_loss_start"], r["pooling"]
        assert losses[-k:].mean() < losses[:k].mean() - 0.05, r["pooling"]
    html = (quick_run / "report.html").read_text()
    assert "DET curve" in html and "data:image/png;base64," in html
    for name in POOLINGS:
        assert f"<td>{name}</td>" in html


def test_embed_directory_cli(
    quick_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import soundfile as sf

    from speechattn.cli import main

    audio = tmp_path / "audio"
    audio.mkdir()
    wavs = sorted((quick_run / "corpus" / "wavs").glob("*.wav"))[:3]
    for i, w in enumerate(wavs):
        data, sr = sf.read(w)
        # another sample rate and format: resampled on load
        sf.write(audio / f"utt{i}.flac", data, sr)
    sf.write(audio / "utt_8k.wav", sf.read(wavs[0])[0][::2], 8000)
    out = tmp_path / "emb.npz"
    argv = ["speaker", "embed", str(audio), "--out", str(out), "--no-progress"]
    assert main([*argv, "--checkpoint", str(quick_run / "ckpt.pt")]) == 0
    assert f"wrote 4 embeddings to {out}" in capsys.readouterr().out
    with np.load(out) as z:  # allow_pickle=False: plain arrays only
        assert sorted(z.files) == ["embeddings", "keys"]
        keys, emb = list(z["keys"]), z["embeddings"]
    assert keys == ["utt0.flac", "utt1.flac", "utt2.flac", "utt_8k.wav"]
    assert emb.shape == (4, SpeakerConfig.quick().embed_dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("trunk", ["tdnn", "ecapa"])
def test_checkpoint_round_trip(tmp_path: Path, trunk: str) -> None:
    from speechattn.recipes.speaker import load_checkpoint

    cfg = SpeakerConfig.quick()
    cfg.trunk = trunk
    m = SpeakerEncoder(
        n_mels=cfg.n_mels,
        channels=cfg.channels,
        embed_dim=cfg.embed_dim,
        pooling="ASTP",
        trunk=trunk,
    ).eval()
    p = save_encoder(m, "ASTP", cfg, tmp_path / "c.pt")
    m2, cfg2 = load_checkpoint(p)
    x = torch.randn(1, 50, cfg.n_mels)
    torch.testing.assert_close(
        m2(x, torch.tensor([50])), m(x, torch.tensor([50])), atol=1e-2, rtol=1e-2
    )
    assert cfg2 == cfg
    # derived training voices are recorded beside the config (plain strings: weights-only load)
    mix = "kokoro:jf_alpha*0.50+jf_nezumi*0.50"
    q = save_encoder(m, "ASTP", cfg, tmp_path / "d.pt", derived_voices=[mix])
    assert torch.load(q, weights_only=True)["derived_voices"] == [mix]
    assert torch.load(p, weights_only=True)["derived_voices"] == []
    assert load_checkpoint(q)[1] == cfg
    with pytest.raises(FileNotFoundError, match="speechattn speaker"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.slow
def test_torchrun_ddp_gloo(tmp_path: Path) -> None:
    """Two processes, gloo backend: trains and writes the report from rank 0."""
    import os
    import subprocess
    import sys

    pytest.importorskip("espeakng_loader")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "speechattn",
        "speaker",
        "--quick",
        "--poolings",
        "TSTP",
        "MQMHASTP",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["pooling"] for r in rows][1:] == ["TSTP", "MQMHASTP"]
    assert all(r["probe_loss_end"] < r["probe_loss_start"] for r in rows[1:])


def test_shipped_checkpoint_embeds(tmp_path: Path) -> None:
    """The default checkpoint in speechattn/assets loads (weights only) and embeds any-rate audio."""
    import soundfile as sf

    from speechattn.recipes.speaker import embed_directory, load_checkpoint

    model, cfg = load_checkpoint()
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 24000
    for i, f0 in enumerate((110.0, 220.0)):
        wave = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.1 * np.sin(3 * t))) + 0.01 * rng.normal(
            size=t.size
        )
        sf.write(tmp_path / f"tone{i}.wav", wave.astype(np.float32), 24000)
    res = embed_directory(tmp_path, tmp_path / "e.npz")
    assert res.keys == ["tone0.wav", "tone1.wav"] and res.path == tmp_path / "e.npz"
    assert res.embeddings.shape == (2, cfg.embed_dim) and np.isfinite(res.embeddings).all()
    np.testing.assert_allclose(np.linalg.norm(res.embeddings, axis=1), 1.0, atol=1e-4)


def test_shipped_checkpoint_matches_the_documented_rebuild() -> None:
    """The README rebuilds it with ``benchmarks/speaker_loeo.py --set steps=1000
    commercial_only=true feature_norm=gain augment_copies=6 seed=S --save-checkpoint ...`` for
    S = 0, 1, 2, then ``--merge-checkpoints``: a seed ensemble of three encoders, each with that
    benchmark's base config and those settings (ASTP pooling, TDNN trunk, commercial voices,
    level-only normalisation, 6 channel copies of every training utterance: the recipe that won
    the LOEO table's test-channel column over three training seeds)."""
    from speechattn.recipes.speaker import SpeakerEnsemble, load_checkpoint
    from speechattn.recipes.speaker.model import DEFAULT_CHECKPOINT

    model, cfg = load_checkpoint()
    assert isinstance(model, SpeakerEnsemble) and len(model.members) == 3
    raw = torch.load(DEFAULT_CHECKPOINT, map_location="cpu", weights_only=True)
    for seed, member_cfg in enumerate(raw["member_configs"]):
        expected = asdict(
            SpeakerConfig(
                steps=1000,
                speed_perturb=[0.9, 1.1],
                p_real_room=0.3,
                commercial_only=True,
                feature_norm="gain",
                augment_copies=6,
                p_resample=0.0,
                seed=seed,
            )
        )
        assert asdict(SpeakerConfig.from_dict(dict(member_cfg))) == expected
    assert asdict(cfg) == asdict(SpeakerConfig.from_dict(dict(raw["member_configs"][0])))
    assert model.pooling_name == "ASTP" and model.trunk_name == "tdnn"
    assert all(m.pooling_name == "ASTP" and m.trunk_name == "tdnn" for m in model.members)
    assert cfg.commercial_only  # a shipped model learns from commercial-licence voices only
