"""``speechattn speaker score --score-norm``: the CLI scores what the library computes, cohorts
from the list or an ``.npz``, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.cli_run import run_cli as _main
from tests.speaker_toy import SR
from tests.speaker_toy import toy_voice as _voice


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import soundfile as sf

    d = tmp_path_factory.mktemp("norm") / "audio"
    d.mkdir()
    for i in range(12):
        sf.write(d / f"v{i}.wav", _voice(i), SR)
    # files i and i + 4 (mod 12) share a pitch: one "speaker"
    lines = [f"1 v{i}.wav v{(i + 4) % 12}.wav" for i in range(12)]
    lines += [f"0 v{i}.wav v{i + 1}.wav" for i in range(11)]
    (d / "trials.txt").write_text("\n".join(lines) + "\n")
    (d / "short.txt").write_text("1 v0.wav v4.wav\n0 v0.wav v1.wav\n0 v2.wav v3.wav\n")
    return d


def _score(folder: Path, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "r.json"
    argv = ["speaker", "score", str(folder / "trials.txt"), "--out", str(out), *extra]
    assert _main(argv) == 0
    return json.loads(out.read_text())


def test_cli_scores_what_the_library_computes(folder: Path, tmp_path: Path) -> None:
    from speechattn.recipes.speaker import load_checkpoint
    from speechattn.recipes.speaker.data import read_trials
    from speechattn.recipes.speaker.evaluate import (
        DEFAULT_TOP_K,
        centre_embeddings,
        compute_eer,
        embed_features,
        normalise_scores,
        trial_features,
    )

    model, cfg = load_checkpoint()
    ts = trial_features(read_trials(folder / "trials.txt", folder), cfg)
    emb = centre_embeddings(embed_features(model, ts.feats))
    plain = _score(folder, tmp_path)
    assert plain["score_norm"] == "none" and plain["cohort"] is None
    for method, extra, k in (
        ("snorm", [], None),
        ("asnorm", [], DEFAULT_TOP_K),
        ("asnorm", ["--top-k", "3"], 3),
    ):
        res = _score(folder, tmp_path, "--score-norm", method, *extra)
        s = normalise_scores(emb, ts.enroll, ts.test, method=method, top_k=k)
        assert res["eer"] == pytest.approx(compute_eer(s, ts.labels))
        assert (res["score_norm"], res["cohort"], res["top_k"]) == (method, "list", k)
        assert res["baseline_score_norm"] == method
    # a cohort file written by 'speaker embed' (other clips: here shifted copies of the voices)
    import soundfile as sf

    other = tmp_path / "cohort_audio"
    other.mkdir()
    for i in range(6):
        sf.write(other / f"c{i}.wav", _voice(100 + i), SR)
    npz = tmp_path / "cohort.npz"
    assert _main(["speaker", "embed", str(other), "--out", str(npz), "--no-progress"]) == 0
    res = _score(folder, tmp_path, "--score-norm", "snorm", "--cohort", str(npz))
    with np.load(npz) as z:
        raw = torch.from_numpy(z["embeddings"])
    mean = embed_features(model, ts.feats).mean(0)
    s = normalise_scores(
        emb, ts.enroll, ts.test, method="snorm", cohort=centre_embeddings(raw, mean)
    )
    assert res["eer"] == pytest.approx(compute_eer(s, ts.labels))
    assert (res["cohort"], res["cohort_size"], res["baseline_score_norm"]) == ("given", 6, "none")
    assert res["baseline_eer"] == plain["baseline_eer"]


def _said(capsys: pytest.CaptureFixture[str]) -> str:
    cap = capsys.readouterr()
    return cap.out + cap.err


def test_cli_errors_are_one_line(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trials = str(folder / "trials.txt")
    base = ["speaker", "score", trials]
    assert _main([*base, "--top-k", "5"]) == 2
    assert "--top-k applies to score normalisation" in _said(capsys)
    assert _main([*base, "--cohort", "x.npz"]) == 2
    assert _main([*base, "--score-norm", "snorm", "--top-k", "5"]) == 2
    assert "--top-k is for --score-norm asnorm" in _said(capsys)
    for bad in (["--top-k", "1"], ["--top-k", "x"], ["--score-norm", "znorm"]):
        with pytest.raises(SystemExit) as exc:
            _main([*base, "--score-norm", "asnorm", *bad])
        assert exc.value.code == 2
    assert _main([*base, "--score-norm", "snorm", "--cohort", str(tmp_path / "no.npz")]) == 1
    assert "No cohort file" in _said(capsys)
    centred = tmp_path / "centred.npz"
    np.savez(centred, keys=np.array(["a", "b"]), embeddings=np.eye(2, 4), mean=np.zeros(4))
    assert _main([*base, "--score-norm", "snorm", "--cohort", str(centred)]) == 1
    assert "was written with --centre" in _said(capsys)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, keys=np.array(["a", "b", "c"]), embeddings=np.eye(3, 5, dtype=np.float32))
    assert _main([*base, "--score-norm", "asnorm", "--cohort", str(wrong)]) == 1
    out = _said(capsys)
    assert "--cohort" in out and "found shape (3, 5)" in out and len(out.strip().splitlines()) == 1
    ints = tmp_path / "ints.npz"
    np.savez(ints, keys=np.array(["a", "b"]), embeddings=np.ones((2, 4), dtype=np.int64))
    assert _main([*base, "--score-norm", "snorm", "--cohort", str(ints)]) == 1
    assert "'embeddings' as floating point; found int64" in _said(capsys)
    notnpz = tmp_path / "x.npz"
    notnpz.write_text("hello")
    assert _main([*base, "--score-norm", "snorm", "--cohort", str(notnpz)]) == 1
    short = str(folder / "short.txt")
    assert _main(["speaker", "score", short, "--score-norm", "snorm"]) == 1
    assert "at least 10 usable files" in _said(capsys)
