"""Small unsupervised text-to-mel aligners: the SMA aligner and its baselines.

Shape legend: ``b`` batch, ``u`` tokens, ``t`` mel frames, ``d`` model dim, ``h`` heads.

All aligners share the same encoders (a phoneme embedding + residual 1-D conv stack, and a mel
projection + residual 1-D conv stack) and differ in how they turn encodings into an alignment and
what they are trained on. None sees alignment labels.

* ``kind="sma"`` -- the stepwise monotonic attention aligner. Energies between token and frame
  encodings give (i) per-frame token scores ``log_softmax_u(e_t(u) + log prior)`` used as emissions and
  (ii) SMA stay probabilities ``p_t(u) = sigmoid(e'_t(u) + b)`` (He et al. 2019) with ``b`` initialised
  per item near ``logit(1 - U/T)`` (an initial stay probability of 1 - U/T, the expected one; the
  paper's +3.5 collapses an aligner). The objective is the negative log-likelihood of the mel
  sequence's token-score path under the monotonic HMM whose transitions are the SMA stay/move
  probabilities (:func:`~speechattn.functional.alignment.monotonic_hmm_log_likelihood`, the SMA
  recurrence in log space, forced to end on the last token), normalised by frames, plus the RAD-TTS
  forward-sum loss on the emissions. Durations: Viterbi over ``log p`` / ``log(1 - p)`` + emissions.
* ``kind="fs"`` -- RAD-TTS style: the same token scores with a beta-binomial prior, forward-sum (CTC
  with blank) loss, durations by monotonic alignment search (MAS).
* ``kind="mha"`` -- plain multi-head attention (softmax, no monotonicity; the keonlee reference's
  ``is_tunable=False``): mel frames attend over tokens and the context must reconstruct the mel frame
  (L1); durations by MAS on the log attention of the head with the best focus rate.
  ``mha_prior`` adds a log-prior to its attention logits: ``"none"`` (default, the plain
  baseline), ``"diagonal"`` (:class:`~speechattn.functional.priors.DiagonalPrior`, the
  Speech-Transformer linear penalty ``-mha_prior_scale * |t / T - u / U|`` on each item's own
  diagonal) or ``"beta-binomial"`` (:class:`~speechattn.functional.priors.BetaBinomialPrior`,
  RAD-TTS ``log P`` with ``prior_scaling``). Frames still attend to every valid token.

``emission`` (kinds ``"sma"`` and ``"fs"``) says what the losses and the decoding read from the
token scores: ``"posterior"`` (default, the per-frame ``log_softmax_u`` above), ``"dual"`` or
``"scaled"`` (:func:`~speechattn.functional.alignment.token_emissions`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechattn._config import check_fields
from speechattn.functional.alignment import (
    EMISSIONS,
    AlignmentPath,
    forward_sum_loss,
    mask_token_logits,
    monotonic_alignment_search,
    monotonic_hmm_log_likelihood,
    monotonic_hmm_viterbi,
    token_emissions,
)
from speechattn.functional.masks import lengths_to_valid_mask

__all__ = [
    "ENSEMBLE_COMBINES",
    "AlignerConfig",
    "AlignerEnsemble",
    "AlignerOutput",
    "TextMelAligner",
    "beta_binomial_log_prior",
]

KINDS = ("sma", "fs", "mha")
MHA_PRIORS = ("none", "diagonal", "beta-binomial")
# How AlignerEnsemble pools its members' per-frame probabilities (see its docstring).
ENSEMBLE_COMBINES = ("log", "prob", "median")


@dataclass
class AlignerConfig:
    """Hyper-parameters of :class:`TextMelAligner` (saved in checkpoints)."""

    kind: str = "sma"
    num_symbols: int = 128
    n_mels: int = 80
    dim: int = 128
    text_layers: int = 3
    mel_layers: int = 3
    kernel_size: int = 5
    num_heads: int = 2
    prior_scaling: float = 1.0
    use_prior: bool = True
    fs_weight: float = 1.0
    sma_noise_std: float = 0.0
    dropout: float = 0.1
    mha_prior: str = "none"
    # 100: best of 10 / 30 / 100 / 300 for the demo-size corpus and of 10 / 30 / 100 for the
    # --quick one (benchmarks/RESULTS.md, "Diagonal prior on the plain-MHA aligner").
    mha_prior_scale: float = 100.0
    # The emission the HMM / forward-sum loss and the decoding read from the token scores
    # (kinds "sma" and "fs"; functional.alignment.EMISSIONS, see token_emissions):
    # "posterior" (log_softmax over tokens, the behaviour before the option), "dual" or
    # "scaled". Issue 19: a per-frame posterior rewards a token close to every frame.
    emission: str = "posterior"

    def __post_init__(self) -> None:
        # kind and mha_prior are checked by TextMelAligner (with a hint on mha_prior).
        check_fields(
            self,
            positive_ints=("num_symbols", "n_mels", "dim", "kernel_size", "num_heads"),
            nonnegative_ints=("text_layers", "mel_layers"),
            positive_floats=("prior_scaling",),
            nonnegative_floats=("fs_weight", "sma_noise_std", "mha_prior_scale"),
            fractions=("dropout",),
            choices={"emission": EMISSIONS},
        )

    def to_dict(self) -> dict:
        return asdict(self)


class AlignerOutput(NamedTuple):
    """What :meth:`TextMelAligner.forward` returns.

    Attributes:
        loss: scalar training loss.
        log_attn: ``(B, U, T)`` per-frame token log-scores the durations are read from.
        soft: ``(B, U, T)`` soft alignment (each valid frame a distribution over valid tokens).
        log_stay: ``(B, U, T)`` SMA log stay probabilities (``kind="sma"``) else ``None``.
        log_move: ``(B, U, T)`` SMA log move probabilities (``kind="sma"``) else ``None``.
    """

    loss: Tensor
    log_attn: Tensor
    soft: Tensor
    log_stay: Tensor | None
    log_move: Tensor | None


def beta_binomial_log_prior(
    text_lengths: Tensor, mel_lengths: Tensor, u: int, t: int, scaling: float = 1.0
) -> Tensor:
    """Log beta-binomial alignment prior ``(B, U, T)`` (RAD-TTS): frame t of T favours token ~ t U / T.

    Each valid frame's column is a proper distribution over the valid tokens. Uses
    :func:`speechattn.functional.priors.beta_binomial_prior` when that module is installed.
    """
    try:
        from speechattn.functional.priors import beta_binomial_prior  # type: ignore[attr-defined]

        p = beta_binomial_prior(
            text_lengths, mel_lengths, scaling=scaling, max_text_len=u, max_mel_len=t
        )  # (B, T_mel, U)
        return p.transpose(1, 2).clamp_min(1e-8).log()
    except ImportError:
        pass
    dev = text_lengths.device
    n = (text_lengths - 1).double().view(-1, 1, 1)  # (B,1,1)
    k = torch.arange(u, device=dev, dtype=torch.float64).view(1, -1, 1)
    tt = torch.arange(t, device=dev, dtype=torch.float64).view(1, 1, -1)
    m = mel_lengths.double().view(-1, 1, 1)
    a = scaling * (tt + 1)
    b = scaling * (m - tt)
    b = b.clamp_min(1e-3)

    def lbeta(x: Tensor, y: Tensor) -> Tensor:
        return torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)

    kk = torch.minimum(k, n)
    logc = torch.lgamma(n + 1) - torch.lgamma(kk + 1) - torch.lgamma(n - kk + 1)
    lp = logc + lbeta(kk + a, n - kk + b) - lbeta(a, b)
    valid = (k < text_lengths.view(-1, 1, 1)) & (tt < m)
    lp = lp.masked_fill(~valid, -1e4)
    lp = lp - torch.logsumexp(lp, dim=1, keepdim=True)
    return lp.masked_fill(~valid, 0.0).float()


class _ConvStack(nn.Module):
    def __init__(self, *, dim: int, layers: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2) for _ in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        keep = valid.unsqueeze(-1).to(x.dtype)
        for conv, norm in zip(self.convs, self.norms):
            y = conv((x * keep).transpose(1, 2)).transpose(1, 2)
            x = norm(x + self.drop(F.relu(y)))
        return x * keep


class TextMelAligner(nn.Module):
    """Text encoder + mel encoder + an alignment head (see the module docstring for ``kind``)."""

    def __init__(self, config: AlignerConfig) -> None:
        super().__init__()
        if config.kind not in KINDS:
            raise ValueError(f"Expected kind in {KINDS}; found {config.kind!r}.")
        if config.mha_prior not in MHA_PRIORS:
            raise ValueError(
                f"Expected mha_prior in {MHA_PRIORS}; found {config.mha_prior!r}. The prior "
                "applies to the plain-MHA aligner (kind='mha')."
            )
        if config.kind == "mha" and config.emission != "posterior":
            raise ValueError(
                f"Expected emission='posterior' for kind='mha' (its attention has no token "
                f"emission); found emission={config.emission!r}. The emission applies to the "
                "kinds 'sma' and 'fs'."
            )
        self.config = config
        # Weight of the learned token scores beside the diagonal log-prior (kinds "sma" and
        # "fs"): 1 always but while train_aligner's ``prior_warmup`` ramps it up (then the
        # early alignments follow the prior). A plain attribute: not saved, not a parameter.
        self.score_scale = 1.0
        d = config.dim
        self.embed = nn.Embedding(config.num_symbols, d)
        self.text_enc = _ConvStack(
            dim=d, layers=config.text_layers, kernel_size=3, dropout=config.dropout
        )
        self.mel_in = nn.Linear(config.n_mels, d)
        self.mel_enc = _ConvStack(
            dim=d, layers=config.mel_layers, kernel_size=config.kernel_size, dropout=config.dropout
        )
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        if config.kind == "sma":
            from speechattn.nn.monotonic import StepwiseMonotonicMultiheadAttention

            # The SMA layer's stay step gives p_t(u): text queries, mel keys, energy + learnable
            # bias (initial stay probability 0.5, then shifted per item to 1 - U/T). Its value
            # and output projections are kept (unused) so saved aligners load unchanged, and
            # frozen: no step ever gives them a gradient, so DDP needs no search for unused
            # parameters (which warned for the other kinds, where none is unused).
            self.sma = StepwiseMonotonicMultiheadAttention(
                embed_dim=d,
                num_heads=1,
                dropout=0.0,
                noise_std=config.sma_noise_std,
                initial_stay_prob=0.5,
                mass="preserve",
            )
            self.sma.v_proj.requires_grad_(False)
            self.sma.out_proj.requires_grad_(False)
        if config.kind == "mha":
            h = config.num_heads
            if d % h:
                raise ValueError(
                    f"Expected dim divisible by num_heads; found dim={d}, num_heads={h}."
                )
            self.v = nn.Linear(d, d)
            self.dec = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, config.n_mels))

    # ------------------------------------------------------------------------------------------
    def encode(
        self, tokens: Tensor, text_lengths: Tensor, mels: Tensor, mel_lengths: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        tv = lengths_to_valid_mask(text_lengths, tokens.shape[1])
        mv = lengths_to_valid_mask(mel_lengths, mels.shape[1])
        h = self.text_enc(self.embed(tokens), tv)
        m = self.mel_enc(self.mel_in(mels), mv)
        return h, m, tv, mv

    def _token_scores(self, h: Tensor, m: Tensor) -> Tensor:
        q = self.q(h)
        k = self.k(m)
        # Negative squared L2 distance (RAD-TTS) scaled by 1/sqrt(d): (B, U, T).
        d2 = (
            q.pow(2).sum(-1, keepdim=True)
            - 2 * q @ k.transpose(1, 2)
            + k.pow(2).sum(-1).unsqueeze(1)
        )
        return -d2 / math.sqrt(q.shape[-1])

    def forward(
        self, tokens: Tensor, text_lengths: Tensor, mels: Tensor, mel_lengths: Tensor
    ) -> AlignerOutput:
        """Args: tokens int64 ``(B, U)``, text_lengths ``(B,)``, mels ``(B, T, n_mels)``, mel_lengths ``(B,)``."""
        return self._outputs(tokens, text_lengths, mels, mel_lengths, with_loss=True)

    def _outputs(
        self,
        tokens: Tensor,
        text_lengths: Tensor,
        mels: Tensor,
        mel_lengths: Tensor,
        *,
        with_loss: bool,
    ) -> AlignerOutput:
        """:meth:`forward`'s outputs; ``with_loss=False`` skips the training loss (its ``loss`` is
        then a NaN scalar): decoding reads only the scores, which do not depend on it."""
        cfg = self.config
        h, m, tv, mv = self.encode(tokens, text_lengths, mels, mel_lengths)
        u, t = tokens.shape[1], mels.shape[1]
        valid2 = tv.unsqueeze(-1) & mv.unsqueeze(1)
        if cfg.kind == "mha":
            return self._mha(h, m, mels, text_lengths, mel_lengths, tv, mv, with_loss=with_loss)
        scores = self._token_scores(h, m)
        if self.score_scale != 1.0:
            scores = scores * self.score_scale
        if cfg.use_prior:
            scores = scores + beta_binomial_log_prior(
                text_lengths, mel_lengths, u, t, cfg.prior_scaling
            ).to(scores)
        if cfg.emission == "posterior":  # (as before the option: bitwise the same)
            log_attn = torch.log_softmax(mask_token_logits(scores, text_lengths), dim=1)
            log_attn = log_attn.masked_fill(~valid2, 0.0)
        else:
            log_attn = token_emissions(scores, text_lengths, mel_lengths, emission=cfg.emission)
        no_loss = log_attn.new_full((), float("nan"))
        fs = forward_sum_loss(log_attn, text_lengths, mel_lengths) if with_loss else no_loss
        if cfg.kind == "fs":
            return AlignerOutput(fs, log_attn, _soft(log_attn, cfg.emission, valid2), None, None)
        # SMA stay probabilities from the SMA layer, shifted per item by logit(1 - U/T) so the
        # initial stay probability is the expected one (the paper's +3.5 collapses an aligner).
        # Only the stay step of the layer runs (no alignment, context or output projection).
        p_stay = self.sma.stay_probability(
            h, m, query_lengths=text_lengths, key_lengths=mel_lengths
        )[:, 0]
        pc = p_stay.clamp(1e-6, 1 - 1e-6)
        p0 = (1.0 - text_lengths.float() / mel_lengths.float()).clamp(0.05, 0.95)
        b0 = torch.log(p0) - torch.log1p(-p0)
        z = torch.log(pc) - torch.log1p(-pc) + b0.view(-1, 1, 1)
        log_stay = F.logsigmoid(z)
        log_move = F.logsigmoid(-z)
        loss = no_loss
        if with_loss:
            ll = monotonic_hmm_log_likelihood(
                log_attn, log_stay, log_move, text_lengths, mel_lengths
            )
            hmm = -(ll / mel_lengths.to(ll.dtype)).mean()
            loss = hmm + cfg.fs_weight * fs
        return AlignerOutput(
            loss, log_attn, _soft(log_attn, cfg.emission, valid2), log_stay, log_move
        )

    def _mha(
        self,
        h: Tensor,
        m: Tensor,
        mels: Tensor,
        text_lengths: Tensor,
        mel_lengths: Tensor,
        tv: Tensor,
        mv: Tensor,
        *,
        with_loss: bool = True,
    ) -> AlignerOutput:
        cfg = self.config
        b, u, d = h.shape
        t = m.shape[1]
        nh = cfg.num_heads
        dh = d // nh
        q = self.k(m).view(b, t, nh, dh).transpose(1, 2)  # mel frames query
        k = self.q(h).view(b, u, nh, dh).transpose(1, 2)  # tokens are keys
        v = self.v(h).view(b, u, nh, dh).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / math.sqrt(dh)  # (B, H, T, U)
        prior = self._mha_prior_bias(text_lengths, mel_lengths, u, t, logits.dtype)
        if prior is not None:
            # Additive log-prior (B, 1, T, U): 0 on padded frames, finfo.min on padded tokens.
            logits = logits + prior.clamp_min(torch.finfo(logits.dtype).min / 4)
        logits = logits.masked_fill(~tv.view(b, 1, 1, u), torch.finfo(logits.dtype).min / 4)
        attn = torch.softmax(logits, dim=-1)
        loss = attn.new_full((), float("nan"))
        if with_loss:  # the reconstruction is the training objective only
            ctx = (attn @ v).transpose(1, 2).reshape(b, t, d)
            pred = self.dec(ctx)
            keep = mv.unsqueeze(-1).to(pred.dtype)
            loss = ((pred - mels).abs() * keep).sum() / (keep.sum() * mels.shape[-1])
        attn_ut = attn.transpose(-1, -2) * (tv.unsqueeze(-1) & mv.unsqueeze(1)).unsqueeze(
            1
        )  # (B,H,U,T)
        # Best head per item by focus rate.
        fr = (attn_ut.max(dim=2).values.sum(-1)) / mel_lengths.view(-1, 1).to(attn.dtype)  # (B, H)
        best = fr.argmax(dim=1)
        soft = attn_ut[torch.arange(b, device=h.device), best]
        log_attn = torch.log(soft.clamp_min(1e-8)).masked_fill(
            ~(tv.unsqueeze(-1) & mv.unsqueeze(1)), 0.0
        )
        return AlignerOutput(loss, log_attn, soft, None, None)

    def _mha_prior_bias(
        self, text_lengths: Tensor, mel_lengths: Tensor, u: int, t: int, dtype: torch.dtype
    ) -> Tensor | None:
        """The MHA aligner's log-prior ``(B, 1, T, U)`` (mel-frame queries, token keys), or None."""
        from speechattn.functional.priors import BetaBinomialPrior, DiagonalPrior

        cfg = self.config
        prior: DiagonalPrior | BetaBinomialPrior
        if cfg.mha_prior == "none":
            return None
        if cfg.mha_prior == "diagonal":
            prior = DiagonalPrior(kind="linear", scale=cfg.mha_prior_scale, distance="relative")
        else:
            prior = BetaBinomialPrior(scaling=cfg.prior_scaling)
        return prior.bias(
            mel_lengths,
            text_lengths,
            max_query_len=t,
            max_key_len=u,
            dtype=dtype,
            device=text_lengths.device,
        )

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def align(
        self,
        tokens: Tensor,
        text_lengths: Tensor,
        mels: Tensor,
        mel_lengths: Tensor,
        skippable_mask: Tensor | None = None,
        log_skip: float = 0.0,
    ) -> tuple[AlignmentPath, Tensor]:
        """Hard monotonic alignment and soft attention ``(B, U, T)`` (eval mode recommended).

        ``skippable_mask``: bool ``(B, U)``, True = the token (a pause) may take 0 frames;
        ``log_skip``: score of passing such a token with 0 frames. The training loss is not
        computed (the forward-sum and HMM likelihood passes of :meth:`forward`): the path and
        soft alignment read only the scores."""
        out = self._outputs(tokens, text_lengths, mels, mel_lengths, with_loss=False)
        return _hard_alignment(out, text_lengths, mel_lengths, skippable_mask, log_skip)


