"""Reading speech corpora from disk.

Formats (picked by :func:`load_corpus` from what it finds):

- **manifest** ``manifest.jsonl`` (what :func:`speechattn.data.synth.synth_corpus` writes): one
  JSON object per line with ``path`` (relative to the manifest's folder, or absolute), ``text``,
  optional ``id``, ``speaker`` and ``words``/``phones`` as ``[[start_s, end_s, label], ...]``.
- **LJSpeech** ``metadata.csv``: ``id|transcription|normalized transcription`` lines (``|``
  separated, no header), audio in ``wavs/<id>.wav`` beside it; speaker is the folder name.
- **Kaldi data dir** ``wav.scp`` (``<utt> <path>``) + ``text`` (``<utt> <transcript>``),
  optional ``utt2spk``; paths relative to the data dir (or the working directory). A piped
  command in ``wav.scp`` is skipped with a warning. With a ``segments`` file
  (``<utt> <recording> <start> <end>`` lines, seconds; ``end`` -1 = the recording's end, as
  Kaldi's ``extract-segments`` reads it) ``wav.scp`` lists recordings and each segment is an
  utterance cut from its recording (``Utterance.start`` / ``end`` / ``recording``); a line with
  ``end <= start``, an unknown recording, or an end beyond the recording's audio (by more than
  :data:`SEGMENT_END_TOLERANCE_S`; within it the end is the audio's end) is skipped with one
  warning naming the line.
- **LibriSpeech** ``<spk>/<chapter>/<spk>-<chapter>.trans.txt`` (``<utt-id> <TEXT>`` lines) with
  ``<utt-id>.flac`` beside it, found anywhere under the folder; speaker is the id's first part.
- **folder** (the Montreal Forced Aligner's layout) of audio (``.wav``, ``.flac``, ``.ogg``,
  ``.mp3``; searched recursively) each with a same-stem transcript, ``.lab`` (MFA's) or
  ``.txt``; speaker is the audio file's parent folder name. When a file has both, and the two
  say the same (whitespace aside) that text is used; when they differ the file is skipped with a
  warning naming both (no guess which one is right). A ``.TextGrid`` beside the audio (MFA's
  transcripts of long recordings: one interval tier per speaker, one non-empty interval per
  utterance; Praat's long or short text format) gives one utterance per non-empty interval,
  cut from the recording (``Utterance.start`` / ``end`` / ``recording`` / ``tier``; the tier
  name is the speaker); a ``.lab``/``.txt`` beside it wins, as in MFA (the TextGrid is then
  ignored, said once per corpus). A TextGrid that cannot be parsed, has no utterance interval, or
  holds an alignment (tiers ``words``/``phones``) rather than transcripts is skipped with one
  warning naming it; an interval past the audio's end likewise.
- **named corpora**: ``"asterisk"`` = Debian's ``asterisk-core-sounds-en-wav`` prompts with the
  transcripts of ``asterisk-core-sounds-en`` (``/usr/share/asterisk/sounds/en``); see
  :func:`asterisk_available`.

The ids of folder and LibriSpeech entries are their paths relative to the corpus folder
without the extension (``spk1/utt1``), so ``speechattn align`` writes
``OUT/alignments/spk1/utt1.TextGrid``, mirroring the input layout as MFA does. The utterances
of a TextGrid transcript ``spk1/talk.TextGrid`` have ids ``spk1/talk/<tier>/<k>`` (``k`` from
1 in time order within the tier); ``speechattn align`` writes them back into one
``spk1/talk.TextGrid`` per recording, as MFA does. Segments of a Kaldi ``segments`` file keep
their own ids (one alignment file per segment, as for every Kaldi utterance).

Audio of a segment: :class:`UtteranceAudio` reads it by range (PCM, FLAC; other formats: each
recording decoded once and its segments cut).
Transcripts are read as UTF-8 (a byte-order mark is dropped); a file that is not UTF-8 is
skipped with a warning saying so, rather than read with its letters replaced.

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
from collections import Counter
from collections.abc import Callable, Iterable, Sized
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from speechattn.data.synth import Interval

__all__ = [
    "ASTERISK_DIRS",
    "SEGMENT_END_TOLERANCE_S",
    "CorpusError",
    "Utterance",
    "UtteranceAudio",
    "asterisk_available",
    "kaldi_audio_paths",
    "kaldi_table",
    "load_corpus",
    "skipped_lines_note",
    "warn_skipped_lines",
]

_AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3")
# A segment may end this far past its recording's last sample (rounding of the times written):
# its end is then the recording's end. Further is a segment of another (longer) recording.
SEGMENT_END_TOLERANCE_S = 0.05
_TRANSCRIPT_EXTS = (".lab", ".txt")
# A line of HTK / Festival labels ("<start> <end> <label>"); a .lab of such lines is no transcript.
_HTK_LINE = re.compile(r"\d+(\.\d+)?\s+\d+(\.\d+)?\s+\S+")
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
        warnings.warn(
            f"{source}: skipped {_count(bad, 'malformed line')} (named above)", stacklevel=3
        )


def skipped_lines_note(bad: list[str]) -> str:
    """The tail of a "nothing usable" error: how many lines were skipped and the first one."""
    return f" ({_count(bad, 'malformed line')}; the first: {bad[0]})" if bad else ""


def _count(items: Sized, noun: str) -> str:
    """``"1 bad entry"``, ``"2 bad entries"``: the count of ``items`` with ``noun`` agreeing."""
    n = len(items)
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun[:-1]}ies" if noun.endswith("y") else f"{n} {noun}s"


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
        start: for a segment of a longer recording (Kaldi ``segments``, TextGrid transcripts),
            its start in ``audio_path`` (seconds); None: the utterance is the whole file.
        end: the segment's end in ``audio_path`` (seconds, ``> start``); None with ``start``.
        recording: the id of the recording a segment is cut from (Kaldi's recording id, or the
            TextGrid's path relative to the corpus without its extension); None for whole files.
        tier: for an utterance of a TextGrid transcript, the name of its tier (its speaker):
            its alignment goes back into the recording's TextGrid, in that speaker's tiers.
    """

    id: str
    audio_path: Path
    text: str
    speaker: str
    words: list[Interval] | None
    phones: list[Interval] | None
    start: float | None = None
    end: float | None = None
    recording: str | None = None
    tier: str | None = None


