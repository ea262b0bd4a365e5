"""Numba CPU kernels for stepwise monotonic alignment (imported on first use only).

Layout: the public ``(N, U, T)`` layout is used as is. The recurrence cell ``(u, t)`` depends on
``(u, t - 1)`` and ``(u - 1, t - 1)``, so the loops run token-outer, frame-inner: every inner
loop walks one contiguous row of ``p``/``alpha``/``grad`` (unit stride), and only the valid
``text_lengths[n] x mel_lengths[n]`` block of each item is touched (padding is never read).
Items run in parallel (``prange`` over ``N``). Functions are compiled on first call per dtype
(float32, float64) and cached on disk (``cache=True``), so later processes start in well under
a second.

Contract: see :mod:`speechattn.kernels`.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from speechattn.kernels import register_sma_kernel

__all__ = ["backward", "forward", "viterbi"]


@njit(parallel=True, cache=True, nogil=True)
def _forward_nb(p, alpha0, tl, ml, preserve, out):  # type: ignore[no-untyped-def]
    N = p.shape[0]
    for n in prange(N):
        L = tl[n]
        M = ml[n]
        for u in range(L):
            a = alpha0[n, u]  # alpha_{t-1}(u)
            absorbing = preserve and u == L - 1
            if u == 0:
                for t in range(M):
                    pu = 1.0 if absorbing else p[n, u, t]
                    a = a * pu
                    out[n, u, t] = a
            else:
                prev = alpha0[n, u - 1]  # alpha_{t-1}(u - 1)
                for t in range(M):
                    pu = 1.0 if absorbing else p[n, u, t]
                    a = a * pu + prev * (1.0 - p[n, u - 1, t])
                    prev = out[n, u - 1, t]
                    out[n, u, t] = a


@njit(parallel=True, cache=True, nogil=True)
def _backward_nb(G, p, alpha, alpha0, tl, ml, preserve, gp, ga0):  # type: ignore[no-untyped-def]
    N = p.shape[0]
    T = p.shape[2]
    for n in prange(N):
        L = tl[n]
        M = ml[n]
        g_up = np.zeros(T + 1, dtype=np.float64)  # g(u + 1, t) for the row above
        g_row = np.zeros(T + 1, dtype=np.float64)
        for u in range(L - 1, -1, -1):
            absorbing = preserve and u == L - 1
            g_next = 0.0  # g(u, t + 1)
            h = 0.0
            for t in range(M - 1, -1, -1):
                if t + 1 < M:
                    pt1 = 1.0 if absorbing else p[n, u, t + 1]
                    h = g_up[t + 1] + pt1 * (g_next - g_up[t + 1])
                else:
                    h = 0.0
                g = G[n, u, t] + h
                g_row[t] = g
                if absorbing:
                    gp[n, u, t] = 0.0
                else:
                    aprev = alpha0[n, u] if t == 0 else alpha[n, u, t - 1]
                    gp[n, u, t] = aprev * (g - g_up[t])
                g_next = g
            p0 = 1.0 if absorbing else p[n, u, 0]
            ga0[n, u] = g_up[0] + p0 * (g_row[0] - g_up[0])
            tmp = g_up
            g_up = g_row
            g_row = tmp


@njit(parallel=True, cache=True, nogil=True)
def _viterbi_nb(lp, l1p, tl, ml, path, dur):  # type: ignore[no-untyped-def]
    N = lp.shape[0]
    T = lp.shape[2]
    U = lp.shape[1]
    for n in prange(N):
        L = tl[n]
        M = ml[n]
        delta = np.full((L, M), -np.inf)
        adv = np.zeros((L, M), dtype=np.uint8)
        # u = 0 can only stay.
        delta[0, 0] = 0.0
        for t in range(1, M):
            delta[0, t] = delta[0, t - 1] + lp[n, 0, t]
        for u in range(1, L):
            for t in range(1, M):
                s = delta[u, t - 1] + lp[n, u, t]
                a = delta[u - 1, t - 1] + l1p[n, u - 1, t]
                if a > s:
                    delta[u, t] = a
                    adv[u, t] = 1
                else:
                    delta[u, t] = s
        u = L - 1
        for t in range(M - 1, -1, -1):
            path[n, u, t] = True
            dur[n, u] += 1
            if t > 0 and adv[u, t] == 1:
                u -= 1
        _ = T + U  # shapes are implied by the buffers


def _np(x: Tensor) -> np.ndarray:
    return x.detach().contiguous().numpy()


def forward(
    p: Tensor, alpha0: Tensor, text_lengths: Tensor, mel_lengths: Tensor, preserve: bool
) -> Tensor:
    """Numba forward (kernel contract); CPU float32/float64 ``(N, U, T)``."""
    out = torch.zeros(p.shape, dtype=p.dtype)
    _forward_nb(
        _np(p),
        _np(alpha0.to(p.dtype)),
        _np(text_lengths.to(torch.int64)),
        _np(mel_lengths.to(torch.int64)),
        bool(preserve),
        out.numpy(),
    )
    return out


def backward(
    grad_alpha: Tensor,
    p: Tensor,
    alpha: Tensor,
    alpha0: Tensor,
    text_lengths: Tensor,
    mel_lengths: Tensor,
    preserve: bool,
) -> tuple[Tensor, Tensor]:
    """Numba closed-form adjoint (kernel contract): ``(grad_p, grad_alpha0)``."""
    gp = torch.zeros(p.shape, dtype=p.dtype)
    ga0 = torch.zeros(alpha0.shape, dtype=p.dtype)
    _backward_nb(
        _np(grad_alpha.to(p.dtype)),
        _np(p),
        _np(alpha),
        _np(alpha0.to(p.dtype)),
        _np(text_lengths.to(torch.int64)),
        _np(mel_lengths.to(torch.int64)),
        bool(preserve),
        gp.numpy(),
        ga0.numpy(),
    )
    return gp, ga0


def viterbi(lp: Tensor, l1p: Tensor, tl: Tensor, ml: Tensor) -> tuple[Tensor, Tensor]:
    """Forced-end monotonic Viterbi on float64 log-probs ``(N, U, T)``: ``(path bool, durations)``."""
    N, U, T = lp.shape
    path = torch.zeros((N, U, T), dtype=torch.bool)
    dur = torch.zeros((N, U), dtype=torch.int64)
    _viterbi_nb(
        _np(lp.to(torch.float64)),
        _np(l1p.to(torch.float64)),
        _np(tl.to(torch.int64)),
        _np(ml.to(torch.int64)),
        path.numpy(),
        dur.numpy(),
    )
    return path, dur


register_sma_kernel("numba", forward, backward, devices=("cpu",))
