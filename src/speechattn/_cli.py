"""Shared pieces of the command-line convention, used by every ``speechattn`` subcommand.

One convention for every command: ``--out DIR`` for outputs, ``--no-progress``, ``--seed``,
``--set KEY=VALUE`` for config overrides, ``--debug`` (global) for full tracebacks. Errors are
one line ``speechattn <cmd>: error: <what, which file, what to do>`` on stderr; usage errors exit
with status 2, failures with 1 (:class:`CliError` carries the status).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "CliError",
    "add_hidden_alias",
    "comma_choices",
    "nonnegative_int",
    "out_dir",
    "parse_overrides",
    "positive_float",
    "positive_int",
    "probability",
]


class CliError(Exception):
    """A failure to report as one line (no traceback); ``status`` is the exit code (1 or 2)."""

    def __init__(self, message: str, *, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _number(
    kind: Callable[[str], Any], name: str, ok: Callable[[Any], bool]
) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}; found {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {name}; found {text!r}")
        return value

    parse.__name__ = name.replace(" ", "_")
    return parse


positive_int = _number(int, "a positive integer", lambda v: v > 0)
nonnegative_int = _number(int, "an integer >= 0", lambda v: v >= 0)
positive_float = _number(
    float, "a positive number", lambda v: v > 0 and v != float("inf") and v == v
)
probability = _number(float, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)


def out_dir(text: str) -> str:
    """An argparse ``type`` for an output folder (``--out DIR``): a usage error when ``text`` is
    empty, names an existing file, or lies below one (``notes.txt/run``), instead of an
    ``OSError`` once the run has started. A folder that does not exist yet is fine."""
    import os

    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder path; found an empty string")
    path = os.path.abspath(os.path.expanduser(text))
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if os.path.exists(path) and not os.path.isdir(path):
        if path == os.path.abspath(os.path.expanduser(text)):
            found = f"{text!r} is a file"
        else:
            found = f"{text!r} lies below the file {path!r}"
        raise argparse.ArgumentTypeError(
            f"expected a folder; {found} (pick another path or move the file away)"
        )
    return text


def comma_choices(
    choices: Sequence[str] | Callable[[], Sequence[str]], *, fold_case: bool = False
) -> Callable[[str], tuple[str, ...]]:
    """An argparse ``type`` for a comma list of names out of ``choices`` (or a function giving
    them, called on first use so that a costly import waits until the option is given):
    ``"a, b,a"`` -> ``("a", "b")`` (blanks dropped, first occurrence kept; lower-cased first
    with ``fold_case``). An empty list or an unknown name is a usage error naming the choices."""

    def parse(text: str) -> tuple[str, ...]:
        allowed = tuple(choices() if callable(choices) else choices)
        items = (t.strip() for t in text.split(","))
        names = tuple(dict.fromkeys(t.lower() if fold_case else t for t in items if t))
        if not names or any(n not in allowed for n in names):
            raise argparse.ArgumentTypeError(
                f"expected a comma list of {', '.join(allowed)}; found {text!r}"
            )
        return names

    return parse


def add_hidden_alias(parser: argparse.ArgumentParser, old: str, dest: str, **kwargs: Any) -> None:
    """Accept an old spelling of an option (e.g. ``--output-dir`` for ``--out``) without listing it."""
    parser.add_argument(old, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def parse_overrides(items: list[str] | None, fields: dict[str, Any]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` overrides against a config's fields (name -> current value).

    Each value is converted to the type of the field's current value (bool accepts
    true/false/1/0/yes/no; tuples and lists take comma-separated items).

    Raises:
        CliError: (status 2) an unknown key, a missing ``=``, or a value of the wrong type.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise CliError(f"--set expects KEY=VALUE; found {item!r}", status=2)
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise CliError(f"--set: unknown key {key!r}; known keys: {known}", status=2)
        current = fields[key]
        try:
            out[key] = _convert(text.strip(), current)
        except ValueError as exc:
            raise CliError(f"--set {key}: {exc}", status=2) from None
    return out


def _convert(text: str, current: Any) -> Any:
    if isinstance(current, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false; found {text!r}")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, (tuple, list)):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if current:
            items = [_convert(t, current[0]) for t in items]
        return type(current)(items)
    if current is None:
        low = text.lower()
        if low in ("none", "null", ""):
            return None
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text
    return text
