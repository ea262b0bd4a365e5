"""Label-free collapse signals of trained aligners (issue 19, RESULTS section "collapse").

A training seed of the aligner can collapse: one phone (usually ə) models silence and is
stretched by hundreds of ms. This script decodes a seeded subset of each model's OWN training
corpus (``MODEL_DIR/corpus/manifest.jsonl``) with every label field removed, unadapted and with
``speechattn align``'s default decoding, and computes signals from audio + text + the model only:

- ``schwa_ratio``: share of aligned phone frames given to ə / ə's share of the text's phone tokens
- ``max_ratio``: that ratio's largest value over symbols with >= ``--min-count`` tokens
- ``longest_ms``: median over utterances of the longest single phone (ms;
  :func:`speechattn.recipes.align.health.longest_phone_median_ms`, which the pipeline logs)
- ``tail_gap_ms``: mean (trailing low-energy region of the audio - closing silence left after the
  last word), ms; the region ends at the last 10 ms frame within 35 dB of the loudest frame
- ``final_loss``: mean training loss over the last 100 steps of ``checkpoints/sma.pt``
- ``dur_cv``: median over symbols (>= ``--min-count`` tokens) of the aligned durations' CV

With ``--scores NAME=EV_DIR`` (an ``eval_align_engines.py`` output folder per model) it prints a
table and, per signal, the split-half separation read of the RESULTS section: a threshold chosen
on the models whose names start with one of ``--half-a``, applied to the others, plus the rank
AUC over every labelled model (> ``--collapsed-ms`` collapsed, < ``--healthy-ms`` healthy).
Labels are used for that read only, never by the signals.

Example (1 thread, one model per call or many)::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/aligner_collapse_probe.py \\
        --model k2_piper_c_s2=/work/wt/alignkok2/runs/piper_c_s2/piper --out runs/probe
    python benchmarks/aligner_collapse_probe.py --out runs/probe --half-a k2_ \\
        --scores k2_piper_c_s2=/work/wt/alignkok2/runs/ev_piper_c_s2
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SIGNALS",
    "auc",
    "collapse_signals",
    "main",
    "split_half",
    "tail_silence_s",
]

SIGNALS = ("schwa_ratio", "max_ratio", "longest_ms", "tail_gap_ms", "final_loss", "dur_cv")
SCHWA = "ə"


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"Expected NAME=PATH; found {text!r}.")
    return name, value


def tail_silence_s(
    wave: np.ndarray, sample_rate: int, *, level_db: float = 35.0, frame_s: float = 0.01
) -> float:
    """Seconds from the end of the last frame within ``level_db`` of the loudest frame to the
    end of the waveform ``(n,)`` (energy only, no labels)."""
    from speechattn.recipes.align.edges import energy_envelope

    env = energy_envelope(wave, sample_rate, window_s=frame_s, hop_s=frame_s)
    loud = np.flatnonzero(env.level_db >= env.level_db.max() - level_db)
    last_end = (loud[-1] + 0.5) * env.hop_s
    return max(0.0, wave.size / sample_rate - last_end)


def _final_loss(model_dir: Path, last: int = 100) -> float:
    import torch

    ck = model_dir / "checkpoints" / "sma.pt"
    if not ck.is_file():
        return float("nan")
    hist = torch.load(ck, weights_only=True, map_location="cpu").get("history") or []
    losses = [float(h["loss"]) for h in hist if "loss" in h]
    return float(np.mean(losses[-last:])) if losses else float("nan")


def _probe_manifest(model_dir: Path, n: int, seed: int, dest: Path) -> int:
    """Write ``n`` seeded utterances of the run's training manifest, labels removed."""
    src = model_dir / "corpus" / "manifest.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    pick = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    with dest.open("w") as f:
        for i in pick:
            row = {k: v for k, v in rows[i].items() if k not in ("words", "phones")}
            row["path"] = str((src.parent / row["path"]).resolve())
            f.write(json.dumps(row) + "\n")
    return len(pick)


