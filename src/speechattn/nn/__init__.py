"""Thin modules: parameters and buffers; forward is one functional call."""

# Generated from each submodule's __all__; keep one import per module.

from speechattn.nn.attention import (
    AttentionOutput,
    AttentionPrior,
    PriorMultiheadAttention,
)
from speechattn.nn.contrastive import (
    PooledContrastiveLoss,
    SequenceContrastiveLoss,
)
from speechattn.nn.monotonic import (
    SMAOutput,
    StepwiseMonotonicMultiheadAttention,
)
from speechattn.nn.pooling import (
    ASP,
    ASTP,
    MHASTP,
    MQMHASTP,
    TAP,
    TSDP,
    TSTP,
    export_pooling_onnx,
)
from speechattn.nn.speech_transformer import (
    Conv2dSubsampling,
    DecoderLayerOutput,
    EncoderLayerOutput,
    EncoderOutput,
    SpeechTransformerDecoder,
    SpeechTransformerDecoderLayer,
    SpeechTransformerEncoder,
    SpeechTransformerEncoderLayer,
    sinusoidal_positions,
)

__all__ = [
    "ASP",
    "ASTP",
    "MHASTP",
    "MQMHASTP",
    "TAP",
    "TSDP",
    "TSTP",
    "AttentionOutput",
    "AttentionPrior",
    "Conv2dSubsampling",
    "DecoderLayerOutput",
    "EncoderLayerOutput",
    "EncoderOutput",
    "PooledContrastiveLoss",
    "PriorMultiheadAttention",
    "SMAOutput",
    "SequenceContrastiveLoss",
    "SpeechTransformerDecoder",
    "SpeechTransformerDecoderLayer",
    "SpeechTransformerEncoder",
    "SpeechTransformerEncoderLayer",
    "StepwiseMonotonicMultiheadAttention",
    "export_pooling_onnx",
    "sinusoidal_positions",
]
