"""Drop-in for keonlee9420/Stepwise_Monotonic_Multihead_Attention (``sma.py``).

Same constructor and ``forward`` arguments, same parameter names (reference checkpoints load with
``load_state_dict(strict=True)``), same outputs; the per-frame Python loop of the reference is
replaced by :func:`speechattn.functional.stepwise_monotonic_alignment` (compiled CPU / GPU
kernels) and the per-item focused-head loop by a gather.

Shape legend: ``b`` batch, ``h`` heads, ``u`` text tokens (queries), ``t`` mel frames.
Masks here follow the reference: True (or nonzero) = masked, the opposite of the rest of
speechattn.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from speechattn.functional.masks import check_nonempty_batch
from speechattn.functional.monotonic import stepwise_monotonic_alignment
from speechattn.functional.monotonic_attention import select_heads

__all__ = ["MultiheadEnergy", "StepwiseMonotonicMultiheadAttention"]


class MultiheadEnergy(nn.Module):
    """Per-head projections ``w_qs``, ``w_ks`` (``d_model -> n_head*d_k``), ``w_vs``
    (``d_model -> n_head*d_v``), named as in the reference so checkpoints load."""

    def __init__(self, n_head: int, d_model: int, d_k: int, d_v: int) -> None:
        super().__init__()
        self.n_head, self.d_k, self.d_v = n_head, d_k, d_v
        self.w_qs = nn.Linear(d_model, n_head * d_k)
        self.w_ks = nn.Linear(d_model, n_head * d_k)
        self.w_vs = nn.Linear(d_model, n_head * d_v)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return per-head ``q (b, h, u, d_k)``, ``k (b, h, t, d_k)``, ``v (b, h, t, d_v)``."""
        h = self.n_head
        qh = self.w_qs(q).unflatten(-1, (h, self.d_k)).transpose(1, 2)
        kh = self.w_ks(k).unflatten(-1, (h, self.d_k)).transpose(1, 2)
        vh = self.w_vs(v).unflatten(-1, (h, self.d_v)).transpose(1, 2)
        return qh, kh, vh


def _as_mask(
    x: Tensor | None, name: str, shape: tuple[int, ...], dev: torch.device
) -> Tensor | None:
    if x is None:
        return None
    if not isinstance(x, Tensor):
        raise TypeError(
            f"Expected {name} to be a tensor (True/1 = masked); found {type(x).__name__}."
        )
    if x.dim() != len(shape) or any(a != e and e != -1 for a, e in zip(x.shape, shape)):
        want = ", ".join("any" if e == -1 else str(e) for e in shape)
        raise ValueError(f"Expected {name} of shape ({want}); found {tuple(x.shape)}.")
    if x.device != dev:
        raise ValueError(f"Expected {name} on {dev}; found {x.device}.")
    return x if x.dtype == torch.bool else x != 0


