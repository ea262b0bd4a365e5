"""Settings of a speaker run (and of a checkpoint): :class:`SpeakerConfig`. No torch import."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["CHANNEL_PROBABILITIES", "FEATURE_NORMS", "POOLINGS", "TRUNKS", "SpeakerConfig"]

#: Pooling layer names, in WeSpeaker's order (classes of :mod:`speechattn.nn.pooling`).
POOLINGS: tuple[str, ...] = ("TAP", "TSDP", "TSTP", "ASTP", "MHASTP", "MQMHASTP", "ASP")
#: Frame-level encoders: the thin x-vector TDNN, or ECAPA-TDNN-style SE-Res2Net blocks.
TRUNKS: tuple[str, ...] = ("tdnn", "ecapa")
#: Per-utterance normalisation of the log-mels: each band's mean (CMN), or the level only.
FEATURE_NORMS: tuple[str, ...] = ("cmn", "gain")
#: The training channel's probability settings (fields of :class:`SpeakerConfig`, each in [0, 1]).
CHANNEL_PROBABILITIES: tuple[str, ...] = (
    "p_eq",
    "p_reverb",
    "p_real_room",
    "p_telephone",
    "p_mu_law",
    "p_noise",
    "p_resample",
)


@dataclass
class SpeakerConfig:
    """Everything a run (and a checkpoint) needs; ``quick()`` gives the smoke-test sizes.

    The defaults (480 training + 40 held-out voices, 12 utterances each, 2000 steps of 48 crops,
    TDNN with 64 channels), without augmentation, give 0.59% EER with ASTP on the held-out voices
    (0.77% and 0.65% on two other draws of 40 held-out voices); fewer voices or steps were clearly
    worse (120 voices / 300 steps: 2.2%; 1000 steps: 0.75% and 1.27%). ``freq_mask`` / ``time_mask``
    (SpecAugment-style masking of one band of up to ``freq_mask`` mel bins and one span of up to
    ``time_mask`` frames per training crop) are off: they slowed convergence at 1000 steps.
    ``augment_copies`` (default 6) adds that many copies of every training utterance through a
    random channel (:class:`speechattn.data.augment.ChannelAugment`: equaliser, room, telephone
    band, mu-law, noise); held-out voices are never augmented. On engines left out of training,
    6 copies instead of 2 lowered the EER on test clips through random channels by 2.35 points
    on average over three training seeds (3.6, 0.6 and 3.0; figures in
    ``benchmarks/RESULTS.md``); 12 copies lowered it by 0.8 more, within the seed spread, so the
    default stays 6; ``quick()`` keeps 2.

    Model: ``trunk`` is ``"tdnn"`` (4 dilated conv layers of ``channels``; the shipped encoder) or
    ``"ecapa"`` (ECAPA-TDNN-style: a conv, 3 SE-Res2Net blocks of ``channels`` with dilations
    2, 3, 4 and ``res2net_scale`` groups, multi-layer feature aggregation to ``3 * channels``);
    any pooling of :data:`POOLINGS` sits on top, then a linear embedding of ``embed_dim``.

    Features: log-mels of ``n_mels`` bins; ``feature_norm`` ``"cmn"`` removes each band's
    utterance mean, ``"gain"`` only the utterance's mean level, so the long-term spectral
    envelope of the voice stays in the input (:class:`speechattn.recipes.speaker.data.SpeakerFrontEnd`).

    Pseudo-speakers: every factor of ``speed_perturb`` (e.g. ``[0.9, 1.1]``) resamples each
    training utterance (tempo and pitch change together, as Kaldi's and WeSpeaker's speed
    perturbation) and every ``pitch_perturb`` value (semitones, e.g. ``[-2, 2]``) shifts its pitch
    at constant tempo, and every ``formant_shift`` factor (e.g. ``[0.85, 1.15]``) scales the
    spectral envelope (formants: a shorter or longer vocal tract) at constant pitch and tempo
    (:func:`speechattn.recipes.speaker.data.formant_shift`); each factor makes a new training
    speaker per speaker. Held-out speakers are never perturbed.

    Channel: ``p_eq``, ``p_reverb``, ``p_real_room`` (a real room impulse response, when a package
    ships them), ``p_telephone``, ``p_mu_law`` and ``p_noise`` are the probabilities of
    :class:`speechattn.data.augment.ChannelAugment` used for the ``augment_copies``. With
    ``p_resample > 0`` a copy first goes, with that probability, through a lower sample rate drawn
    from ``resample_rates`` (band-limiting to its Nyquist frequency, as 8 kHz telephone and
    11.025 kHz recordings are), the channel is applied at that rate and the copy comes back to
    ``sample_rate`` (:class:`speechattn.recipes.align.data.TrainingChannel`); 0 (default) keeps
    the channel of earlier checkpoints, random stream included. ``fast_fft`` runs the channel's
    filters and room convolutions at 5-smooth FFT lengths
    (:func:`speechattn.data.augment.next_fast_length`), about 10 times cheaper than their
    arbitrary lengths; the same filters up to their sampling grid, but not the same audio bit for
    bit, so off by default (checkpoints written before the field existed load with it off).

    Licences: with ``commercial_only``, manifest entries whose ``voice`` is a registry voice
    whose licence forbids commercial use (MBROLA, RHVoice Evgeniy-Eng / Lyubov), or that the
    registry does not know, are left out of training and testing (entries without a ``voice``
    field, i.e. a user's own recordings, are kept). Models the project ships are trained so.

    Voice activity: with ``vad``, an energy VAD drops the non-speech frames of every utterance's
    features before the encoder, in training (before the random crops) and when embedding
    (:func:`speechattn.functional.vad.energy_vad`: frames within ``vad_range_db`` dB of the
    utterance's speech level, Kaldi's defaults translated to level-normalised log-mels). Off by
    default; checkpoints written before the field existed load with it off.

    Training: ``checkpoint_every`` steps a resumable checkpoint goes to ``OUT/checkpoints``;
    ``amp`` uses bfloat16 autocast on CUDA (ignored on CPU).
    """

    train_speakers: int = 480
    test_speakers: int = 40
    utterances_per_speaker: int = 12
    seed: int = 0
    sample_rate: int = 16000
    n_mels: int = 40
    feature_norm: str = "cmn"
    channels: int = 64
    embed_dim: int = 128
    steps: int = 2000
    batch_size: int = 48
    min_frames: int = 100
    max_frames: int = 250
    lr: float = 3e-3
    margin: float = 0.2
    scale: float = 30.0
    freq_mask: int = 0
    time_mask: int = 0
    augment_copies: int = 6
    poolings: list[str] = field(default_factory=lambda: list(POOLINGS))
    trunk: str = "tdnn"
    res2net_scale: int = 4
    speed_perturb: list[float] = field(default_factory=list)
    pitch_perturb: list[float] = field(default_factory=list)
    formant_shift: list[float] = field(default_factory=list)
    p_eq: float = 0.8
    p_reverb: float = 0.3
    p_real_room: float = 0.0
    p_telephone: float = 0.5
    p_mu_law: float = 0.5
    p_noise: float = 0.5
    p_resample: float = 0.0
    resample_rates: list[int] = field(default_factory=lambda: [8000, 11025])
    fast_fft: bool = False
    commercial_only: bool = False
    checkpoint_every: int = 200
    amp: bool = True
    vad: bool = False
    vad_range_db: float = 30.0

    @classmethod
    def quick(cls) -> SpeakerConfig:
        """Seconds-long smoke-test sizes."""
        return cls(
            train_speakers=8,
            test_speakers=4,
            utterances_per_speaker=6,
            channels=32,
            embed_dim=32,
            steps=40,
            batch_size=16,
            min_frames=60,
            max_frames=120,
            augment_copies=2,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpeakerConfig:
        """Rebuild from :meth:`to_dict` output; fields a checkpoint predates take their defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown SpeakerConfig fields {unknown}; known: {sorted(known)}.")
        return cls(**data).validated()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validated(self) -> SpeakerConfig:
        """Check values (raises ``ValueError`` naming the field); coerce list items to float."""
        self.speed_perturb = [float(v) for v in self.speed_perturb]
        self.pitch_perturb = [float(v) for v in self.pitch_perturb]
        self.formant_shift = [float(v) for v in self.formant_shift]
        self.poolings = list(self.poolings)
        for name in (
            "sample_rate",
            "n_mels",
            "channels",
            "embed_dim",
            "steps",
            "batch_size",
            "min_frames",
            "max_frames",
            "res2net_scale",
            "checkpoint_every",
            "utterances_per_speaker",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {name} >= 1 (an int); found {value!r}.")
        for name in ("augment_copies", "freq_mask", "time_mask", "test_speakers", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Expected {name} >= 0 (an int); found {value!r}.")
        if self.min_frames > self.max_frames:
            raise ValueError(
                f"Expected min_frames <= max_frames; found {self.min_frames} > {self.max_frames}."
            )
        if not self.lr > 0 or not self.scale > 0 or not self.margin >= 0:
            raise ValueError(
                f"Expected lr > 0, scale > 0, margin >= 0; found {self.lr}, {self.scale}, {self.margin}."
            )
        if self.feature_norm not in FEATURE_NORMS:
            raise ValueError(
                f"Expected feature_norm in {FEATURE_NORMS}; found {self.feature_norm!r}."
            )
        if self.trunk not in TRUNKS:
            raise ValueError(f"Expected trunk in {TRUNKS}; found {self.trunk!r}.")
        bad = [p for p in self.poolings if p not in POOLINGS]
        if bad or not self.poolings:
            raise ValueError(f"Expected poolings from {POOLINGS}; found {self.poolings}.")
        for f in self.speed_perturb:
            if not 0.5 <= f <= 2.0 or f == 1.0:
                raise ValueError(
                    f"Expected speed_perturb factors in [0.5, 2] other than 1; found {f}."
                )
        for s in self.pitch_perturb:
            if not -12.0 <= s <= 12.0 or s == 0.0:
                raise ValueError(
                    f"Expected pitch_perturb semitones in [-12, 12] other than 0; found {s}."
                )
        for f in self.formant_shift:
            if not 0.7 <= f <= 1.4 or f == 1.0:
                raise ValueError(
                    f"Expected formant_shift factors in [0.7, 1.4] other than 1; found {f}."
                )
        self.resample_rates = list(self.resample_rates)
        bad_rates = [
            r
            for r in self.resample_rates
            if isinstance(r, bool) or not isinstance(r, int) or not 4000 <= r < self.sample_rate
        ]
        if bad_rates or (self.p_resample and not self.resample_rates):
            raise ValueError(
                f"Expected resample_rates: ints in [4000, sample_rate={self.sample_rate}) (at least "
                f"one when p_resample > 0); found {self.resample_rates}."
            )
        for name in CHANNEL_PROBABILITIES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"Expected {name} a probability in [0, 1]; found {value!r}.")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Expected {name} a probability in [0, 1]; found {value!r}.")
            setattr(self, name, float(value))
        if not isinstance(self.commercial_only, bool):
            raise ValueError(
                f"Expected commercial_only true or false; found {self.commercial_only!r}."
            )
        if not isinstance(self.fast_fft, bool):
            raise ValueError(f"Expected fast_fft true or false; found {self.fast_fft!r}.")
        if not isinstance(self.vad, bool):
            raise ValueError(f"Expected vad true or false; found {self.vad!r}.")
        if (
            isinstance(self.vad_range_db, bool)
            or not isinstance(self.vad_range_db, (int, float))
            or not 0.0 < self.vad_range_db <= 120.0
        ):
            raise ValueError(
                f"Expected vad_range_db in (0, 120] (dB); found {self.vad_range_db!r}."
            )
        self.vad_range_db = float(self.vad_range_db)
        if self.trunk == "ecapa" and self.channels % self.res2net_scale:
            raise ValueError(
                f"Expected channels divisible by res2net_scale for the ecapa trunk; found "
                f"channels={self.channels}, res2net_scale={self.res2net_scale}."
            )
        return self
