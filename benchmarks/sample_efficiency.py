"""Sample efficiency: how useful each generator's images are after a given number of training
images and training seconds, every model and training switch trained and scored in one run on
this machine, so that they share its state.

    python benchmarks/sample_efficiency.py                        # all variants, 24k images each
    python benchmarks/sample_efficiency.py --variants diffusion cpdgan --budget 12000 --snapshots 2
    python benchmarks/sample_efficiency.py --samples-n100         # plus cpD-GAN +/- DiffAugment at n100
    python benchmarks/sample_efficiency.py --variants cpdgan cpdgan+ns-r1-g0.1 --r32-seeds 3   # 3 training seeds
    python benchmarks/sample_efficiency.py --samples-n100 --n100-seeds 3 --variants   # n100 only, 3 seeds
    python benchmarks/sample_efficiency.py --samples-n100 --variants --n100-variants cpdgan+translation  # milder
    python benchmarks/sample_efficiency.py --samples-n100 --variants --n100-variants cpdgan+ns-r1+diffaug  # NS loss
    python benchmarks/sample_efficiency.py --samples-n100 --n100-seeds 3 --classifier-seeds 3 --budget 96000 \
        --snapshots 4 --variants --n100-variants cpdgan+ns-r1-g0.1+diffaug   # R1 gamma 0.1, 3 classifiers each
    python benchmarks/sample_efficiency.py --samples-n100 --n100-seeds 5 --classifier-seeds 3 --budget 96000 \
        --snapshots 4 --threads 1 --variants --n100-variants cpdgan+ns-r1-g0.1+ada0.3   # ADA, target 0.3
    python benchmarks/sample_efficiency.py --samples-n100 --n100-seeds 3 --classifier-seeds 3 --budget 45000 \
        --snapshots 3 --variants --n100-variants diffusion                    # the diffusion model at n100
    python benchmarks/sample_efficiency.py --device cuda --variants cpdgan-paper cpdgan-paper+diffaug+ema-warmup \
        --budget 120000 --snapshots 4 --fid-extractor pixels                   # on a GPU (benchmarks/gpu_check.sh)

Setting: br35h at 32x32 (``resolution/r32`` of the ``br35h`` settings preset), prepared under
``--work`` when missing. Every variant trains to ``--budget`` real images from its preset with
the overrides below, without FID checks (``fid_every: 0``: the snapshots are scored here), and
keeps its EMA generator every ``budget / snapshots`` images (``snapshot_every``). By default
only the CPU presets' variants run; the ``-paper`` ones train the paper-width networks, which
want a GPU. Training, sampling and the classifiers run on ``--device`` (auto: a GPU when there
is one). For each snapshot it generates the synthetic folds and measures:

* ``gap`` = AUC_real - AUC_syn (DenseNet-121 on real vs synthetic training data, real test fold;
  the real classifier is trained once per classifier seed and shared);
* ``real_on_syn``: the real classifier's AUROC on the synthetic test fold ("GAN-test");
* ``delta_syn``: the synthetic classifier on the synthetic test fold minus on the real one (paper 3.3);
* these three are the mean over ``--classifier-seeds`` (default 1), each seed training both classifiers
  again on the same synthetic set: on n100 one 4-epoch classifier moves them by a few hundredths;
* ``fd``: Fréchet distance between ``--fid-images`` fixed real training images of the full r32 setting
  and as many images the snapshot makes for their labels, the same reference for every setting
  (``--fid-extractor``, by default Inception at 96 px, which ranks like FID at a tenth of its cost).

``train_seconds`` is time spent in training steps (no grids or checkpoints), on ``--threads``
threads on a CPU. Results go to ``WORK/sample_efficiency.csv`` and ``.png``; every
finished piece (training run, scored snapshot) is kept, so a rerun continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from synthmed.data import BenchmarkSetting, build_settings, prepare_source
from synthmed.device import resolve_device
from synthmed.evaluation.classifier import ClassifierConfig
from synthmed.evaluation.eval_dir import EvalDir
from synthmed.evaluation.utility import evaluate_utility
from synthmed.metrics.extractors import extract_features, make_extractor
from synthmed.metrics.fid import frechet
from synthmed.synthesis import generate, load_generator, synthesize
from synthmed.training.config import load_config
from synthmed.training.loop import start_run, train

AUGMENT = "color,translation,cutout"
NS_R1 = {"gan_loss": "non-saturating"}  # StyleGAN2's logistic loss with lazy R1, in place of WGAN-GP
# measured on n100 (docs/diffusion.md), not in the default r32 run: DiffAugment's milder policies, and the
# non-saturating loss with ten times the R1 weight
N100_PROBES = {
    "cpdgan+translation": ("cpdgan-cpu", {"augment": "translation"}),
    "cpdgan+translation+cutout": ("cpdgan-cpu", {"augment": "translation,cutout"}),
    "cpdgan+ns-r1-g0.1": ("cpdgan-cpu", {**NS_R1, "r1_gamma": 0.1}),
    "cpdgan+ns-r1-g0.1+diffaug": ("cpdgan-cpu", {**NS_R1, "r1_gamma": 0.1, "augment": AUGMENT}),
    "cpdgan+ns-r1-g0.1+translation": ("cpdgan-cpu", {**NS_R1, "r1_gamma": 0.1, "augment": "translation"}),
    # ADA: DiffAugment's three transforms at an adaptive probability, StyleGAN2-ADA's target 0.6 and a lower one
    "cpdgan+ns-r1-g0.1+ada": ("cpdgan-cpu", {**NS_R1, "r1_gamma": 0.1, "augment": AUGMENT, "ada_target": 0.6}),
    "cpdgan+ns-r1-g0.1+ada0.3": ("cpdgan-cpu", {**NS_R1, "r1_gamma": 0.1, "augment": AUGMENT, "ada_target": 0.3}),
    # and at StyleGAN2-ADA's own R1 weight for 32 px (0.01), whose critic is freer to overfit
    "cpdgan+ns-r1+ada": ("cpdgan-cpu", {**NS_R1, "augment": AUGMENT, "ada_target": 0.6}),
}
# Projected GAN's critic on cpD-GAN's generator (models/projected.py), with the authors' DiffAugment policy and no R1
# (their loss is the hinge, here the logistic one), fed 64 px to EfficientNet-Lite0: the authors' 224 costs 12 times
# as much per image. A probe, not in the default run until measured
PROJECTED = {**NS_R1, "r1_gamma": 0.0, "augment": AUGMENT, "discriminator": "projected", "projected_input_size": 64}
R32_PROBES = {"cpdgan+projected": ("cpdgan-cpu", PROJECTED),
              # the critic reads the images at twice the size (tumours larger in EfficientNet's maps, 2.7 times the cost)
              "cpdgan+projected128": ("cpdgan-cpu", {**PROJECTED, "projected_input_size": 128}),
              # without DiffAugment's colour step, which moves brightness, and brightness carries part of br35h's label
              "cpdgan+projected-nocolor": ("cpdgan-cpu", {**PROJECTED, "augment": "translation,cutout"}),
              # without augmentation: the peer of cpdgan+projected on n100 (--n100-variants cpdgan+projected)
              "cpdgan+projected-noaug": ("cpdgan-cpu", {k: v for k, v in PROJECTED.items() if k != "augment"})}
# name -> (training preset, overrides); prog-GAN's phases are cut so that it has grown to 32 px
# by 8,000 images (5 phases), before the first snapshot of the default budget
VARIANTS = {
    "cpdgan": ("cpdgan-cpu", {}),
    "cpdgan+ema-warmup": ("cpdgan-cpu", {"ema_warmup": True}),
    "cpdgan+diffaug": ("cpdgan-cpu", {"augment": AUGMENT}),
    "cpdgan+diffaug+ema-warmup": ("cpdgan-cpu", {"augment": AUGMENT, "ema_warmup": True}),
    "cpdgan+ns-r1": ("cpdgan-cpu", NS_R1),
    "cpdgan+ns-r1+diffaug": ("cpdgan-cpu", {**NS_R1, "augment": AUGMENT}),
    "proggan": ("proggan-cpu", {"phase_images": 1600}),
    "proggan+diffaug": ("proggan-cpu", {"phase_images": 1600, "augment": AUGMENT}),
    "diffusion": ("diffusion-cpu", {}),
    "diffusion+min-snr": ("diffusion-cpu", {"snr_gamma": 5.0}),
    # the paper's widths (for a GPU, bfloat16 where it is fast): the paper preset against its best switches
    "cpdgan-paper": ("cpdgan-paper", {"bf16": "auto"}),
    "cpdgan-paper+diffaug+ema-warmup": ("cpdgan-paper", {"bf16": "auto", "augment": AUGMENT, "ema_warmup": True}),
    "diffusion-paper": ("diffusion-paper", {}),
    # and with the projected critic at the authors' input size (a GPU's variant: at 224 px the critic costs about
    # 12 times what it does at 64)
    "cpdgan-paper+projected": ("cpdgan-paper", {"bf16": "auto", **PROJECTED, "projected_input_size": 224}),
    **N100_PROBES,
    **R32_PROBES,
}
CPU_VARIANTS = [name for name, (preset, _) in VARIANTS.items()
                if not preset.endswith("-paper") and name not in N100_PROBES and name not in R32_PROBES]
# CSV column -> where an evaluation's utility.json keeps it (evaluation/utility.py)
UTILITY_COLUMNS = {"auc_real": lambda u: u["auc_real"]["mean"], "auc_syn": lambda u: u["auc_syn"]["mean"],
                   "gap": lambda u: u["auc_real_minus_auc_syn"], "delta_syn": lambda u: u["delta_syn"],
                   "real_on_syn": lambda u: u["auc_real_on_syn"]["mean"]}
COLUMNS = ["setting", "variant", "seed", "images_seen", "train_seconds", *UTILITY_COLUMNS, "classifier_seeds", "fd",
           "fd_extractor", "fd_images"]


def quiet(message: str) -> None:
    pass


# br35h at 32 px, read as a benchmark preset's ``data`` block reads it
BR35H_DATA = {"source": "br35h", "options": {}, "resolutions": [32], "root": None}


def prepare_data(work: Path, data: dict | None = None, settings_preset: str = "br35h", folder: str = "data") -> Path:
    """The settings folder ``work/folder/settings`` built by ``settings_preset`` from a store of ``data`` (a benchmark
    preset's ``data`` block; br35h at 32 px by default), each made only when missing."""
    data = BR35H_DATA if data is None else data
    settings = work / folder / "settings"
    if not (settings / "settings.json").is_file():
        store = work / folder / "store"
        if not (store / "manifest.json").is_file():
            prepare_source(data["source"], store, root=data["root"], options=data["options"],
                           resolutions=data["resolutions"], progress=False, log=quiet)
        build_settings(settings_preset, store, settings, overwrite=True, log=quiet)
    return settings


def train_variant(name: str, setting: Path, out: Path, budget: int, snapshots: int, threads: int,
                  device: str, seed: int = 0) -> Path:
    """Train to ``budget`` images, keeping the EMA generator at every ``budget / snapshots`` (no FID checks: the
    snapshots are scored here)."""
    preset, overrides = VARIANTS[name]
    if not (out / "run.json").is_file():
        every = budget // snapshots
        config = load_config(preset, {**overrides, "seed": seed, "min_images": budget, "max_images": budget,
                                      "fid_every": 0, "sample_every": every, "snapshot_every": every,
                                      "checkpoint_every": every, "threads": threads, "device": device})
        start_run(config, setting, out)
    train(out, progress=False, log=quiet)
    return out


class FrechetScorer:
    """FD between ``n`` fixed real training images of the full r32 setting and ``n`` images a generator makes
    for their labels. Every setting is measured against the same reference: a generator trained on n100's 200
    images is compared with the whole training fold, as ADA's limited-data runs are with the whole dataset
    (Karras et al. 2020), and its FD does not rest on the 200 images of its own small set (in 2,048
    dimensions an FD on 200 images is mostly the estimate's bias)."""

    def __init__(self, reference: BenchmarkSetting, extractor: str, n: int, device: str) -> None:
        self.extractor, self.device = make_extractor(extractor), resolve_device(device)
        rows = np.sort(np.random.default_rng(0).permutation(len(reference.rows("train")))[:n])
        self.n, self.labels = len(rows), reference.labels("train")[rows]
        self.real = extract_features(self.extractor, reference.images("train")[rows])

    def __call__(self, run: Path, snapshot: str) -> float:
        sampler, _ = load_generator(run, self.device, snapshot)
        fakes = synthesize(sampler, self.labels, seed=1, device=self.device)
        return frechet(self.real, extract_features(self.extractor, fakes))


def score_snapshot(run: Path, snapshot: Path, real_dir: Path, classifiers: list[ClassifierConfig],
                   real_paths: list[Path], fd: FrechetScorer, device: str) -> dict:
    """FD and the utility numbers of one snapshot's synthetic set, the latter averaged over the classifier seeds
    (each seed trains both classifiers; the real one is shared by every snapshot)."""
    scored = run / "scored" / snapshot.stem.split("_")[-1]
    done = scored / "score.json"
    if not done.is_file():
        generate(run, scored / "synthetic", snapshot_file=f"snapshots/{snapshot.name}", device=device,
                 export_png=False, overwrite=True, progress=False, log=quiet)
        meta = torch.load(snapshot, map_location="cpu", weights_only=False)
        done.write_text(json.dumps({"images_seen": meta["images_seen"],
                                    "train_seconds": round(meta["train_seconds"], 1),
                                    "fd": fd(run, f"snapshots/{snapshot.name}"), "fd_extractor": fd.extractor.name,
                                    "fd_images": fd.n}))
    score = json.loads(done.read_text())
    utilities = []
    for classifier, real_path in zip(classifiers, real_paths):
        out = scored if classifier.seed == 0 else scored / f"classifier-seed{classifier.seed}"
        if not EvalDir(out).utility.is_file():
            evaluate_utility(real_dir, scored / "synthetic" / "setting", classifier, out, log=quiet, progress=False,
                             real_classifier_path=real_path)
        utilities.append(json.loads(EvalDir(out).utility.read_text()))
    means = {column: float(np.mean([key(u) for u in utilities])) for column, key in UTILITY_COLUMNS.items()}
    return {"images_seen": score["images_seen"], "train_seconds": score["train_seconds"], **means,
            "classifier_seeds": len(utilities), "fd": score["fd"], "fd_extractor": score["fd_extractor"],
            "fd_images": score["fd_images"]}


def run_setting(label: str, real_dir: Path, variants: list[str], work: Path, args, rows: list[dict],
                fd: FrechetScorer, seeds: int = 1) -> None:
    """Every variant at training seeds 0..seeds-1 (seed 0 in WORK/LABEL/VARIANT, seed s in .../VARIANT-seedS)."""
    classifiers = [ClassifierConfig(input_size=None, max_epochs=args.classifier_epochs, threads=args.threads,
                                    device=args.device, seed=seed) for seed in range(args.classifier_seeds)]
    # each seed's real classifier is trained by the first snapshot scored, and reused by the others
    real_paths = [work / label / ("real_classifier.pt" if c.seed == 0 else f"real_classifier-seed{c.seed}.pt")
                  for c in classifiers]
    for name, seed in [(name, seed) for seed in range(seeds) for name in variants]:
        started = time.time()
        folder = work / label / (name if seed == 0 else f"{name}-seed{seed}")
        run = train_variant(name, real_dir, folder, args.budget, args.snapshots, args.threads, args.device, seed)
        for snapshot in sorted((run / "snapshots").glob("generator_*.pt")):
            row = {"setting": label, "variant": name, "seed": seed,
                   **score_snapshot(run, snapshot, real_dir, classifiers, real_paths, fd, args.device)}
            rows.append(row)
            print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                  flush=True)
        print(f"{label} {name} seed {seed}: {time.time() - started:.0f} s", flush=True)


