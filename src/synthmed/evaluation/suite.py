"""Fidelity, privacy and attribution of a synthetic set against its real setting, written as JSON + figures.

Fidelity and privacy read the real-data classifier that ``evaluate utility`` saved
(``eval_dir.REAL_CLASSIFIER``): its 1024-d pooled features give the in-domain Fréchet distance and
the nearest-neighbour space of the paper (S.6). Fidelity compares the synthetic train fold with
the real train fold; privacy compares every synthetic image with the real train fold (members)
and the real val and test folds (unseen by the generator: non-members).
Attribution (S.7) reads both classifiers and compares their occlusion maps on real test images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from synthmed._io import write_json_atomic
from synthmed.data.records import SPLITS
from synthmed.data.settings import BenchmarkSetting
from synthmed.errors import ConfigError, DataError
from synthmed.evaluation.classifier import Classifier, check_fits, load_classifier
from synthmed.evaluation.eval_dir import REAL_CLASSIFIER, SYNTHETIC_CLASSIFIER, EvalDir
from synthmed.evaluation.fidelity import MIN_IMAGES, FeatureCache, evaluate_fidelity
from synthmed.evaluation.importance import (
    POINTING_TOLERANCE,
    classifier_maps,
    importance_figure,
    lesion_scores,
    lesion_union,
    map_similarity,
    mask_positions,
    resize_mask,
    spread_sample,
    summary,
)
from synthmed.evaluation.privacy import Groups, Sets, check_options, nn_grid, pixel_images, privacy_report
from synthmed.evaluation.privacy_words import describe
from synthmed.evaluation.stats import SPREAD
from synthmed.evaluation.utility import pair_identity, setting_identity
from synthmed.metrics.density_coverage import DC_K
from synthmed.metrics.extractors import ClassifierFeatures, check_extractor_name, extract_features, make_extractor


def _pair(real_setting_dir, synthetic_setting_dir) -> tuple[BenchmarkSetting, BenchmarkSetting]:
    return BenchmarkSetting(real_setting_dir), BenchmarkSetting(synthetic_setting_dir)


def _draw(images: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """The first ``n`` rows of a seeded permutation, kept in their order; all of ``images`` where there are no more."""
    return images if len(images) <= n else images[np.sort(rng.permutation(len(images))[:n])]


def _real_key(real: BenchmarkSetting, images: str) -> str:
    """The feature cache's key of some of a real setting's images: its store's content, its rows, and which."""
    identity = setting_identity(real)
    return f"{identity['store_content_hash']}:{identity['rows_sha256']}:{images}"


def evaluate_fidelity_run(real_setting_dir: str | os.PathLike, synthetic_setting_dir: str | os.PathLike,
                          classifier_path: str | os.PathLike, out_dir: str | os.PathLike,
                          extractors: tuple[str, ...] = ("inception",), max_images: int | None = None,
                          log: Callable[[str], None] = print, cache_dir: str | os.PathLike | None = None,
                          progress: bool = False) -> dict[str, Any]:
    """FD/KID/PRDC on each named extractor plus the in-domain classifier features (``progress``: a bar per
    feature extraction).

    Real features are cached in ``cache_dir`` (default ``out_dir/feature_cache``): point
    several runs of one setting at one folder and the real set is read once.
    """
    out = EvalDir.for_writing(out_dir)
    check_fidelity_options(extractors, max_images)
    real, synthetic = _pair(real_setting_dir, synthetic_setting_dir)
    real_images, fake_images = real.images("train"), synthetic.images("train")
    for setting, images in ((real, real_images), (synthetic, fake_images)):
        if len(images) < MIN_IMAGES:
            raise DataError(f"its train fold has {len(images)} images; fidelity needs at least {MIN_IMAGES}",
                            file=setting.path)
    in_domain = ClassifierFeatures(_load(classifier_path, real))  # a misfit before Inception's weights load
    chosen = {name: make_extractor(name, channels=real_images.shape[1]) for name in extractors}
    chosen["in-domain"] = in_domain
    rng = np.random.default_rng(0)
    if max_images is not None:  # so that a CPU run fits its time
        real_images = _draw(real_images, max_images, rng)
    # at most as many synthetic images as real ones: recall, coverage and FD move with the number of images, and a
    # set of K images per real row (generate --images-per-row) has K times the real count
    fake_images = _draw(fake_images, len(real_images), rng)
    log(f"fidelity on {len(real_images)} real and {len(fake_images)} synthetic training images: {list(chosen)}")
    cache = FeatureCache(cache_dir or out.feature_cache)
    metrics = evaluate_fidelity(real_images, fake_images, chosen, cache=cache,
                                real_key=_real_key(real, "train" if max_images is None else f"train:{max_images}"),
                                kid_subset_size=min(1000, len(real_images), len(fake_images)), progress=progress)
    result = {"real_setting": str(real.path), "synthetic_setting": str(synthetic.path),
              **pair_identity(real, synthetic), "metrics": metrics}
    write_json_atomic(out.fidelity, result)
    for name, row in metrics.items():
        log(f"{row['extractor']}: FD {row['fd']:.2f}, KID {row['kid_mean']:.4f}, precision {row['precision']:.3f}, "
            f"recall {row['recall']:.3f}, density {row['density']:.3f}, coverage {row['coverage']:.3f}")
    return result


