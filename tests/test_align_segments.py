"""``speechattn align`` on long recordings cut into utterances, as MFA and Kaldi users bring them.

* Kaldi ``segments`` (``<utt> <recording> <start> <end>``): each segment is an utterance cut
  from its recording (read once per recording); one alignment set per segment, named by its
  id, times from the segment's start, the JSON saying where it lies in the recording. Bad lines
  (end <= start, unknown recording, past the audio's end, malformed) are skipped with one
  warning naming the line.
* MFA TextGrid transcripts (``x.wav`` + ``x.TextGrid``, one tier per speaker, one non-empty
  interval per utterance; long and short text formats): each interval is aligned as an
  utterance and written back into ``x.TextGrid`` with ``<speaker> - words`` /
  ``<speaker> - phones`` tiers at the recording's times. Malformed TextGrids are skipped with
  one warning.

The recordings are espeak-ng sentences with silences between them, so each word's place in
the recording is known (the engine's own timings plus the sentence's offset).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechattn.data.corpus import Utterance, UtteranceAudio, load_corpus

SR = 16000
SENTENCES = ("my brother bought bread", "she sold seven red boats", "we met at noon")
GAP_S = 0.6


def _load(path: Path) -> tuple[list, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        utts = load_corpus(path)
    return utts, [str(w.message) for w in caught]


def _tone(path: Path, seconds: float) -> Path:
    t = np.arange(int(SR * seconds)) / SR
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One 16 kHz recording of the three sentences with GAP_S of silence around each:
    ``path``, ``segments`` [(start, end)] with 0.1 s of silence each side of a sentence,
    ``words`` [[(start, end, word)] per sentence] at recording times, ``seconds``."""
    pytest.importorskip("espeakng_loader")
    from speechattn.data.synth import synthesize

    root = tmp_path_factory.mktemp("recording")
    parts: list[np.ndarray] = [np.zeros(int(GAP_S * SR), np.float32)]
    segments, words = [], []
    t = GAP_S
    for text in SENTENCES:
        r = synthesize(text, sample_rate=SR)
        n = r.waveform.shape[0] / SR
        segments.append((round(t - 0.1, 3), round(t + n + 0.1, 3)))
        words.append([(t + w.start, t + w.end, w.label) for w in r.words])
        parts += [r.waveform.astype(np.float32), np.zeros(int(GAP_S * SR), np.float32)]
        t += n + GAP_S
    wave = np.concatenate(parts)
    path = root / "talk.wav"
    sf.write(path, wave, SR)
    return {"path": path, "segments": segments, "words": words, "seconds": wave.shape[0] / SR}


# ---------------------------------------------------------------------------------------------
# Kaldi segments


def _kaldi_dir(root: Path, rec: dict) -> Path:
    root.mkdir(parents=True)
    (root / "wav.scp").write_text(f"talk {rec['path']}\n", encoding="utf-8")
    (a0, b0), (a1, b1), (a2, b2) = rec["segments"]
    lines = [
        f"talk-1 talk {a0} {b0}",
        f"talk-2 talk {a1} {b1}",
        f"talk-3 talk {a2} {b2}",
        "bad-order talk 3.0 2.5",  # end <= start
        "bad-rec other 0.1 1.0",  # no such recording
        f"bad-end talk 1.0 {rec['seconds'] + 5:.2f}",  # past the audio's end
        "bad-fields talk 1.0",  # three fields
    ]
    (root / "segments").write_text("\n".join(lines) + "\n", encoding="utf-8")
    text = [f"talk-{k + 1} {s}" for k, s in enumerate(SENTENCES)]
    text += [f"{u} hello" for u in ("bad-order", "bad-rec", "bad-end", "bad-fields")]
    (root / "text").write_text("\n".join(text) + "\n", encoding="utf-8")
    (root / "utt2spk").write_text("talk-1 A\ntalk-2 B\ntalk-3 A\n", encoding="utf-8")
    return root


def test_kaldi_segments_are_utterances_and_bad_lines_are_named_once(
    tmp_path: Path, recording: dict
) -> None:
    root = _kaldi_dir(tmp_path / "data", recording)
    utts, msgs = _load(root)
    assert [(u.id, u.speaker, u.text, u.recording) for u in utts] == [
        ("talk-1", "A", SENTENCES[0], "talk"),
        ("talk-2", "B", SENTENCES[1], "talk"),
        ("talk-3", "A", SENTENCES[2], "talk"),
    ]
    assert [(u.start, u.end) for u in utts] == recording["segments"]
    assert all(u.audio_path == recording["path"].resolve() and u.tier is None for u in utts)
    seg = str(root / "segments")
    for line, why in ((4, "start < end"), (5, "unknown recording 'other'"), (6, "after the audio")):
        named = [m for m in msgs if f"{seg}:{line}:" in m]
        assert len(named) == 1 and why in named[0], msgs
    assert sum(f"{seg}:7:" in m for m in msgs) == 1  # the malformed line
    assert not any("no segment" in m for m in msgs)  # a bad line is not named twice


