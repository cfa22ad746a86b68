"""The diffusion model's sampler settings compared on the same weights: each ``sample_spacing`` and guidance scale
sampled from the same starting noise per generation seed, so the comparison is paired (docs/diffusion-experiments.md,
"Where the sampler stops", "The full preset under the paper's classifier recipe", "A guidance interval for eight
karras steps", "One guided step more at sixteen steps" and "Trailing against karras spacing, in two feature spaces").
Without ``--guidance-scales`` or ``--guidance-intervals``, rows use the trained run's own scale and interval.

    python benchmarks/diffusion_sampler.py                  # the demo's diffusion model, generation seeds 0 and 1
    python benchmarks/diffusion_sampler.py --model full     # diffusion-cpu as shipped (about 20 min of training)
    python benchmarks/diffusion_sampler.py --model samples  # br35h-samples' entry: 30k images, 8 steps
    python benchmarks/diffusion_sampler.py --model phantom  # phantom-chest-cpu's entry on classes/k20_n72
    python benchmarks/diffusion_sampler.py --model full --spacings karras --guidance-scales 3 1 \\
        --classifier paper --classifier-seeds 0 1
    python benchmarks/diffusion_sampler.py --model samples --spacings karras --guidance-intervals 0.25,3.5
    python benchmarks/diffusion_sampler.py --model full --spacings karras --classifier paper \\
        --classifier-seeds 0 1 2 --seeds 0 1 2 --train-seed 1 --set appearance_clusters=16

Setting: br35h at 32x32 (``resolution/r32``), or for ``phantom`` the chest phantoms' ``classes/k20_n72`` (8 labels,
1,440 training rows), prepared under ``--work`` when missing; ``--setting`` picks another setting of the same data
(e.g. ``samples/n100``). The model trains once (seed 0; ``--train-seed``, with ``--set KEY=VALUE`` over its config:
each such run and its sets get folders of their own, scored by the same real classifiers). Each synthetic set is
scored on the real test fold, against a real classifier of the same recipe and seed, by the demo's classifier recipe
(DenseNet-121, 4 epochs), the paper's (``--classifier paper``: at most 50 epochs, early stopping) or the model's
benchmark preset's (``--classifier preset``), at each classifier seed: the gap AUC_real - AUC_syn, and real-on-syn
(the real classifier on the synthetic test fold). Two statistics of the training fold, real or synthetic, say what
the images look like: sharpness, the mean absolute difference between horizontal neighbours (0-1 scale), and the
brightness cue, how well one number per image, its 99th-percentile pixel, separates each label (AUROC either way
round, mean over labels): a set whose cue is far above the real one's shows its labels by brightness more than real
images do. Two Fréchet distances say how close the whole synthetic training fold is to the real one, where the gap
alone cannot tell two samplers apart: FD-96, in Inception features at 96 px (the stopping rule's extractor, not the
standard FID), and the in-domain FD, in the pooled features of the real classifier of that recipe and seed, a network
that has seen only these real images. They can disagree, as they did on trailing against karras spacing
(docs/diffusion-experiments.md, "Trailing against karras spacing, in two feature spaces"). Both are biased upward on
a fold with no more images than feature dimensions (2,048 and 1,024: e.g. ``samples/n100``), so compare them there
only between sets of one setting. Every finished piece is kept under ``--work``, so a rerun continues.

``--from-real-steps K ...`` asks where the gap is lost (docs/diffusion-experiments.md, "Where the gap is lost"): besides
(or, with ``--only-from-real``, instead of) each synthetic set, a set in which every real row is noised to the K-th
step's noise level and the model runs the remaining steps (SDEdit, Meng et al. 2022), scored the same way. K = 0 is pure
noise, the last step nearly the real image; the gap in between says how much each stretch of the sampler loses. These
sets are real images partly redrawn: kept under ``--work`` without a dataset card, never to share.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from sample_efficiency import prepare_data, quiet
from sklearn.metrics import roc_auc_score

from synthmed._io import write_json_atomic
from synthmed.benchmark.presets import load_preset
from synthmed.config import parse_key_values
from synthmed.data import BenchmarkSetting
from synthmed.data.records import SPLITS
from synthmed.errors import ConfigError
from synthmed.evaluation.classifier import ClassifierConfig, load_classifier
from synthmed.evaluation.eval_dir import EvalDir
from synthmed.evaluation.utility import evaluate_utility
from synthmed.metrics.extractors import ClassifierFeatures, FeatureExtractor, extract_features, make_extractor
from synthmed.metrics.fid import frechet
from synthmed.models.diffusion import SPACINGS, interval_problem
from synthmed.synthesis import generate, load_generator, synthesize, write_set
from synthmed.training.config import load_config
from synthmed.training.loop import start_run, train
from synthmed.training.samples import from_uint8

# each model: a benchmark preset whose diffusion entry (its config with the entry's overrides) is trained, or
# None for diffusion-cpu as shipped, and the setting it trains on
MODELS = {"demo": ("demo", "resolution/r32"), "samples": ("br35h-samples", "resolution/r32"),
          "full": (None, "resolution/r32"), "phantom": ("phantom-chest-cpu", "classes/k20_n72")}
# classifier recipes: the demo's 4 epochs, the paper's (ClassifierConfig's defaults: at most 50 epochs), or the
# model's benchmark preset's own (br35h-samples and phantom-chest-cpu: at most 12 epochs)
RECIPES = {"demo": {"max_epochs": 4}, "paper": {}, "preset": None}
FOLDER_UNSAFE = re.compile(r"[^\w.]+")  # what a --set value may hold that a folder name should not (a list, a path)


def sharpness(images: np.ndarray) -> float:
    return float(np.abs(np.diff(images.astype(np.float32) / 255.0, axis=-1)).mean())


def brightness_cue(images: np.ndarray, labels: np.ndarray) -> float:
    p99 = np.percentile(images.reshape(len(images), -1), 99, axis=1)
    aurocs = [roc_auc_score(column, p99) for column in labels.T if 0 < column.sum() < len(column)]
    return float(np.mean([max(a, 1 - a) for a in aurocs]))


def describe(setting: BenchmarkSetting) -> str:
    images, labels = setting.images("train"), setting.labels("train")
    return f"sharpness {sharpness(images):.4f}, brightness cue {brightness_cue(images, labels):.3f}"


class TrainingFoldFD:
    """The Fréchet distance of synthetic training folds to one real training fold in one extractor's features. The
    real features are extracted when the first set not yet measured needs them. Each set's value is kept in the json
    file it is given, with the extractor's ``cache_name``: a real classifier trained again (its weights' digest is in
    the name) measures the sets again."""

    def __init__(self, real: BenchmarkSetting, extractor: FeatureExtractor) -> None:
        self.real = real
        self.extractor = extractor
        self.real_features: np.ndarray | None = None

    def __call__(self, synthetic: BenchmarkSetting, cache: Path) -> float:
        kept = json.loads(cache.read_text()) if cache.is_file() else {}
        if kept.get("extractor") != self.extractor.cache_name:
            if self.real_features is None:
                self.real_features = extract_features(self.extractor, self.real.images("train"))
            fd = frechet(self.real_features, extract_features(self.extractor, synthetic.images("train")))
            kept = {"fd": fd, "extractor": self.extractor.cache_name}
            write_json_atomic(cache, kept)
        return kept["fd"]


def prepare_setting(work: Path, preset: str | None) -> Path:
    """The settings folder for a benchmark preset's data: br35h's under ``work/data`` (shared with
    sample_efficiency.py), any other source's under ``work/data-<preset>``."""
    values = load_preset(preset).values if preset else None
    if values is None or values["data"]["source"] == "br35h":
        return prepare_data(work)
    return prepare_data(work, values["data"], values["settings"], folder=f"data-{preset}")


