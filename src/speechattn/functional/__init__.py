"""Pure math: one module per mechanism. Everything here is differentiable torch code."""

# Generated from each submodule's __all__; keep one import per module.

from speechattn.functional.alignment import (
    AlignmentPath,
    forward_sum_loss,
    mask_token_logits,
    monotonic_alignment_search,
    monotonic_hmm_log_likelihood,
    monotonic_hmm_viterbi,
    uniform_durations,
)
from speechattn.functional.contrastive import (
    pooled_contrastive_loss,
    sequence_contrastive_loss,
)
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
from speechattn.functional.pooling import (
    PoolingInput,
    attentive_mean_std,
    attentive_mean_var,
    attentive_pool_mean_std,
    attentive_statistics_pooling,
    head_attentive_statistics,
    masked_batch_norm,
    masked_softmax,
    multi_head_attentive_statistics_pooling,
    prepare_pooling_input,
    temporal_mean_std,
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
    "MonotonicAttentionResult",
    "MonotonicPath",
    "PoolingInput",
    "PriorAttentionOutput",
    "alignment_to_durations",
    "attentive_mean_std",
    "attentive_mean_var",
    "attentive_pool_mean_std",
    "attentive_statistics_pooling",
    "beta_binomial_bias",
    "beta_binomial_prior",
    "check_lengths",
    "diagonal_bias",
    "diagonal_score_mod",
    "expected_stay_prob",
    "focus_rate",
    "forward_sum_loss",
    "guided_attention_loss",
    "guided_attention_weights",
    "head_attentive_statistics",
    "lengths_to_valid_mask",
    "mask_token_logits",
    "masked_batch_norm",
    "masked_softmax",
    "monotonic_alignment_search",
    "monotonic_hmm_log_likelihood",
    "monotonic_hmm_viterbi",
    "monotonic_viterbi",
    "multi_head_attentive_statistics_pooling",
    "pooled_contrastive_loss",
    "post_softmax_penalty_attention",
    "prepare_pooling_input",
    "prior_attention",
    "seed_attention_penalty",
    "select_heads",
    "sequence_contrastive_loss",
    "stepwise_monotonic_alignment",
    "stepwise_monotonic_attention",
    "temporal_mean_std",
    "uniform_durations",
    "valid_mask_to_lengths",
]
