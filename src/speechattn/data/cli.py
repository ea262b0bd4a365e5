"""``speechattn data ...``: synthesize corpora, list voices, inspect corpora, export TextGrids."""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

from speechattn._cli import (
    CliError,
    add_hidden_alias,
    comma_choices,
    nonnegative_int,
    out_dir,
    positive_int,
)

__all__ = ["add_parser"]


def engine_names() -> tuple[str, ...]:
    """The speech engines' names (imports the engines only when an option needs them)."""
    from speechattn.data.engines import ENGINE_NAMES

    return tuple(ENGINE_NAMES)


_engine_list = comma_choices(engine_names)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def synth_rate(utterances: int, seconds: float) -> str:
    """How fast ``utterances`` were made in ``seconds``, with two significant figures or more:
    ``"12 utt/s"``, ``"2.5 utt/s"``, or seconds per utterance below one a second (``"3.2 s/utt"``,
    Kokoro on a CPU) rather than a rate rounded to ``0 utt/s``."""
    if utterances <= 0 or seconds <= 0:
        return "no rate"
    rate = utterances / seconds
    if rate >= 10:
        return f"{rate:.0f} utt/s"
    if rate >= 1:
        return f"{rate:.1f} utt/s"
    per = seconds / utterances
    return f"{per:.1f} s/utt" if per < 100 else f"{per:.0f} s/utt"


def _synth(args: argparse.Namespace) -> int:
    from speechattn.data.engines import EngineUnavailable
    from speechattn.data.synth import synth_corpus

    if args.include_reserved and args.engines is None:
        raise CliError(
            "--include-reserved needs --engines (espeak has no reserved voices)", status=2
        )
    t0 = time.perf_counter()
    try:
        manifest = synth_corpus(
            args.out,
            utterances=args.utterances,
            speakers=args.voices,
            seed=args.seed,
            workers=args.workers,
            sample_rate=args.sample_rate,
            texts=args.text_file,
            progress=not args.no_progress,
            engines=args.engines,
            include_reserved=args.include_reserved,
        )
    except EngineUnavailable as exc:
        raise CliError(str(exc)) from None
    dt = time.perf_counter() - t0
    print(
        f"wrote {_n(args.utterances, 'utterance')} ({_n(args.voices, 'voice')}) to {manifest} "
        f"in {dt:.1f} s "
        f"({synth_rate(args.utterances, dt)})"
    )
    return 0


def _voices(args: argparse.Namespace) -> int:
    import json

    from speechattn.data.engines import ENGINE_NAMES, get_engine
    from speechattn.data.voices import list_voices, voice_installed

    engines = args.engines or list(ENGINE_NAMES)
    rows = []
    for v in list_voices(engines=engines, include_reserved=True):
        eng = get_engine(v.engine)
        rows.append(
            {
                "voice": v.key,
                "engine": v.engine,
                "person": v.person,
                "language": v.language,
                "accent": v.accent,
                "sex": v.sex or "?",
                "licence": v.licence,
                "commercial": v.commercial,
                "phones": v.phones,
                "installed": voice_installed(v),
                "usable": voice_installed(v) and eng.missing() is None,
                "reserved": v.reserved,
                "trainable": v.trainable,
            }
        )
    if args.installed:
        rows = [r for r in rows if r["installed"]]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    cols = (
        "voice",
        "person",
        "language",
        "accent",
        "sex",
        "licence",
        "installed",
        "usable",
        "reserved",
    )
    table = [
        [str(r[c]) if not isinstance(r[c], bool) else ("yes" if r[c] else "no") for c in cols]
        for r in rows
    ]
    widths = [
        max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, c in enumerate(cols)
    ]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for t in table:
        print("  ".join(x.ljust(w) for x, w in zip(t, widths)))
    print()
    for name in engines:
        reason = get_engine(name).missing()
        if reason is not None:
            print(f"{name}: {reason}; install: {get_engine(name).install}")
    print("reserved voices are for evaluation only: never train on them or choose settings by them")
    return 0


def _stats(args: argparse.Namespace) -> int:
    import warnings

    from speechattn._cli import CliError
    from speechattn.data.audio import AudioError
    from speechattn.data.collate import audio_durations
    from speechattn.data.corpus import UtteranceAudio, load_corpus

    problems: list[str] = []
    utts = load_corpus(args.path, problems=problems)
    if args.validate:  # decode every file: finite, one 25 ms analysis window, not silent
        from tqdm.auto import tqdm

        kept = []
        read_audio = UtteranceAudio(utts, sample_rate=16000)  # a recording's segments: read once
        for u in tqdm(utts, desc="validate", unit="utt", leave=False, disable=args.no_progress):
            try:
                read_audio(u, validate=True, min_samples=400)
            except AudioError as exc:
                warnings.warn(f"skipped {exc}", stacklevel=1)
                problems.append(str(exc))
                continue
            kept.append(u)
        utts = kept
    if not utts:
        n = len(problems)
        raise CliError(
            f"{args.path}: no usable utterance ({n} entr{'y' if n == 1 else 'ies'} skipped)"
        )
    durs = audio_durations(utts)
    speakers = {u.speaker for u in utts}
    aligned = sum(1 for u in utts if u.phones)
    print(
        f"{len(utts)} utterances, {len(speakers)} speakers, {sum(durs) / 3600:.3f} h audio, "
        f"{aligned} with phone intervals, {len(problems)} skipped"
    )
    print(f"duration s: min {min(durs):.2f}  mean {sum(durs) / len(durs):.2f}  max {max(durs):.2f}")
    return 0


