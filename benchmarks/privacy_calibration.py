"""Calibration of the privacy audit: how often it cries wolf, how often it catches planted copies,
and whether it fails a generator that memorised its training images. One run:

    python benchmarks/privacy_calibration.py                    # about 45 minutes on 2 cores, from nothing
    python benchmarks/privacy_calibration.py --reps 40 --power-reps 20 --memorise-images 4000   # a quick look

1. Simulated features (not images): training, holdout and synthetic sets of n independent draws
   from one distribution, n = 100, 300, 1,000, 3,000, ``--reps`` repetitions each: no leakage,
   so every verdict but "pass" is a false alarm. Then, at n = 300 and 1,000, 0.5 / 1 / 2 / 5 % of
   the synthetic set replaced by training rows plus 5 % noise (copies plain to see in both
   spaces), ``--power-reps`` each: the power of the tests once the copies are visible. "Features"
   are a two-class mixture (ReLU of Gaussians, 64-d), "pixels" 64-d Gaussians; the tests only
   assume exchangeable sets, so any distribution does.
2. Real features: br35h at 32 px (prepared under ``--work``) in the real classifier's features
   (DenseNet-121 trained on the ``resolution/r32`` train fold) and in pixels (registered, with the
   audit's default shifts and zooms; computed once for all images and copies, ``PixelTable``). Each repetition deals
   the patients (the store's groups of alike images, merged where two images are visually the same)
   out into a training set and a holdout of n patients each, and a clean "synthetic" set of one
   image from each of n further patients (real images: an ideal generator); then 0 / 0.5 / 1 / 2
   / 5 % of the synthetic set are replaced by near-copies of training images: Gaussian noise
   (sigma 6 grey levels), a shift by 2 pixels along each axis, a 28-pixel crop resized to 32, or
   a contrast change (x 1.3 about the mean), one kind per source image. Reported: the verdicts
   and, per kind and space, the share of planted copies below the copy threshold.
3. A real memorisation case: the diffusion model (``diffusion-cpu``) trained for
   ``--memorise-images`` images on a tiny setting of 10 training images per label combination (20
   in all: 1,000 epochs by default) with the samples axis' holdout, its synthetic set audited by
   ``evaluate privacy`` and offered to ``synthmed release``, which must refuse it.

Writes ``WORK/privacy_calibration.json`` and prints the tables for docs/privacy.md. Every random
choice is seeded; the trained pieces (store, classifier, memorising run) are kept and reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sample_efficiency import prepare_data  # the br35h store and settings under WORK/data
from scipy import stats
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from synthmed.data import BenchmarkSetting, build_settings
from synthmed.evaluation import privacy
from synthmed.evaluation.classifier import ClassifierConfig
from synthmed.evaluation.privacy import DEFAULT_OPTIONS, PIXEL_BLUR, Groups, Sets, pixel_images, privacy_report
from synthmed.evaluation.suite import evaluate_privacy_run
from synthmed.evaluation.utility import real_classifier
from synthmed.metrics.extractors import ClassifierFeatures, extract_features
from synthmed.metrics.knn import nearest_neighbours
from synthmed.metrics.registered import registered_pairs
from synthmed.release import ReleaseRefused, release
from synthmed.synthesis import generate
from synthmed.training.config import load_config
from synthmed.training.loop import start_run, train

NULL_SIZES = (100, 300, 1000, 3000)
SIMULATED_POWER_SIZES = (300, 1000)
POWER_PATIENTS = (150, 300)  # br35h holds about 950 patients (see patients): three sets of 300 use 900
RATES = (0.0, 0.005, 0.01, 0.02, 0.05)
KINDS = ("noise", "shift", "crop-resize", "contrast")
DIM = 64  # dimensions of the simulated features and pixels


def quiet(message: str) -> None:
    pass


def share(hits: int, n: int) -> dict:
    ci = stats.binomtest(hits, n).proportion_ci(0.95, method="exact")
    return {"share": hits / n, "ci": [ci.low, ci.high], "n": n}


# ---- 1. simulated features: false alarms, and power when copies are plain to see ------------------------


def simulated(rng: np.random.Generator, n: int, centres: np.ndarray) -> tuple[Sets, Sets]:
    """Training, holdout and synthetic sets of n independent draws each, in both spaces."""
    features = Sets(*(np.maximum(centres[rng.integers(0, 2, n)] + rng.normal(size=(n, DIM)), 0) for _ in range(3)))
    return features, Sets(*(rng.normal(size=(n, DIM)) for _ in range(3)))


def plant(sets: Sets, sources: np.ndarray, slots: np.ndarray, rng: np.random.Generator) -> Sets:
    """Synthetic rows ``slots`` replaced by training rows ``sources`` plus noise of 5 % of their spread."""
    synthetic = sets.synthetic.copy()
    synthetic[slots] = sets.train[sources] + 0.05 * sets.train.std() * rng.normal(size=(len(slots), DIM))
    return Sets(sets.train, sets.holdout, synthetic)


def simulations(reps: int, power_reps: int) -> list[dict]:
    rows = []
    for n, rate in [(n, 0.0) for n in NULL_SIZES] + [(n, r) for n in SIMULATED_POWER_SIZES for r in RATES[1:]]:
        rng = np.random.default_rng([n, int(rate * 1000)])
        centres = rng.normal(0.0, 1.0, (2, DIM))
        planted, started, reports = int(rate * n + 0.5), time.time(), []
        for rep in range(reps if rate == 0 else power_reps):
            features, pixels = simulated(rng, n, centres)
            sources, slots = rng.choice(n, planted, replace=False), rng.choice(n, planted, replace=False)
            reports.append(privacy_report(plant(features, sources, slots, rng), plant(pixels, sources, slots, rng),
                                          seed=rep))
        rows.append({"n": n, "rate": rate, "planted": planted, **outcome([r["verdict"] for r in reports]),
                     "alone": alone(reports), "seconds": time.time() - started})
        print(f"simulated n={n} rate={rate}: {rows[-1]['not_pass']['share']:.3f} not pass, "
              + "".join(f"{name} alone {a['share']:.3f}, " for name, a in rows[-1]["alone"].items()) +
              f"{rows[-1]['fail']['share']:.3f} fail ({rows[-1]['seconds']:.0f} s)", flush=True)
    return rows


def alone(reports: list[dict]) -> dict:
    """Per test in the verdict, the share of repetitions whose own p-value is at or below Holm's first
    step (alpha over the number of tests): without leakage a valid test stays at or below that share,
    and the verdict's false alarms at or below their sum."""
    decisive = [name for name, test in reports[0]["tests"].items() if test["in_verdict"]]
    level = DEFAULT_OPTIONS["alpha"] / len(decisive)
    return {name: share(sum(r["tests"][name]["p_value"] <= level for r in reports), len(reports)) for name in decisive}


