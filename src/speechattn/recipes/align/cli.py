"""``speechattn demo`` and ``speechattn align``: argparse registration (heavy imports inside)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from speechattn._cli import (
    CliError,
    add_hidden_alias,
    comma_choices,
    nonnegative_int,
    out_dir,
    parse_overrides,
    positive_float,
    positive_int,
)
from speechattn.data.cli import engine_names

__all__ = [
    "add_parser",
    "db_or_off",
    "loudness_or_off",
    "radius_ms_or_off",
    "refine_fraction",
]

_FORMATS = ("textgrid", "json", "ctm")
_KINDS = ("sma", "fs", "mha")
_formats = comma_choices(_FORMATS, fold_case=True)
_engines = comma_choices(engine_names, fold_case=True)
_kinds = comma_choices(_KINDS)
_PRIORS = ("none", "diagonal", "beta-binomial")


def _number_or_off(text: str) -> float | None:
    """``off``/``none`` -> None; otherwise the number (NaN when ``text`` is not one)."""
    if text.strip().lower() in ("off", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        return float("nan")


def loudness_or_off(text: str) -> float | None:
    """argparse type of ``--max-pause-loudness``: a number >= 0, or ``off`` (None)."""
    value = _number_or_off(text)
    if value is not None and (not value >= 0 or value == float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'off'; found {text!r}")
    return value


def db_or_off(text: str) -> float | None:
    """argparse type of ``--silence-edge-db``: a finite number of dB > 0, or ``off`` (None)."""
    value = _number_or_off(text)
    if value is not None and not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of dB > 0 or 'off'; found {text!r}")
    return value


def radius_ms_or_off(text: str) -> float | None:
    """argparse type of ``--refine-boundaries``: a radius in ms in (0, 100], or ``off`` (None)."""
    value = _number_or_off(text)
    if value is not None and not 0 < value <= 100:
        raise argparse.ArgumentTypeError(
            f"expected a radius in ms in (0, 100] or 'off'; found {text!r}"
        )
    return value


def refine_fraction(text: str) -> float:
    """argparse type of ``--refine-fraction``: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1]; found {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1]; found {text!r}")
    return value


def _adapt_members(text: str) -> int | str:
    """``--adapt-members``: 'all' or an integer >= 1."""
    if text.strip().lower() == "all":
        return "all"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected 'all' or an integer >= 1; found {text!r}")
    return n


def _demo(args: argparse.Namespace) -> int:
    from speechattn.recipes.align.pipeline import DemoConfig, run_demo
    from speechattn.recipes.align.report import WORD_COLUMNS, metrics_table_text

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        # every rank would synthesise the same corpus into the same folder and write the report
        raise CliError(
            "demo runs in one process (its corpus synthesis, evaluation and report are not split "
            "across ranks); run `speechattn demo` without torchrun, or train on several processes "
            "with `torchrun --nproc_per_node N -m speechattn align DATA --from-scratch`",
            status=2,
        )
    cfg = DemoConfig.quick() if args.quick else DemoConfig()
    # Settings with their own option are not --set keys (the option would silently win).
    own_option = {"seed": "--seed", "mha_prior": "--prior"}
    for item in args.set or []:
        key = item.split("=", 1)[0].strip()
        if key in own_option:
            raise CliError(f"--set {key}: use {own_option[key]} instead", status=2)
    fields = {
        f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in own_option
    }
    try:
        cfg = dataclasses.replace(cfg, **parse_overrides(args.set, fields))
    except ValueError as exc:  # a value out of range (DemoConfig checks its fields)
        raise CliError(f"--set: {exc}", status=2) from None
    if args.utterances is not None:
        cfg.utterances = args.utterances
    if args.speakers is not None:
        cfg.speakers = args.speakers
    if args.steps is not None:
        cfg.steps = args.steps
    if args.threads is not None:
        cfg.threads = args.threads
    if args.kinds:
        cfg.kinds = args.kinds
    if args.engines is not None:
        cfg.engines = args.engines
    if args.commercial_only:
        cfg.commercial_only = True
    if args.augment:
        cfg.augment = True
    if args.band_mask:
        cfg.band_mask = True
    from speechattn.recipes.align.data import demo_engine_options

    try:
        demo_engine_options(cfg.engines, cfg.commercial_only)
    except ValueError as exc:
        raise CliError(f"--engines: {exc}", status=2) from None
    cfg.mha_prior = args.prior
    cfg.seed = args.seed
    if args.minutes_per_aligner is not None:
        cfg.max_seconds_per_aligner = 60.0 * args.minutes_per_aligner
    try:  # the options above set fields one by one: check the whole config once more
        cfg = dataclasses.replace(cfg)
    except ValueError as exc:
        raise CliError(str(exc), status=2) from None
    res = run_demo(
        Path(args.out),
        cfg,
        export=Path(args.export) if args.export else None,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        corpus_from=Path(args.corpus_from) if args.corpus_from else None,
        collapse_retries=args.collapse_retries,
        collapse_check_at=args.collapse_check_at,
    )
    print()
    print(metrics_table_text(res["table"]))
    print()
    print("Word boundaries (each word's start and end; pauses not scored):")
    print(metrics_table_text(res["word_table"], WORD_COLUMNS))
    print()
    for k, v in res["summary"].items():
        print(f"{k}: {v}")
    print(f"report: {res['report']}")
    return 0


