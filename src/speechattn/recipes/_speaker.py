"""Speaker recipe: train a small speaker encoder once per pooling, score held-out voices.

``speechattn speaker`` synthesises a multi-voice corpus (:func:`speechattn.data.synth.synth_corpus`),
trains a thin TDNN on log-mels with an additive-angular-margin (AAM) softmax once per pooling
layer (variable-length crops, padded batches with lengths), embeds the utterances of held-out
voices, scores every pair with cosine similarity and reports EER and minDCF per pooling in an
HTML report with a DET curve. ``--quick`` is a seconds-long smoke run (used by the tests).

``speechattn speaker embed AUDIO_DIR --out FILE.npz [--checkpoint CKPT]`` writes one L2-normalised
embedding per audio file (keyed by file stem); without ``--checkpoint`` it uses the small
checkpoint shipped in ``speechattn/assets/speaker_default.pt``, rebuilt with::

    OMP_NUM_THREADS=1 speechattn speaker --poolings ASTP --out-dir runs/speaker \
        --save-checkpoint src/speechattn/assets/speaker_default.pt

(the default sizes: 480 training + 40 held-out espeak voices, 12 utterances each, 2000 steps;
ASTP is the pooling with the lowest held-out EER in the full table of benchmarks/RESULTS.md;
with several poolings the checkpoint is the one with the lowest EER; weights stored in float16).

Multi-process training: ``torchrun --nproc_per_node 2 -m speechattn speaker ...`` (gloo backend,
DistributedDataParallel; rank 0 synthesises the corpus, evaluates and writes the report).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechattn.functional.masks import lengths_to_valid_mask
from speechattn.nn import pooling as P

__all__ = [
    "POOLINGS",
    "SpeakerConfig",
    "SpeakerEncoder",
    "compute_eer",
    "compute_min_dcf",
    "embed_directory",
    "load_checkpoint",
    "run_speaker",
]

from speechattn.recipes.speaker import POOLINGS

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au")
_DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "speaker_default.pt"


@dataclass
class SpeakerConfig:
    """Everything a run (and a checkpoint) needs; ``quick()`` gives the smoke-test sizes.

    The defaults (480 training + 40 held-out voices, 12 utterances each, 2000 steps of 48 crops,
    TDNN with 64 channels), without augmentation, give 0.59% EER with ASTP on the held-out voices
    (0.77% and 0.65% on two other draws of 40 held-out voices); fewer voices or steps were clearly
    worse (120 voices / 300 steps: 2.2%; 1000 steps: 0.75% and 1.27%). ``freq_mask`` / ``time_mask``
    (SpecAugment-style masking of one band of up to ``freq_mask`` mel bins and one span of up to
    ``time_mask`` frames per training crop) are off: they slowed convergence at 1000 steps.
    ``augment_copies`` (default 2) adds that many copies of every training utterance through a
    random channel (:class:`speechattn.data.augment.ChannelAugment`: equaliser, room, telephone
    band, mu-law, noise); held-out voices are never augmented. It trades a little synthetic EER for
    real voices: on 9 real speakers (``benchmarks/eval_speaker_real.py``) EER 28.5% without it,
    15.5% with 2 copies (log-mel statistics: 34.3%); on the held-out synthetic voices ASTP gives
    0.81% (1.25% on another draw of voices) against 0.59% (0.77%) without. 1 or 4 copies and 3000
    steps were no better (figures in ``benchmarks/RESULTS.md``).
    """

    train_speakers: int = 480
    test_speakers: int = 40
    utterances_per_speaker: int = 12
    seed: int = 0
    sample_rate: int = 16000
    n_mels: int = 40
    channels: int = 64
    embed_dim: int = 128
    steps: int = 2000
    batch_size: int = 48
    min_frames: int = 100
    max_frames: int = 250
    lr: float = 3e-3
    margin: float = 0.2
    scale: float = 30.0
    freq_mask: int = 0
    time_mask: int = 0
    augment_copies: int = 2
    poolings: list[str] = field(default_factory=lambda: list(POOLINGS))

    @classmethod
    def quick(cls) -> SpeakerConfig:
        return cls(
            train_speakers=8,
            test_speakers=4,
            utterances_per_speaker=6,
            channels=32,
            embed_dim=32,
            steps=40,
            batch_size=16,
            min_frames=60,
            max_frames=120,
        )


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


def make_pooling(name: str, channels: int) -> nn.Module:
    """A pooling layer over ``channels`` features, by WeSpeaker class name."""
    if name == "TAP":
        return P.TAP(channels)
    if name == "TSDP":
        return P.TSDP(channels)
    if name == "TSTP":
        return P.TSTP(channels)
    if name == "ASTP":
        return P.ASTP(channels, bottleneck_dim=max(16, channels // 2))
    if name == "MHASTP":
        return P.MHASTP(channels, head_num=4)
    if name == "MQMHASTP":
        return P.MQMHASTP(channels, head_num=4 if channels % 8 else 8)
    if name == "ASP":
        if channels % 8:
            raise ValueError(f"ASP needs channels divisible by 8; found {channels}.")
        return P.ASP(channels // 8, 8)  # D = in_planes * 8 * (8 // 8) = channels
    raise ValueError(f"Expected a pooling in {POOLINGS}; found {name!r}.")


class SpeakerEncoder(nn.Module):
    """Thin TDNN (x-vector style) on log-mels + a pooling layer + a linear embedding.

    ``forward(feats (B, T, n_mels), lengths (B,)) -> (B, embed_dim)``. Padded frames are zeroed
    after every layer and the pooling uses lengths, so in eval mode a padded item embeds exactly
    as the same item alone.
    """

    def __init__(self, *, n_mels: int, channels: int, embed_dim: int, pooling: str) -> None:
        super().__init__()
        specs = [(n_mels, 5, 1), (channels, 3, 2), (channels, 3, 3), (channels, 1, 1)]
        self.convs = nn.ModuleList(
            [
                nn.Conv1d(cin, channels, k, dilation=d, padding=d * (k - 1) // 2)
                for cin, k, d in specs
            ]
        )
        self.norms = nn.ModuleList([nn.BatchNorm1d(channels) for _ in specs])
        self.pool = make_pooling(pooling, channels)
        out_dim = int(self.pool.get_out_dim())  # type: ignore[operator]
        self.embed = nn.Linear(out_dim, embed_dim)
        self.embed_norm = nn.BatchNorm1d(embed_dim)

    def forward(self, feats: Tensor, lengths: Tensor) -> Tensor:
        x = feats.transpose(1, 2)
        mask = lengths_to_valid_mask(lengths, x.shape[-1]).unsqueeze(1).to(x.dtype)
        x = x * mask
        for conv, norm in zip(self.convs, self.norms):
            x = norm(F.relu(conv(x))) * mask
        return self.embed_norm(self.embed(self.pool(x, lengths)))


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace): ``s cos(theta_y + m)`` for the target class."""

    def __init__(self, embed_dim: int, num_classes: int, *, margin: float, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embed_dim) * 0.01)
        self.margin = margin
        self.scale = scale

    def forward(self, emb: Tensor, labels: Tensor, margin: float | None = None) -> Tensor:
        m = self.margin if margin is None else margin
        cos = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1 + 1e-6, 1 - 1e-6)
        theta = torch.acos(cos.gather(1, labels[:, None]))
        target = torch.cos(theta + m)
        logits = cos.scatter(1, labels[:, None], target) * self.scale
        return F.cross_entropy(logits, labels)


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def _error_rates(
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
    p_miss, p_fa, _ = _error_rates(np.asarray(scores, float), np.asarray(labels))
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
    p_miss, p_fa, _ = _error_rates(np.asarray(scores, float), np.asarray(labels))
    dcf = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)
    return float(dcf.min() / min(c_miss * p_target, c_fa * (1 - p_target)))


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def _feature_extractor(cfg: SpeakerConfig) -> nn.Module:
    from speechattn.data.features import LogMelSpectrogram

    n_fft = 512 if cfg.sample_rate <= 16000 else 1024
    return LogMelSpectrogram(
        sample_rate=cfg.sample_rate,
        n_fft=n_fft,
        win_length=int(0.025 * cfg.sample_rate),
        hop_length=int(0.010 * cfg.sample_rate),
        n_mels=cfg.n_mels,
    )


