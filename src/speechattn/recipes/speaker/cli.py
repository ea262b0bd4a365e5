"""``speechattn speaker``: train speaker encoders (synthetic voices or a real corpus), score trial
lists, embed audio.

Commands::

    speechattn speaker [synth] [--quick] [--poolings ASTP ...] [--out DIR]   # espeak voices
    speechattn speaker train DATA [--trials LIST] [--out DIR]               # a real corpus
    speechattn speaker score LIST [--root DIR] [--checkpoint CKPT]          # EER / minDCF
        [--score-norm snorm|asnorm] [--cohort list|FILE.npz] [--top-k K] [--vad auto|on|off]
    speechattn speaker embed AUDIO_DIR --out FILE.npz [--checkpoint CKPT] [--centre] [--vad ...]

``DATA`` is a VoxCeleb-layout folder (``id*/video/*.wav``), a Kaldi data dir (``wav.scp``,
``utt2spk``) or a manifest (``.jsonl`` with ``audio`` and ``speaker``, optionally ``person``:
two voices of one person are one speaker). ``LIST`` is a VoxCeleb trial list (``1 a.wav b.wav``).
Every setting of the recipe can be changed with ``--set KEY=VALUE`` (``--set trunk=ecapa
channels=128 speed_perturb=0.9,1.1``). Runs resume from ``OUT/checkpoints`` when started again
with the same settings; ``--overwrite`` starts afresh. Multi-process: ``torchrun --nproc_per_node
N -m speechattn speaker train DATA ...`` (gloo on CPU, NCCL on GPU; bfloat16 autocast on GPU).
"""

from __future__ import annotations

import argparse
import math
import os
import warnings
from pathlib import Path
from typing import Any

from speechattn._cli import (
    CliError,
    add_hidden_alias,
    nonnegative_int,
    out_dir,
    parse_overrides,
    positive_int,
)
from speechattn._io import write_text_atomic
from speechattn.recipes.speaker.config import POOLINGS, TRUNKS, SpeakerConfig
from speechattn.recipes.speaker.evaluate import DEFAULT_TOP_K, SCORE_NORMS, VAD_MODES

__all__ = ["add_parser", "config_from_args", "row_line"]

_INT_FLAGS = (
    "steps",
    "train_speakers",
    "test_speakers",
    "utterances_per_speaker",
    "channels",
    "batch_size",
    "seed",
    "augment_copies",
)


def _top_k(text: str) -> int:
    """argparse type of ``--top-k``: an int >= 2 (a spread needs two scores)."""
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2; found {text!r}") from None
    if k < 2:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 2 (a spread needs two scores); found {k}"
        )
    return k


def _warn(path: str, reason: str) -> None:
    """One warning per skipped file (the top-level handler prints it as one line, prefixed with
    the full command, e.g. ``speechattn speaker train: warning: skipping <file>: <why>``)."""
    warnings.warn(f"skipping {path}: {reason}", stacklevel=2)


def config_from_args(args: argparse.Namespace) -> SpeakerConfig:
    """The run's :class:`SpeakerConfig`: quick or default sizes, then flags, then ``--set``.

    Raises:
        CliError: (status 2) an unknown ``--set`` key or an invalid value.
    """
    cfg = SpeakerConfig.quick() if getattr(args, "quick", False) else SpeakerConfig()
    for key in _INT_FLAGS:
        val = getattr(args, key, None)
        if val is not None:
            setattr(cfg, key, val)
    if getattr(args, "poolings", None):
        cfg.poolings = list(args.poolings)
    if getattr(args, "trunk", None):
        cfg.trunk = args.trunk
    for key, val in parse_overrides(getattr(args, "set", None), cfg.to_dict()).items():
        setattr(cfg, key, val)
    try:
        return cfg.validated()
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc), status=2) from None