def check_fidelity_options(extractors: tuple[str, ...], max_images: int | None) -> None:
    """What ``evaluate_fidelity_run`` refuses in its options, checkable before anything runs (``evaluate all``)."""
    if max_images is not None and max_images < MIN_IMAGES:
        raise ConfigError(f"max_images = {max_images} must be at least {MIN_IMAGES} (density/coverage compare "
                          f"each image with its {DC_K} nearest neighbours)")
    for name in extractors:
        check_extractor_name(name)


def _check_image_count(n_images: int) -> None:
    if n_images < 1:
        raise ConfigError(f"n_images = {n_images}: explain at least 1 real test image")


def check_importance_options(n_images: int, patch: int, stride: int, input_size: int) -> None:
    """What ``evaluate_importance_run`` refuses in its options, for classifiers that see ``input_size`` px."""
    _check_image_count(n_images)
    mask_positions(input_size, patch, stride)


def evaluate_privacy_run(real_setting_dir: str | os.PathLike, synthetic_setting_dir: str | os.PathLike,
                         classifier_path: str | os.PathLike, out_dir: str | os.PathLike,
                         log: Callable[[str], None] = print, cache_dir: str | os.PathLike | None = None,
                         progress: bool = False, **options: Any) -> dict[str, Any]:
    """The privacy audit (``evaluation/privacy.py``; ``options`` as ``privacy.DEFAULT_OPTIONS``; ``progress``:
    bars for the feature extractions and the pixel searches).

    Members are the patients of the real train fold, the generator's training data; non-members
    those of the real val and test folds, which it never saw (patients: the store's groups); the
    synthetic set is every synthetic image, all folds. Spaces: the real classifier's features and
    pixels. Writes ``privacy.json`` (the report, both settings' identities) and per space a grid of
    the closest synthetic-training pairs. The real images' features are cached as fidelity's are.
    """
    out = EvalDir.for_writing(out_dir)
    options = check_options(options)  # before the features, not after them
    real, synthetic = _pair(real_setting_dir, synthetic_setting_dir)
    features = ClassifierFeatures(_load(classifier_path, real))
    train_images = real.images("train")
    holdout_images = np.concatenate([real.images("val"), real.images("test")])
    synthetic_images = np.concatenate([synthetic.images(fold) for fold in SPLITS])
    log(f"privacy audit: {len(train_images)} training, {len(holdout_images)} unseen real and "
        f"{len(synthetic_images)} synthetic images")
    cache = FeatureCache(cache_dir or out.feature_cache)  # "train": fidelity's key too, without max_images
    spaces = {"features": Sets(cache.features(_real_key(real, "train"), features, train_images, progress),
                               cache.features(_real_key(real, "val+test"), features, holdout_images, progress),
                               extract_features(features, synthetic_images, progress)),
              "pixels": Sets(*(pixel_images(x) for x in (train_images, holdout_images, synthetic_images)))}
    patients = real.store.groups  # the store's groups: patient ids, or near-duplicate groups where there are none
    groups = Groups(patients[real.rows("train")], patients[np.concatenate([real.rows("val"), real.rows("test")])])
    report = privacy_report(spaces["features"], spaces["pixels"], groups, progress=progress, **options)
    figures = {}
    for space, distances in report["dcr"].items():
        figures[space] = out.nn_grid(space).name
        pairs = distances["closest"]  # the likeliest copies first
        nn_grid(synthetic_images[[p["synthetic"] for p in pairs]], train_images, np.array([p["train"] for p in pairs]),
                out.nn_grid(space))
    result = {"real_setting": str(real.path), "synthetic_setting": str(synthetic.path),
              **pair_identity(real, synthetic), "feature_space": features.name, **report, "figures": figures}
    write_json_atomic(out.privacy, result)
    for line in describe(report):
        log(line)
    return result


