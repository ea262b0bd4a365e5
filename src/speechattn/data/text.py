"""Text front end: normalisation, IPA phonemes from espeak-ng, characters, symbol tables.

:func:`phonemize` uses the same espeak-ng library, dictionary and language as
:func:`speechattn.data.synth.synthesize`, so for a normalised text and the voice's language its
per-word phone lists are exactly the labels of the synthetic phone events, word by word
(tested on hundreds of generated sentences and every English language). That is what lets an
aligner be scored per phoneme against synthetic ground truth.

:func:`characters` is the fallback front end (no espeak needed): lower-cased letters per word.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ARPABET_TO_IPA",
    "MRPA_TO_IPA",
    "SymbolTable",
    "characters",
    "group_ipa",
    "map_phone",
    "normalize_text",
    "number_to_words",
    "phonemize",
    "words_of",
    "written_words",
]

# --------------------------------------------------------------------------------------------
# Numbers

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORD_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip


def _below_1000(n: int) -> list[str]:
    out: list[str] = []
    if n >= 100:
        out += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        out.append(_TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else ""))
    elif n > 0:
        out.append(_ONES[n])
    return out


def number_to_words(n: int, *, ordinal: bool = False) -> str:
    """English words for an integer (``|n| < 10**15``), American style without "and".

    ``number_to_words(1234) == "one thousand two hundred thirty four"``; tens are written
    with a space (``"twenty one"``) so each spoken word is one text word.
    """
    if abs(n) >= 10**15:
        raise ValueError(f"Expected |n| < 10**15; found {n}. Spell such numbers out in the text.")
    if n < 0:
        return "minus " + number_to_words(-n, ordinal=ordinal)
    if n == 0:
        words = ["zero"]
    else:
        words = []
        for scale, name in _SCALES:
            if n >= scale:
                words += [*_below_1000(n // scale), name]
                n %= scale
        words += _below_1000(n)
    words = " ".join(words).replace("-", " ").split()
    if ordinal:
        last = words[-1]
        if last in _ORD_IRREGULAR:
            last = _ORD_IRREGULAR[last]
        elif last.endswith("y"):
            last = last[:-1] + "ieth"
        else:
            last += "th"
        words[-1] = last
    return " ".join(words)


def _digits(s: str) -> str:
    return " ".join(_ONES[int(c)] for c in s)


_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents")}  # fmt: skip
_ABBREV = {
    "mr": "mister", "mrs": "missus", "ms": "miz", "dr": "doctor", "st": "saint", "prof": "professor",
    "jr": "junior", "sr": "senior", "vs": "versus", "etc": "et cetera", "no": "number",
    "ave": "avenue",
}  # fmt: skip
# Said after a word, so their period can also end the sentence ("on Main St." -> "Street.")
_ABBREV_AFTER = {"street", "drive", "avenue", "junior", "senior", "et cetera"}

_RE_CURRENCY = re.compile(r"([$£€])\s?(\d[\d,]*)(?:\.(\d{1,2}))?\b")
_RE_PERCENT = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s?%")
_RE_ORDINAL = re.compile(r"\b(\d[\d,]*)(st|nd|rd|th)\b", re.IGNORECASE)
_RE_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_RE_DECIMAL = re.compile(r"\b(\d[\d,]*)\.(\d+)\b")
_RE_INT = re.compile(r"\b\d[\d,]*\b")
_RE_ABBREV = re.compile(
    r"\b(" + "|".join(_ABBREV) + r")\.(?=[\s,;:?!\"')\]\u201d\u2019]|$)", re.IGNORECASE
)
_ASCII_PUNCT = {
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": " - ", "\u2014": " - ",
    "\u2026": "...", "\u00a0": " ",
}  # fmt: skip
_KEEP_PUNCT = set(",.?!;:'")


def _int(s: str) -> int:
    return int(s.replace(",", ""))


def _money(m: re.Match[str]) -> str:
    one, many, sub1, subn = _CURRENCY[m.group(1)]
    whole = _int(m.group(2))
    out = f"{number_to_words(whole)} {one if whole == 1 else many}"
    if m.group(3):
        cents = int(m.group(3).ljust(2, "0"))
        if cents:
            out += f" {number_to_words(cents)} {sub1 if cents == 1 else subn}"
    return out


def _expand_numbers(text: str) -> str:
    text = _RE_CURRENCY.sub(_money, text)
    text = _RE_PERCENT.sub(lambda m: _RE_DECIMAL.sub(_dec, m.group(1)) + " percent", text)
    text = _RE_ORDINAL.sub(lambda m: number_to_words(_int(m.group(1)), ordinal=True), text)
    text = _RE_TIME.sub(
        lambda m: (
            number_to_words(int(m.group(1)))
            + (
                ""
                if m.group(2) == "00"
                else " "
                + ("oh " if m.group(2)[0] == "0" else "")
                + number_to_words(int(m.group(2)))
            )
        ),
        text,
    )
    text = _RE_DECIMAL.sub(_dec, text)
    text = _RE_INT.sub(lambda m: number_to_words(_int(m.group(0))), text)
    return text


def _dec(m: re.Match[str]) -> str:
    return f"{number_to_words(_int(m.group(1)))} point {_digits(m.group(2))}"


def _abbrev(m: re.Match[str]) -> str:
    """An abbreviation's spoken word(s) in its place in ``m.string``.

    ``St.`` / ``Dr.`` before a capitalised word are "Saint" / "Doctor"; otherwise ``St.`` is
    "Street", and ``Dr.`` after a capitalised word (not the sentence's first) is "Drive". ``No.`` is "number" only before a
    digit (``No. 5``; else the word "no" and its full stop). The period is kept where it also ends
    the text, or for a word said after a name (Street, Jr., etc.) before a capitalised word.
    """
    key, before, after = m.group(1).lower(), m.string[: m.start()], m.string[m.end() :]
    next_cap = re.match(r"\s+[\"'(\[\u201c\u2018]*[A-Z]", after) is not None
    # a capitalised word before, not the sentence's first ("on Elm Dr." but not "The Dr. said")
    prev_cap = re.search(r"[\w,;:]\s+[A-Z][\w'-]*\s*$", before) is not None
    if key == "no" and not re.match(r"\s*#?\d", after):
        return m.group(0)
    word = _ABBREV[key]
    if key == "st" and not next_cap:
        word = "street"
    elif key == "dr" and prev_cap and not next_cap:
        word = "drive"
    word = word.capitalize() if m.group(1)[0].isupper() else word
    at_end = re.fullmatch(r"[\s\"')\]\u201d\u2019]*", after) is not None
    return word + "." if at_end or (next_cap and word.lower() in _ABBREV_AFTER) else word


def normalize_text(text: str, *, lowercase: bool = False) -> str:
    """Normalise a transcript so every written word is one spoken word.

    - Unicode NFKC; curly quotes and dashes to ASCII; ``&`` -> "and".
    - Numbers to words: integers (``1,234``), decimals (``3.5`` -> "three point five"),
      ordinals (``21st``), times (``9:05``), money (``$2.50``), percent (``50%``), minus.
    - Common abbreviations (Mr., Dr., St., Ave., ...) expanded, read in context: ``St. Louis``
      -> "Saint Louis", ``on Main St.`` -> "on Main Street." (the final period kept),
      ``Elm Dr.`` -> "Elm Drive", ``No. 5`` -> "Number five" but ``no.`` stays "no.".
    - Punctuation: ``, . ? ! ; :`` and word-internal apostrophes kept; hyphens and slashes
      become spaces; quotes, brackets and other symbols removed.
    - Casing: an all-capitals text is lower-cased (otherwise espeak spells each word as an
      acronym); ``lowercase=True`` lower-cases everything.
    - Characters that are not Latin letters are removed with a warning (espeak's English
      voice would otherwise name them: "Chinese letter ...").
    - Whitespace collapsed.
    """
    if not isinstance(text, str):
        raise TypeError(f"Expected text to be a str; found {type(text).__name__}.")
    text = unicodedata.normalize("NFKC", text)
    for a, b in _ASCII_PUNCT.items():
        text = text.replace(a, b)
    text = text.replace("&", " and ")
    letters = [c for c in text if c.isalpha()]  # before the expansions add lower-case letters
    capitals = len(text.split()) > 1 and bool(letters) and not any(c.islower() for c in letters)
    text = _RE_ABBREV.sub(_abbrev, text)
    text = re.sub(r"(?<=\s)-(?=\d)|^-(?=\d)", "minus ", text)
    text = _expand_numbers(text)
    if lowercase or capitals:
        text = text.lower()
    out: list[str] = []
    dropped: set[str] = set()
    for c in text:
        if c.isalpha():
            if "LATIN" in unicodedata.name(c, ""):
                out.append(c)
            else:
                dropped.add(c)
                out.append(" ")
        elif c in _KEEP_PUNCT or c.isspace():
            out.append(c)
        elif c.isdigit():
            out.append(c)
        else:
            out.append(" ")
    if dropped:
        warnings.warn(
            f"normalize_text removed characters that are not Latin letters: {''.join(sorted(dropped))!r} "
            f"in {text!r}.",
            stacklevel=2,
        )
    text = "".join(out)
    text = re.sub(r"(?<![A-Za-z])'|'(?![A-Za-z])", " ", text)  # keep only word-internal '
    text = re.sub(r"\s+([,.?!;:])", r"\1", text)
    text = re.sub(r"([,.?!;:])(?=[,.?!;:])", "", text)
    text = " ".join(text.split())
    text = re.sub(r"^[,.?!;:\s]+", "", text)
    return text


def words_of(text: str) -> list[str]:
    """The words of a normalised text (split on spaces, outer punctuation removed)."""
    return [w for w in (t.strip(",.?!;:'") for t in text.split()) if w]


# Stripped from the ends of a written word (as MFA strips punctuation): ASCII and curly quotes,
# brackets, sentence punctuation, dashes and ellipses; "$5", "10%", "don't" and "well-known" keep
# what is inside.
_WORD_EDGE_PUNCT = ",.?!;:'\"()[]{}<>\u2018\u2019\u201c\u201d\u00ab\u00bb\u2013\u2014\u2026-*_"


def written_words(text: str) -> list[tuple[str, list[str]]]:
    """The transcript's own words, each with the spoken words :func:`normalize_text` makes of it.

    A written word is a whitespace-separated token with the punctuation at its ends removed
    (``"Dr."`` -> ``Dr``, ``\u201cHello,\u201d`` -> ``Hello``); it keeps its spelling and
    case. Its spoken words are the normalised text of the token alone (``"$5"`` -> ``five
    dollars``, ``"10%"`` -> ``ten percent``, ``"well-known"`` -> ``well known``), lower-cased
    where the whole text is in capitals (as :func:`normalize_text` does). A token that says
    nothing (a lone dash or symbol) is left out.

    ``"$ 5"`` and ``"10 %"`` (one space, which :func:`normalize_text` reads as one amount) are
    one written word, ``$5`` and ``10%``. ``[w for _, ws in written_words(t) for w in ws]``
    equals ``words_of(normalize_text(t))`` for the transcripts tested.
    """
    if not isinstance(text, str):
        raise TypeError(f"Expected text to be a str; found {type(text).__name__}.")
    text = unicodedata.normalize("NFKC", text)
    # "$ 5" and "10 %" are one amount to normalize_text (one space allowed): one word here too
    text = re.sub(r"([$£€])\s(?=\d)", r"\1", re.sub(r"(?<=\d)\s%", "%", text))
    letters = [c for c in text if c.isalpha()]
    capitals = len(text.split()) > 1 and bool(letters) and not any(c.islower() for c in letters)
    # an abbreviation's reading depends on its neighbours ("St. Louis", "Main St."): read in place
    abbrevs = [(m.start(), m.end(), _abbrev(m)) for m in _RE_ABBREV.finditer(text)]
    out: list[tuple[str, list[str]]] = []
    with warnings.catch_warnings():  # normalize_text of the whole text warns once already
        warnings.simplefilter("ignore")
        for t in re.finditer(r"\S+", text):
            token = said = t.group()
            for a, b, word in reversed([x for x in abbrevs if t.start() <= x[0] < t.end()]):
                said = said[: a - t.start()] + word + said[b - t.start() :]
            spoken = words_of(normalize_text(said, lowercase=capitals))
            if spoken:
                out.append((token.strip(_WORD_EDGE_PUNCT) or token, spoken))
    return out


# --------------------------------------------------------------------------------------------
# Phonemes and characters


def phonemize(text: str, *, voice: str = "en-us", normalize: bool = True) -> list[list[str]]:
    """IPA phones per word, from espeak-ng (stress marks stay attached to vowels: ``"ˈoʊ"``).

    Lines up one-to-one with :func:`speechattn.data.synth.synthesize`'s phone intervals for
    the same (normalised) text and the voice's language: ``[p for w in phonemize(t, voice=v)
    for p in w] == [p.label for p in synthesize(t, voice=v).phones]``.

    Args:
        text: text to convert.
        voice: espeak voice or language (``"en-us"``, ``"en-gb-x-rp"``, ``"en-us+m3"``; only
            the language part matters).
        normalize: apply :func:`normalize_text` first.

    Returns:
        One list of phone symbols per spoken word (words that produce no phones are left out).

    Raises:
        ImportError: espeak-ng (``espeakng-loader``) is not installed; use :func:`characters`.
        ValueError: unknown voice.
    """
    from speechattn.data import _espeak

    if not isinstance(text, str):
        raise TypeError(f"Expected text to be a str; found {type(text).__name__}.")
    if normalize:
        text = normalize_text(text)
    if not text.strip():
        return []
    lang = voice.split("+", 1)[0]
    with _espeak.LOCK:
        clauses = _espeak.engine().text_to_phonemes(text, lang)
    out: list[list[str]] = []
    for clause in clauses:
        for word in clause.split(" "):
            phones = [p for p in word.split("|") if p]
            phones = _merge_modifiers(phones)
            if phones:
                out.append(phones)
    return out


def _is_modifier(label: str) -> bool:
    """A phone label made only of modifier letters/marks (e.g. ``"ʲ"``), no base letter."""
    return bool(label) and all(unicodedata.category(c) in ("Lm", "Sk", "Mn") for c in label)


def _merge_modifiers(phones: list[str]) -> list[str]:
    out: list[str] = []
    for p in phones:
        if out and _is_modifier(p):
            out[-1] += p
        else:
            out.append(p)
    return out


def characters(text: str, *, normalize: bool = True) -> list[list[str]]:
    """Character fallback front end: lower-cased letters (and apostrophes) per word."""
    if normalize:
        text = normalize_text(text)
    return [list(w.lower()) for w in words_of(text)]


# --------------------------------------------------------------------------------------------
# Other engines' phone sets -> the project's phone set (espeak-ng IPA)

#: Festival's ``radio`` phone set (CMU dictionary, lower-case ARPAbet) -> espeak-ng en-us IPA.
ARPABET_TO_IPA: dict[str, str] = {
    "aa": "ɑː", "ae": "æ", "ah": "ʌ", "ao": "ɔː", "aw": "aʊ", "ax": "ə", "ay": "aɪ",
    "b": "b", "ch": "tʃ", "d": "d", "dh": "ð", "eh": "ɛ", "er": "ɜː", "ey": "eɪ", "f": "f",
    "g": "ɡ", "hh": "h", "ih": "ɪ", "iy": "iː", "jh": "dʒ", "k": "k", "l": "l", "m": "m",
    "n": "n", "ng": "ŋ", "ow": "oʊ", "oy": "ɔɪ", "p": "p", "r": "ɹ", "s": "s", "sh": "ʃ",
    "t": "t", "th": "θ", "uh": "ʊ", "uw": "uː", "v": "v", "w": "w", "y": "j", "z": "z",
    "zh": "ʒ",
}  # fmt: skip

#: Festival's ``mrpa`` phone set (British RP, Oxford Advanced Learner's) -> espeak-ng en-gb IPA.
MRPA_TO_IPA: dict[str, str] = {
    "a": "a", "aa": "ɑː", "ai": "aɪ", "au": "aʊ", "b": "b", "ch": "tʃ", "d": "d", "dh": "ð",
    "e": "ɛ", "e@": "eə", "ei": "eɪ", "f": "f", "g": "ɡ", "h": "h", "i": "ɪ", "i@": "ɪə",
    "ii": "iː", "jh": "dʒ", "k": "k", "l": "l", "m": "m", "n": "n", "ng": "ŋ", "o": "ɒ",
    "oi": "ɔɪ", "oo": "ɔː", "ou": "əʊ", "p": "p", "r": "ɹ", "s": "s", "sh": "ʃ", "t": "t",
    "th": "θ", "u": "ʊ", "u@": "ʊə", "uh": "ʌ", "uu": "uː", "v": "v", "w": "w", "y": "j",
    "z": "z", "zh": "ʒ", "@": "ə", "@@": "ɜː",
}  # fmt: skip

_PHONE_SETS = {"radio": ARPABET_TO_IPA, "arpabet": ARPABET_TO_IPA, "mrpa": MRPA_TO_IPA}
_VOWELS = set("aeiouæɑɒɔəɛɜɪʊʌɚɐ")


def map_phone(symbol: str, phoneset: str, *, stress: int = 0) -> str:
    """One phone of another engine's phone set as an espeak-ng IPA phone of the project.

    Stressed vowels get espeak's marks in front (``stress=1`` -> ``"ˈ"``, ``2`` -> ``"ˌ"``), as
    :func:`phonemize` writes them; an unstressed ``radio`` ``er`` is ``"ɚ"`` (espeak en-us).

    Args:
        symbol: the engine's phone, e.g. ``"ow"`` (radio) or ``"@@"`` (mrpa).
        phoneset: ``"radio"`` (also ``"arpabet"``) or ``"mrpa"``.
        stress: lexical stress of the phone's syllable (0, 1 or 2); ignored for consonants.

    Raises:
        ValueError: an unknown phone set or a symbol it does not have.
    """
    table = _PHONE_SETS.get(phoneset)
    if table is None:
        raise ValueError(
            f"Expected phoneset to be one of {sorted(_PHONE_SETS)}; found {phoneset!r}."
        )
    ipa = table.get(symbol.lower().rstrip("012"))
    if ipa is None:
        raise ValueError(f"Unknown {phoneset} phone {symbol!r}; expected one of {sorted(table)}.")
    if ipa[0] not in _VOWELS:
        return ipa
    if phoneset != "mrpa" and ipa == "ɜː" and stress == 0:
        return "ɚ"
    return {1: "ˈ", 2: "ˌ"}.get(stress, "") + ipa


_STRESS_MARKS = "ˈˌ"
# Multi-letter phones espeak-ng writes as one phone in English (longest first).
_IPA_CLUSTERS = (
    "aɪə", "aʊə", "tʃ", "dʒ", "aɪ", "aʊ", "eɪ", "oʊ", "əʊ", "ɔɪ", "ɪə", "eə", "ʊə", "ɛə",
    "oː", "ɑː", "ɔː", "ɜː", "iː", "uː", "aː", "ɛː", "ɪɹ", "ɛɹ", "ʊɹ", "ɔɹ", "ɑɹ", "oːɹ", "aɪɚ",
    "aʊɚ", "iə", "ɐ",
)  # fmt: skip


def group_ipa(chars: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Group single IPA code points (as Piper's phonemes come) into the project's phones.

    A stress mark joins the phone that follows; length marks and other modifiers join the one
    before; English diphthongs and affricates (``"aɪ"``, ``"tʃ"``, ...) become one phone, as
    :func:`phonemize` writes them.

    Args:
        chars: one code point per item (no spaces or punctuation).

    Returns:
        ``(phone, [indices into chars])`` per phone, in order.
    """
    out: list[tuple[str, list[int]]] = []
    i = 0
    n = len(chars)
    while i < n:
        idx = [i]
        label = chars[i]
        i += 1
        while label in _STRESS_MARKS or all(c in _STRESS_MARKS for c in label):
            if i >= n:
                break
            label += chars[i]
            idx.append(i)
            i += 1
        base = label.lstrip(_STRESS_MARKS)
        for cluster in sorted(_IPA_CLUSTERS, key=len, reverse=True):
            if cluster.startswith(base) and len(cluster) > len(base):
                rest = cluster[len(base) :]
                if "".join(chars[i : i + len(rest)]) == rest:
                    label += rest
                    idx.extend(range(i, i + len(rest)))
                    i += len(rest)
                    break
        while i < n and _is_modifier(chars[i]) and chars[i] not in _STRESS_MARKS:
            label += chars[i]
            idx.append(i)
            i += 1
        if out and all(c in _STRESS_MARKS for c in label):
            out[-1] = (out[-1][0] + label, out[-1][1] + idx)
        else:
            out.append((label, idx))
    return out