def _run(args: argparse.Namespace, data: str | None) -> int:
    from speechattn.recipes._distributed import end_process_group, start_process_group
    from speechattn.recipes.speaker.train import ResumeMismatch, run_speaker

    cfg = config_from_args(args)
    if data is not None and getattr(args, "utterances_per_speaker", None) is not None:
        warnings.warn(
            "--utterances-per-speaker is for synthetic voices; a corpus run uses every "
            f"utterance of {data}: ignored",
            stacklevel=2,
        )
    if data is not None and getattr(args, "train_speakers", None) is not None:
        warnings.warn(
            "--train-speakers is for synthetic voices"
            + _TRAIN_SPEAKERS_WITH_CORPUS.replace("; with", ": with", 1),
            stacklevel=2,
        )
    start_process_group()  # under torchrun: nccl with CUDA, else gloo
    out = Path(args.out)
    ok = False
    try:
        res = run_speaker(
            cfg,
            out,
            corpus=data,
            trials=getattr(args, "trials", None),
            trials_root=getattr(args, "trials_root", None),
            save_checkpoint=args.save_checkpoint,
            progress=not args.no_progress,
            overwrite=args.overwrite,
            on_skip=_warn,
        )
        ok = True
    except ResumeMismatch as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:  # the top-level handler prints it with the resume command
        raise KeyboardInterrupt(f"checkpoints are in {out / 'checkpoints'}") from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    finally:
        end_process_group(ok=ok)  # a barrier first: no rank tears down while rank 0 writes
    if os.environ.get("RANK", "0") == "0":  # (the process group is gone by now)
        for r in res["rows"]:
            print(row_line(r))
        if res["dropped_voices"]:
            print(f"commercial_only: left out {', '.join(res['dropped_voices'])}")
        if res["skipped_files"]:
            print(f"skipped {len(res['skipped_files'])} unusable audio files")
        print(f"report: {out / 'report.html'}")
    return 0


def row_line(row: dict[str, Any]) -> str:
    """One pooling's line of a training run's summary: its EER and minDCF, or, when the run
    held out no speakers (``test_speakers=0`` without trials), that it was not scored."""
    if not math.isfinite(float(row["eer"])):
        return f"{row['pooling']:<30} not scored (no held-out speakers: test_speakers=0)"
    return f"{row['pooling']:<30} EER {100 * row['eer']:6.2f}%  minDCF {row['min_dcf']:.3f}"


def _cmd_synth(args: argparse.Namespace) -> int:
    return _run(args, getattr(args, "corpus", None))


def _cmd_train(args: argparse.Namespace) -> int:
    return _run(args, args.data)


