"""The MBROLA engine: espeak-ng's phones and per-phone durations rendered by the ``mbrola`` program.

espeak-ng (the system library, ``libespeak-ng.so.1`` from apt, whose data hold the ``mb-*``
voices and the ``mbrola_ph`` phone translation tables) turns the text into phones with
durations and pitch in MBROLA's ``.pho`` format, and the ``mbrola`` program concatenates
diphones of a recorded person to match them exactly. Driven through ctypes (see
:class:`_Library`), espeak-ng emits one IPA phoneme event (the project's phone set) per phone
together with that phone's ``.pho`` lines, so a phone's interval is the durations espeak-ng
asked MBROLA for, summed in order; pauses are gaps. Words: a word-initial phone's event carries
its word's text position, the other phones their clause's start (smaller than any word start
seen so far), which :func:`speechattn.data.synth._word_spans` turns into written words as for
the formant engine. Stress marks, which these events leave out, come from the same library's
``espeak_TextToPhonemes`` for the same text and voice when its phones match.

Why not espeak-ng's own MBROLA audio: its library reads MBROLA's output through a pipe with
``poll`` time-outs (``mbrowrap.c``), so the samples at pauses, and every event after them, move
by a few samples from run to run; and its events are late by ``mbrola_delay`` (1000 samples,
``synth_mbrola.c``). Rendering the ``.pho`` text with the ``mbrola`` program is deterministic.

Voices: the English databases ``us1`` (female), ``us2``, ``us3`` (American) and ``en1``
(British), and espeak-ng's accented-English voices, which read English through another
language's database (``de1-en`` = German database ``de1`` speaking English). Each MBROLA
database is one recorded person. Voice ids are espeak-ng's ``mb-<id>`` names without ``mb-``.

Each process loads its own copies of the library (one per voice: after a voice change
espeak-ng 1.51 leaves stale text positions on some phoneme events; each copy is written to a
temporary file, opened and unlinked): espeak-ng keeps its state in C globals that a forked
worker must not share with its parent. Output is deterministic for (text, voice), whatever
was spoken before.
"""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from speechattn.data.engines import APT_COMPONENTS_HINT, Engine, EngineUnavailable, SpeechResult
from speechattn.data.synth import Interval

__all__: list[str] = []

#: English MBROLA voices (the voice id is the database name).
ENGLISH = ("us1", "us2", "us3", "en1")
#: espeak-ng's accented-English MBROLA voices (``espeak-ng --voices=mb``).
ACCENTED = (
    "de1-en", "de2-en", "de3-en", "de4-en", "de5-en", "de6-en", "fr1-en", "fr4-en", "nl2-en",
    "af1-en", "gr2-en", "hu1-en", "pl1-en", "ro1-en", "sw1-en", "sw2-en",
)  # fmt: skip
VOICES = ENGLISH + ACCENTED

_MBROLA_ROOT = Path("/usr/share/mbrola")
_INSTALL = (
    "apt-get install espeak-ng mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 "
    "(accented English: mbrola-de1 ... mbrola-de6 mbrola-fr1 mbrola-fr4 mbrola-nl2 mbrola-af1 "
    f"mbrola-gr2 mbrola-hu1 mbrola-pl1 mbrola-ro1 mbrola-sw1 mbrola-sw2; {APT_COMPONENTS_HINT})"
)


def _database(voice_id: str) -> str:
    return voice_id.split("-", 1)[0]


def _library_path() -> Path | None:
    for pattern in ("/usr/lib/*/libespeak-ng.so.1", "/usr/lib/libespeak-ng.so.1",
                    "/usr/local/lib/libespeak-ng.so.1"):  # fmt: skip
        hits = sorted(glob.glob(pattern))
        if hits:
            return Path(hits[0])
    return None


def _data_parent(lib: Path) -> Path | None:
    """The directory holding the ``espeak-ng-data`` that has the ``mb`` voices."""
    env = os.environ.get("ESPEAK_DATA_PATH")
    for parent in [*([Path(env)] if env else []), lib.parent, Path("/usr/share"), Path("/usr/lib")]:
        if (parent / "espeak-ng-data" / "voices" / "mb").is_dir():
            return parent
    return None