def outcome(verdicts: list[str]) -> dict:
    """The shares of non-pass and fail verdicts, and, for reading a leak-free row, the one-sided exact
    binomial p-value of "the non-pass rate is above the stated level": a finite number of repetitions
    measures a rate at the level itself as a little above it about half the time."""
    v = np.array(verdicts)
    not_pass = int((v != "pass").sum())
    above = stats.binomtest(not_pass, len(v), DEFAULT_OPTIONS["alpha"], alternative="greater").pvalue
    return {"not_pass": share(not_pass, len(v)), "fail": share(int((v == "fail").sum()), len(v)),
            "p_above_level": float(above)}


# ---- 2. power on real features -----------------------------------------------------------------------


def near_copy(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A uint8 (C, R, R) training image, slightly changed."""
    x = image.astype(np.float32)
    side = x.shape[-1]
    if kind == "noise":
        x = x + rng.normal(0.0, 6.0, x.shape)
    elif kind == "shift":
        dy, dx = rng.choice([-2, 2], 2)
        x = np.pad(x, ((0, 0), (2, 2), (2, 2)), mode="edge")[:, 2 + dy:2 + dy + side, 2 + dx:2 + dx + side]
    elif kind == "crop-resize":
        y0, x0 = rng.integers(0, 5, 2)
        x = np.stack([np.asarray(Image.fromarray(c[y0:y0 + side - 4, x0:x0 + side - 4]).resize(
            (side, side), Image.BILINEAR)) for c in x])
    else:
        x = (x - x.mean()) * 1.3 + x.mean()
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def patients(groups: np.ndarray, pixels: np.ndarray, threshold: float = 0.01, k: int = 30) -> np.ndarray:
    """The store's groups, merged wherever two (unregistered) images are visually the same (1 - Pearson r
    below ``threshold`` at 32 px): br35h's near-duplicate hash misses some identical slices, and a patient
    in two groups would be a natural copy across the sets."""
    rows = pixels.reshape(len(pixels), -1)
    d, i = nearest_neighbours(rows - rows.mean(axis=1, keepdims=True), rows - rows.mean(axis=1, keepdims=True), k=k)
    near = d.ravel() < threshold
    first = np.unique(groups, return_index=True)[1][np.unique(groups, return_inverse=True)[1]]
    rows = np.r_[np.repeat(np.arange(len(pixels)), k)[near], np.arange(len(pixels))]
    cols = np.r_[i.ravel()[near], first]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(pixels), len(pixels)))
    return connected_components(graph, directed=False)[1]


def real_spaces(setting: BenchmarkSetting, classifier_path: Path, seed: int = 0) -> dict:
    """Features and pixels of all images of the store and of one near-copy of each (kind i % 4 after a
    shuffle), and the patients."""
    from synthmed.evaluation.classifier import load_classifier

    images = setting.store.images(setting.resolution)
    rng = np.random.default_rng(seed)
    kinds = np.array(KINDS)[rng.permutation(len(images)) % len(KINDS)]
    copies = np.stack([near_copy(image, kind, rng) for image, kind in zip(images, kinds)])
    features = ClassifierFeatures(load_classifier(classifier_path)[0])
    pixels = pixel_images(images)
    return {"features": extract_features(features, images), "pixels": pixels,
            "copy_features": extract_features(features, copies), "copy_pixels": pixel_images(copies),
            "kinds": kinds, "groups": patients(setting.store.groups, pixels)}


class PixelTable:
    """The audit's registered pixel distances among the store's images and their near-copies, computed once
    by ``metrics.registered.registered_pairs`` with the audit's default options and looked up by image,
    in place of ``registered_nearest`` (the registered search costs about 150 plain ones; a repetition
    would take most of a minute). Only what the audit asks is computed: every image and every copy
    against every image; an image against a copy is the copy against the image (the registrations are
    symmetric: each zoom comes with its inverse and each shift with its opposite)."""

    def __init__(self, pixels: np.ndarray, copies: np.ndarray) -> None:
        self.row = {image.tobytes(): i for i, image in enumerate(np.concatenate([pixels, copies]))}
        n = len(pixels)
        self.d = np.full((2 * n, 2 * n), np.nan)
        self.d[:, :n] = np.inf
        for q, r in registered_pairs(np.concatenate([pixels, copies]), pixels, DEFAULT_OPTIONS["max_shift"],
                                     DEFAULT_OPTIONS["max_scale"], PIXEL_BLUR):
            q, r = (x / np.where((v := np.linalg.norm(x, axis=1, keepdims=True)) > 0, v, 1.0) for x in (q, r))
            np.minimum(self.d[:, :n], np.maximum(1.0 - q @ r.T, 0.0), out=self.d[:, :n])
        self.d[:n, n:] = self.d[n:, :n].T

    def nearest(self, queries: np.ndarray, references: np.ndarray, max_shift: float,
                max_scale: float, blur: float, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        # progress: only to take what registered_nearest takes (a lookup needs no bar)
        assert (max_shift, max_scale, blur) == (DEFAULT_OPTIONS["max_shift"], DEFAULT_OPTIONS["max_scale"], PIXEL_BLUR)
        d = self.d[np.ix_([self.row[x.tobytes()] for x in queries], [self.row[x.tobytes()] for x in references])]
        assert not np.isnan(d).any(), "a copy against a copy: not in the table"
        i = d.argmin(axis=1)
        return d[np.arange(len(d)), i], i


def deal(rng: np.random.Generator, groups: np.ndarray, n: int) -> list[np.ndarray]:
    """A training set and a holdout of n whole groups (patients) each, and a clean "synthetic" set of
    one image from each of n further groups: a generator draws its images independently, not a
    patient's alike images together."""
    names, codes = np.unique(groups, return_inverse=True)
    if len(names) < 3 * n:
        raise ValueError(f"{len(names)} groups do not make three sets of {n}")
    order = rng.permutation(len(names))
    train, holdout = np.isin(codes, order[:n]), np.isin(codes, order[n:2 * n])
    shuffled = rng.permutation(len(codes))
    firsts = shuffled[np.unique(codes[shuffled], return_index=True)[1]]  # one random image per group
    return [np.flatnonzero(train), np.flatnonzero(holdout), firsts[np.isin(codes[firsts], order[2 * n:3 * n])]]


