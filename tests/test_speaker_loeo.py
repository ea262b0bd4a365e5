"""Leave-one-engine-out speaker benchmark: the channel option of the feature set, and a --quick run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.bench_module import load_benchmark

from speechattn.data.augment import ChannelAugment
from speechattn.recipes.speaker import data as D
from speechattn.recipes.speaker.config import SpeakerConfig


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
    return load_benchmark("speaker_loeo")


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


def _fake_pool(cache: Path, engines: dict[str, int], utterances: int) -> None:
    """A pool of formant-like tone clips, one 'voice' per (engine, index), as build_pool leaves it."""
    import soundfile as sf

    pool = cache / "pool"
    (pool / "wavs").mkdir(parents=True)
    lines = []
    t = np.arange(24000) / 16000
    k = 0
    for e_i, (engine, n) in enumerate(engines.items()):
        for v in range(n):
            for u in range(utterances):
                rng = np.random.default_rng(1000 * k + u)
                f0 = 100 + 35 * v + 7 * e_i + 3 * rng.standard_normal()
                x = sum(
                    np.sin(2 * np.pi * f0 * h * t) / (h * (1 + 0.3 * v * (h % 3)))
                    for h in range(1, 8)
                )
                x = 0.2 * x * (1 + 0.5 * np.sin(2 * np.pi * (2 + u) * t))
                x = x + 0.01 * rng.standard_normal(t.size)
                name = f"wavs/{engine}{v}_{u}.wav"
                sf.write(pool / name, x.astype(np.float32), 16000)
                spk = f"{engine}-{v}"
                lines.append(
                    json.dumps(
                        {
                            "id": f"{engine}{v}_{u}",
                            "path": name,
                            "speaker": spk,
                            "engine": engine,
                            "voice": f"{engine}:{v}",
                            "person": spk,
                        }
                    )
                )
            k += 1
    (pool / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    settings = _load_bench().pool_settings(list(engines), sum(engines.values()), utterances, 0)
    (pool / "settings.json").write_text(json.dumps(settings))


def test_test_channel_is_seeded_per_clip_and_changes_the_clip(tmp_path: Path) -> None:
    bench = _load_bench()
    for i in range(2):
        _wav(tmp_path / f"a{i}.wav", i)
    src = [
        (tmp_path / "a0.wav", 1.0, 0.0),
        (tmp_path / "a1.wav", 1.0, 0.0),
        (tmp_path / "a0.wav", 1.1, 0.0),
    ]
    channel = bench.test_channel()
    clean = bench._test_waves(src, 16000)
    a = bench._test_waves(src, 16000, channel, seed=0)
    b = bench._test_waves(src, 16000, channel, seed=0)
    c = bench._test_waves(src, 16000, channel, seed=1)
    assert [x.shape for x in a] == [x.shape for x in clean]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # the same seed gives every clip the same channel
    assert any(not np.allclose(x, y, atol=1e-4) for x, y in zip(a, c))
    assert any(not np.allclose(x, y, atol=1e-4) for x, y in zip(a, clean))
    # a clip's channel depends on the clip, not on its position in the list
    d = bench._test_waves(src[::-1], 16000, channel, seed=0)
    np.testing.assert_array_equal(d[-1], a[0])
    # the test channel is fixed: the same probabilities whatever a recipe trains with
    ch = bench.test_channel()
    assert (ch.p_eq, ch.p_real_room, ch.p_noise, ch.p_telephone, ch.p_resample) == (
        0.8,
        0.3,
        0.5,
        0.5,
        0.5,
    )
    assert ch.rates == (8000, 11025)
    assert ch.real_rooms == "all"  # every packaged room, whatever the aligner's default split


def _festival_held_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: int, copies: int):  # type: ignore[no-untyped-def]
    """The benchmark on a tiny fake pool (espeak 4 voices, festival 3, 3 clips each) with festival
    held out and test channels on: ``(bench, cfg, run_loeo keyword arguments)``."""
    bench = _load_bench()
    engines = {"espeak": 4, "festival": 3}
    _fake_pool(tmp_path, engines, 3)
    monkeypatch.setattr(bench, "_trainable_counts", lambda e: {"festival": 3})
    cfg = SpeakerConfig.quick()
    cfg.steps, cfg.augment_copies = steps, copies
    common = dict(
        engines=list(engines),
        espeak_voices=4,
        utterances=3,
        held_out=("festival",),
        resemblyzer=False,
        channel_test=True,
    )
    return bench, cfg, common


def test_channel_rows_score_the_same_trials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench, cfg, common = _festival_held_out(tmp_path, monkeypatch, steps=5, copies=0)
    result = bench.run_loeo(tmp_path, cfg, log=lambda s: None, **common)
    rows = result["rows"]
    assert [(r["held_out"], r["condition"]) for r in rows] == [
        ("festival", "clean"),
        ("festival", "channel"),
    ]
    clean, chan = rows
    # the same encoder and trials: only the test clips' channels differ
    for key in ("test_items", "test_speakers", "train_classes", "train_items", "train_s"):
        assert clean[key] == chan[key]
    for key in ("ours", "ours_raw", "logmel", "envelope"):
        assert 0.0 <= chan[key]["eer"] <= 1.0
    assert any(clean[k] != chan[k] for k in ("ours", "logmel", "envelope"))
    lines = bench.table(rows).splitlines()
    assert lines[2].startswith("| festival |") and lines[3].startswith(
        "| festival + test channel |"
    )
    assert lines[-2].startswith("| mean EER, engines with >= 3 voices, test channels |")
    assert lines[-1].startswith("| same, without espeak, test channels |")
    ours_ch = f"{100 * chan['ours']['eer']:.1f}"
    assert lines[-1].split("|")[3].strip() == ours_ch


def _fake_mixtures(cache: Path, n: int, utterances: int) -> Path:
    """Tone clips of ``n`` derived kokoro voices, as build_mixture_pool leaves them."""
    import soundfile as sf

    pool = cache / "kokoro_mix"
    (pool / "wavs").mkdir(parents=True)
    t = np.arange(24000) / 16000
    lines = []
    for k in range(n):
        vid = f"jf_alpha*0.{3 + k}0+jf_nezumi*0.{7 - k}0"
        for u in range(utterances):
            f0 = 260 + 30 * k + 5 * u
            x = 0.2 * sum(np.sin(2 * np.pi * f0 * h * t) / h**1.5 for h in range(1, 6))
            name = f"wavs/mix{k}_{u}.wav"
            sf.write(pool / name, x.astype(np.float32), 16000)
            rec = {"id": f"mix{k}_{u}", "path": name, "speaker": f"kokoro-mix-{vid}"}
            rec |= {"engine": "kokoro", "voice": f"kokoro:{vid}", "person": rec["speaker"]}
            lines.append(json.dumps(rec))
    (pool / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return pool / "manifest.jsonl"


def test_mixtures_train_only_and_never_when_their_engine_is_held_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _load_bench()
    engines = {"espeak": 4, "festival": 3, "kokoro": 3}
    _fake_pool(tmp_path, engines, 3)
    mix = _fake_mixtures(tmp_path, 2, 3)
    monkeypatch.setattr(bench, "_trainable_counts", lambda e: {"festival": 3, "kokoro": 3})
    cfg = SpeakerConfig.quick()
    cfg.steps, cfg.augment_copies = 3, 0

    def run(mixtures: Path | None) -> dict[str, dict]:
        result = bench.run_loeo(
            tmp_path,
            cfg,
            engines=list(engines),
            espeak_voices=4,
            utterances=3,
            held_out=("festival", "kokoro"),
            resemblyzer=False,
            mixtures=mixtures,
            save_checkpoint=None if mixtures is None else tmp_path / "all.pt",
            log=lambda s: None,
        )
        return {r["held_out"]: r | {"derived": result["derived_voices"]} for r in result["rows"]}

    without, with_mix = run(None), run(mix)
    assert without["kokoro"]["derived"] == [] and len(with_mix["kokoro"]["derived"]) == 2
    # kokoro held out: its mixtures are left out of training with it
    for key in ("train_classes", "train_items", "test_voices", "test_items"):
        assert with_mix["kokoro"][key] == without["kokoro"][key]
    # another engine held out: the mixtures train (2 more classes, 6 more items), never test
    assert with_mix["festival"]["train_classes"] == without["festival"]["train_classes"] + 2
    assert with_mix["festival"]["train_items"] == without["festival"]["train_items"] + 6
    assert with_mix["festival"]["test_items"] == without["festival"]["test_items"]
    # the all-engines encoder records the mixtures it learned from
    saved = torch.load(tmp_path / "all.pt", weights_only=True)["derived_voices"]
    assert saved == with_mix["kokoro"]["derived"] and len(saved) == 2


def test_two_channel_seeds_and_the_feature_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench, cfg, common = _festival_held_out(tmp_path, monkeypatch, steps=5, copies=1)
    logs: list[str] = []

    def run(c: SpeakerConfig) -> dict:  # type: ignore[type-arg]
        return bench.run_loeo(  # type: ignore[no-any-return]
            tmp_path,
            c,
            channel_seed=(0, 1),
            feature_cache=tmp_path / "features",
            log=logs.append,
            **common,
        )

    rows = run(cfg)["rows"]
    assert [(r["condition"], r["channel_seed"]) for r in rows] == [
        ("clean", None),
        ("channel", 0),
        ("channel", 1),
    ]
    # one encoder, the same trials; the two channel draws differ
    assert rows[1]["test_items"] == rows[2]["test_items"] == rows[0]["test_items"]
    assert any(rows[1][k] != rows[2][k] for k in ("ours", "logmel", "envelope"))
    lines = bench.table(rows).splitlines()
    assert lines[3].startswith("| festival + test channel (seed 0) |")
    assert lines[4].startswith("| festival + test channel (seed 1) |")
    titles = [line.split("|")[1].strip() for line in lines[5:]]
    assert titles == [
        "mean EER, engines with >= 3 voices",
        "same, without espeak",
        "mean EER, engines with >= 3 voices, test channels (seed 0)",
        "same, without espeak, test channels (seed 0)",
        "mean EER, engines with >= 3 voices, test channels (seed 1)",
        "same, without espeak, test channels (seed 1)",
    ]
    assert lines[-1].split("|")[3].strip() == f"{100 * rows[2]['ours']['eer']:.1f}"
    # the training features were kept; a run with other model settings reuses them
    cached = sorted((tmp_path / "features").glob("train_features_*.pt"))
    assert len(cached) == 1 and not any("training features from" in s for s in logs)
    again = run(SpeakerConfig(**{**cfg.to_dict(), "freq_mask": 4}))["rows"]
    assert any("training features from" in s for s in logs)
    assert again[0]["train_items"] == rows[0]["train_items"]
    # the same settings give the same table through the cache (training is deterministic)
    same = run(cfg)["rows"]
    assert [r["ours"] for r in same] == [r["ours"] for r in rows]
    # a setting that changes the features gets its own file
    run(SpeakerConfig(**{**cfg.to_dict(), "p_resample": 0.5}))
    assert len(sorted((tmp_path / "features").glob("train_features_*.pt"))) == 2


def test_saved_encoders_score_as_a_seed_ensemble(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from speechattn.recipes.speaker.model import SpeakerEnsemble, load_checkpoint

    bench, cfg, common = _festival_held_out(tmp_path, monkeypatch, steps=5, copies=0)
    common["log"] = lambda s: None
    dirs = [tmp_path / f"enc{s}" for s in (0, 1)]
    for seed, d in zip((0, 1), dirs):
        c = SpeakerConfig(**{**cfg.to_dict(), "seed": seed})
        bench.run_loeo(tmp_path, c, save_encoders=d, **common)
    paths = [bench.encoder_path(d, "festival") for d in dirs]
    assert all(p.is_file() for p in paths) and not any(
        bench.encoder_path(d, "espeak").exists() for d in dirs
    )
    m0, m1 = (load_checkpoint(p)[0] for p in paths)
    assert any(
        not torch.equal(a, b) for a, b in zip(m0.state_dict().values(), m1.state_dict().values())
    )

    # the ensemble is the mean of the members' L2-normalised embeddings; padding changes nothing
    ens = SpeakerEnsemble([m0, m1]).eval()
    x = torch.randn(2, 50, cfg.n_mels)
    lengths = torch.tensor([50, 30])
    with torch.no_grad():
        want = (F.normalize(m0(x, lengths), dim=-1) + F.normalize(m1(x, lengths), dim=-1)) / 2
        torch.testing.assert_close(ens(x, lengths), want)
        torch.testing.assert_close(ens(x[1:, :30], lengths[1:]), want[1:])

    rows = bench.run_loeo(tmp_path, cfg, ensemble=tuple(dirs), **common)["rows"]
    assert [r["condition"] for r in rows] == ["clean", "channel"]
    for r in rows:
        assert set(r["poolings"]) == {"ensemble", "member 0", "member 1"}
        assert r["ours"] == r["poolings"]["ensemble"] and 0.0 <= r["ours"]["eer"] <= 1.0
    # one member twice: the ensemble scores exactly as that member alone
    same = bench.run_loeo(tmp_path, cfg, ensemble=(dirs[0], dirs[0]), **common)["rows"]
    for r, s in zip(rows, same):
        assert s["ours"]["eer"] == pytest.approx(s["poolings"]["member 0"]["eer"], abs=1e-9)
        assert s["poolings"]["member 0"] == r["poolings"]["member 0"]
    # members must match the features the run makes; --ensemble trains and saves nothing
    gain = SpeakerConfig(**{**cfg.to_dict(), "feature_norm": "gain"})
    with pytest.raises(ValueError, match="feature_norm"):
        bench.run_loeo(tmp_path, gain, ensemble=tuple(dirs), **common)
    with pytest.raises(ValueError, match="ensemble"):
        bench.run_loeo(tmp_path, cfg, ensemble=tuple(dirs), save_encoders=tmp_path / "x", **common)
    cache = tmp_path / "cache"
    assert bench.main(["--quick", "--cache", str(cache), "--ensemble", str(tmp_path / "no")]) == 2
    assert not cache.exists()  # refused before anything is synthesised
    # the members as one ensemble checkpoint, which loads as the ensemble scored above
    out = tmp_path / "ens.pt"
    assert bench.main(["--merge-checkpoints", *map(str, paths), "--save-checkpoint", str(out)]) == 0
    loaded, lcfg = load_checkpoint(out)
    assert isinstance(loaded, SpeakerEnsemble) and lcfg.seed == 0
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, lengths), want)
    assert bench.main(["--merge-checkpoints", *map(str, paths)]) == 2  # no --save-checkpoint


def test_copies_drawn_as_cached_shares_with_several_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _load_bench()
    engines = {"espeak": 3, "festival": 3}
    _fake_pool(tmp_path, engines, 2)
    utts = D.load_speaker_corpus(tmp_path / "pool" / "manifest.jsonl")
    labels = {u.label for u in utts}
    cfg = SpeakerConfig.quick()
    cfg.speed_perturb = [1.1]
    cache = tmp_path / "features"

    def share(seed: int, copies: int) -> D.FeatureSet:
        c = SpeakerConfig(**{**cfg.to_dict(), "seed": seed, "augment_copies": copies})
        return bench._train_features(utts, c, labels, cache, log=lambda s: None)

    a, b = share(0, 2), share(1, 2)
    four = SpeakerConfig(**{**cfg.to_dict(), "seed": 5, "augment_copies": 4})
    logs: list[str] = []
    merged = bench._train_features(utts, four, labels, cache, logs.append, copy_seeds=(0, 1))
    assert sum("training features from" in s for s in logs) == 2  # both shares from the cache
    # per item (2 per utterance: original and speed copy): clean once, 2 copies of each share
    assert len(merged.feats) == len(utts) * 2 * 5 == len(a.feats) + len(b.feats) - len(utts) * 2
    for k in range(len(utts) * 2):
        block = merged.feats[5 * k : 5 * k + 5]
        want = [a.feats[3 * k], a.feats[3 * k + 1], a.feats[3 * k + 2]]
        want += [b.feats[3 * k + 1], b.feats[3 * k + 2]]
        for x, y in zip(block, want):
            assert torch.equal(x, y)
        assert len(set(merged.labels[5 * k : 5 * k + 5])) == 1
    assert not torch.equal(a.feats[1], b.feats[1])  # the shares' channels differ
    with pytest.raises(ValueError, match="divisible"):
        bench._train_features(utts, four, labels, cache, copy_seeds=(0, 1, 2))
    with pytest.raises(ValueError, match="same items"):
        bench.merge_copies([a, D.FeatureSet(a.feats, a.labels[::-1], a.ids, [])], 2)


def test_vad_at_scoring_only_and_in_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--set vad=true`` trains and scores with the VAD (saved in the encoders' config);
    ``score_vad="on"`` rescores encoders trained without it; ``"auto"`` follows the config."""
    from speechattn.recipes.speaker.model import load_checkpoint

    bench, cfg, common = _festival_held_out(tmp_path, monkeypatch, steps=5, copies=0)
    common["log"] = lambda s: None
    off, on = tmp_path / "off", tmp_path / "on"
    cache = tmp_path / "features"
    res_off = bench.run_loeo(tmp_path, cfg, save_encoders=off, feature_cache=cache, **common)
    cached = sorted(cache.glob("train_features_*.pt"))
    vad_cfg = SpeakerConfig(**{**cfg.to_dict(), "vad": True})
    res_on = bench.run_loeo(tmp_path, vad_cfg, save_encoders=on, feature_cache=cache, **common)
    assert res_off["score_vad"] is False and res_on["score_vad"] is True
    assert res_on["config"]["vad"] is True
    assert load_checkpoint(bench.encoder_path(on, "festival"))[1].vad is True
    assert load_checkpoint(bench.encoder_path(off, "festival"))[1].vad is False
    # both runs share the cached training features: the VAD is applied after the cache
    assert cached and sorted(cache.glob("train_features_*.pt")) == cached
    scored = bench.run_loeo(tmp_path, cfg, ensemble=(off,), score_vad="on", **common)
    assert scored["score_vad"] is True
    assert bench.run_loeo(tmp_path, vad_cfg, ensemble=(on,), **common)["score_vad"] is True


