"""``speechattn data ...``: synthesize corpora, inspect them, export TextGrids."""

from __future__ import annotations

import argparse
import time
from typing import Any

__all__ = ["add_parser"]


def _synth(args: argparse.Namespace) -> int:
    from speechattn.data.synth import synth_corpus

    t0 = time.perf_counter()
    manifest = synth_corpus(
        args.out,
        utterances=args.utterances,
        speakers=args.speakers,
        seed=args.seed,
        workers=args.workers,
        sample_rate=args.sample_rate,
        texts=args.text_file,
        progress=not args.quiet,
    )
    dt = time.perf_counter() - t0
    print(
        f"wrote {args.utterances} utterances ({args.speakers} speakers) to {manifest} in {dt:.1f} s "
        f"({args.utterances / dt:.0f} utt/s)"
    )
    return 0


def _stats(args: argparse.Namespace) -> int:
    from speechattn.data.collate import audio_durations
    from speechattn.data.corpus import load_corpus

    utts = load_corpus(args.path)
    durs = audio_durations(utts)
    speakers = {u.speaker for u in utts}
    aligned = sum(1 for u in utts if u.phones)
    print(
        f"{len(utts)} utterances, {len(speakers)} speakers, {sum(durs) / 3600:.3f} h audio, "
        f"{aligned} with phone intervals"
    )
    if durs:
        print(
            f"duration s: min {min(durs):.2f}  mean {sum(durs) / len(durs):.2f}  max {max(durs):.2f}"
        )
    return 0


def _textgrid(args: argparse.Namespace) -> int:
    from pathlib import Path

    from speechattn.data.collate import audio_durations
    from speechattn.data.corpus import load_corpus
    from speechattn.data.textgrid import write_textgrid

    utts = [u for u in load_corpus(args.manifest) if u.words is not None and u.phones is not None]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for u, dur in zip(utts, audio_durations(utts)):
        assert u.words is not None and u.phones is not None  # filtered above (for mypy)
        write_textgrid(
            out / f"{u.id.replace('/', '_')}.TextGrid", words=u.words, phones=u.phones, duration=dur
        )
    print(f"wrote {len(utts)} TextGrids to {out}")
    return 0


def add_parser(sub: Any) -> None:
    """Register ``speechattn data {synth,stats,textgrid}``."""
    p = sub.add_parser("data", help="synthesize speech corpora with exact timings, inspect corpora")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")

    s = dsub.add_parser("synth", help="write a synthetic espeak-ng corpus (wavs + manifest.jsonl)")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--utterances", type=int, default=100, help="number of utterances (default 100)")
    s.add_argument("--speakers", type=int, default=10, help="number of voices (default 10)")
    s.add_argument("--seed", type=int, default=0, help="seed for sentences, voices, assignment")
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: CPUs)")
    s.add_argument("--sample-rate", type=int, default=22050, help="output rate (default 22050)")
    s.add_argument(
        "--text-file", default=None, help="one sentence per line instead of generated text"
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_synth)

    st = dsub.add_parser("stats", help="count utterances, speakers, hours of a corpus")
    st.add_argument("path", help="manifest.jsonl, metadata.csv, folder, or 'asterisk'")
    st.set_defaults(func=_stats)

    tg = dsub.add_parser("textgrid", help="export a manifest's word/phone intervals as TextGrids")
    tg.add_argument("manifest", help="manifest.jsonl with intervals")
    tg.add_argument("--out", required=True, help="output directory")
    tg.set_defaults(func=_textgrid)

    def _help(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
