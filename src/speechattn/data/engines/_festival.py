"""The Festival engine: one ``festival -b`` process per utterance, exact phone and word times.

Festival writes the utterance's ``Segment`` relation (each segment's end time and its syllable's
stress) and ``Word`` relation (``word_start``/``word_end``) after synthesis; a segment starts
where the previous one ends. Pause segments (``pau``, ``#``) become gaps. Phones of the ``radio``
(US, CMU dictionary) and ``mrpa`` (British) phone sets are mapped onto the project's IPA with
:func:`speechattn.data.text.map_phone`. Output is deterministic for (text, voice).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from speechattn.data.engines import APT_COMPONENTS_HINT, Engine, EngineUnavailable, SpeechResult
from speechattn.data.synth import Interval

__all__: list[str] = []

_VOICE_ROOT = Path("/usr/share/festival/voices")
_PAUSES = {"pau", "#", "h#", "sil"}
_TIMEOUT_S = 120

_SCRIPT = """
(voice_{voice})
(set! utt (Utterance Text "{text}"))
(utt.synth utt)
(utt.save.wave utt "{wav}" 'riff)
(format t "P\\t%s\\n" (Param.get 'PhoneSet))
(mapcar (lambda (s) (format t "S\\t%s\\t%f\\t%s\\n" (item.name s) (item.feat s "end")
  (item.feat s "R:SylStructure.parent.stress"))) (utt.relation.items utt 'Segment))
(mapcar (lambda (w) (format t "W\\t%s\\t%f\\t%f\\n" (item.name w) (item.feat w "word_start")
  (item.feat w "word_end"))) (utt.relation.items utt 'Word))
"""


def _scheme_string(text: str) -> str:
    text = " ".join(text.split())
    return text.replace("\\", "\\\\").replace('"', '\\"')


class FestivalEngine(Engine):
    name = "festival"
    install = (
        "apt-get install festival festlex-cmu festlex-poslex festvox-kallpc16k "
        "festvox-kdlpc16k festvox-us-slt-hts (more voices: festvox-rablpc16k festvox-don "
        f"festvox-us1 festvox-us2 festvox-us3 festvox-en1; {APT_COMPONENTS_HINT})"
    )

    def missing(self) -> str | None:
        if shutil.which("festival") is None:
            return "the 'festival' program is not on PATH"
        if not self.installed_voices():
            return f"no Festival voice is installed under {_VOICE_ROOT}"
        return None

    def installed_voices(self) -> list[str]:
        if shutil.which("festival") is None or not _VOICE_ROOT.is_dir():
            return []
        return sorted(p.name for p in _VOICE_ROOT.glob("*/*") if p.is_dir())

    def _synthesize(self, text: str, voice_id: str) -> SpeechResult:
        from speechattn.data.text import map_phone

        with tempfile.TemporaryDirectory(prefix="speechattn-festival-") as tmp:
            wav_path = os.path.join(tmp, "out.wav")
            script = os.path.join(tmp, "run.scm")
            Path(script).write_text(
                _SCRIPT.format(voice=voice_id, text=_scheme_string(text), wav=wav_path),
                encoding="utf-8",
            )
            try:
                proc = subprocess.run(
                    ["festival", "-b", script],
                    capture_output=True,
                    text=True,
                    timeout=_TIMEOUT_S,
                    check=False,
                    env={**os.environ, "LC_ALL": "C.UTF-8"},
                )
            except FileNotFoundError:  # pragma: no cover - checked by missing()
                raise EngineUnavailable(self.name, "festival not found", self.install) from None
            if not os.path.exists(wav_path):
                raise RuntimeError(
                    f"festival wrote no audio for voice {voice_id!r} and text {text!r}: "
                    f"{proc.stderr.strip()[-300:]}"
                )
            with wave.open(wav_path, "rb") as w:
                sr = w.getframerate()
                raw = w.readframes(w.getnframes())
                channels = w.getnchannels()
        pcm = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)[:, 0]
        wav = pcm.astype(np.float32) / 32768.0
        dur = len(wav) / sr
        phoneset = "radio"
        phones: list[Interval] = []
        words: list[Interval] = []
        prev_end = 0.0
        for line in proc.stdout.splitlines():
            parts = line.split("\t")
            if parts[0] == "P" and len(parts) == 2:
                phoneset = parts[1].strip()
            elif parts[0] == "S" and len(parts) == 4:
                name, end = parts[1], min(float(parts[2]), dur)
                start = min(prev_end, end)
                prev_end = end
                if name in _PAUSES or end <= start:
                    continue
                try:
                    stress = int(float(parts[3]))
                except ValueError:
                    stress = 0
                try:
                    label = map_phone(name, phoneset, stress=stress)
                except ValueError:
                    label = name
                phones.append(Interval(start, end, label))
            elif parts[0] == "W" and len(parts) == 4:
                start, end = min(float(parts[2]), dur), min(float(parts[3]), dur)
                words.append(Interval(start, max(start, end), parts[1]))
        words = _cover(words, phones)
        return SpeechResult(wav, sr, words, phones, text, voice_id, self.name)


def _cover(words: list[Interval], phones: list[Interval]) -> list[Interval]:
    """Each word spans exactly its phones.

    Festival's ``word_start`` is the previous word's end (pauses included), so words shrink to
    their phones; a phone no word covers (a post-lexical linking ``r``: "over the") joins the
    word before it.
    """
    if not words:
        return words
    owner: list[list[Interval]] = [[] for _ in words]
    k = 0
    for p in phones:
        mid = (p.start + p.end) / 2
        while k + 1 < len(words) and mid >= words[k + 1].start - 1e-9:
            k += 1
        owner[k].append(p)
    out = []
    for w, ps in zip(words, owner):
        out.append(Interval(ps[0].start, ps[-1].end, w.label) if ps else w)
    return out


def make_engine(name: str) -> Engine:
    return FestivalEngine()
