"""Synthetic folds: one synthetic image per real row of the setting, with that row's labels (or K per row).

``generate(run)`` writes, under ``OUT`` (default ``RUN/synthetic``)::

    store/      a store in the real store's format (images_<R>.npy, labels.npy, records.parquet,
                manifest.json): the synthetic train, val and test folds
    setting/    setting.json + rows.parquet pointing at that store, so the synthetic set is
                used exactly like a real benchmark setting
    export/     PNG files per fold and a CheXpert-style CSV per fold (Path + label columns)
    card.md, card.json   the dataset card

``images_per_row`` K > 1 makes each fold K whole copies of the real fold's label rows, each copy
with its own images: a set to share that is K times the real one. The paper keeps one image per
row "for a fair comparison" of the two classifiers, so the benchmark (``synthmed benchmark``) does
too; the card, ``utility.json`` and a release's card of a larger set say K (docs/diffusion.md,
"Three synthetic images per real row").

``write_set`` writes this layout; ``synthmed import`` (``importing.py``) writes it too, for images
made by another generator. Nothing of the real images is copied: keys are ``syn-<fold>-<n>``,
there are no real file names, patient ids or paths; the card names the setting and the real
store's content hash (for provenance, not identification). The one set ``write_set`` writes
without a card is not synthetic: benchmarks/diffusion_sampler.py's ``--from-real-steps`` sets, real
images partly redrawn, kept in that benchmark's work folder to measure where the gap is lost.
"""

from __future__ import annotations

import inspect
import numbers
import os
import platform
import shlex
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image

from synthmed import __version__
from synthmed._io import read_json, sha256_file, write_json_atomic, write_text_atomic
from synthmed.config import seed_problem
from synthmed.data.records import SPLITS
from synthmed.data.settings import BenchmarkSetting, write_setting
from synthmed.data.store import Store, write_images, write_store
from synthmed.device import precision_name, resolve_bf16, usable_device
from synthmed.errors import ConfigError, DataError, UserError
from synthmed.label_check import CHECK_COUNTS, DEFAULT_TRIES, KEEP_RULE, load_label_check
from synthmed.models.diffusion import ConditionalDiffusion, guidance_problem, interval_problem, spacing_problem
from synthmed.output_dir import check_output_path, claim_output_dir, staged_dir
from synthmed.progress import progress_bar
from synthmed.training.config import config_from_dict
from synthmed.training.methods import load_sampler
from synthmed.training.run_dir import GENERATOR, RunDir, load_torch_file, unreadable_torch_file
from synthmed.training.samples import to_uint8

# rows per sampler call: the demo's diffusion model sampled 512 rows in 16.8 s at 64 against 21.1 s at 256
# (one thread; a batch of 256 outgrows the caches). The starting noise is one stream whatever the batch:
# the demo's diffusion set and its GANs' training folds came out the same to the pixel at 64 as at 256;
# rounding can still move a rare pixel by one grey level (1 in 341,000 in another draw; 4 December). A model
# with appearance clusters draws each batch's clusters from the stream before its noise, so its set depends on
# the batch size too.
BATCH = 64
CARD = "card.json"  # marks a synthetic set
SNAPSHOT_KEYS = {"state_dict", "config", "resolution", "label_names", "image_channels"}  # what training saves


def load_generator(run_dir: str | os.PathLike, device: str | torch.device = "cpu",
                   snapshot: str | None = None) -> tuple[torch.nn.Module, dict]:
    """The run's final (best-FID EMA) sampler, or the one in ``snapshot`` (a file of the run
    such as ``snapshots/generator_0000020000.pt``), ready for ``sample(labels, noise)``."""
    run = RunDir.existing(run_dir, option="RUN")
    path = run.path / (snapshot or GENERATOR)
    if snapshot is not None and not path.is_file():
        raise DataError(f"has no snapshot {snapshot}", file=run_dir)
    if not path.is_file():
        raise DataError(f"has no {GENERATOR}: the run has not finished; continue it with "
                        f"`synthmed train --resume {shlex.quote(str(run_dir))}`", file=run_dir)
    snapshot = load_torch_file(path, device)
    missing = sorted(SNAPSHOT_KEYS - set(snapshot)) if isinstance(snapshot, dict) else sorted(SNAPSHOT_KEYS)
    if missing:  # a classifier's file, say, or a bare tensor
        raise DataError(f"is not a generator file: it lacks {missing}", file=path)
    try:
        config = config_from_dict(snapshot["config"])
    except (UserError, TypeError) as error:  # an unknown key, a plug-in model not installed here, or not a mapping
        raise DataError(f"holds a generator config this synthmed refuses ({error})", file=path) from None
    try:
        sampler = load_sampler(snapshot, config)
    except RuntimeError as error:  # load_state_dict: weights of other names or shapes than the config builds
        raise unreadable_torch_file(error, path, "holds weights that do not fit the network its config builds "
                                                 "(another synthmed version's, or edited)") from None
    return sampler.to(device), snapshot


