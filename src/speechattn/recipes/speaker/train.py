"""Training speaker encoders: resumable, seeded, multi-process (torchrun), mixed precision on GPU.

:func:`train_encoder` trains one encoder with an AAM-softmax head on random variable-length crops.
:func:`run_speaker` is the whole recipe: corpus (synthesised, or a real one), held-out speakers or
a trial list, one encoder per pooling, the baseline, ``report.html`` and ``results.json``.

Resuming: every ``checkpoint_every`` steps, at the end and (in one process) on Ctrl-C the
encoder, head, optimiser, scheduler, batch RNG and losses of a pooling go to
``OUT/checkpoints/<pooling>.pt`` (atomic replace; only tensors and plain data, read back with
``weights_only=True``). Running the same
command again continues from there and draws the same batches as an uninterrupted run. A
checkpoint of another run (config, corpus, pooling or number of processes differ) is never
resumed: :class:`ResumeMismatch` says what differs; ``overwrite=True`` starts afresh.

Multi-process: under ``torchrun`` (``WORLD_SIZE > 1``) the process group uses gloo on CPU or NCCL
on CUDA; each rank draws its own crops and gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel`; rank 0 writes checkpoints and reports.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from speechattn._io import atomic_write, write_text_atomic
from speechattn.recipes.speaker.config import SpeakerConfig
from speechattn.recipes.speaker.data import (
    SpeakerUtterance,
    commercial_filter,
    corpus_fingerprint,
    load_feature_set,
    load_speaker_corpus,
    random_crops,
    read_trials,
    speech_frames,
)
from speechattn.recipes.speaker.evaluate import (
    centre_embeddings,
    compute_eer,
    compute_min_dcf,
    det_png,
    embed_features,
    error_rates,
    pair_trials,
    stats_baseline,
    trial_features,
    write_report,
)
from speechattn.recipes.speaker.model import AAMSoftmax, SpeakerEncoder, build_encoder, save_encoder

__all__ = [
    "ResumeMismatch",
    "TrainResult",
    "dist_info",
    "run_speaker",
    "train_encoder",
]

_TRAIN_FORMAT = "speechattn-speaker-train-v1"
# Config fields that do not change what one pooling's training computes.
_NOT_IN_FINGERPRINT = ("poolings", "checkpoint_every")


class ResumeMismatch(ValueError):
    """An output folder holds a checkpoint or corpus of another run."""


class TrainResult(NamedTuple):
    """A trained encoder and how its training went.

    Attributes:
        model: the encoder, in eval mode, on its training device.
        losses: the loss of every step's batch (noisy: random crops, margin warm-up).
        resumed_from: the step training resumed from (0 for a fresh run).
        probe_start: AAM loss (full margin, eval mode) of a fixed probe batch before training.
        probe_end: the same after training: a noise-free measure of progress.
    """

    model: SpeakerEncoder
    losses: list[float]
    resumed_from: int
    probe_start: float
    probe_end: float


def dist_info() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


class _TrainStep(nn.Module):
    """Encoder + AAM head in one module so DistributedDataParallel wraps a single forward."""

    def __init__(self, model: SpeakerEncoder, head: AAMSoftmax) -> None:
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, x: Tensor, lengths: Tensor, labels: Tensor, margin: float) -> Tensor:
        return self.head(self.model(x, lengths), labels, margin)


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} {a!r} -> {b!r}")
    return out


def _run_fingerprint(
    cfg: SpeakerConfig, pooling: str, fingerprint: dict[str, Any] | None, world: int
) -> dict[str, Any]:
    """What identifies one encoder's training run, but for its number of classes (known once
    the features are computed)."""
    return {
        **(fingerprint or {}),
        "config": {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IN_FINGERPRINT},
        "pooling": pooling,
        "world": world,
    }


def _refuse_other_run(
    path: Path, saved: dict[str, Any], now: dict[str, Any], *, known_only: bool = False
) -> None:
    """:class:`ResumeMismatch` when ``now`` differs from the checkpoint's fingerprint (with
    ``known_only``: in the fields ``now`` has, the others not being known yet)."""
    diff = _differences({k: v for k, v in saved.items() if k in now or not known_only}, now)
    if diff:
        raise ResumeMismatch(
            f"{path} belongs to another run ({'; '.join(diff[:4])}); pass --overwrite "
            "to start afresh or choose another --out."
        )


def _load_train_checkpoint(path: Path) -> dict[str, Any]:
    import pickle

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ResumeMismatch(
            f"{path}: not a loadable training checkpoint ({type(exc).__name__}); pass --overwrite "
            "to start afresh or choose another --out."
        ) from exc
    if not isinstance(ck, dict) or ck.get("format") != _TRAIN_FORMAT:
        raise ResumeMismatch(
            f"{path}: not a speaker training checkpoint; pass --overwrite or another --out."
        )
    return ck


def train_encoder(
    pooling: str,
    feats: Sequence[Tensor],
    labels: Sequence[int],
    cfg: SpeakerConfig,
    *,
    progress: bool = True,
    checkpoint: Path | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> TrainResult:
    """Train one encoder with AAM softmax on random variable-length crops.

    Args:
        pooling: a name of :data:`~speechattn.nn.pooling.POOLINGS`.
        feats: training features ``(T_i, n_mels)`` (with ``cfg.vad``, each item's non-speech
            frames are dropped first, :func:`~speechattn.recipes.speaker.data.speech_frames`).
        labels: class index of each item, ``0 <= label < num_classes``.
        cfg: model and optimisation settings (``seed`` fixes weights and batches).
        progress: a progress bar on rank 0.
        checkpoint: resumable checkpoint path (None: no checkpointing).
        fingerprint: what else identifies the run (the corpus); with ``cfg`` (but for
            ``poolings`` and ``checkpoint_every``), ``pooling``, the number of processes and
            classes it must match a checkpoint's, else the checkpoint is refused.

    Raises:
        ResumeMismatch: ``checkpoint`` exists and belongs to another run.
    """
    rank, world = dist_info()
    device = _device()
    if cfg.vad:
        feats = [speech_frames(f, cfg) for f in feats]
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    num_classes = max(labels) + 1
    model = build_encoder(cfg, pooling).to(device)
    head = AAMSoftmax(cfg.embed_dim, num_classes, margin=cfg.margin, scale=cfg.scale).to(device)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.15
    )
    probe_idx = list(range(0, len(feats), max(1, len(feats) // 64)))[:64]
    probe_x, probe_len = random_crops(feats, probe_idx, random.Random(cfg.seed + 7), cfg)
    probe_y = torch.tensor([labels[i] for i in probe_idx], device=device)

    @torch.no_grad()
    def probe() -> float:
        model.eval()
        loss = head(model(probe_x.to(device), probe_len.to(device)), probe_y)
        model.train()
        return float(loss)

    probe_start = probe()
    rng = random.Random(cfg.seed * 1000 + rank)
    losses: list[float] = []
    step0 = 0
    fp = {**_run_fingerprint(cfg, pooling, fingerprint, world), "classes": num_classes}
    if checkpoint is not None and checkpoint.is_file():
        ck = _load_train_checkpoint(checkpoint)
        _refuse_other_run(checkpoint, ck.get("fingerprint", {}), fp)
        model.load_state_dict(ck["model"])
        head.load_state_dict(ck["head"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        rng.setstate(ck["rng"][rank] if rank < len(ck["rng"]) else ck["rng"][0])
        losses = list(ck["losses"])
        step0 = int(ck["step"])
        probe_start = float(ck["probe_start"])
    train_mod: nn.Module = _TrainStep(model, head)
    if world > 1:
        train_mod = nn.parallel.DistributedDataParallel(train_mod)
    use_amp = cfg.amp and device.type == "cuda"

    def save(step: int, rng_state: Any = None) -> None:
        if checkpoint is None:
            return
        states: list[Any] = [rng.getstate() if rng_state is None else rng_state]
        if world > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, rng.getstate())
            states = gathered
        if rank != 0:
            return
        with atomic_write(checkpoint) as tmp:
            torch.save(
                {
                    "format": _TRAIN_FORMAT,
                    "fingerprint": fp,
                    "step": step,
                    "model": model.state_dict(),
                    "head": head.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "rng": states,
                    "losses": losses,
                    "probe_start": probe_start,
                },
                tmp,
            )

    from tqdm import tqdm

    bar = tqdm(
        total=cfg.steps,
        initial=step0,
        desc=f"train {pooling}",
        disable=not progress or rank != 0,
        leave=False,
    )
    model.train()
    # Steps done, the batch RNG's state after them, and whether an update is being applied (a
    # Ctrl-C there would leave a half-applied step: the last periodic checkpoint stands).
    done: dict[str, Any] = {"step": step0, "rng": rng.getstate(), "updating": False}
    try:
        for step in range(step0, cfg.steps):
            idx = [rng.randrange(len(feats)) for _ in range(cfg.batch_size)]
            x, lengths = random_crops(feats, idx, rng, cfg)
            y = torch.tensor([labels[i] for i in idx], device=device)
            margin = cfg.margin * min(1.0, step / max(1, cfg.steps // 3))  # margin warm-up
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = train_mod(x.to(device), lengths.to(device), y, margin)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            done["updating"] = True
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            done["rng"], done["step"] = rng.getstate(), step + 1
            done["updating"] = False
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                save(step + 1)
    except KeyboardInterrupt:
        bar.close()
        # One process: keep the steps done since the last checkpoint (under torchrun the ranks
        # stop at different points, and saving needs every rank: the last checkpoint stands).
        if world == 1 and not done["updating"] and done["step"] > step0:
            save(done["step"], done["rng"])
        raise
    bar.close()
    if step0 < cfg.steps or not (checkpoint is not None and checkpoint.is_file()):
        save(cfg.steps)
    probe_end = probe()
    model.eval()
    return TrainResult(model, losses, step0, probe_start, probe_end)


# ---------------------------------------------------------------------------------------------
# The recipe


def _synth_params(cfg: SpeakerConfig) -> dict[str, Any]:
    n = cfg.train_speakers + cfg.test_speakers
    return {
        "speakers": n,
        "utterances": n * cfg.utterances_per_speaker,
        "seed": cfg.seed,
        "sample_rate": cfg.sample_rate,
    }


def _synthesise(out: Path, cfg: SpeakerConfig, *, overwrite: bool, progress: bool) -> Path:
    """``OUT/corpus`` for ``cfg`` (made once; refused when it was made for other settings)."""
    corpus = out / "corpus"
    stamp = corpus / "speaker_synth.json"
    want = _synth_params(cfg)
    if (corpus / "manifest.jsonl").is_file():
        have = json.loads(stamp.read_text()) if stamp.is_file() else None
        if have is None or have == want:  # (no stamp: made by an older version; reused)
            return corpus / "manifest.jsonl"
        if not overwrite:
            raise ResumeMismatch(
                f"{corpus} was synthesised for other settings "
                f"({'; '.join(_differences(have, want))}); pass --overwrite to remake it or "
                "choose another --out."
            )
        shutil.rmtree(corpus)
    from speechattn.data.synth import synth_corpus

    synth_corpus(
        corpus,
        utterances=want["utterances"],
        speakers=want["speakers"],
        seed=cfg.seed,
        sample_rate=cfg.sample_rate,
        progress=progress,
    )
    write_text_atomic(stamp, json.dumps(want))
    return corpus / "manifest.jsonl"


def _split(
    utts: Sequence[SpeakerUtterance], cfg: SpeakerConfig, *, held_out: bool
) -> tuple[list[str], set[str]]:
    """Training identities and held-out identities (none when ``held_out`` is False)."""
    ids = sorted({u.label for u in utts})
    if not held_out:
        if len(ids) < 2:
            raise ValueError(f"Expected a corpus with at least 2 speakers; found {len(ids)}.")
        return ids, set()
    rng = random.Random(cfg.seed)
    rng.shuffle(ids)
    if len(ids) < 4:
        raise ValueError(
            f"Expected a corpus with at least 4 speakers (2 to train, 2 held out); found {len(ids)}."
        )
    n_spk = cfg.train_speakers + cfg.test_speakers
    n_test = cfg.test_speakers if len(ids) >= n_spk else min(cfg.test_speakers, len(ids) // 3)
    n_test = max(2, n_test)
    test = set(ids[:n_test])
    return sorted(i for i in ids if i not in test), test


def run_speaker(
    cfg: SpeakerConfig,
    out_dir: str | os.PathLike[str],
    *,
    corpus: str | os.PathLike[str] | None = None,
    trials: str | os.PathLike[str] | None = None,
    trials_root: str | os.PathLike[str] | None = None,
    save_checkpoint: str | os.PathLike[str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    on_skip: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one encoder per pooling; write ``report.html`` and ``results.json``.

    Args:
        cfg: the run's settings.
        out_dir: where the corpus (when synthesised), checkpoints and reports go.
        corpus: a speaker corpus (:func:`~speechattn.recipes.speaker.data.load_speaker_corpus`);
            None synthesises espeak voices into ``OUT/corpus``.
        trials: a VoxCeleb-format trial list; then every corpus speaker trains and the trials
            are scored. Without it, ``cfg.test_speakers`` speakers are held out and every pair
            of their utterances is a trial; ``test_speakers=0`` trains on every speaker and
            scores nothing (EER and minDCF are NaN: for a final model, e.g. the shipped one).
        trials_root: folder the trial paths are relative to (default: ``corpus``'s folder).
        save_checkpoint: save the encoder with the lowest EER here.
        progress: progress bars.
        overwrite: discard checkpoints / a synthesised corpus of another run in ``out_dir``.
        on_skip: called ``(path, reason)`` for each unusable audio file (default: a warning).

    Returns:
        The results dict (also in ``results.json``).

    Raises:
        ResumeMismatch: ``out_dir`` holds another run's checkpoints and ``overwrite`` is False.
        ValueError: bad config, too few speakers, unreadable corpus or trial list.
    """
    import torch.distributed as dist

    cfg.validated()
    rank, world = dist_info()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ck_dir = out / "checkpoints"
    if overwrite and rank == 0:
        shutil.rmtree(ck_dir, ignore_errors=True)
        for name in ("results.json", "report.html"):
            (out / name).unlink(missing_ok=True)
    source = Path(corpus) if corpus is not None else out / "corpus" / "manifest.jsonl"
    if corpus is None and rank == 0:
        source = _synthesise(out, cfg, overwrite=overwrite, progress=progress)
    if world > 1:
        dist.barrier()  # the corpus exists and stale checkpoints are gone on every rank
    utts = load_speaker_corpus(source)
    dropped: list[str] = []
    if cfg.commercial_only:
        utts, dropped = commercial_filter(utts)
        if not utts:
            raise ValueError(
                f"{source}: no entry is left with commercial_only=true (dropped voices: "
                f"{', '.join(dropped)}); train on voices whose licence allows commercial use."
            )
    fingerprint = {
        "corpus": corpus_fingerprint(utts),
        "trials": None if trials is None else str(trials),
    }
    if not overwrite:  # another run's checkpoint is refused before the features are computed
        for name in cfg.poolings:
            path = ck_dir / f"{name}.pt"
            if path.is_file():
                saved = _load_train_checkpoint(path).get("fingerprint", {})
                now = _run_fingerprint(cfg, name, fingerprint, world)
                _refuse_other_run(path, saved, now, known_only=True)
    evaluate = trials is not None or cfg.test_speakers > 0
    train_ids, test_ids = _split(utts, cfg, held_out=trials is None and evaluate)
    fs = load_feature_set(
        utts,
        cfg,
        train_labels=set(train_ids),
        on_skip=on_skip if rank == 0 else (lambda p, r: None),
        progress=progress and rank == 0,
    )
    classes = sorted({lab for lab in fs.labels if lab not in test_ids})
    label_of = {v: i for i, v in enumerate(classes)}
    tr = [i for i, s in enumerate(fs.labels) if s in label_of]
    train_feats, train_labels = [fs.feats[i] for i in tr], [label_of[fs.labels[i]] for i in tr]
    if len({train_labels[i] for i in range(len(train_labels))}) < 2:
        raise ValueError("Expected usable training audio of at least 2 speakers; found fewer.")

    if trials is not None:
        root = (
            trials_root
            if trials_root is not None
            else (source if source.is_dir() else source.parent)
        )
        malformed: list[str] = []
        trial_list = read_trials(trials, root, problems=malformed)
        ts = trial_features(trial_list, cfg, on_skip=on_skip if rank == 0 else (lambda p, r: None))
        skipped_trials: int | None = ts.skipped_trials + len(malformed)
        test_feats = ts.feats

        def score(emb: Tensor) -> tuple[np.ndarray, np.ndarray]:
            return ts.scores(emb), ts.labels

        n_trials, n_test_utts = len(ts.labels), len(test_feats)
    else:
        te = [i for i, s in enumerate(fs.labels) if s in test_ids]
        test_feats, test_spk = [fs.feats[i] for i in te], [fs.labels[i] for i in te]

        def score(emb: Tensor) -> tuple[np.ndarray, np.ndarray]:
            return pair_trials(emb, test_spk)

        n_test_utts = len(test_feats)
        n_trials = n_test_utts * (n_test_utts - 1) // 2
        skipped_trials, malformed = None, []

    rows: list[dict[str, Any]] = []
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if evaluate:
        s, lab = score(stats_baseline(test_feats))
        rows.append(
            {
                "pooling": "log-mel stats (no training)",
                "eer": compute_eer(s, lab),
                "min_dcf": compute_min_dcf(s, lab),
            }
        )
        pm, pf, _ = error_rates(s, lab)
        curves["log-mel stats"] = (pm, pf)
    best: tuple[float, SpeakerEncoder | None, str] = (math.inf, None, "")
    k = max(3, cfg.steps // 10)
    for name in cfg.poolings:
        t0 = time.perf_counter()
        res = train_encoder(
            name,
            train_feats,
            train_labels,
            cfg,
            progress=progress,
            checkpoint=ck_dir / f"{name}.pt",
            fingerprint=fingerprint,
        )
        train_s = time.perf_counter() - t0
        if rank != 0:
            continue
        model = res.model.cpu()
        eer = dcf = math.nan
        if evaluate:
            # centred on the test set's mean embedding, as `speechattn speaker score` scores
            emb = embed_features(model, test_feats, vad=cfg.vad, vad_range_db=cfg.vad_range_db)
            s, lab = score(centre_embeddings(emb))
            eer, dcf = compute_eer(s, lab), compute_min_dcf(s, lab)
            pm, pf, _ = error_rates(s, lab)
            curves[name] = (pm, pf)
        rows.append(
            {
                "pooling": name,
                "trunk": cfg.trunk,
                "eer": eer,
                "min_dcf": dcf,
                "params": sum(p.numel() for p in model.parameters()),
                "final_loss": float(np.mean(res.losses[-k:])),
                "first_loss": float(np.mean(res.losses[:k])),
                "losses": res.losses,
                "train_s": train_s,
                "resumed_from": res.resumed_from,
                "probe_loss_start": res.probe_start,
                "probe_loss_end": res.probe_end,
            }
        )
        if eer < best[0] or best[1] is None:  # (no evaluation: the first pooling)
            best = (eer, model, name)
    results: dict[str, Any] = {
        "config": cfg.to_dict(),
        "corpus": str(source),
        "trials": None if trials is None else str(trials),
        "train_voices": train_ids,
        "test_voices": sorted(test_ids),
        "num_training_classes": len(classes),
        "num_test_utterances": n_test_utts,
        "num_trials": n_trials,
        "skipped_trials": skipped_trials,  # malformed lines + trials with unusable audio
        "malformed_trial_lines": len(malformed),
        "skipped_files": [list(x) for x in fs.skipped],
        "dropped_voices": dropped,
        "rows": rows,
        "best": best[2],
    }
    if rank == 0:
        where = (
            f"the trials of {trials}"
            if trials is not None
            else f"{len(test_ids)} held-out voices ({n_test_utts} utterances)"
            if evaluate
            else "nothing (test_speakers=0: every speaker trains)"
        )
        notes = (
            f"{len(train_ids)} training voices ({len(classes)} classes with pseudo-speakers), "
            f"scored on {where}: {n_trials} cosine trials (encoder embeddings centred on the "
            f"test set's mean); each encoder ({cfg.trunk} trunk) trained "
            f"{cfg.steps} steps with AAM softmax (m={cfg.margin}, s={cfg.scale}) on random "
            f"{cfg.min_frames}-{cfg.max_frames} frame crops; {len(fs.skipped)} files skipped."
        )
        title = (
            "Speaker verification on a trial list"
            if trials is not None
            else "Speaker verification on held-out voices"
        )
        write_report(out / "report.html", rows, det_png(curves, title), cfg, notes, title=title)
        write_text_atomic(out / "results.json", json.dumps(results, indent=2))
        if save_checkpoint is not None and best[1] is not None:
            save_encoder(best[1], best[2], cfg, save_checkpoint)
    return results
