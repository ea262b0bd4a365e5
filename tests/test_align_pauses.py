"""Optional pause states in corpus alignment: pause tokens, intervals, TextGrid tiers, stopping."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tests.align_toy import FEATURES, N_MELS, NUM_SYMBOLS, tone_corpus

from speechattn.functional.alignment import monotonic_alignment_search
from speechattn.recipes.align.data import AlignItem
from speechattn.recipes.align.evaluate import align_items, score, write_alignment
from speechattn.recipes.align.pauses import (
    min_pause_frames,
    pause_labels,
    short_word_pauses,
    with_pauses,
)
from speechattn.recipes.align.pipeline import AdaptStop
from speechattn.recipes.align.train import TrainConfig, _lr

TEMPLATES = torch.randn(NUM_SYMBOLS, N_MELS, generator=torch.Generator().manual_seed(99)) * 2


class OracleAligner:
    """Emissions = -squared distance to each token's spectral template; MAS decoding."""

    def eval(self) -> OracleAligner:
        return self

    def align(self, tokens, tl, mels, ml, skippable_mask=None, log_skip=0.0):
        tm = TEMPLATES[tokens]  # (B, U, D)
        d2 = ((tm.unsqueeze(2) - mels.unsqueeze(1)) ** 2).sum(-1)  # (B, U, T)
        e = torch.log_softmax(-d2, dim=1)
        path = monotonic_alignment_search(
            e, tl, ml, skippable_mask=skippable_mask, log_skip=log_skip
        )
        return path, path.path


def _item(lead: int, gap: int, tail: int, seed: int = 0) -> AlignItem:
    """Two words (3 + 2 phones, 4 frames each) with ``gap`` silent frames between them."""
    g = torch.Generator().manual_seed(seed)
    ph = [5, 6, 7, 8, 9]
    frames = [TEMPLATES[2]] * lead
    starts = []
    for k, p in enumerate(ph):
        if k == 3:
            frames += [TEMPLATES[2]] * gap
        starts.append(len(frames))
        frames += [TEMPLATES[p]] * 4
    frames += [TEMPLATES[2]] * tail
    mel = torch.stack(frames) + 0.1 * torch.randn(len(frames), N_MELS, generator=g)
    fs = FEATURES.frame_s
    t = [((s - 0.5) * fs if s else 0.0, (s + 4 - 0.5) * fs) for s in starts]
    if not tail:  # the last edge of an alignment is the end of the audio
        t[-1] = (t[-1][0], len(frames) * fs)
    return AlignItem(
        id=f"pause-{lead}-{gap}-{tail}",
        speaker="s",
        text="a b",
        tokens=torch.tensor([2, *ph, 2]),
        mel=mel,
        phones=[str(p) for p in ph],
        phone_token_index=[1, 2, 3, 4, 5],
        words=[("a", 0, 3), ("b", 3, 5)],
        num_samples=len(frames) * FEATURES.hop_length,
        gt_phones=t,
        gt_words=[(t[0][0], t[2][1]), (t[3][0], t[4][1])],
    )


def test_with_pauses_inserts_an_optional_token_between_words() -> None:
    it = _item(2, 5, 2)
    auto, sk = with_pauses(it, "auto")
    assert auto.tokens.tolist() == [2, 5, 6, 7, 2, 8, 9, 2]
    assert auto.phone_token_index == [1, 2, 3, 5, 6]
    assert [auto.tokens[k].item() for k in auto.phone_token_index] == [5, 6, 7, 8, 9]
    assert sk.tolist() == [True, False, False, False, True, False, False, True]
    assert pause_labels(auto) == {0: "sil", 4: "sp", 7: "sil"}
    none, sk = with_pauses(it, "none")
    assert none.tokens.tolist() == it.tokens.tolist() and sk.tolist() == [True] + [False] * 5 + [
        True
    ]
    _, sk = with_pauses(it, "forced")
    assert not sk.any()
    # An aligner with its own word pause tokens keeps them (nothing inserted).
    again, _ = with_pauses(auto, "auto")
    assert again.tokens.tolist() == auto.tokens.tolist()
    with pytest.raises(ValueError, match="pauses"):
        with_pauses(it, "sometimes")


