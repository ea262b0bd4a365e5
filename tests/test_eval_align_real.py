"""benchmarks/eval_align_real.py: the draw, the silver-truth manifest and a tiny end-to-end run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from tests.bench_module import load_benchmark

from speechattn.data.corpus import asterisk_available, load_corpus
from speechattn.data.synth import Interval
from speechattn.data.text import normalize_text, words_of
from speechattn.recipes.align.peers import PeerAlignment, pocketsphinx_available


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("eval_align_real")


def _utt(i: int, path: Path | None = None, text: str = "hello there") -> SimpleNamespace:
    return SimpleNamespace(id=f"u{i:03d}", audio_path=path, text=text, speaker="asterisk")


def test_choose_utterances_is_a_seeded_subset_in_id_order(bench):
    pool = [_utt(i) for i in range(50)]
    a = bench.choose_utterances(pool[::-1], 10, seed=3)
    b = bench.choose_utterances(pool, 10, seed=3)
    c = bench.choose_utterances(pool, 10, seed=4)
    assert [u.id for u in a] == [u.id for u in b]  # the input order does not matter
    assert [u.id for u in a] == sorted(u.id for u in a)
    assert len({u.id for u in a}) == 10 and {u.id for u in a} <= {u.id for u in pool}
    assert [u.id for u in a] != [u.id for u in c]
    assert len(bench.choose_utterances(pool[:4], 10)) == 4  # fewer than asked: all of them
    with pytest.raises(ValueError, match="positive"):
        bench.choose_utterances(pool, 0)


def test_silver_manifest_keeps_aligned_prompts_and_counts_failures(bench, tmp_path, monkeypatch):
    import speechattn.recipes.align.peers as peers

    utts = []
    for i in range(3):
        wav = tmp_path / f"p{i}.wav"
        sf.write(wav, 0.1 * np.sin(np.arange(8000) / 5.0).astype(np.float32), 8000)
        utts.append(_utt(i, wav, "one two three"))

    def fake(wave, sr, words):
        assert sr == 8000 and wave.ndim == 1  # the original rate, mono
        if len(fake.calls) == 1:
            fake.calls.append(words)
            raise ValueError("no alignment")
        fake.calls.append(words)
        ivs = [Interval(0.1 * k, 0.1 * k + 0.08, w) for k, w in enumerate(words)]
        return PeerAlignment(ivs, [], ["two"])

    fake.calls = []
    monkeypatch.setattr(peers, "pocketsphinx_alignment", fake)
    n, failed, added = bench.silver_manifest(utts, tmp_path / "m" / "silver.jsonl")
    assert n == 2 and failed == ["u001"] and added == ["two"]
    recs = [json.loads(x) for x in (tmp_path / "m" / "silver.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == ["u000", "u002"]
    for r in recs:
        assert Path(r["path"]).is_absolute()
        assert [w[2] for w in r["words"]] == ["one", "two", "three"]
    got = load_corpus(tmp_path / "m" / "silver.jsonl")  # the align pipeline reads it back
    assert [len(u.words) for u in got] == [3, 3]


def test_spoken_text_drops_notes_in_parentheses(bench):
    assert bench.spoken_text("(3 seconds of silence)") == ""
    assert bench.spoken_text('IAX (note: does not say "2")') == "IAX"
    assert bench.spoken_text("Press pound. (tone plays) Goodbye.") == "Press pound. Goodbye."
    pool = [_utt(0, text="(1 second of silence)"), _utt(1, text="goodbye")]
    assert [u.id for u in bench.choose_utterances(pool, 5)] == ["u001"]


def test_markdown_lists_rows_in_order(bench):
    def row(v):
        return dict(
            word_mean_abs_ms=v,
            word_within_20ms=50.0,
            word_mean_signed_ms=-v / 2,
            word_utts=3,
            seconds=1.0,
        )

    md = bench.markdown({"uniform": row(300.0), "adapted": row(20.0)})
    lines = md.splitlines()
    assert len(lines) == 4
    assert bench.ROW_NAMES["adapted"] in lines[2] and "| 20.0 |" in lines[2]
    assert bench.ROW_NAMES["uniform"] in lines[3] and "-150.0" in lines[3]


@pytest.mark.skipif(
    not (asterisk_available() and pocketsphinx_available()),
    reason="needs the Debian asterisk prompts and pocketsphinx",
)
def test_tiny_end_to_end_run(bench, tmp_path):
    # a stand-in corpus: two asterisk prompts copied into a folder of audio + .txt
    stand_in = tmp_path / "corpus"
    stand_in.mkdir()
    prompts = [u for u in load_corpus("asterisk") if "/" not in u.id and "(" not in u.text]
    for u in sorted(prompts, key=lambda u: (len(u.text), u.id))[10:12]:
        shutil.copy(u.audio_path, stand_in / f"{u.id}.wav")
        (stand_in / f"{u.id}.txt").write_text(u.text)
    out = tmp_path / "out"
    argv = ["--corpus", str(stand_in), "--utterances", "2", "--adapt-steps", "1", "--out", str(out)]
    assert bench.main([*argv, "--rows", "adapted,adapted_forward,uniform"]) == 0
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    assert set(rows) == {"adapted", "adapted_forward", "uniform"}
    assert res["meta"]["sample_rates"] == [8000]
    n = 2 - len(res["meta"]["silver_failed"])
    for r in rows.values():
        assert r["word_utts"] == n
        assert 0 <= r["word_mean_abs_ms"] < 5000 and 0 <= r["word_within_20ms"] <= 100
    # one adaptation serves both adapted rows; only the decoding differs
    assert rows["adapted"]["adaptation"] == rows["adapted_forward"]["adaptation"]
    from speechattn.recipes.align.pipeline import _members, load_aligner

    members = len(_members(load_aligner()[0]))  # an ensemble adapts each member in turn
    assert rows["adapted"]["adaptation"].startswith("+".join(["1"] * members) + " steps")
    assert rows["adapted"]["decoding"] != rows["adapted_forward"]["decoding"]
    for line in (out / "work" / "silver.jsonl").read_text().splitlines():
        rec = json.loads(line)
        words = rec["words"]
        assert [w[2] for w in words] == words_of(normalize_text(rec["text"]))
        starts = [w[0] for w in words]
        assert starts == sorted(starts) and all(w[0] <= w[1] for w in words)
        assert words[-1][1] <= sf.info(rec["path"]).duration + 1e-6
    assert (out / "results.md").read_text().count("\n|") == 4
