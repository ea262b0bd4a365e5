"""Word edges next to silence placed on the audio's energy envelope (recipes/align/edges.py)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from tests.align_toy import FEATURES, N_MELS, NUM_SYMBOLS, TONE_END_S, TONE_START_S, tone_corpus

from speechattn.functional.alignment import monotonic_alignment_search
from speechattn.recipes.align.cli import db_or_off
from speechattn.recipes.align.data import AlignItem
from speechattn.recipes.align.edges import (
    DEFAULT_SILENCE_EDGE_DB,
    EnergyEnvelope,
    energy_envelope,
    place_silence_edges,
    silence_edge_tokens,
)
from speechattn.recipes.align.evaluate import align_items, token_edges

SR = 16000
FRAME_S = 0.01  # the aligner's frame hop in these hand-made cases
TOL = 0.003  # the 5 ms window puts a crossing 20 dB down about 2.5 ms outside the sound


def _wave(spans, total_s, *, seed=0, amp=0.2, noise=1e-4):
    """Low noise with a 300 Hz tone (plus harmonics) inside each (start, end) span (seconds)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(total_s * SR)) / SR
    x = noise * rng.standard_normal(t.size)
    for a, b in spans:
        on = (t >= a) & (t < b)
        x[on] += amp * (np.sin(2 * np.pi * 300 * t[on]) + 0.5 * np.sin(2 * np.pi * 900 * t[on]))
    return x.astype(np.float32)


def _item(n_phones_per_word, *, pauses_between: bool, frames: int, name="x") -> AlignItem:
    """``<sil> phones... <sil>`` (a pause token between words when ``pauses_between``)."""
    tokens, pidx, words, phones = [2], [], [], []
    for w, n in enumerate(n_phones_per_word):
        if w and pauses_between:
            tokens.append(2)
        start = len(phones)
        for _ in range(n):
            pidx.append(len(tokens))
            tokens.append(5 + len(phones))
            phones.append(str(len(phones)))
        words.append((f"w{w}", start, len(phones)))
    tokens.append(2)
    return AlignItem(
        id=name,
        speaker="s",
        text=" ".join(w for w, _, _ in words),
        tokens=torch.tensor(tokens),
        mel=torch.zeros(frames, 4),
        phones=phones,
        phone_token_index=pidx,
        words=words,
        num_samples=round(frames * FRAME_S * SR),
    )


class _Cfg:
    sample_rate = SR
    frame_s = FRAME_S


def _edges(item, durations):
    return token_edges(item, np.asarray(durations), _Cfg())  # type: ignore[arg-type]


def _word_edges(item, edges):
    pidx = item.phone_token_index
    return [(float(edges[pidx[a]]), float(edges[pidx[b - 1] + 1])) for _, a, b in item.words]


