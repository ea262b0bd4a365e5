"""Boundaries between two sounds moved to the audio's spectral change (recipes/align/edges.py)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from speechattn.recipes.align.cli import radius_ms_or_off, refine_fraction
from speechattn.recipes.align.data import AlignItem
from speechattn.recipes.align.edges import (
    DEFAULT_REFINE_RADIUS_S,
    SpectralTransition,
    check_refine_fraction,
    refine_boundaries,
    refine_boundary_groups,
    spectral_transition,
)

SR = 16000
FRAME_S = 0.01  # the aligner's frame hop in these hand-made cases
HOP = 0.005  # the transition measure's hop in the hand-made measures


def _item(n_phones_per_word, *, pause_after=(), frames=100) -> AlignItem:
    """``<sil> phones... <sil>``; a pause token after each word index in ``pause_after``."""
    tokens, pidx, words, phones = [2], [], [], []
    for w, n in enumerate(n_phones_per_word):
        start = len(phones)
        for _ in range(n):
            pidx.append(len(tokens))
            tokens.append(5 + len(phones))
            phones.append(str(len(phones)))
        words.append((f"w{w}", start, len(phones)))
        if w in pause_after:
            tokens.append(2)
    tokens.append(2)
    return AlignItem(
        id="x",
        speaker="s",
        text=" ".join(w for w, _, _ in words),
        tokens=torch.tensor(tokens),
        mel=torch.zeros(frames, 4),
        phones=phones,
        phone_token_index=pidx,
        words=words,
        num_samples=round(frames * FRAME_S * SR),
    )


def _measure(peaks, total_s=1.0, *, base=0.0, width=0.01) -> SpectralTransition:
    """A hand-made transition measure: ``base`` plus a Gaussian bump of height h at each (t, h)."""
    t = np.arange(round(total_s / HOP) + 1) * HOP
    v = np.full(t.size, base, dtype=np.float64)
    for c, h in peaks:
        v += h * np.exp(-0.5 * ((t - c) / width) ** 2)
    return SpectralTransition(v, HOP)


def _tones(spans, total_s, *, seed=0, amp=0.2):
    """A tone of ``f`` Hz (plus its third harmonic) in each (start, end, f) span; low noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(total_s * SR)) / SR
    x = 1e-4 * rng.standard_normal(t.size)
    for a, b, f in spans:
        on = (t >= a) & (t < b)
        x[on] += amp * (np.sin(2 * np.pi * f * t[on]) + 0.3 * np.sin(2 * np.pi * 3 * f * t[on]))
    return x.astype(np.float32)


# Two words of two phones meeting at 0.50 s: <sil> a b | c d <sil>; edges (seconds).
TWO_WORDS = _item([2, 2])
EDGES = np.array([0.0, 0.2, 0.35, 0.48, 0.65, 0.8, 1.0])


# A step change of spectrum peaks the measure within about half its window of the step (the
# side whose low bands change more pulls the peak towards where that side's energy leaves or
# enters the window).
STEP_TOL = 0.0125 + 0.005


