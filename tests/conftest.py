"""Shared fixtures: one ``device`` fixture (cpu, plus cuda when present)."""

from __future__ import annotations

from pathlib import Path

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
