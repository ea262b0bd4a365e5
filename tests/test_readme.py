"""Keep README.md and docs/*.md honest where it is mechanical.

- Every ``speechattn <command> ... --flag`` written in them (code blocks and inline code) names a
  flag that the command's parser has; every ``benchmarks/<script>.py ... --flag`` names one that
  the script defines; every ``--flag`` anywhere in them exists somewhere (a renamed flag fails).
- Every section of ``benchmarks/RESULTS.md`` the README cites by title exists.
- The Python code blocks of the library sections run as written, in order within a section (a
  later block may use an earlier one's names), and a comment that states a shape
  (``# (2, 12, 256)``) or a printed tensor (``# tensor([90, 60])``) states what the line gives.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# flags of other programs that the docs use (pip, torchrun, ruff)
FOREIGN_FLAGS = {"--no-deps", "--nproc_per_node", "--check"}


@dataclass(frozen=True)
class Block:
    """One fenced code block: its file, info string, text and the ``##`` section it sits in."""

    path: Path
    lang: str
    code: str
    section: str
    line: int


def _blocks(path: Path) -> list[Block]:
    out: list[Block] = []
    section, fence, lang, start, body = "", None, "", 0, []
    for i, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = raw.strip()
        if fence is None:
            if raw.startswith("## "):
                section = raw[3:].strip()
            if stripped.startswith("```"):
                fence, lang, start, body = raw[: raw.index("`")], stripped[3:].strip(), i, []
        elif stripped == "```":
            out.append(Block(path, lang, "\n".join(body) + "\n", section, start))
            fence = None
        else:
            body.append(raw[len(fence) :] if raw.startswith(fence) else raw.lstrip())
    assert fence is None, f"{path.name}: unclosed code block from line {start}"
    return out


def _shell_lines(block: Block) -> list[str]:
    """The block's commands: continuation lines joined, ``NAME="..."`` variables expanded."""
    variables: dict[str, str] = {}
    lines: list[str] = []
    for line in block.code.replace("\\\n", " ").splitlines():
        m = re.match(r'^\s*([A-Z_]+)="([^"]*)"\s*$', line)
        if m:
            variables[m.group(1)] = m.group(2)
            continue
        for name, value in variables.items():
            line = line.replace(f"${name}", value)
        lines.append(line)
    return lines


