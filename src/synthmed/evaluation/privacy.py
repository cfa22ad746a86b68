"""Privacy of a synthetic image set: does it give away the real patients it was made from?

The paper (3.4, S.6) only looks at synthetic images beside their nearest training image in the
real-data classifier's 1024-d feature space (cosine distance). Here neighbours in that space and
in pixels (``pixel_images``: where a copy the classifier maps elsewhere is still a copy; compared under
small shifts and zooms, ``metrics.registered``, so that a shifted or cropped-and-resized copy is one) feed
calibrated tests, each with an effect, an interval and a p-value, per patient (``Groups``):

* membership inference, in pixels: training patients (members) and patients the generator never
  saw (non-members) scored by minus the distance of their closest image to the closest synthetic
  image; the AUC with DeLong's interval and its one-sided Mann-Whitney p-value against "no
  membership signal". Not in the classifier's features: the classifier was trained on the members
  and places them closer to any real-looking image (on br35h, AUC 0.58, p = 0.006, against a
  "synthetic" set of real images it never saw);
* copies, in both spaces: the synthetic images closer to a training image than the holdout's
  ``copy_quantile`` quantile (one image per holdout patient), with the exact count test against
  synthetic images that behave like unseen real ones (``stats.count_below_test``) and a
  Clopper-Pearson interval of the rate;
* a density attack (DOMIAS, van Breugel et al. 2023): synthetic density over reference density
  at each real image, with k-nearest-neighbour densities in the classifier's feature space (the
  ratio cancels the classifier's own pull towards its training images), reported beside the
  verdict, not in it.

The verdict holds membership and the copies in pixels at a stated false-alarm level ``alpha`` for
both together (Holm's correction): "fail" needs a significant test whose effect reaches its threshold
(the AUC, or the copy share above chance), "warn" a significant test below it, else "pass". The copies
in the classifier's features are reported beside the verdict, not in it (``in_verdict``): images
unlike any real one can gather near one training image in that space (on the phantom classes axis,
noisy GAN images with no copy in pixels failed there), and on br35h they found no copy that pixels
missed (docs/privacy.md).
Vectors or images in, numbers out: any (N, D) rows work in either space (pixels given as rows are compared
by cosine distance, without registration).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from scipy import stats

from synthmed._io import write_with_atomic
from synthmed.config import MAX_SEED, check_values, seed_problem
from synthmed.errors import ConfigError, DataError
from synthmed.evaluation.privacy_words import reason
from synthmed.evaluation.stats import auc_test, count_below_test, holm
from synthmed.metrics.arrays import as_matrix
from synthmed.metrics.knn import nearest_neighbours
from synthmed.metrics.registered import registered_nearest, registrations

DEFAULT_OPTIONS: dict[str, Any] = {
    "alpha": 0.05,  # the verdict's false-alarm level: chance that a generator which leaks nothing is not "pass"
    # a copy is closer to a training image than all but this share of unseen real images. Small, so that a
    # few copies stand out: with as many holdout as synthetic images, c copies alone give p = 2^-c at best
    # below the closest unseen image, and less the more natural neighbours share the count with them
    "copy_quantile": 0.005,
    "mia_auc_threshold": 0.55,  # "fail" needs a significant membership AUC at least this high ...
    "copy_excess_threshold": 0.005,  # ... or a significant copy share this far above chance
    "seed": 0,  # picks the copy test's holdout image per patient and the density attack's reference half
    # pixel space: each query compared with each reference at every whole-pixel shift up to this share of
    # the side (3 px at 32) and at zooms 1 / max_scale, 1 and max_scale (metrics.registered), so that a
    # shifted or cropped-and-resized copy is as close to its source as a noisy one
    "max_shift": 0.1,
    "max_scale": 1.15,
}
PIXEL_SIDE = 32  # pixel space: images box-averaged down to at most this side (bounded cost, copies survive)
# each compared overlap smoothed by a Gaussian of this standard deviation (in those pixels), so that pixel
# noise does not hide a copy: on br35h at 32 px a training image plus noise of 6 grey levels beat every unseen
# patient's closest training image in 87 % of draws unsmoothed and in 99 % smoothed (docs/privacy.md)
PIXEL_BLUR = 0.7
DENSITY_K = 5  # neighbours behind each k-NN density estimate of the density attack
CLOSEST = 8  # closest synthetic-training pairs kept per space (for the figure)
FEATURES_SPACE = "the real classifier's features, cosine distance"


class Sets(NamedTuple):
    """The three image sets in one space, one (N, D) row per image."""

    train: np.ndarray
    holdout: np.ndarray
    synthetic: np.ndarray


class Groups(NamedTuple):
    """The patient (or other group of alike images) of each training and holdout image; any labels."""

    train: np.ndarray
    holdout: np.ndarray


_GAP = 2  # white pixels between the tiles of nn_grid


OPTION_TYPES = {"alpha": float, "copy_quantile": float, "mia_auc_threshold": float, "copy_excess_threshold": float,
                "seed": int, "max_shift": float, "max_scale": float}
# option: (its valid values, those values in words, what the option is)
_RANGES = {
    "alpha": (lambda v: 0 < v <= 0.5, "in (0, 0.5]", "the verdict's false-alarm level"),
    "copy_quantile": (lambda v: 0 < v < 1, "in (0, 1)", "the holdout distance quantile that makes a copy"),
    "mia_auc_threshold": (lambda v: 0.5 <= v <= 1, "in [0.5, 1]", "the membership AUC that counts as leakage"),
    "copy_excess_threshold": (lambda v: 0 <= v <= 1, "in [0, 1]", "the copy share above chance that counts as leakage"),
    "max_shift": (lambda v: 0 <= v <= 0.25, "in [0, 0.25]", "the largest shift tried in pixels, a share of the side"),
    "max_scale": (lambda v: 1 <= v <= 1.5, "in [1, 1.5]", "the largest zoom tried in pixels"),
    "seed": (lambda v: seed_problem(v) is None, f"in [0, {MAX_SEED}]",
             "the seed that picks the copy test's image per unseen patient and the density attack's halves"),
}


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``DEFAULT_OPTIONS`` with ``options`` laid over them; an unknown or impossible one is a ConfigError."""
    check_values(options, OPTION_TYPES, "privacy")
    o = {**DEFAULT_OPTIONS, **options}
    for name, (valid, words, what) in _RANGES.items():
        if not valid(o[name]):
            raise ConfigError(f"{name} = {o[name]!r} must be a number {words}: {what}", file="privacy")
    return o


