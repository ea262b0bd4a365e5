"""Run the ``speechattn`` CLI inside a test, as the top-level handler does."""

from __future__ import annotations

from speechattn._cli import CliError

__all__ = ["run_cli"]


def run_cli(argv: list[str]) -> int:
    """Run ``speechattn ARGV``; a :class:`CliError` prints ``error: ...`` and counts as its exit
    status (as the top-level handler does)."""
    from speechattn.cli import main

    try:
        return main(argv)
    except CliError as exc:
        print(f"error: {exc}")
        return exc.status
