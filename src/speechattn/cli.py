"""The ``speechattn`` command line.

Each subcommand lives in a module that exposes ``add_parser(subparsers)``; that function
registers the subparser and sets ``func`` (called with the parsed namespace, returns an exit code).
Modules keep heavy imports inside their functions so ``speechattn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

# Modules that register subcommands, in the order ``--help`` lists them.
_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "speechattn.recipes.align.cli",
    "speechattn.data.cli",
    "speechattn.recipes.speaker",
    "speechattn.recipes.audio2clip.cli",
    "speechattn.recipes.audio2clip.app",
)


def _info(args: argparse.Namespace) -> int:
    import torch

    from speechattn import __version__
    from speechattn.kernels import available, implementations, warmup

    print(f"speechattn {__version__}")
    print(f"python     {platform.python_version()} ({sys.executable})")
    print(f"torch      {torch.__version__} (threads: {torch.get_num_threads()})")
    print("backends:")
    for name, state in available().items():
        print(f"  {name:<8} {state}")
    print("implementations per op (impl=...; 'auto' picks the first available that fits):")
    for op, impls in implementations().items():
        print(f"  {op}")
        for name, state in impls.items():
            print(f"    {name:<7} {state}")
    if getattr(args, "warmup", False):
        import time

        t0 = time.perf_counter()
        times = warmup()
        if not times:
            print("warm-up: numba is not installed; nothing to compile")
        for mod, sec in times.items():
            print(f"warm-up: {mod:<34} {sec:6.2f} s")
        if times:
            print(
                f"warm-up: all kernels compiled or loaded from numba's cache in "
                f"{time.perf_counter() - t0:.2f} s"
            )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with every registered subcommand."""
    from speechattn import __version__

    parser = argparse.ArgumentParser(
        prog="speechattn",
        description="Attention mechanisms for speech, and the jobs that show them working.",
    )
    parser.add_argument("--version", action="version", version=f"speechattn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_info = sub.add_parser("info", help="version, torch, and which fast paths are available")
    p_info.add_argument(
        "--warmup",
        action="store_true",
        help="compile every numba kernel now (later processes load numba's on-disk cache)",
    )
    p_info.set_defaults(func=_info)
    for mod in _SUBCOMMAND_MODULES:
        importlib.import_module(mod).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``speechattn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
