"""Speaker embeddings on the REAL recordings this offline machine can install: does the encoder trained
on synthetic voices separate real speakers better than log-mel mean/std statistics?

    python benchmarks/eval_speaker_real.py [--checkpoint CKPT] [--per-voice 20] [--json OUT]
        [--vad auto|on|off]

Recordings (none is shipped by speechattn; a source that is not installed is skipped). Debian's
Asterisk prompt packages, telephone-quality studio speech at 8 kHz, one professional voice each:
``apt-get install asterisk-core-sounds-{en,es,fr,it,ru}-wav asterisk-prompt-es-co
asterisk-prompt-fr-armelle asterisk-prompt-it-menardi-wav``:

folder under /usr/share/asterisk/sounds/ -> speaker, language:
- en_US_f_Allison -> allison, en; es_MX_f_Allison -> allison, es (the same speaker in Spanish);
- fr_CA_f_June -> june, fr; it_IT_m_Carlo -> carlo, it; it_IT_f_Menardi -> menardi, it;
- ru_RU_f_IvrvoiceRU -> ivr_ru, ru;
- es (asterisk-prompt-es-co) -> es_co, es; fr (asterisk-prompt-fr-armelle) -> armelle, fr
  (both GSM 06.10, decoded with ffmpeg);

plus gradio's media assets (pip gradio): cate_blanch.mp3 (two halves) and cate_blanch_2.mp3 (one
speaker), heath_ledger.mp3 (two halves; another speaker), broadband. The ``--per-voice`` largest
files of each folder (longest prompts) are used. Seven or nine real speakers, every unordered pair
is a trial. Reported: EER and mean target / non-target cosine over all trials, and the EER with
non-target trials restricted to the same language (so that the language cannot give the answer),
for the trained encoder (raw cosines, and centred on the set's mean embedding as ``speechattn
speaker score`` does, and centred then S-norm / AS-norm against the set's own files as
``speechattn speaker score --score-norm`` does) and for log-mel mean/std statistics with the
global mean removed (also with S-norm). ``--vad`` drops each recording's non-speech frames (energy
VAD) before the encoder (``auto``: what the checkpoint was trained with); never before the log-mel
statistics.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

ASTERISK = Path("/usr/share/asterisk/sounds")
VOICES = (
    ("en_US_f_Allison", "allison", "en"),
    ("es_MX_f_Allison", "allison", "es"),
    ("fr_CA_f_June", "june", "fr"),
    ("it_IT_m_Carlo", "carlo", "it"),
    ("it_IT_f_Menardi", "menardi", "it"),
    ("ru_RU_f_IvrvoiceRU", "ivr_ru", "ru"),
    ("es", "es_co", "es"),
    ("fr", "armelle", "fr"),
)


def _segments(per_voice: int) -> list[tuple[str, str, str, np.ndarray, int]]:
    """``(speaker, language, name, mono float32 waveform, sample rate)`` of every recording used."""
    import soundfile as sf

    from speechattn.data.audio import load_audio

    out: list[tuple[str, str, str, np.ndarray, int]] = []
    for folder, speaker, lang in VOICES:
        root = ASTERISK / folder
        if not root.is_dir():
            continue
        files = [p for p in root.rglob("*") if p.suffix in (".wav", ".gsm") and p.is_file()]
        # the largest files are the longest prompts (one codec per folder)
        files = sorted(files, key=lambda p: (p.stat().st_size, p.name), reverse=True)
        for p in files[:per_voice]:
            x = load_audio(p, sample_rate=16000).numpy()
            out.append((speaker, lang, f"{folder}/{p.stem}", x, 16000))
    try:
        import gradio

        media: Path | None = Path(gradio.__file__).parent / "media_assets" / "audio"
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
                out.append((spk, "en", f"{p.stem}-{h}", x[h * n : (h + 1) * n], sr))
    return out


def main() -> None:
    import soxr

    from speechattn.recipes.speaker.data import feature_extractor as _feature_extractor
    from speechattn.recipes.speaker.data import features as _features
    from speechattn.recipes.speaker.data import normalise_features as _normalise
    from speechattn.recipes.speaker.evaluate import (
        centre_embeddings,
        compute_eer,
        embed_features,
        resolve_vad,
    )
    from speechattn.recipes.speaker.evaluate import normalise_scores as _norm
    from speechattn.recipes.speaker.evaluate import pair_trials as _trials
    from speechattn.recipes.speaker.model import load_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="speaker checkpoint (default: shipped)")
    ap.add_argument("--per-voice", type=int, default=20, help="prompts per Asterisk folder")
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--vad",
        choices=("auto", "on", "off"),
        default="auto",
        help="energy VAD before the encoder (auto: the checkpoint's setting)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    segs = _segments(args.per_voice)
    speakers = sorted({s for s, *_ in segs})
    if len(speakers) < 2:
        raise SystemExit(f"Need recordings of at least two real speakers; found {speakers}.")
    model, cfg = load_checkpoint(args.checkpoint)
    extractor = _feature_extractor(cfg)
    feats = []
    for _, _, _, x, sr in segs:
        y = soxr.resample(x, sr, cfg.sample_rate) if sr != cfg.sample_rate else x
        feats.append(
            _features(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)), extractor)
        )
    labels = [s for s, *_ in segs]
    langs = np.array([lang for _, lang, *_ in segs])
    same_lang = langs[:, None] == langs[None, :]
    iu = np.triu_indices(len(segs), k=1)
    use_vad = resolve_vad(args.vad, cfg)
    emb = embed_features(model, feats, vad=use_vad, vad_range_db=cfg.vad_range_db)
    # the baseline on band-mean-normalised log-mels whatever the encoder's front end
    cmn = [_normalise(f, "cmn") for f in feats]
    base = torch.stack([torch.cat([f.mean(0), f.std(0)]) for f in cmn])
    base = torch.nn.functional.normalize(base - base.mean(0, keepdim=True), dim=-1)
    rows = {}
    _, lab = _trials(emb, labels)
    pairs = torch.from_numpy(iu[0]), torch.from_numpy(iu[1])
    centred = centre_embeddings(emb)
    for name, sc in (
        ("trained encoder", _trials(emb, labels)[0]),
        ("trained encoder, centred (as `speaker score`)", _trials(centred, labels)[0]),
        # `speaker score --score-norm snorm|asnorm`: against the set's own files
        ("centred + S-norm, the set's files as cohort", _norm(centred, *pairs, method="snorm")),
        ("centred + AS-norm k=50, same", _norm(centred, *pairs, method="asnorm", top_k=50)),
        ("log-mel mean/std, no training", _trials(base, labels)[0]),
        ("log-mel + S-norm, the set's files as cohort", _norm(base, *pairs, method="snorm")),
    ):
        keep = (lab == 1) | same_lang[iu]  # targets + same-language non-targets
        rows[name] = {
            "eer_percent": 100 * compute_eer(sc, lab),
            "eer_same_language_percent": 100 * compute_eer(sc[keep], lab[keep]),
            "target_cos": float(sc[lab == 1].mean()),
            "nontarget_cos": float(sc[lab == 0].mean()),
            "targets": int(lab.sum()),
            "nontargets": int((1 - lab).sum()),
            "nontargets_same_language": int(((lab == 0) & keep).sum()),
        }
    counts = {s: labels.count(s) for s in speakers}
    print(f"segments per speaker: {counts}; energy VAD before the encoder: {use_vad}")
    print(
        "| embedding | EER (%) | EER, same-language non-targets (%) | mean target cos | "
        "mean non-target cos | trials (target / non-target / same-language non-target) |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for k, r in rows.items():
        print(
            f"| {k} | {r['eer_percent']:.1f} | {r['eer_same_language_percent']:.1f} | "
            f"{r['target_cos']:.3f} | {r['nontarget_cos']:.3f} | {r['targets']} / "
            f"{r['nontargets']} / {r['nontargets_same_language']} |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"segments": counts, "vad": use_vad, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
