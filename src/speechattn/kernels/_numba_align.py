"""Numba CPU kernels for monotonic alignment decoding and the monotonic HMM (imported on first use).

The pure-torch specifications are in :mod:`speechattn.functional.alignment`
(``_viterbi_torch`` and the frame loop of ``monotonic_hmm_log_likelihood``); these kernels compute
the same in float64, item by item, touching only each item's valid ``U_b x M_b`` block.

* :func:`viterbi` -- the one monotonic Viterbi (MAS, :func:`~speechattn.functional.monotonic_hmm_viterbi`
  and :func:`~speechattn.functional.monotonic_viterbi`): best path under emissions and stay/move
  transition scores, forced to start on token 0 and end on the last valid token; ties stay.
* :func:`viterbi_skip` -- the same with skip transitions over optional tokens (pauses, edge
  silences may take 0 frames); spec ``_viterbi_skip_torch``.
* :func:`hmm_log_likelihood` -- the monotonic HMM forward algorithm with a compiled
  forward-backward whose gradients are the state / transition posteriors.

Serial ``njit(cache=True, nogil=True)`` functions (compiled on the first call per process unless
numba's on-disk cache already holds them); items are dealt round-robin to
``torch.get_num_threads()`` Python threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from numba import njit
from torch import Tensor

from speechattn.kernels import _eager

__all__ = ["hmm_log_likelihood", "viterbi", "viterbi_skip", "warmup"]

_NEG = -1e30


@njit(cache=True, nogil=True)
def _viterbi_one(value, stay, move, out, tu, tt):  # type: ignore[no-untyped-def]
    # value (U, T) log emission; stay/move (U, T) log transition scores into frame t.
    neg = -1e30
    acc = np.full((tu, tt), neg)
    acc[0, 0] = value[0, 0]
    for t in range(1, tt):
        lo = max(0, tu - (tt - t))
        hi = min(tu - 1, t)
        for u in range(lo, hi + 1):
            s = acc[u, t - 1] + stay[u, t]
            m = acc[u - 1, t - 1] + move[u - 1, t] if u > 0 else neg
            acc[u, t] = (s if s >= m else m) + value[u, t]
    u = tu - 1
    for t in range(tt - 1, -1, -1):
        out[u, t] = 1.0
        if t > 0 and u > 0:
            s = acc[u, t - 1] + stay[u, t]
            m = acc[u - 1, t - 1] + move[u - 1, t]
            if m > s or u == t:
                u -= 1


@njit(cache=True, nogil=True)
def _viterbi_batch(value, stay, move, out, tl, ml, start, step):  # type: ignore[no-untyped-def]
    for i in range(start, value.shape[0], step):
        _viterbi_one(value[i], stay[i], move[i], out[i], tl[i], ml[i])


@njit(cache=True, nogil=True)
def _viterbi_skip_one(value, stay, move, skip, out, tu, tt):  # type: ignore[no-untyped-def]
    # skip (U,): score of passing token u with 0 frames, <= -1e30 / 2 where it must take a frame.
    neg = -1e30
    acc = np.full((tu, tt), neg)
    src = np.full((tu, tt), -1, dtype=np.int64)
    e = 0.0
    for u in range(tu):  # frame 0: token 0, or a later one with every earlier token skipped
        if u > 0:
            e = max(e + skip[u - 1], neg)
        acc[u, 0] = max(e + value[u, 0], neg)
    for t in range(1, tt):
        e_prev = neg
        s_prev = -1
        for u in range(tu):
            if u > 0:
                m = acc[u - 1, t - 1] + move[u - 1, t]
                msrc = u - 1
                c = e_prev + skip[u - 1]
                if c > m:
                    m = c
                    msrc = s_prev
            else:
                m = neg
                msrc = -1
            m = max(m, neg)
            e_prev = m
            s_prev = msrc
            s = acc[u, t - 1] + stay[u, t]
            if s >= m:
                acc[u, t] = max(s + value[u, t], neg)
                src[u, t] = u
            else:
                acc[u, t] = max(m + value[u, t], neg)
                src[u, t] = msrc
    best = -np.inf
    bu = tu - 1
    tail = 0.0
    for u in range(tu - 1, -1, -1):  # end on the last token, or earlier with the rest skipped
        sc = acc[u, tt - 1] + tail
        if sc > best:
            best = sc
            bu = u
        tail += skip[u]
    u = bu
    for t in range(tt - 1, -1, -1):
        out[u, t] = 1.0
        if t > 0:
            u = src[u, t]


@njit(cache=True, nogil=True)
def _viterbi_skip_batch(value, stay, move, skip, out, tl, ml, start, step):  # type: ignore[no-untyped-def]
    for i in range(start, value.shape[0], step):
        _viterbi_skip_one(value[i], stay[i], move[i], skip[i], out[i], tl[i], ml[i])


@njit(cache=True, nogil=True)
def _lse(a, b):  # type: ignore[no-untyped-def]
    if a < b:
        a, b = b, a
    if b <= -1e29:
        return a
    return a + np.log1p(np.exp(b - a))


@njit(cache=True, nogil=True)
def _fb_one(emis, stay, move, ge, gs, gm, tu, tt):  # type: ignore[no-untyped-def]
    neg = -1e30
    alpha = np.full((tu, tt), neg)
    beta = np.full((tu, tt), neg)
    alpha[0, 0] = emis[0, 0]
    for t in range(1, tt):
        for u in range(min(tu, t + 1)):
            a = alpha[u, t - 1] + stay[u, t]
            if u > 0:
                a = _lse(a, alpha[u - 1, t - 1] + move[u - 1, t])
            alpha[u, t] = max(a + emis[u, t], neg)
    ll = alpha[tu - 1, tt - 1]
    beta[tu - 1, tt - 1] = 0.0
    for t in range(tt - 2, -1, -1):
        for u in range(tu):
            b = beta[u, t + 1] + stay[u, t + 1] + emis[u, t + 1]
            if u + 1 < tu:
                b = _lse(b, beta[u + 1, t + 1] + move[u, t + 1] + emis[u + 1, t + 1])
            beta[u, t] = max(b, neg)
    if ll <= -1e29:
        return ll
    for t in range(tt):
        for u in range(tu):
            ge[u, t] = np.exp(min(alpha[u, t] + beta[u, t] - ll, 0.0))
            if t > 0:
                gs[u, t] = np.exp(
                    min(alpha[u, t - 1] + stay[u, t] + emis[u, t] + beta[u, t] - ll, 0.0)
                )
                if u + 1 < tu:
                    gm[u, t] = np.exp(
                        min(
                            alpha[u, t - 1] + move[u, t] + emis[u + 1, t] + beta[u + 1, t] - ll,
                            0.0,
                        )
                    )
    return ll


@njit(cache=True, nogil=True)
def _fb_batch(emis, stay, move, tl, ml, ge, gs, gm, out, start, step):  # type: ignore[no-untyped-def]
    for i in range(start, emis.shape[0], step):
        out[i] = _fb_one(emis[i], stay[i], move[i], ge[i], gs[i], gm[i], tl[i], ml[i])


def _f64(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to(device="cpu", dtype=torch.float64).numpy())


def _i64(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to(device="cpu", dtype=torch.int64).numpy())


def _run(kernel: Any, args: tuple[Any, ...], n_items: int, cells: int) -> None:
    """Run ``kernel(*args, start, step)`` on up to ``torch.get_num_threads()`` threads."""
    n = max(1, min(torch.get_num_threads(), n_items))
    if n == 1 or cells < 1 << 14:
        kernel(*args, 0, 1)
        return
    pool = _POOLS.get(n - 1)
    if pool is None:
        pool = _POOLS[n - 1] = ThreadPoolExecutor(n - 1, thread_name_prefix="speechattn-align")

    def part(i: int) -> None:
        kernel(*args, i, n)

    futures = [pool.submit(part, i) for i in range(1, n)]
    part(0)  # the calling thread takes a share itself
    for f in futures:
        f.result()


_POOLS: dict[int, ThreadPoolExecutor] = {}


@_eager
def viterbi(value: Tensor, stay: Tensor, move: Tensor, tl: Tensor, ml: Tensor) -> Tensor:
    """Best monotonic path (float64 ``(N, U, T)`` one-hot) of sanitised scores.

    Args:
        value, stay, move: ``(N, U, T)`` log emission / stay / move scores (padding zero).
        tl, ml: int64 ``(N,)`` valid tokens / frames, ``1 <= tl <= ml``.

    Returns:
        float64 CPU ``(N, U, T)`` path, one-hot over tokens on valid frames, zero elsewhere.
    """
    n, u, t = value.shape
    out = np.zeros((n, u, t), dtype=np.float64)
    _run(
        _viterbi_batch, (_f64(value), _f64(stay), _f64(move), out, _i64(tl), _i64(ml)), n, n * u * t
    )
    return torch.from_numpy(out)


@_eager
def viterbi_skip(
    value: Tensor, stay: Tensor, move: Tensor, skip: Tensor, tl: Tensor, ml: Tensor
) -> Tensor:
    """:func:`viterbi` with skip transitions: ``skip`` float64 ``(N, U)`` scores of passing each
    token with 0 frames (``<= -1e30 / 2`` where the token must take a frame); ``ml`` at least the
    number of tokens that must take a frame."""
    n, u, t = value.shape
    out = np.zeros((n, u, t), dtype=np.float64)
    _run(
        _viterbi_skip_batch,
        (_f64(value), _f64(stay), _f64(move), _f64(skip), out, _i64(tl), _i64(ml)),
        n,
        n * u * t,
    )
    return torch.from_numpy(out)


class _HMMForwardBackward(torch.autograd.Function):
    """Monotonic-HMM log-likelihood with a compiled forward-backward (gradients = posteriors)."""

    @staticmethod
    def forward(ctx, emis: Tensor, stay: Tensor, move: Tensor, tl: Tensor, ml: Tensor) -> Tensor:  # type: ignore[override]
        e, s, m = _f64(emis), _f64(stay), _f64(move)
        ge, gs, gm = np.zeros_like(e), np.zeros_like(e), np.zeros_like(e)
        out = np.zeros(e.shape[0])
        _run(_fb_batch, (e, s, m, _i64(tl), _i64(ml), ge, gs, gm, out), e.shape[0], e.size)
        dev, dt = emis.device, emis.dtype
        ctx.save_for_backward(
            torch.from_numpy(ge).to(dev, dt),
            torch.from_numpy(gs).to(dev, dt),
            torch.from_numpy(gm).to(dev, dt),
        )
        return torch.from_numpy(out).to(dev, dt)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        ge, gs, gm = ctx.saved_tensors
        g = grad.view(-1, 1, 1)
        return g * ge, g * gs, g * gm, None, None


@_eager
def hmm_log_likelihood(emis: Tensor, stay: Tensor, move: Tensor, tl: Tensor, ml: Tensor) -> Tensor:
    """Per-item monotonic-HMM log-likelihood ``(N,)`` of sanitised scores; differentiable (first order).

    Args:
        emis: ``(N, U, T)`` log emissions, padded tokens ``-1e30``, padded frames 0.
        stay, move: ``(N, U, T)`` log transition scores, padding 0.
        tl, ml: int64 ``(N,)``.
    """
    return _HMMForwardBackward.apply(emis, stay, move, tl, ml)


def warmup() -> None:
    """Compile (or load from numba's cache) every kernel of this module on a tiny input."""
    z = torch.zeros(1, 2, 3, dtype=torch.float64)
    one = torch.tensor([2])
    viterbi(z, z, z, one, torch.tensor([3]))
    viterbi_skip(z, z, z, torch.zeros(1, 2, dtype=torch.float64), one, torch.tensor([3]))
    hmm_log_likelihood(z, z, z, one, torch.tensor([3]))
