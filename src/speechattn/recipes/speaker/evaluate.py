"""Scoring speaker embeddings: EER, minDCF, cosine trials, DET curves, the HTML report, and
embedding a folder of audio files.

Shape legend: ``n`` utterances, ``e`` embedding size.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from speechattn._io import atomic_write, write_text_atomic
from speechattn.data.collate import pad_sequence_batch
from speechattn.functional.vad import VAD_RANGE_DB, energy_vad
from speechattn.recipes.speaker.config import SpeakerConfig
from speechattn.recipes.speaker.data import AUDIO_SUFFIXES, Trial
from speechattn.recipes.speaker.model import SpeakerEncoder, SpeakerEnsemble

__all__ = [
    "DEFAULT_TOP_K",
    "SCORE_NORMS",
    "VAD_MODES",
    "EmbedResult",
    "TrialSet",
    "asnorm",
    "centre_embeddings",
    "check_cohort",
    "cohort_stats",
    "compute_eer",
    "compute_min_dcf",
    "embed_directory",
    "embed_features",
    "envelope_baseline",
    "error_rates",
    "list_cohort_stats",
    "load_cohort",
    "normalise_scores",
    "npz_path",
    "pair_trials",
    "resolve_vad",
    "score_trials",
    "snorm",
    "stats_baseline",
    "trial_features",
    "write_report",
]


def error_rates(
    scores: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates at every threshold (accept score >= threshold)."""
    order = np.argsort(-scores, kind="stable")
    s, lab = scores[order], labels[order].astype(np.float64)
    n_t, n_n = lab.sum(), (1 - lab).sum()
    if n_t == 0 or n_n == 0:
        raise ValueError("Expected both target (1) and non-target (0) trials; found only one kind.")
    tp = np.concatenate([[0.0], np.cumsum(lab)])
    fp = np.concatenate([[0.0], np.cumsum(1 - lab)])
    p_miss = 1 - tp / n_t
    p_fa = fp / n_n
    thr = np.concatenate([[np.inf], s])
    return p_miss, p_fa, thr


def compute_eer(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Equal error rate: where miss and false-alarm rates cross (linear interpolation)."""
    p_miss, p_fa, _ = error_rates(np.asarray(scores, float), np.asarray(labels))
    diff = p_miss - p_fa  # decreasing from 1 to -1
    i = int(np.nonzero(diff <= 0)[0][0])
    if i == 0 or diff[i] == 0:
        return float((p_miss[i] + p_fa[i]) / 2)
    d0, d1 = diff[i - 1], diff[i]
    w = d0 / (d0 - d1)
    return float((1 - w) * p_miss[i - 1] + w * p_miss[i])


def compute_min_dcf(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Normalised minimum detection cost (NIST SRE): min over thresholds of
    ``(c_miss P_miss p_t + c_fa P_fa (1 - p_t)) / min(c_miss p_t, c_fa (1 - p_t))``."""
    p_miss, p_fa, _ = error_rates(np.asarray(scores, float), np.asarray(labels))
    dcf = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)
    return float(dcf.min() / min(c_miss * p_target, c_fa * (1 - p_target)))


VAD_MODES: tuple[str, ...] = ("auto", "on", "off")
"""``--vad`` choices: ``auto`` does what the checkpoint's config says (``vad``; off for
checkpoints that predate the field)."""


def resolve_vad(vad: str | bool, cfg: SpeakerConfig) -> bool:
    """Whether to apply the energy VAD when embedding with a checkpoint of config ``cfg``:
    ``"on"`` / True, ``"off"`` / False, or ``"auto"`` (``cfg.vad``).

    Raises:
        ValueError: ``vad`` not one of :data:`VAD_MODES` or a bool.
    """
    if isinstance(vad, bool):
        return vad
    if vad not in VAD_MODES:
        raise ValueError(f"Expected vad in {VAD_MODES}; found {vad!r}.")
    return cfg.vad if vad == "auto" else vad == "on"