class StepwiseMonotonicMultiheadAttention(nn.Module):
    """The keonlee9420 SMA layer, same API and outputs, vectorised.

    What it computes (as the reference; ``*`` marks where it departs from He et al. 2019):

    1. ``e = (W_q q)(W_k k)^T / sqrt(d_k)`` per head; ``mask`` positions set to the dtype's min.
    2. ``softmax`` over mel frames; rows of ``query_mask`` set to 0.
    3. Focus rate per head ``sum_t max_u softmax / mel_len`` (* normalised by the mel length
       only, not per frame over valid tokens as FastSpeech); the focused head is the argmax;
       ``fr_max`` is its batch mean (a Python float; one host sync).
    4. ``is_tunable=True``: ``p = sigmoid(focused softmax (+ N(0, noise_std) in training))``
       (* so ``p`` lies in ``[0.5, 0.73]``: the expected dwell is 2 to 3.7 frames per token
       whatever the speaking rate, where the paper uses ``sigmoid(energy + r)`` in ``(0, 1)``);
       ``alpha`` from the stepwise recurrence starting at ``aw_prev`` (default one-hot on token 0)
       (* with no length masking: mass flows into padded frames and tokens, and padded values
       enter the context), and ``cv = alpha @ V`` with ``V`` all heads' values concatenated.
       ``is_tunable=False``: per-head ``softmax @ V_h``, heads concatenated.
    5. ``cv = LayerNorm(Dropout(Linear(cv)))`` (no residual).

    Returns ``(cv, attn, fr_max)`` where ``attn`` is the focused head's softmax, not ``alpha``.

    The native :class:`speechattn.nn.StepwiseMonotonicMultiheadAttention` instead takes
    ``*_lengths``, computes ``p`` from the energies plus a learnable per-head bias, keeps all mass
    inside the valid region (``mass="preserve"``), uses FastSpeech's focus rate, returns ``alpha``
    and can decode hard or Viterbi paths.

    Args:
        d_model: model size of ``q``, ``k``, ``v`` and of the output.
        d_k: per-head query/key size.
        d_v: per-head value size.
        noise_std: std of the noise added before the sigmoid in training.
        n_head: number of heads.
        dropout: dropout after ``last_layer``.
        is_tunable: monotonic enhancement on (True) or plain multi-head attention (False).
    """

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
        for name, val in (("d_model", d_model), ("d_k", d_k), ("d_v", d_v), ("n_head", n_head)):
            if not isinstance(val, int) or val <= 0:
                raise ValueError(f"Expected {name} to be a positive int; found {val!r}.")
        self.n_head = n_head
        self.noise_std = noise_std
        self.is_tunable = is_tunable
        self.energy = MultiheadEnergy(n_head, d_model, d_k, d_v)
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
        """Reference forward.

        Args:
            q: ``(b, u, d_model)`` text encodings.
            k: ``(b, t, d_model)`` mel encodings.
            v: ``(b, t, d_model)`` mel encodings.
            mel_len: ``(b,)`` mel lengths (only used to normalise the focus rate).
            mask: ``(b, u, t)`` True/1 = masked energy.
            query_mask: ``(b, u, 1)`` True/1 = padded token.
            aw_prev: ``(b, u, 1)`` alignment before the first frame (tunable only).

        Returns:
            ``cv (b, u, d_model)``, ``attn (b, u, t)`` the focused head's softmax, ``fr_max``.
        """
        d_model = self.last_layer.out_features
        for name, x in (("q", q), ("k", k), ("v", v)):
            if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != d_model:
                found = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(
                    f"Expected {name} of shape (batch, len, {d_model}); found {found}."
                )
        check_nonempty_batch(q, "q", where="StepwiseMonotonicMultiheadAttention (keonlee API)")
        b, u, t = q.shape[0], q.shape[1], k.shape[1]
        if k.shape[0] != b or v.shape[:2] != k.shape[:2]:
            raise ValueError(
                f"Expected k and v of shape ({b}, mel_len, {d_model}); found {tuple(k.shape)} and "
                f"{tuple(v.shape)}."
            )
        dev = q.device
        mask = _as_mask(mask, "mask", (b, u, t), dev)
        query_mask = _as_mask(query_mask, "query_mask", (b, u, -1), dev)
        if not isinstance(mel_len, Tensor):
            mel_len = torch.as_tensor(mel_len, device=dev)
        if mel_len.shape != (b,):
            raise ValueError(f"Expected mel_len of shape ({b},); found {tuple(mel_len.shape)}.")

        qh, kh, vh = self.energy(q, k, v)
        e = torch.matmul(qh, kh.transpose(-1, -2)) / math.sqrt(self.energy.d_k)  # (b, h, u, t)
        if mask is not None:
            e = e.masked_fill(mask[:, None], torch.finfo(e.dtype).min)
        soft = torch.softmax(e, dim=-1)
        if query_mask is not None:
            soft = soft.masked_fill(query_mask[:, None].expand(b, 1, u, t), 0.0)
        fr = soft.amax(dim=2).sum(dim=-1) / mel_len.to(soft.dtype)[:, None]  # (b, h)
        idx = fr.argmax(dim=1)
        attn = select_heads(soft, idx)
        fr_max = float(fr.detach().gather(1, idx[:, None]).mean())
        if self.is_tunable:
            x = attn
            if self.training and self.noise_std > 0:
                x = x + torch.empty_like(x).normal_(std=self.noise_std)
            if aw_prev is None:
                alpha0 = None
            else:
                if aw_prev.shape != (b, u, 1):
                    raise ValueError(
                        f"Expected aw_prev of shape ({b}, {u}, 1); found {tuple(aw_prev.shape)}."
                    )
                alpha0 = aw_prev[..., 0].to(x.dtype)
            alpha = stepwise_monotonic_alignment(
                torch.sigmoid(x), mode="soft", mass="drop", initial_alignment=alpha0
            )
            cv = torch.bmm(alpha, vh.transpose(1, 2).reshape(b, t, -1))
        else:
            cv = torch.matmul(soft, vh).transpose(1, 2).reshape(b, u, -1)
        cv = self.layer_norm(self.dropout(self.last_layer(cv)))
        return cv, attn, fr_max
