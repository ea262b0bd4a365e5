"""Speaker encoders: a frame-level trunk (TDNN or ECAPA-TDNN-style) + any pooling + an embedding.

Shape legend: ``b`` batch, ``t`` frames, ``m`` mel bins, ``c`` channels, ``e`` embedding size.
Public layout ``(B, T, n_mels)`` with int64 ``lengths (B,)``; inside, ``(B, C, T)``. Padded frames
are zeroed after every layer and every time reduction (SE squeeze, pooling) uses lengths, so in
eval mode a padded item embeds exactly as the same item alone.

Checkpoints (:func:`save_encoder`, :func:`load_checkpoint`) hold only a dict of strings, numbers,
lists and fp16 tensors and are read with ``torch.load(..., weights_only=True)``. A
:class:`SpeakerEnsemble` (encoders of one recipe trained with different seeds) is saved as one
file holding every member's weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechattn._io import atomic_write
from speechattn.functional.masks import lengths_to_valid_mask
from speechattn.nn import pooling as P
from speechattn.recipes.speaker.config import POOLINGS, SpeakerConfig

__all__ = [
    "AAMSoftmax",
    "EcapaTrunk",
    "SpeakerEncoder",
    "SpeakerEnsemble",
    "TdnnTrunk",
    "build_encoder",
    "load_checkpoint",
    "make_pooling",
    "save_encoder",
]

CHECKPOINT_FORMAT = "speechattn-speaker-v2"
ENSEMBLE_FORMAT = "speechattn-speaker-ensemble-v1"
_OLD_FORMAT = "speechattn-speaker-v1"  # TDNN only; trunk weights at top level (convs., norms.)
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "assets" / "speaker_default.pt"

if set(POOLINGS) != set(P.POOLINGS):  # pragma: no cover - guards the light copy in config
    raise ImportError(f"config.POOLINGS {POOLINGS} != nn.pooling.POOLINGS {P.POOLINGS}")


def make_pooling(name: str, channels: int) -> nn.Module:
    """A pooling layer of :mod:`speechattn.nn.pooling` over ``channels`` features, by name."""
    if name not in P.POOLINGS:
        raise ValueError(f"Expected a pooling in {P.POOLINGS}; found {name!r}.")
    if name == "ASTP":
        return P.ASTP(channels, max(16, channels // 2))
    if name == "MHASTP":
        return P.MHASTP(channels, 2, 4)
    if name == "MQMHASTP":
        return P.MQMHASTP(channels, 2, 2, 4 if channels % 8 else 8)
    if name == "ASP":
        if channels % 8:
            raise ValueError(f"ASP needs channels divisible by 8; found {channels}.")
        return P.ASP(channels // 8, 8)  # D = in_planes * 8 * (8 // 8) = channels
    cls: type[nn.Module] = getattr(P, name)
    return cls(channels)


def _valid(lengths: Tensor, frames: int, dtype: torch.dtype) -> Tensor:
    return lengths_to_valid_mask(lengths, frames).unsqueeze(1).to(dtype)


class TdnnTrunk(nn.Module):
    """Thin x-vector TDNN: 4 conv layers (kernels 5, 3, 3, 1; dilations 1, 2, 3, 1), ReLU, BN.

    ``(B, n_mels, T), mask (B, 1, T) -> (B, channels, T)``.
    """

    def __init__(self, *, n_mels: int, channels: int) -> None:
        super().__init__()
        specs = [(n_mels, 5, 1), (channels, 3, 2), (channels, 3, 3), (channels, 1, 1)]
        self.convs = nn.ModuleList(
            [
                nn.Conv1d(cin, channels, k, dilation=d, padding=d * (k - 1) // 2)
                for cin, k, d in specs
            ]
        )
        self.norms = nn.ModuleList([nn.BatchNorm1d(channels) for _ in specs])
        self.out_dim = channels

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = norm(F.relu(conv(x))) * mask
        return x


class _SERes2Block(nn.Module):
    """SE-Res2Net block (ECAPA-TDNN): 1x1 conv, Res2Net dilated convs, 1x1 conv, masked SE, skip."""

    def __init__(self, channels: int, *, dilation: int, scale: int, se_dim: int) -> None:
        super().__init__()
        width = channels // scale
        self.scale = scale
        self.conv_in = nn.Conv1d(channels, channels, 1)
        self.bn_in = nn.BatchNorm1d(channels)
        self.convs = nn.ModuleList(
            [
                nn.Conv1d(width, width, 3, dilation=dilation, padding=dilation)
                for _ in range(scale - 1)
            ]
        )
        self.bns = nn.ModuleList([nn.BatchNorm1d(width) for _ in range(scale - 1)])
        self.conv_out = nn.Conv1d(channels, channels, 1)
        self.bn_out = nn.BatchNorm1d(channels)
        self.se1 = nn.Linear(channels, se_dim)
        self.se2 = nn.Linear(se_dim, channels)

    def forward(self, x: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
        h = self.bn_in(F.relu(self.conv_in(x))) * mask
        parts = list(torch.chunk(h, self.scale, dim=1))
        outs = [parts[0]]
        prev: Tensor | None = None
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            inp = parts[i + 1] if prev is None else parts[i + 1] + prev
            prev = bn(F.relu(conv(inp))) * mask
            outs.append(prev)
        h = self.bn_out(F.relu(self.conv_out(torch.cat(outs, dim=1)))) * mask
        # squeeze-excitation over valid frames only
        mean = h.sum(-1) / lengths.to(h.dtype).unsqueeze(-1)
        gate = torch.sigmoid(self.se2(F.relu(self.se1(mean)))).unsqueeze(-1)
        return (h * gate + x) * mask


class EcapaTrunk(nn.Module):
    """ECAPA-TDNN-style trunk (Desplanques et al., 2020), sized by ``channels``.

    conv k=5 -> 3 SE-Res2Net blocks (dilations 2, 3, 4) -> concatenation of the 3 block outputs
    (multi-layer feature aggregation) -> 1x1 conv to ``3 * channels``.
    ``(B, n_mels, T), mask (B, 1, T), lengths -> (B, 3 * channels, T)``.
    """

    def __init__(self, *, n_mels: int, channels: int, scale: int = 4) -> None:
        super().__init__()
        if channels % scale:
            raise ValueError(
                f"Expected channels divisible by scale={scale}; found channels={channels}."
            )
        self.conv0 = nn.Conv1d(n_mels, channels, 5, padding=2)
        self.bn0 = nn.BatchNorm1d(channels)
        se_dim = max(8, channels // 4)
        self.blocks = nn.ModuleList(
            [_SERes2Block(channels, dilation=d, scale=scale, se_dim=se_dim) for d in (2, 3, 4)]
        )
        self.mfa = nn.Conv1d(3 * channels, 3 * channels, 1)
        self.bn_mfa = nn.BatchNorm1d(3 * channels)
        self.out_dim = 3 * channels

    def forward(self, x: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
        x = self.bn0(F.relu(self.conv0(x))) * mask
        feats = []
        for block in self.blocks:
            x = block(x, mask, lengths)
            feats.append(x)
        return self.bn_mfa(F.relu(self.mfa(torch.cat(feats, dim=1)))) * mask


class SpeakerEncoder(nn.Module):
    """Trunk (``"tdnn"`` or ``"ecapa"``) + a pooling layer + a linear embedding with BatchNorm.

    ``forward(feats (B, T, n_mels), lengths (B,)) -> (B, embed_dim)`` (not normalised).

    Args:
        n_mels: input feature size.
        channels: trunk width (the ECAPA trunk outputs ``3 * channels``).
        embed_dim: embedding size.
        pooling: a name of :data:`speechattn.nn.pooling.POOLINGS`.
        trunk: ``"tdnn"`` or ``"ecapa"``.
        res2net_scale: Res2Net groups of the ECAPA blocks (divides ``channels``).
    """

    def __init__(
        self,
        *,
        n_mels: int,
        channels: int,
        embed_dim: int,
        pooling: str,
        trunk: str = "tdnn",
        res2net_scale: int = 4,
    ) -> None:
        super().__init__()
        self.trunk_name = trunk
        self.trunk: nn.Module
        if trunk == "tdnn":
            self.trunk = TdnnTrunk(n_mels=n_mels, channels=channels)
        elif trunk == "ecapa":
            self.trunk = EcapaTrunk(n_mels=n_mels, channels=channels, scale=res2net_scale)
        else:
            raise ValueError(f"Expected trunk 'tdnn' or 'ecapa'; found {trunk!r}.")
        self.n_mels = n_mels
        self.pooling_name = pooling
        self.pool = make_pooling(pooling, int(self.trunk.out_dim))
        out_dim = int(self.pool.get_out_dim())  # type: ignore[operator]
        self.embed = nn.Linear(out_dim, embed_dim)
        self.embed_norm = nn.BatchNorm1d(embed_dim)

    @property
    def embed_dim(self) -> int:
        return int(self.embed.out_features)

    def forward(self, feats: Tensor, lengths: Tensor) -> Tensor:
        if feats.dim() != 3 or feats.shape[-1] != self.n_mels:
            raise ValueError(
                f"Expected feats (B, T, n_mels={self.n_mels}); found {tuple(feats.shape)}."
            )
        x = feats.transpose(1, 2)
        mask = _valid(lengths, x.shape[-1], x.dtype)
        x = x * mask
        if isinstance(self.trunk, TdnnTrunk):
            x = self.trunk(x, mask)
        else:
            x = self.trunk(x, mask, lengths)
        return self.embed_norm(self.embed(self.pool(x, lengths).to(self.embed.weight.dtype)))


class SpeakerEnsemble(nn.Module):
    """Encoders of one front end as one: the mean of the members' L2-normalised embeddings.

    ``forward(feats (B, T, n_mels), lengths (B,)) -> (B, embed_dim)`` (not normalised: its norm
    shrinks as the members disagree). Padding never changes an output, as for each member.

    Args:
        members: :class:`SpeakerEncoder` s with the same ``n_mels`` and ``embed_dim`` (e.g. one
            recipe trained with several seeds).

    Raises:
        ValueError: no member, or members with different ``n_mels`` / ``embed_dim``.
    """

    def __init__(self, members: Sequence[SpeakerEncoder]) -> None:
        super().__init__()
        if not members:
            raise ValueError("Expected at least one member encoder; found none.")
        shapes = sorted({(m.n_mels, m.embed_dim) for m in members})
        if len(shapes) != 1:
            raise ValueError(f"Expected members with one (n_mels, embed_dim); found {shapes}.")
        self.members = nn.ModuleList(members)
        self.n_mels = members[0].n_mels
        self._embed_dim = members[0].embed_dim
        names = sorted({m.pooling_name for m in members})
        self.pooling_name = names[0] if len(names) == 1 else "+".join(names)
        trunks = sorted({m.trunk_name for m in members})
        self.trunk_name = trunks[0] if len(trunks) == 1 else "+".join(trunks)

    @property
    def embed_dim(self) -> int:
        return self._embed_dim

    def forward(self, feats: Tensor, lengths: Tensor) -> Tensor:
        embs = [F.normalize(m(feats, lengths).float(), dim=-1) for m in self.members]
        return torch.stack(embs).mean(0)


def build_encoder(cfg: SpeakerConfig, pooling: str) -> SpeakerEncoder:
    """The encoder ``cfg`` describes, with pooling ``pooling``."""
    return SpeakerEncoder(
        n_mels=cfg.n_mels,
        channels=cfg.channels,
        embed_dim=cfg.embed_dim,
        pooling=pooling,
        trunk=cfg.trunk,
        res2net_scale=cfg.res2net_scale,
    )


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace): ``s cos(theta_y + m)`` for the target class.

    ``forward(emb (B, E), labels (B,), margin=None) -> scalar loss`` (float32 under autocast).
    """

    def __init__(self, embed_dim: int, num_classes: int, *, margin: float, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embed_dim) * 0.01)
        self.margin = margin
        self.scale = scale

    def forward(self, emb: Tensor, labels: Tensor, margin: float | None = None) -> Tensor:
        m = self.margin if margin is None else margin
        cos = F.linear(F.normalize(emb.float()), F.normalize(self.weight.float()))
        cos = cos.clamp(-1 + 1e-6, 1 - 1e-6)
        theta = torch.acos(cos.gather(1, labels[:, None]))
        target = torch.cos(theta + m)
        logits = cos.scatter(1, labels[:, None], target) * self.scale
        return F.cross_entropy(logits, labels)


def _half_state(model: nn.Module) -> dict[str, Tensor]:
    return {
        k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
        for k, v in model.state_dict().items()
    }


def save_encoder(
    model: SpeakerEncoder | SpeakerEnsemble,
    pooling: str,
    cfg: SpeakerConfig,
    path: str | os.PathLike[str],
    *,
    derived_voices: Sequence[str] = (),
    member_configs: Sequence[SpeakerConfig] = (),
) -> Path:
    """Save an encoder (config, pooling name, fp16 weights: a few hundred kB) atomically.

    The file holds only strings, numbers, lists and tensors, so it loads with
    ``torch.load(..., weights_only=True)``. ``derived_voices`` records the derived training
    voices (registry keys of Kokoro style mixtures) the encoder learned from, beside the config.
    A :class:`SpeakerEnsemble` is saved with every member's weights (``members``) and
    ``member_configs`` (each member's training config, e.g. its seed; default ``cfg`` for
    each); ``cfg`` is then the one whose front end the file's users compute.

    Raises:
        ValueError: ``member_configs`` is given with another length than the members, or with
            another front end (``n_mels``, ``sample_rate``, ``feature_norm``) than ``cfg``.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ckpt: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "pooling": pooling,
        "config": cfg.to_dict(),
        "derived_voices": [str(v) for v in derived_voices],
    }
    if isinstance(model, SpeakerEnsemble):
        configs = list(member_configs) or [cfg] * len(model.members)
        if len(configs) != len(model.members):
            raise ValueError(
                f"Expected one member config per member ({len(model.members)}); "
                f"found {len(configs)}."
            )
        front = (cfg.n_mels, cfg.sample_rate, cfg.feature_norm)
        for k, c in enumerate(configs):
            if (c.n_mels, c.sample_rate, c.feature_norm) != front:
                raise ValueError(
                    f"Expected member {k}'s (n_mels, sample_rate, feature_norm) = {front}; "
                    f"found {(c.n_mels, c.sample_rate, c.feature_norm)}."
                )
        ckpt["format"] = ENSEMBLE_FORMAT
        ckpt["member_configs"] = [c.to_dict() for c in configs]
        ckpt["member_poolings"] = [m.pooling_name for m in model.members]  # type: ignore[union-attr]
        ckpt["members"] = [_half_state(m) for m in model.members]
    else:
        ckpt["state_dict"] = _half_state(model)
    with atomic_write(p) as tmp:
        torch.save(ckpt, tmp)
    return p


def _upgrade_v1(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """v1 checkpoints (TDNN only) kept the trunk at top level: ``convs.*`` -> ``trunk.convs.*``."""
    out = {}
    for k, v in state.items():
        out["trunk." + k if k.startswith(("convs.", "norms.")) else k] = v
    return out


def load_checkpoint(
    path: str | os.PathLike[str] | None = None,
) -> tuple[SpeakerEncoder | SpeakerEnsemble, SpeakerConfig]:
    """Load a speaker checkpoint (the shipped default when ``path`` is None), in eval mode.

    A file saved from a :class:`SpeakerEnsemble` loads as one (its members in eval mode);
    the config returned is the file's ``config`` (the front end every member uses).

    Read with ``weights_only=True``: a file holding anything but tensors and plain containers
    (a crafted pickle) is refused with a ``ValueError``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a speechattn speaker checkpoint, or not loadable safely.
    """
    import pickle

    p = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if not p.is_file():
        raise FileNotFoundError(
            f"Speaker checkpoint not found: {p}. Train one with "
            f"`speechattn speaker --save-checkpoint {p}`."
        )
    try:
        ckpt: Any = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{p}: not a loadable speaker checkpoint (only tensors and plain data are read; {first})."
        ) from exc
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt == "speechattn-speaker-train-v1":  # recipes.speaker.train's resume state
        raise ValueError(
            f"{p}: a training run's resume state (OUT/checkpoints/<pooling>.pt), not an encoder; "
            "score or embed the file that --save-checkpoint FILE writes (the same training "
            "command with --save-checkpoint added resumes, trains no further and saves it)."
        )
    if fmt not in (CHECKPOINT_FORMAT, ENSEMBLE_FORMAT, _OLD_FORMAT):
        raise ValueError(
            f"{p}: expected a speechattn speaker checkpoint (format {CHECKPOINT_FORMAT}); "
            f"found format {fmt!r}."
        )
    cfg = SpeakerConfig.from_dict(dict(ckpt["config"]))
    if fmt == ENSEMBLE_FORMAT:
        members = []
        for c, pool, st in zip(ckpt["member_configs"], ckpt["member_poolings"], ckpt["members"]):
            m = build_encoder(SpeakerConfig.from_dict(dict(c)), str(pool))
            m.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in st.items()})
            members.append(m)
        ens = SpeakerEnsemble(members)
        ens.eval()
        return ens, cfg
    state = dict(ckpt["state_dict"])
    if fmt == _OLD_FORMAT:
        state = _upgrade_v1(state)
    model = build_encoder(cfg, str(ckpt["pooling"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    model.eval()
    return model, cfg
