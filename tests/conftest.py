"""Shared fixtures: small sources and stores made on the fly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthmed.data.imaging import ArrayImage
from synthmed.data.records import Record, SourceData
from synthmed.data.store import prepare


def blob_image(rng: np.random.Generator, size: int = 40, bright: bool = False) -> np.ndarray:
    """A smooth random image; ``bright`` adds a bright disc (the 'finding')."""
    y, x = np.mgrid[:size, :size]
    image = 60 + 40 * np.sin(x / rng.uniform(3, 8) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(3, 8))
    if bright:
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        image[(y - cy) ** 2 + (x - cx) ** 2 < (size // 6) ** 2] = 250
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class WindowedImage:
    """A grey image seen through three intensity windows, (3, H, W) as rsna-ich's ``window=multi`` gives."""

    pixels: np.ndarray

    def fingerprint(self) -> str:
        return ArrayImage(self.pixels).fingerprint() + "|3 windows"

    def load(self) -> tuple[np.ndarray, None]:
        grey = self.pixels.astype(np.float32)
        return np.stack([grey, np.clip(2 * grey - 128, 0, 255), 255 - grey]), None


def array_source(n: int = 60, n_labels: int = 2, seed: int = 0, groups: bool = True,
                 channels: int = 1) -> SourceData:
    """``n`` in-memory images of 1 or 3 channels; label vectors cycle through a few combinations."""
    loader = ArrayImage if channels == 1 else WindowedImage
    rng = np.random.default_rng(seed)
    combos = [(1, 0, 0), (0, 1, 0), (0, 1, 1), (0, 0, 1)]
    records = []
    for i in range(n):
        labels = combos[i % len(combos)][:n_labels]
        if not any(labels):
            labels = (1,) + labels[1:]
        records.append(Record(key=f"img{i:03d}", loader=loader(blob_image(rng, bright=bool(labels[-1]))),
                              labels=tuple(int(v) for v in labels), path=f"img{i:03d}.png",
                              group=f"patient{i // 2}" if groups else None))
    return SourceData("arrays", [f"finding_{j}" for j in range(n_labels)], records, params={"seed": seed})


@pytest.fixture
def tiny_store(tmp_path: Path):
    return prepare(array_source(), tmp_path / "store", resolutions=[8, 16], workers=1, progress=False,
                   log=lambda message: None)


def write_br35h_tree(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """A folder laid out like br35h (no/*.jpg, yes/*.jpg) with small generated JPEGs."""
    rng = np.random.default_rng(seed)
    for folder, bright in (("no", False), ("yes", True)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(blob_image(rng, 48, bright)).save(root / folder / f"{folder[0]}{i}.jpg", quality=95)
    return root
