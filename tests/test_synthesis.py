"""Synthetic folds: synthetic image i of a fold is made from label vector i of that fold (the core
contract of a synthetic set), in the store, the setting and the PNG export alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import synthmed.synthesis
from helpers import TINY_TRAINING, array_source, one_setting, run_cli
from synthmed._io import sha256_file
from synthmed.data import BenchmarkSetting, prepare
from synthmed.data.records import SPLITS
from synthmed.errors import UserError
from synthmed.evaluation.utility import check_pair
from synthmed.synthesis import generate, write_set
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


def _painted_run(tmp_path: Path, monkeypatch, painter: LabelPainter) -> tuple[BenchmarkSetting, Path]:
    """A 16 px setting of three labels and a run whose generator is ``painter``."""
    store = prepare(array_source(n_labels=3), tmp_path / "store", resolutions=[16], workers=1, progress=False,
                    log=lambda m: None)
    real = BenchmarkSetting(one_setting(store, tmp_path / "settings", 16))
    config = config_from_dict(TINY_TRAINING)
    run = start_run(config, real.path, tmp_path / "run")
    # a generator snapshot as training leaves it, whose sampler is the painter
    torch.save({"state_dict": {}, "config": config.to_dict(), "resolution": 16, "label_names": real.label_names,
                "image_channels": 1, "images_seen": 0}, run / "generator.pt")
    monkeypatch.setattr(synthmed.synthesis, "load_sampler", lambda snapshot, config: painter)
    return real, run


def test_synthetic_image_i_is_made_from_label_vector_i(tmp_path, monkeypatch):
    real, run = _painted_run(tmp_path, monkeypatch, LabelPainter(16))
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


class NoisyLabelPainter(LabelPainter):
    """LabelPainter that also paints its first noise draw into pixel (R-1, R-1), so that two images of one
    label vector differ."""

    def sample(self, labels: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        images = super().sample(labels, noise)
        images[:, 0, -1, -1] = torch.rand(len(labels), generator=noise) * 2 - 1
        return images


def test_images_per_row_makes_whole_copies_of_every_fold_with_their_own_images(tmp_path, monkeypatch, capsys):
    real, run = _painted_run(tmp_path, monkeypatch, NoisyLabelPainter(16))
    monkeypatch.setattr(synthmed.synthesis, "BATCH", 7)

    out = generate(run, tmp_path / "k3", images_per_row=3, progress=False, log=lambda m: None)
    synthetic = BenchmarkSetting(out / "setting")
    n_labels = len(real.label_names)
    for fold in SPLITS:
        labels, n = real.labels(fold), len(real.labels(fold))
        np.testing.assert_array_equal(synthetic.labels(fold), np.tile(labels, (3, 1)))  # copy k = rows k*n..
        images = synthetic.images(fold)
        np.testing.assert_array_equal(painted_labels(images, n_labels), np.tile(labels, (3, 1)))
        noise_pixel = images[:, 0, -1, -1].reshape(3, n)
        assert (noise_pixel[0] != noise_pixel[1]).mean() > 0.9  # each copy has its own images
        assert len(pd.read_csv(out / "export" / f"{fold}.csv")) == 3 * n
    card = json.loads((out / "card.json").read_text())
    assert card["images_per_row"] == 3
    assert card["images_per_fold"] == {fold: 3 * len(real.labels(fold)) for fold in SPLITS}
    assert "exactly 3 synthetic counterparts" in (out / "card.md").read_text()
    assert check_pair(real, synthetic) == 3
    # the same call finds its set; another K is another set, not this one
    assert generate(run, tmp_path / "k3", images_per_row=3, progress=False, log=lambda m: None) == out
    with pytest.raises(UserError, match="already holds a synthetic set made from other inputs"):
        generate(run, tmp_path / "k3", images_per_row=2, progress=False, log=lambda m: None)
    # one per row stays the default, and its card says so
    one = generate(run, tmp_path / "k1", progress=False, log=lambda m: None)
    assert json.loads((one / "card.json").read_text())["images_per_row"] == 1
    assert "exactly one synthetic counterpart" in (one / "card.md").read_text()
    assert check_pair(real, BenchmarkSetting(one / "setting")) == 1
    # a bad K: one line naming the option, exit status 2, nothing written
    for bad in ("0", "-2", "101"):  # 100,000,000 per row once ran until memory ran out
        assert run_cli(["generate", str(run), "--out", str(tmp_path / "bad"), "--images-per-row", bad]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and f"--images-per-row {bad} must be a whole number in [1, 100]" in error
        assert not (tmp_path / "bad").exists()


def test_a_set_that_is_not_whole_copies_of_the_real_rows_is_refused(tmp_path, monkeypatch):
    real, _ = _painted_run(tmp_path, monkeypatch, LabelPainter(16))
    painter = LabelPainter(16)

    def written(name: str, copies: dict[str, int], change_row: int | None = None) -> BenchmarkSetting:
        folds = {fold: np.tile(real.labels(fold), (copies[fold], 1)) for fold in SPLITS}
        if change_row is not None:
            folds["train"][change_row] = 1 - folds["train"][change_row]
        images = {fold: (painter.sample(torch.from_numpy(f.astype(np.float32)), None).numpy() * 127.5 + 127.5
                         ).astype(np.uint8) for fold, f in folds.items()}
        write_set(tmp_path / name, images, folds, real, 16, "painter", 0, False, None)
        return BenchmarkSetting(tmp_path / name / "setting")

    assert check_pair(real, written("k2", {"train": 2, "val": 2, "test": 2})) == 2
    with pytest.raises(UserError, match="different numbers of images per real row \\(\\[1, 2\\]\\)"):
        check_pair(real, written("mixed", {"train": 2, "val": 1, "test": 1}))
    n = len(real.labels("train"))
    with pytest.raises(UserError, match="its train labels do not match the real setting's row for row"):
        check_pair(real, written("changed", {"train": 2, "val": 2, "test": 2}, change_row=n + 1))


# ---- the label check (label_check.py) ---------------------------------------------------------------


class SometimesWrongPainter(LabelPainter):
    """Paints the inverted label vector for about half of the rows, chosen by the noise, so that a
    new draw of the noise can put a row right."""

    def sample(self, labels: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
        wrong = torch.rand(len(labels), generator=noise) < 0.5
        return super().sample(torch.where(wrong[:, None], 1 - labels, labels), noise)


class PaintReader:
    """A stand-in classifier of the real data that reads the painted label pixels exactly."""

    def __init__(self, n_labels: int) -> None:
        self.n_labels = n_labels

    def predict(self, images: np.ndarray) -> np.ndarray:
        return painted_labels(images, self.n_labels).astype(np.float32)


def test_the_label_check_makes_off_label_rows_again_and_only_those(tmp_path, monkeypatch):
    from synthmed.label_check import LabelCheck

    real, run = _painted_run(tmp_path, monkeypatch, SometimesWrongPainter(16))
    n_labels = len(real.label_names)
    plain = BenchmarkSetting(generate(run, tmp_path / "plain", progress=False, log=lambda m: None) / "setting")
    check = LabelCheck(PaintReader(n_labels), "0" * 64, tries=8)
    monkeypatch.setattr(synthmed.synthesis, "load_label_check", lambda path, tries, *args: check)
    out = generate(run, tmp_path / "checked", label_check=tmp_path / "any.pt", progress=False, log=lambda m: None)
    checked, card = BenchmarkSetting(out / "setting"), json.loads((out / "card.json").read_text())
    for fold in SPLITS:
        labels = real.labels(fold)
        np.testing.assert_array_equal(checked.labels(fold), labels)  # same rows, same labels
        was_right = (painted_labels(plain.images(fold), n_labels) == labels).all(axis=1)
        assert 0 < was_right.sum() < len(labels), "the painter should get some rows wrong and some right"
        np.testing.assert_array_equal(checked.images(fold)[was_right], plain.images(fold)[was_right])  # kept
        now_right = (painted_labels(checked.images(fold), n_labels) == labels).all(axis=1)
        counts = card["label_check"]["off_label_rows"][fold]
        assert counts[0] == (~was_right).sum() and counts[-1] == (~now_right).sum()
        wrong = card["label_check"]["wrong_labels"][fold]
        assert wrong[0] == n_labels * counts[0] and wrong[-1] == n_labels * counts[-1]  # the painter flips every label
        assert counts[-1] <= counts[0] / 8, "a fair coin per try should leave few rows wrong after 8 tries"
    assert "label check:" in (out / "card.md").read_text() and "labels read wrong" in (out / "card.md").read_text()
    # the same options find the set already made; another number of tries is another set
    messages = []
    generate(run, out, label_check=tmp_path / "any.pt", progress=False, log=messages.append)
    assert "already holds this synthetic set" in messages[0]
    # a set made by the first rule (its card has no keep rule) is not this one, and its card keeps its own words
    first_rule = {k: v for k, v in card["label_check"].items() if k not in ("keep", "wrong_labels")}
    (out / "card.json").write_text(json.dumps({**card, "label_check": first_rule}))
    assert "the first image read right" in synthmed.synthesis.card_markdown({**card, "label_check": first_rule})
    with pytest.raises(UserError, match="overwrite"):
        generate(run, out, label_check=tmp_path / "any.pt", progress=False, log=lambda m: None)
    (out / "card.json").write_text(json.dumps(card))
    check.tries = 2
    with pytest.raises(UserError, match="overwrite"):
        generate(run, out, label_check=tmp_path / "any.pt", progress=False, log=lambda m: None)


def test_the_label_check_reads_on_the_device_that_samples(tmp_path, monkeypatch):
    """`generate --device` moves the label check's classifier there too ("cpu:0" stands in for a GPU here)."""
    from synthmed import label_check
    from synthmed.evaluation.classifier import Classifier, ClassifierConfig

    real, run = _painted_run(tmp_path, monkeypatch, LabelPainter(16))
    fitting = tmp_path / "fitting.pt"
    Classifier(ClassifierConfig(input_size=32), 1, real.label_names).save(fitting)
    devices, load = [], label_check.load_classifier
    monkeypatch.setattr(label_check, "load_classifier",
                        lambda path, device: devices.append(device) or load(path, device))
    generate(run, tmp_path / "out", label_check=fitting, label_check_tries=1, device="cpu:0", progress=False,
             log=lambda m: None)
    assert devices == ["cpu:0"]


