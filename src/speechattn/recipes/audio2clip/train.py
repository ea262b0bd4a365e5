"""Training (HF ``Trainer`` subclass with a custom ``compute_loss``) and retrieval evaluation.

Multi-process: launch with ``torchrun --nproc_per_node N -m speechattn audio2clip train ...``;
the Trainer wraps the model in DDP and the loss uses every rank's batch as negatives
(``gather_distributed``), so the effective number of negatives is the global batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from speechattn._io import write_text_atomic
from speechattn.nn.contrastive import SequenceContrastiveLoss
from speechattn.recipes.audio2clip.data import (
    AudioCaptionCollator,
    AudioCaptionDataset,
    load_audio_16k,
    read_manifest,
    usable_items,
)
from speechattn.recipes.audio2clip.metrics import RetrievalMetrics, retrieval_metrics
from speechattn.recipes.audio2clip.model import AudioToTextEncoder, LengthMode
from speechattn.recipes.audio2clip.text import TextEmbeddings, TextEncoder

__all__ = [
    "Audio2ClipTrainModule",
    "evaluate",
    "format_metrics",
    "last_checkpoint",
    "make_trainer_class",
    "resume_differences",
    "run_settings",
    "train",
]

TRAIN_SUMMARY = "audio2clip_train.json"
#: Where the Trainer's periodic checkpoints go, below ``output_dir``.
CHECKPOINT_FOLDER = "trainer"
# What a checkpoint needs for an exact resume (beside ``rng_state[_<rank>].pth``), each read by
# transformers with torch.load(weights_only=True) or as JSON / safetensors. trainer_state.json
# is written last: a folder without it is a save cut short.
_CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
_PICKLED_ARGS = "training_args.bin"
#: The settings of the run that writes checkpoints, in ``output_dir/trainer`` beside them: a
#: ``--resume`` under other settings is refused (:func:`resume_differences`).
RUN_SETTINGS = "run.json"
# Each recorded setting and the option that sets it (the message names both).
_SETTING_OPTIONS = {
    "manifest": "the --manifest file's contents",
    "audio_model": "--audio-model",
    "text_model": "--text-model",
    "text_length": "--text-length",
    "length_mode": "--length-mode",
    "num_heads": "--num-heads",
    "epochs": "--epochs",
    "max_steps": "--max-steps",
    "batch_size": "--batch-size",
    "learning_rate": "--lr",
    "weight_decay": "weight_decay",
    "warmup_ratio": "warmup_ratio",
    "temperature": "--temperature",
    "learnable_temperature": "--learnable-temperature",
    "direction": "--direction",
    "mask_text_padding": "--mask-text-padding",
    "seed": "--seed",
    "processes": "number of processes",
}


class Audio2ClipTrainModule(nn.Module):
    """The encoder plus the loss (so a learnable temperature is trained and DDP sees one module).

    ``forward(input_features, attention_mask, text_embeddings, text_lengths)`` returns
    ``{"loss": scalar, "embeddings": (B, L, D)}``.
    """

    def __init__(
        self, encoder: AudioToTextEncoder, loss: SequenceContrastiveLoss, *, mask_text_padding: bool
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.loss = loss
        self.mask_text_padding = mask_text_padding

    def forward(
        self,
        input_features: Tensor,
        attention_mask: Tensor | None = None,
        text_embeddings: Tensor | None = None,
        text_lengths: Tensor | None = None,
    ) -> dict[str, Tensor]:
        out = self.encoder(input_features, attention_mask)
        result = {"embeddings": out.embeddings}
        if text_embeddings is not None:
            lengths = text_lengths if self.mask_text_padding else None
            result["loss"] = self.loss(
                out.embeddings, text_embeddings.to(out.embeddings), text_lengths=lengths
            )
        return result


def _drops_layers(encoder: AudioToTextEncoder) -> bool:
    """True when the audio encoder skips layers at random in training (``layerdrop`` > 0, for
    the encoder's or the adapter's layers), so some parameters go unused in some steps."""
    config = getattr(encoder.encoder, "config", None)
    return float(getattr(config, "layerdrop", 0.0) or 0.0) > 0.0


def _checkpoint_steps(folder: Path) -> list[tuple[int, Path]]:
    """``checkpoint-<step>`` folders under ``folder``, latest first."""
    found = []
    for p in folder.glob("checkpoint-*") if folder.is_dir() else []:
        step = p.name.removeprefix("checkpoint-")
        if p.is_dir() and step.isdigit():
            found.append((int(step), p))
    return sorted(found, reverse=True)


def last_checkpoint(output_dir: str | Path, *, world_size: int = 1) -> Path:
    """The latest complete, safely loadable Trainer checkpoint of an ``audio2clip train`` run.

    Everything transformers reads on ``resume_from_checkpoint`` is checked here first, the way
    it reads it: ``trainer_state.json`` (JSON), ``model.safetensors`` (safetensors), and
    ``optimizer.pt``, ``scheduler.pt``, ``rng_state[_<rank>].pth`` with
    ``torch.load(weights_only=True)`` (NumPy arrays allowed in the RNG state, as transformers
    allows them). ``training_args.bin``, a pickle, is never read on resume; the recipe deletes
    it from its checkpoints. A folder that fails (a save cut short, a truncated file) is passed
    over with a warning naming it.

    Raises:
        ValueError: no usable checkpoint under ``output_dir/trainer``.
    """
    import warnings

    folder = Path(output_dir) / CHECKPOINT_FOLDER
    steps = _checkpoint_steps(folder)
    if not steps:
        raise ValueError(
            f"--resume: no checkpoint in {folder}; train with --checkpoint-every N to write them "
            "(or leave out --resume to start over)."
        )
    from transformers.trainer_pt_utils import safe_globals  # transformers' own allowlist

    rng = (
        ["rng_state.pth"] if world_size <= 1 else [f"rng_state_{r}.pth" for r in range(world_size)]
    )
    for _, ck in steps:
        problem = None
        for name in (*_CHECKPOINT_FILES, "model.safetensors", *rng):
            f = ck / name
            if not f.is_file():
                problem = f"{name} is missing"
                break
            try:
                if name.endswith(".json"):
                    json.loads(f.read_text(encoding="utf-8"))
                elif name.endswith(".safetensors"):
                    from safetensors import safe_open

                    with safe_open(str(f), framework="pt") as sf:
                        list(sf.keys())
                else:
                    with safe_globals():
                        torch.load(f, map_location="cpu", weights_only=True)
            except Exception as exc:
                problem = f"{name} is unreadable ({' '.join(str(exc).split())[:200]})"
                break
        if problem is None:
            return ck
        warnings.warn(f"{ck}: {problem}; passing over this checkpoint", stacklevel=2)
    raise ValueError(
        f"--resume: no usable checkpoint in {folder} (see the warnings); start over without "
        "--resume."
    )


def _model_id(model: str | Path) -> str:
    """A model argument as recorded: a local folder by its absolute path, else the id as given."""
    p = Path(model)
    return str(p.resolve()) if p.exists() else str(model)


def run_settings(*, manifest: str | Path, world_size: int, **settings: Any) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote its checkpoints (JSON-like).

    ``manifest`` is recorded by the sha256 of its bytes (another manifest, or the same file
    edited, is another run; the same one moved is not), the models by :func:`_model_id`.
    ``settings``: the other keys of ``_SETTING_OPTIONS``, as :func:`train` received them.
    """
    from speechattn.recipes.align.outputs import file_digest

    unknown = sorted(set(settings) - set(_SETTING_OPTIONS))
    if unknown:
        raise TypeError(f"Expected settings among {sorted(_SETTING_OPTIONS)}; found {unknown}.")
    found = Path(manifest).is_file()  # (a missing one is named by read_manifest)
    out: dict[str, Any] = {"manifest": file_digest(Path(manifest)) if found else str(manifest)}
    for key, value in settings.items():
        out[key] = _model_id(value) if key in ("audio_model", "text_model") else value
    out["processes"] = int(world_size)
    return json.loads(json.dumps(out))


