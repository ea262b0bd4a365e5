"""``speechattn speaker embed``: per-file fault isolation, ids stored as data, the path written,
and checkpoints read without unpickling code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.cli_run import run_cli as _main

SR = 16000


def _voice(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    f0 = 100.0 + 40 * seed
    wave = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.05 * np.sin(5 * t)))
    return (wave + 0.01 * rng.normal(size=t.size)).astype(np.float32)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Good files with awkward names, and one bad file of every kind."""
    import soundfile as sf

    d = tmp_path / "audio"
    (d / "a").mkdir(parents=True)
    (d / "b").mkdir()
    sf.write(d / "file.wav", _voice(0), SR)  # np.savez(file=...) clash
    sf.write(d / "allow_pickle.wav", _voice(1), SR)  # np.savez(allow_pickle=...) clash
    sf.write(d / "a" / "x.wav", _voice(2), SR)  # same stem as b/x.wav
    sf.write(d / "b" / "x.wav", _voice(3), 22050)
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(50)))
    sf.write(d / "empty.wav", np.zeros(0, np.float32), SR)
    sf.write(d / "short.wav", _voice(4)[:200], SR)  # < 257 samples: not one analysis window
    nan = _voice(5)
    nan[100:110] = np.nan
    sf.write(d / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(d / "silent.wav", np.zeros(SR, np.float32), SR)
    return d


BAD = ["corrupt.wav", "empty.wav", "nan.wav", "short.wav", "silent.wav"]
GOOD = ["a/x.wav", "allow_pickle.wav", "b/x.wav", "file.wav"]


def test_embed_skips_bad_files_and_keeps_every_name(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "emb"  # no suffix: np.savez appends .npz, and the message says so
    assert _main(["speaker", "embed", str(folder), "--out", str(out), "--no-progress"]) == 0
    cap = capsys.readouterr()
    written = tmp_path / "emb.npz"
    assert f"wrote 4 embeddings to {written} (--out {out}: .npz added)" in cap.out
    assert "skipped 5 unusable files" in cap.out
    warned = [line for line in cap.err.splitlines() if "warning" in line]
    assert len(warned) == len(BAD)
    for name, line in zip(BAD, sorted(warned)):
        assert name in line
    assert "too short" in cap.err and "NaN" in cap.err and "silent" in cap.err
    with np.load(written) as z:  # no pickle needed
        keys, emb = list(z["keys"]), z["embeddings"]
    assert keys == GOOD
    assert emb.shape[0] == 4 and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    # a/x.wav and b/x.wav are two different recordings
    assert not np.allclose(emb[0], emb[2])


def test_embed_fails_when_nothing_is_usable(tmp_path: Path, folder: Path) -> None:
    for name in GOOD:
        (folder / name).unlink()
    out = tmp_path / "none.npz"
    assert _main(["speaker", "embed", str(folder), "--out", str(out), "--no-progress"]) == 1
    assert not out.exists()
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert _main(["speaker", "embed", str(empty), "--out", str(out)]) == 1


def test_embed_library_returns_data(folder: Path, tmp_path: Path) -> None:
    from speechattn.recipes.speaker import embed_directory

    skipped: list[tuple[str, str]] = []
    res = embed_directory(folder, tmp_path / "e.npz", on_skip=lambda p, r: skipped.append((p, r)))
    assert res.keys == GOOD and res.path == tmp_path / "e.npz"
    assert sorted(p for p, _ in res.skipped) == BAD == sorted(p for p, _ in skipped)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))  # runs at unpickling time if allowed


def test_checkpoints_are_never_unpickled(tmp_path: Path, folder: Path) -> None:
    from speechattn.recipes.speaker import load_checkpoint
    from speechattn.recipes.speaker.train import ResumeMismatch, _load_train_checkpoint

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "speechattn-speaker-v2", "x": _Evil(marker)}, evil)
    with pytest.raises(ValueError, match="not a loadable speaker checkpoint"):
        load_checkpoint(evil)
    out = str(tmp_path / "e.npz")
    assert _main(["speaker", "embed", str(folder), "--out", out, "--checkpoint", str(evil)]) == 1
    trials = tmp_path / "t.txt"
    trials.write_text("1 file.wav allow_pickle.wav\n0 file.wav a/x.wav\n")
    argv = ["speaker", "score", str(trials), "--root", str(folder), "--checkpoint", str(evil)]
    assert _main(argv) == 1
    with pytest.raises(ResumeMismatch, match="not a loadable training checkpoint"):
        _load_train_checkpoint(evil)
    assert not marker.exists()


def test_a_training_resume_file_is_refused_with_what_to_pass_instead(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``OUT/checkpoints/<pooling>.pt`` (the README lists it among a run's outputs) is the resume
    state, not an encoder: ``score`` / ``embed`` say which file to pass instead, in one line."""
    from speechattn.recipes.speaker import load_checkpoint
    from speechattn.recipes.speaker.train import _TRAIN_FORMAT

    resume = tmp_path / "out" / "checkpoints" / "ASTP.pt"
    resume.parent.mkdir(parents=True)
    torch.save({"format": _TRAIN_FORMAT, "step": 3, "model": {"w": torch.zeros(2)}}, resume)
    with pytest.raises(ValueError, match=r"resume state.*--save-checkpoint"):
        load_checkpoint(resume)
    capsys.readouterr()
    trials = tmp_path / "t.txt"
    trials.write_text("1 file.wav allow_pickle.wav\n0 file.wav a/x.wav\n")
    argv = ["speaker", "score", str(trials), "--root", str(folder), "--checkpoint", str(resume)]
    assert _main(argv) == 1
    out = capsys.readouterr()
    lines = [ln for ln in (out.out + out.err).splitlines() if ln.strip()]
    assert len(lines) == 1 and "--save-checkpoint FILE" in lines[0], lines
