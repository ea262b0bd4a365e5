"""Pure math: one module per mechanism. Everything here is differentiable torch code."""

from speechattn.functional.masks import check_lengths, lengths_to_valid_mask, valid_mask_to_lengths
from speechattn.functional.monotonic import (
    MonotonicPath,
    alignment_to_durations,
    focus_rate,
    monotonic_viterbi,
    stepwise_monotonic_alignment,
)

__all__ = [
    "MonotonicPath",
    "alignment_to_durations",
    "check_lengths",
    "focus_rate",
    "lengths_to_valid_mask",
    "monotonic_viterbi",
    "stepwise_monotonic_alignment",
    "valid_mask_to_lengths",
]