def test_the_label_check_keeps_the_image_with_the_fewest_labels_read_wrong():
    """Several labels (chest findings): a new image replaces a row's only when it reads fewer labels wrong,
    a row is tried again until none is wrong, and rows read right are never made again."""
    from synthmed.label_check import LabelCheck

    def paint(vectors) -> np.ndarray:  # the painter's pixels for label vectors: 255 where a label is 1
        images = np.zeros((len(vectors), 1, 4, 4), np.uint8)
        images[:, 0, 0, :3] = np.asarray(vectors, np.uint8) * 255
        return images

    labels = np.array([[1, 1, 1], [0, 1, 0], [1, 0, 0]], np.float32)
    first = paint([[0, 0, 1], [0, 0, 0], [1, 0, 0]])  # row 0: 2 labels wrong, row 1: 1, row 2: right
    draws = {1: {0: [0, 0, 0], 1: [0, 1, 0]},  # try 1: row 0 worse (3 wrong), row 1 right
             2: {0: [1, 0, 1]},  # try 2: row 0 better (1 wrong)
             3: {0: [1, 1, 0]}}  # try 3: row 0 no better (1 wrong): the earlier image stays
    asked = []

    def make(rows: np.ndarray, attempt: int) -> np.ndarray:
        asked.append(rows.tolist())
        return paint([draws[attempt][row] for row in rows])

    images, counts = LabelCheck(PaintReader(3), "0" * 64, tries=3).resample(first, labels, make)
    assert asked == [[0, 1], [0], [0]]  # the right row never, row 1 no more once right
    np.testing.assert_array_equal(painted_labels(images, 3), [[1, 0, 1], [0, 1, 0], [1, 0, 0]])
    assert counts == {"off_label_rows": [2, 1, 1, 1], "wrong_labels": [3, 2, 1, 1]}
    np.testing.assert_array_equal(first[0, 0, 0, :3], [0, 0, 255])  # the caller's array is left as it was


