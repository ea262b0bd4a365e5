"""Slow references for the contrastive losses, written from seed 004 and the CLIP paper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def seed_contrastive_loss(embeddings1: Tensor, embeddings2: Tensor, temperature: float = 0.15) -> Tensor:
    """Seed 004's formula, verbatim in meaning (broadcasts to B x B x L x D)."""
    cos_sim = torch.cosine_similarity(embeddings1.unsqueeze(1), embeddings2.unsqueeze(0), dim=-1)
    cos_sim = cos_sim / temperature
    labels = torch.arange(embeddings1.size(0)).unsqueeze(1).repeat(1, embeddings1.size(1))
    return F.cross_entropy(cos_sim, labels.to(embeddings1.device))


def loop_sequence_loss(
    audio: Tensor,
    text: Tensor,
    temperature: float,
    text_valid: Tensor | None = None,
    direction: str = "audio_to_text",
) -> Tensor:
    """Python loops over anchors: -log softmax of the positive among valid candidates.

    Position l of item j is a candidate only where the caption has a token there (text_valid).
    """
    b, length, _ = audio.shape
    tv = torch.ones(b, length, dtype=torch.bool) if text_valid is None else text_valid

    def cos(x: Tensor, y: Tensor) -> Tensor:
        return (x @ y) / (x.norm() * y.norm())

    total = audio.new_zeros(())
    count = 0
    for i in range(b):
        for pos in range(length):
            if not tv[i, pos]:
                continue
            terms = []
            if direction in ("audio_to_text", "both"):
                cands = [j for j in range(b) if tv[j, pos]]
                s = [cos(audio[i, pos], text[j, pos]) / temperature for j in cands]
                lse = torch.logsumexp(torch.stack(s), 0)
                terms.append(lse - cos(audio[i, pos], text[i, pos]) / temperature)
            if direction in ("text_to_audio", "both"):
                s = [cos(text[i, pos], audio[j, pos]) / temperature for j in range(b) if tv[j, pos]]
                lse = torch.logsumexp(torch.stack(s), 0)
                terms.append(lse - cos(text[i, pos], audio[i, pos]) / temperature)
            total = total + sum(terms) / len(terms)
            count += 1
    return total / max(count, 1)


def loop_pooled_loss(audio: Tensor, text: Tensor, temperature: float) -> Tensor:
    """CLIP InfoNCE on mean-pooled vectors, symmetric, loops over items."""
    a = [audio[i].mean(0) for i in range(audio.shape[0])]
    t = [text[i].mean(0) for i in range(text.shape[0])]
    b = len(a)
    total = audio.new_zeros(())
    for i in range(b):
        s_at = torch.stack([F.cosine_similarity(a[i], t[j], dim=0) for j in range(b)]) / temperature
        s_ta = torch.stack([F.cosine_similarity(t[i], a[j], dim=0) for j in range(b)]) / temperature
        total = total + 0.5 * (torch.logsumexp(s_at, 0) - s_at[i] + torch.logsumexp(s_ta, 0) - s_ta[i])
    return total / b


__all__ = ["loop_pooled_loss", "loop_sequence_loss", "seed_contrastive_loss"]
