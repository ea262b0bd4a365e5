"""Are two `speechattn demo` output folders the same results, bit for bit?

Compares ``metrics.json`` (every value, except the summary's timing fields ``total time`` and
``training`` and any ``--ignore`` field), every file under ``alignments/`` byte for byte, the report's figures
(``*.png``) byte for byte, and each aligner checkpoint's weights (``checkpoints/*.pt``:
``model`` state dicts with ``torch.equal``, and the training history's losses). Prints each
difference and exits 1 when there is one.

Usage::

    python benchmarks/compare_demo_runs.py runs/before runs/after
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["compare", "main"]

_TIMING_KEYS = ("total time", "training")


def _strip_timing(obj: Any, ignore: tuple[str, ...] = ()) -> Any:
    if isinstance(obj, dict):
        drop = (*_TIMING_KEYS, *ignore)
        return {k: _strip_timing(v, ignore) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [_strip_timing(v, ignore) for v in obj]
    return obj


def _files(root: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob(pattern))}


def compare(a: Path, b: Path, *, ignore: tuple[str, ...] = ()) -> list[str]:
    """Differences between demo folders ``a`` and ``b`` (empty: the same results); ``ignore``:
    ``metrics.json`` keys left out of the comparison besides the timing ones (e.g. a field one
    of the two runs' versions does not write)."""
    diffs: list[str] = []
    ma = json.loads((a / "metrics.json").read_text(encoding="utf-8"))
    mb = json.loads((b / "metrics.json").read_text(encoding="utf-8"))
    if _strip_timing(ma, ignore) != _strip_timing(mb, ignore):
        diffs.append("metrics.json differs (timing fields aside)")
    for pattern in ("alignments/**/*", "*.png"):
        fa, fb = _files(a, pattern), _files(b, pattern)
        fa = {k: v for k, v in fa.items() if (a / k).is_file()}
        fb = {k: v for k, v in fb.items() if (b / k).is_file()}
        if sorted(fa) != sorted(fb):
            diffs.append(f"{pattern}: different file lists ({len(fa)} vs {len(fb)})")
        diffs += [f"{k} differs" for k in sorted(set(fa) & set(fb)) if fa[k] != fb[k]]
    for ck in sorted((a / "checkpoints").glob("*.pt")):
        other = b / "checkpoints" / ck.name
        if not other.is_file():
            diffs.append(f"checkpoints/{ck.name} missing in {b}")
            continue
        sa = torch.load(ck, map_location="cpu", weights_only=True)
        sb = torch.load(other, map_location="cpu", weights_only=True)
        for name, t in sa["model"].items():
            if not torch.equal(t, sb["model"][name]):
                diffs.append(f"checkpoints/{ck.name}: weight {name} differs")
        la = [(h["step"], h["loss"]) for h in sa.get("history", [])]
        lb = [(h["step"], h["loss"]) for h in sb.get("history", [])]
        if la != lb:
            diffs.append(f"checkpoints/{ck.name}: training losses differ")
        pa = [{k: v for k, v in h.items() if k.startswith("dev")} for h in sa.get("history", [])]
        pb = [{k: v for k, v in h.items() if k.startswith("dev")} for h in sb.get("history", [])]
        if pa != pb:
            diffs.append(f"checkpoints/{ck.name}: dev probe scores differ")
    return diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KEY",
        help="a metrics.json key to leave out of the comparison (repeatable)",
    )
    args = p.parse_args(argv)
    diffs = compare(args.a, args.b, ignore=tuple(args.ignore))
    for d in diffs:
        print(d)
    print("identical results" if not diffs else f"{len(diffs)} difference(s)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
