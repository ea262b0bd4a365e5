"""Leave-one-engine-out aligners: one SMA aligner per held-out engine, trained without it.

    python benchmarks/train_align_loeo.py --out runs/loeo --hold-out festival,piper
    python benchmarks/eval_align_engines.py --engines espeak,festival,piper \\
        --rows unsupervised,uniform --conditions clean,telephone \\
        --checkpoint festival=runs/loeo/festival/aligner.pt \\
        --checkpoint piper=runs/loeo/piper/aligner.pt --out runs/eval_loeo

One multi-engine corpus is synthesized once (``--out/corpus``: ``speechattn data synth`` with
``--engines``, commercial-licence voices only, never a reserved voice, the demo's sentence seed, so
none of ``eval_align_engines.py``'s sentences) and cached; for each held-out engine the utterances
of the other engines train an aligner through the demo's own training path
(:func:`speechattn.recipes.align.pipeline.run_demo`, SMA only, no held-out voices, 60 held-out
sentences), written to ``--out/<engine>/aligner.pt``. Learning uses (audio, text) only; the
engines' timings score, never train. ``--augment`` / ``--band-mask`` as in ``speechattn demo``.
About 10 minutes per model on 2 shared CPU cores (1000 steps).

A seed that looks collapsed is NOT trained again unless ``--collapse-retries N`` (the demo's
default is 1): seed studies measure each seed as trained.

``--lr``, ``--warmup``, ``--batching``, ``--word-silences``, ``--prior-warmup`` and
``--symbol-order`` set those training options of ``DemoConfig`` (defaults: the recipe's). ``--train-seed N`` trains another
seed on the same corpus (``DemoConfig.train_seed``: the held-out
split, the channel copies and training). ``--add MANIFEST`` (repeatable) appends another corpus's
utterances (e.g. ``speechattn data synth --engines kokoro``) to every model's training corpus, as
one more engine: ids prefixed with that corpus's folder name, wavs linked into the run's corpus.

Each exported aligner carries its boundary calibration tables (``speechattn align --calibration``),
fitted on its own training utterances' labels (never on the held-out engine). ``--refit
ENGINE=PATH`` instead refits the class tables (``--calibration engines`` and ``consensus``) of an aligner
trained earlier with ENGINE held out, on ``--corpus`` minus ENGINE, and writes a copy to
``--out/<ENGINE>/aligner.pt`` (weights unchanged; about 2 min per model):

    python benchmarks/train_align_loeo.py --out runs/loeo_tables \
        --refit festival=runs/loeo_festival/aligner.pt --corpus runs/loeo/corpus/manifest.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from unittest import mock

ENGINES = ("festival", "rhvoice", "piper", "espeak")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for the corpus and the aligners")
    ap.add_argument("--engines", default=",".join(ENGINES), help="corpus engines, comma list")
    ap.add_argument("--hold-out", default="festival,piper", help="one aligner per engine here")
    ap.add_argument("--utterances", type=int, default=1200)
    ap.add_argument("--voices", type=int, default=12)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--train-seed", type=int, default=None, help="DemoConfig.train_seed (default: seed 0)"
    )
    ap.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="MANIFEST",
        help="another corpus whose utterances every model also trains on (repeatable)",
    )
    ap.add_argument(
        "--collapse-retries",
        type=int,
        default=0,
        help="restarts of a seed that looks collapsed (speechattn demo --collapse-retries; "
        "default 0 here: a seed study measures each seed as trained, as every LOEO figure in "
        "benchmarks/RESULTS.md before the `retrain` section was)",
    )
    ap.add_argument(
        "--collapse-check-at",
        type=int,
        default=None,
        metavar="STEP",
        help="the early collapse check at that step (speechattn demo --collapse-check-at; "
        "default: off)",
    )
    ap.add_argument("--lr", type=float, default=None, help="DemoConfig.lr (default 2e-3)")
    ap.add_argument(
        "--warmup", type=int, default=None, help="DemoConfig.warmup: lr warm-up steps (default 30)"
    )
    ap.add_argument(
        "--batching",
        default=None,
        help="DemoConfig.batching: 'length' (default) or 'balanced' (each engine an equal share)",
    )
    ap.add_argument(
        "--prior-warmup",
        type=int,
        default=None,
        help="DemoConfig.prior_warmup: steps over which the token scores ramp in beside the prior",
    )
    ap.add_argument(
        "--word-silences",
        action="store_true",
        help="DemoConfig.word_silences: a pause token between every two words in training",
    )
    ap.add_argument(
        "--symbol-order",
        choices=("corpus", "sorted"),
        default=None,
        help="DemoConfig.symbol_order: phone ids in corpus order (default) or sorted by string",
    )
    ap.add_argument(
        "--emission",
        choices=("posterior", "dual", "scaled"),
        default=None,
        help="DemoConfig.emission: the SMA aligner's emission (default 'posterior'; 'dual': "
        "dual softmax; 'scaled': posterior over the token's mean posterior)",
    )
    ap.add_argument("--no-augment", action="store_true", help="no channel-augmented copies")
    ap.add_argument("--no-band-mask", action="store_true", help="the old front end")
    ap.add_argument(
        "--refit",
        action="append",
        default=[],
        metavar="ENGINE=PATH",
        help="refit the engine-balanced calibration table of an aligner trained without ENGINE "
        "(repeatable; no training)",
    )
    ap.add_argument("--corpus", default=None, help="with --refit: the training corpus manifest")
    args = ap.parse_args(argv)
    if args.refit:
        if not args.corpus:
            ap.error("--refit needs --corpus (the manifest the aligners were trained on)")
        for spec in args.refit:
            held, sep, path = spec.partition("=")
            if not sep or not Path(path).is_file():
                ap.error(f"--refit {spec}: expected ENGINE=PATH of an aligner file")
            dest = Path(args.out) / held / "aligner.pt"
            table = refit_engine_offsets(Path(path), Path(args.corpus), held, dest, args.threads)
            print(f"{held} held out: {table} -> {dest}")
        return 0

    import speechattn.recipes.align.peers as peers
    from speechattn.data.synth import synth_corpus
    from speechattn.recipes.align.outputs import RUN_RECORD, prepare_output
    from speechattn.recipes.align.pipeline import DemoConfig, demo_record, run_demo

    out = Path(args.out)
    engines = [e for e in args.engines.split(",") if e]
    corpus = out / "corpus"
    manifest = corpus / "manifest.jsonl"
    if not manifest.exists():
        synth_corpus(
            corpus,
            utterances=args.utterances,
            speakers=args.voices,
            seed=0,
            engines=engines,
            commercial_only=True,
            workers=max(1, args.threads),
        )
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    extra: list[tuple[Path, str]] = []  # (wavs folder, its name in the run's corpus)
    for spec in args.add:
        try:
            more, wavs, name = added_utterances(Path(spec))
        except ValueError as exc:
            ap.error(f"--add {spec}: {exc}")
        clash = {x["id"] for x in lines} & {x["id"] for x in more}
        if clash:
            ap.error(f"--add {spec}: expected new utterance ids; found {sorted(clash)[:3]} again")
        lines += more
        extra.append((wavs, name))
    for held in [e for e in args.hold_out.split(",") if e]:
        keep = [x for x in lines if x["engine"] != held]
        cfg = dataclasses.replace(
            DemoConfig(),
            utterances=len(keep),
            speakers=len({x["voice"] for x in keep}),
            held_out_voices=0,
            steps=args.steps,
            kinds=("sma",),
            eval_every=0,
            threads=args.threads,
            engines=tuple(sorted({x["engine"] for x in keep})),
            commercial_only=True,
            augment=not args.no_augment,
            band_mask=not args.no_band_mask,
            train_seed=args.train_seed,
        )
        training = {
            "lr": args.lr,
            "warmup": args.warmup,
            "batching": args.batching,
            "word_silences": args.word_silences or None,
            "prior_warmup": args.prior_warmup,
            "symbol_order": args.symbol_order,
            "emission": args.emission,
        }
        cfg = dataclasses.replace(cfg, **{k: v for k, v in training.items() if v is not None})
        run = out / held
        if not (run / RUN_RECORD).exists():  # the run's corpus: the cached files minus `held`
            record = {
                k: v
                for k, v in demo_record(cfg).items()
                if k not in ("threads", "max_seconds_per_aligner", "eval_every", "steps")
            }
            prepare_output(run, record, overwrite=False, extra_dirs=("corpus",))
            (run / "corpus").mkdir(parents=True, exist_ok=True)
            os.symlink((corpus / "wavs").resolve(), run / "corpus" / "wavs")
            for wavs, name in extra:
                os.symlink(wavs, run / "corpus" / name)
            (run / "corpus" / "manifest.jsonl").write_text(
                "".join(json.dumps(x) + "\n" for x in keep)
            )
        # pocketsphinx's row is not needed to train; patched for this call only (a module-wide
        # assignment leaked into the caller's process: other code then saw it as not installed).
        with mock.patch.object(peers, "pocketsphinx_available", lambda: False):
            res = run_demo(
                run,
                cfg,
                export=run / "aligner.pt",
                progress=False,
                collapse_retries=args.collapse_retries,
                collapse_check_at=args.collapse_check_at,
            )
        print(f"{held} held out: {res['summary']}")
    return 0


def added_utterances(manifest: Path) -> tuple[list[dict], Path, str]:
    """The lines of another corpus's ``manifest`` made to live in a run's corpus folder.

    Each id gets the corpus folder's name as a prefix (``<tag>-<id>``) and each ``wavs/X`` path
    becomes ``wavs_<tag>/X``, the name under which the run's corpus links that corpus's wavs.

    Returns:
        (lines, the corpus's wavs folder resolved, the link's name ``wavs_<tag>``).

    Raises:
        ValueError: no such file, a line that is not JSON or lacks ``id`` / ``path``, a path not
            under ``wavs/``, or no utterances.
    """
    if not manifest.is_file():
        raise ValueError(f"expected a corpus manifest.jsonl; found no file {manifest}")
    tag = manifest.resolve().parent.name
    name = f"wavs_{tag}"
    out = []
    for n, raw in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            x = json.loads(raw)
            path = Path(x["path"])
            x["id"] = f"{tag}-{x['id']}"
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(
                f"expected JSON lines with 'id' and 'path'; found line {n}: {raw[:60]!r} ({exc!r})"
            ) from None
        if len(path.parts) < 2 or path.parts[0] != "wavs":
            raise ValueError(f"expected paths under wavs/; found {x['path']!r} on line {n}")
        x["path"] = str(Path(name, *path.parts[1:]))
        out.append(x)
    if not out:
        raise ValueError(f"expected utterances; found an empty manifest {manifest}")
    return out, (manifest.parent / "wavs").resolve(), name


def refit_engine_offsets(
    aligner: Path, manifest: Path, held: str, dest: Path, threads: int = 1
) -> dict[str, float]:
    """Fit the engine-balanced class table of ``aligner`` on ``manifest`` minus engine ``held``
    (decoded as ``speechattn align`` decodes) and save a copy with it to ``dest``."""
    import tempfile
    import warnings

    import torch

    from speechattn.data.corpus import load_corpus
    from speechattn.recipes.align.calibrate import fit_class_offsets
    from speechattn.recipes.align.data import build_items
    from speechattn.recipes.align.evaluate import align_items
    from speechattn.recipes.align.pauses import DEFAULT_MIN_PAUSE_S, min_pause_frames
    from speechattn.recipes.align.pipeline import corpus_voice, load_aligner, speaker_engine
    from speechattn.recipes.align.train import save_checkpoint

    torch.set_num_threads(max(1, threads))
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    keep = [x for x in lines if x["engine"] != held]
    model, symbols, feats, _ = load_aligner(aligner)
    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "manifest.jsonl"
        sub.write_text(
            "".join(
                json.dumps(dict(x, path=str((manifest.parent / x["path"]).resolve()))) + "\n"
                for x in keep
            )
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            items = build_items(load_corpus(sub), symbols, feats, voice=corpus_voice)
    frames = min_pause_frames(DEFAULT_MIN_PAUSE_S, feats.frame_s)
    res = align_items(model, items, feats, pauses="auto", min_pause_frames=frames)
    groups = [speaker_engine(it.speaker) for it in items]
    table = fit_class_offsets(res, groups)
    consensus = fit_class_offsets(res, groups, combine="consensus")
    ck = torch.load(aligner, map_location="cpu", weights_only=True)
    ck.setdefault("info", {})["engine_offsets"] = table.to_dict()
    ck["info"]["consensus_offsets"] = consensus.to_dict()
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dest, ck)
    return {
        f"{name} {k}": round(v * 1000, 1)
        for name, t in (("engines", table), ("consensus", consensus))
        for k, v in t.classes.items()
        if k != "sil|sil"
    }


if __name__ == "__main__":
    raise SystemExit(main())
