"""audio2clip entry points: saved-folder arguments that conflict raise, warm-up per transformers
version, --pipeline fails fast offline, the app caps upload size and duration before decoding."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from speechattn.recipes.audio2clip.model import AudioToTextEncoder
    from speechattn.recipes.audio2clip.tiny import tiny_w2v_bert

    root = tmp_path_factory.mktemp("a2c_hard")
    w2v = tiny_w2v_bert(root / "w2v", hidden_size=32)
    enc = AudioToTextEncoder.from_pretrained(w2v, text_length=12, text_dim=32, num_heads=4)
    return enc.save_pretrained(root / "model")


def test_from_pretrained_saved_folder_refuses_conflicting_arguments(saved_model: Path) -> None:
    from speechattn.recipes.audio2clip.model import AudioToTextEncoder

    enc = AudioToTextEncoder.from_pretrained(saved_model)
    assert (enc.text_length, enc.num_heads, enc.length_mode) == (12, 4, "resample")
    same = AudioToTextEncoder.from_pretrained(saved_model, text_length=12, num_heads=4)
    assert same.text_length == 12
    with pytest.raises(ValueError, match=r"text_length=10 \(saved: 12\)"):
        AudioToTextEncoder.from_pretrained(saved_model, text_length=10)
    with pytest.raises(ValueError, match=r"length_mode='pad_crop' \(saved: 'resample'\)"):
        AudioToTextEncoder.from_pretrained(saved_model, length_mode="pad_crop")
    with pytest.raises(ValueError, match=r"num_heads=8"):
        AudioToTextEncoder.from_pretrained(saved_model, num_heads=8)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("4.45.2", {"warmup_ratio": 0.05}),
        ("4.57.0", {"warmup_ratio": 0.05}),
        ("5.0.0", {"warmup_steps": 0.05}),
        ("5.25.0.dev0", {"warmup_steps": 0.05}),
    ],
)
def test_warmup_argument_per_transformers_version(version: str, expected: dict) -> None:
    from speechattn.recipes.audio2clip.train import warmup_arguments

    assert warmup_arguments(0.05, version) == expected
    with pytest.raises(ValueError, match="warmup_ratio"):
        warmup_arguments(1.5, version)


def test_installed_transformers_warms_up_over_the_ratio(tmp_path: Path) -> None:
    from transformers import TrainingArguments

    from speechattn.recipes.audio2clip.train import warmup_arguments

    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", **warmup_arguments(0.05))
    # 5% of 200 steps is 10 warm-up steps on this version (0 with the 4.x misuse).
    assert args.get_warmup_steps(200) == 10


def test_pipeline_source_fails_fast_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from speechattn.recipes.audio2clip.generate import check_pipeline_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(ValueError, match=r"not in the local Hugging Face cache.*HF_HUB_OFFLINE"):
        check_pipeline_source("stabilityai/stable-diffusion-2-1")
    with pytest.raises(ValueError, match="no such folder"):
        check_pipeline_source(str(tmp_path / "missing_sd"))
    (tmp_path / "not_sd").mkdir()
    with pytest.raises(ValueError, match=r"model_index\.json"):
        check_pipeline_source(tmp_path / "not_sd")
    (tmp_path / "not_sd" / "model_index.json").write_text("{}")
    assert check_pipeline_source(tmp_path / "not_sd") == "local"


def test_generate_cli_fails_fast_with_one_line(
    saved_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from speechattn.cli import main

    wav = tmp_path / "a.wav"
    sf.write(wav, 0.2 * np.sin(np.arange(16000) / 7).astype(np.float32), 16000)
    argv = ["audio2clip", "generate", str(wav), "--model", str(saved_model)]
    rc = main([*argv, "--pipeline", str(tmp_path / "nowhere"), "--out", str(tmp_path / "img")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("speechattn audio2clip generate: error: --pipeline")
    assert len(err.strip().splitlines()) == 1


def test_app_rejects_large_or_long_uploads_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import speechattn.recipes.audio2clip.data as a2c_data
    from speechattn.recipes.audio2clip.app import AudioRejected, read_upload

    def never(*a: object, **k: object) -> None:
        raise AssertionError("decoded an upload that should have been rejected first")

    monkeypatch.setattr(a2c_data, "load_audio_16k", never)
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * (2 * 2**20))
    with pytest.raises(AudioRejected, match=r"2\.0 MB; the limit is 1 MB"):
        read_upload(big, max_bytes=2**20)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(16000 * 5, np.int16), 16000, subtype="PCM_16")
    with pytest.raises(AudioRejected, match=r"5\.0 s long; the limit is 3 s"):
        read_upload(long, max_seconds=3.0)


@pytest.mark.parametrize("action", ["eval", "generate", "app"])
def test_model_that_is_not_a_trained_folder_is_one_clear_line(
    action: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--model a2c`` before training (the README's commands in order): the error says which
    folder to pass, not a library argument (``text_dim=``) or a Hub id rule."""
    from tests.cli_run import run_cli

    wav = tmp_path / "x.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    model = str(tmp_path / "a2c")
    argv = {
        "eval": ["--manifest", str(tmp_path / "m.jsonl"), "--model", model, "--text-model", "t"],
        "generate": [str(wav), "--model", model, "--pipeline", "/no/sd21"],
        "app": ["--model", model, "--pipeline", "/no/sd21"],
    }[action]
    assert run_cli(["audio2clip", action, *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--model {model}: not a model folder" in err[0], err
    assert "no such folder" in err[0] and "--out folder" in err[0]


def test_text_model_path_that_does_not_exist_says_so(tmp_path: Path) -> None:
    from speechattn.recipes.audio2clip.text import TextEncoder

    with pytest.raises(ValueError, match=r"text model .*sd21: no such folder"):
        TextEncoder.from_pretrained(tmp_path / "path" / "to" / "sd21")