def power(space: dict, reps: int) -> list[dict]:
    started = time.time()
    table = PixelTable(space["pixels"], space["copy_pixels"])
    print(f"registered pixel distances among {len(table.d)} images: {time.time() - started:.0f} s", flush=True)
    searched, privacy.registered_nearest = privacy.registered_nearest, table.nearest
    try:
        return power_rows(space, reps)
    finally:
        privacy.registered_nearest = searched


def power_rows(space: dict, reps: int) -> list[dict]:
    rows = []
    for n in POWER_PATIENTS:
        for rate in RATES:
            rng = np.random.default_rng([n, int(rate * 1000)])
            planted = int(rate * n + 0.5)
            started, verdicts = time.time(), []
            found = {(s, k): [0, 0] for s in ("features", "pixels") for k in KINDS}
            for rep in range(reps):
                train, holdout, synthetic = deal(rng, space["groups"], n)
                sources = rng.choice(train, planted, replace=False)
                slots = rng.choice(n, planted, replace=False)
                sets = {}
                for s in ("features", "pixels"):
                    fake = space[s][synthetic].copy()
                    fake[slots] = space[f"copy_{s}"][sources]
                    sets[s] = Sets(space[s][train], space[s][holdout], fake)
                groups = Groups(space["groups"][train], space["groups"][holdout])
                report = privacy_report(sets["features"], sets["pixels"], groups, seed=rep)
                verdicts.append(report["verdict"])
                for s in ("features", "pixels") if planted else ():
                    dcr = privacy.nearest_in_space(space[f"copy_{s}"][sources], sets[s].train, DEFAULT_OPTIONS)[0]
                    below = dcr < report["tests"][f"copies/{s}"]["distance_threshold"]
                    for kind, hit in zip(space["kinds"][sources], below):
                        found[s, kind][0] += int(hit)
                        found[s, kind][1] += 1
            rows.append({"patients": n, "rate": rate, "planted": planted, **outcome(verdicts),
                         "copies_found": {f"{s}/{k}": h / t if t else None for (s, k), (h, t) in found.items()},
                         "images": {"train": len(train), "holdout": len(holdout), "synthetic": len(synthetic)},
                         "seconds": time.time() - started})
            print(f"real n={n} patients rate={rate}: fail {rows[-1]['fail']['share']:.3f}, not pass "
                  f"{rows[-1]['not_pass']['share']:.3f} ({rows[-1]['seconds']:.0f} s)", flush=True)
    return rows


