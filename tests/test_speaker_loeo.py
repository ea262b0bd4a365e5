"""Leave-one-engine-out speaker benchmark: the channel option of the feature set, and a --quick run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speechattn.data.augment import ChannelAugment
from speechattn.recipes.speaker import data as D
from speechattn.recipes.speaker.config import SpeakerConfig

ROOT = Path(__file__).resolve().parents[1]


def _wav(path: Path, seed: int) -> None:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    x = 0.3 * np.sin(2 * np.pi * (120 + 40 * seed) * t) + 0.05 * rng.standard_normal(16000)
    sf.write(path, x.astype(np.float32), 16000)


def test_feature_set_channel_is_used(tmp_path: Path) -> None:
    utts = []
    for i in range(2):
        _wav(tmp_path / f"a{i}.wav", i)
        utts.append(D.SpeakerUtterance(f"a{i}", tmp_path / f"a{i}.wav", f"s{i}"))
    cfg = SpeakerConfig.quick()
    cfg.augment_copies = 1
    silent = ChannelAugment(p_eq=0, p_reverb=0, p_telephone=0, p_mu_law=0, p_noise=0)
    same = D.load_feature_set(utts, cfg, train_labels={"s0", "s1"}, channel=silent)
    assert len(same.feats) == 4 and same.labels == ["s0", "s0", "s1", "s1"]
    # a channel that does nothing: the copy equals the original
    torch.testing.assert_close(same.feats[0], same.feats[1])
    rooms = ChannelAugment(p_eq=0, p_reverb=0, p_telephone=0, p_noise=0, p_real_room=1.0)
    wet = D.load_feature_set(utts, cfg, train_labels={"s0", "s1"}, channel=rooms)
    torch.testing.assert_close(wet.feats[0], same.feats[0])
    assert not torch.allclose(wet.feats[1], wet.feats[0], atol=1e-3)
    # the default channel also changes the copy
    default = D.load_feature_set(utts, cfg, train_labels={"s0", "s1"})
    assert not torch.allclose(default.feats[1], default.feats[0], atol=1e-3)


def _load_bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "speaker_loeo", ROOT / "benchmarks" / "speaker_loeo.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["speaker_loeo"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_quick_run_writes_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from speechattn.data.engines import EngineUnavailable, get_engine

    try:
        get_engine("festival").check()
    except EngineUnavailable as exc:
        pytest.skip(f"festival is not installed: {exc}")
    bench = _load_bench()
    out = tmp_path / "out"
    rc = bench.main(
        ["--quick", "--cache", str(tmp_path / "cache"), "--out", str(out), "--no-resemblyzer"]
    )
    assert rc == 0
    result = json.loads((out / "result.json").read_text())
    rows = {r["held_out"]: r for r in result["rows"]}
    assert set(rows) == {"espeak", "festival"}
    for r in rows.values():
        assert r["test_voices"] >= 3 and not r["pseudo"]
        for key in ("ours", "ours_raw", "ours_fused", "shipped", "shipped_raw", "logmel"):
            assert 0.0 <= r[key]["eer"] <= 1.0
            assert r[key]["min_dcf"] >= 0.0
        # trained on the other engine only: no test person among the training classes
        assert r["train_classes"] > 0
    # festival's every trainable voice is drawn (round-robin tops espeak up to match)
    from speechattn.data.voices import list_voices, voice_installed

    n_festival = sum(1 for v in list_voices(engines=["festival"]) if voice_installed(v))
    assert rows["festival"]["test_voices"] == n_festival
    table = (out / "table.md").read_text()
    assert table.startswith("| held-out engine") and "| festival |" in table
    assert table in capsys.readouterr().out
    # the cached pool is reused: a second run does not synthesise again
    manifest = tmp_path / "cache" / "pool" / "manifest.jsonl"
    before = manifest.stat().st_mtime_ns
    bench.build_pool(tmp_path / "cache", ["espeak", "festival"], 4, 3)
    assert manifest.stat().st_mtime_ns == before
    # untrained statistics on the same pool: one row per statistic, an EER per engine
    stats = bench.stats_table(tmp_path / "cache", ["espeak", "festival"], 4, 3).splitlines()
    assert stats[0].startswith("| statistic | espeak | festival |") and len(stats) == 7
    for line in stats[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(0.0 <= float(c) <= 100.0 for c in cells[1:4])


def test_bad_override_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load_bench()
    assert bench.main(["--quick", "--set", "steps=0"]) == 2
    assert "steps" in capsys.readouterr().err


def test_table_has_a_column_and_means_per_extra_pooling() -> None:
    bench = _load_bench()

    def sc(eer: float) -> dict[str, float]:
        return {"eer": eer, "min_dcf": 0.5}

    rows = [
        {
            "held_out": eng,
            "test_voices": 4,
            "test_speakers": 4,
            "test_items": 40,
            "pseudo": pseudo,
            "ours": sc(a),
            "poolings": {"ASTP": sc(a), "TAP": sc(b)},
            "logmel": sc(0.3),
        }
        for eng, pseudo, a, b in (
            ("espeak", False, 0.1, 0.2),
            ("festival", False, 0.3, 0.1),
            ("piper", True, 0.9, 0.9),
        )
    ]
    lines = bench.table(rows).splitlines()
    assert "ours (ASTP), other engines" in lines[0] and lines[0].endswith("| ours (TAP) |")
    assert lines[3].endswith("| 10.0 / 0.500 |")  # festival's TAP cell
    # means over engines with >= 3 voices (the pseudo row is left out); TAP is the last column
    # columns: ours, ours raw, shipped, shipped raw, log-mel, envelope, Resemblyzer (raw,
    # centred), fused, TAP
    assert lines[-2].endswith("| 20.0 | n/a | n/a | n/a | 30.0 | n/a | n/a | n/a | n/a | 15.0 |")
    assert lines[-1].endswith("| 30.0 | n/a | n/a | n/a | 30.0 | n/a | n/a | n/a | n/a | 10.0 |")
