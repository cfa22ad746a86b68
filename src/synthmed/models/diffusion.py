"""A label-conditional diffusion model: diffusers' ``UNet2DModel`` denoiser, its noise schedules
and samplers, and a multi-hot label embedding with a learned null condition for
classifier-free guidance (Ho & Salimans 2022).

Why diffusers and not MONAI's generative blocks (both measured on the reference 2-core CPU,
``benchmarks/diffusion_backends.py``; docs/diffusion.md): at the same architecture and parameter
count MONAI's UNet ran 1.2x faster in training and up to 1.6x per denoiser evaluation, but
sampling one image per real row of every fold weighs on a CPU run, and only diffusers ships a
multistep DPM-Solver++ (Lu et al. 2022), which its authors show reaching DDIM's quality in
several times fewer steps (not measured here). Its ``class_embed_type="identity"`` also takes
our own label embedding without patching the UNet.

Conditioning: every label has a learned embedding; a row's condition is the sum over its
active labels, passed through a small MLP so that combinations can mean more than their
parts, and added to the timestep embedding (scale-shift in every residual block). A learned
null vector replaces the sum for the unconditional branch. With ``appearance_clusters`` K > 0
each row's coarse look (one of K clusters of the training fold, ``appearance.py``) joins its
labels as K one-hot columns; sampling draws it per row from the training fold's shares for the
row's labels. Sampling with guidance scale w evaluates both branches in one batch:
``out = uncond + w * (cond - uncond)``. A guidance interval (Kynkäänniemi et al. 2024) applies
guidance only at the steps whose noise level sigma = sqrt((1 - alpha_bar) / alpha_bar) lies in
(low, high], and the conditional branch alone at the others: guidance at the noisiest steps pulls
every image of a label towards one layout and costs variety, and every unguided step costs one
denoiser evaluation instead of two.

Step spacing: "trailing" spreads the steps evenly over the training timesteps from the last one,
so in 16 steps on the cosine schedule the last noisy image is at sigma 0.11, and one step from
there to the clean image replaces the remaining detail by its average: the images come out
smoother than the real ones. "karras" (Karras et al. 2022, rho = 7) takes the first step on
pure noise and spaces the others in sigma from 20 down to the schedule's smallest, so that the
last steps are short (docs/diffusion-experiments.md, "Where the sampler stops").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from synthmed.device import resolve_bf16
from synthmed.models.appearance import AppearanceClusters

# diffusers takes seconds to import, so it is imported where a model or scheduler is built

PREDICTIONS = ("epsilon", "v_prediction")
SAMPLERS = ("dpm-solver++", "ddim")
SPACINGS = ("trailing", "karras")
# where "karras" starts its ramp: the first step already starts from pure noise at the last training timestep
# (sigma about 20,000 on the cosine schedule); EDM's 80 put 5 of 16 steps above sigma 10 here, and a sigma_max of
# 10 or 5 took the full preset's sets further from the real images in the real classifiers' features
# (docs/diffusion-experiments.md, "Trailing against karras spacing, in two feature spaces")
KARRAS_SIGMA_MAX, KARRAS_RHO = 20.0, 7.0
NOISE_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")


# classifier-free guidance is used at 1-10; far above, the guided estimate overflows to black images
MAX_GUIDANCE_SCALE = 100.0


def guidance_problem(scale: float) -> str | None:
    """What is wrong with a guidance scale, or None."""
    if not 0 <= scale <= MAX_GUIDANCE_SCALE:  # NaN fails both comparisons
        return f"must be a number in [0, {MAX_GUIDANCE_SCALE:g}] (1 = no guidance)"
    return None


def interval_problem(interval: Sequence[float]) -> str | None:
    """What is wrong with a guidance interval (low, high), or None."""
    if len(interval) != 2 or not 0 <= interval[0] < interval[1] < float("inf"):
        return "must be two noise levels 0 <= low < high, finite (0 1e9 guides at every step)"
    return None


def spacing_problem(spacing: str, sampler: str, steps: int, train_timesteps: int) -> str | None:
    """What is wrong with a step spacing for this sampler and number of steps, or None."""
    if spacing not in SPACINGS:
        return f"must be one of {SPACINGS}"
    if spacing == "karras" and sampler != "dpm-solver++":
        return "karras needs sampler dpm-solver++ (diffusers' DDIM takes only evenly spaced steps)"
    if spacing == "karras" and steps > train_timesteps:
        return f"karras takes at most train_timesteps ({train_timesteps}) steps, got {steps}"
    return None


def levels_problem(unet_channels: Sequence[int], resolution: int) -> str | None:
    """What is wrong with a UNet of these widths (one per level, each level halving the size) at ``resolution``,
    or None: checked when a run starts (``training/builtin.py``) and when the model is built."""
    levels = len(unet_channels)
    if resolution % 2 ** (levels - 1):
        return f"has {levels} UNet levels, which halve {resolution} px {levels - 1} times: not an integer size"
    return None


def noise_levels(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma = sqrt((1 - alpha_bar) / alpha_bar) of every training timestep: the noise level that guidance
    intervals and karras spacing are stated in."""
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def karras_timesteps(sigmas: torch.Tensor, steps: int) -> list[int]:
    """``steps`` distinct training timesteps, largest first: the last one (pure noise), then ``steps - 1`` noise
    levels spaced as Karras et al. (2022) do, rho 7, from ``KARRAS_SIGMA_MAX`` down to the smallest of ``sigmas``
    (one per training timestep), each moved to the timestep of the nearest sigma. Where several land on one
    timestep (many steps), the larger ones move up one by one, so the count is kept (at most
    ``len(sigmas)`` steps)."""
    last = len(sigmas) - 1
    ramp = torch.linspace(0, 1, steps - 1, dtype=torch.float64)
    top, bottom = min(KARRAS_SIGMA_MAX, float(sigmas[-1])) ** (1 / KARRAS_RHO), float(sigmas[0]) ** (1 / KARRAS_RHO)
    wanted = (top + ramp * (bottom - top)) ** KARRAS_RHO
    nearest = (sigmas.double()[None, :] - wanted[:, None]).abs().argmin(dim=1).tolist()
    for i in range(len(nearest) - 2, -1, -1):  # the smallest stays; each larger one above the next
        nearest[i] = max(nearest[i], nearest[i + 1] + 1)
    return [last] + [min(t, last - 1 - i) for i, t in enumerate(nearest)]  # and all below the first step


