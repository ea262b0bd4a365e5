"""Which manifest utterances the word scorer compares, before and after written words were
mapped to spoken truth (branch ``wordmap``). Text and labels only: no audio, no scores.

For every ``manifest.jsonl`` given (or found under the folders given), each utterance with word
truth is put in one class, with the aligner's words taken as ``written_words(text)``:

- ``same``: main at ce6fcf4 compared it (truth count == written words) and ``word_truth`` gives
  exactly the truth's own intervals (the scored figures cannot change);
- ``newly scored``: main left it out; ``word_truth`` maps it (truth in spoken form);
- ``no longer scored``: main compared it word for word, ``word_truth`` refuses it (its labels
  say other words: a count equal by chance);
- ``left out``: neither.

Reserved (evaluation-only) voices are skipped.

Usage::

    python benchmarks/wordmap_manifest_check.py /work/wt/*/runs
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from speechattn.data.synth import Interval
from speechattn.data.text import written_words
from speechattn.recipes.align.data import AlignItem, word_truth

__all__ = ["main"]

RESERVED = ("flite", "kal_diphone", "cmu_us_slt_arctic_hts", ":alan", ":slt", "asterisk")


def _classify(text: str, words: list[list]) -> str:
    import torch

    written = written_words(text)
    truth = [Interval(float(a), float(b), str(w)) for a, b, w in words]
    item = AlignItem(
        id="x",
        speaker="",
        text=text,
        tokens=torch.zeros(0, dtype=torch.int64),
        mel=torch.zeros(0, 1),
        phones=[],
        phone_token_index=[],
        words=[(w, k, k + 1) for k, (w, _) in enumerate(written)],
        num_samples=0,
        gt_words=truth,
        word_spoken=[list(ws) for _, ws in written],
    )
    before = len(truth) == len(written)
    after = word_truth(item)
    if before and after is not None:
        return "same" if after == [(iv.start, iv.end) for iv in truth] else "changed"
    if before:
        return "no longer scored"
    return "newly scored" if after is not None else "left out"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="manifest.jsonl files or folders to search")
    args = ap.parse_args(argv)
    files: list[Path] = []
    for p in map(Path, args.paths):
        files += [p] if p.is_file() else sorted(p.rglob("manifest.jsonl"))
    seen: set[str] = set()
    by_engine: dict[str, Counter] = {}
    examples: dict[str, str] = {}
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            voice = str(rec.get("voice", rec.get("speaker", "")))
            if any(r in voice.lower() for r in RESERVED) or not rec.get("words"):
                continue
            key = json.dumps([rec["text"], rec["words"]])
            if key in seen:
                continue
            seen.add(key)
            engine = voice.split(":")[0] if ":" in voice else "espeak"
            cls = _classify(rec["text"], rec["words"])
            by_engine.setdefault(engine, Counter())[cls] += 1
            examples.setdefault(f"{engine}/{cls}", rec["text"])
    classes = ("same", "changed", "no longer scored", "newly scored", "left out")
    print(f"{len(files)} manifests, {len(seen)} distinct utterances with word truth")
    print("| engine | " + " | ".join(classes) + " |")
    print("|---|" + "---:|" * len(classes))
    for engine, c in sorted(by_engine.items()):
        print(f"| {engine} | " + " | ".join(str(c[k]) for k in classes) + " |")
    for k, text in sorted(examples.items()):
        if not k.endswith("/same"):
            print(f"  e.g. {k}: {text!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
