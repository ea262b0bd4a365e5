"""Unsupervised text-to-speech alignment with stepwise monotonic attention, and its baselines.

Modules: :mod:`~speechattn.recipes.align.model` (aligners), :mod:`~speechattn.recipes.align.data`
(front end to tokens + log-mels), :mod:`~speechattn.recipes.align.train` (resumable, DDP training),
:mod:`~speechattn.recipes.align.evaluate` (durations, intervals, boundary metrics, TextGrid/JSON),
:mod:`~speechattn.recipes.align.report` (HTML + PNG), :mod:`~speechattn.recipes.align.pipeline`
(``speechattn demo`` and ``speechattn align``), :mod:`~speechattn.recipes.align.cli`.
"""

__all__: list[str] = []
