"""benchmarks/collapse_check_cost.py: what the collapse check would cost when adapting an ensemble.

The script's figures are timings (RESULTS "retrain"); the test checks what it decodes and reports,
not how fast: each member of the shipped ensemble decoded on its own, with the same sign as the
library's, and one ensemble decoding of the same utterances.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tests.bench_module import load_benchmark


def test_adapt_cost_reports_each_members_own_sign(tmp_path: Path) -> None:
    pytest.importorskip("espeakng_loader")
    from speechattn.data.corpus import load_corpus
    from speechattn.data.synth import synth_corpus
    from speechattn.recipes.align.data import build_items
    from speechattn.recipes.align.evaluate import align_items
    from speechattn.recipes.align.health import longest_phone_median_ms
    from speechattn.recipes.align.pauses import DEFAULT_MIN_PAUSE_S, min_pause_frames
    from speechattn.recipes.align.pipeline import (
        DEFAULT_ASSET,
        _members,
        corpus_voice,
        load_aligner,
    )

    mod = load_benchmark("collapse_check_cost")
    man = synth_corpus(tmp_path / "c", utterances=3, speakers=2, seed=5, workers=0, progress=False)
    lines: list[str] = []
    res = mod.time_adapt_check(DEFAULT_ASSET, man, utterances=2, log=lines.append)
    model, symbols, feats, _ = load_aligner(DEFAULT_ASSET)
    members = _members(model)
    assert res["utterances"] == 2  # --utterances keeps the first N
    assert len(res["member_decodings"]) == len(members) == len(lines) == 3
    items = build_items(load_corpus(man)[:2], dict(symbols), feats, voice=corpus_voice)
    mpf = min_pause_frames(DEFAULT_MIN_PAUSE_S, feats.frame_s)
    for member, rec in zip(members, res["member_decodings"]):
        dec = align_items(member, items, feats, pauses="auto", min_pause_frames=mpf)
        assert rec["longest_phone_ms"] == pytest.approx(longest_phone_median_ms(dec))
    for rec in [res["ensemble_decoding"], res["members_total"], *res["member_decodings"]]:
        assert all(math.isfinite(rec[k]) and rec[k] >= 0 for k in ("wall_s", "cpu_s"))
    assert res["members_total"]["cpu_s"] == pytest.approx(
        sum(m["cpu_s"] for m in res["member_decodings"])
    )
    # the command line writes the same report as JSON
    out = tmp_path / "cost.json"
    argv = ["adapt", "--aligner", str(DEFAULT_ASSET), "--corpus", str(man), "--utterances", "1"]
    import torch

    threads = torch.get_num_threads()
    try:
        assert mod.main([*argv, "--json", str(out)]) == 0  # sets torch's threads (--threads 1)
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text())["utterances"] == 1