class UtteranceAudio:
    """Reads each utterance's waveform ``(n,)`` (mono float32 at ``sample_rate``); a segment of
    a longer recording (``Utterance.start`` / ``end``) without decoding the whole recording per
    segment.

    A segment of a PCM or FLAC recording is read by range
    (:func:`~speechattn.data.audio.load_audio_segment`: its frames plus a resampler margin),
    which costs no more CPU than decoding the recording once and cutting it
    (``benchmarks/bench_segment_read.py``) and holds one segment in memory rather than the
    recording. A recording in a format without a sample-exact seek (Ogg, MP3, formats only
    ffmpeg reads) is decoded (and resampled) whole on the first of its segments and kept until
    the last segment listed in ``utterances`` has been read, so memory holds the recordings whose
    segments are being read (one at a time when the segments of each recording are consecutive).
    A whole-file utterance is read by :func:`~speechattn.data.audio.load_audio` as before.

    Args:
        utterances: the utterances that will be read (the segments of each recording are
            counted, to know when a recording read whole can be let go).
        sample_rate: rate of the waveforms returned (Hz).

    Example::

        read = UtteranceAudio(utts, sample_rate=22050)
        wave = read(utts[0], validate=True, min_samples=1024)
        # naive: load_audio(u.audio_path, ...)[round(u.start * sr) : round(u.end * sr)]
    """

    def __init__(self, utterances: Iterable[Any], *, sample_rate: int) -> None:
        self.sample_rate = int(sample_rate)
        self._left: Counter[Path] = Counter(
            Path(u.audio_path) for u in utterances if getattr(u, "start", None) is not None
        )
        self._cache: dict[Path, Any] = {}
        self._by_range: dict[Path, bool] = {}

    def __call__(self, utt: Any, *, validate: bool = False, min_samples: int = 1) -> Any:
        """The waveform of ``utt`` (a ``torch.Tensor`` ``(n,)``).

        Raises:
            AudioError: the file is missing or cannot be decoded; a segment outside the audio
                (it starts at or after the audio's end, or ends past it by more than
                :data:`SEGMENT_END_TOLERANCE_S`); with ``validate`` also a waveform (the
                segment's, for a segment) too short, not finite or silent
                (:func:`~speechattn.data.audio.check_waveform`); the message names the file
                and, for a segment, its times.
        """
        from speechattn.data.audio import (
            AudioError,
            _seeks_exactly,
            _segment_bounds,
            check_waveform,
            load_audio,
            load_audio_segment,
        )

        start = getattr(utt, "start", None)
        if start is None:
            return load_audio(
                utt.audio_path,
                sample_rate=self.sample_rate,
                validate=validate,
                min_samples=min_samples,
            )
        path = Path(utt.audio_path)
        end = getattr(utt, "end", None)
        end = None if end is None else float(end)
        if path not in self._by_range:
            self._by_range[path] = _seeks_exactly(path)
        if self._by_range[path]:
            return load_audio_segment(
                path,
                start=float(start),
                end=end,
                sample_rate=self.sample_rate,
                validate=validate,
                min_samples=min_samples,
            )
        if path not in self._cache:
            try:
                self._cache[path] = load_audio(path, sample_rate=self.sample_rate)
            except AudioError as exc:  # every segment of it is skipped, the file read once
                self._cache[path] = exc
        whole = self._cache[path]
        self._left[path] -= 1
        if self._left[path] <= 0:
            self._cache.pop(path, None)
        if isinstance(whole, Exception):
            raise whole
        n = int(whole.shape[0])
        where = f"{path} [{float(start):.3f}-{'end' if end is None else f'{end:.3f}'} s]"
        a, b = _segment_bounds(
            float(start),
            end,
            n,
            self.sample_rate,
            n / self.sample_rate,
            SEGMENT_END_TOLERANCE_S,
            where,
        )
        seg = whole[a:b].clone()  # its own storage: the recording can be let go
        if validate:
            check_waveform(seg, where, min_samples=min_samples)
        return seg


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
            f"load_corpus({str(source)!r}) skipped {_count(self.items, 'bad entry')} (named above)",
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


