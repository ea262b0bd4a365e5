"""Adapting some members of an ensemble aligner (``--adapt-members``), the others kept as loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.align_toy import tone_corpus

from speechattn.recipes.align.pipeline import (
    DEFAULT_ASSET,
    _members,
    check_adapt_members,
    load_aligner,
    run_align,
)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("value", ["all", 1, 3, "2", " 2 "])
def test_check_adapt_members_accepts(value) -> None:
    got = check_adapt_members(value)
    assert got == "all" if value == "all" else got == int(value)


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "x", "first", None, "0"])
def test_check_adapt_members_refuses(value) -> None:
    with pytest.raises(ValueError, match="adapt_members 'all' or an integer >= 1"):
        check_adapt_members(value)


@pytest.fixture(scope="module")
def shipped():
    if not DEFAULT_ASSET.is_file():
        pytest.skip("no shipped aligner")
    model = load_aligner()[0]
    members = _members(model)
    if len(members) < 2:
        pytest.skip("the shipped aligner is not an ensemble")
    return members


def test_align_adapts_only_the_first_members(tmp_path: Path, shipped) -> None:
    from speechattn.cli import main

    data = tone_corpus(tmp_path / "corpus", {"u1": "the cat sat", "u2": "a dog"}, noise=0.005)
    n = len(shipped)
    common = ["align", str(data), "--no-progress", "--threads", "1", "--steps", "2"]
    out = tmp_path / "one"
    assert main([*common, "--out", str(out), "--adapt-members", "1"]) == 0
    # Only the first member trained: one training checkpoint, and the others kept bit for bit.
    assert (out / "checkpoints" / "aligner.pt").is_file()
    assert not list((out / "checkpoints").glob("aligner-*.pt"))
    saved = _members(load_aligner(out / "aligner.pt")[0])
    assert len(saved) == n
    assert not _same(saved[0], shipped[0])
    assert all(_same(a, b) for a, b in zip(saved[1:], shipped[1:]))
    # The output says how adaptation ran.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["adaptation"].startswith("2 steps")
    assert summary["adaptation"].endswith(f"member 1 of {n} adapted, the others as loaded")
    report = (out / "report.md").read_text() if (out / "report.md").is_file() else ""
    assert not report or "member 1 of" in report
    # Two members: the first two trained, each with its own checkpoint; the rest as loaded.
    two = tmp_path / "two"
    assert main([*common, "--out", str(two), "--adapt-members", "2"]) == 0
    saved2 = _members(load_aligner(two / "aligner.pt")[0])
    assert not _same(saved2[0], shipped[0]) and not _same(saved2[1], shipped[1])
    assert all(_same(a, b) for a, b in zip(saved2[2:], shipped[2:]))
    assert (two / "checkpoints" / "aligner-1.pt").is_file()
    # The first member adapted the same way both times (same seed, same batches).
    assert _same(saved2[0], saved[0])
    assert json.loads((two / "summary.json").read_text())["adaptation"].startswith("2+2 steps")


def test_adapt_members_all_is_every_member(tmp_path: Path, shipped) -> None:
    data = tone_corpus(tmp_path / "corpus", {"u1": "a dog"}, noise=0.005)
    res = run_align(data, tmp_path / "all", steps=1, threads=1, progress=False, log=lambda *a: None)
    n = len(shipped)
    assert res["summary"]["adaptation"].startswith("+".join(["1"] * n) + " steps")
    assert res["summary"]["adaptation"].endswith(f"all {n} members adapted in turn")
    saved = _members(load_aligner(tmp_path / "all" / "aligner.pt")[0])
    assert not any(_same(a, b) for a, b in zip(saved, shipped))


def test_adapt_members_errors(tmp_path: Path, shipped, capsys) -> None:
    from speechattn.cli import main

    data = tone_corpus(tmp_path / "corpus", {"u1": "a dog"}, noise=0.005)
    common = ["align", str(data), "--no-progress", "--threads", "1"]
    n = len(shipped)
    # More members than the aligner has: one line naming both numbers.
    assert main([*common, "--out", str(tmp_path / "a"), "--adapt-members", str(n + 1)]) == 1
    err = capsys.readouterr().err
    assert f"adapt_members <= {n}" in err and f"found {n + 1}" in err
    # Not a count: a usage error.
    with pytest.raises(SystemExit) as exc:
        main([*common, "--out", str(tmp_path / "b"), "--adapt-members", "0"])
    assert exc.value.code == 2
    assert "expected 'all' or an integer >= 1" in capsys.readouterr().err
    # Nothing adapts: the option has no effect, said so.
    assert main([*common, "--out", str(tmp_path / "c"), "--no-adapt", "--adapt-members", "1"]) == 2
    assert "--adapt-members has no effect with --no-adapt" in capsys.readouterr().err
    # The API refuses the same.
    with pytest.raises(ValueError, match=f"adapt_members <= {n}"):
        run_align(
            data,
            tmp_path / "d",
            adapt_members=n + 1,
            threads=1,
            progress=False,
            log=lambda *a: None,
        )


def _fake_training(calls: list):
    """A stand-in for train_aligner: records the step budget, returns the start unchanged."""
    from speechattn.recipes.align.model import TextMelAligner
    from speechattn.recipes.align.train import TrainResult

    def fake(config, items, tcfg, *, init_state=None, should_stop=None, **kw):
        calls.append(tcfg.steps)
        model = TextMelAligner(config)
        model.load_state_dict(init_state)
        history = []
        for step in range(tcfg.steps):
            if should_stop is not None and history and should_stop(history):
                break
            history.append({"step": step + 1, "loss": 1.0})
        return TrainResult(model=model, history=history)

    return fake


def test_ensemble_members_adapt_a_fixed_budget_by_default(
    tmp_path: Path, shipped, monkeypatch
) -> None:
    import speechattn.recipes.align.pipeline as P
    from speechattn.recipes.align.pipeline import save_aligner

    data = tone_corpus(tmp_path / "corpus", {"u1": "a dog"}, noise=0.005)
    kw = dict(threads=1, progress=False, log=lambda *a: None)
    calls: list[int] = []
    monkeypatch.setattr(P, "train_aligner", _fake_training(calls))
    # The shipped ensemble: every member ENSEMBLE_ADAPT_STEPS steps, said so in the summary.
    res = run_align(data, tmp_path / "ens", **kw)
    n = len(shipped)
    assert calls == [P.ENSEMBLE_ADAPT_STEPS] * n
    text = res["summary"]["adaptation"]
    assert text.startswith("+".join([str(P.ENSEMBLE_ADAPT_STEPS)] * n) + " steps")
    assert f"step cap ({P.ENSEMBLE_ADAPT_STEPS} per member of an ensemble" in text
    # --steps still sets every member's cap.
    calls.clear()
    run_align(data, tmp_path / "ens7", steps=7, **kw)
    assert calls == [7] * n
    # One aligner keeps the long cap, and its stop rule ends it (the fake loss is flat).
    _, symbols, feats, info = load_aligner()
    single = tmp_path / "single.pt"
    save_aligner(single, shipped[0], symbols, feats, info)
    calls.clear()
    res = run_align(data, tmp_path / "one", checkpoint=single, **kw)
    assert calls == [P.ADAPT_MAX_STEPS]
    assert "objective flat" in res["summary"]["adaptation"]
    assert "member" not in res["summary"]["adaptation"]


def test_half_precision_file_loads_as_float32(tmp_path: Path, shipped) -> None:
    from speechattn.recipes.align.model import AlignerEnsemble
    from speechattn.recipes.align.pipeline import save_aligner
    from speechattn.recipes.align.train import load_checkpoint

    _, symbols, feats, info = load_aligner()
    ens = AlignerEnsemble(shipped[:2]).eval()
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    save_aligner(full, ens, symbols, feats, info)
    save_aligner(half, ens, symbols, feats, info, half=True)
    stored = load_checkpoint(half)["members"][0]["state_dict"]
    floats = [v for v in stored.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    back = _members(load_aligner(half)[0])
    for got, ref in zip(back, shipped[:2]):
        assert all(p.dtype == torch.float32 for p in got.parameters())
        for (k, a), b in zip(got.state_dict().items(), ref.state_dict().values()):
            want = b.half().float() if b.is_floating_point() else b
            assert torch.equal(a, want), k
    # The shipped aligner loads as float32 modules, whatever its file stores.
    assert all(p.dtype == torch.float32 for m in shipped for p in m.parameters())


def test_combine_aligners_fp16(tmp_path: Path, shipped) -> None:
    from speechattn.cli import main
    from speechattn.recipes.align.pipeline import save_aligner
    from speechattn.recipes.align.train import load_checkpoint

    _, symbols, feats, info = load_aligner()
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    save_aligner(a, shipped[0], symbols, feats, info)
    save_aligner(b, shipped[1], symbols, feats, info)
    out = tmp_path / "ens.pt"
    assert (
        main(["combine-aligners", str(a), str(b), "--out", str(out), "--fp16", "--no-progress"])
        == 0
    )
    stored = load_checkpoint(out)["members"][1]["state_dict"]
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert all(p.dtype == torch.float32 for p in load_aligner(out)[0].parameters())