# ---- 3. a real memorisation case ---------------------------------------------------------------------


# 10 training images per label combination, the holdout of the br35h samples axis (100 val, 100 test each)
TINY = {"name": "memorise", "dimensions": {"samples": {
    "defaults": {"resolution": 32, "combinations": 2, "val_per_combination": 100, "test_per_combination": 100},
    "settings": [{"train_per_combination": 10}]}}}


def memorisation(work: Path, classifier_path: Path, images: int) -> dict:
    """The diffusion model trained ``images`` images on 20 training images, audited and offered for release."""
    setting = work / "memorise" / "samples" / "n10"
    if not (setting / "setting.json").is_file():
        (work / "memorise-preset.yaml").write_text(json.dumps(TINY))  # JSON is YAML
        build_settings(work / "memorise-preset.yaml", work / "data" / "store", work / "memorise", overwrite=True,
                       log=quiet)
    run = work / f"memorised-diffusion-{images}"
    started = time.time()
    if not (run / "run.json").is_file():
        config = load_config("diffusion-cpu", {
            "min_images": images, "max_images": images, "fid_every": images, "fid_samples": 100,
            "fid_extractor": "pixels", "sample_every": images, "checkpoint_every": 5000, "threads": 1,
            "sample_steps": 8})  # the steps this case was measured with (docs/privacy.md)
        start_run(config, setting, run)
    summary = train(run, progress=False, log=quiet)
    generate(run, export_png=False, progress=False, log=quiet)
    report = evaluate_privacy_run(setting, run / "synthetic" / "setting", classifier_path, run / "eval", log=quiet)
    shutil.rmtree(work / "memorised-release", ignore_errors=True)  # what an earlier, not refused run released
    try:
        release(run, setting, work / "memorised-release", log=quiet)
        refused = None
    except ReleaseRefused as refusal:
        refused = str(refusal)
    tests = report["tests"]
    return {"images_seen": summary["images_seen"], "train_images": len(BenchmarkSetting(setting).rows("train")),
            "verdict": report["verdict"], "reason": report["reason"], "release_refused": refused,
            "membership_auc": tests["membership"]["auc"], "membership_p": tests["membership"]["p_value"],
            "copies": {k: {"count": t["count"], "n": t["n_synthetic"], "p": t["p_value"]}
                       for k, t in tests.items() if k.startswith("copies/")},
            "density_auc": report["density_attack"]["auc"], "seconds": time.time() - started}