def _soft(log_attn: Tensor, emission: str, valid2: Tensor) -> Tensor:
    """The soft alignment ``(B, U, T)`` of token log-emissions: each valid frame's distribution
    over the valid tokens (``exp(log_attn)`` for ``"posterior"``; the emissions renormalised
    over the tokens otherwise, which is the per-frame posterior of those emissions)."""
    if emission == "posterior":
        return log_attn.exp() * valid2
    tl = valid2.any(dim=2).sum(dim=1)
    return torch.softmax(mask_token_logits(log_attn, tl), dim=1) * valid2


def _hard_alignment(
    out: AlignerOutput,
    text_lengths: Tensor,
    mel_lengths: Tensor,
    skippable_mask: Tensor | None,
    log_skip: float,
) -> tuple[AlignmentPath, Tensor]:
    """The path and soft alignment :meth:`TextMelAligner.align` reads from an :class:`AlignerOutput`:
    Viterbi over the stay/move HMM when it has stay probabilities (``kind="sma"``; soft = the HMM
    posterior occupancy), else MAS over the token log-scores (soft = the output's own)."""
    if out.log_stay is not None and out.log_move is not None:
        path = monotonic_hmm_viterbi(
            out.log_attn,
            out.log_stay,
            out.log_move,
            text_lengths,
            mel_lengths,
            skippable_mask=skippable_mask,
            log_skip=log_skip,
        )
        # Soft alignment: the HMM posterior occupancy (gradient of the log-likelihood).
        with torch.enable_grad():
            e = out.log_attn.detach().requires_grad_(True)
            ll = monotonic_hmm_log_likelihood(
                e, out.log_stay, out.log_move, text_lengths, mel_lengths
            )
            (post,) = torch.autograd.grad(ll.sum(), e)
        return path, post.detach()
    path = monotonic_alignment_search(
        out.log_attn,
        text_lengths,
        mel_lengths,
        skippable_mask=skippable_mask,
        log_skip=log_skip,
    )
    return path, out.soft