def test_the_label_check_refuses_a_classifier_that_cannot_read_the_setting(tmp_path, monkeypatch, capsys):
    from synthmed.evaluation.classifier import Classifier, ClassifierConfig

    real, run = _painted_run(tmp_path, monkeypatch, LabelPainter(16))
    other = tmp_path / "other_labels.pt"
    Classifier(ClassifierConfig(input_size=32), 1, ["a", "b", "c"]).save(other)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    for path, tries, message in [(other, 3, "the classifier reads labels \\['a', 'b', 'c'\\]"),
                                 (garbage, 3, "is not a synthmed classifier file"),
                                 (tmp_path / "missing.pt", 3, "no such classifier file"),
                                 (other, 0, "--label-check-tries 0 must be in \\[1, 10\\]"),
                                 (None, 5, "--label-check-tries 5 needs --label-check CLASSIFIER")]:
        with pytest.raises(UserError, match=message) as caught:
            generate(run, tmp_path / "out", label_check=path, label_check_tries=tries, progress=False,
                     log=lambda m: None)
        assert path is None or tries == 0 or str(path) in str(caught.value)
        assert not (tmp_path / "out").exists()  # refused before anything is written
    # from the command line: one line that names the file, exit status 2
    assert run_cli(["generate", str(run), "--out", str(tmp_path / "out"), "--label-check", str(garbage)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(garbage) in error and "is not a synthmed classifier file" in error
    # a classifier of the setting's labels (untrained here) is read as it is, and the card names it by hash
    fitting = tmp_path / "fitting.pt"
    Classifier(ClassifierConfig(input_size=32), 1, real.label_names).save(fitting)
    out = generate(run, tmp_path / "out", label_check=fitting, label_check_tries=1, progress=False,
                   log=lambda m: None)
    card = json.loads((out / "card.json").read_text())["label_check"]
    assert card["classifier_sha256"] == sha256_file(fitting) and card["tries"] == 1
    assert str(fitting) not in (out / "card.json").read_text()  # the card records no local path
