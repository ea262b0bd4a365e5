"""Are two speaker-recipe runs bitwise the same? (the ``spkperf`` before/after check)

Compares, for run prefixes ``A`` and ``B`` written by ``benchmarks/profile_speaker.py``:
``A/results.json`` (every field except the rows' ``train_s`` timing: EER, minDCF, losses,
probe losses), the saved encoder ``A.pt`` (every tensor with ``torch.equal``, every other
field with ``==``), the embeddings ``A.emb.npz`` (keys and arrays exactly) and the scored
trial figures ``A.scores.json``. Missing files on both sides are skipped; on one side only,
a difference.

Usage::

    python benchmarks/compare_speaker_runs.py runs/base_t2_spin runs/after_t2_spin
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["differences", "main"]


def _same(a: Any, b: Any, where: str, out: list[str]) -> None:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and torch.equal(a, b)
        ):
            out.append(where)
    elif isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{where}.{k}")
            else:
                _same(a[k], b[k], f"{where}.{k}", out)
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            out.append(where)
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]", out)
    elif isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return
    elif a != b:
        out.append(where)


def differences(a: str, b: str) -> list[str]:
    """The fields in which runs ``a`` and ``b`` differ (empty: identical)."""
    out: list[str] = []
    pairs = [
        (Path(a) / "results.json", Path(b) / "results.json"),
        (Path(a + ".pt"), Path(b + ".pt")),
        (Path(a + ".emb.npz"), Path(b + ".emb.npz")),
        (Path(a + ".scores.json"), Path(b + ".scores.json")),
    ]
    for pa, pb in pairs:
        if not pa.exists() and not pb.exists():
            continue
        if not (pa.exists() and pb.exists()):
            out.append(f"{pa.name}: only one side")
            continue
        if pa.suffix == ".json":
            ja, jb = json.loads(pa.read_text()), json.loads(pb.read_text())
            for j in (ja, jb):
                for row in j.get("rows", []):
                    row.pop("train_s", None)
                for key in ("corpus", "checkpoint"):  # paths that name the run
                    j.pop(key, None)
            _same(ja, jb, pa.name, out)
        elif pa.suffix == ".pt":
            sa = torch.load(pa, map_location="cpu", weights_only=True)
            sb = torch.load(pb, map_location="cpu", weights_only=True)
            _same(sa, sb, pa.name, out)
        else:
            with np.load(pa) as na, np.load(pb) as nb:
                if sorted(na.files) != sorted(nb.files):
                    out.append(pa.name)
                for k in na.files:
                    if k in nb.files and not np.array_equal(na[k], nb[k]):
                        out.append(f"{pa.name}:{k}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: compare_speaker_runs.py RUN_A RUN_B", file=sys.stderr)
        return 2
    diff = differences(args[0], args[1])
    print("identical results" if not diff else "differ: " + ", ".join(diff))
    return 0 if not diff else 1


if __name__ == "__main__":
    raise SystemExit(main())
