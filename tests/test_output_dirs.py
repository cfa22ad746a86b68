"""Output folders and run folders as a new user gets them wrong: each is a one-line error with exit
status 2 that names the option and the path, given before any work, and nothing on disk changes.

``--out`` that is a file, lies under a file or cannot be written, for every command that writes a
folder; ``train`` values that only the machine can refuse (device, threads, FID extractor), which
must not leave a half-made run; ``--resume`` on a folder that is not a run; ``generate`` on a
damaged generator file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import array_source, refused_by_cli, write_br35h_tree
from synthmed.data import build_settings, prepare
from synthmed.errors import UserError
from synthmed.evaluation.classifier import Classifier, ClassifierConfig
from synthmed.output_dir import check_output_path, move_into_place
from synthmed.training.config import config_from_dict
from synthmed.training.loop import start_run, train
from synthmed.training.run_dir import RunDir

# a generator that trains in seconds on the CPU (as in test_training)
TINY = {"latent_dim": 8, "channels_base": 128, "channels_max": 16, "batch_size": 8, "learning_rate": 0.002,
        "min_images": 80, "max_images": 160, "fid_every": 80, "fid_samples": 24, "fid_extractor": "pixels",
        "patience": 50, "sample_every": 160, "checkpoint_every": 40, "log_every": 40, "threads": 1}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A store at 16 and 32 px, its settings, a finished tiny run, a saved classifier, a br35h tree."""
    root = tmp_path_factory.mktemp("inputs")
    store = prepare(array_source(), root / "store", resolutions=[16, 32], workers=1, progress=False,
                    log=lambda m: None)
    preset = root / "preset.yaml"
    preset.write_text("dimensions:\n  all:\n    settings:\n      - {name: r16, resolution: 16}\n"
                      "      - {name: r32, resolution: 32}\n")
    build_settings(preset, store, root / "settings", log=lambda m: None)
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run = start_run(config_from_dict(TINY), root / "settings" / "all" / "r16", root / "run")
    train(run, progress=False, log=lambda m: None)
    classifier = root / "classifier.pt"
    Classifier(ClassifierConfig(), 1, store.label_names).save(classifier)
    return {"root": root, "store": store.path, "preset": preset, "r16": root / "settings" / "all" / "r16",
            "r32": root / "settings" / "all" / "r32", "config": config, "run": run, "classifier": classifier,
            "br35h": write_br35h_tree(root / "br35h", per_class=2)}


