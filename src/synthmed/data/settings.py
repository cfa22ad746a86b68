"""Benchmark settings (paper Table S1): which store rows form the train / val / test folds.

A preset (YAML, ``configs/settings/``) lists benchmark dimensions; each dimension has
``defaults`` and a list of ``settings`` that override them. One setting is::

    combinations: 20 | all       # the k most frequent label combinations
    min_images_per_combination: 257  # only combinations with at least this many images
                                     # (all folds: the data pool, as the paper's code counted)
    train_per_combination: 1450 | all
    oversample: true             # fill a short combination by drawing its rows again
    val_per_combination / test_per_combination: 190   # or
    val_total / test_total: 4000 # rows drawn from all kept combinations; null = all
    resolution: 32
    drop_empty_labels: true      # delete label columns with no positive in the setting

Rows are drawn with one seeded permutation per (dimension, combination, fold), and each
setting takes a prefix of it, so smaller training sets are subsets of larger ones and the
validation and test rows stay fixed along a dimension. A setting that asks for more rows
than exist (and may not oversample) is an error that names the combination and the gap.

Output: ``OUT/settings.json`` (index) and per setting ``OUT/<dimension>/<name>/``
with ``setting.json`` (label names, combinations, counts) and ``rows.parquet`` (fold,
store_index; a store index repeats where a combination was oversampled).
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd

from synthmed._io import read_json, write_json_atomic
from synthmed.config import check_values, field_types, load_mapping, seed_problem
from synthmed.config import preset_names as shipped_presets
from synthmed.data.imaging import check_resolution
from synthmed.data.records import SPLITS, combination_key, combination_name
from synthmed.data.store import Store, read_table
from synthmed.errors import DataError
from synthmed.output_dir import claim_output_dir, is_folder_name, staged_dir

INDEX_FILE, SETTING_FILE, ROWS_FILE = "settings.json", "setting.json", "rows.parquet"

@dataclass
class SettingSpec:
    """The keys of one setting, their types and defaults (a preset's ``defaults`` and ``settings`` entries)."""

    name: str | None = None
    combinations: int | Literal["all"] = "all"
    min_images_per_combination: int = 1
    train_per_combination: int | Literal["all"] = "all"
    oversample: bool = False
    val_per_combination: int | Literal["all"] | None = None
    test_per_combination: int | Literal["all"] | None = None
    val_total: int | None = None
    test_total: int | None = None
    resolution: int = 32
    drop_empty_labels: bool = True


# every key but the name, in this order in each setting.json's "spec"
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(SettingSpec) if f.name != "name"}
_COUNTS = ("combinations", "min_images_per_combination", "train_per_combination", "val_per_combination",
           "test_per_combination", "val_total", "test_total")
_NAME_PARTS = (("combinations", "k"), ("train_per_combination", "n"), ("resolution", "r"))
# the largest data sets have about a million images: a count above this is a typo, and oversampling
# would allocate that many rows (10**11 ended in numpy's MemoryError)
MAX_COUNT = 10**7
# the top-level keys of a preset (``name`` and ``source`` describe it; only ``dimensions`` is read)
_PRESET_KEYS = {"name": str, "source": str, "dimensions": Any}


# ---- presets ------------------------------------------------------------------------------------


def preset_names() -> list[str]:
    return shipped_presets("settings")


