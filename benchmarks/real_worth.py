"""What is a synthetic set worth in real images? The utility classifier trained on parts of the *real* training fold
gives the yardstick that AUC_syn is read against (docs/diffusion.md, "Three training seeds", "What the gap is worth
in real images").

    python benchmarks/real_worth.py runs/ds-full/data/settings/resolution/r32
    python benchmarks/real_worth.py SETTING --synthetic RUN/evaluation/utility.json ... --out worth.csv
    python benchmarks/real_worth.py SETTING --fractions 0.5 --seeds 0 1 2 3 4 5 --set max_epochs=4

For each fraction and seed, whole near-duplicate groups of the training fold are drawn at random, label combination
by label combination, until each combination has that share of its rows (so no group is split, as the setting's own
folds split none). The classifier (the paper's recipe unless ``--set`` changes it; the same classifier seed as the
draw) trains on them, validates on the real validation fold as usual and is tested on the real test fold. Fraction 1
is the whole fold: AUC_real. With ``--synthetic``, the mean AUC_syn of the given ``utility.json`` files (each made
on this setting) is placed on the curve of mean AUC against training images, by linear interpolation where the
curve rises.
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
from synthmed.metrics.auroc import auroc_per_label


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


def synthetic_auc(paths: list[Path], real: BenchmarkSetting) -> float:
    """The mean AUC_syn of utility.json files, each checked to be made on ``real``."""
    identity, values = setting_identity(real), []
    for path in paths:
        try:
            utility = json.loads(path.read_text())
            same = utility["real_setting_identity"] == identity
            values.append(utility["auc_syn"]["mean"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserError(f"{path}: not a readable utility.json ({error})") from None
        if not same:
            raise UserError(f"{path}: made on another real setting than {real.path}")
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    try:  # everything checked before the first classifier trains
        real = BenchmarkSetting(args.setting)
        recipe = {"input_size": None, **parse_key_values(args.set, "--set"), "threads": args.threads}
        ClassifierConfig.from_dict({**recipe, "seed": 0})
        synthetic = synthetic_auc(args.synthetic, real) if args.synthetic else None
    except UserError as error:
        parser.error(str(error))

    images, labels = real.images("train"), real.labels("train")
    groups = real.store.groups[real.rows("train")]
    val, test = (real.images("val"), real.labels("val")), (real.images("test"), real.labels("test"))
    runs = []
    for fraction in sorted(set(args.fractions)):
        for seed in args.seeds:
            keep = grouped_subset(labels, groups, fraction, np.random.default_rng(seed))
            config = ClassifierConfig.from_dict({**recipe, "seed": seed})
            model, _ = train_classifier(images[keep], labels[keep], *val, config, log=lambda _: None, progress=False,
                                        label_names=real.label_names)
            auc = auroc_per_label(test[1], model.predict(test[0]), real.label_names)["mean"]
            runs.append({"fraction": fraction, "seed": seed, "images": int(keep.sum()),
                         "groups": len(np.unique(groups[keep])), "auc": auc})
            print(f"fraction {fraction}: {keep.sum()} images in {runs[-1]['groups']} groups, seed {seed}: "
                  f"AUC {auc:.4f}", flush=True)

    curve = sorted({r["fraction"] for r in runs})
    sizes = [np.mean([r["images"] for r in runs if r["fraction"] == f]) for f in curve]
    means = [np.mean([r["auc"] for r in runs if r["fraction"] == f]) for f in curve]
    for fraction, size, mean in zip(curve, sizes, means, strict=True):
        print(f"about {size:.0f} real images ({fraction:g} of the fold): mean AUC {mean:.4f}")
    if synthetic is not None:
        print(f"synthetic: mean AUC_syn {synthetic:.4f} over {len(args.synthetic)} runs (a synthetic set mirrors "
              f"the fold's {len(images)} rows)")
        if np.all(np.diff(means) > 0) and means[0] <= synthetic <= means[-1]:
            print(f"worth about {np.interp(synthetic, means, sizes):.0f} real images")
        else:
            print("not placed: it lies outside the curve, or the curve does not rise with the images")
    if args.out:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(runs[0]))
        writer.writeheader()
        writer.writerows(runs)
        write_text_atomic(args.out, text.getvalue())


if __name__ == "__main__":
    main()