def _inline_code(path: Path) -> list[str]:
    """Inline code spans of the prose (outside fenced blocks), newlines inside them joined."""
    text = re.sub(r"^ *```.*?^ *```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return [" ".join(s.split()) for s in re.findall(r"`([^`\n]+(?:\n[^`\n]+)*)`", text)]


def _segments(line: str) -> list[list[str]]:
    """Shell words of each simple command of a line (split on ``&&``, ``|``, ``;``)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote in prose: not a command
        return []
    segments: list[list[str]] = [[]]
    for w in words:
        if w in {"&&", "||", "|", ";"}:
            segments.append([])
        else:
            segments[-1].append(w.strip("[]"))
    return [s for s in segments if s]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


@pytest.fixture(scope="module")
def cli_parser() -> argparse.ArgumentParser:
    from speechattn.cli import build_parser

    return build_parser()


def _all_cli_flags(parser: argparse.ArgumentParser) -> set[str]:
    flags = _option_strings(parser)
    for sub in _subcommands(parser).values():
        flags |= _all_cli_flags(sub)
    return flags


def _flag(word: str) -> str | None:
    if not word.startswith("--") or len(word) < 3 or not word[2].isalpha():
        return None
    return word.split("=", 1)[0]


def _doc_commands() -> list[tuple[str, str]]:
    """(where, command line) for every code line and inline span of the docs."""
    out: list[tuple[str, str]] = []
    for path in DOCS:
        for block in _blocks(path):
            if block.lang in {"bash", "sh", ""}:
                out += [(f"{path.name}:{block.line}", ln) for ln in _shell_lines(block)]
        out += [(f"{path.name} (inline)", span) for span in _inline_code(path)]
    return out


def test_speechattn_flags_in_the_docs_exist(cli_parser: argparse.ArgumentParser) -> None:
    checked, missing = 0, []
    for where, line in _doc_commands():
        for words in _segments(line):
            if "speechattn" not in words:
                continue
            i = words.index("speechattn") + 1
            parser, path = cli_parser, ["speechattn"]
            valid = _option_strings(parser)  # --debug is accepted anywhere
            while i < len(words) and words[i] in _subcommands(parser):
                parser = _subcommands(parser)[words[i]]
                path.append(words[i])
                valid |= _option_strings(parser)
                i += 1
            for word in words[i:]:
                flag = _flag(word)
                if flag is None:
                    continue
                checked += 1
                if flag not in valid:
                    missing.append(f"{where}: `{' '.join(path)}` has no {flag} ({line.strip()})")
    assert checked > 100, f"only {checked} flags found: is the README parsed?"
    assert not missing, "\n".join(missing)


def test_benchmark_flags_in_the_docs_exist() -> None:
    checked, missing = 0, []
    for where, line in _doc_commands():
        for words in _segments(line):
            scripts = [w for w in words if re.fullmatch(r"benchmarks/\w+\.py", w)]
            if not scripts:
                continue
            script = ROOT / scripts[0]
            assert script.is_file(), f"{where}: {scripts[0]} does not exist"
            source = script.read_text(encoding="utf-8")
            for word in words[words.index(scripts[0]) + 1 :]:
                flag = _flag(word)
                if flag is None:
                    continue
                checked += 1
                if f'"{flag}"' not in source:
                    missing.append(f"{where}: {scripts[0]} defines no {flag}")
    assert checked > 10
    assert not missing, "\n".join(missing)


def test_every_flag_the_docs_name_exists_somewhere(cli_parser: argparse.ArgumentParser) -> None:
    """A flag named alone in the prose (``--refine-fraction F``) must still be some command's."""
    known = _all_cli_flags(cli_parser) | FOREIGN_FLAGS
    for script in (ROOT / "benchmarks").glob("*.py"):
        known |= set(re.findall(r'"(--[a-z][a-z0-9-]*)"', script.read_text(encoding="utf-8")))
    missing = set()
    for path in DOCS:
        for word in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", path.read_text(encoding="utf-8")):
            if word not in known:
                missing.add(f"{path.name}: {word}")
    assert not missing, sorted(missing)


def test_cited_results_sections_exist() -> None:
    headings = [
        " ".join(line.lstrip("#").split())
        for line in (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    ]
    cited = []
    for path in DOCS:
        text = " ".join(path.read_text(encoding="utf-8").split())
        for m in re.finditer(r'RESULTS\.md`?,? ((?:"[^"]+"(?:,| and| or)? ?)+)', text):
            cited += re.findall(r'"([^"]+)"', m.group(1))
    assert len(cited) > 10
    missing = [c for c in cited if not any(c in h for h in headings)]
    assert not missing, f"README cites RESULTS.md sections that do not exist: {missing}"


# --------------------------------------------------------------------------------------------
# the library sections' Python blocks
# --------------------------------------------------------------------------------------------

_SHAPE = re.compile(r"^\((\d+(?:, *\d+)*,?)\)")


def _check_comment(value: Any, comment: str, where: str) -> None:
    """Compare a value with what its comment says it is, where the comment says it exactly."""
    comment = comment.strip()
    if comment.startswith("tensor("):
        expected = re.match(r"tensor\(\[[^\]]*\]\)", comment)
        assert expected is not None and repr(value) == expected.group(0), (where, value)
        return
    shapes = []
    rest = comment
    while (m := _SHAPE.match(rest)) is not None:
        shapes.append(tuple(int(x) for x in m.group(1).split(",") if x.strip()))
        rest = rest[m.end() :].lstrip(", ")
    if not shapes:
        return
    values = value if isinstance(value, tuple) and len(shapes) > 1 else (value,)
    got = [
        tuple(v) if isinstance(v, torch.Size) else tuple(v.shape) if hasattr(v, "shape") else None
        for v in values
    ]
    assert got == shapes, f"{where}: the comment says {shapes}, the line gives {got}"


def _run_block(block: Block, namespace: dict[str, Any]) -> int:
    """Exec a block statement by statement; check the comments of expression lines."""
    tree = ast.parse(block.code)
    lines = block.code.splitlines()
    checked = 0
    for node in tree.body:
        where = f"{block.path.name}:{block.line + node.lineno}"
        if isinstance(node, ast.Expr):
            value = eval(compile(ast.Expression(node.value), where, "eval"), namespace)
            line = lines[node.end_lineno - 1] if node.end_lineno else ""
            if "  # " in line:
                _check_comment(value, line.split("  # ", 1)[1], where)
                checked += 1
        else:
            exec(compile(ast.Module([node], []), where, "exec"), namespace)
    return checked


def _python_sections() -> dict[str, list[Block]]:
    sections: dict[str, list[Block]] = {}
    for path in DOCS:
        for block in _blocks(path):
            if block.lang == "python":
                sections.setdefault(f"{path.name}: {block.section}", []).append(block)
    return sections


def _skip_reason(block: Block) -> str | None:
    if 'device="cuda"' in block.code and not torch.cuda.is_available():
        return "needs CUDA"
    if "festival:" in block.code and shutil.which("festival") is None:
        return "needs Festival"
    if "speechattn.data" in block.code:
        try:
            import espeakng_loader  # noqa: F401
        except ImportError:
            return "needs espeak-ng"
    return None


@pytest.mark.parametrize("section", sorted(_python_sections()))
def test_library_python_blocks_run(
    section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = _python_sections()[section]
    monkeypatch.chdir(tmp_path)
    if any('load_corpus("corpus")' in b.code for b in blocks) and _skip_reason(blocks[0]) is None:
        from speechattn.data.synth import synth_corpus

        # the block reads the corpus of the shell block above it (`data synth --out corpus`)
        synth_corpus("corpus", utterances=3, speakers=2, workers=0, progress=False)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    ran = 0
    for block in blocks:
        if _skip_reason(block) is not None:
            continue
        torch.manual_seed(0)
        _run_block(block, namespace)
        ran += 1
    if ran == 0:
        pytest.skip(f"{section}: {_skip_reason(blocks[0])}")


def test_comment_checker_catches_a_wrong_comment() -> None:
    """The comment check itself can fail: a wrong shape or value in a comment is caught."""
    block = Block(
        ROOT / "README.md", "python", "import torch\ntorch.zeros(2, 3)  # (3, 2)\n", "", 0
    )
    with pytest.raises(AssertionError, match="comment says"):
        _run_block(block, {})
    block = Block(
        ROOT / "README.md",
        "python",
        "import torch\ntorch.tensor([1, 2])  # tensor([2, 1])\n",
        "",
        0,
    )
    with pytest.raises(AssertionError):
        _run_block(block, {})
    block = Block(
        ROOT / "README.md",
        "python",
        "import torch\ntorch.tensor([1, 2])  # tensor([1, 2])\n",
        "",
        0,
    )
    assert _run_block(block, {}) == 1


def test_flag_check_catches_a_missing_flag(cli_parser: argparse.ArgumentParser) -> None:
    """The parser walk finds a subcommand's flags and would miss a renamed one."""
    sub = _subcommands(cli_parser)
    assert "--min-pause-ms" in _option_strings(sub["align"])
    assert "--min-pause-ms" not in _option_strings(sub["demo"])
    assert "--score-norm" in _option_strings(_subcommands(sub["speaker"])["score"])
    assert os.fspath(ROOT / "README.md") in {os.fspath(p) for p in DOCS}


def test_demo_defaults_in_help_and_readme_are_the_config_defaults(
    cli_parser: argparse.ArgumentParser,
) -> None:
    from speechattn.recipes.align.pipeline import DemoConfig

    cfg = DemoConfig()
    demo = _subcommands(cli_parser)["demo"]
    for flag, value in (
        ("--utterances", cfg.utterances),
        ("--speakers", cfg.speakers),
        ("--steps", cfg.steps),
        ("--threads", cfg.threads),
        ("--kinds", ",".join(cfg.kinds)),
    ):
        assert f"(default: {value})" in str(demo._option_string_actions[flag].help), flag
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    kinds = {2: "two", 3: "three"}[len(cfg.kinds)]
    assert (
        f"synthesizes {cfg.utterances} utterances and trains {kinds} aligners for {cfg.steps} "
        "steps each" in readme
    )


def test_dotted_speechattn_names_in_the_docs_exist() -> None:
    """``speechattn.data.augment.TRAIN_ROOMS``, ``speechattn.recipes.align.calibrate``, ...: every
    dotted name the docs give imports (a module) or resolves (an attribute of one)."""
    import importlib

    names: set[str] = set()
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        names |= set(re.findall(r"(?<![\w./-])speechattn(?:\.[A-Za-z_]\w*)+", text))
    assert len(names) > 20
    missing = []
    for name in sorted(names):
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj: Any = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(name)
            break
    assert not missing, missing


def test_extras_the_docs_install_exist() -> None:
    """``pip install -e ".[voices]"``, ``speechattn[peers]``: each extra is in pyproject.toml."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    named = set()
    for path in DOCS:
        named |= set(re.findall(r"(?:\.|speechattn)\[(\w+)\]", path.read_text(encoding="utf-8")))
    assert {"demo", "dev"} <= named
    assert named <= set(extras), sorted(named - set(extras))


def _set_keys() -> dict[str, set[str]]:
    """The ``--set KEY=VALUE`` keys of each command (and of the scripts that take a config)."""
    import dataclasses

    from speechattn.recipes.align.cli import _ALIGN_SET_RANGES
    from speechattn.recipes.align.pipeline import DemoConfig
    from speechattn.recipes.audio2clip.demo import DemoConfig as ClipDemoConfig
    from speechattn.recipes.speaker.config import SpeakerConfig

    def names(cls: Any) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    speaker = names(SpeakerConfig)
    return {
        "demo": names(DemoConfig),
        "align": set(_ALIGN_SET_RANGES) | {"schedule"},
        "speaker": speaker,
        "audio2clip": names(ClipDemoConfig),
        "benchmarks/speaker_loeo.py": speaker,
    }


def test_set_keys_in_the_docs_exist() -> None:
    """``--set held_out_voices=0``, ``--set steps=1000 commercial_only=true ...``: every key is a
    setting of that command's config (a key named alone must be some command's)."""
    keys = _set_keys()
    union = set().union(*keys.values())
    checked, missing = 0, []
    for where, line in _doc_commands():
        for words in _segments(line):
            if "--set" not in words:
                continue
            owner = next((w for w in words if w in keys), None)
            if "speechattn" in words:
                i = words.index("speechattn") + 1
                owner = words[i] if i < len(words) and words[i] in keys else None
            valid = keys[owner] if owner else union
            for i, word in enumerate(words):
                if word != "--set":
                    continue
                for item in words[i + 1 :]:
                    if item.startswith("-") or "=" not in item:
                        break
                    key = item.split("=", 1)[0].replace("-", "_")
                    if key.isupper():  # a placeholder: --set KEY=VALUE
                        continue
                    checked += 1
                    if key not in valid:
                        missing.append(f"{where}: --set {key} ({owner or 'any command'})")
    assert checked > 20
    assert not missing, "\n".join(missing)


def _all_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("speechattn",)
) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(" ".join(path), parser)]
    for name, sub in _subcommands(parser).items():
        out += _all_parsers(sub, (*path, name))
    return out


_QUOTED_DEFAULT = (
    # `--min-pause-ms` (default 50), `--refine-fraction F` (in (0, 1], default 1)
    re.compile(r"`(--[a-z][a-z0-9-]*)[^`]*`[^`]{0,80}?\([^()]*?default:? (\d+(?:\.\d+)?)\b"),
    # `--max-upload-mb` (20)
    re.compile(r"`(--[a-z][a-z0-9-]*)[^`]*` \((\d+(?:\.\d+)?)\)"),
)


def _default_matches(action: argparse.Action, value: str) -> bool:
    """The parser's default is ``value``, or (a default computed later, ``None`` in the parser)
    the help text quotes it as its default."""
    default = action.default
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return float(default) == float(value)
    return re.search(rf"default:? {re.escape(value)}\b", str(action.help or "")) is not None


def test_defaults_the_docs_quote_are_the_parsers(cli_parser: argparse.ArgumentParser) -> None:
    """``--min-pause-ms`` (default 50): a number the docs give as a flag's default is that flag's
    default in some command that has it (its parser's, or the one its --help quotes)."""
    parsers = _all_parsers(cli_parser)
    checked, wrong = 0, []
    for path in DOCS:
        text = " ".join(path.read_text(encoding="utf-8").split())
        for pattern in _QUOTED_DEFAULT:
            for m in pattern.finditer(text):
                flag, value = m.group(1), m.group(2)
                actions = [
                    (name, p._option_string_actions[flag])
                    for name, p in parsers
                    if flag in p._option_string_actions
                ]
                if not actions:
                    continue  # a benchmark script's flag; test_every_flag_... covers the name
                checked += 1
                if not any(_default_matches(a, value) for _, a in actions):
                    found = {name: a.default for name, a in actions}
                    wrong.append(f"{path.name}: {flag} default {value} ({m.group(0)}); {found}")
    assert checked >= 5, f"only {checked} quoted defaults found: is the pattern still right?"
    assert not wrong, "\n".join(wrong)


def test_default_check_catches_a_wrong_default(cli_parser: argparse.ArgumentParser) -> None:
    align = _subcommands(cli_parser)["align"]
    assert _default_matches(align._option_string_actions["--min-pause-ms"], "50")
    assert not _default_matches(align._option_string_actions["--min-pause-ms"], "40")
    # --steps has no parser default (600 or 50 per member are chosen later): its help quotes it
    assert _default_matches(align._option_string_actions["--steps"], "600")
    assert not _default_matches(align._option_string_actions["--steps"], "60")


def test_repository_paths_the_docs_quote_exist() -> None:
    """`src/speechattn/assets/aligner_en.pt`, `tests/reference/keonlee_reference.py`, `.ci/run`:
    every file or folder of the repository quoted in the docs exists (a glob matches something)."""
    quoted: set[str] = set()
    for path in DOCS:
        for span in _inline_code(path):
            for word in span.split():
                word = word.rstrip(",;:")
                if re.match(r"(?:src|tests|benchmarks|docs|\.ci)/[\w./*-]*\w$", word):
                    quoted.add(word)  # `benchmarks/...` (a placeholder) does not match
    assert len(quoted) >= 10
    missing = sorted(q for q in quoted if not any(ROOT.glob(q)))
    assert not missing, missing


def _unknown_commands(parser: argparse.ArgumentParser, lines: list[tuple[str, str]]) -> list[str]:
    """``speechattn data stat corpus``: a word in a command's place that is no command."""
    bad = []
    for where, line in lines:
        for words in _segments(line):
            if "speechattn" not in words:
                continue
            i, p = words.index("speechattn") + 1, parser
            while i < len(words) and _subcommands(p):
                word = words[i]
                if word.startswith(("-", "<", "$")) or word == "...":
                    break  # a flag, or a placeholder (`speechattn <cmd>: error: ...`)
                if word not in _subcommands(p):
                    bad.append(f"{where}: no command {word!r} ({line.strip()})")
                    break
                p, i = _subcommands(p)[word], i + 1
    return bad


def test_speechattn_commands_in_the_docs_exist(cli_parser: argparse.ArgumentParser) -> None:
    """Every ``speechattn <command> [<subcommand>]`` in the docs names commands that exist (a
    command line with no flags is not covered by the flag check)."""
    lines = _doc_commands()
    assert not _unknown_commands(cli_parser, lines)
    wrong = [("x", "speechattn data stat corpus"), ("y", "speechattn alin my_corpus/ --out a/")]
    assert len(_unknown_commands(cli_parser, wrong)) == 2
