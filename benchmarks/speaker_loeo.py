"""Leave-one-engine-out speaker verification: train on every engine but one, test on that one.

Builds (once, cached under ``--cache``) a pool of synthetic voices from several engines
(``speechattn.data.synth.synth_corpus(engines=...)``: espeak-ng variants plus every trainable,
installed voice of Festival, RHVoice, Piper and SVOX Pico; reserved, evaluation-only voices are
never drawn), ``--utterances`` per voice. Training copies get speed / pitch / formant pseudo-speakers
(``--set speed_perturb=... formant_shift=...``) and channel-augmented copies through the
config's ``ChannelAugment`` settings (``--set p_real_room=0.3``, the default here: real room
impulse responses when a package ships them). With ``--set commercial_only=true`` only voices
whose licence allows commercial use train (the registry's filter); test voices are all voices
of the held-out engine either way.
``--kokoro-mixtures N`` also trains on ``N`` Kokoro style mixtures (derived voices of
:func:`speechattn.data.voices.kokoro_mixtures`, ``--mixture-utterances`` each, synthesised once
into ``--cache``/kokoro_mix): never test voices, and left out when kokoro is held out.
``--test-utterances K`` (below ``--utterances``): training voices get ``--utterances`` sentences
each, but the pool is the K-per-voice pool plus new sentences (:func:`extend_pool`) and held-out
engines are tested on the K-per-voice pool's clips only (the same trials as a run with
``--utterances K``).

For each held-out engine E (``--held-out`` picks some) and each ``--poolings`` layer: an
encoder is trained on all other engines' voices (and their
pseudo-speakers and augmented copies), then every unordered pair of E's clean utterances is a
trial (target = same person). Engines with fewer than ``--min-test-voices`` voices (Piper has
one voice, Pico two) get speed / pitch pseudo-speakers of their voices as extra test speakers
(marked ``pseudo`` in the table): those trials measure only whether the encoder separates
perturbed copies of one voice, an easier and different task. The same trials are scored with the
shipped encoder (``--shipped-checkpoint``, default ``speechattn/assets/speaker_default.pt``,
which learned every engine of this pool: its rows are not held out; the espeak-only encoder it
replaced is the asset's previous version, ``git log -- src/speechattn/assets/speaker_default.pt``),
log-mel mean/std statistics (set mean removed, no training), log-mel envelope/std statistics
(each band's mean with the utterance level removed, and its std; set mean removed, no training)
and Resemblyzer when it is installed (a baseline only, never a teacher). Encoder embeddings are
scored centred on the test set's mean embedding (as ``speechattn speaker score`` does and as the
log-mel statistics always are) and as raw cosines ("raw cosine" columns); Resemblyzer both ways
too ("Resemblyzer" is its raw cosine, as its users get it). "ours + envelope statistics"
concatenates the centred embedding and the envelope statistics (equal weights, each
L2-normalised): a score fusion, reported apart from the encoder.

Prints a Markdown table (EER % / minDCF at p_target 0.01) and writes it with the rows as JSON
to ``--out``. ``--save-checkpoint PATH`` also trains one encoder on every engine and saves it.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/speaker_loeo.py --cache runs/loeo \
        --out runs/loeo/result --set steps=600
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/speaker_loeo.py --cache runs/loeo \
        --held-out festival rhvoice --poolings ASTP TAP TSTP MHASTP MQMHASTP \
        --set steps=300 commercial_only=true formant_shift=0.85,1.15
    PYTHONPATH=src python benchmarks/speaker_loeo.py --quick --cache /tmp/loeo_q --out /tmp/loeo_q
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from speechattn._cli import CliError, add_hidden_alias, parse_overrides
from speechattn.recipes.speaker import data as D
from speechattn.recipes.speaker import evaluate as E
from speechattn.recipes.speaker.config import CHANNEL_PROBABILITIES, POOLINGS, SpeakerConfig
from speechattn.recipes.speaker.model import SpeakerEnsemble

__all__ = [
    "build_mixture_pool",
    "build_pool",
    "encoder_path",
    "extend_pool",
    "main",
    "merge_checkpoints",
    "merge_copies",
    "norm_grid",
    "pool_voices",
    "run_loeo",
    "stats_table",
    "test_channel",
]

DEFAULT_ENGINES = ("espeak", "festival", "rhvoice", "piper", "pico")


def _trainable_counts(engines: list[str]) -> dict[str, int]:
    from speechattn.data.voices import list_voices, voice_installed

    return {
        e: sum(1 for v in list_voices(engines=[e]) if voice_installed(v))
        for e in engines
        if e != "espeak"
    }


def synthesis_code_digest() -> str:
    """A digest of the source files that decide what a pool's audio is (the engines, the voice
    registry, the text front end, the corpus synthesiser): a pool cached by other code (an
    engine fixed since, as Kokoro's punctuation was) is synthesised again rather than reused."""
    import speechattn.data as data_pkg

    root = Path(data_pkg.__file__).parent
    files = [root / n for n in ("synth.py", "voices.py", "text.py", "_espeak.py")]
    files += sorted((root / "engines").glob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def pool_settings(engines: list[str], voices: int, utterances: int, seed: int) -> dict[str, Any]:
    """What ``settings.json`` of a pool records; a cached pool is reused only when it matches."""
    return {
        "engines": list(engines),
        "voices": voices,
        "utterances": utterances,
        "seed": seed,
        "synthesis_code": synthesis_code_digest(),
    }


def pool_is_current(
    pool: Path, settings: dict[str, Any], *, redo: str = "synthesising it again"
) -> bool:
    """True when ``pool`` holds a manifest and a ``settings.json`` equal to ``settings``; a pool
    made with other settings or by other code is said to be made again (``redo``)."""
    manifest = pool / "manifest.jsonl"
    stamp = pool / "settings.json"
    if manifest.exists() and stamp.exists():
        if json.loads(stamp.read_text()) == settings:
            return True
        print(
            f"{pool}: made with other settings or by other code (settings.json differs); {redo}",
            flush=True,
        )
    return False


def cached_pool(pool: Path, settings: dict[str, Any], **synth: Any) -> Path:
    """``pool``'s manifest, synthesised (``synth_corpus(pool, **synth)``) and stamped with
    ``settings`` unless :func:`pool_is_current` says the pool there matches them."""
    manifest = pool / "manifest.jsonl"
    if pool_is_current(pool, settings):
        return manifest
    from speechattn.data.synth import synth_corpus

    synth_corpus(pool, **synth)
    (pool / "settings.json").write_text(json.dumps(settings))
    return manifest


def audio_digest(paths: list[Path]) -> str:
    """A digest of the files' bytes, in order (the feature cache's key includes it, so features
    kept from audio that has since been synthesised again are never reused)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(hashlib.sha256(Path(p).read_bytes()).digest())
    return h.hexdigest()[:16]


def pool_voices(engines: list[str], espeak_voices: int) -> int:
    """How many voices the pool draws: every trainable, installed voice of the engines plus
    espeak variants (at least ``espeak_voices``; voices are drawn round-robin, so espeak needs
    at least as many as the largest engine for every other engine's voices to be drawn)."""
    counts = _trainable_counts(engines)
    extra = max([espeak_voices, *counts.values()]) if "espeak" in engines else 0
    return sum(counts.values()) + extra


def build_pool(
    cache: Path,
    engines: list[str],
    espeak_voices: int,
    utterances: int,
    *,
    seed: int = 0,
    test_utterances: int | None = None,
) -> Path:
    """Synthesise the pool once (16 kHz); returns its manifest. Reused when its settings match.

    ``test_utterances`` (``k < utterances``): the pool is the ``k``-per-voice pool
    (``cache/pool``, exactly what ``utterances=k`` builds) extended by ``utterances - k`` new
    sentences per voice (:func:`extend_pool`); see there for which clips are test clips."""
    if test_utterances is not None and test_utterances != utterances:
        return extend_pool(cache, engines, espeak_voices, utterances, test_utterances, seed=seed)
    n_voices = pool_voices(engines, espeak_voices)
    return cached_pool(
        cache / "pool",
        pool_settings(engines, n_voices, utterances, seed),
        utterances=n_voices * utterances,
        speakers=n_voices,
        seed=seed,
        workers=2,
        sample_rate=16000,
        progress=False,
        engines=engines,
    )


def extend_pool(
    cache: Path,
    engines: list[str],
    espeak_voices: int,
    utterances: int,
    base_utterances: int,
    *,
    seed: int = 0,
) -> Path:
    """A pool of ``utterances`` sentences per voice whose first ``base_utterances`` per voice
    are the ``base_utterances``-per-voice pool's own clips (``cache/pool``, reused or made by
    :func:`build_pool`; ids and file names unchanged), so a held-out engine can be tested on
    exactly the clips (and test-channel draws, keyed by file name) of that smaller pool while
    training voices get more sentences. The new clips (``cache/pool_more<n>``, synthesised once
    and stamped like any pool) are sentences ``V * base_utterances`` onwards of
    ``generate_sentences(V * utterances, seed=seed)`` (the smaller pool's are its first
    ``V * base_utterances``: the generator is sequential), assigned to the same ``V`` voices
    by ``synth_corpus``'s seeded balanced draw (``base_utterances`` more each, never a sentence
    of the smaller pool). Returns ``cache/pool_<utterances>from<base_utterances>/manifest.jsonl``:
    the smaller pool's lines first (as they are, paths rewritten relative to it), then the new
    clips with ids ``utt<V * base_utterances + i>``; every line has ``"base": true/false``.

    Raises:
        ValueError: ``base_utterances`` not in ``1 .. utterances - 1``.
    """
    from speechattn.data.synth import generate_sentences

    if not 1 <= base_utterances < utterances:
        raise ValueError(
            f"Expected test utterances between 1 and {utterances - 1} (below --utterances); "
            f"found {base_utterances}."
        )
    n_voices = pool_voices(engines, espeak_voices)
    base = build_pool(cache, engines, espeak_voices, base_utterances, seed=seed)
    n_base, n_more = n_voices * base_utterances, n_voices * (utterances - base_utterances)
    more_dir = cache / f"pool_more{utterances - base_utterances}"
    settings = {**pool_settings(engines, n_voices, utterances, seed), "extends": base_utterances}
    more = cached_pool(
        more_dir,
        settings,
        utterances=n_more,
        speakers=n_voices,
        seed=seed,
        texts=generate_sentences(n_base + n_more, seed=seed)[n_base:],
        workers=2,
        sample_rate=16000,
        progress=False,
        engines=engines,
    )
    out = cache / f"pool_{utterances}from{base_utterances}"
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for src, is_base in ((base, True), (more, False)):
        for line in src.read_text().splitlines():
            rec = json.loads(line)
            rec["path"] = os.path.relpath(src.parent / rec["path"], out)
            if not is_base:
                rec["id"] = f"utt{n_base + int(rec['id'][3:]):06d}"
            rec["base"] = is_base
            lines.append(json.dumps(rec))
    manifest = out / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def build_mixture_pool(cache: Path, n: int, utterances: int, *, seed: int = 0) -> Path:
    """Synthesise ``utterances`` sentences for each of ``n`` Kokoro style mixtures
    (:func:`speechattn.data.voices.kokoro_mixtures` with ``seed``), 16 kHz, under
    ``cache/kokoro_mix``; returns its manifest (lines as ``synth_corpus(engines=...)`` writes,
    plus ``derived_from``). Resumable: finished utterances are kept in ``partial.jsonl`` and
    skipped on a rerun; reused whole when its settings match. Training material only: the
    mixtures are never test voices."""
    import wave

    from speechattn.data.engines import synthesize
    from speechattn.data.synth import generate_sentences
    from speechattn.data.voices import kokoro_mixtures

    settings = {"mixtures": n, "utterances": utterances, "seed": seed}
    pool = cache / "kokoro_mix"
    manifest = pool / "manifest.jsonl"
    if pool_is_current(pool, settings, redo="keeping its finished utterances, making the rest"):
        return manifest
    (pool / "wavs").mkdir(parents=True, exist_ok=True)
    partial = pool / "partial.jsonl"
    done = {}
    if partial.exists():
        for line in partial.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["id"]] = rec
    voices = kokoro_mixtures(n, seed=seed)

    def _mix_voice(uid: str) -> str:
        return voices[int(uid[3:6])].key

    with partial.open("a", encoding="utf-8") as f:
        for k, v in enumerate(voices):
            for j in range(utterances):
                uid = f"mix{k:03d}_{j:02d}"
                # sentences per mixture: a rerun with more mixtures keeps the finished ones
                text = generate_sentences(utterances, seed=10_000 + 1000 * seed + k)[j]
                if uid in done and (done[uid]["voice"], done[uid]["text"]) == (v.key, text):
                    continue  # (another seed's utterance of this id is made again, not dropped)
                try:
                    res = synthesize(text, v, sample_rate=16000)
                except (ValueError, RuntimeError) as exc:
                    print(f"{uid}: skipped ({v.key}: {exc})", flush=True)
                    continue
                wav16 = np.clip(np.round(res.waveform * 32768.0), -32768, 32767).astype(np.int16)
                with wave.open(str(pool / "wavs" / f"{uid}.wav"), "wb") as w:
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(16000)
                    w.writeframes(wav16.tobytes())
                rec = {
                    "id": uid,
                    "path": f"wavs/{uid}.wav",
                    "text": text,
                    "speaker": v.person,
                    "engine": v.engine,
                    "voice": v.key,
                    "person": v.person,
                    "derived_from": list(v.derived_from),
                    "language": v.language,
                    "sample_rate": 16000,
                    "duration": round(len(wav16) / 16000, 6),
                }
                done[uid] = rec
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
    wanted = {f"mix{k:03d}_{j:02d}" for k in range(len(voices)) for j in range(utterances)}
    keep = [done[k] for k in sorted(done) if k in wanted and done[k]["voice"] == _mix_voice(k)]
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))
    (pool / "settings.json").write_text(json.dumps(settings))
    return manifest


