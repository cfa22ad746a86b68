"""Training both GANs: one critic step and one generator step per real batch, on the same label
vectors, optionally through DiffAugment (``augment``; with ``ada_target``, each transform at ADA's
adaptive probability), and prog-GAN's growth. The critic's loss is the paper's WGAN-GP or, with
``gan_loss: non-saturating``, StyleGAN2's logistic loss with lazy R1.

With ``augment`` empty and ``gan_loss: wgan-gp`` (the ``paper`` presets) the step draws exactly
the random numbers it always did, so those runs are unchanged.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from synthmed.device import resolve_bf16
from synthmed.models import build_models
from synthmed.training import distributed
from synthmed.training.augment import AdaptiveProbability, diff_augment, parse_policy
from synthmed.training.config import TrainConfig, growth_at, growth_phase
from synthmed.training.losses import (
    discriminator_loss,
    gradient_penalty,
    label_cross_entropy,
    non_saturating_discriminator_loss,
    non_saturating_generator_loss,
    r1_penalty,
)


def model_widths(config: TrainConfig) -> dict[str, Any]:
    widths = {"latent_dim": config.latent_dim, "channels_base": config.channels_base,
              "channels_max": config.channels_max, "mbstd_group": config.mbstd_group}
    if config.model == "proggan":
        widths["start_resolution"] = config.start_resolution
    return widths


def build_generator_pair(config: TrainConfig, resolution: int, label_dim: int, channels: int):
    return build_models(config.model, resolution, label_dim, channels, **model_widths(config))


def gan_step(generator, discriminator, opt_g, opt_d, x_real: torch.Tensor, y: torch.Tensor, config: TrainConfig,
             noise_gen: torch.Generator, env: distributed.Dist = distributed.Dist(), r1_due: bool = False,
             ada: AdaptiveProbability | None = None):
    """One critic step and one generator step on the same label vectors. The critic's loss is WGAN-GP + drift
    (``gan_loss: wgan-gp``) or the logistic loss, plus R1 where ``r1_due`` (``non-saturating``); prog-GAN adds
    its auxiliary-classifier term. With ``ada`` the policy's transforms come at its probability, and it counts the
    critic's outputs on the real batch. Returns the two losses and the penalty (R1: NaN where not due)."""
    device = x_real.device
    bf16 = resolve_bf16(config.bf16, device)
    policy = parse_policy(config.augment)
    wgan = config.gan_loss == "wgan-gp"
    # one probability for the whole step, both networks: a copy, as observe() moves p between them
    p = None if ada is None else ada.p.clone()

    def augment(x: torch.Tensor) -> torch.Tensor:  # the critic sees every image through the same policy
        return diff_augment(x, policy, noise_gen, p) if policy else x

    z = torch.randn(len(y), generator.latent_dim, device=device, generator=noise_gen)
    # R1 differentiates D at the real images before augmentation, as StyleGAN2-ADA does
    x_real = x_real.detach().requires_grad_(r1_due and not wgan)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        with torch.no_grad():
            x_fake = generator(z, y).float()
        seen_real, seen_fake = augment(x_real), augment(x_fake)
        d_real, c_real = discriminator(seen_real, y)
        d_fake, c_fake = discriminator(seen_fake, y)
    if wgan:
        penalty = gradient_penalty(discriminator, seen_real, seen_fake, y, noise_gen)
        d_loss = discriminator_loss(d_real.float(), d_fake.float(), penalty, config.gp_weight, config.drift_weight)
    else:
        d_loss = non_saturating_discriminator_loss(d_real.float(), d_fake.float())
        penalty = torch.tensor(math.nan)
        if r1_due:  # lazy regularisation: weighted by the interval, so its average weight is gamma / 2
            penalty = r1_penalty(d_real, x_real)
            d_loss = d_loss + config.r1_every * config.r1_gamma / 2 * penalty
    if ada is not None:
        ada.observe(d_real, env)
    if c_real is not None:
        d_loss = d_loss + config.ac_weight * (label_cross_entropy(c_real, y) + label_cross_entropy(c_fake, y))
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    distributed.average_gradients(discriminator, env)
    opt_d.step()

    z = torch.randn(len(y), generator.latent_dim, device=device, generator=noise_gen)
    discriminator.requires_grad_(False)  # the generator step needs no critic gradients
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        g_score, g_logits = discriminator(augment(generator(z, y)), y)
    g_loss = -g_score.float().mean() if wgan else non_saturating_generator_loss(g_score.float())
    if g_logits is not None:
        g_loss = g_loss + config.ac_weight * label_cross_entropy(g_logits, y)
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    discriminator.requires_grad_(True)
    distributed.average_gradients(generator, env)
    opt_g.step()
    return d_loss.detach(), g_loss.detach(), penalty.detach()