def test_pause_in_audio_becomes_a_pause_interval(tmp_path: Path) -> None:
    items = [_item(2, 6, 3), _item(0, 0, 0, seed=1)]
    fs = FEATURES.frame_s
    auto = align_items(OracleAligner(), items, FEATURES, pauses="auto")
    forced = align_items(OracleAligner(), items, FEATURES, pauses="forced")
    # With a pause: words exact, the pause is an interval of its own ("sp", 6 frames).
    r = auto[0]
    assert [lab for *_, lab in r.pauses] == ["sil", "sp", "sil"]
    (a, b, _) = r.pauses[1]
    assert b - a == pytest.approx(6 * fs)
    assert score(auto[:1]).word_mean_abs_ms == pytest.approx(0.0, abs=1e-6)
    # Forced decoding has no pause state: the gap goes into a word.
    assert score(forced[:1]).word_mean_abs_ms > 10.0
    # No silence at all: every optional token gets 0 frames, the words fill the audio.
    r0 = auto[1]
    assert r0.pauses == []
    assert r0.words[0][0] == 0.0
    assert r0.words[-1][1] == pytest.approx(items[1].num_samples / FEATURES.sample_rate)
    assert score(auto[1:]).word_mean_abs_ms == pytest.approx(0.0, abs=1e-6)
    assert int(r0.durations.sum()) == items[1].mel.shape[0]
    # TextGrid: the words tier leaves the pause empty, the phones tier says sil / sp (MFA).
    from speechattn.data.textgrid import read_textgrid

    paths = write_alignment(r, tmp_path, FEATURES, formats=("textgrid", "json", "ctm"))
    words, phones = read_textgrid(paths[0])
    labels = [iv.label for iv in phones]
    assert labels[0] == "sil" and labels[-1] == "sil" and labels[4] == "sp"
    assert [iv.label for iv in words if iv.label] == ["a", "b"]
    raw = paths[0].read_text()
    words_tier = raw.split('name = "phones"')[0]
    assert words_tier.count('text = ""') == 3  # lead silence, the pause, trailing silence
    ctm = paths[2].read_text().split("\n")
    assert [line.split()[-1] for line in ctm if line] == ["a", "b"]
    import json

    js = json.loads(paths[1].read_text())
    assert [p["label"] for p in js["pauses"]] == ["sil", "sp", "sil"]
    assert js["tokens"][4] == "<sp>" and len(js["tokens"]) == len(js["durations_frames"])


def test_uniform_baseline_ignores_pause_mode() -> None:
    items = [_item(2, 6, 3)]
    a = align_items("uniform", items, FEATURES, pauses="auto")
    b = align_items("uniform", items, FEATURES, pauses="forced")
    assert a[0].words == b[0].words and a[0].pauses == []


def test_adapt_stop_rule() -> None:
    rule = AdaptStop(smoothing=5, patience=20, min_delta=0.01, min_steps=10)
    falling = [{"loss": 10.0 * math.exp(-i / 50)} for i in range(300)]
    assert not rule(falling)
    flat_after = [{"loss": 10.0 - i / 10 if i < 40 else 6.0} for i in range(200)]
    stops = [n for n in range(1, 201) if rule(flat_after[:n])]
    best, _ = rule.best_step(flat_after)
    assert stops and stops[0] == best + 20
    assert not rule(flat_after[:5])  # never before min_steps
    noisy = [{"loss": 5.0 + (0.3 if i % 2 else -0.3)} for i in range(100)]
    assert rule(noisy)  # noise around a flat objective: stops


def test_constant_schedule_and_should_stop() -> None:
    cfg = TrainConfig(steps=100, lr=1e-3, warmup=10, schedule="constant")
    assert _lr(5, cfg) == pytest.approx(6e-4)
    assert _lr(10, cfg) == _lr(99, cfg) == 1e-3
    from tests.align_toy import toy_items

    from speechattn.recipes.align.model import AlignerConfig
    from speechattn.recipes.align.train import train_aligner

    mcfg = AlignerConfig(num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16)
    res = train_aligner(
        mcfg,
        toy_items(8, 0),
        TrainConfig(steps=20, batch_size=4, schedule="constant"),
        progress=False,
        should_stop=lambda h: len(h) >= 3,
    )
    assert len(res.history) == 3
    with pytest.raises(ValueError, match="schedule"):
        train_aligner(mcfg, toy_items(2, 0), TrainConfig(schedule="linear"), progress=False)


