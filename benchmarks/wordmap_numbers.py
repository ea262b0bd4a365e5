"""Word scoring of transcripts with numbers and symbols (branch ``wordmap``).

Six transcripts kept as written (``It was 1999.``, ``$5``, ``Dr.``, ``10%``, ``well-known``, ``7``
and one without any), each spoken by espeak-ng ``en-us`` from its normalised text, as
``speechattn data synth`` does, so the truth is in spoken words (``one thousand nine hundred
ninety nine``). Scores the uniform aligner (no model: the scorer is what is tested) and the
pocketsphinx peer; prints which utterances are word-scored, with the words pocketsphinx had to
pronounce with espeak-ng. Run it with main's code and this branch's (``PYTHONPATH``).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/wordmap_numbers.py --out runs/numbers
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from speechattn.data.corpus import Utterance
from speechattn.data.synth import synthesize
from speechattn.data.text import normalize_text
from speechattn.recipes.align.data import FeatureConfig, build_items, new_symbol_table
from speechattn.recipes.align.evaluate import align_items, score
from speechattn.recipes.align.peers import pocketsphinx_metrics

__all__ = ["TEXTS", "main"]

TEXTS = (
    "It was 1999.",
    "He paid $5 for the bread.",
    "Dr. Smith won 10% more votes.",
    "The 3 dogs ran home.",
    "A well-known man came at 7.",
    "The quiet river ran past the mill.",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the wav files")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    utts = []
    for i, text in enumerate(TEXTS):
        res = synthesize(normalize_text(text), voice="en-us")
        path = args.out / f"u{i}.wav"
        sf.write(path, np.asarray(res.waveform, dtype=np.float32), res.sample_rate)
        utts.append(Utterance(f"u{i}", path, text, "en-us", list(res.words), list(res.phones)))
        print(f"u{i} {text!r}: truth {[w.label for w in res.words]}")
    feats = FeatureConfig()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        items = build_items(utts, new_symbol_table(), feats, grow_symbols=True)
        results = align_items("uniform", items, feats)
        m = score(results)
        pm = pocketsphinx_metrics(items, {u.id: u.audio_path for u in utts})
    for note in said:
        if "left out" in str(note.message):
            print(f"warning: {note.message}")

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    print("| row | utterances word-scored | word mean abs (ms) | words pocketsphinx looked up |")
    print("|---|---|---:|---|")
    print(
        f"| uniform | {m.extra.get('word_utterances', 0)} of {len(items)} | "
        f"{f(m.word_mean_abs_ms)} | |"
    )
    print(
        f"| pocketsphinx peer | {pm.extra.get('word_utterances', 0)} of {len(items)} | "
        f"{f(pm.word_mean_abs_ms)} | {pm.extra['added_words']} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
