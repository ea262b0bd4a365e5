"""The espeak-ng engine: :func:`speechattn.data.synth.synthesize` behind the engine interface."""

from __future__ import annotations

from speechattn.data._espeak import ENGLISH_LANGUAGES
from speechattn.data.engines import Engine, SpeechResult

__all__: list[str] = []


class EspeakEngine(Engine):
    """espeak-ng through ctypes (exact phone and word events). Voice ids: ``<lang>[+<variant>]``."""

    name = "espeak"
    install = "pip install speechattn[data]"

    def missing(self) -> str | None:
        try:
            import espeakng_loader  # noqa: F401
        except ImportError:
            return "the Python package 'espeakng-loader' is not installed"
        return None

    def installed_voices(self) -> list[str]:
        return list(ENGLISH_LANGUAGES) if self.missing() is None else []

    def _check_voice(self, voice_id: str) -> None:
        # variants ("en-us+m3", random "sa-s<seed>-<k>") are checked by synth.synthesize
        if voice_id.split("+", 1)[0] not in ENGLISH_LANGUAGES:
            raise ValueError(
                f"Unknown espeak voice {voice_id!r}; expected '<language>[+<variant>]' with a "
                f"language in {list(ENGLISH_LANGUAGES)}."
            )

    def _synthesize(self, text: str, voice_id: str) -> SpeechResult:
        from speechattn.data.synth import synthesize

        r = synthesize(text, voice=voice_id)
        return SpeechResult(r.waveform, r.sample_rate, r.words, r.phones, text, voice_id, self.name)


def make_engine(name: str) -> Engine:
    return EspeakEngine()
