"""Rows of the three-seed tables of ``benchmarks/RESULTS.md`` from ``speaker_loeo.py`` results:
per held-out engine ``clean / channel draw 0 / channel draw 1`` EER %, then the means.

    python benchmarks/speaker_seed_table.py runs/chan/ens_g6/result.json [--label NAME]

Each ``result.json`` of an ``--ensemble`` run gives one row per member and one for the
ensemble; of a training run, one row (``ours``). Then the members' 3-seed mean row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "seed_rows"]


def _cells(rows: list[dict[str, Any]], name: str, raw: bool = False) -> dict[str, Any]:
    key = "poolings_raw" if raw else "poolings"
    by: dict[tuple[str, str, Any], float] = {}
    for r in rows:
        cell = r[key][name] if name in r.get(key, {}) else r["ours_raw" if raw else "ours"]
        by[(r["held_out"], r["condition"], r.get("channel_seed"))] = 100 * cell["eer"]
    engines = sorted({e for e, _, _ in by})
    clean = [by[(e, "clean", None)] for e in engines]
    ch0 = [by[(e, "channel", 0)] for e in engines]
    ch1 = [by[(e, "channel", 1)] for e in engines]
    return {
        "engines": engines,
        "cells": [f"{a:.1f} / {b:.1f} / {c:.1f}" for a, b, c in zip(clean, ch0, ch1)],
        "clean": float(np.mean(clean)),
        "ch0": float(np.mean(ch0)),
        "ch1": float(np.mean(ch1)),
        "both": float(np.mean(ch0 + ch1)),
    }


def seed_rows(path: Path, label: str) -> list[str]:
    """Markdown rows: each member, their mean, the ensemble (or the one trained encoder)."""
    res = json.loads(path.read_text())
    rows = res["rows"]
    names = list(rows[0]["poolings"])
    out = []
    members = [n for n in names if n.startswith("member")] or names[:1]
    stats = []
    for n in members:
        c = _cells(rows, n)
        raw = _cells(rows, n, raw=True)
        stats.append((c, raw))
        out.append(
            f"| {label} ({n}) | " + " | ".join(c["cells"]) + f" | {c['clean']:.2f} | "
            f"{c['ch0']:.2f} | {c['ch1']:.2f} | **{c['both']:.2f}** | {raw['both']:.2f} |"
        )
    if len(members) > 1:
        m = {k: float(np.mean([c[k] for c, _ in stats])) for k in ("clean", "ch0", "ch1", "both")}
        r = float(np.mean([raw["both"] for _, raw in stats]))
        out.append(
            f"| {label}, 3-seed mean | | | | {m['clean']:.2f} | {m['ch0']:.2f} | {m['ch1']:.2f} "
            f"| **{m['both']:.2f}** | {r:.2f} |"
        )
    if "ensemble" in names:
        c, raw = _cells(rows, "ensemble"), _cells(rows, "ensemble", raw=True)
        out.append(
            f"| {label}, ensemble | " + " | ".join(c["cells"]) + f" | {c['clean']:.2f} | "
            f"{c['ch0']:.2f} | {c['ch1']:.2f} | **{c['both']:.2f}** | {raw['both']:.2f} |"
        )
    if rows and "shipped" in rows[0]:
        s = {}
        for r in rows:
            s[(r["held_out"], r["condition"], r.get("channel_seed"))] = 100 * r["shipped"]["eer"]
        both = [v for k, v in s.items() if k[1] == "channel"]
        clean = [v for k, v in s.items() if k[1] == "clean"]
        out.append(
            f"| shipped asset as scored in this run | | | | {np.mean(clean):.2f} | | | "
            f"{np.mean(both):.2f} | |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="result.json files of speaker_loeo.py")
    ap.add_argument("--label", default=None, help="row label (default: the folder name)")
    args = ap.parse_args(argv)
    print(
        "| recipe (member) | festival | kokoro | rhvoice | mean clean | mean, ch. 0 | "
        "mean, ch. 1 | **mean, both draws** | raw, both draws |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in map(Path, args.results):
        for line in seed_rows(p, args.label or p.parent.name):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
