"""Padding collate, bucketing sampler, dataset over a synthetic corpus, TextGrid/JSON, CLI."""

from __future__ import annotations

import warnings

import pytest
import torch

from speechattn.data.collate import (
    BucketBatchSampler,
    SpeechDataset,
    audio_durations,
    collate_speech,
    pad_sequence_batch,
)
from speechattn.data.synth import Interval
from speechattn.data.textgrid import (
    read_alignment_json,
    read_textgrid,
    write_alignment_json,
    write_textgrid,
)


def test_pad_sequence_batch() -> None:
    seqs = [torch.arange(3), torch.arange(5), torch.arange(1)]
    padded, lengths = pad_sequence_batch(seqs, padding_value=-1)
    assert padded.shape == (3, 5) and lengths.dtype == torch.int64
    assert lengths.tolist() == [3, 5, 1]
    assert padded[0].tolist() == [0, 1, 2, -1, -1]
    feats = [torch.randn(4, 2), torch.randn(2, 2)]
    p2, l2 = pad_sequence_batch(feats, max_length=6)
    assert p2.shape == (2, 6, 2) and (p2[1, 2:] == 0).all() and l2.tolist() == [4, 2]
    with pytest.raises(ValueError, match="at least one"):
        pad_sequence_batch([])
    with pytest.raises(ValueError, match="shape"):
        pad_sequence_batch([torch.zeros(2, 3), torch.zeros(2, 4)])
    with pytest.raises(TypeError, match="dtype"):
        pad_sequence_batch([torch.zeros(2), torch.zeros(2, dtype=torch.int64)])
    with pytest.raises(ValueError, match="max_length"):
        pad_sequence_batch(seqs, max_length=2)


def test_bucket_sampler_properties() -> None:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 1000, (257,), generator=g).tolist()
    s = BucketBatchSampler(lengths, 8, shuffle=True, seed=3, bucket_batches=4)
    batches = list(s)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(257))  # every item exactly once
    assert len(batches) == len(s)
    assert all(len(b) <= 8 for b in batches)
    assert batches == list(BucketBatchSampler(lengths, 8, shuffle=True, seed=3, bucket_batches=4))
    s.set_epoch(1)
    assert list(s) != batches

    # bucketing reduces padding compared with random batches
    def waste(bs):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    perm = torch.randperm(257, generator=g).tolist()
    rand_batches = [perm[i : i + 8] for i in range(0, 257, 8)]
    assert waste(batches) < 0.5 * waste(rand_batches)
    ordered = list(BucketBatchSampler(lengths, 8, shuffle=False))
    assert [lengths[i] for b in ordered for i in b] == sorted(lengths)
    dl = BucketBatchSampler(lengths, 8, shuffle=True, drop_last=True, bucket_batches=4)
    assert all(len(b) == 8 for b in dl) and len(dl) == len(list(dl))
    with pytest.raises(ValueError, match="batch_size"):
        BucketBatchSampler(lengths, 0)


def test_textgrid_round_trip(tmp_path) -> None:
    pytest.importorskip("praatio")
    words = [Interval(0.05, 0.4, "hello"), Interval(0.5, 0.9, "world")]
    phones = [
        Interval(0.05, 0.1, "h"), Interval(0.1, 0.2, "ə"), Interval(0.2, 0.3, "l"), Interval(0.3, 0.4, "ˈoʊ"),
        Interval(0.5, 0.6, "w"), Interval(0.6, 0.7, "ˈɜː"), Interval(0.7, 0.7, "l"), Interval(0.7, 0.9, "d"),
    ]  # fmt: skip
    path = write_textgrid(tmp_path / "a.TextGrid", words=words, phones=phones, duration=1.0)
    w2, p2 = read_textgrid(path)
    assert [w.label for w in w2] == ["hello", "world"]
    assert [p.label for p in p2] == [p.label for p in phones]  # zero-length "l" survives
    for a, b in zip(words + phones, w2 + p2):
        assert abs(a.start - b.start) <= 1e-3 + 1e-9 and abs(a.end - b.end) <= 1e-3 + 1e-9
    exact = [i for i, p in enumerate(phones) if i not in (5, 6, 7)]
    for i in exact:
        assert p2[i] == phones[i]
    assert p2[6].end > p2[6].start
    with pytest.raises(ValueError, match="duration"):
        write_textgrid(tmp_path / "b.TextGrid", words=words, phones=phones, duration=0.5)
    with pytest.raises(ValueError, match="non-overlapping"):
        write_textgrid(
            tmp_path / "c.TextGrid", words=[(0, 0.5, "a"), (0.4, 0.6, "b")], phones=[], duration=1.0
        )
    (tmp_path / "bad.TextGrid").write_text("not a textgrid")
    with pytest.raises(ValueError, match=r"bad\.TextGrid"):
        read_textgrid(tmp_path / "bad.TextGrid")


