"""Malformed input, as a new user would type it, against every command: one table, one line each.

Every case is a command line run through the CLI on tiny data that lives in one folder (a name
with a space in it), beside an existing store, settings and run. Each must end with exit status
2 and a single ``error: ...`` line that names the file, row, field or option, no traceback, and
the folder byte for byte as it was: nothing half-written at ``--out``, the store and run untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from helpers import blob_image, write_br35h_tree
from synthmed.cli import app, expand_multi_value_options
from synthmed.config import MAX_SEED, seed_problem
from synthmed.data import Store, build_settings, prepare_source
from synthmed.data.imaging import MAX_RESOLUTION
from synthmed.data.settings import MAX_COUNT
from synthmed.data.sources.chexpert import FINDINGS
from synthmed.data.store import WORKERS_PER_CORE
from synthmed.errors import ConfigError
from synthmed.synthesis import check_images_per_row
from synthmed.training.config import load_config
from synthmed.training.loop import start_run

FOLDER_IMAGES = 12  # PNGs in the folder source; one bad row among them is over the default 1 % bad fraction
# one more decoding process than prepare allows here: refused, and harmless should the check ever go
TOO_MANY_WORKERS = WORKERS_PER_CORE * (os.cpu_count() or 1) + 1


def _csv(path: Path, header: str, rows: list[str]) -> None:
    path.write_text("\n".join([header, *rows]) + "\n")


def _folder_source(root: Path) -> None:
    """PNGs and one CSV per mistake (``--option csv=NAME``); good.csv is a valid table of them."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(FOLDER_IMAGES):
        Image.fromarray(blob_image(rng, 24, bright=i % 2 == 1)).save(root / "images" / f"img{i}.png")
        rows.append(f"images/img{i}.png,{i % 2},{1 - i % 2}")
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (root / "images" / "broken.dcm").write_bytes(b"DICM" + bytes(200))
    (root / "images" / "anim.gif").write_bytes(b"GIF89a")
    tables = {
        "good.csv": ("path,A,B", rows),
        "repeated.csv": ("path,A,B,B", [row + ",0" for row in rows]),
        "badlabel.csv": ("path,A,B", rows[:3] + ["images/img3.png,yes,0"]),
        "blank.csv": ("path,A,B", rows[:2] + ["images/img2.png,,1"]),
        "missing.csv": ("path,A,B", rows + ["images/lost.png,1,0"]),
        "corrupt.csv": ("path,A,B", rows + ["images/broken.jpg,1,0"]),
        "dicom.csv": ("path,A,B", rows + ["images/broken.dcm,1,0"]),
        "escape.csv": ("path,A,B", rows[:2] + ["../outside.png,1,0"]),
        "duplicate.csv": ("path,A,B", rows[:3] + [rows[1]]),
        "gif.csv": ("path,A,B", rows[:2] + ["images/anim.gif,1,0"]),
        "blankheader.csv": ("path,A,", [row + "," for row in rows]),  # pandas named the column 'Unnamed: 2'
        "blankline.csv": ("path,A,B", rows[:2] + ["", "images/img3.png,yes,0"]),  # the bad row is line 5
    }
    for name, (header, table) in tables.items():
        _csv(root / name, header, table)
    (root / "empty.csv").write_text("")
    Image.fromarray(blob_image(rng, 24)).save(root.parent / "outside.png")


