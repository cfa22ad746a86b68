"""The label check of ``synthmed generate --label-check``: resample off-label synthetic rows.

A conditional generator sometimes makes an image that does not show its label: at the demo's
budget about one br35h diffusion sample in eight reads as the other class to a DenseNet-121
trained on the real training fold. A classifier trained on those images learns from the wrong
label. The check reads every synthetic image with such a classifier of the real data; a row it
reads against its label (any label's probability on the other side of 0.5) is made again with
fresh noise, up to ``tries`` times. A new image replaces the row's when the classifier reads fewer
of its labels wrong, and the row is done once it reads none wrong: the first image read right wins,
and a row that never comes out fully right (common with many labels, as chest findings) keeps the
earliest of its images with the fewest labels read wrong. The check only swaps images, never drops
rows or changes labels.

The classifier must not be the one that later scores the set: the real classifier's AUROC on the
synthetic test fold would then grade its own choice. The benchmark trains a separate one (another
seed); by hand, ``synthmed evaluate real-classifier --real SETTING --set seed=1000 --out DIR``
writes one to ``DIR/real_classifier.pt``. It learns from the real training fold (and stops early
on the validation fold), as the generator did; the real test fold stays out of the synthetic set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthmed._io import sha256_file
from synthmed.errors import ConfigError
from synthmed.evaluation.classifier import Classifier, check_fits, load_classifier

DEFAULT_TRIES = 3  # generate's --label-check-tries when not given
MAX_TRIES = 10
# what the dataset card records of a check's run beside its identity (resample's counts)
CHECK_COUNTS = ("off_label_rows", "wrong_labels")
KEEP_RULE = "fewer labels read wrong"


@dataclass
class LabelCheck:
    classifier: Classifier
    sha256: str
    tries: int

    def identity(self) -> dict[str, Any]:
        """What the card records and what makes two checked sets the same (the file's path does not).
        ``keep`` names the rule: sets made before it (first fully right image, else the first) lack it."""
        return {"classifier_sha256": self.sha256, "tries": self.tries, "keep": KEEP_RULE}

    def wrong_labels(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """How many of each row's labels the classifier reads the other way (probability across 0.5)."""
        return ((self.classifier.predict(images) > 0.5) != (labels > 0.5)).sum(axis=1)

    def resample(self, images: np.ndarray, labels: np.ndarray,
                 make: Callable[[np.ndarray, int], np.ndarray]) -> tuple[np.ndarray, dict[str, list[int]]]:
        """``images`` with off-label rows made again by ``make(rows, try)``, each kept when it reads fewer
        labels wrong; and, before the first try and after each, the rows still off-label and the labels
        read wrong over all rows (``CHECK_COUNTS``)."""
        images = images.copy()
        wrong = self.wrong_labels(images, labels)
        rows = np.flatnonzero(wrong)
        counts = {"off_label_rows": [len(rows)], "wrong_labels": [int(wrong.sum())]}
        for attempt in range(1, self.tries + 1):
            if len(rows) == 0:
                break
            candidates = make(rows, attempt)
            candidate_wrong = self.wrong_labels(candidates, labels[rows])
            fewer = candidate_wrong < wrong[rows]
            images[rows[fewer]] = candidates[fewer]
            wrong[rows[fewer]] = candidate_wrong[fewer]
            rows = rows[wrong[rows] > 0]
            counts["off_label_rows"].append(len(rows))
            counts["wrong_labels"].append(int(wrong.sum()))
        return images, counts


def load_label_check(path: str | Path, tries: int, label_names: list[str], image_channels: int,
                     resolution: int, device: str = "cpu") -> LabelCheck:
    """The classifier file checked against the setting it is to read, before anything is generated; it reads
    on ``device``, the one that samples."""
    path = Path(path)
    if not 1 <= tries <= MAX_TRIES:
        raise ConfigError(f"--label-check-tries {tries} must be in [1, {MAX_TRIES}]")
    classifier, _ = load_classifier(path, device=device)
    check_fits(classifier, path, label_names, image_channels, resolution)
    return LabelCheck(classifier, sha256_file(path), tries)
