"""Slow float64 loop oracles of the diagonal priors, written from their formulas.

Plain Python loops over every (b, h, i, j); no vectorisation, no shared code with the library.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

NEG = float("-inf")


def diagonal_bias_ref(
    query_lengths: list[int],
    key_lengths: list[int],
    tq: int,
    tk: int,
    *,
    kind: str,
    scale: float,
    width: float,
    sigma: float,
    distance: str,
    slopes: list[float] | None = None,
) -> Tensor:
    """(B, H, Tq, Tk) float64; padded keys -inf (the library uses finfo.min), padded rows 0."""
    b_n = len(query_lengths)
    heads = [1.0] if slopes is None else list(slopes)
    out = torch.zeros(b_n, len(heads), tq, tk, dtype=torch.float64)
    for b in range(b_n):
        lq, lk = query_lengths[b], key_lengths[b]
        for h, slope in enumerate(heads):
            for i in range(tq):
                for j in range(tk):
                    if i >= lq or lk == 0:
                        val = 0.0
                    elif j >= lk:
                        val = NEG
                    else:
                        d = (i / lq - j / lk) if distance == "relative" else float(i - j)
                        if kind == "linear":
                            pen = max(0.0, abs(d) - width)
                        elif kind == "gaussian":
                            pen = d * d / (2.0 * sigma * sigma)
                        elif kind == "band":
                            pen = 1.0 if abs(d) > width else 0.0
                        else:
                            raise ValueError(kind)
                        val = -scale * slope * pen
                    out[b, h, i, j] = val
    return out


def seed_penalty_loop(tq: int, tk: int, width: int) -> Tensor:
    """The tfsr seed's create_attention_penalty, literally: sum of (band_part(ones, n, n) - 1)."""
    m = max(tq, tk)
    accum = torch.zeros(tq, tk, dtype=torch.float64)
    for n in range(width - 1, m - 1):
        for i in range(tq):
            for j in range(tk):
                inside = (i - j) <= n and (j - i) <= n  # tf.linalg.band_part(ones, n, n)
                accum[i, j] += (1.0 if inside else 0.0) - 1.0
    return accum


def seed_post_softmax_ref(
    scores: Tensor, penalty: Tensor, scale: float, key_lengths: list[int]
) -> Tensor:
    """The seed's steps with loops: masked softmax, + penalty*scale, + |global min|, renormalise."""
    b_n, h_n, tq, tk = scores.shape
    w = torch.zeros(b_n, h_n, tq, tk, dtype=torch.float64)
    for b in range(b_n):
        for h in range(h_n):
            for i in range(tq):
                logits = [
                    float(scores[b, h, i, j]) + (-1e9 if j >= key_lengths[b] else 0.0)
                    for j in range(tk)
                ]
                mx = max(logits)
                ex = [math.exp(x - mx) for x in logits]
                s = sum(ex)
                for j in range(tk):
                    w[b, h, i, j] = ex[j] / s + scale * float(penalty[b, h, i, j])
    shift = abs(float(w.min()))
    w = w + shift
    for b in range(b_n):
        for h in range(h_n):
            for i in range(tq):
                s = float(w[b, h, i].sum())
                w[b, h, i] /= s
    return w


def guided_attention_loss_ref(
    attn: Tensor, query_lengths: list[int], key_lengths: list[int], sigma: float
) -> float:
    """mean over valid (b, [h,] i, j) of A * (1 - exp(-(i/Lq - j/Lk)^2 / (2 sigma^2)))."""
    a = attn if attn.dim() == 4 else attn[:, None]
    total, count = 0.0, 0
    for b in range(a.shape[0]):
        lq, lk = query_lengths[b], key_lengths[b]
        for h in range(a.shape[1]):
            for i in range(lq):
                for j in range(lk):
                    w = 1.0 - math.exp(-((i / lq - j / lk) ** 2) / (2.0 * sigma * sigma))
                    total += float(a[b, h, i, j]) * w
                    count += 1
    return total / count if count else 0.0


def _log_beta(x: float, y: float) -> float:
    return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)


def betabinom_pmf(k: int, n: int, a: float, b: float) -> float:
    """Beta-binomial pmf from its definition C(n, k) B(k + a, n - k + b) / B(a, b)."""
    if k < 0 or k > n:
        return 0.0
    return math.comb(n, k) * math.exp(_log_beta(k + a, n - k + b) - _log_beta(a, b))


def beta_binomial_prior_ref(
    text_lengths: list[int], mel_lengths: list[int], tu: int, tt: int, scaling: float, n_offset: int
) -> Tensor:
    """(B, T, U) float64. ``n_offset=-1``: n = U - 1 (ours); ``0``: n = U (NeMo, last bin dropped)."""
    out = torch.zeros(len(text_lengths), tt, tu, dtype=torch.float64)
    for b, (u_len, t_len) in enumerate(zip(text_lengths, mel_lengths)):
        if u_len == 0:
            continue
        n = u_len + n_offset
        for t in range(t_len):
            i = t + 1
            a, bb = scaling * i, scaling * (t_len + 1 - i)
            for k in range(u_len):
                out[b, t, k] = betabinom_pmf(k, n, a, bb)
    return out


def attention_ref(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Tensor | None,
    query_lengths: list[int],
    key_lengths: list[int],
    causal: bool,
) -> tuple[Tensor, Tensor]:
    """softmax over valid keys of q.k/sqrt(d) + bias; padded rows 0. (out, weights) float64."""
    b_n, h_n, tq, d = q.shape
    tk = k.shape[2]
    out = torch.zeros(b_n, h_n, tq, v.shape[-1], dtype=torch.float64)
    w = torch.zeros(b_n, h_n, tq, tk, dtype=torch.float64)
    for b in range(b_n):
        for h in range(h_n):
            for i in range(query_lengths[b]):
                keys = [j for j in range(key_lengths[b]) if not (causal and j > i)]
                if not keys:
                    continue
                logits = []
                for j in keys:
                    s = float((q[b, h, i].double() * k[b, h, j].double()).sum()) / math.sqrt(d)
                    if bias is not None:
                        s += float(bias[b % bias.shape[0], h % bias.shape[1], i, j])
                    logits.append(s)
                mx = max(logits)
                ex = [math.exp(x - mx) for x in logits]
                z = sum(ex)
                for j, e in zip(keys, ex):
                    w[b, h, i, j] = e / z
                    out[b, h, i] += (e / z) * v[b, h, j].double()
    return out, w
