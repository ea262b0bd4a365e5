"""One bad file never aborts a folder: each is skipped with one warning line naming it and the
reason, counted in the summary; the command fails only when nothing usable is left. The files come
from the ``bad_inputs_dir`` fixture (tests/bad_inputs.py: corrupt, empty, header-only, truncated,
NaN, silent, stereo, 8 kHz, 48 kHz)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tests.bad_inputs import BAD, GOOD, TEXT

from speechattn.cli import main
from speechattn.data.audio import AudioError, load_audio


@pytest.mark.parametrize("name", sorted(BAD))
def test_load_audio_validate_names_file_and_reason(bad_inputs_dir: Path, name: str) -> None:
    path = bad_inputs_dir / f"{name}.wav"
    with pytest.raises(AudioError, match=BAD[name]) as exc:
        load_audio(path, sample_rate=22050, validate=True, min_samples=1024)
    assert str(path) in str(exc.value) and exc.value.path == path


@pytest.mark.parametrize("name", GOOD)
def test_awkward_but_usable_files_are_converted(bad_inputs_dir: Path, name: str) -> None:
    wav = load_audio(bad_inputs_dir / f"{name}.wav", sample_rate=22050, validate=True)
    assert wav.ndim == 1 and abs(wav.shape[0] - int(1.2 * 22050)) <= 2
    assert bool(wav.isfinite().all()) and float(wav.abs().max()) > 0.1


def test_nan_is_caught_before_resampling_and_without_validate_files_still_load(
    bad_inputs_dir: Path,
) -> None:
    with pytest.raises(AudioError, match="NaN"):
        load_audio(bad_inputs_dir / "nan.wav", sample_rate=16000, validate=True)
    assert load_audio(bad_inputs_dir / "silent.wav", sample_rate=None).abs().max() == 0


def _warning_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ": warning: " in ln]


def test_align_skips_each_bad_file_with_one_line(
    bad_inputs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("espeakng_loader")
    out = tmp_path / "O"
    args = ["align", str(bad_inputs_dir), "--out", str(out), "--from-scratch", "--steps", "2"]
    assert main([*args, "--no-progress", "--threads", "1", "--ctm"]) == 0
    io = capsys.readouterr()
    warnings = _warning_lines(io.err)
    assert "Traceback" not in io.err
    # Read-time checks: one line per file, naming it and the reason.
    for name in ("header_only", "truncated", "nan", "silent"):
        hits = [w for w in warnings if f"{name}.wav" in w]
        assert len(hits) == 1, (name, warnings)
        assert re.search(BAD[name], hits[0]), hits[0]
        assert hits[0].startswith("speechattn align: warning: ")
    # Undecodable files are caught when the corpus is read (its one warning names them).
    for name in ("corrupt", "empty"):
        assert any(f"{name}.wav" in w for w in warnings), (name, warnings)
    assert all("\n" not in w for w in warnings)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == len(BAD) and summary["utterances"] == len(GOOD)
    assert "skipped: 6 file(s)" in io.out
    report = (out / "report.html").read_text()
    assert "6 file(s) of the corpus were skipped" in report
    stems = sorted({p.name.split(".")[0] for p in (out / "alignments").iterdir()})
    assert stems == sorted(GOOD)
    assert (out / "alignments" / "clean.ctm").read_text().startswith("clean 1 ")


def test_align_fails_only_when_nothing_is_usable(
    bad_inputs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("espeakng_loader")
    for name in GOOD:
        os.remove(bad_inputs_dir / f"{name}.wav")
        os.remove(bad_inputs_dir / f"{name}.txt")
    out = tmp_path / "O"
    args = ["align", str(bad_inputs_dir), "--out", str(out), "--from-scratch", "--steps", "2"]
    assert main([*args, "--no-progress"]) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("speechattn align: error: No usable utterance")
    assert "6 were skipped" in last


def test_audio2clip_manifest_skips_bad_files(bad_inputs_dir: Path) -> None:
    from speechattn.recipes.audio2clip.data import ManifestItem, usable_items

    items = [ManifestItem(bad_inputs_dir / f"{n}.wav", TEXT) for n in (*BAD, *GOOD)]
    with pytest.warns(UserWarning) as rec:
        good, bad = usable_items(items)
    assert [it.audio_path.stem for it in good] == list(GOOD)
    assert len(bad) == len(BAD) == len(rec)
    for name, w in zip(BAD, rec):
        assert f"{name}.wav" in str(w.message) and "\n" not in str(w.message)


def test_silence_with_text_is_not_aligned_confidently(tmp_path: Path) -> None:
    pytest.importorskip("espeakng_loader")
    from speechattn.data.corpus import Utterance
    from speechattn.recipes.align.data import FeatureConfig, build_items, new_symbol_table

    wav = tmp_path / "quiet.wav"
    sf.write(wav, np.full(22050, 1e-6, np.float32), 22050)
    utts = [Utterance("quiet", wav, "hello there", "s", None, None)]
    with pytest.warns(UserWarning) as rec:
        items = build_items(utts, new_symbol_table(), FeatureConfig(), grow_symbols=True)
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 2 and re.search(r"quiet.*silent", msgs[0])
    assert "1 utterance(s) skipped" in msgs[1]
    assert items == []


def test_data_stats_counts_and_validates(
    bad_inputs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # header check only: undecodable files are skipped and counted
    assert main(["data", "stats", str(bad_inputs_dir)]) == 0
    plain = capsys.readouterr()
    m = re.search(r"(\d+) utterances, .* (\d+) skipped", plain.out)
    assert m is not None, plain.out
    n_plain, skipped_plain = int(m.group(1)), int(m.group(2))
    assert skipped_plain >= 1
    # --validate decodes every file: NaN and silent files (readable headers) are skipped too
    assert main(["data", "stats", str(bad_inputs_dir), "--validate"]) == 0
    checked = capsys.readouterr()
    m = re.search(r"(\d+) utterances, .* (\d+) skipped", checked.out)
    assert m is not None, checked.out
    assert int(m.group(1)) == len(GOOD) and int(m.group(2)) == len(BAD)
    assert int(m.group(1)) < n_plain
    warned = [line for line in checked.err.splitlines() if "warning:" in line]
    assert any("nan" in line.lower() for line in warned)
    assert any("silent" in line for line in warned)