def guidance_interval(text: str) -> tuple[float, float]:
    """``LOW,HIGH`` -> (low, high), checked as the model checks it."""
    try:
        interval = tuple(float(v) for v in text.split(","))
    except ValueError:
        interval = ()
    if problem := interval_problem(interval):
        raise argparse.ArgumentTypeError(f"{text!r}: a guidance interval {problem}")
    return interval


def set_name(spacing: str, scale: float | None, interval: tuple[float, float] | None, from_real: int | None) -> str:
    """The folder of one sampler setting: the spacing, then whatever differs from the run's own."""
    name = spacing if scale is None else f"{spacing}-guidance{scale:g}"
    name = name if interval is None else f"{name}-interval{interval[0]:g}-{interval[1]:g}"
    return name if from_real is None else f"{name}-from-real-step{from_real}"


class FromRealRows:
    """The run's sampler made to start each batch from the next real rows noised to step ``first``, so that
    ``synthesize`` batches and seeds a noised-real set as it does a synthetic one."""

    def __init__(self, sampler, images: np.ndarray, first: int) -> None:
        self.sampler, self.images, self.first, self.next_row = sampler, images, first, 0

    def sample(self, labels, noise, **options):
        batch = from_uint8(torch.from_numpy(self.images[self.next_row : self.next_row + len(labels)]))
        self.next_row += len(labels)
        return self.sampler.sample(labels, noise, start_from=(batch, self.first), **options)