def unaugmented(name: str) -> str:
    """The variant that trains as ``name`` does without augmentation (its n100 peer)."""
    preset, overrides = VARIANTS[name]
    plain = {k: v for k, v in overrides.items() if k not in ("augment", "ada_target")}
    return next(other for other, (p, o) in VARIANTS.items() if p == preset and o == plain)


def summarise_n100(rows: list[dict]) -> None:
    """Per snapshot and augmented variant: Δ_syn and FD against the same variant without augmentation, mean over
    seeds, and in how many seeds augmentation lowered each (same seed, same snapshot)."""
    n100 = [r for r in rows if r["setting"] == "n100"]
    augmented = [v for v in dict.fromkeys(r["variant"] for r in n100) if VARIANTS[v][1].get("augment")]
    for images in sorted({r["images_seen"] for r in n100}):
        at = {(r["variant"], r["seed"]): r for r in n100 if r["images_seen"] == images}
        for variant in augmented:
            base = unaugmented(variant)
            seeds = sorted(s for v, s in at if v == base and (variant, s) in at)
            for metric in ("delta_syn", "fd"):
                plain = [at[base, s][metric] for s in seeds]
                with_it = [at[variant, s][metric] for s in seeds]
                lower = sum(a < p for a, p in zip(with_it, plain))
                print(f"n100 at {images:,} images, {metric}: {base} {np.mean(plain):.4f}, {variant} "
                      f"{np.mean(with_it):.4f} (mean of {len(seeds)} seeds); lower with augmentation in {lower} of "
                      f"{len(seeds)}")


