"""The aligner's emission option (issue 19): ``"posterior"`` (default), ``"dual"``, ``"scaled"``.

``functional.alignment.token_emissions`` against a float64 loop oracle on padded batches;
padding content never changes an output; gradcheck; bad input; the default aligner's emission
is bitwise the old ``log_softmax`` over tokens; the option is saved with the aligner, old
configs load as ``"posterior"``, and it reaches the demo recipe and ``train_align_loeo.py``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.align_toy import N_MELS, NUM_SYMBOLS, toy_items
from tests.bench_module import load_benchmark
from tests.reference.alignment_ref import token_emissions_ref

from speechattn.functional import EMISSIONS, mask_token_logits, token_emissions
from speechattn.recipes.align.data import collate_items
from speechattn.recipes.align.model import (
    ENSEMBLE_COMBINES,
    AlignerConfig,
    AlignerEnsemble,
    TextMelAligner,
)
from speechattn.recipes.align.pipeline import DemoConfig, demo_record

TL = torch.tensor([5, 2, 4])
ML = torch.tensor([7, 9, 4])


def _scores(seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(3, 5, 9, generator=g)).to(dtype)


@pytest.mark.parametrize("emission", EMISSIONS)
def test_emissions_match_the_loop_reference_on_a_padded_batch(emission: str) -> None:
    s = _scores()
    out = token_emissions(s, TL, ML, emission=emission)
    assert out.shape == s.shape and out.dtype == torch.float64
    for b in range(3):
        u, t = int(TL[b]), int(ML[b])
        want = token_emissions_ref(s[b, :u, :t].numpy(), emission)
        np.testing.assert_allclose(out[b, :u, :t].numpy(), want, rtol=0, atol=1e-12)
        rest = out[b].clone()
        rest[:u, :t] = 0
        assert torch.count_nonzero(rest) == 0  # padded positions are 0


@pytest.mark.parametrize("emission", EMISSIONS)
def test_padding_content_never_changes_an_output(emission: str) -> None:
    s = _scores()
    junk = s.clone()
    valid = (torch.arange(5).view(1, -1, 1) < TL.view(-1, 1, 1)) & (
        torch.arange(9).view(1, 1, -1) < ML.view(-1, 1, 1)
    )
    junk[~valid] = 1e4 * torch.randn(int((~valid).sum()), dtype=torch.float64)
    a = token_emissions(s, TL, ML, emission=emission)
    b = token_emissions(junk, TL, ML, emission=emission)
    assert torch.equal(a, b)
    # Batched equals per item (each item alone, unpadded).
    for i in range(3):
        u, t = int(TL[i]), int(ML[i])
        one = token_emissions(s[i : i + 1, :u, :t], emission=emission)
        torch.testing.assert_close(a[i : i + 1, :u, :t], one, rtol=0, atol=1e-12)


def test_scaled_is_invariant_to_a_token_raising_its_posterior_everywhere() -> None:
    # exp(scaled) averages to 1 over each valid token's frames, whatever the scores: a token
    # whose posterior is high at every frame gets no more than one that is high at a few.
    s = _scores(1)
    out = token_emissions(s, TL, ML, emission="scaled")
    for b in range(3):
        u, t = int(TL[b]), int(ML[b])
        torch.testing.assert_close(out[b, :u, :t].exp().mean(1), torch.ones(u, dtype=torch.float64))
    # The posterior does reward it: its mean posterior is far from uniform here.
    post = token_emissions(s, TL, ML, emission="posterior")
    means = post[0, :5, :7].exp().mean(1)
    assert float(means.max() - means.min()) > 0.05


def test_dual_rows_are_normalised_over_frames_and_columns_over_tokens() -> None:
    # exp(2 * dual) = P * Q: summing log Q over frames of exp gives the token row of Q.
    s = _scores(2)
    dual = token_emissions(s, TL, ML, emission="dual")
    post = token_emissions(s, TL, ML, emission="posterior")
    log_q = 2 * dual - post
    for b in range(3):
        u, t = int(TL[b]), int(ML[b])
        torch.testing.assert_close(
            log_q[b, :u, :t].exp().sum(1), torch.ones(u, dtype=torch.float64)
        )


@pytest.mark.parametrize("emission", ["dual", "scaled"])
def test_gradcheck(emission: str) -> None:
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 4, 5, dtype=torch.float64, generator=g).requires_grad_(True)
    tl, ml = torch.tensor([4, 2]), torch.tensor([5, 3])
    assert torch.autograd.gradcheck(
        lambda x: token_emissions(x, tl, ml, emission=emission), (s,), eps=1e-6, atol=1e-7
    )


def test_posterior_is_the_old_log_softmax_bitwise() -> None:
    s = _scores(dtype=torch.float32)
    old = torch.log_softmax(mask_token_logits(s, TL), dim=1)
    valid2 = (torch.arange(5).view(1, -1, 1) < TL.view(-1, 1, 1)) & (
        torch.arange(9).view(1, 1, -1) < ML.view(-1, 1, 1)
    )
    assert torch.equal(token_emissions(s, TL, ML), old.masked_fill(~valid2, 0.0))


def test_bad_input_names_expected_and_found() -> None:
    s = _scores()
    with pytest.raises(ValueError, match=r"Expected emission in .*'dual'.*found 'dule'"):
        token_emissions(s, TL, ML, emission="dule")
    with pytest.raises(ValueError, match=r"Expected scores of shape \(B, U, T\).*found \(5, 9\)"):
        token_emissions(s[0], emission="dual")
    with pytest.raises(TypeError, match="floating"):
        token_emissions(s.long(), TL, ML, emission="scaled")
    with pytest.raises(ValueError, match=r"mel_lengths"):
        token_emissions(s, TL, torch.tensor([7, 10, 4]), emission="scaled")
    with pytest.raises(ValueError, match=r"text_lengths"):
        token_emissions(s, torch.tensor([5, 2]), ML, emission="dual")
    with pytest.raises(ValueError, match=r"Expected emission in .*found 'x'"):
        AlignerConfig(emission="x")
    with pytest.raises(ValueError, match=r"Expected emission='posterior' for kind='mha'"):
        TextMelAligner(AlignerConfig(kind="mha", emission="dual"))
    with pytest.raises(ValueError, match=r"emission.*found 'both'"):
        DemoConfig(emission="both")


# ----------------------------------------------------------------------------------------------
# The aligner


def _model(emission: str, kind: str = "sma", seed: int = 0) -> TextMelAligner:
    torch.manual_seed(seed)
    cfg = AlignerConfig(kind=kind, num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16)
    return TextMelAligner(dataclasses.replace(cfg, emission=emission)).eval()


def test_default_aligner_reads_the_old_emission_bitwise() -> None:
    assert AlignerConfig().emission == "posterior"
    model = _model("posterior")
    tokens, tl, mels, ml = collate_items(toy_items(4, 5))
    with torch.no_grad():
        out = model(tokens, tl, mels, ml)
        h, m, tv, mv = model.encode(tokens, tl, mels, ml)
        from speechattn.recipes.align.model import beta_binomial_log_prior

        s = model._token_scores(h, m) + beta_binomial_log_prior(
            tl, ml, tokens.shape[1], mels.shape[1]
        )
    old = torch.log_softmax(mask_token_logits(s, tl), dim=1)
    old = old.masked_fill(~(tv.unsqueeze(-1) & mv.unsqueeze(1)), 0.0)
    assert torch.equal(out.log_attn, old)
    assert torch.equal(out.soft, old.exp() * (tv.unsqueeze(-1) & mv.unsqueeze(1)))


@pytest.mark.parametrize("emission", ["dual", "scaled"])
@pytest.mark.parametrize("kind", ["sma", "fs"])
def test_aligner_trains_and_decodes_on_the_same_emission(emission: str, kind: str) -> None:
    tokens, tl, mels, ml = collate_items(toy_items(5, 3))
    model = _model(emission, kind)
    with torch.no_grad():
        out = model(tokens, tl, mels, ml)
        h, m, _, _ = model.encode(tokens, tl, mels, ml)
        from speechattn.recipes.align.model import beta_binomial_log_prior

        s = model._token_scores(h, m) + beta_binomial_log_prior(
            tl, ml, tokens.shape[1], mels.shape[1]
        )
    torch.testing.assert_close(out.log_attn, token_emissions(s, tl, ml, emission=emission))
    assert torch.isfinite(out.loss)
    # The soft alignment is still a per-frame distribution over the valid tokens.
    for b in range(len(tl)):
        col = out.soft[b, : int(tl[b]), : int(ml[b])].sum(0)
        torch.testing.assert_close(col, torch.ones_like(col))
    model.train()
    loss = model(tokens, tl, mels, ml).loss
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters()) and any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.q.parameters()
    )
    model.eval()
    path, _ = model.align(tokens, tl, mels, ml)
    assert torch.equal(path.durations.sum(1), ml)
    tv = torch.arange(tokens.shape[1]).unsqueeze(0) < tl.unsqueeze(1)
    assert bool((path.durations[tv] >= 1).all()) and not bool(path.durations[~tv].any())
    # Batched equals per item through the whole model (padding never changes an output).
    for b in range(len(tl)):
        u, t = int(tl[b]), int(ml[b])
        p1, _ = model.align(
            tokens[b : b + 1, :u], tl[b : b + 1], mels[b : b + 1, :t], ml[b : b + 1]
        )
        assert torch.equal(p1.durations[0], path.durations[b, :u])


def test_emission_changes_the_alignment_scores() -> None:
    # A control: the option is not a no-op on the same weights.
    tokens, tl, mels, ml = collate_items(toy_items(3, 4))
    outs = {e: _model(e)(tokens, tl, mels, ml).log_attn for e in EMISSIONS}
    assert not torch.allclose(outs["posterior"], outs["dual"])
    assert not torch.allclose(outs["posterior"], outs["scaled"])


def test_old_configs_load_as_posterior() -> None:
    old = AlignerConfig().to_dict()
    old.pop("emission")
    assert AlignerConfig(**old).emission == "posterior"
    saved = _model("scaled").config.to_dict()
    assert AlignerConfig(**saved).emission == "scaled"


@pytest.mark.parametrize("combine", ENSEMBLE_COMBINES)
@pytest.mark.parametrize("emission", ["dual", "scaled"])
def test_ensemble_of_one_emission_model_is_that_model(combine: str, emission: str) -> None:
    model = _model(emission, seed=2)
    tokens, tl, mels, ml = collate_items(toy_items(4, 6))
    twin = TextMelAligner(model.config)
    twin.load_state_dict(model.state_dict())
    ens = AlignerEnsemble([model, twin.eval()], combine=combine).eval()
    p1, _ = model.align(tokens, tl, mels, ml)
    p2, _ = ens.align(tokens, tl, mels, ml)
    assert torch.equal(p2.durations, p1.durations)


def test_ensemble_refuses_members_of_different_emissions() -> None:
    with pytest.raises(ValueError, match=r"emission='posterior'.*found emission='dual'"):
        AlignerEnsemble([_model("posterior"), _model("dual")])


# ----------------------------------------------------------------------------------------------
# The demo recipe and the benchmark's flag


def test_demo_config_records_the_emission_only_when_set() -> None:
    assert DemoConfig().emission == "posterior"
    assert "emission" not in demo_record(DemoConfig())
    assert demo_record(DemoConfig(emission="dual"))["emission"] == "dual"


@pytest.mark.parametrize(
    ("argv", "expected"), [([], "posterior"), (["--emission", "dual"], "dual")]
)
def test_emission_flag_reaches_the_demo_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: str
) -> None:
    import speechattn.recipes.align.pipeline as pipeline

    mod = load_benchmark("train_align_loeo")
    rows = [
        {"id": f"u{i}", "path": f"wavs/u{i}.wav", "engine": eng, "voice": f"{eng}-v", "text": "A."}
        for i, eng in enumerate(["festival"] + ["piper"] * 70)
    ]
    corpus = tmp_path / "loeo" / "corpus"
    (corpus / "wavs").mkdir(parents=True)
    (corpus / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen: list[DemoConfig] = []

    def fake_run_demo(run: Path, cfg: DemoConfig, **kwargs: object) -> dict[str, object]:
        seen.append(cfg)
        return {"summary": {}}

    monkeypatch.setattr(pipeline, "run_demo", fake_run_demo)
    assert mod.main(["--out", str(tmp_path / "loeo"), "--hold-out", "festival", *argv]) == 0
    assert [c.emission for c in seen] == [expected]
    run_json = json.loads((tmp_path / "loeo" / "festival" / "run.json").read_text())
    assert ("emission" in json.dumps(run_json)) == (expected != "posterior")


def test_demo_cli_set_emission_bad_value_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from speechattn.cli import main

    out = tmp_path / "out"
    assert main(["demo", "--set", "emission=duel", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Expected emission in ('posterior', 'dual', 'scaled'); found 'duel'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