def _engine_of(manifest: Path) -> dict[str, str]:
    out = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            out[str(rec["id"])] = str(rec.get("engine", "espeak"))
    return out


def _base_ids(manifest: Path) -> set[str]:
    """The ids of the manifest's lines that are test clips: all of them, except the new clips
    (``"base": false``) of an :func:`extend_pool` manifest."""
    ids = set()
    for line in manifest.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec.get("base", True):
                ids.add(str(rec["id"]))
    return ids


def encoder_path(folder: Path, held_out: str) -> Path:
    """Where ``--save-encoders`` keeps the encoder trained without ``held_out``."""
    return Path(folder) / f"held_out_{held_out}.pt"


def merge_checkpoints(paths: list[Path], out: Path) -> Path:
    """Save the encoders of ``paths`` (one recipe, several training seeds) as one
    :class:`~speechattn.recipes.speaker.model.SpeakerEnsemble` checkpoint at ``out``: its
    config is the first file's, each member keeps its own (``member_configs``).

    Raises:
        ValueError: the files' front ends (``n_mels``, ``sample_rate``, ``feature_norm``) differ.
    """
    from speechattn.recipes.speaker.model import load_checkpoint, save_encoder

    loaded = [load_checkpoint(p) for p in paths]
    derived: set[str] = set()
    for p in paths:
        derived.update(torch.load(p, map_location="cpu", weights_only=True)["derived_voices"])
    ens = SpeakerEnsemble([m for m, _ in loaded])
    cfgs = [c for _, c in loaded]
    return save_encoder(
        ens, ens.pooling_name, cfgs[0], out, derived_voices=sorted(derived), member_configs=cfgs
    )


