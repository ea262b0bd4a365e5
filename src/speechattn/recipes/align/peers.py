"""Other aligners as baselines (rows in a report), never as teachers.

pocketsphinx 5 forced alignment (``pip install speechattn[peers]``: pocketsphinx 5.1.1 ships an
en-us acoustic model and the CMU dictionary) is the offline aligner a user could pick instead of
ours, so it is the peer that ``speechattn demo`` and ``benchmarks/eval_align_engines.py`` score
beside our aligners, on the same utterances and against the same ground truth.

Nothing from pocketsphinx is ever a training target, a calibration source or a way to choose
settings: the aligners of this package learn from (audio, text) only. (The ``pico`` speech engine's
timings are themselves a pocketsphinx alignment, so pico is never the truth where pocketsphinx is
a row.)

Words missing from the CMU dictionary get a pronunciation from the project's own phonemizer
(espeak-ng en-us IPA mapped onto the CMU phone set, :func:`cmu_pronunciation`); a word neither
can pronounce makes :func:`pocketsphinx_word_alignment` raise ``ValueError`` so that the caller
skips the utterance and counts it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from speechattn.data.synth import Interval
from speechattn.recipes.align.evaluate import Metrics

__all__ = [
    "PEERS_INSTALL",
    "POCKETSPHINX_ROW",
    "PeerAlignment",
    "cmu_pronunciation",
    "pocketsphinx_alignment",
    "pocketsphinx_available",
    "pocketsphinx_metrics",
    "pocketsphinx_word_alignment",
]

#: How to install the peer aligners.
PEERS_INSTALL = "pip install speechattn[peers]"
#: The row name reports use for pocketsphinx.
POCKETSPHINX_ROW = "pocketsphinx 5.1 forced alignment (peer baseline)"

# espeak-ng IPA (stress marks removed) -> CMU phones. Longest keys are tried first.
_IPA_TO_CMU: dict[str, tuple[str, ...]] = {
    "aɪə": ("AY", "AH"),
    "aʊə": ("AW", "AH"),
    "aɪɚ": ("AY", "ER"),
    "aʊɚ": ("AW", "ER"),
    "oːɹ": ("AO", "R"),
    "ɑː": ("AA",),
    "æ": ("AE",),
    "ʌ": ("AH",),
    "ə": ("AH",),
    "ɐ": ("AH",),
    "ɔː": ("AO",),
    "ɔ": ("AO",),
    "ᵻ": ("IH",),
    "oː": ("AO",),
    "ɒ": ("AA",),
    "aʊ": ("AW",),
    "aɪ": ("AY",),
    "a": ("AE",),
    "aː": ("AA",),
    "b": ("B",),
    "tʃ": ("CH",),
    "d": ("D",),
    "ð": ("DH",),
    "ɛ": ("EH",),
    "e": ("EH",),
    "ɛː": ("EH",),
    "ɜː": ("ER",),
    "ɚ": ("ER",),
    "ɝ": ("ER",),
    "eɪ": ("EY",),
    "f": ("F",),
    "ɡ": ("G",),
    "g": ("G",),
    "h": ("HH",),
    "ɪ": ("IH",),
    "i": ("IY",),
    "iː": ("IY",),
    "iə": ("IY", "AH"),
    "ɪə": ("IH", "R"),
    "ɪɹ": ("IH", "R"),
    "eə": ("EH", "R"),
    "ɛə": ("EH", "R"),
    "ɛɹ": ("EH", "R"),
    "ʊə": ("UH", "R"),
    "ʊɹ": ("UH", "R"),
    "ɔɹ": ("AO", "R"),
    "ɑɹ": ("AA", "R"),
    "dʒ": ("JH",),
    "k": ("K",),
    "l": ("L",),
    "m": ("M",),
    "n": ("N",),
    "ŋ": ("NG",),
    "oʊ": ("OW",),
    "əʊ": ("OW",),
    "o": ("OW",),
    "ɔɪ": ("OY",),
    "p": ("P",),
    "ɹ": ("R",),
    "r": ("R",),
    "s": ("S",),
    "ʃ": ("SH",),
    "t": ("T",),
    "ɾ": ("T",),
    "ʔ": ("T",),
    "θ": ("TH",),
    "ʊ": ("UH",),
    "u": ("UW",),
    "uː": ("UW",),
    "v": ("V",),
    "w": ("W",),
    "j": ("Y",),
    "z": ("Z",),
    "ʒ": ("ZH",),
    "x": ("K",),
}
_IGNORED = set("ˈˌːˑ̩̃ʲʰ-")
_FRAME = 0.01  # pocketsphinx frames
_LOCK = threading.Lock()
_DECODER: list[Any] = []


def _decoder() -> Any:
    """The alignment decoder, with beams wide enough that forced alignment rarely fails.

    (pocketsphinx's default beams lose about one utterance in seven of clean synthetic speech.)
    """
    if not _DECODER:
        from pocketsphinx import Decoder

        _DECODER.append(
            Decoder(
                samprate=16000,
                loglevel="FATAL",
                bestpath=False,
                beam=1e-120,
                wbeam=1e-100,
                pbeam=1e-120,
            )
        )
    return _DECODER[0]


class PeerAlignment(NamedTuple):
    """A peer aligner's output for one utterance.

    Attributes:
        words: one interval per given word, labels as given, in time order (seconds).
        phones: phone intervals (project IPA) when the peer gives them, else empty.
        added_words: words missing from the peer's dictionary that got a pronunciation from
            the project's phonemizer.
    """

    words: list[Interval]
    phones: list[Interval]
    added_words: list[str]


def pocketsphinx_available() -> bool:
    """Whether the ``pocketsphinx`` package (the peer aligner) can be imported."""
    from speechattn.data.engines import _pocketsphinx as ps

    return ps.available()


def _ipa_to_cmu(phones: Sequence[str]) -> list[str]:
    out: list[str] = []
    for ph in phones:
        s = "".join(c for c in ph if c not in "ˈˌ")
        i = 0
        while i < len(s):
            for n in (3, 2, 1):
                chunk = s[i : i + n]
                if len(chunk) == n and chunk in _IPA_TO_CMU:
                    out.extend(_IPA_TO_CMU[chunk])
                    i += n
                    break
            else:
                if s[i] in _IGNORED:
                    i += 1
                    continue
                raise ValueError(f"no CMU phone for IPA {s[i]!r} (in {ph!r})")
    return out


def cmu_pronunciation(word: str) -> str:
    """A CMU-dictionary pronunciation (space-separated phones) from espeak-ng en-us.

    The fallback letter-to-sound for words pocketsphinx's dictionary lacks.

    Raises:
        ValueError: espeak-ng gives no phones for ``word`` or one without a CMU counterpart.
    """
    from speechattn.data.text import phonemize

    parts = phonemize(word, voice="en-us", normalize=False)
    phones = [p for part in parts for p in part]
    cmu = _ipa_to_cmu(phones) if phones else []
    if not cmu:
        raise ValueError(f"Expected a pronounceable word; espeak-ng gives no phones for {word!r}.")
    return " ".join(cmu)


def _check_inputs(waveform: np.ndarray, sample_rate: int, words: Sequence[str]) -> np.ndarray:
    x = np.asarray(waveform)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"Expected a non-empty mono waveform of shape (N,); found {x.shape}.")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"Expected a float waveform in [-1, 1]; found dtype {x.dtype}.")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"Expected sample_rate to be a positive int; found {sample_rate!r}.")
    if isinstance(words, str) or not all(isinstance(w, str) and w.strip() for w in words):
        raise TypeError(f"Expected words as a list of non-empty str; found {words!r}.")
    if not words:
        raise ValueError("Expected at least one word to align; found none.")
    return x.astype(np.float32, copy=False)


def pocketsphinx_alignment(
    waveform: np.ndarray, sample_rate: int, words: Sequence[str]
) -> PeerAlignment:
    """pocketsphinx 5 forced alignment of ``words`` to the audio: words and phones.

    A baseline, never a teacher: see the module notes. Audio is resampled to 16 kHz (the
    model's rate); times come in 10 ms frames, clipped to the audio's duration. The search
    beams are wider than pocketsphinx's defaults (with those, about one clean utterance in
    seven finds no alignment).

    Args:
        waveform: float ``(N,)`` in ``[-1, 1]``, mono.
        sample_rate: samples per second of ``waveform``.
        words: the spoken words in order (labels of the returned word intervals).

    Returns:
        :class:`PeerAlignment`.

    Raises:
        RuntimeError: pocketsphinx is not installed (the message says how to install it).
        ValueError: bad input, a word with no pronunciation, or pocketsphinx found no
            alignment of the text to the audio.
    """
    x = _check_inputs(waveform, sample_rate, words)
    from speechattn.data.engines import _pocketsphinx as ps

    if not ps.available():
        raise RuntimeError(f"pocketsphinx is not installed: {PEERS_INSTALL}")
    clean = [ps._clean(w) for w in words]
    if not all(clean):
        raise ValueError(f"Expected words with letters; found {list(words)!r}.")
    pcm = ps._pcm16k(x, sample_rate)
    added: list[str] = []
    with _LOCK:
        dec = _decoder()
        for w in dict.fromkeys(p for label in clean for p in label.split()):
            if dec.lookup_word(w) is None:
                dec.add_word(w, cmu_pronunciation(w), True)
                added.append(w)
        try:
            segs, phones = ps.run_alignment(dec, pcm, clean)
        except RuntimeError as exc:
            raise ValueError(f"pocketsphinx cannot align {clean}: {exc}") from None
    dur = x.size / sample_rate
    out_words = [
        Interval(min(a * _FRAME, dur), min(b * _FRAME, dur), label)
        for (a, b), label in zip(segs, words)
    ]
    phones = [Interval(min(p.start, dur), min(p.end, dur), p.label) for p in phones]
    return PeerAlignment(out_words, phones, added)


def pocketsphinx_word_alignment(
    waveform: np.ndarray, sample_rate: int, words: Sequence[str]
) -> list[Interval]:
    """pocketsphinx 5 forced alignment: one interval per word, in time order (seconds).

    A baseline for reports, never a training target or calibration source. Words missing
    from the CMU dictionary are pronounced by espeak-ng (:func:`cmu_pronunciation`).

    Example::

        words = pocketsphinx_word_alignment(wave, 22050, ["the", "dog", "slept"])
        [(w.start, w.end, w.label) for w in words]

    Raises:
        RuntimeError: pocketsphinx is not installed.
        ValueError: bad input, an unpronounceable word, or no alignment found.
    """
    return pocketsphinx_alignment(waveform, sample_rate, words).words


def _spoken_words(item: Any) -> list[str]:
    """The spoken words of an aligner item's written words, in order (the written words
    themselves for an item without ``word_spoken``)."""
    spoken = getattr(item, "word_spoken", None)
    if spoken is None:
        return [w for w, _, _ in item.words]
    return [s for ws in spoken for s in ws]


def pocketsphinx_metrics(items: Sequence[Any], audio_paths: Mapping[str, Any]) -> Metrics:
    """Score pocketsphinx's forced alignment of aligner items against their ground truth.

    The same word and phone boundary metrics as
    :func:`speechattn.recipes.align.evaluate.score` (a report row beside our aligners). Phones
    are scored only where pocketsphinx's (CMU) phones match the ground truth one-to-one.
    Utterances pocketsphinx cannot align are skipped and counted in ``failures``;
    ``extra["added_words"]`` lists the words pronounced by espeak-ng.

    Args:
        items: :class:`~speechattn.recipes.align.data.AlignItem` objects: pocketsphinx aligns
            the spoken words of their ``words`` (``"five dollars"`` for ``$5``, from
            ``word_spoken``) and its word intervals are merged back per written word
            (:func:`~speechattn.recipes.align.data.merge_spoken_intervals`), so it is scored
            on the same words as the aligner; ``gt_words`` / ``gt_phones`` are the truth.
        audio_paths: item id -> audio file.

    Raises:
        RuntimeError: pocketsphinx is not installed.
    """
    from speechattn.data.audio import load_audio
    from speechattn.recipes.align.data import merge_spoken_intervals, spoken_word_counts
    from speechattn.recipes.align.evaluate import AlignmentResult, score

    results: list[AlignmentResult] = []
    failed = 0
    added: list[str] = []
    for it in items:
        wav = load_audio(audio_paths[it.id], sample_rate=16000).numpy()
        try:
            al = pocketsphinx_alignment(wav, 16000, _spoken_words(it))
        except ValueError:
            failed += 1
            continue
        added.extend(al.added_words)
        ph = [(p.start, p.end, p.label) for p in al.phones]
        gt = it.gt_phones
        results.append(
            AlignmentResult(
                item=it,
                durations=np.zeros(0, dtype=np.int64),
                phones=ph if gt is not None and len(gt) == len(ph) else [],
                words=[
                    (a, b, w)
                    for (a, b), (w, _, _) in zip(
                        merge_spoken_intervals(al.words, spoken_word_counts(it)), it.words
                    )
                ],
            )
        )
    m = score(results)
    m.utterances = len(items)
    m.failures = failed
    m.extra["added_words"] = sorted(set(added))
    return m
