"""The alignment jobs: the demo comparison (SMA vs baselines on a synthetic corpus) and corpus alignment."""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from speechattn._config import check_fields
from speechattn._io import write_text_atomic
from speechattn.functional.alignment import EMISSIONS
from speechattn.recipes._distributed import end_process_group
from speechattn.recipes.align.calibrate import (
    BoundaryOffsets,
    fit_boundary_offsets,
    fit_class_offsets,
)
from speechattn.recipes.align.data import (
    DEREVERB_MIN_RT60_S,
    SYMBOL_ORDERS,
    AlignItem,
    FeatureConfig,
    augmented_items,
    build_items,
    demo_engine_options,
    new_symbol_table,
    order_symbols,
)
from speechattn.recipes.align.edges import (
    DEFAULT_ENDPOINT,
    DEFAULT_REFINE_FRACTION,
    DEFAULT_SILENCE_EDGE_DB,
    EnergyEnvelope,
    check_refine_fraction,
    check_refine_radius_s,
    check_silence_edge_db,
    energy_envelope,
    item_transitions,
)
from speechattn.recipes.align.evaluate import (
    AlignmentResult,
    Metrics,
    align_items,
    calibrate_results,
    left_out_notes,
    score,
    warn_left_out_once,
    write_alignment,
    write_recording_alignment,
)
from speechattn.recipes.align.health import (
    COLLAPSE_LONGEST_PHONE_MS,
    COLLAPSE_WHY,
    DEFAULT_COLLAPSE_RETRIES,
    CollapseAttempt,
    StoppedEarly,
    check_collapse_check_at,
    check_collapse_retries,
    early_check_hooks,
    early_check_sample,
    longest_phone_median_ms,
    stopped_early,
    train_with_restarts,
)
from speechattn.recipes.align.model import (
    KINDS,
    MHA_PRIORS,
    AlignerConfig,
    AlignerEnsemble,
    TextMelAligner,
)
from speechattn.recipes.align.outputs import (
    alignment_names,
    check_output,
    corpus_fingerprint,
    file_digest,
    prepare_output,
    remove_stale_alignments,
)
from speechattn.recipes.align.pauses import (
    DEFAULT_MAX_PAUSE_LOUDNESS,
    DEFAULT_MIN_PAUSE_S,
    min_pause_frames,
)
from speechattn.recipes.align.train import (
    BATCHINGS,
    TrainConfig,
    TrainResult,
    dist_info,
    load_checkpoint,
    save_checkpoint,
    train_aligner,
)

__all__ = [
    "CALIBRATIONS",
    "COLLAPSE_RESTARTS_FIELD",
    "COMBINE_CHECK_UTTERANCES",
    "DEFAULT_ASSET",
    "ENSEMBLE_ADAPT_STEPS",
    "LONGEST_PHONE_FIELD",
    "AdaptStop",
    "DemoConfig",
    "check_adapt_members",
    "combine_aligners",
    "corpus_voice",
    "demo_features",
    "held_out_speakers",
    "item_envelopes",
    "load_aligner",
    "load_aligners",
    "phonemizer_voice",
    "run_align",
    "run_demo",
    "save_aligner",
    "speaker_engine",
]

DEFAULT_ASSET = Path(__file__).resolve().parents[2] / "assets" / "aligner_en.pt"
ALIGNER_NAMES = {
    "sma": "SMA aligner (HMM, SMA transitions)",
    "fs": "forward-sum + MAS (RAD-TTS)",
    "mha": "plain MHA + MAS",
}
CALIBRATED = " + boundary calibration (training-voice labels)"
# The summary (metrics.json, summary.json, report) field of the collapse sign of each aligner
# trained in the run (speechattn.recipes.align.health); absent from older files and from runs
# that train nothing.
LONGEST_PHONE_FIELD = "longest aligned phone, median over training utterances"
# The summary field listing the attempts of an aligner trained again because it looked
# collapsed (health.train_with_restarts); only in runs that made a restart.
COLLAPSE_RESTARTS_FIELD = "collapse restarts"
# combine_aligners checks each member on its decoding of at most this many of the first
# aligner's training utterances (the collapse probe's count).
COMBINE_CHECK_UTTERANCES = 100


class _DemoAttempt(NamedTuple):
    """One training attempt of a demo aligner: the trainer's result and its decodings of the
    training utterances (boundary calibration's, the exported class tables')."""

    res: TrainResult
    train_dec: list[AlignmentResult] | None
    dec: list[AlignmentResult] | None


def _attempts_text(tries: Sequence[CollapseAttempt], kept: int) -> str:
    """The summary text of an aligner's attempts: seed and sign of each, the kept one marked."""
    return ", ".join(
        f"seed {t.seed} "
        + (
            f"stopped early at step {t.stopped_at} ({t.longest_phone_ms:.0f} ms)"
            if t.stopped_at is not None
            else f"{t.longest_phone_ms:.0f} ms"
        )
        + (" (kept)" if t.attempt == kept else "")
        for t in tries
    )


def _attempts_record(tries: Sequence[CollapseAttempt], kept: int) -> list[dict[str, Any]]:
    """The aligner file's record of the attempts (``collapse_restarts``; older files lack it)."""
    return [
        {"seed": t.seed, "longest_phone_ms": t.longest_phone_ms, "kept": t.attempt == kept}
        | ({} if t.stopped_at is None else {"stopped_early_at_step": t.stopped_at})
        for t in tries
    ]


# ``calibration`` of run_align: which table of the aligner's file applies. "auto" (the default):
# the consensus table when the aligner has one, else none (benchmarks/RESULTS.md, "Late
# boundaries on unseen engines"); none with a reverse pass (the tables fit the forward decoding).
CALIBRATIONS = ("auto", "none", "consensus", "engines", "contexts")
_CALIBRATION_KEYS = {
    "consensus": "consensus_offsets",
    "engines": "engine_offsets",
    "contexts": "boundary_offsets",
}
# Unsupervised adaptation defaults, chosen on held-out synthetic engines (festival, piper; clean
# and telephone) in benchmarks/RESULTS.md, "Aligner pauses and adaptation".
ADAPT_LR = 1e-3
ADAPT_MAX_STEPS = 600
# Each member of an ensemble (e.g. the shipped aligner) adapts this many steps by default: a third
# of the ~150 one member's stop rule takes (the rule's min_steps is 50, so this is a fixed
# budget). Three members then cost about one aligner's adaptation at the same accuracy on
# engines held out of training (benchmarks/RESULTS.md, "A cheaper adapted ensemble").
ENSEMBLE_ADAPT_STEPS = 50
ADAPT_MAX_SECONDS = 900.0


@dataclass
class AdaptStop:
    """When unsupervised adaptation stops: the smoothed objective stopped improving.

    The training loss of each step (the aligner's own objective on a random batch, no labels) is
    smoothed by an exponential moving average over ``smoothing`` steps; a step improves when its
    smoothed loss is lower than the best so far by more than ``min_delta`` of that best.
    Adaptation stops once ``patience`` steps pass without an improvement, never before
    ``min_steps``. The rule reads only the loss history, so a resumed run stops where an
    uninterrupted one would. Relative by design: it holds for any corpus size, learning rate or
    starting aligner (see benchmarks/RESULTS.md, "Aligner pauses and adaptation").
    """

    smoothing: int = 20
    patience: int = 60
    min_delta: float = 0.005
    min_steps: int = 50

    def best_step(self, history: Sequence[dict]) -> tuple[int, int]:
        """(step of the best smoothed loss, steps seen)."""
        alpha = 2.0 / (self.smoothing + 1)
        ema = None
        best = float("inf")
        best_step = 0
        for i, rec in enumerate(history, start=1):
            x = float(rec["loss"])
            ema = x if ema is None else ema + alpha * (x - ema)
            if ema < best - self.min_delta * abs(best) or best == float("inf"):
                best, best_step = ema, i
        return best_step, len(history)

    def __call__(self, history: Sequence[dict]) -> bool:
        if len(history) < self.min_steps:
            return False
        best, seen = self.best_step(history)
        return seen - best >= self.patience


@dataclass
class DemoConfig:
    """Size of the demo run. ``quick()`` is the test-suite size."""

    utterances: int = 600
    speakers: int = 8
    # Voices kept out of training, from engines with several voices (see held_out_speakers).
    held_out_voices: int = 2
    held_out_utterances: int = 60
    steps: int = 400
    batch_size: int = 16
    dim: int = 128
    lr: float = 2e-3
    seed: int = 0
    kinds: tuple[str, ...] = ("sma", "fs", "mha")
    eval_every: int = 100
    threads: int = 2
    max_seconds_per_aligner: float | None = None
    mha_prior: str = "none"
    # Corpus and front end (see speechattn.recipes.align.data: demo_engine_options, FeatureConfig,
    # TrainingChannel).
    engines: tuple[str, ...] = ("espeak",)
    commercial_only: bool = False
    augment: bool = False
    mel_norm: str = "bin"
    band_mask: bool = False
    # Analysis window (= FFT size) and hop in samples at 22.05 kHz, saved with the aligner; and
    # the mel encoder's convolution width in frames (see FeatureConfig, AlignerConfig).
    n_fft: int = 1024
    hop_length: int = 256
    mel_kernel_size: int = 5
    # Weight of the forward-sum term in the SMA aligner's loss (AlignerConfig.fs_weight): that
    # term is a sum over frames per token, so at half the hop 0.5 keeps its balance with the
    # per-frame HMM term.
    fs_weight: float = 1.0
    # Seed of the held-out split, the channel copies and training (None: ``seed``, which also
    # draws the corpus): another training run on the same corpus.
    train_seed: int | None = None
    # Training of each aligner (TrainConfig): the lr warm-up in steps, and how batches are drawn
    # ("length": neighbours in length order; "balanced": an equal share from each engine of the
    # training corpus, see speechattn.recipes.align.train.BATCHINGS). Issue 19: options to try
    # against a collapse, the defaults are the recipe's behaviour before they existed.
    warmup: int = 30
    batching: str = "length"
    # A pause token <sp> between every two words in training (FeatureConfig.word_silences, saved
    # with the aligner; each takes >= 1 frame there, and decoding makes it optional).
    word_silences: bool = False
    # Steps over which the token scores ramp in beside the diagonal prior (TrainConfig).
    prior_warmup: int = 0
    # How the phone symbols are numbered (data.SYMBOL_ORDERS): "corpus" in order of first
    # appearance in the corpus; "sorted" by their string, whatever the utterances' order (issue
    # 19: the order deals each phone its initial embedding for a seed).
    symbol_order: str = "corpus"
    # The SMA / forward-sum aligners' emission (AlignerConfig.emission, saved with the aligner;
    # functional.alignment.EMISSIONS): "posterior" (the behaviour before the option), "dual"
    # or "scaled". Issue 19: a per-frame posterior rewards a token close to every frame.
    emission: str = "posterior"

    def __post_init__(self) -> None:
        check_fields(
            self,
            positive_ints=(
                "utterances",
                "speakers",
                "steps",
                "batch_size",
                "dim",
                "threads",
                "n_fft",
                "hop_length",
                "mel_kernel_size",
            ),
            nonnegative_ints=(
                "held_out_voices",
                "held_out_utterances",
                "eval_every",
                "seed",
                "train_seed",
                "warmup",
                "prior_warmup",
            ),
            positive_floats=("lr", "max_seconds_per_aligner"),
            nonnegative_floats=("fs_weight",),
            choices={
                "kinds": KINDS,
                "mha_prior": MHA_PRIORS,
                "batching": BATCHINGS,
                "symbol_order": SYMBOL_ORDERS,
                "emission": EMISSIONS,
            },
        )
        if self.held_out_utterances >= self.utterances:
            raise ValueError(
                f"Expected held_out_utterances < utterances (some left to train on); found "
                f"held_out_utterances={self.held_out_utterances}, utterances={self.utterances}. "
                "Raise --utterances or lower --set held_out_utterances=N."
            )
        if self.hop_length > self.n_fft:
            raise ValueError(
                f"Expected hop_length <= n_fft (frames that overlap or touch); found "
                f"hop_length={self.hop_length}, n_fft={self.n_fft}."
            )

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(
            utterances=160,
            speakers=4,
            held_out_voices=1,
            held_out_utterances=16,
            steps=120,
            dim=64,
            eval_every=0,
            threads=1,
        )


