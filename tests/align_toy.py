"""A stand-in corpus for recipe tests: tokens with fixed spectral templates and known durations.

No espeak needed: each token id has a random template vector; an utterance is silence, then each
token's template repeated for its duration (1-10 frames) plus noise, then silence. Ground truth is exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from speechattn.recipes.align.data import AlignItem, FeatureConfig

NUM_SYMBOLS = 24
N_MELS = 16
FEATURES = FeatureConfig(sample_rate=1000, hop_length=10, n_mels=N_MELS)


def toy_items(n: int, seed: int, *, noise: float = 0.6) -> list[AlignItem]:
    g = torch.Generator().manual_seed(seed)
    tmpl = torch.randn(NUM_SYMBOLS, N_MELS, generator=torch.Generator().manual_seed(1234))
    fs = FEATURES.frame_s
    items = []
    for i in range(n):
        u = int(torch.randint(4, 12, (1,), generator=g))
        ph = torch.randint(4, NUM_SYMBOLS, (u,), generator=g)
        d = torch.randint(1, 11, (u,), generator=g)
        s0, s1 = (int(x) for x in torch.randint(1, 5, (2,), generator=g))
        frames = [tmpl[2]] * s0
        for p, k in zip(ph.tolist(), d.tolist()):
            frames += [tmpl[p]] * k
        frames += [tmpl[2]] * s1
        mel = torch.stack(frames) + noise * torch.randn(len(frames), N_MELS, generator=g)
        edges = (s0 + torch.cat([torch.zeros(1, dtype=torch.long), d.cumsum(0)])).tolist()
        # Centred frames: a token on frames [a, b) spans [(a - 1/2) fs, (b - 1/2) fs) seconds.
        gt = [((edges[k] - 0.5) * fs, (edges[k + 1] - 0.5) * fs) for k in range(u)]
        half = u // 2
        items.append(
            AlignItem(
                id=f"toy{seed}-{i}",
                speaker=f"spk{i % 3}",
                text=" ".join(str(p) for p in ph.tolist()),
                tokens=torch.cat([torch.tensor([2]), ph, torch.tensor([2])]),
                mel=mel,
                phones=[str(p) for p in ph.tolist()],
                phone_token_index=list(range(1, u + 1)),
                words=[("a", 0, half), ("b", half, u)] if half else [("a", 0, u)],
                num_samples=len(frames) * FEATURES.hop_length,
                gt_phones=gt,
                gt_words=[(gt[0][0], gt[half - 1][1]), (gt[half][0], gt[-1][1])]
                if half
                else [(gt[0][0], gt[-1][1])],
            )
        )
    return items


TONE_START_S, TONE_END_S = 0.25, 1.35
TONE_SAMPLES = int(22050 * 1.6)  # each file's length (22.05 kHz)


def tone_corpus(folder: Path, texts: dict[str, str], *, noise: float, seed: int = 0) -> Path:
    """A corpus folder for CLI tests: per entry of ``texts``, ``NAME.wav`` (1.6 s at 22.05 kHz, a
    150 Hz tone from :data:`TONE_START_S` to :data:`TONE_END_S` plus white noise of std ``noise``,
    one generator over the files in order) and ``NAME.txt``. Returns ``folder``."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(TONE_SAMPLES) / 22050
    tone = 0.2 * np.sin(2 * np.pi * 150 * t) * (t > TONE_START_S) * (t < TONE_END_S)
    for name, text in texts.items():
        wav = tone + noise * rng.standard_normal(t.size)
        sf.write(folder / f"{name}.wav", wav.astype(np.float32), 22050)
        (folder / f"{name}.txt").write_text(text)
    return folder
