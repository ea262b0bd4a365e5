"""Audio -> image with diffusers' ``StableDiffusionPipeline`` fed ``prompt_embeds``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from speechattn.recipes.audio2clip.model import AudioToTextEncoder

__all__ = [
    "check_pipeline_source",
    "check_prompt_embeds",
    "expected_prompt_shape",
    "generate_images",
    "load_pipeline",
]

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE")


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS
    )


def check_pipeline_source(path_or_id: str | Path) -> str:
    """Fail fast, before any download, when a pipeline cannot be loaded from where it is.

    Returns ``"local"`` (a diffusers folder), ``"cached"`` (a hub id in the local Hugging Face
    cache) or ``"download"`` (a hub id that will be downloaded: several GB for Stable Diffusion).

    Raises:
        ValueError: a path that does not exist or is not a diffusers folder; a hub id that is not
            cached while offline (``HF_HUB_OFFLINE=1``); the message says what to do.
    """
    text = str(path_or_id)
    local = Path(text).expanduser()
    if local.exists():
        if not (local / "model_index.json").is_file():
            raise ValueError(
                f"--pipeline {text}: not a diffusers pipeline folder (no model_index.json); pass "
                "a folder saved with save_pretrained or a Hugging Face Hub id."
            )
        return "local"
    looks_local = text.startswith((".", "/", "~")) or text.count("/") != 1 or "\\" in text
    if looks_local:
        raise ValueError(
            f"--pipeline {text}: no such folder (a Hub id looks like 'org/name'); pass a "
            "diffusers pipeline folder or a Hugging Face Hub id."
        )
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(text, "model_index.json")
    except Exception:  # an id huggingface_hub rejects, or no huggingface_hub
        cached = None
    if isinstance(cached, str):
        return "cached"
    if _offline():
        raise ValueError(
            f"--pipeline {text}: not in the local Hugging Face cache and downloads are off "
            "(HF_HUB_OFFLINE=1). Download it once online (huggingface-cli download "
            f"{text}) or pass a local diffusers folder."
        )
    return "download"


def load_pipeline(path_or_id: str | Path, *, device: str | None = None) -> Any:
    """``StableDiffusionPipeline.from_pretrained`` (safety checker off: images are not filtered).

    ``path_or_id``: a local diffusers folder or a Hugging Face Hub id; checked first with
    :func:`check_pipeline_source` (a clear error instead of a long download attempt offline).
    """
    from diffusers import StableDiffusionPipeline

    if check_pipeline_source(path_or_id) == "download":
        import sys

        print(
            f"downloading {path_or_id} from the Hugging Face Hub into the local cache "
            "(several GB for Stable Diffusion; set HF_HUB_OFFLINE=1 to forbid downloads)",
            file=sys.stderr,
        )

    pipe = StableDiffusionPipeline.from_pretrained(
        str(path_or_id), safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def expected_prompt_shape(pipe: Any) -> tuple[int, int]:
    """``(L, D)`` the pipeline's UNet expects: tokenizer length (77) x cross-attention width."""
    width = int(pipe.unet.config.cross_attention_dim)
    tok = getattr(pipe, "tokenizer", None)
    length = int(tok.model_max_length) if tok is not None else 77
    return length, width


def check_prompt_embeds(embeds: Tensor, pipe: Any) -> None:
    """Raise ValueError unless ``embeds`` is ``(N, L, D)`` with the pipeline's ``(L, D)``."""
    length, width = expected_prompt_shape(pipe)
    if embeds.dim() != 3 or tuple(embeds.shape[1:]) != (length, width):
        raise ValueError(
            f"Expected prompt_embeds of shape (N, {length}, {width}) for this pipeline (tokenizer length "
            f"x UNet cross_attention_dim); found {tuple(embeds.shape)}. Train the audio encoder against "
            "the pipeline's own text encoder (same length and width)."
        )


@torch.no_grad()
def generate_images(
    encoder: AudioToTextEncoder,
    pipe: Any,
    waveforms: list[np.ndarray],
    *,
    num_inference_steps: int = 25,
    guidance_scale: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> list[Any]:
    """One PIL image per 16 kHz waveform; the audio embeddings replace the text encoder's states.

    The unconditional branch of classifier-free guidance uses the pipeline's own text encoder on
    the empty prompt, as Stable Diffusion does. ``progress``: a progress bar over the images.
    """
    from tqdm.auto import tqdm

    embeds = encoder.embed_waveforms(waveforms)
    check_prompt_embeds(embeds, pipe)
    device = pipe.device
    images = []
    for i in tqdm(range(embeds.shape[0]), desc="images", leave=False, disable=not progress):
        gen = torch.Generator(device="cpu").manual_seed(seed + i)
        out = pipe(
            prompt_embeds=embeds[i : i + 1].to(device=device, dtype=pipe.unet.dtype),
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            generator=gen,
            output_type="pil",
        )
        images.append(out.images[0])
    return images
