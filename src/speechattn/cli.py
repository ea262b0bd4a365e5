"""The ``speechattn`` command line.

Each subcommand lives in a module that exposes ``add_parser(subparsers)``; that function
registers the subparser and sets ``func`` (called with the parsed namespace, returns an exit code).
Modules keep heavy imports inside their functions so ``speechattn --help`` stays fast.

Errors: :func:`main` turns every exception into one line ``speechattn <cmd>: error: <message>``
on stderr and an exit status (2 for usage errors, 1 for failures); ``--debug`` (anywhere on the
command line) or ``SPEECHATTN_DEBUG=1`` adds the full traceback. Ctrl-C prints where the run
stopped and, for resumable commands, the command that resumes it, and exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shlex
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["build_parser", "main"]

# Modules that register subcommands, in the order ``--help`` lists them.
_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "speechattn.recipes.align.cli",
    "speechattn.data.cli",
    "speechattn.recipes.speaker",
    "speechattn.recipes.audio2clip.cli",
    "speechattn.recipes.audio2clip.app",
)

# Commands that continue from their checkpoint when run again with the same arguments (a
# subcommand can also say so with ``set_defaults(resumable=True)``).
_RESUMABLE = ("align", "demo")
# Options dropped from the printed resume command (they would throw the saved state away).
_NOT_ON_RESUME = ("--overwrite",)


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


class _Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line, as every other error of the
    command line: ``speechattn <cmd>: error: <what> (see `speechattn <cmd> --help`)``, exit
    status 2. Subcommand parsers inherit the class (``add_subparsers`` uses the parent's)."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        if _is_main_rank():  # under torchrun every process parses the same line
            self._print_message(
                f"{self.prog}: error: {text} (see `{self.prog} --help`)\n", sys.stderr
            )
        self.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with every registered subcommand."""
    from speechattn import __version__

    parser = _Parser(
        prog="speechattn",
        description="Attention mechanisms for speech, and the jobs that show them working.",
    )
    parser.add_argument("--version", action="version", version=f"speechattn {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the full traceback of an error (also SPEECHATTN_DEBUG=1); "
        "accepted anywhere on the command line",
    )
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


def _command_name(args: argparse.Namespace | None, argv: Sequence[str]) -> str:
    """``"speechattn align"``, ``"speechattn audio2clip train"``...: the prefix of error lines."""
    words = ["speechattn"]
    if args is not None and getattr(args, "command", None):
        words.append(str(args.command))
        for key, value in sorted(vars(args).items()):
            if key.endswith("_command") and key != "command" and isinstance(value, str):
                words.append(value)
    else:
        words.extend(a for a in argv[:1] if not a.startswith("-"))
    return " ".join(words)


def _debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    env = os.environ.get("SPEECHATTN_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    rest = [a for a in argv if a != "--debug"]
    return env or len(rest) != len(argv), rest


def _launcher() -> list[str]:
    """How this process was started: ``speechattn``, or under torchrun (``WORLD_SIZE > 1``)
    ``torchrun --nproc_per_node N -m speechattn`` (a run resumed with another number of
    processes would be refused: its checkpoints record the world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return ["speechattn"]
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)) or world)
    nodes = [] if local >= world else ["--nnodes", str(world // max(1, local))]
    return ["torchrun", *nodes, "--nproc_per_node", str(local), "-m", "speechattn"]


def _resume_command(argv: Sequence[str], extra: Sequence[str] = ()) -> str:
    """The command that resumes ``argv``: without ``--overwrite``, with ``extra`` (options a
    command resumes with, e.g. ``--resume``) added when missing."""
    kept = [a for a in argv if a not in _NOT_ON_RESUME and a != "--debug"]
    kept += [a for a in extra if a not in kept]
    return shlex.join([*_launcher(), *kept])


def _is_main_rank() -> bool:
    """False on the other processes of a torchrun launch (``RANK`` > 0)."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``speechattn`` console script; returns the exit status."""
    # Before anything imports torch (its OpenMP runtime reads this once, when it loads): idle
    # OpenMP threads sleep instead of spinning. Spinning threads on a machine with more runnable
    # threads than cores burn the CPU the thread they wait for needs: the demo's training ran
    # about 9 times slower on a shared 2-core machine, with bitwise the same results either way
    # (benchmarks/RESULTS.md, "demoperf"). A value the user set is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from speechattn._cli import CliError

    raw = list(sys.argv[1:] if argv is None else argv)
    debug, rest = _debug_requested(raw)
    parser = build_parser()
    args = parser.parse_args(rest)  # usage errors: one line (_Parser.error), exit status 2
    args.debug = debug
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    name = _command_name(args, rest)
    try:
        with warnings.catch_warnings():
            if not debug:  # one line per warning: "speechattn align: warning: <file>: <why>"
                shown: set[str] = set()

                def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
                    # under torchrun every rank reads the same data; a message said before in
                    # this run (the same finding met by several scoring passes) is not repeated
                    if _is_main_rank() and str(message) not in shown:
                        shown.add(str(message))
                        print(f"{name}: warning: {message}", file=file or sys.stderr)

                warnings.showwarning = show
            return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        where = str(exc).strip() or "stopped before the run finished"
        if debug:
            traceback.print_exc()
        if args.command in _RESUMABLE or getattr(args, "resumable", False):
            extra = getattr(args, "resume_args", ())
            hint = f"run the same command to resume: {_resume_command(raw, extra)}"
        else:
            hint = "this command does not resume; run it again to start over"
        if _is_main_rank():  # every torchrun process gets the SIGINT: one line, from rank 0
            print(f"{name}: interrupted: {where}; {hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `speechattn data voices | head`: the reader left; stop quietly
        # as a program killed by SIGPIPE would (status 128 + 13), without a second error when
        # Python flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:  # every failure becomes one line (the traceback with --debug)
        if debug:
            traceback.print_exc()
        status = exc.status if isinstance(exc, CliError) else 1
        text = _one_line(exc, debug) if debug or not _peer_failed(exc) else _PEER_FAILED
        if status != 2 or _is_main_rank():  # a usage error is the same on every torchrun rank
            print(f"{name}: error: {text}", file=sys.stderr)
        return status


_PEER_FAILED = (
    "another process of this torchrun launch failed (its error line says why); this one "
    "stopped with it"
)


def _peer_failed(exc: BaseException) -> bool:
    """Under torchrun: ``exc`` is a collective that broke because another rank exited."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1 or not isinstance(exc, RuntimeError):
        return False
    text = str(exc)
    return any(
        s in text
        for s in ("Connection closed by peer", "Connection reset by peer", "remote worker crash")
    )


def _one_line(exc: BaseException, debug: bool) -> str:
    from speechattn._cli import CliError

    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and exc.filename:
        # a folder to create where a file is (``--out notes.txt``): say so, not "[Errno 17]"
        return (
            f"{exc.filename}: cannot create a folder there: a file is in the way "
            f"({exc.strerror}); pick another --out path or move the file away"
        )
    if isinstance(exc, (CliError, ValueError, TypeError, OSError)):
        return text
    hint = "" if debug else " (run with --debug for the traceback)"
    return f"{type(exc).__name__}: {text}{hint}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
