"""Load a script of ``benchmarks/`` as a module, for the tests of the benchmark scripts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str, *, alias: str | None = None) -> ModuleType:
    """A freshly executed module of ``benchmarks/<name>.py``, registered in ``sys.modules`` as
    ``alias`` (default ``name``) before it runs, so its dataclasses resolve their module; a new
    ``alias`` gives a module of its own (module state patched by one test stays there)."""
    key = alias or name
    spec = importlib.util.spec_from_file_location(key, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod
