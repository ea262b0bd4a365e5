"""Wav2Vec2-BERT audio encoder whose output stands in for a text encoder's hidden states.

Shape legend: ``b`` batch, ``f`` feature frames (SeamlessM4T fbank, 2 x 10 ms stacked), ``t`` encoder
frames after the conv adapter (about f / 4), ``l`` text positions (77 for CLIP), ``d`` text width.

Pipeline: feature extractor -> ``Wav2Vec2BertModel`` (with a conv adapter: kernel 3, stride 2,
2 layers) -> linear projection to the text width (when widths differ) -> :class:`LengthMatcher` to
exactly ``l`` positions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from speechattn._io import atomic_write, write_text_atomic
from speechattn.data.collate import pad_sequence_batch
from speechattn.functional.masks import lengths_to_valid_mask

if TYPE_CHECKING:
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertModel

__all__ = [
    "SEED_ADAPTER_SETTINGS",
    "AudioEncoderOutput",
    "AudioToTextEncoder",
    "LengthMatcher",
    "check_model_folder",
    "extract_features",
    "pad_features",
]


def check_model_folder(path: str | Path, *, option: str = "--model") -> Path:
    """Fail fast when ``path`` is not a folder written by ``speechattn audio2clip train``.

    Returns the folder. Raises ``ValueError`` naming the option, the path and what to pass.
    """
    folder = Path(path).expanduser()
    if not (folder / CONFIG_NAME).is_file():
        what = "no such folder" if not folder.exists() else f"no {CONFIG_NAME} in it"
        raise ValueError(
            f"{option} {path}: not a model folder written by `speechattn audio2clip train` "
            f"({what}); pass the --out folder of a training run."
        )
    return folder


#: The conv adapter added to facebook/w2v-bert-2.0 (about 4x fewer frames than features).
SEED_ADAPTER_SETTINGS: dict[str, Any] = {
    "add_adapter": True,
    "adapter_kernel_size": 3,
    "adapter_stride": 2,
    "num_adapter_layers": 2,
    "layerdrop": 0.0,
}

CONFIG_NAME = "audio2clip_config.json"
HEAD_WEIGHTS_NAME = "audio2clip_head.pt"
ENCODER_SUBFOLDER = "encoder"

LengthMode = Literal["pad_crop", "resample"]


class AudioEncoderOutput(NamedTuple):
    """Outputs of :class:`AudioToTextEncoder`.

    Attributes:
        embeddings: ``(B, L, D)`` states standing in for the text encoder's (every position filled).
        encoder_states: ``(B, T, D)`` projected encoder states before length matching (with
            ``project_after_match``: the unprojected ``(B, T, encoder width)`` states).
        encoder_lengths: int64 ``(B,)`` valid encoder frames per item.
    """

    embeddings: Tensor
    encoder_states: Tensor
    encoder_lengths: Tensor


def extract_features(
    feature_extractor: Any, waveforms: list[np.ndarray], *, sampling_rate: int = 16000
) -> list[Tensor]:
    """Fbank features of each waveform on its own: a list of ``(F_i, C)`` float32 tensors.

    One call per waveform on purpose: ``SeamlessM4TFeatureExtractor`` called on a padded batch
    stacks the last partial group of 10 ms frames together with padding and marks it valid, so an
    item in a batch can get one feature frame more (and different values) than the same item
    alone. Feature each item alone, then :func:`pad_features`.
    """
    return [
        feature_extractor(
            [np.asarray(w, dtype=np.float32)],
            sampling_rate=sampling_rate,
            return_tensors="pt",
            padding=False,
        )["input_features"][0]
        for w in waveforms
    ]


def pad_features(features: list[Tensor]) -> dict[str, Tensor]:
    """Zero-pad ``(F_i, C)`` features to ``input_features (B, F, C)`` + ``attention_mask (B, F)``."""
    x, lengths = pad_sequence_batch(features)
    mask = lengths_to_valid_mask(lengths, x.shape[1]).to(torch.int64)
    return {"input_features": x, "attention_mask": mask}


def _read_head_config(path: Path) -> dict[str, Any]:
    """The head settings saved by :meth:`AudioToTextEncoder.save_pretrained` (a JSON object)."""
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{path}: not a readable audio2clip head config ({' '.join(str(exc).split())}); "
            "the folder was not fully written (an interrupted save?): train again or restore it."
        ) from None
    if not isinstance(cfg, dict):
        raise ValueError(
            f"{path}: expected a JSON object of head settings; found {type(cfg).__name__}."
        )
    return cfg


def _read_head_weights(path: Path) -> dict[str, Tensor]:
    """The head's tensors, read with ``torch.load(weights_only=True)`` (no code runs from the file).

    Raises:
        ValueError: missing, truncated or corrupt file, one that asks for arbitrary unpickling,
            or one that is not a dict of tensors (another program's file); the message names it.
    """
    try:
        head = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip errors (RuntimeError), UnpicklingError, EOFError, OSError
        first = " ".join(str(exc).split()).split(". ")[0][:160]
        raise ValueError(
            f"{path}: not audio2clip head weights that load safely with torch.load(weights_only="
            f"True) ({type(exc).__name__}: {first}); the folder was not fully written or the "
            "file is not from `speechattn audio2clip train`."
        ) from None
    if not isinstance(head, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in head.items()
    ):
        raise ValueError(
            f"{path}: expected a dict of head tensors (written by `speechattn audio2clip "
            f"train`); found {type(head).__name__}."
        )
    return head


def _sinusoid(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    i = torch.arange(0, dim, 2, device=device, dtype=torch.float32)
    angle = pos / torch.pow(10000.0, i / dim)
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return pe.to(dtype)


class LengthMatcher(nn.Module):
    """Map a variable number of encoder frames to exactly ``length`` positions.

    Modes:
        ``"pad_crop"``: position ``l`` is encoder frame ``l`` when ``l < encoder_lengths[b]``, else a
            learned padding vector (frames beyond ``length`` are dropped). No parameters besides the
            padding vector; the original recipe's choice (its adapter gives ~77 frames for ~6 s of audio).
        ``"resample"``: ``length`` learned queries cross-attend (one multi-head attention block +
            feed-forward, pre-norm) to the valid frames, which carry a sinusoidal position code.
            Works for any audio duration.

    Padding frames (``t >= encoder_lengths[b]``) never change the output in either mode.

    Args:
        length: number of output positions ``L`` (the text encoder's length).
        embed_dim: width ``D`` of inputs and outputs.
        mode: ``"pad_crop"`` or ``"resample"``.
        num_heads: attention heads of the resampler (must divide ``embed_dim``).
        dropout: attention dropout of the resampler.

    Shapes: ``forward(states (B, T, D), lengths int64 (B,)) -> (B, L, D)``.
    """

    def __init__(
        self,
        *,
        length: int,
        embed_dim: int,
        mode: LengthMode = "resample",
        num_heads: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in ("pad_crop", "resample"):
            raise ValueError(f"Expected mode 'pad_crop' or 'resample'; found {mode!r}.")
        if length < 1 or embed_dim < 1:
            raise ValueError(
                f"Expected length >= 1 and embed_dim >= 1; found {length}, {embed_dim}."
            )
        self.length = length
        self.embed_dim = embed_dim
        self.mode: LengthMode = mode
        if mode == "pad_crop":
            self.pad_embedding = nn.Parameter(torch.zeros(embed_dim))
        else:
            if embed_dim % num_heads:
                raise ValueError(
                    f"Expected num_heads to divide embed_dim; found embed_dim={embed_dim}, "
                    f"num_heads={num_heads}. Pick a divisor, e.g. num_heads={math.gcd(embed_dim, 8)}."
                )
            self.queries = nn.Parameter(torch.randn(length, embed_dim) * embed_dim**-0.5)
            self.norm_q = nn.LayerNorm(embed_dim)
            self.norm_kv = nn.LayerNorm(embed_dim)
            self.attn = nn.MultiheadAttention(
                embed_dim, num_heads, dropout=dropout, batch_first=True
            )
            self.norm_ff = nn.LayerNorm(embed_dim)
            self.ff = nn.Sequential(
                nn.Linear(embed_dim, 4 * embed_dim), nn.GELU(), nn.Linear(4 * embed_dim, embed_dim)
            )

    def forward(self, states: Tensor, lengths: Tensor) -> Tensor:
        if states.dim() != 3 or states.shape[-1] != self.embed_dim:
            raise ValueError(
                f"Expected states of shape (B, T, {self.embed_dim}); found {tuple(states.shape)}."
            )
        b, t, d = states.shape
        lengths = lengths.to(states.device)
        valid = lengths_to_valid_mask(lengths, t)  # (B, T)
        states = states.masked_fill(~valid[..., None], 0.0)
        if self.mode == "pad_crop":
            if t >= self.length:
                out = states[:, : self.length]
            else:
                out = torch.cat([states, states.new_zeros(b, self.length - t, d)], dim=1)
            keep = lengths_to_valid_mask(lengths.clamp_max(self.length), self.length)
            return torch.where(keep[..., None], out, self.pad_embedding.to(out.dtype))
        kv = self.norm_kv(states + _sinusoid(t, d, states.device, states.dtype))
        q = self.norm_q(self.queries).to(states.dtype).expand(b, -1, -1)
        attended, _ = self.attn(q, kv, kv, key_padding_mask=~valid, need_weights=False)
        out = self.queries.to(states.dtype) + attended
        return out + self.ff(self.norm_ff(out))


class AudioToTextEncoder(nn.Module):
    """Audio encoder whose ``(B, L, D)`` output replaces a frozen text encoder's hidden states.

    Build with :meth:`from_pretrained` (a Wav2Vec2-BERT checkpoint such as ``facebook/w2v-bert-2.0``,
    or a folder written by :meth:`save_pretrained`), or directly from an encoder module.

    Args:
        encoder: a ``transformers.Wav2Vec2BertModel`` (any config; seed: with the conv adapter).
        feature_extractor: its ``SeamlessM4TFeatureExtractor`` (used by :meth:`embed_waveforms`).
        text_length: ``L``, the text encoder's sequence length (CLIP: 77).
        text_dim: ``D``, the text encoder's width (SD 2.1's OpenCLIP-H: 1024); a linear projection
            is added when it differs from the encoder's output width.
        length_mode: ``"resample"`` (default) or ``"pad_crop"``; see :class:`LengthMatcher`.
        num_heads: resampler heads.
        project_after_match: match the length at the encoder's width and project the ``L``
            outputs to ``D`` afterwards (cheaper when ``D`` is much wider than the encoder, as in
            the offline demo); default False: project the frames, then match at ``D``.
    """

    def __init__(
        self,
        *,
        encoder: Wav2Vec2BertModel,
        feature_extractor: SeamlessM4TFeatureExtractor | None = None,
        text_length: int = 77,
        text_dim: int = 1024,
        length_mode: LengthMode = "resample",
        num_heads: int = 8,
        project_after_match: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_extractor = feature_extractor
        cfg = encoder.config
        width = cfg.output_hidden_size if getattr(cfg, "add_adapter", False) else cfg.hidden_size
        self.encoder_width = int(width or cfg.hidden_size)
        self.text_length = int(text_length)
        self.text_dim = int(text_dim)
        self.length_mode: LengthMode = length_mode
        self.num_heads = int(num_heads)
        self.project_after_match = bool(project_after_match)
        self.proj: nn.Module = (
            nn.Linear(self.encoder_width, self.text_dim)
            if self.encoder_width != self.text_dim
            else nn.Identity()
        )
        self.matcher = LengthMatcher(
            length=self.text_length,
            embed_dim=self.encoder_width if self.project_after_match else self.text_dim,
            mode=length_mode,
            num_heads=num_heads,
        )

    # -- lengths ---------------------------------------------------------------------------------

    def encoder_lengths(self, feature_lengths: Tensor) -> Tensor:
        """Encoder frames (after the adapter) for ``feature_lengths`` feature frames (int64)."""
        cfg = self.encoder.config
        lengths = feature_lengths.to(torch.int64)
        if getattr(cfg, "add_adapter", False):
            pad = cfg.adapter_kernel_size // 2
            for _ in range(cfg.num_adapter_layers):
                lengths = (lengths + 2 * pad - cfg.adapter_kernel_size) // cfg.adapter_stride + 1
        return lengths

    @contextmanager
    def _adapter_padding_zeroed(self, feat_lengths: Tensor) -> Iterator[None]:
        """Zero padded frames at the input of every adapter convolution during one forward.

        ``transformers``' ``Wav2Vec2BertAdapterLayer`` applies its strided convolutions (kernel 3,
        "same"-style padding) to the layer-normed states of every frame, padded ones included, so
        the last valid output frame of each adapter layer sees one padded frame where the item
        alone sees the convolution's zero padding (and the adapter's attention then spreads that to
        every frame). Zeroing the padded frames at each convolution's input makes a padded item's
        output equal the item run alone. The encoder's own conformer convolutions are causal and
        masked by ``transformers``, so they need nothing. The lengths per adapter layer follow
        ``transformers``' own formula, which assumes no adapter layer is dropped (``layerdrop`` 0,
        as in :data:`SEED_ADAPTER_SETTINGS`).
        """
        adapter = getattr(self.encoder, "adapter", None)
        if adapter is None or not bool((feat_lengths < feat_lengths.max()).any()):
            yield
            return
        cfg = self.encoder.config
        pad = cfg.adapter_kernel_size // 2
        lengths = feat_lengths.to(torch.int64)
        handles = []

        def make_hook(valid_lengths: Tensor) -> Any:
            def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
                x = args[0]  # (B, C, T)
                keep = lengths_to_valid_mask(valid_lengths.to(x.device), x.shape[-1])
                return (x * keep[:, None, :].to(x.dtype), *args[1:])

            return hook

        try:
            for layer in adapter.layers:
                hook = make_hook(lengths)
                handles.append(layer.residual_conv.register_forward_pre_hook(hook))
                handles.append(layer.self_attn_conv.register_forward_pre_hook(hook))
                lengths = (lengths + 2 * pad - cfg.adapter_kernel_size) // cfg.adapter_stride + 1
            yield
        finally:
            for h in handles:
                h.remove()

    # -- forward ---------------------------------------------------------------------------------

    def forward(
        self, input_features: Tensor, attention_mask: Tensor | None = None
    ) -> AudioEncoderOutput:
        """Encode fbank features.

        Args:
            input_features: ``(B, F, C)`` from the feature extractor (C = 2 x mel bins).
            attention_mask: ``(B, F)`` int/bool, 1 = real frame (prefix), or None (all real).

        Returns:
            :class:`AudioEncoderOutput` with ``embeddings (B, L, D)``. Differentiable.
        """
        if input_features.dim() != 3:
            raise ValueError(
                f"Expected input_features of shape (B, F, C); found {tuple(input_features.shape)}."
            )
        b, f, _ = input_features.shape
        if attention_mask is None:
            feat_lengths = torch.full((b,), f, dtype=torch.int64, device=input_features.device)
        else:
            feat_lengths = attention_mask.to(torch.int64).sum(-1)
        with self._adapter_padding_zeroed(feat_lengths):
            hidden = self.encoder(
                input_features=input_features, attention_mask=attention_mask
            ).last_hidden_state
        enc_lengths = self.encoder_lengths(feat_lengths).clamp(1, hidden.shape[1])
        if self.project_after_match:
            out = self.proj(self.matcher(hidden, enc_lengths))
            return AudioEncoderOutput(out, hidden, enc_lengths)
        states = self.proj(hidden)
        return AudioEncoderOutput(self.matcher(states, enc_lengths), states, enc_lengths)

    def featurize(
        self, waveforms: list[np.ndarray], *, sampling_rate: int = 16000
    ) -> dict[str, Tensor]:
        """Feature each waveform alone and zero-pad (:func:`extract_features`, :func:`pad_features`).

        Returns ``input_features (B, F, C)`` and ``attention_mask (B, F)`` for :meth:`forward`.
        """
        if self.feature_extractor is None:
            raise ValueError("This encoder has no feature_extractor; pass one to the constructor.")
        feats = extract_features(self.feature_extractor, waveforms, sampling_rate=sampling_rate)
        return pad_features(feats)

    @torch.no_grad()
    def embed_waveforms(
        self, waveforms: list[np.ndarray], *, sampling_rate: int = 16000, batch_size: int = 8
    ) -> Tensor:
        """``(N, L, D)`` embeddings of N waveforms (eval mode, no gradients)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        outs = []
        for i in range(0, len(waveforms), batch_size):
            batch = self.featurize(waveforms[i : i + batch_size], sampling_rate=sampling_rate)
            outs.append(self(**{k: v.to(device) for k, v in batch.items()}).embeddings.cpu())
        self.train(was_training)
        return torch.cat(outs, 0)

    # -- persistence -----------------------------------------------------------------------------

    def head_config(self) -> dict[str, Any]:
        return {
            "text_length": self.text_length,
            "text_dim": self.text_dim,
            "length_mode": self.length_mode,
            "num_heads": self.num_heads,
            "project_after_match": self.project_after_match,
        }

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``encoder/`` (HF model + feature extractor), the head weights and its config.

        The config, which marks a saved folder, goes first out and last in (through a temporary
        file and ``os.replace``): a save cut short (Ctrl-C, a full disk) over an earlier model
        leaves a folder that :meth:`from_pretrained` refuses, never a mix of the two models.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).unlink(missing_ok=True)
        self.encoder.save_pretrained(path / ENCODER_SUBFOLDER)
        if self.feature_extractor is not None:
            self.feature_extractor.save_pretrained(path / ENCODER_SUBFOLDER)
        head = {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}
        with atomic_write(path / HEAD_WEIGHTS_NAME) as tmp:
            torch.save(head, tmp)
        write_text_atomic(path / CONFIG_NAME, json.dumps(self.head_config(), indent=2))
        return path

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        text_length: int | None = None,
        text_dim: int | None = None,
        length_mode: LengthMode | None = None,
        num_heads: int | None = None,
        project_after_match: bool | None = None,
        **encoder_kwargs: Any,
    ) -> AudioToTextEncoder:
        """Load a trained folder (written by :meth:`save_pretrained`) or start from a w2v-BERT checkpoint.

        Args:
            path_or_id: folder with ``audio2clip_config.json`` (everything is restored; a head
                setting passed as well must match the saved one, else ``ValueError``), or a
                ``Wav2Vec2BertModel`` checkpoint (hub id such as ``facebook/w2v-bert-2.0`` or a local
                folder) loaded with :data:`SEED_ADAPTER_SETTINGS`, plus a new head.
            text_length, text_dim, length_mode, num_heads, project_after_match: head settings
                for a new head (defaults 77, required, ``"resample"``, 8, False).
            **encoder_kwargs: extra config overrides for ``Wav2Vec2BertModel.from_pretrained``.
        """
        from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertModel

        local = Path(path_or_id)
        if (local / CONFIG_NAME).is_file():
            cfg = _read_head_config(local / CONFIG_NAME)
            asked = {
                "text_length": text_length,
                "text_dim": text_dim,
                "length_mode": length_mode,
                "num_heads": num_heads,
                "project_after_match": project_after_match,
            }
            conflicts = [
                f"{k}={v!r} (saved: {cfg.get(k)!r})"
                for k, v in asked.items()
                if v is not None and k in cfg and cfg[k] != v
            ]
            if conflicts:
                raise ValueError(
                    f"{local} is a saved AudioToTextEncoder whose head differs from the "
                    f"arguments: {', '.join(conflicts)}. Leave them out to load it as saved, or "
                    "start a new head from the w2v-BERT checkpoint."
                )
            encoder = Wav2Vec2BertModel.from_pretrained(local / ENCODER_SUBFOLDER, **encoder_kwargs)
            fe_dir = local / ENCODER_SUBFOLDER
            fe = (
                SeamlessM4TFeatureExtractor.from_pretrained(fe_dir)
                if (fe_dir / "preprocessor_config.json").is_file()
                else None
            )
            model = cls(encoder=encoder, feature_extractor=fe, **cfg)
            head = _read_head_weights(local / HEAD_WEIGHTS_NAME)
            missing, unexpected = model.load_state_dict(head, strict=False)
            bad = [k for k in missing if not k.startswith("encoder.")] + list(unexpected)
            if bad:
                raise ValueError(f"Head weights in {local} do not match the config: {bad[:5]}.")
            return model
        if (local / HEAD_WEIGHTS_NAME).is_file():
            raise ValueError(
                f"{local}: an audio2clip model folder whose save was cut short ({HEAD_WEIGHTS_NAME} "
                f"but no {CONFIG_NAME}); train again into it or restore it."
            )
        if text_dim is None:
            raise ValueError(
                f"{path_or_id!s} is not a saved AudioToTextEncoder folder (no {CONFIG_NAME}); to start "
                "from a Wav2Vec2-BERT checkpoint pass text_dim= (the text encoder's width, e.g. 1024)."
            )
        settings = {**SEED_ADAPTER_SETTINGS, **encoder_kwargs}
        encoder = Wav2Vec2BertModel.from_pretrained(str(path_or_id), **settings)
        fe = SeamlessM4TFeatureExtractor.from_pretrained(str(path_or_id))
        return cls(
            encoder=encoder,
            feature_extractor=fe,
            text_length=77 if text_length is None else text_length,
            text_dim=text_dim,
            length_mode="resample" if length_mode is None else length_mode,
            num_heads=8 if num_heads is None else num_heads,
            project_after_match=bool(project_after_match),
        )
