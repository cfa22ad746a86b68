"""prog-GAN (paper S.2.1): ProGAN (Karras et al. 2018) conditioned by concatenating the label
vector to the noise, with an auxiliary-classifier discriminator (1 + L outputs).

Growth: ``set_growth(resolution, alpha)`` selects the working resolution. While a new block
fades in (alpha < 1), G blends the upsampled image of the previous resolution's to-image
layer with the new block's image, and D blends the new block's output with the previous
resolution's from-image path on the avg-pooled input. Blocks for every resolution exist from
the start; the growth state is plain attributes, not part of ``state_dict``.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from synthmed.models.layers import (
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


class _Growth:
    """Growth state and its validation, shared by G and D."""

    def _init_growth(self, resolution: int, start_resolution: int) -> None:
        self.resolution, self.start_resolution = resolution, start_resolution
        self._current, self.alpha = start_resolution, 1.0
        self._levels = {2 ** k: k for k in range(int(math.log2(start_resolution)), int(math.log2(resolution)) + 1)}

    @property
    def current_resolution(self) -> int:
        return self._current

    def set_growth(self, resolution: int, alpha: float) -> None:
        if resolution not in self._levels:
            raise ValueError(f"growth resolution must be one of {sorted(self._levels)}, got {resolution}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"fade-in alpha must be in [0, 1], got {alpha}")
        if resolution == self.start_resolution and alpha != 1.0:
            raise ValueError(f"nothing fades in at the start resolution {resolution}: alpha must be 1, got {alpha}")
        self._current, self.alpha = resolution, float(alpha)


class ProgGenerator(_Growth, LatentSampler, nn.Module):
    def __init__(self, resolution: int, label_dim: int, latent_dim: int = 512, channels_base: int = 16384,
                 channels_max: int = 512, image_channels: int = 1, start_resolution: int = 8) -> None:
        super().__init__()
        self._init_growth(resolution, start_resolution)
        self.label_dim, self.latent_dim = label_dim, latent_dim
        ch = partial(channels_at, base=channels_base, maximum=channels_max)
        self.norm = PixelNorm()
        # ProGAN's 4x4 block: dense (gain sqrt(2)/4) and conv3x3, each followed by lrelu and pixel norm.
        self.dense = EqualizedLinear(latent_dim + label_dim, ch(4) * 16, gain=math.sqrt(2) / 4)
        self.conv = EqualizedConv2d(ch(4), ch(4), 3)
        # Keys are resolutions as strings (ModuleDict needs str keys).
        self.blocks = nn.ModuleDict({
            str(2 ** k): nn.ModuleList([EqualizedConv2d(ch(2 ** (k - 1)), ch(2 ** k), 3),
                                        EqualizedConv2d(ch(2 ** k), ch(2 ** k), 3)])
            for k in range(3, int(math.log2(resolution)) + 1)})
        self.to_image = nn.ModuleDict({str(r): EqualizedConv2d(ch(r), image_channels, 1, gain=1.0)
                                       for r in self._levels})

    def _block(self, x: torch.Tensor, r: int) -> torch.Tensor:
        conv0, conv1 = self.blocks[str(r)]
        x = self.norm(lrelu(conv0(upsample(x))))
        return self.norm(lrelu(conv1(x)))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.norm(torch.cat([z, y.to(z.dtype)], dim=1))
        x = self.norm(lrelu(self.dense(x).reshape(z.shape[0], -1, 4, 4)))
        x = self.norm(lrelu(self.conv(x)))
        r = self._current
        for k in range(3, self._levels[r]):  # blocks 8 .. r/2
            x = self._block(x, 2 ** k)
        image = self.to_image[str(r)](self._block(x, r))
        if self.alpha < 1.0:
            coarse = upsample(self.to_image[str(r // 2)](x))
            image = torch.lerp(coarse.to(image.dtype), image, self.alpha)  # dtypes differ under autocast
        return image


class ProgDiscriminator(_Growth, nn.Module):
    def __init__(self, resolution: int, label_dim: int, channels_base: int = 16384, channels_max: int = 512,
                 image_channels: int = 1, start_resolution: int = 8, mbstd_group: int = 4) -> None:
        super().__init__()
        self._init_growth(resolution, start_resolution)
        self.label_dim = label_dim
        ch = partial(channels_at, base=channels_base, maximum=channels_max)
        self.from_image = nn.ModuleDict({str(r): EqualizedConv2d(image_channels, ch(r), 1) for r in self._levels})
        # Block r maps ch(r) maps at r x r to ch(r/2) at r/2 (ProGAN: the second conv widens).
        self.blocks = nn.ModuleDict({
            str(2 ** k): nn.ModuleList([EqualizedConv2d(ch(2 ** k), ch(2 ** k), 3),
                                        EqualizedConv2d(ch(2 ** k), ch(2 ** (k - 1)), 3)])
            for k in range(3, int(math.log2(resolution)) + 1)})
        # Auxiliary classifier: output 0 is the critic score, outputs 1..L the label logits.
        self.epilogue = DiscriminatorEpilogue(ch(4), 1 + label_dim, mbstd_group)

    def _block(self, x: torch.Tensor, r: int) -> torch.Tensor:
        conv0, conv1 = self.blocks[str(r)]
        return downsample(lrelu(conv1(lrelu(conv0(x)))))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``y`` is accepted for the same call as the cpD-GAN; auxiliary-classifier D does not read it."""
        r = self._current
        h = self._block(lrelu(self.from_image[str(r)](x)), r)
        if self.alpha < 1.0:
            coarse = lrelu(self.from_image[str(r // 2)](downsample(x)))
            h = torch.lerp(coarse.to(h.dtype), h, self.alpha)  # dtypes differ under autocast
        while r > 8:
            r //= 2
            h = self._block(h, r)
        out = self.epilogue(h)
        return out[:, 0], out[:, 1:]