def save_aligner(
    path: Path,
    model: TextMelAligner | AlignerEnsemble,
    symbols: dict,
    features: FeatureConfig,
    info: dict,
    *,
    half: bool = False,
) -> None:
    """Save a small standalone aligner (weights, config, symbols, front end).

    An :class:`AlignerEnsemble` is saved as one file holding every member's config and weights
    (and how they are pooled); :func:`load_aligner` gives it back as an ensemble. ``half``
    stores the floating-point weights as float16 (half the file; :func:`load_aligner` gives
    float32 modules back, as the shipped aligner is stored)."""

    def weights_of(m: TextMelAligner) -> dict[str, Any]:
        sd = m.state_dict()
        if half:
            sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
        return {"model_config": m.config.to_dict(), "state_dict": sd}

    if isinstance(model, AlignerEnsemble):
        weights: dict[str, Any] = {
            "members": [weights_of(m) for m in model.members if isinstance(m, TextMelAligner)],
            "combine": model.combine,
        }
    else:
        weights = weights_of(model)
    save_checkpoint(
        path,
        {
            "format": "speechattn-aligner-1",
            **weights,
            "symbols": symbols,
            "features": features.to_dict(),
            "info": info,
        },
    )


def load_aligner(
    path: Path | None = None,
) -> tuple[TextMelAligner | AlignerEnsemble, dict, FeatureConfig, dict]:
    """Load an aligner saved by :func:`save_aligner` (default: the shipped English aligner): a
    :class:`TextMelAligner`, or an :class:`AlignerEnsemble` for a file that holds several.

    The file is read with ``torch.load(..., weights_only=True)``: a checkpoint that would need
    arbitrary unpickling (and could run code) is refused with a ``ValueError`` naming it.
    """
    p = DEFAULT_ASSET if path is None else Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"No aligner at {p}. Train one with `speechattn align DATA --from-scratch` or rebuild the "
            "shipped one (see README, 'Rebuilding the shipped aligner')."
        )
    ck = load_checkpoint(p)
    if "state_dict" not in ck and "model" not in ck and "members" not in ck:
        raise ValueError(
            f"{p}: not an aligner checkpoint (expected 'state_dict', 'model' or 'members'; found keys "
            f"{sorted(ck)[:8]}). Pass a file written by `speechattn align` or `speechattn demo`."
        )
    try:
        return _aligner_from_checkpoint(ck)
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from None
    except (KeyError, TypeError, AttributeError, RuntimeError) as exc:  # another recipe's file
        what = ck.get("format") or "no 'format'"
        raise ValueError(
            f"{p}: not an aligner checkpoint ({what}; {type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:120]}). Pass a file written by `speechattn align` or "
            "`speechattn demo`."
        ) from None


def _aligner_from_checkpoint(
    ck: dict,
) -> tuple[TextMelAligner | AlignerEnsemble, dict, FeatureConfig, dict]:
    """:func:`load_aligner`'s work once the file is read (KeyError etc.: not an aligner's)."""
    if "state_dict" not in ck and "model" in ck:  # a training checkpoint
        ck = {
            "model_config": ck["model_config"],
            "state_dict": ck["model"],
            "symbols": ck["extra"]["symbols"],
            "features": ck["extra"]["features"],
            "info": {},
        }

    def build(member: dict) -> TextMelAligner:
        model = TextMelAligner(AlignerConfig(**member["model_config"]))
        model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in member["state_dict"].items()}
        )
        return model.eval()

    loaded: TextMelAligner | AlignerEnsemble
    if "members" in ck:
        loaded = AlignerEnsemble(
            [build(m) for m in ck["members"]], combine=ck.get("combine", "log")
        ).eval()
    else:
        loaded = build(ck)
    return loaded, dict(ck["symbols"]), FeatureConfig(**ck["features"]), dict(ck.get("info", {}))


