"""User-facing polish: one warning per skipped file, ``--no-progress`` wherever progress is
shown, a one-line refusal of evaluation-only engines, tensor temperatures checked where that is
free, and help texts that explain every option."""

from __future__ import annotations

import argparse
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechattn.cli import build_parser, main
from speechattn.data.corpus import load_corpus


def _tone(sr: int = 16000, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _warning_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ": warning: " in ln]


# ---------------------------------------------------------------------------------------------
# 1. every skipped file gets its own warning


def test_load_corpus_names_every_skipped_file(tmp_path: Path) -> None:
    sf.write(tmp_path / "good.wav", _tone(), 16000)
    (tmp_path / "good.txt").write_text("hello there")
    orphans = [f"orphan{i}.wav" for i in range(8)]  # more than the 5 a summary would name
    for name in orphans:
        sf.write(tmp_path / name, _tone(), 16000)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        utts = load_corpus(tmp_path)
    assert [u.id for u in utts] == ["good"]
    msgs = [str(r.message) for r in rec]
    for name in orphans:
        hits = [m for m in msgs if name in m]
        assert len(hits) == 1, (name, msgs)
        assert "no transcript" in hits[0] and "\n" not in hits[0]
    assert all(sum(n in m for n in orphans) <= 1 for m in msgs)  # one file per line
    assert re.search(r"skipped 8 bad entries", msgs[-1]), msgs[-1]  # the count comes last


def test_manifest_warnings_name_the_line(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", _tone(), 16000)
    recs = [
        {"path": "a.wav", "text": "fine"},
        {"path": "gone.wav", "text": "missing"},
        {"path": "gone.wav", "text": "missing again"},
    ]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        load_corpus(manifest)
    gone = [str(r.message) for r in rec if "gone.wav" in str(r.message)]
    # two lines, one file: each warning names its line, so neither hides the other
    assert len(gone) == 2 and len(set(gone)) == 2
    assert any(f"{manifest}:2" in m for m in gone) and any(f"{manifest}:3" in m for m in gone)


def test_data_stats_prints_one_line_per_undecodable_file(
    bad_inputs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "stats", str(bad_inputs_dir)]) == 0
    lines = _warning_lines(capsys.readouterr().err)
    undecodable = ("corrupt.wav", "empty.wav")
    for name in undecodable:
        hits = [ln for ln in lines if name in ln]
        assert len(hits) == 1, (name, lines)
        assert hits[0].startswith("speechattn data stats: warning: skipped ")
    assert not any(all(n in ln for n in undecodable) for ln in lines)


