"""The alignment recipe on a stand-in corpus (no espeak): training, resume, determinism, DDP, outputs."""

from __future__ import annotations

import html.parser
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.align_toy import FEATURES, N_MELS, NUM_SYMBOLS, toy_items

from speechattn.recipes.align.evaluate import align_items, score
from speechattn.recipes.align.model import AlignerConfig, TextMelAligner
from speechattn.recipes.align.train import TrainConfig, train_aligner


def _cfg(kind: str, dim: int = 32) -> AlignerConfig:
    return AlignerConfig(kind=kind, num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=dim)


@pytest.fixture(scope="module")
def toy() -> tuple[list, list]:
    return toy_items(96, 0), toy_items(24, 1)


@pytest.mark.parametrize("kind", ["sma", pytest.param("fs", marks=pytest.mark.slow)])
def test_aligner_learns_well_above_uniform(toy: tuple[list, list], kind: str) -> None:
    train, test = toy
    res = train_aligner(
        _cfg(kind), train, TrainConfig(steps=120, batch_size=12, lr=3e-3), progress=False
    )
    results = align_items(res.model, test, FEATURES)
    m = score(results)
    u = score(align_items("uniform", test, FEATURES))
    for r in results:
        assert int(r.durations.sum()) == int(r.item.mel.shape[0])
        assert (r.durations >= 1).all()
    assert m.phone_within_20ms is not None and u.phone_within_20ms is not None
    assert m.phone_within_20ms > u.phone_within_20ms + 20, (m, u)
    assert m.failures == 0


def test_mha_baseline_runs_and_sums(toy: tuple[list, list]) -> None:
    train, test = toy
    res = train_aligner(_cfg("mha"), train, TrainConfig(steps=10, batch_size=8), progress=False)
    results = align_items(res.model, test, FEATURES)
    for r in results:
        assert int(r.durations.sum()) == int(r.item.mel.shape[0])
    m = score(results)
    assert m.focus_rate is not None and 0 < m.focus_rate <= 1


def test_resume_after_interrupt_equals_uninterrupted(
    toy: tuple[list, list], tmp_path: Path
) -> None:
    train = toy[0][:32]
    tc = TrainConfig(steps=8, batch_size=4, checkpoint_every=3, seed=3)
    full = train_aligner(_cfg("sma", 16), train, tc, checkpoint=tmp_path / "a.pt", progress=False)

    class Stop(Exception):
        pass

    def boom(model: TextMelAligner, step: int) -> dict:
        if step == 5:
            raise Stop
        return {}

    with pytest.raises(Stop):
        train_aligner(
            _cfg("sma", 16),
            train,
            tc,
            checkpoint=tmp_path / "b.pt",
            progress=False,
            on_eval=boom,
            eval_every=1,
        )
    assert (tmp_path / "b.pt").exists() and not (tmp_path / "b.pt.tmp").exists()
    resumed = train_aligner(
        _cfg("sma", 16), train, tc, checkpoint=tmp_path / "b.pt", progress=False
    )
    assert resumed.resumed_from == 3
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    assert [h["loss"] for h in full.history] == pytest.approx([h["loss"] for h in resumed.history])


def test_padding_does_not_change_alignment(toy: tuple[list, list]) -> None:
    torch.manual_seed(0)
    model = TextMelAligner(_cfg("sma", 16)).eval()
    items = toy[1][:4]
    alone = [align_items(model, [it], FEATURES)[0].durations for it in items]
    batched = [r.durations for r in align_items(model, items, FEATURES, batch_size=4)]
    for a, b in zip(alone, batched):
        np.testing.assert_array_equal(a, b)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root / "src") + os.pathsep + str(root)
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(root / "tests" / "_ddp_align_worker.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["step"] == 6


def test_report_is_valid_html_with_images(toy: tuple[list, list], tmp_path: Path) -> None:
    from speechattn.recipes.align.report import write_report

    train, test = toy
    res = train_aligner(
        _cfg("sma", 16), train[:16], TrainConfig(steps=3, batch_size=4), progress=False
    )
    results = align_items(res.model, test[:3], FEATURES, keep_soft=3)
    table = {
        "test": {
            "sma": score(results),
            "uniform": score(align_items("uniform", test[:3], FEATURES)),
        }
    }
    path = write_report(
        tmp_path,
        table=table,
        examples={"sma": results[0]},
        histories={"sma": res.history},
        config=FEATURES,
        summary={"x": 1},
    )
    check_report(path)


class _Collect(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.stack: list[str] = []
        self.bad: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        elif tag not in ("meta", "br", "link"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.bad.append(tag)
        else:
            self.stack.pop()


def check_report(path: Path) -> None:
    """report.html parses with balanced tags and every image it references exists as a PNG."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    p = _Collect()
    p.feed(text)
    assert not p.bad and not p.stack, (p.bad, p.stack)
    assert p.imgs
    for src in p.imgs:
        f = path.parent / src
        assert f.exists() and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src


def test_front_end_warns_and_skips_unpronounceable(tmp_path: Path) -> None:
    pytest.importorskip("espeakng_loader")
    import soundfile as sf

    from speechattn.data.corpus import Utterance
    from speechattn.recipes.align.data import FeatureConfig, build_items, new_symbol_table

    wav = tmp_path / "a.wav"
    # Not silent: silent audio is skipped with its own warning (tests/test_fault_isolation.py).
    noise = 0.05 * np.random.default_rng(0).standard_normal(22050)
    sf.write(wav, noise.astype(np.float32), 22050)
    utts = [
        Utterance("ok", wav, "Hello, World! 42.", "s", None, None),
        Utterance("bad", wav, "漢字", "s", None, None),
    ]
    symbols = new_symbol_table()
    with pytest.warns(UserWarning) as rec:
        items = build_items(utts, symbols, FeatureConfig(), grow_symbols=True)
    assert [it.id for it in items] == ["ok"]
    assert any("bad" in str(w.message) for w in rec)
    it = items[0]
    # the transcript's own words (as MFA writes them); "42" spans the phones of "forty two"
    assert [w for w, _, _ in it.words] == ["Hello", "World", "42"]
    assert it.words[-1][2] - it.words[-1][1] == len(it.phones) - it.words[-1][1] > 4
    assert it.tokens[0] == symbols["<sil>"] and it.tokens[-1] == symbols["<sil>"]
    assert len(it.phone_token_index) == len(it.phones)