def test_transition_peaks_at_the_spectral_change_and_ignores_gain() -> None:
    x = _tones([(0.2, 0.5, 300.0), (0.5, 0.8, 1500.0)], 1.0)
    tr = spectral_transition(x, SR)
    assert tr.hop_s == pytest.approx(80 / SR)
    assert tr.value.shape == (1 + x.size // 80,)
    t = np.arange(tr.value.size) * tr.hop_s
    inner = (t > 0.3) & (t < 0.7)  # away from the onset and offset
    assert t[inner][np.argmax(tr.value[inner])] == pytest.approx(0.5, abs=STEP_TOL)
    steady = inner & (np.abs(t - 0.5) > 0.05)
    assert tr.value[steady].max() < 1e-3 * tr.value[inner].max()  # no change, no transition
    quiet = spectral_transition(0.05 * x, SR)
    np.testing.assert_allclose(quiet.value, tr.value, rtol=1e-3, atol=1e-6 * tr.value.max())


def test_word_boundary_moves_to_the_change_of_real_audio() -> None:
    x = _tones([(0.2, 0.5, 300.0), (0.5, 0.8, 1500.0)], 1.0)
    tr = spectral_transition(x, SR)
    for decoded in (0.47, 0.53):
        edges = EDGES.copy()
        edges[3] = decoded  # 30 ms early or late
        e = refine_boundaries(TWO_WORDS, edges, tr, FRAME_S, 0.05, phones=False)
        assert e[3] == pytest.approx(0.5, abs=STEP_TOL)
        e[3] = edges[3]
        assert np.array_equal(e, edges)  # nothing else moved
    # beyond the radius the change is not reached
    far = EDGES.copy()
    far[3] = 0.42
    e = refine_boundaries(TWO_WORDS, far, tr, FRAME_S, 0.02, phones=False)
    assert abs(e[3] - 0.42) <= 0.02 + 1e-9 and abs(e[3] - 0.5) > 0.055


def test_subframe_peak_and_phone_boundaries() -> None:
    tr = _measure([(0.4923, 1.0), (0.36, 0.5)])
    e = refine_boundaries(TWO_WORDS, EDGES, tr, FRAME_S)
    assert e[3] == pytest.approx(0.4923, abs=0.001)  # between the measure's frames
    assert e[2] == pytest.approx(0.36, abs=0.001)  # a phone boundary inside the first word
    e = refine_boundaries(TWO_WORDS, EDGES, tr, FRAME_S, phones=False)
    assert e[2] == EDGES[2] and e[3] == pytest.approx(0.4923, abs=0.001)


def test_no_clear_peak_leaves_the_boundary() -> None:
    rng = np.random.default_rng(0)
    v = rng.uniform(0.0, 1.0, 201)  # the utterance's spread of values
    t = np.arange(201) * HOP
    near = np.abs(t - 0.48) <= 0.04
    v[near] = 0.3 * np.exp(-0.5 * ((t[near] - 0.49) / 0.01) ** 2)  # a weak peak by the boundary
    tr = SpectralTransition(v, HOP)
    kept = refine_boundaries(TWO_WORDS, EDGES, tr, FRAME_S, percentile=90.0, phones=False)
    assert np.array_equal(kept, EDGES)
    moved = refine_boundaries(TWO_WORDS, EDGES, tr, FRAME_S, percentile=0.0, phones=False)
    assert moved[3] == pytest.approx(0.49, abs=0.001)
    # no local maximum at all (a ramp): unchanged
    ramp = SpectralTransition(np.linspace(0.0, 1.0, 201), HOP)
    assert np.array_equal(refine_boundaries(TWO_WORDS, EDGES, ramp, FRAME_S), EDGES)


def test_never_crosses_neighbours_and_keeps_half_a_frame() -> None:
    # a strong peak just past the next phone's end is out of reach
    e = refine_boundaries(TWO_WORDS, EDGES, _measure([(0.655, 5.0)]), FRAME_S, phones=False)
    assert np.array_equal(e, EDGES)
    # two boundaries 20 ms apart both near one peak: the first takes it, the second stays after it
    edges = np.array([0.0, 0.2, 0.45, 0.47, 0.65, 0.8, 1.0])
    tr = _measure([(0.46, 1.0)])
    e = refine_boundaries(TWO_WORDS, edges, tr, FRAME_S)
    assert e[2] == pytest.approx(0.46, abs=0.001)
    assert e[3] == edges[3]
    assert np.all(np.diff(e) >= FRAME_S / 2 - 1e-12)
    # many peaks everywhere: order and the half-frame gap always hold
    rng = np.random.default_rng(1)
    item = _item([3, 2, 4])
    for _ in range(20):
        inner = np.sort(rng.uniform(0.15, 0.85, 10))
        edges = np.concatenate([[0.0], inner, [1.0]])
        if np.any(np.diff(edges) < FRAME_S):
            continue
        tr = SpectralTransition(rng.uniform(0.0, 1.0, 201), HOP)
        e = refine_boundaries(item, edges, tr, FRAME_S, 0.04, percentile=0.0)
        assert np.all(np.diff(e[1:-1]) >= FRAME_S / 2 - 1e-12)
        assert e[1] == edges[1] and e[-2] == edges[-2]  # edges next to silence stay
        assert np.all(np.abs(e - edges) <= 0.04 + 1e-9)


def test_silence_and_pauses_stay_and_a_passed_pause_moves_as_one() -> None:
    item = _item([2, 2, 1], pause_after=(0, 1))  # <sil> a b <sp> c d <sp> e <sil>
    # the first pause took frames (0.45-0.52), the second was passed (0 frames at 0.66)
    edges = np.array([0.0, 0.2, 0.33, 0.45, 0.52, 0.6, 0.66, 0.66, 0.8, 1.0])
    groups = refine_boundary_groups(item, edges)
    assert groups == [(2, 2), (5, 5), (6, 7)]
    tr = _measure([(0.2 + 0.01, 1.0), (0.45 - 0.01, 1.0), (0.52 + 0.01, 1.0), (0.67, 1.0)])
    e = refine_boundaries(item, edges, tr, FRAME_S)
    assert np.array_equal(e[[0, 1, 3, 4, 8, 9]], edges[[0, 1, 3, 4, 8, 9]])
    assert e[6] == e[7] == pytest.approx(0.67, abs=0.001)
    assert refine_boundary_groups(item, edges, phones=False) == [(6, 7)]


def test_bad_values() -> None:
    tr = _measure([(0.5, 1.0)])
    for bad in (0.0, -0.01, 0.2, float("nan"), float("inf"), None):
        with pytest.raises(ValueError, match="radius"):
            refine_boundaries(TWO_WORDS, EDGES, tr, FRAME_S, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="radius"):
        refine_boundaries(TWO_WORDS, EDGES, tr, FRAME_S, "0.03")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="percentile"):
        refine_boundaries(TWO_WORDS, EDGES, tr, FRAME_S, percentile=101.0)
    with pytest.raises(ValueError, match="frame_s"):
        refine_boundaries(TWO_WORDS, EDGES, tr, 0.0)
    with pytest.raises(ValueError, match="edges of shape"):
        refine_boundaries(TWO_WORDS, EDGES[:3], tr, FRAME_S)
    with pytest.raises(ValueError, match="transition measure"):
        refine_boundaries(TWO_WORDS, EDGES, SpectralTransition(np.ones((3, 2)), HOP), FRAME_S)
    with pytest.raises(ValueError, match="mono waveform"):
        spectral_transition(np.zeros((2, 100), dtype=np.float32), SR)
    with pytest.raises(ValueError, match="finite"):
        spectral_transition(np.full(1000, np.nan, dtype=np.float32), SR)
    with pytest.raises(ValueError, match="context"):
        spectral_transition(np.zeros(1000, dtype=np.float32), SR, context=0)


