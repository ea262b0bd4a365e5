"""Monotonic Viterbi with optional (skippable) tokens against a float64 brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.reference.alignment_ref import hmm_viterbi_skip_ref, skip_path_score_ref

from speechattn.functional.alignment import monotonic_alignment_search, monotonic_hmm_viterbi

IMPLS = ["torch", "numba"]


def _case(seed: int, b: int, u: int, t: int):
    g = torch.Generator().manual_seed(seed)
    emis = torch.randn(b, u, t, generator=g, dtype=torch.float64) * 2
    p = torch.rand(b, u, t, generator=g, dtype=torch.float64) * 0.98 + 0.01
    opt = torch.rand(b, u, generator=g) < 0.5
    return emis, p.log(), (1 - p).log(), opt


def _path_score(i, out, emis, stay, move, opt, log_skip, ui, ti) -> tuple[list[int], float]:
    seq = out.path[i, :ui, :ti].argmax(0).tolist()
    skip = np.where(opt[i, :ui].numpy(), log_skip, -math.inf)
    sc = skip_path_score_ref(
        seq, emis[i, :ui, :ti].numpy(), stay[i, :ui, :ti].numpy(), move[i, :ui, :ti].numpy(), skip
    )
    return seq, sc


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("log_skip", [0.0, -1.5])
def test_skip_viterbi_matches_bruteforce(impl: str, log_skip: float) -> None:
    b, u, t = 6, 5, 6
    emis, stay, move, opt = _case(7, b, u, t)
    opt[0] = torch.tensor([True, False, True, True, False])  # a run of two optional tokens
    opt[1] = torch.tensor([True, False, False, False, True])  # edge silences
    tl = torch.tensor([5, 5, 4, 3, 5, 1])
    ml = torch.tensor([6, 4, 6, 2, 3, 2])
    opt[4] = True  # every token optional: the path may pass all but one
    out = monotonic_hmm_viterbi(
        emis, stay, move, tl, ml, skippable_mask=opt, log_skip=log_skip, impl=impl
    )
    for i in range(b):
        ui, ti = int(tl[i]), int(ml[i])
        best, best_score = hmm_viterbi_skip_ref(
            emis[i, :ui, :ti].numpy(),
            stay[i, :ui, :ti].numpy(),
            move[i, :ui, :ti].numpy(),
            opt[i, :ui].numpy(),
            log_skip,
        )
        seq, sc = _path_score(i, out, emis, stay, move, opt, log_skip, ui, ti)
        assert sc == pytest.approx(best_score, abs=1e-9), (i, seq, best)
        d = out.durations[i]
        assert int(d.sum()) == ti
        assert (out.path[i, :ui, :ti].sum(0) == 1).all()
        assert ((d[:ui] >= 1) | opt[i, :ui]).all()  # only optional tokens may get 0 frames
        assert (d[ui:] == 0).all() and out.path[i, :, ti:].abs().sum() == 0
        assert seq == sorted(seq)


def test_skip_viterbi_impls_agree_and_padding_invariant() -> None:
    b, u, t = 5, 9, 30
    emis, stay, move, opt = _case(11, b, u, t)
    tl = torch.tensor([9, 7, 3, 9, 5])
    ml = torch.tensor([30, 25, 12, 9, 5])
    paths = [
        monotonic_hmm_viterbi(emis, stay, move, tl, ml, skippable_mask=opt, impl=impl)
        for impl in IMPLS
    ]
    torch.testing.assert_close(paths[0].path, paths[1].path)
    torch.testing.assert_close(paths[0].durations, paths[1].durations)
    noisy = [x.clone() for x in (emis, stay, move)]
    opt2 = opt.clone()
    for i in range(b):
        for x in noisy:
            x[i, int(tl[i]) :] = 1e3
            x[i, :, int(ml[i]) :] = -7.0
        opt2[i, int(tl[i]) :] = ~opt2[i, int(tl[i]) :]
    for impl in IMPLS:
        again = monotonic_hmm_viterbi(*noisy, tl, ml, skippable_mask=opt2, impl=impl)
        torch.testing.assert_close(again.path, paths[0].path)


@settings(max_examples=20, deadline=None)
@given(u=st.integers(1, 5), t=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_skip_viterbi_property_bruteforce(u: int, t: int, seed: int) -> None:
    emis, stay, move, opt = _case(seed, 1, u, t)
    need = int((~opt[0]).sum())
    if t < max(need, 1):
        return
    for impl in IMPLS:
        out = monotonic_hmm_viterbi(
            emis, stay, move, torch.tensor([u]), torch.tensor([t]), skippable_mask=opt, impl=impl
        )
        _, best = hmm_viterbi_skip_ref(
            emis[0].numpy(), stay[0].numpy(), move[0].numpy(), opt[0].numpy(), 0.0
        )
        _, sc = _path_score(0, out, emis, stay, move, opt, 0.0, u, t)
        assert sc == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
def test_no_optional_token_is_the_plain_viterbi(impl: str) -> None:
    emis, stay, move, _ = _case(5, 3, 4, 9)
    tl, ml = torch.tensor([4, 3, 2]), torch.tensor([9, 6, 2])
    plain = monotonic_hmm_viterbi(emis, stay, move, tl, ml, impl=impl)
    none = torch.zeros(3, 4, dtype=torch.bool)
    none[2, 3] = True  # padding only: ignored
    same = monotonic_hmm_viterbi(emis, stay, move, tl, ml, skippable_mask=none, impl=impl)
    torch.testing.assert_close(plain.path, same.path)


@pytest.mark.parametrize("impl", IMPLS)
def test_pause_with_no_evidence_is_skipped_and_a_pause_with_evidence_is_kept(impl: str) -> None:
    """Tokens a P b: frames 0-3 say a, 4-7 say b. P (optional) gets 0 frames; when frames 4-5
    say P it gets them, where the forced decoder steals a frame from a word when P has none."""
    e = torch.full((1, 3, 8), -5.0, dtype=torch.float64)
    e[0, 0, :4] = 0.0
    e[0, 2, 4:] = 0.0
    opt = torch.tensor([[False, True, False]])
    out = monotonic_alignment_search(e, skippable_mask=opt, impl=impl)
    assert out.durations.tolist() == [[4, 0, 4]]
    forced = monotonic_alignment_search(e, impl=impl)
    assert forced.durations[0, 1] == 1
    e2 = e.clone()
    e2[0, 1, 4:6] = 0.0
    e2[0, 2, 4:6] = -5.0
    out2 = monotonic_alignment_search(e2, skippable_mask=opt, impl=impl)
    assert out2.durations.tolist() == [[4, 2, 2]]
    # A skip penalty larger than the evidence keeps the pause out.
    out3 = monotonic_alignment_search(e, skippable_mask=opt, log_skip=-3.0, impl=impl)
    assert out3.durations.tolist() == [[4, 0, 4]]


def test_skip_viterbi_bad_inputs() -> None:
    emis = torch.zeros(1, 3, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="bool"):
        monotonic_hmm_viterbi(emis, skippable_mask=torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(B, U\)"):
        monotonic_hmm_viterbi(emis, skippable_mask=torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="finite"):
        monotonic_hmm_viterbi(
            emis, skippable_mask=torch.ones(1, 3, dtype=torch.bool), log_skip=float("nan")
        )
    # Two required tokens need two frames; optional ones need none.
    short = torch.zeros(1, 3, 1, dtype=torch.float64)
    with pytest.raises(
        ValueError,
        match=r"per token that is not skippable: expected mel_lengths\[0\] >= 2 .*; found 1\.",
    ):
        monotonic_hmm_viterbi(short, skippable_mask=torch.tensor([[True, False, False]]))
    out = monotonic_hmm_viterbi(short, skippable_mask=torch.tensor([[True, False, True]]))
    assert out.durations.tolist() == [[0, 1, 0]]
