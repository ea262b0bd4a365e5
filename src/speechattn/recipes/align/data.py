"""Turn (audio, text) utterances into aligner items: phoneme tokens, log-mels, word spans, ground truth.

Uses the data front end (:mod:`speechattn.data`): text normalisation + espeak phonemes, the log-mel
front end, resampling on load. Every token sequence is ``<sil> phones... <sil>``: the two edge
silence tokens absorb leading/trailing silence (as forced aligners do) and are never scored. With
``word_silences=True`` an ``<sp>`` token sits between words too (it must take at least one frame).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from speechattn._threads import on_one_torch_thread

__all__ = [
    "DEREVERB_MIN_RT60_S",
    "LATE_REVERB_DELAY_S",
    "LATE_REVERB_FLOOR",
    "SIL",
    "SP",
    "SYMBOL_ORDERS",
    "AlignItem",
    "FeatureConfig",
    "TrainingChannel",
    "augmented_items",
    "build_items",
    "collate_items",
    "demo_engine_options",
    "merge_spoken_intervals",
    "new_symbol_table",
    "order_symbols",
    "spoken_word_counts",
    "suppress_late_reverb",
    "utterance_features",
    "word_truth",
]

SIL = "<sil>"
SP = "<sp>"
# Late reverberation (suppress_late_reverb): the part of a frame's power that arrives more than
# LATE_REVERB_DELAY_S after its sound, removed down to LATE_REVERB_FLOOR of the frame's power;
# build_items(dereverb=True) removes it only from recordings whose estimated RT60 is at least
# DEREVERB_MIN_RT60_S (shorter decays barely reach the next 11.6 ms frame).
LATE_REVERB_DELAY_S = 0.05
LATE_REVERB_FLOOR = 0.001
DEREVERB_MIN_RT60_S = 0.2
PAD = "<pad>"
UNK = "<unk>"


def new_symbol_table() -> dict[str, int]:
    """A fresh symbol -> id map with the reserved symbols (padding 0, unknown, silences)."""
    return {PAD: 0, UNK: 1, SIL: 2, SP: 3}


# How a symbol table grown by build_items(grow_symbols=True) is numbered: "corpus" keeps the order
# of first appearance in the corpus; "sorted" renumbers the phones by their string (after the
# reserved symbols), so the table does not depend on the utterances' order.
SYMBOL_ORDERS = ("corpus", "sorted")


def order_symbols(
    symbols: dict[str, int], items: list[AlignItem], *, order: str
) -> list[AlignItem]:
    """Number a grown symbol table in ``order`` and give the items' tokens the new ids.

    ``"corpus"`` returns ``items`` itself and leaves ``symbols`` as it is. ``"sorted"`` keeps the
    reserved symbols of :func:`new_symbol_table` at their ids, numbers the other symbols after
    them in the order of their strings (``sorted(str)``), rewrites ``symbols`` in place and
    returns copies of the items whose ``tokens`` ``(U,)`` carry the new ids.

    Raises:
        ValueError: ``order`` not in :data:`SYMBOL_ORDERS`, or a table whose reserved symbols
            are not at their usual ids or whose ids are not ``0..len-1``.
    """
    if order not in SYMBOL_ORDERS:
        raise ValueError(f"Expected symbol order in {SYMBOL_ORDERS}; found {order!r}.")
    if order == "corpus":
        return items
    reserved = new_symbol_table()
    if any(symbols.get(k) != v for k, v in reserved.items()):
        raise ValueError(
            f"Expected a table grown from new_symbol_table() (reserved ids {reserved}); found "
            f"{ {k: symbols.get(k) for k in reserved} }."
        )
    if sorted(symbols.values()) != list(range(len(symbols))):
        raise ValueError(
            f"Expected symbol ids 0..{len(symbols) - 1}, each once; found "
            f"{sorted(set(symbols.values()))[:8]}..."
        )
    phones = sorted(k for k in symbols if k not in reserved)
    new = {**reserved, **{p: len(reserved) + i for i, p in enumerate(phones)}}
    lut = torch.empty(len(symbols), dtype=torch.int64)
    for k, old_id in symbols.items():
        lut[old_id] = new[k]
    symbols.clear()
    symbols.update(new)
    return [dataclasses.replace(it, tokens=lut[it.tokens]) for it in items]


@dataclass
class FeatureConfig:
    """Front-end settings (saved with checkpoints).

    ``n_fft`` is both the FFT size and the Hann window length in samples at ``sample_rate``;
    ``hop_length`` the samples between frames (frame ``t`` is centred on sample
    ``t * hop_length``). A saved aligner carries its own values and :func:`load_aligner
    <speechattn.recipes.align.pipeline.load_aligner>` gives them back, so it always sees the
    front end it was trained with.
    """

    sample_rate: int = 22050
    hop_length: int = 256
    n_fft: int = 1024
    n_mels: int = 80
    word_silences: bool = False
    strip_stress: bool = True
    # Front end. The defaults are what every aligner saved before these options had: saved
    # configs without them load with the old behaviour.
    mel_norm: str = "bin"
    std_floor: float = 1e-3
    band_mask: bool = False
    band_mask_db: float = 60.0

    def __post_init__(self) -> None:
        from speechattn.data.features import MEL_NORMS

        for name in ("sample_rate", "hop_length", "n_fft", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"Expected {name} a positive int; found {value!r}.")
        if self.hop_length > self.n_fft:
            raise ValueError(
                f"Expected hop_length <= n_fft (frames that overlap or touch); found "
                f"hop_length={self.hop_length}, n_fft={self.n_fft}."
            )
        if self.mel_norm not in MEL_NORMS:
            raise ValueError(f"Expected mel_norm in {MEL_NORMS}; found {self.mel_norm!r}.")
        if not self.std_floor > 0:
            raise ValueError(f"Expected std_floor > 0; found {self.std_floor}.")
        if not self.band_mask_db > 0:
            raise ValueError(f"Expected band_mask_db > 0; found {self.band_mask_db}.")

    def to_dict(self) -> dict[str, Any]:
        """The settings as saved with an aligner. The old front end (per-bin normalisation, no
        band mask) is saved exactly as before the front-end options existed; any other is saved
        with all of them, so a later change of a default cannot change a saved aligner."""
        d = asdict(self)
        names = ("mel_norm", "std_floor", "band_mask", "band_mask_db")
        if not self.band_mask and self.mel_norm == "bin" and self.std_floor == 1e-3:
            for name in names:
                d.pop(name)
        return d

    @property
    def frame_s(self) -> float:
        return self.hop_length / self.sample_rate

    def mel_transform(self) -> Any:
        """The log-mel transform of this front end (a new
        :class:`~speechattn.data.features.LogMelSpectrogram`)."""
        from speechattn.data.features import LogMelSpectrogram

        return LogMelSpectrogram(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            win_length=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
        )


@dataclass
class AlignItem:
    """One utterance ready for an aligner.

    ``tokens`` int64 ``(U,)`` (with edge silences), ``mel`` float ``(T, n_mels)`` (per-utterance
    normalised, see :func:`utterance_features`), ``phone_token_index[i]`` is the token index of the i-th real phone, ``words`` lists
    ``(word, first_phone, last_phone_exclusive)`` over real phones, ``phones`` the phone labels.
    ``gt_phones`` / ``gt_words`` are ground-truth intervals (seconds) when the corpus has them.
    ``words`` are the transcript's WRITTEN words (``$5``, ``1999``); ``word_spoken[i]`` lists the
    spoken words the i-th of them stands for (``["five", "dollars"]``), None: one spoken word per
    written word. Ground truth in spoken form is scored per written word
    (:func:`~speechattn.recipes.align.evaluate.word_truth`).
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
    word_spoken: list[list[str]] | None = None


