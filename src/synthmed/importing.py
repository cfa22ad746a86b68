"""``synthmed import``: images made by any generator, as the synthetic set ``synthmed generate`` writes.

SOURCE is one of::

    a folder with train.csv, val.csv, test.csv   (generate's export/, a release package)
    a folder with train/, val/, test/            each holding one CSV for its fold
    one CSV file                                 a ``fold`` column (train, val or test) gives each row's
                                                 fold; without it every row may serve any fold
    an .npz                                      <fold>_images and <fold>_labels per fold (a release's
                                                 synthetic.npz), or images and labels for any fold

A CSV has an image column (``Path`` or ``path``), relative to the CSV's folder and staying inside
it, and a 0/1 column for each label of the real setting (other columns are ignored). npz images are
uint8, (N, H, W) or (N, C, H, W); an optional ``label_names`` array names the label columns, else
they are the setting's labels in its order.

Matching (the paper: one synthetic image per real row, with that row's label vector; with
``images_per_row`` K, each fold's real rows K times over, as ``generate --images-per-row`` makes them): for each fold
(all folds at once where the source has none) and label combination, the real setting's rows take
the source's images of that combination. Where the source has more than needed, a seeded random
choice without replacement picks which (numpy ``default_rng([seed, crc32(folds), crc32(combination)])``);
the picked images keep their source order and fill the real rows in order (train, then val, then
test where the source has no folds). Where it has fewer, the error names the combination, the fold
and the shortfall. So an export of ``generate`` comes back image for image.

Images get the setting's channels (RGB becomes grey with the store's weights) and, where their size
is not the setting's, are resized as ``data prepare`` resizes (bilinear to the base size, then 2x2
box averaging), with a warning. Intensities are the generator's: clipped to 0..255, not rescaled.

Everything is read and checked before the first byte is written; the set is written to a hidden
folder beside OUT and renamed into place. The dataset card says the set was imported from an
external generator and how many images it holds; no source path or file name reaches any output.
"""

from __future__ import annotations

import os
import platform
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from synthmed import __version__
from synthmed._io import open_npz, read_npz_member
from synthmed.config import seed_problem
from synthmed.data.imaging import ArrayImage, ImageFile, base_size, box_pyramid, image_kind, resize_square
from synthmed.data.records import SPLITS, combination_key, combination_name
from synthmed.data.settings import BenchmarkSetting
from synthmed.data.sources._tables import check_unique, first_repeat, parse_labels, read_table, resolve_in_root
from synthmed.data.store import Store
from synthmed.errors import ConfigError, DataError
from synthmed.output_dir import claim_output_dir
from synthmed.progress import progress_bar
from synthmed.synthesis import CARD, check_images_per_row, fold_labels, label_counts, write_set

MODEL = "external"  # the model name an imported set carries (store manifest, card)
PATH_COLUMNS = ("Path", "path")
SELECTION = ("per fold and label combination, the real rows take the source's images in source order; where "
             "there are more, a seeded random choice without replacement picks which")


@dataclass
class Pool:
    """Source images offered to some of the real folds: their labels and how to read each one."""

    folds: tuple[str, ...]  # one fold, or all three where the source has none
    labels: np.ndarray  # (n, L) uint8, in the setting's label order
    read: Callable[[int], np.ndarray]  # image i: float32 (C, H, W) in 0..255
    where: Callable[[int], dict[str, Any]]  # image i's file, row and field, for a DataError


