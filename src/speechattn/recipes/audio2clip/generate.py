"""Audio -> image with diffusers' ``StableDiffusionPipeline`` fed ``prompt_embeds``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from speechattn.recipes.audio2clip.model import AudioToTextEncoder

__all__ = ["check_prompt_embeds", "expected_prompt_shape", "generate_images", "load_pipeline"]


def load_pipeline(path_or_id: str | Path, *, device: str | None = None) -> Any:
    """``StableDiffusionPipeline.from_pretrained`` (safety checker off: images are not filtered)."""
    from diffusers import StableDiffusionPipeline

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
) -> list[Any]:
    """One PIL image per 16 kHz waveform; the audio embeddings replace the text encoder's states.

    The unconditional branch of classifier-free guidance uses the pipeline's own text encoder on
    the empty prompt, as Stable Diffusion does.
    """
    embeds = encoder.embed_waveforms(waveforms)
    check_prompt_embeds(embeds, pipe)
    device = pipe.device
    images = []
    for i in range(embeds.shape[0]):
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
