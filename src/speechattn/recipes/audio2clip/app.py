"""``speechattn audio2clip app``: a Gradio page, upload or record audio and see the generated image.

(``speechattn app`` is kept as a hidden alias.) Listens on 127.0.0.1:7860 by default (``--host
0.0.0.0`` inside Docker). Bad uploads (a file that is not audio, silence, larger than
``--max-upload-mb`` or longer than ``--max-seconds``) get a clear message instead of a trace; size
and duration are checked before the audio is decoded (the duration from the file header).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "AudioRejected",
    "add_app_arguments",
    "add_parser",
    "build_app",
    "check_upload",
    "check_waveform",
    "read_upload",
]

SILENCE_PEAK = 1e-3
MAX_UPLOAD_MB = 20.0


class AudioRejected(ValueError):
    """An upload the app cannot use; the message is shown to the user."""


def check_upload(
    path: str | Path, *, max_bytes: int = int(MAX_UPLOAD_MB * 2**20), max_seconds: float = 30.0
) -> None:
    """Reject an upload before decoding it: file size, then the duration its header declares.

    Formats soundfile cannot read (webm, m4a) are checked by size only here and by duration after
    decoding (:func:`check_waveform`).
    """
    size = os.path.getsize(path)
    if size > max_bytes:
        raise AudioRejected(
            f"The upload is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB. "
            "Send a shorter or compressed recording."
        )
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:
        return  # not a libsndfile format: decoded by ffmpeg later, duration checked then
    if info.samplerate > 0 and info.frames / info.samplerate > max_seconds:
        raise AudioRejected(
            f"The audio is {info.frames / info.samplerate:.1f} s long; the limit is "
            f"{max_seconds:.0f} s. Trim it and try again."
        )


def read_upload(
    path: str | Path | None,
    *,
    max_bytes: int = int(MAX_UPLOAD_MB * 2**20),
    max_seconds: float = 30.0,
) -> np.ndarray:
    """16 kHz mono waveform of an uploaded file, or :class:`AudioRejected` with a clear reason.

    Size and declared duration are checked first (:func:`check_upload`), so an oversized upload
    is never decoded.
    """
    from speechattn.recipes.audio2clip.data import load_audio_16k

    if path is None:
        raise AudioRejected("No audio received: upload a file or record with the microphone.")
    check_upload(path, max_bytes=max_bytes, max_seconds=max_seconds)
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
    max_upload_mb: float = MAX_UPLOAD_MB,
    seed: int = 0,
) -> Any:
    """The ``gradio.Blocks`` app (models loaded once, here); every request draws its image
    from the noise of ``seed`` (the same audio gives the same image)."""
    import gradio as gr

    from speechattn.recipes.audio2clip.generate import (
        check_pipeline_source,
        generate_images,
        load_pipeline,
    )
    from speechattn.recipes.audio2clip.model import AudioToTextEncoder, check_model_folder

    check_model_folder(model)
    check_pipeline_source(pipeline)
    max_bytes = int(max_upload_mb * 2**20)
    encoder = AudioToTextEncoder.from_pretrained(model)
    pipe = load_pipeline(pipeline, device=device)
    encoder.to(pipe.device)

    def speak_to_image(audio_path: str | None) -> Any:
        try:
            wav = read_upload(audio_path, max_bytes=max_bytes, max_seconds=max_seconds)
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
            seed=seed,
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
        max_upload_mb=args.max_upload_mb,
        seed=args.seed,
    )
    demo.queue().launch(
        server_name=args.host,
        server_port=args.port,
        show_error=True,
        max_file_size=int(args.max_upload_mb * 2**20),
    )
    return 0


def add_app_arguments(p: argparse.ArgumentParser) -> None:
    """The app's options (``speechattn audio2clip app`` and the hidden ``speechattn app``)."""
    from speechattn._cli import positive_float, positive_int
    from speechattn.recipes.audio2clip.cli import PIPELINE_HELP, add_image_arguments

    p.add_argument(
        "--model", required=True, help="audio encoder folder written by audio2clip train"
    )
    p.add_argument("--pipeline", required=True, help=PIPELINE_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    p.add_argument("--port", type=positive_int, default=7860, help="port (default: %(default)s)")
    p.add_argument(
        "--max-seconds",
        type=positive_float,
        default=30.0,
        help="longest audio accepted (default: %(default)s)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=positive_float,
        default=MAX_UPLOAD_MB,
        help="largest upload accepted, checked before decoding (default: %(default)s)",
    )
    add_image_arguments(p)
    p.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the image noise (default: %(default)s)"
    )
    p.set_defaults(func=_run)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the hidden top-level alias ``speechattn app`` (= ``speechattn audio2clip app``)."""
    p = sub.add_parser("app", description="Same as `speechattn audio2clip app`.")
    add_app_arguments(p)
