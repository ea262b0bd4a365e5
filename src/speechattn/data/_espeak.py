"""Private ctypes binding to the espeak-ng library shipped by the ``espeakng-loader`` wheel.

espeak-ng keeps all of its state in process globals (one voice, one callback, one output
buffer), so this module holds ONE engine per process behind a ``threading.Lock``. Threads in a
process share it and take turns; for parallel synthesis use worker processes (each gets its
own copy of the library state; :func:`speechattn.data.synth.synth_corpus` does that).

The engine runs in synchronous mode (``AUDIO_OUTPUT_SYNCHRONOUS``) with phoneme events in IPA
(``espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_PHONEME_IPA``), and reads its data from a
private copy of the espeak data directory (English dictionary, phoneme tables, the English
language files and the voice variants) so that random voice variants can be written beside the
built-in ones without touching the installed package. The copy lives in
``$SPEECHATTN_ESPEAK_DATA`` when set, else ``~/.cache/speechattn/espeak-ng-data-<version>``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechattn._io import atomic_write

__all__: list[str] = []

# espeak_EVENT_TYPE
EV_LIST_TERMINATED = 0
EV_WORD = 1
EV_SENTENCE = 2
EV_END = 5
EV_MSG_TERMINATED = 6
EV_PHONEME = 7
EV_SAMPLERATE = 8

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_INIT_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
# espeak_PARAMETER defaults: rate (wpm), volume, pitch, range, word gap.
_DEFAULT_PARAMS = ((1, 175), (2, 100), (3, 50), (4, 50), (7, 0))
_RAND_SEED = 12345
_BUFFER_MS = 400  # audio per callback; larger = fewer Python callbacks

#: English language files (``lang/gmw/*``) usable as base voices, by espeak voice name.
ENGLISH_LANGUAGES: tuple[str, ...] = (
    "en-us",
    "en-gb",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-us-nyc",
    "en-029",
)

# Language names whose espeak voice file has another name (``lang/gmw/en`` is British).
_ALIASES = {"en-gb": "en"}

#: espeak-ng counts every file under ``voices/`` and ``lang/`` into a fixed table of 350
#: entries (``N_VOICES_LIST`` in voices.c); files past it are silently ignored.
VOICE_FILE_LIMIT = 350


class _Event(ctypes.Structure):
    _fields_ = [  # ctypes layout of espeak_EVENT
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class RawEvent:
    """One espeak event: ``type``, 1-based character ``text_position``/``length``,
    ``sample`` (output sample index) and ``name`` (IPA phone for phoneme events)."""

    type: int
    text_position: int
    length: int
    sample: int
    name: str


def _loader() -> Any:
    try:
        import espeakng_loader
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "speechattn.data synthesis and phonemization need the espeak-ng library from the "
            "'espeakng-loader' package; install it with `pip install speechattn[data]`."
        ) from exc
    return espeakng_loader


def _package_data_dir() -> Path:
    return Path(_loader().get_data_path())


def private_data_dir() -> Path:
    """Path of the private espeak data copy (created on first use, see :func:`ensure_data_dir`)."""
    env = os.environ.get("SPEECHATTN_ESPEAK_DATA")
    if env:
        return Path(env)
    src = _package_data_dir()
    stamp = ""
    try:
        import importlib.metadata

        stamp = importlib.metadata.version("espeakng-loader")
    except Exception:  # pragma: no cover
        stamp = "unknown"
    digest = hashlib.sha1(str(src).encode()).hexdigest()[:8]
    return Path.home() / ".cache" / "speechattn" / f"espeak-ng-data-{stamp}-{digest}-{_LAYOUT}"


_LAYOUT = "v1"  # bump when the private copy's content changes

_COPY_FILES = ("phondata", "phonindex", "phontab", "intonations", "en_dict")


def ensure_data_dir() -> Path:
    """Create the private data copy if missing (atomically, safe with concurrent processes)."""
    dst = private_data_dir()
    if (dst / "phontab").exists():
        return dst
    src = _package_data_dir()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".espeak-tmp-", dir=dst.parent))
    try:
        for name in _COPY_FILES:
            shutil.copy2(src / name, tmp / name)
        (tmp / "lang").mkdir()
        shutil.copytree(src / "lang" / "gmw", tmp / "lang" / "gmw")
        shutil.copytree(src / "voices" / "!v", tmp / "voices" / "!v")
        for sub in (tmp / "lang" / "gmw", tmp / "voices" / "!v"):
            for f in sub.iterdir():
                if f.is_file():
                    _make_deterministic(f)
        try:
            tmp.rename(dst)
        except OSError:
            # Another process won the race; use its copy.
            if not (dst / "phontab").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _make_deterministic(path: Path) -> None:
    """Turn off pitch flutter and echo in a voice file.

    espeak-ng keeps the flutter phase (a static in wavegen.c) and the echo buffer across
    utterances, so with them on the same text and voice give slightly different samples and
    timings depending on what was spoken before. Without them synthesis is a pure function of
    (text, voice) once the random seed is reset.
    """
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    keep = [ln for ln in lines if ln.strip().split(" ", 1)[0] not in ("flutter", "echo")]
    path.write_text("\n".join([*keep, "flutter 0", "echo 0 0"]) + "\n", encoding="utf-8")


def variants_dir() -> Path:
    return ensure_data_dir() / "voices" / "!v"


def count_voice_files(data_dir: Path) -> int:
    """Number of files espeak-ng would put in its voice table for ``data_dir``."""
    n = 0
    for sub in ("voices", "lang"):
        root = data_dir / sub
        if root.exists():
            n += sum(1 for p in root.rglob("*") if p.is_file())
    return n


def declare_prototypes(lib: Any) -> None:
    """Declare the argument and result types of the espeak-ng API calls this package makes on a
    loaded library (ours, or the system one the ``mbrola`` engine drives)."""
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_TextToPhonemes.restype = ctypes.c_void_p
    lib.espeak_TextToPhonemes.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_int,
        ctypes.c_int,
    ]


class _Engine:
    """The process-wide espeak-ng engine. Use :func:`engine`; never construct twice."""

    def __init__(self, library_path: str | None = None) -> None:
        loader = _loader()
        self.data_dir = ensure_data_dir()
        self.lib = ctypes.CDLL(library_path or loader.get_library_path())
        lib = self.lib
        declare_prototypes(lib)
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            _BUFFER_MS,
            str(self.data_dir).encode(),
            _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT,
        )
        if rate <= 0:
            raise RuntimeError(
                f"espeak_Initialize failed (returned {rate}) with data directory {self.data_dir}; "
                "delete that directory to rebuild it, or set SPEECHATTN_ESPEAK_DATA."
            )
        self.sample_rate = int(rate)
        self._chunks: list[bytes] = []
        self._events: list[RawEvent] = []
        self._callback = _CALLBACK(self._on_synth)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None
        self._libc = ctypes.CDLL(None)
        self.pid = os.getpid()

    def _on_synth(self, wav: Any, num_samples: int, events: Any) -> int:
        if wav and num_samples > 0:
            self._chunks.append(ctypes.string_at(wav, 2 * num_samples))
        i = 0
        while True:
            ev = events[i]
            if ev.type == EV_LIST_TERMINATED:
                break
            name = ""
            if ev.type == EV_PHONEME:
                name = bytes(ev.id).split(b"\0", 1)[0].decode("utf-8", errors="replace")
            self._events.append(RawEvent(ev.type, ev.text_position, ev.length, ev.sample, name))
            i += 1
        return 0

    def set_voice(self, voice: str) -> None:
        if voice == self._voice:
            return
        lang, plus, variant = voice.partition("+")
        lang = _ALIASES.get(lang.lower(), lang)
        err = self.lib.espeak_SetVoiceByName((lang + plus + variant).encode())
        if err != 0:
            self._voice = None
            raise ValueError(
                f"espeak-ng does not know voice={voice!r} (error {err}). Use a name from "
                "speechattn.data.synth.make_voices() or an English language such as 'en-us', "
                "optionally with a variant: 'en-us+m3'."
            )
        self._voice = voice

    def synth(self, text: str, voice: str) -> tuple[np.ndarray, list[RawEvent]]:
        self.set_voice(voice)
        # Parameters a variant's "speed" (or a caller) changed stay set across voices: reset.
        for param, value in _DEFAULT_PARAMS:
            self.lib.espeak_SetParameter(param, value, 0)
        self.lib.espeak_ng_SetRandSeed(_RAND_SEED)
        self._libc.srand(_RAND_SEED)  # the library also draws noise from libc rand()
        self._chunks = []
        self._events = []
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        err = self.lib.espeak_Synth(
            ctypes.cast(buf, ctypes.c_void_p),
            len(data),
            0,
            _POS_CHARACTER,
            0,
            _CHARS_UTF8,
            None,
            None,
        )
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err} for text {text!r}")
        self.lib.espeak_Synchronize()
        wav = np.frombuffer(b"".join(self._chunks), dtype=np.int16)
        events = self._events
        self._chunks, self._events = [], []
        return wav, events

    def text_to_phonemes(self, text: str, voice: str, separator: str = "|") -> list[str]:
        """Clause strings of IPA phones separated by ``separator`` and words by spaces."""
        self.set_voice(voice)
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        ptr = ctypes.c_void_p(ctypes.cast(buf, ctypes.c_void_p).value)
        mode = 0x02 | (ord(separator) << 8)  # IPA, phone separator
        out: list[str] = []
        while ptr.value:
            res = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, mode)
            if res:
                out.append(ctypes.string_at(res).decode("utf-8", errors="replace"))
        return out


_LOCK = threading.RLock()
_ENGINE: _Engine | None = None
_PRIVATE_LIBRARY = False


def private_library_path() -> Path:
    """A copy of libespeak-ng in the private data directory (created on first use).

    ``dlopen`` of a different file gives a separate instance with fresh C statics, even in a
    process forked from one that already used the library.
    """
    data = ensure_data_dir()
    src = Path(_loader().get_library_path())
    dst = data / f"libespeak-ng-private{src.suffix}"
    if not dst.exists() or dst.stat().st_size != src.stat().st_size:
        with atomic_write(dst) as tmp:
            shutil.copy2(src, tmp)
    return dst


def use_private_library() -> None:
    """Make this process's engine load :func:`private_library_path` (call before first use).

    Worker processes call this so their synthesis starts from a clean library state whatever
    the parent process did before forking.
    """
    global _PRIVATE_LIBRARY, _ENGINE
    _PRIVATE_LIBRARY = True
    _ENGINE = None


def engine() -> _Engine:
    """The process's engine (created on first call). Callers must hold :data:`LOCK`."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine(str(private_library_path()) if _PRIVATE_LIBRARY else None)
    return _ENGINE


LOCK = _LOCK
