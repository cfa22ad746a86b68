"""cpD-GAN (paper S.2.2, Figure S1): no progressive growing, a skip-connection generator with
label- and noise-conditional pixel norm, and a residual projection discriminator."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from synthmed.models.layers import (
    ConditionalPixelNorm,
    DiscriminatorEpilogue,
    EqualizedConv2d,
    EqualizedLinear,
    LatentSampler,
    PixelNorm,
    channels_at,
    downsample,
    lrelu,
    upsample,
)


class _GeneratorBlock(nn.Module):
    """Figure S1 right: up, conv3x3, CPN, lrelu, conv3x3, CPN, lrelu (the first conv changes width)."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, out_channels, 3)
        self.norm0 = ConditionalPixelNorm(out_channels, cond_dim)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3)
        self.norm1 = ConditionalPixelNorm(out_channels, cond_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = lrelu(self.norm0(self.conv0(upsample(x)), c))
        return lrelu(self.norm1(self.conv1(x), c))


class CpdGenerator(LatentSampler, nn.Module):
    def __init__(self, resolution: int, label_dim: int, latent_dim: int = 512, channels_base: int = 16384,
                 channels_max: int = 512, image_channels: int = 1) -> None:
        super().__init__()
        self.resolution, self.label_dim, self.latent_dim = resolution, label_dim, latent_dim
        cond_dim = latent_dim + label_dim
        ch = partial(channels_at, base=channels_base, maximum=channels_max)
        self.input_norm = PixelNorm()
        # ProGAN's gain sqrt(2)/4 for the dense layer that makes the 4x4 maps.
        self.dense = EqualizedLinear(cond_dim, ch(4) * 16, gain=math.sqrt(2) / 4)
        self.norm0 = ConditionalPixelNorm(ch(4), cond_dim)
        self.conv = EqualizedConv2d(ch(4), ch(4), 3)
        self.norm1 = ConditionalPixelNorm(ch(4), cond_dim)
        resolutions = [2 ** k for k in range(3, int(math.log2(resolution)) + 1)]  # 8 .. resolution
        self.blocks = nn.ModuleList(_GeneratorBlock(ch(r // 2), ch(r), cond_dim) for r in resolutions)
        self.to_image = nn.ModuleList(EqualizedConv2d(ch(r), image_channels, 1, gain=1.0) for r in [4, *resolutions])

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = torch.cat([z, y.to(z.dtype)], dim=1)  # condition of every norm: the raw [z; y] (eq. 1)
        x = self.dense(self.input_norm(c)).reshape(z.shape[0], -1, 4, 4)
        x = lrelu(self.norm0(x, c))
        x = lrelu(self.norm1(self.conv(x), c))
        image = self.to_image[0](x)
        for block, to_image in zip(self.blocks, self.to_image[1:]):
            x = block(x, c)
            image = upsample(image) + to_image(x)  # output skips: each resolution adds its detail
        return image  # linear output, as in ProGAN/StyleGAN: no tanh


class _ResidualBlock(nn.Module):
    """conv3x3, lrelu, conv3x3, lrelu, down; plus an avg-pool + 1x1 skip; the sum scaled by 1/sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, gain=1.0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = downsample(lrelu(self.conv1(lrelu(self.conv0(x)))))
        # 1/sqrt(2) keeps the variance of the sum of two unit-variance paths at one.
        return (self.skip(downsample(x)) + residual) * (1 / math.sqrt(2))


class CpdDiscriminator(nn.Module):
    def __init__(self, resolution: int, label_dim: int, channels_base: int = 16384, channels_max: int = 512,
                 image_channels: int = 1, mbstd_group: int = 4) -> None:
        super().__init__()
        self.resolution, self.label_dim = resolution, label_dim
        ch = partial(channels_at, base=channels_base, maximum=channels_max)
        self.from_image = EqualizedConv2d(image_channels, ch(resolution), 1)
        resolutions = [2 ** k for k in range(int(math.log2(resolution)), 2, -1)]  # resolution .. 8
        self.blocks = nn.Sequential(*(_ResidualBlock(ch(r), ch(r // 2)) for r in resolutions))
        # Projection head: one output per label; the score sums the outputs of the active labels.
        self.epilogue = DiscriminatorEpilogue(ch(4), label_dim, mbstd_group)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, None]:
        per_label = self.epilogue(self.blocks(lrelu(self.from_image(x))))
        return (per_label * y.to(per_label.dtype)).sum(dim=1), None
