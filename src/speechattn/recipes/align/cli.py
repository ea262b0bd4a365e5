"""``speechattn demo`` and ``speechattn align``: argparse registration (heavy imports inside)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]

_PRIORS = ("none", "diagonal", "beta-binomial")


def _demo(args: argparse.Namespace) -> int:
    from speechattn.recipes.align.pipeline import DemoConfig, run_demo
    from speechattn.recipes.align.report import metrics_table_text

    cfg = DemoConfig.quick() if args.quick else DemoConfig()
    if args.utterances is not None:
        cfg.utterances = args.utterances
    if args.speakers is not None:
        cfg.speakers = args.speakers
    if args.steps is not None:
        cfg.steps = args.steps
    if args.threads is not None:
        cfg.threads = args.threads
    if args.kinds:
        cfg.kinds = tuple(args.kinds.split(","))
    cfg.mha_prior = args.prior
    cfg.seed = args.seed
    if args.minutes_per_aligner is not None:
        cfg.max_seconds_per_aligner = 60.0 * args.minutes_per_aligner
    res = run_demo(
        Path(args.out),
        cfg,
        export=Path(args.export) if args.export else None,
        progress=not args.no_progress,
    )
    print()
    print(metrics_table_text(res["table"]))
    print()
    for k, v in res["summary"].items():
        print(f"{k}: {v}")
    print(f"report: {res['report']}")
    return 0


def _align(args: argparse.Namespace) -> int:
    from speechattn.recipes.align.pipeline import run_align
    from speechattn.recipes.align.report import metrics_table_text

    res = run_align(
        Path(args.data),
        Path(args.out),
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        adapt=not args.no_adapt,
        from_scratch=args.from_scratch,
        steps=args.steps,
        seed=args.seed,
        threads=args.threads,
        word_silences=args.word_silences,
        kind=args.kind,
        prior=args.prior,
        calibration=args.calibration,
        progress=not args.no_progress,
    )
    if res:
        print(metrics_table_text(res["table"]))
        print(f"report: {res['report']}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``demo`` and ``align``."""
    p = sub.add_parser(
        "demo",
        help="synthesize a corpus, train the SMA aligner and baselines, write OUT/report.html",
        description="The main job: unsupervised phoneme alignment with stepwise monotonic attention "
        "on a synthetic multi-voice corpus, scored against ground truth and against baselines "
        "(forward-sum + MAS, plain MHA, uniform). About 10 minutes on 2 CPU cores.",
    )
    p.add_argument(
        "--out", default="speechattn-demo", help="output directory (default: %(default)s)"
    )
    p.add_argument(
        "--quick", action="store_true", help="a tiny run (about a minute) for smoke tests"
    )
    p.add_argument("--utterances", type=int, default=None, help="corpus size")
    p.add_argument("--speakers", type=int, default=None, help="number of synthetic voices")
    p.add_argument("--steps", type=int, default=None, help="training steps per aligner")
    p.add_argument("--threads", type=int, default=None, help="torch threads and synthesis workers")
    p.add_argument("--kinds", default=None, help="comma list of aligners: sma,fs,mha")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--minutes-per-aligner",
        type=float,
        default=None,
        help="stop each aligner's training after this",
    )
    p.add_argument(
        "--export", default=None, help="save the best aligner here (how the shipped one is built)"
    )
    p.add_argument(
        "--prior",
        choices=_PRIORS,
        default="none",
        help="log-prior added to the plain-MHA aligner's attention logits: none (the plain "
        "baseline), diagonal (linear penalty on |t/T - u/U|, Speech-Transformer) or beta-binomial "
        "(RAD-TTS); the other aligners are unchanged (default: %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)

    a = sub.add_parser(
        "align",
        help="align a corpus (wav+txt dir, LJSpeech metadata.csv, manifest.jsonl): TextGrid + JSON",
        description="Align every utterance of a corpus. By default the shipped English aligner adapts "
        "to the corpus without labels for a few minutes, then writes OUT/alignments/*.TextGrid and "
        "*.json and OUT/report.html. Resumable: re-running continues an interrupted adaptation/training.",
    )
    a.add_argument("data", help="corpus directory, metadata.csv or manifest.jsonl")
    a.add_argument("--out", required=True, help="output directory")
    a.add_argument("--checkpoint", default=None, help="aligner to apply (default: the shipped one)")
    g = a.add_mutually_exclusive_group()
    g.add_argument("--no-adapt", action="store_true", help="apply the aligner as is")
    g.add_argument("--from-scratch", action="store_true", help="train a new aligner on this corpus")
    a.add_argument("--steps", type=int, default=None, help="adaptation/training steps")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--threads", type=int, default=2)
    a.add_argument(
        "--word-silences",
        action="store_true",
        help="with --from-scratch: a pause token <sp> between words (it takes at least one frame)",
    )
    a.add_argument(
        "--kind",
        choices=("sma", "fs", "mha"),
        default="sma",
        help="with --from-scratch: which aligner to train (default: %(default)s)",
    )
    a.add_argument(
        "--prior",
        choices=_PRIORS,
        default=None,
        help="log-prior on a plain-MHA aligner's attention logits (--kind mha, or an MHA "
        "checkpoint): none, diagonal (linear penalty on |t/T - u/U|) or beta-binomial (RAD-TTS); "
        "an error for other aligners (default: keep the aligner's own setting)",
    )
    a.add_argument(
        "--calibration",
        action="store_true",
        help="apply the aligner's boundary calibration (per-context offsets fitted on its training "
        "voices' labels; the shipped one maps onto espeak-ng's convention, e.g. a stop starts at "
        "its burst). Off by default: real speech is usually labelled with the closure in the stop",
    )
    a.add_argument("--no-progress", action="store_true")
    a.set_defaults(func=_align)
