"""`synthmed release`: the package and nothing else, no real identifier in any byte, refusal of a
failed audit, --force on the card's first line, reuse of a matching audit, atomic writes."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import synthmed.release
import synthmed.synthesis
from helpers import TINY_TRAINING, blob_image, one_setting, run_cli
from synthmed.data import BenchmarkSetting, prepare
from synthmed.data.imaging import ArrayImage
from synthmed.data.records import SPLITS, Record, SourceData
from synthmed.errors import DataError
from synthmed.evaluation.classifier import ClassifierConfig
from synthmed.evaluation.suite import evaluate_privacy_run
from synthmed.evaluation.utility import evaluate_utility, pair_identity
from synthmed.release import release
from synthmed.synthesis import generate
from synthmed.training.config import config_from_dict
from synthmed.training.loop import start_run, train

# Identifiers a hospital's data would carry: none of them may reach a released byte.
KEY, PATH, PATIENT = "MRN-4711-{:03d}", "ward7/scan-{:03d}.dcm", "PATIENT-ZQX{:03d}"


def _real_setting(root: Path) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(0)
    records = [Record(key=KEY.format(i), loader=ArrayImage(blob_image(rng, 40, bright=bool(i % 2))),
                      labels=(int(i % 2 == 0), int(i % 2)), path=PATH.format(i), group=PATIENT.format(i // 2))
               for i in range(80)]
    store = prepare(SourceData("hospital", ["No Finding", "Tumor"], records, params={}), root / "store",
                    resolutions=[16], workers=1, progress=False, log=lambda m: None)
    setting = one_setting(store, root / "settings", 16)
    secrets = [r.key for r in records] + [r.path for r in records] + [r.group for r in records] + [str(root)]
    return setting, secrets


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A real setting with identifiers, a tiny GAN, its synthetic set and an evaluation folder."""
    root = tmp_path_factory.mktemp("hospital")
    setting, secrets = _real_setting(root)
    run = start_run(config_from_dict({**TINY_TRAINING, "max_images": 160, "min_images": 160}), setting, root / "run")
    train(run, progress=False, log=lambda m: None)
    generate(run, progress=False, log=lambda m: None)
    config = ClassifierConfig(input_size=32, max_epochs=1, batch_size=16, threads=1)
    evaluate_utility(setting, run / "synthetic" / "setting", config, run / "eval", log=lambda m: None, progress=False)
    return {"root": root, "setting": setting, "run": run, "secrets": secrets}