def sampling_options(sampler: torch.nn.Module, options: dict[str, Any], model: str) -> dict[str, Any]:
    """Every option this model's sampler takes, with its value: the one given, else the run's own
    (the sampler attribute of the same name). A given option that the sampler does not take (a
    guidance scale for a GAN) is an error that names it. A ``sample`` parameter with no attribute
    of its name (the diffusion model's ``start_from``, for benchmarks) is not a sampling option."""
    accepted = [name for name in inspect.signature(sampler.sample).parameters
                if name not in ("labels", "noise") and hasattr(sampler, name)]
    for name, value in options.items():
        if value is not None and name not in accepted:
            raise ConfigError(f"--{name.replace('_', '-')} does not apply to a {model} run: its sampler takes "
                              f"{accepted or 'no options'}")
    return {name: getattr(sampler, name) if options.get(name) is None else options[name] for name in accepted}


def _fold_seed(seed: int, fold: str) -> int:
    return seed * 1_000_003 + zlib.crc32(fold.encode())


@torch.no_grad()
def synthesize(sampler: torch.nn.Module, labels: np.ndarray, seed: int, device="cpu",
               options: dict[str, Any] | None = None, on_batch: Callable[[int], Any] = lambda n: None) -> np.ndarray:
    """uint8 images (N, C, R, R), row i made from ``labels[i]``; the same seed gives the same images.
    ``options`` go to the sampler (a diffusion model's ``sample_steps`` and ``guidance_scale``)."""
    noise = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(labels), BATCH):
        y = torch.from_numpy(labels[start : start + BATCH].astype(np.float32)).to(device)
        out.append(to_uint8(sampler.sample(y, noise, **(options or {}))).cpu().numpy())
        on_batch(len(y))
    return np.concatenate(out) if out else np.zeros((0,), np.uint8)


# ten per row measured no better than three (docs/diffusion.md); far above, the set outgrows memory before it fails
MAX_IMAGES_PER_ROW = 100


def check_images_per_row(images_per_row: int) -> None:
    """``generate`` and ``synthmed import`` take K images per real row: a whole number in [1, 100]."""
    if (isinstance(images_per_row, bool) or not isinstance(images_per_row, numbers.Integral)
            or not 1 <= images_per_row <= MAX_IMAGES_PER_ROW):
        shown = int(images_per_row) if isinstance(images_per_row, numbers.Integral) else repr(images_per_row)
        raise ConfigError(f"--images-per-row {shown} must be a whole number in [1, {MAX_IMAGES_PER_ROW}]")


def fold_labels(setting: BenchmarkSetting, images_per_row: int) -> dict[str, np.ndarray]:
    """The label rows of a synthetic set of ``setting`` with K images per real row: per fold, K copies of the
    real fold's rows, copy k at rows k*n to (k+1)*n - 1 (what ``evaluation.utility.check_pair`` accepts)."""
    return {fold: np.tile(setting.labels(fold), (images_per_row, 1)) for fold in SPLITS}


