"""Synthetic sets made elsewhere, in a sweep: a preset's ``models: {NAME: {external: DIR}}``.

DIR holds, for every setting and seed the sweep runs, one source that ``synthmed import`` reads::

    DIR/<dimension>/<setting>/seed<N>/       a folder: train.csv, val.csv, test.csv beside the images
                                             (generate's export/), or train/, val/, test/ with a CSV each
    DIR/<dimension>/<setting>/seed<N>.npz    or an .npz (<fold>_images and <fold>_labels)
    DIR/<dimension>/<setting>/seed<N>.csv    or one CSV (a fold column, or any image for any fold)

e.g. ``mygen/samples/n100/seed0.npz``. Such a model has no train or generate jobs: its ``import`` job
matches the source against the sweep's own real setting, as ``synthmed import`` does (``importing.py``,
choosing with the seed where the source has more images), and utility, fidelity, privacy and
attribution maps follow as for a trained model; it gets its own rows in the results table and its
own rows and bars in the report. The import job's key holds each source file's name, size and
modification time, so a source that changes is imported and evaluated again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from synthmed.errors import ConfigError

FORMATS = ("", ".npz", ".csv")  # seed<N>/ (a folder), seed<N>.npz, seed<N>.csv


def source(folder: str | Path, dimension: str, setting: str, seed: int) -> Path:
    """The import source of one setting and seed; a ConfigError names what is missing or ambiguous."""
    base = Path(folder) / dimension / setting / f"seed{seed}"
    found = [path for path in (base.with_name(base.name + suffix) for suffix in FORMATS) if path.exists()]
    if not found:
        raise ConfigError(f"{base} not found: expected a folder seed{seed}/, seed{seed}.npz or seed{seed}.csv "
                          f"with the synthetic images of {dimension}/{setting}, seed {seed}")
    if len(found) > 1:
        raise ConfigError(f"{base}: more than one source ({', '.join(p.name for p in found)}); keep one")
    return found[0]


def fingerprint(path: Path) -> str:
    """A hash of every file's relative name, size and modification time under ``path`` (or of ``path``)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}\0{stat.st_size}\0"
                      f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
