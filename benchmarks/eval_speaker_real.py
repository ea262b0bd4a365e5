"""Speaker embeddings on the few REAL recordings this offline machine has: does the encoder trained on
synthetic voices separate real speakers better than log-mel mean/std statistics?

    python benchmarks/eval_speaker_real.py [--checkpoint CKPT] [--json OUT]

Recordings (none is shipped by speechattn; the script skips a source that is not installed):
- Allison (asterisk-core-sounds-en, /usr/share/asterisk/sounds/en_US_f_Allison): the 30 longest
  prompts (telephone-quality studio speech, 8 kHz);
- gradio's media assets (pip gradio): cate_blanch.mp3 (8.4 s, cut into two 4.2 s halves) and
  cate_blanch_2.mp3 (one speaker), heath_ledger.mp3 (3.5 s, two halves; another speaker).
Three real speakers, one of them dominating the trial list; a sanity check, not a benchmark.
Trials: every unordered pair; reported: EER, mean target / non-target cosine, and the same for
the log-mel mean/std baseline (no training).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def _segments() -> list[tuple[str, str, np.ndarray, int]]:
    import soundfile as sf

    out: list[tuple[str, str, np.ndarray, int]] = []
    allison = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
    if allison.is_dir():
        files = [p for p in allison.rglob("*") if p.suffix in (".wav", ".gsm", ".ulaw", ".alaw")]
        readable = []
        for p in files:
            try:
                info = sf.info(p)
            except Exception:
                continue
            readable.append((info.duration, p))
        for _, p in sorted(readable, reverse=True)[:30]:
            x, sr = sf.read(p, dtype="float32", always_2d=True)
            out.append(("allison", p.stem, x.mean(1), sr))
    try:
        import gradio

        media = Path(gradio.__file__).parent / "media_assets" / "audio"
    except ImportError:
        media = None
    if media is not None and media.is_dir():
        for name, spk, halves in (
            ("cate_blanch.mp3", "cate", 2),
            ("cate_blanch_2.mp3", "cate", 1),
            ("heath_ledger.mp3", "heath", 2),
        ):
            p = media / name
            if not p.exists():
                continue
            x, sr = sf.read(p, dtype="float32", always_2d=True)
            x = x.mean(1)
            n = len(x) // halves
            for h in range(halves):
                out.append((spk, f"{p.stem}-{h}", x[h * n : (h + 1) * n], sr))
    return out


def main() -> None:
    import soxr

    from speechattn.recipes._speaker import (
        _feature_extractor,
        _features,
        _trials,
        compute_eer,
        embed_features,
        load_checkpoint,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="speaker checkpoint (default: shipped)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    segs = _segments()
    speakers = sorted({s for s, *_ in segs})
    if len(speakers) < 2:
        raise SystemExit(f"Need recordings of at least two real speakers; found {speakers}.")
    model, cfg = load_checkpoint(args.checkpoint)
    extractor = _feature_extractor(cfg)
    feats = []
    for _, _, x, sr in segs:
        y = soxr.resample(x, sr, cfg.sample_rate) if sr != cfg.sample_rate else x
        feats.append(
            _features(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)), extractor)
        )
    labels = [s for s, *_ in segs]
    emb = embed_features(model, feats)
    base = torch.stack([torch.cat([f.mean(0), f.std(0)]) for f in feats])
    base = torch.nn.functional.normalize(base - base.mean(0, keepdim=True), dim=-1)
    rows = {}
    for name, e in (("trained encoder (shipped)", emb), ("log-mel mean/std, no training", base)):
        sc, lab = _trials(e, labels)
        rows[name] = {
            "eer_percent": 100 * compute_eer(sc, lab),
            "target_cos": float(sc[lab == 1].mean()),
            "nontarget_cos": float(sc[lab == 0].mean()),
            "targets": int(lab.sum()),
            "nontargets": int((1 - lab).sum()),
        }
    counts = {s: labels.count(s) for s in speakers}
    print(f"segments per speaker: {counts}")
    print(
        "| embedding | EER (%) | mean target cos | mean non-target cos | trials (target / non-target) |"
    )
    print("|---|---:|---:|---:|---|")
    for k, r in rows.items():
        print(
            f"| {k} | {r['eer_percent']:.1f} | {r['target_cos']:.3f} | {r['nontarget_cos']:.3f} | "
            f"{r['targets']} / {r['nontargets']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"segments": counts, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
