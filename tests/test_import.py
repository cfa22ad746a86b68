"""`synthmed import`: a synthetic set made elsewhere becomes the set `generate` would write. The round
trip generate -> export -> import gives the same store and the same AUROCs; the npz, single-CSV and
folder-per-fold layouts; the seeded choice; one-line errors with nothing written; no source path in any output."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import TINY_TRAINING as TINY
from helpers import array_source
from helpers import run_cli as cli
from synthmed.data import BenchmarkSetting, build_settings, prepare
from synthmed.data.records import SPLITS
from synthmed.errors import DataError
from synthmed.evaluation.classifier import ClassifierConfig
from synthmed.evaluation.utility import evaluate_utility
from synthmed.importing import import_synthetic
from synthmed.release import release
from synthmed.synthesis import generate
from synthmed.training.config import config_from_dict
from synthmed.training.loop import start_run, train

LABELS = ["finding_0", "finding_1"]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """A real 16 px setting, a tiny GAN trained on it and its synthetic set (with the PNG/CSV export)."""
    root = tmp_path_factory.mktemp("made")
    store = prepare(array_source(), root / "store", resolutions=[16], workers=1, progress=False, log=lambda m: None)
    preset = root / "p.yaml"
    preset.write_text("dimensions:\n  all:\n    settings:\n      - {name: r16, resolution: 16}\n")
    build_settings(preset, store, root / "settings", log=lambda m: None)
    setting = root / "settings" / "all" / "r16"
    run = start_run(config_from_dict({**TINY, "max_images": 160, "min_images": 160}), setting, root / "run")
    train(run, progress=False, log=lambda m: None)
    generate(run, progress=False, log=lambda m: None)
    return {"setting": setting, "synthetic": run / "synthetic"}


def _images(folder: Path) -> dict[str, np.ndarray]:
    setting = BenchmarkSetting(folder / "setting")
    return {fold: np.asarray(setting.images(fold)) for fold in SPLITS}


def _quiet(source, made, out, **options) -> Path:
    return import_synthetic(source, made["setting"], out, progress=False, log=lambda m: None, **options)


def _fold_csvs(export: Path) -> dict[str, pd.DataFrame]:
    return {fold: pd.read_csv(export / f"{fold}.csv") for fold in SPLITS}


def test_round_trip_through_the_export_gives_the_same_set_and_the_same_aurocs(made, tmp_path, capsys):
    imported = tmp_path / "imported"
    assert cli(["import", str(made["synthetic"] / "export"), "--real", str(made["setting"]), "--out", str(imported),
                "--no-progress"]) == 0
    assert "synthetic set: 60 imported images" in capsys.readouterr().out
    generated, back = BenchmarkSetting(made["synthetic"] / "setting"), BenchmarkSetting(imported / "setting")
    for fold in SPLITS:  # image for image, label for label
        np.testing.assert_array_equal(back.images(fold), generated.images(fold))
        np.testing.assert_array_equal(back.labels(fold), generated.labels(fold))
    assert back.store.manifest["content_hash"] == generated.store.manifest["content_hash"]

    card = json.loads((imported / "card.json").read_text())
    assert card["origin"] == "imported" and card["description"] == "imported from an external generator, 60 images"
    assert card["images_per_fold"] == json.loads((made["synthetic"] / "card.json").read_text())["images_per_fold"]
    markdown = (imported / "card.md").read_text()
    assert markdown.startswith("# Synthetic data set: all/r16 (external, 16x16)")
    assert "- origin: imported from an external generator, 60 images (read from CSV files per fold" in markdown
    assert "Every image was made by an external generator, not by synthmed." in markdown  # not "none is real"

    config = ClassifierConfig(input_size=32, max_epochs=1, batch_size=16, threads=1)
    quiet = {"log": lambda m: None, "progress": False}
    direct = evaluate_utility(made["setting"], generated.path, config, tmp_path / "eval", **quiet)
    again = evaluate_utility(made["setting"], back.path, config, tmp_path / "eval", **quiet)
    assert again["auc_syn"] == direct["auc_syn"] and again["auc_real"] == direct["auc_real"]
    assert again["delta_syn"] == direct["delta_syn"]

    # release takes it like a generated set, and its card tells where the images came from
    release(imported, made["setting"], tmp_path / "package", evaluation=[tmp_path / "eval"], force=True, by="test",
            log=lambda m: None)
    assert "- origin: imported from an external generator" in (tmp_path / "package" / "card.md").read_text()


def test_a_set_of_several_images_per_row_comes_back_image_for_image(made, tmp_path, capsys):
    doubled = generate(made["synthetic"].parent, tmp_path / "x2", images_per_row=2, progress=False,
                       log=lambda m: None)
    back = _quiet(doubled / "export", made, tmp_path / "back", images_per_row=2)
    generated, imported = BenchmarkSetting(doubled / "setting"), BenchmarkSetting(back / "setting")
    for fold in SPLITS:
        np.testing.assert_array_equal(imported.images(fold), generated.images(fold))
        np.testing.assert_array_equal(imported.labels(fold), generated.labels(fold))
    card = json.loads((back / "card.json").read_text())
    assert card["images_per_row"] == 2 and card["description"] == "imported from an external generator, 120 images"
    assert "has exactly 2 synthetic counterparts" in (back / "card.md").read_text()
    # evaluate and release take it, and the release card says what the synthetic classifier was trained on
    config = ClassifierConfig(input_size=32, max_epochs=1, batch_size=16, threads=1)
    utility = evaluate_utility(made["setting"], imported.path, config, tmp_path / "eval", log=lambda m: None,
                               progress=False)
    assert utility["images_per_row"] == 2
    release(back, made["setting"], tmp_path / "package", evaluation=[tmp_path / "eval"], force=True, by="test",
            log=lambda m: None)
    package_card = (tmp_path / "package" / "card.md").read_text()
    assert "trained on this synthetic set (2 images per real row)" in package_card
    assert json.loads((tmp_path / "package" / "card.json").read_text())["utility"]["images_per_row"] == 2
    # a source with too few images for K copies names the shortfall; a bad K is one line, exit 2; nothing written
    with pytest.raises(DataError, match="'finding_1' \\(01\\) in train: 24 image\\(s\\), 24 short of the 48 needed"):
        _quiet(made["synthetic"] / "export", made, tmp_path / "short", images_per_row=2)
    assert cli(["import", str(doubled / "export"), "--real", str(made["setting"]), "--out", str(tmp_path / "bad"),
                "--images-per-row", "0"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--images-per-row 0 must be a whole number in [1, 100]" in error
    assert not (tmp_path / "short").exists() and not (tmp_path / "bad").exists()


def test_a_single_csv_with_more_images_takes_a_seeded_choice_in_source_order(made, tmp_path):
    export = made["synthetic"] / "export"
    # every image twice (the second time flipped left-right, so the two are told apart), folds in a column
    (tmp_path / "source" / "flipped").mkdir(parents=True)
    rows, offered = [], {}
    for fold, table in _fold_csvs(export).items():
        offered[fold] = []
        for path, *labels in table.itertuples(index=False):
            image = np.asarray(Image.open(export / path))
            name = Path(path).name
            Image.fromarray(image).save(tmp_path / "source" / name)
            Image.fromarray(image[:, ::-1]).save(tmp_path / "source" / "flipped" / name)
            rows += [[name, fold, *labels], [f"flipped/{name}", fold, *labels]]
            offered[fold] += [(image.tobytes(), labels), (image[:, ::-1].tobytes(), labels)]
    pd.DataFrame(rows, columns=["path", "fold", *LABELS]).to_csv(tmp_path / "source" / "all.csv", index=False)

    first = _images(_quiet(tmp_path / "source" / "all.csv", made, tmp_path / "a", seed=3))
    same = _images(_quiet(tmp_path / "source" / "all.csv", made, tmp_path / "b", seed=3))
    other = _images(_quiet(tmp_path / "source" / "all.csv", made, tmp_path / "c", seed=4))
    real = BenchmarkSetting(made["setting"])
    for fold in SPLITS:
        np.testing.assert_array_equal(first[fold], same[fold])
        where = {image: i for i, (image, _) in enumerate(offered[fold])}
        picked = [where[image[0].tobytes()] for image in first[fold]]  # each one of this fold's source images
        assert len(set(picked)) == len(picked)  # none twice
        for row_labels, i in zip(real.labels(fold).tolist(), picked):
            assert offered[fold][i][1] == row_labels  # with the real row's labels
        for key in {tuple(r) for r in real.labels(fold).tolist()}:  # in source order within a combination
            mine = [i for i, r in zip(picked, real.labels(fold).tolist()) if tuple(r) == key]
            assert mine == sorted(mine)
    assert any((first[f] != other[f]).any() for f in SPLITS)  # another seed, another choice
    assert any(i % 2 for i in picked) and not all(i % 2 for i in picked)  # both originals and mirrors


def test_npz_per_fold_and_pooled_with_named_labels_and_another_size(made, tmp_path):
    generated = _images(made["synthetic"])
    labels = {fold: BenchmarkSetting(made["setting"]).labels(fold) for fold in SPLITS}
    np.savez(tmp_path / "folds.npz", **{f"{f}_images": generated[f] for f in SPLITS},
             **{f"{f}_labels": labels[f] for f in SPLITS})
    back = _images(_quiet(tmp_path / "folds.npz", made, tmp_path / "folds"))
    for fold in SPLITS:
        np.testing.assert_array_equal(back[fold], generated[fold])

    # one pool for every fold, label columns named in another order, (N, H, W) at twice the size
    everything = np.concatenate([generated[f][:, 0] for f in SPLITS]).repeat(2, axis=1).repeat(2, axis=2)
    np.savez(tmp_path / "pooled.npz", images=everything, labels=np.concatenate([labels[f] for f in SPLITS])[:, ::-1],
             label_names=np.array(LABELS[::-1]))
    lines: list[str] = []
    import_synthetic(tmp_path / "pooled.npz", made["setting"], tmp_path / "pooled", progress=False, log=lines.append)
    assert any(line.startswith("warning: source images of 32x32 px, the setting is 16x16: resized") for line in lines)
    resized = _images(tmp_path / "pooled")
    for fold in SPLITS:  # each image back to about itself: the same rows, resized twice
        assert np.abs(resized[fold].astype(int) - generated[fold]).mean() < 12
        np.testing.assert_array_equal(BenchmarkSetting(tmp_path / "pooled" / "setting").labels(fold), labels[fold])


def test_a_folder_per_fold_of_rgb_images_becomes_grey(made, tmp_path):
    export = made["synthetic"] / "export"
    for fold, table in _fold_csvs(export).items():
        (tmp_path / "src" / fold).mkdir(parents=True)
        names = []
        for i, path in enumerate(table["Path"]):
            grey = np.asarray(Image.open(export / path))
            Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "src" / fold / f"{i}.png")
            names.append(f"{i}.png")
        table.assign(Path=names).to_csv(tmp_path / "src" / fold / "labels.csv", index=False)
    back = _images(_quiet(tmp_path / "src", made, tmp_path / "out"))
    generated = _images(made["synthetic"])
    for fold in SPLITS:
        np.testing.assert_array_equal(back[fold], generated[fold])


def test_no_source_path_or_file_name_reaches_any_output(made, tmp_path):
    secret = tmp_path / "ward7-secret-source"
    for fold, table in _fold_csvs(made["synthetic"] / "export").items():
        (secret / fold).mkdir(parents=True)
        names = [f"{fold}/PATIENT-ZQX{i:03d}.png" for i in range(len(table))]
        for old, new in zip(table["Path"], names):
            shutil.copy(made["synthetic"] / "export" / old, secret / new)
        table.assign(Path=names).to_csv(secret / f"{fold}.csv", index=False)
    out = _quiet(secret, made, tmp_path / "out")
    leaks = [str(secret), "ward7-secret-source", "PATIENT-ZQX"]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 60
    for path in files:
        content = path.read_bytes()
        assert not [s for s in leaks if s.encode() in content or s.encode("utf-32-le") in content], path
    records = pd.read_parquet(out / "store" / "records.parquet")  # parquet may compress: read it too
    assert not records.astype(str).apply(lambda c: c.str.contains("PATIENT-ZQX|ward7")).any().any()


def _cli_error(capsys, args: list[str]) -> str:
    assert cli(args) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    return error


def _write_export_copy(made, folder: Path, change) -> Path:
    shutil.copytree(made["synthetic"] / "export", folder)
    for fold, table in _fold_csvs(folder).items():
        change(fold, table).to_csv(folder / f"{fold}.csv", index=False)
    return folder


@pytest.mark.parametrize("change, message", [
    (lambda fold, t: t.drop(columns=["finding_1"]).rename(columns={"finding_0": "Finding 0"}),
     "has no label column(s) ['finding_0', 'finding_1']; the real setting's labels are"),
    (lambda fold, t: t[t.finding_1 == 0] if fold == "test" else t,
     "too few images for the real setting's label combinations: 'finding_1' (01) in test: 0 image(s), "),
    (lambda fold, t: t.assign(finding_0=t.finding_0.astype(object).where(t.index != 2, "yes")),
     "row 4, field 'finding_0': label value 'yes' is not allowed"),
    (lambda fold, t: t.assign(Path=t.Path.where(t.index != 0, "../elsewhere.png")),
     "row 2, field 'Path': path '../elsewhere.png' points outside the data folder"),
    (lambda fold, t: t.rename(columns={"Path": "file"}), "has no image column (Path or path)"),
])
def test_bad_input_is_one_line_with_exit_2_and_writes_nothing(made, tmp_path, capsys, change, message):
    source = _write_export_copy(made, tmp_path / "source", change)
    out = tmp_path / "sets" / "imported"
    error = _cli_error(capsys, ["import", str(source), "--real", str(made["setting"]), "--out", str(out)])
    assert message in error
    assert not (tmp_path / "sets").exists()  # everything is checked before the first folder is made


def test_an_unreadable_image_is_named_and_nothing_is_written(made, tmp_path, capsys):
    source = _write_export_copy(made, tmp_path / "source", lambda fold, t: t)
    (source / "val" / "syn-val-000001.png").write_bytes(b"not a png")
    out = tmp_path / "sets" / "imported"
    error = _cli_error(capsys, ["import", str(source), "--real", str(made["setting"]), "--out", str(out)])
    assert f"{source / 'val.csv'}, row 3, field 'Path': cannot use the image" in error
    assert not (tmp_path / "sets").exists()


def test_npz_and_out_errors(made, tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 16, 16), np.float32), labels=np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match=r"field 'images': is float32 of shape \(2, 16, 16\); expected uint8"):
        _quiet(tmp_path / "bad.npz", made, tmp_path / "o")
    np.savez(tmp_path / "keys.npz", pictures=np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(DataError, match=r"holds \['pictures'\]; expected train_images"):
        _quiet(tmp_path / "keys.npz", made, tmp_path / "o")
    np.savez(tmp_path / "three.npz", images=np.zeros((2, 16, 16), np.uint8), labels=np.full((2, 2), 2, np.uint8))
    with pytest.raises(DataError, match="label 'finding_0' of image 0 is 2, not 0 or 1"):
        _quiet(tmp_path / "three.npz", made, tmp_path / "o")
    with pytest.raises(DataError, match="already holds a synthetic set; pass --overwrite"):
        _quiet(made["synthetic"] / "export", made, made["synthetic"])
    assert not (tmp_path / "o").exists()


def test_a_damaged_npz_is_named_not_a_traceback(made, tmp_path, capsys):
    """Each of these once ended in BadZipFile, AttributeError, ValueError or TypeError, or wrote black images."""
    labels = np.zeros((2, 2), np.uint8)
    np.savez(tmp_path / "good.npz", images=np.zeros((2, 16, 16), np.uint8), labels=labels)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:300])
    with zipfile.ZipFile(tmp_path / "member.npz", "w") as archive:  # a zip whose member is no .npy
        archive.writestr("images.npy", b"garbage")
        archive.writestr("labels.npy", b"garbage")
    np.savez(tmp_path / "objects.npz", images=np.array([object(), object()]), labels=labels)
    np.savez(tmp_path / "names.npz", images=np.zeros((2, 16, 16), np.uint8), labels=labels,
             label_names=np.array("finding_0"))
    np.savez(tmp_path / "empty.npz", images=np.zeros((2, 1, 0, 0), np.uint8), labels=labels)
    np.savez(tmp_path / "text.npz", images=np.zeros((2, 16, 16), np.uint8), labels=labels.astype(str))
    for name, words in (("cut", "cut.npz: is not a .npz file"),
                        ("member", "field 'images': is not a numpy array (.npy) inside the .npz"),
                        ("objects", "field 'images': holds Python objects (an object array)"),
                        ("names", "field 'label_names': has shape (); expected a list of names"),
                        ("empty", "field 'images': is uint8 of shape (2, 1, 0, 0); expected uint8"),
                        ("text", "field 'labels': holds <U3 values; expected numbers 0 or 1")):
        error = _cli_error(capsys, ["import", str(tmp_path / f"{name}.npz"), "--real", str(made["setting"]),
                                    "--out", str(tmp_path / "o")])
        assert words in error, (name, error)
    assert not (tmp_path / "o").exists()


def test_a_ragged_csv_is_one_line(made, tmp_path, capsys):
    """pandas' parser error ends in a newline: the CLI prints it on the one error line."""
    source = _write_export_copy(made, tmp_path / "source", lambda fold, t: t)
    with open(source / "val.csv", "a") as table:
        table.write("a,b,c,d,e,f,g\n")
    assert cli(["import", str(source), "--real", str(made["setting"]), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and "val.csv" in error, repr(error)
    assert not (tmp_path / "o").exists()


def test_a_three_channel_setting_takes_rgb_images_as_they_are_and_refuses_grey_ones(tmp_path):
    store = prepare(array_source(channels=3), tmp_path / "store", resolutions=[8], workers=1, progress=False,
                    log=lambda m: None)
    (tmp_path / "p.yaml").write_text("dimensions:\n  all:\n    settings:\n      - {name: r8, resolution: 8}\n")
    build_settings(tmp_path / "p.yaml", store, tmp_path / "settings", log=lambda m: None)
    setting = BenchmarkSetting(tmp_path / "settings" / "all" / "r8")
    rng = np.random.default_rng(0)
    images = {f: rng.integers(0, 256, (len(setting.rows(f)), 3, 8, 8), dtype=np.uint8) for f in SPLITS}
    np.savez(tmp_path / "rgb.npz", **{f"{f}_images": images[f] for f in SPLITS},
             **{f"{f}_labels": setting.labels(f) for f in SPLITS})
    out = import_synthetic(tmp_path / "rgb.npz", setting.path, tmp_path / "rgb", progress=False, log=lambda m: None)
    for fold in SPLITS:
        np.testing.assert_array_equal(BenchmarkSetting(out / "setting").images(fold), images[fold])
    np.savez(tmp_path / "grey.npz", **{f"{f}_images": images[f][:, 0] for f in SPLITS},
             **{f"{f}_labels": setting.labels(f) for f in SPLITS})
    with pytest.raises(DataError, match=r"field 'train_images\[0\]': cannot use the image: ValueError: it has 1 "
                                        "channel\\(s\\), the real setting's images have 3"):
        import_synthetic(tmp_path / "grey.npz", setting.path, tmp_path / "grey", progress=False, log=lambda m: None)
    assert not (tmp_path / "grey").exists()
