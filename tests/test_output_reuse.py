"""Reusing an output folder: the same run resumes; a different run (corpus, symbol table, model
config, seed) is refused with one line saying what differs; --overwrite starts fresh and leaves
no stale alignment behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tests.align_toy import N_MELS, NUM_SYMBOLS, toy_items

from speechattn.cli import main
from speechattn.recipes.align.model import AlignerConfig
from speechattn.recipes.align.train import CheckpointMismatch, TrainConfig, train_aligner

pytest.importorskip("espeakng_loader")


def _corpus(folder: Path, texts: dict[str, str], seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name, text in texts.items():
        t = np.arange(int(22050 * 1.5)) / 22050
        wav = 0.2 * np.sin(2 * np.pi * (140 + 40 * rng.random()) * t) * (1 + np.sin(7 * t))
        wav += 0.01 * rng.standard_normal(t.size)
        sf.write(folder / f"{name}.wav", wav.astype(np.float32), 22050)
        (folder / f"{name}.txt").write_text(text)
    return folder


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reuse")
    a = _corpus(root / "A", {"a1": "the cat sat", "a2": "a dog ran home"}, 0)
    b = _corpus(root / "B", {"b1": "quick brown fox", "b2": "jumps over it", "b3": "yes"}, 1)
    return a, b


def _align(data: Path, out: Path, *extra: str) -> int:
    args = ["align", str(data), "--out", str(out), "--from-scratch", "--steps", "2"]
    return main([*args, "--no-progress", "--threads", "1", *extra])


def test_other_corpus_in_same_out_is_refused_then_overwritten(
    corpora: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = corpora
    out = tmp_path / "O"
    assert _align(a, out) == 0
    first = sorted(p.name for p in (out / "alignments").iterdir())
    assert first == ["a1.TextGrid", "a1.json", "a2.TextGrid", "a2.json"]
    capsys.readouterr()
    # The old code resumed A's finished checkpoint here and aligned B with A's weights.
    assert _align(b, out) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("speechattn align: error: ")
    # refused before the features are computed (polish4), so before B's symbol table exists:
    # the corpus is named, the symbol table is not compared yet
    assert "corpus" in err and "--overwrite" in err and "--out" in err
    assert sorted(p.name for p in (out / "alignments").iterdir()) == first  # untouched
    # A different seed on the same corpus is another run too.
    assert _align(a, out, "--seed", "1") == 1
    assert "seed (0 there, 1 now)" in capsys.readouterr().err
    # --overwrite: B's outputs only, nothing of A's left.
    assert _align(b, out, "--overwrite") == 0
    names = sorted(p.name for p in (out / "alignments").iterdir())
    assert names == [f"b{i}.{ext}" for i in (1, 2, 3) for ext in ("TextGrid", "json")]
    record = json.loads((out / "run.json").read_text())
    assert record["mode"] == "from-scratch" and record["seed"] == 0


def test_same_run_resumes_and_stale_files_are_removed(
    corpora: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = corpora
    out = tmp_path / "O"
    assert _align(a, out) == 0
    before = (out / "alignments" / "a1.TextGrid").read_text()
    (out / "alignments" / "old.TextGrid").write_text("from an earlier run")
    capsys.readouterr()
    assert _align(a, out, "--format", "textgrid,ctm") == 0
    io = capsys.readouterr()
    assert "continuing" in io.out and "resumed from step 2 of 2" in io.out
    assert "removed 3 alignment file(s)" in io.err  # old.TextGrid and the two .json
    names = sorted(p.name for p in (out / "alignments").iterdir())
    assert names == [
        "a1.TextGrid", "a1.ctm", "a1.phones.ctm", "a2.TextGrid", "a2.ctm", "a2.phones.ctm",
    ]  # fmt: skip
    assert (out / "alignments" / "a1.TextGrid").read_text() == before


def test_outputs_without_a_run_record_are_refused(
    corpora: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = corpora
    out = tmp_path / "O"
    (out / "alignments").mkdir(parents=True)
    (out / "alignments" / "x.TextGrid").write_text("someone else's")
    assert _align(a, out) == 1
    err = capsys.readouterr().err
    assert "run.json" in err and "--overwrite" in err
    assert (out / "alignments" / "x.TextGrid").exists()


def test_train_aligner_refuses_a_checkpoint_of_another_run(tmp_path: Path) -> None:
    items = toy_items(8, 0)
    cfg = AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16)
    ck = tmp_path / "ck.pt"
    extra = {"symbols": {"a": 1, "b": 2}, "run": {"corpus": "x"}}
    train_aligner(
        cfg, items, TrainConfig(steps=2), checkpoint=ck, extra_state=extra, progress=False
    )
    other = {"symbols": {"a": 2, "b": 1}, "run": {"corpus": "x"}}
    with pytest.raises(CheckpointMismatch, match="symbol table"):
        train_aligner(cfg, items, TrainConfig(steps=4), checkpoint=ck, extra_state=other)
    with pytest.raises(CheckpointMismatch, match=r"seed \(0 there, 5 now\)"):
        train_aligner(cfg, items, TrainConfig(steps=4, seed=5), checkpoint=ck, extra_state=extra)
    bigger = AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=32)
    with pytest.raises(CheckpointMismatch, match="model config"):
        train_aligner(bigger, items, TrainConfig(steps=4), checkpoint=ck, extra_state=extra)
    res = train_aligner(cfg, items, TrainConfig(steps=4), checkpoint=ck, extra_state=extra)
    assert res.resumed_from == 2


def test_demo_refuses_a_folder_of_other_settings_before_synthesizing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from speechattn.recipes.align.outputs import prepare_output
    from speechattn.recipes.align.pipeline import DemoConfig, demo_record

    out = tmp_path / "D"
    keep = ("threads", "max_seconds_per_aligner", "eval_every", "steps")
    record = {k: v for k, v in demo_record(DemoConfig.quick()).items() if k not in keep}
    assert prepare_output(out, record, overwrite=False) == "new"
    (out / "corpus").mkdir()
    (out / "corpus" / "manifest.jsonl").write_text("")
    assert main(["demo", "--quick", "--out", str(out), "--set", "dim=32", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "dim differ" in err and "--overwrite" in err
    assert (out / "corpus" / "manifest.jsonl").exists()
    # A corpus folder with no run record (an older version's run) is refused too.
    (out / "run.json").unlink()
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 1
    assert "corpus" in capsys.readouterr().err
