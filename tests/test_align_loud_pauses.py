"""Pauses between words must be quiet: a loud one is split between its two words."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from tests.align_toy import FEATURES, N_MELS, NUM_SYMBOLS, TONE_SAMPLES, tone_corpus

from speechattn.functional.alignment import monotonic_alignment_search
from speechattn.recipes.align.cli import loudness_or_off
from speechattn.recipes.align.data import AlignItem
from speechattn.recipes.align.evaluate import align_items
from speechattn.recipes.align.pauses import (
    DEFAULT_MAX_PAUSE_LOUDNESS,
    frame_loudness,
    loud_word_pauses,
    split_word_pauses,
    with_pauses,
)

_T = torch.randn(NUM_SYMBOLS, N_MELS, generator=torch.Generator().manual_seed(7)) * 2
TEMPLATES = _T - _T.mean(-1, keepdim=True)  # zero-mean: a frame's level is its mean over bins


class CentredOracle:
    """Emissions from level-free frames (each frame minus its mean over bins): the decoding does
    not depend on how loud a frame is, only on its spectral shape; MAS decoding."""

    def eval(self) -> CentredOracle:
        return self

    def align(self, tokens, tl, mels, ml, skippable_mask=None, log_skip=0.0):
        x = mels - mels.mean(-1, keepdim=True)
        d2 = ((TEMPLATES[tokens].unsqueeze(2) - x.unsqueeze(1)) ** 2).sum(-1)
        e = torch.log_softmax(-d2, dim=1)
        path = monotonic_alignment_search(
            e, tl, ml, skippable_mask=skippable_mask, log_skip=log_skip
        )
        return path, path.path


def _item(gap: int, gap_level: float, *, seed: int = 0) -> AlignItem:
    """Two words (3 + 2 phones, 4 frames each), silence of level -5 at the edges (3 frames each),
    speech of level +2, and ``gap`` silence-shaped frames of level ``gap_level`` between them."""
    g = torch.Generator().manual_seed(seed)
    ph = [5, 6, 7, 8, 9]
    frames: list[torch.Tensor] = [TEMPLATES[2] - 5.0] * 3
    for k, p in enumerate(ph):
        if k == 3:
            frames += [TEMPLATES[2] + gap_level] * gap
        frames += [TEMPLATES[p] + 2.0] * 4
    frames += [TEMPLATES[2] - 5.0] * 3
    mel = torch.stack(frames) + 0.05 * torch.randn(len(frames), N_MELS, generator=g)
    return AlignItem(
        id=f"loud-{gap}-{gap_level}",
        speaker="s",
        text="a b",
        tokens=torch.tensor([2, *ph, 2]),
        mel=mel,
        phones=[str(p) for p in ph],
        phone_token_index=[1, 2, 3, 4, 5],
        words=[("a", 0, 3), ("b", 3, 5)],
        num_samples=len(frames) * FEATURES.hop_length,
    )


def test_frame_loudness_is_relative_and_level_free() -> None:
    mel = torch.randn(30, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q = frame_loudness(mel)
    assert q.shape == (30,)
    assert np.percentile(q, 5) == pytest.approx(0.0) and np.median(q) == pytest.approx(1.0)
    assert q.min() < 0 and int(np.argmin(q)) == int(mel.mean(-1).argmin())
    # An affine map of every frame's level (gain, normalisation, zeroed bins) changes nothing.
    np.testing.assert_allclose(frame_loudness(3.0 * mel - 7.0), q, atol=1e-9)
    wider = torch.cat(
        [mel, torch.zeros(30, 4, dtype=mel.dtype)], dim=1
    )  # bins a band mask set to 0
    np.testing.assert_allclose(frame_loudness(wider), q, atol=1e-9)
    assert not frame_loudness(torch.ones(5, 8)).any()  # all frames alike: all quiet
    with pytest.raises(ValueError, match=r"\(T, n_mels\)"):
        frame_loudness(torch.zeros(2, 3, 4))


def test_loud_and_split_word_pauses_by_hand() -> None:
    it, _ = with_pauses(_item(5, 2.0), "auto")  # tokens: sil 5 6 7 <pause> 8 9 sil
    assert it.tokens.tolist() == [2, 5, 6, 7, 2, 8, 9, 2]
    d = np.array([3, 4, 4, 4, 5, 4, 4, 3])
    assert loud_word_pauses(it, d, 0.3) == {1}  # the gap is as loud as speech
    assert loud_word_pauses(it, d, 10.0) == set()
    quiet, _ = with_pauses(_item(5, -5.0), "auto")
    assert loud_word_pauses(quiet, d, 0.3) == set()  # as quiet as the edges
    # No frames in the pause token: nothing to split.
    assert loud_word_pauses(it, np.array([3, 4, 4, 9, 0, 4, 4, 3]), 0.3) == set()
    s = split_word_pauses(it, d, {1})
    assert s.tolist() == [3, 4, 4, 6, 0, 7, 4, 3]  # 5 frames: 2 before, 3 after
    assert int(s.sum()) == int(d.sum())
    even = np.array([3, 4, 4, 4, 6, 4, 4, 3])
    assert split_word_pauses(it, even, {1}).tolist() == [3, 4, 4, 7, 0, 7, 4, 3]
    assert split_word_pauses(it, d, set()).tolist() == d.tolist()
    with pytest.raises(ValueError, match="one per token"):
        loud_word_pauses(it, d[:-1], 0.3)


@pytest.mark.parametrize("gap", [6, 7])
def test_a_loud_pause_between_words_is_split_in_its_middle(gap: int) -> None:
    fs = FEATURES.frame_s
    loud, quiet = _item(gap, 2.0), _item(gap, -5.0, seed=1)
    items = [loud, quiet]
    off = align_items(CentredOracle(), items, FEATURES, pauses="auto", min_pause_frames=5)
    on = align_items(
        CentredOracle(),
        items,
        FEATURES,
        pauses="auto",
        min_pause_frames=5,
        max_pause_loudness=DEFAULT_MAX_PAUSE_LOUDNESS,
    )
    # Without the rule both gaps are pauses (the decoding does not see levels).
    for r in off:
        assert [lab for *_, lab in r.pauses] == ["sil", "sp", "sil"]
        assert r.pauses[1][1] - r.pauses[1][0] == pytest.approx(gap * fs)
    # The quiet one stays a pause, unchanged.
    assert on[1].words == off[1].words and on[1].pauses == off[1].pauses
    # The loud one is not a pause: the words meet in its middle, every frame still assigned.
    r = on[0]
    assert [lab for *_, lab in r.pauses] == ["sil", "sil"]
    a_end, b_start = r.words[0][1], r.words[1][0]
    assert a_end == b_start
    mid = (off[0].pauses[1][0] + off[0].pauses[1][1]) / 2
    assert abs(a_end - mid) <= 0.5 * fs + 1e-9
    assert int(r.durations.sum()) == loud.mel.shape[0]
    assert r.words[0][0] == off[0].words[0][0] and r.words[1][1] == off[0].words[1][1]
    # Forced and none decodings have no pause between words to split.
    for mode in ("forced", "none"):
        a = align_items(CentredOracle(), [loud], FEATURES, pauses=mode, max_pause_loudness=0.3)
        b = align_items(CentredOracle(), [loud], FEATURES, pauses=mode)
        assert a[0].words == b[0].words


def test_max_pause_loudness_is_checked() -> None:
    with pytest.raises(ValueError, match="max_pause_loudness"):
        align_items(
            CentredOracle(), [_item(6, 2.0)], FEATURES, pauses="auto", max_pause_loudness=-1
        )
    assert loudness_or_off("off") is None and loudness_or_off("0.5") == 0.5
    for bad in ("-1", "nan", "inf", "loud"):
        with pytest.raises(argparse.ArgumentTypeError, match="'off'"):
            loudness_or_off(bad)


def test_align_cli_default_is_the_library_default() -> None:
    from speechattn.cli import build_parser

    args = build_parser().parse_args(["align", "corpus.jsonl", "--out", "o"])
    assert args.max_pause_loudness == DEFAULT_MAX_PAUSE_LOUDNESS and args.reverse_pass
    args = build_parser().parse_args(
        ["align", "corpus.jsonl", "--out", "o", "--max-pause-loudness", "off", "--no-reverse-pass"]
    )
    assert args.max_pause_loudness is None and not args.reverse_pass


class LaggingOracle(CentredOracle):
    """Emissions of each frame taken from the frame ``lag`` before it (in the decoding's own
    direction of time): a forward path puts every boundary ``lag`` frames late, a path decoded
    reversed in time puts it ``lag`` frames early."""

    lag = 2

    def align(self, tokens, tl, mels, ml, skippable_mask=None, log_skip=0.0):
        shifted = mels.clone()
        for b in range(mels.shape[0]):
            t = int(ml[b])
            shifted[b, self.lag : t] = mels[b, : t - self.lag]
        return super().align(tokens, tl, shifted, ml, skippable_mask, log_skip)


@pytest.mark.parametrize("mode", ["auto", "none", "forced"])
def test_reverse_pass_cancels_a_lag_that_flips_with_time(mode: str) -> None:
    items = [_item(6, -5.0, seed=s) for s in range(3)]
    exact = align_items(CentredOracle(), items, FEATURES, pauses=mode)
    late = align_items(LaggingOracle(), items, FEATURES, pauses=mode)
    both = align_items(LaggingOracle(), items, FEATURES, pauses=mode, reverse_pass=True)
    fs = FEATURES.frame_s
    for e, lt, b in zip(exact, late, both):
        assert int(b.durations.sum()) == e.item.mel.shape[0]
        assert all(int(b.durations[k]) >= 1 for k in b.item.phone_token_index)
        assert len(b.durations) == len(lt.durations)
        inner = [(w[1], v[0]) for w, v in zip(e.words[:-1], e.words[1:])]
        late_inner = [(w[1], v[0]) for w, v in zip(lt.words[:-1], lt.words[1:])]
        both_inner = [(w[1], v[0]) for w, v in zip(b.words[:-1], b.words[1:])]
        for (te, ts), (le, ls), (be, bs) in zip(inner, late_inner, both_inner):
            assert le - te == pytest.approx(LaggingOracle.lag * fs)  # the forward lag
            assert ls - ts == pytest.approx(LaggingOracle.lag * fs)
            assert abs(be - te) < 1e-9 and abs(bs - ts) < 1e-9  # cancelled
        # The exact oracle's two passes agree: nothing moves.
        again = align_items(CentredOracle(), [e.item], FEATURES, pauses="none", reverse_pass=True)
        assert [w[:2] for w in again[0].words] == [w[:2] for w in e.words]


def test_align_cli_reverse_pass_runs_uncalibrated(tmp_path) -> None:
    """`speechattn align` (reverse pass on by default) writes alignments of the whole audio;
    "auto" calibration applies the shipped consensus table to the forward decoding only
    (`--no-reverse-pass`)."""
    pytest.importorskip("espeakng_loader")
    import json

    from speechattn.cli import main

    data = tone_corpus(tmp_path / "corpus", {"u1": "the cat sat"}, noise=0.005)
    common = ["--no-progress", "--threads", "1", "--no-adapt"]
    assert (
        main(["align", str(data), "--out", str(tmp_path / "f"), "--no-reverse-pass", *common]) == 0
    )
    assert main(["align", str(data), "--out", str(tmp_path / "r"), *common]) == 0
    fwd = json.loads((tmp_path / "f" / "summary.json").read_text())
    rev = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert fwd["decoding"] == "forward" and fwd["boundary calibration"] == "on (consensus)"
    assert rev["decoding"].startswith("forward + reversed") and rev["boundary calibration"] == "off"
    js = json.loads((tmp_path / "r" / "alignments" / "u1.json").read_text())
    frames = int(np.ceil(TONE_SAMPLES / 256))
    assert abs(sum(js["durations_frames"]) - frames) <= 1
    assert [w["label"] for w in js["words"]] == ["the", "cat", "sat"]
