"""How much of each test clip the energy VAD keeps: the held-out engines' clean clips of the
``speaker_loeo.py`` pool, and the same clips through the test channel (both draws), and the
training items (clean and channel copies) from a cached feature set.

    PYTHONPATH=src python benchmarks/speaker_vad_kept.py --cache runs/chan \
        [--features runs/chan/features/train_features_XXXX.pt]

Prints the mean kept share of frames and the share of clips with every frame kept (no frame
under the threshold, or the minimum-frames fallback).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["main"]


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location(
        "speaker_loeo", Path(__file__).with_name("speaker_loeo.py")
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["speaker_loeo"] = mod
    spec.loader.exec_module(mod)
    return mod


def _kept(feats: list[torch.Tensor], range_db: float) -> tuple[float, float, int]:
    from speechattn.functional.vad import VAD_MIN_FRAMES, energy_vad

    shares, fell = [], 0
    for f in feats:
        out = energy_vad(f[None], range_db=range_db)
        n = int(out.feats_lengths[0])
        shares.append(n / len(f))
        # a fallback keeps every frame of a clip long enough to have been cut
        fell += int(n == len(f) and len(f) >= VAD_MIN_FRAMES)
    return float(np.mean(shares)), fell / len(feats), len(feats)


def main(argv: list[str] | None = None) -> int:
    from speechattn.recipes.speaker import data as D
    from speechattn.recipes.speaker.config import SpeakerConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default="runs/chan")
    ap.add_argument("--held-out", nargs="+", default=["festival", "kokoro", "rhvoice"])
    ap.add_argument("--channel-seed", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--range-db", type=float, default=30.0)
    ap.add_argument("--features", default=None, help="a cached training feature set (.pt)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    bench = _bench()
    manifest = Path(args.cache) / "pool" / "manifest.jsonl"
    engine_of = bench._engine_of(manifest)
    utts = [u for u in D.load_speaker_corpus(manifest) if engine_of[u.id] in args.held_out]
    cfg = SpeakerConfig(feature_norm="gain")
    ext = D.feature_extractor(cfg)
    rows: dict[str, Any] = {}
    for eng in args.held_out:
        src = [(u.audio_path, 1.0, 0.0) for u in utts if engine_of[u.id] == eng]
        for cond, seed in [("clean", None)] + [("channel", s) for s in args.channel_seed]:
            ch = None if seed is None else bench.test_channel()
            waves = bench._test_waves(src, cfg.sample_rate, ch, seed or 0)
            feats = [D.features(torch.from_numpy(x), ext) for x in waves]
            key = f"{eng} {cond}" + ("" if seed is None else f" {seed}")
            rows[key] = _kept(feats, args.range_db)
    if args.features:
        data = torch.load(args.features, weights_only=True)
        feats = data["feats"]
        # each (utterance, pseudo-speaker) item comes first, then its channel copies
        keys = list(zip(data["ids"], data["labels"]))
        first = [i == 0 or keys[i] != keys[i - 1] for i in range(len(keys))]
        rows["training, clean items"] = _kept([f for f, c in zip(feats, first) if c], args.range_db)
        rows["training, channel copies"] = _kept(
            [f for f, c in zip(feats, first) if not c], args.range_db
        )
    print(
        f"| clips (VAD range {args.range_db:g} dB) | kept share of frames | clips with every frame kept | n |"
    )
    print("|---|---:|---:|---:|")
    for k, (share, fell, n) in rows.items():
        print(f"| {k} | {100 * share:.1f}% | {100 * fell:.1f}% | {n} |")
    print(json.dumps({k: list(v) for k, v in rows.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