def pixel_images(images: np.ndarray, side: int = PIXEL_SIDE, batch: int = 1024) -> np.ndarray:
    """uint8 (N, C, R, R) images as float32 (N, C, r, r) images in [0, 1] for the pixel space,
    box-averaged by the largest whole factor that leaves at least ``side`` pixels (bounded cost; copies
    survive it). Compared by 1 - Pearson correlation (blind to a change of brightness or contrast),
    registered and smoothed by ``PIXEL_BLUR`` pixels (``metrics.registered``)."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
    n, c, h, w = images.shape
    f = max(1, min(h, w) // side)
    h, w = h // f * f, w // f * f  # a size the factor does not divide loses its last rows/columns
    out = np.empty((n, c, h // f, w // f), np.float32)
    for start in range(0, n, batch):
        x = np.asarray(images[start:start + batch, :, :h, :w], dtype=np.float32) / 255
        out[start:start + batch] = x.reshape(len(x), c, h // f, f, w // f, f).mean(axis=(3, 5))
    return out


def nearest_in_space(queries: np.ndarray, references: np.ndarray, o: Mapping[str, Any],
                     progress: bool = False, step: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Each query's closest reference, ``(distances (Q,), indices (Q,))``: images (N, C, H, W) by the
    registered, smoothed 1 - Pearson r (``progress``: a bar named after the audit ``step``, as the search takes
    minutes), rows (N, D) by cosine distance."""
    if queries.ndim == 4:
        return registered_nearest(queries, references, o["max_shift"], o["max_scale"], PIXEL_BLUR,
                                  progress=progress, step=step)
    d, i = nearest_neighbours(queries, references)
    return d[:, 0], i[:, 0]


def _space_words(sets: Sets, o: Mapping[str, Any]) -> str:
    """The pixel space in words, with the registrations it tried at this image size."""
    if sets.train.ndim == 2:
        return "pixels as the rows given, cosine distance"
    tried = registrations(sets.train.shape[2:], o["max_shift"], o["max_scale"])
    zooms = sorted({r.zoom for r in tried})
    return (f"pixels averaged down to at most {PIXEL_SIDE}x{PIXEL_SIDE} (here {min(sets.train.shape[2:])}), "
            f"1 - Pearson correlation on the overlap smoothed by a Gaussian of {PIXEL_BLUR} px, the smallest "
            f"over shifts of up to "
            f"{max(r.shift[0] for r in tried)} px" + (f" and zooms {zooms[0]:.3g} to {zooms[-1]:.3g}" if len(zooms) > 1 else ""))


