"""Small defects a new user's walk found ("readme4", benchmarks/RESULTS.md), each pinned here.

* A piped ``wav.scp`` utterance of a Kaldi data dir is one skipped entry (it was two: its
  ``wav.scp`` line and its ``text`` line, "no audio"), and the count agrees in number
  ("1 bad entry", not "1 bad entries").
* ``speechattn data synth`` says how fast it went below one utterance a second (Kokoro on a CPU)
  in seconds per utterance, not "(0 utt/s)".
* ``speechattn info`` says an installed backend whose device is not here is not usable (triton
  without CUDA was "yes (cuda; ...)").
* ``speechattn speaker train --help`` groups the synthetic-voice options and says what they do in
  a corpus run; passing one with a corpus warns.
(The text normaliser's ``St.``, ``Dr.``, ``No.``: tests/test_data_text.py.)
"""

from __future__ import annotations

import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechattn.cli import main
from speechattn.data.corpus import load_corpus

SR = 16000


def _tone(path: Path, seconds: float = 0.5) -> Path:
    t = np.arange(int(SR * seconds)) / SR
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)
    return path


def _load(path: Path) -> tuple[list, list[str], list[str]]:
    problems: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        utts = load_corpus(path, problems=problems)
    return utts, [str(w.message) for w in caught], problems


def test_a_piped_kaldi_utterance_is_one_skipped_entry(tmp_path: Path) -> None:
    _tone(tmp_path / "audio" / "u1.wav")
    (tmp_path / "wav.scp").write_text("u1 audio/u1.wav\nu2 sox in.wav -t wav - |\n")
    (tmp_path / "text").write_text("u1 hello there\nu2 good morning\n")
    (tmp_path / "utt2spk").write_text("u1 a\nu2 a\n")
    utts, msgs, problems = _load(tmp_path)
    assert [u.id for u in utts] == ["u1"]
    assert len(problems) == 1 and "piped command" in problems[0]  # not "no audio for 'u2'" too
    skips = [m for m in msgs if m.startswith("skipped ")]
    assert len(skips) == 1 and "wav.scp:2" in skips[0]
    assert msgs[-1].endswith("skipped 1 bad entry (named above)"), msgs
    # a text with no wav.scp line at all is still named
    (tmp_path / "text").write_text("u1 hello there\nu2 good morning\nu3 no audio\n")
    _, _, problems = _load(tmp_path)
    assert len(problems) == 2 and "no audio for 'u3'" in problems[1]
    assert "bad entries" in _load(tmp_path)[1][-1]  # two: plural


def test_a_piped_kaldi_recording_with_segments_is_named_once(tmp_path: Path) -> None:
    _tone(tmp_path / "r1.wav", 2.0)
    (tmp_path / "wav.scp").write_text("r1 r1.wav\nr2 sox r2.flac -t wav - |\n")
    (tmp_path / "segments").write_text("s1 r1 0.0 1.0\ns2 r2 0.0 1.0\ns3 r2 1.0 2.0\n")
    (tmp_path / "text").write_text("s1 hello there\ns2 good morning\ns3 good night\n")
    utts, _, problems = _load(tmp_path)
    assert [u.id for u in utts] == ["s1"]
    assert len(problems) == 1 and "piped command" in problems[0], problems


def test_synth_rate_keeps_two_figures() -> None:
    from speechattn.data.cli import synth_rate

    assert synth_rate(120, 10.0) == "12 utt/s"
    assert synth_rate(25, 10.0) == "2.5 utt/s"
    assert synth_rate(3, 10.0) == "3.3 s/utt"  # was "0 utt/s"
    assert synth_rate(1, 250.0) == "250 s/utt"
    assert synth_rate(0, 1.0) == "no rate"


def test_data_synth_prints_seconds_per_utterance_for_a_slow_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import speechattn.data.cli as data_cli
    import speechattn.data.synth as synth

    clock = iter([100.0, 112.5])  # 4 utterances in 12.5 s: 0.32 utt/s
    monkeypatch.setattr(data_cli, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    monkeypatch.setattr(synth, "synth_corpus", lambda out, **kw: Path(out) / "manifest.jsonl")
    out = tmp_path / "c"
    argv = ["data", "synth", "--out", str(out), "--utterances", "4", "--voices", "1"]
    assert main([*argv, "--no-progress"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == f"wrote 4 utterances (1 voice) to {out / 'manifest.jsonl'} in 12.5 s (3.1 s/utt)"


def test_info_says_a_backend_without_its_device_is_not_usable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from speechattn import kernels

    monkeypatch.setattr(kernels, "_has", lambda module: True)  # triton installed, say
    monkeypatch.setattr(kernels, "_device_present", lambda d: d == "cpu")
    row = kernels.implementations()["sma"]
    assert row["triton"].startswith("installed; not usable here (no CUDA device; cuda; "), row
    assert row["numba"].startswith("yes (cpu; ")
    monkeypatch.setattr(kernels, "_device_present", lambda d: True)
    assert kernels.implementations()["sma"]["triton"].startswith("yes (cuda; ")


def test_speaker_train_help_groups_the_synthetic_voice_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["speaker", "train", "--help"])
    out = capsys.readouterr().out
    group = out.index("synthetic voices (a corpus run does not synthesise")
    options = out[out.index("options:") :]  # after the usage lines
    assert options.count("\n  --train-speakers TRAIN_SPEAKERS") == 1
    assert out.index("\n  --train-speakers TRAIN_SPEAKERS") > group
    assert out.index("\n  --utterances-per-speaker UTTERANCES") > group
    assert out.index("\n  --test-speakers") < group  # used by a corpus run: not in the group
    assert "not used with a corpus" in " ".join(out.split())


def test_speaker_train_warns_about_synthetic_voice_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import speechattn.recipes.speaker.train as train

    def fake(cfg: object, out: Path, **kw: object) -> dict:
        return {"rows": [], "dropped_voices": [], "skipped_files": []}

    monkeypatch.setattr(train, "run_speaker", fake)
    base = ["speaker", "train", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*base, "--utterances-per-speaker", "3", "--train-speakers", "9"]) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if ": warning: " in ln]
    assert len(warned) == 2, warned
    assert "--utterances-per-speaker is for synthetic voices" in warned[0]
    assert "--train-speakers is for synthetic voices: with a corpus" in warned[1]
    assert main(base) == 0
    assert ": warning: " not in capsys.readouterr().err
    monkeypatch.setattr(train, "run_speaker", fake)
    assert main(["speaker", "synth", "--out", str(tmp_path / "s"), "--train-speakers", "9"]) == 0
    assert ": warning: " not in capsys.readouterr().err  # synthetic voices: used
