"""Does a diffusion run denoise its own training images better than images it never saw? Per noise level, the
error of the model's clean-image estimate on the training fold against the held-out folds
(docs/diffusion-experiments.md, "Memorising or underfitting").

    python benchmarks/denoising_fit.py runs/br35h/diffusion
    python benchmarks/denoising_fit.py RUN --sigmas 2.83 1.07 0.35 --seed 1
    python benchmarks/denoising_fit.py RUN --snapshot snapshots/generator_0000030016.pt   # see RUN/snapshots/

The folds are those of the setting the run was trained on (its run.json). Every image of each fold (train, val, test)
is noised to each level σ = sqrt((1 - ᾱ) / ᾱ) (the nearest training timestep's), with noise drawn from ``--seed``,
the level's timestep and the fold, and the run's generator (``generator.pt``: the best-FID EMA network when the run
made FID checks, else its final one) or ``--snapshot`` predicts it under its own label (and, with appearance
clusters, its own cluster), unguided. The error is the mean squared difference between the clean-image estimate
(unclipped, float32) and the image, both in [-1, 1], per image; the table gives each fold's mean with its standard
error, and the held-out (val + test) mean over the training mean with a Welch t-test's p-value.

Reading it: held-out over train near 1 at every level means the model has not fitted its training images more
closely than new ones from the same source: it is limited by its size or its training, not memorising. Well above
1 at the low levels means it reproduces training images better than others, the signal that loss-based membership
inference uses against diffusion models (Carlini et al. 2023, "Extracting Training Data from Diffusion Models").
The folds come from one source but are different images, so two folds differ by a few per cent even for a model
that never saw either; compare the ratio with that, not with exactly 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from synthmed.data import BenchmarkSetting
from synthmed.errors import UserError
from synthmed.models.diffusion import noise_levels
from synthmed.synthesis import load_generator
from synthmed.training.run_dir import RunDir
from synthmed.training.samples import from_uint8

FOLDS = ("train", "val", "test")


def clean_estimate_errors(model, noising, images: torch.Tensor, labels: torch.Tensor, timestep: int,
                          noise: torch.Generator, batch: int = 256) -> np.ndarray:
    """Per image: mean squared error of the model's clean-image estimate from ``images`` noised to ``timestep`` by
    ``noising`` (the model's training schedule)."""
    alpha_bar = noising.alphas_cumprod[timestep]
    errors = []
    for start in range(0, len(images), batch):
        x, y = images[start:start + batch], labels[start:start + batch]
        eps = torch.randn(x.shape, generator=noise)
        t = torch.full((len(x),), timestep)
        noisy = noising.add_noise(x, eps, t)
        # a model with appearance clusters is told each image's own, as in training
        clusters = None if model.clusters is None else model.clusters.assign(x)
        with torch.no_grad():
            out = model(noisy, t, y, None, clusters).float()
        if model.schedule["prediction_type"] == "epsilon":
            estimate = (noisy - (1 - alpha_bar).sqrt() * out) / alpha_bar.sqrt()
        else:  # v = sqrt(ᾱ) eps - sqrt(1 - ᾱ) x0
            estimate = alpha_bar.sqrt() * noisy - (1 - alpha_bar).sqrt() * out
        errors.append((estimate - x).square().mean(dim=(1, 2, 3)).numpy())
    return np.concatenate(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished diffusion run")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[20.0, 6.63, 2.83, 1.07, 0.35, 0.1],
                        help="noise levels (default: five of diffusion-cpu's karras steps, and 0.1)")
    parser.add_argument("--snapshot", help="a snapshot of the run instead of its generator, e.g. "
                                           "snapshots/generator_0000030016.pt (config snapshot_every)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if any(s <= 0 for s in args.sigmas):
        parser.error(f"--sigmas: every level must be above 0, got {args.sigmas}")
    torch.set_num_threads(args.threads)
    try:
        model, snapshot = load_generator(args.run, snapshot=args.snapshot)
        setting = BenchmarkSetting(RunDir.existing(args.run, option="RUN").read_info()["setting"])
    except UserError as error:  # no run, no such snapshot, a moved setting: one line, exit status 2
        parser.error(str(error))
    if not hasattr(model, "training_schedule"):
        parser.error(f"{args.run}: not a diffusion run (its sampler has no noise schedule)")
    folds = {fold: (from_uint8(torch.as_tensor(setting.images(fold))),
                    torch.as_tensor(setting.labels(fold)).float()) for fold in FOLDS}
    noising = model.training_schedule()
    sigmas = noise_levels(noising.alphas_cumprod)
    counts = ", ".join(f"{fold} {len(folds[fold][0])}" for fold in FOLDS)
    print(f"{args.run} after {snapshot['images_seen']:,} images: images per fold {counts}; error of the clean-image "
          f"estimate, mean ± standard error")
    print(f"{'sigma':>7} {'t':>4} " + " ".join(f"{f:>17}" for f in FOLDS) + f" {'held-out/train':>15} {'p':>7}")
    for target in args.sigmas:
        timestep = int((sigmas - target).abs().argmin())
        errors = {}
        for fold_index, fold in enumerate(FOLDS):
            # a level's draws depend on its timestep, not on which other levels were asked for
            noise = torch.Generator().manual_seed(int(np.random.SeedSequence([args.seed, timestep, fold_index])
                                                      .generate_state(1)[0]))
            errors[fold] = clean_estimate_errors(model, noising, *folds[fold], timestep, noise)
        held_out = np.concatenate([errors["val"], errors["test"]])
        p = stats.ttest_ind(held_out, errors["train"], equal_var=False).pvalue
        cells = " ".join(f"{e.mean():.5f} ± {stats.sem(e):.5f}" for e in errors.values())
        print(f"{float(sigmas[timestep]):7.3f} {timestep:4d} {cells} {held_out.mean() / errors['train'].mean():15.3f} "
              f"{p:7.3f}", flush=True)


if __name__ == "__main__":
    main()