def resume_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The settings that differ between the run that wrote the checkpoints and this one, each
    as ``"OPTION (SAVED there, NOW now)"`` (empty: the same run)."""
    diff = []
    for key in _SETTING_OPTIONS:
        if key in saved or key in now:
            a, b = saved.get(key), now.get(key)
            if a != b:
                if key == "manifest":
                    diff.append(_SETTING_OPTIONS[key])
                else:
                    diff.append(f"{_SETTING_OPTIONS[key]} ({a!r} there, {b!r} now)")
    return diff


def _check_resume_settings(output_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse (``ValueError``, one line) a resume whose settings differ from the recorded ones.

    Checkpoints written before the settings were recorded (no ``run.json``) are not checked.
    """
    folder = output_dir / CHECKPOINT_FOLDER
    path = folder / RUN_SETTINGS
    if not _checkpoint_steps(folder) or not path.is_file():
        return  # last_checkpoint says there is nothing to resume; an older run: unchecked
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(saved, dict):
            raise ValueError(f"expected a JSON object; found {type(saved).__name__}")
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"--resume: {path} is unreadable ({' '.join(str(exc).split())[:200]}); start over "
            "without --resume."
        ) from None
    diff = resume_differences(saved, settings)
    if diff:
        raise ValueError(
            f"--resume: the checkpoints in {folder} belong to a run with other settings "
            f"({'; '.join(diff)}); resume with that run's arguments, or start over without "
            "--resume."
        )


