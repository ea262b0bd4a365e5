"""TEST ORACLE: WeSpeaker's pooling layers (wespeaker/models/pooling_layers.py), re-stated.

Our own re-statement of what WeSpeaker's forward passes compute, written plainly with the per-head
and per-query Python loops WeSpeaker uses, and with the same module tree (so state dicts transfer
both ways). It takes no lengths: WeSpeaker pools fixed crops. Used only by the tests as the
reference for ``speechattn.nn`` pooling without lengths. Its known flaws are kept on purpose
(unbiased ``torch.var`` gives NaN for a single frame; no lengths; per-head loops).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ASP", "ASTP", "MHASTP", "MQMHASTP", "TAP", "TSDP", "TSTP"]


def _flat(x: Tensor) -> Tensor:
    if x.dim() == 4:
        return x.reshape(x.shape[0], x.shape[1] * x.shape[2], x.shape[3])
    return x


class TAP(nn.Module):
    def __init__(self, in_dim: int = 0, **kwargs: object) -> None:
        super().__init__()
        self.in_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=-1).flatten(start_dim=1)


class TSDP(nn.Module):
    def __init__(self, in_dim: int = 0, **kwargs: object) -> None:
        super().__init__()
        self.in_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:
        return torch.sqrt(torch.var(x, dim=-1) + 1e-7).flatten(start_dim=1)


class TSTP(nn.Module):
    def __init__(self, in_dim: int = 0, **kwargs: object) -> None:
        super().__init__()
        self.in_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:
        mu = x.mean(dim=-1).flatten(start_dim=1)
        sd = torch.sqrt(torch.var(x, dim=-1) + 1e-7).flatten(start_dim=1)
        return torch.cat((mu, sd), 1)


class ASTP(nn.Module):
    def __init__(
        self,
        in_dim: int,
        bottleneck_dim: int = 128,
        global_context_att: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.global_context_att = global_context_att
        self.linear1 = nn.Conv1d(
            in_dim * 3 if global_context_att else in_dim, bottleneck_dim, kernel_size=1
        )
        self.linear2 = nn.Conv1d(bottleneck_dim, in_dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        x = _flat(x)
        if self.global_context_att:
            m = x.mean(dim=-1, keepdim=True).expand_as(x)
            s = torch.sqrt(x.var(dim=-1, keepdim=True) + 1e-7).expand_as(x)
            x_in = torch.cat((x, m, s), dim=1)
        else:
            x_in = x
        w = torch.softmax(self.linear2(torch.tanh(self.linear1(x_in))), dim=2)
        mean = (w * x).sum(dim=2)
        var = (w * x**2).sum(dim=2) - mean**2
        return torch.cat([mean, var.clamp(min=1e-7).sqrt()], dim=1)


class ASP(nn.Module):
    def __init__(self, in_planes: int, acoustic_dim: int) -> None:
        super().__init__()
        d = in_planes * 8 * int(acoustic_dim / 8)
        self.out_dim = d * 2
        self.attention = nn.Sequential(
            nn.Conv1d(d, 128, kernel_size=1),
            nn.ReLU(),
            nn.BatchNorm1d(128),
            nn.Conv1d(128, d, kernel_size=1),
            nn.Softmax(dim=2),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        w = self.attention(x)
        mu = (x * w).sum(dim=2)
        sg = ((x**2 * w).sum(dim=2) - mu**2).clamp(min=1e-5).sqrt()
        return torch.cat((mu, sg), 1)


class MHASTP(nn.Module):
    def __init__(
        self,
        in_dim: int,
        layer_num: int = 2,
        head_num: int = 2,
        d_s: int = 1,
        bottleneck_dim: int = 64,
        **kwargs: object,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.head_num = head_num
        c = in_dim // head_num
        d_s = c if d_s > 1 else 1
        dims = [bottleneck_dim] * (layer_num + 1)
        dims[0], dims[-1] = c, d_s
        heads = []
        for _ in range(head_num):
            seq = nn.Sequential()
            for i in range(layer_num - 1):
                seq.add_module(f"att_{i}", nn.Conv1d(dims[i], dims[i + 1], 1, 1))
                seq.add_module(f"tanh{i}", nn.Tanh())
            seq.add_module(
                f"att_{layer_num - 1}", nn.Conv1d(dims[layer_num - 1], dims[layer_num], 1, 1)
            )
            heads.append(seq)
        self.heads_att_trans = nn.ModuleList(heads)

    def forward(self, x: Tensor) -> Tensor:
        x = _flat(x)
        outs = []
        for chunk, net in zip(torch.chunk(x, self.head_num, 1), self.heads_att_trans):
            w = torch.softmax(net(chunk), dim=-1)
            mean = (w * chunk).sum(dim=2)
            var = (w * chunk**2).sum(dim=2) - mean**2
            outs.append(torch.cat((mean, var.clamp(min=1e-7).sqrt()), dim=1))
        return torch.cat(outs, dim=1)


class MQMHASTP(nn.Module):
    def __init__(
        self,
        in_dim: int,
        layer_num: int = 2,
        query_num: int = 2,
        head_num: int = 8,
        d_s: int = 2,
        bottleneck_dim: int = 64,
        **kwargs: object,
    ) -> None:
        super().__init__()
        self.n_query = nn.ModuleList(
            [
                MHASTP(
                    in_dim,
                    layer_num=layer_num,
                    head_num=head_num,
                    d_s=d_s,
                    bottleneck_dim=bottleneck_dim,
                )
                for _ in range(query_num)
            ]
        )
        self.query_num = query_num
        self.in_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:
        x = _flat(x)
        return torch.cat([q(x) for q in self.n_query], dim=-1)
