"""The RHVoice engine (statistical parametric, HTS-style): ctypes on ``libRHVoice.so.5``.

RHVoice calls back when a word starts and ends; the time of a callback is the number of samples
delivered so far, so word boundaries are only as fine as RHVoice's audio blocks (100 ms steps);
each word is then shrunk past silence at its ends (5 ms frames 40 dB below the peak). No phone
timings. Synthesis is deterministic for (text, voice).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

from speechattn.data.engines import APT_COMPONENTS_HINT, Engine, SpeechResult
from speechattn.data.synth import Interval

__all__: list[str] = []

_DATA = Path("/usr/share/RHVoice")
_CONFIG = Path("/etc/RHVoice")
_LIB_NAMES = ("libRHVoice.so.5", "libRHVoice.so")

_SET_RATE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_PLAY = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_uint, ctypes.c_void_p
)
_MARK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_POS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p)
_DONE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _Callbacks(ctypes.Structure):
    _fields_ = [  # RHVoice_callbacks (RHVoice.h, 1.8)
        ("set_sample_rate", _SET_RATE),
        ("play_speech", _PLAY),
        ("process_mark", _MARK),
        ("word_starts", _POS),
        ("word_ends", _POS),
        ("sentence_starts", _POS),
        ("sentence_ends", _POS),
        ("play_audio", _MARK),
        ("done", _DONE),
    ]


class _InitParams(ctypes.Structure):
    _fields_ = [
        ("data_path", ctypes.c_char_p),
        ("config_path", ctypes.c_char_p),
        ("resource_paths", ctypes.POINTER(ctypes.c_char_p)),
        ("callbacks", _Callbacks),
        ("options", ctypes.c_uint),
    ]


class _SynthParams(ctypes.Structure):
    _fields_ = [
        ("voice_profile", ctypes.c_char_p),
        ("absolute_rate", ctypes.c_double),
        ("absolute_pitch", ctypes.c_double),
        ("absolute_volume", ctypes.c_double),
        ("relative_rate", ctypes.c_double),
        ("relative_pitch", ctypes.c_double),
        ("relative_volume", ctypes.c_double),
        ("punctuation_mode", ctypes.c_int),
        ("punctuation_list", ctypes.c_char_p),
        ("capitals_mode", ctypes.c_int),
        ("flags", ctypes.c_int),
    ]


def _find_library() -> str | None:
    for name in _LIB_NAMES:
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return ctypes.util.find_library("RHVoice")


class RHVoiceEngine(Engine):
    name = "rhvoice"
    install = f"apt-get install rhvoice rhvoice-english librhvoice5 ({APT_COMPONENTS_HINT})"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: Any = None
        self._lib: Any = None
        self._rate = 0
        self._chunks: list[bytes] = []
        self._samples = 0
        self._starts: list[tuple[int, int, int]] = []
        self._ends: list[tuple[int, int, int]] = []
        # C holds these pointers: keep references for the engine's lifetime
        self._cbs = _Callbacks(
            _SET_RATE(self._on_rate),
            _PLAY(self._on_play),
            _MARK(0),
            _POS(self._on_word_start),
            _POS(self._on_word_end),
            _POS(0),
            _POS(0),
            _MARK(0),
            _DONE(0),
        )

    def missing(self) -> str | None:
        if _find_library() is None:
            return "the library libRHVoice.so.5 is not installed"
        if not self.installed_voices():
            return f"no English RHVoice voice is installed under {_DATA / 'voices'}"
        return None

    def installed_voices(self) -> list[str]:
        from speechattn.data.voices import VOICES

        names = [v.voice_id for v in VOICES if v.engine == "rhvoice"]
        return [n for n in names if (_DATA / "voices" / n.lower() / "voice.info").is_file()]

    # callbacks (run inside RHVoice_speak, under self._lock)
    def _on_rate(self, rate: int, user: Any) -> int:
        self._rate = int(rate)
        return 1

    def _on_play(self, samples: Any, count: int, user: Any) -> int:
        self._chunks.append(ctypes.string_at(samples, 2 * count))
        self._samples += int(count)
        return 1

    def _on_word_start(self, pos: int, length: int, user: Any) -> int:
        self._starts.append((int(pos), int(length), self._samples))
        return 1

    def _on_word_end(self, pos: int, length: int, user: Any) -> int:
        self._ends.append((int(pos), int(length), self._samples))
        return 1

    def _load(self) -> None:
        if self._engine is not None:
            return
        lib = ctypes.CDLL(_find_library())
        lib.RHVoice_new_tts_engine.restype = ctypes.c_void_p
        lib.RHVoice_new_tts_engine.argtypes = [ctypes.POINTER(_InitParams)]
        lib.RHVoice_new_message.restype = ctypes.c_void_p
        lib.RHVoice_new_message.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.POINTER(_SynthParams),
            ctypes.c_void_p,
        ]
        lib.RHVoice_speak.restype = ctypes.c_int
        lib.RHVoice_speak.argtypes = [ctypes.c_void_p]
        lib.RHVoice_delete_message.argtypes = [ctypes.c_void_p]
        self._params = _InitParams(str(_DATA).encode(), str(_CONFIG).encode(), None, self._cbs, 0)
        eng = lib.RHVoice_new_tts_engine(ctypes.byref(self._params))
        if not eng:
            raise RuntimeError(f"RHVoice_new_tts_engine failed with data path {_DATA}")
        self._lib, self._engine = lib, eng

    def _synthesize(self, text: str, voice_id: str) -> SpeechResult:
        data = text.encode("utf-8")
        with self._lock:
            self._load()
            self._chunks, self._samples, self._starts, self._ends = [], 0, [], []
            params = _SynthParams(voice_id.encode(), 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0, None, 0, 0)
            msg = self._lib.RHVoice_new_message(
                self._engine, data, len(data), 0, ctypes.byref(params), None
            )
            if not msg:
                raise RuntimeError(f"RHVoice_new_message failed for voice {voice_id!r}")
            try:
                ok = self._lib.RHVoice_speak(msg)
            finally:
                self._lib.RHVoice_delete_message(msg)
            if not ok:
                raise RuntimeError(f"RHVoice_speak failed for voice {voice_id!r}, text {text!r}")
            pcm = np.frombuffer(b"".join(self._chunks), dtype=np.int16)
            starts, ends, sr = list(self._starts), list(self._ends), self._rate
        wav = pcm.astype(np.float32) / 32768.0
        words = _trim_silence(_words(data, starts, ends, len(pcm), sr), wav, sr)
        return SpeechResult(wav, sr, words, None, text, voice_id, self.name)


def _words(
    data: bytes,
    starts: list[tuple[int, int, int]],
    ends: list[tuple[int, int, int]],
    total: int,
    sr: int,
) -> list[Interval]:
    """Word intervals from start/end callbacks (positions in characters of the text)."""
    text = data.decode("utf-8")
    end_at = {pos: s for pos, _, s in ends}
    out: list[Interval] = []
    for i, (pos, length, s) in enumerate(starts):
        e = end_at.get(pos, starts[i + 1][2] if i + 1 < len(starts) else total)
        label = text[pos : pos + length].strip(" ,.?!;:\"'()")
        if not label:
            continue
        a = min(s, total)
        b = min(max(e, a), total)
        if out and a < round(out[-1].end * sr):
            a = round(out[-1].end * sr)
        if b <= a:
            continue
        out.append(Interval(a / sr, b / sr, label))
    return out


def _trim_silence(words: list[Interval], wav: np.ndarray, sr: int) -> list[Interval]:
    """Shrink each word past silence at its ends (callbacks come at block boundaries)."""
    hop = max(1, sr // 200)  # 5 ms frames
    n = len(wav) // hop
    if n == 0:
        return words
    energy = np.sqrt(np.mean(wav[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    loud = energy > max(float(energy.max()) * 10 ** (-40 / 20), 1e-6)
    out: list[Interval] = []
    for w in words:
        a, b = round(w.start * sr) // hop, min(n, -(-round(w.end * sr) // hop))
        while a < b and not loud[a]:
            a += 1
        while b > a and not loud[b - 1]:
            b -= 1
        iv = Interval(a * hop / sr, min(b * hop, len(wav)) / sr, w.label) if b > a else w
        if out and iv.start < out[-1].end:
            iv = Interval(out[-1].end, max(out[-1].end, iv.end), iv.label)
        out.append(iv)
    return out


def make_engine(name: str) -> Engine:
    return RHVoiceEngine()
