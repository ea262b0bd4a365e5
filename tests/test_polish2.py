"""List readers skip each malformed line with one warning and keep going; ``combine_aligners``
reads each input once; ``speechattn demo --corpus-from`` reuses another run's corpus."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from speechattn.recipes.audio2clip.data import read_manifest
from speechattn.recipes.speaker.data import load_speaker_corpus, read_trials

SR = 16000


def _skips(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if str(w.message).startswith("skipped ")]


def _tone(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    wave = 0.3 * np.sin(2 * np.pi * (100.0 + 35 * (seed % 4)) * t)
    return (wave + 0.01 * rng.normal(size=t.size)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# audio2clip manifest


def test_audio2clip_manifest_skips_each_bad_line(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    m.write_text(
        '{"audio": "a.wav", "caption": "one"}\n'
        "{not json\n"
        '{"audio": "b.wav"}\n'
        "\n"
        '["c.wav", "three"]\n'
        '{"path": "d.wav", "text": "four", "speaker": "s"}\n'
    )
    problems: list[str] = []
    with pytest.warns(UserWarning) as record:
        items = read_manifest(m, problems=problems)
    assert [it.caption for it in items] == ["one", "four"]
    assert items[1].extra == {"speaker": "s"}
    skips = _skips(record)
    assert len(skips) == 3 == len(problems)
    for line, found in ((2, "invalid JSON"), (3, "found keys ['audio']"), (5, "JSON list")):
        (msg,) = [s for s in skips if f"m.jsonl:{line}:" in s]
        assert "expected an object with 'audio'" in msg and found in msg
    assert any("skipped 3 malformed lines" in str(w.message) for w in record)


def test_audio2clip_manifest_nothing_usable_names_the_first_line(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    m.write_text('{"audio": "x.wav"}\n{"caption": "y"}\n')
    with pytest.warns(UserWarning) as record:
        with pytest.raises(ValueError, match=r"no usable items \(2 malformed lines; the first: "):
            read_manifest(m)
    skips = _skips(record)
    assert len(skips) == 2 and "m.jsonl:1:" in skips[0] and "m.jsonl:2:" in skips[1]


# ---------------------------------------------------------------------------------------------
# speaker corpora and trial lists


def test_speaker_manifest_skips_bad_lines_and_repeated_ids(tmp_path: Path) -> None:
    m = tmp_path / "c.jsonl"
    m.write_text(
        '{"audio": "a.wav", "speaker": "s1"}\n'
        '{"audio": "b.wav"}\n'
        "oops\n"
        '{"audio": "c.wav", "speaker": "s2", "id": "a"}\n'
        '{"path": "d.wav", "speaker": "s2"}\n'
    )
    problems: list[str] = []
    with pytest.warns(UserWarning) as record:
        utts = load_speaker_corpus(m, problems=problems)
    assert [(u.id, u.speaker) for u in utts] == [("a", "s1"), ("d", "s2")]
    skips = _skips(record)
    assert len(skips) == 3 == len(problems)
    assert any("c.jsonl:2:" in s and "found keys ['audio']" in s for s in skips)
    assert any("c.jsonl:3:" in s and "invalid JSON" in s for s in skips)
    assert any("c.jsonl:4:" in s and "'a' again (first on line 1" in s for s in skips)


def test_kaldi_dir_skips_bad_lines(tmp_path: Path) -> None:
    k = tmp_path / "k"
    k.mkdir()
    (k / "wav.scp").write_text(
        "u1 /data/u1.wav\nu2 sox u2.flac -t wav - |\nu3 /data/u3.wav\nbroken\nu4 /data/u4.wav\n"
        "u1 /data/other.wav\n"
    )
    (k / "utt2spk").write_text("u1 s1\nu2 s1\nu4 s2\nu9\n")
    problems: list[str] = []
    with pytest.warns(UserWarning) as record:
        utts = load_speaker_corpus(k, problems=problems)
    assert [(u.id, u.speaker, u.audio_path.name) for u in utts] == [
        ("u1", "s1", "u1.wav"),
        ("u4", "s2", "u4.wav"),
    ]
    skips = _skips(record)
    assert len(skips) == 5 == len(problems)
    expect = {
        "wav.scp:2:": "piped",
        "wav.scp:3:": "expected a speaker for 'u3'",
        "wav.scp:4:": "expected '<key> <value>'; found 'broken'",
        "wav.scp:6:": "'u1' again (first on line 1",
        "utt2spk:4:": "found 'u9'",
    }
    for where, what in expect.items():
        assert sum(where in s and what in s for s in skips) == 1, (where, skips)


def test_speaker_corpus_nothing_usable(tmp_path: Path) -> None:
    k = tmp_path / "k"
    k.mkdir()
    (k / "wav.scp").write_text("u1 sox a.wav -t wav - |\n")
    (k / "utt2spk").write_text("u1 s1\n")
    with pytest.warns(UserWarning) as record:
        with pytest.raises(ValueError, match=r"no usable utterances found \(1 malformed line;"):
            load_speaker_corpus(k)
    assert len(_skips(record)) == 1 and "piped" in _skips(record)[0]


def test_trial_list_skips_bad_lines(tmp_path: Path) -> None:
    t = tmp_path / "t.txt"
    t.write_text("1 a.wav b.wav\n2 a.wav c.wav\n0 a.wav\n0 a.wav c.wav\n")
    problems: list[str] = []
    with pytest.warns(UserWarning) as record:
        trials = read_trials(t, tmp_path, problems=problems)
    assert [(x.target, x.test.name) for x in trials] == [(1, "b.wav"), (0, "c.wav")]
    skips = _skips(record)
    assert len(skips) == 2 == len(problems)
    assert "t.txt:2: expected '<1|0> <enroll.wav> <test.wav>'; found '2 a.wav c.wav'" in skips[0]
    assert "t.txt:3:" in skips[1] and "found '0 a.wav'" in skips[1]
    # what is left must still hold both kinds
    t.write_text("1 a.wav b.wav\n0 a.wav\n")
    with pytest.warns(UserWarning) as record:
        with pytest.raises(ValueError, match=r"non-target.*1 malformed line\b"):
            read_trials(t, tmp_path)
    assert len(_skips(record)) == 1 and "t.txt:2:" in _skips(record)[0]


def test_score_counts_malformed_trials_and_warns_once(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import soundfile as sf

    from speechattn.cli import main

    d = tmp_path / "audio"
    d.mkdir()
    for i in range(6):
        sf.write(d / f"v{i}.wav", _tone(i), SR)
    t = tmp_path / "t.txt"
    t.write_text("1 v0.wav v4.wav\n0 v0.wav v1.wav\nbad line\n0 v2.wav v3.wav\n1 v1.wav v5.wav\n")
    out = tmp_path / "s.json"
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        rc = main(["speaker", "score", str(t), "--root", str(d), "--out", str(out)])
    assert rc == 0
    assert escaped == []  # the CLI printed each warning itself, as one line
    err = capfd.readouterr().err.splitlines()
    named = [line for line in err if "t.txt:3:" in line]
    assert named == [
        "speechattn speaker score: warning: skipped "
        f"{t}:3: expected '<1|0> <enroll.wav> <test.wav>'; found 'bad line'"
    ]
    res = json.loads(out.read_text())
    assert res["num_trials"] == 4 and res["malformed_lines"] == 1
    assert res["skipped_trials"] == 1


# ---------------------------------------------------------------------------------------------
# combine_aligners


def test_combine_aligners_reads_each_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from tests.align_toy import FEATURES, N_MELS, NUM_SYMBOLS

    from speechattn.recipes.align import pipeline
    from speechattn.recipes.align.data import new_symbol_table
    from speechattn.recipes.align.model import AlignerConfig, TextMelAligner

    symbols = new_symbol_table()
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = TextMelAligner(
            AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16)
        )
        info = {"trained_by": "speechattn demo", "demo_config": {"seed": 0, "train_seed": seed}}
        paths.append(tmp_path / f"s{seed}.pt")
        pipeline.save_aligner(paths[-1], model.eval(), symbols, FEATURES, info)
    pair = pipeline.combine_aligners(paths[:2], tmp_path / "pair.pt", log=lambda _: None)
    reads: list[Path] = []
    real = pipeline.load_checkpoint

    def counting(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(Path(path).resolve())
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "load_checkpoint", counting)
    out = pipeline.combine_aligners([pair, paths[2]], tmp_path / "e.pt", log=lambda _: None)
    assert sorted(reads) == sorted(p.resolve() for p in (pair, paths[2]))
    # the file holding an ensemble keeps its members' records; the single file adds its own
    monkeypatch.undo()
    info = pipeline.load_aligner(out)[3]
    assert [m["train_seed"] for m in info["members"]] == [0, 1, 2]