def evaluate_importance_run(real_setting_dir: str | os.PathLike, real_classifier_path: str | os.PathLike,
                            synthetic_classifier_path: str | os.PathLike, out_dir: str | os.PathLike,
                            n_images: int = 8, patch: int = 2, stride: int = 2, seed: int = 0,
                            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Occlusion maps of the real- and the synthetic-data classifier on real test images, and their similarity.

    The images are a seeded sample of the real test fold, taken in turn from each label
    combination. Writes ``importance.json`` (per image: test-fold row, active labels, Pearson,
    SSIM; mean/std of both) and ``importance.png`` (image, real-model map, synthetic-model map).
    Where the store keeps lesion masks (phantoms), each map is also scored against the truth
    (``importance.lesion_scores``: in-mask share, pointing game, per image, over images and per
    label, under ``lesion_masks``) and the figure outlines the lesions; other stores' output is as before.
    """
    _check_image_count(n_images)  # before the classifiers load; the patch needs their input size
    out = EvalDir.for_writing(out_dir)
    real = BenchmarkSetting(real_setting_dir)
    paths = {"real": real_classifier_path, "synthetic": synthetic_classifier_path}
    models = {role: _load(path, real) for role, path in paths.items()}
    sizes = {role: model.config.input_size for role, model in models.items()}
    if sizes["real"] != sizes["synthetic"]:
        raise DataError(f"sees inputs of size {sizes['synthetic']}, the real classifier {sizes['real']} "
                        f"({real_classifier_path}): their maps cannot be compared", file=synthetic_classifier_path)
    check_importance_options(n_images, patch, stride, sizes["real"] or real.resolution)
    labels = real.labels("test")
    if len(labels) == 0:
        raise DataError("its test fold is empty: no image to explain", file=real.path)
    rows = spread_sample(labels, n_images, seed)
    images = real.images("test")[rows]
    active = [[name for name, on in zip(real.label_names, labels[row]) if on] for row in rows]
    log(f"occlusion maps of {len(rows)} real test images, patch {patch}, stride {stride}, input size "
        f"{sizes['real'] or 'native'}")
    maps: dict[str, list[np.ndarray]] = {"real": [], "synthetic": []}
    scores = []
    for i, row in enumerate(rows):  # one image at a time, so that a long run shows its progress
        for role, model in models.items():
            maps[role].append(classifier_maps(model, images[i:i + 1], labels[row:row + 1], patch, stride)[0])
        scores.append(map_similarity(maps["real"][-1], maps["synthetic"][-1]))
        log(f"image {i + 1}/{len(rows)} (test row {row}, {', '.join(active[i]) or 'no label'}): "
            f"Pearson {format_number(scores[-1]['pearson'])}, SSIM {format_number(scores[-1]['ssim'])}")
    lesions = _lesions(real, rows, labels[rows], maps) if real.store.has_masks else None
    importance_figure(images, maps["real"], maps["synthetic"], [", ".join(names) or "no label" for names in active],
                      out.importance_figure, scores, lesions=lesions.outlines if lesions else None,
                      lesion_scores=lesions.per_image if lesions else None)
    result = {
        "real_setting": str(real.path), "real_classifier": str(real_classifier_path),
        "synthetic_classifier": str(synthetic_classifier_path), "input_size": sizes["real"],
        "map_size": list(maps["real"][0].shape), "patch": patch, "stride": stride, "seed": seed,
        "mask": "zero in the classifier's normalised input", "loss": "BCE with logits summed over labels, true labels",
        "images": [{"test_row": int(row), "labels": names, **score} for row, names, score in zip(rows, active, scores)],
        "pearson": summary([score["pearson"] for score in scores]),
        "ssim": summary([score["ssim"] for score in scores]), "figure": out.importance_figure.name,
    }
    if lesions is not None:  # stores without lesion masks: importance.json as before
        for image, entry in zip(result["images"], lesions.per_image):
            image["lesion_masks"] = entry
        result["lesion_masks"] = {
            "mask_resolution": real.resolution, "pointing_tolerance_px": POINTING_TOLERANCE,
            "resize": "a map pixel is in the mask when any part of it overlaps a lesion pixel",
            "mask_per_image": "union of the masks of the image's labels (the setting's columns)", **lesions.summaries}
    write_json_atomic(out.importance, result)
    log(f"attribution maps real vs synthetic classifier: Pearson {_mean_std(result['pearson'])}, "
        f"SSIM {_mean_std(result['ssim'])}")
    if lesions is not None:
        scored = lesions.summaries["images"]
        log(f"attribution inside the lesion masks ({scored['area_share']['n_defined']} images with a lesion, which "
            f"cover {_mean_std(scored['area_share'])} of the image): " + "; ".join(
                f"{role}-data classifier {_mean_std(scored[role]['in_mask_share'])}, peak inside in "
                f"{scored[role]['pointing']['hits']}/{scored[role]['pointing']['n_defined']}" for role in models))
    return result


@dataclass
class _Lesions:
    """The maps scored against the lesion masks (``importance.lesion_scores``), and per image the outline of its
    lesions at the maps' size for the figure (None where it has none)."""

    per_image: list[dict[str, Any]]
    summaries: dict[str, Any]
    outlines: list[np.ndarray | None]


def _lesions(real: BenchmarkSetting, rows: np.ndarray, labels: np.ndarray, maps: dict[str, list[np.ndarray]]) -> _Lesions:
    """Scores of the maps of the test images at ``rows`` (labels as the setting's) against their lesion masks."""
    masks = real.store.masks(real.resolution, real.rows("test")[rows])[:, real.meta["label_columns"]]
    per_image, summaries = lesion_scores(maps, masks, labels, real.label_names)
    outlines = [resize_mask(union, maps["real"][0].shape) for union in lesion_union(masks, labels)]
    return _Lesions(per_image, summaries, [outline if outline.any() else None for outline in outlines])


def _load(path: str | os.PathLike, real: BenchmarkSetting) -> Classifier:
    """A saved classifier that fits the real setting's images; a missing or misfitting file is the user's error,
    named."""
    if not Path(path).is_file():
        raise DataError(f"no classifier file here (`synthmed evaluate utility` writes {REAL_CLASSIFIER} and "
                        f"{SYNTHETIC_CLASSIFIER})", file=path)
    classifier = load_classifier(path)[0]
    check_fits(classifier, path, real.label_names, real.store.manifest["channels"], real.resolution)
    return classifier


def format_number(value: float | None) -> str:
    """A metric for a card or log line: 3 decimals, or "undefined"."""
    return "undefined" if value is None else f"{value:.3f}"


def _mean_std(stats: dict[str, Any]) -> str:
    return "undefined" if stats["mean"] is None else f"{stats['mean']:.3f} ± {stats['std']:.3f} ({SPREAD})"