def test_segment_end_minus_one_runs_to_the_recordings_end(tmp_path: Path) -> None:
    wav = _tone(tmp_path / "r.wav", 1.5)
    (tmp_path / "wav.scp").write_text(f"r {wav}\n", encoding="utf-8")
    (tmp_path / "segments").write_text("u1 r 0.5 -1\nu2 r 0.0 1.52\n", encoding="utf-8")
    (tmp_path / "text").write_text("u1 hello\nu2 hello there\n", encoding="utf-8")
    utts, msgs = _load(tmp_path)
    assert msgs == []
    # -1 and an end within SEGMENT_END_TOLERANCE_S of the audio's end: the audio's end
    assert [(u.id, u.start, u.end) for u in utts] == [("u1", 0.5, 1.5), ("u2", 0.0, 1.5)]


def test_speaker_recipe_still_refuses_segments(tmp_path: Path) -> None:
    from speechattn.data.corpus import CorpusError, kaldi_audio_paths

    (tmp_path / "segments").write_text("s1 u1 0.0 0.2\n", encoding="utf-8")
    (tmp_path / "wav.scp").write_text("u1 x.wav\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="segments are not supported"):
        kaldi_audio_paths(tmp_path, lambda where, msg: None)


# ---------------------------------------------------------------------------------------------
# Reading the audio of segments


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg"])
def test_segment_audio_is_the_recordings_samples_never_decoded_whole_per_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ext: str
) -> None:
    """WAV / FLAC segments are read by range (the whole file is decoded only for the whole-file
    utterance); Ogg (no sample-exact seek) is decoded once per recording and cut."""
    import speechattn.data.audio as audio_mod

    rng = np.random.default_rng(0)
    paths = []
    for name in ("a", "b"):
        paths.append(tmp_path / f"{name}.{ext}")
        sf.write(paths[-1], (0.1 * rng.standard_normal(SR * 2)).astype(np.float32), SR)
    utts = [
        Utterance(f"{p.stem}{k}", p, "x", "s", None, None, start=0.5 * k, end=0.5 * k + 0.4)
        for p in paths
        for k in range(3)
    ]
    utts.append(Utterance("whole", paths[0], "x", "s", None, None))
    reads: list[Path] = []
    real = audio_mod.load_audio

    def counting(path, **kw):  # type: ignore[no-untyped-def]
        reads.append(Path(path))
        return real(path, **kw)

    monkeypatch.setattr(audio_mod, "load_audio", counting)
    read = UtteranceAudio(utts, sample_rate=SR)
    got = [read(u, validate=True) for u in utts]
    if ext == "ogg":
        assert reads == [paths[0], paths[1], paths[0]]  # each recording once, then the whole file
    else:
        assert reads == [paths[0]]  # only the whole-file utterance
    whole = {p: sf.read(p, dtype="float32")[0] for p in paths}
    for u, wave in zip(utts[:-1], got):
        ref = whole[u.audio_path][round(u.start * SR) : round(u.end * SR)]
        assert wave.shape == (round(0.4 * SR),)
        assert torch.equal(wave, torch.from_numpy(ref))
    assert read._cache == {}  # every recording let go after its last segment


def test_a_silent_segment_is_refused_naming_the_file_and_its_times(tmp_path: Path) -> None:
    from speechattn.data.audio import AudioError

    path = tmp_path / "r.wav"
    wave = np.zeros(SR * 2, np.float32)
    wave[SR:] = 0.3 * np.sin(np.arange(SR) / 5)
    sf.write(path, wave, SR)
    utts = [
        Utterance("quiet", path, "x", "s", None, None, start=0.1, end=0.9),
        Utterance("loud", path, "x", "s", None, None, start=1.1, end=1.9),
    ]
    read = UtteranceAudio(utts, sample_rate=SR)
    with pytest.raises(AudioError, match=r"r\.wav \[0\.100-0\.900 s\].*silent"):
        read(utts[0], validate=True)
    assert read(utts[1], validate=True).shape == (round(0.8 * SR),)