def _summary(d: np.ndarray) -> dict[str, float]:
    return {"median": float(np.median(d)), "p01": float(np.percentile(d, 1)), "p05": float(np.percentile(d, 5)),
            "n": int(len(d))}


def _codes(labels: np.ndarray) -> np.ndarray:
    """Group labels as 0..G-1."""
    return np.unique(np.asarray(labels), return_inverse=True)[1].reshape(-1)


def _per_group(values: np.ndarray, codes: np.ndarray, reduce: np.ufunc) -> np.ndarray:
    """``reduce`` (np.minimum or np.maximum) of ``values`` over each group's images, one value per group."""
    out = np.full(codes.max() + 1, np.inf if reduce is np.minimum else -np.inf)
    reduce.at(out, codes, values)
    return out


def _membership(sets: Sets, groups: Groups, confidence: float, o: Mapping[str, Any],
                progress: bool) -> dict[str, Any]:
    """Distance-to-closest-record attack, per patient: the closer a patient's closest image is to a
    synthetic one, the likelier the patient is a member."""
    d = nearest_in_space(np.concatenate([sets.train, sets.holdout]), sets.synthetic, o, progress, "membership")[0]
    members = _per_group(d[: len(sets.train)], groups.train, np.minimum)
    others = _per_group(d[len(sets.train):], groups.holdout, np.minimum)
    result = auc_test(-members, -others, confidence)
    return {"attack": "distance to the closest synthetic image", "space": "pixels",
            "test": "Mann-Whitney U, one-sided", "auc": result["auc"], "interval": result["interval"],
            "p_value": result["p_value"], "n_members": len(members), "n_nonmembers": len(others)}


def _copies(sets: Sets, picks: np.ndarray, confidence: float, o: Mapping[str, Any],
            progress: bool) -> tuple[dict, dict]:
    """The copy test of one space against one holdout image per patient (``picks``), and the distance
    summary with the closest pairs behind it."""
    syn_d, syn_i = nearest_in_space(sets.synthetic, sets.train, o, progress, "copies, synthetic")
    hold_d = nearest_in_space(sets.holdout[picks], sets.train, o, progress, "copies, unseen")[0]
    quantile = o["copy_quantile"]
    k = max(1, math.floor(quantile * len(hold_d)))
    result = count_below_test(syn_d, hold_d, k)
    rate = result["count"] / result["n"]
    interval = stats.binomtest(result["count"], result["n"]).proportion_ci(confidence, method="exact")
    test = {"test": "exact count test (hypergeometric), one-sided", "count": result["count"],
            "n_synthetic": result["n"], "rate": rate, "interval": [interval.low, interval.high],
            "chance_rate": result["chance"], "excess": rate - result["chance"], "quantile": quantile, "k": k,
            "n_holdout": len(hold_d), "distance_threshold": result["threshold"], "p_value": result["p_value"]}
    closest = np.argsort(syn_d, kind="stable")[:CLOSEST]
    hold_median = float(np.median(hold_d))
    dcr = {"synthetic": _summary(syn_d), "holdout": _summary(hold_d),
           # None rather than inf: the holdout itself contains training duplicates then
           "median_ratio": float(np.median(syn_d)) / hold_median if hold_median > 0 else None,
           "closest": [{"synthetic": int(i), "train": int(syn_i[i]), "distance": float(syn_d[i])} for i in closest]}
    return test, dcr


