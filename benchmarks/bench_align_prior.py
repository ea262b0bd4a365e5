"""Effect of a diagonal / beta-binomial log-prior on the plain-MHA aligner (issue 6).

Trains the plain-MHA aligner of ``speechattn.recipes.align`` (mel frames attend over phonemes, mel
reconstruction loss) three times on the same synthetic corpus, same seed and batches, with
``mha_prior`` = ``none`` (the baseline), ``diagonal`` and ``beta-binomial``; every ``--eval-every``
steps it logs the focus rate (mean over frames of the best head's max attention weight) and the
share of phone boundaries within 20 ms on held-out utterances, and at the end scores held-out
voices. Prints a table: steps to a focus rate of 0.9 (or "not reached"), final boundary accuracy.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_align_prior.py --quick --json out.json

The corpus is synthesised with ``speechattn.data.synth.synth_corpus`` (espeak voices), the same
generator as ``speechattn demo`` (``--quick``: 160 utterances, 4 voices, as ``demo --quick``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="demo --quick size (about 3 CPU-min)")
    ap.add_argument("--utterances", type=int, default=None)
    ap.add_argument("--speakers", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--eval-every", type=int, default=None)
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--priors", default="none,diagonal,beta-binomial")
    ap.add_argument("--diagonal-scale", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--corpus", default=None, help="corpus dir (synthesised there if missing)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    from speechattn.data.corpus import load_corpus
    from speechattn.data.synth import synth_corpus
    from speechattn.recipes.align.data import FeatureConfig, build_items, new_symbol_table
    from speechattn.recipes.align.evaluate import align_items, score
    from speechattn.recipes.align.model import AlignerConfig, TextMelAligner
    from speechattn.recipes.align.pipeline import DemoConfig, _split, corpus_voice
    from speechattn.recipes.align.train import TrainConfig, train_aligner

    base = DemoConfig.quick() if args.quick else DemoConfig()
    utterances = args.utterances or base.utterances
    speakers = args.speakers or base.speakers
    steps = args.steps or (150 if args.quick else base.steps)
    eval_every = args.eval_every or (10 if args.quick else 20)
    dim = args.dim or base.dim
    torch.set_num_threads(max(1, args.threads))

    feats = FeatureConfig()
    corpus = Path(args.corpus or tempfile.mkdtemp(prefix="bench_align_prior_"))
    manifest = corpus / "manifest.jsonl"
    if not manifest.exists():
        manifest = synth_corpus(
            corpus,
            utterances=utterances,
            speakers=speakers,
            seed=args.seed,
            workers=args.threads,
            sample_rate=feats.sample_rate,
            progress=False,
        )
    symbols = new_symbol_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = build_items(
            load_corpus(manifest),
            symbols,
            feats,
            grow_symbols=True,
            progress=False,
            voice=corpus_voice,
        )
    held_voices = base.held_out_voices
    train, dev, unseen, held = _split(items, held_voices, base.held_out_utterances, args.seed)
    probe = dev[:24]
    print(
        f"{len(items)} utterances: {len(train)} train, {len(dev)} held-out utterances, "
        f"{len(unseen)} held-out voices {held}; MHA dim {dim}, {steps} steps, batch "
        f"{base.batch_size}, eval every {eval_every}"
    )
    uni = score(align_items("uniform", unseen or dev, feats))

    rows = []
    for prior in args.priors.split(","):
        mcfg = AlignerConfig(
            kind="mha",
            num_symbols=max(64, len(symbols)),
            n_mels=feats.n_mels,
            dim=dim,
            mha_prior=prior,
            mha_prior_scale=args.diagonal_scale,
        )
        tcfg = TrainConfig(steps=steps, batch_size=base.batch_size, lr=base.lr, seed=args.seed)

        def on_eval(model: TextMelAligner, step: int) -> dict:
            m = score(align_items(model, probe, feats))
            return {"focus_rate": m.focus_rate, "dev_within_20ms": m.phone_within_20ms}

        t0 = time.perf_counter()
        res = train_aligner(
            mcfg, train, tcfg, progress=False, on_eval=on_eval, eval_every=eval_every
        )
        secs = time.perf_counter() - t0
        curve = [
            (h["step"], h["focus_rate"], h["dev_within_20ms"])
            for h in res.history
            if "focus_rate" in h
        ]
        reached = next((s for s, f, _ in curve if f is not None and f >= 0.9), None)
        final = score(align_items(res.model, unseen or dev, feats))
        row = {
            "prior": prior,
            "steps_to_focus_0.9": reached,
            "final_focus_rate": final.focus_rate,
            "within_20ms": final.phone_within_20ms,
            "within_40ms": final.phone_within_40ms,
            "mean_abs_ms": final.phone_mean_abs_ms,
            "seconds": secs,
            "curve": curve,
        }
        rows.append(row)
        print(
            f"  {prior}: {secs:.0f}s; focus "
            + " ".join(f"{s}:{f:.2f}" for s, f, _ in curve if f is not None)
        )

    print()
    print(
        "| MHA prior | steps to focus 0.9 | final focus | within 20 ms | within 40 ms | mean err ms |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        st = r["steps_to_focus_0.9"]
        print(
            f"| {r['prior']} | {st if st is not None else f'not reached ({steps})'} | "
            f"{r['final_focus_rate']:.3f} | {r['within_20ms']:.1f}% | {r['within_40ms']:.1f}% | "
            f"{r['mean_abs_ms']:.1f} |"
        )
    print(
        f"| uniform durations | - | - | {uni.phone_within_20ms:.1f}% | "
        f"{uni.phone_within_40ms:.1f}% | {uni.phone_mean_abs_ms:.1f} |"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": rows,
                    "uniform": uni.as_dict(),
                    "config": {
                        "utterances": utterances,
                        "speakers": speakers,
                        "steps": steps,
                        "dim": dim,
                        "eval_every": eval_every,
                        "diagonal_scale": args.diagonal_scale,
                        "seed": args.seed,
                    },
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