def test_align_items_refines_only_when_asked() -> None:
    from tests.align_toy import FEATURES
    from tests.test_align_edges import Oracle, _toy

    from speechattn.recipes.align.evaluate import align_items

    item, _ = _toy(20, 30, 25, 0)  # one word of three phones, 10 ms frames
    plain = align_items(Oracle(), [item], FEATURES, pauses="auto")[0]
    b1 = plain.phones[1][0]  # the boundary between the first two phones
    total = item.num_samples / FEATURES.sample_rate
    tr = _measure([(b1 + 0.012, 1.0)], total)
    refined = align_items(
        Oracle(),
        [item],
        FEATURES,
        pauses="auto",
        refine_radius_s=DEFAULT_REFINE_RADIUS_S,
        transitions=[tr],
    )[0]
    assert np.array_equal(plain.durations, refined.durations)  # the path is the decoder's
    assert refined.phones[1][0] == pytest.approx(b1 + 0.012, abs=0.001)
    assert refined.words == plain.words  # the word's edges are next to silence
    with pytest.raises(ValueError, match="transition measure per item"):
        align_items(Oracle(), [item], FEATURES, refine_radius_s=0.03)
    with pytest.raises(ValueError, match="radius"):
        align_items(Oracle(), [item], FEATURES, refine_radius_s=0.5, transitions=[tr])
    # the uniform baseline has nothing to refine: no measure needed
    assert align_items("uniform", [item], FEATURES, refine_radius_s=0.03)


def test_cli_option_is_off_by_default_and_range_checked(tmp_path) -> None:
    from speechattn.cli import build_parser
    from speechattn.recipes.align.pipeline import run_align

    args = build_parser().parse_args(["align", "corpus.jsonl", "--out", "o"])
    assert args.refine_boundaries is None
    assert run_align.__kwdefaults__["refine_radius_s"] is None
    args = build_parser().parse_args(
        ["align", "corpus.jsonl", "--out", "o", "--refine-boundaries", "30"]
    )
    assert args.refine_boundaries == 30.0
    assert radius_ms_or_off("off") is None
    for bad in ("0", "-5", "101", "nan", "inf", "wide"):
        with pytest.raises(argparse.ArgumentTypeError, match="'off'"):
            radius_ms_or_off(bad)
    for bad, exc in ((0.0, ValueError), (0.5, ValueError), ("0.03", TypeError)):
        with pytest.raises(exc, match="radius"):
            run_align(tmp_path / "no-corpus", tmp_path / "out", refine_radius_s=bad, progress=False)


def test_fraction_moves_that_share_of_the_way() -> None:
    tr = _measure([(0.4923, 1.0), (0.36, 0.5)])
    full = refine_boundaries(TWO_WORDS, EDGES, tr, FRAME_S)
    assert np.array_equal(refine_boundaries(TWO_WORDS, EDGES, tr, FRAME_S, fraction=1.0), full)
    assert full[3] == pytest.approx(0.4923, abs=0.001) and full[2] == pytest.approx(0.36, abs=0.001)
    for f in (0.25, 0.5, 0.75):
        e = refine_boundaries(TWO_WORDS, EDGES, tr, FRAME_S, fraction=f)
        moved = full != EDGES
        assert moved.sum() == 2
        np.testing.assert_allclose(e - EDGES, f * (full - EDGES), rtol=0, atol=1e-12)
        assert e[3] == pytest.approx(0.48 + f * (0.4923 - 0.48), abs=0.001)
    # random measures with isolated boundaries (no neighbour within reach): the same relation
    rng = np.random.default_rng(2)
    item = _item([3, 2, 4])
    edges = np.linspace(0.0, 1.0, 12)  # 91 ms apart: no neighbour within reach of a 30 ms move
    for _ in range(10):
        tr = SpectralTransition(rng.uniform(0.0, 1.0, 201), HOP)
        full = refine_boundaries(item, edges, tr, FRAME_S, 0.03, percentile=0.0)
        assert np.any(full != edges)
        for f in (0.3, 0.6):
            e = refine_boundaries(item, edges, tr, FRAME_S, 0.03, percentile=0.0, fraction=f)
            np.testing.assert_allclose(e - edges, f * (full - edges), rtol=0, atol=1e-12)