def _load_member(path: Path, cfg: SpeakerConfig) -> Any:
    """An encoder saved by ``--save-encoders``, checked against the features ``cfg`` makes."""
    from speechattn.recipes.speaker.model import load_checkpoint

    model, mcfg = load_checkpoint(path)
    got = (mcfg.n_mels, mcfg.sample_rate, mcfg.feature_norm)
    want = (cfg.n_mels, cfg.sample_rate, cfg.feature_norm)
    if got != want:
        raise ValueError(
            f"{path}: expected an encoder for (n_mels, sample_rate, feature_norm) = {want}; "
            f"found {got}. Pass the members' settings with --set."
        )
    return model


def _score(emb: torch.Tensor, speakers: list[str]) -> dict[str, float]:
    s, lab = E.pair_trials(emb, speakers)
    return {"eer": E.compute_eer(s, lab), "min_dcf": E.compute_min_dcf(s, lab)}


def _score2(emb: torch.Tensor, speakers: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Scores of embeddings centred on the test set's mean (what ``speechattn speaker score``
    does) and of the raw cosines."""
    return _score(E.centre_embeddings(emb), speakers), _score(emb, speakers)


#: AS-norm's top-k values of ``--score-norm-grid`` (a k at least the cohort's size is S-norm).
NORM_TOP_K = (5, 10, 20, 50)


def norm_grid(
    rows: torch.Tensor,
    speakers: list[str],
    cohorts: dict[str, tuple[torch.Tensor, list[str]]] | None = None,
) -> dict[str, dict[str, float]]:
    """EER / minDCF of every unordered pair of ``rows (N, E)`` (raw embeddings or log-mel
    statistics) under each score normalisation: ``centred`` (cosine of rows centred on their
    own mean, as ``speechattn speaker score`` does), ``snorm/<cohort>`` and
    ``asnorm<k>/<cohort>`` for k in :data:`NORM_TOP_K`. Cohorts: ``list`` (the test files
    themselves, minus the two of each trial), ``list-other-speakers`` (minus every file of the
    trial's speakers: an oracle that needs the labels), and for each ``name: (C, E) rows,
    speaker labels`` of ``cohorts``: ``<name>-utt`` (its rows) and ``<name>-spk`` (the mean row
    of each speaker); every cohort row is centred on the test rows' mean, as the test rows are."""
    mean = rows.mean(0)
    x = E.centre_embeddings(rows, mean)
    iu = np.triu_indices(len(speakers), k=1)
    enroll, test = torch.from_numpy(iu[0]), torch.from_numpy(iu[1])
    spk = np.asarray(speakers)
    labels = (spk[iu[0]] == spk[iu[1]]).astype(np.int64)
    out: dict[str, dict[str, float]] = {}

    def add(name: str, s: np.ndarray) -> None:
        out[name] = {"eer": E.compute_eer(s, labels), "min_dcf": E.compute_min_dcf(s, labels)}

    add("centred", E.normalise_scores(x, enroll, test))
    used: dict[str, torch.Tensor | None] = {"list": None}
    for name, (cohort, cohort_labels) in (cohorts or {}).items():
        used[f"{name}-utt"] = E.centre_embeddings(cohort, mean)
        lab = np.asarray(cohort_labels)
        spk_mean = torch.stack(
            [cohort[torch.from_numpy(lab == n)].mean(0) for n in sorted(set(cohort_labels))]
        )
        used[f"{name}-spk"] = E.centre_embeddings(spk_mean, mean)
    # what the list cohort's same-speaker files cost: the list minus every file of the trial's
    # speaker(s) (needs the labels, so an oracle, never a user's option)
    _, spk_id = np.unique(spk, return_inverse=True)
    sid = torch.from_numpy(spk_id)
    xx = x.double() @ x.double().T
    other = (sid[None, :] != sid[enroll][:, None]) & (sid[None, :] != sid[test][:, None])
    pair = xx[enroll, test]
    for k in (None, *NORM_TOP_K):
        stats = []
        for side in (enroll, test):
            if k is None:  # every other speaker's file: a masked mean and population std
                w = other.double()
                mu = (xx[side] * w).sum(1) / w.sum(1)
                var = (((xx[side] - mu[:, None]) ** 2) * w).sum(1) / w.sum(1)
                stats += [mu, var.sqrt()]
                continue
            sc = xx[side].masked_fill(~other, -torch.inf)
            v = sc.topk(min(k, int(other.sum(1).min())), dim=1).values
            stats += [v.mean(1), v.std(1, unbiased=False)]
        s = 0.5 * ((pair - stats[0]) / stats[1] + (pair - stats[2]) / stats[3])
        add(f"{'snorm' if k is None else f'asnorm{k}'}/list-other-speakers", s.numpy())
    for cname, c in used.items():
        add(f"snorm/{cname}", E.normalise_scores(x, enroll, test, method="snorm", cohort=c))
        for k in NORM_TOP_K:
            s = E.normalise_scores(x, enroll, test, method="asnorm", cohort=c, top_k=k)
            add(f"asnorm{k}/{cname}", s)
    return out


#: The test clips' channel probabilities: fixed (what every ``--test-channel`` table used), so
#: a recipe that changes its own training channel (``--set p_eq=...``) scores on the same clips.
TEST_CHANNEL: dict[str, float] = {
    "p_resample": 0.5,
    "p_eq": 0.8,
    "p_reverb": 0.3,
    "p_real_room": 0.3,
    "p_telephone": 0.5,
    "p_mu_law": 0.5,
    "p_noise": 0.5,
}
#: The test channel's real rooms: all five packaged rooms, the split every ``--test-channel``
#: table used (the aligner's ``TrainingChannel`` now defaults to its training rooms only).
TEST_CHANNEL_ROOMS = "all"


def test_channel() -> Any:
    """The random channel of the channel test trials: the aligner recipe's
    :class:`~speechattn.recipes.align.data.TrainingChannel` (half of the clips through 8 or
    11.025 kHz and back, noise at 10-35 dB SNR) with the speaker recipe's default
    ``ChannelAugment`` probabilities (equaliser 0.8, synthetic room 0.3, real room 0.3,
    telephone band 0.5 with mu-law 0.5, noise 0.5): :data:`TEST_CHANNEL`, whatever the
    training settings. Its real rooms are :data:`TEST_CHANNEL_ROOMS` (every packaged room, as
    the speaker recipe's training channel draws them), pinned here so the aligner's own default
    split does not move this column."""
    from speechattn.recipes.align.data import TrainingChannel

    return TrainingChannel(rates=(8000, 11025), real_rooms=TEST_CHANNEL_ROOMS, **TEST_CHANNEL)


def merge_copies(sets: list[D.FeatureSet], copies: int) -> D.FeatureSet:
    """Training feature sets of the same items, each with ``copies`` channel copies per item
    (drawn with different seeds), as one set with ``len(sets) * copies`` copies per item: each
    item's clean features once, then every set's copies in turn.

    Raises:
        ValueError: the sets do not hold the same items in the same order, or their clean
            features differ.
    """
    first = sets[0]
    if any(len(fs.feats) != len(first.feats) for fs in sets):
        raise ValueError(
            f"Expected feature sets of one length; found {[len(fs.feats) for fs in sets]}."
        )
    feats: list[torch.Tensor] = []
    labels: list[str] = []
    ids: list[str] = []
    step = copies + 1
    for i in range(0, len(first.feats), step):
        for fs in sets:
            if (
                fs.labels[i : i + step] != first.labels[i : i + step]
                or fs.ids[i : i + step] != first.ids[i : i + step]
            ):
                raise ValueError(f"Expected the same items in every set; item {i} differs.")
            if not torch.equal(fs.feats[i], first.feats[i]):
                raise ValueError(f"Expected the same clean features; item {i} differs.")
        feats.append(first.feats[i])
        labels.append(first.labels[i])
        ids.append(first.ids[i])
        for fs in sets:
            feats += fs.feats[i + 1 : i + step]
            labels += fs.labels[i + 1 : i + step]
            ids += fs.ids[i + 1 : i + step]
    return D.FeatureSet(feats, labels, ids, [])


def _train_features(
    utts: list[D.SpeakerUtterance],
    cfg: SpeakerConfig,
    train_labels: set[str],
    cache: Path | None,
    log: Any = print,
    copy_seeds: tuple[int, ...] = (),
) -> D.FeatureSet:
    """:func:`~speechattn.recipes.speaker.data.load_feature_set` of the training items, kept in
    ``cache`` (a ``.pt`` named by a hash of the utterances, their audio files' bytes and every
    setting that changes the features) when given: runs that differ only in model or
    optimisation settings share it.
    ``copy_seeds``: the ``cfg.augment_copies`` channel copies are drawn as ``len(copy_seeds)``
    feature sets of ``augment_copies / len(copy_seeds)`` copies with those seeds (each cached on
    its own, so 12 copies can reuse two cached 6-copy sets), merged by :func:`merge_copies`."""
    if copy_seeds:
        n = len(copy_seeds)
        if cfg.augment_copies % n:
            raise ValueError(
                f"Expected augment_copies divisible by the {n} copy seeds; "
                f"found {cfg.augment_copies}."
            )
        per = cfg.augment_copies // n
        subs = [
            _train_features(
                utts,
                SpeakerConfig(**{**cfg.to_dict(), "seed": s, "augment_copies": per}),
                train_labels,
                cache,
                log,
            )
            for s in copy_seeds
        ]
        return merge_copies(subs, per)
    if cache is None:
        return D.load_feature_set(utts, cfg, train_labels=train_labels)
    keys = (
        "seed",
        "sample_rate",
        "n_mels",
        "feature_norm",
        "augment_copies",
        "speed_perturb",
        "pitch_perturb",
        "formant_shift",
        *CHANNEL_PROBABILITIES,
        "resample_rates",
    )
    settings = {k: v for k, v in cfg.to_dict().items() if k in keys}
    if cfg.fast_fft:  # only when on, so the caches of earlier (default) runs keep their names
        settings["fast_fft"] = True
    blob = json.dumps(
        [
            settings,
            [(u.id, u.label) for u in utts],
            sorted(train_labels),
            audio_digest([u.audio_path for u in utts]),
        ]
    )
    path = cache / f"train_features_{zlib.crc32(blob.encode()):08x}.pt"
    if path.is_file():
        data = torch.load(path, weights_only=True)
        if data["key"] == blob:
            log(f"training features from {path}")
            return D.FeatureSet(data["feats"], data["labels"], data["ids"], [])
    fs = D.load_feature_set(utts, cfg, train_labels=train_labels)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"key": blob, "feats": fs.feats, "labels": fs.labels, "ids": fs.ids}, path)
    return fs