def spoken_word_counts(item: AlignItem) -> list[int]:
    """How many spoken words each of ``item.words`` (written words) stands for: ``$5`` -> 2
    ("five dollars"), ``1999`` -> 3; 1 each for an item without ``word_spoken``.

    Raises:
        ValueError: ``item.word_spoken`` does not have one entry (of at least one spoken word)
            per written word.
    """
    spoken = getattr(item, "word_spoken", None)  # items pickled before the field existed
    if spoken is None:
        return [1] * len(item.words)
    counts = [len(ws) for ws in spoken]
    if len(counts) != len(item.words) or min(counts, default=1) < 1:
        raise ValueError(
            f"Expected item.word_spoken with one non-empty list per written word "
            f"({len(item.words)}); found {len(counts)} lists of {counts} spoken words "
            f"(item {item.id!r})."
        )
    return counts


def merge_spoken_intervals(
    intervals: Sequence[Any], counts: Sequence[int]
) -> list[tuple[float, float]]:
    """Spoken-word intervals merged into written-word ones: ``counts[i]`` consecutive intervals
    become one, from the start of the first to the end of the last.

    Args:
        intervals: ``sum(counts)`` intervals in time order, ``(start, end, ...)`` tuples or
            objects with ``start`` / ``end`` (seconds).
        counts: spoken words per written word, each at least 1 (:func:`spoken_word_counts`).

    Returns:
        ``len(counts)`` ``(start, end)`` pairs (float seconds).

    Raises:
        ValueError: the counts do not add up to the number of intervals, or one is below 1.
    """
    if any(c < 1 for c in counts) or sum(counts) != len(intervals):
        raise ValueError(
            f"Expected counts of at least 1 that add up to the {len(intervals)} intervals; "
            f"found {list(counts)} (sum {sum(counts)})."
        )
    spans = [_span(iv) for iv in intervals]
    out: list[tuple[float, float]] = []
    i = 0
    for c in counts:
        out.append((spans[i][0], spans[i + c - 1][1]))
        i += c
    return out


