"""Dataset, padding collate and a length-bucketing batch sampler.

Shape legend: ``b`` batch, ``u`` tokens, ``t`` mel frames, ``m`` mel bins, ``n`` samples.
Padded batches always come with int64 ``*_lengths`` (never relative lengths); padding is 0 for
features and ``SymbolTable.pad_id`` (0) for tokens.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from speechattn.data.corpus import Utterance
from speechattn.data.text import SymbolTable

__all__ = [
    "BucketBatchSampler",
    "SpeechBatch",
    "SpeechDataset",
    "audio_durations",
    "collate_speech",
    "pad_sequence_batch",
]


def pad_sequence_batch(
    sequences: Sequence[Tensor], *, padding_value: float = 0.0, max_length: int | None = None
) -> tuple[Tensor, Tensor]:
    """Stack ``(L_i, *)`` tensors into ``(B, L_max, *)`` plus int64 lengths ``(B,)``.

    Args:
        sequences: non-empty list of tensors with equal trailing shapes, dtypes and devices.
        padding_value: fill for positions ``>= lengths[b]``.
        max_length: pad to this length instead of the longest (must be >= it).

    Returns:
        ``(padded, lengths)``.
    """
    if len(sequences) == 0:
        raise ValueError("Expected at least one sequence to pad; found an empty list.")
    first = sequences[0]
    for i, s in enumerate(sequences):
        if not isinstance(s, Tensor):
            raise TypeError(f"Expected sequences[{i}] to be a Tensor; found {type(s).__name__}.")
        if s.dim() < 1 or s.shape[1:] != first.shape[1:]:
            raise ValueError(
                f"Expected sequences of shape (L, {', '.join(map(str, first.shape[1:]))}); "
                f"sequences[{i}] has shape {tuple(s.shape)}."
            )
        if s.dtype != first.dtype:
            raise TypeError(
                f"Expected all sequences with dtype {first.dtype}; sequences[{i}] is {s.dtype}."
            )
    lengths = torch.tensor([s.shape[0] for s in sequences], dtype=torch.int64)
    longest = int(lengths.max())
    size = longest if max_length is None else max_length
    if size < longest:
        raise ValueError(
            f"Expected max_length >= the longest sequence ({longest}); found {max_length}."
        )
    out = first.new_full((len(sequences), size, *first.shape[1:]), padding_value)
    for i, s in enumerate(sequences):
        out[i, : s.shape[0]] = s
    return out, lengths


def audio_durations(utterances: Sequence[Utterance]) -> list[float]:
    """Seconds of audio per utterance from the file headers (cheap; for BucketBatchSampler); a
    segment of a longer recording (``u.start`` / ``u.end``) counts its own length (to the
    recording's end for ``end`` None)."""
    import soundfile as sf

    out = []
    for u in utterances:
        start, end = getattr(u, "start", None), getattr(u, "end", None)
        if start is not None and end is not None:
            out.append(float(end) - float(start))
            continue
        try:
            info = sf.info(str(u.audio_path))
            seconds = info.frames / info.samplerate
        except Exception:
            seconds = 0.0  # unreadable: SpeechDataset will skip it
        # a segment to the recording's end: the part after its start, not the whole file
        out.append(max(0.0, seconds - float(start)) if start is not None else seconds)
    return out


class SpeechBatch(NamedTuple):
    """A padded batch.

    Attributes:
        ids: utterance ids.
        speakers: speaker ids (strings); ``speaker_index`` int64 ``(B,)`` indexes
            ``SpeechDataset.speakers``.
        tokens: int64 ``(B, U)`` symbol ids, padded with 0; ``token_lengths`` int64 ``(B,)``.
        mel: float ``(B, T, M)`` log-mel, padded with 0; ``mel_lengths`` int64 ``(B,)``.
        durations: int64 ``(B, U)`` ground-truth frames per token (sum = mel_lengths) or None.
        waveform: float ``(B, N)`` or None; ``waveform_lengths`` int64 ``(B,)`` or None.
        texts: transcripts.
    """

    ids: list[str]
    speakers: list[str]
    speaker_index: Tensor
    tokens: Tensor
    token_lengths: Tensor
    mel: Tensor
    mel_lengths: Tensor
    durations: Tensor | None
    waveform: Tensor | None
    waveform_lengths: Tensor | None
    texts: list[str]


class SpeechDataset(torch.utils.data.Dataset):
    """Utterances -> dicts of tokens, log-mel (and durations, waveform) tensors.

    Tokens: the corpus's ground-truth phones when it has them (synthetic corpora: exactly the
    phones the audio contains), else :func:`~speechattn.data.text.phonemize` of the text
    (``frontend="phonemes"``) or :func:`~speechattn.data.text.characters`
    (``frontend="characters"``). ``durations`` come from the phone intervals
    (:func:`~speechattn.data.features.intervals_to_durations`, at least ``min_frames`` each).

    A segment of a longer recording (``Utterance.start`` / ``end``: Kaldi ``segments``,
    TextGrid transcripts) is read by range (:func:`~speechattn.data.audio.load_audio_segment`):
    random access to the segments of a long recording never decodes the whole file per item.

    A bad item (audio missing/corrupt since the corpus was read, no tokens) is returned as
    ``None``; :func:`collate_speech` drops it and counts it in ``dataset.skipped`` (with a
    warning) instead of crashing mid-epoch.

    Args:
        utterances: from :func:`~speechattn.data.corpus.load_corpus`.
        symbols: symbol table; default: built over all token sequences (slow for big corpora
            without phones: pass a saved table).
        features: a :class:`~speechattn.data.features.LogMelSpectrogram` (default: 22.05 kHz,
            hop 256, 80 mels); audio is loaded at its sample rate.
        frontend: ``"phonemes"`` or ``"characters"`` for utterances without phones.
        use_ground_truth: use corpus phones as tokens when present.
        return_waveform: also return the waveform.
        min_frames: minimum frames per token in ``durations``.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        *,
        symbols: SymbolTable | None = None,
        features: torch.nn.Module | None = None,
        frontend: str = "phonemes",
        use_ground_truth: bool = True,
        return_waveform: bool = False,
        min_frames: int = 1,
        voice: str = "en-us",
    ) -> None:
        from speechattn.data.features import LogMelSpectrogram

        if frontend not in ("phonemes", "characters"):
            raise ValueError(f"Expected frontend 'phonemes' or 'characters'; found {frontend!r}.")
        self.utterances = list(utterances)
        if not self.utterances:
            raise ValueError("Expected at least one utterance; found none.")
        self.features = features if features is not None else LogMelSpectrogram()
        self.frontend = frontend
        self.use_ground_truth = use_ground_truth
        self.return_waveform = return_waveform
        self.min_frames = min_frames
        self.voice = voice
        self.speakers = sorted({u.speaker for u in self.utterances})
        self._speaker_index = {s: i for i, s in enumerate(self.speakers)}
        self._tokens: list[list[str] | None] = [None] * len(self.utterances)
        self.skipped = 0
        if symbols is None:
            symbols = SymbolTable.from_symbols(self.token_symbols(i) for i in range(len(self)))
        self.symbols = symbols

    def __len__(self) -> int:
        return len(self.utterances)

    def token_symbols(self, index: int) -> list[str]:
        """The symbol sequence (before ids) of utterance ``index``."""
        cached = self._tokens[index]
        if cached is not None:
            return cached
        u = self.utterances[index]
        if self.use_ground_truth and u.phones:
            toks = [p.label for p in u.phones]
        elif self.frontend == "phonemes":
            from speechattn.data.text import phonemize

            try:
                toks = [p for w in phonemize(u.text, voice=self.voice) for p in w]
            except ImportError as exc:
                warnings.warn(f"SpeechDataset: {exc} Falling back to characters.", stacklevel=2)
                self.frontend = "characters"
                return self.token_symbols(index)
        else:
            from speechattn.data.text import characters

            toks = [c for w in characters(u.text) for c in w]
        self._tokens[index] = toks
        return toks

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        from speechattn.data.audio import AudioError, load_audio, load_audio_segment
        from speechattn.data.features import intervals_to_durations

        u = self.utterances[index]
        sr = int(getattr(self.features, "sample_rate", 22050))
        start = getattr(u, "start", None)
        try:  # a segment of a longer recording: only its part of the file is read
            if start is None:
                wav = load_audio(u.audio_path, sample_rate=sr)
            else:
                wav = load_audio_segment(
                    u.audio_path, start=start, end=getattr(u, "end", None), sample_rate=sr
                )
        except AudioError as exc:
            warnings.warn(f"SpeechDataset: skipping {u.id}: {exc}", stacklevel=2)
            return None
        toks = self.token_symbols(index)
        if not toks:
            warnings.warn(
                f"SpeechDataset: skipping {u.id}: no tokens for text {u.text!r}", stacklevel=2
            )
            return None
        try:
            mel = self.features(wav)
        except ValueError as exc:
            warnings.warn(f"SpeechDataset: skipping {u.id} ({u.audio_path}): {exc}", stacklevel=2)
            return None
        item: dict[str, Any] = {
            "id": u.id,
            "speaker": u.speaker,
            "speaker_index": self._speaker_index[u.speaker],
            "text": u.text,
            "tokens": torch.tensor(self.symbols.encode(toks), dtype=torch.int64),
            "mel": mel,
            "durations": None,
        }
        if self.use_ground_truth and u.phones:
            hop = int(getattr(self.features, "hop_length", 256))
            try:
                item["durations"] = intervals_to_durations(
                    u.phones,
                    num_frames=mel.shape[0],
                    sample_rate=sr,
                    hop_length=hop,
                    min_frames=self.min_frames,
                )
            except ValueError as exc:
                warnings.warn(f"SpeechDataset: skipping {u.id}: {exc}", stacklevel=2)
                return None
        if self.return_waveform:
            item["waveform"] = wav
        return item


def collate_speech(
    items: Sequence[dict[str, Any] | None], *, dataset: SpeechDataset | None = None
) -> SpeechBatch:
    """Pad a list of :class:`SpeechDataset` items into a :class:`SpeechBatch`.

    ``None`` items (bad utterances) are dropped and counted in ``dataset.skipped`` when given.
    Raises ``ValueError`` if every item of the batch is bad.
    """
    good = [it for it in items if it is not None]
    if dataset is not None:
        dataset.skipped += len(items) - len(good)
    if not good:
        raise ValueError(
            f"Every item of this batch of {len(items)} was unusable (see the warnings)."
        )
    tokens, token_lengths = pad_sequence_batch([it["tokens"] for it in good])
    mel, mel_lengths = pad_sequence_batch([it["mel"] for it in good])
    durations = None
    if all(it.get("durations") is not None for it in good):
        durations, _ = pad_sequence_batch([it["durations"] for it in good])
    waveform = waveform_lengths = None
    if all("waveform" in it for it in good):
        waveform, waveform_lengths = pad_sequence_batch([it["waveform"] for it in good])
    return SpeechBatch(
        ids=[it["id"] for it in good],
        speakers=[it["speaker"] for it in good],
        speaker_index=torch.tensor([it["speaker_index"] for it in good], dtype=torch.int64),
        tokens=tokens,
        token_lengths=token_lengths,
        mel=mel,
        mel_lengths=mel_lengths,
        durations=durations,
        waveform=waveform,
        waveform_lengths=waveform_lengths,
        texts=[it["text"] for it in good],
    )


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of indices with similar lengths (less padding), reproducible for a seed.

    Each epoch: shuffle the indices (``shuffle=True``), cut them into pools of
    ``batch_size * bucket_batches``, sort each pool by length, cut pools into batches, and
    shuffle the batch order. Without shuffle, batches are consecutive runs of the length-sorted
    indices. Call :meth:`set_epoch` for a different order each epoch.

    Args:
        lengths: one length per dataset item (e.g. frames or seconds).
        batch_size: items per batch.
        shuffle: randomise as above.
        seed: base seed; the epoch's order depends on (seed, epoch) only.
        drop_last: drop the smaller final batch of each pool.
        bucket_batches: batches per sorting pool.
    """

    def __init__(
        self,
        lengths: Sequence[float] | Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        bucket_batches: int = 50,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Expected batch_size to be an int >= 1; found {batch_size!r}.")
        if bucket_batches < 1:
            raise ValueError(f"Expected bucket_batches >= 1; found {bucket_batches}.")
        self.lengths = [
            float(x) for x in (lengths.tolist() if isinstance(lengths, Tensor) else lengths)
        ]
        if not self.lengths:
            raise ValueError("Expected at least one length; found none.")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.bucket_batches = bucket_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` on the next iteration."""
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        n = len(self.lengths)
        rng = random.Random(f"{self.seed}-{self.epoch}")
        idx = list(range(n))
        if self.shuffle:
            rng.shuffle(idx)
            pool = self.batch_size * self.bucket_batches
        else:
            pool = n
        batches: list[list[int]] = []
        for p0 in range(0, n, pool):
            chunk = sorted(idx[p0 : p0 + pool], key=lambda i: (self.lengths[i], i))
            for b0 in range(0, len(chunk), self.batch_size):
                b = chunk[b0 : b0 + self.batch_size]
                if len(b) < self.batch_size and self.drop_last:
                    continue
                batches.append(b)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        n = len(self.lengths)
        if not self.drop_last:
            if not self.shuffle:
                return math.ceil(n / self.batch_size)
            pool = self.batch_size * self.bucket_batches
            full, rest = divmod(n, pool)
            return full * self.bucket_batches + math.ceil(rest / self.batch_size)
        return len(self._batches())