def _database_installed(db: str) -> bool:
    return (_MBROLA_ROOT / db / db).is_file() or (_MBROLA_ROOT / db).is_file()


_WRITE = ctypes.CFUNCTYPE(
    ctypes.c_ssize_t, ctypes.c_void_p, ctypes.POINTER(ctypes.c_char), ctypes.c_size_t
)


class _CookieIO(ctypes.Structure):
    _fields_ = [  # glibc cookie_io_functions_t
        ("read", ctypes.c_void_p),
        ("write", _WRITE),
        ("seek", ctypes.c_void_p),
        ("close", ctypes.c_void_p),
    ]


_PHONEMES_MBROLA = 0x10  # espeakPHONEMES_MBROLA: write .pho data instead of calling MBROLA
_IONBF = 2


class _Library:
    """One private instance of the system espeak-ng library (see the module notes).

    It runs with ``espeak_SetPhonemeTrace(espeakPHONEMES_MBROLA, stream)``: espeak-ng writes
    each phone's ``.pho`` lines to ``stream`` with one ``fwrite`` (``MbrolaTranslate``) right
    after emitting that phone's event, instead of handing them to MBROLA. The stream is an
    unbuffered ``fopencookie`` whose write hook collects the writes, so the k-th write is the
    k-th phoneme event's ``.pho`` lines (1 to 3 lines: a phone can become two MBROLA phones
    and a pause).
    """

    def __init__(self, lib_path: Path, data_parent: Path) -> None:
        from speechattn.data import _espeak as E

        fd, tmp = tempfile.mkstemp(prefix="speechattn-espeak-mbrola-", suffix=".so")
        try:
            with os.fdopen(fd, "wb") as f, lib_path.open("rb") as src:
                shutil.copyfileobj(src, f)
            lib = ctypes.CDLL(tmp)
        finally:
            os.unlink(tmp)
        E.declare_prototypes(lib)
        lib.espeak_ng_GetSampleRate.restype = ctypes.c_int
        lib.espeak_SetPhonemeTrace.argtypes = [ctypes.c_int, ctypes.c_void_p]
        flags = E._INIT_PHONEME_EVENTS | E._INIT_PHONEME_IPA | E._INIT_DONT_EXIT
        rate = lib.espeak_Initialize(
            E._AUDIO_OUTPUT_SYNCHRONOUS, E._BUFFER_MS, str(data_parent).encode(), flags
        )
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (returned {rate}) for {lib_path}")
        self.lib = lib
        self._E = E
        self._events: list[Any] = []
        self._writes: list[str] = []
        self._callback = E._CALLBACK(self._on_synth)  # keep references: C holds the pointers
        lib.espeak_SetSynthCallback(self._callback)
        self._write = _WRITE(self._on_write)
        libc = ctypes.CDLL(None)
        libc.fopencookie.restype = ctypes.c_void_p
        libc.fopencookie.argtypes = [ctypes.c_void_p, ctypes.c_char_p, _CookieIO]
        libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t]
        stream = libc.fopencookie(None, b"w", _CookieIO(None, self._write, None, None))
        if not stream or libc.setvbuf(stream, None, _IONBF, 0) != 0:  # pragma: no cover
            raise RuntimeError("could not open the stream for espeak-ng's .pho output")
        lib.espeak_SetPhonemeTrace(_PHONEMES_MBROLA, stream)
        self._voice: str | None = None

    def _on_write(self, cookie: Any, buf: Any, size: int) -> int:
        self._writes.append(ctypes.string_at(buf, size).decode("utf-8", errors="replace"))
        return size

    def _on_synth(self, wav: Any, num_samples: int, events: Any) -> int:
        E = self._E
        i = 0
        while True:
            ev = events[i]
            if ev.type == E.EV_LIST_TERMINATED:
                break
            if ev.type == E.EV_PHONEME:
                name = bytes(ev.id).split(b"\0", 1)[0].decode("utf-8", errors="replace")
                self._events.append(E.RawEvent(ev.type, ev.text_position, 0, 0, name))
            i += 1
        return 0

    def set_voice(self, voice_id: str) -> None:
        if voice_id == self._voice:
            return
        err = self.lib.espeak_SetVoiceByName(f"mb-{voice_id}".encode())
        if err != 0:
            self._voice = None
            raise RuntimeError(f"espeak-ng could not load MBROLA voice mb-{voice_id} (error {err})")
        self._voice = voice_id

    def phones(self, text: str, voice_id: str) -> tuple[list[tuple[str, int, str]], int]:
        """``[(IPA name or "" for a pause, text position, .pho lines)]`` and the sample rate."""
        self.set_voice(voice_id)
        for param, value in self._E._DEFAULT_PARAMS:
            self.lib.espeak_SetParameter(param, value, 0)
        self._events, self._writes = [], []
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        err = self.lib.espeak_Synth(
            ctypes.cast(buf, ctypes.c_void_p), len(data), 0, self._E._POS_CHARACTER, 0,
            self._E._CHARS_UTF8, None, None,
        )  # fmt: skip
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err} for text {text!r}")
        self.lib.espeak_Synchronize()
        events, writes = self._events, self._writes
        self._events, self._writes = [], []
        if len(events) != len(writes):
            raise RuntimeError(
                f"espeak-ng gave {len(events)} phoneme events but {len(writes)} .pho writes for "
                f"mb-{voice_id} and text {text!r}"
            )
        out = [(e.name, e.text_position, w) for e, w in zip(events, writes)]
        return out, int(self.lib.espeak_ng_GetSampleRate())

    def text_to_phones(self, text: str, voice_id: str) -> list[str]:
        """IPA phones with stress marks, in order, from ``espeak_TextToPhonemes``."""
        self.set_voice(voice_id)
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        ptr = ctypes.c_void_p(ctypes.cast(buf, ctypes.c_void_p).value)
        mode = 0x02 | (ord("|") << 8)  # IPA, phone separator
        out: list[str] = []
        while ptr.value:
            res = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), self._E._CHARS_UTF8, mode)
            if res:
                clause = ctypes.string_at(res).decode("utf-8", errors="replace")
                out.extend(p for w in clause.split() for p in w.split("|") if p)
        return out