def _span(iv: Any) -> tuple[float, float]:
    if hasattr(iv, "start"):
        return float(iv.start), float(iv.end)
    return float(iv[0]), float(iv[1])


def _label(iv: Any) -> str | None:
    label = getattr(iv, "label", None) if hasattr(iv, "start") else (iv[2] if len(iv) > 2 else None)
    return label if isinstance(label, str) else None


def _said(text: str) -> list[str]:
    """The normalised, lower-cased spoken words of a label or word (``"$5"`` -> five dollars)."""
    from speechattn.data.text import normalize_text, words_of

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [w.lower() for w in words_of(normalize_text(text))]


def word_truth(item: AlignItem) -> list[tuple[float, float]] | None:
    """The ground-truth ``(start, end)`` (seconds) of each of ``item.words`` (written words), or
    None when it cannot be told.

    Truth in spoken form (one interval per spoken word of the written words: manifests, engines
    and pocketsphinx give ``"five dollars"`` for ``$5``) is merged per written word
    (:func:`merge_spoken_intervals`); truth in written form (one interval per written word,
    e.g. an MFA TextGrid) is taken as it is. When the truth intervals carry labels, the form is
    chosen by the words, not by the count alone: each label must say what its written (or
    spoken) word says (both normalised and lower-cased), so a count that matches by chance
    (``$5`` two spoken words, ``for the`` one label) is not compared word for word. Anything
    else (a word the front end dropped, words the engine joined, another transcript) gives None:
    the utterance is left out of word scoring.
    """
    gt = item.gt_words
    if gt is None:
        return None
    counts = spoken_word_counts(item)
    labels = [_label(iv) for iv in gt]
    spoken = getattr(item, "word_spoken", None)
    if spoken is None or any(lab is None for lab in labels):  # no labels to check: counts only
        if len(gt) == sum(counts):
            return merge_spoken_intervals(gt, counts)
        if len(gt) == len(counts):
            return [_span(iv) for iv in gt]
        return None
    said = [_said(str(lab)) for lab in labels]
    flat = [_said(w) for ws in spoken for w in ws]
    if len(gt) == sum(counts) and said == flat:
        return merge_spoken_intervals(gt, counts)
    if len(gt) == len(counts) and said == [[x for w in ws for x in _said(w)] for ws in spoken]:
        return [_span(iv) for iv in gt]
    return None


def _phonemize_words(text: str, voice: str) -> list[tuple[str, list[str]]]:
    """(word, phones) pairs, one per word of the transcript as written
    (:func:`~speechattn.data.text.written_words`: ``$5`` stays one word with the phones of
    "five dollars"). Phones come from the whole sentence when its spoken words line up with
    the written words' ones; otherwise from each spoken word on its own, so a word the front end
    cannot pronounce shows up with no phones."""
    return [(word, phones) for word, _, phones in _phonemize_written(text, voice)]


