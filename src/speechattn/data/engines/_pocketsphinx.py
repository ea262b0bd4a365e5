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


def align(
    wave: np.ndarray, sample_rate: int, words: list[str]
) -> tuple[list[Interval], list[Interval]]:
    """Force-align ``words`` to the audio: word intervals (labels as given) and phones (IPA).

    Raises:
        ValueError: a word is not in pocketsphinx's dictionary, or alignment failed.
    """
    from speechattn.data.text import map_phone

    pcm = _pcm16k(wave, sample_rate)
    with _LOCK:
        d = _decoder("align")
        missing = [w for w in words if d.lookup_word(_clean(w)) is None]
        if missing:
            raise ValueError(
                f"pocketsphinx cannot align words missing from its dictionary: {missing}"
            )
        d.set_align_text(" ".join(_clean(w) for w in words))
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        segs = [
            (s.word, s.start_frame, s.end_frame + 1)
            for s in (d.seg() or [])
            if not (s.word.startswith("<") or s.word.startswith("["))
        ]
        if len(segs) != len(words):
            raise ValueError("pocketsphinx could not align the text to the audio")
        out_words = [
            Interval(a * _FRAME, b * _FRAME, label) for (_, a, b), label in zip(segs, words)
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
