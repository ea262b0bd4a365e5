"""Small defects of round polish4, each test failing before its fix.

* ``mha`` aligner under torchrun: its loss is a mean over the batch's frames, so the ranks'
  averaged gradients were not the global batch's; 2 processes x batch 4 trained other weights
  than 1 process x batch 8 (``fs`` and ``sma``, per-item means, matched).
* ``align`` in an output folder that holds another run (``--no-adapt`` after an adapted run,
  another seed): refused only after every file's features were computed; also a prior or
  calibration the aligner cannot take, and (Python API) an unknown alignment format, the last
  after training.
* ``demo --augment`` logged "10 train" for 5 training utterances and their 5 channel copies, and
  "4 held-out voices" for 4 utterances of one held-out voice.
* ``audio2clip train --resume`` went on from another run's checkpoints under other settings
  (another learning rate, manifest, seed...) without a word.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from tests.align_toy import N_MELS, NUM_SYMBOLS, tone_corpus, toy_items
from tests.torchrun_worker import run_two_processes

from speechattn.cli import main
from speechattn.recipes.align.model import AlignerConfig
from speechattn.recipes.align.train import TrainConfig, train_aligner

# ---------------------------------------------------------------------------------------------
# mha under torchrun: 2 processes x batch 4 = 1 process x batch 8

_MHA_WORKER = """
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
dist.init_process_group("gloo", timeout=timedelta(seconds=60))
rank = dist.get_rank()
cfg = AlignerConfig(kind="mha", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16, dropout=0.0)
res = train_aligner(cfg, toy_items(16, 0), TrainConfig(steps=3, batch_size=4), progress=False)
if rank == 0:
    torch.save(res.model.state_dict(), Path(sys.argv[1], "mha.pt"))
Path(sys.argv[1], f"history{rank}.json").write_text(json.dumps(res.history))
dist.barrier()
"""


def _one_process(kind: str, batch_size: int, steps: int, dropout: float = 0.0) -> object:
    cfg = AlignerConfig(kind=kind, num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16, dropout=dropout)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_aligner(
            cfg, toy_items(16, 0), TrainConfig(steps=steps, batch_size=batch_size), progress=False
        )
    finally:
        torch.set_num_threads(threads)


def test_torchrun_mha_matches_one_process_with_the_global_batch(tmp_path: Path) -> None:
    res = run_two_processes(_MHA_WORKER, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    one = _one_process("mha", 8, 3)
    ddp = torch.load(tmp_path / "mha.pt", weights_only=True)
    for k, v in one.model.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-5, msg=k)
    # the history is the global batch's loss (the frame mean over all 8 items), on every rank
    h0, h1 = (json.loads((tmp_path / f"history{r}.json").read_text()) for r in (0, 1))
    assert [h["loss"] for h in h0] == [h["loss"] for h in h1]
    for a, b in zip(h0, one.history, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * max(1.0, abs(b["loss"]))


# ---------------------------------------------------------------------------------------------
# align: refusals before the features are computed


@pytest.fixture()
def no_features(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts build_items calls from here on, and fails any (no heavy work expected)."""
    import speechattn.recipes.align.pipeline as pipeline

    calls: list[int] = []

    def refuse(*a: object, **k: object) -> None:
        calls.append(1)
        raise RuntimeError("features computed before the refusal")

    monkeypatch.setattr(pipeline, "build_items", refuse)
    return calls


def _align(*argv: str) -> int:
    return main(["align", *argv, "--no-progress", "--threads", "1"])


