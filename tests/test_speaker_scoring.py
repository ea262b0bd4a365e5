"""Set-mean centring of speaker embeddings: the function, ``score`` (on by default) and
``embed --centre``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.cli_run import run_cli as _main
from tests.speaker_toy import SR
from tests.speaker_toy import toy_voice as _voice

from speechattn.recipes.speaker.evaluate import centre_embeddings, pair_trials


def test_centring_removes_a_shared_direction() -> None:
    """Four speakers, two utterances each, all pushed along one common direction (an engine
    or channel): raw cosines confuse them, centred cosines tell every target from every
    non-target."""
    g = torch.Generator().manual_seed(0)
    speakers = F.normalize(torch.randn(4, 16, generator=g), dim=-1)
    emb = speakers.repeat_interleave(2, 0) + 0.05 * torch.randn(8, 16, generator=g)
    shared = 4.0 * F.normalize(torch.randn(16, generator=g), dim=0)
    emb = F.normalize(emb + shared, dim=-1)
    labels = [str(i // 2) for i in range(8)]
    raw_s, lab = pair_trials(emb, labels)
    cen_s, _ = pair_trials(centre_embeddings(emb), labels)
    assert cen_s[lab == 1].min() > cen_s[lab == 0].max()
    # without centring every score is near 1: the margin is far smaller
    raw_gap = raw_s[lab == 1].min() - raw_s[lab == 0].max()
    assert raw_gap < 0.5 * (cen_s[lab == 1].min() - cen_s[lab == 0].max())


def test_centring_matches_the_definition_and_ignores_a_common_shift() -> None:
    emb = torch.randn(6, 8, dtype=torch.float64)
    out = centre_embeddings(emb)
    torch.testing.assert_close(out, F.normalize(emb - emb.mean(0), dim=-1))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(6, dtype=torch.float64))
    shift = torch.randn(8, dtype=torch.float64)
    torch.testing.assert_close(centre_embeddings(emb + shift), out)
    mean = torch.randn(8, dtype=torch.float64)
    torch.testing.assert_close(centre_embeddings(emb, mean), F.normalize(emb - mean, dim=-1))


def test_centring_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        centre_embeddings(torch.randn(1, 8))
    with pytest.raises(ValueError, match=r"Expected embeddings \(N, E\)"):
        centre_embeddings(torch.randn(8))
    with pytest.raises(ValueError, match=r"Expected mean \(E=8,\)"):
        centre_embeddings(torch.randn(3, 8), torch.randn(4))


def test_centring_takes_numpy_as_embed_writes_it() -> None:
    emb = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    out = centre_embeddings(emb)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, centre_embeddings(torch.from_numpy(emb)).numpy())
    mean = emb[:2].mean(0)
    np.testing.assert_allclose(
        centre_embeddings(emb, mean), F.normalize(torch.from_numpy(emb - mean), dim=-1).numpy()
    )
    with pytest.raises(TypeError, match=r"emb as a torch\.Tensor or numpy\.ndarray; found list"):
        centre_embeddings(emb.tolist())  # type: ignore[call-overload]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    import soundfile as sf

    d = tmp_path / "audio"
    d.mkdir()
    for i in range(12):
        sf.write(d / f"v{i}.wav", _voice(i), SR)
    return d


def test_embed_centre_writes_the_mean_and_centred_rows(folder: Path, tmp_path: Path) -> None:
    raw_out, cen_out = tmp_path / "raw.npz", tmp_path / "cen.npz"
    assert _main(["speaker", "embed", str(folder), "--out", str(raw_out), "--no-progress"]) == 0
    argv = ["speaker", "embed", str(folder), "--out", str(cen_out), "--centre", "--no-progress"]
    assert _main(argv) == 0
    with np.load(raw_out) as z:
        assert sorted(z.files) == ["embeddings", "keys"]
        raw = z["embeddings"]
    with np.load(cen_out) as z:
        assert sorted(z.files) == ["embeddings", "keys", "mean"]
        cen, mean = z["embeddings"], z["mean"]
    np.testing.assert_allclose(mean, raw.mean(0), atol=1e-6)
    expected = raw - mean
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(cen, expected, atol=1e-5)
    assert not np.allclose(cen, raw, atol=1e-3)


def test_embed_centre_needs_two_files(folder: Path, tmp_path: Path) -> None:
    for p in sorted(folder.glob("*.wav"))[1:]:
        p.unlink()
    out = tmp_path / "one.npz"
    argv = ["speaker", "embed", str(folder), "--out", str(out), "--centre", "--no-progress"]
    assert _main(argv) == 1
    assert not out.exists()


def test_score_centres_by_default(folder: Path, tmp_path: Path) -> None:
    import json

    from speechattn.recipes.speaker import load_checkpoint, score_trials
    from speechattn.recipes.speaker.data import read_trials
    from speechattn.recipes.speaker.evaluate import embed_features, trial_features

    trials = tmp_path / "t.txt"
    # 12 files (>= MIN_CENTRE_FILES); files i and i + 4 (mod 12) share a pitch: one "speaker"
    lines = [f"1 v{i}.wav v{(i + 4) % 12}.wav" for i in range(12)]
    lines += [f"0 v{i}.wav v{i + 1}.wav" for i in range(11)]
    trials.write_text("\n".join(lines) + "\n")
    out_c, out_r = tmp_path / "c.json", tmp_path / "r.json"
    argv = ["speaker", "score", str(trials), "--root", str(folder)]
    assert _main([*argv, "--out", str(out_c)]) == 0
    assert _main([*argv, "--no-centre", "--out", str(out_r)]) == 0
    assert json.loads(out_c.read_text())["centred"] is True
    assert json.loads(out_r.read_text())["centred"] is False
    # the library scores are the centred cosines of the list's files
    model, cfg = load_checkpoint()
    tl = read_trials(trials, folder)
    ts = trial_features(tl, cfg)
    emb = centre_embeddings(embed_features(model, ts.feats))
    s = (emb[ts.enroll] * emb[ts.test]).sum(-1).numpy()
    res = score_trials(model, cfg, tl)
    from speechattn.recipes.speaker.evaluate import compute_eer

    assert res["eer"] == pytest.approx(compute_eer(s, ts.labels))


def test_score_does_not_centre_a_short_list(folder: Path, tmp_path: Path) -> None:
    """A handful of files is mostly its own speakers: centring on their mean would push them
    apart (two files centred on their own mean always score -1), so they are scored raw."""
    from speechattn.recipes.speaker import load_checkpoint, score_trials
    from speechattn.recipes.speaker.data import read_trials
    from speechattn.recipes.speaker.evaluate import MIN_CENTRE_FILES

    trials = tmp_path / "t.txt"
    trials.write_text("1 v0.wav v4.wav\n0 v0.wav v1.wav\n0 v2.wav v3.wav\n")
    assert 5 < MIN_CENTRE_FILES
    model, cfg = load_checkpoint()
    tl = read_trials(trials, folder)
    assert score_trials(model, cfg, tl)["centred"] is False
    assert score_trials(model, cfg, tl, centre=False)["centred"] is False
