"""Pure math: one module per mechanism. Everything here is differentiable torch code."""

# Generated from each submodule's __all__; keep one import per module.

from speechattn.functional.masks import (
    check_lengths,
    lengths_to_valid_mask,
    valid_mask_to_lengths,
)
from speechattn.functional.monotonic import (
    MonotonicPath,
    alignment_to_durations,
    focus_rate,
    monotonic_viterbi,
    stepwise_monotonic_alignment,
)
from speechattn.functional.monotonic_attention import (
    MonotonicAttentionResult,
    expected_stay_prob,
    select_heads,
    stepwise_monotonic_attention,
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
    "BetaBinomialPrior",
    "DiagonalPrior",
    "MonotonicAttentionResult",
    "MonotonicPath",
    "PriorAttentionOutput",
    "alignment_to_durations",
    "beta_binomial_bias",
    "beta_binomial_prior",
    "check_lengths",
    "diagonal_bias",
    "diagonal_score_mod",
    "expected_stay_prob",
    "focus_rate",
    "guided_attention_loss",
    "guided_attention_weights",
    "lengths_to_valid_mask",
    "monotonic_viterbi",
    "post_softmax_penalty_attention",
    "prior_attention",
    "seed_attention_penalty",
    "select_heads",
    "stepwise_monotonic_alignment",
    "stepwise_monotonic_attention",
    "valid_mask_to_lengths",
]
