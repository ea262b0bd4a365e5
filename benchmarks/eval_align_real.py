"""A final check of the aligner on real telephone prompts against SILVER truth (pocketsphinx).

    nice -n 5 env OMP_NUM_THREADS=1 python benchmarks/eval_align_real.py --out runs/real
    python benchmarks/eval_align_real.py --utterances 3 --adapt-steps 2 --out /tmp/r   # smoke run

The corpus is Debian's English asterisk prompt recordings (``asterisk-core-sounds-en-wav``,
one professional voice, the 8 kHz originals as they are) with the prompt texts of
``asterisk-core-sounds-en`` (read by :func:`speechattn.data.corpus.load_corpus` as
``"asterisk"``); ``--utterances`` of them are drawn with ``--sample-seed``. There is no exact
timing for these recordings, so the reference is SILVER truth: pocketsphinx 5.1.1 forced
alignment of the same audio and text (:mod:`speechattn.recipes.align.peers`), itself about
10-15 ms off exact timings on synthetic engines (benchmarks/RESULTS.md), so differences under
about 10 ms between rows mean little. Notes in parentheses in the prompt texts are not spoken and
are dropped (prompts that are only a note, the silences, are never drawn); prompts pocketsphinx
cannot align (no alignment, or a word neither its dictionary nor the espeak-ng fallback can
pronounce) are left out and counted.

Rows, all the ``speechattn align`` pipeline run in process (:func:`run_align`), scored with
the word-boundary scorer of ``benchmarks/eval_align_engines.py`` (each word's start and end;
pauses are gaps, not scored):

- ``adapted``: the shipped aligner as ``speechattn align`` runs it by default (unsupervised
  adaptation on these prompts, reverse pass);
- ``unsupervised``: ``--no-adapt`` (reverse pass);
- ``adapted_forward``: ``--no-reverse-pass`` (the same adapted model, decoded forward only);
- ``unsupervised_forward``: ``--no-adapt --no-reverse-pass``;
- ``uniform``: each phone gets the same share of the audio.

The adapted model is what a user's ``speechattn align`` run would build on this corpus; it is
thrown away after scoring. The asterisk recordings are evaluation-only: nothing here trains a
kept model or chooses a setting. Writes ``results.json`` and ``results.md`` into ``--out``.
Cost on 2 shared CPU cores at 1 thread: pocketsphinx about 1 min, each unadapted row 1-3 min,
adaptation up to align's time cap (15 min).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ROWS",
    "ROW_NAMES",
    "choose_utterances",
    "main",
    "markdown",
    "silver_manifest",
    "spoken_text",
]

ROWS = ("adapted", "unsupervised", "adapted_forward", "unsupervised_forward", "uniform")
ROW_NAMES = {
    "adapted": "shipped aligner, adapted, reverse pass (default `speechattn align`)",
    "unsupervised": "shipped aligner, `--no-adapt`",
    "adapted_forward": "shipped aligner, adapted, `--no-reverse-pass`",
    "unsupervised_forward": "shipped aligner, `--no-adapt --no-reverse-pass`",
    "uniform": "uniform durations",
}
SAMPLE_SEED = 19


def _engines_module() -> Any:
    """benchmarks/eval_align_engines.py, whose scorer every aligner table shares."""
    name = "eval_align_engines"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parent / "eval_align_engines.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def spoken_text(text: str) -> str:
    """The prompt text without its parenthesised notes (``"(simple tone sound plays)"``).

    Some asterisk prompt texts carry notes in parentheses (``"IAX (note: does not say "2")"``,
    ``"(1 second of silence)"``); they are not spoken, so they are neither aligned nor drawn.
    """
    return " ".join(re.sub(r"\([^)]*\)", " ", text).split())


def choose_utterances(utts: list[Any], n: int, *, seed: int = SAMPLE_SEED) -> list[Any]:
    """``n`` utterances with spoken text drawn with ``seed`` (all when fewer), in id order."""
    if n <= 0:
        raise ValueError(f"Expected a positive number of utterances; found {n}.")
    pool = sorted((u for u in utts if spoken_text(u.text)), key=lambda u: u.id)
    if len(pool) <= n:
        return pool
    return sorted(random.Random(seed).sample(pool, n), key=lambda u: u.id)


def silver_manifest(utts: list[Any], path: Path) -> tuple[int, list[str], list[str]]:
    """Write a manifest whose word timings are pocketsphinx's forced alignment (silver truth).

    Audio stays where it is (absolute paths, native sample rate).

    Returns:
        (utterances written, ids pocketsphinx could not align, words it pronounced with espeak-ng).
    """
    import soundfile as sf

    from speechattn.data.text import normalize_text, words_of
    from speechattn.recipes.align.peers import pocketsphinx_alignment

    lines: list[str] = []
    failed: list[str] = []
    added: set[str] = set()
    for u in utts:
        wav, sr = sf.read(str(u.audio_path), dtype="float32", always_2d=True)
        text = spoken_text(u.text)
        words = words_of(normalize_text(text))
        try:
            al = pocketsphinx_alignment(wav.mean(axis=1), int(sr), words)
        except ValueError as exc:
            print(f"  pocketsphinx: {u.id} left out ({exc})", file=sys.stderr)
            failed.append(u.id)
            continue
        added.update(al.added_words)
        rec = {
            "id": u.id,
            "path": str(Path(u.audio_path).resolve()),
            "text": text,
            "speaker": u.speaker,
            "words": [[round(w.start, 4), round(w.end, 4), w.label] for w in al.words],
        }
        lines.append(json.dumps(rec))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return len(lines), failed, sorted(added)


def _run_rows(
    manifest: Path, work: Path, rows: list[str], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Run the align pipeline for each row and score its word boundaries against the manifest."""
    import speechattn.recipes.align.pipeline as P
    from speechattn.data.corpus import load_corpus
    from speechattn.recipes.align.data import build_items
    from speechattn.recipes.align.evaluate import align_items

    E = _engines_module()
    out: dict[str, dict[str, Any]] = {}
    captured: dict[str, Any] = {}
    real_align_items = P.align_items

    def spy(model: Any, items: Any, config: Any, **kw: Any) -> Any:
        res = real_align_items(model, items, config, **kw)
        if model != "uniform":
            captured["results"] = res
        return res

    def record(row: str, results: list[Any], t0: float, extra: dict[str, Any]) -> None:
        werr, _ = E._results_errors(results)
        e = np.abs(np.concatenate(werr)) if werr else np.zeros(0)
        out[row] = {
            **E._summarize(werr, []),
            "word_boundaries": int(e.size),
            "word_median_abs_ms": float(np.median(e)) if e.size else None,
            "word_p90_abs_ms": float(np.percentile(e, 90)) if e.size else None,
            "utterances": len(results),
            "seconds": time.perf_counter() - t0,
            **extra,
        }

    # adapted first: its adapted model serves the forward-only adapted row as well
    order = [
        r
        for r in ("adapted", "adapted_forward", "unsupervised", "unsupervised_forward")
        if r in rows
    ]
    adapted_ckpt: Path | None = None
    adapt_seconds = 0.0
    P.align_items = spy  # run_align returns scores only; keep its alignments for the metrics
    try:
        for row in order:
            t0 = time.perf_counter()
            kw: dict[str, Any] = dict(
                seed=args.seed,
                threads=args.threads,
                progress=False,
                log=lambda *a: None,
                reverse_pass=not row.endswith("_forward"),
            )
            if args.endpoint is not None:
                kw["endpoint"] = args.endpoint == "on"
            if row.startswith("adapted"):
                if adapted_ckpt is None:
                    if args.adapt_steps is not None:
                        kw["steps"] = args.adapt_steps
                    dest = work / "adapted"
                else:  # decode with the model adapted above: adaptation never sees the decoding
                    kw.update(checkpoint=adapted_ckpt, adapt=False)
                    dest = work / row
            else:
                kw["adapt"] = False
                dest = work / row
            captured.clear()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = P.run_align(manifest, dest, overwrite=True, **kw)
            extra: dict[str, Any] = {"decoding": res["summary"].get("decoding")}
            extra["calibration"] = res["summary"].get("boundary calibration")
            if row.startswith("adapted"):
                if adapted_ckpt is None:
                    adapted_ckpt = dest / "aligner.pt"
                    adapt_seconds = time.perf_counter() - t0
                    extra["adaptation"] = res["summary"].get("adaptation")
                else:
                    extra["adaptation"] = out.get("adapted", {}).get("adaptation")
                    extra["adapt_seconds_not_counted"] = adapt_seconds
            record(row, captured["results"], t0, extra)
    finally:
        P.align_items = real_align_items
    if "uniform" in rows:
        t0 = time.perf_counter()
        _, symbols, feats, _ = P.load_aligner(None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            items = build_items(load_corpus(manifest), symbols, feats, voice=P.corpus_voice)
        record("uniform", align_items("uniform", items, feats), t0, {})
    return out


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """The results table (one line per row, in :data:`ROWS` order)."""
    lines = [
        "| aligner (vs pocketsphinx silver truth) | word mean abs (ms) | word ≤20 ms (%) | "
        "word mean signed (ms) | utts scored | s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    _fmt = _engines_module()._fmt  # the engines table's cell format
    for row in ROWS:
        r = results.get(row)
        if r is None:
            continue
        lines.append(
            f"| {ROW_NAMES[row]} | {_fmt(r['word_mean_abs_ms'])} | {_fmt(r['word_within_20ms'])} | "
            f"{_fmt(r['word_mean_signed_ms'], '{:+.1f}')} | {r['word_utts']} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for results.json and results.md")
    ap.add_argument(
        "--corpus",
        default="asterisk",
        help="corpus to check (default: the Debian asterisk prompts; any load_corpus path)",
    )
    ap.add_argument("--utterances", type=int, default=120, help="prompts drawn (default 120)")
    ap.add_argument("--sample-seed", type=int, default=SAMPLE_SEED, help="seed of the draw")
    ap.add_argument(
        "--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)} (default all)"
    )
    ap.add_argument(
        "--adapt-steps", type=int, default=None, help="cap on adaptation steps (default align's)"
    )
    ap.add_argument("--seed", type=int, default=0, help="adaptation seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--endpoint",
        choices=("on", "off"),
        default=None,
        help="the aligner rows' endpoint rule (align's --endpoint / --no-endpoint; default: "
        "align's default)",
    )
    args = ap.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad or not rows:
        ap.error(f"--rows: expected names from {', '.join(ROWS)}; found {args.rows!r}")
    if args.utterances <= 0:
        ap.error(f"--utterances: expected a positive int; found {args.utterances}")

    import soundfile as sf
    import torch

    from speechattn.data.corpus import load_corpus
    from speechattn.recipes.align.peers import pocketsphinx_available

    if not pocketsphinx_available():
        print("pocketsphinx is not installed (pip install speechattn[peers])", file=sys.stderr)
        return 1
    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        utts = load_corpus(args.corpus, problems=problems)
    chosen = choose_utterances(utts, args.utterances, seed=args.sample_seed)
    t0 = time.perf_counter()
    manifest = out / "work" / "silver.jsonl"
    n, failed, added = silver_manifest(chosen, manifest)
    silver_s = time.perf_counter() - t0
    print(f"silver truth: {n} of {len(chosen)} prompts aligned by pocketsphinx in {silver_s:.0f} s")
    if n == 0:
        print("pocketsphinx aligned none of the prompts: nothing to score", file=sys.stderr)
        return 1
    results = _run_rows(manifest, out / "work", rows, args)
    table = markdown(results)
    rates = sorted({int(sf.info(str(u.audio_path)).samplerate) for u in chosen})
    meta = {
        "corpus": args.corpus,
        "corpus_size": len(utts),
        "corpus_spoken": sum(1 for u in utts if spoken_text(u.text)),
        "corpus_skipped": len(problems),
        "drawn": len(chosen),
        "sample_seed": args.sample_seed,
        "sample_rates": rates,
        "silver": "pocketsphinx 5.1.1 forced alignment of the same audio and text",
        "silver_failed": failed,
        "silver_words_from_espeak": added,
        "silver_seconds": silver_s,
        "seed": args.seed,
        "threads": args.threads,
        "adapt_steps": args.adapt_steps,
        "command": " ".join(sys.argv),
    }
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": results}, indent=1))
    note = (
        f"{n} of {len(chosen)} prompts drawn (seed {args.sample_seed}) from {args.corpus} "
        f"({meta['corpus_spoken']} with spoken text; sample rates {rates}); {len(failed)} "
        "left out (pocketsphinx could not align them: no alignment, or a word it cannot "
        "pronounce). Reference: SILVER truth, pocketsphinx 5.1.1 forced alignment."
    )
    (out / "results.md").write_text(table + "\n\n" + note + "\n")
    print(table)
    print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
