"""Kokoro style mixtures: derived pseudo-speaker voices of the registry and the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.bench_module import load_benchmark

from speechattn.data.engines._kokoro import (
    VOICES,
    KokoroEngine,
    format_mixture,
    mix_styles,
    parse_mixture,
)
from speechattn.data.voices import get_voice, kokoro_mixtures, list_voices


def test_parse_and_format_round_trip() -> None:
    w = parse_mixture("jf_nezumi*0.4+jf_alpha*0.6")
    assert w == {"jf_nezumi": 0.4, "jf_alpha": 0.6}
    vid = format_mixture(w)
    assert vid == "jf_alpha*0.60+jf_nezumi*0.40"  # sorted by voice, two decimals
    assert parse_mixture(vid) == pytest.approx({"jf_alpha": 0.6, "jf_nezumi": 0.4})
    # the last weight is 1 less the rounded others: the id always parses back
    odd = format_mixture({"jf_alpha": 1 / 3, "jf_nezumi": 1 / 3, "jf_tebukuro": 1 / 3})
    assert odd == "jf_alpha*0.33+jf_nezumi*0.33+jf_tebukuro*0.34"
    assert parse_mixture(odd) is not None
    assert parse_mixture("jf_alpha") is None


@pytest.mark.parametrize(
    ("vid", "what"),
    [
        ("jf_alpha*0.5+jf_alpha*0.5", "repeats"),
        ("jf_alpha*0.7+jf_nezumi*0.4", "summing to 1"),
        ("jf_alpha*1.2+jf_nezumi*-0.2", "weights > 0"),
        ("jf_alpha+jf_nezumi", "weights > 0"),
        ("jf_alpha*x+jf_nezumi*0.5", "weights > 0"),
        ("af_bella*0.5+jf_nezumi*0.5", "Unknown Kokoro voice"),
    ],
)
def test_parse_rejects_bad_ids(vid: str, what: str) -> None:
    with pytest.raises(ValueError, match=what):
        parse_mixture(vid)


def test_mix_styles_is_the_convex_combination() -> None:
    rng = np.random.default_rng(0)
    styles = {k: rng.standard_normal((6, 1, 4)).astype(np.float32) for k in ("a", "b", "c")}
    w = {"a": 0.2, "b": 0.5, "c": 0.3}
    got = mix_styles(styles, w)
    want = sum(v * styles[k].astype(np.float64) for k, v in w.items())
    assert got.dtype == np.float32 and got.shape == (6, 1, 4)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # between its parts: every entry inside the hull of the components' entries
    stack = np.stack([styles[k] for k in w])
    assert (got >= stack.min(0) - 1e-6).all() and (got <= stack.max(0) + 1e-6).all()
    # not any one of them
    assert all(not np.allclose(got, s) for s in styles.values())
    with pytest.raises(ValueError, match="summing to 1"):
        mix_styles(styles, {"a": 0.5, "b": 0.6})
    with pytest.raises(ValueError, match="missing"):
        mix_styles(styles, {"a": 0.5, "z": 0.5})
    with pytest.raises(ValueError, match="one shape"):
        mix_styles({"a": styles["a"], "b": np.zeros((5, 1, 4))}, {"a": 0.5, "b": 0.5})


def test_engine_mixes_its_styles_once() -> None:
    eng = KokoroEngine()
    rng = np.random.default_rng(1)
    eng._styles = {k: rng.standard_normal((510, 1, 256)).astype(np.float32) for k in VOICES}
    vid = "jf_alpha*0.25+jf_tebukuro*0.75"
    table = eng._style(vid)
    want = 0.25 * eng._styles["jf_alpha"] + 0.75 * eng._styles["jf_tebukuro"]
    np.testing.assert_allclose(table, want, atol=1e-6)
    assert eng._style(vid) is table  # kept
    assert eng._style("jf_alpha") is eng._styles["jf_alpha"]


def test_registry_knows_mixtures_as_derived_voices() -> None:
    v = get_voice("kokoro:jf_nezumi*0.40+jf_alpha*0.60")
    assert v.engine == "kokoro" and v.voice_id == "jf_nezumi*0.40+jf_alpha*0.60"
    assert v.person == "kokoro-mix-jf_alpha*0.60+jf_nezumi*0.40"  # one person per mixture
    assert v.derived_from == ("kokoro:jf_alpha", "kokoro:jf_nezumi")
    assert v.sex == "f" and v.commercial and not v.reserved and v.trainable
    assert v.licence == get_voice("kokoro:jf_alpha").licence
    assert get_voice("kokoro:jf_alpha").derived_from == ()
    # voices of different sexes are not mixed
    with pytest.raises(ValueError, match="one sex"):
        get_voice("kokoro:jf_alpha*0.5+jm_kumo*0.5")
    with pytest.raises(ValueError, match="summing to 1"):
        get_voice("kokoro:jf_alpha*0.5+jf_nezumi*0.6")
    # never listed: list_voices gives the registry's own voices only
    assert all(not x.derived_from for x in list_voices(include_reserved=True))


def test_kokoro_mixtures_are_seeded_distinct_and_same_sex() -> None:
    mix = kokoro_mixtures(30, seed=0)
    assert len(mix) == 30 and len({v.person for v in mix}) == 30
    assert mix == kokoro_mixtures(30, seed=0)
    assert kokoro_mixtures(10, seed=0) == mix[:10]  # a larger set extends a smaller one
    assert kokoro_mixtures(10, seed=1) != mix[:10]
    own = {v.person for v in list_voices(engines=["kokoro"])}
    sizes = set()
    for v in mix:
        parts = [get_voice(k) for k in v.derived_from]
        assert len({p.sex for p in parts}) == 1 and v.person not in own
        w = parse_mixture(v.voice_id)
        assert w is not None and min(w.values()) >= 0.15
        assert sum(w.values()) == pytest.approx(1.0)
        sizes.add(len(parts))
    assert sizes == {2, 3}
    assert kokoro_mixtures(0) == []
    with pytest.raises(ValueError, match="max_components"):
        kokoro_mixtures(3, max_components=1)
    with pytest.raises(ValueError, match="n an int"):
        kokoro_mixtures(-1)


@pytest.mark.slow
def test_a_mixture_speaks_between_its_voices() -> None:
    from speechattn.data.engines import get_engine, synthesize
    from speechattn.data.voices import voice_installed

    if get_engine("kokoro").missing() is not None:
        pytest.skip("kokoro is not installed")
    v = get_voice("kokoro:jf_alpha*0.50+jf_nezumi*0.50")
    assert voice_installed(v)
    text = "The careful window noticed the garden."
    a = synthesize(text, v)
    assert a.voice == v.voice_id and a.words
    np.testing.assert_array_equal(a.waveform, synthesize(text, v).waveform)  # deterministic
    for part in v.derived_from:
        b = synthesize(text, part)
        n = min(len(a.waveform), len(b.waveform))
        assert len(a.waveform) != len(b.waveform) or not np.allclose(a.waveform[:n], b.waveform[:n])


def test_commercial_filter_keeps_mixtures() -> None:
    from speechattn.recipes.speaker.data import SpeakerUtterance, commercial_filter

    mix = SpeakerUtterance("a", Path("a.wav"), "s", voice="kokoro:jf_alpha*0.50+jf_nezumi*0.50")
    nc = SpeakerUtterance("b", Path("b.wav"), "t", voice="mbrola:us1")
    kept, dropped = commercial_filter([mix, nc])
    assert kept == [mix] and dropped == ["mbrola:us1"]


def test_mixture_pool_is_resumable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from speechattn.data import engines
    from speechattn.data.engines import SpeechResult
    from speechattn.data.synth import Interval

    calls: list[tuple[str, str]] = []

    def fake(text: str, voice, *, sample_rate: int | None = None) -> SpeechResult:  # type: ignore[no-untyped-def]
        calls.append((text, voice.key))
        if len(calls) == 4:
            raise RuntimeError("cannot say it")
        wav = np.full(1600, 0.1 * len(calls), dtype=np.float32)
        words = [Interval(0.0, 0.1, "x")]
        return SpeechResult(wav, 16000, words, None, text, voice.voice_id, "kokoro")

    monkeypatch.setattr(engines, "synthesize", fake)
    bench = load_benchmark("speaker_loeo", alias="speaker_loeo_mix")
    manifest = bench.build_mixture_pool(tmp_path, 2, 3, seed=0)
    recs = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(calls) == 6 and len(recs) == 5  # one utterance could not be said: skipped
    voices = kokoro_mixtures(2, seed=0)
    assert {r["voice"] for r in recs} == {v.key for v in voices}
    for r in recs:
        v = get_voice(r["voice"])
        assert r["person"] == r["speaker"] == v.person and r["engine"] == "kokoro"
        assert r["derived_from"] == list(v.derived_from)
        assert (tmp_path / "kokoro_mix" / r["path"]).is_file()
    # the same settings: reused as is; more mixtures: only the new ones (and the skipped one)
    assert bench.build_mixture_pool(tmp_path, 2, 3, seed=0) == manifest and len(calls) == 6
    bench.build_mixture_pool(tmp_path, 3, 3, seed=0)
    assert len(calls) == 6 + 1 + 3
    assert len(manifest.read_text().splitlines()) == 9
    # fewer utterances per mixture: the first ones of each, nothing synthesised
    assert len(bench.build_mixture_pool(tmp_path, 3, 2, seed=0).read_text().splitlines()) == 6
    assert len(calls) == 10


def test_mixture_pool_uses_the_shared_stamp_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The mixture pool is checked by ``pool_is_current`` as the other pools are: a pool of other
    settings is said to be made again (it was silent), one of the same settings is reused quietly
    and with nothing synthesised."""
    import json

    from speechattn.data import engines
    from speechattn.data.engines import SpeechResult
    from speechattn.data.synth import Interval

    calls: list[str] = []

    def fake(text: str, voice, *, sample_rate: int | None = None) -> SpeechResult:  # type: ignore[no-untyped-def]
        calls.append(voice.key)
        return SpeechResult(
            np.full(800, 0.2, dtype=np.float32),
            16000,
            [Interval(0.0, 0.05, "x")],
            None,
            text,
            voice.voice_id,
            "kokoro",
        )

    monkeypatch.setattr(engines, "synthesize", fake)
    bench = load_benchmark("speaker_loeo", alias="speaker_loeo_mix_stamp")
    seen: list[dict[str, object]] = []
    shared = bench.pool_is_current

    def spy(pool: Path, settings: dict[str, object], **kw: object) -> bool:
        seen.append(dict(settings))
        return bool(shared(pool, settings, **kw))

    monkeypatch.setattr(bench, "pool_is_current", spy)
    manifest = bench.build_mixture_pool(tmp_path, 2, 2, seed=0)
    assert seen == [{"mixtures": 2, "utterances": 2, "seed": 0}] and len(calls) == 4
    capsys.readouterr()
    assert bench.build_mixture_pool(tmp_path, 2, 2, seed=0) == manifest and len(calls) == 4
    assert capsys.readouterr().out == ""
    other = bench.build_mixture_pool(tmp_path, 2, 2, seed=1)  # another draw: said, then made
    out = capsys.readouterr().out
    assert "settings.json differs" in out and str(tmp_path / "kokoro_mix") in out
    # the first draw's utterances (same ids, other voices) were made again, not dropped: the
    # manifest used to come out empty here
    assert len(calls) == 8
    recs = [json.loads(line) for line in other.read_text().splitlines()]
    assert len(recs) == 4
    assert {r["voice"] for r in recs} == {v.key for v in kokoro_mixtures(2, seed=1)}
