"""Make a reader study: draw real and synthetic images, encode them alike, hide the key.

Both sides are drawn, seeded, from one fold (the test fold by default) with the same mix of
label combinations, so that the findings shown do not hint at the class either: the target
proportions are those of the synthetic fold (its label rows mirror the real setting it was
trained on), over the combinations that both folds have. Every image becomes an uncompressed
8-bit PNG of the same byte length (``png.encode_png``) under a random opaque id; which id is
real goes into the study's private database only.
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from synthmed import __version__
from synthmed.config import seed_problem
from synthmed.data.records import SPLITS, combination_key, combination_name
from synthmed.data.store import Store
from synthmed.errors import DataError
from synthmed.output_dir import claim_output_dir
from synthmed.reader_study import db
from synthmed.reader_study.png import encode_png


def create_study(real: str | os.PathLike, synthetic: str | os.PathLike, out: str | os.PathLike, *,
                 resolution: int, n_real: int = 50, n_synthetic: int = 50, fold: str = "test", seed: int = 0,
                 log: Callable[[str], None] = print) -> tuple[Path, str]:
    """Write the study to ``out/study.sqlite``; returns (database path, admin token).

    The admin token is shown once: only its hash is stored.
    """
    out = Path(out)
    target = out / db.DB_NAME
    claim_output_dir(out, db.DB_NAME, "a reader study", if_taken="choose another --out")
    if fold not in SPLITS:
        raise DataError(f"unknown fold {fold!r}: expected one of {SPLITS}", field="fold")
    for flag, n in (("--n-real", n_real), ("--n-synthetic", n_synthetic)):
        if n < 1:
            raise DataError(f"must be at least 1, not {n}", field=flag)
    if problem := seed_problem(seed):
        raise DataError(f"{seed} {problem}", field="--seed")
    real_store, synthetic_store = _open(real, "--real"), _open(synthetic, "--synthetic")
    if str(real_store.manifest.get("source", "")).startswith("synthetic:"):
        raise DataError(f"is a synthetic set ({real_store.manifest['source']}); give the real store it was "
                        "trained from", file=real, field="--real")
    if real_store.manifest["content_hash"] == synthetic_store.manifest["content_hash"]:
        raise DataError(f"holds the same images as --real {real}; give the synthetic store (RUN/synthetic/store)",
                        file=synthetic, field="--synthetic")
    if real_store.label_names != synthetic_store.label_names:
        raise DataError(f"the synthetic set has labels {synthetic_store.label_names}, the real store "
                        f"{real_store.label_names}; give the real store the generator was trained from",
                        file=synthetic_store.path)
    real_images, synthetic_images = real_store.images(resolution), synthetic_store.images(resolution)
    if real_images.shape[1] != synthetic_images.shape[1] or real_images.shape[1] not in (1, 3):
        raise DataError(f"real images have {real_images.shape[1]} channel(s), synthetic ones "
                        f"{synthetic_images.shape[1]}; both need 1 (grey) or 3", file=synthetic_store.path)

    real_keys, synthetic_keys = _fold_keys(real_store, fold), _fold_keys(synthetic_store, fold)
    real_combinations = set(real_keys.values())
    weights = Counter(k for k in synthetic_keys.values() if k in real_combinations)
    if not weights:
        raise DataError(f"the real and the synthetic {fold} folds share no label combination",
                        file=synthetic_store.path)
    rng = np.random.default_rng(seed)
    drawn = {"real": _draw(real_keys, weights, n_real, rng, real_store, fold, "--n-real"),
             "synthetic": _draw(synthetic_keys, weights, n_synthetic, rng, synthetic_store, fold, "--n-synthetic")}
    arrays = {"real": real_images, "synthetic": synthetic_images}
    images = [db.KeyedImage(secrets.token_urlsafe(16), encode_png(np.asarray(arrays[truth][i])), truth, int(i),
                            keys[i])
              for truth, keys in (("real", real_keys), ("synthetic", synthetic_keys)) for i in drawn[truth]]
    images = [images[i] for i in rng.permutation(len(images))]

    meta = _meta(real_store, synthetic_store, resolution, fold, seed, images)
    admin_token = db.new_token()
    out.mkdir(parents=True, exist_ok=True)
    db.write_study(target, meta, images, admin_token)
    log(f"reader study: {n_real} real + {n_synthetic} synthetic images at {resolution} px from the {fold} fold "
        f"in {out}")
    return target, admin_token


def _open(path: str | os.PathLike, flag: str) -> Store:
    if not Path(path).is_dir():
        raise DataError("store not found", file=path, field=flag)
    return Store(path)


def _fold_keys(store: Store, fold: str) -> dict[int, str]:
    """Store row -> label combination key, for the rows of one fold."""
    rows = np.flatnonzero(store.splits == fold)
    return dict(zip(rows.tolist(), combination_key(store.labels[rows])))


def allocate(n: int, weights: dict[str, int], capacity: dict[str, int]) -> dict[str, int]:
    """Split ``n`` over combinations in proportion to ``weights`` without exceeding ``capacity``.

    One image at a time goes to the combination furthest below its share; a combination that
    has run out leaves its share to the others. Ties go to the first key in sorted order, so the
    result is deterministic.
    """
    total = sum(weights.values())
    counts = dict.fromkeys(sorted(weights), 0)
    for step in range(1, n + 1):
        open_keys = [k for k in counts if counts[k] < capacity.get(k, 0)]
        if not open_keys:
            break
        best = max(open_keys, key=lambda k: weights[k] * step / total - counts[k])
        counts[best] += 1
    return counts


def _draw(keys: dict[int, str], weights: Counter, n: int, rng: np.random.Generator, store: Store, fold: str,
          flag: str) -> list[int]:
    """Store rows of ``n`` images of one side, stratified by label combination."""
    by_key: dict[str, list[int]] = {}
    for row, key in keys.items():
        if key in weights:
            by_key.setdefault(key, []).append(row)
    available = sum(len(rows) for rows in by_key.values())
    if available < n:
        shared = "" if available == len(keys) else " with label combinations that both sets have"
        raise DataError(f"not enough images: the {fold} fold has {available}{shared}, {flag} asks for {n}",
                        file=store.path, field=flag)
    counts = allocate(n, dict(weights), {k: len(rows) for k, rows in by_key.items()})
    return [int(row) for key, count in counts.items() if count
            for row in rng.choice(by_key[key], size=count, replace=False)]


def _meta(real: Store, synthetic: Store, resolution: int, fold: str, seed: int,
          images: list[db.KeyedImage]) -> dict[str, Any]:
    """The study's parameters and provenance: no image identity, no key."""
    combinations = Counter((image.truth, image.combination) for image in images)
    names = real.label_names
    return {
        "synthmed_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resolution": resolution, "fold": fold, "seed": seed, "label_names": names,
        "n_real": sum(image.truth == "real" for image in images),
        "n_synthetic": sum(image.truth == "synthetic" for image in images),
        "png_bytes": len(images[0].png),
        "combinations": [{"combination": combination_name(key, names), "key": key,
                          "real": combinations[("real", key)], "synthetic": combinations[("synthetic", key)]}
                         for key in sorted({image.combination for image in images})],
        "real_store": {"path": str(real.path.resolve()), "content_hash": real.manifest["content_hash"]},
        "synthetic_store": {"path": str(synthetic.path.resolve()), "content_hash": synthetic.manifest["content_hash"]},
    }