def _pho_lines(chunk: str) -> list[tuple[str, int]]:
    """``(MBROLA phone, duration in ms)`` of each line of one phone's ``.pho`` data."""
    out = []
    for line in chunk.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(";"):
            out.append((parts[0], int(parts[1])))
    return out


def _render(pho: str, database: str) -> np.ndarray:
    """Run ``mbrola`` on ``.pho`` text: int16 samples at the database's rate."""
    db = _MBROLA_ROOT / database / database
    if not db.is_file():
        db = _MBROLA_ROOT / database
    proc = subprocess.run(
        ["mbrola", "-e", str(db), "-", "-.raw"],
        input=pho.encode("ascii", errors="replace"),
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"mbrola failed (status {proc.returncode}) with database {db}: "
            f"{proc.stderr.decode(errors='replace')[-300:]}"
        )
    return np.frombuffer(proc.stdout, dtype="<i2").copy()


def _strip_stress(phone: str) -> str:
    return phone.replace("ˈ", "").replace("ˌ", "")


class MbrolaEngine(Engine):
    name = "mbrola"
    install = _INSTALL

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._libs: dict[str, _Library] = {}
        self._pid = os.getpid()

    def missing(self) -> str | None:
        if shutil.which("mbrola") is None:
            return "the 'mbrola' program is not on PATH"
        lib = _library_path()
        if lib is None:
            return "the espeak-ng library (libespeak-ng.so.1, apt espeak-ng) is not installed"
        if _data_parent(lib) is None:
            return "espeak-ng's data have no MBROLA voices (voices/mb; apt espeak-ng-data)"
        if not self.installed_voices():
            return f"no MBROLA voice database is installed under {_MBROLA_ROOT}"
        return None

    def installed_voices(self) -> list[str]:
        if shutil.which("mbrola") is None:
            return []
        lib = _library_path()
        parent = _data_parent(lib) if lib is not None else None
        if parent is None:
            return []
        mb = parent / "espeak-ng-data" / "voices" / "mb"
        return [
            v for v in VOICES if _database_installed(_database(v)) and (mb / f"mb-{v}").is_file()
        ]

    def _library(self, voice_id: str) -> _Library:
        """One library instance per voice: after a voice change espeak-ng 1.51 leaves stale
        text positions on some phoneme events, so each voice keeps its own (as Festival keeps
        one process per voice), and a forked process starts its own."""
        if self._pid != os.getpid():
            self._libs, self._pid = {}, os.getpid()
        inst = self._libs.get(voice_id)
        if inst is None:
            lib = _library_path()
            parent = _data_parent(lib) if lib is not None else None
            if lib is None or parent is None:  # pragma: no cover - checked by missing()
                raise EngineUnavailable(self.name, "espeak-ng is not installed", self.install)
            inst = self._libs[voice_id] = _Library(lib, parent)
        return inst

    def _synthesize(self, text: str, voice_id: str) -> SpeechResult:
        from speechattn.data.synth import _is_modifier, _word_spans

        with self._lock:
            lib = self._library(voice_id)
            units, sr = lib.phones(text, voice_id)
            stressed = lib.text_to_phones(text, voice_id)
        wav16 = _render("".join(w for _, _, w in units) + "_ 1\n", _database(voice_id))
        n = len(wav16)
        # word-initial phones carry their word's text position, the others their clause's
        # start, which is before every word start seen so far
        starts: list[int] = []
        first_of_word: list[bool] = []
        for name, pos, _ in units:
            new = bool(name) and (not starts or (1 <= pos <= len(text) and pos - 1 > starts[-1]))
            if new:
                starts.append(max(pos - 1, 0))
            first_of_word.append(new)
        if not starts:
            raise ValueError(f"mbrola produced no phones for text={text!r}; is it speakable?")
        # the second word of a multi-word entry repeats the group start + 1 (see _word_spans)
        word_of, labels = _word_spans(text, starts)
        named = [name for name, _, _ in units if name]
        use_stress = [_strip_stress(p) for p in stressed] == named
        words: list[Interval] = []
        phones: list[Interval] = []
        word_phones: list[Interval] = []
        current = -1
        start_i = -1
        named_i = 0
        t_ms = 0
        for (name, _, chunk), is_first in zip(units, first_of_word):
            lines = _pho_lines(chunk)
            a = t_ms
            # the phone is its MBROLA phones; a pause line after them is a gap
            b = a + sum(d for ph, d in lines if ph != "_" or not name)
            t_ms += sum(d for _, d in lines)
            if not name:
                continue
            label = stressed[named_i] if use_stress else name
            named_i += 1
            if is_first:
                start_i += 1
                if word_of[start_i] != current:
                    if word_phones:
                        words.append(
                            Interval(word_phones[0].start, word_phones[-1].end, labels[current])
                        )
                    current, word_phones = word_of[start_i], []
            a_s, b_s = min(a * sr // 1000, n), min(b * sr // 1000, n)
            if b_s <= a_s:
                continue
            iv = Interval(a_s / sr, b_s / sr, label)
            if word_phones and _is_modifier(label):
                iv = Interval(word_phones[-1].start, iv.end, word_phones[-1].label + label)
                word_phones[-1] = phones[-1] = iv
                continue
            phones.append(iv)
            word_phones.append(iv)
        if word_phones:
            words.append(Interval(word_phones[0].start, word_phones[-1].end, labels[current]))
        wav = wav16.astype(np.float32) / 32768.0
        return SpeechResult(wav, sr, words, phones, text, voice_id, self.name)


def make_engine(name: str) -> Engine:
    return MbrolaEngine()
