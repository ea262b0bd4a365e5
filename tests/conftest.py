"""Shared fixtures: one ``device`` fixture (cpu, plus cuda when present), bad audio, and
``two_threads`` for the numba SMA kernels' parallel paths."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# As the console script does (speechattn/cli.py): idle OpenMP threads sleep instead of spinning,
# set before torch loads; the suite runs on 2 shared cores. A policy set by the caller is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

_DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=_DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def bad_inputs_dir(tmp_path: Path) -> Path:
    """A folder corpus of bad audio (corrupt, empty, header-only, truncated, NaN, silent) and of
    usable but awkward audio (stereo, 8 kHz, 48 kHz), each with a transcript (tests/bad_inputs.py)."""
    from tests.bad_inputs import write_bad_inputs

    return write_bad_inputs(tmp_path / "bad_inputs")


@pytest.fixture
def torch_two_threads() -> Iterator[None]:
    """torch at 2 intra-op threads for the test, the count before restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def two_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """torch at 2 threads and no minimum work per thread, so tiny calls take the numba SMA
    kernels' parallel path (the tests that use it skip without numba)."""
    from speechattn.kernels import _numba_sma, _omp

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(_numba_sma, "_MIN_CELLS_PER_THREAD", 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        _omp.set_mode("auto")
