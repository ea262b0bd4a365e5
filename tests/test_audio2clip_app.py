"""Gradio app: launched on a free port, called with gradio_client (offline, no analytics)."""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from speechattn.recipes.audio2clip.app import AudioRejected, build_app, check_waveform
from speechattn.recipes.audio2clip.model import AudioToTextEncoder
from speechattn.recipes.audio2clip.tiny import tiny_sd_pipeline, tiny_w2v_bert


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("app")
    w2v = tiny_w2v_bert(root / "w2v", hidden_size=32)
    enc = AudioToTextEncoder.from_pretrained(w2v, text_length=77, text_dim=32, num_heads=4)
    model = enc.save_pretrained(root / "model")
    pipe = tiny_sd_pipeline(root / "sd", text_width=32)
    demo = build_app(model=model, pipeline=pipe, max_seconds=3.0, steps=2, height=64, width=64)
    port = _free_port()
    demo.queue().launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        show_error=True,
        quiet=True,
    )
    try:
        yield f"http://127.0.0.1:{port}/", root
    finally:
        demo.close()


def _client(url: str) -> Any:
    from gradio_client import Client

    return Client(url, verbose=False)


def _wav(path: Path, wav: np.ndarray, sr: int = 16000) -> Path:
    sf.write(path, wav.astype(np.float32), sr)
    return path


def test_speech_gives_an_image(app_url: tuple[str, Path]) -> None:
    from gradio_client import handle_file
    from PIL import Image

    url, root = app_url
    t = np.arange(24000) / 24000
    path = _wav(root / "ok.wav", 0.3 * np.sin(2 * np.pi * 300 * t), sr=24000)  # resampled to 16 kHz
    result = _client(url).predict(handle_file(str(path)), api_name="/generate")
    img = Image.open(result)
    assert img.size == (64, 64)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH (optional decoder)")
def test_microphone_webm_gives_an_image(app_url: tuple[str, Path]) -> None:
    """Browsers record webm/opus, which only ffmpeg decodes (the Dockerfile installs it)."""
    from gradio_client import handle_file
    from PIL import Image

    url, root = app_url
    t = np.arange(16000) / 16000
    wav = _wav(root / "mic.wav", 0.3 * np.sin(2 * np.pi * 250 * t))
    webm = root / "mic.webm"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(wav), "-c:a", "libopus", str(webm)],
        check=True,
    )
    result = _client(url).predict(handle_file(str(webm)), api_name="/generate")
    assert Image.open(result).size == (64, 64)


@pytest.mark.parametrize(
    ("kind", "message"),
    [("text", "not an audio file"), ("silence", "silent"), ("long", "limit is 3 s")],
)
def test_bad_uploads_get_a_clear_message(
    app_url: tuple[str, Path], kind: str, message: str
) -> None:
    from gradio_client import handle_file

    url, root = app_url
    if kind == "text":
        path = root / "notes.wav"
        path.write_text("this is not audio\n")
    elif kind == "silence":
        path = _wav(root / "silence.wav", np.zeros(16000))
    else:
        path = _wav(root / "long.wav", 0.1 * np.sin(np.arange(16000 * 4) / 5))
    with pytest.raises(Exception, match=message):
        _client(url).predict(handle_file(str(path)), api_name="/generate")


def test_check_waveform_unit() -> None:
    check_waveform(np.full(1600, 0.1, np.float32))
    with pytest.raises(AudioRejected, match="too short"):
        check_waveform(np.zeros(10, np.float32))
    with pytest.raises(AudioRejected, match="silent"):
        check_waveform(np.full(16000, 1e-5, np.float32))