def test_data_textgrid_names_each_file_without_intervals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", _tone(seconds=1.0), 16000)
    words = [[0.1, 0.4, "hello"], [0.5, 0.9, "there"]]
    phones = [[0.1, 0.4, "h"], [0.5, 0.9, "ð"]]
    recs = [
        {"id": "a", "path": "a.wav", "text": "hello there", "words": words, "phones": phones},
        {"id": "b", "path": "b.wav", "text": "hello there"},
        {"id": "c", "path": "c.wav", "text": "hello there"},
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "tg"
    assert main(["data", "textgrid", str(tmp_path / "manifest.jsonl"), "--out", str(out)]) == 0
    lines = _warning_lines(capsys.readouterr().err)
    for name in ("b.wav", "c.wav"):
        hits = [ln for ln in lines if name in ln]
        assert len(hits) == 1 and "no word/phone intervals" in hits[0], (name, lines)
    assert [p.name for p in out.iterdir()] == ["a.TextGrid"]


def test_speaker_skip_warnings_carry_the_full_command(
    bad_inputs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "emb.npz"
    assert main(["speaker", "embed", str(bad_inputs_dir), "--out", str(out), "--no-progress"]) == 0
    lines = _warning_lines(capsys.readouterr().err)
    for name in ("nan.wav", "silent.wav"):
        hits = [ln for ln in lines if name in ln]
        assert len(hits) == 1, (name, lines)
        assert hits[0].startswith("speechattn speaker embed: warning: skipping ")


# ---------------------------------------------------------------------------------------------
# 2. --no-progress wherever progress is shown


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "stats", "x", "--no-progress"],
        ["audio2clip", "train", "--manifest", "m", "--text-model", "t", "--no-progress"],
        ["audio2clip", "generate", "a.wav", "--model", "m", "--pipeline", "p", "--no-progress"],
        ["audio2clip", "demo", "--no-progress"],
        ["audio2clip", "app", "--model", "m", "--pipeline", "p", "--seed", "3"],
    ],
)
def test_progress_and_seed_options_parse(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    if "--no-progress" in argv:
        assert args.no_progress is True
    if "--seed" in argv:
        assert args.seed == 3


def test_data_stats_validate_bar_follows_no_progress(
    bad_inputs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bar = re.compile(r"validate:\s+\d+%")
    assert main(["data", "stats", str(bad_inputs_dir), "--validate"]) == 0
    assert bar.search(capsys.readouterr().err)
    assert main(["data", "stats", str(bad_inputs_dir), "--validate", "--no-progress"]) == 0
    io = capsys.readouterr()
    assert not bar.search(io.err) and "4 utterances" in io.out


@pytest.fixture(scope="module")
def tiny_a2c(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from speechattn.recipes.audio2clip.tiny import tiny_clip_text_encoder, tiny_w2v_bert

    root = tmp_path_factory.mktemp("polish_a2c")
    w2v = tiny_w2v_bert(root / "w2v", hidden_size=32)
    text = tiny_clip_text_encoder(root / "clip_text", width=32)
    lines = []
    for i, cap in enumerate(["a red cat", "a blue dog", "green trees", "the sea"]):
        sf.write(root / f"u{i}.wav", _tone(seconds=0.6 + 0.1 * i), 16000)
        lines.append(json.dumps({"audio": f"u{i}.wav", "caption": cap}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return {"root": root, "w2v": w2v, "text": text, "manifest": root / "manifest.jsonl"}


def test_audio2clip_train_no_progress_prints_no_log(
    tiny_a2c: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [
        "audio2clip", "train",
        "--manifest", str(tiny_a2c["manifest"]),
        "--audio-model", str(tiny_a2c["w2v"]),
        "--text-model", str(tiny_a2c["text"]),
        "--max-steps", "2", "--batch-size", "4",
    ]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert "train_runtime" in capsys.readouterr().out  # the trainer's log, shown by default
    assert main([*base, "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines() == [f"saved audio encoder to {tmp_path / 'b'}"]
    summary = json.loads((tmp_path / "b" / "audio2clip_train.json").read_text())
    assert summary["steps"] == 2 and summary["log_history"]  # the log is still saved


def test_audio2clip_generate_bar_follows_no_progress(
    tiny_a2c: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from speechattn.recipes.audio2clip.model import AudioToTextEncoder
    from speechattn.recipes.audio2clip.tiny import tiny_sd_pipeline

    model = tmp_path / "model"
    AudioToTextEncoder.from_pretrained(
        tiny_a2c["w2v"], text_length=77, text_dim=32
    ).save_pretrained(model)
    sd = tiny_sd_pipeline(tmp_path / "sd", text_width=32)
    wav = str(tiny_a2c["root"] / "u0.wav")
    base = ["audio2clip", "generate", wav, "--model", str(model), "--pipeline", str(sd)]
    base += ["--steps", "1", "--height", "64", "--width", "64"]
    bar = re.compile(r"images:\s+\d+%")
    assert main([*base, "--out", str(tmp_path / "i1")]) == 0
    assert bar.search(capsys.readouterr().err)
    assert main([*base, "--out", str(tmp_path / "i2"), "--no-progress"]) == 0
    assert not bar.search(capsys.readouterr().err)
    assert (tmp_path / "i2" / "u0.png").is_file()


# ---------------------------------------------------------------------------------------------
# 3. evaluation-only engines are refused in one clear line


def test_synth_refuses_an_evaluation_only_engine_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "corpus"
    argv = ["data", "synth", "--engines", "flite", "--out", str(out), "--utterances", "2"]
    assert main([*argv, "--voices", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("speechattn data synth: error: speech engine 'flite' is evaluation-only")
    assert "espeak" in line and "Install:" not in line  # what to use instead, no wrong hint
    assert not out.exists()  # refused before anything was written


def test_pick_voices_refuses_flite_even_with_reserved_voices() -> None:
    from speechattn.data.synth import pick_voices

    with pytest.raises(ValueError, match=r"evaluation-only.*cannot synthesize"):
        pick_voices(["flite"], 1)
    with pytest.raises(ValueError, match="cannot synthesize") as info:
        pick_voices(["flite"], 1, include_reserved=True)
    assert "evaluation-only" not in str(info.value) and "espeak" in str(info.value)


# ---------------------------------------------------------------------------------------------
# 4. a tensor temperature is checked where that costs nothing


@pytest.mark.parametrize("value", [-0.1, 0.0, float("nan")])
@pytest.mark.parametrize("loss", ["sequence", "pooled"])
def test_nonpositive_tensor_temperature_is_refused_on_cpu(value: float, loss: str) -> None:
    from speechattn.functional import pooled_contrastive_loss, sequence_contrastive_loss

    fn = sequence_contrastive_loss if loss == "sequence" else pooled_contrastive_loss
    a, t = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    temp = torch.tensor(value, requires_grad=True)
    with pytest.raises(ValueError, match=r"temperature > 0.*log_temperature"):
        fn(a, t, temperature=temp)


def test_positive_tensor_temperature_keeps_its_gradient() -> None:
    from speechattn.functional import sequence_contrastive_loss

    a, t = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    log_t = torch.tensor(-2.0, requires_grad=True)
    sequence_contrastive_loss(a, t, temperature=log_t.exp().reshape(1)).backward()
    assert log_t.grad is not None and torch.isfinite(log_t.grad)


def test_temperature_check_does_not_break_a_compiled_graph() -> None:
    from speechattn.functional import sequence_contrastive_loss

    a, t = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    temp = torch.tensor(0.2)
    compiled = torch.compile(
        lambda a, t, T: sequence_contrastive_loss(a, t, temperature=T),
        backend="eager",
        fullgraph=True,  # a host read of the tensor would be a graph break: an error here
    )
    torch.testing.assert_close(
        compiled(a, t, temp), sequence_contrastive_loss(a, t, temperature=temp)
    )


# ---------------------------------------------------------------------------------------------
# 5. help texts a newcomer can read


def _parsers(
    p: argparse.ArgumentParser, path: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_has_plain_help() -> None:
    seen = 0
    for path, p in _parsers(build_parser(), "speechattn"):
        texts = [p.description or ""]
        for a in p._actions:
            if isinstance(a, argparse._HelpAction) or a.help == argparse.SUPPRESS:
                continue
            if isinstance(a, argparse._SubParsersAction):
                texts += [c.help or "" for c in a._choices_actions]
                continue
            seen += 1
            assert a.help and a.help.strip(), f"{path} {a.option_strings or a.dest}: no help"
            texts.append(a.help)
        for text in texts:
            assert "``" not in text and "::" not in text, f"{path}: markup in {text!r}"
            assert not re.search(r"\bissue \d+|\bseed \d{3}\b|#\d+", text), f"{path}: {text!r}"
    assert seen > 100


def test_speaker_out_that_is_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder")
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["speaker", "synth", "--quick", "--out", str(notes)])
    assert info.value.code == 2
    assert "expected a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_audio2clip_demo_no_progress_prints_only_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["audio2clip", "demo", "--quick", "--out", str(tmp_path / "d"), "--no-progress"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)  # nothing but the report on stdout
    assert report["history"]  # the epochs are still in the report
