"""Run compiled kernel items on torch's own OpenMP thread team (imported on first use only).

PyTorch's CPU wheels parallelise with OpenMP (GNU libgomp). After each parallel torch op its
worker threads keep spinning for a while (libgomp's default wait policy), so a kernel that runs
its second half on a thread of its own (a Python ``ThreadPoolExecutor`` thread) competes with a
spinning torch worker for the same core. This module instead hands the items to the libgomp
that torch has loaded, through ``GOMP_parallel``: the spinning worker picks them up at once and
no extra thread exists.

A team call runs a numba ``cfunc("void(voidptr)")`` on every team thread with a pointer to an
``int64`` block (see :func:`team_run`). Slot 0 of the block is a shared counter: the threads
claim items one at a time with an atomic fetch-and-add
(:mod:`speechattn.kernels._numba_ptr`), so ragged items
balance and a team of any size (one inside a nested parallel region) finishes every item.

Selection (:func:`team`), automatic and never fatal: the backend must be OpenMP
(``torch.__config__.parallel_info()``), a ``libgomp`` must already be mapped into the process
(Linux ``/proc/self/maps``: the one inside torch's package, else the only one; opened again
with ``RTLD_NOLOAD`` so that it is the very copy torch runs on)
and export ``GOMP_parallel`` and ``omp_in_parallel``. Anything else (macOS, Windows, an LLVM
``libomp`` or TBB build, a lookup error) gives ``None`` and callers use their Python threads.
A forked child (whose copy of the team's threads does not exist) also gets ``None``.
``SPEECHATTN_KERNEL_THREADS=python`` forces the Python threads.

On a machine with more runnable threads than cores a team call can wait milliseconds for a
worker that gets no core; :meth:`OmpTeam.run` notices (a thread that arrives after every item
was taken) and backs off to the calling thread for a while.

Concurrency: ``GOMP_parallel`` called inside a parallel region gets a team of one (the caller
runs every item); calls from several Python threads are serialised by a non-blocking lock: a
caller that finds the team busy runs its items on its own thread instead of waiting.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

import torch

__all__ = ["OmpTeam", "describe", "set_mode", "team", "team_run"]

_ENV = "SPEECHATTN_KERNEL_THREADS"
LATE_SLOT = -1  # last int64 of a block: threads that found every item taken on arrival
_MAX_BACKOFF = 64


class OmpTeam:
    """Torch's libgomp, resolved: ``run(fn_address, block, threads)`` (see :func:`team_run`)."""

    def __init__(self, lib: ctypes.CDLL, path: str) -> None:
        self.path = path
        self._parallel = lib.GOMP_parallel
        self._parallel.restype = None
        self._parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        self._in_parallel = lib.omp_in_parallel
        self._in_parallel.restype = ctypes.c_int
        self._in_parallel.argtypes = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._late = 0  # consecutive calls with a late thread
        self._skip = 0  # calls left to run on the calling thread
        self._backoff = 1
        self.stats = {"team": 0, "late": 0, "backed_off": 0}  # call counts, for benchmarks

    def usable(self) -> bool:
        """False in a forked child: the parent's team threads do not exist there."""
        return os.getpid() == self._pid

    def run(self, fn: int, block: Any, threads: int) -> bool:
        """Run ``fn(block)`` on a team of ``threads`` (ctypes releases the GIL meanwhile).

        Returns False without running anything when the team is busy with another Python
        thread's call, the caller is inside a parallel region, or the team is backing off
        (below): the caller then runs the items itself.

        Back-off: a team call returns only when every team thread has arrived. On a machine
        with more runnable threads than cores a woken worker may get no core for milliseconds
        while the caller has already done every item. A thread that finds every item taken on
        arrival counts itself in ``block[LATE_SLOT]``; after two such calls in a row the next
        ``n`` calls run on the calling thread (``n`` doubles up to 64 while it persists, and
        resets after a call where every thread found work).
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._skip > 0:
                self._skip -= 1
                self.stats["backed_off"] += 1
                return False
            if self._in_parallel():
                return False
            block[0] = 0
            block[LATE_SLOT] = 0
            self._parallel(fn, block.ctypes.data, threads, 0)
            self.stats["team"] += 1
            if block[LATE_SLOT] > 0:
                self.stats["late"] += 1
                self._late += 1
                if self._late >= 2:
                    self._late = 0
                    self._skip = self._backoff
                    self._backoff = min(2 * self._backoff, _MAX_BACKOFF)
            else:
                self._late = 0
                self._backoff = 1
            return True
        finally:
            self._lock.release()


def _pick_libgomp(paths: list[str], torch_dir: str) -> str | None:
    """The libgomp torch uses among the mapped ``paths``: the one inside torch's package
    (wheels bundle it, possibly renamed ``libgomp-<hash>.so.1``), else the only one, else None
    (several runtimes and none of them torch's: ambiguous)."""
    unique = list(dict.fromkeys(paths))
    root = os.path.dirname(os.path.realpath(torch_dir))  # site-packages: torch/lib, torch.libs
    dirs = tuple(os.path.join(root, d) + os.sep for d in ("torch", "torch.libs"))
    own = [p for p in unique if os.path.realpath(p).startswith(dirs)]
    if own:
        return own[0]
    return unique[0] if len(unique) == 1 else None


def _mapped_libgomp() -> str | None:
    """Path of torch's libgomp among the libraries mapped into this process, or None."""
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rsplit(None, 1)[-1] if "/" in line else ""
                if os.path.basename(path).startswith("libgomp"):
                    paths.append(path)
    except OSError:
        return None
    return _pick_libgomp(paths, os.path.dirname(torch.__file__))


_TEAM: OmpTeam | None = None
_RESOLVED = False
_WHY = "not resolved yet"
_MODE = "auto"


def _resolve() -> tuple[OmpTeam | None, str]:
    if os.environ.get(_ENV, "").strip().lower() == "python":
        return None, f"{_ENV}=python"
    try:
        info = torch.__config__.parallel_info()
    except Exception as exc:  # pragma: no cover - defensive
        return None, f"parallel_info failed ({exc})"
    if "parallel backend: OpenMP" not in info:
        return None, "torch's parallel backend is not OpenMP"
    path = _mapped_libgomp()
    if path is None:
        return None, "no libgomp loaded (torch uses another OpenMP runtime)"
    try:
        lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
        team = OmpTeam(lib, path)
    except (OSError, AttributeError) as exc:
        return None, f"libgomp symbols not found ({exc})"
    return team, f"torch's OpenMP team ({os.path.basename(path)})"


def team() -> OmpTeam | None:
    """Torch's OpenMP team, or None where kernels must use their Python threads (cached)."""
    global _TEAM, _RESOLVED, _WHY
    if _MODE == "python":
        return None
    if not _RESOLVED:
        _TEAM, _WHY = _resolve()
        _RESOLVED = True
    if _TEAM is not None and not _TEAM.usable():
        return None
    return _TEAM


def set_mode(mode: str) -> str:
    """``"auto"`` (torch's team where available) or ``"python"`` (Python threads); returns the
    previous mode. For benchmarks and tests."""
    global _MODE
    if mode not in ("auto", "python"):
        raise ValueError(f"Expected mode 'auto' or 'python'; found {mode!r}.")
    old, _MODE = _MODE, mode
    return old


def describe() -> str:
    """One line: which threads the numba kernels use and why."""
    t = team()
    if t is not None:
        return f"items on torch's OpenMP team ({os.path.basename(t.path)})"
    if _MODE == "python":
        return "items on Python threads (forced)"
    if _RESOLVED and _TEAM is not None:
        return "items on Python threads (forked child)"
    return f"items on Python threads ({_WHY})"


def team_run(fn: int, block: Any, threads: int) -> bool:
    """Run the cfunc at address ``fn`` on ``block`` (an int64 numpy array: slot 0 the item
    counter and slot ``LATE_SLOT`` the late threads, both zeroed here) on torch's team. False
    when the caller must run the items itself (see :meth:`OmpTeam.run`)."""
    t = team()
    if t is None:
        return False
    return t.run(fn, block, threads)
