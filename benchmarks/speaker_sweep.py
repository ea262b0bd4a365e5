"""Recipe sweep for ``speechattn speaker``: one synthetic voice pool, many training recipes.

Synthesises (once) a pool of espeak voices, caches the log-mels, holds out a fixed set of
voices for scoring and trains one encoder per (recipe, pooling) on a prefix of the remaining
voices. With ``augment_copies`` > 0 (the recipe's default) the training voices' augmented copies
are made per run, as ``speechattn speaker`` does; ``--set augment_copies=0`` (and no
pseudo-speakers) uses the cache under ``--pool``/features. The pool is reused only while its
``settings.json`` (sizes, sample rate, synthesis code digest) matches, the cached features only
while the audio files' bytes and the feature settings do (``speaker_loeo.py``'s keys). Prints EER / minDCF (cosine, and cosine after subtracting the training-set mean
embedding) and wall time; ``--json PATH`` appends the rows. Single-threaded by default.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/speaker_sweep.py --pool runs/pool520 \
        --train-speakers 480 --test-speakers 40 --poolings ASTP --set steps=1000 channels=128
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from speechattn._cli import CliError, parse_overrides
from speechattn.recipes.speaker import data as D
from speechattn.recipes.speaker import evaluate as E
from speechattn.recipes.speaker.config import SpeakerConfig
from speechattn.recipes.speaker.train import train_encoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speaker_loeo import _train_features, cached_pool, pool_settings


def _parse_set(items: list[str], cfg: SpeakerConfig) -> None:
    try:
        for key, val in parse_overrides(items, cfg.to_dict()).items():
            setattr(cfg, key, val)
        cfg.validated()
    except (CliError, ValueError) as exc:
        raise SystemExit(str(exc)) from None


def build_pool(pool: Path, speakers: int, utterances: int, sample_rate: int) -> Path:
    """Synthesise the espeak voice pool once; returns its manifest. Reused only when its
    ``settings.json`` matches (``speaker_loeo.pool_settings``: the sizes, the seed and the
    synthesis code's digest, plus the sample rate), else synthesised again."""
    return cached_pool(
        pool,
        {**pool_settings(["espeak"], speakers, utterances, 0), "sample_rate": sample_rate},
        utterances=speakers * utterances,
        speakers=speakers,
        seed=0,
        workers=1,
        sample_rate=sample_rate,
        progress=False,
    )


def load_features(
    utts: list[D.SpeakerUtterance], cfg: SpeakerConfig, train_voices: set[str], cache: Path
) -> D.FeatureSet:
    """Log-mels of every utterance plus the training voices' copies. Without copies (no channel
    copies, speed, pitch or formant pseudo-speakers) they are kept in ``cache``, keyed as
    ``speaker_loeo._train_features`` keys them (the settings that change features, the ids and
    labels, the audio files' bytes); augmented copies depend on the split and the seed and are
    made per run, not cached."""
    if cfg.augment_copies or cfg.speed_perturb or cfg.pitch_perturb or cfg.formant_shift:
        return _train_features(utts, cfg, train_voices, None)
    # no copies: the same features whatever the split, so one cached set serves every split
    return _train_features(utts, cfg, set(), cache)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--pool",
        default="runs/pool520",
        help="corpus dir (synthesised if missing or made with other settings)",
    )
    ap.add_argument("--pool-speakers", type=int, default=520)
    ap.add_argument("--pool-utterances", type=int, default=12, help="per speaker")
    ap.add_argument("--train-speakers", type=int, default=480)
    ap.add_argument("--test-speakers", type=int, default=40)
    ap.add_argument("--poolings", nargs="+", default=["ASTP"])
    ap.add_argument("--set", nargs="*", default=[], help="SpeakerConfig overrides key=value")
    ap.add_argument(
        "--split-seed", type=int, default=0, help="which voices are held out (0 = as the CLI)"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = SpeakerConfig()
    _parse_set(args.set, cfg)
    pool = Path(args.pool)
    manifest = build_pool(pool, args.pool_speakers, args.pool_utterances, cfg.sample_rate)
    utts = D.load_speaker_corpus(manifest)
    voices = sorted({u.label for u in utts})
    random.Random(args.split_seed).shuffle(voices)
    test_voices = set(voices[: args.test_speakers])
    train_voices = sorted(voices[args.test_speakers : args.test_speakers + args.train_speakers])
    fs = load_features(utts, cfg, set(train_voices), pool / "features")
    feats, speakers = fs.feats, fs.labels
    train_set = set(train_voices)
    classes = sorted({s for s in speakers if s.split("@", 1)[0] in train_set})
    label_of = {v: i for i, v in enumerate(classes)}
    tr = [i for i, s in enumerate(speakers) if s in label_of]
    te = [i for i, s in enumerate(speakers) if s in test_voices]
    tr_feats, tr_labels = [feats[i] for i in tr], [label_of[speakers[i]] for i in tr]
    te_feats, te_spk = [feats[i] for i in te], [speakers[i] for i in te]
    print(f"{len(train_voices)} train voices ({len(tr)} utts), {len(test_voices)} test ({len(te)})")
    for name in args.poolings:
        t0 = time.perf_counter()
        model, losses = train_encoder(name, tr_feats, tr_labels, cfg, progress=False)[:2]
        train_s = time.perf_counter() - t0
        emb = E.embed_features(model, te_feats)
        s, lab = E.pair_trials(emb, te_spk)
        mean = E.embed_features(model, tr_feats[:: max(1, len(tr_feats) // 1000)]).mean(0)
        s2, _ = E.pair_trials(F.normalize(emb - mean, dim=-1), te_spk)
        # Diagnostic: non-target pairs of two voices with the same espeak variant (timbre) but
        # different languages (en-029+ian vs en-us-nyc+ian) left out.
        import numpy as np

        spk = np.asarray(te_spk)
        iu = np.triu_indices(len(spk), k=1)
        var = np.asarray([v.split("+", 1)[-1] for v in te_spk])
        keep = (lab == 1) | (var[iu[0]] != var[iu[1]])
        row = {
            "eer_no_same_variant": E.compute_eer(s[keep], lab[keep]),
            "pooling": name,
            "train_speakers": len(train_voices),
            "test_speakers": len(test_voices),
            "split_seed": args.split_seed,
            "eer": E.compute_eer(s, lab),
            "min_dcf": E.compute_min_dcf(s, lab),
            "eer_centered": E.compute_eer(s2, lab),
            "min_dcf_centered": E.compute_min_dcf(s2, lab),
            "final_loss": sum(losses[-20:]) / len(losses[-20:]),
            "train_s": train_s,
            "config": asdict(cfg),
        }
        print(
            f"{name:<9} EER {100 * row['eer']:5.2f}%  minDCF {row['min_dcf']:.3f}  "
            f"centered EER {100 * row['eer_centered']:5.2f}% minDCF {row['min_dcf_centered']:.3f}  "
            f"EER w/o same-variant {100 * row['eer_no_same_variant']:5.2f}%  "
            f"loss {row['final_loss']:.3f}  train {train_s:.0f}s  split {args.split_seed} set={' '.join(args.set)}",
            flush=True,
        )
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
