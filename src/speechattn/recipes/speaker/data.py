"""Speaker corpora, features, pseudo-speakers and trial lists.

Shape legend: ``n`` samples, ``t`` frames, ``m`` mel bins.

Corpora (:func:`load_speaker_corpus` picks the layout from what it finds):

- **VoxCeleb layout**: ``ROOT/<speaker>/<video>/<utt>.wav`` (``id10001/1zcIwhmdeo4/00001.wav``);
  the speaker is the first folder, the id the path relative to ``ROOT``.
- **Kaldi data dir**: ``wav.scp`` (``<utt> <path>``) and ``utt2spk`` (``<utt> <speaker>``);
  paths relative to the data dir (or the working directory). Piped commands and ``segments``
  are not supported (a piped line is skipped with a warning saying so; a ``segments`` file is
  refused).
- **manifest** ``*.jsonl``: one object per line with ``audio`` (or ``path``) relative to the
  manifest's folder, ``speaker``, and optionally ``id``, ``person`` and ``engine``; what
  :func:`speechattn.data.synth.synth_corpus` writes is such a manifest.
- anything else :func:`speechattn.data.corpus.load_corpus` reads (folder of audio + ``.txt``,
  LJSpeech); its speaker field is used.

Two voices of one person are one speaker: when an entry has a ``person`` field, its training
label is the person. Trial lists are VoxCeleb's ``<1|0> <a.wav> <b.wav>`` lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from speechattn._threads import on_one_torch_thread
from speechattn.data.collate import pad_sequence_batch
from speechattn.data.corpus import (
    kaldi_audio_paths,
    kaldi_table,
    skipped_lines_note,
    warn_skipped_lines,
)
from speechattn.recipes.speaker.config import SpeakerConfig

if TYPE_CHECKING:
    from speechattn.data.augment import ChannelAugment

__all__ = [
    "AUDIO_SUFFIXES",
    "Channel",
    "FeatureSet",
    "SpeakerFrontEnd",
    "SpeakerUtterance",
    "Trial",
    "channel_augment",
    "commercial_filter",
    "corpus_fingerprint",
    "feature_extractor",
    "features",
    "formant_shift",
    "load_feature_set",
    "load_speaker_corpus",
    "min_samples",
    "normalise_features",
    "pitch_shift",
    "random_crops",
    "read_trials",
    "speech_frames",
    "speed_perturb",
]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au")


class SpeakerUtterance(NamedTuple):
    """One corpus entry: ``id``, absolute ``audio_path``, ``speaker``, optional ``person`` and
    ``voice`` (``"engine:voice_id"`` of :mod:`speechattn.data.voices`, for synthetic entries)."""

    id: str
    audio_path: Path
    speaker: str
    person: str | None = None
    voice: str | None = None

    @property
    def label(self) -> str:
        """The training identity: the person when known, else the speaker."""
        return self.person if self.person else self.speaker


# ---------------------------------------------------------------------------------------------
# Corpora


def _is_voxceleb(root: Path) -> bool:
    wavs = [p for p in root.glob("*/*/*") if p.suffix.lower() in AUDIO_SUFFIXES]
    return bool(wavs) and not any(root.glob("*.txt")) and not any(root.glob("*/*/*.txt"))


def _read_voxceleb(root: Path) -> list[SpeakerUtterance]:
    out = []
    for p in sorted(root.glob("*/*/*")):
        if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file():
            rel = p.relative_to(root).as_posix()
            out.append(SpeakerUtterance(rel, p.resolve(), p.relative_to(root).parts[0]))
    return out


def _read_kaldi(root: Path, bad: list[str]) -> list[SpeakerUtterance]:
    def report(where: str, message: str) -> None:
        bad.append(f"{where}: {message}")

    scp, u2s = root / "wav.scp", root / "utt2spk"
    wavs = kaldi_audio_paths(root, report)
    spk = kaldi_table(u2s, report)
    out = []
    for utt, (lineno, p) in wavs.items():
        if utt not in spk:
            bad.append(f"{scp}:{lineno}: expected a speaker for {utt!r} in {u2s}; found none")
            continue
        out.append(SpeakerUtterance(utt, p, spk[utt][1]))
    return out


def _read_manifest(path: Path, bad: list[str]) -> list[SpeakerUtterance]:
    out = []
    first_line: dict[str, int] = {}
    expected = "an object with 'audio' (or 'path') and 'speaker'"
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(f"{where}: expected {expected}; found invalid JSON ({exc.msg})")
            continue
        if not isinstance(rec, dict):
            bad.append(f"{where}: expected {expected}; found a JSON {type(rec).__name__}")
            continue
        audio = rec.get("audio", rec.get("path"))
        if audio is None or "speaker" not in rec:
            bad.append(f"{where}: expected {expected}; found keys {sorted(rec)}")
            continue
        p = Path(str(audio))
        p = p if p.is_absolute() else path.parent / p
        person = rec.get("person")
        voice = rec.get("voice")
        uid = str(rec.get("id", Path(str(audio)).with_suffix("").as_posix()))
        if uid in first_line:
            bad.append(
                f"{where}: expected a new utterance id; found {uid!r} again (first on line "
                f"{first_line[uid]}, which is kept)"
            )
            continue
        first_line[uid] = lineno
        out.append(
            SpeakerUtterance(
                uid,
                p.resolve(),
                str(rec["speaker"]),
                str(person) if person not in (None, "") else None,
                str(voice) if voice not in (None, "") else None,
            )
        )
    return out


def commercial_filter(
    utts: Sequence[SpeakerUtterance],
) -> tuple[list[SpeakerUtterance], list[str]]:
    """Keep the entries a commercially usable model may learn from.

    An entry whose ``voice`` is a registry key (``"engine:voice_id"``, as ``synth_corpus(engines=
    ...)`` writes) is kept when :func:`speechattn.data.voices.get_voice` knows it, its licence
    allows commercial use (no MBROLA, no RHVoice Evgeniy-Eng / Lyubov) and it is not an
    evaluation-only (reserved) voice. Entries without a ``voice``, or whose ``voice`` is not a
    registry key (the espeak-only corpus writes bare espeak voice names; recordings the user
    brings), are kept.

    Returns:
        ``(kept, dropped_voices)``: the kept entries in order and the sorted voice keys left out.
    """
    from speechattn.data.voices import get_voice

    verdict: dict[str, bool] = {}
    kept: list[SpeakerUtterance] = []
    for u in utts:
        if u.voice is None or ":" not in u.voice:
            kept.append(u)
            continue
        if u.voice not in verdict:
            try:
                v = get_voice(u.voice)
                verdict[u.voice] = bool(v.commercial) and not v.reserved
            except ValueError:
                verdict[u.voice] = False
        if verdict[u.voice]:
            kept.append(u)
    return kept, sorted(k for k, ok in verdict.items() if not ok)


def load_speaker_corpus(
    path: str | os.PathLike[str], *, problems: list[str] | None = None
) -> list[SpeakerUtterance]:
    """Read a speaker corpus (layouts in the module docstring); utterances sorted by id.

    Audio is not decoded here; :func:`load_feature_set` checks each file and skips bad ones.
    A malformed line of a manifest or Kaldi table (not ``<key> <value>``, invalid JSON, missing
    keys, a piped command, an utterance without a speaker, a repeated id) is skipped with one
    warning naming ``<file>:<line>``, what was expected and what was found (then one warning
    with the count), as :func:`speechattn.data.corpus.load_corpus` skips bad entries.

    Args:
        path: a VoxCeleb-layout folder, a Kaldi data dir, a manifest ``.jsonl`` (or a folder
            holding ``manifest.jsonl``), or anything ``load_corpus`` reads.
        problems: a list that receives one ``"<file>:<line>: <reason>"`` per skipped line.

    Raises:
        ValueError: the path does not exist, a Kaldi dir without ``utt2spk`` or with
            ``segments``, or nothing usable (naming the first malformed line, if any).
    """
    p = Path(path)
    if not p.exists() and str(path) != "asterisk":
        raise ValueError(f"{p}: corpus path does not exist.")
    bad: list[str] = []
    if p.is_dir() and (p / "wav.scp").is_file():
        if not (p / "utt2spk").is_file():
            raise ValueError(f"{p}: a Kaldi data dir needs utt2spk beside wav.scp.")
        utts = _read_kaldi(p, bad)
    elif p.is_file() and p.suffix == ".jsonl":
        utts = _read_manifest(p, bad)
    elif p.is_dir() and (p / "manifest.jsonl").is_file():
        utts = _read_manifest(p / "manifest.jsonl", bad)
    elif p.is_dir() and not (p / "metadata.csv").is_file() and _is_voxceleb(p):
        utts = _read_voxceleb(p)
    else:
        from speechattn.data.corpus import load_corpus

        read = load_corpus(path, problems=problems)
        # Segments of long recordings (TextGrid transcripts) are for alignment: this recipe
        # reads whole files, so it leaves them out (said once) rather than read each recording
        # once per segment.
        segments = [u for u in read if getattr(u, "start", None) is not None]
        if segments:
            warnings.warn(
                f"{p}: left out {len(segments)} segment(s) of long recordings (TextGrid "
                f"transcripts, e.g. {segments[0].id!r}): the speaker recipe reads whole files",
                stacklevel=2,
            )
        utts = [
            SpeakerUtterance(u.id, u.audio_path, u.speaker, getattr(u, "person", None))
            for u in read
            if getattr(u, "start", None) is None
        ]
    warn_skipped_lines(p, bad, problems)
    if not utts:
        raise ValueError(
            f"{p}: no usable utterances found{skipped_lines_note(bad)} (expected id*/video/*.wav, a "
            "Kaldi data dir with wav.scp and utt2spk, or a manifest .jsonl with audio and speaker)."
        )
    return sorted(utts, key=lambda u: u.id)


def corpus_fingerprint(utts: Sequence[SpeakerUtterance]) -> str:
    """A short hash of (id, label, file size) of every utterance: same corpus, same fingerprint."""
    h = hashlib.sha256()
    for u in utts:
        size = u.audio_path.stat().st_size if u.audio_path.is_file() else -1
        h.update(f"{u.id}\t{u.label}\t{size}\n".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Features


class SpeakerFrontEnd(nn.Module):
    """Log-mels of one waveform, normalised per utterance: ``(N,) -> (T, n_mels)``.

    ``feature_norm="cmn"`` removes each band's utterance mean (cepstral mean normalisation: a
    fixed equaliser and the long-term spectral envelope are gone); ``"gain"`` removes one
    number, the mean over all frames and bands (the level: a gain is gone, the long-term
    envelope, e.g. the spectral tilt and formant regions of a voice, stays).
    """

    def __init__(self, cfg: SpeakerConfig) -> None:
        super().__init__()
        from speechattn.data.features import LogMelSpectrogram

        n_fft = 512 if cfg.sample_rate <= 16000 else 1024
        self.logmel = LogMelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=n_fft,
            win_length=int(0.025 * cfg.sample_rate),
            hop_length=int(0.010 * cfg.sample_rate),
            n_mels=cfg.n_mels,
        )
        self.feature_norm = cfg.feature_norm

    def forward(self, wave: Tensor) -> Tensor:
        return normalise_features(self.logmel(wave.float()), self.feature_norm)


def normalise_features(feats: Tensor, feature_norm: str = "cmn") -> Tensor:
    """Per-utterance normalisation of log-mels ``(T, n_mels)`` (see :class:`SpeakerFrontEnd`)."""
    if feature_norm == "cmn":
        return feats - feats.mean(0, keepdim=True)
    if feature_norm == "gain":
        return feats - feats.mean()
    raise ValueError(f"Expected feature_norm 'cmn' or 'gain'; found {feature_norm!r}.")


def speech_frames(feats: Tensor, cfg: SpeakerConfig) -> Tensor:
    """The frames of one utterance's log-mels ``(T, n_mels)`` that the energy VAD keeps
    (``(T', n_mels)``, ``T' <= T``) when ``cfg.vad`` is on, else ``feats`` itself
    (:func:`speechattn.functional.vad.energy_vad` with ``range_db=cfg.vad_range_db``)."""
    if not cfg.vad:
        return feats
    from speechattn.functional.vad import energy_vad

    if feats.dim() != 2:
        raise ValueError(f"Expected feats (T, n_mels); found shape {tuple(feats.shape)}.")
    out = energy_vad(feats[None], range_db=cfg.vad_range_db)
    return out.feats[0, : int(out.feats_lengths[0])]


def feature_extractor(cfg: SpeakerConfig) -> nn.Module:
    """The :class:`SpeakerFrontEnd` of ``cfg``: 25 ms Hann windows every 10 ms, ``cfg.n_mels``
    bins at ``cfg.sample_rate``, ``cfg.feature_norm`` per utterance."""
    return SpeakerFrontEnd(cfg)


def min_samples(cfg: SpeakerConfig) -> int:
    """The fewest samples a waveform needs for one full analysis window (``n_fft // 2 + 1``)."""
    return (512 if cfg.sample_rate <= 16000 else 1024) // 2 + 1


def features(wave: Tensor, extractor: nn.Module) -> Tensor:
    """``(N,)`` waveform -> ``(T, n_mels)`` normalised log-mels: ``extractor`` is a
    :class:`SpeakerFrontEnd` (its own normalisation), or a bare log-mel module (then the
    utterance mean of each band is removed, CMN)."""
    with torch.no_grad():
        feats = extractor(wave.float())
    if isinstance(extractor, SpeakerFrontEnd):
        return feats
    return feats - feats.mean(0, keepdim=True)


def speed_perturb(wave: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch together, as sox ``speed``): ``(N,) -> (~N/factor,)``."""
    import soxr

    x = np.asarray(wave, dtype=np.float32)
    return np.asarray(soxr.resample(x, sample_rate * factor, sample_rate), dtype=np.float32)


def _time_stretch(x: np.ndarray, length: int, sample_rate: int) -> np.ndarray:
    """WSOLA: ``x`` stretched to ``length`` samples at constant pitch (20 ms Hann frames)."""
    win = max(64, int(0.02 * sample_rate)) // 2 * 2
    hop = win // 2
    tol = hop // 2
    window = np.hanning(win).astype(np.float32)
    ratio = len(x) / max(length, 1)
    pad = np.concatenate([np.zeros(tol, np.float32), x, np.zeros(win + tol, np.float32)])
    n_frames = length // hop + 1
    out = np.zeros(n_frames * hop + win, np.float32)
    norm = np.zeros_like(out)
    prev = tol  # start of the previous frame in ``pad``
    for k in range(n_frames):
        target = round(k * hop * ratio) + tol
        if k == 0:
            start = target
        else:
            natural = pad[prev + hop : prev + hop + win]
            lo, hi = max(0, target - tol), min(len(pad) - win, target + tol)
            if hi <= lo:
                start = min(max(target, 0), len(pad) - win)
            else:
                seg = pad[lo : hi + win]
                corr = np.correlate(seg, natural, mode="valid")
                start = lo + int(np.argmax(corr))
        out[k * hop : k * hop + win] += pad[start : start + win] * window
        norm[k * hop : k * hop + win] += window
        prev = start
    return (out / np.maximum(norm, 1e-3))[:length]


def pitch_shift(wave: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """Shift the pitch by ``semitones`` at constant tempo: resample, then WSOLA back to ``N``."""
    x = np.asarray(wave, dtype=np.float32)
    y = speed_perturb(x, sample_rate, 2.0 ** (semitones / 12.0))
    return _time_stretch(y, len(x), sample_rate)


def formant_shift(wave: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """Scale the formants by ``factor`` at constant pitch and tempo: ``(N,) -> (N,)``.

    A vocal-tract-length pseudo-speaker (``factor > 1``: a shorter tract, formants up). Each
    32 ms frame's log spectral envelope (the cepstrum liftered to its first 1.8 ms, below any
    pitch period up to 550 Hz) is warped along frequency, ``env'(f) = env(f / factor)``, and
    the magnitude is multiplied by ``exp(env' - env)`` (at most +-30 dB) keeping the phase, so
    the harmonics (the pitch) stay where they were; overlap-add resynthesis (hop 1/4 window).
    """
    x = torch.from_numpy(np.asarray(wave, dtype=np.float32).copy())
    if factor == 1.0 or x.numel() == 0:
        return x.numpy()
    n_fft = 1 << max(8, int(np.ceil(np.log2(0.032 * sample_rate))))
    hop = n_fft // 4
    window = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft, hop, window=window, center=True, return_complex=True)
    log_mag = torch.log(spec.abs().clamp_min(1e-7))  # (F, T)
    cep = torch.fft.irfft(log_mag, n=n_fft, dim=0)
    lifter = max(4, int(0.0018 * sample_rate))
    cep[lifter : n_fft - lifter + 1] = 0.0
    env = torch.fft.rfft(cep, dim=0).real  # (F, T)
    bins = env.shape[0]
    src = torch.arange(bins, dtype=torch.float32) / factor
    lo = src.floor().long().clamp(max=bins - 1)
    hi = (lo + 1).clamp(max=bins - 1)
    w = (src - lo.float()).clamp(0.0, 1.0).unsqueeze(1)
    warped = env[lo] * (1 - w) + env[hi] * w
    gain = torch.exp((warped - env).clamp(-3.45, 3.45))  # +-30 dB
    y = torch.istft(spec * gain, n_fft, hop, window=window, center=True, length=x.numel())
    return y.numpy().astype(np.float32)


#: A random channel: ``channel(wave (N,), sample_rate, rng) -> (N',)``.
Channel = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def channel_augment(cfg: SpeakerConfig) -> ChannelAugment | Channel:
    """The training channel of ``cfg``'s ``p_*`` settings: a
    :class:`~speechattn.data.augment.ChannelAugment`, or with ``cfg.p_resample > 0`` the same
    channel behind a random lower sample rate of ``cfg.resample_rates``
    (:class:`~speechattn.recipes.align.data.TrainingChannel`, same noise SNR range). Both draw
    real rooms from every packaged room (``real_rooms="all"``), whatever the aligner's default,
    and run their filters at 5-smooth FFT lengths when ``cfg.fast_fft``."""
    from speechattn.data.augment import ChannelAugment

    aug = ChannelAugment(
        p_eq=cfg.p_eq,
        p_reverb=cfg.p_reverb,
        p_telephone=cfg.p_telephone,
        p_mu_law=cfg.p_mu_law,
        p_noise=cfg.p_noise,
        p_real_room=cfg.p_real_room,
        real_rooms="all",
        fast_fft=cfg.fast_fft,
    )
    if cfg.p_resample <= 0:
        return aug
    from speechattn.recipes.align.data import TrainingChannel

    return TrainingChannel(
        p_resample=cfg.p_resample,
        rates=tuple(cfg.resample_rates),
        p_eq=cfg.p_eq,
        p_reverb=cfg.p_reverb,
        p_real_room=cfg.p_real_room,
        p_telephone=cfg.p_telephone,
        p_mu_law=cfg.p_mu_law,
        p_noise=cfg.p_noise,
        snr_db=aug.snr_db,
        real_rooms=aug.real_rooms,
        fast_fft=aug.fast_fft,
    )


class FeatureSet(NamedTuple):
    """Features ``(T_i, n_mels)``, their training identities and source utterance ids.

    ``skipped`` lists ``(path, reason)`` of the files that could not be used.
    """

    feats: list[Tensor]
    labels: list[str]
    ids: list[str]
    skipped: list[tuple[str, str]]


@on_one_torch_thread
def load_feature_set(
    utts: Sequence[SpeakerUtterance],
    cfg: SpeakerConfig,
    *,
    train_labels: set[str] | frozenset[str] = frozenset(),
    on_skip: Callable[[str, str], None] | None = None,
    progress: bool = False,
    channel: ChannelAugment | Channel | None = None,
) -> FeatureSet:
    """Log-mels of every usable utterance, plus the training copies.

    Each file is checked when read (:func:`speechattn.data.audio.check_waveform`: decodable, at
    least :func:`min_samples`, finite, not silent); a bad one is skipped, reported once through
    ``on_skip(path, reason)`` (default: a warning) and listed in ``skipped``. For utterances whose
    label is in ``train_labels``: each ``cfg.speed_perturb`` factor, ``cfg.pitch_perturb`` shift
    and ``cfg.formant_shift`` factor adds a pseudo-speaker copy labelled ``"<label>@speed<f>"`` /
    ``"<label>@pitch<s>"`` / ``"<label>@formant<f>"``, and every (original or pseudo-speaker)
    training item gets ``cfg.augment_copies`` channel-augmented copies with the same label, right
    after it, through ``channel`` (default: :func:`channel_augment` of ``cfg``, whose
    ``p_real_room`` adds real rooms and ``p_resample`` lower sample rates). Seeded by ``cfg.seed``.

    Runs on one torch thread (:func:`speechattn._threads.one_torch_thread`; the caller's count
    is restored after): per-utterance front-end tensors are too small to gain from more, and
    the features are bitwise the same.
    """
    from speechattn.data.audio import AudioError, check_waveform, load_audio

    def skip(path: str, reason: str) -> None:
        skipped.append((path, reason))
        if on_skip is not None:
            on_skip(path, reason)
        else:
            warnings.warn(f"skipping {path}: {reason}", stacklevel=4)  # skip, self, wrapper

    extractor = feature_extractor(cfg)
    if channel is None:
        channel = channel_augment(cfg)
    rng = np.random.default_rng(cfg.seed + 12345)
    feats: list[Tensor] = []
    labels: list[str] = []
    ids: list[str] = []
    skipped: list[tuple[str, str]] = []
    sr = cfg.sample_rate
    from tqdm import tqdm

    for utt in tqdm(utts, desc="features", disable=not progress, leave=False):
        try:
            wave = load_audio(utt.audio_path, sample_rate=sr)
            check_waveform(wave, utt.audio_path, min_samples=min_samples(cfg))
        except AudioError as exc:
            skip(str(utt.audio_path), str(exc).removeprefix(f"{utt.audio_path}: "))
            continue
        variants: list[tuple[str, np.ndarray | None]] = [(utt.label, None)]
        if utt.label in train_labels:
            x = wave.numpy()
            for f in cfg.speed_perturb:
                variants.append((f"{utt.label}@speed{f:g}", speed_perturb(x, sr, f)))
            for s in cfg.pitch_perturb:
                variants.append((f"{utt.label}@pitch{s:+g}", pitch_shift(x, sr, s)))
            for f in cfg.formant_shift:
                variants.append((f"{utt.label}@formant{f:g}", formant_shift(x, sr, f)))
        for label, alt in variants:
            w = wave if alt is None else torch.from_numpy(alt)
            f0 = features(w, extractor)
            if not torch.isfinite(f0).all():
                skip(str(utt.audio_path), "features are not finite")
                break
            feats.append(f0)
            labels.append(label)
            ids.append(utt.id)
            if utt.label in train_labels:
                for _ in range(cfg.augment_copies):
                    noisy = channel(w.numpy(), sr, rng)
                    feats.append(features(torch.from_numpy(noisy), extractor))
                    labels.append(label)
                    ids.append(utt.id)
    return FeatureSet(feats, labels, ids, skipped)


def random_crops(
    feats: Sequence[Tensor],
    idx: Sequence[int],
    rng: random.Random,
    cfg: SpeakerConfig,
) -> tuple[Tensor, Tensor]:
    """Random ``[min_frames, max_frames]`` crops of ``feats[i]`` for ``i in idx``, padded with
    :func:`speechattn.data.collate.pad_sequence_batch`: ``(B, T, n_mels)`` and lengths ``(B,)``.
    With ``cfg.freq_mask`` / ``cfg.time_mask``, SpecAugment-style masking of each crop."""
    crops = []
    for i in idx:
        f = feats[i]
        n = min(len(f), rng.randint(cfg.min_frames, cfg.max_frames))
        start = rng.randint(0, len(f) - n)
        crop = f[start : start + n]
        if cfg.freq_mask > 0 or cfg.time_mask > 0:
            crop = _spec_augment(crop, rng, cfg.freq_mask, cfg.time_mask)
        crops.append(crop)
    return pad_sequence_batch(crops)


def _spec_augment(crop: Tensor, rng: random.Random, freq_mask: int, time_mask: int) -> Tensor:
    """One band of up to ``freq_mask`` mel bins and one span of up to ``time_mask`` frames set
    to 0 (the CMN mean), on a copy of ``crop (T, n_mels)``."""
    crop = crop.clone()
    t, n_mels = crop.shape
    if freq_mask > 0:
        w = rng.randint(0, min(freq_mask, n_mels - 1))
        f0 = rng.randint(0, n_mels - w)
        crop[:, f0 : f0 + w] = 0.0
    if time_mask > 0:
        w = rng.randint(0, min(time_mask, t // 4))
        t0 = rng.randint(0, t - w)
        crop[t0 : t0 + w] = 0.0
    return crop


# ---------------------------------------------------------------------------------------------
# Trials


class Trial(NamedTuple):
    """One verification trial: ``target`` (1 same speaker, 0 not) and two audio paths."""

    target: int
    enroll: Path
    test: Path


def read_trials(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    problems: list[str] | None = None,
) -> list[Trial]:
    """Read a VoxCeleb trial list (``1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav``).

    Paths are relative to ``root`` (or absolute). A malformed line is skipped with one warning
    naming ``<file>:<line>``, what was expected and what was found (then one warning with the
    count); ``problems`` receives one ``"<file>:<line>: <reason>"`` per skipped line (the
    ``speechattn speaker score`` output counts them among the trials left out).

    Raises:
        ValueError: the file is missing, or the trials read lack target or non-target trials.
    """
    p, base = Path(path), Path(root)
    if not p.is_file():
        raise ValueError(f"{p}: trial list not found.")
    out: list[Trial] = []
    bad: list[str] = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            bad.append(
                f"{p}:{lineno}: expected '<1|0> <enroll.wav> <test.wav>'; found {line.strip()!r}"
            )
            continue
        a, b = Path(parts[1]), Path(parts[2])
        out.append(
            Trial(
                int(parts[0]),
                a if a.is_absolute() else base / a,
                b if b.is_absolute() else base / b,
            )
        )
    warn_skipped_lines(p, bad, problems)
    kinds = {t.target for t in out}
    if kinds != {0, 1}:
        raise ValueError(
            f"{p}: expected both target (1) and non-target (0) trials; found "
            f"{sorted(kinds)}{skipped_lines_note(bad)}."
        )
    return out
