"""Training options against an aligner collapse (issue 19): lr warm-up, engine-balanced batches,
a prior warm-up and the pause token in the demo recipe.

The defaults must train exactly as before the options existed; ``batching="balanced"`` must give
each group an equal share of every batch; ``prior_warmup`` ramps the token scores' weight and
leaves a model that scores at weight 1; bad values raise a ValueError naming what was expected.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
from tests.align_toy import N_MELS, NUM_SYMBOLS, toy_items

import speechattn.recipes.align.train as T
from speechattn.recipes.align.model import AlignerConfig
from speechattn.recipes.align.pipeline import DemoConfig, demo_features, demo_record
from speechattn.recipes.align.train import (
    BATCHINGS,
    CheckpointMismatch,
    TrainConfig,
    train_aligner,
)

CFG = AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16)


def _old_batch(lengths: list[int], batch_size: int, seed: int, step: int) -> list[int]:
    """The batch draw before ``batching`` existed, restated (a loop, no shared code)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    bs = min(batch_size, len(order))
    start = int(torch.randint(0, max(1, len(order) - bs + 1), (1,), generator=g))
    return [order[start + k] for k in range(bs)]


def _spy_batches(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    seen: list[list[str]] = []
    real = T.collate_items

    def spy(items):  # type: ignore[no-untyped-def]
        seen.append([it.id for it in items])
        return real(items)

    monkeypatch.setattr(T, "collate_items", spy)
    return seen


def test_default_batching_draws_the_old_batches_and_ignores_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = toy_items(24, 0)
    seen = _spy_batches(monkeypatch)
    a = train_aligner(CFG, items, TrainConfig(steps=4, batch_size=5, seed=3), progress=False)
    lengths = [int(it.mel.shape[0]) for it in items]
    want = [[items[i].id for i in _old_batch(lengths, 5, 3, s)] for s in range(4)]
    assert seen == want
    # groups are read by "balanced" only: given with the default, the run is bitwise the same
    b = train_aligner(
        CFG,
        items,
        TrainConfig(steps=4, batch_size=5, seed=3, batching="length", warmup=30),
        progress=False,
        groups=["x"] * 12 + ["y"] * 12,
    )
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_balanced_batches_take_an_equal_share_of_each_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = toy_items(40, 1)
    groups = ["small"] * 5 + ["big"] * 35  # the big group would fill every length batch
    seen = _spy_batches(monkeypatch)
    cfg = TrainConfig(steps=6, batch_size=8, seed=2, batching="balanced")
    train_aligner(CFG, items, cfg, progress=False, groups=groups)
    group_of = {it.id: g for it, g in zip(items, groups)}
    assert len(seen) == 6
    for batch in seen:
        assert len(batch) == 8 and len(set(batch)) == 8
        assert collections.Counter(group_of[i] for i in batch) == {"small": 4, "big": 4}
    assert len({tuple(b) for b in seen}) > 1  # batches differ from step to step
    # three groups, 8 items: 3 + 3 + 2 (which group gets 2 varies); a group smaller than its
    # share gives all its items
    three = ["a"] * 2 + ["b"] * 19 + ["c"] * 19
    seen.clear()
    train_aligner(CFG, items, cfg, progress=False, groups=three)
    g3 = {it.id: g for it, g in zip(items, three)}
    for batch in seen:
        counts = collections.Counter(g3[i] for i in batch)
        assert counts["a"] == 2 and sorted([counts["b"], counts["c"]]) in ([2, 3], [3, 3])


def test_balanced_batches_default_to_speakers_and_are_seeded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = toy_items(30, 2)  # speakers spk0, spk1, spk2 in turn
    seen = _spy_batches(monkeypatch)
    cfg = TrainConfig(steps=3, batch_size=6, seed=5, batching="balanced")
    first = train_aligner(CFG, items, cfg, progress=False)
    runs = [list(seen)]
    seen.clear()
    again = train_aligner(CFG, items, cfg, progress=False)
    runs.append(list(seen))
    assert runs[0] == runs[1]
    speaker = {it.id: it.speaker for it in items}
    for batch in runs[0]:
        assert collections.Counter(speaker[i] for i in batch) == {"spk0": 2, "spk1": 2, "spk2": 2}
    for k, v in first.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k


def test_bad_batching_and_groups_raise() -> None:
    items = toy_items(6, 0)
    with pytest.raises(
        ValueError, match=r"Expected batching in \('length', 'balanced'\); found 'engine'"
    ):
        train_aligner(CFG, items, TrainConfig(steps=1, batching="engine"), progress=False)
    with pytest.raises(
        ValueError, match="Expected one group per training item; found 2 groups for 6"
    ):
        train_aligner(
            CFG, items, TrainConfig(steps=1, batching="balanced"), progress=False, groups=["a", "b"]
        )
    with pytest.raises(ValueError, match=r"Expected batching in \('length', 'balanced'\)"):
        DemoConfig(batching="engines")
    with pytest.raises(ValueError, match="Expected warmup >= 0"):
        DemoConfig(warmup=-1)
    assert BATCHINGS == ("length", "balanced")


def test_resume_refuses_another_batching(tmp_path: Path) -> None:
    items = toy_items(8, 0)
    ck = tmp_path / "ck.pt"
    train_aligner(CFG, items, TrainConfig(steps=2, batch_size=4), checkpoint=ck, progress=False)
    other = TrainConfig(steps=3, batch_size=4, batching="balanced")
    with pytest.raises(CheckpointMismatch, match=r"batching \('length' there, 'balanced' now\)"):
        train_aligner(CFG, items, other, checkpoint=ck, progress=False)


def test_demo_defaults_keep_the_old_training_and_run_record() -> None:
    d = DemoConfig()
    t = TrainConfig()
    assert (d.warmup, d.batching, d.prior_warmup) == (t.warmup, t.batching, t.prior_warmup)
    assert (t.warmup, t.batching, t.prior_warmup) == (30, "length", 0)
    assert demo_features(d).word_silences is False
    rec = demo_record(d)
    new = ("warmup", "batching", "word_silences", "prior_warmup")
    assert not set(new) & set(rec)  # older run folders still resume
    other = DemoConfig(warmup=200, batching="balanced", word_silences=True, prior_warmup=50)
    rec = demo_record(other)
    assert [rec[k] for k in new] == [200, "balanced", True, 50]
    assert demo_features(other).word_silences is True


def test_prior_warmup_ramps_the_score_weight_then_restores_it() -> None:
    items = toy_items(12, 0)
    seen: list[float] = []

    def record(model, step):  # type: ignore[no-untyped-def]
        seen.append(model.score_scale)
        return {}

    cfg = TrainConfig(steps=6, batch_size=4, prior_warmup=4)
    res = train_aligner(CFG, items, cfg, progress=False, on_eval=record, eval_every=1)
    assert seen == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert res.model.score_scale == 1.0
    assert "score_scale" not in res.model.state_dict()
    plain = train_aligner(CFG, items, TrainConfig(steps=6, batch_size=4), progress=False)
    off = train_aligner(
        CFG, items, TrainConfig(steps=6, batch_size=4, prior_warmup=0), progress=False
    )
    weights = res.model.state_dict()
    assert any(not torch.equal(v, weights[k]) for k, v in plain.model.state_dict().items())
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, off.model.state_dict()[k]), k
    with pytest.raises(ValueError, match=r"Expected prior_warmup >= 0 \(an int, steps\); found -1"):
        train_aligner(CFG, items, TrainConfig(steps=1, prior_warmup=-1), progress=False)
    with pytest.raises(ValueError, match="Expected prior_warmup >= 0"):
        DemoConfig(prior_warmup=-5)
