"""Retrieval metrics for sequence embeddings (audio -> text and text -> audio).

Shape legend: ``n`` items, ``l`` positions, ``d`` width.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from speechattn.functional.masks import check_lengths, lengths_to_valid_mask

__all__ = ["RetrievalMetrics", "retrieval_metrics", "sequence_similarity"]


class RetrievalMetrics(NamedTuple):
    """Recall at k in both directions plus the matched vs mismatched cosine gap.

    ``a2t_r1`` is the fraction of audio items whose own caption ranks first among all captions;
    ``t2a_*`` the same from captions to audio. ``matched_cosine`` is the mean similarity of
    matched pairs, ``mismatched_cosine`` of all other pairs, ``gap`` their difference.
    """

    a2t_r1: float
    a2t_r5: float
    a2t_r10: float
    t2a_r1: float
    t2a_r5: float
    t2a_r10: float
    matched_cosine: float
    mismatched_cosine: float
    gap: float
    num_items: int


def sequence_similarity(audio: Tensor, text: Tensor, text_lengths: Tensor | None = None) -> Tensor:
    """``S[i, j]`` = mean over caption j's valid positions of ``cos(audio[i, l], text[j, l])``.

    Args:
        audio: ``(N, L, D)``; text: ``(M, L, D)``; text_lengths: int64 ``(M,)`` or None (all L).

    Returns:
        ``(N, M)`` float32 similarity matrix in [-1, 1].
    """
    if audio.dim() != 3 or text.dim() != 3 or audio.shape[1:] != text.shape[1:]:
        raise ValueError(
            f"Expected audio (N, L, D) and text (M, L, D) with the same L, D; found "
            f"{tuple(audio.shape)} and {tuple(text.shape)}."
        )
    a = torch.nn.functional.normalize(audio.float(), dim=-1)
    t = torch.nn.functional.normalize(text.float(), dim=-1)
    m, length = text.shape[:2]
    lengths = check_lengths(
        text_lengths, "text_lengths", batch=m, max_len=length, device=text.device
    )
    w = lengths_to_valid_mask(lengths, length).float() / lengths[:, None].float()  # (M, L)
    return torch.einsum("ild,jld,jl->ij", a, t, w.to(a.device))


def retrieval_metrics(
    audio: Tensor, text: Tensor, text_lengths: Tensor | None = None
) -> RetrievalMetrics:
    """Recall@1/5/10 both ways for N matched pairs (item i's audio goes with caption i).

    Ties count against the true item (a rank is 1 + the number of scores >= the true score
    other than itself), so a constant encoder gets chance-level recall, not 1.
    """
    n = audio.shape[0]
    if text.shape[0] != n:
        raise ValueError(
            f"Expected as many captions as audio items; found {text.shape[0]} and {n}."
        )
    sim = sequence_similarity(audio, text, text_lengths)
    diag = sim.diagonal()
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    rank_a2t = ((sim >= diag[:, None]) & ~eye).sum(1) + 1
    rank_t2a = ((sim >= diag[None, :]) & ~eye).sum(0) + 1

    def recall(ranks: Tensor, k: int) -> float:
        return float((ranks <= k).float().mean())

    matched = float(diag.mean())
    mismatched = float(sim[~eye].mean()) if n > 1 else float("nan")
    return RetrievalMetrics(
        recall(rank_a2t, 1),
        recall(rank_a2t, 5),
        recall(rank_a2t, 10),
        recall(rank_t2a, 1),
        recall(rank_t2a, 5),
        recall(rank_t2a, 10),
        matched,
        mismatched,
        matched - mismatched,
        n,
    )
