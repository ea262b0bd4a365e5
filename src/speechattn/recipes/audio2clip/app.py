"""``speechattn app``: a Gradio page, upload or record audio and see the generated image.

Listens on 127.0.0.1:7860 by default (``--host 0.0.0.0`` inside Docker). Bad uploads (a file that is
not audio, silence, or audio longer than ``--max-seconds``) get a clear message instead of a trace.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["AudioRejected", "add_parser", "build_app", "check_waveform", "read_upload"]

SILENCE_PEAK = 1e-3


class AudioRejected(ValueError):
    """An upload the app cannot use; the message is shown to the user."""


def read_upload(path: str | Path | None) -> np.ndarray:
    """16 kHz mono waveform of an uploaded file, or :class:`AudioRejected` with a clear reason."""
    from speechattn.recipes.audio2clip.data import load_audio_16k

    if path is None:
        raise AudioRejected("No audio received: upload a file or record with the microphone.")
    try:
        return load_audio_16k(path)
    except ValueError as exc:
        raise AudioRejected(
            f"{Path(path).name} is not an audio file this app can read. Upload wav, flac, ogg or "
            "mp3 (webm and m4a need ffmpeg on the server)."
        ) from exc


def check_waveform(wav: np.ndarray, *, sample_rate: int = 16000, max_seconds: float = 30.0) -> None:
    """Reject empty, silent, or too long audio (:class:`AudioRejected`)."""
    seconds = wav.shape[0] / sample_rate
    if wav.size == 0 or seconds < 0.1:
        raise AudioRejected(
            f"The audio is empty or too short ({seconds:.2f} s); speak for at least 0.1 s."
        )
    if seconds > max_seconds:
        raise AudioRejected(
            f"The audio is {seconds:.1f} s long; the limit is {max_seconds:.0f} s. Trim it and try again."
        )
    if not np.isfinite(wav).all() or float(np.abs(wav).max()) < SILENCE_PEAK:
        raise AudioRejected(
            "The audio is silent (no signal above -60 dBFS); check the microphone or file."
        )


def build_app(
    *,
    model: str | Path,
    pipeline: str | Path,
    max_seconds: float = 30.0,
    steps: int = 25,
    guidance_scale: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    device: str | None = None,
) -> Any:
    """The ``gradio.Blocks`` app (models loaded once, here)."""
    import gradio as gr

    from speechattn.recipes.audio2clip.generate import generate_images, load_pipeline
    from speechattn.recipes.audio2clip.model import AudioToTextEncoder

    encoder = AudioToTextEncoder.from_pretrained(model)
    pipe = load_pipeline(pipeline, device=device)
    encoder.to(pipe.device)

    def speak_to_image(audio_path: str | None) -> Any:
        try:
            wav = read_upload(audio_path)
            check_waveform(wav, max_seconds=max_seconds)
        except AudioRejected as exc:
            raise gr.Error(str(exc)) from None
        return generate_images(
            encoder,
            pipe,
            [wav],
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
        )[0]

    with gr.Blocks(title="speechattn: audio to image") as demo:
        gr.Markdown("Upload or record speech; its audio embedding conditions Stable Diffusion.")
        audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio")
        image = gr.Image(type="pil", label="Image")
        button = gr.Button("Generate")
        button.click(speak_to_image, inputs=audio, outputs=image, api_name="generate")
    return demo


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_app(
        model=args.model,
        pipeline=args.pipeline,
        max_seconds=args.max_seconds,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        height=args.height,
        width=args.width,
        device=args.device,
    )
    demo.queue().launch(server_name=args.host, server_port=args.port, show_error=True)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``speechattn app``."""
    p = sub.add_parser("app", help="Gradio page: upload/record audio -> image (127.0.0.1:7860)")
    p.add_argument(
        "--model", required=True, help="audio encoder folder written by audio2clip train"
    )
    p.add_argument("--pipeline", default="stabilityai/stable-diffusion-2-1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--device", default=None)
    p.set_defaults(func=_run)