def import_synthetic(source: str | os.PathLike, real_setting: str | os.PathLike, out: str | os.PathLike, *,
                     seed: int = 0, images_per_row: int = 1, export_png: bool = True, overwrite: bool = False,
                     progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Write ``source``'s images as a synthetic set of ``real_setting`` to ``out`` (see the module docstring)."""
    source, out = Path(source), Path(out)
    if problem := seed_problem(seed):
        raise ConfigError(f"--seed {seed} {problem}")
    check_images_per_row(images_per_row)
    claim_output_dir(out, CARD, "a synthetic set", overwrite=overwrite)  # an imported set is never "the same"
    real = BenchmarkSetting(real_setting)
    channels, resolution = int(real.store.manifest["channels"]), real.resolution
    pools, source_format = _read_source(source, real.label_names, channels)
    folds = fold_labels(real, images_per_row)
    chosen = _match(pools, folds, real.label_names, seed, source)
    sizes: set[tuple[int, int]] = set()
    images = {}
    with progress_bar(sum(len(v) for v in chosen.values()), "reading", progress) as bar:
        for fold in SPLITS:
            images[fold] = np.zeros((len(chosen[fold]), channels, resolution, resolution), np.uint8)
            for n, (pool, i) in enumerate(chosen[fold]):
                images[fold][n] = _load(pools[pool], i, channels, resolution, sizes)
                bar.advance()
    other = sorted(f"{h}x{w}" for h, w in sizes if (h, w) != (resolution, resolution))
    if other:
        log(f"warning: source images of {', '.join(other)} px, the setting is {resolution}x{resolution}: resized "
            f"as `synthmed data prepare` resizes (bilinear to {base_size([resolution])}, then 2x2 box averaging)")

    write_set(out, images, folds, real, resolution, MODEL, seed, export_png,
              lambda store: _card(real, folds, seed, store, source_format, sum(len(p.labels) for p in pools),
                                  sorted(sizes), images_per_row))
    log(f"synthetic set: {sum(len(v) for v in folds.values())} imported images in {out}")
    return out


# ---- reading the source ---------------------------------------------------------------------


def _read_source(source: Path, label_names: list[str], channels: int) -> tuple[list[Pool], str]:
    """The source's pools and a few words on its format (for the card: no path, no file name)."""
    if source.is_dir():
        return _folder_pools(source, label_names, channels), "CSV files per fold"
    if not source.is_file():
        raise DataError("not found: give a folder, a .csv or an .npz file", file=source)
    if source.suffix.lower() == ".csv":
        return _csv_pools(source, label_names, channels, fold=None), "a CSV file"
    if source.suffix.lower() == ".npz":
        return _npz_pools(source, label_names), "an .npz file"
    raise DataError("is neither a folder, a .csv nor an .npz file", file=source)


def _check_labels(available: list[str], label_names: list[str], file: Path) -> None:
    if repeat := first_repeat(available):  # which of the columns holds the label could only be guessed
        raise DataError(f"names the label {repeat[0]!r} {repeat[1]} times; name each label once", file=file,
                        field="label_names")
    missing = [name for name in label_names if name not in available]
    if missing:
        raise DataError(f"has no label column(s) {missing}; the real setting's labels are {label_names}", file=file)


def _folder_pools(folder: Path, label_names: list[str], channels: int) -> list[Pool]:
    """One pool per fold: ``<fold>.csv`` beside the images (generate's export), else the one CSV in ``<fold>/``."""
    pools = []
    for fold in SPLITS:
        inside = sorted((folder / fold).glob("*.csv")) if (folder / fold).is_dir() else []
        if (folder / f"{fold}.csv").is_file():
            csv_path = folder / f"{fold}.csv"
        elif len(inside) == 1:
            csv_path = inside[0]
        elif inside:
            raise DataError(f"holds {len(inside)} CSV files; the {fold} fold needs exactly one", file=folder / fold)
        else:
            raise DataError(f"has no {fold}.csv and no {fold}/ folder with a CSV", file=folder)
        pools += _csv_pools(csv_path, label_names, channels, fold=fold)
    return pools


def _csv_pools(csv_path: Path, label_names: list[str], channels: int, fold: str | None) -> list[Pool]:
    """The CSV's rows as pools: all for ``fold``, else by the ``fold`` column, else one pool for every fold."""
    table = read_table(csv_path, [])
    column = next((c for c in PATH_COLUMNS if c in table.columns), None)
    if column is None:
        raise DataError(f"has no image column ({' or '.join(PATH_COLUMNS)}); the header has {list(table.columns)}",
                        file=csv_path)
    _check_labels(list(table.columns), label_names, csv_path)
    labels = np.stack([parse_labels(table, name, csv_path) for name in label_names], axis=1)
    resolved = [resolve_in_root(csv_path.parent, value, file=csv_path, row=int(line), column=column)
                for line, value in table[column].items()]
    check_unique(pd.Series([relative for _, relative in resolved], index=table.index), file=csv_path,
                 column=column, what="image")
    files = [file for file, _ in resolved]
    if fold is not None:
        groups = {(fold,): np.arange(len(table))}
    elif "fold" in table.columns:
        bad = ~table["fold"].isin(SPLITS)
        if bad.any():
            line = int(table.index[bad.to_numpy()][0])
            raise DataError(f"fold {table['fold'][line]!r} is not one of {list(SPLITS)}", file=csv_path, row=line,
                            field="fold")
        groups = {(f,): np.flatnonzero(table["fold"].to_numpy() == f) for f in SPLITS}
    else:
        groups = {SPLITS: np.arange(len(table))}
    lines = table.index.to_numpy()
    return [Pool(folds, labels[rows], read=lambda i, rows=rows: _read_file(files[rows[i]], channels),
                 where=lambda i, rows=rows: {"file": csv_path, "row": int(lines[rows[i]]), "field": column})
            for folds, rows in groups.items()]


def _read_file(path: Path, channels: int) -> np.ndarray:
    """Pixels as the store reads them (grey, 16-bit PNG, DICOM); RGB kept for a 3-channel setting."""
    if channels == 3 and image_kind(path) == "raster":
        with Image.open(path) as image:
            return np.moveaxis(np.asarray(image.convert("RGB"), dtype=np.float32), -1, 0)
    return ImageFile(str(path)).load()[0]


def _npz_pools(path: Path, label_names: list[str]) -> list[Pool]:
    archive = open_npz(path)
    keys = set(archive.files)
    if all({f"{fold}_images", f"{fold}_labels"} <= keys for fold in SPLITS):
        layout = [((fold,), f"{fold}_images", f"{fold}_labels") for fold in SPLITS]
    elif {"images", "labels"} <= keys:
        layout = [(SPLITS, "images", "labels")]
    else:
        raise DataError(f"holds {sorted(keys)}; expected train_images, train_labels, val_images, val_labels, "
                        "test_images, test_labels (or images and labels for any fold)", file=path)
    if "label_names" in keys:
        names_array = read_npz_member(archive, "label_names", path)
        if names_array.ndim != 1:
            raise DataError(f"has shape {names_array.shape}; expected a list of names", file=path, field="label_names")
        names = [str(name) for name in names_array]
        _check_labels(names, label_names, path)
        columns = [names.index(name) for name in label_names]
    else:
        names, columns = label_names, list(range(len(label_names)))
    pools = []
    for folds, image_key, label_key in layout:
        images, labels = read_npz_member(archive, image_key, path), read_npz_member(archive, label_key, path)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or 0 in images.shape[-2:]:
            raise DataError(f"is {images.dtype} of shape {images.shape}; expected uint8 (N, H, W) or (N, C, H, W) "
                            "with H and W at least 1", file=path, field=image_key)
        if labels.dtype.kind not in "biuf":  # text '0' would be reported as the number it looks like
            raise DataError(f"holds {labels.dtype} values; expected numbers 0 or 1", file=path, field=label_key)
        if labels.ndim != 2 or labels.shape != (len(images), len(names)):
            raise DataError(f"has shape {labels.shape}; expected ({len(images)}, {len(names)}): one row per image "
                            f"and a column per label {names}", file=path, field=label_key)
        bad = ~np.isin(labels[:, columns], (0, 1))
        if bad.any():
            row, column = (int(v) for v in np.argwhere(bad)[0])
            raise DataError(f"label {label_names[column]!r} of image {row} is {labels[row, columns[column]]}, "
                            "not 0 or 1", file=path, field=label_key)
        images = images if images.ndim == 4 else images[:, None]
        pools.append(Pool(folds, labels[:, columns].astype(np.uint8),
                          read=lambda i, images=images: images[i].astype(np.float32),
                          where=lambda i, key=image_key: {"file": path, "field": f"{key}[{i}]"}))
    return pools


# ---- matching and fitting ---------------------------------------------------------------------


def _match(pools: list[Pool], folds: dict[str, np.ndarray], label_names: list[str], seed: int,
           source: Path) -> dict[str, list[tuple[int, int]]]:
    """Per fold, (pool, image) for each of ``folds``' label rows in order (the rule in the module docstring)."""
    chosen: dict[str, list[tuple[int, int]]] = {}
    short = []
    for p, pool in enumerate(pools):
        wanted = combination_key(np.concatenate([folds[fold] for fold in pool.folds]))
        offered = combination_key(pool.labels)
        picked = np.zeros(len(wanted), np.int64)
        for key in dict.fromkeys(wanted):
            rows, images = np.flatnonzero(wanted == key), np.flatnonzero(offered == key)
            if len(images) < len(rows):
                short.append(f"{combination_name(key, label_names)!r} ({key}) in {'+'.join(pool.folds)}: "
                             f"{len(images)} image(s), {len(rows) - len(images)} short of the {len(rows)} needed")
                continue
            rng = np.random.default_rng([seed, zlib.crc32("+".join(pool.folds).encode()), zlib.crc32(key.encode())])
            picked[rows] = np.sort(rng.choice(images, len(rows), replace=False))
        start = 0
        for fold in pool.folds:
            count = len(folds[fold])
            chosen[fold] = [(p, int(i)) for i in picked[start : start + count]]
            start += count
    if short:
        raise DataError("too few images for the real setting's label combinations: " + "; ".join(short), file=source)
    return chosen


def _load(pool: Pool, i: int, channels: int, resolution: int, sizes: set[tuple[int, int]]) -> np.ndarray:
    """Image i of ``pool`` as uint8 (channels, R, R); its source size goes into ``sizes``."""
    try:
        pixels = pool.read(i)
        sizes.add(pixels.shape[1:])
        return _fit(pixels, channels, resolution)
    except Exception as error:  # noqa: BLE001 - as in the store: any failure of one image names that image
        raise DataError(f"cannot use the image: {type(error).__name__}: {error}", **pool.where(i)) from None


def _fit(pixels: np.ndarray, channels: int, resolution: int) -> np.ndarray:
    """The setting's channels (RGB to grey with the store's weights) and size (the store's resizing)."""
    if len(pixels) == 3 and channels == 1:
        pixels = ArrayImage(np.moveaxis(pixels, 0, -1)).load()[0]
    if len(pixels) != channels:
        raise ValueError(f"it has {len(pixels)} channel(s), the real setting's images have {channels}")
    if pixels.shape[1:] != (resolution, resolution):
        pixels = resize_square(pixels, base_size([resolution]))
    return box_pyramid(pixels, [resolution])[resolution]


def _card(real: BenchmarkSetting, folds: dict[str, np.ndarray], seed: int, store: Store, source_format: str,
          offered: int, sizes: list[tuple[int, int]], images_per_row: int) -> dict[str, Any]:
    images = sum(len(v) for v in folds.values())
    return {
        "origin": "imported",
        "model": MODEL,
        "description": f"imported from an external generator, {images} images",
        "images": images,
        "source_format": source_format,
        "images_offered": offered,
        "source_sizes": [f"{h}x{w}" for h, w in sizes],
        "selection": SELECTION,
        "selection_seed": seed,
        "resolution": real.resolution,
        "label_names": real.label_names,
        "setting": f"{real.meta['dimension']}/{real.meta['name']}",
        "real_store_content_hash": real.meta["store_content_hash"],
        "synthetic_store_content_hash": store.manifest["content_hash"],
        "images_per_row": images_per_row,
        "images_per_fold": {fold: int(len(folds[fold])) for fold in SPLITS},
        "label_counts": label_counts(folds, real.label_names),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": {"synthmed": __version__, "numpy": np.__version__, "python": platform.python_version()},
    }
