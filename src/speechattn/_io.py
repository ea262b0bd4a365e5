"""Atomic writes of user-visible files: a temporary file in the same folder, then ``os.replace``.

A run stopped mid-write (Ctrl-C, a crash, a full disk) then leaves either the previous complete
file or none, never a truncated one that a later run, ``--resume`` or a reader takes as valid.
``os.replace`` is atomic on POSIX (and replaces an existing file on Windows) when both paths lie
on one file system, hence the temporary file beside the target. Every writer of checkpoints,
reports, results and alignments goes through :func:`atomic_write` (or :func:`write_text_atomic`).

The temporary name is ``.<name>.<pid>.tmp``: hidden, unique per process, and ending in ``.tmp``
so that no reader globbing ``*.json`` / ``*.TextGrid`` / ``*.npz`` picks up a half-written one.
Writers that pick a format from the file name (``np.savez``, PIL, matplotlib) must be given the
format or an open file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write", "write_text_atomic"]


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path`` atomically.

    On any exception (``KeyboardInterrupt`` included) the temporary file is removed and
    ``path`` is left as it was. The parent folder is created if missing.

    Example::

        with atomic_write(out / "model.pt") as tmp:
            torch.save(state, tmp)

    Args:
        path: the file to write.

    Yields:
        The temporary file's path (same folder, so ``os.replace`` never crosses file systems).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """``Path(path).write_text(text)`` through :func:`atomic_write`; returns ``Path(path)``."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)
