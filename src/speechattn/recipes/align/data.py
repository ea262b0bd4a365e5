"""Turn (audio, text) utterances into aligner items: phoneme tokens, log-mels, word spans, ground truth.

Uses the data front end (:mod:`speechattn.data`): text normalisation + espeak phonemes, the log-mel
front end, resampling on load. Every token sequence is ``<sil> phones... <sil>``: the two edge
silence tokens absorb leading/trailing silence (as forced aligners do) and are never scored. With
``word_silences=True`` an ``<sp>`` token sits between words too (it must take at least one frame).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "SIL",
    "SP",
    "AlignItem",
    "FeatureConfig",
    "build_items",
    "collate_items",
    "new_symbol_table",
]

SIL = "<sil>"
SP = "<sp>"
PAD = "<pad>"
UNK = "<unk>"


def new_symbol_table() -> dict[str, int]:
    """A fresh symbol -> id map with the reserved symbols (padding 0, unknown, silences)."""
    return {PAD: 0, UNK: 1, SIL: 2, SP: 3}


@dataclass
class FeatureConfig:
    """Front-end settings (saved with checkpoints)."""

    sample_rate: int = 22050
    hop_length: int = 256
    n_fft: int = 1024
    n_mels: int = 80
    word_silences: bool = False
    strip_stress: bool = True

    @property
    def frame_s(self) -> float:
        return self.hop_length / self.sample_rate


@dataclass
class AlignItem:
    """One utterance ready for an aligner.

    ``tokens`` int64 ``(U,)`` (with edge silences), ``mel`` float ``(T, n_mels)`` (per-utterance
    normalised), ``phone_token_index[i]`` is the token index of the i-th real phone, ``words`` lists
    ``(word, first_phone, last_phone_exclusive)`` over real phones, ``phones`` the phone labels.
    ``gt_phones`` / ``gt_words`` are ground-truth intervals (seconds) when the corpus has them.
    """

    id: str
    speaker: str
    text: str
    tokens: Tensor
    mel: Tensor
    phones: list[str]
    phone_token_index: list[int]
    words: list[tuple[str, int, int]]
    num_samples: int
    gt_phones: list[Any] | None = None
    gt_words: list[Any] | None = None
    extra: dict = field(default_factory=dict)


def _phonemize_words(text: str, voice: str) -> list[tuple[str, list[str]]]:
    """(word, phones) pairs. Whole-sentence phonemes when they line up with the words; otherwise
    each word on its own, so a word the front end cannot pronounce shows up with no phones."""
    from speechattn.data.text import normalize_text, phonemize, words_of

    phon = phonemize(text, voice=voice)
    words = words_of(normalize_text(text))
    if len(words) == len(phon):
        return list(zip(words, phon))
    out: list[tuple[str, list[str]]] = []
    for w in words:
        ph = [p for part in phonemize(w, voice=voice, normalize=False) for p in part]
        out.append((w, ph))
    return out


def token_symbol(phone: str, strip_stress: bool) -> str:
    """The aligner's symbol for a phone label (stress marks removed when ``strip_stress``)."""
    return phone.replace("ˈ", "").replace("ˌ", "") if strip_stress else phone