def test_energy_envelope_levels_and_grid() -> None:
    x = _wave([(0.0, 1.0)], 1.0, noise=0.0, amp=0.1)
    env = energy_envelope(x, SR)
    assert isinstance(env, EnergyEnvelope)
    h = round(SR * 0.001)
    assert env.hop_s == pytest.approx(h / SR) and env.level_db.shape == (len(range(0, x.size, h)),)
    power = 0.1**2 * (0.5 + 0.125)  # two sines of amplitude 0.1 and 0.05
    mid = env.level_db[100:-100]
    assert np.allclose(mid, 10 * np.log10(power), atol=0.3)
    assert env.level_db[0] < mid.min() - 2.5  # half of the first window is zero padding
    assert np.allclose(energy_envelope(torch.from_numpy(x), SR).level_db, env.level_db)
    silent = energy_envelope(np.zeros(800, np.float32), SR)
    assert np.allclose(silent.level_db, -100.0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 100)), "mono"),
        (np.zeros(0), "mono"),
        (np.array([0.0, np.nan, 0.0]), "finite"),
    ],
)
def test_energy_envelope_rejects_bad_waves(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        energy_envelope(bad, SR)


def test_energy_envelope_rejects_bad_rates() -> None:
    for sr in (0, -16000, 16000.0):
        with pytest.raises(ValueError, match="sample_rate"):
            energy_envelope(np.zeros(100), sr)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window_s"):
        energy_envelope(np.zeros(100), SR, window_s=0.0)


@pytest.mark.parametrize("start_late, end_shift", [(0, 0), (2, -3), (3, 3), (1, -4)])
def test_edges_next_to_silence_go_to_the_sound(start_late: int, end_shift: int) -> None:
    """One word from 0.30 to 0.80 s in 1.1 s: the decoded start (late by ``start_late`` frames)
    and end (off by ``end_shift`` frames) move to the tone's edges."""
    item = _item([3], pauses_between=False, frames=110)
    first, last = 31 + start_late, 80 + end_shift  # edges at (k - 1/2) frames
    d = [first, 10, 10, last - first - 20, 110 - last]
    edges = _edges(item, d)
    env = energy_envelope(_wave([(0.3, 0.8)], 1.1), SR)
    new = place_silence_edges(item, d, edges, env, FRAME_S)
    (s, e) = _word_edges(item, new)[0]
    assert abs(s - 0.3) < TOL and abs(e - 0.8) < TOL
    # The inner phone edges and the utterance's ends do not move.
    assert np.array_equal(new[[0, 2, 3, 5]], edges[[0, 2, 3, 5]])


def test_starts_move_only_back_into_the_silence() -> None:
    """A decoded start before the sound (the path took some silence) stays: starts are searched
    only on the silence side of the decoded edge."""
    item = _item([3], pauses_between=False, frames=110)
    d = [28, 12, 10, 30, 30]  # word start at 0.275 s, the tone at 0.30 s
    edges = _edges(item, d)
    new = place_silence_edges(
        item, d, edges, energy_envelope(_wave([(0.3, 0.8)], 1.1), SR), FRAME_S
    )
    assert new[1] == edges[1]


def test_pauses_between_words_and_words_that_meet() -> None:
    """Words around a kept pause get their edges placed; a pause passed with 0 frames, and two
    words that meet, keep theirs."""
    item = _item([2, 2, 2], pauses_between=True, frames=140)
    # tokens: sil a a sp b b sp c c sil; words: 0.20-0.50, pause 0.50-0.70, 0.70-1.00, 1.00-1.20
    wave = _wave([(0.2, 0.5), (0.7, 1.2)], 1.4)
    d = [22, 14, 12, 22, 16, 14, 0, 10, 10, 20]  # w0 0.215-0.475, w1 0.695-0.995, w2 to 1.195
    assert silence_edge_tokens(item, d) == [(1, "start"), (3, "end"), (4, "start"), (9, "end")]
    edges = _edges(item, d)
    new = place_silence_edges(item, d, edges, energy_envelope(wave, SR), FRAME_S)
    w = _word_edges(item, new)
    assert abs(w[0][0] - 0.2) < TOL and abs(w[0][1] - 0.5) < TOL
    assert w[1][0] == pytest.approx(edges[4])  # already in the sound: a start never moves later
    assert w[1][1] == w[2][0] == edges[6] == edges[7]  # the words meet: untouched
    assert abs(w[2][1] - 1.2) < TOL


def test_gain_and_leading_silence() -> None:
    item = _item([3], pauses_between=False, frames=110)
    d = [32, 10, 10, 25, 33]
    wave = _wave([(0.3, 0.8)], 1.1)
    base = place_silence_edges(item, d, _edges(item, d), energy_envelope(wave, SR), FRAME_S)
    louder = place_silence_edges(
        item, d, _edges(item, d), energy_envelope(wave * 30.0, SR), FRAME_S
    )
    assert np.allclose(base, louder, atol=1e-9)
    # 10 frames of silence in front: the decoded path and the placed edges move by 0.1 s.
    pad = np.concatenate([1e-4 * np.random.default_rng(1).standard_normal(1600), wave])
    item2 = _item([3], pauses_between=False, frames=120)
    d2 = [42, 10, 10, 25, 33]
    moved = place_silence_edges(
        item2, d2, _edges(item2, d2), energy_envelope(pad.astype(np.float32), SR), FRAME_S
    )
    assert np.allclose(moved[1:-1], base[1:-1] + 0.1, atol=1.5e-3)


def test_audio_without_silence_keeps_the_decoded_edges() -> None:
    item = _item([3], pauses_between=False, frames=110)
    d = [32, 10, 10, 25, 33]
    edges = _edges(item, d)
    noisy = _wave([(0.3, 0.8)], 1.1, noise=0.05)  # about 10 dB under the tone: no silence
    assert np.array_equal(
        place_silence_edges(item, d, edges, energy_envelope(noisy, SR), FRAME_S), edges
    )
    far = _wave([(0.3, 0.8)], 1.1)
    d_far = [10, 10, 10, 25, 55]  # the decoded word 0.095-0.545: no crossing near its start
    e_far = _edges(item, d_far)
    out = place_silence_edges(item, d_far, e_far, energy_envelope(far, SR), FRAME_S)
    assert out[1] == e_far[1]


def test_bad_values() -> None:
    item = _item([3], pauses_between=False, frames=110)
    d = [32, 10, 10, 25, 33]
    env = energy_envelope(_wave([(0.3, 0.8)], 1.1), SR)
    for bad in (0.0, -3.0, float("nan"), float("inf"), None):
        with pytest.raises(ValueError, match=r"level_db|silence_edge_db"):
            place_silence_edges(item, d, _edges(item, d), env, FRAME_S, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="silence_edge_db"):
        place_silence_edges(item, d, _edges(item, d), env, FRAME_S, "20")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="edges of shape"):
        place_silence_edges(item, d, np.zeros(3), env, FRAME_S)
    with pytest.raises(ValueError, match="durations of shape"):
        silence_edge_tokens(item, [1, 2])
    with pytest.raises(ValueError, match="frame_s"):
        place_silence_edges(item, d, _edges(item, d), env, 0.0)