def disk(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folders`` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for folder in folders
            for p in [folder, *folder.rglob("*")]}


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder no file can be made in: read-only by its mode, or, for root (whom modes do not stop), /proc."""
    if os.geteuid() == 0:
        return Path("/proc")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def bad_out(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """An --out of the given kind, and the words the error gives for it."""
    if kind == "file":
        (tmp_path / "notes.txt").write_text("mine")
        return tmp_path / "notes.txt", "is a file, not a folder"
    if kind == "under a file":
        (tmp_path / "notes.txt").write_text("mine")
        return tmp_path / "notes.txt" / "out", "which is a file, not a folder"
    if kind == "no name":  # '.' or '..': the staged copy beside it would have no name (once a traceback at the end)
        return tmp_path / "..", "names no folder of its own"
    return unwritable_folder(tmp_path) / "out", "cannot be written"


def commands(inputs: dict[str, Path], out: Path) -> dict[str, list]:
    """Every command that writes a folder, with valid inputs and ``out`` as its --out."""
    real, classifier = inputs["r32"], inputs["classifier"]
    return {
        "data prepare": ["data", "prepare", "br35h", "--root", inputs["br35h"], "--resolution", "8", "--workers", "1",
                         "--no-progress", "--out", out],
        "data settings": ["data", "settings", "--preset", inputs["preset"], "--store", inputs["store"], "--out", out],
        "train": ["train", "--config", inputs["config"], "--data", inputs["r16"], "--out", out, "--no-progress"],
        "generate": ["generate", inputs["run"], "--out", out, "--no-progress"],
        "evaluate utility": ["evaluate", "utility", "--real", real, "--synthetic", real, "--out", out,
                             "--no-progress"],
        "evaluate fidelity": ["evaluate", "fidelity", "--real", real, "--synthetic", real, "--classifier", classifier,
                              "--extractor", "pixels", "--out", out],
        "evaluate privacy": ["evaluate", "privacy", "--real", real, "--synthetic", real, "--classifier", classifier,
                             "--out", out],
        "evaluate importance": ["evaluate", "importance", "--real", real, "--real-classifier", classifier,
                                "--synthetic-classifier", classifier, "--out", out],
        "evaluate all": ["evaluate", "all", "--real", real, "--synthetic", real, "--extractor", "pixels",
                         "--out", out, "--no-progress"],
        "reader-study create": ["reader-study", "create", "--real", inputs["store"], "--synthetic", inputs["store"],
                                "--resolution", "16", "--n-real", "2", "--n-synthetic", "2", "--out", out],
    }


COMMANDS = list(commands({k: Path(k) for k in ("br35h", "preset", "store", "config", "r16", "r32", "run",
                                                "classifier")}, Path("out")))


# commands that write their folder in place (no copy staged beside it): '.' or '..' is a folder for them
IN_PLACE = {"train", "evaluate utility", "evaluate fidelity", "evaluate privacy", "evaluate importance", "evaluate all"}


@pytest.mark.parametrize("command, kind", [(command, kind) for command in COMMANDS
                                           for kind in ("file", "under a file", "not writable", "no name")
                                           if not (kind == "no name" and command in IN_PLACE)])
def test_an_out_that_cannot_be_a_folder_is_refused_before_any_work(command, kind, inputs, tmp_path):
    out, words = bad_out(kind, tmp_path)
    before = disk(tmp_path, inputs["root"])
    refused_by_cli(commands(inputs, out)[command], None, f"--out {out}", words)
    assert disk(tmp_path, inputs["root"]) == before


@pytest.mark.parametrize("setting, message", [
    ("fid_extractor=nope", "unknown feature extractor 'nope'"),
    ("device=gpu", "device = 'gpu' cannot be used here"),
    ("device=cuda:99", "device = 'cuda:99' cannot be used here"),
    ("threads=-1", "threads = -1 must be a non-negative integer"),
    ("threads=abc", "threads = 'abc' must be a whole number"),
])
def test_train_checks_the_machine_before_it_makes_the_run_folder(setting, message, inputs, tmp_path):
    run = tmp_path / "run"
    refused_by_cli(commands(inputs, run)["train"] + ["--set", setting], None, message)
    assert not run.exists()  # nothing half-made to block the corrected command or --resume


@pytest.mark.parametrize("case", ["missing", "empty", "other files", "config only"])
def test_resume_of_a_folder_that_is_not_a_run_names_it(case, tmp_path):
    folder = tmp_path / "run"
    if case != "missing":
        folder.mkdir()
    if case == "other files":
        (folder / "notes.txt").write_text("mine")
    if case == "config only":
        (folder / "config.yaml").write_text(yaml.safe_dump(TINY))
    before = disk(tmp_path)
    refused_by_cli(["train", "--resume", folder], None, f"--resume {folder}", "is not a training run")
    assert disk(tmp_path) == before


@pytest.mark.parametrize("damage", ["truncated", "not a torch file"])
def test_generate_from_a_damaged_generator_file_names_the_file(damage, inputs, tmp_path):
    run = RunDir(shutil.copytree(inputs["run"], tmp_path / "run"))
    if damage == "truncated":
        data = run.generator.read_bytes()
        run.generator.write_bytes(data[: len(data) // 2])
    else:
        run.generator.write_text("generator weights: see the other disk\n")
    before = disk(tmp_path)
    error = refused_by_cli(["generate", run.path, "--no-progress"], None, str(run.generator), "truncated or damaged").stderr
    assert "--resume" not in error
    assert disk(tmp_path) == before


@pytest.mark.parametrize("damage, words", [
    ("weights of another shape", "holds weights that do not fit the network its config builds"),
    ("a classifier's file", "is not a generator file: it lacks ['resolution']"),
    ("a bare tensor", "is not a generator file: it lacks ['config', 'image_channels', 'label_names', "),
])
def test_generate_from_a_generator_file_that_does_not_fit_names_the_file(damage, words, inputs, tmp_path):
    """Readable torch files that are not this run's generator were a RuntimeError or a KeyError from the loader."""
    import torch

    run = RunDir(shutil.copytree(inputs["run"], tmp_path / "run"))
    if damage == "weights of another shape":
        snapshot = torch.load(run.generator, weights_only=False)
        name, weight = next(iter(snapshot["state_dict"].items()))
        snapshot["state_dict"][name] = torch.zeros(*weight.shape[:-1], weight.shape[-1] + 1)
        torch.save(snapshot, run.generator)
    elif damage == "a bare tensor":
        torch.save(torch.zeros(3), run.generator)
    else:
        shutil.copy(inputs["classifier"], run.generator)
    before = disk(tmp_path)
    refused_by_cli(["generate", run.path, "--no-progress"], None, str(run.generator), words)
    assert disk(tmp_path) == before


