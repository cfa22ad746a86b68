"""The prepared store: uint8 image arrays at several resolutions that can be memory-mapped.

Layout of a store directory::

    manifest.json        source, parameters, versions, counts, content hash
    images_<R>.npy       uint8 (N, C, R, R) per prepared resolution R
    labels.npy           uint8 (N, L); label names are in the manifest
    records.parquet      per image: key, original path, group (int), split, combination
    skipped.csv          images that could not be decoded, with the reason
    masks_<R>.npy        only from a source with lesion masks (phantom-cxr): unsigned ints (N, R, R),
                         bit j set where label j's finding is (``unpack_masks``; any part of the
                         pixel counts, so small findings survive at low resolution)

``prepare`` streams: workers decode a batch, the main process appends the batch to raw
files in ``<out>.partial/`` and records how far it got in ``progress.json``. A killed run
restarts from the last finished batch; only when everything is written does the partial
directory get its manifest and is renamed to ``<out>`` (so ``<out>`` is always complete).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthmed import __version__
from synthmed._io import read_json, write_json_atomic, write_with_atomic
from synthmed.config import describe, matches, seed_problem
from synthmed.data.imaging import SCALINGS, Decoded, base_size, decode, mask_dtype, unpack_masks
from synthmed.data.neardup import DEFAULT_THRESHOLD, near_duplicate_groups
from synthmed.data.records import SPLITS, Record, SourceData, combination_key
from synthmed.data.splits import grouped_split
from synthmed.errors import DataError
from synthmed.output_dir import claim_output_dir, move_into_place
from synthmed.progress import progress_bar

FORMAT_VERSION = 1
_COPY_ROWS = 1024  # rows per chunk when turning raw files into .npy
# decoding is CPU-bound: more processes than this per core only add memory (each holds a base-size image)
# and start-up time; --workers 100000 forked until the machine hung
WORKERS_PER_CORE = 4


MANIFEST, LABELS, RECORDS, SKIPPED = "manifest.json", "labels.npy", "records.parquet", "skipped.csv"


def images_file(resolution: int) -> str:
    return f"images_{resolution}.npy"


def masks_file(resolution: int) -> str:
    return f"masks_{resolution}.npy"


def read_array(path: Path, memory_mapped: bool = False) -> np.ndarray:
    """One of a store's .npy arrays; a missing or damaged (truncated, edited) one is a DataError naming it."""
    try:
        return np.load(path, mmap_mode="r" if memory_mapped else None)
    except (OSError, ValueError, EOFError) as failure:
        raise DataError(f"is missing or damaged ({failure}); prepare the store again", file=path) from None


