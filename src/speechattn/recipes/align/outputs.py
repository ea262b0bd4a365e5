"""The output folder of ``speechattn align``: one run per folder, never mixed with another.

``OUT/run.json`` records what a run is (corpus fingerprint, symbol table, model config, front
end, seed, starting aligner). A later run in the same folder continues only when its record is
the same; otherwise :func:`prepare_output` refuses with a one-line message naming what differs and
how to start fresh (``--overwrite`` or another ``--out``). ``--overwrite`` deletes the files the
earlier run wrote (and nothing else).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from speechattn._io import write_text_atomic

__all__ = [
    "RUN_RECORD",
    "OutputFolderError",
    "alignment_names",
    "check_output",
    "clear_outputs",
    "corpus_fingerprint",
    "file_digest",
    "prepare_output",
    "remove_stale_alignments",
    "run_differences",
]

RUN_RECORD = "run.json"
# Everything ``speechattn align`` writes into OUT (removed by --overwrite).
_OUTPUT_FILES = (
    RUN_RECORD,
    "aligner.pt",
    "report.html",
    "metrics.json",
    "summary.json",
    "alignments.png",
    "durations.png",
    "curves.png",
)
_OUTPUT_DIRS = ("alignments", "checkpoints")
ALIGNMENT_SUFFIXES = (".TextGrid", ".json", ".ctm")


def _safe_part(part: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in part)
    return "_" if safe in ("", ".", "..") else safe


def alignment_names(ids: Sequence[str]) -> list[str]:
    """The file name (without suffix) of each utterance's alignment, relative to the
    alignments folder: the id with ``/`` kept as a folder (``spk1/utt1`` ->
    ``spk1/utt1.TextGrid``, the input's layout, as the Montreal Forced Aligner writes it) and
    other characters than letters, digits, ``-_.`` replaced by ``_``. Names are unique: when two
    ids come out the same (``a b`` and ``a_b``), or the same but for case (one file on a
    case-insensitive disk), the later one gets ``~2``, ``~3``, ... with a warning naming both."""
    import warnings

    out: list[str] = []
    taken: dict[str, str] = {}
    for uid in ids:
        base = "/".join(_safe_part(part) for part in str(uid).split("/"))
        name, n = base, 1
        while name.casefold() in taken:
            n += 1
            name = f"{base}~{n}"
        if n > 1:
            warnings.warn(
                f"utterances {taken[base.casefold()]!r} and {uid!r} map to the same alignment "
                f"file name {base!r}; the second is written as {name!r}",
                stacklevel=2,
            )
        taken[name.casefold()] = str(uid)
        out.append(name)
    return out


class OutputFolderError(ValueError):
    """``--out`` holds another run's outputs; the message says what differs and what to do."""


def file_digest(path: Path, *, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def corpus_fingerprint(utterances: Iterable[Any]) -> str:
    """sha256 over each utterance's id, transcript and audio size, and a segment's times
    (order independent)."""
    rows = []
    for u in utterances:
        p = Path(u.audio_path)
        size = p.stat().st_size if p.is_file() else -1
        row = f"{u.id}\t{u.text}\t{size}"
        if getattr(u, "start", None) is not None:  # whole files: the rows as before segments
            row += f"\t{u.start!r}\t{u.end!r}\t{u.tier!r}"
        rows.append(row)
    return hashlib.sha256("\n".join(sorted(rows)).encode("utf-8")).hexdigest()


_LABELS = {
    "corpus": "corpus",
    "symbols": "symbol table",
    "model_config": "model config",
    "features": "front end",
    "seed": "seed",
    "mode": "mode (--from-scratch / adapt / --no-adapt)",
    "init": "starting aligner (--checkpoint)",
}


def run_differences(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names of what differs between two run records (empty: the same run)."""
    keys = [k for k in _LABELS if k in previous or k in current]
    keys += sorted(k for k in {*previous, *current} if k not in _LABELS)
    out = []
    for k in keys:
        if json.dumps(previous.get(k), sort_keys=True) != json.dumps(
            current.get(k), sort_keys=True
        ):
            label = _LABELS.get(k, k)
            if k == "seed":
                label = f"seed ({previous.get(k)} there, {current.get(k)} now)"
            out.append(label)
    return out


def _existing_outputs(out: Path, extra_dirs: Sequence[str] = ()) -> list[Path]:
    found = [out / n for n in _OUTPUT_FILES if (out / n).exists()]
    dirs = (*_OUTPUT_DIRS, *extra_dirs)
    found += [out / d for d in dirs if (out / d).is_dir() and any((out / d).iterdir())]
    return found


def clear_outputs(out: Path, extra_dirs: Sequence[str] = ()) -> list[Path]:
    """Delete what an earlier run wrote into ``out`` (only speechattn's own outputs, plus the
    folders named in ``extra_dirs``)."""
    removed = []
    for p in _existing_outputs(out, extra_dirs):
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
        removed.append(p)
    for d in _OUTPUT_DIRS:
        if (out / d).is_dir() and not any((out / d).iterdir()):
            (out / d).rmdir()
    return removed


def check_output(
    out: Path,
    record: dict[str, Any],
    *,
    overwrite: bool,
    extra_dirs: Sequence[str] = (),
    unknown: Collection[str] = (),
) -> str:
    """The refusal of :func:`prepare_output`, reading ``out`` only (nothing is written or
    removed), so a command can refuse before its heavy work. Returns ``"new"``, ``"resume"`` or
    ``"overwrite"`` (what :func:`prepare_output` will do).

    ``unknown``: fields of the record not known yet (e.g. a symbol table grown while the
    features are computed), left out of the comparison here; :func:`prepare_output` compares
    the whole record later.

    Raises:
        OutputFolderError: ``out`` holds a different run (or outputs without a run record) and
            ``overwrite`` is False.
    """
    out = Path(out)
    existing = _existing_outputs(out, extra_dirs) if out.is_dir() else []
    if not existing:
        return "new"
    if overwrite:
        return "overwrite"
    fresh = "--overwrite (deletes that run's outputs) or choose another --out"
    path = out / RUN_RECORD
    if not path.is_file():
        names = ", ".join(p.name for p in existing[:4])
        raise OutputFolderError(
            f"{out} already holds outputs ({names}) without a {RUN_RECORD} "
            f"saying which run wrote them; start fresh with {fresh}."
        )
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise OutputFolderError(f"{path} is unreadable ({exc}); start fresh with {fresh}.") from exc
    previous = previous if isinstance(previous, dict) else {}
    record = json.loads(json.dumps(record))
    diff = run_differences(
        {k: v for k, v in previous.items() if k not in unknown},
        {k: v for k, v in record.items() if k not in unknown},
    )
    if diff:
        raise OutputFolderError(
            f"{out} holds another run ({', '.join(diff)} differ); refusing to mix the two. "
            f"Start fresh with {fresh}."
        )
    return "resume"


def prepare_output(
    out: Path, record: dict[str, Any], *, overwrite: bool, extra_dirs: Sequence[str] = ()
) -> str:
    """Make ``out`` ready for the run described by ``record``; returns ``"new"``, ``"resume"``
    or ``"overwrite"``. ``extra_dirs``: more output folders of the command (the demo's
    ``corpus``), cleared by ``overwrite`` too.

    Raises:
        OutputFolderError: ``out`` holds a different run (or outputs without a run record) and
            ``overwrite`` is False (:func:`check_output`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = json.loads(json.dumps(record))
    state = check_output(out, record, overwrite=overwrite, extra_dirs=extra_dirs)
    if state == "overwrite":
        clear_outputs(out, extra_dirs)
    write_text_atomic(out / RUN_RECORD, json.dumps(record, indent=1, ensure_ascii=False))
    return state


def remove_stale_alignments(folder: Path, written: Sequence[Path]) -> list[Path]:
    """Delete alignment files in ``folder`` and its subfolders that this run did not write (an
    earlier run's, or a format no longer asked for) so none sits beside the new ones, then the
    subfolders left empty; returns the files removed."""
    keep = {Path(p).resolve() for p in written}
    stale = []
    root = Path(folder)
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix in ALIGNMENT_SUFFIXES and p.resolve() not in keep:
                p.unlink()
                stale.append(p)
        for d in sorted((d for d in root.rglob("*") if d.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
    return stale