def test_corpus_fingerprint_sees_segment_times(tmp_path: Path) -> None:
    from speechattn.recipes.align.outputs import corpus_fingerprint

    wav = _tone(tmp_path / "r.wav", 1.0)
    whole = Utterance("u", wav, "hello", "s", None, None)
    a = whole._replace(start=0.0, end=0.5, recording="r")
    b = whole._replace(start=0.0, end=0.6, recording="r")
    assert len({corpus_fingerprint([whole]), corpus_fingerprint([a]), corpus_fingerprint([b])}) == 3


# ---------------------------------------------------------------------------------------------
# MFA TextGrid transcripts

_LONG = """File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = {xmax}
tiers? <exists>
size = {n}
item []:
{items}"""


def _with_gaps(xmax: float, ivs: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """``ivs`` (in order) with each gap before, between and after them as an empty interval."""
    full, t = [], 0.0
    for a, b, text in ivs:
        if a > t:
            full.append((t, a, ""))
        full.append((a, b, text))
        t = b
    if t < xmax:
        full.append((t, xmax, ""))
    return full


def _long_textgrid(xmax: float, tiers: dict[str, list[tuple[float, float, str]]]) -> str:
    """Praat's long text format, written out by hand (gaps as empty intervals)."""
    items = []
    for i, (name, ivs) in enumerate(tiers.items(), 1):
        full = _with_gaps(xmax, ivs)
        body = "".join(
            f"        intervals [{k}]:\n            xmin = {a}\n            xmax = {b}\n"
            f'            text = "{text}"\n'
            for k, (a, b, text) in enumerate(full, 1)
        )
        items.append(
            f'    item [{i}]:\n        class = "IntervalTier"\n        name = "{name}"\n'
            f"        xmin = 0\n        xmax = {xmax}\n        intervals: size = {len(full)}\n"
            + body
        )
    return _LONG.format(xmax=xmax, n=len(tiers), items="".join(items))


def _short_textgrid(xmax: float, name: str, ivs: list[tuple[float, float, str]]) -> str:
    """Praat's short text format, one tier, gaps as empty intervals."""
    full = _with_gaps(xmax, ivs)
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "0", str(xmax)]
    lines += ["<exists>", "1", '"IntervalTier"', f'"{name}"', "0", str(xmax), str(len(full))]
    for a, b, text in full:
        lines += [str(a), str(b), f'"{text}"']
    return "\n".join(lines) + "\n"


def test_textgrid_transcripts_long_and_short_formats(tmp_path: Path) -> None:
    _tone(tmp_path / "spk" / "long.wav", 3.0)
    (tmp_path / "spk" / "long.TextGrid").write_text(
        _long_textgrid(
            3.0,
            {
                "Anna": [(0.2, 1.0, "hello there"), (2.0, 2.8, "good  night")],
                "Ben": [(1.1, 1.9, "yes")],
            },
        ),
        encoding="utf-8",
    )
    _tone(tmp_path / "short.wav", 2.0)
    (tmp_path / "short.TextGrid").write_text(
        _short_textgrid(2.0, "Cleo", [(0.5, 1.5, "one two")]), encoding="utf-16"
    )
    utts, msgs = _load(tmp_path)
    assert msgs == []
    got = [(u.id, u.speaker, u.text, u.start, u.end, u.recording, u.tier) for u in utts]
    assert got == [
        ("short/Cleo/1", "Cleo", "one two", 0.5, 1.5, "short", "Cleo"),
        ("spk/long/Anna/1", "Anna", "hello there", 0.2, 1.0, "spk/long", "Anna"),
        ("spk/long/Anna/2", "Anna", "good night", 2.0, 2.8, "spk/long", "Anna"),
        ("spk/long/Ben/1", "Ben", "yes", 1.1, 1.9, "spk/long", "Ben"),
    ]


def test_bad_textgrids_are_skipped_with_one_warning_each(tmp_path: Path) -> None:
    for name in ("broken", "aligned", "empty", "past_end", "fine"):
        _tone(tmp_path / f"{name}.wav", 2.0)
    (tmp_path / "broken.TextGrid").write_text(
        'File type = "ooTextFile"\nnonsense', encoding="utf-8"
    )
    (tmp_path / "aligned.TextGrid").write_text(
        _long_textgrid(2.0, {"words": [(0.1, 0.5, "hi")], "phones": [(0.1, 0.5, "h")]}),
        encoding="utf-8",
    )
    (tmp_path / "empty.TextGrid").write_text(_long_textgrid(2.0, {"A": []}), encoding="utf-8")
    (tmp_path / "past_end.TextGrid").write_text(
        _long_textgrid(4.0, {"A": [(0.1, 1.0, "fine words"), (2.5, 3.5, "too late")]}),
        encoding="utf-8",
    )
    (tmp_path / "fine.TextGrid").write_text(
        _long_textgrid(2.0, {"A": [(0.1, 1.0, "good")]}), encoding="utf-8"
    )
    utts, msgs = _load(tmp_path)
    assert [u.id for u in utts] == ["fine/A/1", "past_end/A/1"]
    for name, why in (
        ("broken", "could not parse TextGrid"),
        ("aligned", "holds an alignment"),
        ("empty", "no utterance interval"),
        ("past_end", "ends after the audio"),
    ):
        named = [m for m in msgs if f"{name}.TextGrid" in m and "skipped" in m]
        assert len(named) == 1 and why in named[0], msgs


