"""Pure math: one module per mechanism. Everything here is differentiable torch code."""

from speechattn.functional.alignment import (
    AlignmentPath,
    forward_sum_loss,
    monotonic_alignment_search,
    monotonic_hmm_log_likelihood,
    monotonic_hmm_viterbi,
)
from speechattn.functional.masks import check_lengths, lengths_to_valid_mask, valid_mask_to_lengths
from speechattn.functional.monotonic import (
    MonotonicPath,
    alignment_to_durations,
    focus_rate,
    monotonic_viterbi,
    stepwise_monotonic_alignment,
)

__all__ = [
    "AlignmentPath",
    "MonotonicPath",
    "alignment_to_durations",
    "check_lengths",
    "focus_rate",
    "forward_sum_loss",
    "lengths_to_valid_mask",
    "monotonic_alignment_search",
    "monotonic_hmm_log_likelihood",
    "monotonic_hmm_viterbi",
    "monotonic_viterbi",
    "stepwise_monotonic_alignment",
    "valid_mask_to_lengths",
]
