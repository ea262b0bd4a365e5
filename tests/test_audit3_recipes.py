"""The training recipes as a user runs them: seeds, resuming, checkpoints, torchrun, Ctrl-C.

Each test here failed before the fix it names: the same ``--seed`` gave another audio2clip model;
a broken audio2clip head file surfaced as a raw torch error naming no file, and a save cut short
loaded as a mix of two models; an align checkpoint resumed under other optimisation settings,
another number of processes or fewer steps, and another recipe's checkpoint gave a KeyError; under
torchrun a stop on one rank hung the others, a resumed run differed from an uninterrupted one,
every rank printed (Ctrl-C line with a resume command that dropped torchrun, log lines, warnings,
speaker results, transformers' bars), a rank stopped by its failed peer printed gloo's error, and
``demo`` ran on every rank into one folder; a speaker Ctrl-C lost the steps since the last
periodic checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import soundfile as sf
import torch
from tests.align_toy import N_MELS, NUM_SYMBOLS, toy_items

from speechattn.cli import main

CAPTIONS = ["a red cat", "a blue dog", "green trees", "the sea at night"]


@pytest.fixture(scope="module")
def a2c(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("transformers")
    from speechattn.recipes.audio2clip.tiny import tiny_clip_text_encoder, tiny_w2v_bert

    root = tmp_path_factory.mktemp("a2c")
    w2v = tiny_w2v_bert(root / "w2v", hidden_size=32)
    text = tiny_clip_text_encoder(root / "clip_text", width=32)
    (root / "wavs").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i, cap in enumerate(CAPTIONS):
        t = np.arange(int(16000 * (0.5 + 0.1 * i))) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(root / "wavs" / f"u{i}.wav", wav.astype(np.float32), 16000)
        lines.append(json.dumps({"audio": f"wavs/u{i}.wav", "caption": cap}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return {"root": root, "w2v": w2v, "text": text, "manifest": root / "manifest.jsonl"}


def _a2c_train(a2c: dict[str, Path], out: Path, seed: int) -> dict[str, torch.Tensor]:
    from speechattn.recipes.audio2clip.model import HEAD_WEIGHTS_NAME
    from speechattn.recipes.audio2clip.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(
            manifest=a2c["manifest"],
            output_dir=out,
            audio_model=a2c["w2v"],
            text_model=a2c["text"],
            max_steps=1,
            batch_size=4,
            seed=seed,
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    return torch.load(out / HEAD_WEIGHTS_NAME, weights_only=True)


# ---------------------------------------------------------------------------------------------
# audio2clip: --seed


def test_audio2clip_same_seed_same_model_other_seed_another(
    a2c: dict[str, Path], tmp_path: Path
) -> None:
    # The head (and a w2v-BERT checkpoint's new adapter) was initialised before the Trainer
    # seeded anything: two runs with --seed 0 gave different models.
    a = _a2c_train(a2c, tmp_path / "a", 0)
    torch.manual_seed(12345)  # whatever the global RNG holds before the call must not matter
    b = _a2c_train(a2c, tmp_path / "b", 0)
    c = _a2c_train(a2c, tmp_path / "c", 1)
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], c[k]) for k in a)


# ---------------------------------------------------------------------------------------------
# audio2clip: a broken model folder names the file


@pytest.fixture(scope="module")
def a2c_saved(a2c: dict[str, Path]) -> Path:
    from speechattn.recipes.audio2clip.model import AudioToTextEncoder

    enc = AudioToTextEncoder.from_pretrained(a2c["w2v"], text_length=8, text_dim=32, num_heads=4)
    return enc.save_pretrained(a2c["root"] / "saved")


@pytest.mark.parametrize("kind", ["truncated", "garbage", "list", "not_tensors", "config"])
def test_audio2clip_broken_model_folder_is_one_line_naming_the_file(
    a2c: dict[str, Path],
    a2c_saved: Path,
    tmp_path: Path,
    kind: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    from speechattn.recipes.audio2clip.model import (
        CONFIG_NAME,
        HEAD_WEIGHTS_NAME,
        AudioToTextEncoder,
    )

    folder = tmp_path / "model"
    shutil.copytree(a2c_saved, folder)
    head, config = folder / HEAD_WEIGHTS_NAME, folder / CONFIG_NAME
    if kind == "truncated":  # a save cut short
        head.write_bytes(head.read_bytes()[:300])
    elif kind == "garbage":
        head.write_text("not a checkpoint\n")
    elif kind == "list":  # another program's file
        torch.save([torch.zeros(2)], head)
    elif kind == "not_tensors":
        torch.save({"matcher.queries": [1.0, 2.0]}, head)
    else:
        config.write_text('{"text_length": 8,')
    bad = config if kind == "config" else head
    with pytest.raises(ValueError, match="^" + str(bad).replace("\\", "\\\\")):
        AudioToTextEncoder.from_pretrained(folder)
    argv = ["audio2clip", "eval", "--manifest", str(a2c["manifest"]), "--model", str(folder)]
    assert main([*argv, "--text-model", str(a2c["text"])]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and err[0].startswith(f"speechattn audio2clip eval: error: {bad}: ")
    assert "Traceback" not in err[0] and "--debug" not in err[0]


# ---------------------------------------------------------------------------------------------
# align: a resumed checkpoint must share the optimisation settings and the number of processes


def test_align_resume_refuses_other_optimisation_settings(tmp_path: Path) -> None:
    from speechattn.recipes.align.model import AlignerConfig
    from speechattn.recipes.align.train import CheckpointMismatch, TrainConfig, train_aligner

    items = toy_items(8, 0)
    cfg = AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16)
    ck = tmp_path / "ck.pt"
    tc = TrainConfig(steps=2, batch_size=4)
    train_aligner(cfg, items, tc, checkpoint=ck, progress=False)
    assert torch.load(ck, weights_only=True)["world"] == 1
    for change, words in [
        ({"lr": 0.05}, r"lr \(0.002 there, 0.05 now\)"),
        ({"batch_size": 2}, r"batch_size \(4 there, 2 now\)"),
        ({"schedule": "constant"}, r"schedule \('cosine' there, 'constant' now\)"),
        ({"warmup": 5, "weight_decay": 0.1}, r"weight_decay .*warmup|warmup .*weight_decay"),
    ]:
        other = TrainConfig(**{**tc.__dict__, "steps": 4, **change})
        with pytest.raises(CheckpointMismatch, match=words):
            train_aligner(cfg, items, other, checkpoint=ck, progress=False)
    # Settings that only say when to save or stop, and more steps, still resume.
    more = TrainConfig(steps=3, batch_size=4, checkpoint_every=7, max_seconds=600.0)
    assert train_aligner(cfg, items, more, checkpoint=ck, progress=False).resumed_from == 2
    # Fewer steps than the checkpoint has done cannot be honoured (it returned the longer run).
    with pytest.raises(CheckpointMismatch, match=r"at step 3, past the 2 steps asked for now"):
        train_aligner(cfg, items, tc, checkpoint=ck, progress=False)


def test_align_resume_refuses_another_number_of_processes(tmp_path: Path) -> None:
    from speechattn.recipes.align.model import AlignerConfig
    from speechattn.recipes.align.train import CheckpointMismatch, TrainConfig, train_aligner

    items = toy_items(8, 0)
    cfg = AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16)
    ck = tmp_path / "ck.pt"
    tc = TrainConfig(steps=2, batch_size=4)
    train_aligner(cfg, items, tc, checkpoint=ck, progress=False)
    saved = torch.load(ck, weights_only=True)
    torch.save({**saved, "world": 2}, ck)  # as a 2-process torchrun run writes it
    with pytest.raises(CheckpointMismatch, match=r"number of processes \(2 there, 1 now\)"):
        train_aligner(cfg, items, TrainConfig(steps=3, batch_size=4), checkpoint=ck)
    del saved["world"]  # a checkpoint of an earlier version: resumed as before
    torch.save(saved, ck)
    res = train_aligner(cfg, items, TrainConfig(steps=3, batch_size=4), checkpoint=ck)
    assert res.resumed_from == 2


# ---------------------------------------------------------------------------------------------
# Under torchrun: one Ctrl-C line (rank 0) whose resume command is a torchrun command


def _torchrun_env(monkeypatch: pytest.MonkeyPatch, rank: int) -> None:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")


@pytest.mark.parametrize("rank", [0, 1])
def test_ctrl_c_under_torchrun_one_line_from_rank_0(
    tmp_path: Path,
    rank: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import speechattn.recipes.align.pipeline as pipeline

    def interrupted(*a: object, **k: object) -> dict:
        raise KeyboardInterrupt("stopped at step 3 of 10")

    monkeypatch.setattr(pipeline, "run_align", interrupted)
    _torchrun_env(monkeypatch, rank)
    argv = ["align", "corpus", "--out", str(tmp_path), "--from-scratch", "--no-progress"]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip()
    if rank:
        assert err == ""
    else:
        assert len(err.splitlines()) == 1
        cmd = f"torchrun --nproc_per_node 2 -m speechattn align corpus --out {tmp_path}"
        assert f"resume: {cmd} --from-scratch --no-progress" in err


def test_speaker_results_printed_by_rank_0_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from speechattn.recipes.speaker import train as T

    def finished(*args: object, **kwargs: object) -> dict:
        row = {"pooling": "TSTP", "eer": 0.1, "min_dcf": 0.5}
        return {"rows": [row], "dropped_voices": [], "skipped_files": []}

    monkeypatch.setattr(T, "run_speaker", finished)
    # RANK without WORLD_SIZE: _run makes no process group here; under torchrun the group is
    # destroyed before the results are printed, which is why the rank comes from the env.
    monkeypatch.setenv("RANK", "1")
    argv = ["speaker", "train", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "TSTP" in out and "report:" in out


@pytest.mark.parametrize("rank", [0, 1])
def test_align_log_and_warnings_from_rank_0_only(
    tmp_path: Path,
    rank: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import warnings

    import speechattn.recipes.align.pipeline as pipeline

    def run(*a: object, **k: object) -> dict:
        log = k.get("log", print)
        assert callable(log)
        log("4 utterances from corpus")
        warnings.warn("skipped corpus/x.wav: could not decode audio", stacklevel=1)
        return {}  # what every rank but 0 returns

    monkeypatch.setattr(pipeline, "run_align", run)
    _torchrun_env(monkeypatch, rank)
    argv = ["align", "corpus", "--out", str(tmp_path), "--from-scratch", "--no-progress"]
    assert main(argv) == 0
    io = capsys.readouterr()
    if rank:
        assert io.out == "" and io.err == ""
    else:
        assert io.out == "4 utterances from corpus\n"
        assert io.err == "speechattn align: warning: skipped corpus/x.wav: could not decode audio\n"


def test_error_of_a_peer_rank_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import speechattn.recipes.align.pipeline as pipeline

    def broken(*a: object, **k: object) -> dict:  # what gloo raises when the peer has exited
        raise RuntimeError(
            "[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:35025. "
            "This is typically caused by a remote worker crashing."
        )

    monkeypatch.setattr(pipeline, "run_align", broken)
    argv = ["align", "corpus", "--out", str(tmp_path), "--from-scratch", "--no-progress"]
    _torchrun_env(monkeypatch, 0)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == "speechattn align: error: " + _peer_failed_text() + "\n"
    monkeypatch.setenv("WORLD_SIZE", "1")  # not under torchrun: the error as it is
    assert main(argv) == 1
    assert "RuntimeError: [../gloo" in capsys.readouterr().err


def _peer_failed_text() -> str:
    from speechattn import cli

    return cli._PEER_FAILED


def _align_corpus(corpus: Path) -> Path:
    """Four 1.2 s clips with transcripts (an align corpus folder)."""
    corpus.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, text in enumerate(["the cat sat", "a dog ran home", "quick brown fox", "it is"]):
        t = np.arange(int(22050 * 1.2)) / 22050
        wav = 0.2 * np.sin(2 * np.pi * (140 + 40 * rng.random()) * t) * (1 + np.sin(7 * t))
        sf.write(corpus / f"u{i}.wav", (wav + 0.01 * rng.standard_normal(t.size)), 22050)
        (corpus / f"u{i}.txt").write_text(text)
    return corpus


_INJECT = """
import os
if os.environ.get("RANK") == os.environ.get("FAIL_RANK"):
    import speechattn.recipes.align.train as T
    real, calls = T.collate_items, [0]
    def bad(*a, **k):
        calls[0] += 1
        if calls[0] == 3:
            raise ValueError("injected: a bad batch on this rank")
        return real(*a, **k)
    T.collate_items = bad
