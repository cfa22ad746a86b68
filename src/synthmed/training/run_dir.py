"""The run directory of a training run: the names of its files, and reading them back.

::

    config.yaml  run.json        resolved config; setting, store hash, labels, seed (run.json marks a run)
    checkpoint.pt                latest full state (atomic)
    best_generator.pt            EMA generator at the best FID so far
    snapshots/                   generator_<images>.pt every ``snapshot_every`` images (optional)
    generator.pt  summary.json   written at the end: the generator to sample from
    log.csv  tb/  samples/       losses, images/s and FID; TensorBoard; sample grids
    fid_real_stats_<extractor>.npz   cached feature statistics of the real training rows
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from synthmed._io import read_json
from synthmed.config import describe, matches
from synthmed.errors import ConfigError, DataError

GENERATOR = "generator.pt"
# what run.json holds that a run is trained and sampled from, and the type of each
INFO_KEYS = {"setting": str, "setting_name": str, "store_content_hash": str, "resolution": int,
             "label_names": list[str], "image_channels": int, "config_digest": str}


class RunDir:
    """A run directory's files by name; ``RunDir.existing`` for one that must hold a run."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def existing(cls, path: str | os.PathLike, option: str = "--resume") -> RunDir:
        """The run at ``path``, or a one-line error naming it when it is none."""
        run = cls(path)
        if not run.is_run():
            raise ConfigError(f"is not a training run (no {run.info.name}, {run.config.name}): start one with "
                              "`synthmed train --config ... --data ... --out ...`", file=f"{option} {run.path}")
        return run

    def is_run(self) -> bool:
        return self.info.is_file() and self.config.is_file()

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def info(self) -> Path:
        return self.path / "run.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def best(self) -> Path:
        return self.path / "best_generator.pt"

    @property
    def generator(self) -> Path:
        return self.path / GENERATOR

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def log(self) -> Path:
        return self.path / "log.csv"

    @property
    def tb(self) -> Path:
        return self.path / "tb"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def snapshots(self) -> Path:
        return self.path / "snapshots"

    def snapshot(self, images_seen: int) -> Path:
        return self.snapshots / f"generator_{images_seen:010d}.pt"

    def sample_grid(self, images_seen: int) -> Path:
        return self.samples / f"images_{images_seen:010d}.png"

    def real_stats(self, extractor_name: str) -> Path:
        """Cached feature statistics of the real rows, one file per extractor."""
        slug = "".join(c if c.isalnum() else "-" for c in extractor_name).strip("-")
        return self.path / f"fid_real_stats_{slug}.npz"

    def read_info(self) -> dict[str, Any]:
        """run.json, with the keys that training and ``generate`` read, each of its type (it may be hand-edited)."""
        info = read_json(self.info)
        for key, hint in INFO_KEYS.items():
            if key not in info:
                raise DataError(f"is damaged: it has no {key!r} (start the run again)", file=self.info)
            if not matches(info[key], hint):
                raise DataError(f"is damaged: {key} = {info[key]!r} must be {describe(hint)}", file=self.info)
        return info

    def read_summary(self) -> dict[str, Any] | None:
        """The summary of a finished run; None while it trains."""
        return read_json(self.summary) if self.summary.is_file() else None


# what torch.load raises for a cut-off zip, a stray pickle or a file of another program
UNREADABLE_TORCH_FILE = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError,
                         ImportError)


def unreadable_torch_file(error: Exception, path: Path, problem: str) -> DataError:
    """The one-line error for a torch file that could not be loaded: ``problem``, then the first line of why."""
    detail = str(error).splitlines()[0] if str(error) else "no detail"
    return DataError(f"{problem} ({type(error).__name__}: {detail})", file=path)


def load_torch_file(path: Path, device: Any = "cpu") -> dict[str, Any]:
    """A checkpoint or generator file of a run; a truncated or damaged one is an error naming it."""
    import torch

    try:
        return torch.load(path, map_location=device, weights_only=False)
    except UNREADABLE_TORCH_FILE as error:
        raise unreadable_torch_file(error, path, "cannot be read: it is truncated or damaged") from None