def test_caches_are_keyed_by_the_audio_and_the_synthesis_code(tmp_path: Path) -> None:
    # Before: the pool was reused on its settings alone and the feature cache keyed on ids and
    # labels, so a pool synthesised again by a fixed engine (same ids) met the old features.
    bench = _load_bench()
    engines = {"espeak": 3, "festival": 3}
    _fake_pool(tmp_path, engines, 2)
    utts = D.load_speaker_corpus(tmp_path / "pool" / "manifest.jsonl")
    labels = {u.label for u in utts}
    cfg = SpeakerConfig(**{**SpeakerConfig.quick().to_dict(), "augment_copies": 1})
    cache = tmp_path / "features"
    logs: list[str] = []
    first = bench._train_features(utts, cfg, labels, cache, logs.append)
    bench._train_features(utts, cfg, labels, cache, logs.append)
    assert sum("training features from" in s for s in logs) == 1  # same audio: reused
    # one file's audio changes (same id, same label): new features, not the cached ones
    import soundfile as sf

    x, sr = sf.read(utts[0].audio_path, dtype="float32")
    sf.write(utts[0].audio_path, 0.5 * x[::-1].copy(), sr)
    logs.clear()
    again = bench._train_features(utts, cfg, labels, cache, logs.append)
    assert not any("training features from" in s for s in logs)
    assert not torch.equal(again.feats[0], first.feats[0])
    assert all(torch.equal(a, b) for a, b in zip(again.feats[2:], first.feats[2:]))
    assert len(sorted(cache.glob("train_features_*.pt"))) == 2
    # the pool's record names the synthesis code; a pool from other code is not reused
    stamp = tmp_path / "pool" / "settings.json"
    recorded = json.loads(stamp.read_text())
    assert recorded["synthesis_code"] == bench.synthesis_code_digest()
    assert len(recorded["synthesis_code"]) == 16
    calls: list[str] = []
    import speechattn.data.synth as synth

    def fake_synth(pool: Path, **kw: object) -> None:
        calls.append(str(pool))

    stale = {**recorded, "synthesis_code": "0" * 16}
    stamp.write_text(json.dumps(stale))
    orig = synth.synth_corpus
    synth.synth_corpus = fake_synth  # type: ignore[assignment]
    try:
        bench.build_pool(tmp_path, ["espeak", "festival"], 3, 2)
    finally:
        synth.synth_corpus = orig
    assert calls == [str(tmp_path / "pool")]
    assert json.loads(stamp.read_text())["synthesis_code"] == recorded["synthesis_code"]


