"""The SVOX Pico engine (``pico2wave``): no timings of its own, so they come from an aligner.

Pico reports nothing but audio; word and phone intervals are a pocketsphinx forced alignment of
the text to that audio (10 ms frames, CMU phones mapped onto the project's IPA), and the result
says so (``timings="aligned"``). Words must be in the CMU dictionary. Deterministic.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave

import numpy as np

from speechattn.data.engines import APT_COMPONENTS_HINT, Engine, SpeechResult
from speechattn.data.engines import _pocketsphinx as ps

__all__: list[str] = []

_LANG_DIR = "/usr/share/pico/lang"


class PicoEngine(Engine):
    name = "pico"
    install = f"apt-get install libttspico-utils ({APT_COMPONENTS_HINT}); timings need {ps.INSTALL}"

    def missing(self) -> str | None:
        if shutil.which("pico2wave") is None:
            return "the 'pico2wave' program is not on PATH"
        if not ps.available():
            return "the Python package 'pocketsphinx' (its timings) is not installed"
        return None

    def installed_voices(self) -> list[str]:
        if shutil.which("pico2wave") is None:
            return []
        return [v for v in ("en-US", "en-GB") if os.path.exists(f"{_LANG_DIR}/{v}_ta.bin")]

    def _synthesize(self, text: str, voice_id: str) -> SpeechResult:
        from speechattn.data.text import normalize_text, words_of

        spoken = normalize_text(text)
        with tempfile.TemporaryDirectory(prefix="speechattn-pico-") as tmp:
            path = os.path.join(tmp, "out.wav")
            proc = subprocess.run(
                ["pico2wave", "-l", voice_id, "-w", path, spoken],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if not os.path.exists(path):
                raise RuntimeError(f"pico2wave wrote no audio: {proc.stderr.strip()[-300:]}")
            with wave.open(path, "rb") as w:
                sr = w.getframerate()
                pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        wav = pcm.astype(np.float32) / 32768.0
        words, phones = ps.align(wav, sr, words_of(spoken))
        return SpeechResult(wav, sr, words, phones or None, text, voice_id, self.name, "aligned")


def make_engine(name: str) -> Engine:
    return PicoEngine()