# --- through align_items ------------------------------------------------------------------

_T = torch.randn(NUM_SYMBOLS, N_MELS, generator=torch.Generator().manual_seed(3)) * 2
TEMPLATES = _T - _T.mean(-1, keepdim=True)


class Oracle:
    """MAS on distances to fixed templates: decodes the toy items' frames exactly."""

    def eval(self) -> Oracle:
        return self

    def align(self, tokens, tl, mels, ml, skippable_mask=None, log_skip=0.0):
        d2 = ((TEMPLATES[tokens].unsqueeze(2) - mels.unsqueeze(1)) ** 2).sum(-1)
        e = torch.log_softmax(-d2, dim=1)
        path = monotonic_alignment_search(
            e, tl, ml, skippable_mask=skippable_mask, log_skip=log_skip
        )
        return path, path.path


def _toy(lead: int, n_frames: int, tail: int, seed: int) -> tuple[AlignItem, np.ndarray]:
    """A one-word toy item (FEATURES: 1 kHz, 10 ms frames) whose audio's sound starts half a
    frame before the first speech frame's start and ends a frame after the last one's end."""
    g = torch.Generator().manual_seed(seed)
    ph = [5, 6, 7]
    frames = [TEMPLATES[2]] * lead
    for p in ph:
        frames += [TEMPLATES[p]] * (n_frames // 3)
    speech = len(frames) - lead
    frames += [TEMPLATES[2]] * tail
    mel = torch.stack(frames) + 0.05 * torch.randn(len(frames), N_MELS, generator=g)
    sr, hop = FEATURES.sample_rate, FEATURES.hop_length
    n = len(frames) * hop
    rng = np.random.default_rng(seed)
    x = 1e-4 * rng.standard_normal(n)
    a, b = round((lead - 1.0) * hop), round((lead + speech + 0.5) * hop)
    x[a:b] += 0.3 * np.sign(np.sin(2 * np.pi * 100 * np.arange(b - a) / sr))
    item = AlignItem(
        id=f"toy{seed}",
        speaker="s",
        text="a",
        tokens=torch.tensor([2, *ph, 2]),
        mel=mel,
        phones=[str(p) for p in ph],
        phone_token_index=[1, 2, 3],
        words=[("a", 0, 3)],
        num_samples=n,
    )
    return item, x.astype(np.float32)


def test_align_items_places_edges_batched_as_alone() -> None:
    toys = [_toy(20, 30, 25, 0), _toy(35, 60, 20, 1), _toy(25, 45, 40, 2)]
    items = [t[0] for t in toys]
    envs = [energy_envelope(t[1], FEATURES.sample_rate) for t in toys]
    plain = align_items(Oracle(), items, FEATURES, pauses="auto")
    placed = align_items(
        Oracle(),
        items,
        FEATURES,
        pauses="auto",
        silence_edge_db=DEFAULT_SILENCE_EDGE_DB,
        envelopes=envs,
    )
    fs = FEATURES.frame_s
    for i, (it, p, q) in enumerate(zip(items, plain, placed)):
        assert np.array_equal(p.durations, q.durations)  # the path is the decoder's
        (ps, pe, _), (qs, qe, _) = p.words[0], q.words[0]
        assert qs == pytest.approx(ps - 0.5 * fs, abs=0.003)  # half a frame earlier
        assert qe == pytest.approx(pe + 1.0 * fs, abs=0.003)  # a frame later
        assert q.pauses[0][1] == pytest.approx(qs) and q.pauses[-1][0] == pytest.approx(qe)
        alone = align_items(
            Oracle(), [it], FEATURES, pauses="auto", silence_edge_db=35.0, envelopes=[envs[i]]
        )
        assert alone[0].words == q.words and alone[0].phones == q.phones


def test_align_items_needs_an_envelope_per_item() -> None:
    item, _ = _toy(20, 30, 25, 0)
    with pytest.raises(ValueError, match="envelope per item"):
        align_items(Oracle(), [item], FEATURES, pauses="auto", silence_edge_db=20.0)
    with pytest.raises(ValueError, match="silence_edge_db"):
        align_items(Oracle(), [item], FEATURES, silence_edge_db=-1.0, envelopes=[])
    # the uniform baseline has no edges to place: no envelope needed
    assert align_items("uniform", [item], FEATURES, silence_edge_db=20.0)


def test_run_align_checks_the_level_first(tmp_path) -> None:
    from speechattn.recipes.align.pipeline import run_align

    for bad, exc in ((0.0, ValueError), (float("inf"), ValueError), ("35", TypeError)):
        with pytest.raises(exc, match="silence_edge_db"):
            run_align(tmp_path / "no-corpus", tmp_path / "out", silence_edge_db=bad, progress=False)


def test_align_cli_default_is_the_library_default() -> None:
    from speechattn.cli import build_parser
    from speechattn.recipes.align.pipeline import run_align

    args = build_parser().parse_args(["align", "corpus.jsonl", "--out", "o"])
    assert args.silence_edge_db == DEFAULT_SILENCE_EDGE_DB
    assert run_align.__kwdefaults__["silence_edge_db"] == DEFAULT_SILENCE_EDGE_DB
    args = build_parser().parse_args(
        ["align", "corpus.jsonl", "--out", "o", "--silence-edge-db", "off"]
    )
    assert args.silence_edge_db is None
    assert db_or_off("12.5") == 12.5
    for bad in ("0", "-3", "nan", "inf", "loud"):
        with pytest.raises(argparse.ArgumentTypeError, match="'off'"):
            db_or_off(bad)


def test_align_cli_places_edges_next_to_silence_only(tmp_path) -> None:
    """`speechattn align` places the edges by default and says so; `--silence-edge-db off` keeps
    the decoded ones; edges where two words meet are the same in both."""
    pytest.importorskip("espeakng_loader")
    import json

    from speechattn.cli import main

    data = tone_corpus(tmp_path / "corpus", {"u1": "the cat sat"}, noise=1e-4)
    common = ["--no-progress", "--threads", "1", "--no-adapt"]
    assert main(["align", str(data), "--out", str(tmp_path / "on"), *common]) == 0
    off = ["--silence-edge-db", "off"]
    assert main(["align", str(data), "--out", str(tmp_path / "off"), *off, *common]) == 0
    s_on = json.loads((tmp_path / "on" / "summary.json").read_text())
    s_off = json.loads((tmp_path / "off" / "summary.json").read_text())
    assert s_on["silence edges"].startswith("energy envelope, 35 dB")
    assert s_off["silence edges"] == "as decoded"
    w_on = json.loads((tmp_path / "on" / "alignments" / "u1.json").read_text())["words"]
    w_off = json.loads((tmp_path / "off" / "alignments" / "u1.json").read_text())["words"]
    assert [w["label"] for w in w_on] == ["the", "cat", "sat"]
    for a, b, c in zip(w_off[:-1], w_off[1:], w_on[1:]):
        if abs(b["start"] - a["end"]) < 1e-9:  # the words meet: not an edge next to silence
            assert c["start"] == pytest.approx(b["start"])
    # the first start and the last end are the tone's (within the 5 ms window's reach) or, when
    # the tone's edge is beyond the search window, the decoded ones
    for key, true, i in (("start", TONE_START_S, 0), ("end", TONE_END_S, -1)):
        assert abs(w_on[i][key] - true) < 0.004 or w_on[i][key] == pytest.approx(w_off[i][key])


def test_build_items_keeps_the_envelope_align_reads(tmp_path) -> None:
    """`build_items(envelopes=True)` keeps each item's envelope of the audio it read, and
    `item_envelopes` uses it instead of reading the file again."""
    pytest.importorskip("espeakng_loader")

    from speechattn.data.audio import load_audio
    from speechattn.data.corpus import load_corpus
    from speechattn.recipes.align.data import FeatureConfig, build_items, new_symbol_table
    from speechattn.recipes.align.pipeline import item_envelopes

    data = tone_corpus(tmp_path / "corpus", {"u1": "the cat sat"}, noise=1e-4)
    feats = FeatureConfig()
    utts = load_corpus(data)
    items = build_items(utts, new_symbol_table(), feats, grow_symbols=True, envelopes=True)
    want = energy_envelope(load_audio(data / "u1.wav", sample_rate=22050), 22050)
    kept = items[0].extra["envelope"]
    np.testing.assert_array_equal(kept.level_db, want.level_db)
    assert kept.hop_s == want.hop_s
    assert item_envelopes(items, [], feats)[0] is kept  # no utterance needed: nothing re-read
    plain = build_items(utts, new_symbol_table(), feats, grow_symbols=True)
    assert "envelope" not in plain[0].extra
    np.testing.assert_array_equal(item_envelopes(plain, utts, feats)[0].level_db, want.level_db)