def load_aligners(
    paths: Sequence[Path],
    *,
    combine: str = "log",
    per_file: list[tuple[int, dict]] | None = None,
) -> tuple[TextMelAligner | AlignerEnsemble, dict, FeatureConfig, dict]:
    """Load one aligner (:func:`load_aligner`) or several as an :class:`AlignerEnsemble`.

    Several aligners must share the phone inventory (the same symbol for every token id) and
    the front end (the same :class:`FeatureConfig`): the ensemble feeds them the same tokens and
    features. A file that holds an ensemble adds its members. The symbols, features and info
    returned are the first aligner's, except that with several files the info carries no
    boundary calibration table: a member's tables were fitted on that member's decoding, not the
    ensemble's (:func:`combine_aligners` with a corpus fits the ensemble's own).
    ``per_file``, when given, receives ``(number of aligners, info)`` of each file in order.

    Raises:
        ValueError: no path, a file given twice, or an aligner whose symbols, front end or
            model kind differ from the first one's (naming both files and what differs).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("Expected at least one aligner checkpoint; found none.")
    seen: dict[Path, Path] = {}
    for p in paths:
        if p.resolve() in seen:
            raise ValueError(
                f"Expected each aligner once; found {p} given twice (as {seen[p.resolve()]} "
                "too): an ensemble of a model with itself is that model at twice the cost."
            )
        seen[p.resolve()] = p
    first = load_aligner(paths[0])
    if per_file is not None:
        per_file.append((len(_members(first[0])), first[3]))
    if len(paths) == 1:
        return first
    model0, symbols, feats, info = first
    models = _members(model0)
    for p in paths[1:]:
        model, sym, fc, one = load_aligner(p)
        if per_file is not None:
            per_file.append((len(_members(model)), one))
        if sym != symbols:
            diff = sorted(set(sym.items()) ^ set(symbols.items()))[:4]
            raise ValueError(
                f"{p}: expected the phone inventory of {paths[0]} (the same symbol for every "
                f"token id); found other symbols (e.g. {diff}). Ensemble aligners trained on the "
                "same corpus."
            )
        if fc != feats:
            a, b = asdict(feats), asdict(fc)
            what = ", ".join(f"{k}={b[k]!r} vs {a[k]!r}" for k in a if a[k] != b.get(k))
            raise ValueError(
                f"{p}: expected the front end of {paths[0]}; found {what}. Ensemble aligners "
                "with the same front end."
            )
        models.extend(_members(model))
    try:
        ens = AlignerEnsemble(models, combine=combine)
    except ValueError as exc:
        raise ValueError(f"{', '.join(map(str, paths))}: {exc}") from None
    info = {**info, **{key: None for key in _CALIBRATION_KEYS.values()}}
    return ens.eval(), symbols, feats, info


def _members(model: TextMelAligner | AlignerEnsemble) -> list[TextMelAligner]:
    """The aligners of ``model``: its members (an ensemble) or itself."""
    if isinstance(model, AlignerEnsemble):
        return [m for m in model.members if isinstance(m, TextMelAligner)]
    return [model]


def _member_record(info: dict) -> dict:
    """What an ensemble file keeps of one member's info: who trained it and with which seeds
    (its calibration tables fitted that member's boundaries, not the ensemble's)."""
    cfg = info.get("demo_config") or {}
    rec: dict[str, Any] = {"trained_by": info.get("trained_by")}
    if cfg:
        seed = cfg.get("seed", 0)
        rec["seed"] = seed
        rec["train_seed"] = seed if cfg.get("train_seed") is None else cfg["train_seed"]
    return rec


def _decode_with_pauses(
    model: TextMelAligner | AlignerEnsemble, items: Sequence[AlignItem], feats: FeatureConfig
) -> list[AlignmentResult]:
    """The decoding `speechattn align` makes by default, forward only (pauses ``"auto"``,
    :data:`DEFAULT_MIN_PAUSE_S`): what the exported class tables are fitted on and what the
    collapse checks read."""
    return align_items(
        model,
        items,
        feats,
        pauses="auto",
        min_pause_frames=min_pause_frames(DEFAULT_MIN_PAUSE_S, feats.frame_s),
    )


def _check_members(
    model: AlignerEnsemble,
    per_file: Sequence[tuple[int, dict]],
    paths: Sequence[Path],
    train: Sequence[AlignItem],
    feats: FeatureConfig,
    log: Callable[[str], Any],
) -> list[float]:
    """The collapse sign of each member of ``model`` (:func:`~speechattn.recipes.align.health.
    longest_phone_median_ms`) on its own decoding (pauses ``"auto"``, as the demo's export
    decodes) of the first :data:`COMBINE_CHECK_UTTERANCES` training utterances ``train``: one
    log line per member, and a ``UserWarning`` naming the file of each member above
    :data:`~speechattn.recipes.align.health.COLLAPSE_LONGEST_PHONE_MS`. Returns the values."""
    probe = list(train[:COMBINE_CHECK_UTTERANCES])
    owners = [path for path, (n, _) in zip(paths, per_file) for _ in range(n)]
    members = _members(model)
    values: list[float] = []
    for i, (member, path) in enumerate(zip(members, owners), start=1):
        dec = _decode_with_pauses(member, probe, feats)
        value = longest_phone_median_ms(dec)
        values.append(value)
        log(
            f"member {i}/{len(members)} ({path}): longest aligned phone, median over "
            f"{len(probe)} training utterances: {value:.0f} ms"
        )
        if value > COLLAPSE_LONGEST_PHONE_MS:
            warnings.warn(
                f"member {i} of the ensemble, from {path}, looks collapsed ({value:.0f} ms > "
                f"{COLLAPSE_LONGEST_PHONE_MS:g} ms: {COLLAPSE_WHY}); "
                "combining it is your call: to replace it, train that aligner again with another "
                "--seed (or --set train_seed) and combine again",
                UserWarning,
                stacklevel=3,
            )
    return values


def combine_aligners(
    paths: Sequence[Path],
    out: Path,
    *,
    corpus: Path | None = None,
    combine: str = "log",
    half: bool = False,
    progress: bool = False,
    log: Callable[[str], Any] = print,
) -> Path:
    """Save several aligners as one ensemble file (how the shipped aligner is built).

    The aligners (``paths``; a file holding an ensemble adds its members) must share the phone
    inventory and the front end (:func:`load_aligners` checks both). The file keeps the first
    aligner's ``demo_config`` and ``kind`` (the training corpus and recipe the members share),
    and under ``"members"`` each aligner's ``trained_by`` and training seeds. A member's boundary
    calibration tables fitted that member's boundaries, not the ensemble's, so none is copied:
    with ``corpus`` (the manifest of the demo corpus the first aligner was trained on, e.g.
    ``OUT/corpus/manifest.jsonl`` of its ``speechattn demo`` run) the three tables are fitted
    again with the ensemble's own decoding, on the first aligner's training utterances, exactly
    as ``speechattn demo --export`` fits a single aligner's; without it the file has no tables
    (``--calibration auto`` then applies none). With ``corpus`` each member is also checked for
    a collapse (the label-free sign of :mod:`~speechattn.recipes.align.health`, on its own
    decoding of the first :data:`COMBINE_CHECK_UTTERANCES` of those utterances): one log line
    per member, and a ``UserWarning`` naming the file of a member above the threshold (the file
    is written anyway).

    Args:
        paths: two or more aligner files written by ``speechattn demo --export`` or
            ``speechattn align``.
        out: the ensemble file to write.
        corpus: the training corpus manifest (optional; see above).
        combine: how the members' evidence is pooled (see :class:`AlignerEnsemble`).
        half: store the weights as float16 (see :func:`save_aligner`); the tables are fitted
            with the float32 members either way.
        progress: progress bars while the corpus's features are computed.
        log: where progress lines go.

    Returns:
        ``out``.

    Raises:
        ValueError: ``out`` an existing folder or one of ``paths``, fewer than two aligners,
            members that differ in phone inventory, front end or kind, a first aligner without
            a demo run's ``demo_config`` when ``corpus`` is given, or a corpus whose phone
            inventory is not the aligners'.
    """
    from speechattn.data.corpus import load_corpus

    paths = [Path(p) for p in paths]
    out = Path(out)
    if out.is_dir():  # checked before the (possibly long) calibration fit
        raise ValueError(f"Expected out to be a file path to write; found the folder {out}.")
    if any(out.resolve() == p.resolve() for p in paths):
        raise ValueError(
            f"Expected out to be a new file; found {out}, one of the aligners to combine "
            "(writing it would replace that aligner). Pick another path."
        )
    per_file: list[tuple[int, dict]] = []  # each file is read once, by load_aligners
    model, symbols, feats, info = load_aligners(paths, combine=combine, per_file=per_file)
    if not isinstance(model, AlignerEnsemble) or len(model) < 2:
        raise ValueError(
            f"Expected two or more aligners to combine; found one in {', '.join(map(str, paths))}."
        )
    members: list[dict] = []
    for n, one in per_file:
        kept = one.get("members")
        members.extend(
            kept if isinstance(kept, list) and len(kept) == n else [_member_record(one)] * n
        )
    record: dict[str, Any] = {
        "trained_by": f"{len(model)} aligners combined (combine_aligners, {combine} pooling)",
        "kind": model.config.kind,
        "demo_config": info.get("demo_config"),
        "members": members,
        **{key: None for key in _CALIBRATION_KEYS.values()},
    }
    if corpus is not None:
        cfg_dict = info.get("demo_config")
        if not cfg_dict:
            raise ValueError(
                f"{paths[0]}: expected an aligner exported by `speechattn demo` (its info names "
                "the training split); found no demo_config. Combine without a corpus."
            )
        known = {f.name for f in dataclasses.fields(DemoConfig)}
        config = DemoConfig(**{k: v for k, v in cfg_dict.items() if k in known})
        utts = load_corpus(Path(corpus))
        table = new_symbol_table()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            items = build_items(
                utts, table, feats, grow_symbols=True, progress=progress, voice=corpus_voice
            )
        items = order_symbols(table, items, order=config.symbol_order)
        if dict(table) != symbols:
            missing = len(set(symbols) - set(table))
            unknown = sorted(set(table) - set(symbols))
            what = f"{missing} of theirs missing and {len(unknown)} unknown to them"
            if unknown:
                what += f" (e.g. {', '.join(map(repr, unknown[:3]))})"
            if not missing and not unknown:
                what = "the same symbols numbered in another order"
            raise ValueError(
                f"{corpus}: expected the corpus the aligners were trained on (their phone "
                f"inventory, {len(symbols)} symbols); found {len(table)} symbols: {what}."
            )
        train_seed = config.seed if config.train_seed is None else config.train_seed
        train, _, _, _ = _split(
            items, config.held_out_voices, config.held_out_utterances, train_seed
        )
        plain_train = list(train)
        if config.augment:
            train = train + augmented_items(utts, train, symbols, feats, seed=train_seed)
        log(f"fitting the ensemble's calibration tables on {len(train)} training utterances")
        contexts = fit_boundary_offsets(align_items(model, train, feats))
        dec = _decode_with_pauses(model, plain_train, feats)
        engines_of = [speaker_engine(it.speaker) for it in plain_train]
        record["boundary_offsets"] = contexts.to_dict()
        record["engine_offsets"] = fit_class_offsets(dec, engines_of).to_dict()
        record["consensus_offsets"] = fit_class_offsets(
            dec, engines_of, combine="consensus"
        ).to_dict()
        _check_members(model, per_file, paths, plain_train, feats, log)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_aligner(out, model, symbols, feats, record, half=half)
    log(f"saved an ensemble of {len(model)} aligners -> {out}")
    return out


@functools.lru_cache(maxsize=256)
def _usable_voice(name: str) -> bool:
    from speechattn.data.text import phonemize

    try:
        phonemize("a", voice=name)
    except Exception:
        return False
    return True


_ESPEAK_PERSON_PREFIX = "espeak-"


def phonemizer_voice(speaker: str) -> str:
    """Phonemizer (espeak-ng) voice for a speaker id, so that the phones follow the speaker's accent.

    - an espeak English voice name (the default demo's speaker ids, e.g. ``"en-gb+f1"``): itself;
    - an espeak-ng person of the voice registry (engine corpora, e.g. ``"espeak-en-029+m6"``): its
      espeak voice (``"en-029+m6"``), as the engine spoke it;
    - a person of another engine's voices (``"cstr-rab"``, ``"piper-joe"``): ``"en-gb"`` when every
      registry voice of that person speaks a British accent (``en-gb...``), ``"en-us"`` otherwise
      (American voices, foreign-accented English, unknown speakers).

    Args:
        speaker: the utterance's speaker id.

    Returns:
        an espeak-ng voice name the phonemizer accepts.
    """
    from speechattn.data.voices import VOICES

    spk = str(speaker)
    if spk.startswith(_ESPEAK_PERSON_PREFIX):
        own = spk[len(_ESPEAK_PERSON_PREFIX) :]
        if own.startswith("en") and _usable_voice(own):
            return own
    if spk.startswith("en") and _usable_voice(spk):
        return spk
    langs = {v.language for v in VOICES if v.person == spk and v.engine != "espeak"}
    if langs and all(lang.startswith("en-gb") for lang in langs):
        return "en-gb"
    return "en-us"


def speaker_engine(speaker: str) -> str:
    """The speech engine of a speaker id (a voice-registry person, or an espeak voice name as the
    default demo names its speakers); the speaker id itself when the registry does not know it."""
    from speechattn.data.voices import VOICES

    spk = str(speaker)
    engines = sorted({v.engine for v in VOICES if v.person == spk})
    if len(engines) == 1:
        return engines[0]
    if spk.startswith(_ESPEAK_PERSON_PREFIX) or (spk.startswith("en") and _usable_voice(spk)):
        return "espeak"
    return spk


def corpus_voice(utt: Any) -> str:
    """Phonemizer voice for an utterance, from its speaker id (see :func:`phonemizer_voice`):
    synthetic corpora then phonemize each voice with its own accent, so phones line up with the
    engine's ground truth."""
    return phonemizer_voice(str(getattr(utt, "speaker", "")))


def held_out_speakers(
    speakers: Sequence[str], count: int, engine_of: Callable[[str], str] = speaker_engine
) -> list[str]:
    """The ``count`` speakers the demo holds out of training, spread over the engines.

    Speakers are grouped by engine (``engine_of``; ids it does not know, for which it returns the
    id itself, form one group). Only engines with more than one speaker give voices, so no
    engine is held out whole, one at a time round-robin (engines with more speakers first, then
    by name), each giving its last speaker in sorted order not held out yet. For one engine this
    is the last ``count`` speakers in sorted order. Fewer than ``count`` come back when every
    engine has given all but one of its speakers; none when ``count`` is 0. Deterministic.

    Returns:
        the held-out speaker ids, sorted.
    """
    groups: dict[str, list[str]] = {}
    for spk in sorted(set(speakers)):
        engine = engine_of(spk)
        groups.setdefault("" if engine == spk else engine, []).append(spk)
    order = sorted(groups, key=lambda e: (-len(groups[e]), e))
    held: list[str] = []
    for k in range(1, max((len(g) for g in groups.values()), default=0)):
        for engine in order:
            if len(held) < count and len(groups[engine]) > k:
                held.append(groups[engine][-k])
    return sorted(held)


def _split(items: Sequence[AlignItem], held_voices: int, held_utts: int, seed: int):
    held = set(held_out_speakers([it.speaker for it in items], held_voices))
    seen = [it for it in items if it.speaker not in held]
    unseen = [it for it in items if it.speaker in held]
    rng = random.Random(seed)
    idx = list(range(len(seen)))
    rng.shuffle(idx)
    dev_idx = set(idx[:held_utts])
    dev = [seen[i] for i in sorted(dev_idx)]
    train = [seen[i] for i in range(len(seen)) if i not in dev_idx]
    if not train:
        raise ValueError(
            f"Expected training utterances after the held-out split; found none: {len(items)} "
            f"utterances, {len(unseen)} of them by the {len(held)} held-out voices, "
            f"held_out_utterances={held_utts} of the other {len(seen)}. Raise --utterances or "
            "lower --set held_out_utterances=N (or --set held_out_voices=N)."
        )
    # Held-out utterances: sentences unseen in training (drop dev items whose text is in train).
    train_texts = {it.text for it in train}
    dev = [it for it in dev if it.text not in train_texts] or dev
    return train, dev, unseen, sorted(held)


def _oracle(items: Sequence[AlignItem], cfg: FeatureConfig) -> list[AlignmentResult]:
    """Ground truth snapped to frames (the frame-resolution ceiling)."""
    from speechattn.recipes.align.evaluate import durations_to_intervals

    out = []
    for it in items:
        if it.gt_phones is None:
            continue
        n = int(it.mel.shape[0])
        # Frame k's boundary sits at (k - 1/2) hop (centred frames): snap to the nearest one.
        starts = [round(float(iv[0]) / cfg.frame_s + 0.5) for iv in it.gt_phones]
        ends = [round(float(iv[1]) / cfg.frame_s + 0.5) for iv in it.gt_phones]
        edges = [0]
        for s in starts:
            edges.append(min(max(s, edges[-1] + 1), n))
        edges.append(min(max(ends[-1], edges[-1] + 1), n))
        edges.append(n)
        d = np.diff(np.array(edges))
        if (d < 0).any():
            continue
        ph, wd = durations_to_intervals(it, d, cfg)
        out.append(AlignmentResult(item=it, durations=d, phones=ph, words=wd))
    return out


def demo_record(config: DemoConfig) -> dict:
    """The settings that identify a demo run (the corpus/front-end options only when set, so
    folders of espeak-only runs written before those options existed still resume)."""
    rec = asdict(config)
    optional = (
        "engines",
        "commercial_only",
        "augment",
        "mel_norm",
        "band_mask",
        "n_fft",
        "hop_length",
        "mel_kernel_size",
        "fs_weight",
        "train_seed",
        "warmup",
        "batching",
        "word_silences",
        "prior_warmup",
        "symbol_order",
        "emission",
    )
    for f in optional:
        if rec[f] == getattr(DemoConfig, f):
            rec.pop(f)
    return rec


def demo_features(config: DemoConfig) -> FeatureConfig:
    """The front end a demo run trains with (saved with its aligner, which aligns with it)."""
    return FeatureConfig(
        mel_norm=config.mel_norm,
        band_mask=config.band_mask,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        word_silences=config.word_silences,
    )


@warn_left_out_once
def run_demo(
    out: Path,
    config: DemoConfig,
    *,
    export: Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    corpus_from: Path | None = None,
    collapse_retries: int = DEFAULT_COLLAPSE_RETRIES,
    collapse_check_at: int | None = None,
    log=print,
) -> dict:
    """Synthesize a corpus, train the SMA aligner and baselines, evaluate, write the report.

    ``collapse_retries``: when an SMA or forward-sum aligner looks collapsed (the label-free
    sign of :mod:`~speechattn.recipes.align.health` on its training-utterance decoding), train
    it again up to this many times with a restart seed
    (:func:`~speechattn.recipes.align.health.restart_seed` of the training seed: the model's
    initialisation and batch order change, the corpus, held-out split and channel copies do
    not) and keep the attempt with the lowest sign; 0 logs and warns only. Each restart has its
    own checkpoint (``checkpoints/KIND-restartK.pt``); the summary's ``collapse restarts`` field
    (only when a restart was made) lists every attempt. The MHA baseline is trained once (no
    collapse threshold was checked on it).

    ``collapse_check_at`` (default ``None``: off): at that step of each SMA or forward-sum
    training attempt, decode up to
    :data:`~speechattn.recipes.align.health.EARLY_CHECK_UTTERANCES` of its training utterances
    and, when their median longest aligned phone is above
    :data:`~speechattn.recipes.align.health.EARLY_COLLAPSE_LONGEST_PHONE_MS`, stop that attempt
    (it counts as one) and start the next restart at once; the kept attempt is one trained to
    the end (when every attempt stopped early, the last is trained on to the end, with a
    warning). A step from 1 to ``config.steps - 1``.

    Running again in the same ``out`` with the same settings (``steps``, ``threads`` and time
    limits may change) reuses its corpus and resumes each aligner's checkpoint; other settings
    raise :class:`~speechattn.recipes.align.outputs.OutputFolderError` naming what differs,
    and ``overwrite`` first deletes the earlier run's outputs, its corpus included.

    ``corpus_from``: the folder of another demo run whose corpus (``corpus_from/corpus``) this
    run trains on instead of synthesizing its own (another training seed on one corpus). Its
    ``run.json`` must show this run's corpus settings (``utterances``, ``speakers``, ``seed``,
    ``engines``, ``commercial_only``); otherwise a ``ValueError`` names the first that differs.

    Returns a dict with the report path, the metrics table and timings.
    """
    from speechattn.data.corpus import load_corpus
    from speechattn.data.synth import synth_corpus
    from speechattn.recipes.align.outputs import RUN_RECORD

    collapse_retries = check_collapse_retries(collapse_retries)
    check_at = check_collapse_check_at(collapse_check_at, steps=config.steps)
    if export is not None and Path(export).is_dir():  # else refused only when it is written
        raise ValueError(
            f"Expected --export to be a file path to write; found the folder {export}. Name a "
            f"file, e.g. {export}/aligner.pt."
        )
    reused: Path | None = None
    if corpus_from is not None and Path(corpus_from).resolve() != Path(out).resolve():
        src = Path(corpus_from)
        fresh = "drop --corpus-from to synthesize this run's own corpus"
        try:
            theirs = json.loads((src / RUN_RECORD).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            why = "not found" if isinstance(exc, FileNotFoundError) else f"unreadable ({exc})"
            raise ValueError(
                f"--corpus-from {src}: expected the folder of a `speechattn demo` run with its "
                f"{RUN_RECORD}; found {src / RUN_RECORD} {why}; {fresh}."
            ) from None
        mine, default = asdict(config), asdict(DemoConfig())
        for key in ("utterances", "speakers", "seed", "engines", "commercial_only"):
            want = json.loads(json.dumps(mine[key]))
            found = theirs.get(key, json.loads(json.dumps(default[key])))
            if found != want:
                raise ValueError(
                    f"--corpus-from {src}: expected a corpus made with {key}={want!r} (this "
                    f"run's); found {key}={found!r} in {src / RUN_RECORD}: a different corpus. "
                    f"Use the same corpus settings or {fresh}."
                )
        reused = src / "corpus" / "manifest.jsonl"
        if not reused.is_file():
            raise ValueError(
                f"--corpus-from {src}: expected its corpus at {reused}; found none (let that "
                f"run finish synthesizing first, or {fresh})."
            )

    torch.set_num_threads(max(1, config.threads))
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keep = ("threads", "max_seconds_per_aligner", "eval_every", "steps")
    record = {k: v for k, v in demo_record(config).items() if k not in keep}
    state = prepare_output(out, record, overwrite=overwrite, extra_dirs=("corpus",))
    if state == "overwrite":
        log(f"--overwrite: removed the earlier run's outputs from {out}")
    elif state == "resume":
        log(f"{out} holds this run already: reusing its corpus and checkpoints")
    feats = demo_features(config)
    corpus_dir = out / "corpus"
    manifest = corpus_dir / "manifest.jsonl"
    if reused is not None:
        log(f"reusing the corpus of {corpus_from}: {reused}")
        manifest = reused
    elif not manifest.exists():
        log(
            f"synthesizing {config.utterances} utterances, {config.speakers} voices -> {corpus_dir}"
        )
        manifest = synth_corpus(
            corpus_dir,
            utterances=config.utterances,
            speakers=config.speakers,
            seed=config.seed,
            workers=config.threads,
            sample_rate=feats.sample_rate,
            progress=progress,
            **demo_engine_options(config.engines, config.commercial_only),
        )
    utts = load_corpus(manifest)
    fingerprint = corpus_fingerprint(utts)
    symbols = new_symbol_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = build_items(
            utts, symbols, feats, grow_symbols=True, progress=progress, voice=corpus_voice
        )
    items = order_symbols(symbols, items, order=config.symbol_order)
    train_seed = config.seed if config.train_seed is None else config.train_seed
    train, dev, unseen, held = _split(
        items, config.held_out_voices, config.held_out_utterances, train_seed
    )
    plain_train = list(train)  # the training utterances as synthesized (the class table's)
    early_sample = early_check_sample(plain_train)  # collapse_check_at's decoding (when on)
    if config.augment:  # one copy of each training utterance through a random channel
        train = train + augmented_items(utts, train, symbols, feats, seed=train_seed)
    t_data = time.perf_counter() - t_start
    copies = len(train) - len(plain_train)  # the channel copies (augment) train beside them
    log(
        f"{len(items)} utterances: {len(plain_train)} train utterances"
        + (f" (+{copies} channel copies)" if copies else "")
        + f", {len(dev)} held-out utterances, {len(unseen)} utterances of {len(held)} held-out "
        f"voice{'' if len(held) == 1 else 's'} {held}; {len(symbols)} symbols; data {t_data:.0f}s"
    )
    splits = {"held-out utterances": dev, "held-out voices": unseen}
    results: dict[str, dict[str, list[AlignmentResult]]] = {s: {} for s in splits}
    histories: dict[str, list[dict]] = {}
    models: dict[str, TextMelAligner] = {}
    timings: dict[str, float] = {}
    offsets: dict[str, BoundaryOffsets] = {}
    engine_offsets: dict[str, BoundaryOffsets] = {}
    consensus_offsets: dict[str, BoundaryOffsets] = {}
    dev_probe = dev[: min(len(dev), 24)]
    longest_ms: dict[str, float] = {}
    # Kinds trained more than once: their attempts and the index of the kept one.
    restarts: dict[str, tuple[list[CollapseAttempt], int]] = {}
    spent: dict[str, float] = {}  # training seconds per kind, every attempt
    for kind in config.kinds:
        mcfg = AlignerConfig(
            kind=kind,
            num_symbols=max(64, len(symbols)),
            n_mels=feats.n_mels,
            dim=config.dim,
            kernel_size=config.mel_kernel_size,
            fs_weight=config.fs_weight,
            mha_prior=config.mha_prior if kind == "mha" else "none",
            emission=config.emission if kind != "mha" else "posterior",
        )
        tcfg = TrainConfig(
            steps=config.steps,
            batch_size=config.batch_size,
            lr=config.lr,
            warmup=config.warmup,
            seed=train_seed,
            max_seconds=config.max_seconds_per_aligner,
            batching=config.batching,
            prior_warmup=config.prior_warmup,
        )

        def probe(model: TextMelAligner, step: int) -> dict:
            m = score(align_items(model, dev_probe, feats))
            return {"dev_within_20ms": m.phone_within_20ms or 0.0}

        def attempt(
            k: int,
            seed_k: int,
            kind: str = kind,
            mcfg: AlignerConfig = mcfg,
            tcfg: TrainConfig = tcfg,
            early: bool = True,
        ) -> tuple[_DemoAttempt, list[AlignmentResult] | None]:
            """Train attempt ``k`` (0: the first; k: restart k, seed ``seed_k``) and decode its
            training utterances as the calibration tables need. ``early``: with
            ``collapse_check_at``, the early collapse check is on (raises ``StoppedEarly``)."""
            on_eval: Any = probe if config.eval_every else None
            eval_every, stop_rule = config.eval_every, None
            armed = early and check_at is not None and kind != "mha"
            if armed:
                who = f"aligner {kind} seed {train_seed}" + (
                    f" restart {k} (seed {seed_k})" if k else ""
                )
                on_eval, eval_every, stop_rule = early_check_hooks(
                    lambda net: align_items(net, early_sample, feats),
                    check_at=int(check_at or 0),
                    who=who,
                    on_eval=on_eval,
                    eval_every=config.eval_every,
                    log=log,
                )
            res = train_aligner(
                mcfg,
                train,
                dataclasses.replace(tcfg, seed=seed_k),
                checkpoint=out
                / "checkpoints"
                / (f"{kind}.pt" if k == 0 else f"{kind}-restart{k}.pt"),
                extra_state={
                    "symbols": symbols,
                    "features": feats.to_dict(),
                    "run": {"corpus": fingerprint},
                },
                progress=progress,
                desc=f"train {kind}" + (f" restart {k}" if k else ""),
                on_eval=on_eval,
                eval_every=eval_every,
                should_stop=stop_rule,
                groups=(
                    [speaker_engine(it.speaker) for it in train]
                    if config.batching == "balanced"
                    else None
                ),
            )
            spent[kind] = spent.get(kind, 0.0) + res.seconds
            stop = stopped_early(res.history) if armed else None
            if stop is not None:
                raise stop
            # Boundary calibration (uses labels) is fitted on the training utterances' decoding;
            # the class tables of an exported aligner on the decoding `speechattn align` uses.
            train_dec: list[AlignmentResult] | None = None
            dec: list[AlignmentResult] | None = None
            if kind != "mha" and any(it.gt_phones is not None for it in train):
                train_dec = align_items(res.model, train, feats)
            if (
                export is not None
                and kind != "mha"
                and any(it.gt_words is not None for it in plain_train)
            ):
                dec = _decode_with_pauses(res.model, plain_train, feats)
            # Collapse sign (label-free, benchmarks/RESULTS.md "collapse"): on the decoding of
            # the training utterances made above (the exported tables' one, else the boundary
            # calibration's, whose first len(plain_train) results are the plain utterances).
            check = (
                dec if dec is not None else (train_dec[: len(plain_train)] if train_dec else None)
            )
            return _DemoAttempt(res, train_dec, dec), check

        if kind == "mha":  # no collapse threshold was ever checked on MHA: trained once
            kept, _ = attempt(0, train_seed)
        else:
            kept, tries, best_try = train_with_restarts(
                attempt,
                kind=kind,
                seed=train_seed,
                retries=collapse_retries,
                log=log,
                finish=lambda k, seed_k: attempt(k, seed_k, early=False),
            )
            if tries:
                longest_ms[kind] = tries[best_try].longest_phone_ms
            if len(tries) > 1:
                restarts[kind] = (tries, best_try)
        res, train_dec, dec = kept
        models[kind] = res.model
        histories[kind] = res.history
        timings[kind] = spent[kind]
        for s, its in splits.items():
            results[s][kind] = align_items(res.model, its, feats, keep_soft=2)
        m = score(results["held-out voices" if unseen else "held-out utterances"][kind])
        log(
            f"  {kind}: {timings[kind]:.0f}s, held-out {'voices' if unseen else 'utterances'}: "
            f"{_pct(m.phone_within_20ms)} within 20 ms"
        )
        # Boundary calibration (uses labels): fitted on the training utterances only, scored on
        # the held-out splits as a separate row (see speechattn.recipes.align.calibrate).
        if train_dec is not None:
            offsets[kind] = fit_boundary_offsets(train_dec)
            for s in splits:
                results[s][kind + "+cal"] = calibrate_results(
                    results[s][kind], feats, offsets[kind]
                )
            mc = score(
                results["held-out voices" if unseen else "held-out utterances"][kind + "+cal"]
            )
            log(f"  {kind} + boundary calibration: {_pct(mc.phone_within_20ms)} within 20 ms")
        if dec is not None:
            # The class tables of the exported aligner (each training engine counts once).
            engines_of = [speaker_engine(it.speaker) for it in plain_train]
            engine_offsets[kind] = fit_class_offsets(dec, engines_of)
            consensus_offsets[kind] = fit_class_offsets(dec, engines_of, combine="consensus")
    for s, its in splits.items():
        results[s]["uniform"] = align_items("uniform", its, feats)
        results[s]["ground truth snapped to frames"] = _oracle(its, feats)
    table: dict[str, dict[str, Metrics]] = {
        s: {_row_name(k): score(r) for k, r in by.items()} for s, by in results.items()
    }
    # Pick the default aligner on held-out utterances (not on held-out voices, which is the test).
    learned = [k for k in config.kinds]
    best = max(
        learned, key=lambda k: score(results["held-out utterances"][k]).phone_within_20ms or 0.0
    )
    # Example alignments: the first held-out-voice utterance under each aligner.
    examples: dict[str, AlignmentResult] = {}
    ex_split = "held-out voices" if unseen else "held-out utterances"
    for k in [*learned, "uniform"]:
        rs = results[ex_split][k]
        if rs:
            examples[ALIGNER_NAMES.get(k, k)] = rs[0]
    # Write TextGrid/JSON for the held-out voices with the best aligner (unsupervised boundaries,
    # as `speechattn align` writes them by default).
    for r in results[ex_split][best]:
        write_alignment(r, out / "alignments", feats)
    hv = table[ex_split]
    head = hv[ALIGNER_NAMES[best]]
    cal = hv.get(_row_name(best + "+cal"))
    summary = {
        "best aligner": ALIGNER_NAMES[best],
        "held-out voices, phone boundaries within 20 ms": f"{head.phone_within_20ms:.1f}%"
        if head.phone_within_20ms is not None
        else "n/a",
        "held-out voices, mean boundary error": f"{head.phone_mean_abs_ms:.1f} ms"
        if head.phone_mean_abs_ms is not None
        else "n/a",
        "held-out voices with boundary calibration (training-voice labels)": (
            f"{cal.phone_within_20ms:.1f}% within 20 ms, {cal.phone_mean_abs_ms:.1f} ms mean"
            if cal is not None
            and cal.phone_within_20ms is not None
            and cal.phone_mean_abs_ms is not None
            else "n/a"
        ),
        "corpus": f"{len(items)} synthetic utterances, {config.speakers} voices ({len(held)} held out)",
        "training": ", ".join(f"{k} {timings[k]:.0f}s" for k in timings)
        + f" ({config.steps} steps each)",
        "total time": f"{time.perf_counter() - t_start:.0f}s",
    }
    if longest_ms:
        summary[LONGEST_PHONE_FIELD] = ", ".join(f"{k} {v:.0f} ms" for k, v in longest_ms.items())
    if restarts:
        summary[COLLAPSE_RESTARTS_FIELD] = "; ".join(
            f"{k}: {_attempts_text(*kept_tries)}" for k, kept_tries in restarts.items()
        )
    notes = [
        "Every aligner is trained on the same training utterances without alignment labels and scored "
        "on held-out sentences of the training voices and on voices never seen in training. "
        "A boundary counts once per phone start and once per phone end; edge silence tokens are not scored. "
        "Failures: utterances whose soft alignment (frame-wise argmax over tokens) never reaches the "
        "last phone; the hard Viterbi/MAS paths always do, by construction.",
        "SMA aligner: emissions are per-frame token scores (RAD-TTS style, beta-binomial prior), "
        "transitions are SMA stay/move probabilities p, 1-p; trained by the forward (sum over monotonic "
        "paths) likelihood plus the forward-sum loss; durations from the Viterbi path.",
        "Boundary calibration rows use labels: a table of median boundary offsets per phone context "
        "(previous, next symbol) fitted on the training utterances' ground truth and applied to the "
        "held-out ones. It maps the aligner's own boundary convention onto the synthesizer's (e.g. "
        "espeak-ng starts a stop at its burst, the aligner in its closure). Rows without it are the "
        "unsupervised result.",
    ]
    if best != "sma":
        notes.append(
            f"The SMA aligner did not beat the best baseline on held-out utterances in this run; "
            f"{ALIGNER_NAMES[best]} is reported as the best aligner."
        )
    word_table, word_notes = _word_table(results, splits, utts, log)
    report = write_report_safe(
        out, table, examples, histories, feats, summary, notes, word_table, word_notes
    )
    if export is not None:
        save_aligner(
            export,
            models[best],
            symbols,
            feats,
            {
                "trained_by": "speechattn demo",
                "demo_config": asdict(config),
                "kind": best,
                "boundary_offsets": offsets[best].to_dict() if best in offsets else None,
                "engine_offsets": (
                    engine_offsets[best].to_dict() if best in engine_offsets else None
                ),
                "consensus_offsets": (
                    consensus_offsets[best].to_dict() if best in consensus_offsets else None
                ),
                **(
                    {"collapse_restarts": _attempts_record(*restarts[best])}
                    if best in restarts
                    else {}
                ),
            },
        )
        log(f"exported {best} aligner -> {export}")
    return {
        "report": report,
        "table": table,
        "word_table": word_table,
        "best": best,
        "summary": summary,
        "timings": timings,
        "longest_phone_median_ms": longest_ms,
        "collapse_restarts": {k: _attempts_record(*v) for k, v in restarts.items()},
    }


def _word_table(
    results: dict[str, dict[str, list[AlignmentResult]]],
    splits: dict[str, list[AlignItem]],
    utts: Sequence[Any],
    log: Any,
) -> tuple[dict[str, dict[str, Metrics]], list[str]]:
    """Word boundaries per split and aligner, with the pocketsphinx peer row (a baseline only)."""
    from speechattn.recipes.align.peers import (
        PEERS_INSTALL,
        POCKETSPHINX_ROW,
        pocketsphinx_available,
        pocketsphinx_metrics,
    )

    have = pocketsphinx_available()
    paths = {str(u.id): u.audio_path for u in utts}
    table: dict[str, dict[str, Metrics]] = {}
    for s, by in results.items():
        row = {_row_name(k): score(r) for k, r in by.items()}
        if have:
            row[POCKETSPHINX_ROW] = pocketsphinx_metrics(splits[s], paths)
        else:
            row[f"pocketsphinx: not installed ({PEERS_INSTALL})"] = Metrics()
        table[s] = row
    if have:
        m = table["held-out voices" if splits["held-out voices"] else "held-out utterances"]
        w = m[POCKETSPHINX_ROW].word_mean_abs_ms
        log(f"  pocketsphinx (peer baseline): {'n/a' if w is None else f'{w:.1f} ms'} word mean")
    notes = [
        *left_out_notes(table),
        "pocketsphinx 5 forced alignment (its shipped en-us model and CMU dictionary) is the "
        "offline aligner a user could pick instead: a baseline row only. Nothing from it is a "
        "training target, a calibration source or a way to choose settings. Failures: "
        "utterances it found no alignment for (not scored).",
    ]
    return table, notes


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _row_name(key: str) -> str:
    if key.endswith("+cal"):
        return ALIGNER_NAMES.get(key[:-4], key[:-4]) + CALIBRATED
    return ALIGNER_NAMES.get(key, key)


def write_report_safe(
    out, table, examples, histories, feats, summary, notes, word_table=None, word_notes=()
) -> Path:
    from speechattn.recipes.align.report import write_report

    return write_report(
        out,
        table=table,
        examples=examples,
        histories=histories,
        config=feats,
        summary=summary,
        notes=notes,
        word_table=word_table,
        word_notes=word_notes,
    )


def _write_alignments(
    results: Sequence[AlignmentResult],
    utts: Sequence[Any],
    folder: Path,
    feats: FeatureConfig,
    formats: Sequence[str],
) -> list[Path]:
    """Write each result's alignment files into ``folder``: one set per utterance, named by its
    id (a Kaldi segment too, at times from its start), except the utterances of a TextGrid
    transcript (``item.extra["segment"]["tier"]``), written back into one set per recording at
    the recording's times (:func:`~speechattn.recipes.align.evaluate.write_recording_alignment`),
    as the Montreal Forced Aligner does."""
    import soundfile as sf

    paths = {str(u.id): u.audio_path for u in utts}
    single = []
    by_recording: dict[str, list[AlignmentResult]] = {}
    for r in results:
        seg = r.item.extra.get("segment")
        if seg is not None and "tier" in seg:
            by_recording.setdefault(str(seg["recording"]), []).append(r)
        else:
            single.append(r)
    names = alignment_names([r.item.id for r in single] + list(by_recording))
    written: list[Path] = []
    for r, name in zip(single, names):
        written.extend(write_alignment(r, folder, feats, formats=formats, name=name))
    for (_, group), name in zip(by_recording.items(), names[len(single) :]):
        try:
            info = sf.info(str(paths[group[0].item.id]))
            seconds = info.frames / info.samplerate
        except Exception:  # header unreadable now: the tiers end at the last segment's end
            seconds = 0.0
        written.extend(
            write_recording_alignment(
                group, folder, feats, name=name, duration=seconds, formats=formats
            )
        )
    return written


def item_envelopes(
    items: Sequence[AlignItem], utts: Sequence[Any], config: FeatureConfig
) -> list[EnergyEnvelope]:
    """:func:`~speechattn.recipes.align.edges.energy_envelope` of each item's audio at
    ``config.sample_rate``: the one :func:`build_items` kept (``envelopes=True``), else read again
    from its utterance (matched by id) one file at a time."""
    from speechattn.data.corpus import UtteranceAudio

    by_id = {str(u.id): u for u in utts}
    needed = [by_id[it.id] for it in items if it.extra.get("envelope") is None and it.id in by_id]
    read_audio = UtteranceAudio(needed, sample_rate=config.sample_rate)
    out = []
    for it in items:
        kept = it.extra.get("envelope")
        if kept is not None:
            out.append(kept)
            continue
        utt = by_id.get(it.id)
        if utt is None:
            raise ValueError(f"Expected an utterance with id {it.id!r} for its item; found none.")
        wav = read_audio(utt)
        out.append(energy_envelope(wav, config.sample_rate))
    return out


def check_adapt_members(value: int | str) -> int | str:
    """``"all"`` or an integer >= 1 (a digit string is read as one); ``ValueError`` otherwise."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f"Expected adapt_members 'all' or an integer >= 1; found {value!r}.")


def _adapted_members_text(adapted: int, members: int) -> str:
    """How an ensemble adapted, for the run's summary ('' for a single aligner)."""
    if members == 1:
        return ""
    if adapted == members:
        return f"all {members} members adapted in turn"
    which = "member 1" if adapted == 1 else f"members 1-{adapted}"
    return f"{which} of {members} adapted, the others as loaded"


@warn_left_out_once
def run_align(
    data: Path,
    out: Path,
    *,
    checkpoint: Path | Sequence[Path] | None = None,
    adapt: bool = True,
    from_scratch: bool = False,
    steps: int | None = None,
    seed: int = 0,
    threads: int = 2,
    word_silences: bool = False,
    kind: str = "sma",
    prior: str | None = None,
    calibration: bool | str | None = "auto",
    progress: bool = True,
    overwrite: bool = False,
    formats: Sequence[str] = ("textgrid", "json"),
    train_overrides: dict[str, Any] | None = None,
    pauses: str = "auto",
    min_pause_s: float | None = None,
    max_pause_loudness: float | None = DEFAULT_MAX_PAUSE_LOUDNESS,
    reverse_pass: bool = True,
    silence_edge_db: float | None = DEFAULT_SILENCE_EDGE_DB,
    endpoint: bool = DEFAULT_ENDPOINT,
    dereverb: bool = False,
    refine_radius_s: float | None = None,
    refine_fraction: float = DEFAULT_REFINE_FRACTION,
    adapt_members: int | str = "all",
    collapse_retries: int = DEFAULT_COLLAPSE_RETRIES,
    collapse_check_at: int | None = None,
    log=print,
) -> dict:
    """Align a corpus: train from scratch, or apply (and by default adapt) a trained aligner.

    Adaptation (the default with a trained aligner) trains on the corpus without labels at a
    constant learning rate after a short warm-up and stops when its objective stops improving
    (:class:`AdaptStop`), after ``steps`` steps (default :data:`ADAPT_MAX_STEPS`; for each member
    of an ensemble :data:`ENSEMBLE_ADAPT_STEPS`, before the rule can stop it), or after
    :data:`ADAPT_MAX_SECONDS` of training, whichever comes first. ``train_overrides`` sets any
    :class:`~speechattn.recipes.align.train.TrainConfig` field (``lr``, ``max_seconds``,
    ``schedule``, ...) or :class:`AdaptStop` field (``patience``, ``smoothing``, ``min_delta``,
    ``min_steps``). ``adapt_members`` (an ensemble, e.g. the shipped aligner): ``"all"`` (the
    default) adapts every member in turn, each with its own stop and caps; an integer ``N >= 1``
    adapts the first ``N`` members only and keeps the others as loaded (``ValueError`` when
    ``N`` exceeds the number of members). ``pauses``: ``"auto"``, ``"none"`` or ``"forced"`` (see
    :mod:`~speechattn.recipes.align.pauses`); ``"auto"`` (the default) inserts an optional pause
    between every two words, with or without adaptation.

    ``collapse_retries`` (with ``from_scratch``): when the trained aligner looks collapsed (the
    label-free sign of :mod:`~speechattn.recipes.align.health` on its decoding of the corpus,
    which is its training set), train it again up to this many times with a restart seed
    (:func:`~speechattn.recipes.align.health.restart_seed` of ``seed``; own checkpoint
    ``checkpoints/aligner-restartK.pt``) and keep the attempt with the lowest sign; 0 logs and
    warns only, as do an MHA aligner (no threshold was checked on it) and a run under torchrun
    (the restart runs in one process). The summary's ``collapse restarts`` field and the
    aligner file's ``collapse_restarts`` (only when a restart was made) list the attempts.
    ``collapse_check_at`` (with ``from_scratch``; default ``None``: off): the early check of
    :func:`run_demo`'s ``collapse_check_at`` on up to
    :data:`~speechattn.recipes.align.health.EARLY_CHECK_UTTERANCES` of the corpus's utterances
    (one process, SMA or forward-sum only, as the restarts). Adapting one aligner (not an ensemble) logs the same sign on the decoding it makes anyway
    and warns above the threshold (no restart); an ensemble's members are not checked.

    ``kind`` picks the aligner trained with ``from_scratch``; ``prior`` (``"none"``, ``"diagonal"``,
    ``"beta-binomial"``) sets the log-prior of a plain-MHA aligner (``ValueError`` for another kind).
    ``min_pause_s`` (default :data:`~speechattn.recipes.align.pauses.DEFAULT_MIN_PAUSE_S`; 0 keeps
    every pause): with ``"auto"``, a pause between words shorter than this is decoded again as
    no pause (see :mod:`~speechattn.recipes.align.pauses`). ``max_pause_loudness`` (default
    :data:`~speechattn.recipes.align.pauses.DEFAULT_MAX_PAUSE_LOUDNESS`; None = off): with
    ``"auto"``, a pause between words with no frame at most this loud (0 = the utterance's
    5th-percentile frame, 1 = its median frame) is split between its two words. ``reverse_pass``
    (default on): decode each utterance reversed in time as well and put every boundary midway
    between the two paths (:func:`~speechattn.recipes.align.evaluate.align_items`); it was chosen
    on engines held out of training (benchmarks/RESULTS.md), ``False`` decodes forward only.
    ``silence_edge_db`` (default
    :data:`~speechattn.recipes.align.edges.DEFAULT_SILENCE_EDGE_DB`; None = off): each word start
    after silence and word end before silence goes to where the audio's 5 ms energy envelope
    crosses this many dB under the utterance's speech level, within a few frames of the decoded
    edge (:mod:`~speechattn.recipes.align.edges`). ``endpoint`` (default on,
    :data:`~speechattn.recipes.align.edges.DEFAULT_ENDPOINT`; needs ``silence_edge_db``): then
    the first word starts no earlier than the audio's speech onset and the last word ends no
    later than its speech offset, found on the same envelope and level, however far the decoded
    edge lies from them (:func:`~speechattn.recipes.align.edges.speech_endpoints`).
    ``refine_radius_s`` (default None = off):
    each word boundary where two words meet and each phone boundary inside a word goes to the
    strongest clear peak of the audio's spectral transition measure within this many seconds
    (:func:`~speechattn.recipes.align.edges.refine_boundaries`), or ``refine_fraction`` (in
    ``(0, 1]``, default 1) of the way to it. ``dereverb`` (default off; opt-in): a recording whose
    reverberation time, estimated from its own level falls (no labels), is at least
    :data:`~speechattn.recipes.align.data.DEREVERB_MIN_RT60_S` has its late reverberation
    removed from the aligner's features, for adaptation and decoding alike
    (:func:`~speechattn.recipes.align.data.suppress_late_reverb`); ``False`` leaves every
    recording's features as they are. Off by default: the estimate reads natural dry speech,
    which fades more slowly than synthetic speech, as a small room (2 of ALSA's 8 spoken
    studio prompts read >= 0.2 s), so it is for recordings known to be reverberant.

    ``calibration``: apply one of the loaded aligner's boundary tables, all fitted on its
    training voices' labels (see :mod:`~speechattn.recipes.align.calibrate`):
    ``"consensus"`` (one offset per boundary class that every training engine's labels agree
    with: the shift closest to 0 when all engines are late the same way, else none),
    ``"engines"`` (one offset per boundary class, the median over the training engines, each
    counting once), ``"contexts"`` (or ``True``; per phone context, pooled over the training
    utterances); ``"none"``/``None``/``False``: none; ``"auto"`` (the default): the consensus
    table when the aligner has one and ``reverse_pass`` is off (the tables were fitted with the
    forward decoding), else none. A model trained from scratch here has none.

    Output folder: ``out`` holds one run (see :mod:`~speechattn.recipes.align.outputs`). Running
    again with the same corpus, settings and seed resumes; anything else raises
    :class:`~speechattn.recipes.align.outputs.OutputFolderError` unless ``overwrite``, which
    first deletes the earlier run's outputs. Alignment files this run did not write are removed
    from ``out/alignments`` with a note, so none sits beside the new ones.

    Unusable files (undecodable, shorter than one frame, NaN samples, silent, no pronounceable
    text) are skipped with one warning each and counted in the summary; a ``ValueError`` only
    when nothing usable is left. ``formats``: any of ``textgrid``, ``json``, ``ctm``.
    """
    from speechattn.data.audio import multichannel_files
    from speechattn.data.corpus import load_corpus
    from speechattn.recipes.align.pauses import (
        DEFAULT_PAUSE_SKIP,
        check_pause_mode,
    )

    check_pause_mode(pauses)
    if calibration is True:
        calibration = "contexts"
    if calibration is False or calibration is None:
        calibration = "none"
    if calibration not in CALIBRATIONS:
        raise ValueError(f"Expected calibration in {CALIBRATIONS}; found {calibration!r}.")
    min_pause = DEFAULT_MIN_PAUSE_S if min_pause_s is None else float(min_pause_s)
    if not min_pause >= 0:
        raise ValueError(f"Expected min_pause_s >= 0; found {min_pause_s}.")
    if max_pause_loudness is not None and not 0 <= max_pause_loudness < float("inf"):
        raise ValueError(
            f"Expected max_pause_loudness >= 0 (finite) or None; found {max_pause_loudness}."
        )
    silence_edge_db = check_silence_edge_db(silence_edge_db)
    if not isinstance(endpoint, bool):
        raise TypeError(f"Expected endpoint as a bool; found {endpoint!r}.")
    refine_radius_s = check_refine_radius_s(refine_radius_s)
    refine_fraction = check_refine_fraction(refine_fraction)
    checked = check_adapt_members(adapt_members)
    collapse_retries = check_collapse_retries(collapse_retries)
    if collapse_check_at is not None and not from_scratch:
        raise ValueError(
            "Expected collapse_check_at with from_scratch=True (it stops a new aligner's "
            f"training early); found collapse_check_at={collapse_check_at!r} without it."
        )
    adapt_first: int | None = None if checked == "all" else int(checked)  # None: every member
    overrides = dict(train_overrides or {})
    stop_fields = {f.name for f in dataclasses.fields(AdaptStop)}
    stop_rule = AdaptStop(**{k: overrides.pop(k) for k in list(overrides) if k in stop_fields})
    torch.set_num_threads(max(1, threads))
    from speechattn.recipes.align.evaluate import ALIGNMENT_FORMATS

    if not formats or any(f not in ALIGNMENT_FORMATS for f in formats):  # before any work
        raise ValueError(f"Expected formats from {ALIGNMENT_FORMATS}; found {tuple(formats)!r}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    corpus_problems: list[str] = []
    utts = load_corpus(data, problems=corpus_problems)
    rank, world = dist_info()
    recordings = list(dict.fromkeys(u.audio_path for u in utts))  # segments share one
    if rank == 0 and (multi := multichannel_files(recordings)):
        log(
            f"{len(multi)} of {len(recordings)} recordings have 2 or more channels (e.g. {multi[0]}): "
            "each is mixed down to mono (channels averaged)"
        )
    if from_scratch:
        feats = FeatureConfig(word_silences=word_silences)
        symbols = new_symbol_table()
        mcfg = AlignerConfig(kind=kind, num_symbols=64, n_mels=feats.n_mels)  # symbols: below
        inits: list[dict] | None = None
        shipped_offsets = None
        tables: dict[str, BoundaryOffsets | None] = {}
        n_steps = steps if steps is not None else 600
        check_collapse_check_at(collapse_check_at, steps=n_steps)
        mode = "from-scratch"
        init_id = None
    else:
        paths = (
            [DEFAULT_ASSET]
            if checkpoint is None
            else [Path(checkpoint)]
            if isinstance(checkpoint, (str, Path))
            else [Path(c) for c in checkpoint]
        )
        loaded, symbols, feats, info = load_aligners(paths)
        members = _members(loaded)
        tables = {
            name: BoundaryOffsets.from_dict(info.get(key))
            for name, key in _CALIBRATION_KEYS.items()
        }
        if calibration == "auto":
            # The tables were fitted with the forward decoding: none applies to a reverse pass.
            usable = tables["consensus"] is not None and not reverse_pass
            calibration = "consensus" if usable else "none"
        shipped_offsets = tables.get(calibration if calibration != "none" else "contexts")
        mcfg = loaded.config
        inits = [m.state_dict() for m in members]
        if adapt and adapt_first is not None and adapt_first > len(members):
            raise ValueError(
                f"Expected adapt_members <= {len(members)} (the members of the aligner); found "
                f"{adapt_first}."
            )
        default_steps = ENSEMBLE_ADAPT_STEPS if len(members) > 1 else ADAPT_MAX_STEPS
        n_steps = (steps if steps is not None else default_steps) if adapt else 0
        mode = "adapt" if adapt else "apply"
        init_id = ",".join(file_digest(p) for p in paths)
        model: TextMelAligner | AlignerEnsemble = loaded
    if from_scratch and calibration == "auto":
        calibration = "none"
    if calibration != "none" and shipped_offsets is None:
        raise ValueError(
            f"Expected an aligner with a boundary calibration table ({calibration}) for "
            "--calibration; found "
            + (
                "a new aligner (--from-scratch has none)."
                if from_scratch
                else f"none in {', '.join(map(str, paths))}"
                + (
                    " (several files: no member's table fits the pooled decoding; "
                    "`speechattn combine-aligners ... --corpus` fits the ensemble's own)."
                    if len(paths) > 1
                    else "."
                )
            )
            + " Drop --calibration, or use the shipped aligner alone (it has all three tables:"
            " contexts, engines, consensus)."
        )
    offs = shipped_offsets if calibration != "none" else None
    if prior is not None:
        if mcfg.kind != "mha":
            raise ValueError(
                f"Expected a plain-MHA aligner for prior={prior!r}; found kind={mcfg.kind!r}. "
                "Use --from-scratch --kind mha, or a checkpoint of an MHA aligner."
            )
        if inits is not None and len(inits) > 1:
            raise ValueError(
                f"Expected one MHA aligner for prior={prior!r}; found an ensemble of "
                f"{len(inits)}. Pass one --checkpoint."
            )
        mcfg = dataclasses.replace(mcfg, mha_prior=prior)
        if inits is not None:  # the loaded MHA aligner, now with this prior
            model = TextMelAligner(mcfg)
            model.load_state_dict(inits[0])
            model.eval()

    def run_record() -> dict[str, Any]:
        return {
            "corpus": corpus_fingerprint(utts),
            "symbols": sorted(symbols, key=lambda k: symbols[k]),
            "model_config": mcfg.to_dict(),
            **({"members": len(inits)} if inits is not None and len(inits) > 1 else {}),
            **(
                {"adapt_members": adapt_first}
                if adapt and inits is not None and adapt_first is not None
                else {}
            ),
            "features": feats.to_dict(),
            "seed": int(seed),
            "mode": mode,
            "init": init_id,
        }

    # A folder that holds another run is refused before the features are computed (read only;
    # rank 0, as prepare_output below: one error line, and torchrun then stops the other ranks);
    # a new symbol table (--from-scratch) and the model config that depends on it are known only
    # after that, and prepare_output compares them too.
    if rank == 0:
        unknown = ("symbols", "model_config") if from_scratch else ()
        check_output(out, run_record(), overwrite=overwrite, unknown=unknown)
    items = build_items(
        utts,
        symbols,
        feats,
        grow_symbols=from_scratch,
        progress=progress and rank == 0,
        voice=corpus_voice,
        envelopes=silence_edge_db is not None,
        dereverb=dereverb,
    )
    if from_scratch:
        mcfg = dataclasses.replace(mcfg, num_symbols=max(64, len(symbols)))
    skipped = len(corpus_problems) + len(utts) - len(items)
    if not items:
        raise ValueError(
            f"No usable utterance in {data}: all {skipped} were skipped (see the warnings "
            "above); fix or remove those files."
        )
    record = run_record()
    if rank == 0:
        state = prepare_output(out, record, overwrite=overwrite)
        if state == "resume":
            log(f"{out} holds this run already: continuing it")
        elif state == "overwrite":
            log(f"--overwrite: removed the earlier run's outputs from {out}")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # the other ranks wait until rank 0 has checked or cleared the folder
    cut = {u.recording for u in utts if u.start is not None}
    log(
        f"{len(items)} utterances from {data}"
        + (f" (segments of {len(cut)} recordings)" if cut else "")
        + (f" ({skipped} skipped, see the warnings above)" if skipped else "")
    )
    adaptation: dict[str, Any] = {}
    trained_here = from_scratch and n_steps > 0  # a new aligner, trained on this corpus
    # The early collapse check (collapse_check_at): where restarts are made (one process, not MHA).
    check_at = collapse_check_at if trained_here and world == 1 and mcfg.kind != "mha" else None
    first_stop: StoppedEarly | None = None

    def early_hooks(k: int, seed_k: int) -> dict[str, Any]:
        """train_aligner's hook arguments of the early check for attempt ``k`` ({}: off)."""
        if check_at is None:
            return {}
        on_eval, every, stop = early_check_hooks(
            lambda net: align_items(net, early_check_sample(items), feats),
            check_at=int(check_at),
            who=f"aligner {mcfg.kind} seed {seed}" + (f" restart {k} (seed {seed_k})" if k else ""),
            log=log,
        )
        return {"on_eval": on_eval, "eval_every": every, "should_stop": stop}

    if n_steps > 0:
        adapting = inits is not None
        if adapting:
            tcfg = TrainConfig(
                steps=n_steps,
                seed=seed,
                lr=ADAPT_LR,
                warmup=10,
                schedule="constant",
                max_seconds=ADAPT_MAX_SECONDS,
            )
        else:
            tcfg = TrainConfig(steps=n_steps, seed=seed, lr=2e-3, warmup=10)
        if overrides:
            tcfg = dataclasses.replace(tcfg, **overrides)
        # An ensemble adapts each member in turn, the same way (its own checkpoint, stop and caps);
        # with adapt_members=N only the first N, the others are kept as loaded.
        starts: list[dict | None] = list(inits) if inits is not None else [None]
        n_adapt = len(starts) if adapt_first is None or not adapting else adapt_first
        trained, done_steps, whys = [], [], []
        for i, init in enumerate(starts):
            if i >= n_adapt:
                trained.append(_members(model)[i])
                continue
            tag = f" {i + 1}/{len(starts)}" if len(starts) > 1 else ""
            res = train_aligner(
                _members(model)[i].config if inits is not None else mcfg,
                items,
                tcfg,
                checkpoint=out / "checkpoints" / ("aligner.pt" if i == 0 else f"aligner-{i}.pt"),
                extra_state={"symbols": symbols, "features": feats.to_dict(), "run": record},
                init_state=init,
                progress=progress,
                desc=("adapt" if adapting else "train") + tag,
                **(early_hooks(0, int(seed)) or {"should_stop": stop_rule if adapting else None}),
            )
            if check_at is not None:
                first_stop = stopped_early(res.history)
            if res.resumed_from:
                log(f"resumed{tag} from step {res.resumed_from} of {tcfg.steps}")
            trained.append(res.model)
            done = len(res.history)
            if adapting:
                if done < tcfg.steps and stop_rule(res.history):
                    best, _ = stop_rule.best_step(res.history)
                    why = (
                        f"objective flat since step {best} (patience {stop_rule.patience}, "
                        f"smoothing {stop_rule.smoothing})"
                    )
                elif done < tcfg.steps:
                    why = f"time cap ({tcfg.max_seconds:g} s, --set max_seconds)"
                elif steps is None and len(starts) > 1:
                    why = f"step cap ({tcfg.steps} per member of an ensemble, --steps)"
                else:
                    why = f"step cap ({tcfg.steps}, --steps)"
                log(f"adaptation{tag}: {done} steps at lr {tcfg.lr:g}, stopped: {why}")
                done_steps.append(done)
                whys.append(why)
        if adapting and n_adapt < len(starts):
            log(f"{_adapted_members_text(n_adapt, len(starts))} (adapt_members={n_adapt})")
        if len(trained) > 1 and isinstance(model, AlignerEnsemble):
            model = AlignerEnsemble(trained, combine=model.combine).eval()
        else:
            model = trained[0]
        if adapting:
            adaptation = {
                "steps": done_steps[0] if len(done_steps) == 1 else "+".join(map(str, done_steps)),
                "stopped": "; ".join(dict.fromkeys(whys)),
                "lr": tcfg.lr,
                "members": _adapted_members_text(n_adapt, len(starts)),
            }
    if world > 1:
        # The ranks' shared work ends here: rank 0 aligns the corpus and writes the outputs
        # alone, without the group (ended the safe way, so no rank waits on it meanwhile).
        end_process_group(ok=True)
    if rank != 0:
        return {}
    # "auto": an optional pause token between every two words, adapted or not. (The espeak-only
    # aligner shipped before scored worse with them unadapted on clean audio; the multi-engine
    # one scores better, on engines held out of its training: benchmarks/RESULTS.md, "Pause
    # decoding for the multi-engine aligner".)
    envelopes = item_envelopes(items, utts, feats) if silence_edge_db is not None else None
    transitions = (
        item_transitions(items, utts, feats.sample_rate) if refine_radius_s is not None else None
    )

    def decode(decoded: TextMelAligner | AlignerEnsemble) -> list[AlignmentResult]:
        """The corpus's alignments by ``decoded`` (its outputs are written from these)."""
        return align_items(
            decoded,
            items,
            feats,
            keep_soft=2,
            offsets=offs,
            pauses=pauses,
            pause_skip=DEFAULT_PAUSE_SKIP,
            min_pause_frames=min_pause_frames(min_pause, feats.frame_s),
            max_pause_loudness=max_pause_loudness,
            reverse_pass=reverse_pass,
            silence_edge_db=silence_edge_db,
            envelopes=envelopes,
            endpoint=endpoint,
            refine_radius_s=refine_radius_s,
            refine_fraction=refine_fraction,
            transitions=transitions,
        )

    # (an early-stopped first attempt is not decoded: a restart replaces it)
    results = decode(model) if first_stop is None else []
    restarts: list[CollapseAttempt] = []
    kept_try = 0
    if trained_here:
        # Collapse sign of the aligner trained from scratch (label-free, benchmarks/RESULTS.md
        # "collapse"), on the decoding above: its training utterances. A flagged aligner is
        # trained again with a restart seed (one process only: under torchrun the other ranks
        # have left; no threshold was checked on MHA): the lowest sign's attempt is kept.
        retries = collapse_retries if world == 1 and mcfg.kind != "mha" else 0
        first = (model, results)

        def train_k(
            k: int, seed_k: int, early: bool
        ) -> tuple[tuple[TextMelAligner | AlignerEnsemble, list[AlignmentResult]], list]:
            """Train attempt ``k`` (0: only to finish an early-stopped first attempt)."""
            res = train_aligner(
                mcfg,
                items,
                dataclasses.replace(tcfg, seed=seed_k),
                checkpoint=out
                / "checkpoints"
                / ("aligner.pt" if k == 0 else f"aligner-restart{k}.pt"),
                extra_state={"symbols": symbols, "features": feats.to_dict(), "run": record},
                progress=progress,
                desc="train" + (f" restart {k}" if k else ""),
                **(early_hooks(k, seed_k) if early else {}),
            )
            if res.resumed_from:
                log(
                    ("resumed" + (f" restart {k}" if k else ""))
                    + f" from step {res.resumed_from} of {tcfg.steps}"
                )
            stop = stopped_early(res.history) if early and check_at is not None else None
            if stop is not None:
                raise stop
            again = decode(res.model)
            return (res.model, again), again

        def attempt(
            k: int, seed_k: int
        ) -> tuple[tuple[TextMelAligner | AlignerEnsemble, list[AlignmentResult]], list]:
            if k == 0:
                if first_stop is not None:
                    raise first_stop
                return first, first[1]
            return train_k(k, seed_k, True)

        (model, results), restarts, kept_try = train_with_restarts(
            attempt,
            kind=mcfg.kind,
            seed=int(seed),
            retries=retries,
            log=log,
            finish=lambda k, seed_k: train_k(k, seed_k, False),
        )
    if offs is not None:
        what = (
            f"{len(offs.classes)} boundary classes, engines {', '.join(offs.groups)}"
            if offs.classes
            else f"{len(offs.pair)} contexts"
        )
        log(
            f"boundary calibration ({calibration}): {what} (fitted on the aligner's training labels)"
        )
    written = _write_alignments(results, utts, out / "alignments", feats, formats)
    stale = remove_stale_alignments(out / "alignments", written)
    if stale:
        warnings.warn(
            f"removed {len(stale)} alignment file(s) from {out / 'alignments'} that this run did "
            f"not write (e.g. {stale[0].name}; an earlier format)",
            stacklevel=2,
        )
    table = {"corpus": {ALIGNER_NAMES.get(model.config.kind, model.config.kind): score(results)}}
    if any(it.gt_phones is not None for it in items):
        table["corpus"]["uniform"] = score(align_items("uniform", items, feats))
    save_aligner(
        out / "aligner.pt",
        model,
        symbols,
        feats,
        {
            "trained_by": "speechattn align",
            **(
                {"collapse_restarts": _attempts_record(restarts, kept_try)}
                if len(restarts) > 1
                else {}
            ),
            **{
                key: (t.to_dict() if (t := tables.get(name)) is not None else None)
                for name, key in _CALIBRATION_KEYS.items()
            },
        },
    )
    summary = {
        "utterances": len(results),
        "skipped": skipped,
        "alignments": str(out / "alignments"),
        "formats": ",".join(formats),
        "boundary calibration": f"on ({calibration})" if offs is not None else "off",
        "pauses": f"{pauses}, {sum(len(r.pauses) for r in results)} pause intervals",
        "decoding": "forward + reversed, midway" if reverse_pass else "forward",
        "silence edges": (
            f"energy envelope, {silence_edge_db:g} dB under the speech level"
            + (", utterance ends within the speech onset/offset" if endpoint else "")
            if silence_edge_db is not None
            else "as decoded"
        ),
        "boundaries inside speech": (
            f"spectral change within {refine_radius_s * 1000:g} ms"
            + (f", {refine_fraction:g} of the way" if refine_fraction < 1.0 else "")
            if refine_radius_s is not None
            else "as decoded"
        ),
        "late reverberation": (
            f"removed from {sum(1 for it in items if it.extra.get('rt60_s', 0.0) > 0)} "
            "recordings (estimated RT60 >= "
            f"{DEREVERB_MIN_RT60_S:g} s)"
            if dereverb
            else "off"
        ),
    }
    if restarts:
        summary[LONGEST_PHONE_FIELD] = f"{restarts[kept_try].longest_phone_ms:.0f} ms"
    elif adaptation and isinstance(model, TextMelAligner) and model.config.kind != "mha":
        # One adapted aligner: the decoding above is its own decoding of the corpus it adapted
        # on, so its collapse sign costs nothing (an ensemble's decoding pools its members: a
        # member's sign would need a decoding pass of its own, not made here).
        value = longest_phone_median_ms(results)
        summary[LONGEST_PHONE_FIELD] = f"{value:.0f} ms"
        log(
            f"adapted aligner {model.config.kind} seed {seed}: longest aligned phone, median over "
            f"{sum(1 for r in results if r.phones)} adaptation utterances: {value:.0f} ms"
        )
        if value > COLLAPSE_LONGEST_PHONE_MS:
            warnings.warn(
                f"adapted aligner {model.config.kind} seed {seed} looks collapsed ({value:.0f} ms "
                f"> {COLLAPSE_LONGEST_PHONE_MS:g} ms: {COLLAPSE_WHY}); adapt again with "
                "another --seed or fewer --steps, or apply the aligner as it is (--no-adapt)",
                UserWarning,
                stacklevel=2,
            )
    if len(restarts) > 1:
        summary[COLLAPSE_RESTARTS_FIELD] = _attempts_text(restarts, kept_try)
    if adaptation:
        summary["adaptation"] = (
            f"{adaptation['steps']} steps, lr {adaptation['lr']:g}, stopped: {adaptation['stopped']}"
            + (f"; {adaptation['members']}" if adaptation["members"] else "")
        )
    ex = {"aligner": results[0]} if results else {}
    notes = (
        [
            f"{skipped} file(s) of the corpus were skipped (unreadable, too short, NaN samples, "
            "silent or without pronounceable text); the command's warnings name each one."
        ]
        if skipped
        else []
    )
    notes += left_out_notes(table)
    report = write_report_safe(out, table, ex, {}, feats, summary, notes)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return {"report": report, "table": table, "summary": summary}