def build_items(
    utterances: Sequence[Any],
    symbols: Any,
    config: FeatureConfig,
    *,
    grow_symbols: bool = False,
    progress: bool = False,
    voice: str | Callable[[Any], str] = "en-us",
) -> list[AlignItem]:
    """Load audio, compute log-mels, phonemize text and map to symbol ids.

    Words the front end cannot pronounce (no phones) are dropped with a warning; an utterance with
    no pronounceable word, fewer frames than tokens, or unusable audio (undecodable, shorter than
    one frame, NaN/inf samples, silent: :func:`speechattn.data.audio.load_audio` with
    ``validate=True``) is skipped with one warning naming it.

    Args:
        utterances: :class:`speechattn.data.corpus.Utterance` objects.
        symbols: a ``SymbolTable``-like object with ``encode(list[str]) -> list[int]`` (and ``add``
            if ``grow_symbols``), or a plain ``dict`` symbol -> id (grown in place when allowed).
        config: front-end settings.
        voice: espeak voice/language for the phonemizer, or a function of the utterance (synthetic
            corpora pass the utterance's voice so phones line up with the ground truth).
    """
    from speechattn.data.audio import AudioError, load_audio
    from speechattn.data.features import LogMelSpectrogram

    mel_fn = LogMelSpectrogram(
        sample_rate=config.sample_rate,
        n_fft=config.n_fft,
        win_length=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
    )
    items: list[AlignItem] = []
    skipped = 0
    it: Any = utterances
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(utterances, desc="features", unit="utt", leave=False)
    for utt in it:
        try:
            v = voice(utt) if callable(voice) else voice
            words = _phonemize_words(utt.text, v)
        except Exception as exc:  # the front end raises on empty or unusable text
            warnings.warn(
                f"{utt.id}: cannot phonemize {utt.text!r} ({exc}); skipped.", stacklevel=2
            )
            skipped += 1
            continue
        kept = []
        for w, ph in words:
            if not ph:
                warnings.warn(
                    f"{utt.id}: the front end cannot pronounce {w!r}; word dropped.", stacklevel=2
                )
                continue
            kept.append((w, list(ph)))
        if not kept:
            warnings.warn(
                f"{utt.id}: no pronounceable word in {utt.text!r}; skipped.", stacklevel=2
            )
            skipped += 1
            continue
        labels = [SIL]
        phones: list[str] = []
        pidx: list[int] = []
        wspans: list[tuple[str, int, int]] = []
        for wi, (w, ph) in enumerate(kept):
            if wi > 0 and config.word_silences:
                labels.append(SP)
            start = len(phones)
            for p in ph:
                pidx.append(len(labels))
                labels.append(token_symbol(p, config.strip_stress))
                phones.append(p)
            wspans.append((w, start, len(phones)))
        labels.append(SIL)
        ids = _encode(symbols, labels, grow_symbols)
        if ids is None:
            warnings.warn(
                f"{utt.id}: unknown phone symbols for this aligner; skipped.", stacklevel=2
            )
            skipped += 1
            continue
        try:  # one bad file never stops the run: skip it with one warning naming it
            wav = load_audio(
                utt.audio_path,
                sample_rate=config.sample_rate,
                validate=True,
                min_samples=config.n_fft,
            )
        except AudioError as exc:
            warnings.warn(f"{utt.id}: skipped: {exc}", stacklevel=2)
            skipped += 1
            continue
        with torch.no_grad():
            mel = mel_fn(wav.unsqueeze(0))[0]
        mel = (mel - mel.mean(0, keepdim=True)) / (mel.std(0, keepdim=True) + 1e-3)
        if mel.shape[0] < len(labels):
            warnings.warn(
                f"{utt.id}: {mel.shape[0]} frames < {len(labels)} tokens; skipped.", stacklevel=2
            )
            skipped += 1
            continue
        gt_phones = getattr(utt, "phones", None)
        if gt_phones is not None and len(gt_phones) != len(phones):
            gt_phones = None  # cannot be scored one-to-one
        items.append(
            AlignItem(
                id=str(utt.id),
                speaker=str(getattr(utt, "speaker", "")),
                text=str(utt.text),
                tokens=torch.tensor(ids, dtype=torch.int64),
                mel=mel.float(),
                phones=phones,
                phone_token_index=pidx,
                words=wspans,
                num_samples=int(wav.shape[0]),
                gt_phones=gt_phones,
                gt_words=getattr(utt, "words", None),
            )
        )
    if skipped:
        warnings.warn(f"{skipped} utterance(s) skipped (see the warnings above).", stacklevel=2)
    return items


def _encode(symbols: Any, labels: list[str], grow: bool) -> list[int] | None:
    if isinstance(symbols, dict):
        out = []
        for s in labels:
            if s not in symbols:
                if grow:
                    symbols[s] = len(symbols)
                elif UNK in symbols:
                    s = UNK
                else:
                    return None
            out.append(symbols[s])
        return out
    try:
        return list(symbols.encode(labels))
    except (KeyError, ValueError):
        return None


def collate_items(items: Sequence[AlignItem]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pad a list of items: tokens ``(B, U)``, text_lengths, mels ``(B, T, n_mels)``, mel_lengths."""
    b = len(items)
    u = max(int(it.tokens.shape[0]) for it in items)
    t = max(int(it.mel.shape[0]) for it in items)
    nm = items[0].mel.shape[1]
    tokens = torch.zeros(b, u, dtype=torch.int64)
    mels = torch.zeros(b, t, nm)
    tl = torch.zeros(b, dtype=torch.int64)
    ml = torch.zeros(b, dtype=torch.int64)
    for i, it in enumerate(items):
        tokens[i, : it.tokens.shape[0]] = it.tokens
        mels[i, : it.mel.shape[0]] = it.mel
        tl[i] = it.tokens.shape[0]
        ml[i] = it.mel.shape[0]
    return tokens, tl, mels, ml
