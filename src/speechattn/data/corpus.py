"""Reading speech corpora from disk.

Formats (picked by :func:`load_corpus` from what it finds):

- **manifest** ``manifest.jsonl`` (what :func:`speechattn.data.synth.synth_corpus` writes): one
  JSON object per line with ``path`` (relative to the manifest's folder, or absolute), ``text``,
  optional ``id``, ``speaker`` and ``words``/``phones`` as ``[[start_s, end_s, label], ...]``.
- **LJSpeech** ``metadata.csv``: ``id|transcription|normalized transcription`` lines (``|``
  separated, no header), audio in ``wavs/<id>.wav`` beside it; speaker is the folder name.
- **folder** of ``*.wav`` / ``*.flac`` (searched recursively) each with a same-stem ``*.txt``
  transcript; speaker is the audio file's parent folder name.
- **named corpora**: ``"asterisk"`` = Debian's ``asterisk-core-sounds-en-wav`` prompts with the
  transcripts of ``asterisk-core-sounds-en`` (``/usr/share/asterisk/sounds/en``); see
  :func:`asterisk_available`.

Bad entries (missing or undecodable audio, empty text, audio without transcript and
transcripts without audio; in manifests also a declared sample rate or duration that the file
does not have, or intervals that run past the audio) are skipped with one warning each naming
the file and the reason (then a one-line count), or raise a
``ValueError`` naming the file with ``on_error="raise"``. Nothing is silently paired
with the wrong text: pairs are matched by exact id/stem only.
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, NamedTuple

from speechattn.data.synth import Interval

__all__ = [
    "ASTERISK_DIRS",
    "CorpusError",
    "Utterance",
    "asterisk_available",
    "load_corpus",
    "skipped_lines_note",
    "warn_skipped_lines",
]

_AUDIO_EXTS = (".wav", ".flac")
# ``en`` is the link asterisk-core-sounds-en adds; the -wav package alone installs the
# recordings under en_US_f_Allison.
ASTERISK_DIRS = (
    Path("/usr/share/asterisk/sounds/en"),
    Path("/usr/share/asterisk/sounds/en_US"),
    Path("/usr/share/asterisk/sounds/en_US_f_Allison"),
)


def warn_skipped_lines(
    source: str | os.PathLike[str], bad: list[str], problems: list[str] | None
) -> None:
    """For a list reader that skips malformed lines: one warning per skipped line (``bad`` holds
    ``"<file>:<line>: expected ...; found ..."``), then one with the count, both attributed to
    the reader's caller; the lines also go to ``problems`` when given."""
    if problems is not None:
        problems.extend(bad)
    for b in bad:
        warnings.warn(f"skipped {b}", stacklevel=3)
    if bad:
        warnings.warn(f"{source}: skipped {len(bad)} malformed lines (named above)", stacklevel=3)


def skipped_lines_note(bad: list[str]) -> str:
    """The tail of a "nothing usable" error: how many lines were skipped and the first one."""
    return f" ({len(bad)} malformed lines; the first: {bad[0]})" if bad else ""


