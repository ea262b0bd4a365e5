"""Stand-in voices for speaker tests: a 1 s vibrato tone whose pitch and vibrato depend on the seed."""

from __future__ import annotations

import numpy as np

__all__ = ["SR", "toy_voice"]

SR = 16000


def toy_voice(seed: int) -> np.ndarray:
    """One second ``(SR,)`` float32 of a vibrato tone plus a little noise, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    f0 = 100.0 + 35 * (seed % 4)
    wave = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.05 * np.sin((5 + seed) * t)))
    return (wave + 0.01 * rng.normal(size=t.size)).astype(np.float32)
