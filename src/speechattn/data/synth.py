"""Synthetic speech with exact word and phone timings, from the espeak-ng library.

espeak-ng is driven through ctypes (:mod:`speechattn.data._espeak`) in synchronous mode with
word and IPA phoneme events; each event carries the output sample where it starts, so a phone's
interval is ``[its event, the next phoneme/end event)`` in samples, converted to seconds. Pauses
(espeak's unnamed phoneme events) are not phones: they show up as gaps between intervals.
The phone labels line up one-to-one with :func:`speechattn.data.text.phonemize` for the same text
and voice language (both come from the same library and dictionary).

Process model: espeak-ng is a process-global library. Calls in one process are serialised by a
lock; :func:`synth_corpus` runs worker processes (each with its own engine and
``torch.set_num_threads(1)``) for parallel work.

Determinism: word/phone labels and timings are a pure function of (text, voice). Waveform
samples are too within a fresh library instance, but espeak-ng keeps some wave-generator state
in C statics that no API resets, so in a long-lived process a few voices' samples vary slightly
with what was synthesized before. :func:`synth_corpus` therefore synthesizes fixed blocks of
utterances in fresh worker processes that load a private copy of the library, which makes
corpora byte-identical for a seed whatever the number of workers.

Speakers: :func:`make_voices` combines the English languages (en-us, en-gb, RP, Scottish, ...)
with espeak's built-in human-sounding voice variants, and adds reproducible random variants
(pitch, formants, speed, breathiness, roughness) written as voice files named
``sa-s<seed>-<index>`` into the private data directory. A random variant's file is a pure
function of its name, so any process recreates it on demand, and the same seed always gives the
same speakers. espeak-ng reads at most ~350 voice files (``N_VOICES_LIST``); random variants of
other seeds are deleted (they come back on demand) when a new set would pass that limit.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from speechattn._io import atomic_write, write_text_atomic
from speechattn.data import _espeak

__all__ = [
    "Interval",
    "SynthResult",
    "generate_sentences",
    "make_voices",
    "pick_voices",
    "synth_corpus",
    "synthesize",
]


class Interval(NamedTuple):
    """A labelled time span, in seconds: ``start <= end``."""

    start: float
    end: float
    label: str


class SynthResult(NamedTuple):
    """One synthesized utterance.

    Attributes:
        waveform: float32 ``(N,)`` in ``[-1, 1]``.
        sample_rate: samples per second of ``waveform``.
        words: word intervals (label = the word as written in ``text``), in time order.
            espeak joins some unstressed words to the next one ("of the" is one word, as in
            its phoneme output); such an interval's label holds both words: ``"Of the"``.
        phones: phone intervals (label = IPA phone, stress marks included as espeak writes
            them, e.g. ``"ˈoʊ"``), in time order; every phone lies inside its word.
        text: the text that was spoken.
        voice: the espeak voice name used.
    """

    waveform: np.ndarray
    sample_rate: int
    words: list[Interval]
    phones: list[Interval]
    text: str
    voice: str


# Built-in espeak variants that sound like people (robots, whisper and effects left out).
BUILTIN_VARIANTS: tuple[str, ...] = (
    *(f"m{i}" for i in range(1, 9)),
    *(f"f{i}" for i in range(1, 6)),
    "adam",
    "Alex",
    "Andy",
    "Annie",
    "aunty",
    "belinda",
    "benjamin",
    "caleb",
    "david",
    "ed",
    "edward",
    "grandma",
    "grandpa",
    "ian",
    "john",
    "linda",
    "max",
    "michel",
    "norbert",
    "paul",
    "quincy",
    "rob",
    "robert",
    "steph",
    "travis",
)

_RANDOM_RE = re.compile(r"^sa-s(\d+)-(\d+)$")
_RANDOM_HEADROOM = 8


def _random_variant_text(seed: int, index: int) -> str:
    """The voice file of random variant ``sa-s<seed>-<index>`` (a pure function of its name)."""
    rng = random.Random(f"speechattn-voice-{seed}-{index}")
    female = rng.random() < 0.5
    if female:
        base = rng.uniform(140.0, 215.0)
        fscale = rng.uniform(1.04, 1.18)
    else:
        base = rng.uniform(70.0, 125.0)
        fscale = rng.uniform(0.88, 1.02)
    span = base * rng.uniform(0.3, 0.8)
    lines = [
        "language variant",
        f"name sa-s{seed}-{index:03d}",
        f"gender {'female' if female else 'male'}",
        f"pitch {round(base)} {round(base + span)}",
    ]
    for k in range(9):
        freq = 100.0 * fscale * rng.uniform(0.95, 1.05) if k <= 5 else 100.0
        height = rng.uniform(70, 100)  # <= 100: keeps headroom below espeak's limiter
        width = rng.uniform(80, 140)
        lines.append(f"formant {k} {round(freq)} {round(height)} {round(width)}")
    breathy = rng.random() < 0.35
    amount = rng.randint(1, 6) if breathy else 0
    lines.append("breath " + " ".join(str(amount if k > 0 else 0) for k in range(8)))
    lines.append(f"roughness {rng.randint(0, 4)}")
    lines.append(f"voicing {rng.randint(85, 115)}")
    lines.append(f"speed {rng.randint(80, 125)}")
    lines.append(f"consonants {rng.randint(80, 120)}")
    return "\n".join(lines) + "\n"


def _write_variant(name: str) -> None:
    m = _RANDOM_RE.match(name)
    if m is None:  # pragma: no cover - callers check
        raise ValueError(name)
    path = _espeak.variants_dir() / name
    text = _random_variant_text(int(m.group(1)), int(m.group(2)))
    text += "flutter 0\necho 0 0\n"  # see _espeak._make_deterministic
    if path.exists() and path.read_text() == text:
        return
    write_text_atomic(path, text)


def _make_room(keep_seed: int, needed: int) -> None:
    """Delete random variants of other seeds when ``needed`` new files would pass the limit."""
    data = _espeak.ensure_data_dir()
    vdir = data / "voices" / "!v"
    existing = {p.name for p in vdir.iterdir()}
    count = _espeak.count_voice_files(data)
    if count + needed <= _espeak.VOICE_FILE_LIMIT - _RANDOM_HEADROOM:
        return
    for name in sorted(existing):
        m = _RANDOM_RE.match(name)
        if m is not None and int(m.group(1)) != keep_seed:
            (vdir / name).unlink(missing_ok=True)


def _max_random_variants() -> int:
    data = _espeak.ensure_data_dir()
    fixed = sum(
        1
        for sub in ("voices", "lang")
        for p in (data / sub).rglob("*")
        if p.is_file() and _RANDOM_RE.match(p.name) is None
    )
    return _espeak.VOICE_FILE_LIMIT - _RANDOM_HEADROOM - fixed


def _check_voice(voice: str) -> None:
    """Validate ``lang+variant`` names and create random variant files on demand."""
    if not isinstance(voice, str) or not voice:
        raise TypeError(f"Expected voice to be a non-empty str such as 'en-us'; found {voice!r}.")
    if "+" not in voice:
        return
    variant = voice.split("+", 1)[1]
    m = _RANDOM_RE.match(variant)
    if m is not None:
        with _espeak.LOCK:
            if not (_espeak.variants_dir() / variant).is_file():
                _make_room(int(m.group(1)), 1)
            _write_variant(variant)
        return
    if not (_espeak.variants_dir() / variant).is_file():
        raise ValueError(
            f"Unknown espeak voice variant {variant!r} in voice={voice!r}; expected one of "
            f"{', '.join(BUILTIN_VARIANTS[:6])}, ... or a random variant 'sa-s<seed>-<index>' "
            "(see make_voices)."
        )


def make_voices(num_speakers: int, *, seed: int = 0) -> list[str]:
    """Distinct espeak voice names for ``num_speakers`` speakers, reproducible for ``seed``.

    Even positions take English language x built-in variant combinations (shuffled by the
    seed); odd positions are random variants ``<language>+sa-s<seed>-<k>`` whose voice files
    are written here. The list for ``n`` speakers is a prefix of the list for ``n + 1``, and the
    names are the speaker ids used by :func:`synth_corpus`.

    Args:
        num_speakers: how many voices, >= 1.
        seed: shuffles the built-in combinations and seeds the random variants.

    Returns:
        ``num_speakers`` distinct names usable as ``synthesize(..., voice=name)``.

    Raises:
        ValueError: ``num_speakers`` < 1 or more than this machine's espeak data can hold.
    """
    if isinstance(num_speakers, bool) or not isinstance(num_speakers, int):
        raise TypeError(f"Expected num_speakers to be an int; found {type(num_speakers).__name__}.")
    if num_speakers < 1:
        raise ValueError(f"Expected num_speakers >= 1; found {num_speakers}.")
    rng = random.Random(f"speechattn-voices-{seed}")
    builtin = [f"{lang}+{var}" for lang in _espeak.ENGLISH_LANGUAGES for var in BUILTIN_VARIANTS]
    rng.shuffle(builtin)
    max_random = _max_random_variants()
    capacity = len(builtin) + max_random
    if num_speakers > capacity:
        raise ValueError(
            f"Expected num_speakers <= {capacity} (espeak-ng reads at most "
            f"{_espeak.VOICE_FILE_LIMIT} voice files); found {num_speakers}."
        )
    voices: list[str] = []
    b = r = 0
    while len(voices) < num_speakers:
        take_builtin = (len(voices) % 2 == 0 and b < len(builtin)) or r >= max_random
        if take_builtin:
            voices.append(builtin[b])
            b += 1
        else:
            lang = _espeak.ENGLISH_LANGUAGES[
                random.Random(f"speechattn-lang-{seed}-{r}").randrange(
                    len(_espeak.ENGLISH_LANGUAGES)
                )
            ]
            voices.append(f"{lang}+sa-s{seed}-{r:03d}")
            r += 1
    if r:
        with _espeak.LOCK:
            _make_room(seed, r)
            for k in range(r):
                _write_variant(f"sa-s{seed}-{k:03d}")
    return voices


def language_of(voice: str) -> str:
    """The espeak language part of a voice name: ``"en-gb+m3"`` -> ``"en-gb"``."""
    return voice.split("+", 1)[0]


def _is_modifier(label: str) -> bool:
    return all(unicodedata.category(c) in ("Lm", "Sk", "Mn") for c in label)


_LABEL_STRIP = ' \t\n,.?!;:"()[]-'


_SILENCE = 16  # int16 units: espeak writes exact zeros in pauses


def _tokens(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Whitespace-separated tokens of ``text[start:end]`` that hold a letter or digit."""
    out = []
    for m in re.finditer(r"\S+", text[start:end]):
        if any(c.isalnum() for c in m.group()):
            out.append((start + m.start(), start + m.end()))
    return out


