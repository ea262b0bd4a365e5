"""Slow float64 oracles for stepwise monotonic alignment, written from the equations.

He et al. 2019, Eq. 8: alpha_t(u) = alpha_{t-1}(u) p_t(u) + alpha_{t-1}(u-1) (1 - p_t(u-1)),
alpha_{-1} = one-hot on token 0. Plain Python loops over items, frames and tokens; the inputs
are nested lists / numbers or tensors turned into Python floats, so nothing here shares code
with the library.
"""

from __future__ import annotations

import itertools
import math

import torch

__all__ = [
    "path_log_score",
    "sma_reference",
    "sma_reference_tensor",
    "viterbi_brute_force",
    "viterbi_loop_dp",
]


def sma_reference(
    p: list[list[float]],
    text_len: int,
    mel_len: int,
    *,
    preserve: bool = False,
    hard: bool = False,
    alpha0: list[float] | None = None,
) -> list[list[float]]:
    """One item: ``p[u][t]`` (U x T nested lists) -> alpha ``[u][t]`` (U x T), float64."""
    U = len(p)
    T = len(p[0])
    alpha = [[0.0] * T for _ in range(U)]
    prev = [0.0] * U
    if alpha0 is None:
        prev[0] = 1.0
    else:
        for u in range(text_len):
            prev[u] = float(alpha0[u])

    def stay(u: int, t: int) -> float:
        if preserve and u == text_len - 1:
            return 1.0
        q = float(p[u][t])
        if hard:
            return 1.0 if q > 0.5 else 0.0
        return q

    for t in range(mel_len):
        cur = [0.0] * U
        for u in range(text_len):
            value = prev[u] * stay(u, t)
            if u >= 1:
                value += prev[u - 1] * (1.0 - stay(u - 1, t))
            cur[u] = value
        for u in range(U):
            alpha[u][t] = cur[u]
        prev = cur
    return alpha


def sma_reference_tensor(
    p: torch.Tensor,
    text_lengths: torch.Tensor | None = None,
    mel_lengths: torch.Tensor | None = None,
    *,
    preserve: bool = False,
    hard: bool = False,
    alpha0: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batched wrapper: ``(B, U, T)`` or ``(B, H, U, T)`` -> float64 alpha of the same shape."""
    shape = p.shape
    B = shape[0]
    H = shape[1] if p.dim() == 4 else 1
    U, T = shape[-2], shape[-1]
    p4 = p.detach().double().reshape(B, H, U, T)
    a04 = None if alpha0 is None else alpha0.detach().double().reshape(B, H, U)
    out = torch.zeros(B, H, U, T, dtype=torch.float64)
    for b in range(B):
        L = U if text_lengths is None else int(text_lengths[b])
        M = T if mel_lengths is None else int(mel_lengths[b])
        for h in range(H):
            a0 = None if a04 is None else a04[b, h].tolist()
            res = sma_reference(p4[b, h].tolist(), L, M, preserve=preserve, hard=hard, alpha0=a0)
            out[b, h] = torch.tensor(res, dtype=torch.float64)
    return out.reshape(shape)


def _clamped_log(x: float, eps: float = 1e-12) -> float:
    return math.log(max(x, eps))


def path_log_score(p: list[list[float]], tokens: list[int]) -> float:
    """Score of a token sequence (one token per frame): sum over frames t >= 1 of
    log p_t(u_{t-1}) if it stays, log(1 - p_t(u_{t-1})) if it advances one token."""
    score = 0.0
    for t in range(1, len(tokens)):
        u = tokens[t - 1]
        if tokens[t] == u:
            score += _clamped_log(float(p[u][t]))
        else:
            score += _clamped_log(1.0 - float(p[u][t]))
    return score


def viterbi_brute_force(
    p: list[list[float]], text_len: int, mel_len: int
) -> tuple[float, list[list[int]]]:
    """Enumerate every monotone path (starts on token 0, +0/+1 per frame, ends on the last valid
    token at the last valid frame). Returns ``(best score, all best paths as token lists)``."""
    best = -math.inf
    winners: list[list[int]] = []
    # A path is fixed by which of the frames 1..M-1 advance: exactly L-1 of them.
    for adv in itertools.combinations(range(1, mel_len), text_len - 1):
        tokens = []
        u = 0
        advs = set(adv)
        for t in range(mel_len):
            if t in advs:
                u += 1
            tokens.append(u)
        s = path_log_score(p, tokens)
        if s > best + 1e-12:
            best = s
            winners = [tokens]
        elif abs(s - best) <= 1e-12:
            winners.append(tokens)
    return best, winners


def viterbi_loop_dp(p: list[list[float]], text_len: int, mel_len: int) -> tuple[float, list[int]]:
    """Plain loop DP over (frame, token) with the same scores; returns (score, token list)."""
    neg = -math.inf
    delta = [[neg] * text_len for _ in range(mel_len)]
    back = [[0] * text_len for _ in range(mel_len)]
    delta[0][0] = 0.0
    for t in range(1, mel_len):
        for u in range(text_len):
            s = delta[t - 1][u] + _clamped_log(float(p[u][t]))
            a = neg
            if u >= 1:
                a = delta[t - 1][u - 1] + _clamped_log(1.0 - float(p[u - 1][t]))
            if a > s:
                delta[t][u], back[t][u] = a, 1
            else:
                delta[t][u], back[t][u] = s, 0
    tokens = [0] * mel_len
    u = text_len - 1
    for t in range(mel_len - 1, -1, -1):
        tokens[t] = u
        if t > 0 and back[t][u]:
            u -= 1
    return delta[mel_len - 1][text_len - 1], tokens
