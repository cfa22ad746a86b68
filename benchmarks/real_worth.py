"""What is a synthetic set worth in real images? The utility classifier trained on parts of the *real* training fold
gives the yardstick that AUC_syn is read against (docs/diffusion-experiments.md, "Three training seeds", "What the gap
is worth in real images").

    python benchmarks/real_worth.py runs/ds-full/data/settings/resolution/r32
    python benchmarks/real_worth.py SETTING --synthetic RUN/evaluation/utility.json ... --out worth.csv
    python benchmarks/real_worth.py SETTING --fractions 0.5 --seeds 0 1 2 3 4 5 --set max_epochs=4

For each fraction and seed, whole groups of the training fold (the store's groups: near-duplicate groups, or
patients) are drawn at random, label combination by label combination, until each combination has at least that
share of its rows; a group whose rows carry several label combinations can be kept in one and left out in another.
The classifier (the paper's recipe unless ``--set`` changes it; the same classifier seed as the draw) trains on
them, validates on the real validation fold as usual and is tested on the real test fold. Fraction 1 is the whole
fold, so with the recipe a set was scored by it reproduces that set's AUC_real. With ``--synthetic``, the mean
AUC_syn of the given ``utility.json`` files (each made on this setting with this recipe) is placed on the curve of
mean AUC against training images by linear interpolation, when the curve rises at every step. ``--out`` is
rewritten after each run, so a stopped benchmark keeps the runs it finished.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import numpy as np

from synthmed._io import write_text_atomic
from synthmed.config import parse_key_values
from synthmed.data import BenchmarkSetting
from synthmed.errors import UserError
from synthmed.evaluation.classifier import ClassifierConfig, train_classifier
from synthmed.evaluation.utility import setting_identity
from synthmed.metrics.auroc import auroc_per_label, undefined_labels


def grouped_subset(labels: np.ndarray, groups: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A row mask: per label combination, whole groups in random order until ``fraction`` of its rows are in."""
    keep = np.zeros(len(labels), bool)
    for combination in np.unique(labels, axis=0):
        rows = np.flatnonzero((labels == combination).all(axis=1))
        wanted = round(fraction * len(rows))
        for group in rng.permutation(np.unique(groups[rows])):
            if keep[rows].sum() >= wanted:
                break
            keep[rows[groups[rows] == group]] = True
    return keep


