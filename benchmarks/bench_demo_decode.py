"""Decoding a demo run's aligners with and without the training loss: CPU time, same results.

Before the fix, ``TextMelAligner.align`` ran the full ``forward`` (the forward-sum CTC loss,
and for ``kind="sma"`` a whole monotonic-HMM forward-backward for the loss) and then decoded;
the SMA decoding runs that forward-backward again for the posterior. This script loads the
checkpoints of a finished ``speechattn demo`` folder, rebuilds its held-out items, and aligns
them (``align_items``, as the demo does) alternately with the old path (loss computed, then
thrown away) and the current one, in one process, ``--repeats`` times each. It reports the
median CPU time (``time.process_time``) and wall time per path and checks that durations,
intervals, soft alignments and focus are identical.

Usage::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_demo_decode.py runs/base1 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["main"]


def _old_align(
    self: Any, tokens, text_lengths, mels, mel_lengths, skippable_mask=None, log_skip=0.0
):
    """The decoding of 5b21af4: the full forward (loss included), then the path."""
    from speechattn.recipes.align.model import _hard_alignment

    with torch.no_grad():
        out = self.forward(tokens, text_lengths, mels, mel_lengths)
        return _hard_alignment(out, text_lengths, mel_lengths, skippable_mask, log_skip)


def _same(a: list, b: list) -> bool:
    for x, y in zip(a, b, strict=True):
        if not np.array_equal(x.durations, y.durations) or x.phones != y.phones:
            return False
        if x.words != y.words or x.failure != y.failure:
            return False
        if not (x.focus == y.focus or (np.isnan(x.focus) and np.isnan(y.focus))):
            return False
        if (x.soft is None) != (y.soft is None) or (
            x.soft is not None and not np.array_equal(x.soft, y.soft)
        ):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    from speechattn.data.corpus import load_corpus
    from speechattn.recipes.align.data import build_items, new_symbol_table
    from speechattn.recipes.align.evaluate import align_items
    from speechattn.recipes.align.model import AlignerConfig, TextMelAligner
    from speechattn.recipes.align.pipeline import DemoConfig, _split, corpus_voice, demo_features
    from speechattn.recipes.align.train import load_checkpoint

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("demo_dir", type=Path)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads (the demo's default)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = DemoConfig()
    utts = load_corpus(args.demo_dir / "corpus" / "manifest.jsonl")
    symbols = new_symbol_table()
    checkpoints = sorted((args.demo_dir / "checkpoints").glob("*.pt"))
    feats = demo_features(cfg)  # the default demo's front end
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = build_items(utts, symbols, feats, grow_symbols=True, voice=corpus_voice)
    _train, dev, unseen, _ = _split(items, cfg.held_out_voices, cfg.held_out_utterances, cfg.seed)
    its = dev + unseen
    print(f"{len(its)} held-out items; {torch.get_num_threads()} torch threads")
    new_align = TextMelAligner.align
    for ck_path in checkpoints:
        ck = load_checkpoint(ck_path)
        model = TextMelAligner(AlignerConfig(**ck["model_config"]))
        model.load_state_dict(ck["model"])
        model.eval()
        times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
        outs: dict[str, list] = {}
        for _ in range(args.repeats):
            for name, fn in (("old", _old_align), ("new", new_align)):
                TextMelAligner.align = fn  # type: ignore[method-assign]
                try:
                    w0, c0 = time.perf_counter(), time.process_time()
                    outs[name] = align_items(model, its, feats, keep_soft=2)
                    times[name].append((time.process_time() - c0, time.perf_counter() - w0))
                finally:
                    TextMelAligner.align = new_align  # type: ignore[method-assign]
        same = _same(outs["old"], outs["new"])
        med = {
            k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v))
            for k, v in times.items()
        }
        print(
            f"{ck_path.stem}: old cpu {med['old'][0]:.2f}s wall {med['old'][1]:.2f}s | "
            f"new cpu {med['new'][0]:.2f}s wall {med['new'][1]:.2f}s | "
            f"cpu saved {100 * (1 - med['new'][0] / med['old'][0]):.0f}% | identical: {same}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
