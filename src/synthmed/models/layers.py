"""Layers shared by both GANs (ProGAN, Karras et al. 2018, and the cpD-GAN additions).

Every weight layer uses the equalised learning rate: weights are stored N(0, 1) and scaled
at run time by ``gain / sqrt(fan_in)``, so Adam's per-parameter step sizes are the same for
all layers whatever their fan-in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2.0)  # He gain for leaky ReLU (ProGAN uses sqrt(2) for slope 0.2 too)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def downsample(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


class LatentSampler:
    """``sample(labels, noise)`` for a GAN generator: draw z from the seeded ``noise`` and map it.

    z is drawn on ``noise``'s device and then moved, so a CPU generator gives the same images
    on any device. Every generator of synthmed has this method (the diffusion model runs its
    sampler instead), so training, synthesis and evaluation never ask which model they hold.
    """

    latent_dim: int

    def sample(self, labels: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        z = torch.randn(len(labels), self.latent_dim, device=noise.device, generator=noise).to(labels.device)
        return self(z, labels)


def channels_at(resolution: int, base: int, maximum: int) -> int:
    """Feature maps at a resolution: ``base / resolution``, capped (512 up to 32x32 at paper widths)."""
    return min(base // resolution, maximum)


class EqualizedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, gain: float = LRELU_GAIN, bias: bool = True,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class EqualizedConv2d(nn.Module):
    """Stride-1 convolution with 'same' padding and an equalised learning rate."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = LRELU_GAIN,
                 bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class PixelNorm(nn.Module):
    """Normalise each pixel's feature vector (dim 1) to unit mean square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class ConditionalPixelNorm(nn.Module):
    """Paper eq. 1: ``PixelNorm(x) * gamma(c) + beta(c)`` with gamma, beta affine in c = [z; y].

    The dense weights start at zero (gamma = 1, beta = 0), as conditional batch norm does, so
    the layer begins as a plain PixelNorm; the run-time scale still equalises their learning rate.
    """

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = PixelNorm()
        self.gamma = EqualizedLinear(cond_dim, channels, gain=1.0, bias_init=1.0)
        self.beta = EqualizedLinear(cond_dim, channels, gain=1.0)
        nn.init.zeros_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma(c)[:, :, None, None]
        beta = self.beta(c)[:, :, None, None]
        return self.norm(x) * gamma + beta


class MinibatchStdDev(nn.Module):
    """Append one feature map: the feature std within a group of samples, averaged over C, H, W.

    Groups are consecutive samples of size ``g = min(group_size, N)`` (ProGAN groups strided
    samples; the statistic is the same). When N is not a multiple of g, the last ``N % g``
    samples form a smaller group of their own, except a single leftover sample, which joins
    the last full group (a group of one has no spread to measure). The std is the biased
    (population) one, with 1e-8 added to the variance, as in ProGAN.
    """

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        g = min(self.group_size, n)
        tail = n % g
        if tail == 1:
            tail = g + 1
        head = n - tail
        parts = [self._group_std(x[:head], g)] if head else []
        if tail:
            parts.append(self._group_std(x[head:], tail))
        std = torch.cat(parts)  # (N,)
        feature = std[:, None, None, None].expand(n, 1, x.shape[2], x.shape[3])
        return torch.cat([x, feature.to(x.dtype)], dim=1)

    @staticmethod
    def _group_std(x: torch.Tensor, size: int) -> torch.Tensor:
        groups = x.reshape(-1, size, *x.shape[1:])  # (groups, size, C, H, W)
        std = (groups.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (groups,)
        return std.repeat_interleave(size)


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 end of both discriminators: minibatch std, conv3x3, dense, and a linear ``out`` layer."""

    def __init__(self, channels: int, outputs: int, mbstd_group: int) -> None:
        super().__init__()
        self.mbstd = MinibatchStdDev(mbstd_group)
        self.conv = EqualizedConv2d(channels + 1, channels, 3)
        self.dense = EqualizedLinear(channels * 16, channels)
        self.out = EqualizedLinear(channels, outputs, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = lrelu(self.conv(self.mbstd(x)))
        x = lrelu(self.dense(x.flatten(1)))
        return self.out(x)