@torch.no_grad()
def embed_features(
    model: SpeakerEncoder | SpeakerEnsemble,
    feats: Sequence[Tensor],
    *,
    batch_size: int = 32,
    vad: bool = False,
    vad_range_db: float = VAD_RANGE_DB,
) -> Tensor:
    """L2-normalised embeddings ``(N, E)`` of full utterances ``(T_i, n_mels)``, batched by
    length with lengths. With ``vad``, each utterance's non-speech frames are dropped first
    (:func:`speechattn.functional.vad.energy_vad` with ``range_db=vad_range_db``)."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]))
    out = torch.zeros(len(feats), model.embed_dim)
    for s in range(0, len(order), batch_size):
        ids = order[s : s + batch_size]
        x, lengths = pad_sequence_batch([feats[i] for i in ids])
        if vad:
            x, lengths, _ = energy_vad(x, lengths, range_db=vad_range_db)
        emb = model(x.to(device), lengths.to(device)).float().cpu()
        out[ids] = F.normalize(emb, dim=-1)
    return out


@overload
def centre_embeddings(emb: Tensor, mean: Tensor | np.ndarray | None = None) -> Tensor: ...
@overload
def centre_embeddings(emb: np.ndarray, mean: Tensor | np.ndarray | None = None) -> np.ndarray: ...
def centre_embeddings(
    emb: Tensor | np.ndarray, mean: Tensor | np.ndarray | None = None
) -> Tensor | np.ndarray:
    """Subtract a mean embedding and L2-normalise again: ``(N, E) -> (N, E)``.

    ``mean`` ``(E,)`` defaults to the mean of the rows themselves (set-mean centring, as the
    log-mel statistics baseline does): a speaker-independent direction shared by every utterance
    of a set (its engine, channel or recording conditions) then stops counting in cosine scores.
    It needs a set of several speakers: centring the clips of one person removes that person.
    On the leave-one-engine-out table (``benchmarks/RESULTS.md``) it lowers the mean EER of
    every encoder measured. Takes a tensor or a NumPy array (e.g. the ``embeddings`` and
    ``mean`` of ``speechattn speaker embed``'s ``.npz``) and returns the same kind.

    Raises:
        TypeError: ``emb`` or ``mean`` is neither a tensor nor a NumPy array.
        ValueError: ``emb`` is not 2-D, or no ``mean`` is given and ``emb`` has fewer than 2 rows.
    """
    as_numpy = isinstance(emb, np.ndarray)
    x = _as_tensor(emb, "emb")
    if x.dim() != 2:
        raise ValueError(f"Expected embeddings (N, E); found shape {tuple(x.shape)}.")
    if mean is None:
        if x.shape[0] < 2:
            raise ValueError(
                f"Expected at least 2 embeddings to centre on their own mean; found {x.shape[0]}."
            )
        m = x.mean(0)
    else:
        m = _as_tensor(mean, "mean").to(dtype=x.dtype, device=x.device)
    if m.shape != x.shape[1:]:
        raise ValueError(f"Expected mean (E={x.shape[1]},); found {tuple(m.shape)}.")
    out = F.normalize(x - m, dim=-1)
    return out.numpy() if as_numpy else out


def _as_tensor(value: object, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise TypeError(
        f"Expected {name} as a torch.Tensor or numpy.ndarray; found {type(value).__name__}."
    )


SCORE_NORMS = ("none", "snorm", "asnorm")
"""Score normalisations of :func:`normalise_scores` (``none``: the cosine as it is)."""


def _check_rows(x: object, name: str, dim: int | None = None) -> Tensor:
    t = _as_tensor(x, name)
    if t.dim() != 2:
        raise ValueError(f"Expected {name} (N, E); found shape {tuple(t.shape)}.")
    if dim is not None and t.shape[1] != dim:
        raise ValueError(f"Expected {name} with E={dim} columns; found {t.shape[1]}.")
    if not t.is_floating_point():
        raise TypeError(f"Expected {name} as floating point; found {t.dtype}.")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"Expected finite {name}; found NaN or inf.")
    return F.normalize(t.double(), dim=-1)


def _check_top_k(top_k: int | None, need: bool) -> None:
    if top_k is None:
        if need:
            raise ValueError("Expected top_k (an int >= 2) for AS-norm; found None.")
        return
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 2:
        raise ValueError(
            f"Expected top_k as an int >= 2 (a spread needs two scores); found {top_k!r}."
        )


def _mean_std(sum_: Tensor, sq: Tensor, n: Tensor | float) -> tuple[Tensor, Tensor]:
    mean = sum_ / n
    var = (sq / n - mean * mean).clamp_min(0.0)
    return mean, var.sqrt()


def cohort_stats(
    emb: Tensor | np.ndarray,
    cohort: Tensor | np.ndarray,
    *,
    top_k: int | None = None,
    chunk: int = 1024,
) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation (population, as WeSpeaker's ``np.std``) of each row's cosine
    scores against a cohort: ``(N, E), (C, E) -> (N,), (N,)`` float64.

    With ``top_k`` only each row's ``min(top_k, C)`` highest cohort scores count (AS-norm's
    adaptive cohort); None uses the whole cohort (S-norm). Rows are L2-normalised here.
    """
    e = _check_rows(emb, "emb")
    c = _check_rows(cohort, "cohort", e.shape[1])
    if c.shape[0] < 2:
        raise ValueError(f"Expected a cohort of at least 2 rows; found {c.shape[0]}.")
    _check_top_k(top_k, need=False)
    k = c.shape[0] if top_k is None else min(top_k, c.shape[0])
    means, stds = [], []
    for s in range(0, e.shape[0], chunk):
        sc = e[s : s + chunk] @ c.T
        if k < c.shape[0]:
            sc = sc.topk(k, dim=1).values
        means.append(sc.mean(1))
        stds.append(sc.std(1, unbiased=False))
    if not means:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    return torch.cat(means), torch.cat(stds)


def _symmetric(
    score: Tensor, e_mean: Tensor, e_std: Tensor, t_mean: Tensor, t_std: Tensor, eps: float
) -> Tensor:
    return 0.5 * ((score - e_mean) / e_std.clamp_min(eps) + (score - t_mean) / t_std.clamp_min(eps))


def snorm(
    enroll: Tensor | np.ndarray,
    test: Tensor | np.ndarray,
    cohort: Tensor | np.ndarray,
    *,
    eps: float = 1e-6,
) -> Tensor:
    """Symmetric score normalisation (S-norm) of cosine trials: ``(K, E), (K, E), (C, E) -> (K,)``.

    Trial ``k`` scores ``s = cos(enroll[k], test[k])`` and becomes
    ``((s - mu_e) / sd_e + (s - mu_t) / sd_t) / 2``, where ``mu_e, sd_e`` are the mean and
    (population) standard deviation of ``cos(enroll[k], c)`` over every cohort row ``c``, and
    ``mu_t, sd_t`` the same for ``test[k]`` (Kenny 2010; the ``snorm`` of WeSpeaker's
    ``score_norm.py``). Every row is L2-normalised first; the caller centres them if wanted
    (all with one mean). WeSpeaker's cohort is the training speakers' mean embeddings;
    :func:`normalise_scores` also takes the trial list's own files (which did better on the
    leave-one-engine-out test, ``benchmarks/RESULTS.md``). Float64 out; not meant for gradients.

    Naive equivalent, per trial::

        ce, ct = cohort @ e, cohort @ t
        s = e @ t
        0.5 * ((s - ce.mean()) / ce.std(unbiased=False) + (s - ct.mean()) / ct.std(unbiased=False))

    Raises:
        TypeError: an input is neither a tensor nor a NumPy array, or not floating point.
        ValueError: shapes differ from ``(K, E)``, ``(K, E)``, ``(C, E)``, ``C < 2``, or a value
            is not finite.
    """
    return asnorm(enroll, test, cohort, top_k=None, eps=eps)


def asnorm(
    enroll: Tensor | np.ndarray,
    test: Tensor | np.ndarray,
    cohort: Tensor | np.ndarray,
    *,
    top_k: int | None,
    eps: float = 1e-6,
) -> Tensor:
    """Adaptive symmetric score normalisation (AS-norm, Matejka et al. 2017): :func:`snorm`
    where each side's mean and standard deviation use only its ``top_k`` highest cohort scores
    (the cohort rows closest to that side). ``(K, E), (K, E), (C, E) -> (K,)`` float64.

    ``top_k`` at least ``C`` (or None) is S-norm. WeSpeaker's default is ``top_n=300`` of the
    training speakers' mean embeddings.

    Raises:
        TypeError: as :func:`snorm`.
        ValueError: as :func:`snorm`; ``top_k`` not an int >= 2.
    """
    e = _check_rows(enroll, "enroll")
    t = _check_rows(test, "test", e.shape[1])
    if t.shape[0] != e.shape[0]:
        raise ValueError(
            f"Expected enroll and test with the same number of trials; "
            f"found {e.shape[0]} and {t.shape[0]}."
        )
    _check_top_k(top_k, need=False)
    e_mean, e_std = cohort_stats(e, cohort, top_k=top_k)
    t_mean, t_std = cohort_stats(t, cohort, top_k=top_k)
    return _symmetric((e * t).sum(-1), e_mean, e_std, t_mean, t_std, eps)


def _check_index(idx: object, name: str, n: int) -> Tensor:
    t = _as_tensor(idx, name)
    if t.dim() != 1 or t.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"Expected {name} as 1-D integer indices; found {t.dtype} {tuple(t.shape)}."
        )
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
        raise ValueError(
            f"Expected {name} indices in [0, {n}); found {int(t.min())}..{int(t.max())}."
        )
    return t.long()