def read_table(path: Path) -> pd.DataFrame:
    """A store's or a setting's .parquet table; a missing or damaged one is a DataError naming it."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as failure:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"is missing or damaged ({type(failure).__name__}: {failure})", file=path) from None


# what of a manifest is read (here and by ``data info``), and its type: a hand-edited one is refused on opening,
# not met as a TypeError later (``lesion_masks`` may be left out: stores made before masks lack it)
_MANIFEST_TYPES = {"source": str, "source_params": dict, "label_names": list[str], "resolutions": list[int],
                   "n_images": int, "n_skipped": int, "channels": int, "group_method": str, "split_method": str,
                   "content_hash": str, "lesion_masks": bool | None}


def _check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """The keys of ``_MANIFEST_TYPES``, their types, then the ranges of the numbers."""
    for key, hint in _MANIFEST_TYPES.items():
        if not matches(manifest.get(key), hint):
            problem = "is missing" if key not in manifest else f"{manifest[key]!r} must be {describe(hint)}"
            raise DataError(f"{problem}; prepare the store again", file=path, field=key)
    sizes = manifest["resolutions"]
    for key, wanted, ok in (("resolutions", "one or more sizes >= 1", bool(sizes) and min(sizes) >= 1),
                            ("n_images", "at least 0", manifest["n_images"] >= 0),
                            ("channels", "at least 1", manifest["channels"] >= 1)):
        if not ok:
            raise DataError(f"{manifest[key]!r} must be {wanted}; prepare the store again", file=path, field=key)


class Store:
    """Read access to a prepared store; image arrays are memory-mapped, not loaded."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise DataError("not a prepared store (no manifest.json); run `synthmed data prepare` first", file=self.path)
        self.manifest: dict[str, Any] = read_json(manifest_path)
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise DataError(f"store format {self.manifest.get('format_version')} is not {FORMAT_VERSION}", file=manifest_path)
        _check_manifest(self.manifest, manifest_path)

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest["label_names"])

    @property
    def resolutions(self) -> list[int]:
        return list(self.manifest["resolutions"])

    def __len__(self) -> int:
        return int(self.manifest["n_images"])

    def images(self, resolution: int) -> np.ndarray:
        """uint8 array (N, C, R, R), memory-mapped."""
        if resolution not in self.resolutions:
            raise DataError(
                f"store has resolutions {self.resolutions}, not {resolution}; "
                f"prepare it again with --resolution {resolution}",
                file=self.path,
            )
        path = self.path / images_file(resolution)
        images = read_array(path, memory_mapped=True)
        expected = (len(self), self.manifest["channels"], resolution, resolution)
        # a replaced file (float, cut, other size) would fail far away: as a PNG, an index, or wrong pixels unseen
        if images.dtype != np.uint8 or images.shape != expected:
            raise DataError(f"is {images.dtype} {images.shape}; {MANIFEST} says uint8 {expected}; "
                            "prepare the store again", file=path)
        return images

    @property
    def has_masks(self) -> bool:
        return bool(self.manifest.get("lesion_masks", False))

    def masks(self, resolution: int, index: int | np.ndarray | slice = slice(None)) -> np.ndarray:
        """Lesion masks of the images at ``index``: bool (..., labels, R, R)."""
        if not self.has_masks:
            raise DataError(f"store of source {self.manifest['source']!r} has no lesion masks", file=self.path)
        self.images(resolution)  # the same check of the resolution
        bits = read_array(self.path / masks_file(resolution), memory_mapped=True)[index]
        return unpack_masks(bits, len(self.label_names))

    @property
    def labels(self) -> np.ndarray:
        labels = read_array(self.path / LABELS)
        expected = (len(self), len(self.label_names))
        if labels.shape != expected:  # a row per image, a column per name: else labels and names would pair wrongly
            raise DataError(f"has shape {labels.shape}; {MANIFEST} says {expected[0]} images and {expected[1]} "
                            "label_names; prepare the store again", file=self.path / LABELS)
        return labels

    @property
    def records(self) -> pd.DataFrame:
        return read_table(self.path / RECORDS)

    @property
    def groups(self) -> np.ndarray:
        return self.records["group"].to_numpy()

    @property
    def splits(self) -> np.ndarray:
        return self.records["split"].to_numpy().astype(object)

    def verify(self) -> None:
        """Hash the store's files again against the manifest's ``content_hash``: a file changed, cut short or
        lost since ``prepare`` (a disk fault, a partial copy, an edit) is a DataError naming the store."""
        try:
            found = content_hash(self.path, self.resolutions, self.has_masks)
        except OSError as error:
            raise DataError(f"cannot be verified: {error.strerror or error} ({error.filename})", file=self.path) from None
        if found != self.manifest["content_hash"]:
            raise DataError("its files changed since it was prepared (content hash differs from manifest.json); "
                            "prepare it again", file=self.path)