def test_test_utterances_extend_the_training_pool_and_keep_the_test_clips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --utterances 5 --test-utterances 3: the 3-per-voice pool plus 2 new sentences per voice
    # for training; the held-out engine is scored on exactly the 3-per-voice pool's clips.
    import soundfile as sf

    import speechattn.data.synth as synth

    bench, cfg, common = _festival_held_out(tmp_path, monkeypatch, steps=5, copies=0)
    base_lines = (tmp_path / "pool" / "manifest.jsonl").read_text().splitlines()
    base_recs = [json.loads(x) for x in base_lines]
    persons = sorted({r["person"] for r in base_recs})
    calls: list[dict[str, object]] = []

    def fake_synth(out: Path, **kw: object) -> Path:
        # what synth_corpus leaves: utt000000.. over the same voices, by its own ids
        calls.append(kw)
        (Path(out) / "wavs").mkdir(parents=True)
        lines = []
        n = int(kw["utterances"])  # type: ignore[call-overload]
        for i in range(n):
            p = persons[i % len(persons)]
            name = f"wavs/utt{i:06d}.wav"
            _wav(Path(out) / name, 50 + i)
            rec = {"id": f"utt{i:06d}", "path": name, "speaker": p, "person": p}
            rec |= {"engine": p.split("-")[0], "voice": p.replace("-", ":")}
            lines.append(json.dumps(rec))
        (Path(out) / "manifest.jsonl").write_text("\n".join(lines) + "\n")
        return Path(out) / "manifest.jsonl"

    monkeypatch.setattr(synth, "synth_corpus", fake_synth)
    small = bench.run_loeo(tmp_path, cfg, log=lambda s: None, **common)
    assert calls == []  # the 3-per-voice pool is reused as it is
    common5 = {**common, "utterances": 5}
    big = bench.run_loeo(tmp_path, cfg, log=lambda s: None, test_utterances=3, **common5)
    assert len(calls) == 1
    kw = calls[0]
    assert (kw["utterances"], kw["speakers"], kw["seed"]) == (14, 7, 0)
    # the new sentences follow the 3-per-voice pool's 21 in the same sequential generator
    assert kw["texts"] == synth.generate_sentences(35, seed=0)[21:]
    merged = tmp_path / "pool_5from3" / "manifest.jsonl"
    recs = [json.loads(x) for x in merged.read_text().splitlines()]
    assert [r["id"] for r in recs[:21]] == [r["id"] for r in base_recs]
    assert [r["id"] for r in recs[21:]] == [f"utt{21 + i:06d}" for i in range(14)]
    assert [r["base"] for r in recs] == [True] * 21 + [False] * 14
    for r, b in zip(recs, base_recs):  # the same files, by the same names
        assert (merged.parent / r["path"]).resolve() == (tmp_path / "pool" / b["path"]).resolve()
    new_audio, _ = sf.read(merged.parent / recs[21]["path"])
    assert new_audio.shape == (16000,)
    (s_clean, s_chan), (b_clean, b_chan) = small["rows"], big["rows"]
    for s, b in ((s_clean, b_clean), (s_chan, b_chan)):
        assert b["test_items"] == s["test_items"] == 9
        assert b["test_speakers"] == s["test_speakers"]
        for key in ("logmel", "envelope"):  # functions of the test clips only
            assert b[key] == s[key]
        assert b["train_items"] > s["train_items"]
    # reused the second time: no synthesis
    bench.build_pool(tmp_path, list(common["engines"]), 4, 5, seed=0, test_utterances=3)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="Expected test utterances between 1 and 4"):
        bench.build_pool(tmp_path, ["espeak", "festival"], 4, 5, seed=0, test_utterances=7)