def _test_waves(
    src: list[tuple[Path, float, float]], sample_rate: int, channel: Any = None, seed: int = 0
) -> list[np.ndarray]:
    """The test clips ``(path, speed, pitch)`` as waveforms; with ``channel``, each through its
    own random channel, drawn from a generator seeded by ``seed`` and the clip (so a clip gets
    the same channel in every run and every held-out row)."""
    from speechattn.data.audio import load_audio
    from speechattn.recipes.speaker.data import pitch_shift, speed_perturb

    out = []
    for path, speed, pitch in src:
        x = load_audio(path, sample_rate=sample_rate).numpy()
        if speed != 1.0:
            x = speed_perturb(x, sample_rate, speed)
        if pitch:
            x = pitch_shift(x, sample_rate, pitch)
        if channel is not None:
            key = zlib.crc32(f"{Path(path).name}|{speed:g}|{pitch:g}".encode())
            x = channel(x, sample_rate, np.random.default_rng([seed, key]))
        out.append(np.asarray(x, dtype=np.float32))
    return out


def _resemblyzer_embed(waves: list[np.ndarray], sample_rate: int = 16000) -> torch.Tensor | None:
    """Resemblyzer utterance embeddings, or None when it is not installed."""
    try:
        from resemblyzer import VoiceEncoder, preprocess_wav
    except ImportError:
        return None

    enc = VoiceEncoder("cpu", verbose=False)
    rows = [torch.from_numpy(enc.embed_utterance(preprocess_wav(x, sample_rate))) for x in waves]
    return F.normalize(torch.stack(rows).float(), dim=-1)