@pytest.mark.parametrize(
    ("first", "second", "named"),
    [
        (("--steps", "1"), ("--no-adapt",), "mode (--from-scratch / adapt / --no-adapt)"),
        (("--from-scratch", "--steps", "1"), ("--from-scratch", "--seed", "1"), "seed (0 there"),
    ],
)
def test_align_used_folder_is_refused_before_the_features(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    first: tuple[str, ...],
    second: tuple[str, ...],
    named: str,
) -> None:
    pytest.importorskip("espeakng_loader")
    data = tone_corpus(tmp_path / "corpus", {"a": "the cat sat", "b": "a dog"}, noise=0.01)
    out = tmp_path / "O"
    assert _align(str(data), "--out", str(out), *first) == 0
    record = (out / "run.json").read_text()
    capsys.readouterr()
    import speechattn.recipes.align.pipeline as pipeline

    calls: list[int] = []

    def refuse(*a: object, **k: object) -> None:
        calls.append(1)
        raise RuntimeError("features computed before the refusal")

    monkeypatch.setattr(pipeline, "build_items", refuse)
    assert _align(str(data), "--out", str(out), *second) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("speechattn align: error: "), err
    assert named in err and "--overwrite" in err
    assert calls == []  # refused before any feature was computed
    assert (out / "run.json").read_text() == record  # the earlier run's record untouched