class CorpusError(ValueError):
    """A corpus entry is unusable; ``.path`` names the offending file."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


class Utterance(NamedTuple):
    """One corpus entry.

    Attributes:
        id: unique id (file stem, LJSpeech id or manifest id).
        audio_path: absolute path of the audio file.
        text: transcript (as written in the corpus; see ``speechattn.data.text.normalize_text``).
        speaker: speaker id.
        words: word intervals when the corpus has them (synthetic corpora), else None.
        phones: phone intervals when the corpus has them, else None.
    """

    id: str
    audio_path: Path
    text: str
    speaker: str
    words: list[Interval] | None
    phones: list[Interval] | None


class _Problems:
    def __init__(self, on_error: str) -> None:
        self.on_error = on_error
        self.items: list[str] = []

    def add(self, path: Path | str, message: str, where: str | None = None) -> None:
        """Record (or raise) a bad entry; ``where`` names the manifest line of an audio file."""
        if where is not None:
            message = f"{message} ({where})"
        if self.on_error == "raise":
            raise CorpusError(path, message)
        self.items.append(f"{path}: {message}")

    def report(self, source: Path | str) -> None:
        """With ``on_error="warn"``: one warning per skipped entry naming its file and why, then
        a one-line count."""
        if not self.items or self.on_error != "warn":
            return
        for item in self.items:
            warnings.warn(f"skipped {item}", stacklevel=4)
        warnings.warn(
            f"load_corpus({str(source)!r}) skipped {len(self.items)} bad entries (named above)",
            stacklevel=4,
        )


def _intervals(
    raw: Any, kind: str, problems: _Problems, path: Path, where: str
) -> list[Interval] | None:
    if raw is None:
        return None
    try:
        out = [Interval(float(a), float(b), str(c)) for a, b, c in raw]
    except (TypeError, ValueError):
        problems.add(
            path, f"malformed {kind} intervals (expected [[start, end, label], ...])", where
        )
        return None
    for i, iv in enumerate(out):
        if iv.end < iv.start or (i and iv.start < out[i - 1].start):
            problems.add(path, f"{kind} intervals are not time ordered at index {i}", where)
            return None
    return out


def _check_audio(path: Path, problems: _Problems, where: str | None = None) -> float | None:
    """Seconds of audio in ``path``, or None (and a problem recorded) when unusable."""
    if not path.is_file():
        problems.add(path, "audio file not found", where)
        return None
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:
        problems.add(path, f"could not decode audio ({exc})", where)
        return None
    if info.frames <= 0 or info.samplerate <= 0:
        problems.add(path, "audio file holds no samples", where)
        return None
    return float(info.frames) / float(info.samplerate)


def _check_manifest_consistency(
    rec: dict[str, Any],
    seconds: float,
    words: list[Interval] | None,
    phones: list[Interval] | None,
    audio: Path,
    problems: _Problems,
    where: str,
) -> bool:
    """Catch a manifest line paired with the wrong audio: declared rate/duration, intervals."""
    import soundfile as sf

    declared_sr = rec.get("sample_rate")
    if declared_sr is not None:
        actual = sf.info(str(audio)).samplerate
        if int(declared_sr) != actual:
            problems.add(
                audio,
                f"manifest says sample_rate={declared_sr} but the file is {actual} Hz",
                where,
            )
            return False
    declared = rec.get("duration")
    if declared is not None and abs(float(declared) - seconds) > 0.01:
        problems.add(
            audio,
            f"manifest says duration={declared} s but the file holds {seconds:.3f} s (wrong file?)",
            where,
        )
        return False
    for name, ivs in (("word", words), ("phone", phones)):
        if ivs and ivs[-1].end > seconds + 0.01:
            problems.add(
                audio,
                f"{name} intervals end at {ivs[-1].end:.3f} s, after the audio ({seconds:.3f} s): text and audio mismatched",
                where,
            )
            return False
    return True


def _read_manifest(path: Path, problems: _Problems, check_audio: bool) -> list[Utterance]:
    root = path.parent
    out: list[Utterance] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.add(where, f"not valid JSON ({exc.msg})")
                continue
            if not isinstance(rec, dict) or "path" not in rec or "text" not in rec:
                problems.add(where, "expected an object with 'path' and 'text'")
                continue
            audio = Path(rec["path"])
            audio = audio if audio.is_absolute() else root / audio
            text = str(rec["text"]).strip()
            if not text:
                problems.add(where, "empty text")
                continue
            seconds = _check_audio(audio, problems, where) if check_audio else None
            if check_audio and seconds is None:
                continue
            n_bad = len(problems.items)
            words = _intervals(rec.get("words"), "word", problems, audio, where)
            phones = _intervals(rec.get("phones"), "phone", problems, audio, where)
            if len(problems.items) > n_bad:
                continue  # malformed intervals: never keep a half-described pair
            if seconds is not None and not _check_manifest_consistency(
                rec, seconds, words, phones, audio, problems, where
            ):
                continue
            out.append(
                Utterance(
                    id=str(rec.get("id", audio.stem)),
                    audio_path=audio.resolve(),
                    text=text,
                    speaker=str(rec.get("speaker", "unknown")),
                    words=words,
                    phones=phones,
                )
            )
    return out


def _read_ljspeech(path: Path, problems: _Problems, check_audio: bool) -> list[Utterance]:
    root = path.parent
    speaker = root.name or "ljspeech"
    out: list[Utterance] = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE)
        for lineno, row in enumerate(reader, 1):
            if not row or not any(c.strip() for c in row):
                continue
            where = f"{path}:{lineno}"
            if len(row) < 2:
                problems.add(where, "expected 'id|text[|normalized text]'")
                continue
            utt_id = row[0].strip()
            text = (row[2] if len(row) > 2 and row[2].strip() else row[1]).strip()
            if not text:
                problems.add(where, "empty text")
                continue
            audio = root / "wavs" / f"{utt_id}.wav"
            if not audio.exists() and (root / "wavs" / f"{utt_id}.flac").exists():
                audio = root / "wavs" / f"{utt_id}.flac"
            if check_audio and _check_audio(audio, problems) is None:
                continue
            out.append(Utterance(utt_id, audio.resolve(), text, speaker, None, None))
    return out


def _read_folder(root: Path, problems: _Problems, check_audio: bool) -> list[Utterance]:
    audio_files = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in _AUDIO_EXTS and p.is_file()
    )
    txt_files = {p.with_suffix(""): p for p in root.rglob("*.txt") if p.is_file()}
    out: list[Utterance] = []
    used: set[Path] = set()
    for audio in audio_files:
        stem = audio.with_suffix("")
        txt = txt_files.get(stem)
        if txt is None:
            problems.add(audio, f"no transcript {stem.name}.txt beside it")
            continue
        used.add(stem)
        text = txt.read_text(encoding="utf-8", errors="replace").strip()
        if not text:
            problems.add(txt, "empty transcript")
            continue
        if check_audio and _check_audio(audio, problems) is None:
            continue
        rel = stem.relative_to(root).as_posix()
        speaker = audio.parent.name if audio.parent != root else (root.name or "unknown")
        out.append(Utterance(rel, audio.resolve(), " ".join(text.split()), speaker, None, None))
    for stem, txt in sorted(txt_files.items()):
        if stem not in used and txt.name not in ("README.txt", "LICENSE.txt"):
            problems.add(txt, "transcript without a matching .wav/.flac")
    return out


# ---------------------------------------------------------------------------------------------
# Debian asterisk-core-sounds-en(-wav)

_ASTERISK_LINE = re.compile(r"^([^:;#\s][^:]*?):\s*(.*)$")


def _asterisk_dir() -> Path | None:
    for d in ASTERISK_DIRS:
        if d.is_dir() and any(d.glob("*.wav")):
            return d
    return None


def asterisk_available() -> bool:
    """True when the Debian ``asterisk-core-sounds-en-wav`` prompts are installed."""
    return _asterisk_dir() is not None and _asterisk_transcripts() is not None


def _asterisk_transcripts() -> Path | None:
    for d in ASTERISK_DIRS:
        for name in ("core-sounds-en.txt", "core-sounds-en_US.txt"):
            if (d / name).is_file():
                return d / name
    for base in (
        Path("/usr/share/doc/asterisk-core-sounds-en"),
        Path("/usr/share/asterisk/sounds"),
    ):
        if base.is_dir():
            hits = sorted(base.rglob("core-sounds-en*.txt*"))
            if hits:
                return hits[0]
    return None


def _read_asterisk(problems: _Problems, check_audio: bool) -> list[Utterance]:
    root = _asterisk_dir()
    listing = _asterisk_transcripts()
    if root is None or listing is None:
        missing = " and ".join(
            what
            for what, absent in (
                ("the prompt recordings (asterisk-core-sounds-en-wav)", root is None),
                ("the prompt transcripts (asterisk-core-sounds-en)", listing is None),
            )
            if absent
        )
        raise CorpusError(
            ASTERISK_DIRS[0],
            f"the 'asterisk' corpus needs {missing}, not found: apt-get install "
            "asterisk-core-sounds-en-wav asterisk-core-sounds-en",
        )
    if listing.suffix == ".gz":
        import gzip

        raw = gzip.open(listing, "rt", encoding="utf-8", errors="replace").read()
    else:
        raw = listing.read_text(encoding="utf-8", errors="replace")
    out: list[Utterance] = []
    for line in raw.splitlines():
        m = _ASTERISK_LINE.match(line.strip())
        if m is None:
            continue
        name, text = m.group(1).strip(), m.group(2).strip()
        # drop [tone] notes and (notes) that are not spoken: "(1 second of silence)",
        # 'IAX (note: does not say "2")', "(simple tone sound plays)"
        spoken = " ".join(re.sub(r"\[[^\]]*\]|\([^)]*\)", " ", text).split())
        audio = root / f"{name}.wav"
        if not audio.is_file():
            continue  # transcript of a prompt in another package (e.g. extra sounds)
        if not spoken and text:
            continue  # a tone, a beep or silence, not speech
        text = spoken
        if not text:
            problems.add(audio, "empty transcript")
            continue
        if check_audio and _check_audio(audio, problems) is None:
            continue
        out.append(Utterance(name, audio.resolve(), text, "asterisk", None, None))
    return out


def load_corpus(
    path: str | os.PathLike[str],
    *,
    on_error: str = "warn",
    check_audio: bool = True,
    problems: list[str] | None = None,
) -> list[Utterance]:
    """Read a corpus: a manifest.jsonl, an LJSpeech metadata.csv, a folder, or ``"asterisk"``.

    Args:
        path: a ``*.jsonl`` manifest, a ``metadata.csv``, a folder holding either (manifest
            first), a folder of audio + same-stem ``.txt``, or the name ``"asterisk"``.
        on_error: ``"warn"`` (skip bad entries, one warning each naming the file and the
            reason, then one with the count), ``"skip"``
            (skip silently) or ``"raise"`` (:class:`CorpusError`, a ``ValueError`` naming the
            file, at the first bad entry).
        check_audio: open each audio header (soundfile) to catch missing/corrupt files now
            rather than mid-epoch. The samples themselves are checked when they are read
            (:func:`speechattn.data.audio.load_audio` with ``validate=True``).
        problems: a list that receives one ``"<file>: <reason>"`` line per skipped entry
            (for the caller's summary counts).

    Returns:
        Utterances sorted by id.

    Raises:
        CorpusError: ``path`` does not exist or holds no recognisable corpus, or a bad entry
            with ``on_error="raise"``.
        ValueError: bad ``on_error``.
    """
    if on_error not in ("warn", "skip", "raise"):
        raise ValueError(f"Expected on_error to be 'warn', 'skip' or 'raise'; found {on_error!r}.")
    found = _Problems(on_error)
    try:
        return _load_corpus(path, found, check_audio)
    finally:
        if problems is not None:
            problems.extend(found.items)


def _load_corpus(
    path: str | os.PathLike[str], problems: _Problems, check_audio: bool
) -> list[Utterance]:
    if str(path) == "asterisk":
        utts = _read_asterisk(problems, check_audio)
        problems.report(str(path))
        return sorted(utts, key=lambda u: u.id)
    p = Path(path)
    if not p.exists():
        raise CorpusError(p, "corpus path does not exist")
    if p.is_dir():
        if (p / "manifest.jsonl").is_file():
            p = p / "manifest.jsonl"
        elif (p / "metadata.csv").is_file():
            p = p / "metadata.csv"
    if p.is_file() and p.suffix == ".jsonl":
        utts = _read_manifest(p, problems, check_audio)
    elif p.is_file() and p.suffix == ".csv":
        utts = _read_ljspeech(p, problems, check_audio)
    elif p.is_dir():
        utts = _read_folder(p, problems, check_audio)
    else:
        raise CorpusError(
            p, "expected a manifest .jsonl, a metadata.csv or a folder of audio + .txt"
        )
    seen: set[str] = set()
    unique: list[Utterance] = []
    for u in utts:
        if u.id in seen:
            problems.add(u.audio_path, f"duplicate utterance id {u.id!r}")
            continue
        seen.add(u.id)
        unique.append(u)
    problems.report(p)
    if not unique:
        raise CorpusError(p, f"no usable utterances found ({len(problems.items)} bad entries)")
    return sorted(unique, key=lambda u: u.id)
