"""Reading the segments of a long recording: by range vs decoding the whole file.

A generated speech-like recording (noise shaped by a syllable-rate envelope plus a voiced
harmonic series; 16-bit WAV or FLAC) is cut into ``--segments`` segments covering most of it
(Kaldi ``segments``-like: one every ``duration / segments`` seconds, 70-95 % of that long, the
last one to the recording's end). Each is read at ``--rate`` (soxr resampling) four ways, each
way in its own process (CPU time of the process after the imports, as wall time on a shared
machine is mostly waiting; wall time too; peak resident memory ``VmHWM``):

- ``whole/item``: the old ``SpeechDataset`` path: decode + resample the whole recording for each
  segment (quadratic; timed on ``--whole-items`` segments, the total projected per segment);
- ``read-once``: the old ``UtteranceAudio`` path: decode + resample the recording once, cut
  every segment (in order);
- ``range/seq``: :func:`speechattn.data.audio.load_audio_segment` for every segment, in order;
- ``range/random``: the same in a shuffled order (``SpeechDataset``'s random access).

The old paths are written out here (``load_audio`` + a cut) so that the figures do not depend on
which ``UtteranceAudio`` is installed. Prints a table; ``--json`` writes the rows.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_segment_read.py \\
        --config wav:44100:20:100 --config flac:16000:60:600 --out runs/segread
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "make_recording", "segment_times"]

METHODS = ("whole/item", "read-once", "range/seq", "range/random")


def make_recording(path: Path, *, sample_rate: int, minutes: float, seed: int = 0) -> Path:
    """Write a speech-like mono 16-bit recording (``.wav`` or ``.flac`` by ``path``'s suffix),
    one minute at a time; returns ``path`` (kept when it is already there)."""
    import soundfile as sf

    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part" + path.suffix)
    n_min = round(sample_rate * 60)
    with sf.SoundFile(str(tmp), "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as out:
        for m in range(int(np.ceil(minutes))):
            n = min(n_min, round(minutes * 60 * sample_rate) - m * n_min)
            t = (m * n_min + np.arange(n)) / sample_rate
            env = np.clip(np.sin(2 * np.pi * 4.0 * t + 3 * np.sin(2 * np.pi * 0.3 * t)), 0, 1)
            f0 = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
            phase = 2 * np.pi * np.cumsum(f0) / sample_rate
            voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
            noise = rng.standard_normal(n)
            x = env * (0.15 * voiced + 0.03 * noise)
            out.write(np.clip(x, -1, 1).astype(np.float32))
    tmp.rename(path)
    return path


def segment_times(seconds: float, count: int, *, seed: int = 0) -> list[tuple[float, float | None]]:
    """``count`` segments ``(start, end)`` covering most of ``seconds`` of audio; the last one
    ends at the recording's end (``end`` None: Kaldi's ``-1``)."""
    rng = np.random.default_rng(seed + 1)
    step = seconds / count
    out: list[tuple[float, float | None]] = []
    for k in range(count):
        start = round(k * step + rng.uniform(0.0, 0.05) * step, 3)
        end = round(start + rng.uniform(0.7, 0.9) * step, 3)
        out.append((start, None if k == count - 1 else end))
    return out


def _child(args: argparse.Namespace) -> dict[str, Any]:
    """One method on one recording, in this process; returns seconds, peak memory, samples."""
    import torch  # noqa: F401  (imported before the baseline memory, as the library does)

    from speechattn.data.audio import load_audio, load_audio_segment

    path = Path(args.path)
    import soundfile as sf

    seconds = sf.info(str(path)).frames / sf.info(str(path)).samplerate
    segs = segment_times(seconds, args.segments)
    sr = args.rate
    # first calls (soxr's import and plan, soundfile's) before the clock, for every method
    load_audio_segment(path, start=0.0, end=0.05, sample_rate=sr)
    base = _vmhwm_mib()

    def cut(whole: Any, start: float, end: float | None) -> Any:
        n = int(whole.shape[0])
        a = min(n, max(0, round(start * sr)))
        b = n if end is None else min(n, max(a, round(end * sr)))
        return whole[a:b].clone()

    total = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    if args.method == "whole/item":
        done = segs[: args.whole_items]
        for start, end in done:
            total += int(cut(load_audio(path, sample_rate=sr), start, end).shape[0])
    elif args.method == "read-once":
        whole = load_audio(path, sample_rate=sr)
        for start, end in segs:
            total += int(cut(whole, start, end).shape[0])
        del whole
        done = segs
    else:
        order = list(range(len(segs)))
        if args.method == "range/random":
            np.random.default_rng(0).shuffle(order)
        for i in order:
            start, end = segs[i]
            total += int(load_audio_segment(path, start=start, end=end, sample_rate=sr).shape[0])
        done = segs
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "items": len(done),
        "samples": total,
        "peak_mib": _vmhwm_mib(),
        "base_mib": base,
    }


def _vmhwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _run(path: Path, method: str, segments: int, rate: int, whole_items: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--path",
        str(path),
        "--method",
        method,
        "--segments",
        str(segments),
        "--rate",
        str(rate),
        "--whole-items",
        str(whole_items),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(f"bench_segment_read: {method} on {path} failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--config",
        action="append",
        default=None,
        help="FORMAT:SOURCE_HZ:MINUTES:SEGMENTS (repeatable; default wav:44100:20:100)",
    )
    ap.add_argument("--rate", type=int, default=22050, help="output rate (Hz)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of the gated methods (best)")
    ap.add_argument("--whole-items", type=int, default=3, help="segments timed for whole/item")
    ap.add_argument("--out", default="runs/segread", help="folder for the recordings")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--segments", type=int, default=100, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    rows = []
    print(
        f"{'recording':<22} {'segs':>5} {'method':<13} {'CPU s':>9} {'CPU s/seg':>9} {'wall s':>8} "
        f"{'peak MiB':>9} {'+MiB':>7}",
        flush=True,
    )
    for spec in args.config or ["wav:44100:20:100"]:
        fmt, hz, minutes, segs = spec.split(":")
        path = Path(args.out) / f"rec_{hz}_{minutes}min.{fmt}"
        make_recording(path, sample_rate=int(hz), minutes=float(minutes))
        for method in METHODS:
            reps = args.repeats if method in ("read-once", "range/seq") else 1
            runs = [_run(path, method, int(segs), args.rate, args.whole_items) for _ in range(reps)]
            best = min(runs, key=lambda r: r["cpu_seconds"])
            per = best["cpu_seconds"] / best["items"]
            scale = int(segs) / best["items"]  # whole/item: projected to every segment
            total = per * int(segs)
            wall = min(r["seconds"] for r in runs) * scale
            row = {
                "recording": path.name,
                "segments": int(segs),
                "method": method,
                "cpu_s": total,
                "wall_s": wall,
                "projected": method == "whole/item",
                "cpu_per_segment_s": per,
                "peak_mib": max(r["peak_mib"] for r in runs),
                "added_mib": max(r["peak_mib"] - r["base_mib"] for r in runs),
                "runs_cpu_s": [r["cpu_seconds"] for r in runs],
                "runs_wall_s": [r["seconds"] for r in runs],
            }
            rows.append(row)
            mark = "*" if row["projected"] else " "
            print(
                f"{path.name:<22} {segs:>5} {method:<13} {total:>8.2f}{mark} {per:>9.4f} {wall:>8.2f} "
                f"{row['peak_mib']:>9.0f} {row['added_mib']:>7.0f}",
                flush=True,
            )
    print(
        "* projected: seconds per segment (timed on --whole-items segments) x segments; CPU s: "
        "process time (best run), wall s: the shortest run's wall time (a shared machine waits)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
