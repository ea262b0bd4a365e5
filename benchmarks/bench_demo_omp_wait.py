"""Demo training steps under the OpenMP wait policy the process started with: time and result.

Builds the default demo's training split from a finished ``speechattn demo`` folder, trains one
aligner ``--steps`` steps at the demo's defaults on ``--threads`` torch threads, prints CPU
(``time.process_time``) and wall seconds and saves the loss history and weights to ``--save``.
Run it once with ``OMP_WAIT_POLICY`` unset and once with ``OMP_WAIT_POLICY=PASSIVE`` (it is read
when torch loads), then ``--compare A B`` checks the two results are bitwise the same.

Usage::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_demo_omp_wait.py runs/base1 --save runs/pol_default.pt
    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_demo_omp_wait.py runs/base1 --save runs/pol_passive.pt
    python benchmarks/bench_demo_omp_wait.py --compare runs/pol_default.pt runs/pol_passive.pt
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import torch

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("demo_dir", type=Path, nargs="?")
    p.add_argument("--kind", default="sma")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save", type=Path)
    p.add_argument("--compare", type=Path, nargs=2)
    args = p.parse_args(argv)
    if args.compare:
        a, b = (torch.load(f, weights_only=True) for f in args.compare)
        same_loss = a["loss"] == b["loss"]
        same_w = all(torch.equal(t, b["w"][k]) for k, t in a["w"].items())
        print(f"losses identical: {same_loss}; weights identical: {same_w}")
        return 0 if same_loss and same_w else 1
    from speechattn.data.corpus import load_corpus
    from speechattn.recipes.align.data import build_items, new_symbol_table
    from speechattn.recipes.align.model import AlignerConfig
    from speechattn.recipes.align.pipeline import DemoConfig, _split, corpus_voice, demo_features
    from speechattn.recipes.align.train import TrainConfig, train_aligner

    cfg = DemoConfig()
    feats = demo_features(cfg)
    utts = load_corpus(args.demo_dir / "corpus" / "manifest.jsonl")
    symbols = new_symbol_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = build_items(utts, symbols, feats, grow_symbols=True, voice=corpus_voice)
    train, _, _, _ = _split(items, cfg.held_out_voices, cfg.held_out_utterances, cfg.seed)
    torch.set_num_threads(args.threads)
    mcfg = AlignerConfig(
        kind=args.kind,
        num_symbols=max(64, len(symbols)),
        n_mels=feats.n_mels,
        dim=cfg.dim,
        kernel_size=cfg.mel_kernel_size,
    )
    tcfg = TrainConfig(steps=args.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed)
    w0, c0 = time.perf_counter(), time.process_time()
    res = train_aligner(mcfg, train, tcfg, progress=False)
    print(
        f"{args.kind}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, {args.threads} "
        f"threads, {args.steps} steps: cpu {time.process_time() - c0:.1f}s, "
        f"wall {time.perf_counter() - w0:.1f}s, load {os.getloadavg()[0]:.1f}"
    )
    if args.save:
        losses = [h["loss"] for h in res.history]
        torch.save({"loss": losses, "w": res.model.state_dict()}, args.save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
