"""Ensembles of aligners: several models' per-frame evidence pooled and decoded as one."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.align_toy import FEATURES, N_MELS, NUM_SYMBOLS, tone_corpus, toy_items

from speechattn.recipes.align.data import collate_items, new_symbol_table
from speechattn.recipes.align.evaluate import align_items
from speechattn.recipes.align.model import (
    ENSEMBLE_COMBINES,
    AlignerConfig,
    AlignerEnsemble,
    TextMelAligner,
)
from speechattn.recipes.align.pipeline import (
    DEFAULT_ASSET,
    _members,
    combine_aligners,
    load_aligner,
    load_aligners,
    save_aligner,
)


def _model(seed: int, **kw) -> TextMelAligner:
    torch.manual_seed(seed)
    cfg = dict(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16)
    cfg.update(kw)
    return TextMelAligner(AlignerConfig(**cfg)).eval()


def _copy(model: TextMelAligner) -> TextMelAligner:
    twin = TextMelAligner(model.config)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def _batch(n: int = 5, seed: int = 3):
    return collate_items(toy_items(n, seed))


@pytest.mark.parametrize("combine", ENSEMBLE_COMBINES)
@pytest.mark.parametrize("kind", ["sma", "fs"])
def test_ensemble_of_identical_models_is_the_single_model(combine: str, kind: str) -> None:
    model = _model(0, kind=kind)
    tokens, tl, mels, ml = _batch()
    ens = AlignerEnsemble([model, _copy(model)], combine=combine).eval()
    with torch.no_grad():
        one, two = model(tokens, tl, mels, ml), ens(tokens, tl, mels, ml)
    torch.testing.assert_close(two.log_attn, one.log_attn, atol=1e-5, rtol=0)
    torch.testing.assert_close(two.loss, one.loss)
    if kind == "sma":
        torch.testing.assert_close(two.log_stay, one.log_stay, atol=1e-5, rtol=0)
        torch.testing.assert_close(two.log_move, one.log_move, atol=1e-5, rtol=0)
    else:
        assert two.log_stay is None and two.log_move is None
    skip = torch.zeros(tokens.shape, dtype=torch.bool)
    skip[:, 0] = True  # the leading silence may take no frame
    for kw in ({}, {"skippable_mask": skip, "log_skip": -1.0}):
        path1, soft1 = model.align(tokens, tl, mels, ml, **kw)
        path2, soft2 = ens.align(tokens, tl, mels, ml, **kw)
        assert torch.equal(path2.durations, path1.durations)
        torch.testing.assert_close(soft2, soft1, atol=1e-4, rtol=0)


def test_ensemble_of_identical_models_aligns_a_corpus_like_the_single_model() -> None:
    # Through align_items with align's decoding: optional pauses, short-pause redecoding, the
    # reverse pass.
    model = _model(1)
    items = toy_items(6, 7)
    kw = dict(pauses="auto", min_pause_frames=2, reverse_pass=True)
    one = align_items(model, items, FEATURES, **kw)
    two = align_items(AlignerEnsemble([model, _copy(model), _copy(model)]), items, FEATURES, **kw)
    for a, b in zip(one, two):
        assert a.item.id == b.item.id
        assert list(a.durations) == list(b.durations)
        assert a.words == b.words and a.phones == b.phones


@pytest.mark.parametrize("combine", ["log", "prob"])
def test_ensemble_pools_the_members_probabilities(combine: str) -> None:
    models = [_model(s) for s in (0, 1, 2)]
    tokens, tl, mels, ml = _batch()
    ens = AlignerEnsemble(models, combine=combine).eval()
    with torch.no_grad():
        outs = [m(tokens, tl, mels, ml) for m in models]
        got = ens(tokens, tl, mels, ml)
    # Reference in float64, one item at a time over its valid tokens and frames.
    for b in range(tokens.shape[0]):
        u, t = int(tl[b]), int(ml[b])
        la = torch.stack([o.log_attn[b, :u, :t].double() for o in outs])
        ps = torch.stack([o.log_stay[b, :u, :t].double().exp() for o in outs])
        if combine == "log":
            want_attn = torch.log_softmax(la.mean(0), dim=0)
            logit = (ps.log() - (1 - ps).log()).mean(0)
            want_stay = torch.sigmoid(logit)
        else:
            want_attn = la.exp().mean(0).log()
            want_stay = ps.mean(0)
        torch.testing.assert_close(got.log_attn[b, :u, :t].double(), want_attn, atol=1e-4, rtol=0)
        torch.testing.assert_close(
            got.log_stay[b, :u, :t].double().exp(), want_stay, atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            got.log_move[b, :u, :t].double().exp(), 1 - want_stay, atol=1e-5, rtol=0
        )
        # Each valid frame's token scores are a distribution.
        sums = got.log_attn[b, :u, :t].exp().sum(0)
        torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)
    # The pooled path differs from at least one member's (the members are different models).
    path = ens.align(tokens, tl, mels, ml)[0].durations
    assert any(not torch.equal(m.align(tokens, tl, mels, ml)[0].durations, path) for m in models)


@pytest.mark.parametrize("pauses", [False, True])
def test_median_ensemble_puts_each_token_end_at_the_members_median(pauses: bool) -> None:
    models = [_model(s) for s in (0, 1, 2, 3)]
    tokens, tl, mels, ml = _batch(6, 5)
    kw: dict = {}
    if pauses:
        skip = torch.zeros(tokens.shape, dtype=torch.bool)
        skip[:, 0] = True
        skip[torch.arange(tokens.shape[0]), tl - 1] = True
        kw = {"skippable_mask": skip, "log_skip": -0.5}
    for n in (3, 4):
        ens = AlignerEnsemble(models[:n], combine="median").eval()
        path, soft = ens.align(tokens, tl, mels, ml, **kw)
        members = [m.align(tokens, tl, mels, ml, **kw) for m in models[:n]]
        for b in range(tokens.shape[0]):
            u, t = int(tl[b]), int(ml[b])
            ends = np.stack([p.durations[b, :u].numpy().cumsum() for p, _ in members])
            want = np.sort(ends, axis=0)[(n - 1) // 2]  # the lower median of each token's end
            got = path.durations[b].numpy()
            assert list(got[:u].cumsum()) == list(want)
            assert got[u:].sum() == 0 and got[:u].sum() == t
            if not pauses:
                assert got[:u].min() >= 1
            # The one-hot path spells the same durations; padded frames and tokens stay empty.
            assert torch.equal(path.path[b].sum(-1).long(), path.durations[b])
            assert float(path.path[b, :, t:].abs().sum()) == 0.0
            assert torch.equal(path.path[b, :u, :t].sum(0), torch.ones(t))
        torch.testing.assert_close(soft, torch.stack([s_ for _, s_ in members]).mean(0))


def test_ensemble_padding_does_not_change_an_item() -> None:
    ens = AlignerEnsemble([_model(0), _model(1)]).eval()
    items = toy_items(4, 11)
    tokens, tl, mels, ml = collate_items(items)
    batched = ens.align(tokens, tl, mels, ml)[0].durations
    for j, it in enumerate(items):
        alone = ens.align(*collate_items([it]))[0].durations
        u = int(tl[j])
        assert torch.equal(batched[j, :u], alone[0, :u])


def test_ensemble_rejects_bad_members() -> None:
    with pytest.raises(ValueError, match="at least one"):
        AlignerEnsemble([])
    with pytest.raises(TypeError, match="TextMelAligner"):
        AlignerEnsemble([_model(0), torch.nn.Linear(2, 2)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="combine"):
        AlignerEnsemble([_model(0)], combine="mean")
    for field, value in (("kind", "fs"), ("num_symbols", NUM_SYMBOLS + 1), ("n_mels", N_MELS + 2)):
        with pytest.raises(ValueError, match=f"{field}="):
            AlignerEnsemble([_model(0), _model(1, **{field: value})])


def _save(path: Path, model: TextMelAligner, symbols: dict, **features) -> Path:
    save_aligner(path, model, symbols, dataclasses.replace(FEATURES, **features), {"k": 1})
    return path


def test_load_aligners_builds_an_ensemble_and_checks_front_ends(tmp_path: Path) -> None:
    symbols = new_symbol_table()
    a = _save(tmp_path / "a.pt", _model(0), symbols)
    b = _save(tmp_path / "b.pt", _model(1), symbols)
    single, sym1, feats1, _ = load_aligners([a])
    assert isinstance(single, TextMelAligner)
    ens, sym2, feats2, info2 = load_aligners([a, b], combine="prob")
    assert isinstance(ens, AlignerEnsemble) and len(ens) == 2 and ens.combine == "prob"
    assert sym1 == sym2 == symbols and feats1 == feats2 == FEATURES and info2["k"] == 1
    tokens, tl, mels, ml = _batch()
    want = AlignerEnsemble([_model(0), _model(1)], combine="prob")
    assert torch.equal(
        ens.align(tokens, tl, mels, ml)[0].durations, want.align(tokens, tl, mels, ml)[0].durations
    )
    # Another front end or another phone inventory: not the same features or token ids.
    c = _save(tmp_path / "c.pt", _model(2), symbols, n_fft=FEATURES.n_fft // 2)
    with pytest.raises(ValueError, match=r"c\.pt.*n_fft"):
        load_aligners([a, c])
    other = dict(symbols)
    first, second = list(other)[-2:]
    other[first], other[second] = other[second], other[first]
    d = _save(tmp_path / "d.pt", _model(3), other)
    with pytest.raises(ValueError, match=r"d\.pt.*phone"):
        load_aligners([a, d])
    with pytest.raises(ValueError, match="at least one"):
        load_aligners([])


def test_several_files_carry_no_members_calibration_table(tmp_path: Path) -> None:
    # A member's tables were fitted on its own decoding: an ensemble built at load time must not
    # apply the first file's table to the pooled decoding (combine_aligners refits them).
    symbols = new_symbol_table()
    table = {"pair": {}, "next": {}, "default": -0.01, "boundaries": 3}
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    for path, seed in ((a, 0), (b, 1)):
        save_aligner(path, _model(seed), symbols, FEATURES, {"k": 1, "consensus_offsets": table})
    assert load_aligners([a])[3]["consensus_offsets"] == table
    info = load_aligners([a, b])[3]
    assert info["k"] == 1
    assert info["consensus_offsets"] is None and info["engine_offsets"] is None
    assert info["boundary_offsets"] is None


def test_an_ensemble_saves_to_one_file_and_loads_back(tmp_path: Path) -> None:
    ens = AlignerEnsemble([_model(0), _model(1, kernel_size=3)], combine="prob").eval()
    save_aligner(tmp_path / "e.pt", ens, new_symbol_table(), FEATURES, {"k": 2})
    back, _, feats, info = load_aligner(tmp_path / "e.pt")
    assert isinstance(back, AlignerEnsemble) and back.combine == "prob" and len(back) == 2
    assert feats == FEATURES and info == {"k": 2}
    assert [m.config for m in back.members] == [m.config for m in ens.members]
    tokens, tl, mels, ml = _batch()
    torch.testing.assert_close(
        back(tokens, tl, mels, ml).log_attn, ens(tokens, tl, mels, ml).log_attn
    )
    # A file holding an ensemble adds its members to the others given.
    b = _save(tmp_path / "b.pt", _model(2), new_symbol_table())
    three = load_aligners([tmp_path / "e.pt", b])[0]
    assert isinstance(three, AlignerEnsemble) and len(three) == 3 and three.combine == "log"


def test_combine_aligners_writes_one_ensemble_file(tmp_path: Path) -> None:
    symbols = new_symbol_table()
    tables = {"pair": {}, "next": {}, "default": -0.01, "boundaries": 3}
    paths = []
    for seed, train_seed in ((0, None), (1, 1), (2, 2)):
        info = {
            "trained_by": "speechattn demo",
            "kind": "sma",
            "demo_config": {"seed": 0, "train_seed": train_seed, "engines": ("espeak",)},
            "consensus_offsets": tables,
        }
        paths.append(tmp_path / f"s{seed}.pt")
        save_aligner(paths[-1], _model(seed), symbols, FEATURES, info)
    out = combine_aligners(paths, tmp_path / "ens" / "e.pt", log=lambda _: None)
    ens, sym, feats, info = load_aligner(out)
    assert isinstance(ens, AlignerEnsemble) and len(ens) == 3 and ens.combine == "log"
    assert sym == symbols and feats == FEATURES and info["kind"] == "sma"
    assert [m["train_seed"] for m in info["members"]] == [0, 1, 2]
    assert info["demo_config"]["train_seed"] is None  # the first member's run
    # A member's table fitted that member's boundaries: none is carried without a corpus.
    assert info["consensus_offsets"] is None and info["boundary_offsets"] is None
    tokens, tl, mels, ml = _batch()
    want = AlignerEnsemble([_model(0), _model(1), _model(2)])
    torch.testing.assert_close(
        ens(tokens, tl, mels, ml).log_attn, want(tokens, tl, mels, ml).log_attn
    )
    # A file holding an ensemble adds its members (each keeps its record).
    four = combine_aligners([out, paths[0]], tmp_path / "four.pt", log=lambda _: None)
    assert [m["train_seed"] for m in load_aligner(four)[3]["members"]] == [0, 1, 2, 0]
    with pytest.raises(ValueError, match="two or more"):
        combine_aligners(paths[:1], tmp_path / "one.pt", log=lambda _: None)
    bare = tmp_path / "bare.pt"
    save_aligner(bare, _model(3), symbols, FEATURES, {})
    with pytest.raises(ValueError, match="demo_config"):
        combine_aligners([bare, paths[0]], tmp_path / "x.pt", corpus=tmp_path / "m.jsonl")


def test_combine_aligners_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from speechattn.cli import main

    symbols = new_symbol_table()
    a = _save(tmp_path / "a.pt", _model(0), symbols)
    b = _save(tmp_path / "b.pt", _model(1), symbols)
    out = tmp_path / "e.pt"
    assert main(["combine-aligners", str(a), str(b), "--out", str(out), "--combine", "prob"]) == 0
    ens = load_aligner(out)[0]
    assert isinstance(ens, AlignerEnsemble) and len(ens) == 2 and ens.combine == "prob"
    assert main(["combine-aligners", str(a), str(tmp_path / "nope.pt"), "--out", str(out)]) == 2
    assert "nope.pt: no such file" in capsys.readouterr().err
    assert main(["combine-aligners", str(a), "--out", str(out)]) != 0  # one aligner: no ensemble
    assert "two or more" in capsys.readouterr().err


def _alignments(folder: Path) -> dict:
    return {
        f.name: {k: v for k, v in json.loads(f.read_text()).items() if k != "aligner"}
        for f in sorted((folder / "alignments").glob("*.json"))
    }


def test_align_cli_with_two_checkpoints(tmp_path: Path) -> None:
    from speechattn.cli import main

    if not DEFAULT_ASSET.is_file():
        pytest.skip("no shipped aligner")
    data = tone_corpus(tmp_path / "corpus", {"u1": "the cat sat", "u2": "a dog"}, noise=0.005)
    # One aligner (the shipped file's first member: the shipped file is an ensemble itself).
    shipped, symbols, feats, info = load_aligner()
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    save_aligner(a, _members(shipped)[0], symbols, feats, info)
    shutil.copy(a, b)
    common = ["align", str(data), "--no-progress", "--threads", "1"]
    assert (
        main([*common, "--out", str(tmp_path / "one"), "--no-adapt", "--checkpoint", str(a)]) == 0
    )
    two = tmp_path / "two"
    assert (
        main(
            [
                *common,
                "--out",
                str(two),
                "--no-adapt",
                "--checkpoint",
                str(a),
                "--checkpoint",
                str(b),
            ]
        )
        == 0
    )
    # Two copies of one aligner align like that aligner; the output aligner holds both.
    assert _alignments(two) == _alignments(tmp_path / "one")
    saved = load_aligner(two / "aligner.pt")[0]
    assert isinstance(saved, AlignerEnsemble) and len(saved) == 2
    # Adaptation adapts each member in turn, each with its own training checkpoint.
    adapted = tmp_path / "adapted"
    args = [
        *common,
        "--out",
        str(adapted),
        "--steps",
        "2",
        "--checkpoint",
        str(a),
        "--checkpoint",
        str(b),
    ]
    assert main(args) == 0
    assert (adapted / "checkpoints" / "aligner.pt").is_file()
    assert (adapted / "checkpoints" / "aligner-1.pt").is_file()
    summary = json.loads((adapted / "summary.json").read_text())
    assert summary["adaptation"].startswith("2+2 steps")
    assert len(load_aligner(adapted / "aligner.pt")[0]) == 2  # type: ignore[arg-type]
    # Missing file: a usage error naming it.
    assert (
        main(
            [
                *common,
                "--out",
                str(tmp_path / "x"),
                "--checkpoint",
                str(a),
                "--checkpoint",
                str(tmp_path / "nope.pt"),
            ]
        )
        == 2
    )
