"""Speaker recipe (the light CLI front; the implementation lives in ``_speaker``): train a small speaker encoder once per pooling, score held-out voices.

``speechattn speaker`` synthesises a multi-voice corpus (:func:`speechattn.data.synth.synth_corpus`),
trains a thin TDNN on log-mels with an additive-angular-margin (AAM) softmax once per pooling
layer (variable-length crops, padded batches with lengths), embeds the utterances of held-out
voices, scores every pair with cosine similarity and reports EER and minDCF per pooling in an
HTML report with a DET curve. ``--quick`` is a seconds-long smoke run (used by the tests).

``speechattn speaker embed AUDIO_DIR --out FILE.npz [--checkpoint CKPT]`` writes one L2-normalised
embedding per audio file (keyed by file stem); without ``--checkpoint`` it uses the small
checkpoint shipped in ``speechattn/assets/speaker_default.pt``, rebuilt with::

    OMP_NUM_THREADS=1 speechattn speaker --poolings ASTP --out-dir runs/speaker \
        --save-checkpoint src/speechattn/assets/speaker_default.pt

(the default sizes: 480 training + 40 held-out espeak voices, 12 utterances each, 2000 steps;
ASTP is the pooling with the lowest held-out EER in the full table of benchmarks/RESULTS.md;
with several poolings the checkpoint is the one with the lowest EER; weights stored in float16).

Multi-process training: ``torchrun --nproc_per_node 2 -m speechattn speaker ...`` (gloo backend,
DistributedDataParallel; rank 0 synthesises the corpus, evaluates and writes the report).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from speechattn.recipes._speaker import (
        SpeakerConfig,
        SpeakerEncoder,
        compute_eer,
        compute_min_dcf,
        embed_directory,
        load_checkpoint,
        run_speaker,
        save_encoder,
    )

__all__ = [
    "POOLINGS",
    "SpeakerConfig",
    "SpeakerEncoder",
    "add_parser",
    "compute_eer",
    "compute_min_dcf",
    "embed_directory",
    "load_checkpoint",
    "run_speaker",
    "save_encoder",
]

POOLINGS: tuple[str, ...] = ("TAP", "TSDP", "TSTP", "ASTP", "MHASTP", "MQMHASTP", "ASP")


def __getattr__(name: str) -> Any:
    """Lazy access to the torch-heavy implementation (keeps ``speechattn --help`` fast)."""
    if name in __all__ and name not in ("POOLINGS", "add_parser"):
        from speechattn.recipes import _speaker

        return getattr(_speaker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _cmd_train(args: argparse.Namespace) -> int:
    from speechattn.recipes._speaker import _cmd_train as run

    return run(args)


def _cmd_embed(args: argparse.Namespace) -> int:
    from speechattn.recipes._speaker import _cmd_embed as run

    return run(args)


def add_parser(sub: Any) -> None:
    """Register ``speechattn speaker`` (train/evaluate; ``embed`` sub-command)."""
    p = sub.add_parser(
        "speaker",
        help="train speaker encoders per pooling on synthetic voices; EER/minDCF report; embed audio",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out-dir", default="speaker_run", help="where the corpus, report.html and results.json go"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of seconds")
    p.add_argument("--poolings", nargs="+", default=None, help=f"subset of {' '.join(POOLINGS)}")
    p.add_argument(
        "--corpus",
        default=None,
        help="use this corpus (manifest.jsonl, folder...) instead of synthesising",
    )
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--train-speakers", dest="train_speakers", type=int, default=None)
    p.add_argument("--test-speakers", dest="test_speakers", type=int, default=None)
    p.add_argument(
        "--utterances-per-speaker", dest="utterances_per_speaker", type=int, default=None
    )
    p.add_argument("--channels", type=int, default=None)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--augment-copies",
        dest="augment_copies",
        type=int,
        default=None,
        help="channel-augmented copies of each training utterance (telephone, noise, room, EQ); "
        "default 2, 0 turns augmentation off",
    )
    p.add_argument("--save-checkpoint", default=None, help="save the best encoder here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)
    ssub = p.add_subparsers(dest="speaker_command", metavar="{embed}")
    e = ssub.add_parser(
        "embed", help="embed every audio file in a directory into an .npz (keys: file stems)"
    )
    e.add_argument("audio_dir")
    e.add_argument("--out", required=True, help="output .npz")
    e.add_argument(
        "--checkpoint", default=None, help="speaker checkpoint (default: the shipped one)"
    )
    e.set_defaults(func=_cmd_embed)