def load_preset(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """A shipped preset by name (``chest``, ``brain``, ``br35h``...) or a YAML file by path."""
    preset, where, _ = load_mapping(name_or_path, "settings", DataError)
    _validate_preset(preset, where)
    return preset


def _validate_preset(preset: Any, where: object) -> None:
    if isinstance(preset, dict):  # a typo (``dimension:``) would otherwise be ignored
        check_values(preset, _PRESET_KEYS, str(where), DataError)
    if not isinstance(preset, dict) or not isinstance(preset.get("dimensions"), dict) or not preset["dimensions"]:
        raise DataError("a preset needs a 'dimensions' mapping", file=where, field="dimensions")
    for dimension, spec in preset["dimensions"].items():
        if problem := _name_problem(dimension):
            raise DataError(f"dimension {dimension!r} {problem}", file=where, field="dimensions")
        if not isinstance(spec, dict) or not isinstance(spec.get("settings"), list) or not spec["settings"]:
            raise DataError("needs a non-empty 'settings' list", file=where, field=f"dimensions.{dimension}")
        for i, setting in enumerate([spec.get("defaults") or {}] + spec["settings"]):
            label = "defaults" if i == 0 else f"settings[{i - 1}]"
            _check_setting(setting, f"{where}, dimensions.{dimension}.{label}")


def _name_problem(name: Any) -> str | None:
    """What keeps a dimension or setting name from being one folder under OUT, in words; None when nothing.

    Names become folders (``OUT/<dimension>/<name>``) and ``dimension/name`` references: a separator, ``..``
    or an absolute path would write outside OUT, a control character makes a name no one can type.
    """
    if not isinstance(name, str):
        return "must be a name (text)"
    if not is_folder_name(name):
        return "must be a folder name: not empty, '.' or '..', without '/', '\\' or control characters"
    return None


def _check_setting(setting: Any, where: str) -> None:
    """The keys of one entry, their types, then their ranges (a negative count would slice rows away)."""
    if not isinstance(setting, dict):
        raise DataError(f"must be a mapping of key: value, got {setting!r}", file=where)
    check_values(setting, field_types(SettingSpec), where, DataError)
    if setting.get("name") is not None and (problem := _name_problem(setting["name"])):
        raise DataError(f"name = {setting['name']!r} {problem}", file=where)
    for key in _COUNTS:
        value = setting.get(key)
        if isinstance(value, int) and not 1 <= value <= MAX_COUNT:
            raise DataError(f"{key} = {value} must be at least 1 and at most {MAX_COUNT}", file=where)
    if "resolution" in setting:
        try:
            check_resolution(setting["resolution"])
        except ValueError as error:
            raise DataError(f"{error}, so no store can hold it", file=where) from None


def expand_preset(preset: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(dimension, setting name, full setting spec) for every setting of the preset."""
    where = f"preset {preset.get('name', '')}".strip() if isinstance(preset, dict) else "preset"
    _validate_preset(preset, where)
    out = []
    for dimension, spec in preset["dimensions"].items():
        for i, override in enumerate(spec["settings"]):
            setting = {**DEFAULTS, **(spec.get("defaults") or {}), **override}
            name = setting.pop("name", None) or "_".join(
                f"{short}{override[key]}" for key, short in _NAME_PARTS if key in override
            )
            if not name:  # an empty name would write the setting into OUT/<dimension> itself
                raise DataError(f"needs a 'name': it sets none of {[key for key, _ in _NAME_PARTS]} to name it by",
                                file=f"{where}, dimensions.{dimension}.settings[{i}]")
            out.append((dimension, name, setting))
    names = [f"{d}/{n}" for d, n, _ in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"setting names repeat: {duplicates}; give each setting a 'name'", field="settings")
    return out


# ---- building one setting -------------------------------------------------------------------


@dataclass
class _Pool:
    """The store's rows grouped by (combination, fold), each in one seeded order."""

    keys: np.ndarray
    splits: np.ndarray
    label_names: list[str]
    seed: int

    def __post_init__(self) -> None:
        table = pd.DataFrame({"key": self.keys, "fold": self.splits})
        self._rows = table.groupby(["key", "fold"]).indices  # (key, fold) -> row positions

    def counts(self) -> pd.Series:
        """Images per combination over all folds, most frequent first (ties by key)."""
        return pd.Series(self.keys).value_counts().sort_index(kind="stable").sort_values(ascending=False, kind="stable")

    def ordered(self, dimension: str, key: str, fold: str) -> np.ndarray:
        rows = self._rows.get((key, fold), np.empty(0, dtype=np.int64))
        return _rng(self.seed, dimension, key, fold).permutation(rows)


def _rng(seed: int, *parts: str) -> np.random.Generator:
    return np.random.default_rng([seed] + [zlib.crc32(p.encode()) for p in parts])


def _combination_label(pool: _Pool, key: str) -> str:
    return f"{combination_name(key, pool.label_names)!r} ({key})"


def build_setting(pool: _Pool, dimension: str, name: str, spec: dict[str, Any]) -> tuple[dict, pd.DataFrame]:
    where = f"setting {dimension}/{name}"
    counts = pool.counts()
    eligible = counts[counts >= spec["min_images_per_combination"]]
    k = spec["combinations"]
    if k == "all":
        chosen = list(eligible.index)
    else:
        if len(eligible) < k:
            raise DataError(
                f"{where}: asks for {k} label combinations with at least {spec['min_images_per_combination']} "
                f"images each; the store has {len(eligible)} such combination(s) (the largest has {counts.max()} "
                "images)")
        chosen = list(eligible.index[:k])
    if not chosen:
        raise DataError(f"{where}: no label combination qualifies")

    rows: list[tuple[str, int]] = []
    summary = []
    for key in chosen:
        entry = {"key": key, "name": combination_name(key, pool.label_names)}
        for fold in SPLITS:
            picked = _pick(pool, dimension, where, key, fold, spec)
            rows.extend((fold, int(i)) for i in picked)
            entry[fold] = len(picked)
            if fold == "train":
                entry["train_unique"] = len(np.unique(picked))
        summary.append(entry)
    table = pd.DataFrame(rows, columns=["fold", "store_index"])
    for fold in ("val", "test"):
        total = spec[f"{fold}_total"]
        if total is not None:
            table = _limit_fold(table, pool, dimension, where, fold, int(total))
    per_fold = pd.crosstab(pool.keys[table.store_index.to_numpy()], table.fold.to_numpy())
    for entry in summary:
        for fold in ("val", "test"):
            entry[fold] = int(per_fold.at[entry["key"], fold]) if fold in per_fold else 0

    label_columns = list(range(len(pool.label_names)))
    if spec["drop_empty_labels"]:
        bits = np.array([[c == "1" for c in key] for key in chosen])
        label_columns = [j for j in label_columns if bits[:, j].any()]
    for entry in summary:
        entry["key"] = "".join(entry["key"][j] for j in label_columns)
    meta = {
        "dimension": dimension,
        "name": name,
        "resolution": int(spec["resolution"]),
        "label_names": [pool.label_names[j] for j in label_columns],
        "label_columns": label_columns,
        "combinations": summary,
        "counts": {fold: int((table.fold == fold).sum()) for fold in SPLITS},
        "spec": spec,
    }
    return meta, table


def _pick(pool: _Pool, dimension: str, where: str, key: str, fold: str, spec: dict[str, Any]) -> np.ndarray:
    ordered = pool.ordered(dimension, key, fold)
    wanted = spec["train_per_combination"] if fold == "train" else spec[f"{fold}_per_combination"]
    if wanted in (None, "all"):
        return ordered
    wanted = int(wanted)
    if len(ordered) >= wanted:
        return ordered[:wanted]
    if fold == "train" and spec["oversample"] and len(ordered):
        extra = _rng(pool.seed, dimension, where, key).choice(ordered, wanted - len(ordered), replace=True)
        return np.concatenate([ordered, extra])
    raise DataError(
        f"{where}: combination {_combination_label(pool, key)} has {len(ordered)} {fold} images, "
        f"{wanted - len(ordered)} short of the {wanted} asked for")


def _limit_fold(table: pd.DataFrame, pool: _Pool, dimension: str, where: str, fold: str, total: int) -> pd.DataFrame:
    in_fold = table[table.fold == fold]
    if len(in_fold) < total:
        raise DataError(f"{where}: asks for {total} {fold} images; the kept combinations have {len(in_fold)}, "
                        f"{total - len(in_fold)} short")
    keep = _rng(pool.seed, dimension, fold, "total").permutation(in_fold.index.to_numpy())[:total]
    return pd.concat([table[table.fold != fold], table.loc[np.sort(keep)]], ignore_index=True)


# ---- the whole preset -----------------------------------------------------------------------


def plan_settings(
    preset: dict[str, Any], labels: np.ndarray, splits: np.ndarray, label_names: list[str], seed: int = 0
) -> list[tuple[str, str, dict[str, Any], pd.DataFrame]]:
    """Every setting of a loaded preset, in memory: (dimension, name, metadata, rows).

    Needs only labels and folds, so a preset can be checked against a label table
    (e.g. CheXpert's train.csv) before any image is decoded.
    """
    pool = _Pool(combination_key(labels), np.asarray(splits, dtype=object), list(label_names), seed)
    return [(d, n, *build_setting(pool, d, n, s)) for d, n, s in expand_preset(preset)]


def build_settings(
    preset: str | os.PathLike,
    store: str | os.PathLike | Store,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Write every setting of ``preset`` for ``store`` under ``out``; returns their summaries."""
    if problem := seed_problem(seed):
        raise DataError(f"seed {seed} {problem}", field="seed")
    store = store if isinstance(store, Store) else Store(store)
    spec = load_preset(preset)
    identity = {
        "preset": spec.get("name", str(preset)),
        "preset_hash": hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest(),
        "store": str(Path(store.path).resolve()),
        "store_content_hash": store.manifest["content_hash"],
        "seed": seed,
    }
    out = Path(out)
    index_file = out / INDEX_FILE

    def same() -> bool:
        previous = read_json(index_file)
        return {k: previous.get(k) for k in identity} == identity

    if claim_output_dir(out, INDEX_FILE, "benchmark settings", same=same, overwrite=overwrite,
                        if_taken="pass --overwrite to replace them"):
        log(f"{out} already holds these settings; nothing to do")
        return read_json(index_file)["settings"]

    built = plan_settings(spec, store.labels, store.splits, store.label_names, seed)  # all checks before any write
    for dimension, name, meta, _ in built:
        if meta["resolution"] not in store.resolutions:
            log(f"note: {dimension}/{name} is at {meta['resolution']}x{meta['resolution']}, which the store "
                f"does not hold yet (it has {store.resolutions}); prepare it with --resolution "
                f"{meta['resolution']} before training this setting")
    _write_settings(out, identity, built)
    return read_json(index_file)["settings"]


def _write_settings(out: Path, identity: dict[str, Any], built: list) -> None:
    """Write into a temporary sibling directory, then swap it in: ``out`` is never half-written."""
    with staged_dir(out) as tmp:
        summaries = []
        for dimension, name, meta, table in built:
            write_setting(tmp / dimension / name, {**identity, **meta}, table)
            summaries.append({"dimension": dimension, "name": name, "path": f"{dimension}/{name}",
                              "resolution": meta["resolution"], "labels": len(meta["label_names"]),
                              "combinations": len(meta["combinations"]), **meta["counts"]})
        write_json_atomic(tmp / INDEX_FILE, {**identity, "settings": summaries})


def write_setting(folder: Path, meta: dict[str, Any], rows: pd.DataFrame) -> None:
    """A setting directory: ``meta`` (store, label names and columns, resolution...) and its rows (fold, store_index)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(folder / ROWS_FILE, index=False)
    write_json_atomic(folder / SETTING_FILE, meta)


# ---- reading a setting back (what a training run points at) ---------------------------------------


_SETTING_KEYS = ("store", "store_content_hash", "label_names", "label_columns", "resolution")  # what is read of it


class BenchmarkSetting:
    """One setting directory: its rows, labels (kept columns only) and images from the store."""

    def __init__(self, path: str | os.PathLike, store: Store | None = None):
        self.path = Path(path)
        if not (self.path / SETTING_FILE).is_file():
            raise DataError(f"not a benchmark setting (no {SETTING_FILE})", file=self.path)
        self.meta = read_json(self.path / SETTING_FILE)
        if missing := [key for key in _SETTING_KEYS if key not in self.meta]:
            raise DataError(f"lacks {missing}: damaged, or made by another synthmed version; build the settings again",
                            file=self.path / SETTING_FILE)
        store_path = Path(self.meta["store"])  # relative paths are relative to the setting
        self.store = store or Store(store_path if store_path.is_absolute() else self.path / store_path)
        if self.store.manifest["content_hash"] != self.meta["store_content_hash"]:
            raise DataError(f"was built from another version of the store {self.store.path}; rebuild the settings",
                            file=self.path)
        self.table = read_table(self.path / ROWS_FILE)

    @property
    def label_names(self) -> list[str]:
        return list(self.meta["label_names"])

    @property
    def resolution(self) -> int:
        return int(self.meta["resolution"])

    def rows(self, fold: str) -> np.ndarray:
        if fold not in SPLITS:
            raise DataError(f"unknown fold {fold!r}: expected one of {SPLITS}", field="fold")
        return self.table.loc[self.table.fold == fold, "store_index"].to_numpy()

    def labels(self, fold: str) -> np.ndarray:
        return self.store.labels[self.rows(fold)][:, self.meta["label_columns"]]

    def images(self, fold: str) -> np.ndarray:
        """uint8 (n, C, R, R), read from the memory-mapped store (loads only these rows)."""
        return self.store.images(self.resolution)[self.rows(fold)]