class LabelEmbedding(nn.Module):
    """Multi-hot labels (N, L) -> conditions (N, dim); ``drop`` rows get the learned null condition."""

    def __init__(self, label_dim: int, dim: int) -> None:
        super().__init__()
        self.per_label = nn.Linear(label_dim, dim, bias=False)  # y @ W: the sum of the active labels' rows
        self.null = nn.Parameter(torch.zeros(dim))
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, labels: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        summed = self.per_label(labels.to(self.null.dtype))
        if drop is not None:
            summed = torch.where(drop[:, None], self.null.expand_as(summed), summed)
        return self.mlp(summed)


class ConditionalDiffusion(nn.Module):
    """Denoiser network plus the plain values that define its noise schedule and sampler."""

    def __init__(self, resolution: int, label_dim: int, image_channels: int = 1,
                 unet_channels: tuple[int, ...] = (32, 64, 64), layers_per_block: int = 1, attention: bool = True,
                 prediction: str = "epsilon", noise_schedule: str = "squaredcos_cap_v2",
                 train_timesteps: int = 1000, sampler: str = "dpm-solver++", sample_steps: int = 20,
                 guidance_scale: float = 2.0, guidance_interval: tuple[float, float] | None = None,
                 sample_bf16: bool | str = False, sample_spacing: str = "trailing",
                 appearance_clusters: int = 0) -> None:
        from diffusers import UNet2DModel

        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if problem := spacing_problem(sample_spacing, sampler, sample_steps, train_timesteps):
            raise ValueError(f"sample_spacing {sample_spacing!r} {problem}")
        if noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(f"noise_schedule must be one of {NOISE_SCHEDULES}, got {noise_schedule!r}")
        if problem := levels_problem(unet_channels, resolution):
            raise ValueError(f"unet_channels {problem}")
        levels = len(unet_channels)
        self.resolution, self.label_dim, self.image_channels = resolution, label_dim, image_channels
        self.schedule = {"num_train_timesteps": train_timesteps, "beta_schedule": noise_schedule,
                         "prediction_type": prediction}
        self.sampler, self.sample_steps, self.guidance_scale = sampler, sample_steps, guidance_scale
        # a list, as the dataset card's JSON gives it back (a rerun compares the two)
        self.guidance_interval = None if guidance_interval is None else [float(v) for v in guidance_interval]
        self.sample_bf16, self.sample_spacing = sample_bf16, sample_spacing
        time_dim = unet_channels[0] * 4  # UNet2DModel's timestep-embedding width
        groups = min(8, unet_channels[0])
        self.unet = UNet2DModel(
            sample_size=resolution, in_channels=image_channels, out_channels=image_channels,
            block_out_channels=tuple(unet_channels), layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
            add_attention=attention,  # self-attention in the middle block, at the lowest resolution
            attention_head_dim=unet_channels[-1], norm_num_groups=groups,
            resnet_time_scale_shift="scale_shift", class_embed_type="identity",
            num_train_timesteps=train_timesteps,
        )
        # the look of the image beside its labels (models/appearance.py): K one-hot columns after the labels', so the
        # embedding sums a label row and a cluster row, and the null condition drops both
        self.clusters = AppearanceClusters(appearance_clusters, label_dim) if appearance_clusters else None
        self.labels = LabelEmbedding(label_dim + appearance_clusters, time_dim)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor,
                drop: torch.Tensor | None = None, clusters: torch.Tensor | None = None) -> torch.Tensor:
        """The network's prediction (noise or velocity, per ``prediction``) for noisy images at ``timesteps``;
        ``clusters`` (N,): each row's appearance cluster, which a model with appearance clusters needs."""
        if self.clusters is not None:
            if clusters is None:
                raise ValueError("this model is conditioned on appearance clusters: pass each row's cluster")
            labels = torch.cat([labels, self.clusters.one_hot(clusters, labels)], dim=1)
        return self.unet(noisy, timesteps, class_labels=self.labels(labels, drop)).sample

    def training_schedule(self):
        """The forward (noising) process, a diffusers ``DDPMScheduler``: ``add_noise`` and
        ``get_velocity`` for the training loss."""
        from diffusers import DDPMScheduler

        return DDPMScheduler(**self.schedule)

    def _sampling_schedule(self):
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        if self.sampler == "ddim":
            return DDIMScheduler(**self.schedule, timestep_spacing="trailing", clip_sample=True)
        return DPMSolverMultistepScheduler(**self.schedule, algorithm_type="dpmsolver++", solver_order=2,
                                           timestep_spacing="trailing", thresholding=True, sample_max_value=1.0)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, noise: torch.Generator, sample_steps: int | None = None,
               guidance_scale: float | None = None,
               guidance_interval: tuple[float, float] | list[float] | None = None,
               sample_bf16: bool | str | None = None, sample_spacing: str | None = None,
               start_from: tuple[torch.Tensor, int] | None = None) -> torch.Tensor:
        """Images in [-1, 1] for ``labels``. The samplers are deterministic given the starting
        noise, which is drawn from ``noise`` on its own device (a CPU generator gives the same
        starting noise whatever device the model is on). ``guidance_interval`` (low, high): guide
        only where the step's noise level sigma is in (low, high]; None keeps the model's (None:
        every step). ``sample_bf16`` (True, False or "auto": where it is fast) runs the network under
        bfloat16 autocast; the guidance and the solver stay in float32. ``sample_spacing``: "trailing" or
        "karras" (module docstring); None keeps the model's. ``start_from`` (images in [-1, 1], k): start at the k-th
        step from these images noised to its level, not from pure noise (SDEdit, Meng et al. 2022). Only
        benchmarks/diffusion_sampler.py uses it, to see which steps lose the gap: the images it makes are real
        images partly redrawn, never a synthetic set. A model with appearance clusters draws each row's cluster
        from ``noise`` before the starting noise (models/appearance.py), or from ``start_from``, each image's own."""
        steps = self.sample_steps if sample_steps is None else int(sample_steps)
        spacing = self.sample_spacing if sample_spacing is None else sample_spacing
        if problem := spacing_problem(spacing, self.sampler, steps, self.schedule["num_train_timesteps"]):
            raise ValueError(f"sample_spacing {spacing!r} {problem}")
        scale = self.guidance_scale if guidance_scale is None else float(guidance_scale)
        low, high = (self.guidance_interval if guidance_interval is None else guidance_interval) or (0.0, float("inf"))
        scheduler = self._sampling_schedule()
        sigmas = noise_levels(scheduler.alphas_cumprod)
        if spacing == "karras":
            scheduler.set_timesteps(timesteps=karras_timesteps(sigmas, steps), device=labels.device)
        else:
            scheduler.set_timesteps(steps, device=labels.device)
        clusters = None
        if self.clusters is not None:  # a noised real image keeps its own look; a new image draws one
            clusters = self.clusters.draw(labels, noise) if start_from is None else self.clusters.assign(
                start_from[0].to(labels.device))
        both_clusters = None if clusters is None else torch.cat([clusters, clusters])
        n = len(labels)
        shape = (n, self.image_channels, self.resolution, self.resolution)
        x = torch.randn(shape, device=noise.device, generator=noise).to(labels.device)
        timesteps = scheduler.timesteps
        if start_from is None:
            x = x * scheduler.init_noise_sigma
        else:
            images, first = start_from
            if not 0 <= first < len(timesteps):
                raise ValueError(f"start_from: step {first} of {len(timesteps)}: must be 0 to {len(timesteps) - 1}")
            timesteps = timesteps[first:]
            if self.sampler == "dpm-solver++":  # it counts its steps from the first; DDIM reads each from t
                scheduler.set_begin_index(first)
            x = scheduler.add_noise(images.to(labels.device), x, timesteps[:1])
        both_labels = torch.cat([labels, labels])  # the second half gets the null condition
        drop = torch.arange(2 * n, device=labels.device) >= n
        bf16 = resolve_bf16(self.sample_bf16 if sample_bf16 is None else sample_bf16, labels.device)

        def predict(inputs: torch.Tensor, t: torch.Tensor, y: torch.Tensor, dropped: torch.Tensor | None = None,
                    looks: torch.Tensor | None = None):
            with torch.autocast(labels.device.type, dtype=torch.bfloat16, enabled=bf16):
                return self(inputs, t.expand(len(inputs)), y, dropped, looks).float()

        for t in timesteps:
            model_input = scheduler.scale_model_input(x, t)
            if scale == 1.0 or not low < float(sigmas[int(t)]) <= high:
                out = predict(model_input, t, labels, looks=clusters)
            else:  # both branches in one batch
                cond, uncond = predict(torch.cat([model_input, model_input]), t, both_labels, drop,
                                       both_clusters).chunk(2)
                out = uncond + scale * (cond - uncond)
            x = scheduler.step(out, t, x).prev_sample
        return x.clamp(-1, 1)
