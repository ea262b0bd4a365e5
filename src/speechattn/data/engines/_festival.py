"""The Festival engine: a persistent ``festival --pipe`` process per voice, exact phone and word times.

Festival writes the utterance's ``Segment`` relation (each segment's end time and its syllable's
stress) and ``Word`` relation (``word_start``/``word_end``) after synthesis; a segment starts
where the previous one ends. Pause segments (``pau``, ``#``) become gaps. Phones of the ``radio``
(US, CMU dictionary) and ``mrpa`` (British) phone sets are mapped onto the project's IPA with
:func:`speechattn.data.text.map_phone`. Output is deterministic for (text, voice) whatever was
spoken before (tested). Each voice keeps one Festival process (started on first use, ~1 s to
load the voice; then ~40 ms per diphone utterance); calls are serialised by a lock.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np

from speechattn.data.engines import APT_COMPONENTS_HINT, Engine, EngineUnavailable, SpeechResult
from speechattn.data.synth import Interval

__all__: list[str] = []

_VOICE_ROOT = Path("/usr/share/festival/voices")
_PAUSES = {"pau", "#", "h#", "sil"}

_END = "@@speechattn-end@@"
_SCRIPT = """
(set! utt (Utterance Text "{text}"))
(utt.synth utt)
(utt.save.wave utt "{wav}" 'riff)
(format t "P\\t%s\\n" (Param.get 'PhoneSet))
(mapcar (lambda (s) (format t "S\\t%s\\t%f\\t%s\\n" (item.name s) (item.feat s "end")
  (item.feat s "R:SylStructure.parent.stress"))) (utt.relation.items utt 'Segment))
(mapcar (lambda (w) (format t "W\\t%s\\t%f\\t%f\\n" (item.name w) (item.feat w "word_start")
  (item.feat w "word_end"))) (utt.relation.items utt 'Word))
(format t "%s\\n" "{end}")
(fflush nil)
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

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: dict[str, Any] = {}
        self._pid = os.getpid()
        atexit.register(self.close)

    def close(self) -> None:
        """Stop this engine's Festival processes (only in the process that started them)."""
        if os.getpid() != self._pid:
            return
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._procs.clear()

    def _process(self, voice_id: str) -> Any:
        proc = self._procs.get(voice_id)
        if self._pid != os.getpid():  # forked: the parent's processes are not ours to use
            self._procs, self._pid = {}, os.getpid()
            proc = None
        if proc is not None and proc.poll() is None:
            return proc
        try:
            proc = subprocess.Popen(
                ["festival", "--pipe"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                encoding="utf-8",
                bufsize=1,
                env={**os.environ, "LC_ALL": "C.UTF-8"},
            )
        except FileNotFoundError:  # pragma: no cover - checked by missing()
            raise EngineUnavailable(self.name, "festival not found", self.install) from None
        self._procs[voice_id] = proc
        self._send(proc, f'(voice_{voice_id})\n(format t "%s\\n" "{_END}")\n(fflush nil)\n')
        return proc

    def _send(self, proc: Any, script: str) -> list[str]:
        if proc.stdin is None or proc.stdout is None:  # pragma: no cover - Popen with PIPEs
            raise RuntimeError("festival process has no pipes")
        proc.stdin.write(script)
        proc.stdin.flush()
        lines: list[str] = []
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"festival exited (status {proc.poll()}) during synthesis")
            if line.strip() == _END:
                return lines
            lines.append(line)

    def _run(self, voice_id: str, script: str) -> list[str]:
        proc = self._process(voice_id)
        try:
            return self._send(proc, script)
        except (RuntimeError, BrokenPipeError, OSError):
            self._procs.pop(voice_id, None)
            if proc.poll() is None:
                proc.kill()
            raise

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

        with self._lock, tempfile.TemporaryDirectory(prefix="speechattn-festival-") as tmp:
            wav_path = os.path.join(tmp, "out.wav")
            script = _SCRIPT.format(text=_scheme_string(text), wav=wav_path, end=_END)
            lines = self._run(voice_id, script)
            if not os.path.exists(wav_path):
                raise RuntimeError(
                    f"festival wrote no audio for voice {voice_id!r} and text {text!r}: "
                    f"{' '.join(lines)[-300:]}"
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
        for line in lines:
            line = line.rstrip("\n")
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
