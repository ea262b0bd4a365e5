"""CPU of the speaker recipe's training channel with and without ``fast_fft``, in one process.

Runs :func:`speechattn.recipes.speaker.data.channel_augment` of a :class:`SpeakerConfig` (by
default ``benchmarks/speaker_loeo.py``'s channel: equaliser 0.8, synthetic room 0.3, real room
0.3, telephone band 0.5 with mu-law 0.5, noise 0.5) over the audio files of a manifest, each file
``--copies`` times with a generator seeded by its index, once with ``fast_fft=False`` (today's
FFT lengths) and once with ``fast_fft=True``, alternating ``--repeats`` times (so a change of
machine load falls on both). Prints the process CPU (user+sys of every thread) and wall seconds
of each pass, their ratio, and how far apart the two settings' outputs are (RMS of the
difference over the RMS of the default output, per copy: median and max). The random draws are
the same in both settings, so the difference is the FFT lengths' alone.

With ``--feature-set``, also the CPU of the speaker recipe's whole training feature set of those
files (:func:`~speechattn.recipes.speaker.data.load_feature_set`: every file a training item, the
``g6`` settings of ``benchmarks/RESULTS.md``: speed perturbation 0.9 / 1.1, 6 channel copies,
``feature_norm=gain``, real rooms 0.3), once per setting, in the same process.

Usage::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_channel_fast_fft.py runs/chan/pool/manifest.jsonl --limit 120
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "run_pass"]


def run_pass(
    waves: list[np.ndarray], cfg: Any, *, copies: int, sample_rate: int
) -> tuple[list[np.ndarray], float, float]:
    """Every wave through ``cfg``'s training channel ``copies`` times.

    Returns:
        the outputs (float32 ``(N_i,)``, wave-major), process CPU seconds, wall seconds.
    """
    from speechattn.recipes.speaker.data import channel_augment

    ch = channel_augment(cfg)
    outs = []
    c0, w0 = time.process_time(), time.perf_counter()
    for i, x in enumerate(waves):
        rng = np.random.default_rng([i, 12345])
        for _ in range(copies):
            outs.append(np.asarray(ch(x, sample_rate, rng), dtype=np.float32))
    return outs, time.process_time() - c0, time.perf_counter() - w0


def feature_set_cpu(rows: list[dict[str, Any]], root: Path, rate: int) -> dict[str, float]:
    """Process CPU seconds of ``load_feature_set`` over ``rows`` (all training items) with the
    ``g6`` settings, ``fast_fft`` off then on."""
    from speechattn.recipes.speaker.config import SpeakerConfig
    from speechattn.recipes.speaker.data import SpeakerUtterance, load_feature_set

    utts = [
        SpeakerUtterance(str(r.get("id", i)), root / r["path"], str(r.get("speaker", i)))
        for i, r in enumerate(rows)
    ]
    labels = {u.label for u in utts}
    out = {}
    for name in ("double", "fast"):
        cfg = SpeakerConfig(
            sample_rate=rate,
            speed_perturb=[0.9, 1.1],
            p_real_room=0.3,
            augment_copies=6,
            feature_norm="gain",
            fast_fft=name == "fast",
        )
        c0 = time.process_time()
        load_feature_set(utts, cfg, train_labels=labels)
        out[name] = time.process_time() - c0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifest", help="manifest .jsonl with a 'path' per line (relative to it)")
    p.add_argument("--limit", type=int, default=120, help="first N files (default 120)")
    p.add_argument("--copies", type=int, default=6, help="channel copies per file (default 6)")
    p.add_argument("--repeats", type=int, default=2, help="passes per setting (default 2)")
    p.add_argument("--rate", type=int, default=16000, help="sample rate (default 16000)")
    p.add_argument("--feature-set", action="store_true", help="also time load_feature_set")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    if args.limit < 1 or args.copies < 1 or args.repeats < 1:
        p.error("--limit, --copies and --repeats must be >= 1")
    from speechattn.data.audio import load_audio
    from speechattn.recipes.speaker.config import SpeakerConfig

    root = Path(args.manifest).parent
    with open(args.manifest, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()][: args.limit]
    waves = [
        load_audio(root / r["path"], sample_rate=args.rate).numpy().astype(np.float32) for r in rows
    ]
    samples = sum(w.size for w in waves)
    print(f"{len(waves)} files, {samples / args.rate:.1f} s of audio, {args.copies} copies each")
    cpu: dict[str, list[float]] = {"double": [], "fast": []}
    wall: dict[str, list[float]] = {"double": [], "fast": []}
    outs: dict[str, list[np.ndarray]] = {}
    for rep in range(args.repeats):
        for name in ("double", "fast"):
            cfg = SpeakerConfig(p_real_room=0.3, sample_rate=args.rate, fast_fft=name == "fast")
            o, c, w = run_pass(waves, cfg, copies=args.copies, sample_rate=args.rate)
            cpu[name].append(c)
            wall[name].append(w)
            outs.setdefault(name, o)
            print(f"pass {rep} {name:6s}: {c:7.2f} s CPU, {w:7.2f} s wall", flush=True)
    rel = []
    for a, b in zip(outs["double"], outs["fast"]):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise RuntimeError(f"shape/dtype differ: {a.shape} {a.dtype} vs {b.shape} {b.dtype}")
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        rel.append(float(np.sqrt(np.mean((a64 - b64) ** 2) / max(np.mean(a64**2), 1e-30))))
    res = {
        "files": len(waves),
        "copies": args.copies,
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_ratio": min(cpu["double"]) / min(cpu["fast"]),
        "wall_ratio": min(wall["double"]) / min(wall["fast"]),
        "rel_rms_diff_median": float(np.median(rel)),
        "rel_rms_diff_max": float(np.max(rel)),
    }
    print(
        f"best CPU: double {min(cpu['double']):.2f} s, fast {min(cpu['fast']):.2f} s, "
        f"ratio {res['cpu_ratio']:.1f}x (wall {res['wall_ratio']:.1f}x); output difference "
        f"(RMS of the difference / RMS): median {res['rel_rms_diff_median']:.1e}, "
        f"max {res['rel_rms_diff_max']:.1e}"
    )
    if args.feature_set:
        res["feature_set_cpu_s"] = feature_set_cpu(rows, root, args.rate)
        fs = res["feature_set_cpu_s"]
        print(
            f"feature set ({len(rows)} files, 3 speeds x 7): double {fs['double']:.2f} s CPU, "
            f"fast {fs['fast']:.2f} s CPU, ratio {fs['double'] / fs['fast']:.1f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