def list_cohort_stats(
    emb: Tensor, enroll: Tensor, test: Tensor, *, top_k: int | None = None, chunk: int = 1024
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cohort statistics of trial ``k`` when the cohort is the trial list's own files: every
    row of ``emb (N, E)`` except ``enroll[k]`` and ``test[k]``. Returns the enrolment side's
    mean and std, then the test side's, each ``(K,)`` float64 (population std; with ``top_k``,
    over the ``min(top_k, N - 2)`` highest scores). Memory ``O(chunk N + N top_k)``."""
    x = _check_rows(emb, "emb")
    n = x.shape[0]
    if n < 4:
        raise ValueError(
            f"Expected at least 4 files for a cohort of the list's own files; found {n}."
        )
    enroll = _check_index(enroll, "enroll", n)
    test = _check_index(test, "test", n)
    if enroll.shape != test.shape:
        raise ValueError(
            f"Expected enroll and test of one shape; found {tuple(enroll.shape)} and "
            f"{tuple(test.shape)}."
        )
    if bool((enroll == test).any()):
        k = int(torch.nonzero(enroll == test)[0, 0])
        raise ValueError(
            f"Expected two different files per trial; trial {k} compares file "
            f"{int(enroll[k])} with itself."
        )
    _check_top_k(top_k, need=False)
    k_eff = n - 2 if top_k is None else min(top_k, n - 2)
    full = k_eff == n - 2
    sums, sqs, topv, topi = [], [], [], []
    for s in range(0, n, chunk):
        sc = x[s : s + chunk] @ x.T
        rows = torch.arange(s, s + sc.shape[0])
        if full:
            sc[torch.arange(sc.shape[0]), rows] = 0.0
            sums.append(sc.sum(1))
            sqs.append((sc * sc).sum(1))
        else:
            sc[torch.arange(sc.shape[0]), rows] = -torch.inf
            v, i = sc.topk(k_eff + 1, dim=1)
            topv.append(v)
            topi.append(i)
    pair = (x[enroll] * x[test]).sum(-1)

    def side(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        if full:
            s_all, q_all = torch.cat(sums), torch.cat(sqs)
            return _mean_std(s_all[a] - pair, q_all[a] - pair * pair, float(n - 2))
        v, i = torch.cat(topv)[a], torch.cat(topi)[a]  # (K, k + 1)
        keep = i != b[:, None]
        miss = keep.all(1)  # the partner is not among the k + 1: drop the (k + 1)-th
        keep[miss, -1] = False
        v = torch.where(keep, v, torch.zeros_like(v))
        return _mean_std(v.sum(1), (v * v).sum(1), float(k_eff))

    e_mean, e_std = side(enroll, test)
    t_mean, t_std = side(test, enroll)
    return e_mean, e_std, t_mean, t_std


def normalise_scores(
    emb: Tensor | np.ndarray,
    enroll: Tensor | np.ndarray,
    test: Tensor | np.ndarray,
    *,
    method: str = "none",
    cohort: Tensor | np.ndarray | None = None,
    top_k: int | None = None,
    eps: float = 1e-6,
) -> np.ndarray:
    """Scores ``(K,)`` of the trials ``(emb[enroll[k]], emb[test[k]])``, ``emb (N, E)``: the
    cosine (``method="none"``), :func:`snorm` or :func:`asnorm` (``top_k``) against ``cohort
    (C, E)``, or, with ``cohort=None``, against the trial list's own files: every file except
    the two a trial compares (:func:`list_cohort_stats`; needs no training data and adapts to
    the list's recordings, but files of the trial's own speakers enter the cohort). Each file's
    cohort statistics are computed once. Rows are L2-normalised here; centre ``emb`` and
    ``cohort`` with one mean first when wanted (:func:`centre_embeddings`).

    Raises:
        TypeError, ValueError: as :func:`snorm`; an unknown ``method``; indices out of range.
    """
    if method not in SCORE_NORMS:
        raise ValueError(f"Expected method in {SCORE_NORMS}; found {method!r}.")
    x = _check_rows(emb, "emb")
    enroll = _check_index(enroll, "enroll", x.shape[0])
    test = _check_index(test, "test", x.shape[0])
    if enroll.shape != test.shape:
        raise ValueError(
            f"Expected enroll and test of one shape; found {tuple(enroll.shape)} and "
            f"{tuple(test.shape)}."
        )
    _check_top_k(top_k, need=method == "asnorm")
    score = (x[enroll] * x[test]).sum(-1)
    if method == "none":
        return score.numpy()
    k = top_k if method == "asnorm" else None
    if cohort is None:
        e_mean, e_std, t_mean, t_std = list_cohort_stats(x, enroll, test, top_k=k)
    else:
        mean, std = cohort_stats(x, cohort, top_k=k)
        e_mean, e_std, t_mean, t_std = mean[enroll], std[enroll], mean[test], std[test]
    return _symmetric(score, e_mean, e_std, t_mean, t_std, eps).numpy()


def pair_trials(emb: Tensor, speakers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores and target labels of every unordered pair of rows of ``emb (N, E)``."""
    sim = (emb @ emb.T).numpy()
    spk = np.asarray(speakers)
    iu = np.triu_indices(len(spk), k=1)
    return sim[iu], (spk[iu[0]] == spk[iu[1]]).astype(np.int64)


