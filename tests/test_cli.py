"""The command line, end to end on a small br35h-shaped tree."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from helpers import (
    FINDING_NAMES,
    array_source,
    finding_setting,
    one_setting,
    refused_by_cli,
    run_cli,
    write_br35h_tree,
)
from synthmed.cli import expand_multi_value_options, main
from synthmed.data import Store, prepare


def test_multi_value_resolution_flag():
    assert expand_multi_value_options(["data", "prepare", "x", "--resolution", "32", "64", "--out", "o"]) == [
        "data", "prepare", "x", "--resolution", "32", "--resolution", "64", "--out", "o"]
    assert expand_multi_value_options(["-r", "8", "--seed", "3"]) == ["-r", "8", "--seed", "3"]


def test_warnings_print_as_one_line_without_the_source_line(monkeypatch):
    """A warning such as fidelity's small-sample FID note read with the library's code line under it.
    While a command runs, Python formats a warning as its kind and text; afterwards as before."""
    import warnings

    import synthmed.cli

    printed = []

    def command(args, **_):  # stands in for the app: formats a warning raised at line 83 of fidelity.py
        printed.append(warnings.formatwarning("FID from 100 images", RuntimeWarning, "fidelity.py", 83))

    python_format = warnings.formatwarning
    monkeypatch.setattr(synthmed.cli, "app", command)
    main(["evaluate", "fidelity"])
    assert printed == ["RuntimeWarning: FID from 100 images\n"]
    assert warnings.formatwarning is python_format


def test_tables_are_whole_where_output_is_not_a_terminal():
    """rich fits a table to 80 columns where output is not a terminal (a log, a pipe, CI), which read
    `dim… fid… gen…` for the benchmark's dry run; the commands' console prints it whole there."""
    from rich.table import Table

    from synthmed.console import LogFriendlyConsole

    names = ["dimension", "fidelity", "generate", "importance", "prepare", "privacy", "real-classifier", "settings",
             "train", "utility", "total"]
    table = Table(title="jobs per dimension and stage")
    for name in names:
        table.add_column(name)
    table.add_row(*[f"{i}" * 5 for i in range(len(names))])
    log = io.StringIO()
    LogFriendlyConsole(file=log).print(table)
    header = next(line for line in log.getvalue().splitlines() if line.startswith("┃"))
    assert "…" not in log.getvalue() and [cell.strip() for cell in header.split("┃")[1:-1]] == names
    terminal = io.StringIO()
    LogFriendlyConsole(file=terminal, force_terminal=True, width=80).print(table)
    assert "…" in terminal.getvalue()  # on a terminal rich still fits the table to its width


def test_prepare_info_settings(tmp_path, capsys):
    root = write_br35h_tree(tmp_path / "br35h", per_class=20)
    store_dir = tmp_path / "store"
    code = run_cli(["data", "prepare", "br35h", "--root", str(root), "--resolution", "8", "16",
                    "--out", str(store_dir), "--workers", "1", "--no-progress"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert "br35h: 40 images" in output and "groups" in output
    store = Store(store_dir)
    assert store.resolutions == [8, 16] and len(store) == 40
    assert store.images(16).shape == (40, 1, 16, 16)
    assert store.label_names == ["No Finding", "Tumor"]
    np.testing.assert_array_equal(store.labels.sum(axis=0), [20, 20])

    assert run_cli(["data", "info", str(store_dir)]) == 0
    output = capsys.readouterr().out
    assert "Tumor" in output and "No Finding" in output
    grids = sorted((store_dir / "info").glob("grid_*.png"))
    assert len(grids) == 2
    assert Image.open(grids[0]).size[0] == 4 * 96

    preset = tmp_path / "tiny.yaml"
    preset.write_text("dimensions:\n  samples:\n    defaults: {resolution: 8, combinations: 2}\n"
                      "    settings:\n      - {train_per_combination: 4}\n")
    assert run_cli(["data", "settings", "--preset", str(preset), "--store", str(store_dir),
                    "--out", str(tmp_path / "settings")]) == 0
    index = json.loads((tmp_path / "settings" / "settings.json").read_text())
    assert index["settings"][0]["train"] == 8


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "prepare", "nosuch", "--out", "x"], "unknown source 'nosuch'"),
        (["data", "prepare", "br35h", "--out", "x", "--option", "colour=red"], "has no option(s) ['colour']"),
        (["data", "prepare", "br35h", "--out", "x", "--resolution", "48"], "resolution 48 is not a power of two"),
        (["data", "prepare", "chexpert", "--out", "x"], "needs --root"),
        (["data", "info", "nowhere"], "not a prepared store"),
        (["data", "settings", "--preset", "nope", "--store", "s", "--out", "o"], "not a prepared store"),
    ],
)
def test_bad_input_exits_2_with_a_named_error(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_br35h_tree(tmp_path / "br35h", per_class=1)
    if args[:3] == ["data", "prepare", "br35h"]:
        args += ["--root", str(tmp_path / "br35h")]
    assert run_cli(args) == 2
    error = capsys.readouterr().err
    assert message in " ".join(error.split())
    assert not (tmp_path / "x").exists()


# ---- user errors of the evaluation commands: one line, the field named, exit status 2 --------------------


@pytest.fixture(scope="module")
def evaluation_inputs(tmp_path_factory):
    """A 32 px setting, a 16 px one, and untrained classifiers saved as `evaluate utility` would."""
    from synthmed.evaluation.classifier import Classifier, ClassifierConfig

    root = tmp_path_factory.mktemp("evaluation")
    setting = finding_setting(root, "real", seed=4)
    store = prepare(array_source(), root / "grey16", resolutions=[16], workers=1, progress=False, log=lambda m: None)
    setting16 = one_setting(store, root / "settings16", 16)
    classifiers = {}
    for name, config, labels in (("native", ClassifierConfig(), FINDING_NAMES),
                                 ("resized", ClassifierConfig(input_size=64), FINDING_NAMES),
                                 ("other_labels", ClassifierConfig(), ["x", "y"]),
                                 ("rgb", ClassifierConfig(), FINDING_NAMES)):
        classifiers[name] = root / f"{name}.pt"
        Classifier(config, 3 if name == "rgb" else 1, labels).save(classifiers[name])
    return {"setting": setting, "setting16": setting16, **classifiers}


USER_ERRORS = [
    (["utility", "--set", "batch_size=0"], "classifier batch_size = 0 must be an integer of at least 1"),
    (["utility", "--set", "lr=fast"], "classifier: lr = 'fast' must be a finite number"),
    (["utility", "--set", "input_size=16"], "classifier input_size = 16 must be null (native size) or an integer"),
    (["utility", "--set", "device=gpu"], "classifier device = 'gpu' is not a torch device"),
    (["utility", "--set", "colour=red"], "classifier: unknown key(s) ['colour']"),
    (["utility", "--set", "pretrained_weights=nowhere.pt"],
     "classifier pretrained_weights = 'nowhere.pt': no such file"),
    (["utility", "--real", "{setting16}", "--synthetic", "{setting16}"],
     "classifier input_size = None: images of 16 px are below DenseNet-121's minimum of 32"),
    (["fidelity", "--classifier", "{native}", "--max-images", "3"], "max_images = 3 must be at least 6"),
    (["fidelity", "--classifier", "{native}", "--extractor", "dinov2"], "unknown feature extractor 'dinov2'"),
    (["fidelity", "--classifier", "{out}/real_classifier.pt"], "{out}/real_classifier.pt: no classifier file here"),
    (["privacy", "--classifier", "{native}", "--copy-quantile", "1.5"], "copy_quantile = 1.5 must be a number in (0, 1)"),
    (["importance", "--images", "0"], "n_images = 0: explain at least 1 real test image"),
    (["importance", "--images", "0", "--real-classifier", "{out}/none.pt"],  # before the classifiers load
     "n_images = 0: explain at least 1 real test image"),
    (["importance", "--patch", "40"], "patch = 40, stride = 2: need 1 <= patch <= 32"),
    (["importance", "--synthetic-classifier", "{resized}"],
     "{resized}: sees inputs of size 64, the real classifier None"),
    (["importance", "--synthetic-classifier", "{other_labels}"],
     "{other_labels}: the classifier reads labels ['x', 'y']"),
    # refused before the audit reads a feature, not minutes into it
    (["privacy", "--classifier", "{other_labels}"], "{other_labels}: the classifier reads labels ['x', 'y']"),
    (["privacy", "--classifier", "{rgb}"], "{rgb}: the classifier takes 3-channel images, the setting has 1-channel"),
    (["fidelity", "--classifier", "{rgb}"], "{rgb}: the classifier takes 3-channel images, the setting has 1-channel"),
]


HUGE = "1" + "0" * 20  # past int64: torch overflows on it


@pytest.mark.parametrize("pair, words", [
    ("lr=1e300", ["classifier lr = 1e+300 must be a number in (0, 10]"]),
    (f"input_size={HUGE}", [f"classifier input_size = {HUGE} must be null (native size) or an integer in [32, 4096]"]),
    (f"batch_size={HUGE}", [f"classifier batch_size = {HUGE} must be an integer of at most 65536"]),
    (f"threads={HUGE}", [f"classifier threads = {HUGE} must be an integer in [0, 4096]"]),
    ("pretrained_weights=''", ["classifier pretrained_weights = '' must name a weights file"]),
    ("pretrained_weights={notes}", ["{notes}: classifier pretrained_weights: is not a weights file"]),
    ("pretrained_weights={tensor}", ["{tensor}: classifier pretrained_weights: is not a weights file (it holds no state"]),
])
def test_real_classifier_refuses_bad_settings_by_name(pair, words, evaluation_inputs, tmp_path):
    """Values that overflowed in torch, a weights file that is none, an empty path that silently trained from scratch."""
    import torch

    paths = {"notes": tmp_path / "inputs" / "notes.txt", "tensor": tmp_path / "inputs" / "tensor.pt"}
    paths["notes"].parent.mkdir()
    paths["notes"].write_text("not weights\n")
    torch.save(torch.zeros(3), paths["tensor"])
    refused_by_cli(["evaluate", "real-classifier", "--real", evaluation_inputs["setting"], "--out", tmp_path / "out",
                    "--set", "max_epochs=1", "--set", pair.format(**paths), "--no-progress"], tmp_path,
                   *(word.format(**paths) for word in words))


@pytest.mark.parametrize("args, message", USER_ERRORS, ids=[" ".join(a) for a, _ in USER_ERRORS])
def test_evaluation_user_errors_are_one_line_with_exit_status_2(args, message, evaluation_inputs, tmp_path):
    from typer.testing import CliRunner

    from synthmed.cli import app

    command, *options = args
    paths = {**{k: str(v) for k, v in evaluation_inputs.items()}, "out": str(tmp_path / "out")}
    options = [option.format(**paths) for option in options]
    needed = {"--real": paths["setting"], "--out": paths["out"]}
    if command == "importance":
        needed.update({"--real-classifier": paths["native"], "--synthetic-classifier": paths["native"]})
    else:
        needed["--synthetic"] = paths["setting"]
    for flag, value in needed.items():
        if flag not in options:
            options += [flag, value]
    result = CliRunner().invoke(app, ["evaluate", command, *options])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message.format(**paths) in result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written
