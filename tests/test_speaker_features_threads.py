"""The speaker recipe's feature set is computed on one torch thread (the caller's count restored,
also after an error) and equals the multi-threaded computation bit for bit; the shared helper
:mod:`speechattn._threads` itself."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tests.speaker_toy import SR, toy_voice

from speechattn._threads import on_one_torch_thread, one_torch_thread
from speechattn.recipes.speaker import data as D
from speechattn.recipes.speaker.cli import config_from_args


@pytest.fixture()
def threads(torch_two_threads: None) -> None:
    """2 torch threads (conftest's ``torch_two_threads``)."""


def _utts(tmp_path: Path, n: int = 4) -> list[D.SpeakerUtterance]:
    utts = []
    for i in range(n):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, toy_voice(i), SR)
        utts.append(D.SpeakerUtterance(f"u{i}", path, f"s{i % 2}"))
    return utts


def _cfg(*items: str):
    cfg = config_from_args(argparse.Namespace(quick=True, set=list(items)))
    cfg.sample_rate = SR
    return cfg


def test_feature_set_runs_on_one_thread_and_restores(tmp_path: Path, threads) -> None:
    seen: list[int] = []

    def channel(wave: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        seen.append(torch.get_num_threads())
        return wave

    cfg = _cfg("augment_copies=2")
    fs = D.load_feature_set(_utts(tmp_path), cfg, train_labels={"s0"}, channel=channel)
    assert fs.labels.count("s0") == 2 * 3  # two s0 files, each with two channel copies
    assert seen == [1] * 4
    assert torch.get_num_threads() == 2


def test_thread_count_restored_after_an_error(tmp_path: Path, threads) -> None:
    def channel(wave: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        raise RuntimeError("channel failed")

    with pytest.raises(RuntimeError, match="channel failed"):
        D.load_feature_set(
            _utts(tmp_path), _cfg("augment_copies=1"), train_labels={"s0"}, channel=channel
        )
    assert torch.get_num_threads() == 2


def test_features_equal_the_two_thread_computation(tmp_path: Path, threads) -> None:
    # every kind of copy: speed, pitch and formant pseudo-speakers, and channel copies through
    # the resampling channel with real rooms
    cfg = _cfg(
        "augment_copies=2",
        "speed_perturb=0.9,1.1",
        "pitch_perturb=2",
        "formant_shift=1.1",
        "p_real_room=0.5",
        "p_resample=0.5",
    )
    utts = _utts(tmp_path)
    one = D.load_feature_set(utts, cfg, train_labels={"s0"})
    # The same function without the one-thread wrapper, on the caller's two threads.
    two = D.load_feature_set.__wrapped__(utts, cfg, train_labels={"s0"})  # type: ignore[attr-defined]
    assert torch.get_num_threads() == 2
    assert one.labels == two.labels and one.ids == two.ids
    assert len(one.feats) == 2 * (1 + 4) * (1 + 2) + 2  # s0: 4 pseudo-speakers, 2 copies each
    for a, b in zip(one.feats, two.feats, strict=True):
        assert torch.equal(a, b)


def test_skip_warning_points_at_the_caller(tmp_path: Path, threads) -> None:
    utts = _utts(tmp_path)
    utts[0].audio_path.write_bytes(b"not audio")
    with pytest.warns(UserWarning, match="skipping") as rec:
        fs = D.load_feature_set(utts, _cfg("augment_copies=0"))
    assert len(fs.feats) == len(utts) - 1
    assert [Path(w.filename).name for w in rec] == [Path(__file__).name]


def test_one_torch_thread_nests_and_leaves_one_thread_alone(threads) -> None:
    with one_torch_thread():
        assert torch.get_num_threads() == 1
        with one_torch_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2

    @on_one_torch_thread
    def count(*, extra: int) -> int:
        """Doc kept."""
        return torch.get_num_threads() + extra

    assert count(extra=10) == 11 and count.__doc__ == "Doc kept."
    assert torch.get_num_threads() == 2
