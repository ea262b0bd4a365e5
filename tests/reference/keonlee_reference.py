"""The keonlee9420 SMA layer, operation for operation (the benchmark baseline and compat oracle).

Source: ``sma.py`` of keonlee9420/Stepwise_Monotonic_Multihead_Attention (commit 09f63ce).
The classes below run the reference's own tensor operations in the reference's order and
shapes: ``MultiheadEnergy`` (projections, head-major ``(h*b, ., .)`` layout, ``bmm`` energies
divided by ``np.power(d_k, 0.5)``, ``masked_fill`` with the dtype's minimum), ``expectation``
(``sigmoid`` of the energies plus Gaussian noise in training, then the per-frame Python loop:
slice frame ``i``, a fresh zero pad, multiply, ``torch.cat`` along tokens, append; ``torch.cat``
over frames; the NaN assertion), ``focused_head`` (focus rate ``max_u / mel_len``, argmax,
a per-item Python loop with ``.item()``) and ``forward`` (softmax, query-mask fill, focused head,
recurrence from a one-hot ``aw_prev``, ``bmm`` with all heads' values, ``last_layer``, dropout,
``layer_norm``). Departures, none of which changes an operation:

- ``hparams`` is not imported: its three defaults are written in (4 heads, dropout 0.1, not
  tunable).
- The class is also exported as ``ReferenceSMA``; :func:`reference_recurrence` runs the lines
  of ``expectation`` after its ``sigmoid`` on given probabilities (for tests that feed ``p``).

It is the baseline of ``benchmarks/bench_sma.py`` (layer and recurrence sections), so a speed-up
is measured against what a user of the reference actually runs. ``tests/test_compat_keonlee.py``
checks it against the float64 equation oracle of ``tests/reference/sma_reference.py``.

Shapes: b batch, h heads, u text tokens (queries), t mel frames (keys).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MultiheadEnergy",
    "ReferenceSMA",
    "StepwiseMonotonicMultiheadAttention",
    "reference_recurrence",
]


def reference_recurrence(p_sample: Tensor, aw_prev: Tensor) -> Tensor:
    """``expectation``'s loop on given stay probabilities (one head per row, ``n_head = 1``).

    Args:
        p_sample: ``(n, u, t)`` stay probabilities.
        aw_prev: ``(n, u, 1)`` alignment before the first frame.

    Returns:
        ``(n, u, t)``: ``a_t(u) = a_{t-1}(u) p_t(u) + a_{t-1}(u-1) (1 - p_t(u-1))``, no masking.
    """
    batch_size, n_head, klen = aw_prev.size(0), 1, p_sample.size(2)
    alpha = []
    for i in range(klen):
        p_sample_i = p_sample[:, :, i : i + 1]
        pad = torch.zeros([batch_size * n_head, 1, 1], dtype=aw_prev.dtype).to(aw_prev.device)
        aw_prev = aw_prev * p_sample_i + torch.cat(
            (pad, aw_prev[:, :-1, :] * (1.0 - p_sample_i[:, :-1, :])), dim=1
        )
        alpha.append(aw_prev)
    out = torch.cat(alpha, dim=-1) if klen > 1 else alpha[-1]
    assert not torch.isnan(out).any(), "NaN detected in alpha."
    return out


class StepwiseMonotonicMultiheadAttention(nn.Module):
    """The reference layer (``hparams`` defaults written in); same parameter names."""

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
        self.energy = MultiheadEnergy(n_head, d_model, d_k, d_v)

        self.dropout = nn.Dropout(dropout)
        self.last_layer = nn.Linear(n_head * d_v, d_model)
        self.layer_norm = nn.LayerNorm(d_model)

        self.is_tunable = is_tunable

    def add_gaussian_noise(self, xs: Tensor, std: float) -> Tensor:
        noise = xs.new_zeros(xs.size()).normal_(std=std)
        return xs + noise

    def expectation(self, e: Tensor, aw_prev: Tensor, n_head: int) -> tuple[Tensor, Tensor]:
        """e ``(batch*n_head, qlen, klen)``, aw_prev ``(batch*n_head, qlen, 1)``."""
        batch_size, _qlen, klen = aw_prev.size(0) // n_head, e.size(1), e.size(2)

        p_sample = torch.sigmoid(self.add_gaussian_noise(e, self.noise_std) if self.training else e)

        alpha = []
        for i in range(klen):
            p_sample_i = p_sample[:, :, i : i + 1]
            pad = torch.zeros([batch_size * n_head, 1, 1], dtype=aw_prev.dtype).to(aw_prev.device)
            aw_prev = aw_prev * p_sample_i + torch.cat(
                (pad, aw_prev[:, :-1, :] * (1.0 - p_sample_i[:, :-1, :])), dim=1
            )
            alpha.append(aw_prev)

        alpha = torch.cat(alpha, dim=-1) if klen > 1 else alpha[-1]  # type: ignore[assignment]

        assert not torch.isnan(alpha).any(), "NaN detected in alpha."  # type: ignore[attr-defined]

        return alpha, p_sample  # type: ignore[return-value]

    def focused_head(self, multihead: Tensor, mel_len: Tensor) -> tuple[Tensor, float]:
        """multihead ``(batch*n_heads, seq_len, mel_len)`` -> ``(batch, seq_len, mel_len)``."""
        multihead = multihead.reshape(
            self.n_head, -1, multihead.size(1), multihead.size(2)
        ).transpose(0, 1)
        focus_rate = torch.max(multihead, dim=2)[0].sum(dim=-1) / (mel_len.unsqueeze(1))
        h_idx = torch.argmax(focus_rate, dim=1)
        batch = list()
        fr_max = 0.0
        for b, fr, i in zip(multihead, focus_rate, h_idx, strict=False):
            batch.append(b[i])
            fr_max += fr[i].detach().item()
        return torch.stack(batch), fr_max / h_idx.size(0)

    def repeat_mask_multihead(self, mask: Tensor) -> Tensor:
        return mask.repeat(self.n_head, 1, 1)

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
        batch_size, qlen, klen = q.size(0), q.size(1), k.size(1)
        if mask is not None:
            mask = self.repeat_mask_multihead(mask)

        e, v = self.energy(q, k, v, mask)

        alpha_cv = F.softmax(e, dim=-1)

        if query_mask is not None:
            query_mask = self.repeat_mask_multihead(query_mask.repeat(1, 1, klen))
            alpha_cv = alpha_cv.masked_fill(query_mask, 0.0)

        alpha_fc, fr_max = self.focused_head(alpha_cv, mel_len)

        if self.is_tunable:
            if aw_prev is None:
                aw_prev = k.new_zeros(batch_size, qlen, 1)
                aw_prev[:, 0:1] = k.new_ones(batch_size, 1, 1)
            alpha_me, _ = self.expectation(alpha_fc, aw_prev, 1)

            v = v.reshape(self.n_head, batch_size, klen, -1).permute(1, 2, 0, 3)
            cv = torch.bmm(alpha_me, v.reshape(batch_size, klen, -1))
        else:
            cv = (
                torch.bmm(alpha_cv, v)
                .reshape(self.n_head, batch_size, qlen, -1)
                .permute(1, 2, 0, 3)
            )
            cv = cv.reshape(batch_size, qlen, -1)

        cv = self.dropout(self.last_layer(cv))
        cv = self.layer_norm(cv)
        return cv, alpha_fc, fr_max


class MultiheadEnergy(nn.Module):
    """Energy function for the (monotonic) multihead attention."""

    def __init__(self, n_head: int, d_model: int, d_k: int, d_v: int) -> None:
        super().__init__()

        self.n_head = n_head
        self.d_k = d_k
        self.d_v = d_v

        self.w_qs = nn.Linear(d_model, n_head * d_k)
        self.w_ks = nn.Linear(d_model, n_head * d_k)
        self.w_vs = nn.Linear(d_model, n_head * d_v)

        self.temperature = np.power(d_k, 0.5)

    def scaled_dot_product(self, q: Tensor, k: Tensor) -> Tensor:
        sdp = torch.bmm(q, k.transpose(1, 2))
        sdp = sdp / self.temperature
        return sdp

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        d_k, d_v, n_head = self.d_k, self.d_v, self.n_head

        sz_b, len_q, _ = q.size()
        sz_b, len_k, _ = k.size()
        sz_b, len_v, _ = v.size()

        q = self.w_qs(q).view(sz_b, len_q, n_head, d_k)
        k = self.w_ks(k).view(sz_b, len_k, n_head, d_k)
        v = self.w_vs(v).view(sz_b, len_v, n_head, d_v)
        q = q.permute(2, 0, 1, 3).contiguous().view(-1, len_q, d_k)
        k = k.permute(2, 0, 1, 3).contiguous().view(-1, len_k, d_k)
        v = v.permute(2, 0, 1, 3).contiguous().view(-1, len_v, d_v)

        e = self.scaled_dot_product(q, k)

        if mask is not None:
            neg_inf = float(np.finfo(torch.tensor(0, dtype=e.dtype).numpy().dtype).min)
            e = e.masked_fill(mask, neg_inf)

        return e, v


ReferenceSMA = StepwiseMonotonicMultiheadAttention