def collapse_signals(
    results: list[Any],
    tails_s: list[float],
    durations_s: list[float],
    *,
    min_count: int = 20,
) -> dict:
    """The label-free signals of one model from its alignment results (one per utterance; the
    ``phones`` and ``words`` intervals in seconds), each utterance's trailing low-energy region
    ``tails_s`` and its audio duration ``durations_s`` (seconds, same order)."""
    from speechattn.recipes.align.health import longest_phone_median_ms

    if not (len(results) == len(tails_s) == len(durations_s)) or not results:
        raise ValueError(
            "Expected one tail and one duration per result, > 0 results; found "
            f"{len(results)} / {len(tails_s)} / {len(durations_s)}."
        )
    count: collections.Counter[str] = collections.Counter()
    frames: collections.Counter[str] = collections.Counter()
    durs: dict[str, list[float]] = collections.defaultdict(list)
    gaps = []
    for res, tail, duration in zip(results, tails_s, durations_s):
        d = [(p[2], p[1] - p[0]) for p in res.phones]
        for lab, dur in d:
            count[lab] += 1
            frames[lab] += dur
            durs[lab].append(dur)
        left = duration - res.words[-1][1]
        gaps.append(tail - left)
    n_tok, n_dur = sum(count.values()), sum(frames.values())

    def ratio(lab: str) -> float:
        return (frames[lab] / n_dur) / (count[lab] / n_tok) if count[lab] else float("nan")

    common = [lab for lab in count if count[lab] >= min_count]
    cvs = [float(np.std(durs[lab]) / np.mean(durs[lab])) for lab in common]
    worst = max(common, key=ratio) if common else ""
    return {
        "utterances": len(results),
        "schwa_ratio": ratio(SCHWA),
        "max_ratio": ratio(worst) if worst else float("nan"),
        "max_ratio_phone": worst,
        "longest_ms": longest_phone_median_ms(results),
        "tail_gap_ms": 1000.0 * float(np.mean(gaps)),
        "dur_cv": float(np.median(cvs)) if cvs else float("nan"),
    }


def _run_model(name: str, model_dir: Path, args: argparse.Namespace) -> dict:
    import soundfile as sf

    import speechattn.recipes.align.pipeline as P

    t0 = time.perf_counter()
    captured: dict[str, Any] = {}
    real = P.align_items

    def spy(model: Any, items: Any, config: Any, **kw: Any) -> Any:
        res = real(model, items, config, **kw)
        if model != "uniform":
            captured["results"] = res
        return res

    with tempfile.TemporaryDirectory() as tmp:
        man = Path(tmp) / "manifest.jsonl"
        _probe_manifest(model_dir, args.utterances, args.seed, man)
        rates = {}
        for line in man.read_text().splitlines():
            row = json.loads(line)
            rates[row["id"]] = row
        P.align_items = spy
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                P.run_align(
                    man,
                    Path(tmp) / "out",
                    checkpoint=model_dir / "aligner.pt",
                    adapt=False,
                    threads=args.threads,
                    progress=False,
                    formats=("json",),
                    log=lambda *a: None,
                )
        finally:
            P.align_items = real
        results = captured["results"]
        tails, durations = [], []
        for res in results:
            wave, sr = sf.read(rates[res.item.id]["path"], dtype="float64", always_2d=True)
            tails.append(tail_silence_s(wave.mean(axis=1), sr))
            durations.append(wave.shape[0] / sr)
    sig = collapse_signals(results, tails, durations, min_count=args.min_count)
    sig["final_loss"] = _final_loss(model_dir)
    sig.update(name=name, model=str(model_dir), seconds=round(time.perf_counter() - t0, 1))
    return sig


def auc(collapsed: list[float], healthy: list[float]) -> float:
    """P(a collapsed model's value > a healthy model's), ties counting half."""
    if not collapsed or not healthy:
        return float("nan")
    wins = sum((c > h) + 0.5 * (c == h) for c in collapsed for h in healthy)
    return wins / (len(collapsed) * len(healthy))


def split_half(a: list[tuple[float, bool]], b: list[tuple[float, bool]]) -> tuple[float, int]:
    """Threshold chosen on ``a`` ((value, collapsed) pairs, higher = collapsed): the midpoint of
    the lowest interval between sorted values that misclassifies the fewest; returns it and the
    number of ``b`` models it misclassifies."""
    vals = sorted({v for v, _ in a})
    cuts = [(x + y) / 2 for x, y in itertools.pairwise(vals)] or vals
    best = min(cuts, key=lambda t: (sum((v > t) != c for v, c in a), t))
    return best, sum((v > best) != c for v, c in b)


