"""Speech engines behind one interface, the voice registry, mixed-engine corpora."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from speechattn.data import engines as engines_mod
from speechattn.data import synth
from speechattn.data.engines import EngineUnavailable, get_engine, synthesize
from speechattn.data.text import (
    ARPABET_TO_IPA,
    MRPA_TO_IPA,
    group_ipa,
    map_phone,
    normalize_text,
    phonemize,
    words_of,
)
from speechattn.data.voices import (
    RESERVED_PERSONS,
    VOICES,
    get_voice,
    list_voices,
    voice_installed,
)

TEXT = "The quick brown fox jumped over the lazy dog, and Anna smiled."

# one voice per engine that speechattn drives
ENGINE_VOICES = {
    "espeak": "espeak:en-gb+f2",
    "festival": "festival:ked_diphone",
    "mbrola": "mbrola:us1",
    "piper": "piper:en_US-joe-medium",
    "rhvoice": "rhvoice:Bdl",
    "pico": "pico:en-GB",
    "kokoro": "kokoro:jm_kumo",
}
# neural engines too slow for the default suite on two cores
_SLOW = {"kokoro"}
ENGINES = [
    pytest.param(e, marks=pytest.mark.slow) if e in _SLOW else e for e in sorted(ENGINE_VOICES)
]


def _need(engine: str) -> None:
    reason = get_engine(engine).missing()
    if reason is not None:
        pytest.skip(f"{engine}: {reason}; install: {get_engine(engine).install}")


def _project_phones() -> set[str]:
    base = set(ARPABET_TO_IPA.values()) | set(MRPA_TO_IPA.values()) | {"ɚ"}
    return base | {m + p for p in base for m in "ˈˌ"}


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_never_lists_a_reserved_voice_as_trainable() -> None:
    reserved = {
        "flite:kal", "flite:kal16", "flite:awb", "flite:awb_time", "flite:rms", "flite:slt",
        "festival:kal_diphone", "festival:cmu_us_slt_arctic_hts", "rhvoice:Alan", "rhvoice:Slt",
    }  # fmt: skip
    by_key = {v.key: v for v in VOICES}
    assert reserved <= set(by_key)
    for key in reserved:
        assert by_key[key].reserved and not by_key[key].trainable
    # every voice of a reserved person is reserved, in any engine
    for v in VOICES:
        assert v.reserved == (v.person in RESERVED_PERSONS), v
    listed = list_voices()
    assert listed and not any(v.reserved for v in listed)
    assert not reserved & {v.key for v in list_voices(installed_only=True)}
    assert reserved <= {v.key for v in list_voices(include_reserved=True)}
    # non-commercial voices are flagged and can be filtered out
    assert not get_voice("festival:us1_mbrola").commercial
    assert not get_voice("rhvoice:Lyubov").commercial
    assert all(v.commercial for v in list_voices(commercial_only=True))
    # persons shared across engines
    assert get_voice("rhvoice:Slt").person == get_voice("festival:cmu_us_slt_arctic_hts").person
    assert len({v.key for v in VOICES}) == len(VOICES)


def test_registry_errors_name_the_choices() -> None:
    with pytest.raises(ValueError, match="engine:voice_id"):
        get_voice("ked_diphone")
    with pytest.raises(ValueError, match="ked_diphone"):
        get_voice("festival:nobody")
    with pytest.raises(ValueError, match="Unknown engine"):
        get_voice("nosuch:voice")
    with pytest.raises(ValueError, match="Unknown speech engine"):
        get_engine("nosuch")
    v = get_voice("espeak:en-us+m3")
    assert v.engine == "espeak" and v.language == "en-us" and not v.reserved
    with pytest.raises(ValueError, match="sample_rate"):
        synthesize("Hello.", "espeak:en-us", sample_rate=0)
    with pytest.raises(ValueError, match="empty"):
        synthesize("  ", "espeak:en-us")
    with pytest.raises(TypeError, match="text"):
        synthesize(b"Hello", "espeak:en-us")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown espeak voice"):
        synthesize("Hello.", "espeak:fr-fr")


def test_absent_engine_reports_install_command(monkeypatch) -> None:
    from speechattn.data.engines import _festival

    monkeypatch.setattr(_festival.shutil, "which", lambda name: None)
    eng = get_engine("festival")
    assert eng.missing() is not None and eng.installed_voices() == []
    with pytest.raises(EngineUnavailable, match="apt-get install festival") as info:
        synthesize("Hello.", "festival:ked_diphone")
    assert "not on PATH" in info.value.reason
    assert not voice_installed(get_voice("festival:ked_diphone"))
    with pytest.raises(EngineUnavailable, match="apt-get install festival"):
        synth.pick_voices(["festival"], 2)


def test_rhvoice_deterministic() -> None:
    _need("rhvoice")
    a = synthesize("A small red boat.", "rhvoice:Clb")
    b = synthesize("A small red boat.", "rhvoice:Clb")
    assert np.array_equal(a.waveform, b.waveform) and a.words == b.words


def test_unwrapped_engine_says_so() -> None:
    with pytest.raises(EngineUnavailable, match="does not drive it yet") as info:
        synthesize("Hello.", "flite:rms")
    assert "apt-get install flite" in info.value.install


def test_aligned_timings_are_marked() -> None:
    _need("pico")
    res = synthesize("A small red boat.", "pico:en-US")
    assert res.timings == "aligned" and [w.label for w in res.words] == [
        "A",
        "small",
        "red",
        "boat",
    ]
    assert synthesize("A small red boat.", "espeak:en-us").timings == "engine"


def test_cli_voices_lists_everything(capsys) -> None:
    import argparse

    from speechattn.data import cli

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["data", "voices", "--json"])
    assert args.func(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["voice"] for r in rows} == {v.key for v in VOICES}
    assert all(not r["trainable"] for r in rows if r["reserved"])
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "synth", "--out", "x", "--engines", "espeak,nosuch"])


# ---------------------------------------------------------------------------------------------
# Phone mapping


def test_map_phone() -> None:
    assert map_phone("ow", "radio", stress=1) == "ˈoʊ"
    assert map_phone("er", "radio") == "ɚ"
    assert map_phone("er", "radio", stress=1) == "ˈɜː"
    assert map_phone("dh", "radio", stress=1) == "ð"  # consonants carry no stress
    assert map_phone("@@", "mrpa", stress=2) == "ˌɜː"
    assert map_phone("ou", "mrpa") == "əʊ"
    with pytest.raises(ValueError, match="phoneset"):
        map_phone("ow", "klattese")
    with pytest.raises(ValueError, match="Unknown radio phone"):
        map_phone("xx", "radio")


def test_group_ipa_matches_espeak_phonemes() -> None:
    # Piper hands over one code point per phoneme; grouping gives espeak's phones back
    for text in (TEXT, "Why did the tired farmer sleep so quietly?"):
        for word in phonemize(text):
            chars = list("".join(word))
            got = [label for label, _ in group_ipa(chars)]
            assert "".join(got) == "".join(word)
            idx = [i for _, ix in group_ipa(chars) for i in ix]
            assert idx == list(range(len(chars)))
    assert [g for g, _ in group_ipa(list("bɹˈaʊn"))] == ["b", "ɹ", "ˈaʊ", "n"]
    assert [g for g, _ in group_ipa(list("dʒˈʌmpt"))] == ["dʒ", "ˈʌ", "m", "p", "t"]


# ---------------------------------------------------------------------------------------------
# Every engine round-trips a sentence


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_round_trip(engine: str) -> None:
    _need(engine)
    text = normalize_text(TEXT)
    res = synthesize(text, ENGINE_VOICES[engine])
    assert res.engine == engine and res.waveform.dtype == np.float32 and res.waveform.ndim == 1
    dur = len(res.waveform) / res.sample_rate
    assert dur > 1.0 and np.abs(res.waveform).max() <= 1.0
    # word timings: every word, in order, inside the audio, non-overlapping
    assert [w.label.lower() for w in res.words] == [w.lower() for w in words_of(text)]
    for a, b in itertools.pairwise(res.words):
        assert a.start < a.end <= b.start < b.end
    assert res.words[0].start >= 0.0 and res.words[-1].end <= dur + 1e-9
    # the audio is louder inside words than in the gaps around them
    sr = res.sample_rate
    inside = np.zeros(len(res.waveform), dtype=bool)
    for w in res.words:
        inside[round(w.start * sr) : round(w.end * sr)] = True
    rms_in = float(np.sqrt(np.mean(res.waveform[inside] ** 2)))
    rms_out = float(np.sqrt(np.mean(res.waveform[~inside] ** 2))) if (~inside).any() else 0.0
    assert rms_in > 3 * rms_out
    # phone timings (where the engine gives them): in order, each inside one word, project IPA
    if res.phones is None:
        assert not get_voice(ENGINE_VOICES[engine]).phones
        return
    for a, b in itertools.pairwise(res.phones):
        assert a.start < a.end <= b.start + 1e-9
    k = 0
    for w in res.words:
        n = 0
        while k < len(res.phones) and res.phones[k].end <= w.end + 1e-9:
            assert res.phones[k].start >= w.start - 1e-9
            k, n = k + 1, n + 1
        assert n >= 1, f"word {w} has no phones"
    assert k == len(res.phones)
    if engine in ("festival", "pico"):
        assert {p.label for p in res.phones} <= _project_phones()
    else:
        lang = "en-gb" if engine == "espeak" else "en-us"  # mbrola us1, piper, kokoro: en-us
        expected = [p for w in phonemize(text, voice=lang) for p in w]
        same = sum(a == b.label for a, b in zip(expected, res.phones))
        assert same >= 0.9 * len(expected)


@pytest.mark.parametrize("engine", ENGINES)
def test_phone_timings_sum_to_the_audio(engine: str) -> None:
    _need(engine)
    if not get_voice(ENGINE_VOICES[engine]).phones:
        pytest.skip(f"{engine} gives no phone timings")
    res = synthesize(normalize_text(TEXT), ENGINE_VOICES[engine])
    assert res.phones is not None
    dur = len(res.waveform) / res.sample_rate
    edges = [0.0] + [t for p in res.phones for t in (p.start, p.end)] + [dur]
    parts = np.diff(edges)
    assert (parts >= -1e-9).all()  # phones and gaps tile [0, duration] in order
    assert abs(float(parts.sum()) - dur) < 1e-9
    phone_time = sum(p.end - p.start for p in res.phones)
    assert phone_time > 0.6 * dur  # speech, not silence, fills the audio
    assert dur - res.phones[-1].end < 0.6 and res.phones[0].start < 0.4


def test_festival_deterministic_across_history() -> None:
    _need("festival")
    a = synthesize("A small red boat.", "festival:ked_diphone")
    synthesize("Something else, said before.", "festival:ked_diphone")
    b = synthesize("A small red boat.", "festival:ked_diphone")
    assert np.array_equal(a.waveform, b.waveform) and a.words == b.words and a.phones == b.phones


def test_resample_keeps_timings() -> None:
    _need("festival")
    a = synthesize("A small red boat.", "festival:ked_diphone")
    b = synthesize("A small red boat.", "festival:ked_diphone", sample_rate=22050)
    assert a.sample_rate == 16000 and b.sample_rate == 22050
    assert abs(len(b.waveform) - len(a.waveform) * 22050 / 16000) <= 2
    assert a.words == b.words and a.phones == b.phones


# ---------------------------------------------------------------------------------------------
# Mixed corpora


def test_pick_voices_excludes_reserved_and_is_deterministic() -> None:
    _need("festival")
    n = len([v for v in list_voices(engines=["festival"]) if voice_installed(v)])
    picked = synth.pick_voices(["festival"], n, seed=3)
    assert len(set(picked)) == n
    assert not any(get_voice(k).reserved for k in picked)
    assert picked == synth.pick_voices(["festival"], n, seed=3)
    with pytest.raises(ValueError, match="voices <="):
        synth.pick_voices(["festival"], n + 1, seed=3)
    everything = synth.pick_voices(["festival"], n + 1, seed=3, include_reserved=True)
    assert any(get_voice(k).reserved for k in everything)
    mixed = synth.pick_voices(["espeak", "festival"], 6, seed=3)
    assert [k.split(":")[0] for k in mixed] == ["espeak", "festival"] * 3
    with pytest.raises(ValueError, match="distinct"):
        synth.pick_voices(["espeak", "espeak"], 2)


def test_mixed_corpus_deterministic(tmp_path, monkeypatch) -> None:
    _need("festival")
    monkeypatch.setattr(synth, "_BLOCK", 3)
    kw = dict(utterances=6, speakers=4, seed=5, engines=["espeak", "festival"], progress=False)
    m1 = synth.synth_corpus(tmp_path / "a", workers=1, **kw)  # type: ignore[arg-type]
    m2 = synth.synth_corpus(tmp_path / "b", workers=2, **kw)  # type: ignore[arg-type]
    assert m1.read_bytes() == m2.read_bytes()
    recs = [json.loads(x) for x in m1.read_text().splitlines()]
    for r in recs:
        assert (m1.parent / r["path"]).read_bytes() == (m2.parent / r["path"]).read_bytes()
        v = get_voice(r["voice"])
        assert r["engine"] == v.engine and r["person"] == v.person == r["speaker"]
        assert not v.reserved
        assert r["words"] and r["words"][-1][1] <= r["duration"] + 1e-6
    assert {r["engine"] for r in recs} == {"espeak", "festival"}
    # the corpus loads like any other
    from speechattn.data.corpus import load_corpus

    utts = load_corpus(m1)
    assert len(utts) == 6 and all(u.phones for u in utts)


def test_mixed_corpus_skips_an_utterance_an_engine_cannot_time(tmp_path, monkeypatch) -> None:
    """One sentence an engine fails on (Pico: a word outside pocketsphinx's dictionary) is left
    out with one warning naming it; before, the whole corpus build crashed."""
    _need("festival")
    from speechattn.data import engines

    real = engines.synthesize

    def flaky(text, voice, **kw):  # type: ignore[no-untyped-def]
        if "citys" in text:
            raise ValueError("pocketsphinx cannot align words missing from its dictionary")
        return real(text, voice, **kw)

    monkeypatch.setattr(engines, "synthesize", flaky)
    texts = ["The cat sat on the mat.", "Two citys stood there.", "A dog ran home."]
    with pytest.warns(UserWarning, match=r"utt000001: skipped \(festival:.*dictionary"):
        m = synth.synth_corpus(
            tmp_path / "c", utterances=3, speakers=1, seed=0, engines=["festival"],
            texts=texts, workers=0, progress=False,
        )  # fmt: skip
    recs = [json.loads(x) for x in m.read_text().splitlines()]
    assert [r["id"] for r in recs] == ["utt000000", "utt000002"]
    monkeypatch.setattr(
        engines, "synthesize", lambda *a, **k: (_ for _ in ()).throw(ValueError("no"))
    )
    with pytest.raises(ValueError, match="all 3 failed"), pytest.warns(UserWarning):
        synth.synth_corpus(
            tmp_path / "d", utterances=3, speakers=1, engines=["festival"], texts=texts,
            workers=0, progress=False,
        )  # fmt: skip


def test_cli_synth_reports_missing_engine(tmp_path, monkeypatch) -> None:
    import argparse

    from speechattn._cli import CliError
    from speechattn.data import cli
    from speechattn.data.engines import _festival

    monkeypatch.setattr(_festival.shutil, "which", lambda name: None)
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["data", "synth", "--out", str(tmp_path), "--engines", "festival", "--no-progress"]
    )
    with pytest.raises(CliError, match="apt-get install festival"):
        args.func(args)


def test_engine_cache_is_per_process() -> None:
    assert get_engine("espeak") is get_engine("espeak")
    assert "espeak" in engines_mod._CACHE