# ``speechattn align --set KEY=VALUE``: the range each setting takes (checked before the corpus
# is read, as a usage error; the optimiser or the batch sampler would fail much later).
_ALIGN_SET_RANGES: dict[str, tuple[str, float, bool]] = {
    # key: (what, lower bound, bound included)
    "batch_size": ("an integer >= 1", 1, True),
    "checkpoint_every": ("an integer >= 1", 1, True),
    "smoothing": ("an integer >= 1", 1, True),
    "patience": ("an integer >= 1", 1, True),
    "min_steps": ("an integer >= 0", 0, True),
    "warmup": ("an integer >= 0", 0, True),
    "lr": ("a finite number > 0", 0.0, False),
    "grad_clip": ("a finite number > 0", 0.0, False),
    "max_seconds": ("a finite number > 0", 0.0, False),
    "weight_decay": ("a finite number >= 0", 0.0, True),
    "min_delta": ("a finite number >= 0", 0.0, True),
}


def _checked_align_overrides(overrides: dict[str, object]) -> dict[str, object]:
    """``overrides`` unchanged, or a usage error naming the first value out of range."""
    import math

    for key, value in overrides.items():
        if key == "schedule":
            if value not in ("cosine", "constant"):
                raise CliError(
                    f"--set schedule: expected 'cosine' or 'constant'; found {value!r}", status=2
                )
            continue
        rule = _ALIGN_SET_RANGES.get(key)
        if rule is None or not isinstance(value, (int, float)):
            continue
        what, lo, closed = rule
        ok = math.isfinite(value) and (value >= lo if closed else value > lo)
        if not ok:
            raise CliError(f"--set {key}: expected {what}; found {value!r}", status=2)
    return overrides