# ---- tables ------------------------------------------------------------------------------------------


def tables(result: dict) -> str:
    pct = lambda s: f"{100 * s['share']:.1f} % ({100 * s['ci'][0]:.1f}-{100 * s['ci'][1]:.1f})"  # noqa: E731
    above = lambda r: f"{r['p_above_level']:.2f}" if r["rate"] == 0 else "-"  # noqa: E731
    level = f"p (not pass above {100 * DEFAULT_OPTIONS['alpha']:g} %)"
    tests = " / ".join(result["simulated"][0]["alone"])
    lines = [f"| n per set | planted | repetitions | not pass (95 % CI) | {level} | fail (95 % CI) | "
             f"each test alone at Holm's first step: {tests} |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['n']:,} | {100 * r['rate']:g} % ({r['planted']}) | {r['fail']['n']} | {pct(r['not_pass'])} | "
              f"{above(r)} | {pct(r['fail'])} | {' / '.join(pct(a) for a in r['alone'].values())} |"
              for r in result["simulated"]]
    lines += ["", "| patients per set (images: train / holdout / synthetic) | planted | not pass (95 % CI) | "
              f"{level} | fail (95 % CI) | copies found, features: noise / shift / crop / contrast | found, pixels |",
              "|---|---|---|---|---|---|---|"]
    for r in result["power"]:
        found = {s: " / ".join("-" if r["copies_found"][f"{s}/{k}"] is None else f"{r['copies_found'][f'{s}/{k}']:.2f}"
                               for k in KINDS) for s in ("features", "pixels")}
        images = " / ".join(str(r["images"][part]) for part in ("train", "holdout", "synthetic"))
        lines.append(f"| {r['patients']} ({images}) | {100 * r['rate']:g} % ({r['planted']}) | {pct(r['not_pass'])} | "
                     f"{above(r)} | {pct(r['fail'])} | {found['features']} | {found['pixels']} |")
    m = result["memorisation"]
    lines += ["", f"Memorisation: diffusion-cpu, {m['images_seen']:,} images seen on {m['train_images']} training "
              f"images ({m['seconds']:.0f} s): verdict {m['reason']}; density attack AUC {m['density_auc']:.3f}; "
              f"release {'refused' if m['release_refused'] else 'NOT refused'}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/privacy-calibration"),
                        help="folder for the br35h data, the real classifier, the memorising run and the result")
    parser.add_argument("--reps", type=int, default=1000,
                        help="repetitions per size without leakage (simulated); 200 leave a rate at the level "
                             "itself reading anywhere from 2 to 8 %%")
    parser.add_argument("--power-reps", type=int, default=100, help="repetitions per size and planted rate")
    parser.add_argument("--memorise-images", type=int, default=20_000, help="training images of the memorising run")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core for the network, the other for whatever else runs
    started = time.time()
    result = {"args": {k: str(v) for k, v in vars(args).items()},
              "simulated": simulations(args.reps, args.power_reps)}
    settings = prepare_data(args.work)
    r32 = BenchmarkSetting(settings / "resolution" / "r32")
    classifier_path = args.work / "real_classifier.pt"
    real_classifier(r32, ClassifierConfig(max_epochs=4, threads=1), classifier_path, quiet, progress=False)
    result["power"] = power(real_spaces(r32, classifier_path), args.power_reps)
    result["memorisation"] = memorisation(args.work, classifier_path, args.memorise_images)
    result["seconds"] = time.time() - started
    (args.work / "privacy_calibration.json").write_text(json.dumps(result, indent=1))
    print(tables(result))
    print(f"{result['seconds']:.0f} s; wrote {args.work / 'privacy_calibration.json'}")


if __name__ == "__main__":
    main()