def test_a_lab_beside_a_textgrid_wins_as_in_mfa_said_once(tmp_path: Path) -> None:
    for name in ("a", "b"):
        _tone(tmp_path / f"{name}.wav", 2.0)
        (tmp_path / f"{name}.lab").write_text("hello there", encoding="utf-8")
        (tmp_path / f"{name}.TextGrid").write_text(
            _long_textgrid(2.0, {"A": [(0.1, 1.0, "other words")]}), encoding="utf-8"
        )
    utts, msgs = _load(tmp_path)
    assert [(u.id, u.text, u.start) for u in utts] == [
        ("a", "hello there", None),
        ("b", "hello there", None),
    ]
    assert len(msgs) == 1 and "2 TextGrid(s)" in msgs[0] and "ignored" in msgs[0]


# ---------------------------------------------------------------------------------------------
# End to end: the CLI on both layouts, outputs read back with the package's readers


def _words_near_truth(words: list, truth: list, lo: float, hi: float) -> None:
    """Words as written, inside the segment [lo, hi], each word's middle within its truth word
    widened by 60 ms (an offset left out would put them seconds away)."""
    assert [w.label for w in words] == [w for _, _, w in truth]
    for w, (a, b, _) in zip(words, truth):
        assert lo - 1e-6 <= w.start < w.end <= hi + 1e-6
        assert a - 0.06 <= (w.start + w.end) / 2 <= b + 0.06, (w, a, b)