def _phonemize_written(text: str, voice: str) -> list[tuple[str, list[str], list[str]]]:
    """(written word, its spoken words, phones) triples: :func:`_phonemize_words` with the
    spoken words each written word stands for (``("$5", ["five", "dollars"], [...])``)."""
    from speechattn.data.text import normalize_text, phonemize, words_of, written_words

    written = written_words(text)
    spoken = [w for _, ws in written for w in ws]
    phon = phonemize(text, voice=voice)  # warns once about characters it cannot say
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same = spoken == words_of(normalize_text(text))
    if len(spoken) != len(phon) or not same:
        phon = [
            [p for part in phonemize(w, voice=voice, normalize=False) for p in part] for w in spoken
        ]
    out: list[tuple[str, list[str], list[str]]] = []
    for word, ws in written:
        out.append((word, list(ws), [p for ph in phon[: len(ws)] for p in ph]))
        phon = phon[len(ws) :]
    return out


def token_symbol(phone: str, strip_stress: bool) -> str:
    """The aligner's symbol for a phone label (stress marks removed when ``strip_stress``)."""
    return phone.replace("ˈ", "").replace("ˌ", "") if strip_stress else phone


@on_one_torch_thread
def build_items(
    utterances: Sequence[Any],
    symbols: Any,
    config: FeatureConfig,
    *,
    grow_symbols: bool = False,
    progress: bool = False,
    voice: str | Callable[[Any], str] = "en-us",
    channel: Callable[[np.ndarray, int, np.random.Generator], np.ndarray] | None = None,
    channel_seed: int = 0,
    id_suffix: str = "",
    envelopes: bool = False,
    dereverb: bool = False,
) -> list[AlignItem]:
    """Load audio, compute log-mels, phonemize text and map to symbol ids.

    Runs on one torch thread (the caller's thread count is restored after): per-utterance
    front-end tensors are too small to gain from more, and the features are the same.

    A segment of a longer recording (``utt.start`` / ``end``: Kaldi ``segments``, TextGrid
    transcripts) is cut from its recording, each recording read once
    (:class:`~speechattn.data.corpus.UtteranceAudio`); its place is kept as
    ``item.extra["segment"]`` (``recording``, ``start``, ``end`` in seconds, and ``tier``).

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
        channel: a random channel applied to each waveform before the features (training-time
            augmentation, e.g. :class:`TrainingChannel`): ``channel(wave, sample_rate, rng)``
            returns the degraded wave at the same rate; ``rng`` is seeded by ``channel_seed``
            and the utterance id, so the same call gives the same items.
        id_suffix: appended to each item's id (augmented copies next to the clean ones).
        envelopes: also keep each item's 5 ms energy envelope of the audio its features were
            computed from (:func:`speechattn.recipes.align.edges.energy_envelope`) as
            ``item.extra["envelope"]``, for placing word edges next to silence without reading
            the file again.
        dereverb: estimate each recording's reverberation time from its own energy envelope
            (:func:`speechattn.recipes.align.edges.estimate_decay_time`; no labels) and, when it
            is at least :data:`DEREVERB_MIN_RT60_S`, remove the late reverberation from its
            log-mel before normalising (:func:`suppress_late_reverb`); the estimate is kept as
            ``item.extra["rt60_s"]`` (0.0: left as it is).
    """
    import zlib

    from speechattn.data.audio import AudioError
    from speechattn.data.corpus import UtteranceAudio

    read_audio = UtteranceAudio(utterances, sample_rate=config.sample_rate)
    mel_fn = config.mel_transform()
    items: list[AlignItem] = []
    skipped = 0
    it: Any = utterances
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(utterances, desc="features", unit="utt", leave=False)
    for utt in it:
        try:
            v = voice(utt) if callable(voice) else voice
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                words = _phonemize_written(utt.text, v)
            for note in said:  # e.g. letters it cannot say: name the utterance they are in
                warnings.warn(f"{utt.id}: {note.message}", stacklevel=2)
        except Exception as exc:  # the front end raises on empty or unusable text
            warnings.warn(
                f"{utt.id}: cannot phonemize {utt.text!r} ({exc}); skipped.", stacklevel=3
            )
            skipped += 1
            continue
        kept = []
        kept_spoken: list[list[str]] = []
        for w, ws, ph in words:
            if not ph:
                warnings.warn(
                    f"{utt.id}: the front end cannot pronounce {w!r}; word dropped.", stacklevel=3
                )
                continue
            kept.append((w, list(ph)))
            kept_spoken.append(ws)
        if not kept:
            warnings.warn(
                f"{utt.id}: no pronounceable word in {utt.text!r}; skipped.", stacklevel=3
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
                f"{utt.id}: unknown phone symbols for this aligner; skipped.", stacklevel=3
            )
            skipped += 1
            continue
        try:  # one bad file never stops the run: skip it with one warning naming it
            wav = read_audio(utt, validate=True, min_samples=config.n_fft)
        except AudioError as exc:
            warnings.warn(f"{utt.id}: skipped: {exc}", stacklevel=3)
            skipped += 1
            continue
        if channel is not None:
            rng = np.random.default_rng([channel_seed, zlib.crc32(str(utt.id).encode())])
            wav = torch.from_numpy(
                np.ascontiguousarray(channel(wav.numpy(), config.sample_rate, rng), np.float32)
            )
        native = _native_rate(utt.audio_path) if config.band_mask else None
        env = None
        rt60 = 0.0
        if envelopes or dereverb:
            from speechattn.recipes.align.edges import energy_envelope, estimate_decay_time

            env = energy_envelope(wav, config.sample_rate)
            if dereverb:
                rt60 = estimate_decay_time(env)
                rt60 = rt60 if rt60 >= DEREVERB_MIN_RT60_S else 0.0
        mel = utterance_features(wav, config, mel_fn=mel_fn, native_sample_rate=native, rt60_s=rt60)
        if mel.shape[0] < len(labels):
            warnings.warn(
                f"{utt.id}: {mel.shape[0]} frames < {len(labels)} tokens; skipped.", stacklevel=3
            )
            skipped += 1
            continue
        extra: dict[str, Any] = {"voice": v}
        if getattr(utt, "start", None) is not None:  # a segment of a longer recording
            extra["segment"] = {
                "recording": str(utt.recording),
                "start": float(utt.start),
                "end": float(utt.end),
                **({"tier": str(utt.tier)} if getattr(utt, "tier", None) is not None else {}),
            }
        if envelopes:
            extra["envelope"] = env
        if dereverb:
            extra["rt60_s"] = rt60
        gt_phones = getattr(utt, "phones", None)
        if gt_phones is not None and len(gt_phones) != len(phones):
            gt_phones = None  # cannot be scored one-to-one
        items.append(
            AlignItem(
                id=str(utt.id) + id_suffix,
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
                extra=extra,
                word_spoken=kept_spoken,
            )
        )
    if skipped:
        warnings.warn(f"{skipped} utterance(s) skipped (see the warnings above).", stacklevel=3)
    return items


