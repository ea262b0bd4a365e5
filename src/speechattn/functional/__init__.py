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
from speechattn.functional.priors import (
    BetaBinomialPrior,
    DiagonalPrior,
    PriorAttentionOutput,
    beta_binomial_bias,
    beta_binomial_prior,
    diagonal_bias,
    diagonal_score_mod,
    guided_attention_loss,
    guided_attention_weights,
    post_softmax_penalty_attention,
    prior_attention,
    seed_attention_penalty,
)

__all__ = [
    "AlignmentPath",
    "BetaBinomialPrior",
    "DiagonalPrior",
    "MonotonicPath",
    "PriorAttentionOutput",
    "alignment_to_durations",
    "beta_binomial_bias",
    "beta_binomial_prior",
    "check_lengths",
    "diagonal_bias",
    "diagonal_score_mod",
    "focus_rate",
    "forward_sum_loss",
    "guided_attention_loss",
    "guided_attention_weights",
    "lengths_to_valid_mask",
    "monotonic_alignment_search",
    "monotonic_hmm_log_likelihood",
    "monotonic_hmm_viterbi",
    "monotonic_viterbi",
    "post_softmax_penalty_attention",
    "prior_attention",
    "seed_attention_penalty",
    "stepwise_monotonic_alignment",
    "valid_mask_to_lengths",
]
