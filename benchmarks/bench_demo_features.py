"""The demo's front end (``build_items``) on one torch thread vs the caller's two: time, identity.

Loads the corpus of a finished ``speechattn demo`` folder and builds its items (phonemes,
log-mels) alternately with ``build_items`` (one torch thread inside, the current code) and its
unwrapped body (``build_items.__wrapped__``) on ``--threads`` torch threads (what 5b21af4 did
under the demo's default ``--threads 2``), ``--repeats`` times each, in one process. Prints the
median CPU (``time.process_time``) and wall seconds per variant and whether every item's tokens
and log-mel are bitwise equal.

Usage::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_demo_features.py runs/base1 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from speechattn.data.corpus import load_corpus
    from speechattn.recipes.align.data import build_items, new_symbol_table
    from speechattn.recipes.align.pipeline import DemoConfig, corpus_voice, demo_features

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("demo_dir", type=Path)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="the caller's torch threads")
    p.add_argument("--limit", type=int, default=0, help="first N utterances (0: all)")
    args = p.parse_args(argv)
    utts = load_corpus(args.demo_dir / "corpus" / "manifest.jsonl")
    if args.limit:
        utts = utts[: args.limit]
    feats = demo_features(DemoConfig())
    torch.set_num_threads(args.threads)
    variants = {
        "one thread (build_items)": build_items,
        f"{args.threads} threads (unwrapped)": build_items.__wrapped__,  # type: ignore[attr-defined]
    }
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    items: dict[str, list] = {}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                w0, c0 = time.perf_counter(), time.process_time()
                items[name] = fn(
                    utts, new_symbol_table(), feats, grow_symbols=True, voice=corpus_voice
                )
                times[name].append((time.process_time() - c0, time.perf_counter() - w0))
    a, b = items.values()
    same = len(a) == len(b) and all(
        torch.equal(x.mel, y.mel) and torch.equal(x.tokens, y.tokens) for x, y in zip(a, b)
    )
    print(f"{len(a)} utterances, caller's torch threads {torch.get_num_threads()}")
    for name, ts in times.items():
        cpu = statistics.median(c for c, _ in ts)
        wall = statistics.median(w for _, w in ts)
        print(f"  {name:<28} cpu {cpu:6.2f}s  wall {wall:6.2f}s")
    print(f"  items bitwise equal: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
