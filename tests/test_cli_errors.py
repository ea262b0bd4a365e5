"""Command-line errors: one line ``speechattn <cmd>: error: ...``, exit 2 for usage and 1 for
failures, tracebacks only with --debug / SPEECHATTN_DEBUG=1, Ctrl-C says how to resume (130),
numeric options checked at parse time, one option convention, no history in --help."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.align_toy import N_MELS, NUM_SYMBOLS, toy_items

from speechattn.cli import build_parser, main

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _err_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip()]


def test_failure_is_one_line_with_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no_such_corpus"
    rc = main(["align", str(missing), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    lines = _err_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("speechattn align: error: ")
    assert str(missing) in lines[0] and "Traceback" not in err


def test_debug_flag_and_env_show_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["align", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    assert main([*args, "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["--debug", *args]) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("SPEECHATTN_DEBUG", "1")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "speechattn align: error: " in err


@pytest.mark.parametrize(
    "argv",
    [
        ["align", "DATA", "--out", "O", "--steps", "0"],
        ["align", "DATA", "--out", "O", "--steps", "-3"],
        ["align", "DATA", "--out", "O", "--threads", "0"],
        ["align", "DATA", "--out", "O", "--format", "textgrid,xml"],
        ["align", "DATA", "--out", "O", "--kind", "lstm"],
        ["demo", "--utterances", "0"],
        ["demo", "--minutes-per-aligner", "nan"],
        ["demo", "--kinds", "sma,xyz"],
        ["audio2clip", "train", "--manifest", "m", "--text-model", "t", "--batch-size", "0"],
        ["audio2clip", "train", "--manifest", "m", "--text-model", "t", "--lr", "-1"],
        ["audio2clip", "train", "--manifest", "m", "--text-model", "t", "--max-steps", "0"],
        ["audio2clip", "generate", "a.wav", "--model", "m", "--pipeline", "p", "--steps", "0"],
        ["audio2clip", "app", "--model", "m", "--pipeline", "p", "--max-seconds", "0"],
    ],
)
def test_numeric_and_named_options_checked_at_parse_time(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    # one line, as every other error (argparse used to print its usage block first)
    assert len(_err_lines(err)) == 1, err
    assert err.startswith(f"speechattn {argv[0]}") and "--help`)" in err


@pytest.mark.parametrize(
    "argv",
    [[], ["nosuch"], ["align"], ["speaker", "score"], ["data", "synth"], ["align", "c", "--nope"]],
)
def test_argparse_usage_errors_are_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Missing arguments, unknown commands and unknown options: one line naming the command
    and pointing to its --help, exit status 2 (no usage block)."""
    if not argv:  # no command at all prints the help (status 2), not an error
        assert main(argv) == 2
        assert "COMMAND" in capsys.readouterr().out
        return
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = _err_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert re.match(r"speechattn( \w+)*: error: .+ \(see `speechattn.* --help`\)$", lines[0])


def test_comma_lists_keep_order_drop_repeats_and_name_the_choices() -> None:
    from speechattn._cli import comma_choices

    kinds = comma_choices(("sma", "fs", "mha"))
    assert kinds(" fs,sma, fs,") == ("fs", "sma")
    folded = comma_choices(lambda: ("textgrid", "json"), fold_case=True)
    assert folded("JSON,TextGrid") == ("json", "textgrid")
    for parse, text in ((kinds, "SMA"), (kinds, " , "), (folded, "json,csv")):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected a comma list of .*found"):
            parse(text)


def test_usage_error_from_a_subcommand_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["align", str(tmp_path), "--no-progress"])  # --out missing
    assert rc == 2
    assert "speechattn align: error: " in capsys.readouterr().err
    rc = main(["align", str(tmp_path), "--out", "o", "--checkpoint", str(tmp_path / "x.pt")])
    assert rc == 2
    assert "--checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("item", "option"), [("seed=3", "--seed"), ("mha_prior=diagonal", "--prior")]
)
def test_demo_set_refuses_settings_that_have_their_own_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], item: str, option: str
) -> None:
    # Before, --seed / --prior (defaults 0 / none) silently replaced what --set asked for.
    rc = main(["demo", "--quick", "--out", str(tmp_path / "d"), "--no-progress", "--set", item])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"use {option} instead" in err and len(_err_lines(err)) == 1
    assert not (tmp_path / "d").exists()


