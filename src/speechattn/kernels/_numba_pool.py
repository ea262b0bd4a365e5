"""Numba CPU kernels for the attentive-statistics elementwise stages (imported on first use only).

Used by the fused path of :func:`speechattn.functional.attentive_pool_mean_std`: the matmuls and
the softmax stay in torch; these kernels replace the chains of torch elementwise passes that
compute the attentive statistics from the softmax weights (forward) and the gradients of the
statistics (backward), one pass per row of ``T`` frames held in L1 instead of 6-10 passes over
multi-MiB tiles. The torch-ops twin is the same engine with ``impl="tiled"``; the spec is ``impl="torch"``.

Layout (one folded batch tile, see :mod:`speechattn.kernels._tiled_pool`): ``alpha (H, Q, S, b, T)``
with ``S`` in ``{1, C}`` (``s(c) = c`` or ``0``), ``x (H, C, b, T)``, statistics ``(H, Q, C, b)``
(any strides: a permuted view of the ``(B, H, Q, C)`` result is written in place).

Forward: ``mean = sum_t a x``, ``var = sum_t a (x - mean)^2`` (centred form).
Backward, with ``u = x - mean``, ``gm = dL/dmean``, ``gv = dL/dvar``:
``dL/dx = sum_q a (gm + 2 gv u)`` and ``dL/ds = a (u (gm + gv u) - gv var)`` (summed over
``C`` when ``S = 1``), ``s`` the softmax logits.

Serial ``njit(cache=True, nogil=True)`` functions: the first call per dtype compiles in a few
seconds and the machine code is cached on disk; rows are split over ``torch.get_num_threads()``
threads (the calling thread and a persistent pool) (channels when ``S = C``, heads when ``S = 1``, so no two threads write the same
output). ``fastmath`` lets the reductions vectorise (the summation order differs from torch's
by rounding only).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from numba import njit
from torch import Tensor

__all__ = ["stats_backward", "stats_forward", "warmup"]


@njit(cache=True, nogil=True, fastmath=True)
def _forward_nb(alpha, x, mean, var, zero, h0, h1, c0, c1):  # type: ignore[no-untyped-def]
    _, Q, S, B, T = alpha.shape
    for h in range(h0, h1):
        for q in range(Q):
            for c in range(c0, c1):
                s = c if S > 1 else 0
                for j in range(B):
                    m = zero
                    for t in range(T):
                        m += alpha[h, q, s, j, t] * x[h, c, j, t]
                    v = zero
                    for t in range(T):
                        d = x[h, c, j, t] - m
                        v += alpha[h, q, s, j, t] * d * d
                    mean[h, q, c, j] = m
                    var[h, q, c, j] = v


@njit(cache=True, nogil=True, fastmath=True)
def _backward_nb(alpha, x, mean, gm, gv, var, gx, g, zero, h0, h1, c0, c1):  # type: ignore[no-untyped-def]
    _, Q, S, B, T = alpha.shape
    for h in range(h0, h1):
        for c in range(c0, c1):
            for j in range(B):
                for t in range(T):
                    gx[h, c, j, t] = zero
        if S == 1:
            for q in range(Q):
                for j in range(B):
                    for t in range(T):
                        g[h, q, 0, j, t] = zero
        for q in range(Q):
            for c in range(c0, c1):
                for j in range(B):
                    mu = mean[h, q, c, j]
                    a1 = gm[h, q, c, j]
                    b1 = gv[h, q, c, j]
                    b2 = b1 + b1
                    k = b1 * var[h, q, c, j]
                    if S > 1:
                        for t in range(T):
                            a = alpha[h, q, c, j, t]
                            u = x[h, c, j, t] - mu
                            gx[h, c, j, t] += a * (a1 + b2 * u)
                            g[h, q, c, j, t] = a * (u * (a1 + b1 * u) - k)
                    else:
                        for t in range(T):
                            a = alpha[h, q, 0, j, t]
                            u = x[h, c, j, t] - mu
                            gx[h, c, j, t] += a * (a1 + b2 * u)
                            g[h, q, 0, j, t] += a * (u * (a1 + b1 * u) - k)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().numpy()


def _run(kernel: Any, alpha: Tensor, x: Tensor, arrays: list[np.ndarray]) -> None:
    heads, _, s, _, _ = alpha.shape
    chans = x.shape[1]
    zero = np.zeros((), dtype=_np(x).dtype)[()]
    a, xn = _np(alpha), _np(x)
    n = max(1, torch.get_num_threads())
    # S = C: split channels; S = 1: split heads (g sums over channels)
    split_c = s > 1
    parts = min(n, chans if split_c else heads)
    if parts <= 1:
        kernel(a, xn, *arrays, zero, 0, heads, 0, chans)
        return
    total = chans if split_c else heads
    bounds = [round(i * total / parts) for i in range(parts + 1)]

    def work(i: int) -> None:
        lo, hi = bounds[i], bounds[i + 1]
        if split_c:
            kernel(a, xn, *arrays, zero, 0, heads, lo, hi)
        else:
            kernel(a, xn, *arrays, zero, lo, hi, 0, chans)

    # the calling thread takes part 0 itself: one thread hand-off fewer per tile
    futures = [_pool(parts - 1).submit(work, i) for i in range(1, parts)]
    work(0)
    for f in futures:
        f.result()


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(n: int) -> ThreadPoolExecutor:
    """A persistent pool of n worker threads (no thread start-up per tile)."""
    pool = _POOLS.get(n)
    if pool is None:
        pool = _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix="speechattn-pool")
    return pool


def stats_forward(alpha: Tensor, x: Tensor, mean: Tensor, var: Tensor) -> None:
    """Write the attentive mean and variance of one folded tile into ``mean``/``var``.

    Args:
        alpha: ``(H, Q, S, b, T)`` softmax weights, contiguous CPU float32/float64.
        x: ``(H, C, b, T)`` features (padded frames zero), contiguous, alpha's dtype.
        mean: ``(H, Q, C, b)`` output (any strides), alpha's dtype.
        var: ``(H, Q, C, b)`` output (any strides).
    """
    _run(_forward_nb, alpha, x, [_np(mean), _np(var)])


def stats_backward(
    alpha: Tensor,
    x: Tensor,
    mean: Tensor,
    g_mean: Tensor,
    g_var: Tensor,
    var: Tensor,
    grad_x: Tensor,
    grad_scores: Tensor,
) -> None:
    """Gradients of the attentive statistics of one folded tile (outputs overwritten).

    Args:
        alpha, x, mean, var: as :func:`stats_forward` (inputs here).
        g_mean, g_var: ``(H, Q, C, b)`` incoming gradients (any strides).
        grad_x: ``(H, C, b, T)`` output, ``sum_q a (g_mean + 2 g_var u)``.
        grad_scores: ``(H, Q, S, b, T)`` output, the gradient w.r.t. the softmax logits.
    """
    _run(
        _backward_nb,
        alpha,
        x,
        [_np(mean), _np(g_mean), _np(g_var), _np(var), _np(grad_x), _np(grad_scores)],
    )


def warmup() -> None:
    """Compile (or load from numba's cache) both kernels for float32 and float64, S = 1 and C."""
    for dt in (torch.float32, torch.float64):
        for s in (1, 2):
            alpha = torch.full((1, 1, s, 1, 3), 1.0 / 3.0, dtype=dt)
            x = torch.ones(1, 2, 1, 3, dtype=dt)
            mean = torch.zeros(1, 1, 2, 1, dtype=dt)
            var = torch.zeros_like(mean)
            stats_forward(alpha, x, mean, var)
            stats_backward(
                alpha, x, mean, mean, var, var, torch.zeros_like(x), torch.zeros_like(alpha)
            )
