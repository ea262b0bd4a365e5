"""The shipped English aligner: a 3-seed ensemble of one recipe on one corpus, usable as is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.align_toy import tone_corpus

from speechattn.recipes.align.model import AlignerEnsemble, TextMelAligner
from speechattn.recipes.align.pipeline import DEFAULT_ASSET, load_aligner

pytestmark = pytest.mark.skipif(not DEFAULT_ASSET.is_file(), reason="no shipped aligner")


def test_shipped_aligner_is_an_ensemble_of_three_seeds() -> None:
    model, symbols, feats, info = load_aligner()
    assert isinstance(model, AlignerEnsemble) and len(model) == 3 and model.combine == "log"
    members = [m for m in model.members if isinstance(m, TextMelAligner)]
    assert len(members) == 3
    # One recipe: the same architecture, phone inventory and front end for every member (the
    # file holds one symbol table and one front end; each member reads them as it was trained).
    assert all(m.config == members[0].config for m in members)
    assert members[0].config.num_symbols >= len(symbols) > 40
    assert members[0].config.n_mels == feats.n_mels
    assert feats.band_mask and feats.mel_norm == "bin"
    # Three training seeds of one corpus, trained apart: different weights.
    records = info["members"]
    assert [r["train_seed"] for r in records] == [0, 1, 2]
    assert {r["seed"] for r in records} == {info["demo_config"]["seed"]}
    sd = [m.state_dict() for m in members]
    for k in sd[0]:
        if sd[0][k].is_floating_point() and sd[0][k].numel() > 100:
            assert not torch.equal(sd[0][k], sd[1][k]) and not torch.equal(sd[1][k], sd[2][k]), k
    # Trained on commercial-licence voices of four engines; the tables were fitted with the
    # ensemble's own decoding, one group per training engine.
    cfg = info["demo_config"]
    assert cfg["commercial_only"] and sorted(cfg["engines"]) == [
        "espeak",
        "festival",
        "piper",
        "rhvoice",
    ]
    for key in ("engine_offsets", "consensus_offsets"):
        assert sorted(info[key]["groups"]) == sorted(cfg["engines"]), key
    assert info["boundary_offsets"]["pair"], "no contexts table"
    assert DEFAULT_ASSET.stat().st_size < 8 * 2**20


def test_align_runs_with_the_shipped_ensemble(tmp_path: Path) -> None:
    from speechattn.cli import main

    data = tone_corpus(tmp_path / "corpus", {"u1": "the cat sat", "u2": "a dog"}, noise=0.005)
    out = tmp_path / "out"
    args = ["align", str(data), "--out", str(out), "--no-adapt", "--no-progress", "--threads", "1"]
    assert main(args) == 0
    assert sorted(p.name for p in (out / "alignments").glob("*.TextGrid")) == [
        "u1.TextGrid",
        "u2.TextGrid",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["utterances"] == 2 and summary["boundary calibration"] == "off"
    saved, _, _, _ = load_aligner(out / "aligner.pt")
    assert isinstance(saved, AlignerEnsemble) and len(saved) == 3
    for js in (out / "alignments").glob("*.json"):
        words = json.loads(js.read_text())["words"]
        assert words and all(w["end"] > w["start"] for w in words)
