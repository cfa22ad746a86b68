"""Utility of a synthetic set (paper 3.1, 3.3, S.4): how well does a classifier trained on it do on real data?

Two classifiers with the same config: one trained and validated on the real setting's
train and val folds, one on the synthetic set's. Both are tested on the *real* test fold;
``auc_real - auc_syn`` is the difference of their mean AUROCs. The label-overfitting
check of paper 3.3 is ``delta_syn = AUC_syn(X_syn test) - AUC_syn(X_real test)``: the
synthetic classifier on the synthetic test fold minus on the real one; near 0 when the
generator shows labels the way real images do, large when it encodes them in ways that
do not carry over to real images.

Beside the honest numbers, ``auc_real_release_flip``, ``auc_syn_release_flip`` and their
difference give the paper's release's flipped test AUROC (``metrics.release_flip``), so that
a result can be compared with the paper's tables; no verdict uses them.

``out_dir`` receives ``utility.json`` and both classifiers (``eval_dir.py``). An existing
real-data classifier trained on the same setting with the same config is reused, so several generative models of one setting can share the real classifier.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from synthmed._io import sha256_file, write_json_atomic
from synthmed.data.records import SPLITS
from synthmed.data.settings import ROWS_FILE, BenchmarkSetting
from synthmed.device import resolve_bf16, resolve_device
from synthmed.errors import DataError
from synthmed.evaluation.classifier import Classifier, ClassifierConfig, load_classifier, train_classifier
from synthmed.evaluation.eval_dir import EvalDir
from synthmed.metrics.auroc import auroc_per_label, release_flip


def setting_identity(setting: BenchmarkSetting) -> dict[str, Any]:
    """What makes two settings the same data: store content, rows, labels, resolution (not the path)."""
    return {"store_content_hash": setting.meta["store_content_hash"],
            "rows_sha256": sha256_file(setting.path / ROWS_FILE),
            "label_names": setting.label_names, "resolution": setting.resolution}


def pair_identity(real: BenchmarkSetting, synthetic: BenchmarkSetting) -> dict[str, Any]:
    """Both settings' identities, as every evaluation JSON records them: ``release`` takes an evaluation
    for a synthetic set only when they match."""
    return {"real_setting_identity": setting_identity(real), "synthetic_setting_identity": setting_identity(synthetic)}


def check_pair(real: BenchmarkSetting, synthetic: BenchmarkSetting) -> int:
    """The synthetic set must mirror the real setting: same labels and resolution, and each fold the real
    fold's label rows, once or as K whole copies (``generate --images-per-row K``). Returns K."""
    if synthetic.label_names != real.label_names or synthetic.resolution != real.resolution:
        raise DataError(f"has labels {synthetic.label_names} at {synthetic.resolution} px; the real setting has "
                        f"{real.label_names} at {real.resolution} px", file=synthetic.path)
    copies: set[int] = set()
    for fold in SPLITS:
        a, b = real.labels(fold), synthetic.labels(fold)
        if not len(a) and not len(b):
            continue
        k = len(b) // len(a) if len(a) else 0
        if k < 1 or b.shape != (k * len(a), a.shape[1]) or (b != np.tile(a, (k, 1))).any():
            raise DataError(f"its {fold} labels do not match the real setting's row for row (once or in whole "
                            f"copies): it was not generated for {real.path}", file=synthetic.path)
        copies.add(k)
    if len(copies) > 1:
        raise DataError(f"its folds hold different numbers of images per real row ({sorted(copies)}); "
                        "`synthmed generate --images-per-row` makes the same number in every fold", file=synthetic.path)
    return copies.pop() if copies else 1


def _train_on(setting: BenchmarkSetting, config: ClassifierConfig, log: Callable[[str], None],
              progress: bool) -> tuple[Classifier, dict[str, Any]]:
    return train_classifier(setting.images("train"), setting.labels("train"), setting.images("val"),
                            setting.labels("val"), config, log=log, progress=progress,
                            label_names=setting.label_names)