def run_loeo(
    cache: Path,
    cfg: SpeakerConfig,
    *,
    engines: list[str],
    espeak_voices: int,
    utterances: int,
    pooling: str = "ASTP",
    poolings: tuple[str, ...] | None = None,
    held_out: tuple[str, ...] | None = None,
    min_test_voices: int = 3,
    test_pseudo: tuple[float, ...] = (0.85, 1.15),
    save_checkpoint: Path | None = None,
    resemblyzer: bool = True,
    pool_seed: int = 0,
    shipped_checkpoint: Path | None = None,
    channel_test: bool = False,
    channel_seed: int | tuple[int, ...] = 0,
    mixtures: Path | None = None,
    feature_cache: Path | None = None,
    save_encoders: Path | None = None,
    ensemble: tuple[Path, ...] = (),
    copy_seeds: tuple[int, ...] = (),
    score_norm_grid: bool = False,
    score_vad: str = "auto",
    test_utterances: int | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Train one encoder per held-out engine (and pooling); score every baseline on the same
    trials. ``row["ours"]`` is ``pooling``'s score; ``row["poolings"]`` has every pooling's.
    With ``channel_test`` each held-out engine gets a second row (``row["condition"] ==
    "channel"``): the same trials and encoders, each test clip through its own
    :func:`test_channel` (seeded by ``channel_seed`` and the clip), so target trials cross
    channels; clean rows have ``condition == "clean"``. Several ``channel_seed`` values give
    one channel row per seed (``row["channel_seed"]``), all with the same encoders.
    ``feature_cache``: a folder where the training features are kept between runs.
    ``save_encoders``: a folder where each held-out engine's encoder (the first pooling's) is
    saved as ``held_out_<engine>.pt``.
    ``ensemble``: folders written by ``save_encoders`` (one per training seed of one recipe):
    nothing is trained; each held-out engine is scored with the mean of the L2-normalised
    embeddings of the folders' encoders for it (:class:`Ensemble`, ``"ensemble"``, the
    ``ours`` columns) and with each encoder alone (``"member <k>"``: extra columns), on the
    same trials and channels as the runs that saved them.
    ``copy_seeds``: draw the training copies as several cached sets (:func:`_train_features`).
    ``score_norm_grid``: each row also gets ``row["norm"][name]`` (every encoder and
    ``"logmel"``): :func:`norm_grid` with the clean utterances of the encoder's training voices
    (commercial ones with ``commercial_only``, other engines, no test person) as the ``train``
    cohort and, with ``feature_cache``, the same voices' training items with their channel
    copies (``train-aug``; in ``ensemble`` mode the cached set of ``cfg.seed``'s draw).
    ``score_vad``: the energy VAD when embedding test clips and cohorts (``"auto"`` follows
    ``cfg.vad``, which also trains with it; ``"on"`` with encoders trained without it is VAD at
    scoring only); the "shipped" column follows its own config under ``"auto"``. The log-mel
    statistics never get it.
    ``test_utterances`` (below ``utterances``): the pool is :func:`extend_pool`'s, training
    voices get all ``utterances`` sentences each, and a held-out engine is tested only on the
    ``test_utterances``-per-voice pool's clips (the same trials and channel draws as a run of
    that smaller pool)."""
    from speechattn.recipes.speaker.model import load_checkpoint, save_encoder
    from speechattn.recipes.speaker.train import train_encoder

    if ensemble and (save_encoders is not None or save_checkpoint is not None):
        raise ValueError("--ensemble scores saved encoders: it trains and saves nothing.")
    use_vad = E.resolve_vad(score_vad, cfg)
    vad_db = cfg.vad_range_db
    t0 = time.perf_counter()
    manifest = build_pool(
        cache, engines, espeak_voices, utterances, seed=pool_seed, test_utterances=test_utterances
    )
    engine_of = _engine_of(manifest)
    utts = D.load_speaker_corpus(manifest)
    present = sorted({engine_of[u.id] for u in utts})
    log(f"pool: {len(utts)} utterances, engines {present} ({time.perf_counter() - t0:.0f} s)")
    testable = _base_ids(manifest)
    if len(testable) < len(utts):
        log(f"test clips: the {len(testable)} utterances of the {test_utterances}-per-voice pool")
    names = tuple(poolings) if poolings else (pooling,)
    if ensemble:
        names = ("ensemble", *(f"member {k}" for k in range(len(ensemble))))
    trainable = {u.id for u in (D.commercial_filter(utts)[0] if cfg.commercial_only else utts)}
    dropped = sorted({u.voice or "" for u in utts if u.id not in trainable})
    if dropped:
        log(f"commercial_only: not trained on {', '.join(dropped)}")
    extra: list[D.SpeakerUtterance] = []
    if mixtures is not None:
        extra = D.load_speaker_corpus(mixtures)
        engine_of.update(_engine_of(mixtures))
        if cfg.commercial_only:
            extra = D.commercial_filter(extra)[0]
        log(f"derived training voices: {len({u.label for u in extra})}, {len(extra)} utterances")

    def train_features() -> D.FeatureSet:
        return _train_features(
            [u for u in utts if u.id in trainable] + extra,
            cfg,
            {u.label for u in utts} | {u.label for u in extra},
            feature_cache,
            log,
            copy_seeds,
        )

    train_all = D.FeatureSet([], [], [], []) if ensemble else train_features()
    aug_cohort = None
    if score_norm_grid and feature_cache is not None:
        # the training items with their channel copies (the cached set of cfg.seed's draw)
        aug_cohort = train_all if train_all.feats else train_features()
    engine_of_aug = [engine_of[i] for i in aug_cohort.ids] if aug_cohort is not None else []
    clean = D.load_feature_set(utts, cfg)
    # the envelope statistics need log-mels that keep their band means
    env_cfg = SpeakerConfig(**{**cfg.to_dict(), "feature_norm": "gain"})
    env_clean = clean if cfg.feature_norm == "gain" else D.load_feature_set(utts, env_cfg)
    eng_of_item = [engine_of[i] for i in train_all.ids]
    clean_eng = [engine_of[i] for i in clean.ids]
    voices_of = {
        e: sorted({lab for lab, g in zip(clean.labels, clean_eng) if g == e}) for e in present
    }
    log(
        f"features: {len(train_all.feats)} training items, {len(clean.feats)} clean; "
        f"voices per engine { {e: len(v) for e, v in voices_of.items()} } "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    shipped, ship_cfg = load_checkpoint(shipped_checkpoint)
    path_of = {u.id: u.audio_path for u in utts}
    rows = []
    for held in present:
        if held_out and held not in held_out:
            continue
        # test set: clean utterances of the held-out engine (+ pseudo-speakers if few voices)
        te = [i for i, g in enumerate(clean_eng) if g == held and clean.ids[i] in testable]
        te_feats = [clean.feats[i] for i in te]
        te_env = [env_clean.feats[i] for i in te]
        te_spk = [clean.labels[i] for i in te]
        te_src: list[tuple[Path, float, float]] = [(path_of[clean.ids[i]], 1.0, 0.0) for i in te]
        pseudo = len(voices_of[held]) < min_test_voices
        if pseudo:
            from speechattn.data.audio import load_audio

            ext = D.feature_extractor(cfg)
            env_ext = D.feature_extractor(env_cfg)
            for i in te:
                x = load_audio(path_of[clean.ids[i]], sample_rate=cfg.sample_rate).numpy()
                for f in test_pseudo:
                    y = torch.from_numpy(D.speed_perturb(x, cfg.sample_rate, f))
                    te_feats.append(D.features(y, ext))
                    te_env.append(D.features(y, env_ext))
                    te_spk.append(f"{clean.labels[i]}@test-speed{f:g}")
                    te_src.append((path_of[clean.ids[i]], f, 0.0))
        test_persons = set(voices_of[held])
        tr = [
            i
            for i, (g, lab) in enumerate(zip(eng_of_item, train_all.labels))
            if g != held and lab.split("@", 1)[0] not in test_persons
        ]
        classes = sorted({train_all.labels[i] for i in tr})
        index = {c: k for k, c in enumerate(classes)}
        cohort_ids = [
            i
            for i, g in enumerate(clean_eng)
            if g != held
            and clean.ids[i] in trainable
            and clean.labels[i].split("@", 1)[0] not in test_persons
        ]
        cohort_feats = [clean.feats[i] for i in cohort_ids]
        cohort_labels = [clean.labels[i] for i in cohort_ids]
        t1 = time.perf_counter()
        if ensemble:
            members = [_load_member(encoder_path(d, held), cfg) for d in ensemble]
            models: dict[str, Any] = {"ensemble": SpeakerEnsemble(members)}
            models.update({f"member {k}": m for k, m in enumerate(members)})
        else:
            models = {
                name: train_encoder(
                    name,
                    [train_all.feats[i] for i in tr],
                    [index[train_all.labels[i]] for i in tr],
                    cfg,
                    progress=False,
                ).model
                for name in names
            }
        train_s = time.perf_counter() - t1
        if save_encoders is not None:
            save_encoder(models[names[0]], names[0], cfg, encoder_path(save_encoders, held))
        conditions: list[tuple[str, list[np.ndarray] | None, int | None]] = [("clean", None, None)]
        if channel_test:
            seeds = (channel_seed,) if isinstance(channel_seed, int) else tuple(channel_seed)
            for ch_seed in seeds:
                waves = _test_waves(te_src, cfg.sample_rate, test_channel(), ch_seed)
                conditions.append(("channel", waves, ch_seed if len(seeds) > 1 else None))
        cohort_emb: dict[str, dict[str, tuple[torch.Tensor, list[str]]]] = {}
        cohort_sets = {"train": (cohort_feats, cohort_labels)}
        if aug_cohort is not None:  # the same voices' items with their channel copies
            voices = set(cohort_labels)
            keep = [
                i
                for i, (g, lab) in enumerate(zip(engine_of_aug, aug_cohort.labels))
                if g != held and lab in voices
            ]
            cohort_sets["train-aug"] = (
                [aug_cohort.feats[i] for i in keep],
                [aug_cohort.labels[i] for i in keep],
            )
        for condition, ch_waves, ch_seed in conditions:
            if ch_waves is not None:
                ext = D.feature_extractor(cfg)
                env_ext = D.feature_extractor(env_cfg)
                te_feats = [D.features(torch.from_numpy(x), ext) for x in ch_waves]
                te_env = [D.features(torch.from_numpy(x), env_ext) for x in ch_waves]
            scores: dict[str, dict[str, float]] = {}
            grids: dict[str, dict[str, dict[str, float]]] = {}
            if score_norm_grid:
                grids["logmel"] = norm_grid(
                    E.stats_baseline(te_feats, centre=False),
                    te_spk,
                    {
                        c: (E.stats_baseline(f, centre=False), lab)
                        for c, (f, lab) in cohort_sets.items()
                    },
                )
            for name, model in models.items():
                emb = E.embed_features(model, te_feats, vad=use_vad, vad_range_db=vad_db)
                if score_norm_grid:
                    if name not in cohort_emb:
                        cohort_emb[name] = {
                            c: (E.embed_features(model, f, vad=use_vad, vad_range_db=vad_db), lab)
                            for c, (f, lab) in cohort_sets.items()
                        }
                    grids[name] = norm_grid(emb, te_spk, cohort_emb[name])
                scores[name], scores[f"{name} raw"] = _score2(emb, te_spk)
                # fusion: the centred embedding next to the envelope statistics, equal weights
                fused = torch.cat([E.centre_embeddings(emb), E.envelope_baseline(te_env)], 1)
                scores[f"{name} fused"] = _score(F.normalize(fused, dim=-1), te_spk)
            row: dict[str, Any] = {
                "held_out": held,
                "condition": condition,
                "channel_seed": ch_seed,
                "test_voices": len(voices_of[held]),
                "test_speakers": len(set(te_spk)),
                "pseudo": pseudo,
                "test_items": len(te_feats),
                "train_classes": len(classes),
                "train_items": len(tr),
                "train_s": train_s,
                "ours": scores[names[0]],
                "ours_raw": scores[f"{names[0]} raw"],
                "poolings": {n: scores[n] for n in names},
                "poolings_raw": {n: scores[f"{n} raw"] for n in names},
                "ours_fused": scores[f"{names[0]} fused"],
            }
            if score_norm_grid:
                row["norm"] = grids
                row["cohort_voices"] = len(set(cohort_labels))
                row["cohort_items"] = {c: len(lab) for c, (_, lab) in cohort_sets.items()}
            if (ship_cfg.n_mels, ship_cfg.sample_rate) == (cfg.n_mels, cfg.sample_rate):
                ship_feats = [D.normalise_features(f, ship_cfg.feature_norm) for f in te_env]
                ship_vad = E.resolve_vad(score_vad, ship_cfg)
                row["shipped"], row["shipped_raw"] = _score2(
                    E.embed_features(
                        shipped, ship_feats, vad=ship_vad, vad_range_db=ship_cfg.vad_range_db
                    ),
                    te_spk,
                )
            row["logmel"] = _score(E.stats_baseline(te_feats), te_spk)
            row["envelope"] = _score(E.envelope_baseline(te_env), te_spk)
            if resemblyzer:
                rz_waves = (
                    ch_waves if ch_waves is not None else _test_waves(te_src, cfg.sample_rate)
                )
                emb = _resemblyzer_embed(rz_waves, cfg.sample_rate)
                if emb is not None:
                    row["resemblyzer_centred"], row["resemblyzer"] = _score2(emb, te_spk)
            rows.append(row)
            log(_fmt_row(row, list(names[1:])) + f"  (train {train_s:.0f} s)")
    result: dict[str, Any] = {
        "rows": rows,
        "derived_voices": sorted({u.voice or u.label for u in extra}),
        "config": cfg.to_dict(),
        "pooling": names[0],
        "poolings": list(names),
        "not_trained_on": dropped,
        "ensemble": [str(d) for d in ensemble],
        "copy_seeds": list(copy_seeds),
        "score_vad": use_vad,
    }
    if save_checkpoint is not None:
        classes = sorted(set(train_all.labels))
        index = {c: k for k, c in enumerate(classes)}
        model = train_encoder(
            names[0], train_all.feats, [index[lab] for lab in train_all.labels], cfg, progress=False
        ).model
        derived = sorted({u.voice or u.label for u in extra})
        save_encoder(model, names[0], cfg, save_checkpoint, derived_voices=derived)
        result["checkpoint"] = str(save_checkpoint)
        log(f"saved the all-engines encoder to {save_checkpoint}")
    result["wall_s"] = time.perf_counter() - t0
    return result


def stats_table(
    cache: Path, engines: list[str], espeak_voices: int, utterances: int, *, pool_seed: int = 0
) -> str:
    """No training: EER % of untrained log-mel statistics per engine (every pair of the engine's
    clean utterances), each set-centred and L2-normalised unless said otherwise. Shows what the
    per-utterance band-mean normalisation (CMN) removes from the voices of an engine."""
    manifest = build_pool(cache, engines, espeak_voices, utterances, seed=pool_seed)
    engine_of = _engine_of(manifest)
    utts = D.load_speaker_corpus(manifest)
    gain = D.load_feature_set(utts, SpeakerConfig(feature_norm="gain"))
    eng = [engine_of[i] for i in gain.ids]

    def centred(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x - x.mean(0, keepdim=True), dim=-1)

    def cmn(f: torch.Tensor) -> torch.Tensor:
        return f - f.mean(0, keepdim=True)

    def band_means(fs: list[torch.Tensor]) -> torch.Tensor:
        m = torch.stack([f.mean(0) for f in fs])
        return m - m.mean(1, keepdim=True)  # the utterance level removed

    def std(fs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([f.std(0, unbiased=False) for f in fs])

    stats: dict[str, Any] = {
        "CMN std + mean magnitude (the log-mel baseline)": E.stats_baseline,
        "same, not centred": lambda fs: F.normalize(
            torch.stack(
                [torch.cat([cmn(f).std(0, unbiased=False), cmn(f).abs().mean(0)]) for f in fs]
            ),
            dim=-1,
        ),
        "CMN std only": lambda fs: centred(std(fs)),
        "band means, level removed (envelope)": lambda fs: centred(band_means(fs)),
        "envelope + std (envelope statistics)": E.envelope_baseline,
    }
    names = sorted(set(eng))
    lines = [
        "| statistic | " + " | ".join(names) + " | mean without espeak and 1-2 voice engines |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for title, fn in stats.items():
        cells, keep = [], []
        for e in names:
            idx = [i for i, g in enumerate(eng) if g == e]
            spk = [gain.labels[i] for i in idx]
            if len(set(spk)) < 2:
                cells.append("n/a")
                continue
            r = _score(fn([gain.feats[i] for i in idx]), spk)
            cells.append(f"{100 * r['eer']:.1f}")
            if e != "espeak" and len(set(spk)) >= 3:
                keep.append(100 * r["eer"])
        mean = f"{np.mean(keep):.1f}" if keep else "n/a"
        lines.append(f"| {title} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


_COLS = (
    ("ours", "ours, other engines"),
    ("ours_raw", "ours, raw cosine"),
    ("shipped", "shipped"),
    ("shipped_raw", "shipped, raw cosine"),
    ("logmel", "log-mel mean/std"),
    ("envelope", "log-mel envelope/std"),
    ("resemblyzer", "Resemblyzer"),
    ("resemblyzer_centred", "Resemblyzer, centred"),
    ("ours_fused", "ours + envelope statistics"),
)


def _extra_poolings(rows: list[dict[str, Any]]) -> list[str]:
    """Poolings after the first ('ours'), when a run trained several."""
    names = list(rows[0].get("poolings", {})) if rows else []
    return names[1:]


def _cell(r: dict[str, float] | None) -> str:
    return "n/a" if r is None else f"{100 * r['eer']:.1f} / {r['min_dcf']:.3f}"


def _fmt_row(row: dict[str, Any], extra: list[str] | None = None) -> str:
    channel = " + test channel" if row.get("condition") == "channel" else ""
    if channel and row.get("channel_seed") is not None:
        channel += f" (seed {row['channel_seed']})"
    cells = [
        f"{row['held_out']}{' (pseudo)' if row['pseudo'] else ''}{channel}",
        f"{row['test_voices']} / {row['test_speakers']} / {row['test_items']}",
    ]
    cells += [_cell(row.get(key)) for key, _ in _COLS]
    cells += [_cell(row.get("poolings", {}).get(name)) for name in extra or []]
    return "| " + " | ".join(cells) + " |"


def _is_channel(row: dict[str, Any]) -> bool:
    return bool(row.get("condition") == "channel")


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of :func:`run_loeo`'s rows (EER % / minDCF); one more column per
    extra pooling when several were trained. Channel-test rows (``condition == "channel"``)
    are marked ``+ test channel`` and get their own mean rows after the clean ones."""
    extra = _extra_poolings(rows)
    first = rows[0].get("poolings") if rows else None
    ours = f"ours ({next(iter(first))}), other engines" if first and extra else _COLS[0][1]
    names = [ours] + [name for _, name in _COLS[1:]] + [f"ours ({n})" for n in extra]
    head = "| held-out engine | voices / test speakers / utts | " + " | ".join(names) + " |"
    lines = [head, "|---|---|" + "---:|" * len(names)]
    lines += [_fmt_row(r, extra) for r in rows]
    getters = [lambda r, k=key: r.get(k) for key, _ in _COLS] + [
        lambda r, n=n: r.get("poolings", {}).get(n) for n in extra
    ]
    groups: list[tuple[str, int | None]] = [("clean", None)]
    for r in rows:
        key = (str(r.get("condition", "clean")), r.get("channel_seed"))
        if key not in groups:
            groups.append(key)
    for condition, ch_seed in groups:
        tail = ", test channels" if condition == "channel" else ""
        if condition == "channel" and ch_seed is not None:
            tail += f" (seed {ch_seed})"

        def in_group(r: dict[str, Any], c: str = condition, s: int | None = ch_seed) -> bool:
            return _is_channel(r) == (c == "channel") and (
                c != "channel" or r.get("channel_seed") == s
            )

        for title, pick in (
            (f"mean EER, engines with >= 3 voices{tail}", lambda r: not r["pseudo"]),
            # espeak-trained encoders (the espeak-only one shipped before) learned espeak voices
            (
                f"same, without espeak{tail}",
                lambda r: not r["pseudo"] and r["held_out"] != "espeak",
            ),
        ):
            means = []
            for get in getters:
                vals = [
                    get(r)["eer"] for r in rows if get(r) is not None and pick(r) and in_group(r)
                ]
                means.append(f"{100 * float(np.mean(vals)):.1f}" if vals else "n/a")
            lines.append(f"| {title} | | " + " | ".join(means) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default="runs/loeo", help="pool cache dir (synthesised if missing)")
    ap.add_argument("--out", default=None, help="write table.md and result.json here")
    ap.add_argument("--engines", default=",".join(DEFAULT_ENGINES))
    ap.add_argument(
        "--espeak-voices",
        type=int,
        default=16,
        help="at least; raised to the largest engine's count",
    )
    ap.add_argument("--utterances", type=int, default=8, help="per voice")
    ap.add_argument(
        "--poolings",
        nargs="+",
        default=["ASTP"],
        choices=POOLINGS,
        help="pooling layers to train per held-out engine (the first is 'ours' and is saved)",
    )
    add_hidden_alias(ap, "--pooling", "poolings")
    ap.add_argument("--held-out", nargs="+", default=None, help="hold out only these engines")
    ap.add_argument("--pool-seed", type=int, default=0, help="voices and sentences of the pool")
    ap.add_argument(
        "--test-utterances",
        type=int,
        default=None,
        help="below --utterances: the pool is the pool of this many per voice plus new sentences "
        "for training; held-out engines are tested only on the smaller pool's clips",
    )
    ap.add_argument("--p-real-room", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--save-checkpoint", default=None)
    ap.add_argument(
        "--shipped-checkpoint",
        default=None,
        help="encoder of the 'shipped' columns (default: the one in speechattn/assets)",
    )
    ap.add_argument("--no-resemblyzer", action="store_true")
    ap.add_argument(
        "--test-channel",
        action="store_true",
        help="also score every column with each test clip through its own random channel "
        "(equaliser, rooms, telephone band + mu-law, noise, 8 / 11 kHz resampling)",
    )
    ap.add_argument(
        "--channel-seed",
        type=int,
        nargs="+",
        default=[0],
        help="seed(s) of the test clips' channels (several: one channel row per seed)",
    )
    ap.add_argument(
        "--feature-cache",
        action="store_true",
        help="keep the training features under --cache/features for runs that differ only in "
        "model or optimisation settings",
    )
    ap.add_argument(
        "--save-encoders",
        default=None,
        help="save each held-out engine's encoder here (held_out_<engine>.pt), for --ensemble",
    )
    ap.add_argument(
        "--ensemble",
        nargs="+",
        default=None,
        help="train nothing: score the mean embedding of the encoders saved by --save-encoders "
        "in these folders (one per training seed), and each alone",
    )
    ap.add_argument(
        "--merge-checkpoints",
        nargs="+",
        default=None,
        help="train nothing: save these encoder files (one recipe, several seeds) as one "
        "ensemble checkpoint at --save-checkpoint, then exit",
    )
    ap.add_argument(
        "--copy-seeds",
        type=int,
        nargs="+",
        default=None,
        help="draw the augment_copies channel copies as equal shares with these seeds (each "
        "share kept in the feature cache on its own: 12 copies from two cached 6-copy sets); "
        "--set seed=... still seeds training",
    )
    ap.add_argument(
        "--kokoro-mixtures",
        type=int,
        default=0,
        help="train also on this many Kokoro style mixtures (pseudo-speakers, synthesised once "
        "into --cache; never test voices, left out when kokoro is held out)",
    )
    ap.add_argument(
        "--mixture-utterances", type=int, default=10, help="utterances per Kokoro style mixture"
    )
    ap.add_argument("--mixture-seed", type=int, default=0, help="draw of the Kokoro mixtures")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="espeak + festival, tiny sizes")
    ap.add_argument(
        "--stats-only",
        action="store_true",
        help="no training: EER of untrained log-mel statistics per engine, then exit",
    )
    ap.add_argument(
        "--score-norm-grid",
        action="store_true",
        help="also score every encoder and the log-mel statistics with S-norm and AS-norm "
        "(top-k 5/10/20/50) against the test list's own files and the training voices "
        "(result.json rows' 'norm')",
    )
    ap.add_argument(
        "--score-vad",
        choices=("auto", "on", "off"),
        default="auto",
        help="energy VAD on the test clips before the encoders: on, off, or auto (the config's "
        "vad, which --set vad=true also trains with); on with vad off = VAD at scoring only",
    )
    ap.add_argument("--set", nargs="*", default=[], help="SpeakerConfig overrides KEY=VALUE")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    random.seed(0)
    cfg = SpeakerConfig(steps=600, speed_perturb=[0.9, 1.1], p_real_room=0.3)
    engines = args.engines.split(",")
    if args.quick:
        cfg = SpeakerConfig.quick()
        cfg.augment_copies = 1
        engines = ["espeak", "festival"]
        args.espeak_voices, args.utterances = 4, 3
    if args.p_real_room is not None:  # older spelling of --set p_real_room=...
        cfg.p_real_room = args.p_real_room
    if isinstance(args.poolings, str):
        args.poolings = [args.poolings]
    try:
        for key, val in parse_overrides(args.set, cfg.to_dict()).items():
            setattr(cfg, key, val)
        cfg.validated()
    except (CliError, ValueError) as exc:
        print(f"speaker_loeo: error: {exc}", file=sys.stderr)
        return 2
    if args.stats_only:
        print(
            stats_table(
                Path(args.cache),
                engines,
                args.espeak_voices,
                args.utterances,
                pool_seed=args.pool_seed,
            )
        )
        return 0
    if args.merge_checkpoints:
        if not args.save_checkpoint:
            print(
                "speaker_loeo: error: --merge-checkpoints needs --save-checkpoint", file=sys.stderr
            )
            return 2
        try:
            path = merge_checkpoints(
                [Path(p) for p in args.merge_checkpoints], Path(args.save_checkpoint)
            )
        except (FileNotFoundError, ValueError) as exc:
            print(f"speaker_loeo: error: {exc}", file=sys.stderr)
            return 2
        print(f"saved an ensemble of {len(args.merge_checkpoints)} encoders to {path}")
        return 0
    missing = [d for d in args.ensemble or () if not Path(d).is_dir()]
    if missing:
        print(f"speaker_loeo: error: --ensemble: no folder {missing[0]}", file=sys.stderr)
        return 2
    mixtures = None
    if args.kokoro_mixtures > 0:
        mixtures = build_mixture_pool(
            Path(args.cache), args.kokoro_mixtures, args.mixture_utterances, seed=args.mixture_seed
        )
    try:
        result = run_loeo(
            Path(args.cache),
            cfg,
            engines=engines,
            espeak_voices=args.espeak_voices,
            utterances=args.utterances,
            poolings=tuple(args.poolings),
            held_out=tuple(args.held_out) if args.held_out else None,
            save_checkpoint=Path(args.save_checkpoint) if args.save_checkpoint else None,
            resemblyzer=not args.no_resemblyzer,
            pool_seed=args.pool_seed,
            shipped_checkpoint=Path(args.shipped_checkpoint) if args.shipped_checkpoint else None,
            channel_test=args.test_channel,
            channel_seed=tuple(args.channel_seed),
            mixtures=mixtures,
            feature_cache=Path(args.cache) / "features" if args.feature_cache else None,
            save_encoders=Path(args.save_encoders) if args.save_encoders else None,
            ensemble=tuple(Path(d) for d in args.ensemble or ()),
            copy_seeds=tuple(args.copy_seeds or ()),
            score_norm_grid=args.score_norm_grid,
            score_vad=args.score_vad,
            test_utterances=args.test_utterances,
            log=lambda s: print(s, flush=True),
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"speaker_loeo: error: {exc}", file=sys.stderr)
        return 2
    md = table(result["rows"])
    print(md)
    print(f"wall {result['wall_s']:.0f} s")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(md + "\n")
        (out / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