def _word_spans(text: str, starts: Sequence[int]) -> tuple[list[int], list[str]]:
    """Which written word each of espeak's word starts belongs to, and the words' labels.

    ``starts`` are the 0-based character positions of espeak's word events (or, for MBROLA
    voices, of its word-initial phoneme events), in order. espeak reports a wrong position
    for the second word of a multi-word dictionary entry: the ``||`` word boundary in the entry
    (``(most of) moUst||@v`` in ``en_list``) gives the next phoneme the *first* word's source
    index plus one (``translate.c``: ``srcix = source_ix + 1``), so "Most of" came back as "M" +
    "ost of". A start that falls inside the token of the group's first start (or does not move
    forward) belongs to that group. A group whose text holds one token per start (``most`` +
    ``of``) gives each start its own token; otherwise (a number spoken as several words, a
    compound such as ``lunchroom``, espeak joining ``of the``) the group is one word labelled
    with all of its text.

    Returns:
        ``(word_of_start, labels)``: ``word_of_start[i]`` indexes ``labels`` (non-decreasing).
    """
    groups: list[list[int]] = []
    group_end = -1
    for i, s in enumerate(starts):
        if groups and (s < group_end or s <= starts[groups[-1][-1]]):
            groups[-1].append(i)
            continue
        groups.append([i])
        tok = _tokens(text, s, len(text))  # the first is the token at (or after) s
        group_end = tok[0][1] if tok else s + 1
    word_of: list[int] = []
    labels: list[str] = []
    for k, g in enumerate(groups):
        a = starts[g[0]]
        b = starts[groups[k + 1][0]] if k + 1 < len(groups) else len(text)
        toks = _tokens(text, a, b)
        if len(g) > 1 and len(toks) == len(g):
            for ta, tb in toks:
                word_of.append(len(labels))
                labels.append(text[ta:tb].strip(_LABEL_STRIP))
        else:
            word_of.extend([len(labels)] * len(g))
            labels.append(" ".join(text[a:b].split()).strip(_LABEL_STRIP))
    return word_of, labels