def _features(wave: Tensor, extractor: nn.Module) -> Tensor:
    """(N,) waveform -> (T, n_mels) log-mels with the utterance mean removed (CMN)."""
    with torch.no_grad():
        feats = extractor(wave.float())
    return feats - feats.mean(0, keepdim=True)


def _load_set(
    manifest: Path, cfg: SpeakerConfig, *, augment: set[str] | frozenset[str] = frozenset()
) -> tuple[list[Tensor], list[str]]:
    """Features and speaker of every utterance, plus ``cfg.augment_copies`` channel-augmented
    copies of each utterance whose speaker is in ``augment`` (seeded by ``cfg.seed``)."""
    from speechattn.data.audio import load_audio
    from speechattn.data.augment import ChannelAugment
    from speechattn.data.corpus import load_corpus

    extractor = _feature_extractor(cfg)
    channel = ChannelAugment()
    rng = np.random.default_rng(cfg.seed + 12345)
    feats, speakers = [], []
    for utt in load_corpus(manifest):
        wave = load_audio(utt.audio_path, sample_rate=cfg.sample_rate)
        feats.append(_features(wave, extractor))
        speakers.append(utt.speaker)
        if utt.speaker in augment:
            for _ in range(cfg.augment_copies):
                noisy = channel(wave.numpy(), cfg.sample_rate, rng)
                feats.append(_features(torch.from_numpy(noisy), extractor))
                speakers.append(utt.speaker)
    return feats, speakers


