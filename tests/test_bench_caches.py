"""The caches of ``benchmarks/speaker_sweep.py`` and ``benchmarks/align_adapt_study.py`` are keyed
by content, as ``benchmarks/speaker_loeo.py``'s are: a pool or test set made with other settings
or by other code is made again, and features of audio that has changed are never reused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from tests.bench_module import load_benchmark

import speechattn.data.synth as synth
import speechattn.data.voices as voices
from speechattn.recipes.speaker import data as D
from speechattn.recipes.speaker.config import SpeakerConfig


def _tone(path: Path, seed: int, sample_rate: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(sample_rate) / sample_rate
    x = 0.3 * np.sin(2 * np.pi * (110 + 30 * seed) * t) + 0.02 * rng.standard_normal(t.size)
    sf.write(path, x.astype(np.float32), sample_rate)


class FakeSynth:
    """Stands in for ``synth_corpus``: counts its calls and writes tone clips + a manifest."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, out_dir: Path, **kw: Any) -> Path:
        self.calls.append(kw)
        out = Path(out_dir)
        (out / "wavs").mkdir(parents=True, exist_ok=True)
        sr = int(kw.get("sample_rate") or 16000)
        speakers = int(kw["speakers"])
        lines = []
        for i in range(int(kw["utterances"])):
            uid = f"u{i:03d}"
            # a new call writes other audio under the same ids (a re-synthesised pool)
            _tone(out / "wavs" / f"{uid}.wav", i + 100 * (len(self.calls) - 1), sr)
            rec = {
                "id": uid,
                "path": f"wavs/{uid}.wav",
                "text": "a tone",
                "speaker": f"s{i % speakers}",
            }
            lines.append(json.dumps(rec))
        (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
        return out / "manifest.jsonl"


def test_speaker_sweep_pool_and_features_are_keyed_by_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = load_benchmark("speaker_sweep")
    fake = FakeSynth()
    monkeypatch.setattr(synth, "synth_corpus", fake)
    pool = tmp_path / "pool"
    manifest = sweep.build_pool(pool, 3, 2, 16000)
    assert sweep.build_pool(pool, 3, 2, 16000) == manifest
    assert len(fake.calls) == 1  # same settings, same code: reused
    recorded = json.loads((pool / "settings.json").read_text())
    assert recorded["synthesis_code"] == sweep.pool_settings([], 0, 0, 0)["synthesis_code"]
    assert recorded["sample_rate"] == 16000
    # Before: any folder holding a manifest was reused, whatever made it.
    (pool / "settings.json").write_text(json.dumps({**recorded, "synthesis_code": "0" * 16}))
    sweep.build_pool(pool, 3, 2, 16000)
    assert len(fake.calls) == 2
    assert "synthesising it again" in capsys.readouterr().out
    sweep.build_pool(pool, 3, 2, 8000)  # another sample rate: another pool
    assert len(fake.calls) == 3
    sweep.build_pool(pool, 3, 2, 16000)
    assert len(fake.calls) == 4

    utts = D.load_speaker_corpus(manifest)
    cfg = SpeakerConfig(**{**SpeakerConfig.quick().to_dict(), "augment_copies": 0})
    cache = pool / "features"
    capsys.readouterr()
    first = sweep.load_features(utts, cfg, {"s0", "s1"}, cache)
    again = sweep.load_features(utts, cfg, {"s1"}, cache)  # another split: the same features
    assert capsys.readouterr().out.count("training features from") == 1
    assert all(torch.equal(a, b) for a, b in zip(first.feats, again.feats))
    assert first.labels == [u.label for u in utts]
    # Before: keyed by n_mels only, so another front end (feature_norm) met the old features.
    gain = SpeakerConfig(**{**cfg.to_dict(), "feature_norm": "gain"})
    other = sweep.load_features(utts, gain, {"s0"}, cache)
    assert "training features from" not in capsys.readouterr().out
    assert not torch.equal(other.feats[0], first.feats[0])
    # one file's audio changes (same id, same label): new features, the others as before
    x, sr = sf.read(utts[0].audio_path, dtype="float32")
    sf.write(utts[0].audio_path, 0.5 * x[::-1].copy(), sr)
    changed = sweep.load_features(utts, cfg, {"s0"}, cache)
    assert "training features from" not in capsys.readouterr().out
    assert not torch.equal(changed.feats[0], first.feats[0])
    assert all(torch.equal(a, b) for a, b in zip(changed.feats[1:], first.feats[1:]))
    # formant pseudo-speakers without channel copies are made for the training voices (the
    # sweep used to take the uncached path only for copies, speed or pitch, dropping them)
    formant = SpeakerConfig(**{**cfg.to_dict(), "formant_shift": [0.9]})
    fs = sweep.load_features(utts, formant, {"s0"}, cache)
    assert sum(lab == "s0@formant0.9" for lab in fs.labels) == sum(u.label == "s0" for u in utts)
    assert len(fs.feats) == len(utts) + sum(u.label == "s0" for u in utts)


def test_align_adapt_study_sets_are_keyed_by_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = load_benchmark("align_adapt_study")
    fake = FakeSynth()
    monkeypatch.setattr(synth, "synth_corpus", fake)
    # four "installed" voices whatever is installed here (the set's voice count is min(asked, 4))
    monkeypatch.setattr(voices, "list_voices", lambda **kw: ["v0", "v1", "v2", "v3"])
    cache = tmp_path / "sets"
    clean = study.synth_set(cache, "espeak", "clean", 3, 2)
    assert study.synth_set(cache, "espeak", "clean", 3, 2) == clean
    assert len(fake.calls) == 1
    stamp = json.loads((clean.parent / "settings.json").read_text())
    assert stamp["voices"] == 2 and stamp["utterances"] == 3 and len(stamp["synthesis_code"]) == 16
    # Before: a folder named espeak_3/clean was reused whatever its voices or code.
    study.synth_set(cache, "espeak", "clean", 3, 1)
    assert len(fake.calls) == 2
    study.synth_set(cache, "espeak", "clean", 3, 2)
    assert len(fake.calls) == 3
    tel = study.synth_set(cache, "espeak", "telephone", 3, 2)
    assert len(fake.calls) == 3  # the clean set as it was
    made = {p.name: p.read_bytes() for p in (tel.parent / "wavs").glob("*.wav")}
    assert len(made) == 3 and sf.info(tel.parent / "wavs" / "u000.wav").samplerate == 8000
    mtime = (tel.parent / "wavs" / "u000.wav").stat().st_mtime_ns
    capsys.readouterr()
    assert study.synth_set(cache, "espeak", "telephone", 3, 2) == tel
    assert (tel.parent / "wavs" / "u000.wav").stat().st_mtime_ns == mtime  # reused
    # the clean set is synthesised again (other synthesis code): the degraded set follows it
    stale = json.loads((clean.parent / "settings.json").read_text())
    (clean.parent / "settings.json").write_text(json.dumps({**stale, "synthesis_code": "x"}))
    study.synth_set(cache, "espeak", "telephone", 3, 2)
    assert len(fake.calls) == 4
    remade = {p.name: p.read_bytes() for p in (tel.parent / "wavs").glob("*.wav")}
    assert remade.keys() == made.keys() and all(remade[k] != made[k] for k in made)
    assert "making it again" in capsys.readouterr().out
    # other degradation code: made again from the same clean audio (the same bytes as before)
    tstamp = json.loads((tel.parent / "settings.json").read_text())
    assert tstamp["degrade_code"] == study.degrade_code_digest()
    (tel.parent / "settings.json").write_text(json.dumps({**tstamp, "degrade_code": "y"}))
    (tel.parent / "wavs" / "u000.wav").write_bytes(b"stale")
    study.synth_set(cache, "espeak", "telephone", 3, 2)
    assert (tel.parent / "wavs" / "u000.wav").read_bytes() == remade["u000.wav"]
    assert len(fake.calls) == 4