def _events_to_intervals(
    text: str, events: Sequence[_espeak.RawEvent], wav16: np.ndarray, sr: int
) -> tuple[list[Interval], list[Interval]]:
    """Word and phone intervals from espeak events.

    A phone spans from its event to the next phoneme/end event. Unnamed phoneme events are
    pauses: silent ones become gaps; a non-silent one (espeak's glottal onset before a stressed
    vowel-initial word, "the | end") is sound of the next phone, whose start moves back to it.
    """
    num_samples = len(wav16)
    words: list[Interval] = []
    phones: list[Interval] = []
    # Starts of every phoneme-like event (named or pause) and sentence ends, in order.
    marks = [e for e in events if e.type in (_espeak.EV_PHONEME, _espeak.EV_END)]
    # A word's text runs to the next word: espeak's own length stops at an apostrophe
    # ("didn't" -> 4), and it joins some words ("of the") into one.
    word_of, labels = _word_spans(
        text, [e.text_position - 1 for e in events if e.type == _espeak.EV_WORD]
    )
    event_index = -1
    word_index = -1
    word_phones: list[Interval] = []

    def flush() -> None:
        if word_index >= 0 and word_phones:
            words.append(Interval(word_phones[0].start, word_phones[-1].end, labels[word_index]))

    mark_i = 0
    onset: int | None = None  # start of a non-silent pause to give to the next phone
    for ev in events:
        if ev.type == _espeak.EV_WORD:
            event_index += 1
            if word_of[event_index] == word_index:
                continue  # another part of the same written word (a multi-word entry)
            flush()
            word_index = word_of[event_index]
            word_phones = []
        elif ev.type in (_espeak.EV_PHONEME, _espeak.EV_END):
            while marks[mark_i] is not ev:
                mark_i += 1
            start = min(max(ev.sample, 0), num_samples)
            nxt = marks[mark_i + 1].sample if mark_i + 1 < len(marks) else num_samples
            end = min(max(nxt, start), num_samples)
            if ev.type == _espeak.EV_END:
                onset = None
            elif not ev.name:
                loud = (
                    end > start and int(np.abs(wav16[start:end].astype(np.int32)).max()) > _SILENCE
                )
                onset = start if loud else None
            else:
                if onset is not None:
                    start, onset = onset, None
                iv = Interval(start / sr, end / sr, ev.name)
                if word_phones and _is_modifier(ev.name):
                    # e.g. Scottish "e" + "ʲ": espeak's text output writes one phone "eʲ"
                    prev = word_phones[-1]
                    iv = Interval(prev.start, iv.end, prev.label + iv.label)
                    phones[-1] = iv
                    word_phones[-1] = iv
                    continue
                phones.append(iv)
                word_phones.append(iv)
    flush()
    return words, phones