class TrialSet(NamedTuple):
    """Features of the usable files of a trial list and the trials that use only those.

    ``feats[i]`` ``(T_i, n_mels)``; trial ``k`` compares ``feats[enroll[k]]`` with
    ``feats[test[k]]`` (int64 ``(K,)``) and ``labels[k]`` is 1 for a target trial.
    """

    feats: list[Tensor]
    enroll: Tensor
    test: Tensor
    labels: np.ndarray
    skipped_trials: int

    def scores(self, emb: Tensor) -> np.ndarray:
        """Cosine scores ``(K,)`` from L2-normalised embeddings ``(len(feats), E)``."""
        return (emb[self.enroll] * emb[self.test]).sum(-1).numpy()


def trial_features(
    trials: Sequence[Trial],
    cfg: SpeakerConfig,
    *,
    on_skip: Callable[[str, str], None] | None = None,
) -> TrialSet:
    """Read every file of ``trials`` once; trials with an unusable file are left out (each file
    reported once via ``on_skip``).

    Raises:
        ValueError: no trial is left, or the ones left lack targets or non-targets.
    """
    from speechattn.recipes.speaker.data import SpeakerUtterance, load_feature_set

    paths = sorted({t.enroll for t in trials} | {t.test for t in trials})
    fs = load_feature_set([SpeakerUtterance(str(p), p, "?") for p in paths], cfg, on_skip=on_skip)
    pos = {fid: i for i, fid in enumerate(fs.ids)}
    kept = [t for t in trials if str(t.enroll) in pos and str(t.test) in pos]
    if not kept:
        raise ValueError("No trial could be scored: every trial has an unusable audio file.")
    labels = np.asarray([t.target for t in kept], dtype=np.int64)
    if labels.min() == labels.max():
        raise ValueError(
            "Expected both target and non-target trials among the scorable ones; found one kind."
        )
    return TrialSet(
        fs.feats,
        torch.tensor([pos[str(t.enroll)] for t in kept]),
        torch.tensor([pos[str(t.test)] for t in kept]),
        labels,
        len(trials) - len(kept),
    )


