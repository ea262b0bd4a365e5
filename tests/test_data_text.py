"""Text front end: normalisation, phonemes one-to-one with synthesis, symbol table."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechattn.data.text import (
    SymbolTable,
    characters,
    normalize_text,
    number_to_words,
    phonemize,
    words_of,
    written_words,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("It costs $2.50.", "It costs two dollars fifty cents."),
        ("Room 101, floor 3rd", "Room one hundred one, floor third"),
        ("At 9:05 and 10:00", "At nine oh five and ten"),
        ("50% of 1,234", "fifty percent of one thousand two hundred thirty four"),
        ("pi is 3.14", "pi is three point one four"),
        ("Dr. Who & Mr. Smith", "Doctor Who and Mister Smith"),
        ("\u201cQuoted\u201d \u2014 text (aside)", "Quoted text aside"),
        ("PLEASE ENTER YOUR NUMBER", "please enter your number"),
        ("Call-Forward on Busy.", "Call Forward on Busy."),
        ("It's the dogs' toy ,  ok ?", "It's the dogs toy, ok?"),
        ("It is -5 degrees", "It is minus five degrees"),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected
    assert normalize_text(expected) == expected  # idempotent


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # "St." before a name is Saint; after a word, before punctuation or the end, Street,
        # and a sentence-final period is kept (it was read as "Main Saint", the period lost)
        ("We met at 7 on Main St.", "We met at seven on Main Street."),
        ("I live on Elm St., near St. Louis.", "I live on Elm Street, near Saint Louis."),
        ("Go to Main St. and turn left.", "Go to Main Street and turn left."),
        ("WE MET ON MAIN ST.", "we met on main street."),  # all capitals: not "MAIN Saint"
        # "Dr." after a capitalised word (not the first) is Drive; a title otherwise
        ("Dr. Smith lives on Elm Dr. now.", "Doctor Smith lives on Elm Drive now."),
        ("The Dr. said so.", "The Doctor said so."),
        # "No." is "number" before a digit only ("I said no." was "I said number")
        ("I said no.", "I said no."),
        ("Ask for No. 5, not no. 6.", "Ask for Number five, not number six."),
        # a word said after a name keeps the period that ends its sentence
        ("Bob Smith Jr. Then he left.", "Bob Smith Junior. Then he left."),
        ("Bob Smith Jr. came.", "Bob Smith Junior came."),
        ("apples, pears, etc.", "apples, pears, et cetera."),
        ("12 Elm Ave.", "twelve Elm Avenue."),
    ],
)
def test_normalize_abbreviations_read_in_context(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected
    assert normalize_text(expected) == expected  # idempotent
    # the written words carry the same reading (each token was read alone: "St." -> Street)
    spoken = [w for _, ws in written_words(raw) for w in ws]
    assert spoken == words_of(expected)
    assert [w for w, _ in written_words(raw)] == [t.strip(",.") for t in raw.split()]


def test_normalize_drops_non_latin_with_warning() -> None:
    with pytest.warns(UserWarning, match="not Latin"):
        assert normalize_text("hello 世界 there") == "hello there"


def test_number_to_words() -> None:
    assert number_to_words(0) == "zero"
    assert number_to_words(21) == "twenty one"
    assert number_to_words(1_000_001) == "one million one"
    assert number_to_words(12, ordinal=True) == "twelfth"
    assert number_to_words(40, ordinal=True) == "fortieth"
    assert number_to_words(-3) == "minus three"
    with pytest.raises(ValueError, match="10"):
        number_to_words(10**15)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10**12 - 1))
def test_number_words_are_plain_words(n: int) -> None:
    w = number_to_words(n).split()
    assert all(x.isalpha() for x in w)
    assert normalize_text(str(n)) == " ".join(w)


def _synth_groups(res) -> list[list[str]]:
    groups, k = [], 0
    for w in res.words:
        g = []
        while k < len(res.phones) and res.phones[k].end <= w.end + 1e-9:
            g.append(res.phones[k].label)
            k += 1
        groups.append(g)
    return groups


def test_phonemize_one_to_one_with_synth_events() -> None:
    pytest.importorskip("espeakng_loader")
    from speechattn.data import _espeak
    from speechattn.data.synth import generate_sentences, make_voices, synthesize

    sentences = [
        *generate_sentences(60, seed=123),
        "Hello there, the 3 quick cats didn't jump. Yes!",
        "Mr. Smith isn't at home; he went to New York at 9:30 with $2.50.",
        "Of the people, by the people, for the people.",
        "Every evening, Henry repaired the apple.",  # Scottish e + ʲ merge
    ]
    voices = make_voices(16, seed=2)
    langs = list(_espeak.ENGLISH_LANGUAGES)
    for i, s in enumerate(sentences):
        text = normalize_text(s)
        voice = voices[i % len(voices)] if i % 2 else langs[i % len(langs)]
        res = synthesize(text, voice=voice)
        ph = phonemize(text, voice=voice)
        assert ph == _synth_groups(res), (voice, text)
        assert len(ph) == len(res.words)
        # espeak joins some words ("of the"): labels hold the written words in order
        assert " ".join(w.label for w in res.words).split() == words_of(text)


def test_phonemize_normalizes_and_handles_odd_input() -> None:
    pytest.importorskip("espeakng_loader")
    assert phonemize("") == []
    assert phonemize("...") == []
    assert len(phonemize("I have 2 cats")) == 4
    # unknown / made-up words get letter-to-sound rules, not a crash
    assert len(phonemize("zxqv blorptastic")) == 2
    with pytest.warns(UserWarning, match="not Latin"):
        assert phonemize("hello 世界") == phonemize("hello")
    with pytest.raises(ValueError, match="voice"):
        phonemize("hello", voice="xx-nope")


def test_characters_fallback() -> None:
    assert characters("Hi, Bob's 2 cats.") == [list("hi"), list("bob's"), list("two"), list("cats")]


def test_symbol_table_roundtrip(tmp_path) -> None:
    seqs = [["h", "ə", "l", "ˈoʊ"], ["w", "ˈɜː", "l", "d"]]
    table = SymbolTable.from_symbols(seqs)
    assert table.pad_id == 0 and table.unk_id == 1 and len(table) == 3 + 7
    for s in seqs:
        assert table.decode(table.encode(s)) == s
    ids = table.encode_words(seqs)
    assert table.decode(ids) == [*seqs[0], "<sp>", *seqs[1]]
    table.save(tmp_path / "t.json")
    loaded = SymbolTable.load(tmp_path / "t.json")
    assert loaded == table and loaded.symbols == table.symbols
    with pytest.warns(UserWarning, match="unknown symbol 'x'"):
        assert table.encode(["x", "h", "x"]) == [1, table.encode(["h"])[0], 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table.encode(["x"])  # warned once per symbol only
        table.encode(["y"], on_unknown="ignore")
    with pytest.raises(ValueError, match="Unknown symbol 'z'"):
        table.encode(["z"], on_unknown="raise")
    with pytest.raises(ValueError, match="ids in"):
        table.decode([999])
    with pytest.raises(ValueError, match="<unk>"):
        SymbolTable(["a"], specials=("<pad>",))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=6), min_size=1, max_size=5
    )
)
def test_symbol_table_roundtrip_property(seqs) -> None:
    table = SymbolTable.from_symbols(seqs, specials=("<pad>", "<unk>"))
    for s in seqs:
        if not {"<pad>", "<unk>"} & set(s):
            assert table.decode(table.encode(s, on_unknown="raise")) == s