def synthesize(text: str, *, voice: str = "en-us", sample_rate: int = 22050) -> SynthResult:
    """Speak ``text`` with espeak-ng and return the waveform with word and phone intervals.

    Thread-safe (a process-wide lock serialises the library). Deterministic: the same text and
    voice give the same labels and timings (samples: see the module notes). Every non-silent
    sample lies inside a phone interval; silent gaps between intervals are pauses.

    Args:
        text: what to say (plain text, UTF-8). Digits and abbreviations are expanded by espeak;
            pass :func:`speechattn.data.text.normalize_text` output to keep words one-to-one
            with the written ones.
        voice: espeak voice name, e.g. ``"en-us"``, ``"en-gb+f2"`` or a name from
            :func:`make_voices`.
        sample_rate: output rate; espeak renders at 22050 Hz and other rates are resampled
            with soxr (timings are in seconds and unchanged).

    Returns:
        :class:`SynthResult`; intervals are monotone, non-overlapping and within the audio.

    Raises:
        ValueError: empty text, unknown voice, or text that produced no phones.
        TypeError: ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise TypeError(f"Expected text to be a str; found {type(text).__name__}.")
    if not text.strip():
        raise ValueError("Expected non-empty text to synthesize; found an empty string.")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"Expected sample_rate to be a positive int; found {sample_rate!r}.")
    wav16, native, words, phones = _synthesize_int16(text, voice)
    wav = wav16.astype(np.float32) / 32768.0
    if sample_rate != native:
        import soxr

        wav = np.asarray(soxr.resample(wav, native, sample_rate), dtype=np.float32)
    return SynthResult(wav, sample_rate, words, phones, text, voice)


def _synthesize_int16(
    text: str, voice: str
) -> tuple[np.ndarray, int, list[Interval], list[Interval]]:
    _check_voice(voice)
    with _espeak.LOCK:
        eng = _espeak.engine()
        wav16, events = eng.synth(text, voice)
        native = eng.sample_rate
    words, phones = _events_to_intervals(text, events, wav16, native)
    if not phones:
        raise ValueError(f"espeak-ng produced no phones for text={text!r}; is it speakable?")
    return wav16, native, words, phones


def _write_wav16(path: str, samples: np.ndarray, sample_rate: int) -> None:
    """PCM16 mono WAV with the standard library (soundfile fsyncs every file: ~10 ms each)."""
    import wave

    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())


# --------------------------------------------------------------------------------------------
# Procedural sentences from the project's own small grammar.

_NAMES = (
    "Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Henry", "Lucy", "Martin",
    "Nora", "Oscar", "Paula", "Robert", "Sarah", "Thomas",
)  # fmt: skip
_ADJ = (
    "small", "large", "green", "red", "blue", "quiet", "happy", "old", "young", "bright",
    "dark", "warm", "cold", "heavy", "gentle", "careful", "busy", "tired", "clever", "yellow",
)  # fmt: skip
_NOUN = (
    "dog", "cat", "bird", "teacher", "farmer", "child", "garden", "river", "window", "table",
    "letter", "basket", "horse", "kitchen", "forest", "road", "boat", "lamp", "book", "song",
    "apple", "picture", "market", "doctor", "village", "bridge", "mountain", "city",
)  # fmt: skip
_VERB_T = (
    "found", "painted", "carried", "opened", "watched", "cleaned", "visited", "followed",
    "noticed", "repaired", "counted", "bought", "moved", "described", "remembered",
)  # fmt: skip
_VERB_I = (
    "slept", "waited", "laughed", "listened", "smiled", "arrived", "worked", "danced",
    "rested", "whispered", "travelled", "returned",
)  # fmt: skip
_ADV = ("quickly", "slowly", "quietly", "often", "never", "almost", "suddenly", "happily")
_PREP = ("near", "behind", "under", "beside", "across", "inside", "over", "beyond")
_TIME = ("Yesterday", "This morning", "After the storm", "Last winter", "Every evening", "Later")
_NUM = ("two", "three", "four", "five", "six", "seven", "ten", "twelve")

_TEMPLATES = (
    "The {adj} {noun} {vt} the {noun2}.",
    "{name} {vt} a {adj} {noun} {prep} the {noun2}.",
    "{time}, the {noun} {adv} {vi}.",
    "Did {name} see the {adj} {noun} {prep} the {noun2}?",
    "{name} and {name2} {vi} {prep} the {adj} {noun}.",
    "{num} {adj} {noun}s {vi} {prep} the {noun2}.",
    "The {noun} {adv} {vt} {num} {noun2}s, and {name} {vi}.",
    "Why did the {adj} {noun} {vi_base} so {adv2}?",
    "{time}, {name} {vt} the {noun} and the {adj} {noun2}.",
    "The {adj} {noun} is {prep} the {adj2} {noun2}.",
)

_BASE = {
    "slept": "sleep", "waited": "wait", "laughed": "laugh", "listened": "listen",
    "smiled": "smile", "arrived": "arrive", "worked": "work", "danced": "dance",
    "rested": "rest", "whispered": "whisper", "travelled": "travel", "returned": "return",
}  # fmt: skip


def generate_sentences(n: int, *, seed: int = 0) -> list[str]:
    """``n`` English sentences from the project's own grammar, reproducible for ``seed``.

    Ten templates over a ~150-word vocabulary (names, adjectives, nouns, past-tense verbs,
    adverbs, prepositions, number words); ASCII letters and ``,.?`` only, no digits, so
    :func:`speechattn.data.text.normalize_text` leaves them unchanged and espeak's word events
    match the written words one-to-one.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"Expected n to be an int >= 0; found {n!r}.")
    rng = random.Random(f"speechattn-sentences-{seed}")
    out = []
    for _ in range(n):
        tpl = rng.choice(_TEMPLATES)
        name, name2 = rng.sample(_NAMES, 2)
        noun, noun2 = rng.sample(_NOUN, 2)
        adj, adj2 = rng.sample(_ADJ, 2)
        vi = rng.choice(_VERB_I)
        s = tpl.format(
            adj=adj,
            adj2=adj2,
            noun=noun,
            noun2=noun2,
            vt=rng.choice(_VERB_T),
            vi=vi,
            vi_base=_BASE[vi],
            adv=rng.choice(_ADV),
            adv2=rng.choice(("quickly", "slowly", "quietly", "happily")),
            prep=rng.choice(_PREP),
            name=name,
            name2=name2,
            time=rng.choice(_TIME),
            num=rng.choice(_NUM),
        )
        out.append(s[0].upper() + s[1:])
    return out