def _density(sets: Sets, groups: Groups, unseen: np.ndarray, reference: np.ndarray,
             confidence: float) -> dict[str, Any]:
    """DOMIAS with k-NN densities: p(x) ~ 1 / r_k(x)^D, so p_synthetic / p_reference ranks as
    r_k(reference) / r_k(synthetic), per patient its highest image. The reference (real images of
    neither group) removes what plain closeness rewards: a member in a crowded part of the data is
    near synthetic images anyway."""
    queries = np.concatenate([sets.train, sets.holdout[unseen]])
    k = min(DENSITY_K, len(reference), len(sets.synthetic))
    r_syn = nearest_neighbours(queries, sets.synthetic, k=k)[0][:, -1]
    r_ref = nearest_neighbours(queries, sets.holdout[reference], k=k)[0][:, -1]
    score = np.log(np.maximum(r_ref, 1e-12)) - np.log(np.maximum(r_syn, 1e-12))
    members = _per_group(score[: len(sets.train)], groups.train, np.maximum)
    others = _per_group(score[len(sets.train):], _codes(groups.holdout[unseen]), np.maximum)
    result = auc_test(members, others, confidence)
    return {"attack": "DOMIAS-style density ratio (k-nearest-neighbour densities)", "space": "features",
            "test": "Mann-Whitney U, one-sided", "k": k, "auc": result["auc"], "interval": result["interval"],
            "p_value": result["p_value"], "n_members": len(members), "n_nonmembers": len(others),
            "n_reference": len(np.unique(groups.holdout[reference])), "in_verdict": False}