def _cmd_score(args: argparse.Namespace) -> int:
    import json

    from speechattn.recipes.speaker.data import read_trials
    from speechattn.recipes.speaker.evaluate import load_cohort, score_trials
    from speechattn.recipes.speaker.model import load_checkpoint

    if args.score_norm == "none" and (args.cohort != "list" or args.top_k is not None):
        flag = "--top-k" if args.top_k is not None else "--cohort"
        raise CliError(
            f"{flag} applies to score normalisation; add --score-norm snorm or asnorm", status=2
        )
    if args.score_norm == "snorm" and args.top_k is not None:
        raise CliError("--top-k is for --score-norm asnorm (snorm uses the whole cohort)", status=2)
    if args.out and Path(args.out).is_dir():  # else refused only after every trial is scored
        raise CliError(f"--out {args.out}: expected a file path to write; found a folder", status=2)
    try:
        model, cfg = load_checkpoint(args.checkpoint)
    except (ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None
    cohort = None
    if args.cohort != "list":  # checked whole, against this encoder's embedding size
        try:
            cohort = load_cohort(args.cohort, embed_dim=model.embed_dim)
        except (ValueError, FileNotFoundError) as exc:
            raise CliError(f"--cohort: {exc}") from None
    try:
        root = args.root if args.root is not None else Path(args.trials).parent
        malformed: list[str] = []
        trials = read_trials(args.trials, root, problems=malformed)
        res = score_trials(
            model,
            cfg,
            trials,
            on_skip=_warn,
            centre=not args.no_centre,
            score_norm=args.score_norm,
            cohort=cohort,
            top_k=args.top_k,
            vad=args.vad,
        )
    except (ValueError, FileNotFoundError) as exc:
        msg = str(exc)
        if cohort is not None and "cohort" in msg:
            msg = f"--cohort {args.cohort}: {msg}"
        raise CliError(msg) from None
    res["malformed_lines"] = len(malformed)
    res["skipped_trials"] += len(malformed)  # a malformed line is a trial left out too
    how = "centred on the list's mean" if res["centred"] else "not centred"
    if res["score_norm"] != "none":
        k = f" top-{res['top_k']}" if res["top_k"] else ""
        src = "the list's files" if res["cohort"] == "list" else f"{res['cohort_size']} cohort rows"
        how += f", {res['score_norm']}{k} against {src}"
    if res["vad"]:
        how += ", energy VAD"
    base = "" if res["baseline_score_norm"] == "none" else f"  ({res['baseline_score_norm']})"
    print(
        f"encoder             EER {100 * res['eer']:6.2f}%  minDCF {res['min_dcf']:.3f}  ({how})\n"
        f"log-mel statistics  EER {100 * res['baseline_eer']:6.2f}%  "
        f"minDCF {res['baseline_min_dcf']:.3f}{base}\n"
        f"{res['num_trials']} trials ({res['num_targets']} target), "
        f"{res['skipped_trials']} left out ({len(malformed)} malformed "
        f"line{'' if len(malformed) == 1 else 's'}, "
        f"{res['skipped_trials'] - len(malformed)} for unusable audio)"
    )
    if args.out:
        write_text_atomic(args.out, json.dumps(res, indent=2))
        print(f"wrote {args.out}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from speechattn.recipes.speaker.evaluate import embed_directory, npz_path

    try:
        res = embed_directory(
            args.audio_dir,
            args.out,
            checkpoint=args.checkpoint,
            on_skip=_warn,
            progress=not args.no_progress,
            centre=args.centre,
            vad=args.vad,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None
    note = "" if str(npz_path(args.out)) == str(args.out) else f" (--out {args.out}: .npz added)"
    skipped = f"; skipped {len(res.skipped)} unusable files" if res.skipped else ""
    print(f"wrote {len(res.keys)} embeddings to {res.path}{note}{skipped}")
    return 0


def _add_run_options(p: argparse.ArgumentParser, *, corpus: bool = False) -> None:
    """The training run's options; ``corpus``: the help of ``speaker train`` (a corpus run)."""
    d = SpeakerConfig()  # the defaults the help texts quote (--quick: smaller sizes)
    p.add_argument(
        "--out",
        type=out_dir,
        default="speaker_run",
        help="output folder (corpus, checkpoints, report.html; default: %(default)s)",
    )
    add_hidden_alias(p, "--out-dir", "out", type=out_dir)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of seconds")
    p.add_argument(
        "--poolings",
        nargs="+",
        choices=POOLINGS,
        default=None,
        metavar="NAME",
        help=f"poolings to train, from {' '.join(POOLINGS)} (default: all)",
    )
    p.add_argument("--trunk", choices=TRUNKS, default=None, help="frame-level encoder")
    p.add_argument(
        "--steps", type=positive_int, default=None, help=f"training steps (default {d.steps})"
    )
    p.add_argument(
        "--test-speakers",
        dest="test_speakers",
        type=positive_int,
        default=None,
        help=f"held-out voices or corpus speakers the encoder is scored on (default {d.test_speakers})",
    )
    p.add_argument(
        "--channels", type=positive_int, default=None, help=f"trunk width (default {d.channels})"
    )
    p.add_argument(
        "--batch-size",
        dest="batch_size",
        type=positive_int,
        default=None,
        help=f"training crops per step (default {d.batch_size})",
    )
    p.add_argument(
        "--seed", type=nonnegative_int, default=None, help=f"random seed (default {d.seed})"
    )
    p.add_argument(
        "--augment-copies",
        dest="augment_copies",
        type=nonnegative_int,
        default=None,
        help="channel-augmented copies of each training utterance (telephone, noise, room, EQ); "
        "default 6, 0 turns augmentation off",
    )
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=None,
        metavar="KEY=VALUE",
        help="override any setting (trunk=ecapa channels=128 speed_perturb=0.9,1.1 ...)",
    )
    p.add_argument("--save-checkpoint", default=None, help="save the best encoder here")
    p.add_argument(
        "--overwrite", action="store_true", help="discard checkpoints of another run in --out"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    title = "synthetic voices (a corpus run does not synthesise: see each option)"
    g = p.add_argument_group(title if corpus else "synthetic voices")
    g.add_argument(
        "--train-speakers",
        dest="train_speakers",
        type=positive_int,
        default=None,
        help=f"synthetic training voices (default {d.train_speakers})"
        + (_TRAIN_SPEAKERS_WITH_CORPUS if corpus else ""),
    )
    g.add_argument(
        "--utterances-per-speaker",
        dest="utterances_per_speaker",
        type=positive_int,
        default=None,
        help=f"utterances synthesised per voice (default {d.utterances_per_speaker})"
        + ("; not used with a corpus (every utterance of DATA is used)" if corpus else ""),
    )


# What --train-speakers does in a corpus run (run_speaker's held-out split), for its help and the
# warning when it is passed with a corpus.
_TRAIN_SPEAKERS_WITH_CORPUS = (
    "; with a corpus every speaker but the held-out ones trains, and this only sets (with "
    "--test-speakers) the corpus size below which at most a third of its speakers is held out"
)


def add_parser(sub: Any) -> None:
    """Register ``speechattn speaker`` and its ``synth``/``train``/``score``/``embed`` commands."""
    p = sub.add_parser(
        "speaker",
        help="speaker encoders per pooling: train (synthetic voices or a corpus), score, embed",
        description=(__doc__ or "").replace("``", "").replace("::", ":"),  # plain text
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(p)
    p.add_argument("--corpus", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_synth, resumable=True)
    ssub = p.add_subparsers(dest="speaker_command", metavar="{synth,train,score,embed}")

    s = ssub.add_parser("synth", help="train on synthesised espeak voices (the default)")
    _add_run_options(s)
    s.set_defaults(func=_cmd_synth, resumable=True)

    t = ssub.add_parser(
        "train", help="train on a corpus (VoxCeleb layout, Kaldi data dir or manifest)"
    )
    t.add_argument("data", help="VoxCeleb-layout folder, Kaldi data dir or manifest .jsonl")
    t.add_argument("--trials", default=None, help="VoxCeleb trial list to score (1 a.wav b.wav)")
    t.add_argument(
        "--trials-root", default=None, help="folder the trial paths are relative to (default: DATA)"
    )
    _add_run_options(t, corpus=True)
    t.set_defaults(func=_cmd_train, resumable=True)

    sc = ssub.add_parser("score", help="EER and minDCF of an encoder on a trial list")
    sc.add_argument("trials", help="VoxCeleb trial list (<1|0> <a.wav> <b.wav> per line)")
    sc.add_argument(
        "--root", default=None, help="folder the paths are relative to (default: the list's folder)"
    )
    sc.add_argument("--checkpoint", default=None, help="speaker checkpoint (default: shipped)")
    sc.add_argument("--out", default=None, help="also write the figures to this .json")
    sc.add_argument(
        "--no-centre",
        action="store_true",
        help="score raw cosines (default: embeddings centred on the mean of the list's files)",
    )
    sc.add_argument(
        "--score-norm",
        choices=SCORE_NORMS,
        default="none",
        help="score normalisation: snorm (S-norm) or asnorm (adaptive S-norm, top-k cohort) "
        "against --cohort (default: %(default)s, centred cosine)",
    )
    sc.add_argument(
        "--cohort",
        default="list",
        metavar="list|FILE.npz",
        help="cohort of --score-norm: 'list' (default), the list's own files minus the two of "
        "each trial, or a .npz of other speakers' embeddings written by 'speaker embed' "
        "(same checkpoint, without --centre)",
    )
    sc.add_argument(
        "--top-k",
        type=_top_k,
        default=None,
        metavar="K",
        help=f"cohort scores per side for --score-norm asnorm (default {DEFAULT_TOP_K})",
    )
    sc.add_argument(
        "--vad",
        choices=VAD_MODES,
        default="auto",
        help="drop each file's non-speech frames (energy VAD) before the encoder: on, off, or "
        "auto, what the checkpoint was trained with (default: %(default)s)",
    )
    sc.set_defaults(func=_cmd_score)

    e = ssub.add_parser(
        "embed", help="embed every audio file under a folder into one .npz (keys + matrix)"
    )
    e.add_argument("audio_dir", help="folder searched recursively for audio files")
    e.add_argument("--out", required=True, help="output .npz (.npz is appended if missing)")
    e.add_argument(
        "--checkpoint", default=None, help="speaker checkpoint (default: the shipped one)"
    )
    e.add_argument(
        "--centre",
        action="store_true",
        help="centre the embeddings on the folder's mean (as score does; stored as 'mean'); "
        "only for folders of several speakers",
    )
    e.add_argument(
        "--vad",
        choices=VAD_MODES,
        default="auto",
        help="drop each file's non-speech frames (energy VAD) before the encoder: on, off, or "
        "auto, what the checkpoint was trained with (default: %(default)s)",
    )
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=_cmd_embed)