def _chexpert(root: Path) -> None:
    header = ",".join(["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *FINDINGS])
    labels = ",".join(["1"] + ["0"] * (len(FINDINGS) - 1))
    _csv(root / "train.csv", header, [f"{root.name}/../../../etc/passwd,Male,60,Frontal,AP,{labels}"])


def _medmnist(folder: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 255, (4, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (4, 1))
    np.savez(folder / "objects.npz", **{**arrays, "train_images": np.array([object()] * 4, dtype=object)})
    np.savez(folder / "uint16.npz", **{**arrays, "val_images": arrays["val_images"].astype(np.uint16)})
    np.savez(folder / "nolabels.npz", **{k: v for k, v in arrays.items() if k != "test_labels"})
    (folder / "text.npz").write_text("train_images = [1, 2, 3]\n")


SETTINGS_PRESET = {"dimensions": {"samples": {"defaults": {"resolution": 8, "combinations": 2},
                                              "settings": [{"train_per_combination": 4, "name": "n4"}]}}}


def _settings_preset(path: Path, **setting) -> Path:
    preset = yaml.safe_load(yaml.safe_dump(SETTINGS_PRESET))
    preset["dimensions"]["samples"]["settings"][0].update(setting)
    path.write_text(yaml.safe_dump(preset))
    return path


def _benchmark_preset(path: Path, root: Path, **change) -> Path:
    preset = {"name": "tiny", "data": {"source": "br35h", "root": str(root), "resolutions": [8]},
              "settings": SETTINGS_PRESET, "models": {"cpdgan": {"config": "cpdgan-cpu"}}, "seeds": 1, **change}
    path.write_text(yaml.safe_dump(preset))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Every input of the corpus, in one folder whose name has a space; ``outs`` stays empty."""
    top = tmp_path_factory.mktemp("bad inputs")
    paths = {"top": top, "br35h": write_br35h_tree(top / "br35h", per_class=20), "outs": top / "outs",
             "inputs": top / "inputs", "folder": top / "folder" / "data", "chexpert": top / "CheXpert-v1.0-small"}
    paths["outs"].mkdir()
    paths["inputs"].mkdir()
    _folder_source(paths["folder"])
    paths["chexpert"].mkdir()
    _chexpert(paths["chexpert"])
    _medmnist(paths["inputs"])
    quiet = {"progress": False, "log": lambda message: None}
    store = prepare_source("br35h", top / "store", root=paths["br35h"], resolutions=[8, 16], workers=1, **quiet)
    paths["store"] = store.path
    build_settings(_settings_preset(paths["inputs"] / "good-settings.yaml"), store, top / "settings",
                   log=lambda message: None)
    paths["setting"] = top / "settings" / "samples" / "n4"
    paths["run"] = start_run(load_config("cpdgan-cpu", {"threads": 1}), paths["setting"], top / "run")

    inputs = paths["inputs"]
    (inputs / "bad.yaml").write_text("learning_rate: 0.1\nbetas: [0, 0.99\nseed: 1\n")
    (inputs / "list.yaml").write_text("- 1\n- 2\n")
    (inputs / "lr-text.yaml").write_text("learning_rate: fast\n")
    for name, setting in {"two": {"combinations": "two"}, "minus5": {"train_per_combination": -5},
                          "combos-1": {"combinations": -1}, "val-1": {"val_total": -1}, "r48": {"resolution": 48},
                          "r2": {"resolution": 2}, "oversample3": {"oversample": 3}, "combos": {"combos": 3},
                          "escape": {"name": "../../escaped"}, "absolute": {"name": str(top / "x")},
                          "dot": {"name": "."}, "newline": {"name": "a\nb"}, "list": {"name": [1, 2]},
                          "huge-count": {"oversample": True, "train_per_combination": MAX_COUNT + 1},
                          "huge-r": {"resolution": 2 * MAX_RESOLUTION}}.items():
        _settings_preset(inputs / f"settings-{name}.yaml", **setting)
    samples = SETTINGS_PRESET["dimensions"]["samples"]
    for name, preset in {"escdim": {"dimensions": {"../../escdim": samples}}, "nodim": {"dimensions": {"": samples}},
                         "typo": {**SETTINGS_PRESET, "dimension": {"other": samples}}}.items():
        (inputs / f"settings-{name}.yaml").write_text(yaml.safe_dump(preset))
    shutil.copy(inputs / "bad.yaml", inputs / "bad.YAML")
    np.savez(inputs / "named-twice.npz", images=np.zeros((2, 8, 8), np.uint8), labels=np.zeros((2, 3), np.uint8),
             label_names=np.array(["No Finding", "Tumor", "Tumor"]))
    for name, change in {"stop": {"shared_stop": "maybe"}, "seeds0": {"seeds": 0},
                         "maxres": {"models": {"cpdgan": {"config": "cpdgan-cpu", "max_res": 64}}},
                         "models": {"models": ["cpdgan"]}}.items():
        _benchmark_preset(inputs / f"benchmark-{name}.yaml", paths["br35h"], **change)
    no_seeds = yaml.safe_load(_benchmark_preset(inputs / "benchmark-noseeds.yaml", paths["br35h"]).read_text())
    (inputs / "benchmark-noseeds.yaml").write_text(yaml.safe_dump({k: v for k, v in no_seeds.items() if k != "seeds"}))
    _damaged_copies(paths)
    bad_settings = yaml.safe_load(yaml.safe_dump(SETTINGS_PRESET))
    bad_settings["dimensions"]["samples"]["defaults"]["combinations"] = "two"
    _benchmark_preset(inputs / "benchmark-two.yaml", paths["br35h"], settings=bad_settings)
    bad_settings["dimensions"]["samples"]["defaults"]["combinations"] = 2
    bad_settings["dimensions"]["samples"]["settings"][0]["name"] = "../../escaped"
    _benchmark_preset(inputs / "benchmark-escape.yaml", paths["br35h"], settings=bad_settings)
    return paths


def _damaged_copies(paths: dict[str, Path]) -> None:
    """Copies of the store and the setting, each with one file damaged as a crash or a hand edit leaves it."""
    damaged = paths["damaged"] = paths["top"] / "damaged"
    for name, file, content in (("manifest", "manifest.json", b'{"format_version": '),
                                ("records", "records.parquet", b"PAR1 cut short"),
                                ("images", "images_16.npy", b"\x93NUMPY cut short")):
        shutil.copytree(paths["store"], damaged / f"store-{name}", ignore=shutil.ignore_patterns("info"))
        (damaged / f"store-{name}" / file).write_bytes(content)
    manifest = json.loads((paths["store"] / "manifest.json").read_text())
    for name, edited in (("resolutions", {**manifest, "resolutions": ["8"]}), ("names-5", {**manifest, "label_names": 5}),
                         ("no-names", {k: v for k, v in manifest.items() if k != "label_names"}),
                         ("names-3", {**manifest, "label_names": [*manifest["label_names"], "Extra"]})):
        shutil.copytree(paths["store"], damaged / f"store-{name}", ignore=shutil.ignore_patterns("info"))
        (damaged / f"store-{name}" / "manifest.json").write_text(json.dumps(edited))
    for name, file in (("rows", "rows.parquet"), ("meta", "setting.json")):
        copy = damaged / f"setting-{name}"
        shutil.copytree(paths["setting"], copy)
        meta = yaml.safe_load((copy / "setting.json").read_text())  # JSON is YAML
        meta["store"] = str(paths["store"])
        if name == "meta":
            del meta["store_content_hash"]
        (copy / "setting.json").write_text(json.dumps(meta))
        if name == "rows":
            (copy / file).write_bytes(b"PAR1 cut short")


def _prepare(source: str, *args: str) -> list[str]:
    return ["data", "prepare", source, "--out", "{outs}/store", "--workers", "1", "--no-progress", *args]


def _folder(csv: str, *args: str) -> list[str]:
    return _prepare("folder", "--root", "{folder}", "--option", f"csv={csv}", "-r", "8", *args)


def _train(*sets: str, config: str = "cpdgan-cpu", out: str = "{outs}/run") -> list[str]:
    args = ["train", "--config", config, "--data", "{setting}", "--out", out, "--no-progress"]
    for pair in sets:
        args += ["--set", pair]
    return args


def _utility(pair: str, real: str = "{setting}") -> list[str]:
    return ["evaluate", "utility", "--real", real, "--synthetic", "{setting}", "--out", "{outs}/eval",
            "--set", pair, "--no-progress"]


def _privacy(*options: str) -> list[str]:
    return ["evaluate", "privacy", "--real", "{setting}", "--synthetic", "{setting}", "--classifier",
            "{outs}/real_classifier.pt", "--out", "{outs}/privacy", *options]


def _generate(*options: str) -> list[str]:
    return ["generate", "{run}", "--out", "{outs}/synthetic", "--no-progress", *options]


def _settings(preset: str) -> list[str]:
    return ["data", "settings", "--preset", preset, "--store", "{store}", "--out", "{outs}/settings"]


def _benchmark(name: str) -> list[str]:
    return ["benchmark", "--preset", f"{{inputs}}/benchmark-{name}.yaml", "--dry-run"]


_FOLDER_NAME = "must be a folder name: not empty, '.' or '..', without '/', '\\' or control characters"


# (case id, command line, words the one-line message must hold); {name} is a path of ``world``
CASES = [
    # YAML that does not parse: the file and the line
    ("prepare-config-yaml", _prepare("br35h", "--root", "{br35h}", "--config", "{inputs}/bad.yaml"),
     "{inputs}/bad.yaml: line 3: not valid YAML"),
    ("settings-preset-yaml", _settings("{inputs}/bad.yaml"), "{inputs}/bad.yaml: line 3: not valid YAML"),
    ("train-config-yaml", _train(config="{inputs}/bad.yaml"), "{inputs}/bad.yaml: line 3: not valid YAML"),
    ("benchmark-preset-yaml", ["benchmark", "--preset", "{inputs}/bad.yaml", "--dry-run"],
     "{inputs}/bad.yaml: line 3: not valid YAML"),
    ("train-set-yaml", _train("betas=[0, 0.9"), "--set 'betas=[0, 0.9': line 1: not valid YAML"),
    ("train-config-list", _train(config="{inputs}/list.yaml"), "a training preset must be a mapping"),
    ("prepare-config-list", _prepare("br35h", "--root", "{br35h}", "--config", "{inputs}/list.yaml"),
     "a source config must be a mapping"),
    # training config values: the type is checked before any comparison
    ("train-lr-text", _train("learning_rate=abc"), "learning_rate = 'abc' must be a finite number"),
    ("train-lr-text-in-file", _train(config="{inputs}/lr-text.yaml"),
     "{inputs}/lr-text.yaml: learning_rate = 'fast' must be a finite number"),
    ("train-betas-text", _train("betas=abc"), "betas = 'abc' must be a list of 2 finite numbers"),
    ("train-patience-text", _train("patience=abc"), "patience = 'abc' must be a whole number"),
    ("train-phase-images", _train("phase_images={32: abc}"),
     "phase_images = {32: 'abc'} must be a whole number or a mapping of whole numbers to whole numbers"),
    ("train-lr-range", _train("learning_rate=2"), "learning_rate = 2 must be in (0, 1)"),
    ("train-model", _train("model=stylegan"), "model = 'stylegan' is not one of"),
    ("train-unknown-key", _train("lerning_rate=0.1"), "unknown key(s) ['lerning_rate']"),
    ("train-set-is-named", _train("ema_decay=2"),  # the bad value is the user's --set, not the preset's
     "training preset cpdgan-cpu with --set ema_decay: ema_decay = 2"),
    ("train-over-a-run", _train("batch_size=0", out="{run}"), "batch_size = 0 must be a positive integer"),
    ("train-over-a-run-quoted", _train(out="{run}"),  # the path has a space: the command quotes it
     "{run}: already holds a run; continue it with `synthmed train --resume '{run}'`"),
    ("train-resume-and-config", ["train", "--resume", "{run}", "--config", "cpdgan-cpu"],
     "--resume takes the run directory only"),
    ("train-resume-and-create-only", ["train", "--resume", "{run}", "--create-only"],
     "--resume takes the run directory only"),
    ("train-unknown-preset", _train(config="cpdgan-gpu"), "unknown training preset 'cpdgan-gpu'"),
    # classifier settings of evaluate
    ("evaluate-batch-0", _utility("batch_size=0"), "classifier batch_size = 0 must be an integer of at least 1"),
    ("evaluate-batch-text", _utility("batch_size=abc"), "classifier: batch_size = 'abc' must be a whole number"),
    ("evaluate-input-size-8", _utility("input_size=8"), "classifier input_size = 8 must be null (native size)"),
    ("evaluate-lr-empty", _utility("lr="), "classifier: lr = None must be a finite number"),
    ("evaluate-lr-text", _utility("lr=abc"), "classifier: lr = 'abc' must be a finite number"),
    ("evaluate-device-number", _utility("device=3"), "classifier: device = 3 must be text"),
    ("evaluate-unknown-key", _utility("colour=red"), "classifier: unknown key(s) ['colour']"),
    ("evaluate-not-key-value", _utility("batch_size"), "--set 'batch_size' is not KEY=VALUE"),
    # privacy audit options: refused before any image is read
    ("privacy-max-shift", _privacy("--max-shift", "0.5"),
     "privacy: max_shift = 0.5 must be a number in [0, 0.25]: the largest shift tried in pixels"),
    ("privacy-max-scale", _privacy("--max-scale", "0.9"),
     "privacy: max_scale = 0.9 must be a number in [1, 1.5]: the largest zoom tried in pixels"),
    # settings presets: types, counts below 1, resolutions no store can hold
    ("settings-combinations-two", _settings("{inputs}/settings-two.yaml"),
     "dimensions.samples.settings[0]: combinations = 'two' must be a whole number or 'all'"),
    ("settings-train-minus-5", _settings("{inputs}/settings-minus5.yaml"), "train_per_combination = -5 must be at least 1"),
    ("settings-combinations-minus-1", _settings("{inputs}/settings-combos-1.yaml"), "combinations = -1 must be at least 1"),
    ("settings-val-total-minus-1", _settings("{inputs}/settings-val-1.yaml"), "val_total = -1 must be at least 1"),
    ("settings-resolution-48", _settings("{inputs}/settings-r48.yaml"),
     "resolution 48 is not a power of two >= 4, so no store can hold it"),
    ("settings-resolution-2", _settings("{inputs}/settings-r2.yaml"), "resolution 2 is not a power of two >= 4"),
    ("settings-oversample-3", _settings("{inputs}/settings-oversample3.yaml"), "oversample = 3 must be true or false"),
    ("settings-unknown-key", _settings("{inputs}/settings-combos.yaml"), "unknown key(s) ['combos']"),
    ("settings-not-a-mapping", _settings("{inputs}/list.yaml"), "a settings preset must be a mapping"),
    ("settings-unknown-preset", _settings("chst"), "unknown settings preset 'chst'"),
    ("settings-upper-case-yaml", _settings("{inputs}/bad.YAML"), "{inputs}/bad.YAML: line 3: not valid YAML"),
    # names become folders under --out: nothing may point elsewhere
    ("settings-name-escape", _settings("{inputs}/settings-escape.yaml"), f"name = '../../escaped' {_FOLDER_NAME}"),
    ("settings-name-absolute", _settings("{inputs}/settings-absolute.yaml"), f"name = '{{top}}/x' {_FOLDER_NAME}"),
    ("settings-name-dot", _settings("{inputs}/settings-dot.yaml"), f"name = '.' {_FOLDER_NAME}"),
    ("settings-name-newline", _settings("{inputs}/settings-newline.yaml"), f"name = 'a\\nb' {_FOLDER_NAME}"),
    ("settings-name-list", _settings("{inputs}/settings-list.yaml"), "name = [1, 2] must be text or null"),
    ("settings-dimension-escape", _settings("{inputs}/settings-escdim.yaml"),
     f"field 'dimensions': dimension '../../escdim' {_FOLDER_NAME}"),
    ("settings-dimension-empty", _settings("{inputs}/settings-nodim.yaml"), f"dimension '' {_FOLDER_NAME}"),
    ("settings-top-level-typo", _settings("{inputs}/settings-typo.yaml"), "unknown key(s) ['dimension']"),
    ("settings-count-huge", _settings("{inputs}/settings-huge-count.yaml"),
     f"train_per_combination = {MAX_COUNT + 1} must be at least 1 and at most {MAX_COUNT}"),
    ("settings-resolution-huge", _settings("{inputs}/settings-huge-r.yaml"),
     f"resolution {2 * MAX_RESOLUTION} is above {MAX_RESOLUTION}, the largest a store holds"),
    ("benchmark-settings-name-escape", _benchmark("escape"), f"name = '../../escaped' {_FOLDER_NAME}"),
    # benchmark presets
    ("benchmark-shared-stop", _benchmark("stop"), "shared_stop = 'maybe' must be true or false"),
    ("benchmark-seeds-0", _benchmark("seeds0"), "seeds for samples/n4 must be a whole number in [1, 10000], got 0"),
    ("benchmark-no-seeds", _benchmark("noseeds"), "benchmark-noseeds.yaml: 'seeds' is missing"),
    ("benchmark-model-key", _benchmark("maxres"), "models.cpdgan: unknown key(s) ['max_res']"),
    ("benchmark-models-list", _benchmark("models"), "models = ['cpdgan'] must be a mapping of texts to mappings"),
    ("benchmark-settings-two", _benchmark("two"), "combinations = 'two' must be a whole number or 'all'"),
    # prepare: options and arguments
    ("prepare-option-type", _prepare("rsna-ich", "--root", "{top}", "--option", "max_no_finding_fraction=abc"),
     "source 'rsna-ich': max_no_finding_fraction = 'abc' must be a finite number"),
    ("prepare-option-seed", _prepare("rsna-ich", "--root", "{top}", "--option", "seed=1.5"),
     "seed = 1.5 must be a whole number"),
    ("prepare-unknown-option", _prepare("br35h", "--root", "{br35h}", "--option", "colour=red"),
     "source 'br35h' has no option(s) ['colour']"),
    ("prepare-workers-0", _prepare("br35h", "--root", "{br35h}", "--workers", "0"), "workers = 0: give at least 1"),
    ("prepare-workers-minus-1", _prepare("br35h", "--root", "{br35h}", "--workers", "-1"), "workers = -1"),
    ("prepare-workers-too-many", _prepare("br35h", "--root", "{br35h}", "--workers", str(TOO_MANY_WORKERS)),
     f"workers = {TOO_MANY_WORKERS}: give at least 1 and at most {TOO_MANY_WORKERS - 1} decoding processes"),
    ("prepare-resolution-48", _prepare("br35h", "--root", "{br35h}", "-r", "48"), "resolution 48 is not a power of two"),
    ("prepare-scaling", _prepare("br35h", "--root", "{br35h}", "--scaling", "log"), "unknown scaling 'log'"),
    ("prepare-bad-fraction", _prepare("br35h", "--root", "{br35h}", "--max-bad-fraction", "2"),
     "max_bad_fraction 2.0 is not in [0, 1]"),
    ("prepare-unknown-source", _prepare("chexpurt"), "unknown source 'chexpurt'"),
    ("prepare-root-missing", _prepare("br35h", "--root", "{top}/nowhere"), "{top}/nowhere: --root of source 'br35h' does not exist"),
    ("prepare-root-file", _prepare("br35h", "--root", "{inputs}/bad.yaml"), "bad.yaml: --root of source 'br35h' is a file"),
    ("prepare-root-not-read", _prepare("phantom-cxr", "--root", "{top}"), "source 'phantom-cxr' reads no files: leave out --root"),
    ("prepare-over-another-store", ["data", "prepare", "br35h", "--root", "{br35h}", "--out", "{store}", "-r", "8",
                                    "--workers", "1", "--no-progress"], "{store}: already holds a store"),
    # CSV tables (folder source): the file, row and column
    ("csv-repeated-column", _folder("repeated.csv"), "repeated.csv, row 1, field 'B': column 'B' appears 2 times"),
    ("csv-bad-label", _folder("badlabel.csv"), "badlabel.csv, row 5, field 'A': label value 'yes' is not allowed"),
    ("csv-blank-label", _folder("blank.csv"), "blank.csv, row 4, field 'A': blank label is not allowed"),
    ("csv-missing-column", _folder("good.csv", "--option", "label_columns=A,C"), "missing column 'C'"),
    ("csv-empty", _folder("empty.csv"), "empty.csv: CSV file is empty"),
    ("csv-escaping-path", _folder("escape.csv"), "escape.csv, row 4, field 'path': path '../outside.png' points "
                                                 "outside the data folder"),
    ("csv-duplicate-path", _folder("duplicate.csv"), "duplicate.csv, row 5, field 'path': duplicate image"),
    ("csv-image-type", _folder("gif.csv"), "gif.csv, row 4, field 'path': unsupported image type '.gif'"),
    ("csv-window", _folder("good.csv", "--option", "window=lung"), "field 'window': unknown window 'lung'"),
    ("csv-label-twice", _folder("good.csv", "--option", "label_columns=A,A"),
     "field 'label_columns': label column 'A' is listed 2 times"),
    ("csv-blank-header", _folder("blankheader.csv"), "blankheader.csv, row 1: column 3 of the header has no name"),
    ("csv-blank-line", _folder("blankline.csv"), "blankline.csv, row 5, field 'A': label value 'yes' is not allowed"),
    # images: a missing, corrupt or non-DICOM file is skipped and counted, here over the allowed fraction
    ("image-missing", _folder("missing.csv"),
     "1 of 13 images could not be read, more than the allowed fraction 0.01 (--max-bad-fraction). "
     "First ones: images/lost.png: FileNotFoundError: image file not found"),
    ("image-corrupt-jpeg", _folder("corrupt.csv"), "First ones: images/broken.jpg:"),
    ("image-broken-dicom", _folder("dicom.csv"), "First ones: images/broken.dcm:"),
    # CheXpert: a path that escapes the data root is named as such
    ("chexpert-escaping-path", _prepare("chexpert", "--root", "{chexpert}"),
     "train.csv, row 2, field 'Path': path 'CheXpert-v1.0-small/../../../etc/passwd' points outside the data folder"),
    ("chexpert-uncertain", _prepare("chexpert", "--root", "{chexpert}", "--option", "uncertain=maybe"),
     "unknown uncertain-label policy 'maybe'"),
    # MedMNIST .npz files
    ("npz-object-array", _prepare("medmnist", "--root", "{inputs}/objects.npz"),
     "objects.npz, field 'train_images': holds Python objects (an object array)"),
    ("npz-text-file", _prepare("medmnist", "--root", "{inputs}/text.npz"),
     "text.npz: is not a .npz file (a zip archive of arrays"),
    ("npz-uint16", _prepare("medmnist", "--root", "{inputs}/uint16.npz"),
     "uint16.npz, field 'val_images': uint16 array of shape (4, 28, 28): expected uint8"),
    ("npz-missing-array", _prepare("medmnist", "--root", "{inputs}/nolabels.npz"),
     "nolabels.npz, field 'test_labels': missing array"),
    # seeds outside [0, 2**32 - 1] (numpy refuses a negative one, torch one past 64 bits), and numbers that
    # are not finite (YAML's .nan and .inf, the command line's nan): each refused where it is given
    ("generate-seed-minus-1", _generate("--seed", "-1"), f"--seed -1 must be a whole number in [0, {MAX_SEED}]"),
    ("generate-seed-huge", _generate("--seed", "99999999999999999999"),
     f"--seed 99999999999999999999 must be a whole number in [0, {MAX_SEED}]"),
    ("generate-guidance-nan", _generate("--guidance-scale", "nan"), "--guidance-scale nan must be a number in [0, 100]"),
    # a finite scale far above any in use overflowed to black images, written as a valid set
    ("generate-guidance-huge", _generate("--guidance-scale", "1e308"), "--guidance-scale 1e+308 must be a number in [0, 100]"),
    ("generate-images-per-row-huge", _generate("--images-per-row", "100000000"),
     "--images-per-row 100000000 must be a whole number in [1, 100]"),
    ("train-guidance-huge", _train("guidance_scale=1000", config="diffusion-cpu"),
     "guidance_scale = 1000 must be a number in [0, 100] (1 = no guidance)"),
    ("train-seed-minus-1", _train("seed=-1"), f"seed = -1 must be a whole number in [0, {MAX_SEED}]"),
    ("train-lr-nan", _train("learning_rate=.nan"), "learning_rate = nan must be a finite number"),
    ("train-lr-huge-int", _train("learning_rate=1" + "0" * 400), "must be in (0, 1)"),  # once math.isfinite's overflow
    ("train-guidance-inf", _train("guidance_scale=.inf", config="diffusion-cpu"),
     "guidance_scale = inf must be a finite number"),
    ("evaluate-seed-huge", _utility(f"seed={MAX_SEED + 1}"),
     f"classifier seed = {MAX_SEED + 1} must be a whole number in [0, {MAX_SEED}]"),
    ("privacy-seed-minus-1", _privacy("--seed", "-1"), f"privacy: seed = -1 must be a number in [0, {MAX_SEED}]"),
    ("privacy-alpha-nan", _privacy("--alpha", "nan"), "privacy: alpha = nan must be a finite number"),
    ("settings-seed-minus-1", [*_settings("{inputs}/good-settings.yaml"), "--seed", "-1"],
     f"seed -1 must be a whole number in [0, {MAX_SEED}]"),
    ("prepare-seed-minus-1", _prepare("br35h", "--root", "{br35h}", "--seed", "-1"),
     f"seed -1 must be a whole number in [0, {MAX_SEED}]"),
    ("prepare-option-seed-minus-1", _prepare("rsna-ich", "--root", "{top}", "--option", "seed=-1"),
     f"source 'rsna-ich': seed = -1 must be a whole number in [0, {MAX_SEED}]"),
    ("import-label-named-twice", ["import", "{inputs}/named-twice.npz", "--real", "{setting}", "--out",
                                  "{outs}/imported"],
     "named-twice.npz, field 'label_names': names the label 'Tumor' 2 times"),
    ("import-seed-minus-1", ["import", "{folder}", "--real", "{setting}", "--out", "{outs}/imported", "--seed", "-1"],
     f"--seed -1 must be a whole number in [0, {MAX_SEED}]"),
    # damaged files of a store or setting: named, never a traceback from json, pyarrow or numpy
    ("info-damaged-manifest", ["data", "info", "{damaged}/store-manifest", "--grids", "{outs}/grids"],
     "{damaged}/store-manifest/manifest.json: is damaged: not valid JSON"),
    ("info-damaged-records", ["data", "info", "{damaged}/store-records", "--grids", "{outs}/grids"],
     "{damaged}/store-records/records.parquet: is missing or damaged (ArrowInvalid"),
    ("info-damaged-images", ["data", "info", "{damaged}/store-images", "--grids", "{outs}/grids"],
     "{damaged}/store-images/images_16.npy: is missing or damaged"),
    ("info-grids-file", ["data", "info", "{store}", "--grids", "{inputs}/bad.yaml"],
     "--grids {inputs}/bad.yaml: is a file, not a folder"),
    ("info-grids-under-file", ["data", "info", "{store}", "--grids", "{inputs}/bad.yaml/grids"],
     "--grids {inputs}/bad.yaml/grids: lies under {inputs}/bad.yaml, which is a file"),
    ("info-manifest-resolutions", ["data", "info", "{damaged}/store-resolutions", "--grids", "{outs}/grids"],
     "{damaged}/store-resolutions/manifest.json, field 'resolutions': ['8'] must be a list of whole numbers"),
    ("info-manifest-label-names-5", ["data", "info", "{damaged}/store-names-5", "--grids", "{outs}/grids"],
     "{damaged}/store-names-5/manifest.json, field 'label_names': 5 must be a list of texts"),
    ("info-manifest-no-label-names", ["data", "info", "{damaged}/store-no-names", "--grids", "{outs}/grids"],
     "{damaged}/store-no-names/manifest.json, field 'label_names': is missing"),
    ("settings-manifest-label-count", [*_settings("{inputs}/good-settings.yaml")[:4], "--store",
                                       "{damaged}/store-names-3", "--out", "{outs}/settings"],
     "{damaged}/store-names-3/labels.npy: has shape (40, 2); manifest.json says 40 images and 3 label_names"),
    ("utility-damaged-rows", _utility("max_epochs=1", real="{damaged}/setting-rows"),
     "{damaged}/setting-rows/rows.parquet: is missing or damaged"),
    ("utility-setting-without-key", _utility("max_epochs=1", real="{damaged}/setting-meta"),
     "{damaged}/setting-meta/setting.json: lacks ['store_content_hash']"),
    ("reader-study-seed-minus-1", ["reader-study", "create", "--real", "{store}", "--synthetic", "{store}", "-r", "8",
                                   "--out", "{outs}/study", "--seed", "-1"],
     f"field '--seed': -1 must be a whole number in [0, {MAX_SEED}]"),
]


def _fill(text: str, world: dict[str, Path]) -> str:
    """``{name}`` -> the path of ``world[name]`` (not str.format: values like ``{32: abc}`` stay)."""
    for name, path in world.items():
        text = text.replace("{" + name + "}", str(path))
    return text


def _listing(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``, with each file's SHA-256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def before(world) -> dict[str, str]:
    return _listing(world["top"])


def test_the_corpus_is_large_and_its_ids_unique():
    assert len(CASES) >= 40 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("args, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_named_line_and_changes_nothing(args, message, world, before):
    try:
        result = CliRunner().invoke(app, expand_multi_value_options([_fill(a, world) for a in args]))
        assert _listing(world["top"]) == before  # nothing written, nothing changed
    finally:  # what a failing case wrote at --out must not fail the cases after it
        for path in world["outs"].iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    error = result.stderr
    assert result.exit_code == 2, (result.output, error)
    assert error.startswith("error: ") and error.count("\n") == 1, error
    assert _fill(message, world) in error, error
    assert "Traceback" not in result.output + error


def test_the_same_inputs_done_right_work(world, tmp_path):
    """The corpus's mistakes corrected: a missing image under a looser --max-bad-fraction is skipped and
    listed, like an unreadable one; 2e-3 in a YAML file is a number."""
    args = [_fill(a, world) for a in _folder("missing.csv", "--max-bad-fraction", "0.1")]
    out = tmp_path / "store"
    args[args.index("--out") + 1] = str(out)
    result = CliRunner().invoke(app, expand_multi_value_options(args))
    assert result.exit_code == 0, result.output
    assert len(Store(out)) == FOLDER_IMAGES
    assert "images/lost.png" in (out / "skipped.csv").read_text()

    config = tmp_path / "lr.yaml"
    config.write_text("learning_rate: 2e-3\n")
    assert load_config(config, {"ema_decay": 0.99}).learning_rate == 0.002



def test_seeds_and_image_counts_may_be_numpy_integers():
    """An API caller's seed or count read from an array is a numpy integer: taken like Python's, with the same range."""
    assert seed_problem(np.int64(7)) is None and seed_problem(np.uint32(MAX_SEED)) is None
    for bad in (np.int64(-1), np.uint64(MAX_SEED + 1), True, 7.0, "7"):
        assert seed_problem(bad) == f"must be a whole number in [0, {MAX_SEED}]", bad
    check_images_per_row(np.int32(3))
    with pytest.raises(ConfigError, match="--images-per-row 0 must be a whole number"):
        check_images_per_row(np.int64(0))
