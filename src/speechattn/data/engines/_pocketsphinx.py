"""pocketsphinx 5 (pip, ships an en-us model): forced alignment and recognition of 16 kHz audio.

Used for engines that report no timings of their own (Pico) and by ``benchmarks/bench_voices.py``
(word error rate, and an independent check of an engine's own word timings). Alignment works in
10 ms frames; words missing from the CMU dictionary cannot be aligned.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from speechattn.data.synth import Interval

__all__: list[str] = []

INSTALL = "pip install speechattn[voices]  (pocketsphinx>=5.1.1)"
_RATE = 16000
_FRAME = 0.01
_LOCK = threading.Lock()
_DECODERS: dict[str, Any] = {}


def available() -> bool:
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


def _decoder(kind: str) -> Any:
    d = _DECODERS.get(kind)
    if d is None:
        from pocketsphinx import Decoder

        kw: dict[str, Any] = {"samprate": _RATE, "loglevel": "FATAL"}
        if kind == "align":
            kw["bestpath"] = False
        d = Decoder(**kw)
        _DECODERS[kind] = d
    return d


def _pcm16k(wave: np.ndarray, sample_rate: int) -> bytes:
    x = np.asarray(wave, dtype=np.float32)
    if sample_rate != _RATE:
        import soxr

        x = np.asarray(soxr.resample(x, sample_rate, _RATE), dtype=np.float32)
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2").tobytes()


def _clean(word: str) -> str:
    return word.lower().strip(' ,.?!;:"()')


def run_alignment(
    d: Any, pcm: bytes, labels: list[str]
) -> tuple[list[tuple[int, int]], list[Interval]]:
    """Force-align cleaned word ``labels`` to 16 kHz PCM on decoder ``d`` (the caller holds the lock).

    A label may hold several words (espeak-ng joins "of the"): its parts are aligned and merged.
    Every part must be in the decoder's dictionary.

    Returns:
        The ``[start, end)`` span of each label in 10 ms frames, and the phone intervals
        (seconds; IPA where the CMU phone maps) of a second, phone-level pass (empty when that
        pass fails).

    Raises:
        RuntimeError: pocketsphinx refuses the text (``set_align_text``).
        ValueError: pocketsphinx found no alignment of the text to the audio.
    """
    from speechattn.data.text import map_phone

    owners = [k for k, w in enumerate(labels) for _ in w.split()]
    d.set_align_text(" ".join(labels))
    d.start_utt()
    d.process_raw(pcm, full_utt=True)
    d.end_utt()
    segs = [
        (s.start_frame, s.end_frame + 1)
        for s in (d.seg() or [])
        if not (s.word.startswith("<") or s.word.startswith("["))
    ]
    phones: list[Interval] = []
    try:
        d.set_alignment()
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        al = d.get_alignment()
    except RuntimeError:  # sub-word alignment failed: words only
        al = None
    for w in al or []:
        if w.name.startswith("<") or w.name.startswith("["):
            continue
        for p in w:
            try:
                sym = map_phone(p.name, "radio")
            except ValueError:
                sym = p.name
            phones.append(Interval(p.start * _FRAME, (p.start + p.duration) * _FRAME, sym))
    if len(segs) != len(owners):
        raise ValueError("pocketsphinx found no alignment of the text to the audio")
    spans: dict[int, tuple[int, int]] = {}
    for k, (start, end) in zip(owners, segs):
        lo, hi = spans.get(k, (start, end))
        spans[k] = (min(lo, start), max(hi, end))
    return [spans[k] for k in range(len(labels))], phones


def align(
    wave: np.ndarray, sample_rate: int, words: list[str]
) -> tuple[list[Interval], list[Interval]]:
    """Force-align ``words`` to the audio: word intervals (labels as given) and phones (IPA).

    Raises:
        ValueError: a word is not in pocketsphinx's dictionary, or alignment failed.
    """
    labels = [_clean(w) for w in words]
    if not all(labels):
        raise ValueError(f"Expected words with letters to align; found {words}")
    pcm = _pcm16k(wave, sample_rate)
    with _LOCK:
        d = _decoder("align")
        missing = [p for w in labels for p in w.split() if d.lookup_word(p) is None]
        if missing:
            raise ValueError(
                f"pocketsphinx cannot align words missing from its dictionary: {missing}"
            )
        spans, phones = run_alignment(d, pcm, labels)
    out_words = [Interval(a * _FRAME, b * _FRAME, label) for (a, b), label in zip(spans, words)]
    dur = len(wave) / sample_rate
    clip = lambda ivs: [Interval(min(i.start, dur), min(i.end, dur), i.label) for i in ivs]  # noqa: E731
    return clip(out_words), clip(phones)


def recognize(wave: np.ndarray, sample_rate: int) -> str:
    """pocketsphinx's best transcript (lower case words) with its default en-us language model."""
    pcm = _pcm16k(wave, sample_rate)
    with _LOCK:
        d = _decoder("decode")
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        hyp = d.hyp()
    return "" if hyp is None else str(hyp.hypstr)