def test_ctrl_c_prints_where_and_how_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import speechattn.recipes.align.pipeline as pipeline

    def interrupted(*a: object, **k: object) -> dict:
        raise KeyboardInterrupt("stopped at step 3 of 10; checkpoint at step 3 in X/aligner.pt")

    monkeypatch.setattr(pipeline, "run_align", interrupted)
    argv = ["align", "my corpus", "--out", str(tmp_path), "--overwrite", "--no-progress"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert _err_lines(err) == [err.strip()]
    assert err.startswith("speechattn align: interrupted: stopped at step 3 of 10")
    # The resume command is the same command, quoted, without --overwrite (it would delete the run).
    assert f"speechattn align 'my corpus' --out {tmp_path} --no-progress" in err
    assert "--overwrite" not in err.split("resume:")[1]


def test_ctrl_c_during_training_saves_a_checkpoint_that_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from speechattn.recipes.align.model import AlignerConfig, TextMelAligner
    from speechattn.recipes.align.train import TrainConfig, load_checkpoint, train_aligner

    items = toy_items(16, 0)
    cfg = AlignerConfig(kind="mha", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16)
    tcfg = TrainConfig(steps=8, batch_size=4, checkpoint_every=100)
    whole = train_aligner(cfg, items, tcfg, progress=False)
    real = TextMelAligner.forward
    calls = [0]

    def ctrl_c_in_4th_forward(self, *a, **k):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 4:
            torch.rand(3)  # the RNG moved before the interrupt: a resume must not see that
            raise KeyboardInterrupt
        return real(self, *a, **k)

    ck = tmp_path / "ck.pt"
    monkeypatch.setattr(TextMelAligner, "forward", ctrl_c_in_4th_forward)
    with pytest.raises(KeyboardInterrupt, match=r"stopped at step 3 of 8; checkpoint at step 3"):
        train_aligner(cfg, items, tcfg, checkpoint=ck, progress=False)
    assert load_checkpoint(ck)["step"] == 3
    monkeypatch.setattr(TextMelAligner, "forward", real)
    res = train_aligner(cfg, items, tcfg, checkpoint=ck, progress=False)
    assert res.resumed_from == 3 and load_checkpoint(ck)["step"] == 8
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, res.model.state_dict()[k]), k