def test_generate_from_a_folder_that_is_not_a_run_names_it(tmp_path):
    refused_by_cli(["generate", tmp_path, "--out", tmp_path / "synthetic"], None, f"RUN {tmp_path}", "is not a training run")
    assert not (tmp_path / "synthetic").exists()


def test_replacing_a_folder_leaves_the_users_folder_named_like_its_backup_alone(tmp_path):
    """The old folder is swapped out under a fresh hidden name: a fixed OUT.old once deleted a folder of the user's."""
    out, partial = tmp_path / "set", tmp_path / ".set.partial"
    for folder, text in ((out, "old"), (partial, "new"), (tmp_path / "set.old", "mine")):
        folder.mkdir()
        (folder / "file.txt").write_text(text)
    move_into_place(partial, out)
    assert (out / "file.txt").read_text() == "new" and not partial.exists()
    assert (tmp_path / "set.old" / "file.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set", "set.old"]  # no hidden leftover


@pytest.mark.parametrize("command", ["evaluate fidelity", "evaluate privacy", "evaluate importance"])
@pytest.mark.parametrize("damage", ["truncated", "a generator's", "channels as text"])
def test_a_damaged_classifier_file_is_named(command, damage, inputs, tmp_path):
    import torch

    classifier = tmp_path / "real_classifier.pt"
    if damage == "channels as text":  # a readable checkpoint whose fields are of the wrong kind
        checkpoint = torch.load(inputs["classifier"], weights_only=True)
        torch.save({**checkpoint, "image_channels": "one"}, classifier)
    else:
        source = inputs["classifier"] if damage == "truncated" else inputs["run"] / "generator.pt"
        classifier.write_bytes(source.read_bytes()[:1000] if damage == "truncated" else source.read_bytes())
    args = [classifier if a == inputs["classifier"] else a for a in commands(inputs, tmp_path / "out")[command]]
    refused_by_cli(args, None, str(classifier), "is not a synthmed classifier file")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, words", [
    (["--patch", "0"], "patch = 0"), (["--images", "0"], "n_images = 0"), (["--max-images", "2"], "max_images = 2"),
    (["--extractor", "foo"], "unknown feature extractor 'foo'")])
def test_evaluate_all_checks_its_options_before_the_classifiers_train(option, words, inputs, tmp_path):
    refused_by_cli([*commands(inputs, tmp_path / "out")["evaluate all"], *option], None, words)
    assert not (tmp_path / "out").exists()  # once refused only after utility, fidelity and privacy had run


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    out, partial = tmp_path / "set", tmp_path / ".set.partial"
    for folder, text in ((out, "old"), (partial, "new")):
        folder.mkdir()
        (folder / "file.txt").write_text(text)
    replace, calls = os.replace, []

    def second_fails(source, target):
        calls.append(source)
        if len(calls) == 2:  # the new folder onto out: a full disk, say
            raise OSError(28, "No space left on device")
        replace(source, target)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(OSError):
        move_into_place(partial, out)
    assert (out / "file.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".set.partial", "set"]  # no hidden backup left


def test_a_folder_written_in_place_may_be_the_current_one(tmp_path, monkeypatch):
    """'--out .' names no folder to stage a copy beside, but an evaluation or a benchmark writes in place."""
    monkeypatch.chdir(tmp_path)
    assert check_output_path(".", staged=False) == Path(".")
    with pytest.raises(UserError, match="names no folder of its own"):
        check_output_path(".")
