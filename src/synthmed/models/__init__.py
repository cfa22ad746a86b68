"""The generators' networks: the paper's two conditional GANs, ``cpdgan`` (the paper's own) and
``proggan`` (ProGAN baseline), built here by ``build_models``; and the conditional diffusion
model (``diffusion.py``, built by the training method in ``training/diffusion.py``)."""

from __future__ import annotations

from torch import nn

from synthmed.models.cpdgan import CpdDiscriminator, CpdGenerator
from synthmed.models.proggan import ProgDiscriminator, ProgGenerator

__all__ = ["CpdDiscriminator", "CpdGenerator", "ProgDiscriminator", "ProgGenerator", "build_models"]

# name -> (generator, discriminator, the network-size keywords it takes)
_MODELS = {"cpdgan": (CpdGenerator, CpdDiscriminator, {"latent_dim", "channels_base", "channels_max", "mbstd_group"}),
           "proggan": (ProgGenerator, ProgDiscriminator,
                       {"latent_dim", "channels_base", "channels_max", "mbstd_group", "start_resolution"})}


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_power_of_two(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum and value & (value - 1) == 0
    if not ok or (maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be a power of two {bound}, got {value!r}")


def build_models(name: str, resolution: int, label_dim: int, image_channels: int, **widths: int,
                 ) -> tuple[nn.Module, nn.Module]:
    """Return ``(generator, discriminator)`` for ``name`` in {"cpdgan", "proggan"}.

    ``widths`` are optional network sizes: ``latent_dim``, ``channels_base``, ``channels_max``,
    ``mbstd_group`` and, for proggan, ``start_resolution``; the classes' defaults are the paper's.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown GAN {name!r}: expected one of {sorted(_MODELS)}")
    generator_cls, discriminator_cls, allowed = _MODELS[name]
    unknown = set(widths) - allowed
    if unknown:
        raise ValueError(f"{name} does not take {sorted(unknown)}: its size keywords are {sorted(allowed)}")
    _check_power_of_two("resolution", resolution, 8)
    _check_int("label_dim", label_dim, 1)
    _check_int("image_channels", image_channels, 1)
    for key in ("latent_dim", "channels_max", "mbstd_group"):
        if key in widths:
            _check_int(key, widths[key], 1)
    if "channels_base" in widths:
        # Below base = resolution the full-resolution layers would have no feature maps.
        _check_int("channels_base", widths["channels_base"], resolution)
    if "start_resolution" in widths:
        _check_power_of_two("start_resolution", widths["start_resolution"], 8, resolution)

    g_kwargs = {k: v for k, v in widths.items() if k != "mbstd_group"}
    d_kwargs = {k: v for k, v in widths.items() if k != "latent_dim"}
    return (generator_cls(resolution, label_dim, image_channels=image_channels, **g_kwargs),
            discriminator_cls(resolution, label_dim, image_channels=image_channels, **d_kwargs))
