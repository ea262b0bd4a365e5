"""Numba CPU kernels for stepwise monotonic alignment (imported on first use only).

Layout: the public ``(N, U, T)`` layout is used as is. The recurrence cell ``(u, t)`` depends on
``(u, t - 1)`` and ``(u - 1, t - 1)``, so the loops run token-outer, frame-inner: every inner
loop walks contiguous rows of ``p``/``alpha``/``grad`` (unit stride, 1-D row views, no index
arithmetic on the 3-D arrays), and only the valid ``text_lengths[n] x mel_lengths[n]`` block of
each item is touched (padding is never read). Rows advance in blocks (6 rows forward, 4 rows
backward) as independent dependency chains frame by frame (instruction-level parallelism); a
last partial block runs on virtual rows (stay probability 1, gradient 0) whose results go to a
scratch row, so there is no scalar tail loop. The backward walks frames downwards with unsigned
indices (no negative-index wraparound checks in the inner loop). ``fastmath``
lets LLVM contract multiply-adds; float32 inputs compute in float32 as the torch spec does.

Items run in parallel on ``torch.get_num_threads()`` Python threads (the kernels release the
GIL); small chunks of items are claimed dynamically, so ragged lengths balance and a busy core
never stalls a call (the caller takes over the chunks a worker has not started). Serial ``njit`` functions are used
rather than ``parallel=True`` because they compile several times faster: the first call per
dtype (float32, float64) compiles in a few seconds, and ``cache=True`` keeps the machine code
on disk so later processes only load it.

The block bodies are written out by hand (unrolled); keep the per-row lines in step when
editing them.

Contract: see :mod:`speechattn.kernels`.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from numba import njit
from torch import Tensor

from speechattn.kernels import register_sma_kernel

__all__ = ["backward", "forward", "in_unit_interval"]


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _row(p, n, u, L, absorbing, ones):  # type: ignore[no-untyped-def]
    """Stay-probability row ``u`` of item ``n``: ones for the absorbing and virtual tokens."""
    if u >= L or u == absorbing:
        return ones
    return p[n, u]


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _zero_padding(out, n, L, M, zero):  # type: ignore[no-untyped-def]
    U, T = out.shape[1], out.shape[2]
    for u in range(L):
        o = out[n, u]
        for t in range(M, T):
            o[t] = zero
    for u in range(L, U):
        o = out[n, u]
        for t in range(T):
            o[t] = zero


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _forward_nb(p, alpha0, tl, ml, preserve, consts, out, start, stop):  # type: ignore[no-untyped-def]
    T = p.shape[2]
    ones = consts[0]
    zeros = consts[1]
    one = ones[0]
    zero = zeros[0]
    scratch = np.empty(T, dtype=p.dtype)  # output rows of virtual tokens past the last
    for n in range(start, stop):
        L = tl[n]
        M = ml[n]
        absorbing = L - 1 if preserve else -1
        _zero_padding(out, n, L, M, zero)
        pb = ones  # raw p and alpha of the row below the block (none below token 0)
        ob = zeros
        below = zero
        for u0 in range(0, L, 6):
            r0 = _row(p, n, u0 + 0, L, absorbing, ones)
            o0 = out[n, u0 + 0] if u0 + 0 < L else scratch
            a0 = alpha0[n, u0 + 0] if u0 + 0 < L else zero
            r1 = _row(p, n, u0 + 1, L, absorbing, ones)
            o1 = out[n, u0 + 1] if u0 + 1 < L else scratch
            a1 = alpha0[n, u0 + 1] if u0 + 1 < L else zero
            r2 = _row(p, n, u0 + 2, L, absorbing, ones)
            o2 = out[n, u0 + 2] if u0 + 2 < L else scratch
            a2 = alpha0[n, u0 + 2] if u0 + 2 < L else zero
            r3 = _row(p, n, u0 + 3, L, absorbing, ones)
            o3 = out[n, u0 + 3] if u0 + 3 < L else scratch
            a3 = alpha0[n, u0 + 3] if u0 + 3 < L else zero
            r4 = _row(p, n, u0 + 4, L, absorbing, ones)
            o4 = out[n, u0 + 4] if u0 + 4 < L else scratch
            a4 = alpha0[n, u0 + 4] if u0 + 4 < L else zero
            r5 = _row(p, n, u0 + 5, L, absorbing, ones)
            o5 = out[n, u0 + 5] if u0 + 5 < L else scratch
            a5 = alpha0[n, u0 + 5] if u0 + 5 < L else zero
            for t in range(M):
                q0 = r0[t]
                q1 = r1[t]
                q2 = r2[t]
                q3 = r3[t]
                q4 = r4[t]
                q5 = r5[t]
                b0 = a0 * q0 + below * (one - pb[t])
                b1 = a1 * q1 + a0 * (one - q0)
                b2 = a2 * q2 + a1 * (one - q1)
                b3 = a3 * q3 + a2 * (one - q2)
                b4 = a4 * q4 + a3 * (one - q3)
                b5 = a5 * q5 + a4 * (one - q4)
                o0[t] = b0
                o1[t] = b1
                o2[t] = b2
                o3[t] = b3
                o4[t] = b4
                o5[t] = b5
                a0 = b0
                a1 = b1
                a2 = b2
                a3 = b3
                a4 = b4
                a5 = b5
                below = ob[t]
            pb = r5
            ob = o5
            below = alpha0[n, u0 + 5] if u0 + 5 < L else zero


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _backward_nb(G, p, alpha, alpha0, tl, ml, preserve, consts, gp, ga0, start, stop):  # type: ignore[no-untyped-def]
    U, T = p.shape[1], p.shape[2]
    ones = consts[0]
    zeros = consts[1]
    zero = zeros[0]
    scratch = np.empty(T, dtype=p.dtype)  # grad rows of virtual tokens past the last
    g_up = np.empty(T + 1, dtype=p.dtype)  # g(u0 + 4, t): the row above the block
    for n in range(start, stop):
        L = tl[n]
        M = ml[n]
        absorbing = L - 1 if preserve else -1
        _zero_padding(gp, n, L, M, zero)
        for u in range(L, U):
            ga0[n, u] = zero
        for t in range(M + 1):
            g_up[t] = zero
        for u0 in range(((L - 1) // 4) * 4, -1, -4):
            r0 = _row(p, n, u0 + 0, L, absorbing, ones)
            G0 = G[n, u0 + 0] if u0 + 0 < L else zeros
            A0 = alpha[n, u0 + 0] if u0 + 0 < L else zeros
            o0 = gp[n, u0 + 0] if u0 + 0 < L else scratch
            r1 = _row(p, n, u0 + 1, L, absorbing, ones)
            G1 = G[n, u0 + 1] if u0 + 1 < L else zeros
            A1 = alpha[n, u0 + 1] if u0 + 1 < L else zeros
            o1 = gp[n, u0 + 1] if u0 + 1 < L else scratch
            r2 = _row(p, n, u0 + 2, L, absorbing, ones)
            G2 = G[n, u0 + 2] if u0 + 2 < L else zeros
            A2 = alpha[n, u0 + 2] if u0 + 2 < L else zeros
            o2 = gp[n, u0 + 2] if u0 + 2 < L else scratch
            r3 = _row(p, n, u0 + 3, L, absorbing, ones)
            G3 = G[n, u0 + 3] if u0 + 3 < L else zeros
            A3 = alpha[n, u0 + 3] if u0 + 3 < L else zeros
            o3 = gp[n, u0 + 3] if u0 + 3 < L else scratch
            # frame M - 1: nothing flows back from frame M
            t = M - 1
            n0 = G0[t]
            n1 = G1[t]
            n2 = G2[t]
            n3 = G3[t]
            if t > 0:
                o0[t] = A0[t - 1] * (n0 - n1)
                o1[t] = A1[t - 1] * (n1 - n2)
                o2[t] = A2[t - 1] * (n2 - n3)
                o3[t] = A3[t - 1] * (n3 - g_up[t])
            for s in range(M - 1):
                i = np.uint64(M - 2 - s)  # unsigned: no negative-index wraparound in the loop
                i1 = i + np.uint64(1)
                top_next = g_up[i1]
                c0 = G0[i] + n1 + r0[i1] * (n0 - n1)
                c1 = G1[i] + n2 + r1[i1] * (n1 - n2)
                c2 = G2[i] + n3 + r2[i1] * (n2 - n3)
                c3 = G3[i] + top_next + r3[i1] * (n3 - top_next)
                if s < M - 2:
                    im = i - np.uint64(1)
                    top = g_up[i]
                    o0[i] = A0[im] * (c0 - c1)
                    o1[i] = A1[im] * (c1 - c2)
                    o2[i] = A2[im] * (c2 - c3)
                    o3[i] = A3[im] * (c3 - top)
                g_up[i1] = n0  # becomes g(u0, t + 1) for the block below
                n0 = c0
                n1 = c1
                n2 = c2
                n3 = c3
            top = g_up[0]
            if u0 + 0 < L:
                a0 = alpha0[n, u0 + 0]
                o0[0] = a0 * (n0 - n1)
                ga0[n, u0 + 0] = n1 + r0[0] * (n0 - n1)
            if u0 + 1 < L:
                a0 = alpha0[n, u0 + 1]
                o1[0] = a0 * (n1 - n2)
                ga0[n, u0 + 1] = n2 + r1[0] * (n1 - n2)
            if u0 + 2 < L:
                a0 = alpha0[n, u0 + 2]
                o2[0] = a0 * (n2 - n3)
                ga0[n, u0 + 2] = n3 + r2[0] * (n2 - n3)
            if u0 + 3 < L:
                a0 = alpha0[n, u0 + 3]
                o3[0] = a0 * (n3 - top)
                ga0[n, u0 + 3] = top + r3[0] * (n3 - top)
            g_up[0] = n0
            if absorbing >= u0 and absorbing < u0 + 4:
                ra = gp[n, absorbing]
                for t in range(M):
                    ra[t] = zero


@njit(cache=True, nogil=True)
def _bits_range_nb(bits, tl, ml, out, start, stop):  # type: ignore[no-untyped-def]
    # Integer min/max of the IEEE bit patterns over each item's valid block (vectorises; no
    # floating-point NaN semantics needed): non-negative floats order like their bit patterns,
    # negative values (and -0.0) have the sign bit set, NaN and +inf lie above 1.0's pattern.
    for n in range(start, stop):
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


def _consts(T: int, dtype: torch.dtype) -> np.ndarray:
    """Rows of ones and zeros ``(2, T + 1)`` standing in for absorbing, virtual and absent rows."""
    c = np.zeros((2, T + 1), dtype=np.float64 if dtype == torch.float64 else np.float32)
    c[0] = 1.0
    return c


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_PID = 0  # a forked child (e.g. a DataLoader worker) must not reuse its parent's pool
# Below this many cells a call runs on the calling thread (thread hand-off costs ~50 us).
_MIN_CELLS_PER_THREAD = 1 << 16


def _run(kernel: Any, args: tuple[Any, ...], n_items: int, cells: int) -> None:
    """Run ``kernel(*args, start, stop)`` over item chunks shared by up to
    ``torch.get_num_threads()`` threads.

    Chunks are claimed dynamically (a counter under a lock), and the calling thread waits only
    for chunks another thread has claimed: when the other cores are busy (an oversubscribed
    machine) the caller simply does the work itself instead of waiting for a worker thread to
    be scheduled. The result does not depend on the split (each item is computed by one call).
    """
    global _POOL, _POOL_SIZE, _POOL_PID
    workers = max(1, min(torch.get_num_threads(), n_items, cells // _MIN_CELLS_PER_THREAD))
    if workers == 1:
        kernel(*args, 0, n_items)
        return
    if _POOL is None or _POOL_SIZE < workers or _POOL_PID != os.getpid():
        if _POOL is not None and _POOL_PID == os.getpid():
            _POOL.shutdown(wait=False)
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="speechattn-sma")
        _POOL_SIZE = workers
        _POOL_PID = os.getpid()
    chunk = max(1, n_items // (4 * workers))
    n_chunks = -(-n_items // chunk)
    cond = threading.Condition()
    state = {"next": 0, "done": 0}
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            with cond:
                i = state["next"]
                if i >= n_chunks:
                    return
                state["next"] = i + 1
            try:
                kernel(*args, i * chunk, min(n_items, (i + 1) * chunk))
            except BaseException as exc:  # pragma: no cover - surfaced by the caller below
                errors.append(exc)
            finally:
                with cond:
                    state["done"] += 1
                    cond.notify_all()

    for _ in range(workers - 1):
        _POOL.submit(work)
    work()
    with cond:
        cond.wait_for(lambda: state["done"] == n_chunks)
    if errors:  # pragma: no cover
        raise errors[0]


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
        _consts(p.shape[-1], p.dtype),
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
        _consts(p.shape[-1], p.dtype),
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


register_sma_kernel("numba", forward, backward, devices=("cpu",))
