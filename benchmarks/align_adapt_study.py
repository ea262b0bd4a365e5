"""Unsupervised adaptation of the shipped aligner on held-out engines: steps x learning rate, and
the pause decoding (``--pauses``) at each point.

    python benchmarks/align_adapt_study.py --cache runs/adapt_sets --out runs/adapt_study \\
        --engines festival,piper --conditions clean,telephone --utterances 20 \\
        --lrs 3e-4,1e-3,3e-3 --steps 600 --eval-at 0,50,150,300,600

For each engine and condition a test set is synthesized once and cached under ``--cache``
(sentences, degradation and voices as ``eval_align_engines.py``: the same grammar seed, never the
demo's training text, never a reserved voice); a cached set is reused only while its
``settings.json`` (settings, synthesis or degradation code digest, the clean audio's bytes) matches. For each learning rate one adaptation run of
``--steps`` steps starts from the shipped aligner with the adaptation schedule of
``speechattn align`` (warm-up, then a constant learning rate) and no stopping rule; at each step of
``--eval-at`` the corpus is aligned (no labels used) with every ``--pauses`` mode and scored on word
boundaries against the engine's own timings (a measurement only: nothing here feeds back into the
run). The run also records the smoothed training objective and where the stopping rule of
``speechattn align`` (:class:`speechattn.recipes.align.pipeline.AdaptStop`) would have ended it,
so the rule can be scored from the same run. ``--schedule-default`` adds the earlier default
(150 steps, cosine, lr 1e-3) as a "before" row.

Writes ``results.json`` and ``results.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def degrade_code_digest() -> str:
    """A digest of the code that makes a degraded set from the clean one
    (``eval_align_engines.degrade`` and the ``speechattn.data`` modules it calls): a set degraded
    by other code is made again rather than reused."""
    import hashlib
    import inspect

    import speechattn.data as data_pkg
    from eval_align_engines import degrade

    root = Path(data_pkg.__file__).parent
    h = hashlib.sha256(inspect.getsource(degrade).encode())
    for f in (root / "augment.py", root / "audio.py"):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def synth_set(cache: Path, engine: str, condition: str, utterances: int, voices: int) -> Path:
    """The cached test set (manifest path) of one engine and condition.

    A set is reused only when its ``settings.json`` matches: the clean set's records the engine,
    the number of utterances and voices, the sentences' digest and the synthesis code's digest
    (``speaker_loeo.synthesis_code_digest``); a degraded set's records the condition, the clean
    set's audio bytes (``speaker_loeo.audio_digest``) and the degradation code's digest, so a
    clean set synthesised again, or changed code, never meets stale audio."""
    import hashlib

    import soundfile as sf

    from eval_align_engines import CONDITIONS, EVAL_SEED, degrade, eval_sentences
    from speaker_loeo import audio_digest, pool_is_current, synthesis_code_digest
    from speechattn.data.synth import synth_corpus
    from speechattn.data.voices import list_voices

    clean_dir = cache / f"{engine}_{utterances}" / "clean"
    manifest = clean_dir / "manifest.jsonl"
    n_voices = max(1, min(voices, len(list_voices(engines=[engine], installed_only=True))))
    texts = eval_sentences(utterances)
    settings: dict[str, Any] = {
        "engine": engine,
        "utterances": utterances,
        "voices": n_voices,
        "seed": EVAL_SEED,
        "texts": hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16],
        "synthesis_code": synthesis_code_digest(),
    }
    if not pool_is_current(clean_dir, settings, redo="making it again"):
        synth_corpus(
            clean_dir,
            utterances=utterances,
            speakers=n_voices,
            seed=EVAL_SEED,
            texts=texts,
            engines=[engine],
            workers=1,
            progress=False,
        )
        (clean_dir / "settings.json").write_text(json.dumps(settings))
    if condition == "clean":
        return manifest
    cdir = cache / f"{engine}_{utterances}" / condition
    cman = cdir / "manifest.jsonl"
    clean = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    csettings = {
        "condition": condition,
        "clean_audio": audio_digest([clean_dir / rec["path"] for rec in clean]),
        "degrade_code": degrade_code_digest(),
    }
    if pool_is_current(cdir, csettings, redo="making it again"):
        return cman
    (cdir / "wavs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([EVAL_SEED, CONDITIONS.index(condition)])
    out = []
    for i, rec in enumerate(clean):
        wav, sr = sf.read(clean_dir / rec["path"], dtype="float32")
        y, sr2, _ = degrade(wav, int(sr), condition, rng, i)
        sf.write(cdir / rec["path"], y, sr2, subtype="PCM_16")
        out.append(json.dumps(dict(rec, sample_rate=sr2)))
    cman.write_text("\n".join(out) + "\n")
    (cdir / "settings.json").write_text(json.dumps(csettings))
    return cman


def _word_metrics(results: list[Any]) -> dict[str, float | None]:
    errs = []
    for r in results:
        gw = r.item.gt_words
        if gw is None or len(gw) != len(r.words):
            continue
        p = np.array([[a, b] for a, b, _ in r.words], dtype=np.float64).reshape(-1)
        g = np.array([[float(iv[0]), float(iv[1])] for iv in gw], dtype=np.float64).reshape(-1)
        errs.append((p - g) * 1000.0)
    if not errs:
        return {"word_mean_abs_ms": None, "word_within_20ms": None, "word_utts": 0}
    e = np.abs(np.concatenate(errs))
    return {
        "word_mean_abs_ms": float(e.mean()),
        "word_within_20ms": float(np.mean(e <= 20.0) * 100),
        "word_utts": len(errs),
    }


def evaluate(model: Any, items: list[Any], feats: Any, pauses: list[str]) -> dict[str, Any]:
    """Word metrics per pause setting: ``forced``, ``none``, or ``auto:<pause_skip>``."""
    from speechattn.recipes.align.evaluate import align_items

    out = {}
    for spec in pauses:
        mode, _, skip = spec.partition(":")
        res = align_items(model, items, feats, pauses=mode, pause_skip=float(skip or 0.0))
        out[spec] = _word_metrics(res)
        out[spec]["pauses"] = sum(len(r.pauses) for r in res)
    return out


def run_set(
    manifest: Path,
    args: argparse.Namespace,
    pauses: list[str],
    eval_at: list[int],
    save: Any = None,
) -> list[dict[str, Any]]:
    import torch

    import speechattn.recipes.align.pipeline as P
    from speechattn.data.corpus import load_corpus
    from speechattn.recipes.align.data import build_items
    from speechattn.recipes.align.train import TrainConfig, train_aligner

    shipped, symbols, feats, _ = P.load_aligner(None)
    # One aligner's adaptation: the shipped file's first member when it holds an ensemble
    # (`speechattn align` adapts each member the same way, in turn).
    model0 = P._members(shipped)[0]
    if model0 is not shipped:
        print(
            f"    the shipped aligner is an ensemble of {len(P._members(shipped))}: studying its first member"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = build_items(load_corpus(manifest), symbols, feats, voice=P.corpus_voice)
    init = model0.state_dict()
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    base = evaluate(model0, items, feats, pauses)
    rows.append({"lr": 0.0, "step": 0, "schedule": "none", "seconds": 0.0, "scores": base})
    print(f"    step 0: {json.dumps(base)}", flush=True)
    runs: list[tuple[str, float, int]] = [("constant", float(lr), args.steps) for lr in args.lrs]
    if args.schedule_default:
        runs.insert(0, ("cosine", 1e-3, args.default_steps))

    def one(schedule: str, lr: float, steps: int) -> None:
        stop = P.AdaptStop()
        marks = set(eval_at) if schedule == "constant" else {steps}
        held: dict[str, Any] = {}
        t_run = time.perf_counter()
        eval_secs = [0.0]
        stopped: dict[str, Any] = {}

        def probe(model: Any, step: int) -> dict:
            held["model"] = model
            if step not in marks:
                return {}
            te = time.perf_counter()
            sc = evaluate(model, items, feats, pauses)
            eval_secs[0] += time.perf_counter() - te
            rows.append(
                {
                    "lr": lr,
                    "step": step,
                    "schedule": schedule,
                    "seconds": time.perf_counter() - t_run - eval_secs[0],
                    "scores": sc,
                }
            )
            print(f"    {schedule} lr {lr:g} step {step}: {json.dumps(sc)}", flush=True)
            return {}

        losses: list[float] = []

        def watch(history: list[dict]) -> bool:
            losses[:] = [float(h["loss"]) for h in history]
            if not stopped and schedule == "constant" and stop(history):
                stopped.update(
                    step=len(history),
                    seconds=time.perf_counter() - t_run - eval_secs[0],
                    scores=evaluate(held["model"], items, feats, pauses),
                )
                held["model"].train()
            return False  # measure the whole run; the rule is only recorded

        tcfg = TrainConfig(
            steps=steps,
            lr=lr,
            warmup=10,
            seed=args.seed,
            schedule=schedule,
            checkpoint_every=10**9,
        )
        torch.manual_seed(args.seed)
        train_aligner(
            model0.config,
            items,
            tcfg,
            init_state=init,
            progress=False,
            on_eval=probe,
            eval_every=1,
            should_stop=watch,
        )
        rows.append({"lr": lr, "schedule": schedule, "losses": losses})
        if stopped:
            rows.append({"lr": lr, "schedule": schedule, "rule_stop": True, **stopped})
            print(f"    {schedule} lr {lr:g}: the stopping rule fires at {stopped}", flush=True)

    for schedule, lr, steps in runs:
        one(schedule, lr, steps)
        if save is not None:
            save(rows)
    print(f"  set done in {time.perf_counter() - t0:.0f}s", flush=True)
    return rows


def _cell(sc: dict[str, Any] | None) -> str:
    if not sc or sc.get("word_mean_abs_ms") is None:
        return "–"
    return f"{sc['word_mean_abs_ms']:.1f} / {sc['word_within_20ms']:.1f}"


def markdown(records: list[dict[str, Any]], decode: str, steps: list[int]) -> str:
    """Steps x learning rate table (word mean abs ms / % within 20 ms, decoding ``decode``) with
    the stopping rule's step, score and training minutes; then the pause settings per set at
    step 0 and at the rule's stop."""
    sets = list(dict.fromkeys((r["engine"], r["condition"]) for r in records))
    head = " | ".join(f"{k} steps" for k in steps)
    lines = [
        f"| set | schedule, lr | 0 steps | {head} | stopping rule: step, score, min |",
        "|---|---|" + "---:|" * (len(steps) + 2),
    ]
    for eng, cond in sets:
        rs = [r for r in records if r["engine"] == eng and r["condition"] == cond]
        base = next((r for r in rs if r.get("step") == 0 and "scores" in r), None)
        b = _cell(base["scores"].get(decode)) if base else "–"
        runs = list(dict.fromkeys((r["schedule"], r["lr"]) for r in rs if r["schedule"] != "none"))
        for sched, lr in runs:
            mine = [r for r in rs if r["schedule"] == sched and r["lr"] == lr]
            by = {r["step"]: r for r in mine if "scores" in r and not r.get("rule_stop")}
            cells = [_cell(by[k]["scores"].get(decode)) if k in by else "" for k in steps]
            stop = next((r for r in mine if r.get("rule_stop")), None)
            if stop:
                st = f"{stop['step']}, {_cell(stop['scores'].get(decode))}, {stop['seconds'] / 60:.1f}"
            else:
                last = max(by) if by else 0
                st = f"no stop by {last}" if sched == "constant" else "–"
            if sched == "cosine":
                k = max(by) if by else 0
                st = f"(fixed {k} steps, {by[k]['seconds'] / 60:.1f} min)" if by else "–"
            lines.append(
                f"| {eng} {cond} | {sched}, {lr:g} | {b} | " + " | ".join(cells) + f" | {st} |"
            )
    decodes = list(next(r["scores"] for r in records if "scores" in r))
    lines += [
        "",
        "| set | point | " + " | ".join(decodes) + " |",
        "|---|---|" + "---:|" * len(decodes),
    ]
    for eng, cond in sets:
        rs = [r for r in records if r["engine"] == eng and r["condition"] == cond]
        pts = [("0 steps", next((r for r in rs if r.get("step") == 0 and "scores" in r), None))]
        pts += [
            (f"rule stop, lr {r['lr']:g} (step {r['step']})", r) for r in rs if r.get("rule_stop")
        ]
        for name, r in pts:
            if r is None:
                continue
            cells = [
                _cell(r["scores"][d]) + f" ({r['scores'][d].get('pauses', '–')})" for d in decodes
            ]
            lines.append(f"| {eng} {cond} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", default="runs/adapt_sets", help="synthesized sets (reused)")
    ap.add_argument("--engines", default="festival,piper")
    ap.add_argument("--conditions", default="clean,telephone")
    ap.add_argument("--utterances", type=int, default=20)
    ap.add_argument("--voices", type=int, default=4)
    ap.add_argument("--lrs", default="3e-4,1e-3,3e-3")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-at", default="50,100,150,200,300,400,500,600")
    ap.add_argument("--pauses", default="forced,auto:0,auto:3,auto:6")
    ap.add_argument("--schedule-default", action="store_true")
    ap.add_argument("--default-steps", type=int, default=150)
    ap.add_argument("--synth-only", action="store_true")
    ap.add_argument(
        "--table-only", action="store_true", help="only print the tables of --out/results.json"
    )
    ap.add_argument("--decode", default="forced", help="pause setting of the steps table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    args.lrs = [float(x) for x in args.lrs.split(",") if x]
    eval_at = [int(x) for x in args.eval_at.split(",") if x]
    pauses = [p for p in args.pauses.split(",") if p]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache)
    if args.table_only:
        recs = json.loads((out / "results.json").read_text())["records"]
        print(markdown(recs, args.decode, eval_at))
        return 0
    records = []
    t0 = time.perf_counter()
    for engine in [e for e in args.engines.split(",") if e]:
        for cond in [c for c in args.conditions.split(",") if c]:
            man = synth_set(cache, engine, cond, args.utterances, args.voices)
            print(f"[{time.perf_counter() - t0:.0f}s] {engine} / {cond}: {man}", flush=True)
            if args.synth_only:
                continue
            done = list(records)

            def save(
                rows: list[dict[str, Any]], done: list = done, e: str = engine, c: str = cond
            ) -> None:
                now = done + [{"engine": e, "condition": c, **r} for r in rows]
                (out / "results.json").write_text(
                    json.dumps({"argv": sys.argv[1:], "records": now}, indent=1)
                )

            rows = run_set(man, args, pauses, eval_at, save)
            save(rows)
            records.extend({"engine": engine, "condition": cond, **r} for r in rows)
    print(f"done in {time.perf_counter() - t0:.0f}s")
    if records:
        (out / "results.md").write_text(markdown(records, "forced", eval_at) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
