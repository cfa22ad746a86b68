"""Training the conditional diffusion model: the denoising loss at a random timestep, with the
label condition replaced by the null condition on a share of the rows (``label_dropout``) so
that one network learns both branches of classifier-free guidance.

``snr_gamma`` > 0 weights each row's loss by Min-SNR-gamma (Hang et al. 2023): timesteps whose
signal-to-noise ratio exceeds gamma (the nearly clean ones, easy and numerous) count less, so
the steps go where the images' structure is decided; reported to converge several times faster.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from synthmed.device import resolve_bf16
from synthmed.models.appearance import MIN_CLUSTER_ROWS, pool
from synthmed.models.diffusion import ConditionalDiffusion
from synthmed.training import distributed
from synthmed.training.config import TrainConfig
from synthmed.training.samples import from_uint8


def build_diffusion(config: TrainConfig, resolution: int, label_dim: int, image_channels: int) -> ConditionalDiffusion:
    return ConditionalDiffusion(
        resolution, label_dim, image_channels, unet_channels=config.for_resolution(resolution).unet_channels,
        layers_per_block=config.layers_per_block, attention=config.attention, prediction=config.prediction,
        noise_schedule=config.noise_schedule, train_timesteps=config.train_timesteps, sampler=config.sampler,
        sample_steps=config.sample_steps, guidance_scale=config.guidance_scale,
        guidance_interval=config.guidance_interval, sample_bf16=config.sample_bf16,
        sample_spacing=config.sample_spacing, appearance_clusters=config.appearance_clusters)


class DiffusionTraining:
    """The denoiser, its Adam, the EMA sampler and the DDPM noising process (``model: diffusion``)."""

    loss_names = ("loss",)

    def __init__(self, config: TrainConfig, resolution: int, label_dim: int, image_channels: int,
                 device: torch.device) -> None:
        self.config, self.resolution = config, resolution
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = build_diffusion(config, resolution, label_dim, image_channels).to(device)
        self.model = self.model.to(memory_format=self.memory_format)
        self.sampler = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.noising = self.model.training_schedule()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate, betas=config.betas,
                                          eps=config.eps)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> str | None:
        """Before the first step of a new run: fit the appearance clusters (if any) on the whole training fold
        (uint8 images, multi-hot labels), for the trained network and its EMA copy alike; a line for the log."""
        clusters = self.model.clusters
        if clusters is None:
            return None
        chunk = 4096  # images converted to float at a time: the whole fold at once may not fit in memory
        pooled = torch.cat([pool(from_uint8(images[i : i + chunk])).cpu() for i in range(0, len(images), chunk)])
        clusters.fit(pooled, labels, self.config.seed)
        self.sampler.clusters.load_state_dict(clusters.state_dict())
        return (f"appearance clusters: {clusters.fitted_count} of {clusters.count} fitted on {len(images):,} training "
                f"images (each centre the mean of at least {MIN_CLUSTER_ROWS})")

    @staticmethod
    def load_sampler(snapshot: dict[str, Any], config: TrainConfig) -> torch.nn.Module:
        model = build_diffusion(config, snapshot["resolution"], len(snapshot["label_names"]),
                                snapshot["image_channels"])
        model.load_state_dict(snapshot["state_dict"])
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model.eval().requires_grad_(False)

    def networks(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model, "ema": self.sampler}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def schedule(self, images_seen: int) -> tuple[int, float, int]:
        return self.resolution, 1.0, self.config.batch_size

    def step(self, x_real, labels, noise, env) -> dict[str, torch.Tensor]:
        n, device = len(x_real), x_real.device
        eps = torch.randn(x_real.shape, device=device, generator=noise)
        timesteps = torch.randint(0, self.config.train_timesteps, (n,), device=device, generator=noise)
        drop = torch.rand(n, device=device, generator=noise) < self.config.label_dropout
        noisy = self.noising.add_noise(x_real, eps, timesteps).contiguous(memory_format=self.memory_format)
        target = eps if self.config.prediction == "epsilon" else self.noising.get_velocity(x_real, eps, timesteps)
        clusters = None if self.model.clusters is None else self.model.clusters.assign(x_real)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_bf16(self.config.bf16, device)):
            prediction = self.model(noisy, timesteps, labels, drop, clusters)
        per_row = (prediction.float() - target.float()).square().mean(dim=(1, 2, 3))
        if self.config.snr_gamma:
            from diffusers.training_utils import compute_snr

            snr = compute_snr(self.noising, timesteps)
            # min(SNR, gamma) / SNR for noise targets; v targets carry an extra (SNR + 1) / SNR
            weight = snr.clamp(max=self.config.snr_gamma) / (snr if self.config.prediction == "epsilon" else snr + 1)
            per_row = per_row * weight
        loss = per_row.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(self.model, env)
        self.optimizer.step()
        return {"loss": loss.detach()}

    def after_step(self, images_before: int, images_after: int) -> None:
        """Nothing changes along the way: one resolution, one optimiser state throughout."""

    def snapshot_extras(self) -> dict[str, Any]:
        return {}
