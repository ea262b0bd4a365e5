"""Thin modules: parameters and buffers; forward is one functional call."""

from speechattn.nn.attention import AttentionOutput, AttentionPrior, PriorMultiheadAttention

__all__: list[str] = []
__all__ += ["AttentionOutput", "AttentionPrior", "PriorMultiheadAttention"]

from speechattn.nn.speech_transformer import (  # noqa: E402
    Conv2dSubsampling,
    SpeechTransformerDecoder,
    SpeechTransformerDecoderLayer,
    SpeechTransformerEncoder,
    SpeechTransformerEncoderLayer,
)

__all__ += [
    "Conv2dSubsampling",
    "SpeechTransformerDecoder",
    "SpeechTransformerDecoderLayer",
    "SpeechTransformerEncoder",
    "SpeechTransformerEncoderLayer",
]