def test_align_kaldi_segments_one_alignment_per_segment(
    tmp_path: Path, recording: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.cli_run import run_cli

    from speechattn.data.textgrid import read_textgrid

    root = _kaldi_dir(tmp_path / "data", recording)
    out = tmp_path / "out"
    rc = run_cli(["align", str(root), "--out", str(out), "--no-adapt", "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "3 utterances" in printed and "segments of 1 recordings" in printed
    ali = out / "alignments"
    assert sorted(p.name for p in ali.glob("*.TextGrid")) == [
        "talk-1.TextGrid",
        "talk-2.TextGrid",
        "talk-3.TextGrid",
    ]
    for k, ((a, b), truth) in enumerate(zip(recording["segments"], recording["words"]), 1):
        words, phones = read_textgrid(ali / f"talk-{k}.TextGrid")
        rec = json.loads((ali / f"talk-{k}.json").read_text(encoding="utf-8"))
        assert rec["segment"] == {"recording": "talk", "start": a, "end": b}
        # times from the segment's start; adding it gives the recording's times
        moved = [type(w)(w.start + a, w.end + a, w.label) for w in words]
        _words_near_truth(moved, truth, a, b)
        assert phones and phones[-1].end <= b - a + 1e-4  # one sample at 22.05 kHz


def test_align_textgrid_transcript_written_back_per_recording(
    tmp_path: Path, recording: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.cli_run import run_cli

    from speechattn.data.textgrid import read_textgrid

    corpus = tmp_path / "corpus" / "spk"
    corpus.mkdir(parents=True)
    (corpus / "talk.wav").symlink_to(recording["path"])
    (a0, b0), (a1, b1), (a2, b2) = recording["segments"]
    tiers = {
        "Anna": [(a0, b0, SENTENCES[0]), (a2, b2, SENTENCES[2])],
        "Ben": [(a1, b1, SENTENCES[1])],
    }
    (corpus / "talk.TextGrid").write_text(
        _long_textgrid(round(recording["seconds"], 4), tiers), encoding="utf-8"
    )
    out = tmp_path / "out"
    rc = run_cli(
        ["align", str(tmp_path / "corpus"), "--out", str(out), "--no-adapt", "--no-progress",
         "--format", "textgrid,json,ctm"]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0, printed
    ali = out / "alignments"
    assert sorted(p.relative_to(ali).as_posix() for p in ali.rglob("*") if p.is_file()) == [
        "spk/talk.TextGrid",
        "spk/talk.ctm",
        "spk/talk.json",
        "spk/talk.phones.ctm",
    ]
    from praatio import textgrid

    grid = textgrid.openTextgrid(str(ali / "spk" / "talk.TextGrid"), includeEmptyIntervals=False)
    assert grid.tierNames == ("Anna - words", "Anna - phones", "Ben - words", "Ben - phones")
    assert abs(grid.maxTimestamp - recording["seconds"]) < 1e-3
    truth = recording["words"]
    for speaker, parts in (("Anna", [0, 2]), ("Ben", [1])):
        words, phones = read_textgrid(ali / "spk" / "talk.TextGrid", speaker=speaker)
        k = 0
        for part in parts:
            n = len(truth[part])
            a, b = recording["segments"][part]
            _words_near_truth(words[k : k + n], truth[part], a, b)
            k += n
        assert k == len(words)
        assert all(
            any(
                a - 1e-6 <= p.start < p.end <= b + 1e-6
                for a, b in (recording["segments"][i] for i in parts)
            )
            for p in phones
        )
    rec = json.loads((ali / "spk" / "talk.json").read_text(encoding="utf-8"))
    assert rec["recording"] == "spk/talk"
    assert [u["segment"]["tier"] for u in rec["utterances"]] == ["Anna", "Anna", "Ben"]
    ctm = (ali / "spk" / "talk.ctm").read_text(encoding="utf-8").split("\n")
    starts = [float(line.split()[2]) for line in ctm if line]
    assert starts == sorted(starts) and len(starts) == sum(len(t) for t in truth)
    assert all(line.startswith("spk_talk 1 ") for line in ctm if line)


# ---------------------------------------------------------------------------------------------
# Word scoring: utterances left out are said in the report


def test_left_out_notes_say_how_many_of_how_many() -> None:
    from speechattn.recipes.align.evaluate import Metrics, left_out_notes

    kept = Metrics(utterances=4, extra={"word_utterances": 4})
    some = Metrics(utterances=5, extra={"word_utterances": 3, "word_utterances_left_out": 2})
    assert left_out_notes({"corpus": {"sma": kept}}) == []
    notes = left_out_notes({"corpus": {"sma": kept, "fs": some}})
    assert len(notes) == 1 and notes[0].startswith("corpus, fs: 2 of 5 utterance(s)")


def test_audio_durations_of_segments_are_their_own_lengths(tmp_path: Path) -> None:
    from speechattn.data.collate import audio_durations

    wav = _tone(tmp_path / "r.wav", 2.0)
    whole = Utterance("u", wav, "hello", "s", None, None)
    seg = whole._replace(start=0.25, end=1.0, recording="r")
    assert audio_durations([whole, seg]) == [2.0, 0.75]


def test_boundary_refinement_reads_the_segment_not_the_recording(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from speechattn.recipes.align.edges import item_transitions, spectral_transition

    rng = np.random.default_rng(1)
    path = tmp_path / "r.wav"
    sf.write(path, (0.1 * rng.standard_normal(SR * 2)).astype(np.float32), SR)
    utt = Utterance("u", path, "x", "s", None, None, start=0.5, end=1.25, recording="r")
    (got,) = item_transitions([SimpleNamespace(id="u")], [utt], SR)  # type: ignore[list-item]
    whole = torch.from_numpy(sf.read(path, dtype="float32")[0])
    want = spectral_transition(whole[round(0.5 * SR) : round(1.25 * SR)], SR)
    assert np.array_equal(got.value, want.value)
    assert got.value.shape[0] * got.hop_s < 1.0  # 0.75 s of frames, not the 2 s recording


def test_speaker_recipe_leaves_textgrid_segments_out_said_once(tmp_path: Path) -> None:
    from speechattn.recipes.speaker.data import load_speaker_corpus

    for name in ("a", "b"):
        _tone(tmp_path / "spk" / f"{name}.wav", 2.0)
    (tmp_path / "spk" / "a.txt").write_text("hello there", encoding="utf-8")
    (tmp_path / "spk" / "b.TextGrid").write_text(
        _long_textgrid(2.0, {"A": [(0.1, 0.9, "one"), (1.0, 1.9, "two")]}), encoding="utf-8"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        utts = load_speaker_corpus(tmp_path)
    assert [u.id for u in utts] == ["spk/a"]
    said = [str(w.message) for w in caught if "segment" in str(w.message)]
    assert len(said) == 1 and "left out 2 segment(s)" in said[0]
