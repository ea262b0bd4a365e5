"""Independent re-statement of the keonlee9420 SMA layer (reference semantics, slow loops).

Written from a reading of ``sma.py`` in keonlee9420/Stepwise_Monotonic_Multihead_Attention
(the version whose README is seed 000), not copied. It is the oracle for
``speechattn.compat.keonlee`` and the "reference layer" baseline of ``benchmarks/bench_sma.py``.

What the reference computes (shapes: b batch, h heads, u text tokens, t mel frames):

1. Projections ``w_qs``, ``w_ks`` (``d_model -> h*d_k``), ``w_vs`` (``d_model -> h*d_v``); heads
   are laid out head-major, ``(h*b, ., .)`` (index ``head * b + item``).
2. Energies ``e = q k^T / sqrt(d_k)``, ``(h*b, u, t)``; where the bool ``mask`` (True = masked,
   ``(b, u, t)`` repeated over heads) is set, ``e`` is filled with the dtype's minimum.
3. ``softmax`` over mel frames; rows where ``query_mask`` (``(b, u, 1)``, True = padded token) is
   set become 0.
4. Focus rate per item and head: ``sum_t max_u softmax / mel_len``; the focused head is the argmax
   over heads; ``fr_max`` is the batch mean (a Python float) of the focused heads' focus rates.
5. Tunable: stay probability ``p = sigmoid(focused softmax (+ N(0, noise_std) in training))``,
   the stepwise recurrence along frames from ``aw_prev`` (default one-hot on token 0), with no
   length masking, and ``cv = alpha @ V`` where V holds all heads' values concatenated
   (``(b, t, h*d_v)``, head-major within the feature axis).
   Not tunable: per-head ``softmax @ V_h``, heads concatenated.
6. ``cv = LayerNorm(Dropout(Linear(cv)))``, no residual. Returns ``(cv, focused softmax, fr_max)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ReferenceEnergy", "ReferenceSMA", "reference_recurrence"]


def reference_recurrence(p: Tensor, alpha0: Tensor) -> Tensor:
    """Per-frame loop as the reference runs it.

    Args:
        p: ``(n, u, t)`` stay probabilities.
        alpha0: ``(n, u, 1)`` alignment before the first frame.

    Returns:
        ``(n, u, t)``: ``a_t(u) = a_{t-1}(u) p_t(u) + a_{t-1}(u-1) (1 - p_t(u-1))``.
    """
    a = alpha0
    cols = []
    for t in range(p.shape[-1]):
        pt = p[:, :, t : t + 1]
        moved = a[:, :-1, :] * (1.0 - pt[:, :-1, :])
        zero = torch.zeros(a.shape[0], 1, 1, dtype=a.dtype, device=a.device)
        a = a * pt + torch.cat([zero, moved], dim=1)
        cols.append(a)
    return torch.cat(cols, dim=-1)


class ReferenceEnergy(nn.Module):
    """Per-head scaled dot-product energies, head-major ``(h*b, u, t)``."""

    def __init__(self, n_head: int, d_model: int, d_k: int, d_v: int) -> None:
        super().__init__()
        self.n_head, self.d_k, self.d_v = n_head, d_k, d_v
        self.w_qs = nn.Linear(d_model, n_head * d_k)
        self.w_ks = nn.Linear(d_model, n_head * d_k)
        self.w_vs = nn.Linear(d_model, n_head * d_v)

    @staticmethod
    def _head_major(x: Tensor, n_head: int, d: int) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, n_head, d).permute(2, 0, 1, 3).reshape(n_head * b, n, d)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        qh = self._head_major(self.w_qs(q), self.n_head, self.d_k)
        kh = self._head_major(self.w_ks(k), self.n_head, self.d_k)
        vh = self._head_major(self.w_vs(v), self.n_head, self.d_v)
        e = torch.bmm(qh, kh.transpose(1, 2)) / math.sqrt(self.d_k)
        if mask is not None:
            e = e.masked_fill(mask, torch.finfo(e.dtype).min)
        return e, vh


class ReferenceSMA(nn.Module):
    """The reference layer, re-stated; same parameter names, loops and outputs."""

    def __init__(
        self,
        d_model: int,
        d_k: int,
        d_v: int,
        noise_std: float = 1.0,
        n_head: int = 4,
        dropout: float = 0.1,
        is_tunable: bool = False,
    ) -> None:
        super().__init__()
        self.n_head = n_head
        self.noise_std = noise_std
        self.is_tunable = is_tunable
        self.energy = ReferenceEnergy(n_head, d_model, d_k, d_v)
        self.dropout = nn.Dropout(dropout)
        self.last_layer = nn.Linear(n_head * d_v, d_model)
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mel_len: Tensor,
        mask: Tensor | None = None,
        query_mask: Tensor | None = None,
        aw_prev: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, float]:
        b, u, t, h = q.shape[0], q.shape[1], k.shape[1], self.n_head
        if mask is not None:
            mask = mask.repeat(h, 1, 1)
        e, vh = self.energy(q, k, v, mask)
        soft = torch.softmax(e, dim=-1)
        if query_mask is not None:
            soft = soft.masked_fill(query_mask.expand(b, u, t).repeat(h, 1, 1), 0.0)
        # Focus rate and the focused head, one item at a time.
        per_head = soft.view(h, b, u, t).transpose(0, 1)  # (b, h, u, t)
        fr = per_head.max(dim=2).values.sum(dim=-1) / mel_len.unsqueeze(1)
        idx = fr.argmax(dim=1)
        focused = []
        fr_sum = 0.0
        for i in range(b):
            focused.append(per_head[i, int(idx[i])])
            fr_sum += float(fr[i, int(idx[i])].detach())
        soft_fc = torch.stack(focused)
        if self.is_tunable:
            if aw_prev is None:
                aw_prev = k.new_zeros(b, u, 1)
                aw_prev[:, 0] = 1.0
            x = soft_fc
            if self.training:
                x = x + torch.empty_like(x).normal_(std=self.noise_std)
            alpha = reference_recurrence(torch.sigmoid(x), aw_prev)
            v_cat = vh.view(h, b, t, -1).permute(1, 2, 0, 3).reshape(b, t, -1)
            cv = torch.bmm(alpha, v_cat)
        else:
            cv = torch.bmm(soft, vh).view(h, b, u, -1).permute(1, 2, 0, 3).reshape(b, u, -1)
        cv = self.layer_norm(self.dropout(self.last_layer(cv)))
        return cv, soft_fc, fr_sum / b
