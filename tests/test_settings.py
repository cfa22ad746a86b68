"""Benchmark settings: exact counts, nesting, oversampling, shortfall errors, files on disk."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from synthmed.data import (
    BenchmarkSetting,
    DataError,
    build_settings,
    load_preset,
    plan_settings,
)
from synthmed.data.records import combination_key

LABELS = ["A", "B", "C", "D"]
# combination -> rows in (train, val, test); "0001" never appears with A, B or C set
TABLE = {"1000": (500, 60, 60), "0100": (400, 60, 60), "0110": (300, 50, 50), "0010": (120, 40, 40),
         "1100": (30, 10, 10)}


def label_table(table: dict[str, tuple[int, int, int]] = TABLE, seed: int = 0):
    labels, splits = [], []
    for key, counts in table.items():
        for fold, count in zip(("train", "val", "test"), counts):
            labels += [[int(c) for c in key]] * count
            splits += [fold] * count
    order = np.random.default_rng(seed).permutation(len(labels))  # rows of a store are not sorted
    return np.array(labels, dtype=np.uint8)[order], np.array(splits, dtype=object)[order]


def preset(**dimensions):
    return {"name": "test", "dimensions": dimensions}


def plan(spec, seed=0, table=TABLE):
    labels, splits = label_table(table)
    return {f"{d}/{n}": (meta, rows) for d, n, meta, rows in plan_settings(spec, labels, splits, LABELS, seed)}, labels


def fold_keys(rows: pd.DataFrame, labels: np.ndarray, fold: str) -> pd.Series:
    return pd.Series(combination_key(labels[rows.loc[rows.fold == fold, "store_index"].to_numpy()])).value_counts()


def test_classes_axis_keeps_most_frequent_and_oversamples():
    spec = preset(classes={
        "defaults": {"oversample": True, "val_per_combination": 20, "test_per_combination": 15,
                     "min_images_per_combination": 100},
        "settings": [{"combinations": 4, "train_per_combination": 350}, {"combinations": 2, "train_per_combination": 450}],
    })
    settings, labels = plan(spec)
    meta, rows = settings["classes/k4_n350"]
    train = fold_keys(rows, labels, "train")
    assert dict(train) == {"1000": 350, "0100": 350, "0110": 350, "0010": 350}  # 1100 has fewer than 100 images
    unique = {c["key"]: c["train_unique"] for c in meta["combinations"]}
    assert unique == {"100": 350, "010": 350, "011": 300, "001": 120}  # two combinations oversampled
    assert dict(fold_keys(rows, labels, "val")) == dict.fromkeys(train.index, 20)
    assert dict(fold_keys(rows, labels, "test")) == dict.fromkeys(train.index, 15)
    assert meta["label_names"] == ["A", "B", "C"]  # D has no positive: dropped
    assert meta["counts"] == {"train": 1400, "val": 80, "test": 60}
    meta2, rows2 = settings["classes/k2_n450"]
    assert set(fold_keys(rows2, labels, "train").index) == {"1000", "0100"}
    assert meta2["label_names"] == ["A", "B"]
    # every row of a fold comes from that fold of the store
    _, splits = label_table()
    for fold in ("train", "val", "test"):
        assert (splits[rows.loc[rows.fold == fold, "store_index"]] == fold).all()


def test_samples_axis_is_nested_with_fixed_val_and_test():
    spec = preset(samples={
        "defaults": {"combinations": 3, "val_per_combination": 40, "test_per_combination": 40},
        "settings": [{"train_per_combination": n} for n in (300, 200, 50)],
    })
    settings, labels = plan(spec)
    sets = {name: meta_rows[1] for name, meta_rows in settings.items()}
    train = {n: set(sets[f"samples/n{n}"].query("fold == 'train'").store_index) for n in (300, 200, 50)}
    assert train[50] < train[200] < train[300]
    assert [len(train[n]) for n in (300, 200, 50)] == [900, 600, 150]
    for fold in ("val", "test"):
        first = set(sets["samples/n300"].query("fold == @fold").store_index)
        assert first == set(sets["samples/n50"].query("fold == @fold").store_index)
        assert len(first) == 120


def test_shortfall_names_the_combination_and_the_gap():
    spec = preset(samples={"defaults": {"combinations": 3}, "settings": [{"train_per_combination": 350}]})
    with pytest.raises(DataError, match=r"'B \+ C' \(0110\) has 300 train images, 50 short of the 350"):
        plan(spec)
    spec = preset(samples={"defaults": {"combinations": 3, "val_per_combination": 55},
                           "settings": [{"train_per_combination": 10}]})
    with pytest.raises(DataError, match=r"\(0110\) has 50 val images, 5 short of the 55"):
        plan(spec)
    spec = preset(classes={"defaults": {"min_images_per_combination": 201}, "settings": [{"combinations": 4}]})
    with pytest.raises(DataError, match=r"^setting classes/\S+: asks for 4 label combinations with at least 201 "
                                        r"images each; the store has 3 such combination\(s\) \(the largest has \d+"):
        plan(spec)


def test_combinations_are_ranked_and_kept_by_their_images_in_all_folds():
    """The paper's code counted a combination's images in the whole pool, every fold; the train fold alone
    would rank and keep other combinations wherever the split cut them unevenly."""
    table = {"1000": (30, 0, 0), "0100": (12, 14, 14)}  # all folds: B 40 before A 30; train alone: A 30, B 12
    spec = preset(classes={"settings": [{"name": "top1", "combinations": 1},
                                        {"name": "over35", "min_images_per_combination": 35}]})
    settings, _ = plan(spec, table=table)
    for name in ("top1", "over35"):
        meta = settings[f"classes/{name}"][0]
        assert [(c["name"], c["train"], c["val"], c["test"]) for c in meta["combinations"]] == [("B", 12, 14, 14)]


def test_resolution_axis_draws_fold_totals():
    spec = preset(resolution={
        "defaults": {"min_images_per_combination": 100, "val_total": 150, "test_total": 100},
        "settings": [{"resolution": 32}, {"resolution": 64}],
    })
    settings, labels = plan(spec)
    meta, rows = settings["resolution/r32"]
    assert meta["counts"] == {"train": 1320, "val": 150, "test": 100}
    assert sum(c["val"] for c in meta["combinations"]) == 150
    assert rows.equals(settings["resolution/r64"][1])
    with pytest.raises(DataError, match="asks for 300 val images; the kept combinations have 210, 90 short"):
        plan(preset(resolution={"defaults": {"min_images_per_combination": 100, "val_total": 300},
                                "settings": [{"resolution": 32}]}))


def test_seeds_change_the_draw_and_repeat_exactly():
    spec = preset(samples={"defaults": {"combinations": 2}, "settings": [{"train_per_combination": 100}]})
    a = plan(spec, seed=1)[0]["samples/n100"][1]
    b = plan(spec, seed=1)[0]["samples/n100"][1]
    c = plan(spec, seed=2)[0]["samples/n100"][1]
    assert a.equals(b)
    assert not a.equals(c)


def test_preset_validation():
    with pytest.raises(DataError, match=r"unknown key\(s\) \['combos'\]"):
        plan(preset(classes={"settings": [{"combos": 3}]}))
    with pytest.raises(DataError, match="unknown settings preset 'nope'"):
        load_preset("nope")


def test_shipped_presets_carry_table_s1():
    chest = load_preset("chest")["dimensions"]
    assert [s["combinations"] for s in chest["classes"]["settings"]] == [20, 15, 10, 6, 4, 2]
    assert [s["train_per_combination"] for s in chest["classes"]["settings"]] == [1450, 1600, 2000, 2300, 3900, 6300]
    assert [s["train_per_combination"] for s in chest["samples"]["settings"]] == [5950, 4500, 3000, 1500, 1000, 500, 400, 200]
    brain = load_preset("brain")["dimensions"]
    assert [s["train_per_combination"] for s in brain["classes"]["settings"]] == [2500, 3120, 4170, 6250, 12500]
    assert [s["train_per_combination"] for s in brain["samples"]["settings"]] == [5400, 4500, 3000, 1500, 1000, 500, 300, 100]


def test_brain_preset_on_a_table_of_rsna_size():
    """Twenty combinations with RSNA-like frequencies: the Table S1 totals come out exactly."""
    sizes = [85876, 20000, 15000, 14000, 13000, 12000, 9000, 6000, 4000, 3000] + [1000 - 40 * i for i in range(10)]
    keys = [format(i + 1, "06b") for i in range(20)]
    table = {k: (n, max(600, n // 8), max(600, n // 8)) for k, n in zip(keys, sizes)}
    labels, splits = label_table(table)
    names = ["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "No Finding"]
    built = {f"{d}/{n}": meta for d, n, meta, _ in plan_settings(load_preset("brain"), labels, splits, names)}
    assert [built[f"classes/k{k}_n{n}"]["counts"]["train"] for k, n in
            [(10, 2500), (8, 3120), (6, 4170), (4, 6250), (2, 12500)]] == [25000, 24960, 25020, 25000, 25000]
    assert built["classes/k10_n2500"]["counts"]["val"] == 3000
    assert built["classes/k10_n2500"]["counts"]["test"] == 2000
    assert [built[f"samples/n{n}"]["counts"]["train"] for n in (5400, 100)] == [32400, 600]
    assert built["samples/n100"]["counts"]["val"] == 3000
    assert built["resolution/r32"]["counts"] == {"train": sum(sizes), "val": 4000, "test": 4000}
    assert len(built["resolution/r32"]["combinations"]) == 20


def test_settings_on_disk_round_trip(tiny_store, tmp_path):
    preset_file = tmp_path / "p.yaml"
    preset_file.write_text(
        "name: tiny\ndimensions:\n  samples:\n    defaults: {resolution: 16, combinations: 2, val_per_combination: 1}\n"
        "    settings:\n      - {train_per_combination: 6}\n      - {train_per_combination: 3}\n"
    )
    out = tmp_path / "settings"
    logs = []
    summaries = build_settings(preset_file, tiny_store, out, log=logs.append)
    assert [s["name"] for s in summaries] == ["n6", "n3"]
    setting = BenchmarkSetting(out / "samples" / "n6")
    rows = setting.rows("train")
    assert len(rows) == 12
    np.testing.assert_array_equal(setting.images("train"), tiny_store.images(16)[rows])
    np.testing.assert_array_equal(setting.labels("train"), tiny_store.labels[rows][:, setting.meta["label_columns"]])
    assert json.loads((out / "settings.json").read_text())["store_content_hash"] == tiny_store.manifest["content_hash"]
    before = (out / "settings.json").stat().st_mtime_ns
    build_settings(preset_file, tiny_store, out, log=logs.append)  # same inputs: nothing to do
    assert (out / "settings.json").stat().st_mtime_ns == before
    assert "nothing to do" in logs[-1]
    with pytest.raises(DataError, match="pass --overwrite"):
        build_settings(preset_file, tiny_store, out, seed=5)
    build_settings(preset_file, tiny_store, out, seed=5, overwrite=True)
    assert json.loads((out / "settings.json").read_text())["seed"] == 5


def test_failed_settings_leave_nothing(tiny_store, tmp_path):
    preset_file = tmp_path / "p.yaml"
    preset_file.write_text("dimensions:\n  samples:\n    defaults: {combinations: 2}\n"
                           "    settings:\n      - {train_per_combination: 5}\n      - {train_per_combination: 5000}\n")
    with pytest.raises(DataError, match="short of the 5000"):
        build_settings(preset_file, tiny_store, tmp_path / "settings")
    assert {p.name for p in tmp_path.iterdir()} == {"store", "p.yaml"}


def test_names_that_are_one_folder_each_and_upper_case_yaml_pass(tmp_path):
    """A name may hold spaces and non-ASCII letters; a preset file may be called .YAML or .YML."""
    spec = preset(**{"Größe x": {"settings": [{"name": "k3 n50", "combinations": 3, "train_per_combination": 50}]}})
    assert list(plan(spec)[0]) == ["Größe x/k3 n50"]
    for name in ("p.YAML", "p.Yml"):
        (tmp_path / name).write_text("dimensions:\n  all:\n    settings:\n      - {resolution: 8}\n")
        assert load_preset(tmp_path / name)["dimensions"]["all"]["settings"] == [{"resolution": 8}]


def test_a_setting_with_nothing_to_name_it_by_needs_a_name():
    """Its folder would be OUT/<dimension> itself."""
    with pytest.raises(DataError, match=r"dimensions.classes.settings\[0\]: needs a 'name'"):
        plan(preset(classes={"settings": [{"oversample": True}]}))