def test_align_command_reports_pauses_and_why_adaptation_stopped(tmp_path: Path) -> None:
    """`speechattn align` end to end on a tiny corpus: the shipped aligner adapts 3 steps (step
    cap), decodes with pause states (auto), writes sil / sp in the TextGrid phones tier; with
    --no-adapt, auto still inserts them; --pauses forced puts no pause interval between words."""
    pytest.importorskip("espeakng_loader")
    import json

    from speechattn.cli import main

    texts = {"u1": "the cat sat", "u2": "a dog ran home"}
    data = tone_corpus(tmp_path / "corpus", texts, noise=0.005)
    common = ["--no-progress", "--threads", "1", "--min-pause-ms", "0"]  # keep every pause
    assert main(["align", str(data), "--out", str(tmp_path / "a"), "--steps", "3", *common]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    from speechattn.recipes.align.pipeline import _members, load_aligner

    members = len(_members(load_aligner()[0]))  # an ensemble adapts each member in turn
    steps = "+".join(["3"] * members) + " steps"
    assert summary["adaptation"].startswith(steps) and "step cap" in summary["adaptation"]
    assert summary["pauses"].startswith("auto,")
    js = json.loads((tmp_path / "a" / "alignments" / "u1.json").read_text())
    assert {p["label"] for p in js["pauses"]} <= {"sil", "sp"}
    assert js["tokens"].count("<sp>") == 2  # an optional pause between each two of 3 words
    raw = (tmp_path / "a" / "alignments" / "u1.TextGrid").read_text()
    assert 'text = "sil"' in raw  # the leading silence of the audio
    assert main(["align", str(data), "--out", str(tmp_path / "b"), "--no-adapt", *common]) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["pauses"].startswith("auto,") and "decoded as" not in summary["pauses"]
    assert "adaptation" not in summary
    js = json.loads((tmp_path / "b" / "alignments" / "u1.json").read_text())
    assert js["tokens"].count("<sp>") == 2  # unadapted, the same optional pauses
    args = ["align", str(data), "--out", str(tmp_path / "c"), "--no-adapt", "--pauses", "forced"]
    assert main([*args, *common]) == 0
    js = json.loads((tmp_path / "c" / "alignments" / "u2.json").read_text())
    assert [p["label"] for p in js["pauses"]] == ["sil", "sil"]  # forced: every edge >= 1 frame
    # The default minimum (50 ms): every pause left between words is at least that long, and
    # the words around a shorter one meet.
    args = ["align", str(data), "--out", str(tmp_path / "d"), "--no-adapt", "--no-progress"]
    assert main(args) == 0
    for name in ("u1", "u2"):
        js = json.loads((tmp_path / "d" / "alignments" / f"{name}.json").read_text())
        sp = [p for p in js["pauses"] if p["label"] == "sp"]
        assert all(p["end"] - p["start"] >= 0.05 - 1e-9 for p in sp)
        assert js["tokens"].count("<sp>") <= len(js["words"]) - 1
        ends = [w["end"] for w in js["words"][:-1]]
        starts = [w["start"] for w in js["words"][1:]]
        gaps = sum(b > a + 1e-9 for a, b in zip(ends, starts))
        assert gaps == len(sp)


def test_with_pauses_inserts_only_before_the_given_words() -> None:
    it = _item(2, 5, 2)
    none_kept, sk = with_pauses(it, "auto", words=set())
    assert none_kept.tokens.tolist() == it.tokens.tolist() and int(sk.sum()) == 2
    kept, _ = with_pauses(it, "auto", words={1})
    assert kept.tokens.tolist() == with_pauses(it, "auto")[0].tokens.tolist()


def test_short_pause_between_words_is_decoded_again_as_none() -> None:
    fs = FEATURES.frame_s
    short, long_ = _item(2, 2, 2), _item(2, 6, 2, seed=1)
    items = [short, long_]
    every = align_items(OracleAligner(), items, FEATURES, pauses="auto")
    # Without a minimum the 2 silent frames between the words are a pause of their own.
    assert [lab for *_, lab in every[0].pauses] == ["sil", "sp", "sil"]
    d0 = every[0].durations
    assert short_word_pauses(every[0].item, d0, 3) == ({1}, set())
    assert short_word_pauses(every[0].item, d0, 2) == (set(), {1})
    res = align_items(OracleAligner(), items, FEATURES, pauses="auto", min_pause_frames=3)
    # The short one is gone: the two words meet inside the gap, every frame is assigned.
    r = res[0]
    assert [lab for *_, lab in r.pauses] == ["sil", "sil"]
    assert r.words[0][1] == r.words[1][0]
    gap = (short.gt_words[0][1], short.gt_words[1][0])
    assert gap[0] - 1e-9 <= r.words[0][1] <= gap[1] + 1e-9
    assert int(r.durations.sum()) == short.mel.shape[0]
    assert len(r.durations) == len(short.tokens)  # decoded without the inserted token
    # The long pause (6 frames) stays: same result as without a minimum.
    assert res[1].pauses == every[1].pauses and res[1].words == every[1].words
    assert [lab for *_, lab in res[1].pauses][1] == "sp"
    assert res[1].pauses[1][1] - res[1].pauses[1][0] == pytest.approx(6 * fs)
    # A minimum of 2 frames keeps the 2-frame pause.
    kept = align_items(OracleAligner(), items, FEATURES, pauses="auto", min_pause_frames=2)
    assert kept[0].words == every[0].words
    with pytest.raises(ValueError, match="min_pause_frames"):
        align_items(OracleAligner(), items, FEATURES, pauses="auto", min_pause_frames=-1)


def test_min_pause_frames_from_seconds() -> None:
    assert min_pause_frames(0.0, 0.0116) == 0
    assert min_pause_frames(0.05, 256 / 22050) == 5
    assert min_pause_frames(0.03, 0.01) == 3
    with pytest.raises(ValueError, match="minimum pause"):
        min_pause_frames(-0.01, 0.01)