def prepare(
    source: SourceData,
    out: str | os.PathLike,
    *,
    resolutions: Sequence[int] = (32,),
    scaling: str = "max",
    max_bad_fraction: float = 0.01,
    seed: int = 0,
    near_duplicate_threshold: int = DEFAULT_THRESHOLD,
    workers: int | None = None,
    batch_size: int = 256,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Store:
    """Decode every record of ``source`` into a store at ``out`` (idempotent and resumable)."""
    resolutions = sorted(set(int(r) for r in resolutions))
    if not resolutions:
        raise DataError("give at least one resolution", field="resolution")
    try:
        base = base_size(resolutions)
    except ValueError as error:
        raise DataError(str(error), field="resolution") from None
    if scaling not in SCALINGS:
        raise DataError(f"unknown scaling {scaling!r}: expected one of {SCALINGS}", field="scaling")
    most_workers = WORKERS_PER_CORE * (os.cpu_count() or 1)
    if workers is not None and not 1 <= workers <= most_workers:
        raise DataError(f"workers = {workers}: give at least 1 and at most {most_workers} decoding processes "
                        f"({WORKERS_PER_CORE} per CPU core; leave it out for one per core)", field="workers")
    if not 0 <= max_bad_fraction <= 1:
        raise DataError(f"max_bad_fraction {max_bad_fraction} is not in [0, 1]", field="max_bad_fraction")
    if problem := seed_problem(seed):
        raise DataError(f"seed {seed} {problem}", field="seed")
    if not source.records:
        raise DataError(f"source {source.name!r} has no images")
    _check_unique_keys(source.records)

    params = {
        "resolutions": resolutions,
        "base_size": base,
        "scaling": scaling,
        "seed": seed,
        "near_duplicate_threshold": near_duplicate_threshold,
    }
    fingerprint = _fingerprint(source, params)
    out = Path(out)
    if claim_output_dir(out, MANIFEST, "a store", overwrite=overwrite,
                        same=lambda: Store(out).manifest.get("fingerprint") == fingerprint):
        log(f"{out} is already prepared from the same inputs; nothing to do")
        return Store(out)

    partial = out.with_name(out.name + ".partial")
    state = _open_partial(partial, fingerprint, resolutions, source.masks)
    records = source.records
    if state["done"]:
        log(f"resuming: {state['done']} of {len(records)} images were already decoded")
    _decode_all(records, partial, state, resolutions, scaling, source.masks, workers, batch_size, progress)
    try:
        _finalize(source, partial, state, params, fingerprint, max_bad_fraction, log)
    except DataError:
        shutil.rmtree(partial)  # the inputs must change before a rerun; keep nothing half-made
        raise
    move_into_place(partial, out)
    return Store(out)


def _check_unique_keys(records: list[Record]) -> None:
    seen: dict[str, str] = {}
    for record in records:
        if record.key in seen:
            raise DataError(f"duplicate image id {record.key!r} (also {seen[record.key]})", file=record.path)
        seen[record.key] = record.path


def _fingerprint(source: SourceData, params: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    header = {"format": FORMAT_VERSION, "source": source.name, "params": source.params,
              "labels": source.label_names, "prepare": params}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for r in source.records:
        digest.update(f"{r.key}\0{r.path}\0{r.labels}\0{r.group}\0{r.split}\0{r.loader.fingerprint()}\n".encode())
    return digest.hexdigest()


# ---- decoding, in batches, with a checkpoint after each batch --------------------------------


def _raw_files(partial: Path, resolutions: list[int], masks: bool) -> dict[str, Path]:
    files = {f"images_{r}": partial / f"images_{r}.u8" for r in resolutions}
    if masks:
        files.update({f"masks_{r}": partial / f"masks_{r}.bits" for r in resolutions})
    files["results"] = partial / "results.jsonl"
    return files


def _open_partial(partial: Path, fingerprint: str, resolutions: list[int], masks: bool) -> dict[str, Any]:
    """Load the checkpoint of an interrupted run of the same inputs, or start afresh."""
    progress_file = partial / "progress.json"
    if progress_file.is_file():
        state = read_json(progress_file)
        if state.get("fingerprint") == fingerprint:
            # Anything written after the last checkpoint belongs to an unfinished batch: cut it off.
            for name, path in _raw_files(partial, resolutions, masks).items():
                with open(path, "ab") as f:
                    f.truncate(state["sizes"][name])
            return state
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    for path in _raw_files(partial, resolutions, masks).values():
        path.touch()
    state = {"fingerprint": fingerprint, "done": 0, "channels": None,
             "sizes": {name: 0 for name in _raw_files(partial, resolutions, masks)}}
    write_json_atomic(progress_file, state)
    return state


def _decode_one(task: tuple[Any, list[int], str, bool]) -> Decoded | str:
    """Worker entry point: the decoded pyramid, or the reason the image is unusable."""
    loader, resolutions, scaling, masks = task
    try:
        return decode(loader, resolutions, scaling, masks)
    except Exception as error:  # noqa: BLE001 - any failure of one file is reported, not fatal
        return f"{type(error).__name__}: {error}".strip()


def _default_sigterm() -> None:
    """A worker's first act: SIGTERM kills it again. Forked workers inherit their parent's handlers, and a submitit job
    (``synthmed benchmark --executor slurm``) logs SIGTERM and carries on, so ``Pool.terminate`` could not stop a
    worker left waiting for the task queue's lock, and the job hung."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _worker_pool(workers: int):
    """Worker processes, started before any progress-bar thread exists.

    On Linux they are forked (fast, and works from a script without a ``__main__`` guard);
    elsewhere they are spawned.
    """
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return get_context(method).Pool(workers, initializer=_default_sigterm)


def _decode_all(records, partial, state, resolutions, scaling, masks, workers, batch_size, progress) -> None:
    workers = workers or os.cpu_count() or 1
    files = _raw_files(partial, resolutions, masks)
    pool = _worker_pool(workers) if workers > 1 else None
    try:
        with progress_bar(len(records), "decoding", progress, completed=state["done"]) as bar:
            for start in range(state["done"], len(records), batch_size):
                batch = records[start : start + batch_size]
                tasks = [(r.loader, resolutions, scaling, masks) for r in batch]
                if pool is None:
                    results = map(_decode_one, tasks)
                else:
                    results = pool.imap(_decode_one, tasks, chunksize=max(1, len(tasks) // (4 * workers)))
                _append_batch(start, results, files, state, bar)
                state["done"] = start + len(batch)
                state["sizes"] = {name: path.stat().st_size for name, path in files.items()}
                write_json_atomic(partial / "progress.json", state)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def _append_batch(start: int, results, files: dict[str, Path], state: dict[str, Any], bar) -> None:
    handles = {name: open(path, "ab") for name, path in files.items()}
    try:
        for offset, result in enumerate(results):
            row: dict[str, Any] = {"i": start + offset}
            if isinstance(result, Decoded):
                channels = next(iter(result.pyramid.values())).shape[0]
                state["channels"] = state["channels"] or channels
                if channels != state["channels"]:
                    result = f"image has {channels} channels, the others have {state['channels']}"
            if isinstance(result, Decoded):
                for size, pixels in result.pyramid.items():
                    handles[f"images_{size}"].write(pixels.tobytes())
                for size, bits in (result.masks or {}).items():
                    handles[f"masks_{size}"].write(bits.tobytes())
                row.update(ok=True, dhash=str(result.dhash), patient=_pseudonym(result.patient_id))
            else:
                row.update(ok=False, reason=result)
            handles["results"].write((json.dumps(row) + "\n").encode())
            bar.advance()
    finally:
        for handle in handles.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()


def _pseudonym(patient_id: str | None) -> str | None:
    """Patient ids from image headers only ever serve to group; keep a hash, not the id."""
    return hashlib.sha256(patient_id.encode()).hexdigest()[:20] if patient_id else None


# ---- finishing: groups, split, .npy files, manifest -------------------------------------------


def _finalize(source, partial, state, params, fingerprint, max_bad_fraction, log) -> None:
    rows = [json.loads(line) for line in (partial / "results.jsonl").read_text().splitlines()]
    records = source.records
    ok = [row for row in rows if row["ok"]]
    bad = [(records[row["i"]].path, row["reason"]) for row in rows if not row["ok"]]
    if bad:
        log(f"skipped {len(bad)} unreadable image(s):")
        for path, reason in bad[:20]:
            log(f"  {path}: {reason}")
        if len(bad) > 20:
            log(f"  ... and {len(bad) - 20} more (all listed in skipped.csv)")
    if len(bad) > max_bad_fraction * len(records) or not ok:
        listing = "; ".join(f"{path}: {reason}" for path, reason in bad[:10])
        raise DataError(
            f"{len(bad)} of {len(records)} images could not be read, more than the allowed "
            f"fraction {max_bad_fraction} (--max-bad-fraction). First ones: {listing}",
            file=source.name,
        )

    kept = [records[row["i"]] for row in ok]
    labels = np.array([r.labels for r in kept], dtype=np.uint8).reshape(len(kept), len(source.label_names))
    groups, group_method = _assign_groups(kept, ok, params["near_duplicate_threshold"])
    splits, split_method = _assign_splits(kept, labels, groups, params["seed"])
    n_groups = len(np.unique(groups))
    log(f"{len(kept)} images in {n_groups} groups ({group_method})")

    channels = int(state["channels"])
    for size in params["resolutions"]:
        _raw_to_npy(partial / f"images_{size}.u8", partial / images_file(size), (len(kept), channels, size, size))
        if source.masks:
            _raw_to_npy(partial / f"masks_{size}.bits", partial / masks_file(size), (len(kept), size, size),
                        mask_dtype(len(source.label_names)))
    write_store(partial, labels=labels, keys=[r.key for r in kept], paths=[r.path for r in kept], groups=groups,
                splits=splits, skipped=bad, source=source.name, source_params=source.params,
                source_versions=source.versions, label_names=source.label_names, channels=channels, **params,
                group_method=group_method, split_method=split_method, fingerprint=fingerprint,
                lesion_masks=source.masks)
    # The checkpoint goes first: a run killed after this starts afresh, whereas a checkpoint
    # without its raw files would be "resumed" from zero-filled files.
    (partial / "progress.json").unlink()
    for path in _raw_files(partial, params["resolutions"], source.masks).values():
        path.unlink()


def _assign_groups(kept: list[Record], ok: list[dict], threshold: int) -> tuple[np.ndarray, str]:
    """Integer group per image: the source's patient id, else the header's, else near-duplicates."""
    names = [r.group if r.group is not None else row.get("patient") for r, row in zip(kept, ok)]
    missing = [i for i, name in enumerate(names) if name is None]
    method = "patient id"
    if missing:
        hashes = np.array([int(ok[i]["dhash"]) for i in missing], dtype=np.uint64)
        for i, group in zip(missing, near_duplicate_groups(hashes, threshold)):
            names[i] = f"near-duplicate:{group}"
        method = "near-duplicate dHash, threshold %d bits" % threshold
        if len(missing) < len(names):
            method = f"patient id; {len(missing)} images without one by near-duplicate dHash (threshold {threshold})"
    codes, _ = pd.factorize(pd.Series(names, dtype=object))
    return codes.astype(np.int64), method


def _assign_splits(kept: list[Record], labels: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    given = [r.split for r in kept]
    if all(s is not None for s in given):
        return np.array(given, dtype=object), "official split of the source"
    if any(s is not None for s in given):
        raise DataError("some records carry an official split and others do not")
    try:
        return grouped_split(labels, groups, seed), f"grouped stratified 80/10/10, seed {seed}"
    except ValueError as error:
        raise DataError(str(error)) from None


def _raw_to_npy(raw: Path, target: Path, shape: tuple[int, ...], dtype: np.dtype = np.dtype(np.uint8)) -> None:
    expected = int(np.prod(shape)) * dtype.itemsize
    if raw.stat().st_size != expected:
        raise RuntimeError(f"{raw} holds {raw.stat().st_size} bytes, expected {expected}")
    source = np.memmap(raw, dtype=dtype, mode="r", shape=shape) if expected else np.zeros(shape, dtype)

    def write(tmp: Path) -> None:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        for start in range(0, shape[0], _COPY_ROWS):
            array[start : start + _COPY_ROWS] = source[start : start + _COPY_ROWS]
        array.flush()
        del array

    write_with_atomic(target, write, suffix=".npy")


# ---- the files of a store: the one writer, for prepared and synthetic stores --------------------


def write_images(folder: Path, resolution: int, images: np.ndarray) -> None:
    """``images_<R>.npy`` of a store whose images are in memory (a prepared store streams them instead)."""
    np.save(folder / images_file(resolution), images)


def write_store(folder: Path, *, labels: np.ndarray, keys: Sequence[str], paths: Sequence[str], groups: np.ndarray,
                splits: Sequence[str], skipped: Sequence[tuple[str, str]], source: str, source_params: dict[str, Any],
                source_versions: dict[str, Any], label_names: list[str], channels: int, resolutions: list[int],
                base_size: int, scaling: str, seed: int, near_duplicate_threshold: int | None, group_method: str,
                split_method: str, fingerprint: str | None, lesion_masks: bool = False) -> dict[str, Any]:
    """The tables and, last, the manifest of a store whose ``images_<R>.npy`` are already in ``folder``.

    One row per image: ``keys``, original ``paths``, integer ``groups`` and ``splits``; ``skipped``
    lists (path, reason) of the images left out; ``lesion_masks``: ``masks_<R>.npy`` are there too.
    Returns the manifest.
    """
    splits = np.asarray(splits, dtype=object)
    np.save(folder / LABELS, labels)
    pd.DataFrame({"key": list(keys), "path": list(paths), "group": groups, "split": splits,
                  "combination": combination_key(labels)}).to_parquet(folder / RECORDS, index=False)
    with open(folder / SKIPPED, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason"])
        writer.writerows(skipped)
    manifest = {
        "format_version": FORMAT_VERSION,
        "synthmed_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "source_params": source_params,
        "source_versions": source_versions,
        "label_names": label_names,
        "n_images": len(keys),
        "n_skipped": len(skipped),
        "n_groups": len(np.unique(groups)),
        "channels": channels,
        "resolutions": resolutions,
        "base_size": base_size,
        "scaling": scaling,
        "seed": seed,
        "near_duplicate_threshold": near_duplicate_threshold,
        "group_method": group_method,
        "split_method": split_method,
        "split_counts": {s: int((splits == s).sum()) for s in SPLITS},
        "fingerprint": fingerprint,
        "lesion_masks": lesion_masks,
        "content_hash": content_hash(folder, resolutions, lesion_masks),
    }
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def content_hash(directory: Path, resolutions: list[int], lesion_masks: bool = False) -> str:
    digest = hashlib.sha256()
    masks = [masks_file(r) for r in resolutions] if lesion_masks else []
    for name in [images_file(r) for r in resolutions] + masks + [LABELS, RECORDS]:
        with open(directory / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
