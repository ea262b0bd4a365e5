"""A tiny audio2clip setup for recipe tests: tiny Wav2Vec2-BERT and CLIP text encoders built from
configs (no download) and four captioned tones in a manifest."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["tiny_a2c_setup"]


def tiny_a2c_setup(root: Path) -> Path:
    """Write ``root/w2v``, ``root/clip_text``, ``root/wavs/u{0..3}.wav`` (16 kHz tones, 0.5-0.8 s)
    and ``root/manifest.jsonl`` (``{"audio", "caption"}`` per line); returns ``root``."""
    import numpy as np
    import soundfile as sf

    from speechattn.recipes.audio2clip.tiny import tiny_clip_text_encoder, tiny_w2v_bert

    tiny_w2v_bert(root / "w2v", hidden_size=32)
    tiny_clip_text_encoder(root / "clip_text", width=32)
    (root / "wavs").mkdir()
    lines = []
    for i, cap in enumerate(["a red cat", "a blue dog", "green trees", "the sea at night"]):
        t = np.arange(int(16000 * (0.5 + 0.1 * i))) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)
        sf.write(root / "wavs" / f"u{i}.wav", wav.astype(np.float32), 16000)
        lines.append(json.dumps({"audio": f"wavs/u{i}.wav", "caption": cap}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root