def _batch(items: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(t) for t in items], dtype=torch.int64)
    out = torch.zeros(len(items), int(lengths.max()), items[0].shape[1])
    for i, t in enumerate(items):
        out[i, : len(t)] = t
    return out, lengths


# ----------------------------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------------------------


def _dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _TrainStep(nn.Module):
    """Encoder + AAM head in one module so DistributedDataParallel wraps a single forward."""

    def __init__(self, model: SpeakerEncoder, head: AAMSoftmax) -> None:
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, x: Tensor, lengths: Tensor, labels: Tensor, margin: float) -> Tensor:
        return self.head(self.model(x, lengths), labels, margin)


def _spec_augment(crop: Tensor, rng: random.Random, freq_mask: int, time_mask: int) -> Tensor:
    """SpecAugment-style masking of one ``(T, n_mels)`` crop (a copy): one band of up to
    ``freq_mask`` mel bins and one span of up to ``time_mask`` frames set to 0 (the CMN mean)."""
    crop = crop.clone()
    t, n_mels = crop.shape
    if freq_mask > 0:
        w = rng.randint(0, min(freq_mask, n_mels - 1))
        f0 = rng.randint(0, n_mels - w)
        crop[:, f0 : f0 + w] = 0.0
    if time_mask > 0:
        w = rng.randint(0, min(time_mask, t // 4))
        t0 = rng.randint(0, t - w)
        crop[t0 : t0 + w] = 0.0
    return crop


def train_encoder(
    pooling: str,
    feats: Sequence[Tensor],
    labels: Sequence[int],
    cfg: SpeakerConfig,
    *,
    progress: bool = True,
) -> tuple[SpeakerEncoder, list[float]]:
    """Train one encoder with AAM softmax on random variable-length crops; returns (model, losses)."""
    rank, world = _dist_info()
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    num_classes = max(labels) + 1
    model = SpeakerEncoder(
        n_mels=cfg.n_mels, channels=cfg.channels, embed_dim=cfg.embed_dim, pooling=pooling
    )
    head = AAMSoftmax(cfg.embed_dim, num_classes, margin=cfg.margin, scale=cfg.scale)
    params = list(model.parameters()) + list(head.parameters())
    train_mod: nn.Module = _TrainStep(model, head)
    if world > 1:
        train_mod = nn.parallel.DistributedDataParallel(train_mod)
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.15
    )
    rng = random.Random(cfg.seed * 1000 + rank)
    losses: list[float] = []
    model.train()
    from tqdm import tqdm

    bar = tqdm(
        range(cfg.steps), desc=f"train {pooling}", disable=not progress or rank != 0, leave=False
    )
    for step in bar:
        idx = [rng.randrange(len(feats)) for _ in range(cfg.batch_size)]
        crops = []
        for i in idx:
            f = feats[i]
            n = min(len(f), rng.randint(cfg.min_frames, cfg.max_frames))
            start = rng.randint(0, len(f) - n)
            crop = f[start : start + n]
            if cfg.freq_mask > 0 or cfg.time_mask > 0:
                crop = _spec_augment(crop, rng, cfg.freq_mask, cfg.time_mask)
            crops.append(crop)
        x, lengths = _batch(crops)
        y = torch.tensor([labels[i] for i in idx])
        margin = cfg.margin * min(1.0, step / max(1, cfg.steps // 3))  # margin warm-up
        loss = train_mod(x, lengths, y, margin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return model, losses


@torch.no_grad()
def embed_features(
    model: SpeakerEncoder, feats: Sequence[Tensor], *, batch_size: int = 32
) -> Tensor:
    """L2-normalised embeddings ``(N, E)`` of full utterances, batched by length with lengths."""
    model.eval()
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]))
    out = torch.zeros(len(feats), model.embed.out_features)
    for s in range(0, len(order), batch_size):
        ids = order[s : s + batch_size]
        x, lengths = _batch([feats[i] for i in ids])
        out[ids] = F.normalize(model(x, lengths), dim=-1)
    return out


def _trials(emb: Tensor, speakers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores and target labels for every unordered pair."""
    sim = (emb @ emb.T).numpy()
    spk = np.asarray(speakers)
    iu = np.triu_indices(len(spk), k=1)
    return sim[iu], (spk[iu[0]] == spk[iu[1]]).astype(np.int64)


def _det_png(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
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
    ax.set_title("DET curves, held-out synthetic voices")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _write_report(
    path: Path, rows: list[dict[str, Any]], png: str, cfg: SpeakerConfig, notes: str
) -> None:
    head = "<tr><th>pooling</th><th>EER (%)</th><th>minDCF (p=0.01)</th><th>params</th><th>final loss</th><th>train s</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(r['pooling'])}</td><td>{100 * r['eer']:.2f}</td><td>{r['min_dcf']:.3f}</td>"
        f"<td>{r.get('params', '')}</td><td>{r.get('final_loss', float('nan')):.3f}</td>"
        f"<td>{r.get('train_s', 0.0):.1f}</td></tr>"
        for r in rows
    )
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>speechattn speaker report</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}</style></head><body>
<h1>Speaker verification on held-out synthetic voices</h1>
<p>{html.escape(notes)}</p>
<table>{head}{body}</table>
<h2>DET curve</h2><img alt="DET curve" src="data:image/png;base64,{png}">
<h2>Configuration</h2><pre>{html.escape(json.dumps(asdict(cfg), indent=2))}</pre>
</body></html>"""
    path.write_text(doc, encoding="utf-8")


def run_speaker(
    cfg: SpeakerConfig,
    out_dir: str | os.PathLike[str],
    *,
    corpus: str | os.PathLike[str] | None = None,
    save_checkpoint: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Synthesise (or load) the corpus, train/evaluate every pooling, write report.html + results.json.

    Held-out voices never appear in training. Returns the results dict (also in results.json).
    """
    import torch.distributed as dist

    if cfg.augment_copies < 0:
        raise ValueError(f"Expected augment_copies >= 0; found {cfg.augment_copies}.")
    rank, world = _dist_info()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_spk = cfg.train_speakers + cfg.test_speakers
    if corpus is None:
        manifest = out / "corpus" / "manifest.jsonl"
        if rank == 0 and not manifest.exists():
            from speechattn.data.synth import synth_corpus

            synth_corpus(
                out / "corpus",
                utterances=n_spk * cfg.utterances_per_speaker,
                speakers=n_spk,
                seed=cfg.seed,
                sample_rate=cfg.sample_rate,
                progress=progress,
            )
        if world > 1:
            dist.barrier()
    else:
        manifest = Path(corpus)
    from speechattn.data.corpus import load_corpus

    voices = sorted({utt.speaker for utt in load_corpus(manifest)})
    rng = random.Random(cfg.seed)
    rng.shuffle(voices)
    if len(voices) < 3:
        raise ValueError(f"Expected a corpus with at least 3 speakers; found {len(voices)}.")
    n_test = min(cfg.test_speakers, len(voices) // 3) if len(voices) < n_spk else cfg.test_speakers
    test_voices = set(voices[:n_test])
    train_voices = sorted(v for v in voices if v not in test_voices)
    feats, speakers = _load_set(manifest, cfg, augment=set(train_voices))
    label_of = {v: i for i, v in enumerate(train_voices)}
    tr = [i for i, s in enumerate(speakers) if s in label_of]
    te = [i for i, s in enumerate(speakers) if s in test_voices]
    train_feats, train_labels = [feats[i] for i in tr], [label_of[speakers[i]] for i in tr]
    test_feats, test_spk = [feats[i] for i in te], [speakers[i] for i in te]

    rows: list[dict[str, Any]] = []
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    # Baseline without training: log-mel mean/std statistics (before CMN there is no mean).
    base = torch.stack([torch.cat([f.std(0, unbiased=False), f.abs().mean(0)]) for f in test_feats])
    base = F.normalize(base - base.mean(0, keepdim=True), dim=-1)
    s, lab = _trials(base, test_spk)
    rows.append(
        {
            "pooling": "log-mel stats (no training)",
            "eer": compute_eer(s, lab),
            "min_dcf": compute_min_dcf(s, lab),
        }
    )
    pm, pf, _ = _error_rates(s, lab)
    curves["log-mel stats"] = (pm, pf)
    best: tuple[float, SpeakerEncoder | None, str] = (math.inf, None, "")
    for name in cfg.poolings:
        t0 = time.perf_counter()
        model, losses = train_encoder(name, train_feats, train_labels, cfg, progress=progress)
        train_s = time.perf_counter() - t0
        if rank != 0:
            continue
        emb = embed_features(model, test_feats)
        s, lab = _trials(emb, test_spk)
        eer, dcf = compute_eer(s, lab), compute_min_dcf(s, lab)
        pm, pf, _ = _error_rates(s, lab)
        curves[name] = (pm, pf)
        rows.append(
            {
                "pooling": name,
                "eer": eer,
                "min_dcf": dcf,
                "params": sum(p.numel() for p in model.parameters()),
                "final_loss": float(np.mean(losses[-max(3, len(losses) // 10) :])),
                "first_loss": float(np.mean(losses[: max(3, len(losses) // 10)])),
                "train_s": train_s,
            }
        )
        if eer < best[0]:
            best = (eer, model, name)
    results: dict[str, Any] = {
        "config": asdict(cfg),
        "train_voices": train_voices,
        "test_voices": sorted(test_voices),
        "num_test_utterances": len(te),
        "num_trials": len(s),
        "rows": rows,
        "best": best[2],
    }
    if rank == 0:
        notes = (
            f"{len(train_voices)} training voices, {len(test_voices)} held-out voices "
            f"({len(te)} utterances, {len(s)} cosine trials); each encoder trained {cfg.steps} steps "
            f"with AAM softmax (m={cfg.margin}, s={cfg.scale}) on random {cfg.min_frames}-{cfg.max_frames} frame crops."
        )
        _write_report(out / "report.html", rows, _det_png(curves), cfg, notes)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        if save_checkpoint is not None and best[1] is not None:
            save_encoder(best[1], best[2], cfg, save_checkpoint)
    return results


# ----------------------------------------------------------------------------------------------
# Checkpoints and embedding
# ----------------------------------------------------------------------------------------------


def save_encoder(
    model: SpeakerEncoder, pooling: str, cfg: SpeakerConfig, path: str | os.PathLike[str]
) -> Path:
    """Save a checkpoint (config, pooling name and fp16 weights: a few hundred kB)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(
        {
            "format": "speechattn-speaker-v1",
            "pooling": pooling,
            "config": asdict(cfg),
            "state_dict": state,
        },
        p,
    )
    return p


def load_checkpoint(
    path: str | os.PathLike[str] | None = None,
) -> tuple[SpeakerEncoder, SpeakerConfig]:
    """Load a speaker checkpoint (the shipped default when ``path`` is None)."""
    p = Path(path) if path is not None else _DEFAULT_CHECKPOINT
    if not p.exists():
        raise FileNotFoundError(
            f"Speaker checkpoint not found: {p}. Train one with `speechattn speaker --save-checkpoint {p}`."
        )
    ckpt = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "speechattn-speaker-v1":
        raise ValueError(
            f"Expected a speechattn speaker checkpoint (format speechattn-speaker-v1); found {p}."
        )
    cfg = SpeakerConfig(**ckpt["config"])
    model = SpeakerEncoder(
        n_mels=cfg.n_mels, channels=cfg.channels, embed_dim=cfg.embed_dim, pooling=ckpt["pooling"]
    )
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    )
    model.eval()
    return model, cfg


def embed_directory(
    audio_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
) -> dict[str, np.ndarray]:
    """Embed every audio file under ``audio_dir`` (any sample rate; resampled) into ``out`` (.npz).

    Keys are file stems; values float32 L2-normalised embeddings ``(E,)``.
    """
    from speechattn.data.audio import load_audio

    root = Path(audio_dir)
    if not root.is_dir():
        raise ValueError(f"Expected AUDIO_DIR to be a directory; found {root}.")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"Found no audio files ({', '.join(AUDIO_SUFFIXES)}) under {root}.")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise ValueError(
                f"Two audio files share the stem {f.stem!r}: {stems[f.stem]} and {f}. Rename one."
            )
        stems[f.stem] = f
    model, cfg = load_checkpoint(checkpoint)
    extractor = _feature_extractor(cfg)
    feats = [_features(load_audio(f, sample_rate=cfg.sample_rate), extractor) for f in files]
    emb = embed_features(model, feats).numpy().astype(np.float32)
    result = {f.stem: emb[i] for i, f in enumerate(files)}
    np.savez(Path(out), **result)  # type: ignore[arg-type]
    return result


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = SpeakerConfig.quick() if args.quick else SpeakerConfig()
    for key in (
        "steps",
        "train_speakers",
        "test_speakers",
        "utterances_per_speaker",
        "seed",
        "channels",
        "batch_size",
        "augment_copies",
    ):
        val = getattr(args, key, None)
        if val is not None:
            setattr(cfg, key, val)
    if args.poolings:
        bad = [p for p in args.poolings if p not in POOLINGS]
        if bad:
            raise SystemExit(f"unknown pooling(s) {bad}; choose from {', '.join(POOLINGS)}")
        cfg.poolings = list(args.poolings)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
    try:
        res = run_speaker(
            cfg,
            args.out_dir,
            corpus=args.corpus,
            save_checkpoint=args.save_checkpoint,
            progress=not args.no_progress,
        )
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    if _dist_info()[0] == 0:
        for r in res["rows"]:
            print(f"{r['pooling']:<30} EER {100 * r['eer']:6.2f}%  minDCF {r['min_dcf']:.3f}")
        print(f"report: {Path(args.out_dir) / 'report.html'}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    res = embed_directory(args.audio_dir, args.out, checkpoint=args.checkpoint)
    print(f"wrote {len(res)} embeddings to {args.out}")
    return 0
