"""The endpoint rule: the first word cannot start before the audio's speech onset, the last word
cannot end after its speech offset (recipes/align/edges.py, ``place_silence_edges(endpoint=...)``)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from tests.reference.endpoint_reference import clamp_ends_ref, speech_endpoints_ref
from tests.test_align_edges import FRAME_S, SR, TOL, _edges, _item, _wave, _word_edges

from speechattn.recipes.align.edges import (
    DEFAULT_ENDPOINT,
    DEFAULT_SILENCE_EDGE_DB,
    FLOOR_PERCENTILE,
    MIN_RANGE_MARGIN_DB,
    MIN_RUN_S,
    SPEECH_PERCENTILE,
    EnergyEnvelope,
    energy_envelope,
    place_silence_edges,
    speech_endpoints,
)


def _ref(env: EnergyEnvelope, db: float = DEFAULT_SILENCE_EDGE_DB):
    return speech_endpoints_ref(
        [float(x) for x in env.level_db],
        float(env.hop_s),
        below_db=db,
        speech_pct=SPEECH_PERCENTILE,
        floor_pct=FLOOR_PERCENTILE,
        margin_db=MIN_RANGE_MARGIN_DB,
        run=max(1, round(MIN_RUN_S / float(env.hop_s))),
    )


@pytest.mark.parametrize(
    "spans, total",
    [
        ([(0.3, 0.8)], 1.1),
        ([(0.12, 0.4), (0.55, 0.9)], 1.2),
        ([(0.2, 0.25), (0.27, 0.33), (0.5, 0.95)], 1.1),  # short bursts with a short gap
        ([(0.0, 0.6)], 0.9),  # speech from the first sample: no onset
        ([(0.25, 0.9)], 0.9),  # speech to the last sample: no offset
    ],
)
def test_endpoints_match_the_loop_reference_and_the_tones(spans, total) -> None:
    env = energy_envelope(_wave(spans, total), SR)
    on, off = speech_endpoints(env)
    ron, roff = _ref(env)
    for got, want in ((on, ron), (off, roff)):
        assert (got is None) == (want is None)
        if got is not None:
            assert got == pytest.approx(want, abs=1e-12)
    # known tones: the onset at the first burst's start, the offset at the last burst's end
    if spans[0][0] > 0:
        assert on is not None and abs(on - spans[0][0]) < TOL
    else:
        assert on is None
    if spans[-1][1] < total:
        assert off is not None and abs(off - spans[-1][1]) < TOL
    else:
        assert off is None


def test_endpoints_random_envelopes_match_the_reference() -> None:
    rng = np.random.default_rng(7)
    for _ in range(30):
        n = int(rng.integers(2, 120))
        v = rng.choice([-90.0, -20.0, -60.0], size=n) + rng.normal(0, 3, size=n)
        env = EnergyEnvelope(v, 0.004)
        for db in (20.0, 35.0):
            got, want = speech_endpoints(env, db), _ref(env, db)
            for g, w in zip(got, want):
                assert (g is None) == (w is None)
                if g is not None:
                    assert g == pytest.approx(w, abs=1e-12)


def test_a_click_shorter_than_the_sustain_is_not_the_onset() -> None:
    x = _wave([(0.3, 0.8)], 1.1)
    x[800:840] += 0.3  # a 2.5 ms click at 0.05 s
    on, off = speech_endpoints(energy_envelope(x, SR))
    assert on is not None and abs(on - 0.3) < TOL
    assert off is not None and abs(off - 0.8) < TOL


@pytest.mark.parametrize("start_frames, end_frames", [(12, 15), (5, 13), (0, 20), (-2, -3)])
def test_ends_far_in_the_silence_go_to_the_endpoints(start_frames: int, end_frames: int) -> None:
    """One word from 0.30 to 0.80 s in 1.2 s, decoded ``start_frames`` early and ``end_frames``
    late: beyond the search windows only the endpoint rule brings them to the tone's edges; an
    edge already inside the speech (negative) stays where the windowed placement put it."""
    item = _item([3], pauses_between=False, frames=120)
    first, last = 30 - start_frames, 80 + end_frames
    p1 = 38 - first  # the first phone ends at about 0.38 s, inside the tone
    d = [first, p1, 10, last - first - p1 - 10, 120 - last]
    edges = _edges(item, d)
    env = energy_envelope(_wave([(0.3, 0.8)], 1.2), SR)
    before = place_silence_edges(item, d, edges, env, FRAME_S)
    after = place_silence_edges(item, d, edges, env, FRAME_S, endpoint=True)
    s, e = _word_edges(item, after)[0]
    on, off = speech_endpoints(env)
    assert on is not None and off is not None
    want = clamp_ends_ref(
        float(before[1]), float(before[2]), float(before[4]), float(before[3]), on, off, FRAME_S
    )
    assert (s, e) == pytest.approx(want, abs=1e-12)
    if start_frames >= 0:
        assert abs(s - 0.3) < TOL
    else:
        assert s == before[1]
    if end_frames >= 0:
        assert abs(e - 0.8) < TOL
    # only the utterance's two ends move; the rest stays as the windowed placement left it
    assert np.array_equal(np.delete(after, [1, 4]), np.delete(before, [1, 4]))
    if start_frames > 4:  # beyond START_SEARCH_FRAMES: the windowed placement alone misses it
        assert before[1] < 0.3 - 2 * FRAME_S


def test_the_clamp_keeps_half_a_frame_of_the_phone() -> None:
    """A first phone decoded wholly before the onset keeps half a frame; edges stay in order."""
    item = _item([3], pauses_between=False, frames=120)
    d = [5, 3, 40, 30, 42]  # first phone 0.05-0.08 s, the tone from 0.30 s
    edges = _edges(item, d)
    env = energy_envelope(_wave([(0.3, 0.8)], 1.2), SR)
    after = place_silence_edges(item, d, edges, env, FRAME_S, endpoint=True)
    assert after[1] == pytest.approx(edges[2] - FRAME_S / 2)
    assert np.all(np.diff(after) >= 0)


def test_words_around_a_pause_and_the_inner_edges_do_not_move() -> None:
    item = _item([2, 2, 2], pauses_between=True, frames=160)
    wave = _wave([(0.3, 0.5), (0.7, 1.2)], 1.6)
    d = [15, 20, 6, 22, 16, 14, 0, 10, 10, 47]  # first word from 0.145 s, last to 1.335 s
    edges = _edges(item, d)
    env = energy_envelope(wave, SR)
    before = place_silence_edges(item, d, edges, env, FRAME_S)
    after = place_silence_edges(item, d, edges, env, FRAME_S, endpoint=True)
    w = _word_edges(item, after)
    assert abs(w[0][0] - 0.3) < TOL and abs(w[2][1] - 1.2) < TOL
    assert np.array_equal(np.delete(after, [1, 9]), np.delete(before, [1, 9]))


@pytest.mark.parametrize("kind", ["noise", "reverb"])
def test_no_silence_to_speak_of_keeps_every_edge(kind: str) -> None:
    """Noise, or a long decaying tail filling the silences: the guard keeps the decoded edges."""
    item = _item([3], pauses_between=False, frames=120)
    d = [15, 10, 10, 40, 45]  # far from the tone at both ends
    edges = _edges(item, d)
    if kind == "noise":
        x = _wave([(0.3, 0.8)], 1.2, noise=0.05)
    else:
        dry = _wave([(0.3, 0.8)], 1.2)
        t = np.arange(round(0.8 * SR)) / SR
        ir = np.random.default_rng(2).standard_normal(t.size) * np.exp(-6.9 * t / 0.8)
        x = np.convolve(dry, ir)[: dry.size] * 0.05
        x = x + 0.02 * np.random.default_rng(3).standard_normal(x.size)  # and some room noise
    env = energy_envelope(x.astype(np.float32), SR)
    assert speech_endpoints(env) == (None, None)
    base = place_silence_edges(item, d, edges, env, FRAME_S)
    assert np.array_equal(place_silence_edges(item, d, edges, env, FRAME_S, endpoint=True), base)


def test_bad_input() -> None:
    env = energy_envelope(_wave([(0.3, 0.8)], 1.1), SR)
    for bad in (0.0, -1.0, float("nan"), None):
        with pytest.raises(ValueError, match=r"level_db|silence_edge_db"):
            speech_endpoints(env, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="silence_edge_db"):
        speech_endpoints(env, "35")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(t,\)"):
        speech_endpoints(EnergyEnvelope(np.zeros((3, 2)), 0.001))
    with pytest.raises(ValueError, match=r"finite envelope.*point 1"):
        speech_endpoints(EnergyEnvelope(np.array([0.0, np.nan, 1.0]), 0.001))
    with pytest.raises(ValueError, match="hop_s > 0"):
        speech_endpoints(EnergyEnvelope(np.zeros(5), 0.0))
    assert speech_endpoints(EnergyEnvelope(np.zeros(1), 0.001)) == (None, None)
    item = _item([3], pauses_between=False, frames=110)
    d = [32, 10, 10, 25, 33]
    with pytest.raises(TypeError, match="endpoint as a bool"):
        place_silence_edges(item, d, _edges(item, d), env, FRAME_S, endpoint="yes")  # type: ignore[arg-type]


def test_align_option_and_default(tmp_path) -> None:
    from speechattn.cli import build_parser
    from speechattn.recipes.align.pipeline import run_align

    def parse(*extra: str) -> argparse.Namespace:
        return build_parser().parse_args(["align", "corpus.jsonl", "--out", "o", *extra])

    assert parse().endpoint is DEFAULT_ENDPOINT
    assert parse("--endpoint").endpoint is True
    assert parse("--no-endpoint").endpoint is False
    assert run_align.__kwdefaults__["endpoint"] is DEFAULT_ENDPOINT
    with pytest.raises(TypeError, match="endpoint as a bool"):
        run_align(tmp_path / "none", tmp_path / "o", endpoint="on", progress=False)  # type: ignore[arg-type]


def test_tensor_free_envelope_types() -> None:
    """A float32 envelope gives the same endpoints as its float64 copy (within float32 rounding)."""
    env = energy_envelope(torch.from_numpy(_wave([(0.3, 0.8)], 1.1)), SR)
    e32 = EnergyEnvelope(env.level_db.astype(np.float32), env.hop_s)
    a, b = speech_endpoints(env), speech_endpoints(e32)
    assert a[0] == pytest.approx(b[0], abs=1e-4) and a[1] == pytest.approx(b[1], abs=1e-4)


def test_align_items_applies_the_rule_only_when_asked() -> None:
    """The toy's decoded word starts 8 frames before the sound of a later-starting recording:
    with ``endpoint`` its start goes to that recording's onset, without it the start stays."""
    from tests.align_toy import FEATURES
    from tests.test_align_edges import Oracle, _toy

    from speechattn.recipes.align.evaluate import align_items

    item, x = _toy(20, 30, 25, 0)
    hop = FEATURES.hop_length
    late = x.copy()
    late[: (20 + 8) * hop] = 1e-4 * np.random.default_rng(5).standard_normal((20 + 8) * hop)
    env = energy_envelope(late, FEATURES.sample_rate)
    on, _ = speech_endpoints(env)
    assert on is not None
    kw = dict(pauses="auto", silence_edge_db=DEFAULT_SILENCE_EDGE_DB, envelopes=[env])
    plain = align_items(Oracle(), [item], FEATURES, **kw)[0]  # type: ignore[arg-type]
    ruled = align_items(Oracle(), [item], FEATURES, endpoint=True, **kw)[0]  # type: ignore[arg-type]
    assert np.array_equal(plain.durations, ruled.durations)
    assert plain.words[0][0] < on - 5 * FEATURES.frame_s
    assert ruled.words[0][0] == pytest.approx(on)
    assert ruled.words[0][1] == plain.words[0][1]
