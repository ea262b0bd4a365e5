"""Audio -> text-encoder embeddings: model, training, retrieval eval, image generation.

Heavy dependencies (transformers, diffusers, gradio) are imported inside the functions that use
them; importing this package only needs torch.
"""

from speechattn.recipes.audio2clip.metrics import (
    RetrievalMetrics,
    retrieval_metrics,
    sequence_similarity,
)
from speechattn.recipes.audio2clip.model import (
    SEED_ADAPTER_SETTINGS,
    AudioEncoderOutput,
    AudioToTextEncoder,
    LengthMatcher,
)

__all__ = [
    "SEED_ADAPTER_SETTINGS",
    "AudioEncoderOutput",
    "AudioToTextEncoder",
    "LengthMatcher",
    "RetrievalMetrics",
    "retrieval_metrics",
    "sequence_similarity",
]
