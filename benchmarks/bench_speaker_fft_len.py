"""CPU of the channel augmentation's FFT filters at their length ``2N`` vs a fast length.

:func:`speechattn.data.augment._fft_filter` (equaliser, telephone band) filters an ``(N,)``
waveform through ``rfft``/``irfft`` of length ``2N``, ``N`` the utterance's sample count: an
arbitrary number, often with a large prime factor, where pocketfft is slow. This times one
``rfft`` + ``irfft`` pair per utterance of a manifest (its ``duration`` at ``--rate``) at ``2N``
and at ``scipy.fft.next_fast_len(2N, real=True)``. A measurement only: a different length samples
the filter on another grid, so the augmented audio (and every figure trained on it) would change.

Usage::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_speaker_fft_len.py runs/pool/manifest.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifest", help="manifest .jsonl with a 'duration' (s) per line")
    p.add_argument("--rate", type=int, default=16000, help="sample rate (default 16000)")
    args = p.parse_args(argv)
    from scipy.fft import next_fast_len

    with open(args.manifest, encoding="utf-8") as f:
        ns = [round(json.loads(line)["duration"] * args.rate) for line in f if line.strip()]
    rng = np.random.default_rng(0)
    for name, length in (
        ("2N", lambda n: 2 * n),
        ("next_fast_len(2N)", lambda n: next_fast_len(2 * n, real=True)),
    ):
        t = time.process_time()
        for n in ns:
            m = length(n)
            np.fft.irfft(np.fft.rfft(rng.standard_normal(n), n=m), n=m)
        print(f"{name}: {time.process_time() - t:.2f} s CPU for {len(ns)} filters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
