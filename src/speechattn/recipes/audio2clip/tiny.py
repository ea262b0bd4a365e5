"""Tiny randomly initialised models built from configs (tests, offline demos; nothing downloaded).

Each builder saves to a folder that the real loading paths (``AudioToTextEncoder.from_pretrained``,
``TextEncoder.from_pretrained``, ``StableDiffusionPipeline.from_pretrained``) then read, so tests
exercise the same code users run with facebook/w2v-bert-2.0, CLIP and Stable Diffusion 2.1.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

from speechattn._io import write_text_atomic

__all__ = ["tiny_clip_text_encoder", "tiny_sd_pipeline", "tiny_w2v_bert"]


def tiny_w2v_bert(
    folder: str | Path,
    *,
    hidden_size: int = 32,
    num_layers: int = 1,
    num_heads: int = 2,
    num_mel_bins: int = 80,
    feature_stride: int = 2,
    seed: int = 0,
) -> Path:
    """Save a tiny ``Wav2Vec2BertModel`` (the original recipe's adapter settings) + feature extractor to ``folder``.

    ``feature_stride`` fbank frames (10 ms each) are stacked per input vector (w2v-BERT 2.0: 2).
    """
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    from speechattn.recipes.audio2clip.model import SEED_ADAPTER_SETTINGS

    torch.manual_seed(seed)
    config = Wav2Vec2BertConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=2 * hidden_size,
        feature_projection_input_dim=feature_stride * num_mel_bins,
        output_hidden_size=hidden_size,
        conv_depthwise_kernel_size=3,
        left_max_position_embeddings=16,
        right_max_position_embeddings=4,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        mask_time_prob=0.0,
        **SEED_ADAPTER_SETTINGS,
    )
    folder = Path(folder)
    Wav2Vec2BertModel(config).save_pretrained(folder)
    SeamlessM4TFeatureExtractor(
        feature_size=num_mel_bins, num_mel_bins=num_mel_bins, stride=feature_stride
    ).save_pretrained(folder)
    return folder


def _tiny_clip_tokenizer(folder: Path, max_length: int) -> None:
    chars = list(string.ascii_lowercase + string.digits + ".,!?'-")
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "vocab.json", json.dumps(vocab))
    write_text_atomic(folder / "merges.txt", "#version: 0.2\n")
    from transformers import CLIPTokenizer

    # transformers 5: build from the folder (constructor file arguments are ignored).
    CLIPTokenizer.from_pretrained(folder, model_max_length=max_length).save_pretrained(folder)


def tiny_clip_text_encoder(
    folder: str | Path, *, width: int = 32, max_length: int = 77, seed: int = 0
) -> Path:
    """Save a tiny character-level CLIP tokenizer + ``CLIPTextModel`` to ``folder``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    _tiny_clip_tokenizer(folder, max_length)
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=86,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=max_length,
        bos_token_id=84,
        eos_token_id=85,
        pad_token_id=85,
    )
    CLIPTextModel(config).save_pretrained(folder)
    return folder


def tiny_sd_pipeline(folder: str | Path, *, text_width: int = 32, seed: int = 0) -> Path:
    """Save a tiny random ``StableDiffusionPipeline`` (cross-attention width ``text_width``).

    Layout as on the hub (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``),
    so ``StableDiffusionPipeline.from_pretrained(folder)`` loads it like SD 2.1.
    """
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_width,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=64,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    tiny_clip_text_encoder(folder / "_text", width=text_width)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=CLIPTextModel.from_pretrained(folder / "_text"),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "_text"),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)  # type: ignore[attr-defined]
    import shutil

    shutil.rmtree(folder / "_text")
    return folder
