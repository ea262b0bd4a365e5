"""Defects fixed in the polish3 round (each test failed before its fix).

* Atomic outputs: a write cut short (Ctrl-C, a crash) left a truncated TextGrid / CTM / JSON /
  report / results file that a later run or reader took as valid; every writer in the recipes
  and the CLI now goes through one helper (a temporary file beside the target, then
  ``os.replace``).
* speaker score --cohort: a .npy, a pickle or an object array gave an error naming no file; the
  array checks now all name the file, what was expected and what was found.
* DDP: torch's "find_unused_parameters=True ... did not find any unused parameters" warning,
  once per rank, from align (fs, mha) and audio2clip.
* Process-group teardown: speaker destroyed its group without a barrier, align and audio2clip
  never ended theirs; one helper now does it the same way for all three.
* audio2clip train could not resume; --checkpoint-every / --resume, exact and pickle-free.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from speechattn._io import atomic_write, write_text_atomic

SRC = Path(__file__).resolve().parents[1] / "src" / "speechattn"

# ---------------------------------------------------------------------------------------------
# Atomic outputs


def test_atomic_write_replaces_on_success_and_keeps_the_old_file_on_failure(
    tmp_path: Path,
) -> None:
    target = tmp_path / "sub" / "results.json"
    write_text_atomic(target, '{"a": 1}')  # the folder is created
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as tmp:
        tmp.write_text('{"a": ')
        raise KeyboardInterrupt
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]
    # the temporary name is hidden and ends in .tmp: no *.json reader picks it up
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.startswith(".") and tmp.name.endswith(".tmp")
        tmp.write_text("{}")


def _cut_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``Path.write_text`` writes half its text, then the user presses Ctrl-C."""
    real = Path.write_text

    def half(self: Path, data: str, *a: object, **k: object) -> int:
        real(self, data[: len(data) // 2], *a, **k)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half)


def _iv() -> list[tuple[float, float, str]]:
    return [(0.0, 0.5, "hello"), (0.5, 1.0, "world")]


def _ctm(path: Path) -> None:
    from speechattn.data.textgrid import write_ctm

    write_ctm(path, _iv(), utterance_id="u1")


def _alignment_json(path: Path) -> None:
    from speechattn.data.textgrid import write_alignment_json

    write_alignment_json(path, words=_iv(), phones=_iv(), duration=1.0, text="hello world")


def _speaker_report(path: Path) -> None:
    from speechattn.recipes.speaker.config import SpeakerConfig
    from speechattn.recipes.speaker.evaluate import write_report

    row = {"pooling": "TSTP", "eer": 0.1, "min_dcf": 0.5}
    write_report(path, [row], "", SpeakerConfig(), "notes")


def _run_record(path: Path) -> None:
    from speechattn.recipes.align.outputs import prepare_output

    prepare_output(path.parent, {"seed": 1, "corpus": "x" * 200}, overwrite=False)


def _manifest(path: Path) -> None:
    from speechattn.recipes.audio2clip.data import ManifestItem, write_manifest

    items = [ManifestItem(path.parent / f"u{i}.wav", f"caption {i}", {}) for i in range(4)]
    write_manifest(path, items)


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("u1.ctm", _ctm),
        ("u1.json", _alignment_json),
        ("report.html", _speaker_report),
        ("run.json", _run_record),
        ("manifest.jsonl", _manifest),
    ],
)
def test_text_writer_cut_short_leaves_the_earlier_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, write: Callable[[Path], None]
) -> None:
    path = tmp_path / name
    write(path)
    before = path.read_bytes()
    _cut_short(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        write(path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # before: half a file
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_textgrid_cut_short_leaves_the_earlier_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("praatio")
    from praatio import textgrid as ptg

    from speechattn.data.textgrid import read_textgrid, write_textgrid

    path = tmp_path / "u1.TextGrid"
    write_textgrid(path, words=_iv(), phones=_iv(), duration=1.0)
    before = path.read_bytes()
    real = ptg.Textgrid.save

    def half(self: object, fn: str, *a: object, **k: object) -> None:
        real(self, fn, *a, **k)  # type: ignore[arg-type]
        text = Path(fn).read_text()
        Path(fn).write_text(text[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(ptg.Textgrid, "save", half)
    with pytest.raises(KeyboardInterrupt):
        write_textgrid(path, words=_iv()[:1], phones=_iv()[:1], duration=1.0)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [iv.label for iv in read_textgrid(path)[0]] == ["hello", "world"]


# Calls that write a file; the file they write must be the helper's temporary path (a name
# ``tmp``, ``str(tmp)``, or ``f``: an open file of it; ``buf``: an in-memory buffer).
_WRITERS = ("write_text", "write_bytes", "save", "savez", "savez_compressed", "savefig")


def _is_tmp(node: ast.expr | None) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str":
        return bool(node.args) and _is_tmp(node.args[0])
    return isinstance(node, ast.Name) and node.id in ("tmp", "f", "buf")


def _written(node: ast.Call) -> ast.expr | None:
    """The file argument of a writing call (``torch.save(obj, FILE)``, ``FILE.write_text(...)``,
    ``x.save(FILE)``, ``np.savez(FILE, ...)``, ``fig.savefig(FILE)``)."""
    func = node.func
    assert isinstance(func, ast.Attribute)
    if func.attr in ("write_text", "write_bytes"):
        return func.value
    k = (
        1
        if func.attr == "save" and isinstance(func.value, ast.Name) and func.value.id == "torch"
        else 0
    )
    return node.args[k] if len(node.args) > k else None


def _direct_writes(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        where = f"{path.relative_to(SRC)}:{node.lineno}"
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in _WRITERS:
            if not _is_tmp(_written(node)):
                found.append(f"{where} .{func.attr}(...)")
        elif (isinstance(func, ast.Name) and func.id == "open") or (
            isinstance(func, ast.Attribute) and func.attr == "open"
        ):
            modes = [a.value for a in node.args if isinstance(a, ast.Constant)]
            modes += [k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)]
            opened = node.args[0] if isinstance(func, ast.Name) and node.args else func.value
            if any(isinstance(m, str) and set(m) & set("wax") for m in modes) and not _is_tmp(
                opened
            ):
                found.append(f"{where} open(...)")
    return found


def test_recipes_and_cli_write_files_only_through_the_atomic_helper() -> None:
    files = [SRC / "cli.py", SRC / "data" / "textgrid.py", *sorted((SRC / "recipes").rglob("*.py"))]
    assert [w for f in files for w in _direct_writes(f)] == []


# ---------------------------------------------------------------------------------------------
# Speaker score-normalisation cohort (.npz): every array check names the file, expected, found


def _cohort_files(folder: Path) -> dict[str, tuple[Path, str]]:
    import pickle

    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str]] = {}

    def npz(name: str, want: str, **arrays: object) -> None:
        np.savez(folder / name, **arrays)  # type: ignore[arg-type]
        out[name] = (folder / name, want)

    npz("flat.npz", r"of shape \(C, E=8\); found shape \(8,\)", embeddings=np.ones(8))
    npz("cube.npz", r"of shape \(C, E=8\); found shape \(2, 2, 8\)", embeddings=np.ones((2, 2, 8)))
    npz("dim.npz", r"of shape \(C, E=8\); found shape \(3, 5\)", embeddings=np.ones((3, 5)))
    npz("one.npz", "at least 2 rows; found 1", embeddings=np.ones((1, 8)))
    nan = np.ones((4, 8))
    nan[2, 3] = np.nan
    npz("nan.npz", r"found NaN or inf in 1 of 4 rows \(first: row 2\)", embeddings=nan)
    npz("bool.npz", "as floating point; found bool", embeddings=np.ones((3, 8), dtype=bool))
    obj = np.empty((2,), dtype=object)
    obj[:] = [np.ones(8), np.ones(8)]
    npz("obj.npz", "Could not read .*'embeddings' array", embeddings=obj)
    np.save(folder / "single.npy", np.ones((3, 8)))
    out["single.npy"] = (folder / "single.npy", r"found a single \.npy array of shape \(3, 8\)")
    (folder / "pickled.npz").write_bytes(pickle.dumps([1, 2]))
    out["pickled.npz"] = (folder / "pickled.npz", "Could not read .* as an .npz")
    return out


def test_load_cohort_checks_the_arrays_naming_the_file(tmp_path: Path) -> None:
    import re

    import numpy as np

    from speechattn.recipes.speaker.evaluate import load_cohort

    for name, (path, want) in _cohort_files(tmp_path).items():
        with pytest.raises(ValueError) as exc:
            load_cohort(path, embed_dim=8)
        msg = str(exc.value)
        assert str(path) in msg and re.search(want, msg), (name, msg)
        assert "\n" not in msg
    good = tmp_path / "good.npz"
    rows = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    np.savez(good, keys=np.array(["a", "b", "c"]), embeddings=rows)
    np.testing.assert_array_equal(load_cohort(good, embed_dim=8), rows)
    np.testing.assert_array_equal(load_cohort(good), rows)  # E unchecked without embed_dim


def test_speaker_score_cohort_errors_are_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import soundfile as sf
    from tests.cli_run import run_cli
    from tests.speaker_toy import SR, toy_voice

    (tmp_path / "a").mkdir()
    for i in range(4):
        sf.write(tmp_path / "a" / f"v{i}.wav", toy_voice(i), SR)
    trials = tmp_path / "a" / "trials.txt"
    trials.write_text("1 v0.wav v1.wav\n0 v2.wav v3.wav\n")
    for name, (path, _) in _cohort_files(tmp_path / "c").items():
        argv = ["speaker", "score", str(trials), "--score-norm", "snorm", "--cohort", str(path)]
        assert run_cli(argv) == 1, name
        cap = capsys.readouterr()
        err = (cap.out + cap.err).strip()
        assert len(err.splitlines()) == 1 and str(path) in err and "--cohort" in err, (name, err)


# ---------------------------------------------------------------------------------------------
# DDP: no "find_unused_parameters=True ... did not find any unused parameters" warning. The
# align recipe asked DDP to search for unused parameters for every kind (only SMA has any: its
# layer's value and output projections, now frozen), audio2clip always (none is unused unless
# the encoder drops layers at random).

_DDP_WORKER = """
import json, sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.distributed as dist

sys.path.insert(0, sys.argv[2])
from tests.align_toy import N_MELS, NUM_SYMBOLS, toy_items

from speechattn.recipes.align.model import AlignerConfig
from speechattn.recipes.align.train import TrainConfig, train_aligner

torch.set_num_threads(1)
dist.init_process_group("gloo", timeout=timedelta(seconds=60))
rank = dist.get_rank()
out = Path(sys.argv[1])
for kind in ("fs", "mha", "sma"):
    cfg = AlignerConfig(kind=kind, num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16, dropout=0.0)
    res = train_aligner(cfg, toy_items(8, 0), TrainConfig(steps=2, batch_size=2), progress=False)
    if rank == 0:
        torch.save(res.model.state_dict(), out / f"{kind}.pt")
from speechattn.recipes.audio2clip.train import train

a2c = Path(sys.argv[3])
train(manifest=a2c / "manifest.jsonl", output_dir=out / "a2c", audio_model=a2c / "w2v",
      text_model=a2c / "clip_text", max_steps=1, batch_size=2, seed=0, progress=False)
dist.barrier()
"""


@pytest.fixture(scope="module")
def a2c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from tests.a2c_toy import tiny_a2c_setup

    return tiny_a2c_setup(tmp_path_factory.mktemp("a2c"))


def test_torchrun_recipes_print_no_unused_parameter_warning(tmp_path: Path, a2c: Path) -> None:

    import torch
    from tests.align_toy import N_MELS, NUM_SYMBOLS, toy_items
    from tests.torchrun_worker import run_two_processes

    from speechattn.recipes.align.model import AlignerConfig
    from speechattn.recipes.align.train import TrainConfig, train_aligner

    res = run_two_processes(_DDP_WORKER, tmp_path, str(a2c), timeout=300, HF_HUB_OFFLINE="1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "find_unused_parameters" not in res.stderr + res.stdout  # before: once per rank
    # the same weights as one process with the global batch (the frozen projections included;
    # mha's frame-mean loss too, since polish4 weights each rank's by its share of the frames)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for kind in ("fs", "mha", "sma"):
            cfg = AlignerConfig(
                kind=kind, num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16, dropout=0.0
            )
            one = train_aligner(
                cfg, toy_items(8, 0), TrainConfig(steps=2, batch_size=4), progress=False
            )
            ddp = torch.load(tmp_path / f"{kind}.pt", weights_only=True)
            for k, v in one.model.state_dict().items():
                torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-5, msg=f"{kind} {k}")
    finally:
        torch.set_num_threads(threads)


def test_sma_aligner_unused_projections_are_frozen_and_stay_put() -> None:
    from tests.align_toy import N_MELS, NUM_SYMBOLS, toy_items

    from speechattn.recipes.align.data import collate_items
    from speechattn.recipes.align.model import AlignerConfig, TextMelAligner

    for kind in ("sma", "fs", "mha"):
        m = TextMelAligner(AlignerConfig(kind=kind, num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16))
        m(*collate_items(toy_items(4, 0))).loss.backward()
        # every trainable parameter gets a gradient: DDP needs no search for unused ones
        assert [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None] == []
    frozen = [n for n, p in m.named_parameters() if not p.requires_grad]
    assert frozen == []  # mha: nothing frozen
    sma = TextMelAligner(AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16))
    assert sorted(n for n, p in sma.named_parameters() if not p.requires_grad) == [
        "sma.out_proj.bias", "sma.out_proj.weight", "sma.v_proj.bias", "sma.v_proj.weight",
    ]  # fmt: skip


def test_audio2clip_searches_for_unused_parameters_only_when_layers_drop(a2c: Path) -> None:
    from speechattn.recipes.audio2clip.model import AudioToTextEncoder
    from speechattn.recipes.audio2clip.train import _drops_layers

    enc = AudioToTextEncoder.from_pretrained(a2c / "w2v", text_length=8, text_dim=32, num_heads=4)
    assert not _drops_layers(enc)
    enc = AudioToTextEncoder.from_pretrained(
        a2c / "w2v", text_length=8, text_dim=32, num_heads=4, layerdrop=0.1
    )
    assert _drops_layers(enc)


# ---------------------------------------------------------------------------------------------
# Process-group teardown: every recipe ends its group the same way (barrier, then destroy; after
# a failure, neither). speaker destroyed without a barrier (gloo once aborted a rank in that
# teardown), align and audio2clip never ended theirs.


class _FakeDist:
    """Stands in for torch.distributed under a 2-process torchrun: records the calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, rank: int = 1) -> None:
        import torch.distributed as dist

        from speechattn.recipes import _distributed

        self.calls: list[str] = []
        self.up = False
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setattr(_distributed, "_started", [False])
        for name, fn in {
            "is_available": lambda: True,
            "is_initialized": lambda: self.up,
            "init_process_group": self._init,
            "get_rank": lambda *a, **k: rank,
            "get_world_size": lambda *a, **k: 2,
            "get_backend": lambda *a, **k: "gloo",
            "barrier": lambda *a, **k: self.calls.append("barrier"),
            "destroy_process_group": self._destroy,
        }.items():
            monkeypatch.setattr(dist, name, fn)

    def _init(self, *a: object, **k: object) -> None:
        self.calls.append("init")
        self.up = True

    def _destroy(self, *a: object, **k: object) -> None:
        self.calls.append("destroy")
        self.up = False


def test_end_process_group_barrier_then_destroy_only_after_success(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from speechattn.recipes._distributed import end_process_group, start_process_group

    fake = _FakeDist(monkeypatch)
    assert start_process_group("gloo") == (1, 2)
    end_process_group(ok=False)  # a failure: the group is left to the process exit
    assert fake.calls == ["init"]
    end_process_group(ok=True)
    end_process_group(ok=True)  # ended once
    assert fake.calls == ["init", "barrier", "destroy"]
    fake.calls.clear()
    fake.up = True  # a group the caller started is theirs to end
    assert start_process_group() == (1, 2)
    end_process_group(ok=True)
    assert fake.calls == []


def _speaker_cmd(monkeypatch: pytest.MonkeyPatch, fail: bool) -> Callable[[], object]:
    import argparse

    import speechattn.recipes.speaker.train as T
    from speechattn.recipes.speaker.cli import _run

    def run_speaker(*a: object, **k: object) -> dict:
        if fail:
            raise ValueError("bad corpus")
        return {"rows": [], "dropped_voices": [], "skipped_files": []}

    monkeypatch.setattr(T, "run_speaker", run_speaker)
    monkeypatch.setattr("speechattn.recipes.speaker.cli.config_from_args", lambda args: None)
    return lambda: _run(argparse.Namespace(out="o", save_checkpoint=None, no_progress=True,
                                           overwrite=False), None)  # fmt: skip


def _align_cmd(monkeypatch: pytest.MonkeyPatch, fail: bool) -> Callable[[], object]:
    import speechattn.recipes.align.pipeline as P
    from speechattn.cli import build_parser

    def run_align(*a: object, **k: object) -> dict:
        from speechattn.recipes.align.train import dist_info

        dist_info()  # as the pipeline does: starts the group
        if fail:
            raise ValueError("bad corpus")
        return {}

    monkeypatch.setattr(P, "run_align", run_align)
    args = build_parser().parse_args(["align", "corpus", "--out", "o"])
    return lambda: args.func(args)


def _audio2clip_cmd(monkeypatch: pytest.MonkeyPatch, fail: bool) -> Callable[[], object]:
    import speechattn.recipes.audio2clip.train as T
    from speechattn.cli import build_parser

    def train(*a: object, **k: object) -> str:
        if fail:
            raise ValueError("bad manifest")
        return "o"

    monkeypatch.setattr(T, "train", train)
    argv = ["audio2clip", "train", "--manifest", "m", "--text-model", "t", "--out", "o"]
    args = build_parser().parse_args(argv)
    return lambda: args.func(args)


@pytest.mark.parametrize("command", [_speaker_cmd, _align_cmd, _audio2clip_cmd])
def test_every_recipe_ends_its_group_the_same_safe_way(
    monkeypatch: pytest.MonkeyPatch, command: Callable[..., Callable[[], object]]
) -> None:
    fake = _FakeDist(monkeypatch)
    command(monkeypatch, False)()
    assert fake.calls == ["init", "barrier", "destroy"]  # before: no barrier, or no teardown
    fake = _FakeDist(monkeypatch)
    with pytest.raises(Exception, match="bad"):
        command(monkeypatch, True)()
    assert fake.calls == ["init"]  # after a failure: no barrier (peers may never come)


# ---------------------------------------------------------------------------------------------
# audio2clip train --resume: transformers (this version) reads a checkpoint with
# torch.load(weights_only=True), JSON and safetensors only, never training_args.bin (a pickle,
# which the recipe deletes from its checkpoints): a resume is safe, and exact.


def _a2c_run(a2c: Path, out: Path, **kw: object) -> dict[str, object]:
    import torch

    from speechattn.recipes.audio2clip.model import AudioToTextEncoder
    from speechattn.recipes.audio2clip.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(manifest=a2c / "manifest.jsonl", output_dir=out, audio_model=a2c / "w2v",
              text_model=a2c / "clip_text", max_steps=4, batch_size=2, seed=0, progress=False,
              learnable_temperature=True, **kw)  # type: ignore[arg-type]  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return dict(AudioToTextEncoder.from_pretrained(out).state_dict())


def test_audio2clip_resumed_run_equals_an_uninterrupted_one(
    a2c: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from transformers import Trainer

    stale = tmp_path / "whole" / "trainer" / "checkpoint-100"  # an earlier run's
    stale.mkdir(parents=True)
    whole = _a2c_run(a2c, tmp_path / "whole", checkpoint_every=2)
    # a run that does not resume starts over: the earlier run's checkpoint (a higher step, which
    # the Trainer's rotation would have kept and --resume picked) is gone
    # (beside it, the run's settings for a later --resume to compare: polish4)
    assert sorted(p.name for p in (tmp_path / "whole" / "trainer").iterdir()) == [
        "checkpoint-4",
        "run.json",
    ]
    real_step = Trainer.training_step

    def ctrl_c_at_step_3(self: Trainer, *a: object, **k: object) -> object:
        if self.state.global_step == 3:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "training_step", ctrl_c_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        _a2c_run(a2c, tmp_path / "part", checkpoint_every=2)
    monkeypatch.undo()
    ck = tmp_path / "part" / "trainer" / "checkpoint-2"
    assert (ck / "trainer_state.json").is_file()
    assert not list((tmp_path / "part").rglob("training_args.bin"))  # no pickle is kept
    loads: list[tuple[str, object]] = []
    real_load = torch.load

    def watched(f: object, *a: object, **k: object) -> object:
        loads.append((Path(str(f)).name, k.get("weights_only")))
        return real_load(f, *a, **k)  # type: ignore[arg-type]

    steps: list[int] = []

    def counted(self: Trainer, *a: object, **k: object) -> object:
        steps.append(self.state.global_step)
        return real_step(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "load", watched)
    monkeypatch.setattr(Trainer, "training_step", counted)
    resumed = _a2c_run(a2c, tmp_path / "part", checkpoint_every=2, resume=True)
    monkeypatch.undo()
    assert steps == [2, 3]  # it went on from step 2 (not from scratch)
    names = {n for n, _ in loads}
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth"} <= names
    assert all(w is True for _, w in loads), loads
    summary = json.loads((tmp_path / "part" / "audio2clip_train.json").read_text())
    assert summary["steps"] == 4
    assert whole.keys() == resumed.keys()
    for k, v in whole.items():
        assert torch.equal(v, resumed[k]), k  # before: no resume at all


def test_audio2clip_resume_without_a_usable_checkpoint_is_one_line(
    a2c: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.cli_run import run_cli

    base = ["audio2clip", "train", "--manifest", str(a2c / "manifest.jsonl"), "--text-model",
            str(a2c / "clip_text"), "--audio-model", str(a2c / "w2v"), "--max-steps", "2",
            "--batch-size", "2", "--no-progress", "--out", str(tmp_path / "o")]  # fmt: skip
    assert run_cli([*base, "--resume"]) == 1
    err = capsys.readouterr()
    said = (err.out + err.err).strip()
    assert (
        len(said.splitlines()) == 1 and "no checkpoint in" in said and "--checkpoint-every" in said
    )
    # a checkpoint cut short (no trainer_state.json: written last) is passed over by name
    (tmp_path / "o" / "trainer" / "checkpoint-2").mkdir(parents=True)
    assert run_cli([*base, "--resume"]) == 1
    cap = capsys.readouterr()
    assert "warning: " in cap.err and "checkpoint-2: trainer_state.json is missing" in cap.err
    assert "no usable checkpoint" in cap.err + cap.out


def test_audio2clip_ctrl_c_prints_the_resume_command(
    a2c: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import speechattn.recipes.audio2clip.train as T
    from speechattn.cli import main

    def interrupted(**k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "train", interrupted)
    monkeypatch.chdir(tmp_path)
    argv = ["audio2clip", "train", "--manifest", "m.jsonl", "--text-model", "t", "--out", "o"]
    assert main([*argv, "--checkpoint-every", "5"]) == 130
    err = capsys.readouterr().err  # no checkpoint written yet: nothing to resume from
    assert "before the first checkpoint" in err and "this command does not resume" in err
    (tmp_path / "o" / "trainer" / "checkpoint-5").mkdir(parents=True)
    assert main([*argv, "--checkpoint-every", "5"]) == 130
    err = capsys.readouterr().err
    assert "checkpoint at step 5 in o/trainer/checkpoint-5" in err and len(err.splitlines()) == 1
    assert "run the same command to resume:" in err and err.strip().endswith("--resume")
