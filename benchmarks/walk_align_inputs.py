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

    OMP_NUM_THREADS=1 python benchmarks/walk_align_inputs.py --out runs/walk_inputs [--long]
        [--layouts] [--transcripts]
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
    ap.add_argument("--skip-audio", action="store_true", help="leave out the audio variants")
    args = ap.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    if args.layouts:
        _layouts(args.out)
    if args.transcripts:
        _transcripts(args.out)
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
        long_dir.mkdir()
        waves, texts, seconds, k = [], [], 0.0, 0
        while seconds < 60.0:
            text = SENTENCES[k % len(SENTENCES)]
            wave = synthesize(normalize_text(text), sample_rate=SR).waveform
            waves += [wave, np.zeros(SR // 4, np.float32)]
            texts.append(text)
            seconds += (len(wave) + SR // 4) / SR
            k += 1
        sf.write(long_dir / "long.wav", np.concatenate(waves), SR)
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
