"""Slow loop reference of the energy VAD (:func:`speechattn.functional.vad.energy_vad`), written
from the rule in plain Python floats (float64): per frame log-energy, threshold under a quantile,
window vote, minimum kept frames."""

from __future__ import annotations

import math

__all__ = ["energy_vad_ref"]


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's / torch's default)."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def energy_vad_ref(
    frames: list[list[float]],
    *,
    range_db: float,
    ref_quantile: float,
    context: int,
    proportion: float,
    min_frames: int,
) -> list[bool]:
    """Which of the frames ``(T, M)`` (natural-log mel powers) are kept."""
    energy = []
    for row in frames:
        top = max(row)
        energy.append(top + math.log(sum(math.exp(v - top) for v in row)))
    threshold = _quantile(energy, ref_quantile) - range_db / 10.0 * math.log(10.0)
    loud = [e >= threshold for e in energy]
    n = len(frames)
    keep = []
    for t in range(n):
        window = loud[max(0, t - context) : min(n, t + context + 1)]
        keep.append(sum(window) >= proportion * len(window) - 1e-9)
    if sum(keep) < min_frames:
        keep = [True] * n
    return keep