def make_trainer_class() -> type:
    """The ``Trainer`` subclass (built lazily so importing this module does not import transformers)."""
    from transformers import Trainer

    class Audio2ClipTrainer(Trainer):
        """The original recipe's ``TrainBert`` Trainer done with masks, learnable temperature and distributed negatives.

        Its checkpoints hold no pickle: ``training_args.bin`` (never read on resume) is deleted
        as soon as a checkpoint is written.
        """

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                folder = Path(str(self.args.output_dir))
                for p in folder.glob(f"checkpoint-*/{_PICKLED_ARGS}"):
                    p.unlink(missing_ok=True)

        def compute_loss(  # type: ignore[override]
            self,
            model: nn.Module,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            text = inputs.pop("text_embeddings")
            lengths = inputs.pop("text_lengths", None)
            outputs = model(**inputs, text_embeddings=text, text_lengths=lengths)
            loss = outputs["loss"]
            return (loss, outputs) if return_outputs else loss

    return Audio2ClipTrainer


def __getattr__(name: str) -> Any:  # Audio2ClipTrainer without importing transformers eagerly
    if name == "Audio2ClipTrainer":
        return make_trainer_class()
    raise AttributeError(name)


def warmup_arguments(ratio: float, transformers_version: str | None = None) -> dict[str, Any]:
    """``TrainingArguments`` keywords for a warm-up over ``ratio`` of the steps.

    transformers 5 takes a float ``warmup_steps`` below 1 as a ratio (``warmup_ratio`` is
    deprecated); transformers 4.x reads ``warmup_steps`` as a count (0.05 -> no warm-up) and
    needs ``warmup_ratio``.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"Expected warmup_ratio in [0, 1); found {ratio!r}.")
    if transformers_version is None:
        import transformers

        transformers_version = transformers.__version__
    major = int(str(transformers_version).split(".")[0])
    return {"warmup_steps": ratio} if major >= 5 else {"warmup_ratio": ratio}


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def encode_captions(
    text_encoder: TextEncoder, captions: list[str]
) -> tuple[TextEmbeddings, dict[str, int]]:
    """Precompute the frozen text states once per unique caption."""
    unique = sorted(set(captions))
    return text_encoder.encode(unique), {c: i for i, c in enumerate(unique)}


@contextmanager
def _hf_progress_bars(show: bool) -> Iterator[None]:
    """transformers' own progress bars (loading and writing weights) on or off for a block."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if show else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def train(
    *,
    manifest: str | Path,
    output_dir: str | Path,
    audio_model: str | Path,
    text_model: str | Path,
    text_length: int | None = None,
    length_mode: LengthMode = "resample",
    num_heads: int = 8,
    epochs: float = 10.0,
    max_steps: int = -1,
    batch_size: int = 16,
    learning_rate: float = 1e-4,
    weight_decay: float = 0.0,
    warmup_ratio: float = 0.05,
    temperature: float = 0.15,
    learnable_temperature: bool = False,
    direction: str = "audio_to_text",
    mask_text_padding: bool | None = None,
    seed: int = 0,
    logging_steps: int = 10,
    dataloader_workers: int = 0,
    progress: bool = True,
    checkpoint_every: int = 0,
    resume: bool = False,
) -> Path:
    """Fine-tune an audio encoder so its ``(L, D)`` output matches a frozen text encoder's states.

    Args:
        manifest: JSONL of (audio, caption).
        output_dir: where the trained :class:`AudioToTextEncoder` is saved (``save_pretrained``).
        audio_model: w2v-BERT checkpoint (``facebook/w2v-bert-2.0``) or a saved encoder folder.
        text_model: text encoder folder / id (CLIP text encoder of SD 2.1, or MiniLM).
        text_length: ``L`` (default: the tokenizer's model_max_length, 77 for CLIP).
        mask_text_padding: exclude caption padding positions from the loss (default: True for
            BERT-like encoders, False for CLIP, whose padded states Stable Diffusion does use).
        progress: print the training log (loss, learning rate) every ``logging_steps``
            steps; the log is kept in the saved summary either way.
        checkpoint_every: write a resumable Trainer checkpoint to ``output_dir/trainer`` every
            this many steps (the latest one is kept; 0: none). A run that does not resume
            removes the checkpoints of an earlier run there first.
        resume: continue from the latest checkpoint there (:func:`last_checkpoint`), with the
            same arguments as the run that wrote it: the result equals an uninterrupted run.
            A run that writes checkpoints records its settings beside them
            (``trainer/run.json``: the manifest's contents, models, every optimisation and loss
            setting, seed, number of processes); a resume whose settings differ is refused with
            a ``ValueError`` naming each, before any model is loaded. ``logging_steps``,
            ``dataloader_workers``, ``progress`` and ``checkpoint_every`` may change.
        Others: usual optimisation settings; ``direction``/``temperature`` go to the loss.

    Returns:
        ``output_dir``.
    """
    # transformers' own bars (loading and writing weights): rank 0 only, none without progress
    with _hf_progress_bars(progress and os.environ.get("RANK", "0") == "0"):
        from transformers import TrainingArguments, set_seed

        output_dir = Path(output_dir)
        if checkpoint_every < 0:
            raise ValueError(f"Expected checkpoint_every >= 0; found {checkpoint_every}.")
        settings = run_settings(
            manifest=manifest,
            world_size=_world_size(),
            audio_model=audio_model,
            text_model=text_model,
            text_length=text_length,
            length_mode=length_mode,
            num_heads=num_heads,
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            temperature=temperature,
            learnable_temperature=learnable_temperature,
            direction=direction,
            mask_text_padding=mask_text_padding,
            seed=seed,
        )
        if resume:  # before any model is loaded
            _check_resume_settings(output_dir, settings)
        start = last_checkpoint(output_dir, world_size=_world_size()) if resume else None
        if start is None and checkpoint_every and os.environ.get("RANK", "0") == "0":
            # Starting over: an earlier run's checkpoints would outrank this run's (the Trainer
            # keeps the highest step) and be what a later --resume picks up.
            import shutil

            for _, old in _checkpoint_steps(output_dir / CHECKPOINT_FOLDER):
                shutil.rmtree(old)
            # this run's settings beside its checkpoints, for a later --resume to compare
            write_text_atomic(
                output_dir / CHECKPOINT_FOLDER / RUN_SETTINGS, json.dumps(settings, indent=1)
            )
        malformed: list[str] = []
        items, skipped = usable_items(read_manifest(manifest, problems=malformed))
        skipped = [*malformed, *skipped]  # malformed manifest lines, then unusable audio files
        if not items:
            raise ValueError(
                f"No usable audio in {manifest}: all {len(skipped)} file(s) were skipped (see the "
                "warnings); fix or remove them."
            )
        text_encoder = TextEncoder.from_pretrained(text_model, max_length=text_length)
        if mask_text_padding is None:
            mask_text_padding = text_encoder.use_attention_mask
        text, index = encode_captions(text_encoder, [it.caption for it in items])
        # The new head (and a w2v-BERT checkpoint's new adapter) is initialised here, before the
        # Trainer seeds anything: seed now so that the same --seed gives the same model.
        set_seed(seed)
        encoder = AudioToTextEncoder.from_pretrained(
            audio_model,
            text_length=text_encoder.max_length,
            text_dim=text_encoder.width,
            length_mode=length_mode,
            num_heads=num_heads,
        )
        if encoder.text_length != text_encoder.max_length or encoder.text_dim != text_encoder.width:
            raise ValueError(
                f"Audio encoder {audio_model} outputs ({encoder.text_length}, {encoder.text_dim}) but the text "
                f"encoder gives ({text_encoder.max_length}, {text_encoder.width}); pass a matching --text-length."
            )
        world = _world_size()
        loss = SequenceContrastiveLoss(
            temperature=temperature,
            learnable_temperature=learnable_temperature,
            direction=direction,  # type: ignore[arg-type]
            gather_distributed=world > 1,
        )
        module = Audio2ClipTrainModule(encoder, loss, mask_text_padding=mask_text_padding)
        args = TrainingArguments(
            output_dir=str(output_dir / CHECKPOINT_FOLDER),
            per_device_train_batch_size=batch_size,
            num_train_epochs=epochs,
            max_steps=max_steps,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            **warmup_arguments(warmup_ratio),
            lr_scheduler_type="cosine",
            logging_steps=logging_steps,
            **(
                {"save_strategy": "steps", "save_steps": checkpoint_every, "save_total_limit": 1}
                if checkpoint_every
                else {"save_strategy": "no"}
            ),
            report_to="none",
            remove_unused_columns=False,
            dataloader_drop_last=world > 1,  # equal local batches for the all-gather
            dataloader_num_workers=dataloader_workers,
            dataloader_pin_memory=torch.cuda.is_available(),
            # Every parameter gets a gradient each step unless the encoder drops layers at
            # random (layerdrop; 0 with SEED_ADAPTER_SETTINGS): only then must DDP search for
            # unused ones (searching when none is unused costs a graph walk and a warning).
            ddp_find_unused_parameters=_drops_layers(encoder),
            ddp_backend="gloo" if world > 1 and not torch.cuda.is_available() else None,
            use_cpu=not torch.cuda.is_available(),
            seed=seed,
            disable_tqdm=True,
        )
        trainer_cls = make_trainer_class()
        trainer = trainer_cls(
            model=module,
            args=args,
            train_dataset=AudioCaptionDataset(items, index),
            data_collator=AudioCaptionCollator(
                encoder.feature_extractor, text.states, text.lengths
            ),
        )
        if not progress:  # the log still lands in trainer.state.log_history (the summary)
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        result = trainer.train(resume_from_checkpoint=None if start is None else str(start))
        if trainer.is_world_process_zero():
            encoder.save_pretrained(output_dir)
            summary = {
                "train_loss": result.training_loss,
                "steps": result.global_step,
                "world_size": world,
                "skipped": len(skipped),
                "temperature": float(loss.temperature.detach()),
                "mask_text_padding": mask_text_padding,
                "log_history": trainer.state.log_history,
            }
            write_text_atomic(output_dir / TRAIN_SUMMARY, json.dumps(summary, indent=2))
        return output_dir