def real_classifier(real: BenchmarkSetting, config: ClassifierConfig, path: Path, log: Callable[[str], None],
                     progress: bool) -> tuple[Classifier, dict[str, Any], bool]:
    """The saved real-data classifier when it matches this setting and config, else a newly trained one."""
    meta = {"setting": setting_identity(real), "config": config.identity()}
    if config.bf16 == "auto":  # a classifier trained in bfloat16 is not reused where it would train in float32
        meta["bf16"] = resolve_bf16("auto", resolve_device(config.device))
    if path.is_file():
        model, checkpoint = load_classifier(path, device=config.device)
        if checkpoint["meta"] == meta:
            log(f"reusing the real-data classifier {path}")
            return model, checkpoint["history"], True
        log(f"{path} was trained on another setting or config: training it again")
    log(f"training the classifier on the real setting {real.path}")
    model, history = _train_on(real, config, log, progress)
    model.save(path, history, meta)
    return model, history, False


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def evaluate_utility(real_setting_dir: str | os.PathLike, synthetic_setting_dir: str | os.PathLike,
                     config: ClassifierConfig, out_dir: str | os.PathLike, log: Callable[[str], None] = print,
                     progress: bool = True, real_classifier_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Both classifiers, tested on the real test fold; ``real_classifier_path`` (default: the real
    classifier of ``out_dir``) is reused when it was trained on this setting and config."""
    out = EvalDir.for_writing(out_dir)
    real, synthetic = BenchmarkSetting(real_setting_dir), BenchmarkSetting(synthetic_setting_dir)
    images_per_row = check_pair(real, synthetic)
    names = real.label_names
    real_path = Path(real_classifier_path) if real_classifier_path else out.real_classifier
    real_model, real_history, reused = real_classifier(real, config, real_path, log, progress)
    log(f"training the classifier on the synthetic set {synthetic.path}")
    syn_model, syn_history = _train_on(synthetic, config, log, progress)
    syn_model.save(out.synthetic_classifier, syn_history,
                   {"setting": setting_identity(synthetic), "config": config.identity()})

    test_images, test_labels = real.images("test"), real.labels("test")
    auc_real = auroc_per_label(test_labels, real_model.predict(test_images), names)
    auc_syn = auroc_per_label(test_labels, syn_model.predict(test_images), names)
    synthetic_test = synthetic.images("test")
    auc_syn_on_syn = auroc_per_label(synthetic.labels("test"), syn_model.predict(synthetic_test), names)
    # "GAN-test" (Shmelkov et al. 2018): do the synthetic images look like their labels to a model of real data?
    auc_real_on_syn = auroc_per_label(synthetic.labels("test"), real_model.predict(synthetic_test), names)
    real_flip, syn_flip = release_flip(auc_real), release_flip(auc_syn)
    result = {
        "real_setting": str(real.path), "synthetic_setting": str(synthetic.path),
        **pair_identity(real, synthetic),
        "label_names": names, "test_images": int(len(test_labels)),
        # more than 1: the synthetic classifier saw K images per real row, so the gap is not the paper's one-to-one
        "images_per_row": images_per_row,
        "auc_real": auc_real,  # real classifier, real test fold
        "auc_syn": auc_syn,  # synthetic classifier, real test fold
        "auc_syn_on_syn": auc_syn_on_syn,  # synthetic classifier, synthetic test fold
        "auc_real_on_syn": auc_real_on_syn,  # real classifier, synthetic test fold
        "auc_real_minus_auc_syn": _difference(auc_real["mean"], auc_syn["mean"]),
        "delta_syn": _difference(auc_syn_on_syn["mean"], auc_syn["mean"]),
        # the paper's release, for comparison with its tables only (never in a verdict)
        "auc_real_release_flip": real_flip, "auc_syn_release_flip": syn_flip,
        "auc_real_minus_auc_syn_release_flip": _difference(real_flip["mean"], syn_flip["mean"]),
        "config": config.to_dict(),
        "real_classifier": {"file": str(real_path) if real_classifier_path else real_path.name, "reused": reused,
                            "history": real_history},
        "synthetic_classifier": {"file": out.synthetic_classifier.name, "history": syn_history},
    }
    write_json_atomic(out.utility, result)
    log(f"mean AUROC on the real test fold: real {_fmt(auc_real['mean'])}, synthetic {_fmt(auc_syn['mean'])}"
        + (f" (trained on {images_per_row} synthetic images per real row)" if images_per_row > 1 else "") + "; "
        f"AUC_real - AUC_syn = {_fmt(result['auc_real_minus_auc_syn'])}, delta_syn = {_fmt(result['delta_syn'])}; "
        f"real classifier on the synthetic test fold {_fmt(auc_real_on_syn['mean'])}")
    return result
