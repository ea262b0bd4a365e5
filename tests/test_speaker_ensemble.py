"""Seed ensembles of speaker encoders: one module, one checkpoint file, the same scoring paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from speechattn.recipes.speaker.config import SpeakerConfig
from speechattn.recipes.speaker.evaluate import embed_features
from speechattn.recipes.speaker.model import (
    SpeakerEncoder,
    SpeakerEnsemble,
    build_encoder,
    load_checkpoint,
    save_encoder,
)


def _members(n: int, cfg: SpeakerConfig) -> list[SpeakerEncoder]:
    out = []
    for k in range(n):
        torch.manual_seed(k)
        m = build_encoder(cfg, "ASTP")
        with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
            m.embed_norm.running_mean.normal_()
            m.embed_norm.running_var.uniform_(0.5, 2.0)
        out.append(m.eval())
    return out


def test_ensemble_is_the_mean_of_normalised_member_embeddings() -> None:
    cfg = SpeakerConfig.quick()
    members = _members(3, cfg)
    ens = SpeakerEnsemble(members).eval()
    assert ens.embed_dim == cfg.embed_dim and ens.pooling_name == "ASTP"
    assert ens.trunk_name == cfg.trunk
    x = torch.randn(3, 60, cfg.n_mels)
    lengths = torch.tensor([60, 41, 17])
    with torch.no_grad():
        got = ens(x, lengths)
        want = torch.stack([F.normalize(m(x, lengths), dim=-1) for m in members]).mean(0)
        torch.testing.assert_close(got, want)
        # members disagree, so the mean is shorter than a unit vector
        assert (got.norm(dim=-1) < 1 - 1e-3).all()
        # padding never changes an output
        for b in range(3):
            n = int(lengths[b])
            torch.testing.assert_close(ens(x[b : b + 1, :n], lengths[b : b + 1]), got[b : b + 1])
    # one member: the same direction as that member alone
    feats = [torch.randn(t, cfg.n_mels) for t in (30, 55, 12)]
    torch.testing.assert_close(
        embed_features(SpeakerEnsemble(members[:1]), feats), embed_features(members[0], feats)
    )


def test_ensemble_checkpoint_round_trip(tmp_path: Path) -> None:
    cfg = SpeakerConfig.quick()
    members = _members(2, cfg)
    cfgs = [SpeakerConfig(**{**cfg.to_dict(), "seed": s}) for s in (0, 7)]
    path = save_encoder(
        SpeakerEnsemble(members), "ASTP", cfgs[0], tmp_path / "e.pt", member_configs=cfgs
    )
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["format"] == "speechattn-speaker-ensemble-v1" and len(raw["members"]) == 2
    assert [c["seed"] for c in raw["member_configs"]] == [0, 7]
    loaded, lcfg = load_checkpoint(path)
    assert isinstance(loaded, SpeakerEnsemble) and not loaded.training
    assert lcfg.to_dict() == cfgs[0].to_dict()
    feats = [torch.randn(t, cfg.n_mels) for t in (40, 25, 70, 33)]
    # fp16 weights: close to the in-memory ensemble, not bit-equal
    a = embed_features(loaded, feats).numpy()
    b = embed_features(SpeakerEnsemble(members), feats).numpy()
    np.testing.assert_allclose(a, b, atol=5e-3)
    # a single encoder's file is unchanged: it loads as a SpeakerEncoder
    single, _ = load_checkpoint(save_encoder(members[0], "ASTP", cfg, tmp_path / "s.pt"))
    assert isinstance(single, SpeakerEncoder)


def test_ensemble_refuses_mismatched_members(tmp_path: Path) -> None:
    cfg = SpeakerConfig.quick()
    with pytest.raises(ValueError, match="at least one"):
        SpeakerEnsemble([])
    wide = SpeakerConfig(**{**cfg.to_dict(), "embed_dim": cfg.embed_dim * 2})
    with pytest.raises(ValueError, match="embed_dim"):
        SpeakerEnsemble([build_encoder(cfg, "ASTP"), build_encoder(wide, "ASTP")])
    ens = SpeakerEnsemble(_members(2, cfg))
    gain = SpeakerConfig(**{**cfg.to_dict(), "feature_norm": "gain"})
    with pytest.raises(ValueError, match="feature_norm"):
        save_encoder(ens, "ASTP", cfg, tmp_path / "x.pt", member_configs=[cfg, gain])
    with pytest.raises(ValueError, match="one member config per member"):
        save_encoder(ens, "ASTP", cfg, tmp_path / "x.pt", member_configs=[cfg])
    assert not (tmp_path / "x.pt").exists()
