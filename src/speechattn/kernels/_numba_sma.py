"""Numba CPU kernels for stepwise monotonic alignment (imported on first use only).

Layout: the public ``(N, U, T)`` layout is used as is. The recurrence cell ``(u, t)`` depends on
``(u, t - 1)`` and ``(u - 1, t - 1)``, so the loops run token-outer, frame-inner: every inner
loop walks one contiguous row of ``p``/``alpha``/``grad`` (unit stride), and only the valid
``text_lengths[n] x mel_lengths[n]`` block of each item is touched (padding is never read).
Items run in parallel on ``torch.get_num_threads()`` Python threads (the kernels release the
GIL; items are dealt round-robin so ragged lengths balance). Serial ``njit`` functions are used
rather than ``parallel=True`` because they compile several times faster: the first call per
dtype (float32, float64) compiles in a few seconds, and ``cache=True`` keeps the machine code
on disk so later processes only load it.

Contract: see :mod:`speechattn.kernels`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from numba import njit
from torch import Tensor

from speechattn.kernels import register_sma_kernel

__all__ = ["backward", "forward", "in_unit_interval", "viterbi"]


# Rows are processed in blocks of four: row u + 1 at frame t needs row u at frame t - 1, so the
# four rows of a block advance together frame by frame as four independent dependency chains
# (instruction-level parallelism), instead of one serial multiply-add chain per row.


@njit(cache=True, nogil=True, inline="always")
def _stay(p, n, u, t, absorbing_row):  # type: ignore[no-untyped-def]
    return 1.0 if u == absorbing_row else p[n, u, t]


@njit(cache=True, nogil=True)
def _forward_nb(p, alpha0, tl, ml, preserve, out, start, step):  # type: ignore[no-untyped-def]
    N, U, T = p.shape
    for n in range(start, N, step):
        L = tl[n]
        M = ml[n]
        absorbing = L - 1 if preserve else -1
        nblk = L // 4
        for blk in range(nblk):
            u0 = 4 * blk
            a0 = alpha0[n, u0]
            a1 = alpha0[n, u0 + 1]
            a2 = alpha0[n, u0 + 2]
            a3 = alpha0[n, u0 + 3]
            below = alpha0[n, u0 - 1] if u0 > 0 else 0.0  # alpha_{t-1}(u0 - 1)
            for t in range(M):
                q0 = _stay(p, n, u0, t, absorbing)
                q1 = _stay(p, n, u0 + 1, t, absorbing)
                q2 = _stay(p, n, u0 + 2, t, absorbing)
                q3 = _stay(p, n, u0 + 3, t, absorbing)
                # Advance factors use the raw p of the row below (never the absorbing row).
                adv_in = below * (1.0 - p[n, u0 - 1, t]) if u0 > 0 else 0.0
                b0 = a0 * q0 + adv_in
                b1 = a1 * q1 + a0 * (1.0 - q0)
                b2 = a2 * q2 + a1 * (1.0 - q1)
                b3 = a3 * q3 + a2 * (1.0 - q2)
                out[n, u0, t] = b0
                out[n, u0 + 1, t] = b1
                out[n, u0 + 2, t] = b2
                out[n, u0 + 3, t] = b3
                a0, a1, a2, a3 = b0, b1, b2, b3
                if u0 > 0:
                    below = out[n, u0 - 1, t]
            for u in range(u0, u0 + 4):
                for t in range(M, T):
                    out[n, u, t] = 0.0
        for u in range(4 * nblk, L):
            a = alpha0[n, u]  # alpha_{t-1}(u)
            below = alpha0[n, u - 1] if u > 0 else 0.0
            for t in range(M):
                q = _stay(p, n, u, t, absorbing)
                adv_in = below * (1.0 - p[n, u - 1, t]) if u > 0 else 0.0
                a = a * q + adv_in
                if u > 0:
                    below = out[n, u - 1, t]
                out[n, u, t] = a
            for t in range(M, T):
                out[n, u, t] = 0.0
        for u in range(L, U):
            for t in range(T):
                out[n, u, t] = 0.0


@njit(cache=True, nogil=True)
def _backward_nb(G, p, alpha, alpha0, tl, ml, preserve, gp, ga0, start, step):  # type: ignore[no-untyped-def]
    N, U, T = p.shape
    for n in range(start, N, step):
        L = tl[n]
        M = ml[n]
        absorbing = L - 1 if preserve else -1
        g_up = np.zeros(T + 1, dtype=np.float64)  # g(u + 1, t) of the row above
        for u in range(L, U):
            for t in range(T):
                gp[n, u, t] = 0.0
            ga0[n, u] = 0.0
        nblk = L // 4
        # Tail rows above the last full block, one at a time, top down.
        for u in range(L - 1, 4 * nblk - 1, -1):
            g_next = 0.0  # g(u, t + 1)
            for t in range(M - 1, -1, -1):
                h = 0.0
                if t + 1 < M:
                    q = _stay(p, n, u, t + 1, absorbing)
                    h = g_up[t + 1] + q * (g_next - g_up[t + 1])
                g = G[n, u, t] + h
                aprev = alpha0[n, u] if t == 0 else alpha[n, u, t - 1]
                gp[n, u, t] = 0.0 if u == absorbing else aprev * (g - g_up[t])
                g_up[t + 1] = g_next  # row u's g(t + 1) is no longer needed as g(u + 1)
                g_next = g
            q = _stay(p, n, u, 0, absorbing)
            ga0[n, u] = g_up[0] + q * (g_next - g_up[0])
            # g_up now holds row u (each g_up[t + 1] was overwritten once it was consumed).
            g_up[0] = g_next
            for t in range(M, T):
                gp[n, u, t] = 0.0
        for blk in range(nblk - 1, -1, -1):
            u0 = 4 * blk
            # g(u0 + k, t + 1) for k = 0..3 and g(u0 + 4, t + 1) from the buffer.
            n0 = 0.0
            n1 = 0.0
            n2 = 0.0
            n3 = 0.0
            for t in range(M - 1, -1, -1):
                top_next = g_up[t + 1] if t + 1 < M else 0.0
                top = g_up[t]
                if t + 1 < M:
                    h0 = n1 + _stay(p, n, u0, t + 1, absorbing) * (n0 - n1)
                    h1 = n2 + _stay(p, n, u0 + 1, t + 1, absorbing) * (n1 - n2)
                    h2 = n3 + _stay(p, n, u0 + 2, t + 1, absorbing) * (n2 - n3)
                    h3 = top_next + _stay(p, n, u0 + 3, t + 1, absorbing) * (n3 - top_next)
                else:
                    h0 = 0.0
                    h1 = 0.0
                    h2 = 0.0
                    h3 = 0.0
                c0 = G[n, u0, t] + h0
                c1 = G[n, u0 + 1, t] + h1
                c2 = G[n, u0 + 2, t] + h2
                c3 = G[n, u0 + 3, t] + h3
                if t > 0:
                    gp[n, u0, t] = alpha[n, u0, t - 1] * (c0 - c1)
                    gp[n, u0 + 1, t] = alpha[n, u0 + 1, t - 1] * (c1 - c2)
                    gp[n, u0 + 2, t] = alpha[n, u0 + 2, t - 1] * (c2 - c3)
                    gp[n, u0 + 3, t] = alpha[n, u0 + 3, t - 1] * (c3 - top)
                else:
                    gp[n, u0, t] = alpha0[n, u0] * (c0 - c1)
                    gp[n, u0 + 1, t] = alpha0[n, u0 + 1] * (c1 - c2)
                    gp[n, u0 + 2, t] = alpha0[n, u0 + 2] * (c2 - c3)
                    gp[n, u0 + 3, t] = alpha0[n, u0 + 3] * (c3 - top)
                if t + 1 < M:
                    g_up[t + 1] = n0  # the buffer becomes row u0, one frame behind
                n0, n1, n2, n3 = c0, c1, c2, c3
            q0 = _stay(p, n, u0, 0, absorbing)
            q1 = _stay(p, n, u0 + 1, 0, absorbing)
            q2 = _stay(p, n, u0 + 2, 0, absorbing)
            q3 = _stay(p, n, u0 + 3, 0, absorbing)
            ga0[n, u0] = n1 + q0 * (n0 - n1)
            ga0[n, u0 + 1] = n2 + q1 * (n1 - n2)
            ga0[n, u0 + 2] = n3 + q2 * (n2 - n3)
            ga0[n, u0 + 3] = g_up[0] + q3 * (n3 - g_up[0])
            g_up[0] = n0
            for u in range(u0, u0 + 4):
                if u == absorbing:
                    for t in range(M):
                        gp[n, u, t] = 0.0
                for t in range(M, T):
                    gp[n, u, t] = 0.0


@njit(cache=True, nogil=True)
def _viterbi_nb(lp, l1p, tl, ml, path, dur, start, step):  # type: ignore[no-untyped-def]
    N = lp.shape[0]
    for n in range(start, N, step):
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


@njit(cache=True, nogil=True)
def _bits_range_nb(bits, tl, ml, out, start, step):  # type: ignore[no-untyped-def]
    # Integer min/max of the IEEE bit patterns over each item's valid block (vectorises; no
    # floating-point NaN semantics needed): non-negative floats order like their bit patterns,
    # negative values (and -0.0) have the sign bit set, NaN and +inf lie above 1.0's pattern.
    N = bits.shape[0]
    for n in range(start, N, step):
        lo = bits[n, 0, 0]
        hi = bits[n, 0, 0]
        for u in range(tl[n]):
            for t in range(ml[n]):
                b = bits[n, u, t]
                lo = min(lo, b)
                hi = max(hi, b)
        out[n, 0] = lo
        out[n, 1] = hi


def _np(x: Tensor) -> np.ndarray:
    return x.detach().contiguous().numpy()


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
# Below this many cells a call runs on the calling thread (thread hand-off costs ~50 us).
_MIN_CELLS_PER_THREAD = 1 << 16


def _run(kernel: Any, args: tuple[Any, ...], n_items: int, cells: int) -> None:
    """Run ``kernel(*args, start, step)`` over items, split round-robin across threads."""
    global _POOL, _POOL_SIZE
    workers = max(1, min(torch.get_num_threads(), n_items, cells // _MIN_CELLS_PER_THREAD))
    if workers == 1:
        kernel(*args, 0, 1)
        return
    if _POOL is None or _POOL_SIZE < workers:
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="speechattn-sma")
        _POOL_SIZE = workers
    futures = [_POOL.submit(kernel, *(*args, k, workers)) for k in range(1, workers)]
    kernel(*args, 0, workers)
    for fut in futures:
        fut.result()


def forward(
    p: Tensor, alpha0: Tensor, text_lengths: Tensor, mel_lengths: Tensor, preserve: bool
) -> Tensor:
    """Numba forward (kernel contract); CPU float32/float64 ``(N, U, T)``."""
    out = torch.empty(p.shape, dtype=p.dtype)
    args = (
        _np(p),
        _np(alpha0.to(p.dtype)),
        _np(text_lengths.to(torch.int64)),
        _np(mel_lengths.to(torch.int64)),
        bool(preserve),
        out.numpy(),
    )
    _run(_forward_nb, args, p.shape[0], p.numel())
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
    gp = torch.empty(p.shape, dtype=p.dtype)
    ga0 = torch.empty(alpha0.shape, dtype=p.dtype)
    args = (
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
    _run(_backward_nb, args, p.shape[0], p.numel())
    return gp, ga0


def in_unit_interval(p: Tensor, text_lengths: Tensor, mel_lengths: Tensor) -> bool:
    """True when every valid entry of CPU float32/float64 ``p`` ``(N, U, T)`` lies in
    ``[+0.0, 1.0]`` (False also for -0.0, which callers re-check exactly). No OpenMP: the check
    runs on the kernels' own threads."""
    N = p.shape[0]
    if N == 0 or p.numel() == 0:
        return True
    if p.dtype == torch.float32:
        bits, one = p.contiguous().view(torch.int32), 0x3F800000
    elif p.dtype == torch.float64:
        bits, one = p.contiguous().view(torch.int64), 0x3FF0000000000000
    else:
        raise TypeError(f"in_unit_interval expects float32/float64; found {p.dtype}.")
    out = np.empty((N, 2), dtype=np.int64)
    args = (bits.numpy(), _np(text_lengths.to(torch.int64)), _np(mel_lengths.to(torch.int64)), out)
    _run(_bits_range_nb, args, N, p.numel())
    return bool(out[:, 0].min() >= 0 and out[:, 1].max() <= one)


def viterbi(lp: Tensor, l1p: Tensor, tl: Tensor, ml: Tensor) -> tuple[Tensor, Tensor]:
    """Forced-end monotonic Viterbi on float64 log-probs ``(N, U, T)``: ``(path bool, durations)``."""
    N, U, T = lp.shape
    path = torch.zeros((N, U, T), dtype=torch.bool)
    dur = torch.zeros((N, U), dtype=torch.int64)
    args = (
        _np(lp.to(torch.float64)),
        _np(l1p.to(torch.float64)),
        _np(tl.to(torch.int64)),
        _np(ml.to(torch.int64)),
        path.numpy(),
        dur.numpy(),
    )
    _run(_viterbi_nb, args, N, lp.numel())
    return path, dur


register_sma_kernel("numba", forward, backward, devices=("cpu",))
