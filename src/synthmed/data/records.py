"""What every data source produces: one ``Record`` per image, plus the source's label names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

SPLITS = ("train", "val", "test")


class ImageLoader(Protocol):
    """Something a worker process can call to get the pixels of one image.

    Must be picklable and cheap to fingerprint. ``load`` returns float32 pixels shaped (channels, height, width)
    in 0..255 and, where the file carries one, the patient id from its header.
    """

    def load(self) -> tuple[np.ndarray, str | None]: ...

    def fingerprint(self) -> str:
        """Changes whenever the pixels may have changed (the store re-decodes then)."""
        ...


class MaskedImageLoader(ImageLoader, Protocol):
    """A loader that also knows where each label's finding is (a rendered phantom)."""

    def load_with_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixels as ``load`` gives them, and bool masks (labels, height, width), one per label."""
        ...


@dataclass(frozen=True)
class Record:
    """One labelled image of a source, before decoding.

    ``key`` is unique within the source (duplicates are an error). ``group`` is the
    patient id; ``None`` means "take it from the image header, else from near-duplicate
    hashing". ``split`` is set only where the source ships an official split.
    """

    key: str
    loader: ImageLoader
    labels: tuple[int, ...]
    path: str
    group: str | None = None
    split: str | None = None


@dataclass
class SourceData:
    """Everything a source hands to the store."""

    name: str
    label_names: list[str]
    records: list[Record]
    params: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    # True when every record's loader is a ``MaskedImageLoader``: the store then keeps lesion masks.
    masks: bool = False


def combination_key(labels: np.ndarray) -> np.ndarray:
    """One string per row naming its label combination, e.g. ``"0101"``."""
    labels = np.asarray(labels, dtype=np.uint8)
    return np.array(["".join(map(str, row)) for row in labels], dtype=object)


def combination_name(key: str, label_names: list[str]) -> str:
    """Human-readable name of a combination key: its active labels joined by '+'."""
    active = [name for bit, name in zip(key, label_names) if bit == "1"]
    return " + ".join(active) if active else "(no label)"
