"""The authors' projector modules, re-typed from their repositories, to build released-layout
state dicts in tests (the released weights themselves are not available offline).

Re-typed from MCR-PEFT/C-MCR cmcr/cmcr_projector.py (MLP, MLP_Half, CLAPCLIP_Head,
ULIPCLIP_Head) and forward code cmcr/cmcr_model.py, and MCR-PEFT/Ex-MCR
exmcr/exmcr_projector.py (MLP, Projector, Ex_MCR_Head) and exmcr/exmcr_model.py. Changes,
none of which touches a parameter name or the arithmetic:
- the heads take `channel` (the official ones are fixed at 512), so that end-to-end tests
  can build the same layout at the tiny towers' width;
- `get_activation` is reduced to the ReLU the heads use; `get_device` and unused init modes
  are left out.

Public helpers (stable; other tests use them):
    CLAPCLIP_Head, ULIPCLIP_Head, Ex_MCR_Head      the official modules
    randomize(module, seed)                         every parameter and BatchNorm buffer random
    official_cmcr(head, clap, clip)                 the official C-MCR forward (audio, vision)
    official_exmcr(head, clap, clip)                the official Ex-MCR forward (audio, vision)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Module):
    def __init__(self, channel=512, res_expansion=1.0, bias=True, activation="relu"):  # noqa: ANN001
        super().__init__()
        self.act = nn.ReLU(inplace=True)  # get_activation('relu')
        self.net1 = nn.Sequential(
            nn.Linear(channel, int(channel * res_expansion), bias=bias),
            nn.BatchNorm1d(int(channel * res_expansion)),
            self.act,
        )
        self.net2 = nn.Sequential(
            nn.Linear(int(channel * res_expansion), channel, bias=bias), nn.BatchNorm1d(channel)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net2(self.net1(x))


class MLP_Half(nn.Module):  # noqa: N801 (the official name)
    def __init__(self, channel=512, res_expansion=1.0, bias=True, activation="relu"):  # noqa: ANN001
        super().__init__()
        self.act = nn.ReLU(inplace=True)
        self.net = nn.Sequential(
            nn.Linear(channel, int(channel * res_expansion), bias=bias),
            nn.BatchNorm1d(int(channel * res_expansion)),
            self.act,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CLAPCLIP_Head(nn.Module):  # noqa: N801
    def __init__(self, channel: int = 512) -> None:
        super().__init__()
        self.Head_A = MLP(channel, res_expansion=2.0)  # CLAP
        self.Head_B = MLP(channel, res_expansion=2.0)  # CLIP


class ULIPCLIP_Head(nn.Module):  # noqa: N801
    def __init__(self, channel: int = 512) -> None:
        super().__init__()
        self.Head_A = MLP_Half(channel)  # CLIP (the roles flip in this head)
        self.Head_B = MLP_Half(channel)  # ULIP


class Projector(nn.Module):
    def __init__(self, init_mode: str, channel: int = 512) -> None:
        super().__init__()
        self.mlp1 = MLP(channel, res_expansion=2)
        self.mlp2 = MLP(channel, res_expansion=2)
        if init_mode == "xav":
            for m in self.parameters():
                if m.dim() > 1:
                    nn.init.xavier_uniform_(m)

    def forward(self, embs: Tensor) -> Tensor:
        embs = self.mlp1(embs)
        embs = self.mlp2(embs)
        return F.normalize(embs, dim=-1)


class Ex_MCR_Head(nn.Module):  # noqa: N801
    def __init__(self, channel: int = 512) -> None:
        super().__init__()
        self.Head1 = nn.Linear(channel, channel, bias=True)
        self.Head2 = Projector("xav", channel)
        for m in self.Head1.parameters():
            if m.dim() > 1:
                nn.init.eye_(m)


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Every weight, bias and BatchNorm buffer drawn at random (positive variances, a count
    of batches), so that a mapping mistake anywhere changes the output; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(int(torch.randint(1, 10_000, (1,), generator=generator)))
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
    return module.eval()


@torch.no_grad()
def official_cmcr(head: CLAPCLIP_Head, clap: Tensor, clip: Tensor) -> tuple[Tensor, Tensor]:
    """C_MCR_CLAPCLIP: trunk features are L2-normalised (cmcr/trunks.py), projected by Head_A
    (audio) or Head_B (vision, text) and normalised (get_audio/vision_embedding)."""
    audio = F.normalize(head.Head_A(F.normalize(clap, dim=-1)), dim=-1)
    vision = F.normalize(head.Head_B(F.normalize(clip, dim=-1)), dim=-1)
    return audio, vision


@torch.no_grad()
def official_exmcr(head: Ex_MCR_Head, clap: Tensor, clip: Tensor) -> tuple[Tensor, Tensor]:
    """Ex_MCR.project_audio_to_base_mcr (Head1 then Head2) on normalised CLAP features, then
    normalised; CLIP features are only normalised (get_vision_embedding)."""
    audio = head.Head2(head.Head1(F.normalize(clap, dim=-1)))
    return F.normalize(audio, dim=-1), F.normalize(F.normalize(clip, dim=-1), dim=-1)