# --------------------------------------------------------------------------------------------
# Corpus writer.


def _intervals_json(ivs: Sequence[Interval]) -> list[list[Any]]:
    return [[round(iv.start, 6), round(iv.end, 6), iv.label] for iv in ivs]


_FORKED_ENGINES: list[Any] = []


def _worker_init() -> None:
    # One thread per worker. Synthesis never needs torch, so only touch it when the parent had
    # it imported already (fork inherits it): importing torch costs ~1 s of CPU per worker.
    os.environ["OMP_NUM_THREADS"] = "1"
    _espeak.use_private_library()
    engines = sys.modules.get("speechattn.data.engines")
    if engines is not None:
        # Engines loaded before the fork start afresh (seeded state). The inherited ones are
        # kept alive: destroying an ONNX session whose threads were not forked would hang.
        _FORKED_ENGINES.extend(engines._CACHE.values())
        engines._CACHE.clear()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _synth_job(job: tuple[str, str, str, str, int]) -> dict[str, Any]:
    utt_id, text, voice, wav_path, sample_rate = job
    wav16, native, words, phones = _synthesize_int16(text, voice)
    if sample_rate != native:
        import soxr

        wav = soxr.resample(wav16.astype(np.float32) / 32768.0, native, sample_rate)
        wav16 = np.clip(np.round(wav * 32768.0), -32768, 32767).astype(np.int16)
    _write_wav16(wav_path, wav16, sample_rate)
    res = SynthResult(wav16, sample_rate, words, phones, text, voice)
    return {
        "id": utt_id,
        "path": f"wavs/{utt_id}.wav",
        "text": text,
        "speaker": voice,
        "voice": voice,
        "language": language_of(voice),
        "sample_rate": sample_rate,
        "duration": round(len(res.waveform) / sample_rate, 6),
        "words": _intervals_json(res.words),
        "phones": _intervals_json(res.phones),
    }


