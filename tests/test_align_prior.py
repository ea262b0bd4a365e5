"""The plain-MHA aligner's log-prior option (issue 6): wiring, padding invariance, CLI flag."""

from __future__ import annotations

import pytest
import torch
from tests.align_toy import N_MELS, NUM_SYMBOLS, toy_items

from speechattn.cli import build_parser
from speechattn.recipes.align.data import collate_items
from speechattn.recipes.align.model import AlignerConfig, TextMelAligner

PRIORS = ("none", "diagonal", "beta-binomial")


def _model(prior: str) -> TextMelAligner:
    torch.manual_seed(0)
    cfg = AlignerConfig(
        kind="mha", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16, num_heads=2, mha_prior=prior
    )
    return TextMelAligner(cfg).eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, ...]:
    return collate_items(toy_items(4, 3))


def _diag_distance(soft: torch.Tensor, tl: torch.Tensor, ml: torch.Tensor) -> float:
    """Mean over valid frames of the expected |t/T - u/U| under the soft alignment (B, U, T)."""
    out = []
    for b in range(soft.shape[0]):
        u, t = int(tl[b]), int(ml[b])
        a = soft[b, :u, :t].double()
        d = (
            torch.arange(t, dtype=torch.float64)[None, :] / t
            - torch.arange(u, dtype=torch.float64)[:, None] / u
        ).abs()
        out.append(float((a * d).sum(0).mean()))
    return sum(out) / len(out)


def test_prior_changes_attention_towards_the_diagonal(batch: tuple[torch.Tensor, ...]) -> None:
    tokens, tl, mels, ml = batch
    with torch.no_grad():
        outs = {p: _model(p)(tokens, tl, mels, ml) for p in PRIORS}
    dist = {p: _diag_distance(o.soft, tl, ml) for p, o in outs.items()}
    valid = (torch.arange(tokens.shape[1])[None, :, None] < tl[:, None, None]) & (
        torch.arange(mels.shape[1])[None, None, :] < ml[:, None, None]
    )
    for p, o in outs.items():
        assert torch.isfinite(o.soft).all() and torch.isfinite(o.log_attn).all(), p
        assert torch.isfinite(o.loss), p
        # Each valid frame is a distribution over the valid tokens; padding gets exactly 0.
        cols = o.soft.sum(1)
        fvalid = torch.arange(mels.shape[1])[None, :] < ml[:, None]
        torch.testing.assert_close(cols[fvalid], torch.ones_like(cols[fvalid]))
        assert (o.soft[~valid] == 0).all(), p
    for p in ("diagonal", "beta-binomial"):
        assert not torch.allclose(outs[p].soft, outs["none"].soft), p
        # Same weights: the prior pulls the attention mass towards each item's own diagonal.
        assert dist[p] < 0.7 * dist["none"], dist


@pytest.mark.parametrize("prior", PRIORS[1:])
def test_prior_attention_is_padding_invariant(prior: str) -> None:
    items = toy_items(3, 5)
    model = _model(prior)
    t_all, tl_all, m_all, ml_all = collate_items(items)
    batched = model(t_all, tl_all, m_all, ml_all).soft
    for b, it in enumerate(items):
        t1, tl1, m1, ml1 = collate_items([it])
        alone = model(t1, tl1, m1, ml1).soft[0]
        u, t = int(tl1[0]), int(ml1[0])
        torch.testing.assert_close(batched[b, :u, :t], alone[:u, :t], rtol=1e-5, atol=1e-6)
        # Changing the padding content of the batch does not change this item's attention.
    m_noisy = m_all.clone()
    pad = torch.arange(m_all.shape[1])[None, :] >= ml_all[:, None]
    m_noisy[pad] = 1e3
    torch.testing.assert_close(model(t_all, tl_all, m_noisy, ml_all).soft, batched)


def test_bad_prior_name_raises() -> None:
    with pytest.raises(ValueError, match="mha_prior"):
        _model("gaussian")


def test_cli_prior_flag() -> None:
    parser = build_parser()
    assert parser.parse_args(["demo", "--prior", "diagonal"]).prior == "diagonal"
    assert parser.parse_args(["demo"]).prior == "none"
    a = parser.parse_args(["align", "data", "--out", "o", "--from-scratch", "--kind", "mha"])
    assert a.kind == "mha" and a.prior is None
    a = parser.parse_args(["align", "data", "--out", "o", "--prior", "beta-binomial"])
    assert a.prior == "beta-binomial"
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--prior", "gaussian"])