def noised_real_set(sampler, real: BenchmarkSetting, out: Path, seed: int, first: int, options: dict) -> None:
    """Every real row of every fold noised to step ``first`` and denoised by the run's model ``sampler``, as a
    setting under ``out`` (no dataset card: these are real images partly redrawn). The noise comes from seed x 10 +
    the fold's index, not from ``generate``'s per-fold seeds."""
    folds = {fold: real.labels(fold) for fold in SPLITS}
    images = {fold: synthesize(FromRealRows(sampler, real.images(fold), first), labels, seed * 10 + SPLITS.index(fold),
                               options=options) for fold, labels in folds.items()}
    write_set(out, images, folds, real, real.resolution, "diffusion from noised real rows", seed, False, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(MODELS), default="demo")
    parser.add_argument("--setting", help="the setting to train on, e.g. samples/n100 (default: the model's own)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="generation seeds")
    parser.add_argument("--spacings", nargs="+", choices=SPACINGS, default=list(SPACINGS))
    parser.add_argument("--guidance-scales", type=float, nargs="+", default=[None],
                        help="classifier-free guidance scales (default: the run's own)")
    parser.add_argument("--guidance-intervals", type=guidance_interval, nargs="+", default=[None],
                        help="noise-level intervals LOW,HIGH in which to guide (default: the run's own)")
    parser.add_argument("--from-real-steps", type=int, nargs="+", default=[], metavar="K",
                        help="also score sets of real rows noised to step K and denoised (module docstring)")
    parser.add_argument("--only-from-real", action="store_true", help="score only the --from-real-steps sets")
    parser.add_argument("--classifier", choices=list(RECIPES), default="demo", help="classifier recipe")
    parser.add_argument("--classifier-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--work", type=Path, default=Path("runs/diffusion-sampler"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-seed", type=int, default=0, help="the training run's seed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a training config key over the model's (repeatable), e.g. appearance_clusters=16")
    args = parser.parse_args()
    try:
        overrides = parse_key_values(args.overrides, "--set")
    except ConfigError as error:
        parser.error(str(error))
    if taken := sorted({"seed", "threads"} & set(overrides)):
        parser.error(f"--set {taken[0]}: use --train-seed or --threads")

    preset, setting = MODELS[args.model]
    # everything made for another setting than the model's own is kept apart
    name = args.model if args.setting in (None, setting) else f"{args.model}-{args.setting.replace('/', '-')}"
    setting = args.setting or setting
    if args.only_from_real and not args.from_real_steps:
        parser.error("--only-from-real needs --from-real-steps")
    if args.classifier == "preset" and preset is None:
        parser.error(f"--classifier preset: --model {args.model} comes from no benchmark preset")
    real_dir = prepare_setting(args.work, preset) / setting
    if not (real_dir / "setting.json").is_file():
        parser.error(f"--setting {setting}: no such setting in {real_dir.parent.parent}")
    # another training run (seed, keys) gets folders of its own; the real classifiers stay shared
    trained = name + "".join(f"-{key}{FOLDER_UNSAFE.sub('_', str(value))}" for key, value in sorted(overrides.items()))
    trained += f"-train-seed{args.train_seed}" if args.train_seed else ""
    run = args.work / f"run-{trained}"
    if not (run / "run.json").is_file():
        entry = load_preset(preset).models["diffusion"] if preset else {"config": "diffusion-cpu"}
        try:
            config = load_config(entry["config"], {**entry.get("set", {}), **overrides, "seed": args.train_seed,
                                                   "threads": args.threads}, overrides_from="--set")
            start_run(config, real_dir, run)
        except ConfigError as error:
            parser.error(str(error))
    train(run, progress=False, log=quiet)
    # loaded once for every --from-real-steps set, and only for them
    from_real_sampler = load_generator(run)[0] if args.from_real_steps else None
    steps = from_real_sampler.sample_steps if from_real_sampler else 0
    if bad := [k for k in args.from_real_steps if not 0 <= k < steps]:
        parser.error(f"--from-real-steps {bad[0]}: the run samples in {steps} steps, 0 to {steps - 1}")
    real = BenchmarkSetting(real_dir)
    print(f"real training fold: {describe(real)}", flush=True)
    inception_fd = TrainingFoldFD(real, make_extractor("inception-96"))
    in_domain_fds: dict[str, TrainingFoldFD] = {}  # per classifier recipe and seed: one real classifier each
    for seed in args.seeds:
        for spacing in args.spacings:
            starts = args.from_real_steps + ([] if args.only_from_real else [None])
            for scale, interval, from_real in itertools.product(args.guidance_scales, args.guidance_intervals, starts):
                sampler = set_name(spacing, scale, interval, from_real)
                out = args.work / trained / sampler / f"seed{seed}"
                timing = out / "sample_seconds.json"
                if not timing.is_file():
                    started = time.time()
                    options = {"sample_spacing": spacing, "guidance_scale": scale, "guidance_interval": interval}
                    if from_real is None:
                        generate(run, out / "synthetic", seed=seed, **options, export_png=False, overwrite=True,
                                 progress=False, log=quiet)
                    else:
                        noised_real_set(from_real_sampler, real, out / "synthetic", seed, from_real, options)
                    timing.write_text(json.dumps({"seconds": round(time.time() - started, 1)}))
                synthetic = BenchmarkSetting(out / "synthetic" / "setting")
                # what the set looks like and how long it took: once per set, whatever scores it
                about = (f"FD-96 {inception_fd(synthetic, out / 'fd-inception96.json'):.1f}, {describe(synthetic)}, "
                         f"sampling {json.loads(timing.read_text())['seconds']} s")
                for classifier_seed in args.classifier_seeds:
                    recipe = f"{args.classifier}-seed{classifier_seed}"
                    scores = out / "scores" / recipe
                    real_classifier = args.work / "real-classifiers" / f"{name}-{recipe}.pt"
                    if not EvalDir(scores).utility.is_file():
                        recipe_values = RECIPES[args.classifier]
                        if recipe_values is None:  # the preset's own
                            recipe_values = load_preset(preset).values["classifier"]
                        config = ClassifierConfig(**{"input_size": None, **recipe_values, "threads": args.threads,
                                                     "seed": classifier_seed})
                        result = evaluate_utility(real_dir, synthetic.path, config, scores, log=quiet,
                                                  progress=False, real_classifier_path=real_classifier)
                        if not result["real_classifier"]["reused"]:  # trained (again): the extractor held is stale
                            in_domain_fds.pop(recipe, None)
                    utility = json.loads(EvalDir(scores).utility.read_text())
                    if recipe not in in_domain_fds:
                        if not real_classifier.is_file():
                            raise SystemExit(f"{real_classifier}: the real classifier that scored {scores} is "
                                             f"missing; restore it, or delete scores/{recipe} in every set")
                        in_domain_fds[recipe] = TrainingFoldFD(
                            real, ClassifierFeatures(load_classifier(real_classifier)[0]))
                    in_domain_fd = in_domain_fds[recipe](synthetic, scores / "fd-real-classifier.json")
                    print(f"{trained} seed {seed} {sampler}, {recipe} classifier: gap "
                          f"{utility['auc_real_minus_auc_syn']:.4f}, real-on-syn "
                          f"{utility['auc_real_on_syn']['mean']:.4f}, AUC_real {utility['auc_real']['mean']:.4f}, "
                          f"in-domain FD {in_domain_fd:.1f}, " + about, flush=True)


if __name__ == "__main__":
    main()
