"""Per-utterance front ends on one torch intra-op thread, the caller's count restored after.

The recipes' front ends (the aligner's :func:`~speechattn.recipes.align.data.build_items`, the
speaker recipe's :func:`~speechattn.recipes.speaker.data.load_feature_set`) work one utterance
at a time on tensors too small to split across threads: a few seconds of waveform, its STFT,
a ``(T, n_mels)`` log-mel. A second thread only adds synchronisation, which on a busy machine
cost 20-30 times the CPU time of the work itself (benchmarks/RESULTS.md, "demoperf" and
"spkperf"). The results are bitwise the same on one thread.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

import torch

__all__ = ["on_one_torch_thread", "one_torch_thread"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block on one torch intra-op thread, then restore the caller's count (also
    when the block raises). A caller already on one thread is left alone."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def on_one_torch_thread(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn`` run inside :func:`one_torch_thread` (a decorator; signature and docstring kept)."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with one_torch_thread():
            return fn(*args, **kwargs)

    return wrapper
