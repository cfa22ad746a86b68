"""The prepared store on tiny in-test sources: pixels, round trip, idempotence, resume, bad files, groups."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from helpers import refused_by_cli
from synthmed.cli import app
from synthmed.data.imaging import ArrayImage, ImageFile, dhash
from synthmed.data.records import SPLITS, Record, SourceData
from synthmed.data.store import Store, _worker_pool, prepare
from synthmed.errors import DataError

RESOLUTIONS = [8, 16, 32]
LABEL_NAMES = ["A", "B", "C"]
COMBINATIONS = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)]
TESTS_DIR = Path(__file__).resolve().parent


# ---- tiny sources -------------------------------------------------------------------------------


def pattern(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth, structured uint8 image (a random 9x8 pattern upscaled): stable dHash, distinct per seed."""
    coarse = rng.integers(20, 236, size=(8, 9)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def noisy_copy(rng: np.random.Generator, image: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    return np.clip(image.astype(np.float64) + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def write_png(path: Path, pixels: np.ndarray) -> str:
    Image.fromarray(pixels).save(path)
    return str(path)


def mixed_source(tmp_path: Path, n: int = 40, seed: int = 0) -> tuple[SourceData, dict[str, np.ndarray]]:
    """Half in-memory arrays (a few RGB), half PNG files; 3 labels; patient groups of two images.

    Returns the source and, per key, the float gray image an independent reader sees.
    """
    rng = np.random.default_rng(seed)
    folder = tmp_path / f"png-{seed}"
    folder.mkdir(exist_ok=True)
    records, gray = [], {}
    for i in range(n):
        height, width = int(rng.integers(24, 80)), int(rng.integers(24, 80))
        labels = COMBINATIONS[i % len(COMBINATIONS)]
        key = f"img{i:03d}"
        if i % 2 == 0 and i % 10 != 0:
            pixels = pattern(rng, height, width)
            loader, path, reference = ArrayImage(pixels), f"memory/{key}", pixels.astype(np.float32)
        elif i % 10 == 0:  # RGB array: the reference gray comes from Pillow, not from synthmed
            rgb = np.stack([pattern(rng, height, width) for _ in range(3)], axis=-1)
            loader, path = ArrayImage(rgb), f"memory/{key}"
            reference = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32)
        else:
            pixels = pattern(rng, height, width)
            path = write_png(folder / f"{key}.png", pixels)
            loader, reference = ImageFile(path), pixels.astype(np.float32)
        records.append(Record(key=key, loader=loader, labels=labels, path=path, group=f"patient-{i // 2}"))
        gray[key] = reference
    return SourceData("tiny", list(LABEL_NAMES), records, params={"seed": seed}), gray


def array_source(n: int = 40, seed: int = 1, size: int = 64) -> SourceData:
    """In-memory 64x64 images (more than numpy prints in a repr), groups of two."""
    rng = np.random.default_rng(seed)
    records = [
        Record(key=f"a{i}", loader=ArrayImage(pattern(rng, size, size)), labels=COMBINATIONS[i % 3],
               path=f"memory/a{i}", group=f"p{i // 2}")
        for i in range(n)
    ]
    return SourceData("arrays", list(LABEL_NAMES), records)


def reference_pyramid(gray: np.ndarray, resolutions: list[int]) -> dict[int, np.ndarray]:
    """The documented pipeline written out independently: bilinear to 256, x/max*255, block means."""
    big = np.asarray(Image.fromarray(gray.astype(np.float32)).resize((256, 256), Image.BILINEAR), dtype=np.float64)
    big = big / big.max() * 255.0
    return {r: np.rint(big.reshape(r, 256 // r, r, 256 // r).mean(axis=(1, 3))) for r in resolutions}


def quiet(*args, **kwargs) -> Store:
    kwargs.setdefault("progress", False)
    kwargs.setdefault("log", lambda line: None)
    kwargs.setdefault("resolutions", RESOLUTIONS)
    return prepare(*args, **kwargs)


def content_bytes(path: Path) -> dict[str, bytes]:
    names = [f"images_{r}.npy" for r in RESOLUTIONS] + ["labels.npy", "records.parquet"]
    return {name: (path / name).read_bytes() for name in names}


def assert_groups_within_one_split(store: Store) -> None:
    frame = store.records
    assert frame.groupby("group")["split"].nunique().max() == 1


# ---- round trip ---------------------------------------------------------------------------------


def test_round_trip_pixels_labels_records_manifest(tmp_path):
    source, gray = mixed_source(tmp_path)
    store = quiet(source, tmp_path / "store", workers=1)

    assert len(store) == 40 and store.resolutions == RESOLUTIONS and store.label_names == LABEL_NAMES
    for r in RESOLUTIONS:
        images = store.images(r)
        assert isinstance(images, np.memmap), "images must be memory-mapped, not loaded"
        assert images.dtype == np.uint8 and images.shape == (40, 1, r, r)
    for i, record in enumerate(source.records):
        expected = reference_pyramid(gray[record.key], RESOLUTIONS)
        for r in RESOLUTIONS:
            difference = np.abs(store.images(r)[i, 0].astype(int) - expected[r].astype(int))
            assert difference.max() <= 1, (record.key, r, difference.max())

    assert np.array_equal(store.labels, np.array([r.labels for r in source.records], dtype=np.uint8))
    frame = store.records
    assert frame["key"].tolist() == [r.key for r in source.records]
    assert frame["path"].tolist() == [r.path for r in source.records]
    assert frame["combination"].tolist() == ["".join(map(str, r.labels)) for r in source.records]
    assert set(frame["split"]) <= set(SPLITS)
    # the given patient groups: same name <-> same integer group
    names = [r.group for r in source.records]
    assert len(set(zip(names, frame["group"]))) == len(set(names)) == frame["group"].nunique() == 20
    assert_groups_within_one_split(store)

    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["n_images"] == 40 and manifest["n_skipped"] == 0 and manifest["n_groups"] == 20
    assert manifest["channels"] == 1 and manifest["base_size"] == 256 and manifest["source"] == "tiny"
    assert manifest["label_names"] == LABEL_NAMES and manifest["group_method"] == "patient id"
    assert manifest["split_counts"] == {s: int((frame["split"] == s).sum()) for s in SPLITS}
    assert sum(manifest["split_counts"].values()) == 40
    digest = hashlib.sha256()
    for data in content_bytes(tmp_path / "store").values():
        digest.update(data)
    assert manifest["content_hash"] == digest.hexdigest()
    assert (tmp_path / "store" / "skipped.csv").read_text().strip() == "path,reason"
    assert not (tmp_path / "store.partial").exists()

    reopened = Store(tmp_path / "store")
    assert np.array_equal(reopened.images(32), store.images(32))
    with pytest.raises(DataError, match="resolution"):
        reopened.images(64)


# ---- idempotence and overwrite ------------------------------------------------------------------


def test_second_prepare_with_same_inputs_does_nothing(tmp_path):
    out = tmp_path / "store"
    quiet(array_source(), out, workers=1)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    time.sleep(0.05)
    lines: list[str] = []
    store = quiet(array_source(), out, workers=1, log=lines.append)
    assert any("already prepared" in line and "nothing to do" in line for line in lines), lines
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    assert not (tmp_path / "store.partial").exists()
    assert len(store) == 40


def test_changed_inputs_need_overwrite(tmp_path):
    out = tmp_path / "store"
    first = quiet(array_source(), out, workers=1)
    old_hash = first.manifest["content_hash"]

    # one pixel in the middle of one 64x64 array (numpy's repr would not show it)
    changed = array_source()
    pixels = changed.records[5].loader.pixels.copy()
    pixels[32, 32] = 255 - pixels[32, 32]
    changed.records[5] = Record(**{**changed.records[5].__dict__, "loader": ArrayImage(pixels)})
    with pytest.raises(DataError, match="other inputs"):
        quiet(changed, out, workers=1)

    relabelled = array_source()
    relabelled.records[0] = Record(**{**relabelled.records[0].__dict__, "labels": (0, 0, 1)})
    with pytest.raises(DataError, match="overwrite"):
        quiet(relabelled, out, workers=1)
    assert Store(out).manifest["content_hash"] == old_hash  # untouched by the refusals

    replaced = quiet(relabelled, out, workers=1, overwrite=True)
    assert tuple(replaced.labels[0]) == (0, 0, 1)
    assert replaced.manifest["content_hash"] != old_hash
    assert not (tmp_path / "store.partial").exists() and not (tmp_path / "store.old").exists()


def test_replaced_image_file_is_decoded_again(tmp_path):
    source, _ = mixed_source(tmp_path)
    out = tmp_path / "store"
    quiet(source, out, workers=1)
    png = next(r.loader.path for r in source.records if isinstance(r.loader, ImageFile))
    pixels = np.asarray(Image.open(png))
    write_png(Path(png), 255 - pixels)  # same path, new content
    os.utime(png, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(DataError, match="other inputs"):
        quiet(source, out, workers=1)


def test_non_store_directory_is_refused(tmp_path):
    out = tmp_path / "store"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a store"):
        quiet(array_source(), out, workers=1)
    assert (out / "notes.txt").read_text() == "mine"


# ---- resume after a hard kill -------------------------------------------------------------------


@dataclass(frozen=True)
class SlowFile:
    """An image file whose loading takes a while and is counted (for the kill / resume test)."""

    path: str

    def load(self):
        time.sleep(float(os.environ.get("SYNTHMED_TEST_LOAD_DELAY", "0")))
        counter = os.environ.get("SYNTHMED_TEST_LOAD_LOG")
        if counter:
            with open(counter, "a") as f:
                f.write(self.path + "\n")
        return ImageFile(self.path).load()

    def fingerprint(self) -> str:
        return ImageFile(self.path).fingerprint()


def slow_source(folder: Path) -> SourceData:
    paths = sorted(folder.glob("*.png"))
    records = [
        Record(key=p.stem, loader=SlowFile(str(p)), labels=COMBINATIONS[i % 4], path=p.name, group=f"p{i // 2}")
        for i, p in enumerate(paths)
    ]
    return SourceData("slow", list(LABEL_NAMES), records)


_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_store import RESOLUTIONS, slow_source
from synthmed.data.store import prepare
prepare(slow_source(Path(sys.argv[2])), sys.argv[3], resolutions=RESOLUTIONS, workers=2, batch_size=4,
        progress=False)
"""


def test_killed_prepare_resumes_to_the_same_store(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(40):
        write_png(folder / f"s{i:02d}.png", pattern(rng, int(rng.integers(24, 64)), int(rng.integers(24, 64))))
    out, partial = tmp_path / "store", tmp_path / "store.partial"

    env = {**os.environ, "SYNTHMED_TEST_LOAD_DELAY": "0.1"}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(TESTS_DIR), str(folder), str(out)],
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    done = 0
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            try:
                done = json.loads((partial / "progress.json").read_text())["done"]
            except (OSError, ValueError, KeyError):
                done = 0
            if done >= 12:
                break
            time.sleep(0.01)
        assert child.poll() is None, f"prepare ended before it could be killed: {child.communicate()}"
        os.killpg(child.pid, signal.SIGKILL)  # the child and its worker processes, no clean-up
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert not out.exists() and partial.is_dir()
    checkpoint = json.loads((partial / "progress.json").read_text())["done"]
    assert 12 <= checkpoint < 40 and checkpoint % 4 == 0

    loads = tmp_path / "loads.txt"
    monkeypatch.setenv("SYNTHMED_TEST_LOAD_LOG", str(loads))
    lines: list[str] = []
    resumed = quiet(slow_source(folder), out, workers=1, batch_size=4, log=lines.append)
    assert any(line.startswith(f"resuming: {checkpoint} of 40") for line in lines), lines
    assert len(loads.read_text().splitlines()) == 40 - checkpoint, "only the unfinished images are decoded again"
    assert not partial.exists()

    monkeypatch.delenv("SYNTHMED_TEST_LOAD_LOG")
    reference = quiet(slow_source(folder), tmp_path / "reference", workers=1, batch_size=16)
    assert len(resumed) == 40
    assert content_bytes(out) == content_bytes(tmp_path / "reference")
    pd.testing.assert_frame_equal(resumed.records, reference.records)
    assert resumed.manifest["content_hash"] == reference.manifest["content_hash"]


# ---- unreadable images --------------------------------------------------------------------------


def source_with_bad_files(tmp_path: Path) -> tuple[SourceData, SourceData, list[str]]:
    good, _ = mixed_source(tmp_path, n=40, seed=3)
    truncated = tmp_path / "truncated.png"
    full = tmp_path / "full.png"
    write_png(full, pattern(np.random.default_rng(9), 64, 64))
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    garbage = tmp_path / "garbage.png"
    garbage.write_text("this is not a PNG file\n")
    bad = [
        Record(key="truncated", loader=ImageFile(str(truncated)), labels=(1, 0, 0), path=str(truncated), group="x1"),
        Record(key="garbage", loader=ImageFile(str(garbage)), labels=(0, 1, 0), path=str(garbage), group="x2"),
        Record(key="blank", loader=ArrayImage(np.zeros((32, 32), np.uint8)), labels=(0, 0, 1),
               path="memory/blank", group="x3"),
    ]
    records = good.records[:10] + bad[:1] + good.records[10:25] + bad[1:] + good.records[25:]
    with_bad = SourceData("tiny", list(LABEL_NAMES), records, params=good.params)
    return with_bad, good, [r.path for r in bad]


def test_bad_images_are_skipped_and_listed(tmp_path):
    with_bad, good, bad_paths = source_with_bad_files(tmp_path)
    lines: list[str] = []
    store = quiet(with_bad, tmp_path / "store", workers=2, batch_size=8, max_bad_fraction=0.1, log=lines.append)
    assert len(store) == 40 and store.manifest["n_skipped"] == 3
    skipped = pd.read_csv(tmp_path / "store" / "skipped.csv")
    assert skipped["path"].tolist() == bad_paths
    assert skipped["reason"].str.len().min() > 0
    assert "blank" in skipped.loc[2, "reason"]
    assert any("skipped 3 unreadable" in line for line in lines)
    assert store.records["key"].tolist() == [r.key for r in good.records]

    clean = quiet(good, tmp_path / "clean", workers=1)  # the kept images are exactly the good ones
    for r in RESOLUTIONS:
        assert np.array_equal(store.images(r), clean.images(r))
    assert np.array_equal(store.labels, clean.labels)


def test_too_many_bad_images_fail_and_leave_nothing(tmp_path):
    with_bad, _, bad_paths = source_with_bad_files(tmp_path)
    out = tmp_path / "store"
    with pytest.raises(DataError) as error:
        quiet(with_bad, out, workers=1, max_bad_fraction=0.05)
    message = str(error.value)
    assert "3 of 43" in message and bad_paths[0] in message
    assert not out.exists() and not (tmp_path / "store.partial").exists()


# ---- parallel decoding --------------------------------------------------------------------------


def test_two_workers_give_identical_bytes(tmp_path):
    source, _ = mixed_source(tmp_path, seed=5)
    one = quiet(source, tmp_path / "one", workers=1, batch_size=8)
    two = quiet(source, tmp_path / "two", workers=2, batch_size=8)
    assert content_bytes(tmp_path / "one") == content_bytes(tmp_path / "two")
    assert one.manifest["content_hash"] == two.manifest["content_hash"]


def _sigterm_kills(_: int) -> bool:
    return signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_workers_stop_on_sigterm_even_where_the_parent_ignores_it():
    """A store prepared inside a submitit job (``synthmed benchmark --executor slurm``) could hang for good when the
    pool shut down: its forked workers inherited submitit's SIGTERM handler, which logs the signal and carries on,
    so ``Pool.terminate`` could not stop a worker left waiting for the task queue's lock."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        pool = _worker_pool(2)
        try:
            assert pool.map(_sigterm_kills, range(4)) == [True] * 4
        finally:
            pool.close()  # a clean shutdown, whatever the workers do with SIGTERM
            pool.join()
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---- groups -------------------------------------------------------------------------------------


def test_given_patient_groups_are_kept(tmp_path):
    rng = np.random.default_rng(11)
    sizes = [1, 2, 3, 4, 1, 2, 3, 1, 5, 2, 1, 3, 2, 4, 1, 2, 3]  # 40 images, 17 patients
    records, names = [], []
    for patient, size in enumerate(sizes):
        labels = COMBINATIONS[patient % 4]
        for k in range(size):
            key = f"p{patient}-{k}"
            records.append(Record(key=key, loader=ArrayImage(pattern(rng, 32, 32)), labels=labels,
                                  path=key, group=f"patient {patient}"))
            names.append(f"patient {patient}")
    store = quiet(SourceData("patients", list(LABEL_NAMES), records), tmp_path / "store", workers=1)
    groups = store.groups
    # a bijection between given names and stored integer groups
    assert len(set(zip(names, groups))) == len(set(names)) == len(set(groups)) == len(sizes)
    assert_groups_within_one_split(store)
    assert store.manifest["group_method"] == "patient id"


def test_near_copies_share_a_group_without_patient_ids(tmp_path):
    rng = np.random.default_rng(13)
    bases = [pattern(rng, 48, 48) for _ in range(14)]
    hashes = [dhash(b.astype(np.float32)) for b in bases]
    nearest = min((a ^ b).bit_count() for i, a in enumerate(hashes) for b in hashes[i + 1 :])
    assert nearest > 8, "the test's distinct images must be far apart in dHash"
    records, truth = [], []
    for b, base in enumerate(bases):
        for k in range(3):
            pixels = base if k == 0 else noisy_copy(rng, base)
            records.append(Record(key=f"b{b}-{k}", loader=ArrayImage(pixels), labels=COMBINATIONS[b % 3],
                                  path=f"b{b}-{k}"))
            truth.append(b)
    store = quiet(SourceData("copies", list(LABEL_NAMES), records), tmp_path / "store", workers=2, batch_size=8)
    groups = store.groups
    # same partition as the ground truth: copies together, different images apart
    assert len(set(zip(truth, groups))) == len(set(truth)) == len(set(groups)) == 14
    assert_groups_within_one_split(store)
    assert "near-duplicate" in store.manifest["group_method"]


def test_too_few_groups_is_a_data_error(tmp_path):
    rng = np.random.default_rng(17)
    records = [Record(key=f"k{i}", loader=ArrayImage(pattern(rng, 32, 32)), labels=(1, 0, 0), path=f"k{i}",
                      group=f"p{i % 5}") for i in range(20)]
    with pytest.raises(DataError, match="groups"):
        quiet(SourceData("few", list(LABEL_NAMES), records), tmp_path / "store", workers=1)
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.partial").exists()


def test_verify_finds_a_changed_a_cut_and_a_lost_file(tmp_path):
    """``data info --verify`` hashes the files again: untouched passes; one flipped byte, a file cut short or
    one removed is one error line naming the store, exit 2."""
    out = tmp_path / "store"
    quiet(array_source(), out, resolutions=RESOLUTIONS, workers=1)
    Store(out).verify()
    assert "every file matches" in CliRunner().invoke(app, ["data", "info", str(out), "--verify",
                                                           "--grids", str(tmp_path / "g")]).stdout
    images = out / f"images_{RESOLUTIONS[0]}.npy"
    original = images.read_bytes()
    for damage, words in ((lambda: images.write_bytes(original[:-1] + bytes([original[-1] ^ 1])), "files changed"),
                          (lambda: images.write_bytes(original[:-10]), "files changed"),
                          (lambda: images.unlink(), "cannot be verified: No such file")):
        damage()
        refused_by_cli(["data", "info", str(out), "--verify", "--grids", str(tmp_path / "g2")], tmp_path,
                       f"{out}: ", words)
        images.write_bytes(original)


def test_resolutions_above_the_largest_are_refused_before_any_work():
    """Only the check: a prepare at 65536 px was killed for memory."""
    from synthmed.data.imaging import MAX_RESOLUTION, check_resolution

    check_resolution(MAX_RESOLUTION)
    for resolution in (2 * MAX_RESOLUTION, 65536, 2**30):
        with pytest.raises(ValueError, match=f"resolution {resolution} is above {MAX_RESOLUTION}"):
            check_resolution(resolution)


def test_a_hand_edited_manifest_is_named_not_a_traceback(tmp_path):
    out = tmp_path / "store"
    quiet(array_source(), out, resolutions=[8], workers=1)
    manifest = json.loads((out / "manifest.json").read_text())
    for key, value, words in (("n_images", "40", "field 'n_images': '40' must be a whole number"),
                              ("channels", 0, "field 'channels': 0 must be at least 1"),
                              ("resolutions", [], "field 'resolutions': [] must be one or more sizes >= 1"),
                              ("content_hash", None, "field 'content_hash': None must be text")):
        (out / "manifest.json").write_text(json.dumps({**manifest, key: value}))
        refused_by_cli(["data", "info", str(out), "--grids", str(tmp_path / "grids")], tmp_path,
                       f"{out / 'manifest.json'}, ", words)
    (out / "manifest.json").write_text(json.dumps({**manifest, "label_names": ["A"]}))
    with pytest.raises(DataError, match=r"labels.npy: has shape \(40, 3\); manifest.json says 40 images and 1 "):
        Store(out).labels


def test_a_replaced_image_array_is_named_against_the_manifest(tmp_path):
    """A float or cut-short images_R.npy failed far away (PNG writer, index); now on opening, naming the file."""
    out = tmp_path / "store"
    quiet(array_source(), out, resolutions=[8], workers=1)
    images = out / "images_8.npy"
    original = np.load(images)
    for replacement, found in ((original.astype(np.float32), "float32 (40, 1, 8, 8)"),
                               (original[:10], "uint8 (10, 1, 8, 8)")):
        np.save(images, replacement)
        with pytest.raises(DataError) as refused:
            Store(out).images(8)
        assert str(refused.value) == (f"{images}: is {found}; manifest.json says uint8 (40, 1, 8, 8); "
                                      "prepare the store again")
