"""Differentiable augmentation for GAN discriminators (DiffAugment, Zhao et al. 2020).

With few training images the discriminator memorises them and stops teaching the generator.
DiffAugment applies the same kind of random, differentiable transform to real *and* fake
images before every discriminator call, so the critic never sees an un-augmented image and
the generator still gets gradients through the transform (it learns the un-augmented
distribution). The three transforms and their ranges are the paper's:

* ``color``: brightness + U(-0.5, 0.5), saturation x U(0, 2) (a no-op on one channel),
  contrast x U(0.5, 1.5);
* ``translation``: an integer shift of up to 1/8 of the size, zero filled;
* ``cutout``: a zeroed square of half the size at a random place (it may cross the border).

Every random number comes from the caller's ``torch.Generator``, so a resumed run draws the
same augmentations as an uninterrupted one.

ADA (Karras et al. 2020, "Training generative adversarial networks with limited data") applies each
transform to an image only with a probability p, and :class:`AdaptiveProbability` steers p by how
sure the critic is of the real images: raised while the mean sign of its outputs on them exceeds
``target`` (it starts to tell the training images apart: 0.6 means 80 % called real), lowered otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthmed.training import distributed

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"translation,cutout"`` -> ("translation", "cutout"); empty means no augmentation."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}: expected a comma-separated subset of {POLICIES}")
    return names


def _uniform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One U(0, 1) number per sample, shaped to broadcast over C, H, W."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype, generator=generator)


def color(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    x = x + (_uniform(x, generator) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(x, generator) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x, generator) + 0.5) + mean


def translation(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    max_y, max_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    shift_y = torch.randint(-max_y, max_y + 1, (n, 1, 1), device=x.device, generator=generator)
    shift_x = torch.randint(-max_x, max_x + 1, (n, 1, 1), device=x.device, generator=generator)
    rows = torch.arange(h, device=x.device)[None, :, None] + shift_y  # (n, h, 1) source row of each pixel
    cols = torch.arange(w, device=x.device)[None, None, :] + shift_x  # (n, 1, w)
    padded = F.pad(x, (1, 1, 1, 1))  # a zero border: every source outside the image reads it
    rows, cols = (rows + 1).clamp(0, h + 1), (cols + 1).clamp(0, w + 1)
    index = (rows * (w + 2) + cols).flatten(1)  # (n, h*w) into the padded image
    flat = padded.flatten(2)  # (n, c, (h+2)(w+2))
    out = flat.gather(2, index[:, None, :].expand(-1, x.shape[1], -1))
    return out.reshape_as(x)


def cutout(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - size_y % 2), (n, 1, 1), device=x.device, generator=generator) - size_y // 2
    left = torch.randint(0, w + (1 - size_x % 2), (n, 1, 1), device=x.device, generator=generator) - size_x // 2
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)  # (n, h, w)
    return x * (~inside)[:, None].to(x.dtype)


_TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], generator: torch.Generator,
                 p: float | torch.Tensor | None = None) -> torch.Tensor:
    """Apply the transforms of ``policy`` in order (the paper's order is color, translation, cutout). With ``p``
    (ADA) each transform reaches each image with probability ``p``, the others pass it unchanged; the draws do not
    depend on ``p``, so the augmentations of a run are the same whatever its p was. ``p`` may be a 0-dim tensor on
    ``x``'s device, so that a GPU step never waits to read it."""
    for name in policy:
        transformed = _TRANSFORMS[name](x, generator)
        if p is None:
            x = transformed
        else:
            x = torch.where(_uniform(x, generator) < p, transformed, x)
    return x


class AdaptiveProbability(nn.Module):
    """ADA's controller, as StyleGAN2-ADA's training loop has it: every ``INTERVAL`` critic steps, r_t = the mean
    sign of the critic's outputs on the (augmented) real images since the last adjustment; p moves by
    sign(r_t - target) x (images in those steps) / ``images``, kept in [0, 1]. Its state is buffers and the step
    count's extra state, so checkpoints and the other ranks of a torchrun job hold it as they hold the networks'
    weights."""

    INTERVAL = 4  # critic steps between adjustments (StyleGAN2-ADA's ada_interval)

    def __init__(self, target: float, images: int) -> None:
        super().__init__()
        self.target, self.images = target, images
        self.register_buffer("p", torch.zeros((), dtype=torch.float64))
        # sum of signs and number of images since the last adjustment
        self.register_buffer("signs", torch.zeros(2, dtype=torch.float64))
        # the critic steps they span: a Python int (extra state), so deciding when to adjust never reads the GPU
        self.steps = 0
        # r_t of the last adjustment (logged beside p, as StyleGAN2-ADA's Loss/signs/real: what to set target by)
        self.register_buffer("r_t", torch.tensor(float("nan"), dtype=torch.float64))

    @torch.no_grad()
    def observe(self, real_scores: torch.Tensor, env: distributed.Dist) -> None:
        """Count one critic step's outputs on the real batch; adjust p after every ``INTERVAL``-th."""
        # a critic with several outputs per image (the projected one: one per scale) counts each image's mean sign
        signs = real_scores.detach().float().sign().reshape(len(real_scores), -1).mean(dim=1)
        self.signs[0] += signs.sum().double()
        self.signs[1] += len(signs)
        self.steps += 1
        if self.steps < self.INTERVAL:
            return
        signs = distributed.sum_over_ranks(self.signs, env)  # every rank adjusts by the whole batch's signs
        self.r_t.copy_(signs[0] / signs[1])
        self.p.copy_((self.p + torch.sign(self.r_t - self.target) * signs[1] / self.images).clamp(0.0, 1.0))
        self.signs.zero_()
        self.steps = 0

    def get_extra_state(self) -> dict[str, int]:
        return {"steps": self.steps}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.steps = int(state["steps"])