MIN_CENTRE_FILES = 10
"""Fewest files of a trial list that :func:`score_trials` centres on their own mean."""


DEFAULT_TOP_K = 50
"""AS-norm's default top-k: the k chosen on the leave-one-engine-out test (``benchmarks/
RESULTS.md``, trial lists of 40-70 files); WeSpeaker uses 300 with a cohort of 5,994 speakers."""


def check_cohort(cohort: object, embed_dim: int, name: str = "cohort") -> Tensor:
    """A cohort matrix ``(C, E)`` checked against the encoder's ``embed_dim``: float, finite,
    at least 2 rows.

    Raises:
        TypeError: not a tensor or NumPy array, or not floating point.
        ValueError: not ``(C, E=embed_dim)``, fewer than 2 rows, or not finite.
    """
    c = _as_tensor(cohort, name)
    if c.dim() != 2 or c.shape[1] != embed_dim:
        raise ValueError(
            f"Expected {name} (C, E={embed_dim}) embeddings of this encoder; "
            f"found shape {tuple(c.shape)}."
        )
    if not c.is_floating_point():
        raise TypeError(f"Expected {name} as floating point; found {c.dtype}.")
    if c.shape[0] < 2:
        raise ValueError(f"Expected a {name} of at least 2 embeddings; found {c.shape[0]}.")
    if not bool(torch.isfinite(c).all()):
        raise ValueError(f"Expected finite {name} embeddings; found NaN or inf.")
    return c.float()