class AlignerEnsemble(nn.Module):
    """Several trained aligners of one kind decoded as one: their per-frame evidence averaged.

    Each member scores the same batch (same tokens, same features: the members must share the
    phone inventory and the front end, which :func:`~speechattn.recipes.align.pipeline.load_aligners`
    checks for saved aligners); the ensemble's output pools, at every token and frame,

    * ``combine="log"`` (default): the mean of the members' log-probabilities, renormalised --
      the token log-scores ``log_softmax_u(mean_i log_attn_i)`` and the stay probability
      ``sigmoid(mean_i logit p_i)`` (a normalised geometric mean);
    * ``combine="prob"``: the mean of the members' probabilities (a mixture),
      ``log(mean_i exp(log_attn_i))`` and ``log(mean_i p_i)`` / ``log(mean_i (1 - p_i))``;

    and :meth:`align` decodes that output exactly as :meth:`TextMelAligner.align` decodes one
    model's (Viterbi over the stay/move HMM for ``kind="sma"``, MAS otherwise).
    ``combine="median"`` decodes each member on its own instead and puts every token edge (the
    frame where a token ends) at the members' median (the lower one for an even count), so a
    token keeps >= 1 frame when every member gives it one; its :meth:`forward` pools as
    ``"log"`` and its soft alignment is the members' mean. One member gives that member's
    alignment. ``loss`` is the members' mean loss. ``config`` is the first member's (every
    member has the same ``kind``, ``num_symbols``, ``n_mels`` and ``emission``).

    Members with ``emission="dual"`` or ``"scaled"`` (not a distribution over tokens at each
    frame): ``"log"`` pools them as above (the renormalisation subtracts a per-frame constant,
    which changes no monotonic path's ranking, so one member still gives its own alignment);
    ``"prob"`` first renormalises each member's emissions over the tokens at every frame.

    Args:
        models: the members, a non-empty sequence of :class:`TextMelAligner`.
        combine: one of :data:`ENSEMBLE_COMBINES`.

    Raises:
        TypeError: a member is not a :class:`TextMelAligner`.
        ValueError: no member, members of different ``kind`` / ``num_symbols`` / ``n_mels``, or
            an unknown ``combine``.

    Example::

        ens = AlignerEnsemble([model_a, model_b]).eval()
        path, soft = ens.align(tokens, text_lengths, mels, mel_lengths)  # (B, U) durations
    """

    def __init__(self, models: Sequence[TextMelAligner], *, combine: str = "log") -> None:
        super().__init__()
        members = list(models)
        if not members:
            raise ValueError("Expected at least one aligner in the ensemble; found none.")
        for i, m in enumerate(members):
            if not isinstance(m, TextMelAligner):
                raise TypeError(
                    f"Expected TextMelAligner members; found {type(m).__name__} at index {i}."
                )
        if combine not in ENSEMBLE_COMBINES:
            raise ValueError(f"Expected combine in {ENSEMBLE_COMBINES}; found {combine!r}.")
        first = members[0].config
        for i, m in enumerate(members[1:], start=1):
            for name in ("kind", "num_symbols", "n_mels", "emission"):
                a, b = getattr(first, name), getattr(m.config, name)
                if a != b:
                    raise ValueError(
                        f"Expected every aligner of the ensemble to have {name}={a!r} (member "
                        f"0); found {name}={b!r} at member {i}. Ensemble aligners trained with "
                        "the same recipe on the same corpus."
                    )
        self.members = nn.ModuleList(members)
        self.combine = combine

    @property
    def config(self) -> AlignerConfig:
        """The first member's configuration."""
        return cast(TextMelAligner, self.members[0]).config

    def __len__(self) -> int:
        return len(self.members)

    def forward(
        self, tokens: Tensor, text_lengths: Tensor, mels: Tensor, mel_lengths: Tensor
    ) -> AlignerOutput:
        """The pooled :class:`AlignerOutput` (shapes as :meth:`TextMelAligner.forward`)."""
        return self._pooled(tokens, text_lengths, mels, mel_lengths, with_loss=True)

    def _pooled(
        self,
        tokens: Tensor,
        text_lengths: Tensor,
        mels: Tensor,
        mel_lengths: Tensor,
        *,
        with_loss: bool,
    ) -> AlignerOutput:
        """:meth:`forward`'s output; ``with_loss=False``: no member computes its loss (NaN)."""
        outs = [
            cast(TextMelAligner, m)._outputs(
                tokens, text_lengths, mels, mel_lengths, with_loss=with_loss
            )
            for m in self.members
        ]
        n = len(outs)
        valid2 = lengths_to_valid_mask(text_lengths, tokens.shape[1]).unsqueeze(
            -1
        ) & lengths_to_valid_mask(mel_lengths, mels.shape[1]).unsqueeze(1)
        la = torch.stack([o.log_attn for o in outs])
        if self.combine == "prob" and self.config.emission != "posterior":
            # Emissions that are not per-frame distributions ("dual", "scaled") are first
            # renormalised over the tokens (a per-frame constant, which changes no member's own
            # decoding), so the mixture weighs the members equally at every frame.
            la = torch.log_softmax(mask_token_logits(la.flatten(0, 1), text_lengths.repeat(n)), 1)
            la = la.view(n, *outs[0].log_attn.shape)
        if self.combine != "prob":
            log_attn = torch.log_softmax(mask_token_logits(la.mean(0), text_lengths), dim=1)
        else:
            log_attn = torch.logsumexp(la, dim=0) - math.log(n)
        log_attn = log_attn.masked_fill(~valid2, 0.0)
        log_stay = log_move = None
        if all(o.log_stay is not None and o.log_move is not None for o in outs):
            ls = torch.stack([o.log_stay for o in outs])  # type: ignore[misc]
            lm = torch.stack([o.log_move for o in outs])  # type: ignore[misc]
            if self.combine != "prob":
                z = (ls - lm).mean(0)
                log_stay, log_move = F.logsigmoid(z), F.logsigmoid(-z)
            else:
                log_stay = torch.logsumexp(ls, dim=0) - math.log(n)
                log_move = torch.logsumexp(lm, dim=0) - math.log(n)
        loss = torch.stack([o.loss for o in outs]).mean()
        return AlignerOutput(loss, log_attn, log_attn.exp() * valid2, log_stay, log_move)

    @torch.no_grad()
    def align(
        self,
        tokens: Tensor,
        text_lengths: Tensor,
        mels: Tensor,
        mel_lengths: Tensor,
        skippable_mask: Tensor | None = None,
        log_skip: float = 0.0,
    ) -> tuple[AlignmentPath, Tensor]:
        """Hard alignment and soft alignment of the pooled output (see :meth:`TextMelAligner.align`),
        or with ``combine="median"`` the median of the members' alignments."""
        if self.combine != "median":
            out = self._pooled(tokens, text_lengths, mels, mel_lengths, with_loss=False)
            return _hard_alignment(out, text_lengths, mel_lengths, skippable_mask, log_skip)
        paths, softs = [], []
        for m in self.members:
            p, soft = cast(TextMelAligner, m).align(
                tokens, text_lengths, mels, mel_lengths, skippable_mask, log_skip
            )
            paths.append(p.durations)
            softs.append(soft)
        ends = torch.stack(paths).cumsum(-1)  # (N, B, U): the frame each token ends before
        end = ends.sort(dim=0).values[(len(paths) - 1) // 2]
        start = end - torch.diff(end, dim=-1, prepend=torch.zeros_like(end[:, :1]))
        t = torch.arange(mels.shape[1], device=end.device)
        one_hot = (t >= start.unsqueeze(-1)) & (t < end.unsqueeze(-1))
        soft = torch.stack(softs).mean(0)
        return AlignmentPath(one_hot.to(soft.dtype), end - start), soft