def _png_chunks(data: bytes) -> list[bytes]:
    chunks, at = [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        chunks.append(kind)
        at += 12 + length
    return chunks


def test_the_package_holds_the_set_and_nothing_real(trained, tmp_path):
    out = tmp_path / "shared" / "package"
    lines: list[str] = []
    release(trained["run"], trained["setting"], out, log=lines.append)
    synthetic = BenchmarkSetting(trained["run"] / "synthetic" / "setting")
    counts = {fold: len(synthetic.rows(fold)) for fold in SPLITS}
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(["SHA256SUMS", "card.json", "card.md", "synthetic.npz", "test.csv", "train.csv", "val.csv"]
                           + [f"{fold}/syn-{fold}-{i:06d}.png" for fold in SPLITS for i in range(counts[fold])])
    assert [p.name for p in out.parent.iterdir()] == ["package"]  # no temporary folder left beside it

    sums = dict(reversed(line.split("  ")) for line in (out / "SHA256SUMS").read_text().splitlines())
    assert sorted(sums) == sorted(set(files) - {"SHA256SUMS"})
    assert all(hashlib.sha256((out / name).read_bytes()).hexdigest() == digest for name, digest in sums.items())

    arrays = np.load(out / "synthetic.npz")
    for fold in SPLITS:
        np.testing.assert_array_equal(arrays[f"{fold}_images"], synthetic.images(fold))
        np.testing.assert_array_equal(arrays[f"{fold}_labels"], synthetic.labels(fold))
        table = pd.read_csv(out / f"{fold}.csv")
        assert list(table.columns) == ["Path", "No Finding", "Tumor"] and len(table) == counts[fold]
        np.testing.assert_array_equal(table[["No Finding", "Tumor"]].to_numpy(), synthetic.labels(fold))

    card = json.loads((out / "card.json").read_text())
    audit = json.loads((trained["run"] / "eval" / "privacy.json").read_text())  # the audit release ran
    assert card["privacy"]["verdict"] == audit["verdict"] != "fail" and card["release"]["forced_by"] is None
    # the registered pixel distance's defaults are stored with the audit, and what they meant at 16 px
    assert (audit["options"]["max_shift"], audit["options"]["max_scale"]) == (0.1, 1.15)
    assert audit["spaces"]["pixels"].endswith("the smallest over shifts of up to 2 px and zooms 0.87 to 1.15")
    assert card["privacy"]["tests"] == audit["tests"] and card["utility"]["auc_real"]["mean"] is not None
    assert card["fidelity"] is None  # not measured: the card says so instead of leaving it out
    markdown = (out / "card.md").read_text()
    assert markdown.startswith("# Synthetic data set: all/r16") and "## Privacy audit" in markdown
    assert "Not measured for this set (no fidelity.json made for it)." in markdown
    assert any(line.startswith("running the privacy audit") for line in lines)

    real_images = BenchmarkSetting(trained["setting"]).images("train")
    for path in out.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            leaked = [s for s in trained["secrets"] if s.encode() in content or s.encode("utf-32-le") in content]
            assert not leaked, f"{path} holds real identifiers {leaked[:3]}"
            if path.suffix == ".png":
                assert set(_png_chunks(content)) <= {b"IHDR", b"IDAT", b"IEND"}, path  # no text, time or other
            if path.suffix == ".npz":
                assert not any(image.tobytes() in content for image in real_images)

    # a second release reuses the audit and never overwrites
    again: list[str] = []
    release(trained["run"], trained["setting"], tmp_path / "again", log=again.append)
    assert any(line.startswith("reusing the privacy audit") for line in again)
    with pytest.raises(DataError, match="already exists"):
        release(trained["run"], trained["setting"], out, log=lambda m: None)


def _copying_set(trained, folder: Path, monkeypatch) -> Path:
    """A synthetic set of the real training images themselves, with the real classifier beside it."""
    real = BenchmarkSetting(trained["setting"])
    originals = real.images("train")
    monkeypatch.setattr(synthmed.synthesis, "synthesize",
                        lambda sampler, labels, seed, **kw: originals[np.arange(len(labels)) % len(originals)])
    generate(trained["run"], folder / "synthetic", progress=False, log=lambda m: None)
    (folder / "eval").mkdir()
    shutil.copy(trained["run"] / "eval" / "real_classifier.pt", folder / "eval")
    return folder


def test_a_set_of_copies_is_refused_and_force_says_who_on_the_first_line(trained, tmp_path, monkeypatch, capsys):
    copies = _copying_set(trained, tmp_path / "copies", monkeypatch)
    base = ["release", str(copies), "--real", str(trained["setting"])]
    assert run_cli(base + ["--out", str(tmp_path / "out")]) == 1
    error = " ".join(capsys.readouterr().err.split())
    assert "refused:" in error and "the privacy audit failed, nothing was written" in error and "fail: " in error
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))

    assert run_cli(base + ["--out", str(tmp_path / "out"), "--by", "someone"]) == 2  # --by needs --force
    assert "--by names who forces a release" in " ".join(capsys.readouterr().err.split())

    assert run_cli(base + ["--out", str(tmp_path / "out"), "--force", "--by", "Dr. Data Protection"]) == 0
    first = (tmp_path / "out" / "card.md").read_text().splitlines()[0]
    assert first.startswith("# WARNING: this set FAILED its privacy audit and was released anyway (--force) by "
                            "Dr. Data Protection on ")
    card = json.loads((tmp_path / "out" / "card.json").read_text())
    assert card["release"] == {**card["release"], "privacy_verdict": "fail", "forced_by": "Dr. Data Protection"}

    # an audit made for another set is never taken for this one: the copies' audit is skipped, the set's own reused
    lines: list[str] = []
    folders = [copies / "eval", trained["run"] / "eval"]
    release(trained["run"], trained["setting"], tmp_path / "mixed", evaluation=folders, log=lines.append)
    assert f"reusing the privacy audit {trained['run'] / 'eval' / 'privacy.json'}" in lines


@pytest.mark.parametrize("step", ["savez", "write_text_atomic"])
def test_a_release_that_breaks_off_leaves_nothing(trained, tmp_path, monkeypatch, step):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    target = synthmed.release.np if step == "savez" else synthmed.release
    monkeypatch.setattr(target, step, broken)
    with pytest.raises(OSError, match="disk full"):
        release(trained["run"], trained["setting"], tmp_path / "package", log=lambda m: None)
    assert list(tmp_path.iterdir()) == []  # neither the package nor its temporary folder