def score_trials(
    model: SpeakerEncoder | SpeakerEnsemble,
    cfg: SpeakerConfig,
    trials: Sequence[Trial],
    *,
    on_skip: Callable[[str, str], None] | None = None,
    centre: bool = True,
    score_norm: str = "none",
    cohort: Tensor | np.ndarray | None = None,
    top_k: int | None = None,
    vad: str | bool = "auto",
) -> dict[str, Any]:
    """Embed every file of ``trials`` once and score each trial by cosine similarity.

    ``vad`` (:func:`resolve_vad`: ``"auto"`` follows ``cfg.vad``) drops each file's non-speech
    frames before the encoder (not before the log-mel statistics baseline).

    With ``centre`` (default) the embeddings are centred on the mean embedding of the trial
    list's files first (:func:`centre_embeddings`), as the log-mel statistics baseline always is,
    when the list has at least ``MIN_CENTRE_FILES`` usable files: the mean of a handful of clips
    is mostly their speakers, and centring on it would push those speakers apart (two files
    centred on their own mean always score -1). Fewer files are scored raw (``centred`` False).

    ``score_norm`` (``"none"``, ``"snorm"``, ``"asnorm"`` with ``top_k``, default
    :data:`DEFAULT_TOP_K`) normalises the scores (:func:`normalise_scores`) against ``cohort``
    ``(C, E)`` (uncentred embeddings of this encoder, e.g. ``speechattn speaker embed``'s
    ``.npz``; centred with the list's mean like the list's files) or, when None, against the
    list's own files (every file but the two of a trial; at least ``MIN_CENTRE_FILES`` usable
    files). The log-mel statistics baseline gets the same normalisation when the cohort is the
    list (``baseline_score_norm``), none otherwise.

    Returns ``eer``, ``min_dcf``, ``num_trials``, ``skipped_trials``, ``centred``,
    ``score_norm``, ``cohort`` (``"list"``, ``"given"`` or None), ``top_k``, and the same for the
    log-mel statistics baseline under ``baseline_eer`` / ``baseline_min_dcf``.

    Raises:
        ValueError: as :func:`trial_features`; an unknown ``score_norm``; a list cohort of too
            few files; a ``cohort`` that is not ``(C, E)`` of this encoder's size.
    """
    if score_norm not in SCORE_NORMS:
        raise ValueError(f"Expected score_norm in {SCORE_NORMS}; found {score_norm!r}.")
    if score_norm == "asnorm" and top_k is None:
        top_k = DEFAULT_TOP_K
    _check_top_k(top_k, need=False)
    k = top_k if score_norm == "asnorm" else None
    cohort_t = None if cohort is None else check_cohort(cohort, model.embed_dim)
    use_vad = resolve_vad(vad, cfg)
    ts = trial_features(trials, cfg, on_skip=on_skip)
    emb = embed_features(model, ts.feats, vad=use_vad, vad_range_db=cfg.vad_range_db)
    n = emb.shape[0]
    if score_norm != "none" and cohort_t is None and n < MIN_CENTRE_FILES:
        raise ValueError(
            f"Expected at least {MIN_CENTRE_FILES} usable files to normalise scores against the "
            f"list's own files; found {n}. Give a cohort of other speakers' embeddings or no "
            "score normalisation."
        )
    centre = centre and n >= MIN_CENTRE_FILES
    base = stats_baseline(ts.feats, centre=False)
    mean = emb.mean(0)
    if centre:
        emb = centre_embeddings(emb, mean)
        if cohort_t is not None:
            cohort_t = centre_embeddings(cohort_t, mean)
    base_norm = score_norm if cohort_t is None else "none"
    s = normalise_scores(emb, ts.enroll, ts.test, method=score_norm, cohort=cohort_t, top_k=k)
    b = normalise_scores(centre_embeddings(base), ts.enroll, ts.test, method=base_norm, top_k=k)
    return {
        "eer": compute_eer(s, ts.labels),
        "min_dcf": compute_min_dcf(s, ts.labels),
        "baseline_eer": compute_eer(b, ts.labels),
        "baseline_min_dcf": compute_min_dcf(b, ts.labels),
        "num_trials": len(s),
        "num_targets": int(ts.labels.sum()),
        "centred": centre,
        "score_norm": score_norm,
        "cohort": None if score_norm == "none" else ("list" if cohort_t is None else "given"),
        "cohort_size": None if cohort_t is None else int(cohort_t.shape[0]),
        "top_k": k,
        "baseline_score_norm": base_norm,
        "skipped_trials": ts.skipped_trials,
        "vad": use_vad,
    }