"""


@pytest.mark.slow
@pytest.mark.parametrize("fail_rank", ["0", "1"])
def test_torchrun_align_one_failing_rank_stops_both_with_its_line(
    tmp_path: Path, fail_rank: str
) -> None:
    """A real 2-process torchrun run where one rank fails mid-training: no hang, the cause in
    one line, the other rank says it stopped with it, only rank 0 logs."""
    import subprocess
    import sys

    pytest.importorskip("espeakng_loader")
    corpus = _align_corpus(tmp_path / "corpus")
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(_INJECT)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, OMP_NUM_THREADS="1", FAIL_RANK=fail_rank)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "inject"), src, env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "speechattn", "align", str(corpus), "--out", str(tmp_path / "out"),
        "--from-scratch", "--steps", "6", "--threads", "1", "--no-progress",
    ]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode != 0
    lines = (res.stdout + res.stderr).splitlines()
    mine = [ln for ln in lines if ln.startswith("speechattn align: error: ")]
    assert sorted(mine) == sorted(
        [
            "speechattn align: error: injected: a bad batch on this rank",
            "speechattn align: error: " + _peer_failed_text(),
        ]
    ), res.stderr[-3000:]
    assert sum("utterances from" in ln for ln in lines) == 1


# ---------------------------------------------------------------------------------------------
# align under torchrun: a stop on one rank stops every rank at the same step

_STOP_WORKER = """
import json, sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, sys.argv[2])
from tests.align_toy import N_MELS, NUM_SYMBOLS, toy_items

