"""Speech engines and voices: speed, naturalness (pocketsphinx WER), timing accuracy, diversity.

Per voice (every installed, trainable voice of the engines asked for; reserved voices only with
``--include-reserved``, and then only reported, never used to choose settings):

* speed: utterances per second and seconds of audio per second of wall time, over the same
  sentences, and the ratio to espeak-ng ``en-us`` measured in the same process;
* WER: pocketsphinx 5 (its shipped en-us model) word error rate against the spoken words, a
  proxy for naturalness (lower is more natural);
* timing accuracy: the engine's own word boundaries (starts and ends) against a pocketsphinx
  forced alignment of the same audio, median and 90th percentile in ms, and the signed medians
  of start and end differences (a constant lag shows there; engines whose timings *are* that
  alignment, such as Pico, are left out);
* diversity: each voice's mean embedding under the project's shipped speaker encoder
  (``speechattn/assets/speaker_default.pt``) and, when the ``resemblyzer`` package imports,
  under Resemblyzer's real-speech encoder (GE2E, weights shipped in the package; a baseline
  only: ``pip install resemblyzer "setuptools<80"``); mean pairwise cosine similarity between
  voices, within each engine and overall (lower = more different voices).

Usage::

    python benchmarks/bench_voices.py --json voices.json
    taskset -c 0 python benchmarks/bench_voices.py --engines espeak,festival   # one core
    python benchmarks/bench_voices.py --voices piper:en_US-joe-medium --sentences 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from typing import Any

import numpy as np

# Harvard sentences (IEEE 1969), list 1.
HARVARD = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
)

ESPEAK_VOICES = ("espeak:en-us", "espeak:en-gb+f2", "espeak:en-gb-scotland+m3", "espeak:en-us+m5")


def _levenshtein(a: list[str], b: list[str]) -> int:
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[len(b)]


def _voices(engines: list[str], include_reserved: bool) -> list[str]:
    from speechattn.data.engines import get_engine
    from speechattn.data.voices import list_voices, voice_installed

    out: list[str] = []
    for name in engines:
        eng = get_engine(name)
        reason = eng.missing()
        if reason is not None:
            print(f"# {name}: skipped ({reason}; install: {eng.install})", file=sys.stderr)
            continue
        if name == "espeak":
            out.extend(ESPEAK_VOICES)
            continue
        out.extend(
            v.key
            for v in list_voices(engines=[name], include_reserved=include_reserved)
            if voice_installed(v)
        )
    return out


def _speaker_embedder() -> Any:
    import torch
    import torch.nn.functional as F

    from speechattn.recipes.speaker.data import feature_extractor, features
    from speechattn.recipes.speaker.evaluate import embed_features
    from speechattn.recipes.speaker.model import load_checkpoint

    model, cfg = load_checkpoint(None)
    extractor = feature_extractor(cfg)

    def embed(waves: list[tuple[np.ndarray, int]]) -> np.ndarray:
        import soxr

        feats = []
        for w, sr in waves:
            x = w if sr == cfg.sample_rate else soxr.resample(w, sr, cfg.sample_rate)
            feats.append(features(torch.from_numpy(np.asarray(x, np.float32)), extractor))
        emb = embed_features(model, feats)
        return F.normalize(emb.mean(0), dim=0).numpy()

    return embed


def _resemblyzer_embedder() -> Any:
    """Resemblyzer's speaker embedding of a voice (``embed_speaker``), or None if absent."""
    try:
        from resemblyzer import VoiceEncoder, preprocess_wav
    except Exception as exc:  # ImportError, or pkg_resources missing with setuptools >= 80
        print(f"# resemblyzer: not installed ({exc})", file=sys.stderr)
        return None
    encoder = VoiceEncoder("cpu", verbose=False)

    def embed(waves: list[tuple[np.ndarray, int]]) -> np.ndarray:
        wavs = [preprocess_wav(np.asarray(w, np.float32), source_sr=sr) for w, sr in waves]
        return np.asarray(encoder.embed_speaker(wavs), dtype=np.float64)

    return embed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", default="espeak,festival,mbrola,piper,rhvoice,pico,kokoro")
    ap.add_argument("--include-reserved", action="store_true")
    ap.add_argument("--voices", default=None, help="only these 'engine:voice' keys (comma list)")
    ap.add_argument("--sentences", type=int, default=len(HARVARD), help="first N sentences")
    ap.add_argument("--json", default=None, help="write the rows and summaries here")
    args = ap.parse_args()

    import torch

    from speechattn.data.engines import _pocketsphinx as ps
    from speechattn.data.engines import synthesize
    from speechattn.data.text import normalize_text, words_of
    from speechattn.data.voices import get_voice

    if not ps.available():
        raise SystemExit("pocketsphinx is needed: pip install speechattn[voices]")
    if args.voices:
        voices = args.voices.split(",")
    else:
        voices = _voices(args.engines.split(","), args.include_reserved)
    texts = [normalize_text(t) for t in HARVARD[: max(1, args.sentences)]]
    embed = _speaker_embedder()
    embed_real = _resemblyzer_embedder()
    synthesize(texts[0], "espeak:en-us")  # warm-up: load libraries before timing
    rows: list[dict[str, Any]] = []
    emb: dict[str, np.ndarray] = {}
    emb_real: dict[str, np.ndarray] = {}
    base_speed = None
    for key in voices:
        synthesize("Hello.", key)  # load the voice (model loading is not synthesis speed)
        t0 = time.perf_counter()
        results = [synthesize(t, key) for t in texts]
        dt = time.perf_counter() - t0
        audio_s = sum(len(r.waveform) / r.sample_rate for r in results)
        errors = refs = 0
        diffs: list[float] = []
        lags: tuple[list[float], list[float]] = ([], [])  # signed: engine - pocketsphinx
        for text, r in zip(texts, results):
            ref = [w.lower() for w in words_of(text)]
            hyp = ps.recognize(r.waveform, r.sample_rate).split()
            errors += _levenshtein(ref, hyp)
            refs += len(ref)
            if r.timings == "engine":
                try:
                    aligned, _ = ps.align(r.waveform, r.sample_rate, [w.label for w in r.words])
                except ValueError:
                    continue
                for a, b in zip(r.words, aligned):
                    diffs += [abs(a.start - b.start) * 1000, abs(a.end - b.end) * 1000]
                    lags[0].append((a.start - b.start) * 1000)
                    lags[1].append((a.end - b.end) * 1000)
        emb[key] = embed([(r.waveform, r.sample_rate) for r in results])
        if embed_real is not None:
            emb_real[key] = embed_real([(r.waveform, r.sample_rate) for r in results])
        speed = len(texts) / dt
        if key == "espeak:en-us":
            base_speed = speed
        v = get_voice(key)
        rows.append(
            {
                "voice": key,
                "engine": v.engine,
                "person": v.person,
                "reserved": v.reserved,
                "utt_per_s": round(speed, 2),
                "audio_s_per_s": round(audio_s / dt, 2),
                "wer": round(errors / refs, 3),
                "timing_median_ms": round(float(np.median(diffs)), 1) if diffs else None,
                "timing_p90_ms": round(float(np.percentile(diffs, 90)), 1) if diffs else None,
                "start_lag_ms": round(float(np.median(lags[0])), 1) if diffs else None,
                "end_lag_ms": round(float(np.median(lags[1])), 1) if diffs else None,
                "timings": results[0].timings,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    for r in rows:
        r["speed_vs_espeak"] = round(r["utt_per_s"] / base_speed, 3) if base_speed else None

    def mean_cos(table: dict[str, np.ndarray], keys: list[str]) -> float | None:
        pairs = list(itertools.combinations(keys, 2))
        if not pairs:
            return None
        return round(float(np.mean([table[a] @ table[b] for a, b in pairs])), 3)

    trainable = [r["voice"] for r in rows if not r["reserved"]]
    groups: dict[str, list[str]] = {
        e: [k for k in trainable if k.startswith(e + ":")]
        for e in dict.fromkeys(r["engine"] for r in rows)
    }
    groups["all (trainable)"] = trainable
    groups["all but espeak"] = [k for k in trainable if not k.startswith("espeak:")]
    diversity = {name: mean_cos(emb, keys) for name, keys in groups.items()}
    diversity_real = (
        {name: mean_cos(emb_real, keys) for name, keys in groups.items()} if emb_real else None
    )

    cols = ("voice", "utt_per_s", "audio_s_per_s", "speed_vs_espeak", "wer",
            "timing_median_ms", "timing_p90_ms", "start_lag_ms", "end_lag_ms",
            "timings")  # fmt: skip
    print(f"threads: torch {torch.get_num_threads()}, cpus {len(os.sched_getaffinity(0))}")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print("\nmean pairwise cosine similarity between voices:")
    print("| voices | n | shipped speaker encoder | Resemblyzer |")
    print("|---|---:|---:|---:|")
    for name, keys in groups.items():
        real = diversity_real[name] if diversity_real else "not installed"
        print(f"| {name} | {len(keys)} | {diversity[name]} | {real} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"rows": rows, "diversity": diversity, "diversity_resemblyzer": diversity_real},
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