def r32_curve(rows: list[dict], variant: str, x: str, y: str) -> list[tuple[float, float]]:
    """(x, y) at each snapshot of an r32 variant, both the mean over its training seeds."""
    by_images: dict[int, list[dict]] = {}
    for r in rows:
        if r["setting"] == "r32" and r["variant"] == variant:
            by_images.setdefault(r["images_seen"], []).append(r)
    return [(float(np.mean([r[x] for r in at])), float(np.mean([r[y] for r in at])))
            for _, at in sorted(by_images.items())]


def images_to_reach(rows: list[dict], variant: str, gap: float) -> float | None:
    """First images-seen where the (seed-mean) gap is at or below ``gap``, linearly interpolated (None: never)."""
    points = r32_curve(rows, variant, "images_seen", "gap")
    for (x0, y0), (x1, y1) in zip([(0, 1.0)] + points, points):
        if y1 <= gap:
            return x1 if y0 == y1 else x0 + (x1 - x0) * (y0 - gap) / (y0 - y1)
    return None


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("images_seen", "gap"), ("train_seconds", "gap"), ("images_seen", "real_on_syn"), ("images_seen", "fd")]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    for ax, (x, y) in zip(axes, panels):
        for name in dict.fromkeys(r["variant"] for r in rows if r["setting"] == "r32"):
            ax.plot(*zip(*r32_curve(rows, name, x, y)), marker="o", label=name)
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(y.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("br35h 32x32: AUC_real - AUC_syn, real classifier on synthetic test, FD")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/sample-efficiency"))
    parser.add_argument("--variants", nargs="*", default=CPU_VARIANTS, choices=list(VARIANTS),
                        help="variants on r32 (none: only the n100 rows); by default those of the CPU presets")
    parser.add_argument("--budget", type=int, default=24_000, help="real images per variant")
    parser.add_argument("--snapshots", type=int, default=3, help="scored snapshots per variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:N")
    parser.add_argument("--classifier-epochs", type=int, default=4)
    parser.add_argument("--classifier-seeds", type=int, default=1,
                        help="classifier seeds per snapshot (both classifiers retrained); gap, Δ_syn and real-on-syn "
                             "are their mean")
    parser.add_argument("--fid-extractor", default="inception-96")
    parser.add_argument("--fid-images", type=int, default=500)
    parser.add_argument("--samples-n100", action="store_true",
                        help="also the samples axis' n100 setting (by default cpD-GAN with and without DiffAugment)")
    parser.add_argument("--r32-seeds", type=int, default=1,
                        help="training seeds of the r32 rows (the plot and gap 0.063 use their mean)")
    parser.add_argument("--n100-seeds", type=int, default=1, help="training seeds of the n100 rows")
    parser.add_argument("--n100-variants", nargs="+", default=["cpdgan+diffaug"],
                        choices=[*(name for name, (preset, overrides) in VARIANTS.items()
                                   if overrides.get("augment") and preset == "cpdgan-cpu"), "diffusion"],
                        help="variants on n100: augmented cpD-GAN variants, each compared with the same variant "
                             "without augmentation (which runs too), or the diffusion model as diffusion-cpu "
                             "trains it (scored, but with no augmented peer to compare)")
    args = parser.parse_args()
    for option in ("classifier_seeds", "r32_seeds", "n100_seeds"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} {getattr(args, option)}: must be at least 1")
    torch.set_num_threads(args.threads)
    settings = prepare_data(args.work)
    rows: list[dict] = []
    r32 = settings / "resolution" / "r32"
    fd = FrechetScorer(BenchmarkSetting(r32), args.fid_extractor, args.fid_images, args.device)
    run_setting("r32", r32, args.variants, args.work, args, rows, fd, args.r32_seeds)
    if args.samples_n100:
        peers = [unaugmented(name) for name in args.n100_variants]
        run_setting("n100", settings / "samples" / "n100", list(dict.fromkeys([*peers, *args.n100_variants])),
                    args.work, args, rows, fd, args.n100_seeds)
        summarise_n100(rows)
    out = args.work / "sample_efficiency.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for name in args.variants:
        reached = images_to_reach(rows, name, 0.063)
        where = "not within the budget" if reached is None else f"{reached:,.0f} images"
        print(f"{name}: gap 0.063 reached at {where}")
    if args.variants:  # the plot's curves are the r32 variants'
        plot(rows, out.with_suffix(".png"))
        print(f"wrote {out} and {out.with_suffix('.png')}")
    else:
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
