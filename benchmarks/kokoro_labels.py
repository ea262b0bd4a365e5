"""Kokoro's word labels against its own audio (branch kokfix, RESULTS "kokfix").

``--out FILE.json`` synthesises 12 new sentences per Kokoro voice (``generate_sentences(200,
seed=7)`` less the shipped corpus's, the first 60, voices round-robin) with the engine that
``PYTHONPATH`` selects and records per utterance: the first word's start and the last word's end
minus the energy envelope's first / last 10 ms frame within 35 dB (and 45 dB) of the loudest
(alignkok's ``kok_labels.py`` measure); every gap between words and whether the text has a comma
there; at each labelled pause (gap > 5 ms) the word end / next word start minus the edges of the
silent stretch (35 dB) that overlaps it; at each join without a pause or comma, the label minus
the lowest 5 ms frame of the envelope within +-60 ms. ``--table FILE.json ...`` prints the
RESULTS rows (medians; 10-90% in brackets).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")


def measure(out: str) -> None:
    from speechattn.data.engines import synthesize
    from speechattn.data.synth import generate_sentences

    shipped = set(generate_sentences(1200, seed=0))
    texts = [s for s in generate_sentences(200, seed=7) if s not in shipped][:60]
    rows = []
    t0 = time.perf_counter()
    for k, text in enumerate(texts):
        v = VOICES[k % 5]
        r = synthesize(text, f"kokoro:{v}")
        x = np.asarray(r.waveform, dtype=np.float64)
        sr = r.sample_rate
        hop = sr // 100
        db = 10 * np.log10((x[: len(x) // hop * hop].reshape(-1, hop) ** 2).mean(1) + 1e-12)
        loud = db > db.max() - 35
        act = np.nonzero(loud)[0]
        act45 = np.nonzero(db > db.max() - 45)[0]
        w = [(a.start, a.end, a.label) for a in r.words]
        low, pos, spans = text.lower(), 0, []
        for _, _, lab in w:
            i = low.find(lab.lower(), pos)
            spans.append((i, i + len(lab)))
            pos = max(pos, i + len(lab))
        comma = [
            spans[i][0] >= 0 and spans[i + 1][0] >= 0 and "," in text[spans[i][1] : spans[i + 1][0]]
            for i in range(len(w) - 1)
        ]
        gaps = [w[i + 1][0] - w[i][1] for i in range(len(w) - 1)]
        edges = []
        for i, g in enumerate(gaps):
            if g > 0.005:
                a, b = int(w[i][1] * 100), int(w[i + 1][0] * 100)
                mid = [j for j in range(a, min(max(b, a + 1), len(loud))) if not loud[j]]
                if mid:
                    j0 = j1 = mid[0]
                    while j0 - 1 >= 0 and not loud[j0 - 1]:
                        j0 -= 1
                    while j1 + 1 < len(loud) and not loud[j1 + 1]:
                        j1 += 1
                    edges.append((w[i][1] - j0 * 0.01, w[i + 1][0] - (j1 + 1) * 0.01))
        h5 = sr // 200
        e5 = 10 * np.log10((x[: len(x) // h5 * h5].reshape(-1, h5) ** 2).mean(1) + 1e-12)
        dips = []
        for i, g in enumerate(gaps):
            if g <= 0.005 and not comma[i]:
                c = round(w[i][1] * 200)
                lo, hi = max(c - 12, 0), min(c + 13, len(e5))
                if hi - lo > 2:
                    dips.append(w[i][1] - (lo + int(np.argmin(e5[lo:hi])) + 0.5) * 0.005)
        rows.append(
            {
                "voice": v,
                "text": text,
                "seconds": len(x) / sr,
                "on": w[0][0] - act[0] * 0.01,
                "off": w[-1][1] - (act[-1] + 1) * 0.01,
                "on45": w[0][0] - act45[0] * 0.01,
                "off45": w[-1][1] - (act45[-1] + 1) * 0.01,
                "gaps": gaps,
                "comma": comma,
                "edges": edges,
                "dips": dips,
                "words": w,
            }
        )
    print(f"{len(rows)} utterances, {time.perf_counter() - t0:.0f} s")
    with open(out, "w") as f:
        json.dump(rows, f)


def table(paths: list[str]) -> None:
    print(
        "| voice (utts) | first start - onset | last end - offset | 45 dB: first / last "
        "| pauses at commas | pauses elsewhere | pause median | pause edges: end / start "
        "| inner joins - dip: signed / abs | audio s |"
    )
    for path in paths:
        with open(path) as f:
            rows = json.load(f)
        print(path)
        for v in (None, *VOICES):
            R = [r for r in rows if v is None or r["voice"] == v]
            on, off, on45, off45 = (
                np.array([r[key] for r in R]) * 1000 for key in ("on", "off", "on45", "off45")
            )
            g = np.array([x for r in R for x in r["gaps"]]) * 1000
            c = np.array([x for r in R for x in r["comma"]], bool)
            pauses = g[g > 5]
            e = np.array([x for r in R for x in r["edges"]]).reshape(-1, 2) * 1000
            d = np.array([x for r in R for x in r["dips"]]) * 1000
            ed = (
                f"{np.median(np.abs(e[:, 0])):.0f} / {np.median(np.abs(e[:, 1])):.0f} (n={len(e)})"
                if len(e)
                else "-"
            )
            pct = lambda a: f"{np.percentile(a, 10):+.0f}..{np.percentile(a, 90):+.0f}"  # noqa: E731
            print(
                f"| {v or 'all'} ({len(R)}) | {np.median(on):+.0f} ({pct(on)}) "
                f"| {np.median(off):+.0f} ({pct(off)}) "
                f"| {np.median(on45):+.0f} / {np.median(off45):+.0f} "
                f"| {(g[c] > 5).sum()} of {c.sum()} | {(g[~c] > 5).sum()} of {(~c).sum()} "
                f"| {np.median(pauses) if len(pauses) else 0:.0f} | {ed} "
                f"| {np.median(d):+.0f} / {np.median(np.abs(d)):.0f} (n={len(d)}) "
                f"| {np.mean([r['seconds'] for r in R]):.2f} |"
            )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="synthesise and write the measurements here (JSON)")
    ap.add_argument("--table", nargs="+", help="print the table rows of these JSON files")
    args = ap.parse_args()
    if args.out:
        measure(args.out)
    if args.table:
        table(args.table)