def _read_utf8(path: Path, report: Callable[[str, str], None]) -> str | None:
    """A text file's contents (UTF-8, BOM dropped), or None (and ``report(file, why)``) when it
    is not UTF-8: a transcript in another encoding is skipped, never read with its letters
    replaced."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        report(
            str(path),
            f"not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); re-save it as "
            "UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
        )
        return None


def _read_folder(root: Path, problems: _Problems, check_audio: bool) -> list[Utterance]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    audio_files = [p for p in files if p.suffix.lower() in _AUDIO_EXTS]
    transcripts: dict[Path, list[Path]] = {}
    grids: dict[Path, Path] = {}
    for p in files:
        if p.suffix.lower() in _TRANSCRIPT_EXTS:
            transcripts.setdefault(p.with_suffix(""), []).append(p)
        elif p.suffix.lower() == ".textgrid":
            grids[p.with_suffix("")] = p
    out: list[Utterance] = []
    used: set[Path] = set()
    grids_ignored: list[Path] = []
    for audio in audio_files:
        stem = audio.with_suffix("")
        found = transcripts.get(stem, [])
        if not found and stem in grids:
            rel = stem.relative_to(root).as_posix()
            out.extend(_read_textgrid_transcript(grids[stem], audio, rel, problems))
            continue
        if not found:
            problems.add(
                audio,
                f"no transcript {stem.name}.lab, {stem.name}.txt or {stem.name}.TextGrid beside it",
            )
            continue
        if stem in grids:
            grids_ignored.append(grids[stem])
        used.add(stem)
        read = [_read_utf8(t, problems.add) for t in found]
        texts = [" ".join(t.split()) for t in read if t is not None]
        if len(texts) < len(read):
            continue
        if len(set(texts)) > 1:
            problems.add(
                audio,
                f"two transcripts that differ: {' and '.join(map(str, found))}; keep one",
            )
            continue
        text = texts[0]
        if not text:
            problems.add(found[0], "empty transcript")
            continue
        lines = [line for line in (read[0] or "").splitlines() if line.strip()]
        if len(lines) > 1 and all(_HTK_LINE.fullmatch(line.strip()) for line in lines):
            problems.add(
                found[0],
                "holds time-stamped labels ('<start> <end> <label>' lines, HTK/Festival "
                "style), not a transcript; put the words of the recording in it",
            )
            continue
        if check_audio and _check_audio(audio, problems) is None:
            continue
        rel = stem.relative_to(root).as_posix()
        speaker = audio.parent.name if audio.parent != root else (root.name or "unknown")
        out.append(Utterance(rel, audio.resolve(), text, speaker, None, None))
    for stem, files in sorted(transcripts.items()):
        for txt in files:
            if stem not in used and txt.name not in ("README.txt", "LICENSE.txt"):
                problems.add(txt, f"transcript without a matching {'/'.join(_AUDIO_EXTS)}")
    if grids_ignored and problems.on_error == "warn":
        warnings.warn(
            f"{len(grids_ignored)} TextGrid(s) beside a .lab/.txt transcript of the same "
            f"recording ignored (the .lab/.txt is read, as MFA does), e.g. {grids_ignored[0]}",
            stacklevel=4,
        )
    return out


# Tier names of an alignment (MFA's output, ours), not of utterance transcripts.
_ALIGNMENT_TIERS = ("words", "word", "phones", "phone")


def _read_textgrid_transcript(
    path: Path, audio: Path, rel: str, problems: _Problems
) -> list[Utterance]:
    """The utterances of an MFA TextGrid transcript: one per non-empty interval of each
    interval tier (tier name = speaker), cut from ``audio``; a file that cannot be used is
    recorded in ``problems`` (one entry naming it) and gives none."""
    from praatio import textgrid

    try:
        tg = textgrid.openTextgrid(str(path), includeEmptyIntervals=False, reportingMode="silence")
    except Exception as exc:  # praatio raises many kinds on a malformed file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        problems.add(path, f"could not parse TextGrid ({detail}); fix or remove it")
        return []
    tiers = [t for t in tg.tiers if isinstance(t, textgrid.IntervalTier)]
    names = [t.name for t in tiers]
    if tiers and all(n.rsplit(" - ", 1)[-1].strip().lower() in _ALIGNMENT_TIERS for n in names):
        problems.add(
            path,
            f"holds an alignment (tiers {names}), not transcripts: a TextGrid transcript has one "
            "tier per speaker with one interval per utterance; put the words in a .lab instead",
        )
        return []
    seconds = _check_audio(audio, problems)
    if seconds is None:
        return []
    out: list[Utterance] = []
    for tier in tiers:
        safe = "_".join(tier.name.replace("/", "_").split()) or "tier"
        entries = sorted((float(e.start), float(e.end), str(e.label)) for e in tier.entries)
        k, prev_end = 0, 0.0
        for start, end, label in entries:
            text = " ".join(label.split())
            if not text:
                continue
            k += 1
            where = f"tier {tier.name!r}, interval {start:.3f}-{end:.3f} s"
            if start < prev_end - 1e-9:
                problems.add(path, f"{where} overlaps the interval before it in its tier")
                continue
            prev_end = end
            if end > seconds + SEGMENT_END_TOLERANCE_S:
                problems.add(
                    path, f"{where} ends after the audio ({seconds:.3f} s in {audio.name})"
                )
                continue
            end = min(end, seconds)
            if not end > start:
                problems.add(path, f"{where} is empty (end <= start)")
                continue
            out.append(
                Utterance(
                    f"{rel}/{safe}/{k}",
                    audio.resolve(),
                    text,
                    tier.name,
                    None,
                    None,
                    start=start,
                    end=end,
                    recording=rel,
                    tier=tier.name,
                )
            )
    if not out and not any(e for t in tiers for e in t.entries if str(e.label).strip()):
        problems.add(path, "no utterance interval (every interval of its tiers is empty)")
    return out


def _read_librispeech(
    root: Path, listings: list[Path], problems: _Problems, check_audio: bool
) -> list[Utterance]:
    out: list[Utterance] = []
    listed: set[Path] = set()
    for listing in listings:
        for utt_id, (lineno, text) in kaldi_table(listing, problems.add).items():
            where = f"{listing}:{lineno}"
            audio = next(
                (a for ext in _AUDIO_EXTS if (a := listing.parent / f"{utt_id}{ext}").is_file()),
                None,
            )
            if audio is None:
                problems.add(where, f"no audio {utt_id}.flac beside {listing.name}")
                continue
            listed.add(audio)
            if check_audio and _check_audio(audio, problems, where) is None:
                continue
            rel = audio.with_suffix("").relative_to(root).as_posix()
            speaker = utt_id.split("-", 1)[0]
            out.append(Utterance(rel, audio.resolve(), " ".join(text.split()), speaker, None, None))
    for audio in sorted(root.rglob("*.flac")):
        if audio not in listed:
            problems.add(audio, "not listed in a *.trans.txt beside it (no transcript)")
    return out


def kaldi_table(path: Path, report: Callable[[str, str], None]) -> dict[str, tuple[int, str]]:
    """``key -> (line number, value)`` of a Kaldi table (``<key> <value>`` lines).

    Malformed lines and repeated keys are passed to ``report(where, message)`` (``where`` is
    ``"<file>:<line>"``) and left out; the first entry of a key is kept. A file that is not
    UTF-8 is reported (``where`` is the file) and gives an empty table.
    """
    table: dict[str, tuple[int, str]] = {}
    contents = _read_utf8(path, report)
    for lineno, line in enumerate((contents or "").splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        where = f"{path}:{lineno}"
        if not value.strip():
            report(where, f"expected '<key> <value>'; found {line.strip()!r}")
            continue
        if key in table:
            report(
                where,
                f"expected each key once; found {key!r} again (first on line "
                f"{table[key][0]}, which is kept)",
            )
            continue
        table[key] = (lineno, value.strip())
    return table


def kaldi_audio_paths(
    root: Path,
    report: Callable[[str, str], None],
    *,
    segments: bool = False,
    piped: set[str] | None = None,
) -> dict[str, tuple[int, Path]]:
    """The audio files of a Kaldi data dir: ``utt -> (line of wav.scp, absolute path)``.

    Paths are relative to the data dir when a file is there, else to the working directory. A
    piped command (``... |``) is passed to ``report(where, message)`` and left out (only file
    paths are read); its key is added to ``piped`` when given, so that a caller does not name
    the same utterance again (as one with a transcript but no audio). ``segments=True``: the
    caller reads the data dir's ``segments`` file itself (the keys are then recording ids).

    Raises:
        CorpusError: the data dir has a ``segments`` file and ``segments`` is False (the
            caller cannot use it: cut the segments into files and list those in ``wav.scp``).
    """
    if (root / "segments").is_file() and not segments:
        raise CorpusError(
            root / "segments",
            "Kaldi segments are not supported; cut the segments into files (e.g. with "
            "`extract-segments`) and list those in wav.scp.",
        )
    scp = root / "wav.scp"
    out: dict[str, tuple[int, Path]] = {}
    for utt, (lineno, where) in sorted(kaldi_table(scp, report).items()):
        if where.endswith("|"):
            report(
                f"{scp}:{lineno}",
                f"expected a file path for utterance {utt!r}; found a piped command (only "
                "file paths are supported: write the audio to files first)",
            )
            if piped is not None:
                piped.add(utt)
            continue
        p = Path(where)
        if not p.is_absolute():
            p = root / p if (root / p).exists() else Path.cwd() / p
        out[utt] = (lineno, p.resolve())
    return out


def _read_kaldi(root: Path, problems: _Problems, check_audio: bool) -> list[Utterance]:
    if not (root / "text").is_file():
        raise CorpusError(
            root,
            "a Kaldi data dir needs 'text' (<utt> <transcript> lines) beside wav.scp for alignment",
        )
    piped: set[str] = set()  # named once, by kaldi_audio_paths: not again below
    audio = kaldi_audio_paths(root, problems.add, segments=True, piped=piped)
    texts = kaldi_table(root / "text", problems.add)
    u2s = kaldi_table(root / "utt2spk", problems.add) if (root / "utt2spk").is_file() else {}
    if (root / "segments").is_file():
        return _read_kaldi_segments(root, audio, texts, u2s, problems, piped)
    out: list[Utterance] = []
    for utt, (lineno, path) in audio.items():
        where = f"{root / 'wav.scp'}:{lineno}"
        if utt not in texts:
            problems.add(where, f"no transcript for {utt!r} in {root / 'text'}")
            continue
        if check_audio and _check_audio(path, problems, where) is None:
            continue
        speaker = u2s[utt][1] if utt in u2s else utt  # Kaldi's own default: one per utterance
        out.append(Utterance(utt, path, " ".join(texts[utt][1].split()), speaker, None, None))
    for utt, (lineno, _) in sorted(texts.items()):
        if utt not in audio and utt not in piped:
            problems.add(f"{root / 'text'}:{lineno}", f"no audio for {utt!r} in wav.scp")
    return out


def _read_kaldi_segments(
    root: Path,
    audio: dict[str, tuple[int, Path]],
    texts: dict[str, tuple[int, str]],
    u2s: dict[str, tuple[int, str]],
    problems: _Problems,
    piped: set[str],
) -> list[Utterance]:
    """The segments of a Kaldi data dir as utterances cut from the recordings of ``wav.scp``
    (``audio``: recording id -> its line and path); one problem per unusable line (a segment of
    a ``piped`` recording is left out silently: its ``wav.scp`` line was named)."""
    seg_file = root / "segments"
    seconds: dict[str, float | None] = {}
    out: list[Utterance] = []
    listed: set[str] = set()
    for lineno, line in enumerate((_read_utf8(seg_file, problems.add) or "").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{seg_file}:{lineno}"
        parts = line.split()
        try:
            if len(parts) != 4:
                raise ValueError
            utt, rec, start, end = parts[0], parts[1], float(parts[2]), float(parts[3])
        except ValueError:
            listed.add(parts[0])  # named here; not again as a text without a segment
            problems.add(
                where,
                f"expected '<utt> <recording> <start> <end>' (seconds); found {line.strip()!r}",
            )
            continue
        if utt in listed:
            problems.add(where, f"expected each segment once; found {utt!r} again (first kept)")
            continue
        listed.add(utt)  # a bad line is named once, here; not again as a text without segment
        if not (start >= 0 and np.isfinite(start)) or not (end > start or end == -1):
            problems.add(where, f"expected 0 <= start < end (or end -1); found {start:g} {end:g}")
            continue
        if rec in piped:
            continue  # the recording is a piped command (named once, above)
        if rec not in audio:
            problems.add(where, f"unknown recording {rec!r} (not in {root / 'wav.scp'})")
            continue
        path = audio[rec][1]
        if rec not in seconds:
            seconds[rec] = _check_audio(path, problems, f"{root / 'wav.scp'}:{audio[rec][0]}")
        total = seconds[rec]
        if total is None:
            continue  # the recording is unusable (named once, above)
        end = total if end == -1 else end
        if end > total + SEGMENT_END_TOLERANCE_S or not start < total:
            problems.add(
                where,
                f"segment {start:g}-{end:g} s ends after the audio of {rec!r} ({total:.3f} s)",
            )
            continue
        if utt not in texts:
            problems.add(where, f"no transcript for {utt!r} in {root / 'text'}")
            continue
        speaker = u2s[utt][1] if utt in u2s else utt
        text = " ".join(texts[utt][1].split())
        out.append(
            Utterance(
                utt,
                path,
                text,
                speaker,
                None,
                None,
                start=start,
                end=min(end, total),
                recording=rec,
            )
        )
    for utt, (lineno, _) in sorted(texts.items()):
        if utt not in listed:
            problems.add(f"{root / 'text'}:{lineno}", f"no segment for {utt!r} in {seg_file}")
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
    """Read a corpus: a manifest.jsonl, an LJSpeech metadata.csv, a Kaldi data dir, a
    LibriSpeech folder, a folder of audio + transcripts, or ``"asterisk"`` (module docstring).

    Args:
        path: a ``*.jsonl`` manifest, a ``metadata.csv``, a folder holding either (manifest
            first), a Kaldi data dir (``wav.scp`` + ``text``, optional ``segments``), a folder
            with LibriSpeech ``*.trans.txt`` listings, a folder of audio + same-stem
            ``.lab``/``.txt`` or ``.TextGrid`` transcripts, or the name ``"asterisk"``.
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
    if p.is_file() and p.name in ("wav.scp", "text") and (p.parent / "wav.scp").is_file():
        p = p.parent  # a Kaldi data dir named by one of its files
    if p.is_dir():
        if (p / "manifest.jsonl").is_file():
            p = p / "manifest.jsonl"
        elif (p / "metadata.csv").is_file():
            p = p / "metadata.csv"
    if p.is_file() and p.suffix == ".jsonl":
        utts = _read_manifest(p, problems, check_audio)
    elif p.is_file() and p.suffix == ".csv":
        utts = _read_ljspeech(p, problems, check_audio)
    elif p.is_dir() and (p / "wav.scp").is_file():
        utts = _read_kaldi(p, problems, check_audio)
    elif p.is_dir() and (listings := sorted(p.rglob("*.trans.txt"))):
        utts = _read_librispeech(p, listings, problems, check_audio)
    elif p.is_dir():
        utts = _read_folder(p, problems, check_audio)
    else:
        raise CorpusError(
            p,
            "expected a manifest .jsonl, a metadata.csv, a Kaldi data dir, a LibriSpeech folder "
            "or a folder of audio + same-stem .lab/.txt/.TextGrid",
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
        raise CorpusError(p, f"no usable utterances found ({_count(problems.items, 'bad entry')})")
    return sorted(unique, key=lambda u: u.id)
