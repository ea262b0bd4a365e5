"""build_items computes the front end on one torch thread, restores the caller's count, and
gives the items the multi-threaded computation gives, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.align_toy import tone_corpus

from speechattn.data.corpus import load_corpus
from speechattn.recipes.align.data import FeatureConfig, build_items, new_symbol_table

TEXTS = {
    "a": "the cat sat on the mat",
    "b": "a dog barked twice at noon",
    "c": "seven green apples fell down",
}


@pytest.fixture()
def threads(torch_two_threads: None) -> None:
    """2 torch threads (conftest's ``torch_two_threads``)."""


def _utts(tmp_path: Path):
    return load_corpus(tone_corpus(tmp_path / "corpus", TEXTS, noise=0.05))


def test_front_end_runs_on_one_thread_and_restores(tmp_path: Path, threads) -> None:
    seen: list[int] = []

    def channel(wave: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        seen.append(torch.get_num_threads())
        return wave

    items = build_items(
        _utts(tmp_path), new_symbol_table(), FeatureConfig(), grow_symbols=True, channel=channel
    )
    assert len(items) == len(TEXTS)
    assert seen == [1] * len(TEXTS)
    assert torch.get_num_threads() == 2


def test_thread_count_restored_after_an_error(tmp_path: Path, threads) -> None:
    def channel(wave: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        raise RuntimeError("channel failed")

    with pytest.raises(RuntimeError, match="channel failed"):
        build_items(
            _utts(tmp_path), new_symbol_table(), FeatureConfig(), grow_symbols=True, channel=channel
        )
    assert torch.get_num_threads() == 2


def test_items_equal_the_two_thread_computation(tmp_path: Path, threads) -> None:
    utts = _utts(tmp_path)
    cfg = FeatureConfig()
    one = build_items(utts, new_symbol_table(), cfg, grow_symbols=True, envelopes=True)
    # The same function without the one-thread wrapper, on the caller's two threads.
    two = build_items.__wrapped__(utts, new_symbol_table(), cfg, grow_symbols=True, envelopes=True)  # type: ignore[attr-defined]
    assert len(one) == len(two) == len(TEXTS)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a.mel, b.mel)
        assert torch.equal(a.tokens, b.tokens)
        assert np.array_equal(a.extra["envelope"].level_db, b.extra["envelope"].level_db)


def test_skip_warning_points_at_the_caller(tmp_path: Path, threads) -> None:
    utts = _utts(tmp_path)
    utts[0].audio_path.write_bytes(b"not audio")
    with pytest.warns(UserWarning, match="skipped") as rec:
        items = build_items(utts, new_symbol_table(), FeatureConfig(), grow_symbols=True)
    assert len(items) == len(TEXTS) - 1
    assert any(Path(w.filename).name == Path(__file__).name for w in rec)