def load_cohort(path: str | os.PathLike[str], *, embed_dim: int | None = None) -> np.ndarray:
    """The ``embeddings`` ``(C, E)`` of an ``.npz`` written by ``speechattn speaker embed``
    (read without pickle), as a score-normalisation cohort.

    Args:
        path: the ``.npz`` file.
        embed_dim: the encoder's embedding size ``E`` the rows must have (None: not checked
            here; :func:`score_trials` checks it against its encoder).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable ``.npz`` (a ``.npy``, a pickle, a truncated file), no
            ``embeddings`` array, one that is not floating point, not 2-D ``(C, E)``, of fewer
            than 2 rows, of another ``E`` than ``embed_dim`` or not finite, or written with
            ``--centre`` (those rows are centred on their own folder's mean, and scoring centres
            the cohort on the trial list's mean). Each message names the file, what was expected
            and what was found.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"No cohort file {p} (write one with 'speechattn speaker embed').")
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"Could not read {p} as an .npz of embeddings ({exc}).") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(
            f"Expected {p} to be an .npz of embeddings (speechattn speaker embed's); found a "
            f"single .npy array of shape {getattr(z, 'shape', '?')}. Write the cohort with "
            "'speechattn speaker embed'."
        )
    try:
        with z:
            files = set(z.files)
            if "embeddings" not in files:
                raise ValueError(
                    f"Expected {p} to hold an 'embeddings' array (speechattn speaker embed's "
                    f".npz); found {sorted(files) or 'no arrays'}."
                )
            if "mean" in files:
                raise ValueError(
                    f"{p} was written with --centre (its rows are centred on their own folder's "
                    "mean); write the cohort without --centre: scoring centres it on the trial "
                    "list's mean."
                )
            try:
                emb = np.asarray(z["embeddings"])
            except ValueError as exc:  # an object array (needs pickle), a damaged header
                raise ValueError(f"Could not read {p}'s 'embeddings' array ({exc}).") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"Could not read {p} as an .npz of embeddings ({exc}).") from None
    if not np.issubdtype(emb.dtype, np.floating):
        raise ValueError(f"Expected {p}'s 'embeddings' as floating point; found {emb.dtype}.")
    want = "E" if embed_dim is None else f"E={embed_dim}"
    if emb.ndim != 2 or (embed_dim is not None and emb.shape[1] != embed_dim):
        raise ValueError(
            f"Expected {p}'s 'embeddings' of shape (C, {want}); found shape {emb.shape}."
        )
    if emb.shape[0] < 2:
        raise ValueError(
            f"Expected {p}'s 'embeddings' to hold at least 2 rows; found {emb.shape[0]}."
        )
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        raise ValueError(
            f"Expected finite values in {p}'s 'embeddings'; found NaN or inf in "
            f"{int(bad.sum())} of {emb.shape[0]} rows (first: row {int(np.argmax(bad))})."
        )
    return emb


def stats_baseline(feats: Sequence[Tensor], *, centre: bool = True) -> Tensor:
    """No training: log-mel std / mean-magnitude statistics, centred over the set, L2-normalised:
    ``(N, 2 n_mels)``. Computed on the band-mean-normalised (CMN) log-mels whatever
    normalisation ``feats (T_i, n_mels)`` had, so the baseline is the same for every front end.
    ``centre=False`` returns the statistics as they are (neither centred nor normalised), e.g. to
    centre a cohort's on a trial list's mean with :func:`centre_embeddings`."""
    rows = []
    for f in feats:
        f = f - f.mean(0, keepdim=True)
        rows.append(torch.cat([f.std(0, unbiased=False), f.abs().mean(0)]))
    base = torch.stack(rows)
    if not centre:
        return base
    return F.normalize(base - base.mean(0, keepdim=True), dim=-1)


def envelope_baseline(feats: Sequence[Tensor]) -> Tensor:
    """No training: each band's mean (with the utterance's mean level removed: the long-term
    spectral envelope) and std of the log-mels, centred over the set, L2-normalised:
    ``(N, 2 n_mels)``. ``feats (T_i, n_mels)`` must keep their band means (raw log-mels or the
    ``"gain"`` front end, not CMN). A stronger statistic than :func:`stats_baseline` on the
    synthetic voices of ``benchmarks/speaker_loeo.py`` (figures in ``benchmarks/RESULTS.md``)."""
    rows = []
    for f in feats:
        mean = f.mean(0)
        rows.append(torch.cat([mean - mean.mean(), f.std(0, unbiased=False)]))
    base = torch.stack(rows)
    return F.normalize(base - base.mean(0, keepdim=True), dim=-1)


def det_png(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> str:
    """A DET plot (probit axes) of ``{name: (p_miss, p_fa)}`` as base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def probit(p: np.ndarray) -> np.ndarray:
        return torch.special.ndtri(torch.as_tensor(np.clip(p, 1e-4, 1 - 1e-4))).numpy()

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (p_miss, p_fa) in curves.items():
        ax.plot(probit(p_fa), probit(p_miss), label=name)
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.4, 0.6])
    ax.set_xticks(probit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(probit(ticks), [f"{100 * t:g}" for t in ticks])
    lim = probit(np.array([0.0005, 0.7]))
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_report(
    path: Path,
    rows: list[dict[str, Any]],
    png: str,
    cfg: SpeakerConfig,
    notes: str,
    *,
    title: str = "Speaker verification on held-out synthetic voices",
) -> None:
    """The HTML report: notes, a table per pooling, the DET curve and the configuration."""
    head = (
        "<tr><th>pooling</th><th>EER (%)</th><th>minDCF (p=0.01)</th><th>params</th>"
        "<th>final loss</th><th>train s</th></tr>"
    )
    body = "".join(
        f"<tr><td>{html.escape(r['pooling'])}</td><td>{100 * r['eer']:.2f}</td>"
        f"<td>{r['min_dcf']:.3f}</td><td>{r.get('params', '')}</td>"
        f"<td>{r.get('final_loss', float('nan')):.3f}</td><td>{r.get('train_s', 0.0):.1f}</td></tr>"
        for r in rows
    )
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>speechattn speaker report</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(notes)}</p>
<table>{head}{body}</table>
<h2>DET curve</h2><img alt="DET curve" src="data:image/png;base64,{png}">
<h2>Configuration</h2><pre>{html.escape(json.dumps(cfg.to_dict(), indent=2))}</pre>
</body></html>"""
    write_text_atomic(path, doc)


class EmbedResult(NamedTuple):
    """What :func:`embed_directory` wrote.

    Attributes:
        keys: file paths relative to the folder (posix), one per row of ``embeddings``.
        embeddings: float32 ``(N, E)``, rows L2-normalised and finite.
        skipped: ``(relative path, reason)`` of every file left out.
        path: the ``.npz`` file actually written.
        mean: with ``centre=True``, the mean ``(E,)`` subtracted from the (L2-normalised)
            embeddings before they were normalised again; None otherwise.
    """

    keys: list[str]
    embeddings: np.ndarray
    skipped: list[tuple[str, str]]
    path: Path
    mean: np.ndarray | None = None


def npz_path(out: str | os.PathLike[str]) -> Path:
    """The file ``np.savez`` writes for ``out``: ``.npz`` is appended unless already there."""
    p = Path(out)
    return p if p.suffix == ".npz" else p.with_name(p.name + ".npz")


def embed_directory(
    audio_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    progress: bool = False,
    centre: bool = False,
    vad: str | bool = "auto",
) -> EmbedResult:
    """Embed every audio file under ``audio_dir`` (any rate: resampled) into one ``.npz``.

    The file holds two arrays: ``keys`` (unicode, the paths relative to ``audio_dir``, so
    ``a/x.wav`` and ``b/x.wav`` are two keys) and ``embeddings`` float32 ``(N, E)``; read it with
    ``np.load(path)`` (no pickle). Files that are unreadable, shorter than one analysis window,
    non-finite or silent are skipped, each reported once through ``on_skip(path, reason)``
    (default: a warning); no NaN embedding is ever written.

    With ``centre``, the embeddings are centred on their own mean before being L2-normalised
    again (:func:`centre_embeddings`, what ``speechattn speaker score`` does to a trial list's
    files) and the file also holds that ``mean`` ``(E,)``: centre a later clip ``x`` (an
    uncentred embedding) with ``normalize(x - mean)``. Only for folders of several speakers:
    centring one person's clips removes what they share, the person.

    ``vad`` (:func:`resolve_vad`: ``"auto"`` follows the checkpoint's ``vad``) drops each file's
    non-speech frames before the encoder.

    Raises:
        ValueError: ``audio_dir`` is not a folder, holds no audio file, or no file is usable
            (nothing is written then); ``centre`` with fewer than 2 usable files.
    """
    from speechattn.recipes.speaker.data import SpeakerUtterance, load_feature_set
    from speechattn.recipes.speaker.model import load_checkpoint

    root = Path(audio_dir)
    if not root.is_dir():
        raise ValueError(f"Expected AUDIO_DIR to be a directory; found {root}.")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"Found no audio files ({', '.join(AUDIO_SUFFIXES)}) under {root}.")
    model, cfg = load_checkpoint(checkpoint)
    use_vad = resolve_vad(vad, cfg)
    rel = {p: p.relative_to(root).as_posix() for p in files}
    skipped: list[tuple[str, str]] = []

    def skip(path: str, reason: str) -> None:
        key = rel.get(Path(path), path)
        skipped.append((key, reason))
        if on_skip is not None:
            on_skip(key, reason)
        else:
            warnings.warn(f"skipping {key}: {reason}", stacklevel=3)

    utts = [SpeakerUtterance(rel[p], p, "?") for p in files]
    fs = load_feature_set(utts, cfg, on_skip=skip, progress=progress)
    emb = (
        embed_features(model, fs.feats, vad=use_vad, vad_range_db=cfg.vad_range_db)
        .numpy()
        .astype(np.float32)
    )
    keep = [bool(np.isfinite(row).all()) for row in emb]
    for fid, ok in zip(fs.ids, keep):
        if not ok:
            skip(str(root / fid), "embedding is not finite")
    keys = [fid for fid, ok in zip(fs.ids, keep) if ok]
    emb = emb[keep]
    if not keys:
        raise ValueError(
            f"No usable audio file under {root}: all {len(files)} were skipped (see the warnings)."
        )
    arrays: dict[str, np.ndarray] = {"keys": np.asarray(keys, dtype=np.str_)}
    mean: np.ndarray | None = None
    if centre:
        if len(keys) < 2:
            raise ValueError(
                f"Expected at least 2 usable audio files under {root} to centre the embeddings; "
                f"found {len(keys)}. Leave out --centre."
            )
        t = torch.from_numpy(emb)
        mean = t.mean(0).numpy().astype(np.float32)
        emb = centre_embeddings(t).numpy().astype(np.float32)
        arrays["mean"] = mean
    arrays["embeddings"] = emb
    path = npz_path(out)
    with atomic_write(path) as tmp, tmp.open("wb") as f:  # a file object: savez adds no suffix
        np.savez(f, **arrays)  # type: ignore[arg-type]
    return EmbedResult(keys, emb, skipped, path, mean)