def _textgrid(args: argparse.Namespace) -> int:
    from pathlib import Path

    from speechattn.data.collate import audio_durations
    from speechattn.data.corpus import load_corpus
    from speechattn.data.textgrid import write_textgrid

    corpus = load_corpus(args.manifest)
    utts = [u for u in corpus if u.words is not None and u.phones is not None]
    if not utts:
        raise CliError(
            f"{args.manifest}: none of its {len(corpus)} utterances has word and phone intervals, "
            "so there is nothing to export; pass a manifest.jsonl written by `speechattn data "
            "synth` (or align the corpus with `speechattn align`, which writes TextGrids)"
        )
    for u in corpus:  # one warning per file left out, naming it
        if u.words is None or u.phones is None:
            warnings.warn(
                f"skipped {u.audio_path}: no word/phone intervals in the manifest, so no "
                "TextGrid for it",
                stacklevel=1,
            )
    if len(utts) < len(corpus):
        warnings.warn(
            f"{len(corpus) - len(utts)} of {len(corpus)} utterances have no word/phone "
            "intervals; no TextGrid for them",
            stacklevel=1,
        )
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
    """Register ``speechattn data {synth,voices,stats,textgrid}``."""
    p = sub.add_parser("data", help="synthesize speech corpora with exact timings, inspect corpora")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")

    s = dsub.add_parser(
        "synth", help="write a synthetic corpus with exact timings (wavs + manifest.jsonl)"
    )
    s.add_argument("--out", type=out_dir, required=True, help="output directory")
    s.add_argument(
        "--utterances", type=positive_int, default=100, help="number of utterances (default 100)"
    )
    s.add_argument("--voices", type=positive_int, default=10, help="number of voices (default 10)")
    add_hidden_alias(s, "--speakers", "voices", type=positive_int)
    s.add_argument(
        "--engines",
        type=_engine_list,
        default=None,
        metavar="E1,E2,...",
        help="speech engines to mix, e.g. espeak,festival,piper (default: espeak only); "
        "see `speechattn data voices`",
    )
    s.add_argument(
        "--include-reserved",
        action="store_true",
        help="also use evaluation-only voices (for evaluation sets; never for training)",
    )
    s.add_argument("--seed", type=int, default=0, help="seed for sentences, voices, assignment")
    s.add_argument(
        "--workers",
        type=nonnegative_int,
        default=None,
        help="worker processes (default: one per CPU; 0 synthesizes in this process)",
    )
    s.add_argument(
        "--sample-rate", type=positive_int, default=22050, help="output rate (default 22050)"
    )
    s.add_argument(
        "--text-file", default=None, help="one sentence per line instead of generated text"
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_hidden_alias(s, "--quiet", "no_progress", action="store_true")
    s.set_defaults(func=_synth)

    v = dsub.add_parser(
        "voices",
        help="list the voices of every speech engine: person, licence, installed, reserved",
    )
    v.add_argument(
        "--engines",
        type=_engine_list,
        default=None,
        metavar="E1,E2,...",
        help="only these engines, a comma list (default: every engine)",
    )
    v.add_argument("--installed", action="store_true", help="only voices installed here")
    v.add_argument("--json", action="store_true", help="JSON instead of a table")
    v.set_defaults(func=_voices)

    st = dsub.add_parser("stats", help="count utterances, speakers, hours of a corpus")
    st.add_argument(
        "path",
        help="manifest.jsonl, metadata.csv, Kaldi data dir, LibriSpeech folder, folder of audio + "
        ".lab/.txt, or 'asterisk'",
    )
    st.add_argument(
        "--validate",
        action="store_true",
        help="decode every file and skip (with a warning) corrupt, NaN, silent or shorter than "
        "one 25 ms window",
    )
    st.add_argument("--no-progress", action="store_true", help="no progress bar (with --validate)")
    st.set_defaults(func=_stats)

    tg = dsub.add_parser("textgrid", help="export a manifest's word/phone intervals as TextGrids")
    tg.add_argument("manifest", help="manifest.jsonl with intervals")
    tg.add_argument("--out", type=out_dir, required=True, help="output directory")
    tg.set_defaults(func=_textgrid)

    def _help(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
