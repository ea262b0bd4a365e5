"""audio2clip recipe: length matcher, encoder wrapper load/save, metrics, train/eval/generate CLI."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechattn.cli import main
from speechattn.recipes.audio2clip import (
    AudioToTextEncoder,
    LengthMatcher,
    retrieval_metrics,
    sequence_similarity,
)
from speechattn.recipes.audio2clip.data import read_manifest
from speechattn.recipes.audio2clip.text import TextEncoder
from speechattn.recipes.audio2clip.tiny import (
    tiny_clip_text_encoder,
    tiny_sd_pipeline,
    tiny_w2v_bert,
)

CAPTIONS = ["a red cat", "a blue dog", "green trees", "the sea at night"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("a2c")
    w2v = tiny_w2v_bert(root / "w2v", hidden_size=32)
    text = tiny_clip_text_encoder(root / "clip_text", width=32)
    pipe = tiny_sd_pipeline(root / "sd", text_width=32)
    wav_dir = root / "wavs"
    wav_dir.mkdir()
    lines = []
    rng = np.random.default_rng(0)
    for i, cap in enumerate(CAPTIONS * 2):
        t = np.arange(int(16000 * (0.6 + 0.1 * (i % 4)))) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (200 + 150 * (i % 4)) * t) + 0.01 * rng.standard_normal(
            t.size
        )
        path = wav_dir / f"u{i}.wav"
        sf.write(path, wav.astype(np.float32), 16000)
        lines.append(json.dumps({"audio": f"wavs/{path.name}", "caption": cap}))
    manifest = root / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return {"root": root, "w2v": w2v, "text": text, "sd": pipe, "manifest": manifest}


# ---------------------------------------------------------------------------------------------
# length matcher


def test_pad_crop_is_explicit() -> None:
    m = LengthMatcher(length=5, embed_dim=4, mode="pad_crop")
    with torch.no_grad():
        m.pad_embedding.fill_(7.0)
    states = torch.arange(2 * 7 * 4, dtype=torch.float32).view(2, 7, 4)
    out = m(states, torch.tensor([3, 7]))
    assert out.shape == (2, 5, 4)
    torch.testing.assert_close(out[0, :3], states[0, :3])
    assert out[0, 3:].eq(7.0).all()  # padded with the learned vector
    torch.testing.assert_close(out[1], states[1, :5])  # cropped to L
    short = m(states[:, :2], torch.tensor([2, 2]))
    torch.testing.assert_close(short[:, :2], states[:, :2])
    assert short[:, 2:].eq(7.0).all()


@pytest.mark.parametrize("mode", ["pad_crop", "resample"])
def test_length_matcher_padding_invariance(mode: str) -> None:
    torch.manual_seed(0)
    m = LengthMatcher(length=6, embed_dim=8, mode=mode, num_heads=2).eval()  # type: ignore[arg-type]
    states = torch.randn(3, 9, 8)
    lengths = torch.tensor([9, 4, 1])
    junk = states.clone()
    for b, n in enumerate(lengths.tolist()):
        junk[b, n:] = 1e3 * torch.randn(9 - n, 8)
    torch.testing.assert_close(m(states, lengths), m(junk, lengths))
    # batched equals per item
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(
            m(states[b : b + 1, :n], lengths[b : b + 1]),
            m(states, lengths)[b : b + 1],
            atol=1e-5,
            rtol=1e-5,
        )


def test_length_matcher_errors() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        LengthMatcher(length=4, embed_dim=10, mode="resample", num_heads=4)
    with pytest.raises(ValueError, match="mode"):
        LengthMatcher(length=4, embed_dim=8, mode="nearest")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# encoder wrapper


def test_from_pretrained_new_head_save_and_reload(assets: dict[str, Path], tmp_path: Path) -> None:
    enc = AudioToTextEncoder.from_pretrained(assets["w2v"], text_length=7, text_dim=48, num_heads=4)
    cfg = enc.encoder.config
    assert cfg.add_adapter and cfg.adapter_kernel_size == 3 and cfg.adapter_stride == 2
    assert cfg.num_adapter_layers == 2 and cfg.layerdrop == 0.0
    assert isinstance(enc.proj, torch.nn.Linear)  # 32 -> 48
    wave = [np.sin(np.arange(16000) / 10).astype(np.float32), np.zeros(8000, np.float32) + 0.1]
    feats = enc.featurize(wave)
    enc.eval()
    with torch.no_grad():
        out = enc(**feats)
    assert out.embeddings.shape == (2, 7, 48)
    # encoder_lengths agrees with the real adapter output and HF's own formula
    assert out.encoder_states.shape[1] == int(out.encoder_lengths.max())
    hf = enc.encoder._get_feat_extract_output_lengths(
        feats["attention_mask"].sum(-1), add_adapter=True
    )
    torch.testing.assert_close(out.encoder_lengths, hf.to(torch.int64))
    # 1 s -> 100 fbank frames -> 50 stacked -> ~13 encoder frames (about a quarter)
    assert int(out.encoder_lengths[0]) == 13

    saved = enc.save_pretrained(tmp_path / "saved")
    again = AudioToTextEncoder.from_pretrained(saved).eval()
    assert again.head_config() == enc.head_config()
    with torch.no_grad():
        torch.testing.assert_close(again(**feats).embeddings, out.embeddings)

    with pytest.raises(ValueError, match="text_dim"):
        AudioToTextEncoder.from_pretrained(assets["w2v"])


@pytest.mark.parametrize("length_mode", ["resample", "pad_crop"])
def test_batch_padding_never_changes_an_item(assets: dict[str, Path], length_mode: str) -> None:
    """An item's states and embeddings equal the item run alone, whatever fills the padding.

    transformers' adapter convolutions see one padded frame at each item's end, and the feature
    extractor called on a padded batch adds a stacked frame; both are handled in speechattn.
    """
    torch.manual_seed(0)
    enc = AudioToTextEncoder.from_pretrained(
        assets["w2v"], text_length=6, text_dim=32, num_heads=2, length_mode=length_mode
    ).eval()
    rng = np.random.default_rng(1)
    # odd and even frame counts at every adapter layer
    waves = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (6000, 6400, 7040, 9100)]
    long = 0.1 * rng.standard_normal(16000).astype(np.float32)
    with torch.no_grad():
        for w in waves:
            alone = enc(**enc.featurize([w]))
            batch = enc.featurize([long, w, long[:11000]])
            f = int(batch["attention_mask"][1].sum())
            assert f == enc.featurize([w])["input_features"].shape[1]
            batch["input_features"][1, f:] = 50.0 * torch.randn_like(batch["input_features"][1, f:])
            out = enc(**batch)
            t = alone.encoder_states.shape[1]
            assert int(out.encoder_lengths[1]) == t
            torch.testing.assert_close(
                out.encoder_states[1, :t], alone.encoder_states[0], atol=1e-5, rtol=1e-5
            )
            torch.testing.assert_close(out.embeddings[1], alone.embeddings[0], atol=1e-5, rtol=1e-5)
    layer = enc.encoder.adapter.layers[0]
    assert not layer.residual_conv._forward_pre_hooks  # hooks live for one forward only
    # padded input frames get no gradient
    batch = enc.featurize([long, waves[0]])
    x = batch["input_features"].requires_grad_(True)
    enc(input_features=x, attention_mask=batch["attention_mask"]).embeddings.sum().backward()
    assert x.grad is not None
    f = int(batch["attention_mask"][1].sum())
    assert float(x.grad[1, f:].abs().max()) == 0.0
    assert float(x.grad[1, :f].abs().max()) > 0.0


def test_project_after_match_round_trip(assets: dict[str, Path], tmp_path: Path) -> None:
    enc = AudioToTextEncoder.from_pretrained(
        assets["w2v"], text_length=5, text_dim=48, num_heads=2, project_after_match=True
    ).eval()
    assert enc.matcher.embed_dim == 32 and isinstance(enc.proj, torch.nn.Linear)  # match at 32
    waves = [np.sin(np.arange(12000) / 7).astype(np.float32), np.cos(np.arange(6000) / 5)]
    feats = enc.featurize(waves)
    with torch.no_grad():
        out = enc(**feats)
    assert out.embeddings.shape == (2, 5, 48)
    assert out.encoder_states.shape[-1] == 32  # unprojected frames
    again = AudioToTextEncoder.from_pretrained(enc.save_pretrained(tmp_path / "s")).eval()
    assert again.head_config()["project_after_match"] is True
    with torch.no_grad():
        torch.testing.assert_close(again(**feats).embeddings, out.embeddings)


def test_same_width_has_no_projection(assets: dict[str, Path]) -> None:
    enc = AudioToTextEncoder.from_pretrained(assets["w2v"], text_dim=32, length_mode="pad_crop")
    assert isinstance(enc.proj, torch.nn.Identity)


def test_text_encoder_clip_no_mask(assets: dict[str, Path]) -> None:
    te = TextEncoder.from_pretrained(assets["text"])
    assert te.max_length == 77 and te.width == 32 and not te.use_attention_mask
    emb = te.encode(["a cat", "a much longer caption"])
    assert emb.states.shape == (2, 77, 32)
    assert emb.lengths.tolist() == [6, 20]  # bos + characters (tiny char-level vocab) + eos
    # A diffusers pipeline folder gives the same text tower (tokenizer/ + text_encoder/).
    from_pipe = TextEncoder.from_pretrained(assets["sd"]).encode(["a cat"])
    assert from_pipe.states.shape == (1, 77, 32)


# ---------------------------------------------------------------------------------------------
# metrics


def test_retrieval_metrics_hand_example() -> None:
    text = torch.eye(4).unsqueeze(1).repeat(1, 2, 1)  # (4, 2, 4) one-hot per item
    m = retrieval_metrics(text.clone(), text)
    assert m.a2t_r1 == 1.0 and m.t2a_r1 == 1.0
    assert m.matched_cosine == pytest.approx(1.0) and m.mismatched_cosine == pytest.approx(0.0)
    swapped = text[[1, 0, 2, 3]]
    m2 = retrieval_metrics(swapped, text)
    assert m2.a2t_r1 == 0.5 and m2.t2a_r1 == 0.5 and m2.a2t_r5 == 1.0
    const = retrieval_metrics(torch.ones(4, 2, 4), text)
    assert const.a2t_r1 == 0.0  # ties count against the true item
    # text_lengths: only caption positions count
    audio = text.clone()
    audio[:, 1] = -audio[:, 1]
    sim = sequence_similarity(audio, text, torch.tensor([1, 1, 1, 1]))
    torch.testing.assert_close(sim, torch.eye(4))


# ---------------------------------------------------------------------------------------------
# CLI: train -> eval -> generate (tiny models, HF_HUB_OFFLINE=1)


def test_cli_train_eval_generate(
    assets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    rc = main(
        [
            "audio2clip", "train",
            "--manifest", str(assets["manifest"]),
            "--output-dir", str(out),
            "--audio-model", str(assets["w2v"]),
            "--text-model", str(assets["text"]),
            "--max-steps", "3",
            "--batch-size", "4",
            "--learnable-temperature",
        ]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "audio2clip_train.json").read_text())
    assert summary["steps"] == 3 and np.isfinite(summary["train_loss"])
    assert summary["mask_text_padding"] is False  # CLIP: SD uses every position
    enc = AudioToTextEncoder.from_pretrained(out)
    assert (enc.text_length, enc.text_dim) == (77, 32)

    metrics_json = tmp_path / "m.json"
    rc = main(
        [
            "audio2clip", "eval",
            "--manifest", str(assets["manifest"]),
            "--model", str(out),
            "--text-model", str(assets["text"]),
            "--json", str(metrics_json),
        ]
    )  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "audio->text R@1" in printed and "gap" in printed
    m = json.loads(metrics_json.read_text())
    assert m["num_items"] == 8 and 0.0 <= m["a2t_r1"] <= 1.0 and m["a2t_r10"] == 1.0
    # a malformed manifest line is skipped with its warning and counted among the skipped
    bad = assets["manifest"].with_name("with_bad_line.jsonl")
    bad.write_text(assets["manifest"].read_text() + "not json\n")
    argv = ["audio2clip", "eval", "--manifest", str(bad), "--model", str(out)]
    rc = main([*argv, "--text-model", str(assets["text"]), "--json", str(metrics_json)])
    cap = capsys.readouterr()  # the CLI prints each warning as one line
    assert rc == 0 and cap.err.count("with_bad_line.jsonl:9: expected") == 1
    m = json.loads(metrics_json.read_text())
    assert m["num_items"] == 8 and m["skipped"] == 1
    assert "skipped: 1 manifest line(s) or file(s)" in cap.out

    items = read_manifest(assets["manifest"])
    img_dir = tmp_path / "img"
    rc = main(
        [
            "audio2clip", "generate", str(items[0].audio_path), str(items[1].audio_path),
            "--model", str(out), "--pipeline", str(assets["sd"]),
            "--output-dir", str(img_dir), "--steps", "2", "--height", "64", "--width", "64",
        ]
    )  # fmt: skip
    assert rc == 0
    from PIL import Image

    pngs = sorted(img_dir.glob("*.png"))
    assert [p.name for p in pngs] == ["u0.png", "u1.png"]
    assert Image.open(pngs[0]).size == (64, 64)


def test_generate_checks_prompt_shape(assets: dict[str, Path]) -> None:
    from speechattn.recipes.audio2clip.generate import check_prompt_embeds, load_pipeline

    pipe = load_pipeline(assets["sd"], device="cpu")
    check_prompt_embeds(torch.zeros(1, 77, 32), pipe)
    with pytest.raises(ValueError, match=r"\(N, 77, 32\).*\(1, 77, 48\)"):
        check_prompt_embeds(torch.zeros(1, 77, 48), pipe)
    with pytest.raises(ValueError, match=r"\(N, 77, 32\)"):
        check_prompt_embeds(torch.zeros(1, 25, 32), pipe)


def test_manifest_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"audio": "x.wav"}\n')
    with pytest.warns(UserWarning) as record:
        with pytest.raises(
            ValueError, match=r"m.jsonl:1: expected an object with 'audio'.*'caption'"
        ):
            read_manifest(bad)
    msgs = [str(w.message) for w in record]
    assert (
        len(msgs) == 2
        and "m.jsonl:1: expected an object" in msgs[0]
        and "skipped 1 malformed" in msgs[1]
    )


@pytest.mark.slow
def test_torchrun_two_processes_train(assets: dict[str, Path], tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
        "-m", "speechattn", "audio2clip", "train",
        "--manifest", str(assets["manifest"]), "--output-dir", str(out),
        "--audio-model", str(assets["w2v"]), "--text-model", str(assets["text"]),
        "--max-steps", "2", "--batch-size", "2", "--direction", "both",
    ]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-4000:]
    summary = json.loads((out / "audio2clip_train.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    AudioToTextEncoder.from_pretrained(out)