def generate(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, seed: int | None = None,
             sample_steps: int | None = None, guidance_scale: float | None = None,
             guidance_interval: tuple[float, float] | None = None, sample_bf16: bool | str | None = None,
             sample_spacing: str | None = None, snapshot_file: str | None = None,
             label_check: str | os.PathLike | None = None, label_check_tries: int | None = None,
             images_per_row: int = 1, device: str = "cpu", export_png: bool = True, overwrite: bool = False,
             progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Write the synthetic set of a finished run (see the module docstring). ``sample_steps``,
    ``guidance_scale``, ``guidance_interval`` and ``sample_bf16`` override a diffusion model's sampler
    settings; None keeps the run's. The card records the precision that ``sample_bf16 = "auto"`` chose.
    ``device`` (cpu, cuda, cuda:N or auto) runs the generator and the label check's classifier there; the
    starting noise is drawn on the CPU whatever the device, but a GPU rounds differently, so the card names
    the device type.
    ``snapshot_file`` samples an intermediate snapshot of the run instead of its final generator.
    ``label_check`` (a classifier file of the real data) makes off-label rows again, up to
    ``label_check_tries`` times (default ``DEFAULT_TRIES``, 3; ``label_check.py``).
    ``images_per_row`` K makes K images for every real row: each fold is K copies of the real fold's rows."""
    check_images_per_row(images_per_row)
    if seed is not None and (problem := seed_problem(seed)):
        raise ConfigError(f"--seed {seed} {problem}")
    if sample_steps is not None and not 1 <= sample_steps <= 1000:
        raise ConfigError(f"--sample-steps {sample_steps} must be in [1, 1000]")
    if guidance_scale is not None and (problem := guidance_problem(guidance_scale)):
        raise ConfigError(f"--guidance-scale {guidance_scale} {problem}")
    if guidance_interval is not None:
        if problem := interval_problem(guidance_interval):
            raise ConfigError(f"--guidance-interval {' '.join(map(str, guidance_interval))} {problem}")
        guidance_interval = [float(v) for v in guidance_interval]  # as the card's JSON gives it back
    if sample_bf16 not in (None, True, False, "auto"):
        raise ConfigError(f"--sample-bf16 {sample_bf16!r} must be true, false or auto")
    run = RunDir(run_dir)
    out = check_output_path(out if out is not None else run.path / "synthetic")
    target = usable_device(device, f"--device {device!r}")
    sampler, snapshot = load_generator(run.path, device=target, snapshot=snapshot_file)
    generator_file = run.path / (snapshot_file or GENERATOR)
    options = sampling_options(sampler, {"sample_steps": sample_steps, "guidance_scale": guidance_scale,
                                         "guidance_interval": guidance_interval, "sample_bf16": sample_bf16,
                                         "sample_spacing": sample_spacing},
                               snapshot["config"]["model"])
    if isinstance(sampler, ConditionalDiffusion) and (problem := spacing_problem(
            options["sample_spacing"], sampler.sampler, options["sample_steps"], sampler.schedule["num_train_timesteps"])):
        raise ConfigError(f"--sample-spacing {options['sample_spacing']!r} {problem}")
    if "sample_bf16" in options:  # the images depend on the precision it resolves to here, so the card names that
        options["sample_bf16"] = resolve_bf16(options["sample_bf16"], target)
    info = run.read_info()
    summary = run.read_summary() or {
        "images_seen": snapshot["images_seen"], "stop_reason": "still training", "best_fid": None,
        "fid_extractor": snapshot["config"]["fid_extractor"] if snapshot["config"]["fid_every"] else None}
    setting = BenchmarkSetting(info["setting"])
    if setting.label_names != snapshot["label_names"]:
        raise DataError(f"the generator was trained on labels {snapshot['label_names']}, the setting now has "
                        f"{setting.label_names}", file=info["setting"])
    seed = int(snapshot["config"]["seed"] if seed is None else seed)
    resolution = int(snapshot["resolution"])
    if label_check is None and label_check_tries is not None:
        raise ConfigError(f"--label-check-tries {label_check_tries} needs --label-check CLASSIFIER")
    check = None if label_check is None else load_label_check(
        label_check, DEFAULT_TRIES if label_check_tries is None else label_check_tries, setting.label_names,
        int(snapshot["image_channels"]), resolution, str(target))

    def same() -> bool:
        card = read_json(out / CARD)
        # a card from before sample_bf16 sampled in float32, one from before sample_spacing with trailing steps, one
        # from before sampled_on on the CPU
        before = {"sample_bf16": False, "sample_spacing": "trailing"}
        earlier = {**{k: v for k, v in before.items() if k in options}, **card.get("sampling_options", {})}
        return (card.get("generation_seed") == seed and earlier == options  # get: an imported set
                and card.get("images_per_row", 1) == images_per_row  # or one from before the key
                and card.get("generator_sha256") == sha256_file(generator_file)  # has neither
                and card.get("sampled_on", "cpu") == target.type
                and {k: v for k, v in (card.get("label_check") or {}).items() if k not in CHECK_COUNTS}
                == (check.identity() if check else {}))

    if claim_output_dir(out, CARD, "a synthetic set", same=same, overwrite=overwrite):
        log(f"{out} already holds this synthetic set; nothing to do")
        return out

    folds = fold_labels(setting, images_per_row)
    made = sampler.sample(torch.from_numpy(folds["train"][:1].astype(np.float32)).to(target),
                          torch.Generator().manual_seed(0), **options).shape[-1]
    if made != resolution:  # e.g. a prog-GAN snapshot from before it had grown to the setting's size
        raise DataError(f"makes {made} px images, the setting is {resolution} px: choose a snapshot from after the "
                        "generator reached full size", file=generator_file)
    images, counts = {}, {}
    with progress_bar(sum(len(v) for v in folds.values()), "generating", progress) as bar:
        for fold, labels in folds.items():
            images[fold] = synthesize(sampler, labels, _fold_seed(seed, fold), device=target, options=options,
                                      on_batch=bar.advance)
            if check is not None:
                images[fold], counts[fold] = check.resample(images[fold], labels, lambda rows, attempt: synthesize(
                    sampler, labels[rows], _fold_seed(seed, f"{fold}/retry-{attempt}"), device=target, options=options))
                log(f"label check, {fold} ({len(labels)} rows): "
                    f"{_check_counts(counts[fold]['off_label_rows'], counts[fold]['wrong_labels'])} "
                    "(before the first try, then after each)")
    checked = None if check is None else {
        **check.identity(), **{key: {fold: c[key] for fold, c in counts.items()} for key in CHECK_COUNTS}}
    write_set(out, images, folds, setting, resolution, snapshot["config"]["model"], seed, export_png,
              lambda store: _card(generator_file, snapshot_file or GENERATOR, info, summary, snapshot, setting,
                                  folds, seed, options, checked, target, images_per_row, store))
    log(f"synthetic set: {sum(len(v) for v in folds.values())} images in {out}")
    return out


def write_set(out: Path, images: dict[str, np.ndarray], folds: dict[str, np.ndarray], setting: BenchmarkSetting,
              resolution: int, model: str, seed: int, export_png: bool,
              make_card: Callable[[Store], dict[str, Any]] | None) -> None:
    """Write a synthetic set (see the module docstring) to a hidden folder beside ``out`` and rename it into place.
    ``images`` and ``folds`` (labels) per fold, row for row as in ``setting``; ``model`` names the generator in the
    store's manifest; ``make_card`` makes the dataset card from the written store. None writes no card: a
    benchmark's set of real images partly redrawn (benchmarks/diffusion_sampler.py) must not carry one that says
    every image is generated."""
    with staged_dir(out) as tmp:
        store_dir = tmp / "store"
        _write_store(store_dir, images, folds, setting.label_names, resolution, model, seed)
        store = Store(store_dir)
        _write_setting(tmp / "setting", store, setting)
        if export_png:
            export_folds(tmp / "export", images, folds, setting.label_names)
        if make_card is not None:
            card = make_card(store)
            write_json_atomic(tmp / CARD, card)
            write_text_atomic(tmp / "card.md", card_markdown(card))


def _write_store(folder: Path, images: dict, folds: dict, label_names: list[str], resolution: int,
                 model: str, seed: int) -> None:
    folder.mkdir(parents=True)
    all_images = np.concatenate([images[f] for f in SPLITS])
    write_images(folder, resolution, all_images)
    keys = [f"syn-{fold}-{i:06d}" for fold in SPLITS for i in range(len(folds[fold]))]
    write_store(folder, labels=np.concatenate([folds[f] for f in SPLITS]).astype(np.uint8), keys=keys, paths=keys,
                groups=np.arange(len(keys)), splits=[fold for fold in SPLITS for _ in range(len(folds[fold]))],
                skipped=[], source=f"synthetic:{model}", source_params={"seed": seed},
                source_versions={"torch": torch.__version__}, label_names=label_names,
                channels=int(all_images.shape[1]), resolutions=[resolution], base_size=resolution,
                scaling="generator output", seed=seed, near_duplicate_threshold=None,
                group_method="one group per synthetic image", split_method="the folds of the real setting",
                fingerprint=None)


def _write_setting(folder: Path, store: Store, real: BenchmarkSetting) -> None:
    """A setting over the synthetic store with the same folds and labels as the real one."""
    table = pd.DataFrame({"fold": store.splits, "store_index": np.arange(len(store))})
    meta = {key: real.meta[key] for key in ("dimension", "name", "resolution", "combinations", "counts", "spec")}
    write_setting(folder, {
        **meta, "preset": "synthetic", "store": "../store",  # relative: the set can be moved whole
        "store_content_hash": store.manifest["content_hash"], "seed": store.manifest["seed"],
        "label_names": store.label_names, "label_columns": list(range(len(store.label_names))),
    }, table)


def export_folds(folder: Path, images: dict, folds: dict, label_names: list[str]) -> None:
    """PNG per image (grey, or RGB for 3 channels) and a CheXpert-style CSV per fold: Path, then 1.0/0.0 labels."""
    for fold in SPLITS:
        (folder / fold).mkdir(parents=True)
        paths = []
        for i, pixels in enumerate(images[fold]):
            name = f"{fold}/syn-{fold}-{i:06d}.png"
            # Pillow writes no metadata we did not give
            Image.fromarray(pixels[0] if len(pixels) == 1 else np.moveaxis(pixels, 0, -1)).save(folder / name)
            paths.append(name)
        table = pd.DataFrame(folds[fold].astype(float), columns=label_names)
        table.insert(0, "Path", paths)
        table.to_csv(folder / f"{fold}.csv", index=False)


def label_counts(folds: dict[str, np.ndarray], label_names: list[str]) -> dict[str, dict[str, int]]:
    """Positive rows per label in each fold, as the dataset card lists them."""
    return {fold: dict(zip(label_names, folds[fold].sum(axis=0).astype(int).tolist())) for fold in SPLITS}


def _card(generator_file, generator_name, info, summary, snapshot, setting, folds, seed, options, label_check,
          device, images_per_row, store) -> dict[str, Any]:
    return {
        "model": snapshot["config"]["model"],
        "config_digest": info["config_digest"],
        "config": snapshot["config"],
        "generator_file": generator_name,
        "images_seen_by_generator": snapshot["images_seen"],
        "training_images_seen": summary["images_seen"],
        "stop_reason": summary["stop_reason"],
        "best_fid": summary["best_fid"],
        "fid_extractor": summary["fid_extractor"],
        "resolution": snapshot["resolution"],
        "label_names": setting.label_names,
        "setting": info["setting_name"],
        "real_store_content_hash": info["store_content_hash"],
        "synthetic_store_content_hash": store.manifest["content_hash"],
        "generator_sha256": sha256_file(generator_file),
        "generation_seed": seed,
        "sampling_options": options,
        "sampled_on": device.type,  # "cpu" or "cuda": the images round as the device does
        "label_check": label_check,
        "images_per_row": images_per_row,
        "images_per_fold": {fold: int(len(folds[fold])) for fold in SPLITS},
        "label_counts": label_counts(folds, setting.label_names),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": {"synthmed": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }


# The card.json keys that card_markdown formats as numbers or walks as mappings (a generated or an imported set
# has some of them), with whether null is allowed: a reader of a card.json that may be hand-edited
# (``synthmed release``) checks their kinds first, so that a wrong one is named instead of a traceback.
CARD_NUMBERS = {"images_seen_by_generator": False, "training_images_seen": False, "best_fid": True,
                "images_offered": False}
CARD_MAPPINGS = {"software": False, "sampling_options": False, "label_check": True, "images_per_fold": False,
                 "label_counts": False}


def card_markdown(card: dict[str, Any]) -> str:
    imported = card.get("origin") == "imported"
    per_row = card.get("images_per_row", 1)  # get: cards (generated or imported) from before the key have one
    lines = [
        f"# Synthetic data set: {card['setting']} ({card['model']}, {card['resolution']}x{card['resolution']})",
        "",
        # synthmed vouches only for images it made; the privacy audit looks for copies in either kind
        ("Every image was made by an external generator, not by synthmed." if imported else
         "Every image is generated; none is a real patient's image.") + " Each real row of the setting's",
        "train, val and test folds has exactly "
        + ("one synthetic counterpart" if per_row == 1 else f"{per_row} synthetic counterparts")
        + " with the same label vector.",
        "",
        *(_imported_lines(card) if imported else _generator_lines(card)),
        f"- created: {card['created']}; software: "
        + ", ".join(f"{k} {v}" for k, v in card["software"].items()),
        "",
        "| fold | images | " + " | ".join(card["label_names"]) + " |",
        "|---|---|" + "---|" * len(card["label_names"]),
    ]
    for fold, count in card["images_per_fold"].items():
        lines.append(f"| {fold} | {count} | " + " | ".join(str(card["label_counts"][fold][n]) for n in card["label_names"]) + " |")
    return "\n".join(lines) + "\n"


def _option_words(name: str, value: Any) -> str:
    if name == "sample_bf16":
        return f"sampling precision {precision_name(value)}"
    if name == "sample_spacing":
        return f"{value} step spacing"
    return f"{name.replace('_', ' ')} {value}"


def _generator_lines(card: dict[str, Any]) -> list[str]:
    return [
        f"- model: {card['model']} (config digest `{card['config_digest']}`)",
        f"- generator: EMA weights ({card['generator_file']}) after {card['images_seen_by_generator']:,} real images "
        f"(training stopped at {card['training_images_seen']:,}: {card['stop_reason']})",
        f"- best FD during training: {'none' if card['best_fid'] is None else format(card['best_fid'], '.2f')} "
        f"({card['fid_extractor'] or 'no FID checks: fid_every = 0'})",
        f"- generation seed: {card['generation_seed']}"
        + "".join(f"; {_option_words(k, v)}" for k, v in card["sampling_options"].items() if v is not None)
        + f"; sampled on {card.get('sampled_on', 'cpu')}",  # get: a card from before the key
        *_label_check_lines(card.get("label_check")),
    ]


def _label_check_lines(check: dict[str, Any] | None) -> list[str]:
    if not check:
        return []
    wrong = check.get("wrong_labels") or {}  # absent on cards of sets made before the keep rule
    counts = "; ".join(f"{fold}: {_check_counts(rows, wrong.get(fold))}"
                       for fold, rows in check["off_label_rows"].items())
    kept = ("each new image kept when it read fewer labels wrong" if check.get("keep") == KEEP_RULE
            else "the first image read right replacing the row's")
    return [f"- label check: rows that a classifier of the real data (sha256 `{check['classifier_sha256'][:16]}`) "
            f"read against their label were made again, up to {check['tries']} times, {kept}; before the first "
            f"try, then after each: {counts}"]


def _check_counts(off_label_rows: list[int], wrong_labels: list[int] | None) -> str:
    """'off-label rows 298 -> 33 -> 7 -> 0', and the labels read wrong where rows had several of them."""
    text = f"off-label rows {' -> '.join(map(str, off_label_rows))}"
    if wrong_labels is not None and wrong_labels != off_label_rows:  # equal: every off-label row had one wrong
        text += f", labels read wrong {' -> '.join(map(str, wrong_labels))}"
    return text


def _imported_lines(card: dict[str, Any]) -> list[str]:
    """An imported set (``synthmed import``): where it came from, in words that name no file."""
    return [
        f"- origin: {card['description']} (read from {card['source_format']}, which offered "
        f"{card['images_offered']:,} images of {', '.join(card['source_sizes'])} px)",
        f"- selection: {card['selection']} (seed {card['selection_seed']})",
    ]
