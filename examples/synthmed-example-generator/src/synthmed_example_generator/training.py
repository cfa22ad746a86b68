"""A conditional VAE and its training method (synthmed's ``TrainingMethod`` protocol).

Encoder and decoder are two-layer MLPs over the flattened image and the label vector; the loss is
the negative ELBO with a Gaussian likelihood of fixed ``pixel_std`` (in the [-1, 1] pixel scale).
The sampler decodes standard normal latents with the wanted labels. Small enough to train on a CPU
in seconds, which is all it is for: the example of a plug-in, not a good generator.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from synthmed.training import distributed
from synthmed.training.config import TrainConfig
from synthmed.training.registry import model_options


class ConditionalVAE(nn.Module):
    def __init__(self, resolution: int, label_dim: int, channels: int, latent: int, hidden: int) -> None:
        super().__init__()
        self.shape, self.latent = (channels, resolution, resolution), latent
        pixels = channels * resolution * resolution
        self.encoder = nn.Sequential(nn.Linear(pixels + label_dim, hidden), nn.SiLU(), nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent + label_dim, hidden), nn.SiLU(), nn.Linear(hidden, pixels),
                                     nn.Tanh())

    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, labels], dim=1)).view(-1, *self.shape)

    def forward(self, images: torch.Tensor, labels: torch.Tensor, noise: torch.Generator):
        """(reconstruction, latent mean, latent log-variance) of real images."""
        mean, log_var = self.encoder(torch.cat([images.flatten(1), labels], dim=1)).chunk(2, dim=1)
        eps = torch.randn(mean.shape, device=noise.device, generator=noise).to(mean.device)
        return self.decode(mean + eps * (0.5 * log_var).exp(), labels), mean, log_var

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        """Images in [-1, 1], one per label vector; the latents are drawn from ``noise``."""
        z = torch.randn(len(labels), self.latent, device=noise.device, generator=noise).to(labels.device)
        return self.decode(z, labels)


def build(config: TrainConfig, resolution: int, label_dim: int, image_channels: int) -> ConditionalVAE:
    options = model_options(config)
    return ConditionalVAE(resolution, label_dim, image_channels, options["latent"], options["hidden"])


class CvaeTraining:
    loss_names = ("loss", "reconstruction", "kl")

    def __init__(self, config: TrainConfig, resolution: int, label_dim: int, image_channels: int,
                 device: torch.device) -> None:
        self.config, self.resolution = config, resolution
        self.pixel_std = float(model_options(config)["pixel_std"])
        self.model = build(config, resolution, label_dim, image_channels).to(device)
        self.sampler = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate, betas=config.betas,
                                          eps=config.eps)

    @staticmethod
    def load_sampler(snapshot: dict[str, Any], config: TrainConfig) -> nn.Module:
        model = build(config, snapshot["resolution"], len(snapshot["label_names"]), snapshot["image_channels"])
        model.load_state_dict(snapshot["state_dict"])
        return model.eval().requires_grad_(False)

    def networks(self) -> dict[str, nn.Module]:
        return {"model": self.model, "ema": self.sampler}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def schedule(self, images_seen: int) -> tuple[int, float, int]:
        return self.resolution, 1.0, self.config.batch_size

    def step(self, x_real, labels, noise, env) -> dict[str, torch.Tensor]:
        reconstruction, mean, log_var = self.model(x_real, labels, noise)
        error = (reconstruction - x_real).square().flatten(1).sum(1).mean() / (2 * self.pixel_std ** 2)
        kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(1).mean()
        loss = error + kl
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(self.model, env)
        self.optimizer.step()
        return {"loss": loss.detach(), "reconstruction": error.detach(), "kl": kl.detach()}

    def after_step(self, images_before: int, images_after: int) -> None:
        """Nothing changes along the way."""

    def snapshot_extras(self) -> dict[str, Any]:
        return {}
