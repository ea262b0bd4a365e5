"""Training loop for the aligners: resumable (atomic checkpoints), seeded, DDP-ready, with progress bars.

Resuming: every ``checkpoint_every`` steps, at the end, and (in one process) on Ctrl-C the model,
optimiser, step, history and RNG state (every rank's) go to ``<out>/<name>.pt`` through a
temporary file and ``os.replace`` (atomic on POSIX), so an interrupted run that is started again
continues from the last checkpoint and loses at most ``checkpoint_every`` steps. A checkpoint is resumed only when it belongs to the same run
(model config, seed, optimisation settings but for ``steps``, number of processes, and every
entry of ``extra_state``: symbols, front end, corpus fingerprint);
otherwise :class:`CheckpointMismatch` says what differs. Checkpoints hold only tensors, dicts,
lists, numbers and strings, and are read with ``torch.load(..., weights_only=True)``: a file that
needs arbitrary unpickling is refused, never executed. Batches are drawn from a generator seeded by ``(seed, step)``, so a resumed
run sees the same batches as an uninterrupted one.

Multi-process: under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised on gloo (the
aligners train on the CPU); each rank takes a strided shard of every global batch of
``batch_size * world`` items and gradients are averaged by
:class:`torch.nn.parallel.DistributedDataParallel` (the ``mha`` kind's loss, a mean over the
batch's frames, is weighted on each rank by its share of the global batch's frames, so the
average is the global batch's gradient, as for the per-item means of ``sma`` and ``fs``); only
rank 0 writes checkpoints. The history
records the loss of the global batch (the mean over ranks), so every rank sees the same history,
and a stop (``should_stop``, ``max_seconds``) on any rank stops all of them at the same step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from speechattn._io import atomic_write
from speechattn.recipes._distributed import start_process_group
from speechattn.recipes.align.data import AlignItem, collate_items
from speechattn.recipes.align.model import AlignerConfig, TextMelAligner

__all__ = [
    "BATCHINGS",
    "CheckpointMismatch",
    "TrainConfig",
    "TrainResult",
    "dist_info",
    "load_checkpoint",
    "save_checkpoint",
    "train_aligner",
]


@dataclass
class TrainConfig:
    """Optimisation settings."""

    steps: int = 600
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup: int = 30
    grad_clip: float = 5.0
    seed: int = 0
    checkpoint_every: int = 50
    max_seconds: float | None = None
    # "cosine": warm-up, then cosine decay to 0.1 lr at ``steps``; "constant": warm-up, then lr
    # (for runs that stop on their objective rather than at a fixed step).
    schedule: str = "cosine"
    # How each step's batch is drawn (see BATCHINGS): "length" (neighbours in length order) or
    # "balanced" (an equal share from each group of items, e.g. each engine of a corpus).
    batching: str = "length"
    # > 0: over the first ``prior_warmup`` steps the learned token scores enter the emissions
    # scaled by (step + 1) / prior_warmup (kinds "sma" and "fs"; TextMelAligner.score_scale), so
    # the early alignments follow the diagonal log-prior rather than the initial weights; 0: off.
    prior_warmup: int = 0


# "length": a random anchor in length order and its neighbours (little padding; a corpus part whose
# utterances share a length range fills whole batches). "balanced": the groups (train_aligner's
# ``groups``, default each item's speaker) in a random order, ``batch_size // G`` items drawn at
# random from each (one more from the first ``batch_size % G``), so no group fills a batch.
BATCHINGS = ("length", "balanced")


@dataclass
class TrainResult:
    model: TextMelAligner
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0


def dist_info() -> tuple[int, int]:
    """(rank, world size); starts the default process group under torchrun if needed
    (:func:`speechattn.recipes._distributed.start_process_group`)."""
    return start_process_group("gloo")  # the aligners train on the CPU


def _any_rank(flag: bool, world: int) -> bool:
    """True on every rank when ``flag`` is True on any (one process: ``flag``)."""
    if world <= 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _frame_share(mel_lengths: torch.Tensor, world: int) -> torch.Tensor:
    """``world * n / N``: this rank's weight for a loss that is a mean over its ``n`` frames
    when the global batch (every rank's) has ``N`` frames (the all-reduced sum).

    DDP averages the ranks' gradients, so a rank's loss scaled by this weight makes that average
    the gradient of the global batch's frame mean (and the mean over ranks of the scaled losses
    that loss itself). Only for ``world > 1`` (one process needs no weight).
    """
    import torch.distributed as dist

    n = mel_lengths.detach().sum().reshape(1).to(torch.float64).cpu()
    total = n.clone()
    dist.all_reduce(total)
    return (world * n / total).squeeze(0)


def _mean_over_ranks(loss: torch.Tensor, world: int) -> float:
    """``loss`` averaged over the ranks (one process: ``loss``), as a float."""
    t = loss.detach().reshape(1).float().cpu()
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
        t /= world
    return float(t)


class CheckpointMismatch(ValueError):
    """An existing checkpoint belongs to another run; the message lists what differs."""


def save_checkpoint(path: Path, payload: dict) -> None:
    """Atomic save (:func:`speechattn._io.atomic_write`: a temporary file, then ``os.replace``)."""
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint with ``weights_only=True`` (no code runs from the file).

    Raises:
        ValueError: the file cannot be read that way (corrupt, not a checkpoint, or a pickle
            that asks for arbitrary objects); the message names the file.
    """
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = " ".join(str(exc).split()).split(". ")[0][:200]  # torch's first sentence
        raise ValueError(
            f"{path}: not a speechattn checkpoint that loads safely (torch.load with "
            f"weights_only=True refused it: {first}). Only load checkpoints you trust; "
            "speechattn writes tensors, dicts, lists, numbers and strings only."
        ) from exc
    if not isinstance(ck, dict):
        raise ValueError(f"{path}: expected a checkpoint dict; found {type(ck).__name__}.")
    return ck


