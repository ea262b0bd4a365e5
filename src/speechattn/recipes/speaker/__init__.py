"""Speaker recipe: speaker encoders per pooling layer, trained on synthetic voices or a corpus.

Modules: :mod:`~speechattn.recipes.speaker.config` (:class:`SpeakerConfig`),
:mod:`~speechattn.recipes.speaker.model` (TDNN / ECAPA-TDNN trunks, AAM softmax, checkpoints),
:mod:`~speechattn.recipes.speaker.data` (corpora, features, pseudo-speakers, trial lists),
:mod:`~speechattn.recipes.speaker.train` (resumable, multi-process training; the recipe),
:mod:`~speechattn.recipes.speaker.evaluate` (EER, minDCF, trials, report, embedding a folder),
:mod:`~speechattn.recipes.speaker.cli` (``speechattn speaker``).

The names below are re-exported lazily (importing the package stays light).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from speechattn.recipes.speaker.cli import add_parser
from speechattn.recipes.speaker.config import POOLINGS, SpeakerConfig

if TYPE_CHECKING:
    from speechattn.recipes.speaker.evaluate import (
        compute_eer,
        compute_min_dcf,
        embed_directory,
        score_trials,
    )
    from speechattn.recipes.speaker.model import (
        SpeakerEncoder,
        SpeakerEnsemble,
        load_checkpoint,
        save_encoder,
    )
    from speechattn.recipes.speaker.train import run_speaker, train_encoder

__all__ = [
    "POOLINGS",
    "SpeakerConfig",
    "SpeakerEncoder",
    "SpeakerEnsemble",
    "add_parser",
    "compute_eer",
    "compute_min_dcf",
    "embed_directory",
    "load_checkpoint",
    "run_speaker",
    "save_encoder",
    "score_trials",
    "train_encoder",
]

_LAZY = {
    "SpeakerEncoder": "model",
    "SpeakerEnsemble": "model",
    "load_checkpoint": "model",
    "save_encoder": "model",
    "compute_eer": "evaluate",
    "compute_min_dcf": "evaluate",
    "embed_directory": "evaluate",
    "score_trials": "evaluate",
    "run_speaker": "train",
    "train_encoder": "train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
