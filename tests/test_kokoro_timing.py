"""Kokoro's timings: punctuation passed to the model, token spans from durations and energy."""

from __future__ import annotations

import numpy as np
import pytest

from speechattn.data.engines._kokoro import punctuation_after, token_spans


def test_punctuation_after_each_word() -> None:
    text = "Later, Paula watched the child; is it on the table?"
    labels = ["Later", "Paula", "watched", "the", "child", "is", "it", "on the", "table"]
    assert punctuation_after(text, labels) == [",", "", "", "", ";", "", "", "", "?"]
    # a label not found in order: no punctuation anywhere (no pause is invented)
    assert punctuation_after("One, two.", ["two", "One"]) == ["", ""]
    assert punctuation_after("No marks here", ["No", "marks", "here"]) == ["", "", ""]


def _reference(frames, energy, symbols, max_lead=3):
    """Loop reference in float64 of the rule in token_spans' docstring."""
    marks = set(",.;:!?\u2014\u2026")
    is_phone = [bool(s) and s != " " and s not in marks for s in symbols]
    edges = [0]
    for n in frames:
        edges.append(edges[-1] + 2 * int(n))
    spans = [[edges[i], edges[i + 1]] for i in range(len(frames))]
    sil = sorted(float(x) for x in energy[: edges[1]])
    speech = sorted(
        float(energy[h]) for i in range(len(frames)) if is_phone[i] for h in range(*spans[i])
    )

    def median(v):
        n = len(v)
        return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])

    thr = 0.5 * (median(sil) + median(speech))
    loud = [float(x) > thr for x in energy]
    first = is_phone.index(True)
    rise = loud.index(True)
    lead = min(max(spans[first][0] - rise, 0), 2 * max_lead)
    spans = [[a - lead, b - lead] for a, b in spans]
    spans[0][0] = 0
    out = [list(s) for s in spans]
    for i in range(len(frames)):
        if not is_phone[i]:
            continue
        a, b = spans[i]
        hits = [h for h in range(a, b) if loud[h]]
        if i + 1 == len(frames) - 1 or symbols[i + 1] in marks:
            out[i][1] = hits[-1] + 1 if hits else min(b, a + 4)
        j = i - 1
        while j > 0 and symbols[j] == " ":
            j -= 1
        if j > 0 and symbols[j] in marks and hits:
            out[i][0] = hits[0]
    return out


def _example():
    # BOS, "a" "b" "," " " "c" "d" "." EOS; frames of 600 samples, energy in half-frames
    symbols = ["", "a", "b", ",", " ", "c", "d", ".", ""]
    frames = np.array([6, 8, 5, 3, 1, 3, 8, 2, 1])  # half-frame edges 0 12 28 38 44 46 52 68 72 74
    e = np.full(2 * frames.sum(), -9.0)
    e[10:32] = 8.0  # sound rises at 10, 2 half-frames before "a" (12); "b" sounds for 4
    e[46:54] = 8.0  # after the comma's pause, up to 4 half-frames into "d"
    return frames, e, symbols


def test_token_spans_by_hand() -> None:
    frames, e, symbols = _example()
    got = token_spans(frames, e, symbols=symbols)
    # lead 2: spans move 2 earlier (BOS 0..10, a 10..26, b 26..36, "," 36..42, " " 42..44,
    # c 44..50, d 50..66, "." 66..70, EOS 70..72); b (before ",") ends after its sound at 32,
    # c (after ", ") starts at its first sound, 46; d (before ".") ends after its sound at 54
    expect = [
        [0, 10],
        [10, 26],
        [26, 32],
        [36, 42],
        [42, 44],
        [46, 50],
        [50, 54],
        [66, 70],
        [70, 72],
    ]
    assert got.tolist() == expect
    assert _reference(frames, e, symbols) == expect
    # with no lead allowed, the spans stay on the frames' timeline
    assert token_spans(frames, e, symbols=symbols, max_lead=0)[1].tolist() == [12, 28]


def test_token_spans_match_the_loop_reference_on_random_inputs() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(3, 12))
        symbols = [""] + [str(rng.choice(list("ab ,.?x"))) for _ in range(n)] + [""]
        if not any(s and s not in " ,.?" for s in symbols):
            symbols[1] = "a"
        frames = rng.integers(1, 6, size=len(symbols))
        e = np.where(rng.random(2 * frames.sum()) < 0.6, 8.0, -9.0) + rng.normal(
            0, 0.3, 2 * frames.sum()
        )
        e[: 2 * frames[0] - 6] = -9.0
        got = token_spans(frames, e, symbols=symbols)
        assert (got[:, 0] <= got[:, 1]).all()
        if np.median(e[: 2 * frames[0]]) + 1.0 <= np.median(
            np.concatenate(
                [
                    e[2 * frames[:i].sum() : 2 * frames[: i + 1].sum()]
                    for i in range(1, len(symbols) - 1)
                    if symbols[i] and symbols[i] not in " ,.?"
                ]
            )
        ):
            assert got.tolist() == _reference(frames, e, symbols)


def test_token_spans_without_contrast_keep_the_durations() -> None:
    frames = np.array([3, 2, 2, 1])
    e = np.zeros(2 * frames.sum())
    got = token_spans(frames, e, symbols=["", "a", "b", ""])
    assert got.tolist() == [[0, 6], [6, 10], [10, 14], [14, 16]]


def test_token_spans_refuse_bad_shapes() -> None:
    with pytest.raises(ValueError, match="energy curve of 2 \\* 8 values"):
        token_spans(np.array([3, 2, 2, 1]), np.zeros(10), symbols=["", "a", "b", ""])
    with pytest.raises(ValueError, match=">= 1 frame"):
        token_spans(np.array([3, 0, 2, 1]), np.zeros(12), symbols=["", "a", "b", ""])


@pytest.mark.slow
def test_kokoro_labels_follow_its_sound() -> None:
    """The engine: a pause at the comma only, first and last words at the sound's edges."""
    pytest.importorskip("espeakng_loader")
    from speechattn.data.engines import get_engine, synthesize

    reason = get_engine("kokoro").missing()
    if reason is not None:
        pytest.skip(f"kokoro: {reason}; install: {get_engine('kokoro').install}")
    r = synthesize("The road suddenly followed four doctors, and Oscar slept.", "kokoro:jm_kumo")
    x = np.asarray(r.waveform, dtype=np.float64)
    hop = r.sample_rate // 100
    db = 10 * np.log10((x[: len(x) // hop * hop].reshape(-1, hop) ** 2).mean(1) + 1e-12)
    # 45 dB: a final stop's release ("slept") is 35-45 dB below the loudest frame
    sound = np.nonzero(db > db.max() - 45)[0]
    words = [w.label for w in r.words]
    assert words[5:7] == ["doctors", "and"]
    gaps = [b.start - a.end for a, b in zip(r.words, r.words[1:])]
    assert gaps[5] > 0.05 and all(g < 1e-9 for k, g in enumerate(gaps) if k != 5)
    assert abs(r.words[0].start - sound[0] * 0.01) < 0.04
    assert abs(r.words[-1].end - (sound[-1] + 1) * 0.01) < 0.1
    assert len(x) / r.sample_rate - r.words[-1].end > 0.2  # the closing silence is no word's