@pytest.mark.parametrize("args, message", [
    (["release", "{tmp}", "--real", "{setting}", "--out", "{tmp}/o"], "is neither a synthetic set"),
    (["release", "{run}", "--real", "{setting}", "--out", "{run}"], "already exists: a release goes to a new folder"),
    (["release", "{run}", "--real", "{setting}", "--out", "{tmp}/o", "--evaluation", "{tmp}/none"],
     "is not a folder (--evaluation)"),
    (["release", "{run}", "--real", "{setting}", "--out", "{tmp}/o", "--evaluation", "{tmp}"],
     "holds no privacy audit of this synthetic set and no real_classifier.pt"),
    (["release", "{run}", "--real", "{tmp}", "--out", "{tmp}/o"], "not a benchmark setting"),
])
def test_bad_input_exits_2_and_writes_nothing(trained, tmp_path, capsys, args, message):
    values = {"tmp": tmp_path, "run": trained["run"], "setting": trained["setting"]}
    assert run_cli([a.format(**values) for a in args]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "o").exists()


def _drop(key: str):
    return lambda data: data.pop(key)


def _set(*keys: str, value):
    def change(data: dict) -> None:
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = value
    return change


@pytest.mark.parametrize("file, damage, message", [
    ("synthetic/card.json", '{"generation_seed": ', "card.json: is damaged: not valid JSON"),
    ("synthetic/card.json", _drop("model"), "card.json: is damaged: the release cannot read it (KeyError: 'model')"),
    ("synthetic/card.json", _set("best_fid", value="abc"), "card.json: is damaged: best_fid = 'abc' must be a number"),
    ("synthetic/card.json", _set("images_per_fold", value={"train": 5, "val": 5, "test": 5}),
     "card.json: is damaged: images_per_fold = {'train': 5, 'val': 5, 'test': 5}, but the synthetic set holds"),
    ("synthetic/card.json", _set("label_counts", "train", "Tumor", value=0),
     "card.json: is damaged: label_counts.train = {'No Finding': "),
    ("synthetic/card.json", _set("label_counts", "extra", value={}),
     "card.json: is damaged: label_counts.extra is not a fold of a synthetic set (train, val, test)"),
    ("synthetic/card.json", lambda data: data["label_counts"].pop("val"),
     "card.json: is damaged: label_counts.val is missing"),
    ("synthetic/card.json", _set("images_per_row", value=0),
     "card.json: is damaged: images_per_row = 0, but the synthetic set holds 1 image per real row"),
    ("synthetic/card.json", _set("images_per_row", value=True),
     "card.json: is damaged: images_per_row = True, but the synthetic set holds 1 image per real row"),
    ("eval/utility.json", "[1, 2]\n", "utility.json: is damaged: it holds a JSON list, not an object"),
    ("eval/utility.json", _drop("auc_syn"), "utility.json: lacks ['auc_syn'], which the card needs"),
    ("eval/utility.json", _set("config", value=[1]), "utility.json: is damaged: config = [1] must be a mapping"),
    ("eval/fidelity.json", _set("metrics", value=[1]), "fidelity.json: is damaged: metrics = [1] must be a mapping"),
    ("eval/privacy.json", _set("verdict", value="maybe"),
     "privacy.json: is damaged: verdict = 'maybe' is not one of ['fail', 'pass', 'warn']"),
    ("eval/privacy.json", _set("tests", value="x"), "privacy.json: is damaged: the release cannot read it (TypeError"),
])
def test_a_damaged_card_or_evaluation_is_named_and_nothing_is_written(trained, tmp_path, capsys, file, damage,
                                                                     message):
    run = tmp_path / "run"
    shutil.copytree(trained["run"] / "synthetic", run / "synthetic")
    shutil.copytree(trained["run"] / "eval", run / "eval")
    if not (run / "eval" / "privacy.json").exists():  # made by the first test's release; alone, made here
        evaluate_privacy_run(trained["setting"], run / "synthetic" / "setting", run / "eval" / "real_classifier.pt",
                             run / "eval", log=lambda m: None)
    path = run / file
    if isinstance(damage, str):
        path.write_text(damage)
    else:
        # no fidelity.json is measured here: one that is made for this set is enough to damage
        data = json.loads(path.read_text()) if path.exists() else pair_identity(
            BenchmarkSetting(trained["setting"]), BenchmarkSetting(run / "synthetic" / "setting"))
        damage(data)
        path.write_text(json.dumps(data))
    assert run_cli(["release", str(run), "--real", str(trained["setting"]), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))