def _mixed_job(job: tuple[str, str, str, str, int]) -> dict[str, Any]:
    """One utterance of a multi-engine corpus; ``voice`` is ``"engine:voice_id"``."""
    utt_id, text, key, wav_path, sample_rate = job
    from speechattn.data.voices import get_voice

    v = get_voice(key)
    if v.engine == "espeak":
        rec = _synth_job((utt_id, text, v.voice_id, wav_path, sample_rate))
        words, phones = rec["words"], rec["phones"]
        duration = rec["duration"]
        timings = "engine"
    else:
        from speechattn.data.engines import EngineUnavailable
        from speechattn.data.engines import synthesize as engine_synthesize

        try:
            res = engine_synthesize(text, v, sample_rate=sample_rate)
        except EngineUnavailable:
            raise  # not installed: the whole corpus cannot be built
        except (ValueError, RuntimeError) as exc:
            # One sentence an engine cannot speak or time (e.g. a word missing from the
            # pocketsphinx dictionary Pico's timings come from) skips that utterance only.
            return {"id": utt_id, "skipped": f"{v.key}: {' '.join(str(exc).split())}"}
        wav16 = np.clip(np.round(res.waveform * 32768.0), -32768, 32767).astype(np.int16)
        _write_wav16(wav_path, wav16, sample_rate)
        duration = round(len(wav16) / sample_rate, 6)
        words = _intervals_json(_clip(res.words, duration))
        phones = None if res.phones is None else _intervals_json(_clip(res.phones, duration))
        timings = res.timings
    return {
        "id": utt_id,
        "path": f"wavs/{utt_id}.wav",
        "text": text,
        "speaker": v.person,
        "engine": v.engine,
        "voice": v.key,
        "person": v.person,
        "language": v.language,
        "sample_rate": sample_rate,
        "duration": duration,
        "words": words,
        "phones": phones,
        "timings": timings,
    }


def _clip(ivs: Sequence[Interval], duration: float) -> list[Interval]:
    return [Interval(min(iv.start, duration), min(iv.end, duration), iv.label) for iv in ivs]


# Utterances per worker task. Each task runs in a fresh worker process with its own copy of
# the library (see _espeak.use_private_library), because espeak-ng keeps some wave-generator state in C statics that no API
# resets: the samples of an utterance depend on what the process synthesized before it. Fixed
# blocks make the corpus bit-identical whatever the number of workers.
_BLOCK = 128


def _synth_block(jobs: list[tuple[str, str, str, str, int]]) -> list[dict[str, Any]]:
    return [_synth_job(job) for job in jobs]


def _mixed_block(jobs: list[tuple[str, str, str, str, int]]) -> list[dict[str, Any]]:
    return [_mixed_job(job) for job in jobs]


def pick_voices(
    engines: Sequence[str],
    num_voices: int,
    *,
    seed: int = 0,
    include_reserved: bool = False,
    commercial_only: bool = False,
) -> list[str]:
    """``num_voices`` distinct ``"engine:voice_id"`` names drawn round-robin over ``engines``.

    Each engine's installed registry voices are shuffled by ``seed``; espeak contributes
    :func:`make_voices` voices (as many as needed). Reserved (evaluation-only) voices are left
    out unless ``include_reserved``; with ``commercial_only`` only voices whose licence allows
    commercial use are drawn (what a shipped model must be trained on). The list for ``n`` is a prefix of the list for ``n + 1``
    only within one engine; the same arguments always give the same list.

    Raises:
        ValueError: unknown or repeated engine, more voices than the engines have, or an
            engine that cannot give these voices: all its voices are evaluation-only (without
            ``include_reserved``; flite) or this version does not drive it (the message names
            the installed engines to use instead).
        EngineUnavailable: an engine or its voices are not installed (the message names the
            install command).
    """
    from speechattn.data.engines import ENGINE_NAMES, EngineUnavailable, get_engine
    from speechattn.data.voices import list_voices, voice_installed

    if isinstance(num_voices, bool) or not isinstance(num_voices, int) or num_voices < 1:
        raise ValueError(f"Expected voices to be an int >= 1; found {num_voices!r}.")
    engines = list(engines)
    if not engines:
        raise ValueError(f"Expected at least one engine out of {list(ENGINE_NAMES)}; found none.")
    if len(set(engines)) != len(engines):
        raise ValueError(f"Expected distinct engines; found {engines}.")
    pools: dict[str, list[str]] = {}
    for name in engines:
        eng = get_engine(name)  # ValueError for unknown names
        _refuse_engine(name, eng, include_reserved)
        eng.check()
        if name == "espeak":
            continue
        have = [
            v.key
            for v in list_voices(
                engines=[name],
                include_reserved=include_reserved,
                commercial_only=commercial_only,
            )
            if voice_installed(v)
        ]
        if not have:
            raise EngineUnavailable(
                name,
                "none of its trainable voices is installed"
                + ("" if include_reserved else " (reserved voices need --include-reserved)"),
                eng.install,
            )
        random.Random(f"speechattn-mixed-{seed}-{name}").shuffle(have)
        pools[name] = have
    capacity = sum(len(v) for v in pools.values())
    if "espeak" in engines:
        capacity = num_voices  # espeak makes as many as needed
    if num_voices > capacity:
        raise ValueError(
            f"Expected voices <= {capacity} (installed voices of {', '.join(engines)}); found "
            f"{num_voices}. Add engines (e.g. espeak) or install more voices."
        )
    counts = dict.fromkeys(engines, 0)
    k = 0
    while sum(counts.values()) < num_voices:
        name = engines[k % len(engines)]
        k += 1
        if name != "espeak" and counts[name] >= len(pools[name]):
            continue
        counts[name] += 1
    espeak = make_voices(counts["espeak"], seed=seed) if counts.get("espeak") else []
    out: list[str] = []
    taken = dict.fromkeys(engines, 0)
    k = 0
    while len(out) < num_voices:
        name = engines[k % len(engines)]
        k += 1
        i = taken[name]
        if i >= counts[name]:
            continue
        taken[name] += 1
        out.append(f"espeak:{espeak[i]}" if name == "espeak" else pools[name][i])
    return out


