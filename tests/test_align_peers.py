"""The pocketsphinx peer baseline and the leave-one-engine-out evaluation (quick mode)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from tests.bench_module import load_benchmark

pytest.importorskip("espeakng_loader")


def _needs_pocketsphinx() -> None:
    from speechattn.recipes.align.peers import PEERS_INSTALL, pocketsphinx_available

    if not pocketsphinx_available():
        pytest.skip(f"pocketsphinx is not installed ({PEERS_INSTALL})")


@pytest.fixture(scope="module")
def espeak_utterance():
    from speechattn.data.synth import synthesize

    res = synthesize("The careful farmer counted twelve baskets near the river.", voice="en-us")
    return np.asarray(res.waveform, dtype=np.float32), res.sample_rate, res.words


def test_pocketsphinx_words_ordered_inside_audio_and_near_truth(espeak_utterance) -> None:
    _needs_pocketsphinx()
    from speechattn.recipes.align.peers import pocketsphinx_word_alignment

    wave, sr, truth = espeak_utterance
    words = [w.label for w in truth]
    got = pocketsphinx_word_alignment(wave, sr, words)
    assert [w.label for w in got] == words
    dur = wave.size / sr
    for a, b in itertools.pairwise(got):
        assert a.end <= b.start + 1e-9
    assert all(0.0 <= w.start < w.end <= dur + 1e-9 for w in got)
    # A real alignment: boundaries near espeak's exact ones, far closer than a uniform split.
    gt = np.array([[w.start, w.end] for w in truth])
    err = np.abs(np.array([[w.start, w.end] for w in got]) - gt)
    n = len(words)
    uniform = np.stack([np.arange(n) * dur / n, np.arange(1, n + 1) * dur / n], 1)
    assert float(np.median(err)) < 0.03, err
    assert float(err.mean()) < 0.5 * float(np.abs(uniform - gt).mean()), err


def test_out_of_vocabulary_word_gets_a_pronunciation(espeak_utterance) -> None:
    _needs_pocketsphinx()
    from speechattn.data.synth import synthesize
    from speechattn.recipes.align.peers import cmu_pronunciation, pocketsphinx_alignment

    assert cmu_pronunciation("cat") == "K AE T"
    res = synthesize("The zorblatt slept.", voice="en-us")
    wave = np.asarray(res.waveform, dtype=np.float32)
    al = pocketsphinx_alignment(wave, res.sample_rate, [w.label for w in res.words])
    assert al.added_words == ["zorblatt"]
    assert [w.label for w in al.words] == ["The", "zorblatt", "slept"]


def test_ipa_to_cmu_covers_espeak_reduced_vowels() -> None:
    """espeak-ng en-us writes ``ᵻ`` (extended, periodic) and a bare ``ɔ``: both have a CMU phone,
    so the fallback pronunciation does not fail on them."""
    from speechattn.recipes.align.peers import _ipa_to_cmu

    assert _ipa_to_cmu(["ɛ", "k", "s", "t", "ɛ", "n", "d", "ᵻ", "d"])[-2:] == ["IH", "D"]
    assert _ipa_to_cmu(["ɔ", "ɔː", "ɔɪ"]) == ["AO", "AO", "OY"]
    with pytest.raises(ValueError, match="no CMU phone"):
        _ipa_to_cmu(["ʘ"])


def test_bad_input_raises_clear_errors() -> None:
    from speechattn.recipes.align.peers import pocketsphinx_word_alignment

    with pytest.raises(ValueError, match="mono waveform"):
        pocketsphinx_word_alignment(np.zeros((2, 100), np.float32), 16000, ["a"])
    with pytest.raises(TypeError, match="float waveform"):
        pocketsphinx_word_alignment(np.zeros(100, np.int16), 16000, ["a"])
    with pytest.raises(ValueError, match="sample_rate"):
        pocketsphinx_word_alignment(np.zeros(100, np.float32), 0, ["a"])
    with pytest.raises(TypeError, match="list of non-empty str"):
        pocketsphinx_word_alignment(np.zeros(100, np.float32), 16000, "a word")
    with pytest.raises(ValueError, match="at least one word"):
        pocketsphinx_word_alignment(np.zeros(100, np.float32), 16000, [])


def test_eval_align_engines_quick_writes_its_table(tmp_path: Path) -> None:
    _needs_pocketsphinx()
    mod = load_benchmark("eval_align_engines")
    assert mod.main(["--quick", "--out", str(tmp_path), "--threads", "1"]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    rows = {r["row"]: r for r in data["results"]}
    assert set(rows) == set(mod.ROWS)
    for r in rows.values():
        assert r["engine"] == "espeak" and r["seen"] and r["condition"] == "clean"
        assert r["word_utts"] > 0 and r["word_mean_abs_ms"] > 0
    # Scored against the truth: the shipped aligner beats uniform durations on its own engine.
    assert rows["unsupervised"]["word_mean_abs_ms"] < rows["uniform"]["word_mean_abs_ms"]
    # --quick scores the shipped aligner as the --checkpoint candidate too: the same figures.
    assert rows["candidate"]["word_mean_abs_ms"] == rows["unsupervised"]["word_mean_abs_ms"]
    md = (tmp_path / "results.md").read_text()
    assert "pocketsphinx" in md and "| espeak (seen by the shipped aligner) | clean |" in md
    # The evaluation sentences are not the demo's training text.
    from speechattn.data.synth import generate_sentences

    assert not set(mod.eval_sentences(6)) & set(generate_sentences(600, seed=0))


def test_eval_leaves_out_pico_when_pocketsphinx_is_a_row(tmp_path: Path) -> None:
    _needs_pocketsphinx()
    mod = load_benchmark("eval_align_engines", alias="eval_align_engines2")
    args = ["--engines", "pico", "--utterances", "2", "--rows", "pocketsphinx,uniform"]
    assert mod.main([*args, "--conditions", "clean", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert not data["results"]
    assert any("pico left out" in n for n in data["notes"])


@pytest.fixture(scope="module")
def small_items(tmp_path_factory: pytest.TempPathFactory):
    from speechattn.data.corpus import load_corpus
    from speechattn.data.synth import synth_corpus
    from speechattn.recipes.align.data import build_items
    from speechattn.recipes.align.pipeline import corpus_voice, load_aligner

    out = tmp_path_factory.mktemp("peers_corpus")
    man = synth_corpus(out, utterances=3, speakers=2, seed=5, workers=0, progress=False)
    utts = load_corpus(man)
    _, symbols, feats, _ = load_aligner(None)
    items = build_items(utts, symbols, feats, voice=corpus_voice)
    return utts, items, feats


def test_pocketsphinx_metrics_and_demo_word_table(small_items, monkeypatch, tmp_path) -> None:
    _needs_pocketsphinx()
    from speechattn.recipes.align import peers, pipeline
    from speechattn.recipes.align.evaluate import align_items
    from speechattn.recipes.align.report import write_report

    utts, items, feats = small_items
    paths = {str(u.id): u.audio_path for u in utts}
    m = peers.pocketsphinx_metrics(items, paths)
    # pocketsphinx may find no alignment for a fast utterance: counted, never scored.
    assert m.utterances == 3 and m.failures < 3
    assert m.extra["word_utterances"] == 3 - m.failures
    assert m.word_mean_abs_ms is not None and m.word_within_20ms is not None
    uni = align_items("uniform", items, feats)
    results = {"held-out utterances": {"uniform": uni}, "held-out voices": {"uniform": uni}}
    splits = {"held-out utterances": items, "held-out voices": items}
    table, notes = pipeline._word_table(results, splits, utts, lambda *a: None)
    row = table["held-out voices"][peers.POCKETSPHINX_ROW]
    assert row.word_mean_abs_ms == pytest.approx(m.word_mean_abs_ms)
    assert row.word_mean_abs_ms < table["held-out voices"]["uniform"].word_mean_abs_ms
    assert any("training target" in n for n in notes)
    report = write_report(
        tmp_path,
        table=table,
        examples={},
        histories={},
        config=feats,
        summary={},
        word_table=table,
        word_notes=notes,
    )
    assert "Word boundaries" in report.read_text() and "pocketsphinx" in report.read_text()
    saved = json.loads((tmp_path / "metrics.json").read_text())["word_boundaries"]
    assert peers.POCKETSPHINX_ROW in saved["held-out voices"]
    # Without pocketsphinx the row says how to install it.
    monkeypatch.setattr(peers, "pocketsphinx_available", lambda: False)
    table, _ = pipeline._word_table(results, splits, utts, lambda *a: None)
    names = list(table["held-out voices"])
    assert "pocketsphinx: not installed (pip install speechattn[peers])" in names
