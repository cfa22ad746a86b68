"""The command line, end to end on a small br35h-shaped tree."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import write_br35h_tree
from synthmed.cli import expand_multi_value_options, main
from synthmed.data import Store


def run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_multi_value_resolution_flag():
    assert expand_multi_value_options(["data", "prepare", "x", "--resolution", "32", "64", "--out", "o"]) == [
        "data", "prepare", "x", "--resolution", "32", "--resolution", "64", "--out", "o"]
    assert expand_multi_value_options(["-r", "8", "--seed", "3"]) == ["-r", "8", "--seed", "3"]


def test_prepare_info_settings(tmp_path, capsys):
    root = write_br35h_tree(tmp_path / "br35h", per_class=20)
    store_dir = tmp_path / "store"
    code = run(["data", "prepare", "br35h", "--root", str(root), "--resolution", "8", "16",
                "--out", str(store_dir), "--workers", "1", "--no-progress"])
    output = capsys.readouterr().out
    assert code == 0, output
    assert "br35h: 40 images" in output and "groups" in output
    store = Store(store_dir)
    assert store.resolutions == [8, 16] and len(store) == 40
    assert store.images(16).shape == (40, 1, 16, 16)
    assert store.label_names == ["No Finding", "Tumor"]
    np.testing.assert_array_equal(store.labels.sum(axis=0), [20, 20])

    assert run(["data", "info", str(store_dir)]) == 0
    output = capsys.readouterr().out
    assert "Tumor" in output and "No Finding" in output
    grids = sorted((store_dir / "info").glob("grid_*.png"))
    assert len(grids) == 2
    assert Image.open(grids[0]).size[0] == 4 * 96

    preset = tmp_path / "tiny.yaml"
    preset.write_text("dimensions:\n  samples:\n    defaults: {resolution: 8, combinations: 2}\n"
                      "    settings:\n      - {train_per_combination: 4}\n")
    assert run(["data", "settings", "--preset", str(preset), "--store", str(store_dir),
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
    assert run(args) == 2
    error = capsys.readouterr().err
    assert message in " ".join(error.split())
    assert not (tmp_path / "x").exists()
