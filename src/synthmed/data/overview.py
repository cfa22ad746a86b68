"""``synthmed data info``: what is in a store, and a picture of each label combination."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from synthmed._io import write_with_atomic
from synthmed.data.records import SPLITS, combination_name
from synthmed.data.store import Store

GRID_SIDE = 4  # a 4 x 4 grid per combination
MIN_TILE = 96  # small resolutions are enlarged (nearest neighbour) so a person can see them


def describe(store: Store) -> dict[str, Any]:
    """Counts per fold and per label combination, and group statistics."""
    records = store.records
    per_combination = pd.crosstab(records["combination"], records["split"]).reindex(columns=list(SPLITS), fill_value=0)
    per_combination["total"] = per_combination.sum(axis=1)
    per_combination = per_combination.sort_values("total", ascending=False)
    group_sizes = records.groupby("group").size()
    groups_per_split = records.groupby("split")["group"].nunique().reindex(list(SPLITS), fill_value=0)
    return {
        "source": store.manifest["source"],
        # what a reader must know about the images (phantom-cxr: rendered phantoms, not patients)
        "note": store.manifest["source_params"].get("note"),
        "lesion_masks": store.has_masks,
        "images": len(records),
        "skipped": store.manifest["n_skipped"],
        "resolutions": store.resolutions,
        "channels": store.manifest["channels"],
        "label_names": store.label_names,
        "folds": {s: int((records["split"] == s).sum()) for s in SPLITS},
        "combinations": [
            {"key": key, "name": combination_name(key, store.label_names), **{c: int(v) for c, v in row.items()}}
            for key, row in per_combination.iterrows()
        ],
        "groups": {
            "count": int(len(group_sizes)),
            "method": store.manifest["group_method"],
            "per_fold": {s: int(v) for s, v in groups_per_split.items()},
            "multi_image_groups": int((group_sizes > 1).sum()),
            "images_in_multi_image_groups": int(group_sizes[group_sizes > 1].sum()),
            "largest": int(group_sizes.max()),
        },
        "split_method": store.manifest["split_method"],
    }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "none"


def write_grids(store: Store, out_dir: str | Path, seed: int = 0, max_combinations: int = 40) -> list[Path]:
    """One PNG per label combination (most frequent first): up to 16 training images."""
    out_dir = Path(out_dir)
    resolution = max(r for r in store.resolutions if r <= 128) if min(store.resolutions) <= 128 else min(store.resolutions)
    images = store.images(resolution)
    records = store.records
    rng = np.random.default_rng(seed)
    order = records["combination"].value_counts().index[:max_combinations]
    tile = max(resolution, MIN_TILE)
    paths = []
    for rank, key in enumerate(order):
        rows = np.flatnonzero((records["combination"] == key).to_numpy() & (records["split"] == "train").to_numpy())
        if len(rows) == 0:
            rows = np.flatnonzero((records["combination"] == key).to_numpy())
        chosen = np.sort(rng.choice(rows, min(len(rows), GRID_SIDE**2), replace=False))
        name = combination_name(key, store.label_names)
        grid = _grid(images[chosen], tile, f"{name}  ({len(rows)} images, {resolution}px)")
        path = out_dir / f"grid_{rank:02d}_{_slug(name)[:60]}.png"
        write_with_atomic(path, lambda tmp: grid.save(tmp, format="PNG"), suffix=".png")
        paths.append(path)
    return paths


def _grid(images: np.ndarray, tile: int, title: str) -> Image.Image:
    header = 18
    canvas = Image.new("L", (GRID_SIDE * tile, GRID_SIDE * tile + header), color=0)
    ImageDraw.Draw(canvas).text((4, 3), title, fill=255)
    for i, pixels in enumerate(images):
        picture = Image.fromarray(pixels[0])  # multi-window CT: the first window (brain)
        picture = picture.resize((tile, tile), Image.NEAREST)
        canvas.paste(picture, ((i % GRID_SIDE) * tile, header + (i // GRID_SIDE) * tile))
    return canvas
