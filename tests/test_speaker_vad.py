"""Energy VAD for speaker features: the loop reference, padding invariance, batched == per item,
the fallback, level invariance, and its wiring (config, checkpoints, embedding, CLI)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.reference.vad_reference import energy_vad_ref

from speechattn.data.collate import pad_sequence_batch
from speechattn.functional.vad import energy_vad, frame_log_energy
from speechattn.recipes.speaker.config import SpeakerConfig

SETTINGS = {"range_db": 30.0, "ref_quantile": 0.9, "context": 2, "proportion": 0.12}


def _utterance(gen: torch.Generator, n: int, m: int = 8) -> torch.Tensor:
    """Log-mel-like frames ``(n, m)``: loud 'speech' runs between quiet runs at random levels."""
    x = torch.randn(n, m, generator=gen, dtype=torch.float64)
    level = torch.zeros(n, dtype=torch.float64)
    t = 0
    while t < n:
        run = int(torch.randint(1, 15, (1,), generator=gen))
        quiet = bool(torch.rand(1, generator=gen) < 0.5)
        depth = float(torch.rand(1, generator=gen)) * 16.0 if quiet else 0.0
        level[t : t + run] = -depth
        t += run
    return x + level[:, None]


def _ref_keep(f: torch.Tensor, min_frames: int, **kw: float) -> list[bool]:
    return energy_vad_ref(f.tolist(), min_frames=min_frames, **{**SETTINGS, **kw})  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 4), min_frames=st.integers(1, 30))
def test_energy_vad_matches_the_loop_reference(seed: int, b: int, min_frames: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    items = [_utterance(gen, int(torch.randint(1, 80, (1,), generator=gen))) for _ in range(b)]
    x, lengths = pad_sequence_batch(items)
    out = energy_vad(x, lengths, min_frames=min_frames)
    for i, f in enumerate(items):
        keep = _ref_keep(f, min_frames)
        assert out.keep_valid_mask[i, : len(f)].tolist() == keep
        assert not out.keep_valid_mask[i, len(f) :].any()
        n = sum(keep)
        assert int(out.feats_lengths[i]) == n
        torch.testing.assert_close(out.feats[i, :n], f[torch.tensor(keep)], rtol=0, atol=0)
        assert (out.feats[i, n:] == 0).all()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), pad=st.integers(1, 20), fill=st.floats(-1e4, 1e4))
def test_padding_never_changes_the_output(seed: int, pad: int, fill: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    items = [_utterance(gen, n) for n in (60, 23, 41)]
    x, lengths = pad_sequence_batch(items)
    ref = energy_vad(x, lengths, min_frames=5)
    y = torch.cat([x, torch.full((3, pad, x.shape[2]), fill, dtype=x.dtype)], 1)
    y[1, 23:] = fill  # the short items' own padding too
    y[2, 41:] = -fill
    out = energy_vad(y, lengths, min_frames=5)
    assert torch.equal(out.feats, ref.feats) and torch.equal(out.feats_lengths, ref.feats_lengths)
    assert torch.equal(out.keep_valid_mask[:, : x.shape[1]], ref.keep_valid_mask)
    assert not out.keep_valid_mask[:, x.shape[1] :].any()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_batched_equals_per_item(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    items = [_utterance(gen, int(torch.randint(1, 90, (1,), generator=gen))) for _ in range(4)]
    x, lengths = pad_sequence_batch(items)
    out = energy_vad(x, lengths, min_frames=10)
    for i, f in enumerate(items):
        one = energy_vad(f[None], min_frames=10)
        n = int(one.feats_lengths[0])
        assert int(out.feats_lengths[i]) == n
        assert torch.equal(out.feats[i, :n], one.feats[0, :n])


def test_level_offset_changes_nothing() -> None:
    """A per-utterance constant (the gain normalisation, any recording level) keeps the frames."""
    gen = torch.Generator().manual_seed(3)
    f = _utterance(gen, 120)
    a = energy_vad(f[None], min_frames=5)
    b = energy_vad((f + 7.25)[None], min_frames=5)
    assert torch.equal(a.keep_valid_mask, b.keep_valid_mask)


def test_digital_silence_is_dropped_with_two_frames_of_context() -> None:
    """Hand-checked: 20 frames of floor, 60 of speech, 20 of floor -> speech plus 2 + 2."""
    floor, speech = math.log(1e-5), 0.0
    f = torch.full((100, 4), floor)
    f[20:80] = speech + 0.1 * torch.randn(60, 4, generator=torch.Generator().manual_seed(0))
    out = energy_vad(f[None], min_frames=10)
    keep = out.keep_valid_mask[0]
    assert keep[18:82].all() and not keep[:18].any() and not keep[82:].any()
    assert int(out.feats_lengths[0]) == 64
    # frames 30 dB under the speech level are kept, 31 dB under are not (context 0)
    g = torch.zeros(100, 4)
    g[:10] -= 29.9 / 10 * math.log(10)
    g[10:20] -= 30.1 / 10 * math.log(10)
    k = energy_vad(g[None], context=0, min_frames=1).keep_valid_mask[0]
    assert k[:10].all() and not k[10:20].any() and k[20:].all()


def test_too_few_speech_frames_keep_everything_and_never_nan() -> None:
    short = torch.randn(1, 30, 5)
    out = energy_vad(short)  # 30 < min_frames=50: everything kept
    assert int(out.feats_lengths[0]) == 30 and torch.equal(out.feats, short)
    flat = torch.full((2, 70, 5), math.log(1e-5))  # silence only: every frame equally loud
    out = energy_vad(flat, torch.tensor([70, 1]))
    assert out.feats_lengths.tolist() == [70, 1] and torch.isfinite(out.feats).all()
    burst = torch.full((1, 200, 5), math.log(1e-5))
    burst[0, 100:130] = 0.0  # 30 loud frames (+4 context) < 50: the whole clip is kept
    assert int(energy_vad(burst).feats_lengths[0]) == 200
    assert int(energy_vad(burst, min_frames=34).feats_lengths[0]) == 34
    # under 10 % loud frames the speech level (90th percentile) is the floor: all frames kept
    burst[0, 100:130] = math.log(1e-5)
    burst[0, 100:110] = 0.0
    assert int(energy_vad(burst, min_frames=1).feats_lengths[0]) == 200


def test_frame_log_energy_is_logsumexp_of_the_bins() -> None:
    f = torch.tensor([[0.0, math.log(3.0)], [math.log(0.5), math.log(0.5)]])
    torch.testing.assert_close(frame_log_energy(f), torch.tensor([math.log(4.0), 0.0]))
    assert frame_log_energy(f.half()).dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "err", "words"),
    [
        ({"feats": [[0.0]]}, TypeError, "torch.Tensor"),
        ({"feats": torch.zeros(3, 4)}, ValueError, "(B, T, M)"),
        ({"feats": torch.zeros(1, 3, 4, dtype=torch.long)}, TypeError, "floating"),
        ({"range_db": 0.0}, ValueError, "range_db"),
        ({"range_db": float("nan")}, ValueError, "range_db"),
        ({"ref_quantile": 1.5}, ValueError, "ref_quantile"),
        ({"context": -1}, ValueError, "context"),
        ({"proportion": 2.0}, ValueError, "proportion"),
        ({"min_frames": 0}, ValueError, "min_frames"),
        ({"feats_lengths": torch.tensor([0])}, ValueError, "feats_lengths"),
        ({"feats_lengths": torch.tensor([9])}, ValueError, "feats_lengths"),
    ],
)
def test_bad_input_is_named(kwargs: dict[str, object], err: type[Exception], words: str) -> None:
    args: dict[str, object] = {"feats": torch.zeros(1, 6, 4), **kwargs}
    feats = args.pop("feats")
    with pytest.raises(err, match=words.replace("(", r"\(").replace(")", r"\)")):
        energy_vad(feats, **args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# wiring


def test_config_field_roundtrip_and_old_checkpoints_load_without_vad() -> None:
    cfg = SpeakerConfig(vad=True, vad_range_db=20).validated()
    assert cfg.vad is True and cfg.vad_range_db == 20.0
    assert SpeakerConfig.from_dict(cfg.to_dict()) == cfg
    old = SpeakerConfig().to_dict()
    del old["vad"], old["vad_range_db"]
    assert SpeakerConfig.from_dict(old).vad is False
    with pytest.raises(ValueError, match="vad true or false"):
        SpeakerConfig(vad="yes").validated()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vad_range_db"):
        SpeakerConfig(vad_range_db=-3.0).validated()


def test_resolve_vad() -> None:
    from speechattn.recipes.speaker.evaluate import resolve_vad

    on, off = SpeakerConfig(vad=True), SpeakerConfig()
    assert resolve_vad("auto", on) and not resolve_vad("auto", off)
    assert resolve_vad("on", off) and not resolve_vad("off", on)
    assert resolve_vad(True, off) and not resolve_vad(False, on)
    with pytest.raises(ValueError, match="Expected vad in"):
        resolve_vad("maybe", off)


def _tiny_encoder() -> tuple[torch.nn.Module, SpeakerConfig]:
    from speechattn.recipes.speaker.model import build_encoder

    cfg = SpeakerConfig.quick()
    torch.manual_seed(0)
    return build_encoder(cfg, "ASTP").eval(), cfg


def test_embedding_with_vad_is_the_embedding_of_the_speech_frames() -> None:
    from speechattn.recipes.speaker.data import speech_frames
    from speechattn.recipes.speaker.evaluate import embed_features

    model, cfg = _tiny_encoder()
    gen = torch.Generator().manual_seed(1)
    feats = []
    for n in (150, 90, 200):
        f = torch.randn(n, cfg.n_mels, generator=gen)
        f[: n // 3] = math.log(1e-5)  # leading digital silence
        feats.append(f)
    with_vad = embed_features(model, feats, vad=True)
    cfg.vad = True
    trimmed = [speech_frames(f, cfg) for f in feats]
    assert [len(t) for t in trimmed] == [len(f) - len(f) // 3 + 2 for f in feats]
    torch.testing.assert_close(with_vad, embed_features(model, trimmed), rtol=0, atol=1e-5)
    assert not torch.allclose(with_vad, embed_features(model, feats), atol=1e-3)
    cfg.vad = False
    assert speech_frames(feats[0], cfg) is feats[0]


def test_training_with_vad_runs_and_is_saved(tmp_path: Path) -> None:
    from speechattn.recipes.speaker.model import load_checkpoint, save_encoder
    from speechattn.recipes.speaker.train import train_encoder

    cfg = SpeakerConfig.quick()
    cfg.steps, cfg.vad = 5, True
    gen = torch.Generator().manual_seed(2)
    feats, labels = [], []
    for k in range(8):
        f = torch.randn(160, cfg.n_mels, generator=gen) + k % 4
        f[:60] = math.log(1e-5)
        feats.append(f)
        labels.append(k % 4)
    res = train_encoder("ASTP", feats, labels, cfg, progress=False)
    assert all(math.isfinite(v) for v in res.losses)
    path = tmp_path / "enc.pt"
    save_encoder(res.model, "ASTP", cfg, path)
    _, loaded = load_checkpoint(path)
    assert loaded.vad is True and loaded.vad_range_db == 30.0


def test_cli_vad_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import soundfile as sf
    from tests.cli_run import run_cli
    from tests.speaker_toy import SR, toy_voice

    d = tmp_path / "audio"
    d.mkdir()
    for k in range(3):
        x = np.concatenate([np.zeros(SR // 2, np.float32), toy_voice(k)])  # leading silence
        sf.write(d / f"v{k}.wav", x, SR)
    outs = {}
    for mode in ("off", "on", "auto"):
        out = tmp_path / f"{mode}.npz"
        assert run_cli(["speaker", "embed", str(d), "--out", str(out), "--vad", mode]) == 0
        with np.load(out) as z:
            outs[mode] = z["embeddings"]
    np.testing.assert_array_equal(outs["auto"], outs["off"])  # the shipped asset: vad off
    assert not np.allclose(outs["on"], outs["off"], atol=1e-3)
    with pytest.raises(SystemExit) as exc:
        run_cli(["speaker", "embed", str(d), "--out", str(tmp_path / "x"), "--vad", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--vad" in err and "invalid choice" in err
