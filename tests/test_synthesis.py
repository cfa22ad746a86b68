"""Synthetic folds: synthetic image i of a fold is made from label vector i of that fold (the core
contract of a synthetic set), in the store, the setting and the PNG export alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

import synthmed.synthesis
from helpers import TINY_TRAINING, array_source, one_setting
from synthmed.data import BenchmarkSetting, prepare
from synthmed.data.records import SPLITS
from synthmed.synthesis import generate
from synthmed.training.config import config_from_dict
from synthmed.training.loop import start_run


class LabelPainter(torch.nn.Module):
    """A stand-in generator whose image spells out the label vector it was given: pixel (0, j) is
    white where label j is on and black where it is off, every other pixel grey. It ignores the noise."""

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution

    def sample(self, labels: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        images = torch.zeros(len(labels), 1, self.resolution, self.resolution)  # in [-1, 1]: 0 is grey
        images[:, 0, 0, : labels.shape[1]] = labels * 2 - 1
        return images


def painted_labels(images: np.ndarray, n_labels: int) -> np.ndarray:
    """The label vectors that LabelPainter wrote into uint8 images (N, 1, R, R)."""
    painted = images[:, 0, 0, :n_labels]
    assert set(np.unique(painted)) <= {0, 255}
    return (painted // 255).astype(np.uint8)


def test_synthetic_image_i_is_made_from_label_vector_i(tmp_path, monkeypatch):
    store = prepare(array_source(n_labels=3), tmp_path / "store", resolutions=[16], workers=1, progress=False,
                    log=lambda m: None)
    real = BenchmarkSetting(one_setting(store, tmp_path / "settings", 16))
    config = config_from_dict(TINY_TRAINING)
    run = start_run(config, real.path, tmp_path / "run")
    # a generator snapshot as training leaves it, whose sampler is the painter
    torch.save({"state_dict": {}, "config": config.to_dict(), "resolution": 16, "label_names": real.label_names,
                "image_channels": 1, "images_seen": 0}, run / "generator.pt")
    monkeypatch.setattr(synthmed.synthesis, "load_sampler", lambda snapshot, config: LabelPainter(16))
    monkeypatch.setattr(synthmed.synthesis, "BATCH", 7)  # several batches per fold

    out = generate(run, progress=False, log=lambda m: None)
    synthetic = BenchmarkSetting(out / "setting")
    n_labels = len(real.label_names)
    for fold in SPLITS:
        labels = real.labels(fold)
        assert len(np.unique(labels, axis=0)) >= 3, "too few distinct label vectors to tell one order from another"
        np.testing.assert_array_equal(synthetic.labels(fold), labels)  # the stored labels, row for row
        np.testing.assert_array_equal(painted_labels(synthetic.images(fold), n_labels), labels)
        table = pd.read_csv(out / "export" / f"{fold}.csv")
        np.testing.assert_array_equal(table[real.label_names].to_numpy(), labels)
        pngs = np.stack([np.asarray(Image.open(out / "export" / path))[None] for path in table["Path"]])
        np.testing.assert_array_equal(painted_labels(pngs, n_labels), labels)
    # the store on its own (what a release packs): image row i shows label row i
    images, labels = np.load(out / "store" / "images_16.npy"), np.load(out / "store" / "labels.npy")
    np.testing.assert_array_equal(painted_labels(images, n_labels), labels)