# --------------------------------------------------------------------------------------------
# Symbol table


class SymbolTable:
    """Bidirectional symbol <-> id map; ``encode`` then ``decode`` returns the input.

    Ids ``0..len(specials)-1`` are the special symbols (default ``<pad>`` = 0, ``<unk>`` = 1,
    ``<sp>`` = 2 for word boundaries), then the symbols in the order given.

    Args:
        symbols: the ordinary symbols (duplicates and specials are ignored).
        specials: special symbols placed first; must include ``"<pad>"`` and ``"<unk>"``.
    """

    PAD = "<pad>"
    UNK = "<unk>"
    SPACE = "<sp>"

    def __init__(
        self, symbols: Iterable[str], *, specials: Sequence[str] = ("<pad>", "<unk>", "<sp>")
    ) -> None:
        specials = list(specials)
        for s in (self.PAD, self.UNK):
            if s not in specials:
                raise ValueError(f"Expected specials to include {s!r}; found {specials}.")
        self._id2sym: list[str] = []
        self._sym2id: dict[str, int] = {}
        for s in [*specials, *symbols]:
            if not isinstance(s, str) or not s:
                raise TypeError(f"Expected symbols to be non-empty str; found {s!r}.")
            if s not in self._sym2id:
                self._sym2id[s] = len(self._id2sym)
                self._id2sym.append(s)
        self.specials = tuple(specials)
        self._warned: set[str] = set()

    @classmethod
    def from_symbols(
        cls, symbols: Iterable[Any], *, specials: Sequence[str] = ("<pad>", "<unk>", "<sp>")
    ) -> SymbolTable:
        """Table over ``symbols`` (an iterable of symbols, or of sequences of them), sorted."""
        flat: set[str] = set()
        for s in symbols:
            if isinstance(s, str):
                flat.add(s)
            else:
                for t in s:
                    if isinstance(t, str):
                        flat.add(t)
                    else:
                        flat.update(t)  # per-word lists of symbols
        return cls(sorted(flat), specials=specials)

    def __len__(self) -> int:
        return len(self._id2sym)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._sym2id

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SymbolTable)
            and self._id2sym == other._id2sym
            and self.specials == other.specials
        )

    def __hash__(self) -> int:
        return hash(tuple(self._id2sym))

    def __repr__(self) -> str:
        return (
            f"SymbolTable({len(self)} symbols: {self._id2sym[:8]}{'...' if len(self) > 8 else ''})"
        )

    @property
    def symbols(self) -> list[str]:
        return list(self._id2sym)

    @property
    def pad_id(self) -> int:
        return self._sym2id[self.PAD]

    @property
    def unk_id(self) -> int:
        return self._sym2id[self.UNK]

    def encode(self, sequence: Sequence[str], *, on_unknown: str = "warn") -> list[int]:
        """Ids of ``sequence``; unknown symbols map to ``<unk>`` (``on_unknown="warn"`` warns
        once per symbol, ``"ignore"`` does not, ``"raise"`` raises ``ValueError``)."""
        if on_unknown not in ("warn", "ignore", "raise"):
            raise ValueError(
                f"Expected on_unknown in ('warn', 'ignore', 'raise'); found {on_unknown!r}."
            )
        ids = []
        for s in sequence:
            i = self._sym2id.get(s)
            if i is None:
                if on_unknown == "raise":
                    raise ValueError(
                        f"Unknown symbol {s!r} (not among the {len(self)} symbols of this table); "
                        "rebuild the table with SymbolTable.from_symbols over your corpus."
                    )
                if on_unknown == "warn" and s not in self._warned:
                    self._warned.add(s)
                    warnings.warn(
                        f"SymbolTable: unknown symbol {s!r} mapped to {self.UNK}.", stacklevel=2
                    )
                i = self.unk_id
            ids.append(i)
        return ids

    def encode_words(
        self, words: Sequence[Sequence[str]], *, on_unknown: str = "warn"
    ) -> list[int]:
        """Encode per-word symbol lists with ``<sp>`` between words (needs ``<sp>`` in specials)."""
        if self.SPACE not in self._sym2id:
            raise ValueError(f"encode_words needs {self.SPACE!r} among the specials.")
        flat: list[str] = []
        for k, w in enumerate(words):
            if k:
                flat.append(self.SPACE)
            flat.extend(w)
        return self.encode(flat, on_unknown=on_unknown)

    def decode(self, ids: Iterable[int], *, skip_pad: bool = True) -> list[str]:
        """Symbols of ``ids`` (padding dropped unless ``skip_pad=False``)."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self._id2sym):
                raise ValueError(f"Expected ids in [0, {len(self)}); found {i}.")
            if skip_pad and i == self.pad_id:
                continue
            out.append(self._id2sym[i])
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the table as JSON (``{"symbols": [...], "specials": [...]}``, ids = positions)."""
        Path(path).write_text(
            json.dumps(
                {"symbols": self._id2sym, "specials": list(self.specials)},
                ensure_ascii=False,
                indent=0,
            ),
            encoding="utf-8",
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SymbolTable:
        """Read a table written by :meth:`save`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        specials = data["specials"]
        table = cls(data["symbols"][len(specials) :], specials=specials)
        if table.symbols != data["symbols"]:
            raise ValueError(
                f"{path}: symbol table file is inconsistent (duplicates or misplaced specials)."
            )
        return table