def test_align_refusals_of_settings_come_before_the_features(
    tmp_path: Path, no_features: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    from speechattn.recipes.align.pipeline import run_align

    data = tone_corpus(tmp_path / "corpus", {"a": "the cat sat"}, noise=0.01)
    # the shipped aligner is not a plain-MHA one
    assert _align(str(data), "--out", str(tmp_path / "O1"), "--prior", "diagonal") == 1
    assert "Expected a plain-MHA aligner" in capsys.readouterr().err
    # a new aligner has no calibration table
    argv = ("--out", str(tmp_path / "O2"), "--from-scratch", "--calibration", "contexts")
    assert _align(str(data), *argv) == 1
    assert "--from-scratch has none" in capsys.readouterr().err
    # Python API: an unknown format was refused only when the alignments were written
    with pytest.raises(ValueError, match=r"Expected formats from .*found \('xml',\)"):
        run_align(data, tmp_path / "O3", formats=("xml",), progress=False)
    assert no_features == []


# ---------------------------------------------------------------------------------------------
# demo: the split line counts utterances, channel copies apart


def test_demo_split_line_counts_utterances_and_channel_copies_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("matplotlib")
    args = ["demo", "--quick", "--utterances", "12", "--speakers", "3", "--steps", "1"]
    args += ["--set", "held_out_utterances=3", "--set", "dim=16", "--kinds", "sma", "--augment"]
    assert main([*args, "--no-progress", "--threads", "1", "--out", str(tmp_path / "d")]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if " held-out utterances, " in ln]
    m = re.match(
        r"(\d+) utterances: (\d+) train utterances \(\+(\d+) channel copies\), (\d+) held-out "
        r"utterances, (\d+) utterances of (\d+) held-out voices? \[",
        line,
    )
    assert m is not None, line
    total, train, copies, dev, unseen, voices = map(int, m.groups())
    assert 0 < copies <= train and voices == 1  # quick(): one held-out voice
    assert train + dev + unseen <= total == 12


# ---------------------------------------------------------------------------------------------
# audio2clip train --resume: refused under other settings, naming them


@pytest.fixture(scope="module")
def a2c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from tests.a2c_toy import tiny_a2c_setup

    return tiny_a2c_setup(tmp_path_factory.mktemp("a2c"))


def test_audio2clip_resume_under_other_settings_is_refused_naming_them(
    a2c: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from tests.cli_run import run_cli

    from speechattn.recipes.audio2clip import model as a2c_model

    manifest = tmp_path / "manifest.jsonl"
    shutil.copy(a2c / "manifest.jsonl", manifest)
    (tmp_path / "wavs").symlink_to(a2c / "wavs")
    out = tmp_path / "o"
    base = ["audio2clip", "train", "--manifest", str(manifest), "--text-model",
            str(a2c / "clip_text"), "--audio-model", str(a2c / "w2v"), "--max-steps", "2",
            "--batch-size", "2", "--no-progress", "--out", str(out)]  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_cli([*base, "--checkpoint-every", "1"]) == 0
        capsys.readouterr()
        loaded: list[int] = []
        real = a2c_model.AudioToTextEncoder.from_pretrained

        def watched(*a: object, **k: object) -> object:
            loaded.append(1)
            return real(*a, **k)  # type: ignore[arg-type]

        monkeypatch.setattr(a2c_model.AudioToTextEncoder, "from_pretrained", watched)
        for extra, named in (
            (["--lr", "0.001"], "--lr (0.0001 there, 0.001 now)"),
            (
                ["--seed", "3", "--temperature", "0.2"],
                "--temperature (0.15 there, 0.2 now); --seed",
            ),
        ):
            assert run_cli([*base, "--resume", *extra]) == 1
            said = capsys.readouterr()
            text = (said.out + said.err).strip()
            assert len(text.splitlines()) == 1, text
            assert "--resume: the checkpoints in" in text and named in text, text
        with manifest.open("a") as f:  # the same file, another corpus
            f.write(json.dumps({"audio": "wavs/u0.wav", "caption": "one more"}) + "\n")
        assert run_cli([*base, "--resume"]) == 1
        said = capsys.readouterr()
        assert "(the --manifest file's contents)" in said.out + said.err
        assert loaded == []  # refused before any model was loaded
        shutil.copy(a2c / "manifest.jsonl", manifest)
        # the same settings resume (how often to save and the log may change)
        assert run_cli([*base, "--resume", "--checkpoint-every", "5"]) == 0
        assert loaded
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# demo and speaker: refusals before the heavy work


def test_demo_export_to_a_folder_is_refused_before_synthesis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from speechattn.data import synth

    def no_synthesis(*a: object, **k: object) -> Path:
        raise AssertionError("synthesized before the refusal")

    monkeypatch.setattr(synth, "synth_corpus", no_synthesis)
    (tmp_path / "models").mkdir()
    argv = ["demo", "--quick", "--no-progress", "--out", str(tmp_path / "d")]
    assert main([*argv, "--export", str(tmp_path / "models")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--export" in line and "found the folder" in line and "synthesized" not in line
    assert not (tmp_path / "d").exists()


def test_speaker_score_out_folder_is_refused_before_scoring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from speechattn.recipes.speaker import data as spk_data

    calls: list[int] = []

    def no_trials(*a: object, **k: object) -> None:
        calls.append(1)
        raise AssertionError("trials read before the refusal")

    monkeypatch.setattr(spk_data, "read_trials", no_trials)
    (tmp_path / "trials.txt").write_text("1 a.wav b.wav\n")
    (tmp_path / "res").mkdir()
    argv = ["speaker", "score", str(tmp_path / "trials.txt"), "--out", str(tmp_path / "res")]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--out" in line and "found a folder" in line
    assert calls == []


def test_speaker_train_other_runs_checkpoints_refused_before_the_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("matplotlib")
    from speechattn.data.synth import synth_corpus
    from speechattn.recipes.speaker import train as spk_train

    manifest = synth_corpus(
        tmp_path / "synth", utterances=12, speakers=3, seed=3, sample_rate=16000, progress=False
    )
    out = tmp_path / "run"
    tiny = ["--steps", "2", "--poolings", "TSTP", "--augment-copies", "0", "--no-progress",
            "--set", "channels=16", "embed_dim=16", "min_frames=20", "max_frames=60",
            "batch_size=8", "checkpoint_every=2", "test_speakers=0"]  # fmt: skip
    base = ["speaker", "train", str(manifest), "--out", str(out), *tiny]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(base) == 0
        capsys.readouterr()
        calls: list[int] = []

        def no_features(*a: object, **k: object) -> None:
            calls.append(1)
            raise AssertionError("features computed before the refusal")

        monkeypatch.setattr(spk_train, "load_feature_set", no_features)
        assert main([*base, "--seed", "5"]) == 1
    finally:
        torch.set_num_threads(threads)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "belongs to another run" in line and "config.seed 0 -> 5" in line, line
    assert calls == []