from speechattn.recipes.align.model import AlignerConfig
from speechattn.recipes.align.train import TrainConfig, train_aligner

torch.set_num_threads(1)
dist.init_process_group("gloo", timeout=timedelta(seconds=60))  # a hang fails in a minute
rank = dist.get_rank()
cfg = AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16, dropout=0.0)
res = train_aligner(
    cfg,
    toy_items(16, 0),
    TrainConfig(steps=8, batch_size=2, checkpoint_every=100),
    progress=False,
    # rank 0 alone wants to stop after 3 steps (as the adaptation rule, reading each rank's own
    # losses, or the time cap, could decide)
    should_stop=lambda history: rank == 0 and len(history) >= 3,
)
Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(res.history))

# A 2-process run stopped after 5 of 10 steps, then resumed, against an uninterrupted one
# (dropout on: each rank's RNG state must come back, not rank 0's on every rank).
cfg = AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16, dropout=0.1)
tc = TrainConfig(steps=10, batch_size=3, checkpoint_every=100)
items = toy_items(20, 0)
out = Path(sys.argv[1])
whole = train_aligner(cfg, items, tc, checkpoint=out / "whole.pt", progress=False)
part = out / "part.pt"
train_aligner(cfg, items, tc, checkpoint=part, progress=False, should_stop=lambda h: len(h) >= 5)
resumed = train_aligner(cfg, items, tc, checkpoint=part, progress=False)
same = all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in whole.model.state_dict().items())
Path(sys.argv[1], f"resume{rank}.json").write_text(json.dumps([resumed.resumed_from, same]))

