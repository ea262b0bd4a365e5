"""No file a user can point at is unpickled: a checkpoint whose pickle runs code is refused on
every path (--checkpoint, resume of OUT/checkpoints/*.pt, audio2clip model folders), and the
files speechattn writes load with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
from tests.align_toy import N_MELS, NUM_SYMBOLS, toy_items

from speechattn.cli import main
from speechattn.recipes.align.model import AlignerConfig
from speechattn.recipes.align.train import TrainConfig, load_checkpoint, train_aligner


class _Evil:
    """Unpickling this calls ``open(marker, "w")``: a file appears if the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def _evil_checkpoint(path: Path, marker: Path, **extra: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "state_dict": {}, "payload": _Evil(marker), **extra}, path)
    return path


def test_the_evil_file_really_runs_code_without_weights_only(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ck = _evil_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(ck, weights_only=False)  # what the old loaders did
    assert marker.exists()


def test_load_checkpoint_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ck = _evil_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(ValueError, match=r"evil\.pt.*weights_only=True"):
        load_checkpoint(ck)
    assert not marker.exists()


def test_align_checkpoint_option_refuses_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from speechattn.recipes.align.pipeline import load_aligner

    marker = tmp_path / "pwned"
    ck = _evil_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(ValueError, match="weights_only"):
        load_aligner(ck)
    assert not marker.exists()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    import numpy as np
    import soundfile as sf

    sf.write(corpus / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(22050), 22050)
    (corpus / "a.txt").write_text("hello")
    rc = main(["align", str(corpus), "--out", str(tmp_path / "o"), "--checkpoint", str(ck)])
    err = capsys.readouterr().err
    assert rc == 1 and "evil.pt" in err and "weights_only" in err
    assert not marker.exists()


def test_resume_refuses_code_in_out_checkpoints(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ck = _evil_checkpoint(tmp_path / "out" / "checkpoints" / "aligner.pt", marker)
    cfg = AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16)
    with pytest.raises(ValueError, match="weights_only"):
        train_aligner(cfg, toy_items(4, 0), TrainConfig(steps=2), checkpoint=ck, progress=False)
    assert not marker.exists()


def test_audio2clip_model_folder_refuses_code(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from speechattn.recipes.audio2clip.model import HEAD_WEIGHTS_NAME, AudioToTextEncoder
    from speechattn.recipes.audio2clip.tiny import tiny_w2v_bert

    w2v = tiny_w2v_bert(tmp_path / "w2v", hidden_size=32)
    enc = AudioToTextEncoder.from_pretrained(w2v, text_length=8, text_dim=32, num_heads=4)
    folder = enc.save_pretrained(tmp_path / "model")
    marker = tmp_path / "pwned"
    _evil_checkpoint(folder / HEAD_WEIGHTS_NAME, marker)
    with pytest.raises(Exception, match=r"(?i)weights_only|unpickl|global"):
        AudioToTextEncoder.from_pretrained(folder)
    assert not marker.exists()


def test_written_checkpoints_and_the_shipped_asset_load_safely(tmp_path: Path) -> None:
    from speechattn.recipes.align.pipeline import DEFAULT_ASSET, load_aligner

    cfg = AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16)
    ck = tmp_path / "ck.pt"
    extra = {"symbols": {"<pad>": 0, "a": 1}, "features": {"sample_rate": 1000}}
    train_aligner(
        cfg, toy_items(8, 0), TrainConfig(steps=2), checkpoint=ck, extra_state=extra, progress=False
    )
    saved = torch.load(ck, map_location="cpu", weights_only=True)
    assert saved["step"] == 2 and saved["extra"] == extra
    if DEFAULT_ASSET.exists():
        torch.load(DEFAULT_ASSET, map_location="cpu", weights_only=True)
        model, symbols, _feats, _info = load_aligner()
        assert model.config.num_symbols >= len(symbols) > 4
