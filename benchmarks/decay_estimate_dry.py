"""The aligner's reverberation-time estimate on dry real speech that is not evaluation-only.

``speechattn align --dereverb auto`` removes late reverberation from recordings whose estimated
RT60 (:func:`speechattn.recipes.align.edges.estimate_decay_time`) is at least
``DEREVERB_MIN_RT60_S``. A dry recording that reads above it is a false positive. This prints the
estimate for the spoken ALSA test prompts (``/usr/share/sounds/alsa``, Debian ``alsa-utils``:
one speaker, dry studio recordings) and the speech clips that pip ``gradio`` ships, whichever are
present. Usage: ``python benchmarks/decay_estimate_dry.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from speechattn.data.audio import load_audio
from speechattn.recipes.align.data import DEREVERB_MIN_RT60_S
from speechattn.recipes.align.edges import energy_envelope, estimate_decay_time

SAMPLE_RATE = 22050
ALSA = ("Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right")
ALSA += ("Side_Left", "Side_Right")
GRADIO = ("media_assets/audio/recording1.wav", "media_assets/audio/audio_sample.wav")
GRADIO += ("media_assets/audio/cate_blanch.mp3", "media_assets/audio/cate_blanch_2.mp3")
GRADIO += ("media_assets/audio/heath_ledger.mp3", "test_data/test_audio.wav")


def _files() -> list[Path]:
    files = [Path("/usr/share/sounds/alsa") / f"{n}.wav" for n in ALSA]
    spec = importlib.util.find_spec("gradio")
    if spec is not None and spec.origin is not None:
        root = Path(spec.origin).parent
        files += [root / n for n in GRADIO]
    return [f for f in files if f.is_file()]


def main() -> None:
    files = _files()
    if not files:
        print("no dry speech found (needs /usr/share/sounds/alsa or pip gradio)")
        return
    over = 0
    for f in files:
        wave = np.asarray(load_audio(f, sample_rate=SAMPLE_RATE), dtype=np.float32).reshape(-1)
        rt60 = estimate_decay_time(energy_envelope(wave, SAMPLE_RATE))
        over += rt60 >= DEREVERB_MIN_RT60_S
        print(f"{rt60:6.3f} s  {wave.size / SAMPLE_RATE:5.1f} s  {f.parent.name}/{f.name}")
    print(f"{over} of {len(files)} read >= {DEREVERB_MIN_RT60_S} s")


if __name__ == "__main__":
    main()