def evaluate(
    *,
    manifest: str | Path,
    model: str | Path | AudioToTextEncoder,
    text_model: str | Path | TextEncoder,
    mask_text_padding: bool | None = None,
    batch_size: int = 16,
    skipped: list[str] | None = None,
) -> RetrievalMetrics:
    """Retrieval among the manifest's items: R@1/5/10 both ways and the cosine gap.

    Items sharing a caption are scored as distinct items (each audio's own caption is its target).
    Malformed manifest lines and unusable audio files are skipped with one warning each (listed in
    ``skipped`` when given).
    """
    malformed: list[str] = []
    items, bad = usable_items(read_manifest(manifest, problems=malformed))
    if skipped is not None:
        skipped.extend(malformed)  # malformed manifest lines, then unusable audio files
        skipped.extend(bad)
    if not items:
        raise ValueError(
            f"No usable audio in {manifest}: all {len(bad)} file(s) were skipped (see the "
            "warnings); fix or remove them."
        )
    encoder = (
        model
        if isinstance(model, AudioToTextEncoder)
        else AudioToTextEncoder.from_pretrained(model)
    )
    text_encoder = (
        text_model
        if isinstance(text_model, TextEncoder)
        else TextEncoder.from_pretrained(text_model, max_length=encoder.text_length)
    )
    if mask_text_padding is None:
        mask_text_padding = text_encoder.use_attention_mask
    text = text_encoder.encode([it.caption for it in items])
    audio = encoder.embed_waveforms(
        [load_audio_16k(it.audio_path) for it in items], batch_size=batch_size
    )
    return retrieval_metrics(audio, text.states, text.lengths if mask_text_padding else None)


def format_metrics(m: RetrievalMetrics) -> str:
    """Two-line table of a :class:`RetrievalMetrics`."""
    return (
        f"items={m.num_items}  audio->text R@1 {m.a2t_r1:.3f} R@5 {m.a2t_r5:.3f} R@10 {m.a2t_r10:.3f}  "
        f"text->audio R@1 {m.t2a_r1:.3f} R@5 {m.t2a_r5:.3f} R@10 {m.t2a_r10:.3f}\n"
        f"cosine matched {m.matched_cosine:.4f}  mismatched {m.mismatched_cosine:.4f}  gap {m.gap:.4f}"
    )