def _native_rate(path: Any) -> int | None:
    import soundfile as sf

    try:
        return int(sf.info(str(path)).samplerate)
    except Exception:  # decoded by ffmpeg: the rate is not known here
        return None


def utterance_features(
    wave: Tensor,
    config: FeatureConfig,
    *,
    mel_fn: Any = None,
    native_sample_rate: int | None = None,
    rt60_s: float = 0.0,
) -> Tensor:
    """The aligner's input for one waveform ``(n,)`` at ``config.sample_rate``: ``(t, n_mels)``.

    Log-mel (:class:`~speechattn.data.features.LogMelSpectrogram`), with its late reverberation
    removed when ``rt60_s > 0`` (:func:`suppress_late_reverb`), normalised per utterance
    (``config.mel_norm``, :func:`~speechattn.data.features.normalize_log_mel`); with
    ``config.band_mask`` the bins above the audio's effective bandwidth
    (:func:`~speechattn.data.features.band_valid_mask`: the native rate's Nyquist frequency and
    the highest bin within ``band_mask_db`` dB of the loudest) are set to 0.
    """
    from speechattn.data.features import band_valid_mask, normalize_log_mel

    if mel_fn is None:
        mel_fn = config.mel_transform()
    with torch.no_grad():
        mel = mel_fn(wave.unsqueeze(0))[0]
    if rt60_s > 0:
        floor = float(getattr(mel_fn, "log_floor", 1e-5))
        mel = suppress_late_reverb(mel, rt60_s, config.frame_s, log_floor=floor)
    keep = None
    if config.band_mask:
        keep = band_valid_mask(
            mel,
            sample_rate=config.sample_rate,
            native_sample_rate=native_sample_rate,
            drop_db=config.band_mask_db,
        )
    return normalize_log_mel(mel, norm=config.mel_norm, std_floor=config.std_floor, band_valid=keep)