def test_console_script_prints_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("SPEECHATTN_DEBUG", None)
    cmd = [sys.executable, "-m", "speechattn", "align", str(tmp_path / "x"), "--out", "o"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert _err_lines(proc.stderr) == [proc.stderr.strip()]
    assert proc.stderr.startswith("speechattn align: error: ")


# -- one convention --------------------------------------------------------------------------


def _sub(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def test_old_spellings_are_hidden_aliases() -> None:
    parser = build_parser()
    a = parser.parse_args(["align", "D", "--output-dir", "O", "--quiet"])
    assert a.out == "O" and a.no_progress is True
    a = parser.parse_args(["align", "D", "--out-dir", "O"])
    assert a.out == "O" and a.no_progress is False
    a = parser.parse_args(["audio2clip", "demo", "--output-dir", "X"])
    assert a.out == "X"
    a = parser.parse_args(["audio2clip", "demo", "--out", "Y", "--set", "epochs=2", "passes=1"])
    assert a.out == "Y" and a.set == ["epochs=2", "passes=1"]
    a = parser.parse_args(["demo", "--out-dir", "Z", "--set", "dim=32", "--set", "lr=0.01"])
    assert a.out == "Z" and a.set == ["dim=32", "lr=0.01"]
    for path in (("align",), ("demo",), ("audio2clip", "train"), ("audio2clip", "demo")):
        text = _sub(parser, *path).format_help()
        assert "--out " in text or "--out OUT" in text, path
        assert "--output-dir" not in text and "--out-dir" not in text and "--quiet" not in text


def test_app_lives_under_audio2clip_and_top_level_app_is_hidden() -> None:
    parser = build_parser()
    top = parser.format_help()
    assert "audio2clip" in top and not re.search(r"^\s+app\b", top, re.M)
    for argv in (["app"], ["audio2clip", "app"]):
        a = parser.parse_args([*argv, "--model", "m", "--pipeline", "p"])
        assert a.func.__name__ == "_run" and a.max_upload_mb > 0
    text = _sub(parser, "audio2clip", "app").format_help()
    assert "Hub id" in text and "local" in text


def _all_help(parser: argparse.ArgumentParser) -> list[str]:
    out = [parser.format_help()]
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                out += _all_help(sub)
    return out


def test_help_texts_speak_of_the_project_not_its_history() -> None:
    history = re.compile(r"\bissue \d+|\bseed 0\d\d\b|\bround \d\b", re.I)
    for text in _all_help(build_parser()):
        assert not history.search(text), history.search(text)


def test_closed_pipe_stops_quietly() -> None:
    """``speechattn data voices | head``: the reader leaving is not an error line (was
    ``error: [Errno 32] Broken pipe``, status 1); status 141 as a SIGPIPE-killed program."""
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(
        [sys.executable, "-m", "speechattn", "data", "voices"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the table is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Broken pipe" not in err and "error" not in err, err


def test_demo_with_fewer_utterances_than_it_holds_out_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``demo --utterances 40`` held out all 40 (60 held-out utterances by default) and then
    crashed with ``max() arg is an empty sequence`` after synthesizing; now it is refused at once."""
    out = tmp_path / "d"
    assert main(["demo", "--utterances", "40", "--out", str(out), "--no-progress"]) == 2
    lines = _err_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "held_out_utterances=60, utterances=40" in lines[0], lines
    assert not out.exists()


def test_a_split_with_nothing_left_to_train_on_says_so() -> None:
    from types import SimpleNamespace

    from speechattn.recipes.align.pipeline import _split

    items = [SimpleNamespace(speaker=f"v{i % 3}", text=f"t{i}") for i in range(12)]
    train, dev, _, _ = _split(items, 1, 4, 0)
    assert train and len(dev) == 4
    with pytest.raises(ValueError, match="found none: 12 utterances"):
        _split(items, 1, 8, 0)


def test_a_warning_is_said_once_per_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the demo printed "2 of 60 utterance(s) ... left out of word scoring" ten times,
    # once per scoring pass over the same held-out set (each pass warns from another line).
    import warnings

    import speechattn.recipes.align.pipeline as pipeline

    def warns(*a: object, **k: object) -> dict:
        for _ in range(3):
            warnings.warn("2 of 60 utterance(s) left out", stacklevel=1)
            warnings.warn("2 of 60 utterance(s) left out", stacklevel=1)  # another line
        warnings.warn("skipped a.wav: silent", stacklevel=1)
        warnings.warn("skipped b.wav: silent", stacklevel=1)
        raise KeyboardInterrupt("stopped")

    monkeypatch.setattr(pipeline, "run_align", warns)
    argv = ["align", "corpus", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 130
    lines = [ln for ln in _err_lines(capsys.readouterr().err) if ": warning: " in ln]
    assert lines == [
        "speechattn align: warning: 2 of 60 utterance(s) left out",
        "speechattn align: warning: skipped a.wav: silent",
        "speechattn align: warning: skipped b.wav: silent",
    ]
    assert main(argv) == 130  # a new run says it again
    assert sum(": warning: 2 of 60" in ln for ln in _err_lines(capsys.readouterr().err)) == 1
