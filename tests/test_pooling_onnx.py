"""ONNX export of the pooling layers: dynamic batch, frames and lengths, checked with onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from speechattn.nn import pooling as P

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _check(layer: torch.nn.Module, path: Path, channels: int | None = None) -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        P.export_pooling_onnx(layer, path, channels=channels)
    onnx.checker.check_model(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    layer.eval()
    in_dim = layer.in_dim
    g = torch.Generator().manual_seed(1)
    for batch, frames in [(3, 16), (1, 41), (5, 3), (2, 200)]:
        shape = (
            (batch, in_dim, frames)
            if channels is None
            else (batch, channels, in_dim // channels, frames)
        )
        x = torch.randn(*shape, generator=g)
        lengths = torch.randint(1, frames + 1, (batch,), generator=g)
        lengths[0] = frames
        if batch > 1:
            lengths[-1] = 1
        with torch.no_grad():
            want = layer(x, lengths).numpy()
        got = sess.run(["emb"], {"x": x.numpy(), "lengths": lengths.numpy()})[0]
        assert got.shape == want.shape == (batch, layer.get_out_dim())
        torch.testing.assert_close(
            torch.from_numpy(got), torch.from_numpy(want), atol=2e-5, rtol=1e-5
        )
        # padding content is irrelevant in the exported graph too
        x2 = x.clone()
        mask = torch.arange(frames) >= lengths[:, None]
        x2.masked_fill_(mask.view(batch, *([1] * (x.dim() - 2)), frames), 1e6)
        got2 = sess.run(["emb"], {"x": x2.numpy(), "lengths": lengths.numpy()})[0]
        torch.testing.assert_close(
            torch.from_numpy(got2), torch.from_numpy(got), atol=2e-5, rtol=1e-5
        )


def test_onnx_mqmhastp_dynamic(tmp_path: Path) -> None:
    _check(P.MQMHASTP(32, head_num=4), tmp_path / "mqmhastp.onnx", channels=4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "layer",
    [
        P.TSTP(24),
        P.TAP(24),
        P.TSDP(24),
        P.ASTP(24, bottleneck_dim=8),
        P.ASTP(24, bottleneck_dim=8, global_context_att=True),
        P.MHASTP(24, head_num=3, d_s=2),
        P.ASP(1, 24),
    ],
    ids=["TSTP", "TAP", "TSDP", "ASTP", "ASTP-glob", "MHASTP", "ASP"],
)
def test_onnx_every_layer(layer: torch.nn.Module, tmp_path: Path) -> None:
    _check(layer, tmp_path / "layer.onnx")


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="in_dim"):
        P.export_pooling_onnx(P.TAP(), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="channels"):
        P.export_pooling_onnx(P.TSTP(10), tmp_path / "x.onnx", channels=3)