def suppress_late_reverb(
    log_mel: Tensor,
    rt60_s: float,
    frame_s: float,
    *,
    delay_s: float = LATE_REVERB_DELAY_S,
    floor: float = LATE_REVERB_FLOOR,
    log_floor: float = 1e-5,
) -> Tensor:
    """Remove late reverberation from a log-mel (spectral subtraction of an exponential tail).

    The late reverberation in frame ``t`` is taken as the power of the frame ``k`` frames earlier
    (``k = round(delay_s / frame_s)``, at least 1) times the room's decay over that time,
    ``exp(-6 ln(10) k frame_s / rt60_s)`` (60 dB in ``rt60_s``); it is subtracted from the
    frame's power, keeping at least ``floor`` of it (Lebart, Boucher and Denbigh, "A new method
    based on spectral subtraction for speech dereverberation", Acta Acustica 2001). The log-mel
    is the natural log of mel magnitudes (:class:`~speechattn.data.features.LogMelSpectrogram`,
    power 1), so power is ``exp(2 log_mel)``; the result stays at or above ``log(log_floor)``.

    Args:
        log_mel: ``(t, n_mels)`` log mel magnitudes of one utterance.
        rt60_s: reverberation time in seconds (> 0; 0 returns ``log_mel`` unchanged).
        frame_s: seconds between frames (> 0).
        delay_s: where late reverberation starts, seconds after the sound (> 0).
        floor: the least share of a frame's power kept, in (0, 1].
        log_floor: the mel magnitude floor of the log (> 0).

    Returns:
        ``(t, n_mels)``, same dtype; equal to ``log_mel`` in the first ``k`` frames.

    Example::

        clean = suppress_late_reverb(log_mel, 0.6, 256 / 22050)
        # naive: p = exp(2 x); late[t] = p[t - k] * exp(-13.8 k frame_s / rt60)
        #        y = 0.5 log(max(p - late, floor p))
    """
    if not isinstance(log_mel, Tensor) or log_mel.ndim != 2:
        found = tuple(log_mel.shape) if isinstance(log_mel, Tensor) else type(log_mel).__name__
        raise ValueError(f"Expected log_mel as a (t, n_mels) tensor; found {found}.")
    if not (rt60_s >= 0 and np.isfinite(rt60_s)):
        raise ValueError(f"Expected rt60_s >= 0 (finite); found {rt60_s}.")
    for name, value in (("frame_s", frame_s), ("delay_s", delay_s), ("log_floor", log_floor)):
        if not (value > 0 and np.isfinite(value)):
            raise ValueError(f"Expected {name} > 0 (finite); found {value}.")
    if not 0 < floor <= 1:
        raise ValueError(f"Expected floor in (0, 1]; found {floor}.")
    k = max(1, round(delay_s / frame_s))
    if rt60_s == 0 or log_mel.shape[0] <= k:
        return log_mel
    power = torch.exp(2.0 * log_mel.double())
    decay = float(np.exp(-6.0 * np.log(10.0) * k * frame_s / rt60_s))
    late = torch.zeros_like(power)
    late[k:] = decay * power[:-k]
    gain = torch.clamp(1.0 - late / power.clamp_min(1e-30), min=floor)
    out = 0.5 * torch.log((power * gain).clamp_min(log_floor * log_floor))
    return out.to(log_mel.dtype)


