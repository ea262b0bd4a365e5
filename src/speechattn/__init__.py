"""speechattn: attention mechanisms for speech.

Stepwise monotonic multi-head attention, diagonal alignment priors, attentive
statistics pooling and audio-to-text-encoder alignment, with the recipes that
show them working.
"""

from speechattn._version import __version__

__all__ = ["__version__"]
