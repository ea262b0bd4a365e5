"""Before/after table of the endpoint rule from paired eval_align_engines.py runs.

    python benchmarks/endpoint_table.py runs/ev                 # NAME_off / NAME_on folders

Each ``NAME_off`` / ``NAME_on`` folder under the given one holds the ``results.json`` of
``benchmarks/eval_align_engines.py --rows candidate`` run with ``--endpoint off`` / ``on``
(the same aligner, engine and conditions). Prints, per aligner and condition, word mean abs
(ms), word within 20 ms (%), phone within 20 ms (%), the first word's start and last word's end
(mean signed ms, and the count of last ends > 100 ms off), before -> after; then per engine the
member means (names without ``ens``) and the decision rule's figures (benchmarks/RESULTS.md,
"endpoint").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["load_pairs", "main"]


def load_pairs(root: Path) -> dict[str, dict[str, dict[tuple[str, str], dict[str, Any]]]]:
    """``{name: {"off"|"on": {(engine, condition): record}}}`` of the candidate rows under ``root``."""
    out: dict[str, dict[str, dict[tuple[str, str], dict[str, Any]]]] = {}
    for f in sorted(root.glob("*_o*/results.json")):
        name, _, side = f.parent.name.rpartition("_")
        if side not in ("off", "on"):
            continue
        recs = json.loads(f.read_text())["results"]
        out.setdefault(name, {})[side] = {
            (r["engine"], r["condition"]): r
            for r in recs
            if r["row"] == "candidate" and r["engine"] != "pooled"
        }
    return {k: v for k, v in out.items() if len(v) == 2}


def _f(v: Any, fmt: str = "{:.1f}") -> str:
    return "–" if v is None else fmt.format(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", help="folder holding NAME_off and NAME_on run folders")
    args = ap.parse_args(argv)
    pairs = load_pairs(Path(args.root))
    conds = ["clean", "telephone", "noise10", "reverb"]
    print(
        "| aligner | engine | condition | word mean abs | word ≤20 ms (%) | phone ≤20 ms (%) | "
        "first start signed | last end signed | last ends > 100 ms |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    member: dict[tuple[str, str, str], list[tuple[float, float, float, float]]] = {}
    for name, sides in pairs.items():
        for key in sorted(sides["off"], key=lambda k: conds.index(k[1]) if k[1] in conds else 9):
            a, b = sides["off"][key], sides["on"].get(key)
            if b is None:
                continue
            cells = []
            for k, fmt in (
                ("word_mean_abs_ms", "{:.2f}"),
                ("word_within_20ms", "{:.1f}"),
                ("phone_within_20ms", "{:.1f}"),
                ("first_start_signed_ms", "{:+.1f}"),
                ("last_end_signed_ms", "{:+.1f}"),
                ("last_end_over_100ms", "{:d}"),
            ):
                cells.append(f"{_f(a.get(k), fmt)} → {_f(b.get(k), fmt)}")
            print(f"| {name} | {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
            if "ens" not in name:
                member.setdefault(("members", key[0], key[1]), []).append(
                    (
                        a["word_mean_abs_ms"],
                        b["word_mean_abs_ms"],
                        a["phone_within_20ms"] if a["phone_within_20ms"] is not None else 0.0,
                        b["phone_within_20ms"] if b["phone_within_20ms"] is not None else 0.0,
                    )
                )
            else:
                member.setdefault((name, key[0], key[1]), []).append(
                    (a["word_mean_abs_ms"], b["word_mean_abs_ms"], 0.0, 0.0)
                )
    print()
    print(
        "| group | engine | n | clean+tel word mean abs | noise10 | reverb | "
        "phone ≤20 ms change, worst condition (points) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    engines = sorted({k[1] for k in member})
    groups = sorted({k[0] for k in member}, key=lambda g: (g != "members", g))
    all_ct: list[tuple[float, float]] = []
    for g in groups:
        for e in engines:
            rows = {c: member.get((g, e, c)) for c in conds}
            if not rows["clean"]:
                continue

            def mean(c: str, i: int, rows: dict = rows) -> float:
                v = rows[c]
                return sum(x[i] for x in v) / len(v) if v else float("nan")

            ct_a = (mean("clean", 0) + mean("telephone", 0)) / 2
            ct_b = (mean("clean", 1) + mean("telephone", 1)) / 2
            if g == "members":
                for i in range(len(rows["clean"])):
                    all_ct.append(
                        (
                            (rows["clean"][i][0] + rows["telephone"][i][0]) / 2,
                            (rows["clean"][i][1] + rows["telephone"][i][1]) / 2,
                        )
                    )
            ph = min(
                (mean(c, 3) - mean(c, 2) for c in conds if rows[c]),
                default=float("nan"),
            )
            n = len(rows["clean"])
            print(
                f"| {g} | {e} | {n} | {ct_a:.2f} → {ct_b:.2f} ({ct_b - ct_a:+.2f}) | "
                f"{mean('noise10', 0):.2f} → {mean('noise10', 1):.2f} "
                f"({mean('noise10', 1) - mean('noise10', 0):+.2f}) | "
                f"{mean('reverb', 0):.2f} → {mean('reverb', 1):.2f} "
                f"({mean('reverb', 1) - mean('reverb', 0):+.2f}) | "
                f"{ph:+.1f} |"
            )
    if all_ct:
        a = sum(x[0] for x in all_ct) / len(all_ct)
        b = sum(x[1] for x in all_ct) / len(all_ct)
        print(
            f"\nAll {len(all_ct)} members, clean+telephone word mean abs: {a:.2f} → {b:.2f} "
            f"({b - a:+.2f} ms)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