@dataclass
class TrainingChannel:
    """A random recording channel for training an aligner that copes with real audio.

    With probability ``p_resample`` the audio goes through a lower sample rate drawn from
    ``rates`` (8 to 48 kHz: rates below the working rate remove the band above their Nyquist
    frequency, as telephone and 16 kHz recordings do), then through
    :class:`~speechattn.data.augment.ChannelAugment` at that rate (equaliser, reverberation,
    real rooms, telephone band with mu-law, noise), and back to the working rate.

    Real rooms come from the ``real_rooms`` split of the packaged impulse responses
    (:data:`~speechattn.data.augment.TRAIN_ROOMS` by default), so the test rooms
    (:data:`~speechattn.data.augment.TEST_ROOMS`, the ``reverb_test`` condition of
    ``benchmarks/eval_align_engines.py``) stay unheard. Aligners trained before the split (the
    shipped ``aligner_en.pt`` among them) drew from all five rooms (``real_rooms="all"``).

    ``fast_fft`` is :class:`~speechattn.data.augment.ChannelAugment`'s (off: the aligner's audio
    is unchanged; the speaker recipe's ``SpeakerConfig.fast_fft`` passes it on).
    """

    p_resample: float = 0.5
    rates: tuple[int, ...] = (8000, 11025, 16000, 24000, 32000, 44100, 48000)
    p_eq: float = 0.5
    p_reverb: float = 0.15
    p_real_room: float = 0.15
    real_rooms: str = "train"
    p_telephone: float = 0.25
    p_mu_law: float = 0.5
    p_noise: float = 0.4
    snr_db: tuple[float, float] = (10.0, 35.0)
    fast_fft: bool = False

    def __call__(self, wave: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        from speechattn.data.audio import resample
        from speechattn.data.augment import ChannelAugment

        aug = ChannelAugment(
            p_eq=self.p_eq,
            p_reverb=self.p_reverb,
            p_telephone=self.p_telephone,
            p_mu_law=self.p_mu_law,
            p_noise=self.p_noise,
            snr_db=self.snr_db,
            p_real_room=self.p_real_room,
            real_rooms=self.real_rooms,
            fast_fft=self.fast_fft,
        )
        x = np.asarray(wave, dtype=np.float32)
        rate = sample_rate
        if rng.random() < self.p_resample:
            rate = int(self.rates[int(rng.integers(len(self.rates)))])
            x = np.asarray(resample(x, sample_rate, rate), dtype=np.float32)
        x = aug(x, rate, rng)
        if rate != sample_rate:
            y = np.asarray(resample(x, rate, sample_rate), dtype=np.float32)
            n = wave.shape[0]  # keep the length (and so the frame count) of the input
            x = np.pad(y[:n], (0, max(0, n - y.shape[0])))
        peak = float(np.abs(x).max()) if x.size else 0.0
        return x / peak * 0.9 if peak > 1.0 else x


def demo_engine_options(engines: Sequence[str], commercial_only: bool = False) -> dict[str, Any]:
    """Keyword arguments of :func:`speechattn.data.synth.synth_corpus` for a demo corpus.

    ``("espeak",)`` alone gives the espeak-only corpus (no keywords: the default demo's files,
    byte for byte); any other list draws the voices round-robin over those engines, never a
    reserved (evaluation-only) voice, and with ``commercial_only`` only voices whose licence allows
    commercial use (what a shipped aligner is trained on).

    Raises:
        ValueError: an empty or repeated engine list, or an unknown engine name.
    """
    from speechattn.data.engines import ENGINE_NAMES

    names = [str(e) for e in engines]
    bad = [e for e in names if e not in ENGINE_NAMES]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(
            f"Expected distinct engines from {', '.join(ENGINE_NAMES)}; found {names}."
        )
    if names == ["espeak"] and not commercial_only:
        return {}
    return {"engines": names, "commercial_only": bool(commercial_only), "include_reserved": False}


def augmented_items(
    utterances: Sequence[Any],
    items: Sequence[AlignItem],
    symbols: Any,
    config: FeatureConfig,
    *,
    seed: int = 0,
    channel: Callable[[np.ndarray, int, np.random.Generator], np.ndarray] | None = None,
) -> list[AlignItem]:
    """One copy of each of ``items`` through a random channel (default :class:`TrainingChannel`).

    The copies' ids end in ``"~aug"``; the symbol table is not grown (the items' symbols are
    in it already). Only the audio changes: the texts and the (unused for training) timings are
    those of the clean utterances.
    """
    voices = {it.id: str(it.extra.get("voice", "en-us")) for it in items}
    chosen = [u for u in utterances if str(u.id) in voices]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_items(
            chosen,
            symbols,
            config,
            voice=lambda u: voices[str(u.id)],
            channel=channel if channel is not None else TrainingChannel(),
            channel_seed=seed,
            id_suffix="~aug",
        )


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
