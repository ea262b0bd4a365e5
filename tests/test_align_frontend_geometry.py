"""The aligner's analysis window and hop: trainable settings, saved and reloaded with the aligner."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechattn.recipes.align.data import FeatureConfig
from speechattn.recipes.align.model import AlignerConfig, TextMelAligner
from speechattn.recipes.align.pipeline import (
    DemoConfig,
    demo_features,
    demo_record,
    load_aligner,
    save_aligner,
)

SR = 22050


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"hop_length": 0}, "hop_length"),
        ({"n_fft": -512}, "n_fft"),
        ({"n_fft": 512.0}, "n_fft"),
        ({"n_fft": 256, "hop_length": 512}, "hop_length <= n_fft"),
    ],
)
def test_feature_config_rejects_bad_geometry(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        FeatureConfig(**kwargs)


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_fft", 0), ("hop_length", 0), ("mel_kernel_size", 0), ("fs_weight", -0.5)],
)
def test_demo_config_rejects_bad_geometry(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        DemoConfig(**{field: value})
    with pytest.raises(ValueError, match="hop_length <= n_fft"):
        DemoConfig(n_fft=256, hop_length=512)


@pytest.mark.parametrize(("n_fft", "hop"), [(1024, 256), (512, 256), (512, 128)])
def test_click_reaches_exactly_the_frames_whose_window_covers_it(n_fft: int, hop: int) -> None:
    # Frame t is centred on sample t * hop and sees n_fft samples: a click at sample s changes
    # the frames with |t * hop - s| < n_fft / 2 and no other.
    cfg = FeatureConfig(n_fft=n_fft, hop_length=hop)
    n, s = SR // 2, 5000 + hop // 3
    quiet = torch.zeros(n)
    click = quiet.clone()
    click[s] = 1.0
    fe = cfg.mel_transform()
    diff = (fe(click[None])[0] - fe(quiet[None])[0]).abs().amax(-1)
    assert diff.shape[0] == 1 + n // hop
    t = torch.arange(diff.shape[0])
    # Hann window: the two outermost samples of the window have ~zero weight.
    covered = (t * hop - s).abs() < n_fft // 2 - 1
    assert bool((diff[covered] > 1e-3).all())
    assert float(diff[~covered].max()) < 1e-3
    assert int(covered.sum()) in (n_fft // hop, n_fft // hop - 1)
    assert cfg.frame_s == pytest.approx(hop / SR)


def test_demo_config_sets_the_front_end_and_the_mel_encoder() -> None:
    cfg = DemoConfig(n_fft=512, hop_length=128, mel_kernel_size=9, fs_weight=0.5, band_mask=True)
    feats = demo_features(cfg)
    assert (feats.n_fft, feats.hop_length, feats.band_mask) == (512, 128, True)
    assert demo_features(DemoConfig()) == FeatureConfig()
    # Runs with another geometry are other runs; default ones resume folders written before.
    rec = demo_record(cfg)
    assert (rec["n_fft"], rec["hop_length"], rec["mel_kernel_size"]) == (512, 128, 9)
    assert rec["fs_weight"] == 0.5
    new = {"n_fft", "hop_length", "mel_kernel_size", "fs_weight"}
    assert not new & set(demo_record(DemoConfig()))
    assert demo_record(dataclasses.replace(cfg, hop_length=256)) != rec


def _tiny_aligner(feats: FeatureConfig) -> tuple[TextMelAligner, dict]:
    from speechattn.recipes.align.data import new_symbol_table

    torch.manual_seed(0)
    model = TextMelAligner(AlignerConfig(num_symbols=64, n_mels=feats.n_mels, dim=16))
    return model.eval(), new_symbol_table()


def test_saved_aligner_loads_with_its_own_front_end(tmp_path: Path) -> None:
    feats = FeatureConfig(n_fft=512, hop_length=128, band_mask=True)
    model, symbols = _tiny_aligner(feats)
    save_aligner(tmp_path / "a.pt", model, symbols, feats, {"note": "geometry"})
    loaded, _, feats2, info = load_aligner(tmp_path / "a.pt")
    assert feats2 == feats and info == {"note": "geometry"}
    ref = model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())
    # A default front end still saves without the new values being special.
    save_aligner(tmp_path / "b.pt", model, symbols, FeatureConfig(), {})
    assert load_aligner(tmp_path / "b.pt")[2] == FeatureConfig()


@pytest.mark.parametrize(("n_fft", "hop"), [(512, 128), (1024, 256)])
def test_align_uses_the_checkpoints_hop(tmp_path: Path, n_fft: int, hop: int) -> None:
    pytest.importorskip("espeakng_loader")
    import soundfile as sf

    from speechattn.recipes.align.pipeline import run_align

    feats = FeatureConfig(n_fft=n_fft, hop_length=hop)
    model, symbols = _tiny_aligner(feats)
    ck = tmp_path / "aligner.pt"
    save_aligner(ck, model, symbols, feats, {})
    data = tmp_path / "data"
    data.mkdir()
    n = int(0.8 * SR)
    wave = 0.1 * np.random.default_rng(0).standard_normal(n).astype(np.float32)
    sf.write(data / "u1.wav", wave, SR)
    (data / "u1.txt").write_text("Hello world.")
    run_align(
        data,
        tmp_path / "out",
        checkpoint=ck,
        adapt=False,
        threads=1,
        progress=False,
        formats=("json",),
        log=lambda *a, **k: None,
    )
    (js,) = (tmp_path / "out").rglob("u1.json")
    payload = json.loads(js.read_text())
    assert payload["frame_seconds"] == pytest.approx(hop / SR)
    assert sum(payload["durations_frames"]) == 1 + n // hop
    assert payload["words"][-1]["end"] <= n / SR + hop / SR


def test_run_demo_trains_with_its_geometry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo's front end reaches the items and its encoder / loss settings the aligner's config
    # (training itself is stubbed out: the first aligner's settings are captured, then it stops).
    pytest.importorskip("espeakng_loader")
    import soundfile as sf

    import speechattn.recipes.align.pipeline as P
    from speechattn.recipes.align.outputs import prepare_output

    cfg = DemoConfig(
        utterances=4,
        speakers=1,
        held_out_voices=0,
        held_out_utterances=1,
        steps=1,
        kinds=("sma",),
        eval_every=0,
        threads=1,
        n_fft=512,
        hop_length=128,
        mel_kernel_size=9,
        fs_weight=0.5,
    )
    keep = ("threads", "max_seconds_per_aligner", "eval_every", "steps")
    record = {k: v for k, v in demo_record(cfg).items() if k not in keep}
    prepare_output(tmp_path, record, overwrite=False, extra_dirs=("corpus",))
    wavs = tmp_path / "corpus" / "wavs"
    wavs.mkdir(parents=True)
    rows = []
    for i in range(4):
        n = int((0.6 + 0.1 * i) * SR)
        wave = 0.1 * np.random.default_rng(i).standard_normal(n).astype(np.float32)
        sf.write(wavs / f"u{i}.wav", wave, SR)
        rows.append(
            {"id": f"u{i}", "path": f"wavs/u{i}.wav", "text": "Hello world.", "speaker": "s"}
        )
    (tmp_path / "corpus" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen: dict = {}

    class Stop(Exception):
        pass

    def fake_train(mcfg: AlignerConfig, train: list, *args: object, **kwargs: object) -> None:
        seen["config"], seen["items"] = mcfg, train
        raise Stop

    monkeypatch.setattr(P, "train_aligner", fake_train)
    with pytest.raises(Stop):
        P.run_demo(tmp_path, cfg, progress=False, log=lambda *a, **k: None)
    assert (seen["config"].kernel_size, seen["config"].fs_weight) == (9, 0.5)
    for it in seen["items"]:
        assert it.mel.shape[0] == 1 + it.num_samples // 128
