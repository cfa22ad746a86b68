"""GAN losses: WGAN-GP with drift (the paper's, both models), the non-saturating logistic loss with R1
(StyleGAN2's, ``gan_loss: non-saturating``) and prog-GAN's auxiliary-classifier term."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy against the label vector divided by its sum (the paper's AC loss).

    A row without any active label has no target and contributes 0.
    """
    total = labels.sum(dim=1, keepdim=True)
    target = labels / total.clamp_min(1e-8)
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def gradient_penalty(discriminator, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP: (||grad_x D(x_hat)|| - 1)^2 on random interpolates of real and fake images."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator, dtype=real.dtype)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    score, _ = discriminator(mixed, labels)
    (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def discriminator_loss(d_real, d_fake, gp, gp_weight: float, drift_weight: float) -> torch.Tensor:
    """E[D(fake)] - E[D(real)] + lambda * GP + drift * E[D(real)^2]."""
    return d_fake.mean() - d_real.mean() + gp_weight * gp + drift_weight * d_real.square().mean()


def r1_penalty(d_real: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E ||grad_x D(x)||^2 at the real images ``x_real`` (which require grad)."""
    (grad,) = torch.autograd.grad(d_real.float().sum(), x_real, create_graph=True)
    return grad.float().flatten(1).square().sum(dim=1).mean()


def non_saturating_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """softplus(D(fake)) + softplus(-D(real)): the logistic loss, D's score read as a logit."""
    return F.softplus(d_fake).mean() + F.softplus(-d_real).mean()


def non_saturating_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """softplus(-D(G(z))): the generator's side, which does not saturate when D rejects its images."""
    return F.softplus(-d_fake).mean()
