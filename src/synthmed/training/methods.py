"""How each kind of generator learns, behind one small interface that the training loop,
``generate`` and the benchmark use without asking which model they hold.

A training method owns its networks, optimisers and an EMA copy of the network that makes
images (the *sampler*: every sampler has ``sample(labels, noise) -> images in [-1, 1]``).
Per step the loop asks the method for the working resolution, fade-in and batch size at the
current images seen (``schedule``), hands it a real batch (``step``) and logs the losses it
returns. After each step the loop updates the sampler as an EMA of ``model`` and tells the method
how far the step took it (``after_step``). Checkpoints hold ``networks()`` and ``optimizers()`` by
name. A method may also have ``prepare(images, labels) -> str | None``: the loop calls it once, on
rank 0, before the first step of a new run, with the whole training fold (uint8 images and
multi-hot labels on the training device), for what it fits on the data before training (the
diffusion model's appearance clusters), and logs the line it returns. What it fits must be in the
networks' state dicts: the other ranks get it from rank 0's, a resumed run from the checkpoint.
It must not draw from torch's global random generator, which no checkpoint holds.

A method class is built as ``cls(config, resolution, label_dim, image_channels, device)`` and
has a static ``load_sampler(snapshot, config)`` that rebuilds the sampler of a generator snapshot.
``method_class`` finds the config's ``model`` in the generator registry (``registry.py``): a
plug-in's method is used exactly as the built-in ones are.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from synthmed.training import registry
from synthmed.training.config import TrainConfig
from synthmed.training.distributed import Dist


class TrainingMethod(Protocol):
    loss_names: tuple[str, ...]  # the keys ``step`` returns, in the log's column order
    sampler: nn.Module  # the EMA network that makes images: sample(labels, noise)
    model: nn.Module  # the trained network that the sampler averages (every rank holds the same weights)

    def networks(self) -> dict[str, nn.Module]: ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def schedule(self, images_seen: int) -> tuple[int, float, int]:
        """(resolution, fade-in alpha, global batch size) for the next step."""

    def step(self, x_real: torch.Tensor, labels: torch.Tensor, noise: torch.Generator,
             env: Dist) -> dict[str, torch.Tensor]:
        """One optimisation step on a real batch (this rank's share of it); returns the detached losses."""

    def after_step(self, images_before: int, images_after: int) -> None:
        """The step took training from ``images_before`` to ``images_after`` real images (before any
        checkpoint of it): prog-GAN resets its optimisers here when a growth phase ended."""

    def snapshot_extras(self) -> dict[str, Any]:
        """What a generator snapshot needs besides the sampler's weights (e.g. prog-GAN's growth)."""


def update_ema(ema: nn.Module, model: nn.Module, config: TrainConfig, step: int) -> None:
    """EMA of the weights (buffers copied). With ``ema_warmup`` the decay ramps up as
    min(decay, (1 + step) / (10 + step)), so a short run's average does not drag its random start."""
    decay = config.ema_decay
    if config.ema_warmup:
        decay = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


def method_class(config: TrainConfig) -> type:
    return registry.generator(config.model).method_class()


def build_method(config: TrainConfig, resolution: int, label_dim: int, image_channels: int,
                 device: torch.device) -> TrainingMethod:
    return method_class(config)(config, resolution, label_dim, image_channels, device)


def load_sampler(snapshot: dict[str, Any], config: TrainConfig) -> nn.Module:
    """The sampler of a generator snapshot (``generator.pt``), weights loaded, in eval mode."""
    return method_class(config).load_sampler(snapshot, config)
