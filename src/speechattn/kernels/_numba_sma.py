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

The forward also checks the range of ``p`` (every valid entry in ``[0, 1]``, no NaN) on the
rows it is about to read, so validation costs no separate pass over ``p``
(:func:`forward_checked`). The same pass can also accumulate each item's focus rate (per frame
the maximum and the sum over tokens, block by block) and skip storing alpha
(:func:`forward_focus`, used to rank attention heads). The backward reads a broadcast incoming
gradient (e.g. from ``alpha.sum()``: one value expanded over ``(N, U, T)``) from a single row
instead of a materialised copy, once per frame for a block's four rows.

Threads: each call packs its arrays' addresses and sizes into one ``int64`` block and runs one
compiled entry point per direction and dtype (a numba ``cfunc``) on it; every thread that runs
the entry point claims items (largest valid block first) with an atomic counter until none is
left, so ragged lengths balance. Where torch parallelises with GNU OpenMP (its CPU wheels),
the entry point runs on torch's own OpenMP team (:mod:`speechattn.kernels._omp`): the torch
worker that is still spinning after the last torch op takes the second half at once, and no
thread of ours competes with it for a core. Elsewhere (other OpenMP runtimes, TBB, macOS,
Windows, a forked child) it runs on ``torch.get_num_threads()`` Python threads (the caller waits
only for threads that started before it ran out of items). Small calls, and calls made while the
team is busy with another Python thread or inside a parallel region, run on the calling thread.
Numba's own ``parallel=True`` (``prange``) was measured and not kept: with its default OpenMP
layer (a second OpenMP runtime beside torch's) 2-thread calls were 2-5x slower than one
thread, its ``workqueue`` layer was no faster than Python threads and aborts on concurrent
calls from two Python threads, and it compiles several times slower. The first call per dtype
compiles (a few seconds) and ``cache=True`` keeps the machine code on disk so later processes
only load it.

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
from numba import carray, cfunc, njit, types
from torch import Tensor

from speechattn.kernels import _eager, _omp, register_sma_kernel
from speechattn.kernels._numba_ptr import fetch_add, int_to_ptr

__all__ = ["backward", "forward", "forward_checked", "forward_focus", "warmup"]


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


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _row_bits_ok(bits, n, u, L, M, one_bits):  # type: ignore[no-untyped-def]
    """True when the first ``M`` stay probabilities of row ``u`` (if valid) lie in [+0.0, 1.0].

    Integer min/max of the IEEE bit patterns (vectorises; no floating-point NaN semantics
    needed): non-negative floats order like their bit patterns, negative values (and -0.0) have
    the sign bit set, NaN and +inf lie above 1.0's pattern. -0.0 is flagged too; the caller
    re-checks flagged items exactly.
    """
    if u >= L:
        return True
    r = bits[n, u]
    lo = r[0]
    hi = r[0]
    for t in range(M):
        b = r[t]
        lo = min(lo, b)
        hi = max(hi, b)
    return lo >= 0 and hi <= one_bits


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _accumulate_columns(cmax, csum, row, M):  # type: ignore[no-untyped-def]
    """Column statistics of the focus rate: running max and sum over tokens, frame by frame."""
    for t in range(M):
        x = row[t]
        cmax[t] = max(cmax[t], x)
        csum[t] += x


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _forward_item(p, bits, one_bits, alpha0, n, L, M, preserve, consts, out, write, fr):  # type: ignore[no-untyped-def]
    """Forward of item ``n``; returns False when a valid stay probability is outside [0, 1].

    ``write``: store alpha in ``out`` (else the rows live in scratch rows only). ``fr`` of
    length ``N``: also store the item's focus rate in ``fr[n]`` (per valid frame the maximum
    over tokens divided by the sum, averaged over valid frames), from column statistics
    accumulated block by block (alpha need not be written); length 0: no focus rate.
    """
    T = p.shape[2]
    ones = consts[0]
    zeros = consts[1]
    one = ones[0]
    zero = zeros[0]
    # rows 0-4: the block's output rows that are not stored (virtual tokens past the last, or
    # every row when ``write`` is False); rows 5 and 6 alternate as the block's top row (the
    # next block reads it as the row below)
    scratch = np.empty((7, T), dtype=p.dtype)
    focus = fr.shape[0] > 0
    cmax = np.zeros(M if focus else 0, dtype=p.dtype)
    csum = np.zeros(M if focus else 0, dtype=p.dtype)
    absorbing = L - 1 if preserve else -1
    ok = True
    if write:
        _zero_padding(out, n, L, M, zero)
    pb = ones  # raw p and alpha of the row below the block (none below token 0)
    ob = zeros
    below = zero
    for u0 in range(0, L, 6):
        # The range check reads the block's rows once more while they are in L1.
        ok = ok and _row_bits_ok(bits, n, u0 + 0, L, M, one_bits)
        ok = ok and _row_bits_ok(bits, n, u0 + 1, L, M, one_bits)
        ok = ok and _row_bits_ok(bits, n, u0 + 2, L, M, one_bits)
        ok = ok and _row_bits_ok(bits, n, u0 + 3, L, M, one_bits)
        ok = ok and _row_bits_ok(bits, n, u0 + 4, L, M, one_bits)
        ok = ok and _row_bits_ok(bits, n, u0 + 5, L, M, one_bits)
        r0 = _row(p, n, u0 + 0, L, absorbing, ones)
        o0 = out[n, u0 + 0] if write and u0 + 0 < L else scratch[0]
        a0 = alpha0[n, u0 + 0] if u0 + 0 < L else zero
        r1 = _row(p, n, u0 + 1, L, absorbing, ones)
        o1 = out[n, u0 + 1] if write and u0 + 1 < L else scratch[1]
        a1 = alpha0[n, u0 + 1] if u0 + 1 < L else zero
        r2 = _row(p, n, u0 + 2, L, absorbing, ones)
        o2 = out[n, u0 + 2] if write and u0 + 2 < L else scratch[2]
        a2 = alpha0[n, u0 + 2] if u0 + 2 < L else zero
        r3 = _row(p, n, u0 + 3, L, absorbing, ones)
        o3 = out[n, u0 + 3] if write and u0 + 3 < L else scratch[3]
        a3 = alpha0[n, u0 + 3] if u0 + 3 < L else zero
        r4 = _row(p, n, u0 + 4, L, absorbing, ones)
        o4 = out[n, u0 + 4] if write and u0 + 4 < L else scratch[4]
        a4 = alpha0[n, u0 + 4] if u0 + 4 < L else zero
        r5 = _row(p, n, u0 + 5, L, absorbing, ones)
        o5 = out[n, u0 + 5] if write and u0 + 5 < L else scratch[5 + (u0 // 6) % 2]
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
        if focus:  # valid rows of the block (virtual rows past the last token excluded)
            _accumulate_columns(cmax, csum, o0, M)
            if u0 + 1 < L:
                _accumulate_columns(cmax, csum, o1, M)
            if u0 + 2 < L:
                _accumulate_columns(cmax, csum, o2, M)
            if u0 + 3 < L:
                _accumulate_columns(cmax, csum, o3, M)
            if u0 + 4 < L:
                _accumulate_columns(cmax, csum, o4, M)
            if u0 + 5 < L:
                _accumulate_columns(cmax, csum, o5, M)
        pb = r5
        ob = o5
        below = alpha0[n, u0 + 5] if u0 + 5 < L else zero
    if focus:
        total = 0.0  # float64 accumulator
        for t in range(M):
            if csum[t] > zero:
                total += cmax[t] / csum[t]
        fr[n] = total / M
    return ok


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy", inline="always")
def _backward_rows_shared(  # type: ignore[no-untyped-def]
    G, r0, r1, r2, r3, A0, A1, A2, A3, o0, o1, o2, o3, g_up, n0, n1, n2, n3, M
):
    """Frames ``M - 2`` down to 0 of a four-row backward block whose rows share one incoming
    gradient row ``G`` (a broadcast value, e.g. from ``alpha.sum()``): one ``G`` load per
    frame, and the row above the block (``g_up``) kept in a register from one frame to the
    next. Writes the stay-probability gradients of frames ``M - 2 .. 1`` and ``g_up`` (the
    adjoint of the block's lowest row, for the block below); returns the four rows' adjoints
    at frame 0 (``n0..n3``: their adjoints at frame ``M - 1``)."""
    top_next = g_up[M - 1]
    for s in range(M - 1):
        i = np.uint64(M - 2 - s)  # unsigned: no negative-index wraparound in the loop
        i1 = i + np.uint64(1)
        top = g_up[i]
        gi = G[i]
        c0 = gi + n1 + r0[i1] * (n0 - n1)
        c1 = gi + n2 + r1[i1] * (n1 - n2)
        c2 = gi + n3 + r2[i1] * (n2 - n3)
        c3 = gi + top_next + r3[i1] * (n3 - top_next)
        if s < M - 2:
            im = i - np.uint64(1)
            o0[i] = A0[im] * (c0 - c1)
            o1[i] = A1[im] * (c1 - c2)
            o2[i] = A2[im] * (c2 - c3)
            o3[i] = A3[im] * (c3 - top)
        g_up[i1] = n0  # becomes g(u0, t + 1) for the block below
        n0 = c0
        n1 = c1
        n2 = c2
        n3 = c3
        top_next = top
    return n0, n1, n2, n3


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _backward_item(G, g_rows, p, alpha, alpha0, n, L, M, preserve, consts, gp, ga0):  # type: ignore[no-untyped-def]
    U, T = p.shape[1], p.shape[2]
    ones = consts[0]
    zeros = consts[1]
    zero = zeros[0]
    scratch = np.empty(T, dtype=p.dtype)  # grad rows of virtual tokens past the last
    g_up = np.empty(T + 1, dtype=p.dtype)  # g(u0 + 4, t): the row above the block
    absorbing = L - 1 if preserve else -1
    _zero_padding(gp, n, L, M, zero)
    for u in range(L, U):
        ga0[n, u] = zero
    for t in range(M + 1):
        g_up[t] = zero
    for u0 in range(((L - 1) // 4) * 4, -1, -4):
        r0 = _row(p, n, u0 + 0, L, absorbing, ones)
        G0 = G[(n * U + u0 + 0) * g_rows] if u0 + 0 < L else zeros
        A0 = alpha[n, u0 + 0] if u0 + 0 < L else zeros
        o0 = gp[n, u0 + 0] if u0 + 0 < L else scratch
        r1 = _row(p, n, u0 + 1, L, absorbing, ones)
        G1 = G[(n * U + u0 + 1) * g_rows] if u0 + 1 < L else zeros
        A1 = alpha[n, u0 + 1] if u0 + 1 < L else zeros
        o1 = gp[n, u0 + 1] if u0 + 1 < L else scratch
        r2 = _row(p, n, u0 + 2, L, absorbing, ones)
        G2 = G[(n * U + u0 + 2) * g_rows] if u0 + 2 < L else zeros
        A2 = alpha[n, u0 + 2] if u0 + 2 < L else zeros
        o2 = gp[n, u0 + 2] if u0 + 2 < L else scratch
        r3 = _row(p, n, u0 + 3, L, absorbing, ones)
        G3 = G[(n * U + u0 + 3) * g_rows] if u0 + 3 < L else zeros
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
        if g_rows == 0 and u0 + 3 < L:
            # one incoming-gradient row shared by the block's four rows: one load per frame
            # fmt: off
            n0, n1, n2, n3 = _backward_rows_shared(
                G0, r0, r1, r2, r3, A0, A1, A2, A3, o0, o1, o2, o3, g_up, n0, n1, n2, n3, M
            )
            # fmt: on
        else:
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


# Team entry points: one C callable per direction and dtype that torch's OpenMP team runs
# (see speechattn.kernels._omp). ``block`` is an int64 array: slot 0 the item counter, then
# the scalars and the arrays' addresses (the _B_* slots below); every team thread claims
# items with an atomic fetch-and-add until none is left, and counts itself in the last slot
# when it found every item taken on arrival (see speechattn.kernels._omp).
_B_COUNT, _B_ITEMS, _B_N, _B_U, _B_T, _B_FLAGS, _B_SCALAR = 0, 1, 2, 3, 4, 5, 6
_B_PTRS = 7  # first address slot
# _B_FLAGS bits: mass preserved; (forward) focus rates wanted; (forward) alpha not stored
_F_PRESERVE, _F_FOCUS, _F_NO_ALPHA = 1, 2, 4
_BLOCK_SIZE = 24
_B_LATE = _omp.LATE_SLOT % _BLOCK_SIZE  # threads that arrived after every item was taken


@njit(cache=True, nogil=True, inline="always")
def _forward_block(block, fdt, idt):  # type: ignore[no-untyped-def]
    d = carray(block, (_BLOCK_SIZE,), np.int64)
    N, U, T = d[_B_N], d[_B_U], d[_B_T]
    n_items = d[_B_ITEMS]
    flags = d[_B_FLAGS]
    preserve = (flags & _F_PRESERVE) != 0
    write = (flags & _F_NO_ALPHA) == 0
    one_bits = d[_B_SCALAR]
    a = _B_PTRS
    p = carray(int_to_ptr(d[a], fdt), (N, U, T))
    bits = carray(int_to_ptr(d[a], idt), (N, U, T))
    alpha0 = carray(int_to_ptr(d[a + 1], fdt), (N, U))
    tl = carray(int_to_ptr(d[a + 2], np.int64), (N,))
    ml = carray(int_to_ptr(d[a + 3], np.int64), (N,))
    consts = carray(int_to_ptr(d[a + 4], fdt), (2, T + 1))
    out = carray(int_to_ptr(d[a + 5], fdt), (N, U, T))
    order = carray(int_to_ptr(d[a + 6], np.int64), (n_items,))
    ok = carray(int_to_ptr(d[a + 7], np.bool_), (N,))
    fr = carray(int_to_ptr(d[a + 8], fdt), (N if (flags & _F_FOCUS) != 0 else 0,))
    first = True
    while True:
        i = fetch_add(block, _B_COUNT, 1)
        if i >= n_items:
            if first:  # every item was taken before this thread arrived
                fetch_add(block, _B_LATE, 1)
            break
        first = False
        n = order[i]
        ok[n] = _forward_item(
            p, bits, one_bits, alpha0, n, tl[n], ml[n], preserve, consts, out, write, fr
        )


@njit(cache=True, nogil=True, inline="always")
def _backward_block(block, fdt):  # type: ignore[no-untyped-def]
    d = carray(block, (_BLOCK_SIZE,), np.int64)
    N, U, T = d[_B_N], d[_B_U], d[_B_T]
    n_items = d[_B_ITEMS]
    preserve = (d[_B_FLAGS] & _F_PRESERVE) != 0
    g_rows = d[_B_SCALAR]
    a = _B_PTRS
    G = carray(int_to_ptr(d[a], fdt), (N * U if g_rows else 1, T))
    p = carray(int_to_ptr(d[a + 1], fdt), (N, U, T))
    alpha = carray(int_to_ptr(d[a + 2], fdt), (N, U, T))
    alpha0 = carray(int_to_ptr(d[a + 3], fdt), (N, U))
    tl = carray(int_to_ptr(d[a + 4], np.int64), (N,))
    ml = carray(int_to_ptr(d[a + 5], np.int64), (N,))
    consts = carray(int_to_ptr(d[a + 6], fdt), (2, T + 1))
    gp = carray(int_to_ptr(d[a + 7], fdt), (N, U, T))
    ga0 = carray(int_to_ptr(d[a + 8], fdt), (N, U))
    order = carray(int_to_ptr(d[a + 9], np.int64), (n_items,))
    first = True
    while True:
        i = fetch_add(block, _B_COUNT, 1)
        if i >= n_items:
            if first:  # every item was taken before this thread arrived
                fetch_add(block, _B_LATE, 1)
            break
        first = False
        n = order[i]
        _backward_item(G, g_rows, p, alpha, alpha0, n, tl[n], ml[n], preserve, consts, gp, ga0)


def _forward_team_f32(block):  # type: ignore[no-untyped-def]
    _forward_block(block, np.float32, np.int32)


def _forward_team_f64(block):  # type: ignore[no-untyped-def]
    _forward_block(block, np.float64, np.int64)


def _backward_team_f32(block):  # type: ignore[no-untyped-def]
    _backward_block(block, np.float32)


def _backward_team_f64(block):  # type: ignore[no-untyped-def]
    _backward_block(block, np.float64)


_TEAM_SOURCES = {
    ("forward", torch.float32): _forward_team_f32,
    ("forward", torch.float64): _forward_team_f64,
    ("backward", torch.float32): _backward_team_f32,
    ("backward", torch.float64): _backward_team_f64,
}
_TEAM_FUNCS: dict[tuple[str, torch.dtype], Any] = {}


def _team_func(direction: str, dtype: torch.dtype) -> Any:
    """The compiled C callable of one direction and dtype (compiled, or loaded from numba's
    cache, on first use)."""
    key = (direction, dtype)
    f = _TEAM_FUNCS.get(key)
    if f is None:
        f = _TEAM_FUNCS[key] = cfunc(types.void(types.voidptr), cache=True)(_TEAM_SOURCES[key])
    return f


_CONSTS: dict[tuple[int, torch.dtype], Tensor] = {}


def _consts(T: int, dtype: torch.dtype) -> Tensor:
    """Rows of ones and zeros ``(2, T + 1)`` standing in for absorbing, virtual and absent rows
    (read only; cached per size and dtype)."""
    key = (T, dtype)
    c = _CONSTS.get(key)
    if c is None:
        if len(_CONSTS) > 64:
            _CONSTS.clear()
        c = torch.zeros((2, T + 1), dtype=dtype)
        c[0] = 1.0
        _CONSTS[key] = c
    return c


# Bit pattern of 1.0 per dtype (the forward's range check compares integer views).
_ONE_BITS = {torch.float32: 0x3F800000, torch.float64: 0x3FF0000000000000}


# Below this many cells per thread a call runs serially on the calling thread.
_MIN_CELLS_PER_THREAD = 1 << 16


def _plan(tl: np.ndarray, ml: np.ndarray, cells: int) -> tuple[np.ndarray, int]:
    """Item order (largest valid block first) and the thread count for one call (numpy on
    the lengths: a few microseconds, no torch dispatch)."""
    n_items = tl.shape[0]
    threads = max(1, min(torch.get_num_threads(), n_items, cells // _MIN_CELLS_PER_THREAD))
    if threads == 1:
        return np.arange(n_items, dtype=np.int64), 1
    return np.argsort(-(tl * ml), kind="stable"), threads


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_PID = 0  # a forked child (e.g. a DataLoader worker) must not reuse its parent's pool


def _pool_run(fn: Any, block: np.ndarray, keep: tuple[Any, ...], workers: int) -> None:
    """Run the entry point ``fn`` on ``block`` on up to ``workers`` threads (the caller and
    Python pool threads; the fallback where torch's OpenMP team is not available).

    Every thread claims items from the block's counter until none is left. The caller waits
    only for pool threads that started before it ran out of items (they may hold an item); a
    pool thread that starts later returns without touching the block, so when the other cores
    are busy the caller does the work itself instead of waiting for a thread to be scheduled.
    ``keep`` holds the arrays the block points to (alive until the last thread is done).
    """
    global _POOL, _POOL_SIZE, _POOL_PID
    if _POOL is None or _POOL_SIZE < workers - 1 or _POOL_PID != os.getpid():
        if _POOL is not None and _POOL_PID == os.getpid():
            _POOL.shutdown(wait=False)
        _POOL = ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="speechattn-sma")
        _POOL_SIZE = workers - 1
        _POOL_PID = os.getpid()
    cond = threading.Condition()
    # (the closure holds ``keep`` through ``state``: the arrays outlive a late thread)
    state: dict[str, Any] = {"closed": False, "active": 0, "keep": keep}
    address = block.ctypes.data
    call = fn.ctypes

    def worker() -> None:
        with cond:
            if state["closed"]:
                return
            state["active"] += 1
        try:
            call(address)
        finally:
            with cond:
                state["active"] -= 1
                cond.notify_all()

    for _ in range(workers - 1):
        _POOL.submit(worker)
    call(address)  # ctypes releases the GIL
    with cond:
        state["closed"] = True
        cond.wait_for(lambda: state["active"] == 0)


def _launch(direction: str, dtype: torch.dtype, block: np.ndarray, keep: Any, threads: int) -> None:
    """Run all items of ``block`` with the compiled entry point of ``direction`` and ``dtype``:
    on torch's OpenMP team where torch runs on libgomp, else on Python threads; on the calling
    thread for one thread, or when the team is busy with another Python thread's call or the
    caller is inside a parallel region. ``keep`` holds what the block points to."""
    fn = _TEAM_FUNCS.get((direction, dtype))
    if fn is None:
        fn = _team_func(direction, dtype)
    if threads > 1:
        if _omp.team() is not None:
            if _omp.team_run(fn.address, block, threads):
                return
        else:
            _pool_run(fn, block, keep, threads)
            return
    block[0] = 0
    fn.ctypes(block.ctypes.data)  # ctypes releases the GIL


def _block(shape: tuple[int, ...], n_items: int, flags: int, scalar: int) -> np.ndarray:
    """The int64 argument block of an entry point (layout: ``_B_*``), addresses not yet set."""
    block = np.zeros(_BLOCK_SIZE, dtype=np.int64)
    block[_B_ITEMS] = n_items
    block[_B_N : _B_T + 1] = shape
    block[_B_FLAGS] = flags
    block[_B_SCALAR] = scalar
    return block


def _lengths(x: Tensor) -> Tensor:
    """int64 contiguous CPU lengths (the tensor itself when it is one already)."""
    if x.dtype != torch.int64 or not x.is_contiguous():
        x = x.to(torch.int64).contiguous()
    return x


def _run_forward(
    p: Tensor,
    alpha0: Tensor,
    text_lengths: Tensor,
    mel_lengths: Tensor,
    preserve: bool,
    *,
    focus: bool,
    write: bool,
) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """The forward entry point: ``(alpha or None, ok, focus rates or None)``."""
    dtype = p.dtype
    N, U, T = p.shape
    pc = p.detach()
    if not pc.is_contiguous():
        pc = pc.contiguous()
    a0 = alpha0.detach()
    if a0.dtype != dtype or not a0.is_contiguous():
        a0 = a0.to(dtype).contiguous()
    tl, ml = _lengths(text_lengths), _lengths(mel_lengths)
    out = torch.empty((N, U, T), dtype=dtype) if write else None
    ok = torch.empty(N, dtype=torch.bool)
    fr = torch.empty(N, dtype=dtype) if focus else None
    tl_np, ml_np = tl.numpy(), ml.numpy()
    order, threads = _plan(tl_np, ml_np, pc.numel())
    consts = _consts(T, dtype)
    flags = (_F_PRESERVE if preserve else 0) | (_F_FOCUS if focus else 0)
    flags |= 0 if write else _F_NO_ALPHA
    block = _block((N, U, T), N, flags, _ONE_BITS[dtype])
    ptr = pc.data_ptr()
    block[_B_PTRS : _B_PTRS + 9] = (
        ptr,
        a0.data_ptr(),
        tl.data_ptr(),
        ml.data_ptr(),
        consts.data_ptr(),
        ptr if out is None else out.data_ptr(),  # (never written without alpha)
        order.ctypes.data,
        ok.data_ptr(),
        ptr if fr is None else fr.data_ptr(),  # (never written without focus)
    )
    keep = (pc, a0, tl, ml, consts, out, order, ok, fr)
    _launch("forward", dtype, block, keep, threads)
    return out, ok, fr


@_eager
def forward_checked(
    p: Tensor, alpha0: Tensor, text_lengths: Tensor, mel_lengths: Tensor, preserve: bool
) -> tuple[Tensor, Tensor]:
    """:func:`forward` that also checks ``p``: ``(alpha, ok)``.

    ``ok`` is bool ``(N,)``: False where some valid entry of ``p[n]`` lies outside
    ``[+0.0, 1.0]`` or is NaN (-0.0 is flagged too: callers re-check flagged items exactly).
    ``alpha`` is meaningless for those items.
    """
    out, ok, _ = _run_forward(
        p, alpha0, text_lengths, mel_lengths, preserve, focus=False, write=True
    )
    assert out is not None
    return out, ok


@_eager
def forward_focus(
    p: Tensor,
    alpha0: Tensor,
    text_lengths: Tensor,
    mel_lengths: Tensor,
    preserve: bool,
    need_alpha: bool = True,
) -> tuple[Tensor | None, Tensor, Tensor]:
    """:func:`forward_checked` that also gives each item's focus rate: ``(alpha, fr, ok)``.

    ``fr`` ``(N,)`` in ``p``'s dtype: per valid frame the largest alpha over tokens divided by
    the frame's sum (0 where it sums to 0), averaged over valid frames (FastSpeech's focus
    rate of alpha, as :func:`speechattn.functional.focus_rate` computes it); it is accumulated
    from column statistics as the rows are computed. ``need_alpha=False`` never stores alpha
    (``None`` is returned): the pass then writes nothing of size ``(N, U, T)``. ``ok`` as in
    :func:`forward_checked` (``fr`` is meaningless for flagged items).
    """
    out, ok, fr = _run_forward(
        p, alpha0, text_lengths, mel_lengths, preserve, focus=True, write=need_alpha
    )
    assert fr is not None
    return out, fr, ok


@_eager
def forward(
    p: Tensor, alpha0: Tensor, text_lengths: Tensor, mel_lengths: Tensor, preserve: bool
) -> Tensor:
    """Numba forward (kernel contract); CPU float32/float64 ``(N, U, T)``."""
    return forward_checked(p, alpha0, text_lengths, mel_lengths, preserve)[0]


def _grad_rows(grad_alpha: Tensor, dtype: torch.dtype) -> tuple[Tensor, int]:
    """Incoming gradient as ``(rows, T)`` plus the row multiplier: ``(N*U, T)`` and 1, or, when
    it is one value broadcast over everything (stride 0 on every axis, as ``alpha.sum()``
    gives), that value as a single ``(1, T)`` row and 0 (no materialised copy)."""
    T = grad_alpha.shape[-1]
    if grad_alpha.numel() > 0 and not any(grad_alpha.stride()):
        row = grad_alpha.reshape(-1)[:1].to(dtype).expand(1, T).contiguous()
        return row, 0
    return grad_alpha.detach().to(dtype).contiguous().reshape(-1, T), 1


@_eager
def backward(
    grad_alpha: Tensor,
    p: Tensor,
    alpha: Tensor,
    alpha0: Tensor,
    text_lengths: Tensor,
    mel_lengths: Tensor,
    preserve: bool,
) -> tuple[Tensor, Tensor]:
    """Numba closed-form adjoint (kernel contract): ``(grad_p, grad_alpha0)``.

    ``grad_alpha`` may have any strides (a broadcast one is read without copying it).
    """
    dtype = p.dtype
    N, U, T = p.shape
    gp = torch.empty((N, U, T), dtype=dtype)
    ga0 = torch.empty((N, U), dtype=dtype)
    tl, ml = _lengths(text_lengths), _lengths(mel_lengths)
    g, g_rows = _grad_rows(grad_alpha, dtype)
    pc, ac = p.detach().contiguous(), alpha.detach().contiguous()
    a0 = alpha0.detach()
    if a0.dtype != dtype or not a0.is_contiguous():
        a0 = a0.to(dtype).contiguous()
    order, threads = _plan(tl.numpy(), ml.numpy(), pc.numel())
    consts = _consts(T, dtype)
    block = _block((N, U, T), N, _F_PRESERVE if preserve else 0, g_rows)
    block[_B_PTRS : _B_PTRS + 10] = (
        g.data_ptr(),
        pc.data_ptr(),
        ac.data_ptr(),
        a0.data_ptr(),
        tl.data_ptr(),
        ml.data_ptr(),
        consts.data_ptr(),
        gp.data_ptr(),
        ga0.data_ptr(),
        order.ctypes.data,
    )
    keep = (g, pc, ac, a0, tl, ml, consts, gp, ga0, order)
    _launch("backward", dtype, block, keep, threads)
    return gp, ga0


# Capabilities the functional wrapper looks for (see functional.stepwise_monotonic_alignment).
forward.checked = forward_checked  # type: ignore[attr-defined]
forward.focus = forward_focus  # type: ignore[attr-defined]
backward.accepts_strided_grad = True  # type: ignore[attr-defined]


def warmup() -> None:
    """Compile (or load from numba's cache) the entry points for both dtypes."""
    for dt in (torch.float32, torch.float64):
        p = torch.full((2, 2, 3), 0.5, dtype=dt)
        a0 = torch.zeros(2, 2, dtype=dt)
        a0[:, 0] = 1.0
        tl, ml = torch.tensor([2, 1]), torch.tensor([3, 2])
        for preserve in (False, True):
            alpha = forward(p, a0, tl, ml, preserve)
            backward(torch.ones(()).expand(2, 2, 3), p, alpha, a0, tl, ml, preserve)


register_sma_kernel("numba", forward, backward, devices=("cpu",))
