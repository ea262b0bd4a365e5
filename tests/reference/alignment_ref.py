"""Slow float64 loop oracles for speechattn.functional.alignment, written from the papers' equations.

- CTC forward-sum (Graves et al. 2006; RAD-TTS, Shih et al. 2021): the extended label sequence
  ``blank, 1, blank, 2, ..., U, blank``, alpha recursion over frames.
- Monotonic HMM / MAS (Glow-TTS, Kim et al. 2020; SMA recurrence, He et al. 2019 Eq. 8 in log space).
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def _logsumexp(*xs: float) -> float:
    m = max(xs)
    if m == -math.inf:
        return -math.inf
    return m + math.log(sum(math.exp(x - m) for x in xs))


def forward_sum_nll_ref(log_attn: np.ndarray, blank_logprob: float = -1.0) -> float:
    """CTC NLL of targets 1..U for one item; log_attn (U, T) valid part only. Not length-normalised."""
    u_n, t_n = log_attn.shape
    # per-frame log-softmax over [blank, tokens]
    lp = np.zeros((u_n + 1, t_n))
    for t in range(t_n):
        col = [blank_logprob] + [float(log_attn[u, t]) for u in range(u_n)]
        z = _logsumexp(*col)
        for c in range(u_n + 1):
            lp[c, t] = col[c] - z
    ext = [0]
    for u in range(1, u_n + 1):
        ext += [u, 0]
    s_n = len(ext)
    alpha = [[-math.inf] * s_n for _ in range(t_n)]
    alpha[0][0] = lp[ext[0], 0]
    alpha[0][1] = lp[ext[1], 0]
    for t in range(1, t_n):
        for s in range(s_n):
            terms = [alpha[t - 1][s]]
            if s >= 1:
                terms.append(alpha[t - 1][s - 1])
            if s >= 2 and ext[s] != 0 and ext[s] != ext[s - 2]:
                terms.append(alpha[t - 1][s - 2])
            alpha[t][s] = _logsumexp(*terms) + lp[ext[s], t]
    return -_logsumexp(alpha[t_n - 1][s_n - 1], alpha[t_n - 1][s_n - 2])


def _paths(u_n: int, t_n: int):
    """All monotonic token sequences: start 0, end u_n-1, step 0 or +1 per frame."""
    for steps in itertools.combinations(range(1, t_n), u_n - 1):
        seq = []
        cur = 0
        st = set(steps)
        for t in range(t_n):
            if t in st:
                cur += 1
            seq.append(cur)
        yield seq


def path_score_ref(seq, emis: np.ndarray, stay: np.ndarray, move: np.ndarray) -> float:
    s = float(emis[seq[0], 0])
    for t in range(1, len(seq)):
        s += float(stay[seq[t], t]) if seq[t] == seq[t - 1] else float(move[seq[t - 1], t])
        s += float(emis[seq[t], t])
    return s


def hmm_viterbi_ref(
    emis: np.ndarray, stay: np.ndarray, move: np.ndarray
) -> tuple[list[int], float]:
    """Brute force over all monotonic paths (tiny sizes only). Returns (best token sequence, score)."""
    u_n, t_n = emis.shape
    best, best_s = None, -math.inf
    for seq in _paths(u_n, t_n):
        sc = path_score_ref(seq, emis, stay, move)
        if sc > best_s + 1e-12:
            best, best_s = seq, sc
    assert best is not None
    return best, best_s


def hmm_loglik_ref(emis: np.ndarray, stay: np.ndarray, move: np.ndarray) -> float:
    """Forward algorithm by loops: log sum over all monotonic paths of exp(score)."""
    u_n, t_n = emis.shape
    a = [-math.inf] * u_n
    a[0] = float(emis[0, 0])
    for t in range(1, t_n):
        new = [-math.inf] * u_n
        for u in range(u_n):
            terms = [a[u] + float(stay[u, t])]
            if u > 0:
                terms.append(a[u - 1] + float(move[u - 1, t]))
            new[u] = _logsumexp(*terms) + float(emis[u, t])
        a = new
    return a[u_n - 1]


def hmm_loglik_bruteforce(emis: np.ndarray, stay: np.ndarray, move: np.ndarray) -> float:
    return _logsumexp(*[path_score_ref(s, emis, stay, move) for s in _paths(*emis.shape)])


def skip_path_score_ref(
    seq, emis: np.ndarray, stay: np.ndarray, move: np.ndarray, skip: np.ndarray
) -> float:
    """Score of a token sequence that may pass optional tokens with 0 frames: a step from token
    ``a`` to ``c`` at frame t scores ``move[a, t] + sum(skip[a+1:c])``, tokens before the first
    occupied one and after the last one add their ``skip``."""
    u_n = emis.shape[0]
    s = float(emis[seq[0], 0]) + float(np.sum(skip[: seq[0]]))
    for t in range(1, len(seq)):
        a, c = seq[t - 1], seq[t]
        if c == a:
            s += float(stay[c, t])
        else:
            s += float(move[a, t]) + float(np.sum(skip[a + 1 : c]))
        s += float(emis[c, t])
    return s + float(np.sum(skip[seq[-1] + 1 : u_n]))


def hmm_viterbi_skip_ref(
    emis: np.ndarray, stay: np.ndarray, move: np.ndarray, optional: np.ndarray, log_skip: float
) -> tuple[list[int], float]:
    """Brute force over every non-decreasing token sequence whose unoccupied tokens are all
    optional (tiny sizes only). Returns (best token sequence, its score)."""
    u_n, t_n = emis.shape
    skip = np.where(optional, log_skip, -math.inf)
    best, best_s = None, -math.inf
    for seq in itertools.combinations_with_replacement(range(u_n), t_n):
        missing = set(range(u_n)) - set(seq)
        if any(not optional[k] for k in missing):
            continue
        sc = skip_path_score_ref(list(seq), emis, stay, move, skip)
        if sc > best_s + 1e-12:
            best, best_s = list(seq), sc
    assert best is not None
    return best, best_s


def token_emissions_ref(scores: np.ndarray, emission: str) -> np.ndarray:
    """Emissions of one item, loops in float64; ``scores`` (U, T) is the valid part only.

    ``P[u, t] = exp(s[u, t]) / sum_u' exp(s[u', t])`` (over tokens), ``Q[u, t] = exp(s[u, t]) /
    sum_t' exp(s[u, t'])`` (over frames); posterior: ``log P``; dual: ``(log P + log Q) / 2``
    (LoFTR's dual softmax); scaled: ``log(P[u, t] / ((1/T) sum_t' P[u, t']))`` (the posterior
    over the token's mean posterior, the hybrid NN/HMM scaled likelihood).
    """
    u_n, t_n = scores.shape
    log_p = np.zeros((u_n, t_n))
    log_q = np.zeros((u_n, t_n))
    for t in range(t_n):
        z = _logsumexp(*[float(scores[k, t]) for k in range(u_n)])
        for u in range(u_n):
            log_p[u, t] = float(scores[u, t]) - z
    for u in range(u_n):
        z = _logsumexp(*[float(scores[u, k]) for k in range(t_n)])
        for t in range(t_n):
            log_q[u, t] = float(scores[u, t]) - z
    out = np.zeros((u_n, t_n))
    for u in range(u_n):
        mean_p = sum(math.exp(log_p[u, k]) for k in range(t_n)) / t_n
        for t in range(t_n):
            if emission == "posterior":
                out[u, t] = log_p[u, t]
            elif emission == "dual":
                out[u, t] = 0.5 * (log_p[u, t] + log_q[u, t])
            elif emission == "scaled":
                out[u, t] = log_p[u, t] - math.log(mean_p)
            else:
                raise ValueError(emission)
    return out