def _align(args: argparse.Namespace) -> int:
    from speechattn.recipes._distributed import end_process_group
    from speechattn.recipes.align.pipeline import run_align
    from speechattn.recipes.align.report import metrics_table_text
    from speechattn.recipes.align.train import TrainConfig

    if args.out is None:
        raise CliError("the following arguments are required: --out", status=2)
    checkpoints = [Path(c) for c in args.checkpoint or []]
    for c in checkpoints:
        if not c.is_file():
            raise CliError(
                f"--checkpoint {c}: no such file; pass an aligner written by "
                "`speechattn align` (OUT/aligner.pt) or leave it out for the shipped one",
                status=2,
            )
    if args.no_adapt and args.steps is not None:
        raise CliError("--steps has no effect with --no-adapt (nothing is trained)", status=2)
    if args.adapt_members is not None and (args.no_adapt or args.from_scratch):
        raise CliError(
            "--adapt-members has no effect with "
            + ("--no-adapt (nothing is trained)" if args.no_adapt else "--from-scratch")
            + "; it picks which members of a loaded ensemble adapt",
            status=2,
        )
    if args.refine_fraction is not None and args.refine_boundaries is None:
        raise CliError(
            "--refine-fraction has no effect without --refine-boundaries MS (refinement is off)",
            status=2,
        )
    if args.collapse_check_at is not None and not args.from_scratch:
        raise CliError(
            "--collapse-check-at has no effect without --from-scratch (it stops a new "
            "aligner's training early; a loaded aligner is never trained again)",
            status=2,
        )
    if args.collapse_retries is not None and not args.from_scratch:
        raise CliError(
            "--collapse-retries has no effect without --from-scratch (it retrains a new "
            "aligner that looks collapsed; a loaded aligner is never trained again)",
            status=2,
        )
    from speechattn.recipes.align.pipeline import ADAPT_MAX_SECONDS, AdaptStop

    tfields = {
        f.name: getattr(TrainConfig(), f.name)
        # batching / prior_warmup: DemoConfig's options against a collapse (issue 19), not
        # settable here this round
        for f in dataclasses.fields(TrainConfig)
        if f.name not in ("steps", "seed", "batching", "prior_warmup")
    }
    tfields["max_seconds"] = ADAPT_MAX_SECONDS  # a float (None: no cap, not settable here)
    tfields.update({f.name: getattr(AdaptStop(), f.name) for f in dataclasses.fields(AdaptStop)})
    ok = False
    try:
        res = run_align(
            Path(args.data),
            Path(args.out),
            checkpoint=checkpoints or None,
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
            overwrite=args.overwrite,
            formats=tuple(dict.fromkeys([*args.format, *(["ctm"] if args.ctm else [])])),
            train_overrides=_checked_align_overrides(parse_overrides(args.set, tfields)),
            pauses=args.pauses,
            min_pause_s=args.min_pause_ms / 1000.0,
            max_pause_loudness=args.max_pause_loudness,
            reverse_pass=args.reverse_pass,
            silence_edge_db=args.silence_edge_db,
            endpoint=args.endpoint,
            refine_radius_s=None
            if args.refine_boundaries is None
            else args.refine_boundaries / 1000,
            refine_fraction=1.0 if args.refine_fraction is None else args.refine_fraction,
            dereverb=args.dereverb == "auto",
            log=print if os.environ.get("RANK", "0") == "0" else (lambda *a: None),  # torchrun
            **({} if args.adapt_members is None else {"adapt_members": args.adapt_members}),
            **(
                {} if args.collapse_retries is None else {"collapse_retries": args.collapse_retries}
            ),
            collapse_check_at=args.collapse_check_at,
        )
        ok = True
    finally:
        end_process_group(ok=ok)
    if res:
        print(metrics_table_text(res["table"]))
        skipped = res["summary"].get("skipped", 0)
        if skipped:
            print(f"skipped: {skipped} file(s) (see the warnings above)")
        print(f"report: {res['report']}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    """Options every alignment command shares (the project's CLI convention)."""
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_hidden_alias(p, "--quiet", "no_progress", action="store_true")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the outputs of an earlier, different run in --out first (without it such "
        "a folder is refused; the same run resumes)",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``demo``, ``align`` and ``combine-aligners``."""
    p = sub.add_parser(
        "demo",
        help="synthesize a corpus, train the SMA aligner and baselines, write OUT/report.html",
        description="The main job: unsupervised phoneme alignment with stepwise monotonic attention "
        "on a synthetic multi-voice corpus, scored against ground truth and against baselines "
        "(forward-sum + MAS, plain MHA, uniform). About 2 minutes on 2 CPU cores (longer on a "
        "busy machine); --quick is a one-minute smoke run.",
    )
    p.add_argument(
        "--out",
        type=out_dir,
        default="speechattn-demo",
        help="output directory (default: %(default)s)",
    )
    add_hidden_alias(p, "--out-dir", "out", type=out_dir)
    add_hidden_alias(p, "--output-dir", "out", type=out_dir)
    p.add_argument(
        "--quick", action="store_true", help="a tiny run (about a minute) for smoke tests"
    )
    p.add_argument(
        "--utterances", type=positive_int, default=None, help="corpus size (default: 600)"
    )
    p.add_argument(
        "--speakers",
        type=positive_int,
        default=None,
        help="number of synthetic voices (default: 8)",
    )
    p.add_argument(
        "--steps", type=positive_int, default=None, help="training steps per aligner (default: 400)"
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch threads and synthesis workers (default: 2)",
    )
    p.add_argument(
        "--kinds",
        type=_kinds,
        default=None,
        help="comma list of aligners from sma,fs,mha (default: sma,fs,mha)",
    )
    p.add_argument(
        "--engines",
        type=_engines,
        default=None,
        metavar="LIST",
        help="speech engines of the training corpus, a comma list (e.g. espeak,festival,piper; "
        "voices drawn round-robin, never an evaluation-only voice; `speechattn data voices` lists "
        "what is installed) (default: espeak)",
    )
    p.add_argument(
        "--commercial-only",
        action="store_true",
        help="only voices whose licence allows commercial use (no MBROLA, no non-commercial "
        "RHVoice voices): required for an aligner that is shipped",
    )
    p.add_argument(
        "--augment",
        action="store_true",
        help="add one copy of each training utterance through a random channel (8-48 kHz "
        "resampling, telephone band and mu-law, rooms, noise)",
    )
    p.add_argument(
        "--band-mask",
        action="store_true",
        help="front end: zero the mel bins above the audio's effective bandwidth (band-limited "
        "input such as 8 kHz telephone audio); saved with the aligner",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="override a demo setting (repeatable), e.g. --set dim=96 --set batch_size=8",
    )
    p.add_argument(
        "--minutes-per-aligner",
        type=positive_float,
        default=None,
        help="stop each aligner's training after this many minutes (default: no cap)",
    )
    p.add_argument(
        "--export", default=None, help="save the best aligner here (how the shipped one is built)"
    )
    p.add_argument(
        "--corpus-from",
        default=None,
        metavar="DIR",
        help="train on the corpus of an earlier demo run in DIR (DIR/corpus) instead of "
        "synthesizing it again; refused unless DIR's run.json shows the same corpus settings "
        "(utterances, speakers, seed, engines, commercial-only)",
    )
    p.add_argument(
        "--prior",
        choices=_PRIORS,
        default="none",
        help="log-prior added to the plain-MHA aligner's attention logits: none (the plain "
        "baseline), diagonal (linear penalty on |t/T - u/U|, Speech-Transformer) or beta-binomial "
        "(RAD-TTS); the other aligners are unchanged (default: %(default)s)",
    )
    p.add_argument(
        "--collapse-retries",
        type=nonnegative_int,
        default=1,
        metavar="N",
        help="when an SMA or forward-sum aligner looks collapsed (its median longest aligned "
        "phone on its training utterances above 300 ms), train it again up to N times with a "
        "restart seed (the training seed + 1000000 * K for restart K: initialisation and batch "
        "order only; the corpus and held-out split stay) and keep the attempt with the lowest "
        "value; 0 warns only; the MHA baseline is trained once (no collapse threshold was "
        "checked on it) (default: %(default)s)",
    )
    p.add_argument(
        "--collapse-check-at",
        type=positive_int,
        default=None,
        metavar="STEP",
        help='at step STEP of each SMA or forward-sum training attempt, decode up to 100 training utterances and, when their median longest aligned phone is above 450 ms, stop that attempt and start the next restart at once (it counts as one of --collapse-retries; when every attempt stopped early, the last is trained to the end with a warning); off by default (the 450 ms line is from 10 runs of one held-out engine, benchmarks/RESULTS.md "collapsefix"; e.g. 300)',
    )
    _common(p)
    p.set_defaults(func=_demo)

    a = sub.add_parser(
        "align",
        help="align a corpus (MFA-style folder of audio + .lab/.txt/.TextGrid, LibriSpeech, "
        "Kaldi data dir with or without segments, LJSpeech metadata.csv, manifest.jsonl): "
        "TextGrid + JSON",
        description="Align every utterance of a corpus. By default the shipped English aligner adapts "
        "to the corpus without labels (50 steps per member of its ensemble: about a minute for 40 "
        "utterances on one core), then writes OUT/alignments/*.TextGrid and "
        "*.json and OUT/report.html. Resumable: re-running continues an interrupted adaptation/training.",
    )
    a.add_argument(
        "data",
        help="corpus: a folder of audio + same-stem .lab/.txt (speaker subfolders allowed) or "
        ".TextGrid (long recordings: one tier per speaker, one interval per utterance; "
        "written back into one TextGrid per recording), a LibriSpeech folder (*.trans.txt), a "
        "Kaldi data dir (wav.scp + text, optional segments: one alignment per segment), a "
        "metadata.csv or a manifest.jsonl",
    )
    a.add_argument(
        "--out",
        type=out_dir,
        default=None,
        help="output directory, required (one run per folder: the same run resumes, another is "
        "refused unless --overwrite)",
    )
    add_hidden_alias(a, "--out-dir", "out", type=out_dir)
    add_hidden_alias(a, "--output-dir", "out", type=out_dir)
    a.add_argument(
        "--checkpoint",
        action="append",
        default=None,
        help="aligner to apply (default: the shipped one); give it several times for an ensemble "
        "(aligners with the same phone inventory and front end; each adapts in turn, 50 steps "
        "by default, their "
        "per-frame log-probabilities are averaged, OUT/aligner.pt holds them all)",
    )
    g = a.add_mutually_exclusive_group()
    g.add_argument("--no-adapt", action="store_true", help="apply the aligner as is")
    g.add_argument("--from-scratch", action="store_true", help="train a new aligner on this corpus")
    a.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="most adaptation steps (default: 600 for one aligner, which stops earlier when its "
        "objective stops improving, or after --set max_seconds=900; 50 for each member of an "
        "ensemble such as the shipped aligner, about one aligner's time for three), or "
        "training steps with --from-scratch (default: 600)",
    )
    a.add_argument(
        "--adapt-members",
        type=_adapt_members,
        default=None,
        metavar="all|N",
        help="which members of an ensemble aligner (the shipped one has 3) adapt: all (each "
        "in turn, the default) or N (the first N; the others are used as loaded, each one "
        "left out saves one member's adaptation time)",
    )
    a.add_argument(
        "--threads", type=positive_int, default=2, help="torch threads (default: %(default)s)"
    )
    a.add_argument(
        "--format",
        type=_formats,
        default=("textgrid", "json"),
        metavar="LIST",
        help="alignment files to write, a comma list of textgrid (tiers 'words' and 'phones', "
        "as the Montreal Forced Aligner names them), json, ctm (default: textgrid,json)",
    )
    a.add_argument(
        "--ctm", action="store_true", help="also write CTM files (same as adding ctm to --format)"
    )
    a.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="override a training setting (repeatable): lr, batch_size, warmup, weight_decay, "
        "grad_clip, checkpoint_every, max_seconds (time cap), schedule (cosine|constant); the "
        "adaptation stopping rule: patience, smoothing, min_delta, min_steps",
    )
    a.add_argument(
        "--pauses",
        choices=("auto", "none", "forced"),
        default="auto",
        help="pauses between words: auto (an optional pause between every two words: a pause in "
        "the audio becomes a pause interval, 'sp' in the TextGrid's phones tier, and none costs "
        "nothing), none (no "
        "pause tokens between words; only the edge silences are optional), forced (every token "
        "takes at least one frame, as in training) (default: %(default)s)",
    )
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
        "--collapse-retries",
        type=nonnegative_int,
        default=None,
        metavar="N",
        help="with --from-scratch: when the trained aligner looks collapsed (its median longest "
        "aligned phone on the corpus above 300 ms), train it again up to N times with a restart "
        "seed (--seed + 1000000 * K for restart K: initialisation and batch order only) and keep "
        "the attempt with the lowest value; 0 warns only, as does --kind mha (no collapse "
        "threshold was checked on it) and a run under torchrun (default: 1)",
    )
    a.add_argument(
        "--collapse-check-at",
        type=positive_int,
        default=None,
        metavar="STEP",
        help="with --from-scratch: "
        + 'at step STEP of each training attempt, decode up to 100 training utterances and, when their median longest aligned phone is above 450 ms, stop that attempt and start the next restart at once (it counts as one of --collapse-retries; when every attempt stopped early, the last is trained to the end with a warning); off by default (the 450 ms line is from 10 runs of one held-out engine, benchmarks/RESULTS.md "collapsefix"; e.g. 300)',
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
        default="auto",
        choices=("auto", "none", "consensus", "engines", "contexts"),
        help="boundary calibration, a table of time offsets fitted on the aligner's training "
        "voices' labels: consensus (one offset per boundary class that every training engine "
        "agrees with, e.g. a word after a pause starts earlier than the model places it), "
        "engines (per boundary class, the median over the training engines: for speech from an "
        "engine whose labels follow the other engines rather than espeak-ng), contexts (per phone "
        "context, pooled over the training utterances, mostly "
        "espeak-ng's convention, e.g. a stop starts at its burst), none; auto: consensus when "
        "the aligner has that table, else none; none with --reverse-pass (the tables were "
        "fitted with the forward decoding) (default: %(default)s)",
    )
    a.add_argument(
        "--min-pause-ms",
        type=nonnegative_int,
        default=50,
        help="with --pauses auto: a pause between words shorter than this is not a pause (the "
        "two words meet); 0 keeps every pause (default: %(default)s)",
    )
    a.add_argument(
        "--max-pause-loudness",
        type=loudness_or_off,
        default=0.3,  # pauses.DEFAULT_MAX_PAUSE_LOUDNESS (not imported: it pulls torch)
        metavar="X|off",
        help="with --pauses auto: a pause between words must have a frame at most this loud "
        "(0 = the utterance's quietest frames, its 5th percentile; 1 = its median frame); a louder one (a stop's "
        "closure, a weak onset) is split between its two words, which meet in its middle; "
        "'off' keeps every pause (default: %(default)s)",
    )
    a.add_argument(
        "--reverse-pass",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also decode each utterance reversed in time and put every boundary midway between "
        "the two paths (cancels the forward decoding's lag at boundaries between two sounds; "
        "twice the decoding time; chosen on engines held out of training, see "
        "benchmarks/RESULTS.md); --no-reverse-pass decodes forward only (default: on)",
    )
    a.add_argument(
        "--silence-edge-db",
        type=db_or_off,
        default=35.0,  # edges.DEFAULT_SILENCE_EDGE_DB (not imported: it pulls torch)
        metavar="DB|off",
        help="a word start after silence and a word end before silence (utterance edges, kept "
        "pauses) go to where the audio's 5 ms energy falls this many dB under the utterance's "
        "speech level (its 90th-percentile 5 ms level), within a few frames of the decoded edge; utterances without silence that "
        "far below the speech keep their edges; 'off' keeps the decoded edges (default: "
        "%(default)s)",
    )
    a.add_argument(
        "--endpoint",
        action=argparse.BooleanOptionalAction,
        default=True,  # edges.DEFAULT_ENDPOINT (not imported: it pulls torch)
        help="with --silence-edge-db: the first word starts no earlier than the audio's speech "
        "onset and the last word ends no later than its speech offset (where the 5 ms energy "
        "first rises to / last falls below that level), however far the decoded edge lies from "
        "them; utterances without silence that far below the speech keep their edges; chosen "
        "on engines held out of training, see benchmarks/RESULTS.md; --no-endpoint keeps the "
        "edges of the windowed placement (default: on)",
    )
    a.add_argument(
        "--refine-boundaries",
        type=radius_ms_or_off,
        default=None,
        metavar="MS|off",
        help="move each word boundary where two words meet, and each phone boundary inside a "
        "word, to the strongest clear peak of the audio's own spectral change (5 ms log-mel "
        "slopes) within this many ms (30-40 with --refine-fraction 0.75-1 did best on the "
        "synthetic engines tested); it helps "
        "where the reference puts boundaries on spectral changes, not elsewhere, so it is off "
        "by default, see benchmarks/RESULTS.md (default: off)",
    )
    a.add_argument(
        "--refine-fraction",
        type=refine_fraction,
        default=None,
        metavar="F",
        help="with --refine-boundaries, move each boundary only this share of the way to the "
        "peak, in (0, 1] (default: 1, all the way)",
    )
    a.add_argument(
        "--dereverb",
        choices=("auto", "off"),
        default="off",
        help="'auto' (for recordings known to be reverberant): estimate each recording's "
        "reverberation time from how fast its level falls where speech stops, and where it is "
        "at least 0.2 s remove the late reverberation from the aligner's features (reverberant "
        "boundaries otherwise come late); natural dry speech that fades slowly can read as a "
        "small room, so it is not the default; 'off' never removes it (default: %(default)s)",
    )
    _common(a)
    a.set_defaults(func=_align)
    _add_combine_parser(sub)


def _combine(args: argparse.Namespace) -> int:
    from speechattn.recipes.align.pipeline import combine_aligners

    for c in args.aligners:
        if not Path(c).is_file():
            raise CliError(
                f"{c}: no such file; pass aligners written by `speechattn demo --export` or "
                "`speechattn align` (OUT/aligner.pt)",
                status=2,
            )
    if args.corpus is not None and not Path(args.corpus).is_file():
        raise CliError(f"--corpus {args.corpus}: no such manifest", status=2)
    if len(args.aligners) == 1:  # one file is enough only when it already holds an ensemble
        from speechattn.recipes.align.model import AlignerEnsemble
        from speechattn.recipes.align.pipeline import load_aligner

        if not isinstance(load_aligner(Path(args.aligners[0]))[0], AlignerEnsemble):
            raise CliError(
                f"expected two or more aligners to combine; found one in {args.aligners[0]}",
                status=2,
            )
    out = Path(args.out)
    if out.is_dir():
        raise CliError(
            f"--out {args.out}: expected the ensemble file to write; found a folder "
            "(name a file, e.g. DIR/aligner.pt)",
            status=2,
        )
    if any(out.resolve() == Path(c).resolve() for c in args.aligners):
        raise CliError(
            f"--out {args.out}: expected a new file; found one of the aligners to combine "
            "(writing it would replace that aligner); pick another path",
            status=2,
        )
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise CliError(
            f"--out {args.out}: expected a file path; found it below the file {blocking}",
            status=2,
        )
    combine_aligners(
        [Path(c) for c in args.aligners],
        Path(args.out),
        corpus=Path(args.corpus) if args.corpus else None,
        combine=args.combine,
        half=args.fp16,
        progress=not args.no_progress,
    )
    return 0


def _add_combine_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``combine-aligners`` (one ensemble file from several aligners)."""
    c = sub.add_parser(
        "combine-aligners",
        help="save several aligners as one ensemble file (how the shipped aligner is built)",
        description="Combine aligners trained with one recipe on one corpus (the same phone "
        "inventory and front end, e.g. `speechattn demo --export` runs with --set train_seed=N) "
        "into one file that `speechattn align --checkpoint` applies as an ensemble: their "
        "per-frame evidence pooled, then one decoding; decoding costs one aligner's times the "
        "number of members, adaptation 50 steps per member.",
    )
    c.add_argument("aligners", nargs="+", help="aligner files, two or more")
    c.add_argument("--out", required=True, help="the ensemble file to write")
    c.add_argument(
        "--corpus",
        default=None,
        help="manifest of the demo corpus the first aligner was trained on (its run's "
        "OUT/corpus/manifest.jsonl): the boundary calibration tables are fitted again with the "
        "ensemble's decoding on that run's training utterances, and each member is checked "
        "for a collapse on 100 of them (a warning names the file of a member whose median "
        "longest aligned phone is above 300 ms); without it the file has no "
        "tables (a member's tables fit that member's boundaries only)",
    )
    c.add_argument(
        "--combine",
        choices=("log", "prob", "median"),
        default="log",
        help="how the members' evidence is pooled (default: %(default)s)",
    )
    c.add_argument(
        "--fp16",
        action="store_true",
        help="store the weights as float16: half the file, loaded back as float32 (the shipped "
        "aligner is stored so; word boundaries within 0.13 ms of float32's on its check set)",
    )
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    c.set_defaults(func=_combine)
