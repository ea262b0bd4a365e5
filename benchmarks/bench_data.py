"""Data pipeline throughput: espeak-ng synthesis (utterances/s) and log-mel real-time factor.

Synthesis rows: in-process ``synthesize`` calls (no disk), then ``synth_corpus`` (wav + manifest
writing) with 1 and 2 worker processes; ratios are against the in-process row. CPU seconds per
utterance (this process + children) are reported too, since on a shared machine wall time
depends on the load.

Feature rows: ``LogMelSpectrogram`` (torch, 1 thread) on a batch of 5 s clips vs a vectorised
numpy rfft implementation of the same definition (and librosa when installed); RTF = seconds of
audio processed per second of wall time (higher is faster).

    python benchmarks/bench_data.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time

import numpy as np
import torch


def _cpu() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def bench_synth(n: int) -> list[dict]:
    from speechattn.data.synth import generate_sentences, make_voices, synth_corpus, synthesize

    rows = []
    sents = generate_sentences(n, seed=0)
    voices = make_voices(10, seed=0)
    synthesize("warm up", voice=voices[0])
    t0, c0 = time.perf_counter(), _cpu()
    audio = 0.0
    for i, s in enumerate(sents):
        r = synthesize(s, voice=voices[i % len(voices)])
        audio += len(r.waveform) / r.sample_rate
    dt, dc = time.perf_counter() - t0, _cpu() - c0
    rows.append(
        {
            "case": "synthesize() in-process, no disk",
            "utt": n,
            "wall_s": dt,
            "cpu_s": dc,
            "audio_s": audio,
        }
    )
    for workers in (1, 2):
        out = tempfile.mkdtemp(prefix="bench_synth_")
        try:
            t0, c0 = time.perf_counter(), _cpu()
            synth_corpus(out, utterances=n, speakers=10, seed=0, workers=workers, progress=False)
            dt, dc = time.perf_counter() - t0, _cpu() - c0
        finally:
            shutil.rmtree(out, ignore_errors=True)
        rows.append(
            {
                "case": f"synth_corpus workers={workers} (wav+manifest)",
                "utt": n,
                "wall_s": dt,
                "cpu_s": dc,
                "audio_s": audio,
            }
        )
    base = rows[0]["utt"] / rows[0]["wall_s"]
    for r in rows:
        r["utt_per_s"] = r["utt"] / r["wall_s"]
        r["cpu_ms_per_utt"] = 1000 * r["cpu_s"] / r["utt"]
        r["x_realtime"] = r["audio_s"] / r["wall_s"]
        r["ratio_vs_inprocess"] = r["utt_per_s"] / base
    return rows


def _numpy_logmel(wav: np.ndarray, fb: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    x = np.pad(wav, ((0, 0), (n_fft // 2, n_fft // 2)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=1)[:, ::hop]
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    mag = np.abs(np.fft.rfft(frames * win, axis=-1))
    return np.log(np.maximum(mag @ fb.T, 1e-5))


def bench_features(batch: int, seconds: float, reps: int) -> list[dict]:
    from speechattn.data.features import LogMelSpectrogram

    torch.set_num_threads(1)
    sr = 22050
    fe = LogMelSpectrogram()
    wav = torch.randn(batch, int(seconds * sr)) * 0.1
    audio = batch * seconds
    fe(wav)
    rows = []

    def timeit(fn):
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best

    t_torch = timeit(lambda: fe(wav))
    rows.append({"case": "LogMelSpectrogram torch f32 (1 thread)", "wall_s": t_torch})
    fb = fe.mel_basis.numpy()
    w64 = wav.double().numpy()
    ref = _numpy_logmel(w64, fb, 1024, 256)
    err = float(np.abs(fe(wav).double().numpy() - ref).max())
    rows.append(
        {
            "case": "numpy rfft reference f64",
            "wall_s": timeit(lambda: _numpy_logmel(w64, fb, 1024, 256)),
        }
    )
    try:
        import librosa

        w32 = wav.numpy()

        def lib():
            librosa.feature.melspectrogram(
                y=w32, sr=sr, n_fft=1024, hop_length=256, n_mels=80, power=1.0, pad_mode="constant"
            )

        lib()
        rows.append({"case": "librosa.feature.melspectrogram", "wall_s": timeit(lib)})
    except ImportError:
        pass
    for r in rows:
        r["audio_s"] = audio
        r["rtf_x"] = audio / r["wall_s"]
        r["speedup_vs_torch"] = t_torch / r["wall_s"]
    rows[0]["max_abs_err_vs_numpy"] = err
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    ap.add_argument("--json", default=None, help="write results to this JSON file")
    ap.add_argument("--utterances", type=int, default=None)
    args = ap.parse_args()
    n = args.utterances or (40 if args.quick else 400)
    print(f"cpus available: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()[0]:.1f}")
    synth_rows = bench_synth(n)
    print(
        f"\n{'synthesis':<44}{'utt':>6}{'wall s':>9}{'utt/s':>9}{'cpu ms/utt':>12}{'x realtime':>12}{'ratio':>8}"
    )
    for r in synth_rows:
        print(
            f"{r['case']:<44}{r['utt']:>6}{r['wall_s']:>9.2f}{r['utt_per_s']:>9.1f}{r['cpu_ms_per_utt']:>12.2f}{r['x_realtime']:>12.0f}{r['ratio_vs_inprocess']:>8.2f}"
        )
    feat_rows = bench_features(
        batch=4 if args.quick else 16, seconds=5.0, reps=2 if args.quick else 5
    )
    print(
        f"\n{'log-mel (22.05 kHz, n_fft 1024, hop 256, 80 mels)':<44}{'audio s':>9}{'wall s':>9}{'RTF x':>9}{'vs torch':>10}"
    )
    for r in feat_rows:
        print(
            f"{r['case']:<44}{r['audio_s']:>9.0f}{r['wall_s']:>9.3f}{r['rtf_x']:>9.0f}{r['speedup_vs_torch']:>10.2f}"
        )
    print(f"torch vs numpy f64 max |log-mel diff|: {feat_rows[0]['max_abs_err_vs_numpy']:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"synthesis": synth_rows, "features": feat_rows, "load": os.getloadavg()[0]},
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