def mean_auc_syn(paths: list[Path], real: BenchmarkSetting, recipe: ClassifierConfig) -> float:
    """The mean AUC_syn of utility.json files, each checked to be made on ``real`` with ``recipe`` (any seed)."""
    identity, values = setting_identity(real), []
    wanted = {k: v for k, v in recipe.identity().items() if k != "seed"}
    for path in paths:
        try:
            utility = json.loads(path.read_text())
            same_setting = utility["real_setting_identity"] == identity
            config = {k: v for k, v in utility["config"].items() if k not in ("seed", "device", "threads")}
            auc_syn = utility["auc_syn"]["mean"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise UserError(f"{path}: not a readable utility.json ({error})") from None
        if not same_setting:
            raise UserError(f"{path}: made on another real setting than {real.path}")
        if config != wanted:
            changed = sorted(k for k in set(config) | set(wanted) if config.get(k) != wanted.get(k))
            raise UserError(f"{path}: scored with another classifier recipe (differs in {changed}); "
                            "give the same --set values it was scored with")
        if not isinstance(auc_syn, int | float) or not np.isfinite(auc_syn):
            raise UserError(f"{path}: auc_syn mean is {auc_syn!r}, not a number")
        values.append(float(auc_syn))
    return float(np.mean(values))


def write_runs(path: Path, runs: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(runs[0]))
    writer.writeheader()
    writer.writerows(runs)
    write_text_atomic(path, text.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("setting", type=Path, help="a real benchmark setting directory")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="draw and classifier seeds")
    parser.add_argument("--set", action="append", default=[], help="classifier setting KEY=VALUE (repeatable)")
    parser.add_argument("--synthetic", type=Path, nargs="+", default=[], help="utility.json files to place")
    parser.add_argument("--out", type=Path, help="also write the runs as CSV")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if bad := [f for f in args.fractions if not 0 < f <= 1]:
        parser.error(f"--fractions {bad[0]}: a share of the training fold, above 0 and at most 1")
    if bad := [s for s in args.seeds if s < 0]:
        parser.error(f"--seeds {bad[0]}: seeds are 0 or above")
    if args.out and args.out.is_dir():
        parser.error(f"--out {args.out}: a directory; give the CSV file's path")
    fractions, seeds = sorted(set(args.fractions)), sorted(set(args.seeds))
    try:  # everything checked, and every subset drawn, before the first classifier trains
        values = parse_key_values(args.set, "--set")
        if taken := sorted({"seed", "threads"} & set(values)):
            raise UserError(f"--set {taken[0]}: given by --seeds and --threads")
        recipe = {"input_size": None, **values, "threads": args.threads}
        checked = ClassifierConfig.from_dict({**recipe, "seed": 0})
        if recipe.get("pretrained_weights") and not Path(recipe["pretrained_weights"]).is_file():
            raise UserError(f"--set pretrained_weights={recipe['pretrained_weights']}: no such file")
        real = BenchmarkSetting(args.setting)
        images, labels = real.images("train"), real.labels("train")
        groups = real.store.groups[real.rows("train")]
        val, test = (real.images("val"), real.labels("val")), (real.images("test"), real.labels("test"))
        auc_syn = mean_auc_syn(args.synthetic, real, checked) if args.synthetic else None
        if len(undefined_labels(test[1], real.label_names)) == len(real.label_names):
            raise UserError(f"{args.setting}: no label has both positives and negatives in the real test fold")
        subsets = {(f, s): grouped_subset(labels, groups, f, np.random.default_rng(s)) for f in fractions for s in seeds}
        if empty := [f for (f, _), keep in subsets.items() if not keep.any()]:
            raise UserError(f"--fractions {empty[0]}: leaves no training image")
    except UserError as error:
        parser.error(str(error))
    except (OSError, ValueError, KeyError) as error:  # a damaged setting or store (UserError is a ValueError too)
        parser.error(f"{args.setting}: cannot be read ({error})")

    runs = []
    for fraction in fractions:
        for seed in seeds:
            keep = subsets[fraction, seed]
            config = ClassifierConfig.from_dict({**recipe, "seed": seed})
            model, _ = train_classifier(images[keep], labels[keep], *val, config, log=lambda _: None, progress=False,
                                        label_names=real.label_names)
            auc = auroc_per_label(test[1], model.predict(test[0]), real.label_names)["mean"]
            runs.append({"fraction": fraction, "seed": seed, "images": int(keep.sum()),
                         "groups": len(np.unique(groups[keep])), "test_auc": auc})
            print(f"fraction {fraction}: {keep.sum()} images in {runs[-1]['groups']} groups, seed {seed}: "
                  f"AUC {auc:.4f}", flush=True)
            if args.out:
                write_runs(args.out, runs)

    sizes = [np.mean([r["images"] for r in runs if r["fraction"] == f]) for f in fractions]
    means = [np.mean([r["test_auc"] for r in runs if r["fraction"] == f]) for f in fractions]
    for fraction, size, mean in zip(fractions, sizes, means, strict=True):
        share = "the whole fold" if fraction == 1 else f"{fraction:g} of the fold"
        print(f"about {size:.0f} real images ({share}): mean AUC {mean:.4f}")
    if auc_syn is not None:
        print(f"synthetic: mean AUC_syn {auc_syn:.4f} over {len(args.synthetic)} runs (a synthetic set mirrors "
              f"the fold's {len(images)} rows)")
        if not np.all(np.diff(means) > 0):
            print("not placed: the mean AUC does not rise with the images at every step; more seeds would smooth it")
        elif not means[0] <= auc_syn <= means[-1]:
            print(f"not placed: outside the curve's {means[0]:.4f} to {means[-1]:.4f}")
        else:
            print(f"worth about {np.interp(auc_syn, means, sizes):.0f} real images")


if __name__ == "__main__":
    main()
