"""benchmarks/train_align_loeo.py: another corpus appended to the training corpus (``--add``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType

import pytest
from tests.bench_module import load_benchmark


def _load_bench() -> ModuleType:
    return load_benchmark("train_align_loeo")


def _manifest(folder: Path, lines: list[object]) -> Path:
    folder.mkdir(parents=True)
    (folder / "wavs").mkdir()
    path = folder / "manifest.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _loeo_corpus(tmp_path: Path) -> None:
    """``tmp_path/loeo/corpus``: one festival utterance and 70 piper ones (more than the 60
    held-out sentences a run keeps), so holding festival out leaves a corpus to train on."""
    rows = [
        {"id": f"u{i}", "path": f"wavs/u{i}.wav", "engine": eng, "voice": f"{eng}-v", "text": "A."}
        for i, eng in enumerate(["festival"] + ["piper"] * 70)
    ]
    _manifest(tmp_path / "loeo" / "corpus", rows)


def test_added_utterances_renames_ids_and_paths(tmp_path: Path) -> None:
    mod = _load_bench()
    rows = [
        {"id": "utt000000", "path": "wavs/utt000000.wav", "engine": "kokoro", "text": "A cat."},
        {"id": "utt000001", "path": "wavs/sub/utt000001.wav", "engine": "kokoro", "text": "B."},
    ]
    manifest = _manifest(tmp_path / "corpus_kokoro", [rows[0], "", rows[1]])
    lines, wavs, name = mod.added_utterances(manifest)
    assert name == "wavs_corpus_kokoro"
    assert wavs == (tmp_path / "corpus_kokoro" / "wavs").resolve()
    assert [x["id"] for x in lines] == ["corpus_kokoro-utt000000", "corpus_kokoro-utt000001"]
    assert [x["path"] for x in lines] == [
        "wavs_corpus_kokoro/utt000000.wav",
        "wavs_corpus_kokoro/sub/utt000001.wav",
    ]
    # everything else is kept as it was
    assert [(x["engine"], x["text"]) for x in lines] == [("kokoro", "A cat."), ("kokoro", "B.")]


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ([{"id": "u", "path": "audio/u.wav"}], "expected paths under wavs/; found 'audio/u.wav'"),
        ([{"id": "u", "path": "wavs"}], "expected paths under wavs/"),
        ([{"path": "wavs/u.wav"}], "expected JSON lines with 'id' and 'path'; found line 1"),
        (["{not json"], "found line 1"),
        ([""], "expected utterances; found an empty manifest"),
    ],
)
def test_added_utterances_refuses_bad_manifests(
    tmp_path: Path, lines: list[object], match: str
) -> None:
    mod = _load_bench()
    with pytest.raises(ValueError, match=re.escape(match)):
        mod.added_utterances(_manifest(tmp_path / "c", lines))


def test_added_utterances_needs_a_file(tmp_path: Path) -> None:
    mod = _load_bench()
    with pytest.raises(
        ValueError, match=re.escape("expected a corpus manifest.jsonl; found no file")
    ):
        mod.added_utterances(tmp_path / "nope" / "manifest.jsonl")


@pytest.mark.parametrize(("argv", "expected"), [([], 0), (["--collapse-retries", "2"], 2)])
def test_seed_study_does_not_restart_collapsed_seeds_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: int
) -> None:
    # each seed is measured as trained (every LOEO figure before `retrain` was), unlike the
    # demo's default of one restart
    import speechattn.recipes.align.pipeline as pipeline

    mod = _load_bench()
    _loeo_corpus(tmp_path)
    seen: list[dict[str, object]] = []

    def fake_run_demo(run: Path, cfg: object, **kwargs: object) -> dict[str, object]:
        seen.append(kwargs)
        return {"summary": {}}

    monkeypatch.setattr(pipeline, "run_demo", fake_run_demo)
    out = str(tmp_path / "loeo")
    assert mod.main(["--out", out, "--hold-out", "festival", *argv]) == 0
    assert [kw["collapse_retries"] for kw in seen] == [expected]


@pytest.mark.parametrize(
    ("argv", "expected"), [([], "corpus"), (["--symbol-order", "sorted"], "sorted")]
)
def test_symbol_order_flag_reaches_the_demo_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: str
) -> None:
    import speechattn.recipes.align.pipeline as pipeline

    mod = _load_bench()
    _loeo_corpus(tmp_path)
    seen: list[object] = []

    def fake_run_demo(run: Path, cfg: object, **kwargs: object) -> dict[str, object]:
        seen.append(cfg)
        return {"summary": {}}

    monkeypatch.setattr(pipeline, "run_demo", fake_run_demo)
    assert mod.main(["--out", str(tmp_path / "loeo"), "--hold-out", "festival", *argv]) == 0
    assert [c.symbol_order for c in seen] == [expected]  # type: ignore[attr-defined]
    run_json = json.loads((tmp_path / "loeo" / "festival" / "run.json").read_text())
    assert ("symbol_order" in json.dumps(run_json)) == (expected != "corpus")


def test_pocketsphinx_is_off_only_inside_the_training_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seed study trains without the pocketsphinx row; the library's check must be back
    # afterwards (a module-wide assignment once leaked into the rest of the caller's process).
    import speechattn.recipes.align.peers as peers
    import speechattn.recipes.align.pipeline as pipeline

    mod = _load_bench()
    _loeo_corpus(tmp_path)
    before = peers.pocketsphinx_available
    inside: list[bool] = []

    def fake_run_demo(run: Path, cfg: object, **kwargs: object) -> dict[str, object]:
        inside.append(peers.pocketsphinx_available())
        return {"summary": {}}

    monkeypatch.setattr(pipeline, "run_demo", fake_run_demo)
    assert mod.main(["--out", str(tmp_path / "loeo"), "--hold-out", "festival"]) == 0
    assert inside == [False]
    assert peers.pocketsphinx_available is before
