"""Engines the registry knows and detects but whose synthesis this version does not wrap yet.

Their voices are listed (with licence, person and whether their data are installed here) so
that reserved voices are known and never picked; asking one to speak raises
:class:`~speechattn.data.engines.EngineUnavailable` saying so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from speechattn.data.engines import Engine, SpeechResult

__all__: list[str] = []

_DETECT: dict[str, tuple[str, dict[str, str]]] = {
    # engine: (install command, {voice id: path or program whose presence means installed})
    "flite": (
        "apt-get install flite (its voices are reserved for evaluation)",
        {v: "flite" for v in ("kal", "kal16", "awb", "awb_time", "rms", "slt")},
    ),
}


class UnwrappedEngine(Engine):
    #: this version cannot synthesize with it (:func:`speechattn.data.synth.pick_voices` refuses it)
    driven = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.install, self._voices = _DETECT[name]

    def missing(self) -> str | None:
        if self.installed_voices():
            return "installed here, but this version of speechattn does not drive it yet"
        return "not installed, and this version of speechattn does not drive it yet"

    def installed_voices(self) -> list[str]:
        out = []
        for vid, where in self._voices.items():
            if shutil.which(where) if "/" not in where else Path(where).exists():
                out.append(vid)
        return out

    def _synthesize(self, text: str, voice_id: str) -> SpeechResult:  # pragma: no cover
        raise NotImplementedError


def make_engine(name: str) -> Engine:
    return UnwrappedEngine(name)
