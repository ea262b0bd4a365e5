"""Walk ``speechattn align`` over audio as users have it (rates, channels, formats, bad files).

Writes a small espeak-ng corpus in MFA's layout, one folder per variant holding the same
utterances (``<variant>/utt<k>.<ext>`` + ``.lab``, so the stems repeat across folders):

- ``ref``: 16 kHz mono FLAC (the reference);
- ``wav8k``, ``wav22k``, ``wav44k``, ``wav48k``: WAV at 8 / 22.05 / 44.1 / 48 kHz;
- ``stereo``: 16 kHz WAV with two channels (the second at 0.8 of the first);
- ``ogg``, ``mp3``: Ogg Vorbis and MP3 at 16 kHz;
- controls (added after the first run, to tell reading defects from the aligner's own
  sensitivity): ``wav16k`` (the reference's samples as a 16 kHz WAV: must match exactly) and
  ``gain08`` (the reference at 0.8 of its amplitude, a FLAC: what the stereo mix-down does);
- ``bad``: a zero-byte file, a file that is not audio, a WAV with no samples, 1 s of silence;

runs ``speechattn align CORPUS --no-adapt`` once in a subprocess and prints, per variant, how many
files were aligned and the largest and mean distance of a word end from the reference's end for
the same utterance. ``--long`` also aligns one ~60 s recording on its own and prints its wall time,
peak resident memory and words aligned. ``--layouts`` aligns the same three recordings laid out
as MFA (speaker folders + ``.lab``), LibriSpeech (``*.trans.txt``, FLAC) and a Kaldi data dir
(``wav.scp`` + ``text`` + ``utt2spk``) and lists the alignment files each run wrote;
``--transcripts`` aligns transcripts as users write them (numbers, symbols, quotes, an empty one,
one in Latin-1, one with letters espeak-ng cannot say) and prints the words of each TextGrid.
``--segments`` aligns one ~60 s recording three ways: in one piece (``.lab``), as a Kaldi data dir
with a ``segments`` file of 6 segments, and as an MFA TextGrid transcript with the same 6
intervals on two speaker tiers; it prints each run's wall time, peak resident memory (the child's
own), words aligned, whether every word lies inside its segment, and how far the segmented runs'
word ends are from the one-piece run's.

    OMP_NUM_THREADS=1 python benchmarks/walk_align_inputs.py --out runs/walk_inputs [--long]
        [--layouts] [--transcripts] [--segments]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from speechattn.data.audio import resample
from speechattn.data.synth import synthesize
from speechattn.data.text import normalize_text, written_words

__all__ = ["main"]

SENTENCES = (
    "The cat sat on the mat near the door.",
    "Dr. Smith paid $5 for 10% of the well-known farm.",
    "She doesn't know where the \u201cred\u201d boat went.",
)
SR = 16000


def _variants(wave: np.ndarray) -> dict[str, tuple[str, np.ndarray, int, dict]]:
    """variant -> (extension, samples, rate, soundfile kwargs)."""
    out: dict[str, tuple[str, np.ndarray, int, dict]] = {"ref": ("flac", wave, SR, {})}
    for name, sr in (("wav8k", 8000), ("wav22k", 22050), ("wav44k", 44100), ("wav48k", 48000)):
        out[name] = ("wav", resample(wave, SR, sr), sr, {})
    out["stereo"] = ("wav", np.stack([wave, 0.8 * wave], 1), SR, {})
    out["ogg"] = ("ogg", wave, SR, {"format": "OGG", "subtype": "VORBIS"})
    out["wav16k"] = ("wav", wave, SR, {"subtype": "PCM_16"})
    out["gain08"] = ("flac", 0.8 * wave, SR, {})
    out["mp3"] = ("mp3", wave, SR, {"format": "MP3", "subtype": "MPEG_LAYER_III"})
    return out


def _write_corpus(root: Path) -> None:
    for k, text in enumerate(SENTENCES):
        wave = synthesize(normalize_text(text), sample_rate=SR).waveform
        for name, (ext, data, sr, kw) in _variants(wave).items():
            path = root / name / f"utt{k}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, data, sr, **kw)
            path.with_suffix(".lab").write_text(text, encoding="utf-8")
    bad = root / "bad"
    bad.mkdir()
    (bad / "zero_bytes.wav").write_bytes(b"")
    (bad / "not_audio.wav").write_bytes(b"this is not audio " * 20)
    sf.write(bad / "no_samples.wav", np.zeros(0, np.float32), SR)
    sf.write(bad / "silence.wav", np.zeros(SR, np.float32), SR)
    for p in bad.glob("*.wav"):
        p.with_suffix(".lab").write_text("hello there", encoding="utf-8")


def _align(corpus: Path, out: Path) -> tuple[int, float, float, str]:
    """Run the CLI; (exit status, wall s, peak RSS GiB of the child, its stdout + stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "speechattn", "align", str(corpus), "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "--no-adapt", "--no-progress"], capture_output=True, text=True, env=env, check=False
    )
    wall = time.perf_counter() - t0
    rss_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return proc.returncode, wall, rss_gib, proc.stdout + proc.stderr