def test_fraction_keeps_order_and_gaps() -> None:
    rng = np.random.default_rng(3)
    item = _item([3, 2, 4])
    for _ in range(20):
        inner = np.sort(rng.uniform(0.15, 0.85, 10))
        edges = np.concatenate([[0.0], inner, [1.0]])
        if np.any(np.diff(edges) < FRAME_S):
            continue
        tr = SpectralTransition(rng.uniform(0.0, 1.0, 201), HOP)
        for f in (0.2, 0.5, 0.9):
            e = refine_boundaries(item, edges, tr, FRAME_S, 0.04, percentile=0.0, fraction=f)
            assert np.all(np.diff(e[1:-1]) >= FRAME_S / 2 - 1e-12)
            assert np.all(np.abs(e - edges) <= f * 0.04 + 1e-9)


def test_fraction_bad_values() -> None:
    tr = _measure([(0.5, 1.0)])
    for bad in (0.0, -0.5, 1.01, 2.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fraction"):
            refine_boundaries(TWO_WORDS, EDGES, tr, FRAME_S, fraction=bad)
    for bad in ("0.5", True, None):
        with pytest.raises(TypeError, match="fraction"):
            refine_boundaries(TWO_WORDS, EDGES, tr, FRAME_S, fraction=bad)  # type: ignore[arg-type]
    assert check_refine_fraction(1) == 1.0 and isinstance(check_refine_fraction(1), float)


def test_fraction_through_align_items_and_the_cli(tmp_path, capsys) -> None:
    from tests.align_toy import FEATURES
    from tests.test_align_edges import Oracle, _toy

    from speechattn.cli import build_parser
    from speechattn.recipes.align.evaluate import align_items
    from speechattn.recipes.align.pipeline import run_align

    item, _ = _toy(20, 30, 25, 0)
    plain = align_items(Oracle(), [item], FEATURES, pauses="auto")[0]
    b1 = plain.phones[1][0]
    tr = _measure([(b1 + 0.012, 1.0)], item.num_samples / FEATURES.sample_rate)
    kw = dict(pauses="auto", refine_radius_s=DEFAULT_REFINE_RADIUS_S, transitions=[tr])
    full = align_items(Oracle(), [item], FEATURES, **kw)[0]  # type: ignore[arg-type]
    half = align_items(Oracle(), [item], FEATURES, refine_fraction=0.5, **kw)[0]  # type: ignore[arg-type]
    assert full.phones[1][0] - b1 == pytest.approx(2 * (half.phones[1][0] - b1), abs=1e-9)
    assert half.phones[1][0] - b1 == pytest.approx(0.006, abs=0.001)
    with pytest.raises(ValueError, match="fraction"):
        align_items(Oracle(), [item], FEATURES, refine_fraction=0.0, **kw)  # type: ignore[arg-type]

    args = build_parser().parse_args(["align", "corpus.jsonl", "--out", "o"])
    assert args.refine_fraction is None  # not given: the full move (1) when refinement is on
    assert run_align.__kwdefaults__["refine_fraction"] == 1.0
    args = build_parser().parse_args(
        [
            "align",
            "corpus.jsonl",
            "--out",
            "o",
            "--refine-boundaries",
            "40",
            "--refine-fraction",
            "0.75",
        ]
    )
    assert args.refine_fraction == 0.75 and args.refine_boundaries == 40.0
    assert refine_fraction("1") == 1.0
    for bad in ("0", "-0.5", "1.5", "nan", "half"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"\(0, 1\]"):
            refine_fraction(bad)
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["align", "c.jsonl", "--out", "o", "--refine-fraction", "0"])
    assert exc.value.code == 2
    with pytest.raises(ValueError, match="fraction"):
        run_align(tmp_path / "no-corpus", tmp_path / "out", refine_fraction=1.5, progress=False)

    from speechattn.cli import main

    status = main(
        [
            "align",
            str(tmp_path / "c.jsonl"),
            "--out",
            str(tmp_path / "o"),
            "--refine-fraction",
            "0.5",
        ]
    )
    assert status == 2
    assert "--refine-boundaries" in capsys.readouterr().err