def _label(ms: float, collapsed_ms: float, healthy_ms: float) -> bool | None:
    return True if ms > collapsed_ms else False if ms < healthy_ms else None


def _table(args: argparse.Namespace) -> int:
    sig = {p.stem: json.loads(p.read_text()) for p in sorted(Path(args.out).glob("*.json"))}
    err: dict[str, float] = {}
    for name, ev in args.scores:
        rows = json.loads((Path(ev) / "results.json").read_text())["results"]
        v = [r["word_mean_abs_ms"] for r in rows if r["row"] == "candidate"]
        err[name] = float(np.mean(v))
    names = [n for n in err if n in sig]
    missing = [n for n in err if n not in sig]
    if missing:
        print(f"no signals yet for: {', '.join(missing)}", file=sys.stderr)
    head = "| model | held-out ms | class | " + " | ".join(SIGNALS) + " | most stretched |"
    print(head + "\n|" + "---|" * (len(SIGNALS) + 4))
    for n in sorted(names, key=lambda n: err[n]):
        lab = _label(err[n], args.collapsed_ms, args.healthy_ms)
        cls = "collapsed" if lab else "healthy" if lab is False else "-"
        cells = " | ".join(f"{sig[n][s]:.2f}" for s in SIGNALS)
        print(f"| {n} | {err[n]:.2f} | {cls} | {cells} | {sig[n]['max_ratio_phone']} |")
    print(
        "\n| signal | threshold (half A) | half-B errors | AUC (all) | read |\n|---|---:|---:|---:|---|"
    )
    labels = {n: _label(err[n], args.collapsed_ms, args.healthy_ms) for n in names}
    for s in SIGNALS:
        use = [n for n in names if labels[n] is not None and np.isfinite(sig[n][s])]
        a = [(sig[n][s], bool(labels[n])) for n in use if n.startswith(tuple(args.half_a))]
        b = [(sig[n][s], bool(labels[n])) for n in use if not n.startswith(tuple(args.half_a))]
        t, errs = split_half(a, b)
        ar = auc([v for v, c in a + b if c], [v for v, c in a + b if not c])
        read = (
            "separates cleanly"
            if errs == 0 and ar == 1.0
            else "separates with errors"
            if errs <= 2
            else "does not separate"
        )
        print(f"| {s} | {t:.3f} | {errs} of {len(b)} | {ar:.3f} | {read} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: compute signals for ``--model`` entries, then tabulate with ``--scores``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model",
        type=_pair,
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a trained run's ENGINE folder (aligner.pt, corpus/, checkpoints/)",
    )
    ap.add_argument(
        "--scores",
        type=_pair,
        action="append",
        default=[],
        metavar="NAME=EV_DIR",
        help="eval_align_engines.py output folder of the model (labels, table only)",
    )
    ap.add_argument("--out", type=Path, required=True, help="folder for the per-model signals")
    ap.add_argument("--utterances", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-count", type=int, default=20)
    ap.add_argument(
        "--half-a",
        action="append",
        default=[],
        metavar="PREFIX",
        help="names starting with PREFIX form half A (threshold chosen there)",
    )
    ap.add_argument("--collapsed-ms", type=float, default=60.0)
    ap.add_argument("--healthy-ms", type=float, default=35.0)
    args = ap.parse_args(argv)
    if args.utterances < 1:
        ap.error(f"expected --utterances >= 1; found {args.utterances}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, d in args.model:
        model_dir = Path(d)
        if not (model_dir / "aligner.pt").is_file():
            print(f"warning: skipping {name}: no aligner.pt in {model_dir}", file=sys.stderr)
            continue
        sig = _run_model(name, model_dir, args)
        (args.out / f"{name}.json").write_text(json.dumps(sig, indent=1))
        print(json.dumps(sig), flush=True)
    if args.scores:
        if not args.half_a:
            ap.error("expected --half-a PREFIX with --scores")
        return _table(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