class GanTraining:
    """cpD-GAN and prog-GAN (``config.model``): generator, critic, their Adams and the EMA generator."""

    def __init__(self, config: TrainConfig, resolution: int, label_dim: int, image_channels: int,
                 device: torch.device) -> None:
        self.config, self.resolution = config, resolution
        generator, discriminator = build_generator_pair(config, resolution, label_dim, image_channels)
        if config.discriminator == "projected":  # in place of the residual critic built beside the generator
            from synthmed.models.projected import ProjectedDiscriminator  # imports the EfficientNet package

            discriminator = ProjectedDiscriminator(label_dim, image_channels, config.projected_input_size,
                                                   config.projected_weights or None)
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.generator = generator.to(device)
        self.discriminator = discriminator.to(device).to(memory_format=memory_format)
        self.sampler = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.model = self.generator
        adam = dict(lr=config.learning_rate, betas=config.betas, eps=config.eps)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), **adam)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), **adam)
        self.grows = hasattr(self.generator, "set_growth")  # prog-GAN
        self.loss_names = ("d_loss", "g_loss", "gp" if config.gan_loss == "wgan-gp" else "r1")
        self.ada = None
        if config.ada_target:  # ADA: p and r_t are logged beside the losses, as StyleGAN2-ADA logs them
            self.ada = AdaptiveProbability(config.ada_target, config.ada_images).to(device)
            self.loss_names += ("augment_p", "real_sign")
        self.r1_due = False
        self.last_r1 = torch.tensor(math.nan)  # logged between R1 steps (NaN until the first one of a session)

    @staticmethod
    def load_sampler(snapshot: dict[str, Any], config: TrainConfig) -> torch.nn.Module:
        generator, _ = build_generator_pair(config, snapshot["resolution"], len(snapshot["label_names"]),
                                            snapshot["image_channels"])
        generator.load_state_dict(snapshot["state_dict"])
        if "growth" in snapshot:
            generator.set_growth(*snapshot["growth"])
        return generator.eval().requires_grad_(False)

    def networks(self) -> dict[str, torch.nn.Module]:
        parts = {"generator": self.generator, "discriminator": self.discriminator, "ema": self.sampler}
        return parts if self.ada is None else {**parts, "ada": self.ada}  # ADA's p and counts resume with the run

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def schedule(self, images_seen: int) -> tuple[int, float, int]:
        c = self.config
        resolution, alpha, batch = self.resolution, 1.0, c.batch_size
        if self.grows:
            resolution, alpha = growth_at(images_seen, c.start_resolution, self.resolution, c.phase_images)
            for net in (self.generator, self.discriminator, self.sampler):
                net.set_growth(resolution, alpha)
            batch = c.batch_at(resolution)
        # R1 on the first step and every r1_every-th after it: from images seen, so a resumed run keeps the beat
        self.r1_due = c.r1_gamma > 0 and images_seen % (c.r1_every * batch) < batch
        return resolution, alpha, batch

    def step(self, x_real, labels, noise, env) -> dict[str, torch.Tensor]:
        d_loss, g_loss, penalty = gan_step(self.generator, self.discriminator, self.opt_g, self.opt_d, x_real,
                                           labels, self.config, noise, env, self.r1_due, self.ada)
        if self.config.gan_loss == "non-saturating":  # R1 is computed on some steps only: log the latest
            self.last_r1 = penalty if self.r1_due else self.last_r1
            penalty = self.last_r1
        values = (d_loss, g_loss, penalty)
        if self.ada is not None:
            values += (self.ada.p.clone(), self.ada.r_t.clone())
        return dict(zip(self.loss_names, values))

    def after_step(self, images_before: int, images_after: int) -> None:
        """With ``reset_adam_per_phase``, a step that ends a growth phase clears both Adams' moments
        and step counts, so each fade-in and stabilisation starts afresh, as ProGAN's training
        (``reset_opt_for_new_lod``) does, from whose code the paper took prog-GAN's settings."""
        c = self.config
        if not (self.grows and c.reset_adam_per_phase):
            return
        before, after = (growth_phase(n, c.start_resolution, self.resolution, c.phase_images)
                         for n in (images_before, images_after))
        if before != after:
            for optimizer in (self.opt_g, self.opt_d):
                optimizer.state.clear()

    def snapshot_extras(self) -> dict[str, Any]:
        return {"growth": (self.sampler.current_resolution, 1.0)} if self.grows else {}