def _refuse_engine(name: str, engine: Any, include_reserved: bool) -> None:
    """Raise a one-line ``ValueError`` for an engine no corpus may be drawn from here: every
    voice of it is evaluation-only (without ``include_reserved``), or this version does not
    drive it; the message names the engines to use instead."""
    from speechattn.data.engines import ENGINE_NAMES, get_engine
    from speechattn.data.voices import list_voices

    registry = list_voices(engines=[name], include_reserved=True)
    eval_only = bool(registry) and all(v.reserved for v in registry)
    driven = getattr(engine, "driven", True)
    if driven and not (eval_only and not include_reserved):
        return

    def usable(other: str) -> bool:
        eng = get_engine(other)
        return (
            getattr(eng, "driven", True)
            and bool(list_voices(engines=[other]))  # has trainable voices
            and eng.missing() is None
        )

    alternatives = [n for n in ENGINE_NAMES if n != name and usable(n)]
    instead = (
        f"use {', '.join(alternatives)} (installed here)"
        if alternatives
        else "install a training engine (espeak: pip install speechattn[data])"
    )
    lead = ""
    if eval_only and not include_reserved:
        lead = "for a training corpus "
        why = (
            f"speech engine {name!r} is evaluation-only: all its voices are reserved for "
            "evaluation (never trained on nor used to choose settings)"
        )
        why += (
            ", and this version cannot synthesize with it"
            if not driven
            else "; for an evaluation set add --include-reserved"
        )
    else:
        why = f"speech engine {name!r} is listed, but this version cannot synthesize with it"
    raise ValueError(f"{why}; {lead}{instead}; `speechattn data voices` lists them")


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def synth_corpus(
    out_dir: str | os.PathLike[str],
    *,
    utterances: int,
    speakers: int,
    seed: int = 0,
    workers: int | None = None,
    sample_rate: int = 22050,
    texts: Sequence[str] | str | os.PathLike[str] | None = None,
    progress: bool = True,
    engines: Sequence[str] | None = None,
    include_reserved: bool = False,
    commercial_only: bool = False,
) -> Path:
    """Write a synthetic corpus: ``out_dir/wavs/<id>.wav`` plus ``out_dir/manifest.jsonl``.

    Each manifest line is a JSON object ``{"id", "path" (relative to out_dir), "text",
    "speaker", "voice", "language", "sample_rate", "duration", "words", "phones"}`` with
    intervals as ``[start_s, end_s, label]``; lines are sorted by id. The same arguments give
    the same files, byte for byte (sentences, speakers and their assignment all follow
    ``seed``).

    Args:
        out_dir: output directory (created).
        utterances: number of utterances, >= 1.
        speakers: number of voices from :func:`make_voices`, >= 1.
        seed: controls sentences, voices and which speaker says which sentence.
        workers: processes (default: the CPUs available). Each worker sets
            ``torch.set_num_threads(1)`` and owns its espeak engine; every block of 128
            utterances starts in a fresh process, so the files are bit-identical for a seed
            whatever the worker count. ``0`` runs in this process (timings and labels still
            identical; a few voices' samples may differ, see the module notes).
        sample_rate: output sample rate (soxr resampling when not 22050).
        texts: sentences to use instead of generated ones (cycled), or a path to a UTF-8 text
            file with one sentence per line (blank lines skipped).
        progress: show a tqdm progress bar.
        engines: several speech engines (``["espeak", "festival", "piper"]``, see
            :mod:`speechattn.data.engines`): ``speakers`` voices are drawn round-robin over
            them by :func:`pick_voices`, and each manifest line also records ``engine``,
            ``voice`` (``"engine:voice_id"``) and ``person``; ``speaker`` is the person id
            (shared by voices of one person across engines), and ``phones`` is ``null`` for
            engines that give no phones. ``None`` (default) writes today's espeak-only corpus,
            byte for byte. An utterance an engine cannot speak or time (``ValueError`` /
            ``RuntimeError`` from the engine, e.g. a word outside the pocketsphinx dictionary
            that Pico's timings come from) is left out with one warning naming it.
        include_reserved: with ``engines``, also use evaluation-only voices (for evaluation
            sets only; see :mod:`speechattn.data.voices`).
        commercial_only: with ``engines``, only voices whose licence allows commercial use
            (no MBROLA, no non-commercial RHVoice voices): what a shipped model is trained on.

    Returns:
        Path of ``manifest.jsonl``.

    Raises:
        ValueError: bad sizes or texts, or every utterance failed.
    """
    for name, val in (("utterances", utterances), ("speakers", speakers)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"Expected {name} to be an int >= 1; found {val!r}.")
    out = Path(out_dir)
    if texts is None:
        sentences = generate_sentences(utterances, seed=seed)
    else:
        if isinstance(texts, (str, os.PathLike)) and Path(texts).is_file():
            lines = Path(texts).read_text(encoding="utf-8").splitlines()
            pool = [ln.strip() for ln in lines if ln.strip()]
            src = str(texts)
        elif isinstance(texts, (str, os.PathLike)):
            raise ValueError(
                f"Expected texts to be a list of sentences or a text file; {texts!r} is not a file."
            )
        else:
            pool = [t.strip() for t in texts if t and t.strip()]
            src = "texts"
        from speechattn.data.text import normalize_text, words_of

        normalized = [normalize_text(t) for t in pool]
        kept = [t for t in normalized if words_of(t)]
        if len(kept) < len(pool):
            import warnings

            warnings.warn(
                f"synth_corpus: skipped {len(pool) - len(kept)} of {len(pool)} lines of {src} "
                "with no speakable words after normalisation.",
                stacklevel=2,
            )
        if not kept:
            raise ValueError(f"Expected at least one non-empty sentence in {src}; found none.")
        sentences = [kept[i % len(kept)] for i in range(utterances)]
    if engines is None:
        voices = make_voices(speakers, seed=seed)
        job_fn, block_fn = _synth_job, _synth_block
    else:
        voices = pick_voices(
            engines,
            speakers,
            seed=seed,
            include_reserved=include_reserved,
            commercial_only=commercial_only,
        )
        job_fn, block_fn = _mixed_job, _mixed_block
    (out / "wavs").mkdir(parents=True, exist_ok=True)  # after the checks: no empty folder left
    rng = np.random.default_rng(seed)
    # Balanced assignment: every speaker gets floor/ceil(utterances / speakers) utterances.
    assign = rng.permutation(np.arange(utterances) % speakers)
    width = max(6, len(str(utterances - 1)))
    jobs = [
        (
            f"utt{i:0{width}d}",
            sentences[i],
            voices[int(assign[i])],
            str(out / "wavs" / f"utt{i:0{width}d}.wav"),
            sample_rate,
        )
        for i in range(utterances)
    ]
    n_workers = _default_workers() if workers is None else int(workers)
    blocks = [jobs[i : i + _BLOCK] for i in range(0, len(jobs), _BLOCK)]
    from tqdm.auto import tqdm

    bar = tqdm(total=utterances, desc="synth", unit="utt", disable=not progress)
    records: list[dict[str, Any]] = []
    try:
        if n_workers <= 0:
            for job in jobs:
                records.append(job_fn(job))
                bar.update(1)
        else:
            import multiprocessing as mp

            _espeak.private_library_path()  # create the copy once, before the workers race
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            n_workers = min(n_workers, len(blocks))
            # maxtasksperchild=1 + the private library copy: every block starts from a fresh
            # espeak-ng state, whatever this process synthesized before.
            with ctx.Pool(n_workers, initializer=_worker_init, maxtasksperchild=1) as pool_:
                for recs in pool_.imap_unordered(block_fn, blocks, chunksize=1):
                    records.extend(recs)
                    bar.update(len(recs))
    finally:
        bar.close()
    records.sort(key=lambda r: r["id"])
    skipped = [r for r in records if "skipped" in r]
    if skipped:
        import warnings

        for r in skipped:
            warnings.warn(f"{r['id']}: skipped ({r['skipped']})", stacklevel=2)
        records = [r for r in records if "skipped" not in r]
        if not records:
            raise ValueError(
                f"Expected at least one utterance the engines could synthesize; all "
                f"{len(skipped)} failed (first: {skipped[0]['skipped']})."
            )
    manifest = out / "manifest.jsonl"
    with atomic_write(manifest) as tmp, tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return manifest