def test_alignment_json_round_trip(tmp_path) -> None:
    words = [Interval(0.0, 0.5, "hi")]
    phones = [Interval(0.0, 0.2, "h"), Interval(0.2, 0.5, "aɪ")]
    p = write_alignment_json(
        tmp_path / "a.json", words=words, phones=phones, duration=0.6, text="hi", extra={"id": "x"}
    )
    w2, p2 = read_alignment_json(p)
    assert w2 == words and p2 == phones
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json"):
        read_alignment_json(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def synth_manifest(tmp_path_factory):
    pytest.importorskip("espeakng_loader")
    from speechattn.data.synth import synth_corpus

    out = tmp_path_factory.mktemp("corpus")
    return synth_corpus(out, utterances=10, speakers=3, seed=2, workers=1, progress=False)


def test_dataset_and_collate_on_synth_corpus(synth_manifest) -> None:
    from speechattn.data.corpus import load_corpus

    utts = load_corpus(synth_manifest)
    ds = SpeechDataset(utts, return_waveform=True)
    assert len(ds.speakers) == 3
    lengths = audio_durations(utts)
    sampler = BucketBatchSampler(lengths, 4, seed=0)
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=sampler, collate_fn=lambda b: collate_speech(b, dataset=ds)
    )
    seen = 0
    for batch in loader:
        b = len(batch.ids)
        seen += b
        assert batch.tokens.shape[0] == b and batch.tokens.dtype == torch.int64
        assert batch.mel.shape[0] == b and batch.mel.shape[2] == 80
        assert batch.durations is not None
        assert (batch.durations.sum(1) == batch.mel_lengths).all()
        assert int(batch.mel_lengths.max()) == batch.mel.shape[1]
        assert int(batch.token_lengths.max()) == batch.tokens.shape[1]
        for i in range(b):
            u = int(batch.token_lengths[i])
            assert (batch.tokens[i, u:] == 0).all() and (batch.tokens[i, :u] > 2).all()
            assert (batch.durations[i, :u] >= 1).all() and (batch.durations[i, u:] == 0).all()
            assert (batch.mel[i, int(batch.mel_lengths[i]) :] == 0).all()
        assert batch.waveform is not None and batch.waveform_lengths is not None
        assert batch.speaker_index.dtype == torch.int64
    assert seen == 10 and ds.skipped == 0


def test_dataset_skips_bad_items_with_count(synth_manifest, tmp_path) -> None:
    from speechattn.data.corpus import Utterance, load_corpus

    utts = load_corpus(synth_manifest)
    broken = tmp_path / "gone.wav"
    broken.write_bytes(b"junk")
    bad = Utterance("bad", broken, "hello", utts[0].speaker, None, None)
    ds = SpeechDataset([*utts[:3], bad], frontend="characters")
    with pytest.warns(UserWarning, match=r"gone\.wav"):
        items = [ds[i] for i in range(4)]
    assert items[3] is None
    batch = collate_speech(items, dataset=ds)
    assert len(batch.ids) == 3 and ds.skipped == 1
    with pytest.raises(ValueError, match="unusable"):
        collate_speech([None, None])


def test_dataset_text_frontends(synth_manifest) -> None:
    from speechattn.data.corpus import load_corpus

    utts = load_corpus(synth_manifest)
    gt = SpeechDataset(utts[:2])
    ph = SpeechDataset(utts[:2], use_ground_truth=False, voice="en-us")
    ch = SpeechDataset(utts[:2], use_ground_truth=False, frontend="characters")
    assert gt.token_symbols(0) == [p.label for p in utts[0].phones]
    assert ph.token_symbols(0) and ph[0]["durations"] is None
    assert "".join(ch.token_symbols(0)) == "".join(
        utts[0].text.lower().replace(",", "").replace(".", "").replace("?", "").split()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ch[0] is not None


def test_cli_data_synth_and_stats(tmp_path, capsys) -> None:
    pytest.importorskip("espeakng_loader")
    from speechattn.cli import main

    out = tmp_path / "c"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(out),
                "--utterances",
                "4",
                "--speakers",
                "2",
                "--seed",
                "1",
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    assert (out / "manifest.jsonl").is_file() and len(list((out / "wavs").glob("*.wav"))) == 4
    assert main(["data", "stats", str(out)]) == 0
    assert "4 utterances, 2 speakers" in capsys.readouterr().out
    assert (
        main(["data", "textgrid", str(out / "manifest.jsonl"), "--out", str(tmp_path / "tg")]) == 0
    )
    assert len(list((tmp_path / "tg").glob("*.TextGrid"))) == 4
    w, p = read_textgrid(next((tmp_path / "tg").glob("*.TextGrid")))
    assert w and p
