"""The generators' networks: the paper's two conditional GANs, ``cpdgan`` (the paper's own) and
``proggan`` (ProGAN baseline), built here by ``build_models``; and the conditional diffusion
model (``diffusion.py``, built by the training method in ``training/diffusion.py``)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from synthmed.models.cpdgan import CpdDiscriminator, CpdGenerator
from synthmed.models.proggan import ProgDiscriminator, ProgGenerator

__all__ = ["CpdDiscriminator", "CpdGenerator", "ProgDiscriminator", "ProgGenerator", "build_models"]

# name -> (generator, discriminator, the network-size keywords it takes)
_MODELS = {"cpdgan": (CpdGenerator, CpdDiscriminator, {"latent_dim", "channels_base", "channels_max", "mbstd_group"}),
           "proggan": (ProgGenerator, ProgDiscriminator,
                       {"latent_dim", "channels_base", "channels_max", "mbstd_group", "start_resolution"})}


def _int_problem(value: object, minimum: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return f"must be an integer >= {minimum}"
    return None


def _power_of_two_problem(value: object, minimum: int, maximum: int | None = None) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum and value & (value - 1) == 0
    if not ok or (maximum is not None and value > maximum):
        return f"must be a power of two {f'in [{minimum}, {maximum}]' if maximum is not None else f'>= {minimum}'}"
    return None


def widths_problem(resolution: int, widths: Mapping[str, object]) -> tuple[str, str] | None:
    """The first network-size keyword of ``widths`` that cannot build a GAN at ``resolution``, and what is wrong
    with it in words (to follow its name); None when all can. ``build_models`` refuses these, and a training
    run checks them (``training/builtin.py``) before its folder is made: one rule for both."""
    for key, value in widths.items():
        if key == "start_resolution":
            problem = _power_of_two_problem(value, 8, resolution)
        elif key == "channels_base":  # below base = resolution the full-resolution layers would have no feature maps
            problem = _int_problem(value, resolution) and "must be an integer >= the image resolution"
        else:  # latent_dim, channels_max, mbstd_group
            problem = _int_problem(value, 1)
        if problem:
            return key, problem
    return None


def _check(name: str, problem: str | None, value: object) -> None:
    if problem:
        raise ValueError(f"{name} {problem}, got {value!r}")


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
    _check("resolution", _power_of_two_problem(resolution, 8), resolution)
    _check("label_dim", _int_problem(label_dim, 1), label_dim)
    _check("image_channels", _int_problem(image_channels, 1), image_channels)
    if problem := widths_problem(resolution, widths):
        _check(problem[0], problem[1], widths[problem[0]])

    g_kwargs = {k: v for k, v in widths.items() if k != "mbstd_group"}
    d_kwargs = {k: v for k, v in widths.items() if k != "latent_dim"}
    return (generator_cls(resolution, label_dim, image_channels=image_channels, **g_kwargs),
            discriminator_cls(resolution, label_dim, image_channels=image_channels, **d_kwargs))