def _halves(rng: np.random.Generator, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of two halves of the holdout, whole groups in one half (a patient's near-identical
    images split across the halves would make the reference look like the non-members' own data)."""
    order = rng.permutation(codes.max() + 1)
    sizes = np.bincount(codes)[order]
    chosen = order[np.cumsum(sizes) - sizes / 2 < len(codes) / 2]  # groups by their midpoints
    if min(len(chosen), len(order) - len(chosen)) < 2:
        raise DataError(f"too small for the privacy audit: the holdout's {len(codes)} images in {len(order)} "
                        "patients cannot be split into two halves of at least 2 patients")
    first = np.isin(codes, chosen)
    return np.flatnonzero(first), np.flatnonzero(~first)


def _one_per_group(rng: np.random.Generator, codes: np.ndarray) -> np.ndarray:
    """A random image of each group, in group order."""
    order = rng.permutation(len(codes))
    return order[np.unique(codes[order], return_index=True)[1]]


def _checked(features: Sets, pixels: Sets, groups: Groups | None) -> tuple[dict[str, Sets], Groups]:
    """Both spaces as float arrays (pixels as images when given as images) and the groups as codes."""
    images = all(np.ndim(x) == 4 for x in pixels)
    spaces = {"features": Sets(*(as_matrix(f"features.{part}", x) for part, x in zip(Sets._fields, features))),
              "pixels": Sets(*(np.asarray(x, np.float32) if images else as_matrix(f"pixels.{part}", x)
                               for part, x in zip(Sets._fields, pixels)))}
    sizes = [len(x) for x in spaces["features"]]
    for name, sets in spaces.items():
        if [len(x) for x in sets] != sizes:
            raise ValueError(f"{name} has {[len(x) for x in sets]} images per set, features {sizes}")
    groups = groups or Groups(np.arange(sizes[0]), np.arange(sizes[1]))
    for part, labels, size in zip(Groups._fields, groups, sizes):
        if len(labels) != size:
            raise ValueError(f"groups.{part} has {len(labels)} entries for {size} images")
    codes = Groups(_codes(groups.train), _codes(groups.holdout))
    if codes.train.max() < 1 or codes.holdout.max() < 3:
        raise DataError(f"too small for the privacy audit: it needs at least 2 training and 4 holdout (val + test) "
                        f"patients, the setting has {codes.train.max() + 1} and {codes.holdout.max() + 1}")
    return spaces, codes


def _verdict(tests: dict[str, dict[str, Any]], alpha: float) -> tuple[str, str]:
    """Holm over the tests ``in_verdict``; "fail" if a significant one reaches its effect threshold, "warn"
    if one is significant below it, else "pass"; and the test that decided (the smallest adjusted p among
    those). The tests beside the verdict keep their own p-value (``p_adjusted`` and ``significant`` None)."""
    decisive = {k: t for k, t in tests.items() if t["in_verdict"]}
    for test in tests.values():
        test["effect_reached"] = bool(test[test["effect"]] >= test["effect_threshold"])
        test["p_adjusted"] = test["significant"] = None
    for test, adjusted in zip(decisive.values(), holm([t["p_value"] for t in decisive.values()])):
        test["p_adjusted"] = float(adjusted)
        test["significant"] = bool(adjusted <= alpha)
    failing = [k for k, t in decisive.items() if t["significant"] and t["effect_reached"]]
    significant = [k for k, t in decisive.items() if t["significant"]]
    verdict = "fail" if failing else "warn" if significant else "pass"
    return verdict, min(failing or significant or list(decisive), key=lambda k: tests[k]["p_adjusted"])


def privacy_report(features: Sets, pixels: Sets, groups: Groups | None = None, *, progress: bool = False,
                   **options: Any) -> dict[str, Any]:
    """The audit of one synthetic set (JSON-ready); ``options`` are those of ``DEFAULT_OPTIONS``; ``progress``:
    bars for the registered pixel searches, which take most of its time.

    ``features`` are (N, D) rows; ``pixels`` are ``pixel_images`` (N, C, H, W), compared registered, or
    (N, D) rows, compared by cosine distance as they are.
    Members are the training patients, non-members the holdout patients: ``groups`` says which
    images are one patient's (default: every image its own), because a patient's images are alike
    and counting them as independent would overstate the evidence. Membership scores are per patient;
    the copy test compares every synthetic image with one seeded image per holdout patient; the
    density attack splits the holdout patients in two seeded halves, a reference and its
    non-members. Returns ``tests`` (membership, then copies per space, each with ``in_verdict``,
    ``p_adjusted``, ``significant`` and whether its ``effect`` reaches its ``effect_threshold``), ``density_attack``,
    ``dcr`` per space (distances to the closest training image, the closest pairs), ``verdict``,
    ``decided_by`` and ``reason``.
    """
    o = check_options(options)
    spaces, codes = _checked(features, pixels, groups)
    f, confidence = spaces["features"], 1.0 - o["alpha"]
    rng = np.random.default_rng(o["seed"])
    reference, unseen = _halves(rng, codes.holdout)
    picks = _one_per_group(rng, codes.holdout)
    tests = {"membership": {**_membership(spaces["pixels"], codes, confidence, o, progress), "effect": "auc",
                            "effect_threshold": o["mia_auc_threshold"], "in_verdict": True}}
    dcr = {}
    for name, sets in spaces.items():
        test, dcr[name] = _copies(sets, picks, confidence, o, progress)
        tests[f"copies/{name}"] = {"space": name, **test, "effect": "excess",
                                   "effect_threshold": o["copy_excess_threshold"], "in_verdict": name == "pixels"}
    verdict, decided_by = _verdict(tests, o["alpha"])
    report = {"options": o, "confidence": confidence, "spaces": {"features": FEATURES_SPACE,
                                                              "pixels": _space_words(spaces["pixels"], o)},
              "tests": tests, "density_attack": _density(f, codes, unseen, reference, confidence), "dcr": dcr,
              "verdict": verdict, "decided_by": decided_by}
    return {**report, "reason": reason(report)}


def _tile(image: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> (H, W) or (H, W, 3) for Pillow."""
    if image.shape[0] == 1:
        return image[0]
    if image.shape[0] == 3:
        return np.moveaxis(image, 0, -1)
    raise ValueError(f"images need 1 or 3 channels, got {image.shape[0]}")


def nn_grid(
    synthetic_images: np.ndarray,
    train_images: np.ndarray,
    indices: np.ndarray,
    path: str | os.PathLike,
    n: int = 8,
) -> None:
    """PNG of the first ``n`` synthetic images (top row) over their nearest real image (bottom).

    ``indices`` are the nearest-training indices from ``metrics.knn.nearest_neighbours`` ((N,) or (N, k);
    the first column is used). Order the synthetics beforehand to choose which are shown,
    e.g. by ascending DCR to inspect the likeliest copies. Tiles are separated by a white gap
    of 2 pixels; the file is written atomically.
    """
    synthetic_images = np.asarray(synthetic_images)
    if synthetic_images.dtype != np.uint8 or synthetic_images.ndim != 4:
        raise ValueError("synthetic_images must be uint8 (N, C, H, W)")
    nearest = np.asarray(indices).reshape(len(synthetic_images), -1)[:, 0]
    n = min(n, len(synthetic_images))
    c, h, w = synthetic_images.shape[1:]
    canvas = np.full((2 * h + _GAP, n * w + (n - 1) * _GAP, *(() if c == 1 else (3,))), 255, np.uint8)
    for j in range(n):
        x = j * (w + _GAP)
        canvas[:h, x : x + w] = _tile(synthetic_images[j])
        canvas[h + _GAP :, x : x + w] = _tile(np.asarray(train_images[nearest[j]], dtype=np.uint8))
    write_with_atomic(path, lambda tmp: Image.fromarray(canvas).save(tmp, format="PNG"), suffix=".png")
