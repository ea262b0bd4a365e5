"""Decoding (``align``) skips the training loss and gives what forward + decoding gave before."""

from __future__ import annotations

import pytest
import torch
from tests.align_toy import N_MELS, NUM_SYMBOLS, toy_items

import speechattn.recipes.align.model as model_mod
from speechattn.recipes.align.data import collate_items
from speechattn.recipes.align.model import (
    ENSEMBLE_COMBINES,
    AlignerConfig,
    AlignerEnsemble,
    TextMelAligner,
    _hard_alignment,
)


def _model(seed: int, kind: str) -> TextMelAligner:
    torch.manual_seed(seed)
    cfg = AlignerConfig(kind=kind, num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16)
    return TextMelAligner(cfg).eval()


def _batch():
    return collate_items(toy_items(6, 5))


def _count_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"forward_sum_loss": 0, "monotonic_hmm_log_likelihood": 0}
    for name in calls:
        fn = getattr(model_mod, name)

        def counted(*a, _fn=fn, _name=name, **k):
            calls[_name] += 1
            return _fn(*a, **k)

        monkeypatch.setattr(model_mod, name, counted)
    return calls


@pytest.mark.parametrize("kind", ["sma", "fs", "mha"])
def test_align_equals_forward_then_decode_bitwise(kind: str) -> None:
    """The path and soft alignment are those read from the full forward (loss included)."""
    model = _model(1, kind)
    tokens, tl, mels, ml = _batch()
    with torch.no_grad():
        full = model(tokens, tl, mels, ml)
        ref_path, ref_soft = _hard_alignment(full, tl, ml, None, 0.0)
    path, soft = model.align(tokens, tl, mels, ml)
    assert torch.equal(path.durations, ref_path.durations)
    assert torch.equal(soft, ref_soft)
    assert torch.isfinite(full.loss)  # forward still computes the training loss


@pytest.mark.parametrize("kind", ["sma", "fs"])
def test_align_runs_no_loss_pass(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """align computes no forward-sum loss, and the HMM likelihood only for the posterior (sma)."""
    model = _model(2, kind)
    tokens, tl, mels, ml = _batch()
    calls = _count_calls(monkeypatch)
    model.align(tokens, tl, mels, ml)
    assert calls["forward_sum_loss"] == 0
    assert calls["monotonic_hmm_log_likelihood"] == (1 if kind == "sma" else 0)
    model.train()
    model(tokens, tl, mels, ml).loss.backward()  # training still computes both terms
    assert calls["forward_sum_loss"] == 1
    assert calls["monotonic_hmm_log_likelihood"] == (2 if kind == "sma" else 0)


@pytest.mark.parametrize("combine", ENSEMBLE_COMBINES)
def test_ensemble_align_equals_forward_then_decode(
    combine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ens = AlignerEnsemble([_model(3, "sma"), _model(4, "sma")], combine=combine).eval()
    tokens, tl, mels, ml = _batch()
    if combine != "median":
        with torch.no_grad():
            ref_path, ref_soft = _hard_alignment(ens(tokens, tl, mels, ml), tl, ml, None, 0.0)
    else:
        refs = [m.align(tokens, tl, mels, ml) for m in ens.members]  # type: ignore[operator]
        ends = torch.stack([p.durations for p, _ in refs]).cumsum(-1)
        ref_end = ends.sort(dim=0).values[0]
        ref_durations = torch.diff(ref_end, dim=-1, prepend=torch.zeros_like(ref_end[:, :1]))
    calls = _count_calls(monkeypatch)
    path, soft = ens.align(tokens, tl, mels, ml)
    assert calls["forward_sum_loss"] == 0
    if combine != "median":
        assert calls["monotonic_hmm_log_likelihood"] == 1
        assert torch.equal(path.durations, ref_path.durations)
        assert torch.equal(soft, ref_soft)
    else:
        assert torch.equal(path.durations, ref_durations)
