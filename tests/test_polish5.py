"""``speechattn align`` on corpora as users bring them (MFA, LibriSpeech, Kaldi layouts; audio in
other rates, channels and formats; transcripts with numbers, symbols and punctuation).

* MFA layout: speaker folders of audio + same-stem ``.lab``; a file with a ``.lab`` and a ``.txt``
  that differ is skipped naming both (the same text in both is used); the alignments mirror the
  input's folders, so ``a/x.wav`` and ``b/x.wav`` do not overwrite each other.
* LibriSpeech (``*.trans.txt`` listings) and Kaldi data dirs (``wav.scp`` + ``text``; the reader is
  the one the speaker recipe uses too; ``segments``: tests/test_align_segments.py).
* Audio: ``.ogg`` / ``.mp3`` files of a folder are read (they were ignored); stereo is mixed down
  with one note.
* Transcripts: not UTF-8 -> skipped with a warning saying so (not read with letters replaced); the
  TextGrid's words are the transcript's own words (``$5`` one interval), not the normalised ones.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechattn.data.corpus import CorpusError, load_corpus
from speechattn.data.text import normalize_text, words_of, written_words
from speechattn.recipes.align.outputs import alignment_names, remove_stale_alignments

SR = 16000


def _tone(path: Path, seconds: float = 0.5, *, channels: int = 1, **kw: object) -> Path:
    t = np.arange(int(SR * seconds)) / SR
    wave = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    data = np.stack([wave] * channels, 1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, SR, **kw)  # type: ignore[arg-type]
    return path


def _load(path: Path) -> tuple[list, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        utts = load_corpus(path)
    return utts, [str(w.message) for w in caught]


# ---------------------------------------------------------------------------------------------
# MFA layout


def test_mfa_layout_reads_lab_transcripts_in_speaker_folders(tmp_path: Path) -> None:
    for spk, stem, text in (("a", "x", "hello there"), ("b", "x", "good  morning\n")):
        _tone(tmp_path / spk / f"{stem}.wav")
        (tmp_path / spk / f"{stem}.lab").write_text(text, encoding="utf-8")
    utts, msgs = _load(tmp_path)
    assert msgs == []
    assert [(u.id, u.speaker, u.text) for u in utts] == [
        ("a/x", "a", "hello there"),
        ("b/x", "b", "good morning"),
    ]


def test_lab_and_txt_of_one_file_same_text_used_different_text_skipped_naming_both(
    tmp_path: Path,
) -> None:
    _tone(tmp_path / "s" / "same.wav")
    (tmp_path / "s" / "same.lab").write_text("one two", encoding="utf-8")
    (tmp_path / "s" / "same.txt").write_text("one   two\n", encoding="utf-8")
    _tone(tmp_path / "s" / "diff.wav")
    (tmp_path / "s" / "diff.lab").write_text("one two", encoding="utf-8")
    (tmp_path / "s" / "diff.txt").write_text("three four", encoding="utf-8")
    utts, msgs = _load(tmp_path)
    assert [u.id for u in utts] == ["s/same"]
    bad = [m for m in msgs if "diff" in m]
    assert len(bad) == 1
    assert "diff.lab" in bad[0] and "diff.txt" in bad[0] and "differ" in bad[0]


def test_folder_reads_ogg_and_mp3_audio(tmp_path: Path) -> None:
    _tone(tmp_path / "o.ogg", format="OGG", subtype="VORBIS")
    _tone(tmp_path / "m.mp3", format="MP3", subtype="MPEG_LAYER_III")
    for stem in ("o", "m"):
        (tmp_path / f"{stem}.lab").write_text("hello", encoding="utf-8")
    utts, msgs = _load(tmp_path)
    assert msgs == []
    assert [u.audio_path.suffix for u in utts] == [".mp3", ".ogg"]


def test_transcript_not_utf8_is_skipped_with_a_warning_saying_so(tmp_path: Path) -> None:
    _tone(tmp_path / "ok.wav")
    (tmp_path / "ok.txt").write_text("caf\u00e9 au lait", encoding="utf-8")
    _tone(tmp_path / "latin.wav")
    (tmp_path / "latin.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    utts, msgs = _load(tmp_path)
    assert [(u.id, u.text) for u in utts] == [("ok", "caf\u00e9 au lait")]
    bad = [m for m in msgs if "latin.txt" in m]
    assert len(bad) == 1 and "not UTF-8" in bad[0] and "0xe9" in bad[0]


def test_utf8_bom_is_dropped(tmp_path: Path) -> None:
    _tone(tmp_path / "x.wav")
    (tmp_path / "x.lab").write_bytes("\ufeffhello world".encode())
    assert load_corpus(tmp_path)[0].text == "hello world"


# ---------------------------------------------------------------------------------------------
# LibriSpeech and Kaldi


def test_librispeech_layout_is_detected(tmp_path: Path) -> None:
    chapter = tmp_path / "dev-clean" / "84" / "121123"
    for n in range(2):
        _tone(chapter / f"84-121123-000{n}.flac")
    _tone(chapter / "84-121123-0009.flac")  # not listed: named in a warning
    (chapter / "84-121123.trans.txt").write_text(
        "84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS THAN FIVE MINUTES\n",
        encoding="utf-8",
    )
    utts, msgs = _load(tmp_path)
    assert [(u.id, u.speaker, u.text) for u in utts] == [
        ("dev-clean/84/121123/84-121123-0000", "84", "GO DO YOU HEAR"),
        ("dev-clean/84/121123/84-121123-0001", "84", "BUT IN LESS THAN FIVE MINUTES"),
    ]
    assert any("84-121123-0009.flac" in m and "not listed" in m for m in msgs)
    # upper-case LibriSpeech text is read as words, not spelled as acronyms
    assert words_of(normalize_text(utts[0].text)) == ["go", "do", "you", "hear"]


def _kaldi(root: Path, *, utt2spk: bool = True) -> Path:
    _tone(root / "audio" / "u1.wav")
    _tone(root / "audio" / "u2.wav")
    (root / "wav.scp").write_text(
        "u1 audio/u1.wav\nu2 audio/u2.wav\nu3 sox in.wav -t wav - |\n", encoding="utf-8"
    )
    (root / "text").write_text("u1 hello there\nu2 good morning\nu4 no audio\n", encoding="utf-8")
    if utt2spk:
        (root / "utt2spk").write_text("u1 spkA\nu2 spkB\nu3 spkA\n", encoding="utf-8")
    return root


def test_kaldi_data_dir_with_text_is_read(tmp_path: Path) -> None:
    utts, msgs = _load(_kaldi(tmp_path))
    assert [(u.id, u.speaker, u.text) for u in utts] == [
        ("u1", "spkA", "hello there"),
        ("u2", "spkB", "good morning"),
    ]
    assert utts[0].audio_path == (tmp_path / "audio" / "u1.wav").resolve()
    assert any("piped command" in m for m in msgs)
    assert any("'u4'" in m and "no audio" in m for m in msgs)


def test_kaldi_data_dir_without_utt2spk_one_speaker_per_utterance(tmp_path: Path) -> None:
    utts, _ = _load(_kaldi(tmp_path, utt2spk=False))
    assert [u.speaker for u in utts] == ["u1", "u2"]


def test_kaldi_missing_text_is_refused_clearly(tmp_path: Path) -> None:
    # (a ``segments`` file is read: tests/test_align_segments.py)
    root = _kaldi(tmp_path / "notext")
    (root / "text").unlink()
    with pytest.raises(CorpusError, match="needs 'text'"):
        load_corpus(root)


def test_speaker_recipe_reads_kaldi_dirs_through_the_same_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import speechattn.recipes.speaker.data as spk_data

    seen: list[Path] = []
    real = spk_data.kaldi_audio_paths

    def spy(root: Path, report: object) -> object:
        seen.append(root)
        return real(root, report)  # type: ignore[arg-type]

    monkeypatch.setattr(spk_data, "kaldi_audio_paths", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        utts = spk_data.load_speaker_corpus(_kaldi(tmp_path))
    assert seen == [tmp_path]
    assert [(u.id, u.speaker) for u in utts] == [("u1", "spkA"), ("u2", "spkB")]


# ---------------------------------------------------------------------------------------------
# Words as written


def test_written_words_keep_the_transcripts_own_words() -> None:
    text = "\u201cDr. Smith\u201d paid $5 for 10% \u2014 don't ask, it's well-known!"
    got = written_words(text)
    assert got == [
        ("Dr", ["Doctor"]),
        ("Smith", ["Smith"]),
        ("paid", ["paid"]),
        ("$5", ["five", "dollars"]),
        ("for", ["for"]),
        ("10%", ["ten", "percent"]),
        ("don't", ["don't"]),
        ("ask", ["ask"]),
        ("it's", ["it's"]),
        ("well-known", ["well", "known"]),
    ]
    assert [w for _, ws in got for w in ws] == words_of(normalize_text(text))
    assert written_words("HELLO WORLD") == [("HELLO", ["hello"]), ("WORLD", ["world"])]
    with pytest.raises(TypeError, match="Expected text to be a str"):
        written_words(b"bytes")  # type: ignore[arg-type]


def test_align_words_are_written_words_with_all_their_phones() -> None:
    pytest.importorskip("espeakng_loader")
    from speechattn.data.text import phonemize
    from speechattn.recipes.align.data import _phonemize_words

    got = _phonemize_words("Dr. Who paid $5.", "en-us")
    assert [w for w, _ in got] == ["Dr", "Who", "paid", "$5"]
    spoken = phonemize("Doctor Who paid five dollars.", voice="en-us")
    assert [p for _, ph in got for p in ph] == [p for w in spoken for p in w]
    assert got[3][1] == [p for w in spoken[3:] for p in w]


# ---------------------------------------------------------------------------------------------
# Output names


def test_alignment_names_mirror_folders_and_never_collide() -> None:
    assert alignment_names(["a/x", "b/x", "x"]) == ["a/x", "b/x", "x"]
    with pytest.warns(UserWarning, match="same alignment file name"):
        names = alignment_names(["a b", "a_b", "A_B", "../up"])
    assert names == ["a_b", "a_b~2", "A_B~3", "_/up"]


def test_stale_alignments_are_removed_in_subfolders_too(tmp_path: Path) -> None:
    keep = tmp_path / "a" / "x.TextGrid"
    old = tmp_path / "old" / "y.TextGrid"
    for p in (keep, old):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("", encoding="utf-8")
    assert remove_stale_alignments(tmp_path, [keep]) == [old]
    assert keep.is_file() and not old.parent.exists()


# ---------------------------------------------------------------------------------------------
# End to end: an MFA-layout corpus with stereo 44.1 kHz audio and written numbers


def test_align_mfa_corpus_mirrors_layout_with_the_users_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("espeakng_loader")
    from tests.cli_run import run_cli

    from speechattn.data.audio import resample
    from speechattn.data.synth import synthesize
    from speechattn.data.textgrid import read_textgrid

    corpus = tmp_path / "corpus"
    texts = {"a/x": "Dr. Smith paid $5.", "b/x": "the cat sat on the mat"}
    for rel, text in texts.items():
        r = synthesize(normalize_text(text), sample_rate=22050)
        path = corpus / f"{rel}.wav"
        path.parent.mkdir(parents=True)
        if rel == "a/x":  # stereo at 44.1 kHz
            wave = resample(r.waveform, 22050, 44100)
            sf.write(path, np.stack([wave, 0.8 * wave], 1), 44100)
        else:
            sf.write(path, r.waveform, 22050)
        (corpus / f"{rel}.lab").write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    rc = run_cli(["align", str(corpus), "--out", str(out), "--no-adapt", "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert printed.count("mixed down to mono") == 1
    for rel, text in texts.items():
        words, _ = read_textgrid(out / "alignments" / f"{rel}.TextGrid")
        assert [w.label for w in words if w.label] == [w for w, _ in written_words(text)]
    assert sorted(
        p.relative_to(out / "alignments").as_posix() for p in out.rglob("*.TextGrid")
    ) == [
        "a/x.TextGrid",
        "b/x.TextGrid",
    ]


def test_lab_of_time_stamped_labels_is_not_read_as_a_transcript(tmp_path: Path) -> None:
    _tone(tmp_path / "htk.wav")
    (tmp_path / "htk.lab").write_text("0 1200000 sil\n1200000 2500000 hh\n", encoding="utf-8")
    _tone(tmp_path / "nums.wav")
    (tmp_path / "nums.lab").write_text("10 20 people came", encoding="utf-8")
    utts, msgs = _load(tmp_path)
    assert [u.id for u in utts] == ["nums"]
    bad = [m for m in msgs if "htk.lab" in m]
    assert len(bad) == 1 and "time-stamped labels" in bad[0]


def test_amount_split_by_one_space_is_one_written_word() -> None:
    for text, word in (("it costs $ 5 now", "$5"), ("up 10 % today", "10%")):
        got = written_words(text)
        assert word in [w for w, _ in got]
        assert [w for _, ws in got for w in ws] == words_of(normalize_text(text))


def test_words_it_cannot_say_are_named_with_their_utterance(tmp_path: Path) -> None:
    pytest.importorskip("espeakng_loader")
    from speechattn.data.synth import synthesize
    from speechattn.recipes.align.data import FeatureConfig, build_items, new_symbol_table

    wav = tmp_path / "spk" / "odd.wav"
    wav.parent.mkdir()
    sf.write(wav, synthesize("hello world", sample_rate=SR).waveform, SR)
    (tmp_path / "spk" / "odd.lab").write_text("hello \u65e5\u672c world", encoding="utf-8")
    utts = load_corpus(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = build_items(utts, new_symbol_table(), FeatureConfig(), grow_symbols=True)
    said = [str(w.message) for w in caught if "\u65e5\u672c" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("spk/odd: ")
    assert [w for w, _, _ in items[0].words] == ["hello", "world"]