def _plain(x: Any) -> Any:
    """JSON-like normal form (tuples as lists) so saved and current settings compare equal."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# Optimisation settings a resumed run must share with its checkpoint: another value would
# continue the saved optimiser state under other rules. ``steps`` may grow (training goes on
# under the schedule of the new length), and ``checkpoint_every`` / ``max_seconds`` only say
# when to save or stop.
_RESUME_MUST_MATCH = (
    "batch_size",
    "lr",
    "weight_decay",
    "warmup",
    "grad_clip",
    "schedule",
    "batching",
    "prior_warmup",
)


def checkpoint_differences(
    ck: dict,
    model_config: dict,
    seed: int,
    extra_state: dict | None,
    train_config: dict | None = None,
    world: int | None = None,
) -> list[str]:
    """What differs between a saved checkpoint and the run about to use it (empty: same run).

    ``train_config`` (a :class:`TrainConfig` as a dict) and ``world`` (the number of processes:
    each step's global batch is ``batch_size * world``) are compared where the checkpoint
    records them (older checkpoints do not record ``world``).
    """
    diff = []
    if _plain(ck.get("model_config")) != _plain(model_config):
        diff.append("model config")
    saved_tc = ck.get("train_config") or {}
    saved_seed = saved_tc.get("seed")
    if saved_seed != seed:
        diff.append(f"seed ({saved_seed} there, {seed} now)")
    now = train_config or {}
    for key in _RESUME_MUST_MATCH if train_config is not None else ():
        if key in saved_tc and _plain(saved_tc[key]) != _plain(now.get(key)):
            diff.append(f"{key} ({saved_tc[key]!r} there, {now.get(key)!r} now)")
    saved_world = ck.get("world")
    if world is not None and saved_world is not None and int(saved_world) != world:
        diff.append(f"number of processes ({saved_world} there, {world} now)")
    saved_extra = ck.get("extra") or {}
    for key, value in (extra_state or {}).items():
        if _plain(saved_extra.get(key)) != _plain(value):
            diff.append({"symbols": "symbol table", "run": "corpus or run settings"}.get(key, key))
    return diff


def _batches_for_step(lengths: Sequence[int], batch_size: int, seed: int, step: int) -> list[int]:
    """A length-homogeneous random batch: pick a random anchor in length order, take neighbours."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    bs = min(batch_size, n)
    start = int(torch.randint(0, max(1, n - bs + 1), (1,), generator=g))
    return order[start : start + bs]


def _balanced_batch(
    members: Sequence[Sequence[int]], batch_size: int, seed: int, step: int
) -> list[int]:
    """An engine-balanced random batch: the groups ``members`` (item indices per group) in a
    random order, ``batch_size // G`` items drawn without replacement from each, one more from
    the first ``batch_size % G`` (all of a group's items when it has fewer); drawn from a
    generator seeded by ``(seed, step)`` as :func:`_batches_for_step`."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    n_groups = len(members)
    order = torch.randperm(n_groups, generator=g).tolist()
    out: list[int] = []
    for rank_in_order, gi in enumerate(order):
        want = batch_size // n_groups + (1 if rank_in_order < batch_size % n_groups else 0)
        pool = members[gi]
        pick = torch.randperm(len(pool), generator=g)[:want].tolist()
        out.extend(pool[i] for i in pick)
    return out


def _lr(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return cfg.lr
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def train_aligner(
    model_config: AlignerConfig,
    items: Sequence[AlignItem],
    train_config: TrainConfig,
    *,
    checkpoint: Path | None = None,
    extra_state: dict | None = None,
    init_state: dict | None = None,
    progress: bool = True,
    desc: str | None = None,
    on_eval: Callable[[TextMelAligner, int], dict] | None = None,
    eval_every: int = 0,
    should_stop: Callable[[list[dict]], bool] | None = None,
    groups: Sequence[str] | None = None,
) -> TrainResult:
    """Train (or resume) one aligner on ``items``.

    Args:
        model_config: architecture (``kind`` picks SMA / forward-sum / MHA).
        items: training utterances (no labels are used).
        train_config: optimisation settings; ``seed`` makes the run deterministic.
        checkpoint: where to keep the resumable checkpoint (``None``: no checkpointing).
        extra_state: JSON-like data saved beside the weights (symbols, front-end config).
        init_state: a ``state_dict`` to start from (adaptation of a pretrained aligner).
        on_eval: optional callback ``(model, step) -> dict`` whose result joins the history.
        should_stop: optional rule ``(history) -> bool`` asked before each step (a resumed run
            asks it first thing); True ends training there (e.g. the objective stopped improving).
        groups: with ``train_config.batching="balanced"``, one group name per item (e.g. its
            engine) that each batch balances; ``None``: each item's ``speaker``. Unused by
            ``"length"``.

    Raises:
        ValueError: an unknown ``schedule`` or ``batching``, a negative ``prior_warmup``, or
            ``groups`` not one per item.
    """
    if train_config.schedule not in ("cosine", "constant"):
        raise ValueError(
            f"Expected schedule 'cosine' or 'constant'; found {train_config.schedule!r}."
        )
    if isinstance(train_config.prior_warmup, bool) or not (
        isinstance(train_config.prior_warmup, int) and train_config.prior_warmup >= 0
    ):
        raise ValueError(
            f"Expected prior_warmup >= 0 (an int, steps); found {train_config.prior_warmup!r}."
        )
    if train_config.batching not in BATCHINGS:
        raise ValueError(f"Expected batching in {BATCHINGS}; found {train_config.batching!r}.")
    members: list[list[int]] = []
    if train_config.batching == "balanced":
        names = [str(it.speaker) for it in items] if groups is None else [str(x) for x in groups]
        if len(names) != len(items):
            raise ValueError(
                f"Expected one group per training item; found {len(names)} groups for "
                f"{len(items)} items."
            )
        by_name: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            by_name.setdefault(name, []).append(i)
        members = [by_name[k] for k in sorted(by_name)]
    rank, world = dist_info()
    torch.manual_seed(train_config.seed)
    model = TextMelAligner(model_config)
    if init_state is not None:
        model.load_state_dict(init_state)
    opt = torch.optim.AdamW(
        model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay
    )
    history: list[dict] = []
    step0 = 0
    if checkpoint is not None and checkpoint.exists():
        ck = load_checkpoint(checkpoint)
        if not all(k in ck for k in ("model", "optimizer", "step", "model_config")):
            raise CheckpointMismatch(
                f"{checkpoint}: not an aligner training checkpoint (format "
                f"{ck.get('format', 'none')!r}); refusing to resume from it. Start fresh with "
                "--overwrite (deletes that run's outputs) or choose another --out."
            )
        diff = checkpoint_differences(
            ck,
            model_config.to_dict(),
            train_config.seed,
            extra_state,
            asdict(train_config),
            world,
        )
        if diff:
            raise CheckpointMismatch(
                f"{checkpoint} belongs to another run ({', '.join(diff)} differ); refusing to "
                "resume from it. Start fresh with --overwrite (deletes that run's outputs) or "
                "choose another --out."
            )
        if int(ck["step"]) > train_config.steps:
            raise CheckpointMismatch(
                f"{checkpoint} is at step {int(ck['step'])}, past the {train_config.steps} steps "
                "asked for now; refusing to resume from it. Ask for at least that many steps, "
                "start fresh with --overwrite (deletes that run's outputs) or choose another --out."
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step0 = int(ck["step"])
        history = list(ck.get("history", []))
        ranks = ck.get("rng_ranks") or []
        torch.set_rng_state(ranks[rank] if len(ranks) == world else ck["rng"])
    ddp_model: Any = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # Every trainable parameter gets a gradient each step (the SMA layer's unused value and
        # output projections are frozen): no search for unused ones, and no warning about it.
        ddp_model = DistributedDataParallel(model)
    lengths = [int(it.mel.shape[0]) for it in items]
    t0 = time.perf_counter()
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=train_config.steps,
            initial=step0,
            desc=desc or model_config.kind,
            unit="step",
            leave=False,
        )

    def _save(step: int, rng: torch.Tensor | None = None) -> None:
        """Rank 0 writes; under torchrun every rank calls it at the same step (the RNG states of
        all ranks are gathered: dropout draws differ per rank, and a resume restores each)."""
        if checkpoint is None:
            return
        mine = torch.get_rng_state() if rng is None else rng
        ranks: list[torch.Tensor] = [mine]
        if world > 1:
            import torch.distributed as dist

            ranks = [torch.empty_like(mine) for _ in range(world)]
            dist.all_gather(ranks, mine)
        if rank == 0:
            _write(checkpoint, step, mine, ranks)
        if world > 1:
            dist.barrier()  # the file is complete before any rank goes on (and may read it)

    def _write(path: Path, step: int, mine: torch.Tensor, ranks: list[torch.Tensor]) -> None:
        save_checkpoint(
            path,
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "history": history,
                "rng": mine,
                "rng_ranks": ranks,
                "model_config": model_config.to_dict(),
                "train_config": asdict(train_config),
                "world": world,
                "extra": extra_state or {},
            },
        )

    model.train()
    # state[0]: steps done; state[1]: True while the optimiser updates the parameters (a Ctrl-C
    # there leaves a half-applied step, so the last periodic checkpoint is kept instead);
    # state[2]: the RNG state when the current step began (what a resume must start from).
    state: list[Any] = [step0, False, torch.get_rng_state()]
    last_saved = [step0 if checkpoint is not None and checkpoint.exists() else None]

    def _loop() -> None:
        for step in range(step0, train_config.steps):
            stop = (
                train_config.max_seconds is not None
                and time.perf_counter() - t0 > train_config.max_seconds
            ) or (should_stop is not None and bool(history) and should_stop(history))
            if _any_rank(stop, world):  # every rank stops at the same step (else DDP hangs)
                break
            if members:
                idx = _balanced_batch(
                    members, train_config.batch_size * world, train_config.seed, step
                )
            else:
                idx = _batches_for_step(
                    lengths, train_config.batch_size * world, train_config.seed, step
                )
            idx = idx[rank::world] or idx[:1]
            tokens, tl, mels, ml = collate_items([items[i] for i in idx])
            state[2] = torch.get_rng_state()
            for gparam in opt.param_groups:
                gparam["lr"] = _lr(step, train_config)
            if train_config.prior_warmup:
                model.score_scale = min(1.0, (step + 1) / train_config.prior_warmup)
            out = ddp_model(tokens, tl, mels, ml)
            loss = out.loss
            if world > 1 and model_config.kind == "mha":
                # mha's loss is a mean over the batch's frames, not its items: weight each rank's
                # by its share of the global batch's frames (one process: unchanged)
                loss = loss * _frame_share(ml, world).to(loss.dtype)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
            state[1] = True
            opt.step()
            # the loss of the global batch (mean over ranks): the same history on every rank
            rec = {"step": step + 1, "loss": _mean_over_ranks(loss, world), "grad_norm": float(gn)}
            history.append(rec)
            state[0] = step + 1
            state[1] = False
            state[2] = torch.get_rng_state()
            if on_eval is not None and eval_every and ((step + 1) % eval_every == 0) and rank == 0:
                model.eval()
                rec.update(on_eval(model, step + 1))
                model.train()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.3f}")
            if state[0] % train_config.checkpoint_every == 0:
                _save(state[0])
                last_saved[0] = state[0]

    try:
        _loop()
    except KeyboardInterrupt:
        model.score_scale = 1.0
        if bar is not None:
            bar.close()
        where = f"stopped at step {state[0]} of {train_config.steps}"
        if checkpoint is not None and rank == 0:
            # Under torchrun the ranks stop at different points and a save needs every rank's
            # RNG state: the last periodic checkpoint stands (a resume then repeats the run).
            if not state[1] and world == 1:
                _save(state[0], state[2])
                last_saved[0] = state[0]
            if last_saved[0] is not None:
                where += f"; checkpoint at step {last_saved[0]} in {checkpoint}"
        raise KeyboardInterrupt(where) from None
    model.score_scale = 1.0  # a trained model scores as every other
    _save(state[0])
    if bar is not None:
        bar.close()
    model.eval()
    return TrainResult(
        model=model, history=history, seconds=time.perf_counter() - t0, resumed_from=step0
    )
