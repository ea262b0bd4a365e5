"""What the aligner collapse check costs where no training decoding exists to reuse.

Two measurements (wall and CPU time, one process, ``time.perf_counter`` / ``process_time``):

- ``combine``: ``combine_aligners`` with ``--corpus`` (the shipped aligner's rebuild step), with
  a timer around its member check (each member's decoding of at most 100 training utterances
  and the sign); prints the whole step's time, the check's, and the rest.
- ``adapt``: for ``speechattn align`` adapting an ensemble, the decoding it already makes (the
  ensemble's pooled decoding of the corpus, with ``run_align``'s default decoding settings)
  against what a per-member collapse sign would add (each member's own decoding of the same
  utterances, as the probe and ``combine_aligners`` decode: pauses ``auto``, forward only).

Usage::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/collapse_check_cost.py combine \\
        --aligners m0.pt m1.pt m2.pt --corpus CORPUS/manifest.jsonl --out runs/ens.pt
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/collapse_check_cost.py adapt \\
        --aligner src/speechattn/assets/aligner_en.pt --corpus CORPUS/manifest.jsonl --utterances 100
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main", "time_adapt_check", "time_combine_check"]


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float]) -> dict[str, float]:
    w, c = _clock()
    return {"wall_s": w - t0[0], "cpu_s": c - t0[1]}


def time_combine_check(
    aligners: list[Path], corpus: Path, out: Path, *, log: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Run ``combine_aligners`` with a timer around its member check; returns the times."""
    import speechattn.recipes.align.pipeline as P

    real = P._check_members
    spent: dict[str, Any] = {}

    def timed(*args: Any, **kwargs: Any) -> list[float]:
        t0 = _clock()
        values = real(*args, **kwargs)
        spent["check"] = _since(t0)
        spent["values_ms"] = values
        return values

    P._check_members = timed  # type: ignore[assignment]
    try:
        t0 = _clock()
        P.combine_aligners(aligners, out, corpus=corpus, log=log)
        spent["combine"] = _since(t0)
    finally:
        P._check_members = real  # type: ignore[assignment]
    spent["rest"] = {k: spent["combine"][k] - spent["check"][k] for k in ("wall_s", "cpu_s")}
    return spent


def time_adapt_check(
    aligner: Path, corpus: Path, *, utterances: int, log: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Time the ensemble's decoding as ``run_align`` makes it and each member's own decoding."""
    from speechattn.data.corpus import load_corpus
    from speechattn.recipes.align.data import build_items
    from speechattn.recipes.align.edges import DEFAULT_ENDPOINT, DEFAULT_SILENCE_EDGE_DB
    from speechattn.recipes.align.health import longest_phone_median_ms
    from speechattn.recipes.align.pauses import (
        DEFAULT_MAX_PAUSE_LOUDNESS,
        DEFAULT_MIN_PAUSE_S,
        DEFAULT_PAUSE_SKIP,
        min_pause_frames,
    )
    from speechattn.recipes.align.pipeline import (
        _decode_with_pauses,
        _members,
        align_items,
        corpus_voice,
        item_envelopes,
        load_aligner,
    )

    model, symbols, feats, _ = load_aligner(aligner)
    utts = load_corpus(corpus)[:utterances]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = build_items(utts, dict(symbols), feats, voice=corpus_voice, envelopes=True)
    mpf = min_pause_frames(DEFAULT_MIN_PAUSE_S, feats.frame_s)
    t0 = _clock()
    align_items(
        model,
        items,
        feats,
        keep_soft=2,
        pauses="auto",
        pause_skip=DEFAULT_PAUSE_SKIP,
        min_pause_frames=mpf,
        max_pause_loudness=DEFAULT_MAX_PAUSE_LOUDNESS,
        reverse_pass=True,
        silence_edge_db=DEFAULT_SILENCE_EDGE_DB,
        envelopes=item_envelopes(items, utts, feats),
        endpoint=DEFAULT_ENDPOINT,
    )
    out: dict[str, Any] = {"utterances": len(items), "ensemble_decoding": _since(t0)}
    members = []
    for i, member in enumerate(_members(model)):
        t0 = _clock()
        dec = _decode_with_pauses(member, items, feats)
        rec = {**_since(t0), "longest_phone_ms": longest_phone_median_ms(dec)}
        log(f"member {i}: {rec}")
        members.append(rec)
    out["member_decodings"] = members
    out["members_total"] = {k: sum(m[k] for m in members) for k in ("wall_s", "cpu_s")}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("combine")
    c.add_argument("--aligners", nargs="+", required=True)
    c.add_argument("--corpus", required=True)
    c.add_argument("--out", required=True)
    a = sub.add_parser("adapt")
    a.add_argument("--aligner", required=True)
    a.add_argument("--corpus", required=True)
    a.add_argument("--utterances", type=int, default=100)
    for p in (c, a):
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--json", default=None, help="write the times here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.what == "combine":
        res = time_combine_check(
            [Path(p) for p in args.aligners], Path(args.corpus), Path(args.out)
        )
    else:
        res = time_adapt_check(Path(args.aligner), Path(args.corpus), utterances=args.utterances)
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