def _align_own_rss(corpus: Path, out: Path) -> tuple[int, float, float, str]:
    """:func:`_align` with the peak RSS of this child alone (``os.wait4``), not of all so far."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "speechattn", "align", str(corpus), "--out", str(out)]
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(
            [*cmd, "--no-adapt", "--no-progress"], stdout=f, stderr=subprocess.STDOUT, env=env
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, usage.ru_maxrss / 2**20, log.read_text()


def _long_recording(folder: Path) -> tuple[Path, list[tuple[float, float, str]], float]:
    """~60 s of SENTENCES (0.25 s of silence after each) in ``folder/long.wav``; returns the
    path, each sentence's (start, end, text) and the recording's length (s)."""
    folder.mkdir(parents=True, exist_ok=True)
    waves, spans, seconds, k = [], [], 0.0, 0
    while seconds < 60.0:
        text = SENTENCES[k % len(SENTENCES)]
        wave = synthesize(normalize_text(text), sample_rate=SR).waveform
        spans.append((seconds, seconds + len(wave) / SR, text))
        waves += [wave, np.zeros(SR // 4, np.float32)]
        seconds += (len(wave) + SR // 4) / SR
        k += 1
    path = folder / "long.wav"
    sf.write(path, np.concatenate(waves), SR)
    return path, spans, seconds


def _segments(out: Path, n_segments: int = 6) -> None:
    """The ~60 s recording in one piece, as a Kaldi dir with ``segments``, and as a TextGrid
    transcript (two speaker tiers, alternating), each aligned once."""
    from praatio import textgrid

    root = out / "segments"
    wav, spans, seconds = _long_recording(root / "piece")
    (root / "piece" / "long.lab").write_text(" ".join(t for *_, t in spans), encoding="utf-8")
    bounds = np.linspace(0, len(spans), n_segments + 1).round().astype(int)
    segs = []  # (start, end, text): 0.1 s of the silence around its sentences, at most
    for i in range(n_segments):
        group = spans[bounds[i] : bounds[i + 1]]
        a = max(0.0, group[0][0] - 0.1)
        b = min(seconds, group[-1][1] + 0.1)
        segs.append((round(a, 3), round(b, 3), " ".join(t for *_, t in group)))
    kaldi = root / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text(f"long {wav}\n", encoding="utf-8")
    lines = [f"long-{i + 1} long {a} {b}" for i, (a, b, _) in enumerate(segs)]
    (kaldi / "segments").write_text("\n".join(lines) + "\n", encoding="utf-8")
    text = [f"long-{i + 1} {t}" for i, (_, _, t) in enumerate(segs)]
    (kaldi / "text").write_text("\n".join(text) + "\n", encoding="utf-8")
    grid_dir = root / "textgrid"
    grid_dir.mkdir()
    (grid_dir / "long.wav").symlink_to(wav.resolve())
    grid = textgrid.Textgrid()
    for spk in ("A", "B"):
        entries = [(a, b, t) for i, (a, b, t) in enumerate(segs) if "AB"[i % 2] == spk]
        grid.addTier(textgrid.IntervalTier(spk, entries, 0.0, seconds))
    grid.save(str(grid_dir / "long.TextGrid"), format="long_textgrid", includeBlankSpaces=True)
    expected = [w for *_, t in segs for w, _ in written_words(t)]
    print(f"recording: {seconds:.1f} s, {len(spans)} sentences, {len(expected)} words, segments "
          f"{[(a, b) for a, b, _ in segs]}")  # fmt: skip
    runs: dict[str, list[tuple[float, float, str]]] = {}
    inside: dict[str, bool] = {}
    for name in ("piece", "kaldi", "textgrid"):
        rc, wall, rss, log = _align_own_rss(root / name, root / f"aligned_{name}")
        ali = root / f"aligned_{name}" / "alignments"
        words: list[tuple[float, float, str]] = []
        ok = True
        if name == "piece":
            rec = json.loads((ali / "long.json").read_text(encoding="utf-8"))
            words = [(w["start"], w["end"], w["label"]) for w in rec["words"]]
        elif name == "kaldi":
            for i, (a, b, _) in enumerate(segs):
                rec = json.loads((ali / f"long-{i + 1}.json").read_text(encoding="utf-8"))
                seg = [(w["start"] + a, w["end"] + a, w["label"]) for w in rec["words"]]
                ok &= all(a - 1e-4 <= s and e <= b + 1e-4 for s, e, _ in seg)
                words += seg
        else:
            rec = json.loads((ali / "long.json").read_text(encoding="utf-8"))
            for u in sorted(rec["utterances"], key=lambda u: u["segment"]["start"]):
                a, b = u["segment"]["start"], u["segment"]["end"]
                seg = [(w["start"], w["end"], w["label"]) for w in u["words"]]
                ok &= all(a - 1e-4 <= s and e <= b + 1e-4 for s, e, _ in seg)
                words += seg
        runs[name], inside[name] = words, ok
        as_written = [w for *_, w in words] == expected
        files = sorted(p.relative_to(ali).as_posix() for p in ali.rglob("*.TextGrid"))
        print(f"| {name} | {rc} | {wall:.1f} | {rss:.2f} | {len(words)}/{len(expected)} "
              f"{as_written} | {ok} | {files[:2]}{' ...' if len(files) > 2 else ''} |")  # fmt: skip
        print("\n".join(line for line in log.splitlines() if "warning" in line.lower()))
    for name in ("kaldi", "textgrid"):
        if len(runs[name]) == len(runs["piece"]):
            d = [abs(x[1] - y[1]) * 1000 for x, y in zip(runs[name], runs["piece"])]
            print(f"{name} vs piece word ends: max {max(d):.1f} ms, mean {np.mean(d):.1f} ms, "
                  f"median {np.median(d):.1f} ms")  # fmt: skip


def _word_ends(path: Path) -> tuple[list[str], list[float]]:
    words = json.loads(path.read_text(encoding="utf-8"))["words"]
    return [w["label"] for w in words], [float(w["end"]) for w in words]


TRANSCRIPTS = {
    "numbers": "Dr. Smith paid $5 for 10% of it in 1999.",
    "spaced": "It costs $ 5 and 20 % more.",
    "quotes": "\u201cDon't\u201d, she said \u2014 it's well-known.",
    "empty": "",
    "latin1": "caf\u00e9 au lait",
    "unsayable": "hello \u65e5\u672c world",
}


def _layouts(out: Path) -> None:
    root = out / "layouts"
    waves = [synthesize(normalize_text(t), sample_rate=SR).waveform for t in SENTENCES]
    mfa, libri, kaldi = root / "mfa", root / "librispeech", root / "kaldi"
    chapter = libri / "19" / "198"
    chapter.mkdir(parents=True)
    (kaldi / "wav").mkdir(parents=True)
    listing, scp, text, u2s = [], [], [], []
    for k, (wave, sentence) in enumerate(zip(waves, SENTENCES)):
        spk = f"spk{k % 2}"
        (mfa / spk).mkdir(parents=True, exist_ok=True)
        sf.write(mfa / spk / f"utt{k}.wav", wave, SR)
        (mfa / spk / f"utt{k}.lab").write_text(sentence, encoding="utf-8")
        utt = f"19-198-{k:04d}"
        sf.write(chapter / f"{utt}.flac", wave, SR)
        listing.append(f"{utt} {sentence.upper()}")
        sf.write(kaldi / "wav" / f"{spk}-utt{k}.wav", wave, SR)
        scp.append(f"{spk}-utt{k} wav/{spk}-utt{k}.wav")
        text.append(f"{spk}-utt{k} {sentence}")
        u2s.append(f"{spk}-utt{k} {spk}")
    (chapter / "19-198.trans.txt").write_text("\n".join(listing) + "\n", encoding="utf-8")
    for name, lines in (("wav.scp", scp), ("text", text), ("utt2spk", u2s)):
        (kaldi / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in ("mfa", "librispeech", "kaldi"):
        rc, wall, _, log = _align(root / name, root / f"aligned_{name}")
        ali = root / f"aligned_{name}" / "alignments"
        files = sorted(p.relative_to(ali).as_posix() for p in ali.rglob("*.TextGrid"))
        first = sorted(ali.rglob("*.json"))[:1]
        words = _word_ends(first[0])[0] if first else []
        print(f"{name}: exit {rc}, {wall:.0f} s, {files}; first words {words}")
        print("\n".join(line for line in log.splitlines() if "warning" in line))


def _transcripts(out: Path) -> None:
    root = out / "transcripts"
    root.mkdir(parents=True)
    for name, sentence in TRANSCRIPTS.items():
        wave = synthesize(normalize_text(sentence) or "hello", sample_rate=SR).waveform
        sf.write(root / f"{name}.wav", wave, SR)
        enc = "latin-1" if name == "latin1" else "utf-8"
        (root / f"{name}.lab").write_bytes(sentence.encode(enc))
    rc, wall, _, log = _align(root, out / "aligned_transcripts")
    print(f"transcripts: exit {rc}, {wall:.0f} s")
    print("\n".join(line for line in log.splitlines() if "warning" in line))
    ali = out / "aligned_transcripts" / "alignments"
    for name, sentence in TRANSCRIPTS.items():
        path = ali / f"{name}.json"
        words = _word_ends(path)[0] if path.is_file() else "(skipped)"
        print(f"| {name} | {sentence!r} | {words} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--long", action="store_true", help="also align one ~60 s recording")
    ap.add_argument("--layouts", action="store_true", help="also MFA, LibriSpeech, Kaldi layouts")
    ap.add_argument("--transcripts", action="store_true", help="also transcripts as users write")
    ap.add_argument(
        "--segments", action="store_true", help="also a 60 s recording as Kaldi segments / TextGrid"
    )
    ap.add_argument("--skip-audio", action="store_true", help="leave out the audio variants")
    args = ap.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    if args.layouts:
        _layouts(args.out)
    if args.transcripts:
        _transcripts(args.out)
    if args.segments:
        print("| input | exit | wall (s) | peak RSS (GiB) | words (as written) | inside | files |")
        print("|---|---|---:|---:|---|---|---|")
        _segments(args.out)
    if args.skip_audio:
        return 0
    corpus = args.out / "corpus"
    _write_corpus(corpus)
    rc, wall, _, log = _align(corpus, args.out / "aligned")
    print(f"align exit status {rc}, {wall:.0f} s")
    warned = [line for line in log.splitlines() if "warning" in line or "mono" in line]
    print("\n".join(warned))
    ali = args.out / "aligned" / "alignments"
    print("| variant | aligned | words as written | max word-end distance (ms) | mean (ms) |")
    print("|---|---|---|---:|---:|")
    for name in _variants(np.zeros(SR, np.float32)):
        dists: list[float] = []
        n, as_written = 0, True
        for k, text in enumerate(SENTENCES):
            path = ali / name / f"utt{k}.json"
            if not path.is_file():
                continue
            n += 1
            labels, ends = _word_ends(path)
            _, ref = _word_ends(ali / "ref" / f"utt{k}.json")
            as_written &= labels == [w for w, _ in written_words(text)]
            dists += [abs(a - b) * 1000 for a, b in zip(ends, ref)]
        worst = f"{max(dists):.1f}" if dists else "-"
        mean = f"{np.mean(dists):.1f}" if dists else "-"
        print(f"| {name} | {n}/{len(SENTENCES)} | {as_written} | {worst} | {mean} |")
    bad = sorted(p.name for p in (ali / "bad").glob("*.json")) if (ali / "bad").is_dir() else []
    print(f"bad files aligned (expected none): {bad}")
    if args.long:
        long_dir = args.out / "long"
        _, spans, seconds = _long_recording(long_dir)
        texts = [t for *_, t in spans]
        (long_dir / "long.lab").write_text(" ".join(texts), encoding="utf-8")
        rc, wall, rss, _ = _align(long_dir, args.out / "aligned_long")
        labels, _ = _word_ends(args.out / "aligned_long" / "alignments" / "long.json")
        expected = [w for w, _ in written_words(" ".join(texts))]
        print(
            f"60 s file: {seconds:.1f} s of audio, exit {rc}, {wall:.0f} s wall, peak RSS of the "
            f"children so far {rss:.2f} GiB, {len(labels)}/{len(expected)} words, "
            f"as written: {labels == expected}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
