"""JSONL manifests of (audio path, caption), audio loading, and the training collator.

A manifest line is a JSON object with the audio path under ``audio`` (or ``audio_path`` /
``path``) and the caption under ``caption`` (or ``text``); relative paths are resolved against the
manifest's folder. Extra keys (``speaker``, ``id``...) are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from speechattn._io import write_text_atomic
from speechattn.data.corpus import skipped_lines_note, warn_skipped_lines
from speechattn.recipes.audio2clip.model import extract_features, pad_features

__all__ = [
    "AudioCaptionCollator",
    "AudioCaptionDataset",
    "ManifestItem",
    "load_audio_16k",
    "read_manifest",
    "usable_items",
    "write_manifest",
]

SAMPLE_RATE = 16000
_AUDIO_KEYS = ("audio", "audio_path", "path")
_TEXT_KEYS = ("caption", "text")


@dataclass(frozen=True)
class ManifestItem:
    """One (audio, caption) pair."""

    audio_path: Path
    caption: str
    extra: dict[str, Any] = field(default_factory=dict)


def read_manifest(path: str | Path, *, problems: list[str] | None = None) -> list[ManifestItem]:
    """Read a JSONL manifest of (audio, caption).

    A malformed line (not JSON, not an object, no audio key or no caption key) is skipped with
    one warning naming ``<file>:<line>``, what was expected and what was found, then one warning
    with the count; the other lines are read.

    Args:
        path: the ``.jsonl`` manifest.
        problems: a list that receives one ``"<file>:<line>: <reason>"`` per skipped line (for
            the caller's summary counts).

    Returns:
        The items in file order.

    Raises:
        ValueError: the file does not exist, or no line of it is a usable item (the message
            names the first malformed line).
    """

    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"Manifest {path} does not exist; expected a JSONL file of (audio, caption)."
        )
    items = []
    bad: list[str] = []
    expected = "an object with 'audio' (or 'audio_path', 'path') and 'caption' (or 'text')"
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(f"{path}:{n}: expected {expected}; found invalid JSON ({exc.msg})")
            continue
        if not isinstance(rec, dict):
            bad.append(f"{path}:{n}: expected {expected}; found a JSON {type(rec).__name__}")
            continue
        audio = next((rec[k] for k in _AUDIO_KEYS if k in rec), None)
        caption = next((rec[k] for k in _TEXT_KEYS if k in rec), None)
        if audio is None or caption is None:
            bad.append(f"{path}:{n}: expected {expected}; found keys {sorted(rec)}")
            continue
        audio_path = Path(audio)
        if not audio_path.is_absolute():
            audio_path = path.parent / audio_path
        extra = {k: v for k, v in rec.items() if k not in _AUDIO_KEYS + _TEXT_KEYS}
        items.append(ManifestItem(audio_path, str(caption), extra))
    warn_skipped_lines(path, bad, problems)
    if not items:
        raise ValueError(f"Manifest {path} has no usable items{skipped_lines_note(bad)}.")
    return items


def write_manifest(path: str | Path, items: list[ManifestItem]) -> Path:
    """Write items as JSONL with paths relative to the manifest folder when possible."""
    path = Path(path)
    lines = []
    for it in items:
        try:
            audio = str(it.audio_path.resolve().relative_to(path.parent.resolve()))
        except ValueError:
            audio = str(it.audio_path)
        lines.append(json.dumps({"audio": audio, "caption": it.caption, **it.extra}) + "\n")
    return write_text_atomic(path, "".join(lines))


#: Shortest usable clip: one 25 ms fbank window at 16 kHz.
MIN_SAMPLES = 400


def load_audio_16k(
    path: str | Path, *, sample_rate: int = SAMPLE_RATE, validate: bool = False
) -> np.ndarray:
    """Mono float32 waveform ``(N,)`` at ``sample_rate``
    (:func:`speechattn.data.audio.load_audio`: soundfile, ffmpeg fallback, soxr).

    ``validate``: also reject audio shorter than one fbank window, with NaN/inf samples, or
    silent (:func:`speechattn.data.audio.check_waveform`).

    Raises:
        AudioError (a ValueError): the file is missing or not readable audio, or (with
            ``validate``) unusable; the message names the file and the reason.
    """
    from speechattn.data.audio import load_audio

    return load_audio(
        path, sample_rate=sample_rate, validate=validate, min_samples=MIN_SAMPLES
    ).numpy()


def usable_items(items: list[ManifestItem]) -> tuple[list[ManifestItem], list[str]]:
    """Items whose audio loads and passes validation, and one ``"<file>: <reason>"`` per other.

    Each skipped file gets one warning line naming it and the reason.
    """
    import warnings

    from speechattn.data.audio import AudioError

    good, bad = [], []
    for it in items:
        try:
            load_audio_16k(it.audio_path, validate=True)
        except AudioError as exc:
            warnings.warn(f"skipped: {exc}", stacklevel=2)
            bad.append(str(exc))
            continue
        good.append(it)
    return good, bad


class AudioCaptionDataset(torch.utils.data.Dataset):
    """Items of a manifest with the index of their caption's precomputed text embedding."""

    def __init__(self, items: list[ManifestItem], caption_index: dict[str, int]) -> None:
        self.items = items
        self.caption_index = caption_index

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        it = self.items[i]
        return {
            "waveform": load_audio_16k(it.audio_path),
            "text_index": self.caption_index[it.caption],
        }


class AudioCaptionCollator:
    """Waveforms -> fbank features (feature extractor) + the precomputed text states and lengths."""

    def __init__(self, feature_extractor: Any, text_states: Tensor, text_lengths: Tensor) -> None:
        self.feature_extractor = feature_extractor
        self.text_states = text_states
        self.text_lengths = text_lengths

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Tensor]:
        feats = pad_features(
            extract_features(
                self.feature_extractor, [b["waveform"] for b in batch], sampling_rate=SAMPLE_RATE
            )
        )
        idx = torch.tensor([b["text_index"] for b in batch], dtype=torch.int64)
        return {
            "input_features": feats["input_features"],
            "attention_mask": feats["attention_mask"],
            "text_embeddings": self.text_states[idx],
            "text_lengths": self.text_lengths[idx],
        }
