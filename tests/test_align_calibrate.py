"""Boundary geometry (centred frames) and boundary calibration of the alignment recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechattn.recipes.align.calibrate import (
    BoundaryOffsets,
    boundary_errors,
    fit_boundary_offsets,
    fit_class_offsets,
    shift_edges,
)
from speechattn.recipes.align.data import AlignItem, FeatureConfig
from speechattn.recipes.align.evaluate import (
    AlignmentResult,
    durations_to_intervals,
    frame_boundaries_to_seconds,
)

FEATS = FeatureConfig(sample_rate=1000, hop_length=10)  # 10 ms frames


def _item(phones: list[str], truth: list[tuple[float, float]] | None, frames: int) -> AlignItem:
    u = len(phones) + 2
    return AlignItem(
        id="x",
        speaker="s",
        text=" ".join(phones),
        tokens=torch.arange(u),
        mel=torch.zeros(frames, 4),
        phones=phones,
        phone_token_index=list(range(1, u - 1)),
        words=[("w", 0, len(phones))],
        num_samples=frames * FEATS.hop_length - 3,
        gt_phones=truth,
    )


def test_boundaries_sit_between_centred_frames() -> None:
    item = _item(["a", "b"], None, 10)
    phones, words = durations_to_intervals(item, np.array([2, 3, 4, 1]), FEATS)
    # token 1 starts at frame 2 -> 15 ms; token 2 at frame 5 -> 45 ms; end of token 2 at frame 9.
    assert phones[0][:2] == pytest.approx((0.015, 0.045))
    assert phones[1][:2] == pytest.approx((0.045, 0.085))
    assert words[0][:2] == pytest.approx((0.015, 0.085))
    np.testing.assert_allclose(frame_boundaries_to_seconds([0, 1, 7], FEATS), [0.0, 0.005, 0.065])


def _planted(rng: np.random.Generator, n: int, shift: dict[str, float]) -> list[AlignmentResult]:
    """Results whose boundaries are the truth minus a per-next-phone shift (plus small noise)."""
    out = []
    for _ in range(n):
        ph = list(rng.choice(["t", "a", "s", "ˈa"], size=5))
        d = rng.integers(4, 9, size=5) * 0.01
        edges = 0.05 + np.concatenate([[0.0], np.cumsum(d)])
        truth = [(float(edges[k]), float(edges[k + 1])) for k in range(5)]
        hyp = edges.copy()
        for k in range(5):
            hyp[k] -= shift[ph[k].replace("ˈ", "")] + rng.normal(0, 1e-4)
        hyp[5] -= shift["<sil>"]
        phones = [(float(hyp[k]), float(hyp[k + 1]), str(ph[k])) for k in range(5)]
        item = _item([p for *_, p in phones], truth, 60)
        out.append(AlignmentResult(item=item, durations=np.ones(7), phones=phones, words=[]))
    return out


def test_fit_recovers_planted_offsets_and_shift_edges_applies_them() -> None:
    shift = {"t": 0.025, "a": -0.01, "s": 0.0, "<sil>": 0.005}
    res = _planted(np.random.default_rng(0), 200, shift)
    offs = fit_boundary_offsets(res)
    for (p, n, _e), expect in [(("a", "t", 0), 0.025), (("t", "a", 0), -0.01)]:
        assert offs.offset(p, n) == pytest.approx(expect, abs=1e-3)
    assert offs.offset("never", "t") == pytest.approx(0.025, abs=1e-3)  # back-off to next
    assert offs.offset("x", "y") == pytest.approx(offs.default)
    # Applying the table maps the hypothesis back onto the truth.
    r = res[0]
    edges = np.array([0.0, *[a for a, _, _ in r.phones], r.phones[-1][1], 0.6])
    labels = ["<sil>", *[p for *_, p in r.phones], "<sil>"]
    fixed = shift_edges(edges, labels, offs, min_gap=0.001)
    truth = [0.0, *[a for a, _ in r.item.gt_phones], r.item.gt_phones[-1][1], 0.6]
    np.testing.assert_allclose(fixed, truth, atol=1e-3)


def test_shift_edges_keeps_order_ends_and_min_gap() -> None:
    offs = BoundaryOffsets(pair={}, next={"b": 0.5, "c": -0.5}, default=0.0)
    edges = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    out = shift_edges(edges, ["<sil>", "b", "c", "<sil>"], offs, min_gap=0.02)
    assert out[0] == 0.0 and out[-1] == 0.4
    assert np.all(np.diff(out) >= 0.02 - 1e-12)


def test_calibrated_intervals_keep_durations_and_round_trip() -> None:
    item = _item(["t", "a"], [(0.02, 0.05), (0.05, 0.09)], 10)
    offs = BoundaryOffsets(pair={"<sil>|t": 0.004}, next={"a": -0.003}, default=0.001)
    d = np.array([2, 3, 4, 1])
    raw, _ = durations_to_intervals(item, d, FEATS)
    cal, _ = durations_to_intervals(item, d, FEATS, offs)
    assert cal[0][0] == pytest.approx(raw[0][0] + 0.004)
    assert cal[1][0] == pytest.approx(raw[1][0] - 0.003)
    assert cal[1][1] == pytest.approx(raw[1][1] + 0.001)  # a|<sil>: default
    assert BoundaryOffsets.from_dict(offs.to_dict()) == offs
    assert BoundaryOffsets.from_dict(None) is None


def test_boundary_errors_contexts_and_fit_needs_labels() -> None:
    phones = [(0.1, 0.2, "ˈa"), (0.2, 0.3, "t"), (0.35, 0.4, "s")]  # a pause before "s"
    errs = boundary_errors(phones, [(0.1, 0.2), (0.21, 0.3), (0.35, 0.41)])
    assert [(p, n) for p, n, _ in errs] == [
        ("<sil>", "a"),
        ("a", "t"),
        ("t", "<sil>"),
        ("<sil>", "s"),
        ("s", "<sil>"),
    ]
    assert errs[1][2] == pytest.approx(0.01)
    item = _item(["a"], None, 10)
    with pytest.raises(ValueError, match="ground-truth"):
        fit_boundary_offsets(
            [AlignmentResult(item=item, durations=d, phones=[], words=[]) for d in [np.ones(3)]]
        )


def test_calibrate_results_equals_aligning_with_offsets() -> None:
    from tests.align_toy import FEATURES, N_MELS, NUM_SYMBOLS, toy_items

    from speechattn.recipes.align.evaluate import align_items, calibrate_results
    from speechattn.recipes.align.model import AlignerConfig, TextMelAligner

    torch.manual_seed(0)
    model = TextMelAligner(AlignerConfig(num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16))
    items = toy_items(6, seed=3)
    offs = BoundaryOffsets(pair={}, next={"5": 0.004}, default=-0.002)
    direct = align_items(model, items, FEATURES, offsets=offs)
    derived = calibrate_results(align_items(model, items, FEATURES), FEATURES, offs)
    for a, b in zip(direct, derived):
        np.testing.assert_array_equal(a.durations, b.durations)
        assert a.phones == b.phones and a.words == b.words


def _word_result(
    rng: np.random.Generator, late: float, lead: float = 0.0
) -> tuple[AlignmentResult, float]:
    """Three words, a pause before the last one; hypothesis = truth + ``late`` at boundaries
    between two words that meet, + ``lead`` after a silence, + 0 before one (plus small noise)."""
    t = [0.1, 0.3, 0.5, 0.8, 1.0]  # w0 [0.1, 0.3], w1 [0.3, 0.5], pause, w2 [0.8, 1.0]
    n = lambda: float(rng.normal(0, 1e-4))  # noqa: E731
    words = [
        (t[0] + lead + n(), t[1] + late + n(), "a"),
        (t[1] + late + n(), t[2] + n(), "b"),
        (t[3] + lead + n(), t[4] + n(), "c"),
    ]
    item = _item(["a", "b", "c"], None, 120)
    item.words = [("a", 0, 1), ("b", 1, 2), ("c", 2, 3)]
    item.gt_words = [(t[0], t[1]), (t[1], t[2]), (t[3], t[4])]
    phones = [(a, b, w) for a, b, w in words]
    return AlignmentResult(item=item, durations=np.ones(5), phones=phones, words=words), late


def test_class_offsets_count_each_engine_once() -> None:
    rng = np.random.default_rng(0)
    # Engine "big" (many utterances) is 10 ms late between words, "mid" 30 ms, "far" 50 ms;
    # after a silence every engine is 40 ms late.
    res, groups = [], []
    for name, late, n in (("big", 0.010, 60), ("mid", 0.030, 6), ("far", 0.050, 6)):
        for _ in range(n):
            res.append(_word_result(rng, late, lead=0.040)[0])
            groups.append(name)
    offs = fit_class_offsets(res, groups, min_count=5)
    assert offs.groups == ["big", "far", "mid"]
    # The median over engines (30 ms), not over boundaries (10 ms: "big" dominates them).
    assert offs.classes["speech|speech"] == pytest.approx(-0.030, abs=1e-3)
    assert offs.classes["sil|speech"] == pytest.approx(-0.040, abs=1e-3)
    assert offs.classes["speech|sil"] == pytest.approx(0.0, abs=1e-3)
    pooled = fit_class_offsets(res, ["one"] * len(res), min_count=5)
    assert pooled.classes["speech|speech"] == pytest.approx(-0.010, abs=1e-3)
    # A class table answers by boundary class; a context table entry still wins over it.
    assert offs.offset("a", "b") == offs.classes["speech|speech"]
    assert offs.offset("<sil>", "b") == offs.classes["sil|speech"]
    assert offs.offset("<sil>", "<sil>") == 0.0
    both = BoundaryOffsets(pair={"a|b": 0.001}, classes=dict(offs.classes))
    assert both.offset("a", "b") == 0.001 and both.offset("x", "b") == offs.classes["speech|speech"]
    assert BoundaryOffsets.from_dict(offs.to_dict()) == offs
    # Old tables (no classes) load as before.
    old = {"pair": {"a|b": 0.002}, "next": {}, "default": 0.001, "boundaries": 3}
    loaded = BoundaryOffsets.from_dict(old)
    assert loaded is not None and loaded.classes == {} and loaded.offset("x", "y") == 0.001


def test_class_table_applied_to_edges_undoes_the_lateness() -> None:
    rng = np.random.default_rng(1)
    res = [_word_result(rng, 0.025, lead=0.015)[0] for _ in range(30)]
    offs = fit_class_offsets(res, ["e"] * 30, min_count=5)
    r = res[0]
    edges = np.array([0.0, *[a for a, _, _ in r.words[:2]], r.words[1][1], r.words[2][0], 1.0, 1.2])
    labels = ["<sil>", "a", "b", "<sil>", "c", "<sil>"]
    fixed = shift_edges(edges, labels, offs, min_gap=0.001)
    np.testing.assert_allclose(fixed, [0.0, 0.1, 0.3, 0.5, 0.8, 1.0, 1.2], atol=2e-3)


def test_class_offsets_need_groups_and_labels() -> None:
    rng = np.random.default_rng(2)
    r, _ = _word_result(rng, 0.01)
    with pytest.raises(ValueError, match="one group per result"):
        fit_class_offsets([r], [])
    item = _item(["a"], None, 10)
    bare = AlignmentResult(item=item, durations=np.ones(3), phones=[], words=[(0.1, 0.2, "a")])
    with pytest.raises(ValueError, match="ground-truth word"):
        fit_class_offsets([bare], ["e"])


def test_consensus_offsets_shift_only_where_every_engine_agrees() -> None:
    rng = np.random.default_rng(3)
    res, groups = [], []
    # Between words: all three engines late (10, 30, 50 ms) -> consensus 10 ms (the least).
    # After a silence: one engine early, two late -> no agreement -> 0.
    for name, late, lead in (("a", 0.010, -0.020), ("b", 0.030, 0.020), ("c", 0.050, 0.040)):
        for _ in range(10):
            res.append(_word_result(rng, late, lead=lead)[0])
            groups.append(name)
    med = fit_class_offsets(res, groups, min_count=5)
    con = fit_class_offsets(res, groups, min_count=5, combine="consensus")
    assert med.classes["speech|speech"] == pytest.approx(-0.030, abs=1e-3)
    assert con.classes["speech|speech"] == pytest.approx(-0.010, abs=1e-3)
    assert med.classes["sil|speech"] == pytest.approx(-0.020, abs=1e-3)
    assert con.classes["sil|speech"] == 0.0
    for cls, v in con.classes.items():  # never beyond the median, never the other way
        assert v * med.classes[cls] >= 0 and abs(v) <= abs(med.classes[cls]) + 1e-12
    with pytest.raises(ValueError, match="combine"):
        fit_class_offsets(res, groups, combine="mean")
