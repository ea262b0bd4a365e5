"""Corpora, text front end, features and collate. Heavy dependencies import lazily.

Submodules: :mod:`~speechattn.data.synth` (espeak-ng speech with exact word/phone timings),
:mod:`~speechattn.data.text` (normalisation, IPA phonemes, symbol tables),
:mod:`~speechattn.data.features` (log-mel, frame durations), :mod:`~speechattn.data.audio`,
:mod:`~speechattn.data.corpus` (manifest / LJSpeech / folder / asterisk corpora).
"""

__all__: list[str] = []