# 2 processes x batch_size 2, dropout off: compared in the test with 1 process x batch_size 4
cfg = AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16, dropout=0.0)
res = train_aligner(cfg, items, TrainConfig(steps=6, batch_size=2), progress=False)
if rank == 0:
    torch.save(res.model.state_dict(), out / "ddp_weights.pt")
# Both ranks finish here, then exit with the group alive, as tests/_ddp_align_worker.py does:
# once in CI, rank 1 aborted inside gloo ("terminate called without an active exception")
# when it tore the group down while rank 0 was still writing.
dist.barrier()
"""


def test_torchrun_align_stop_on_one_rank_stops_all_and_resume_is_exact(tmp_path: Path) -> None:
    from tests.torchrun_worker import run_two_processes

    res = run_two_processes(_STOP_WORKER, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    h0, h1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(h0) == len(h1) == 3
    # the history holds the global batch's loss: the same on every rank
    assert [h["loss"] for h in h0] == [h["loss"] for h in h1]
    # stopped and resumed equals uninterrupted, on every rank
    for r in (0, 1):
        assert json.loads((tmp_path / f"resume{r}.json").read_text()) == [5, True]
    # the same global batch in one process gives the same weights (to float rounding)
    from speechattn.recipes.align.model import AlignerConfig
    from speechattn.recipes.align.train import TrainConfig, train_aligner

    cfg = AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16, dropout=0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = train_aligner(
            cfg, toy_items(20, 0), TrainConfig(steps=6, batch_size=4), progress=False
        )
    finally:
        torch.set_num_threads(threads)
    ddp = torch.load(tmp_path / "ddp_weights.pt", weights_only=True)
    for k, v in one.model.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-5, msg=k)


# ---------------------------------------------------------------------------------------------
# align: another recipe's checkpoint (or a truncated one) is one line naming the file


def _speaker_like_checkpoints(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    train_ck, export = folder / "TSTP.pt", folder / "encoder.pt"
    weights = {"trunk.weight": torch.zeros(2, 2)}
    torch.save(
        {"format": "speechattn-speaker-train-v1", "model": weights, "step": 4, "optimizer": {}},
        train_ck,
    )
    torch.save({"format": "speechattn-speaker-v2", "state_dict": weights}, export)
    return [train_ck, export]


def test_align_checkpoint_of_another_recipe_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from speechattn.recipes.align.pipeline import load_aligner

    pytest.importorskip("espeakng_loader")
    corpus = _align_corpus(tmp_path / "corpus")
    for ck in _speaker_like_checkpoints(tmp_path / "spk"):
        with pytest.raises(ValueError, match=rf"^{ck}: not an aligner checkpoint \(speechattn-"):
            load_aligner(ck)
        argv = ["align", str(corpus), "--out", str(tmp_path / "o"), "--checkpoint", str(ck)]
        assert main([*argv, "--no-progress"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"speechattn align: error: {ck}: not an aligner checkpoint")
        assert len(err.splitlines()) == 1 and "KeyError" in err and "--debug" not in err


def test_align_resume_from_another_recipe_or_a_truncated_file(tmp_path: Path) -> None:
    from speechattn.recipes.align.model import AlignerConfig
    from speechattn.recipes.align.train import CheckpointMismatch, TrainConfig, train_aligner

    items = toy_items(8, 0)
    cfg = AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16)
    train_ck, _ = _speaker_like_checkpoints(tmp_path)
    with pytest.raises(CheckpointMismatch, match="not an aligner training checkpoint"):
        train_aligner(cfg, items, TrainConfig(steps=2), checkpoint=train_ck, progress=False)
    ck = tmp_path / "ck.pt"
    train_aligner(cfg, items, TrainConfig(steps=2), checkpoint=ck, progress=False)
    ck.write_bytes(ck.read_bytes()[:500])  # a copy cut short
    with pytest.raises(ValueError, match=rf"^{ck}: .*weights_only=True.*central directory\)\. "):
        train_aligner(cfg, items, TrainConfig(steps=2), checkpoint=ck, progress=False)


# ---------------------------------------------------------------------------------------------
# audio2clip: a save cut short never leaves a folder that loads as a mix of two models


def test_audio2clip_save_cut_short_is_refused_not_mixed(
    a2c: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import speechattn.recipes.audio2clip.model as M

    old = M.AudioToTextEncoder.from_pretrained(a2c["w2v"], text_length=8, text_dim=32, num_heads=4)
    folder = old.save_pretrained(tmp_path / "model")
    torch.manual_seed(1)
    new = M.AudioToTextEncoder.from_pretrained(a2c["w2v"], text_length=8, text_dim=32, num_heads=2)

    def interrupted(*a: object, **k: object) -> None:  # Ctrl-C while the head is written
        raise KeyboardInterrupt

    monkeypatch.setattr(M.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        new.save_pretrained(folder)
    monkeypatch.undo()
    # before: the old config and head beside the new encoder loaded without a word
    with pytest.raises(ValueError, match=rf"^{folder}: .*save was cut short"):
        M.AudioToTextEncoder.from_pretrained(folder)
    new.save_pretrained(folder)  # the next save completes it
    assert M.AudioToTextEncoder.from_pretrained(folder).num_heads == 2
    assert not list(folder.glob("*.tmp"))


# ---------------------------------------------------------------------------------------------
# audio2clip: transformers' own progress bars follow --no-progress and come from rank 0 only


@pytest.mark.parametrize("rank, progress", [("0", False), ("1", True)])
def test_audio2clip_train_bars_from_rank_0_only(
    a2c: dict[str, Path],
    tmp_path: Path,
    rank: str,
    progress: bool,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from transformers.utils import logging as hf_logging

    from speechattn.recipes.audio2clip.train import train

    monkeypatch.setenv("RANK", rank)  # (WORLD_SIZE stays 1: no process group)
    before = hf_logging.is_progress_bar_enabled()
    capfd.readouterr()
    train(
        manifest=a2c["manifest"],
        output_dir=tmp_path / "m",
        audio_model=a2c["w2v"],
        text_model=a2c["text"],
        max_steps=1,
        batch_size=4,
        progress=progress,
    )
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err, err[-500:]
    assert hf_logging.is_progress_bar_enabled() == before  # restored


# ---------------------------------------------------------------------------------------------
# demo under torchrun: refused in one line (every rank synthesised the same corpus into the same
# folder, evaluated and wrote the report)


@pytest.mark.parametrize("rank", [0, 1])
def test_demo_under_torchrun_is_a_usage_error_from_rank_0(
    tmp_path: Path,
    rank: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _torchrun_env(monkeypatch, rank)
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    if rank:
        assert err == ""
    else:
        assert err.startswith("speechattn demo: error: demo runs in one process")
        assert len(err.splitlines()) == 1 and "torchrun --nproc_per_node N" in err
    assert not (tmp_path / "d" / "corpus").exists()


# ---------------------------------------------------------------------------------------------
# speaker: Ctrl-C in one process keeps the steps done since the last periodic checkpoint


def test_speaker_ctrl_c_saves_the_steps_done_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from speechattn.recipes.speaker import train as T
    from speechattn.recipes.speaker.config import SpeakerConfig

    cfg = SpeakerConfig(
        channels=8, embed_dim=8, steps=7, batch_size=4, min_frames=20, max_frames=40,
        augment_copies=0, checkpoint_every=100, seed=2,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(int(40 + 5 * (i % 5)), cfg.n_mels, generator=g) for i in range(12)]
    labels = [i % 3 for i in range(12)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = T.train_encoder("TSTP", feats, labels, cfg, progress=False)
        ck = tmp_path / "TSTP.pt"
        real, calls = T.random_crops, [0]

        def interrupted(*args: object, **kwargs: object) -> object:
            calls[0] += 1
            if calls[0] == 6:  # the probe batch, then steps 1-4: Ctrl-C in step 5
                raise KeyboardInterrupt
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(T, "random_crops", interrupted)
        with pytest.raises(KeyboardInterrupt):
            T.train_encoder("TSTP", feats, labels, cfg, progress=False, checkpoint=ck)
        monkeypatch.setattr(T, "random_crops", real)
        # no periodic checkpoint was due: before, nothing was saved and 4 steps were lost
        assert torch.load(ck, weights_only=True)["step"] == 4
        resumed = T.train_encoder("TSTP", feats, labels, cfg, progress=False, checkpoint=ck)
    finally:
        torch.set_num_threads(threads)
    assert resumed.resumed_from == 4 and resumed.losses == whole.losses
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
