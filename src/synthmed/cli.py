"""The ``synthmed`` command line. Each command is a thin wrapper over the Python API."""

from __future__ import annotations

import re
import shlex
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from synthmed import __version__
from synthmed.benchmark.cli import benchmark_app, demo_command, report_command
from synthmed.console import console
from synthmed.errors import UserError
from synthmed.evaluation.eval_dir import (
    FIDELITY,
    IMPORTANCE,
    IMPORTANCE_FIGURE,
    PRIVACY,
    REAL_CLASSIFIER,
    SYNTHETIC_CLASSIFIER,
    UTILITY,
    EvalDir,
)
from synthmed.reader_study.cli import reader_study_app


class _UserErrors(TyperGroup):
    """Bad input (a UserError, raised by any command) ends as one line on stderr and exit status 2,
    as click's own usage errors do; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:

        try:
            return super().invoke(ctx)
        except UserError as error:
            # one line whatever a library's words held (pandas' parser errors end in a newline), and a message
            # such as "[train, val]" printed as written, not read as rich markup
            message = escape(re.sub(r"\s*\n\s*", " ", str(error)).strip())
            Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
            raise typer.Exit(2) from None


app = typer.Typer(help="synthmed: synthetic medical imaging data sets and how far they can be trusted.",
                  no_args_is_help=True, pretty_exceptions_enable=False, cls=_UserErrors)
data_app = typer.Typer(help="Prepare data sources into stores, inspect them, build benchmark settings.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
evaluate_app = typer.Typer(help="Measure a synthetic set: utility, fidelity, privacy, attribution maps.",
                           no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(reader_study_app, name="reader-study")
app.add_typer(benchmark_app, name="benchmark")
app.command("report")(report_command)
app.command("demo")(demo_command)
# Options that take several values after one flag (``--resolution 32 64``); click wants the
# flag repeated, so the command line is rewritten before click sees it.
MULTI_VALUE_OPTIONS = {"--resolution", "-r"}


def _parse_options(pairs: list[str], config: Optional[Path]) -> dict[str, Any]:
    from synthmed.config import parse_key_values, read_yaml_file
    from synthmed.errors import DataError

    options: dict[str, Any] = {}
    if config is not None:
        loaded = read_yaml_file(config, DataError) or {}
        if not isinstance(loaded, dict):
            raise DataError("a source config must be a mapping of option: value", file=config)
        options.update(loaded)
    return {**options, **parse_key_values(pairs, "--option", DataError)}


@data_app.command("prepare")
def prepare_command(
    source: Annotated[str, typer.Argument(help="br35h, chexpert, rsna-ich, medmnist, folder or phantom-cxr")],
    out: Annotated[Path, typer.Option("--out", "-o", help="store directory to write")],
    root: Annotated[Optional[Path], typer.Option(help="folder (or file) holding the data; br35h needs none")] = None,
    resolution: Annotated[list[int], typer.Option("--resolution", "-r", help="one or more powers of two")] = [32],
    option: Annotated[list[str], typer.Option("--option", help="source option KEY=VALUE (repeatable)")] = [],
    config: Annotated[Optional[Path], typer.Option(help="YAML file of source options")] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="images to render (phantom-cxr); the same as --option n=N")] = None,
    scaling: Annotated[str, typer.Option(help="max (x/max*255, the paper), minmax or none")] = "max",
    max_bad_fraction: Annotated[float, typer.Option(help="fail if more of the images are unreadable")] = 0.01,
    seed: Annotated[int, typer.Option(help="seed of the grouped train/val/test split")] = 0,
    workers: Annotated[Optional[int], typer.Option(help="decoding processes, 1 to 4 per core (default: one per core)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a store prepared from other inputs")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Decode a data source into a memory-mappable store with a grouped 80/10/10 split."""
    from synthmed.data import describe, load_source, prepare
    from synthmed.output_dir import check_output_path

    check_output_path(out)  # before the source is read: a long listing should not end in "--out is a file"
    options = _parse_options(option, config)
    if n is not None:
        options["n"] = n
    data = load_source(source, root, **options)
    console.print(f"{source}: {len(data.records)} images, labels {data.label_names}")
    store = prepare(data, out, resolutions=resolution, scaling=scaling, max_bad_fraction=max_bad_fraction,
                    seed=seed, workers=workers, overwrite=overwrite, progress=progress, log=console.print)
    _print_overview(describe(store))
    console.print(f"store: {store.path}")


@data_app.command("info")
def info_command(
    store: Annotated[Path, typer.Argument(help="a prepared store directory")],
    grids: Annotated[Optional[Path], typer.Option(help="where to write the grid PNGs (default STORE/info)")] = None,
    verify: Annotated[bool, typer.Option(help="first hash every file again against the manifest")] = False,
) -> None:
    """Counts per fold and label combination, group counts, and a sample grid per combination."""
    from synthmed.data import Store, describe, write_grids
    from synthmed.output_dir import check_output_path

    opened = Store(store)
    # before anything is printed: a file at --grids once failed after the overview
    grids = check_output_path(grids or opened.path / "info", "--grids", staged=False)
    if verify:
        opened.verify()
        console.print(f"{store}: every file matches the manifest's content hash")
    _print_overview(describe(opened))
    paths = write_grids(opened, grids)
    console.print(f"{len(paths)} sample grid(s) in {paths[0].parent if paths else grids}")


@data_app.command("settings")
def settings_command(
    preset: Annotated[str, typer.Option(help="chest, brain, br35h, phantom-chest(-cpu), or a YAML file")],
    store: Annotated[Path, typer.Option(help="a prepared store directory")],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory for the settings")],
    seed: Annotated[int, typer.Option(help="seed for drawing the rows")] = 0,
    overwrite: Annotated[bool, typer.Option(help="replace settings built from other inputs")] = False,
) -> None:
    """Build the benchmark settings of a preset (paper Table S1) from a store."""
    from synthmed.data import build_settings

    summaries = build_settings(preset, store, out, seed=seed, overwrite=overwrite, log=console.print)
    table = Table(title=f"settings of preset {preset!r} in {out}")
    for column in ("dimension", "name", "resolution", "labels", "combinations", "train", "val", "test"):
        table.add_column(column, justify="left" if column in ("dimension", "name") else "right")
    for s in summaries:
        table.add_row(*(str(s[c]) for c in ("dimension", "name", "resolution", "labels", "combinations",
                                           "train", "val", "test")))
    console.print(table)


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    from synthmed.config import parse_key_values

    return parse_key_values(pairs, "--set")


@app.command("train")
def train_command(
    config: Annotated[Optional[str], typer.Option(
        help="a training preset (cpdgan-cpu, proggan-cpu, diffusion-cpu, their -paper versions, a plug-in's: "
             "synthmed models) or a YAML file")] = None,
    data: Annotated[Optional[Path], typer.Option(help="a benchmark setting directory (synthmed data settings)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="run directory to create")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="continue the run in this directory")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a config key: KEY=VALUE (repeatable)")] = [],
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    create_only: Annotated[bool, typer.Option(
        "--create-only", help="write the new run directory and stop, e.g. to train it with "
                              "`torchrun ... -m synthmed.cli train --resume RUN`")] = False,
) -> None:
    """Train a conditional generator (GAN or diffusion model) on a benchmark setting, or resume a run exactly."""
    from synthmed.errors import ConfigError
    from synthmed.training.config import load_config
    from synthmed.training.loop import start_run, train

    if resume is not None:
        if config or data or out or set_ or create_only:
            raise ConfigError("--resume takes the run directory only; its config is in RUN/config.yaml")
        run = resume
    else:
        if not (config and data and out):
            raise ConfigError("a new run needs --config, --data and --out (or --resume RUN)")
        run = start_run(load_config(config, _parse_sets(set_), overrides_from="--set"), data, out)
        if create_only:
            console.print(f"created {escape(str(run))}; train it with "
                          f"`synthmed train --resume {escape(shlex.quote(str(run)))}` (or under torchrun)")
            return
    summary = train(run, progress=progress, log=console.print)
    checks = f"best FD {summary['best_fid']}, {summary['fid_extractor']}" if summary["fid_extractor"] else (
        "no FID checks, final EMA weights")
    console.print(f"generator: {run / summary['generator']}  ({checks}; stopped: {summary['stop_reason']})")


@app.command("generate")
def generate_command(
    run: Annotated[Path, typer.Argument(help="a finished training run")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output directory (default RUN/synthetic)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="generation seed (default: the run's seed)")] = None,
    sample_steps: Annotated[Optional[int], typer.Option(
        help="diffusion: sampler steps (default: the run's sample_steps)")] = None,
    guidance_scale: Annotated[Optional[float], typer.Option(
        help="diffusion: classifier-free guidance scale, 1 = none (default: the run's guidance_scale)")] = None,
    guidance_interval: Annotated[Optional[tuple[float, float]], typer.Option(
        help="diffusion: guide only at steps whose noise level sigma is in (LOW, HIGH]; 0 1e9 = every step "
             "(default: the run's guidance_interval)")] = None,
    sample_bf16: Annotated[Optional[str], typer.Option(
        help="diffusion: sample under bfloat16 autocast: true, false or auto (where the CPU has fast bfloat16 "
             "kernels); the images change by rounding (default: the run's sample_bf16)")] = None,
    sample_spacing: Annotated[Optional[str], typer.Option(
        help="diffusion: where the sampler's steps fall: trailing (evenly over the training timesteps) or karras "
             "(short steps near the clean image; dpm-solver++ only) (default: the run's sample_spacing)")] = None,
    snapshot: Annotated[Optional[str], typer.Option(
        help="sample a snapshot of the run (e.g. snapshots/generator_0000020000.pt) instead of generator.pt")] = None,
    label_check: Annotated[Optional[Path], typer.Option(
        help="a classifier of the real data (`synthmed evaluate real-classifier --set seed=1000`: another seed than "
             "the one that will score the set): rows it reads against their label are made again")] = None,
    label_check_tries: Annotated[Optional[int], typer.Option(
        help="with --label-check: new images tried per off-label row (default 3)")] = None,
    images_per_row: Annotated[int, typer.Option(
        help="synthetic images per real row in every fold: K > 1 makes a set K times the real one to share "
             "(the benchmark, like the paper, compares one per row)")] = 1,
    device: Annotated[str, typer.Option(
        help="where the generator (and the --label-check classifier) runs: cpu, cuda, cuda:N or auto; a GPU rounds "
             "differently from the CPU, so the card names it")] = "cpu",
    png: Annotated[bool, typer.Option(help="also export PNG files and CheXpert-style CSVs")] = True,
    overwrite: Annotated[bool, typer.Option(help="replace another synthetic set in --out")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Make the synthetic train/val/test folds: one image per real row (or --images-per-row), with its label vector."""
    from synthmed.synthesis import generate

    precision = {"true": True, "false": False, "auto": "auto"}.get(str(sample_bf16).lower(), sample_bf16)
    generate(run, out, seed=seed, sample_steps=sample_steps, guidance_scale=guidance_scale,
             guidance_interval=guidance_interval, sample_bf16=precision, sample_spacing=sample_spacing,
             snapshot_file=snapshot,
             label_check=label_check, label_check_tries=label_check_tries, images_per_row=images_per_row,
             device=device, export_png=png, overwrite=overwrite, progress=progress, log=console.print)


@app.command("models")
def models_command() -> None:
    """The registered generators (built in or from installed plug-ins), each with its training presets."""
    from synthmed.training.registry import registered

    table = Table(title="generators (entry-point group synthmed.generators)")
    for column in ("model", "from", "presets", "own keys (model_options)", "summary"):
        table.add_column(column)
    for name, model in registered().items():
        options = ", ".join(f"{k}={v}" for k, v in model.generator.options.items())
        table.add_row(name, model.origin, ", ".join(model.presets) or "-", options or "-", model.generator.summary)
    console.print(table)


RealSetting = Annotated[Path, typer.Option(help="the real benchmark setting directory")]
SyntheticSetting = Annotated[Path, typer.Option(help="the synthetic setting (RUN/synthetic/setting)")]
ClassifierSets = Annotated[list[str], typer.Option("--set", help="classifier setting KEY=VALUE, e.g. input_size=224")]
Extractors = Annotated[list[str], typer.Option(help="inception (standard FID), inception-96, pixels")]


@app.command("import")
def import_command(
    source: Annotated[Path, typer.Argument(
        help="a folder with train.csv, val.csv, test.csv (or train/, val/, test/ each with a CSV), one CSV file "
             "(optional fold column) or an .npz")],
    real: RealSetting,
    out: Annotated[Path, typer.Option("--out", "-o", help="directory for the synthetic set")],
    seed: Annotated[int, typer.Option(help="seed of the choice where the source has more images than real rows")] = 0,
    images_per_row: Annotated[int, typer.Option(
        help="images per real row in every fold, as `generate --images-per-row` makes them")] = 1,
    png: Annotated[bool, typer.Option(help="also export PNG files and CheXpert-style CSVs")] = True,
    overwrite: Annotated[bool, typer.Option(help="replace another synthetic set in --out")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Turn images made by another generator into a synthetic set, as `generate` writes one (evaluate, release)."""
    from synthmed.importing import import_synthetic

    import_synthetic(source, real, out, seed=seed, images_per_row=images_per_row, export_png=png,
                     overwrite=overwrite, progress=progress, log=console.print)


@evaluate_app.command("utility")
def evaluate_utility_command(
    real: RealSetting,
    synthetic: SyntheticSetting,
    out: Annotated[Path, typer.Option("--out", "-o", help=f"directory for {UTILITY} and the classifiers")],
    set_: ClassifierSets = [],
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Train DenseNet-121 on real and on synthetic data; AUROC of both on the real test fold (paper S.4)."""
    from synthmed.evaluation.classifier import ClassifierConfig
    from synthmed.evaluation.utility import evaluate_utility

    config = ClassifierConfig.from_dict(_parse_sets(set_))
    evaluate_utility(real, synthetic, config, out, log=console.print, progress=progress)


@evaluate_app.command("real-classifier")
def evaluate_real_classifier_command(
    real: RealSetting,
    out: Annotated[Path, typer.Option("--out", "-o", help=f"directory for {REAL_CLASSIFIER}")],
    set_: ClassifierSets = [],
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Train DenseNet-121 on the real setting alone (e.g. with --set seed=1000, for `generate --label-check`)."""
    from synthmed.data.settings import BenchmarkSetting
    from synthmed.evaluation.classifier import ClassifierConfig
    from synthmed.evaluation.eval_dir import EvalDir
    from synthmed.evaluation.utility import real_classifier
    from synthmed.metrics.auroc import auroc_per_label

    config = ClassifierConfig.from_dict(_parse_sets(set_))
    setting, path = BenchmarkSetting(real), EvalDir.for_writing(out).real_classifier
    model, _, _ = real_classifier(setting, config, path, console.print, progress)
    auc = auroc_per_label(setting.labels("test"), model.predict(setting.images("test")), setting.label_names)["mean"]
    console.print(f"{path}: mean AUROC on the real test fold {'undefined' if auc is None else format(auc, '.4f')}")


@evaluate_app.command("fidelity")
def evaluate_fidelity_command(
    real: RealSetting,
    synthetic: SyntheticSetting,
    classifier: Annotated[Path, typer.Option(help=f"{REAL_CLASSIFIER} from `evaluate utility`")],
    out: Annotated[Path, typer.Option("--out", "-o", help=f"directory for {FIDELITY}")],
    extractor: Extractors = ["inception"],
    max_images: Annotated[Optional[int], typer.Option(help="compare a seeded sample of this many images")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """FD, KID, precision/recall and density/coverage; also in the real classifier's feature space."""
    from synthmed.evaluation.suite import evaluate_fidelity_run

    evaluate_fidelity_run(real, synthetic, classifier, out, tuple(extractor), max_images, log=console.print,
                          progress=progress)


PrivacyAlpha = Annotated[Optional[float], typer.Option(
    help="the verdict's false-alarm level: how often a set that leaks nothing may be flagged (default 0.05)")]
PrivacyQuantile = Annotated[Optional[float], typer.Option(
    help="a copy is closer to a training image than all but this share of unseen patients (default 0.005)")]
PrivacyAuc = Annotated[Optional[float], typer.Option(
    help="fail needs a significant membership-inference AUC at least this high (default 0.55) ...")]
PrivacyExcess = Annotated[Optional[float], typer.Option(
    help="... or a significant share of copies this far above chance (default 0.005)")]
PrivacySeed = Annotated[Optional[int], typer.Option(
    help="picks the copy test's image per unseen patient and the density attack's halves (default 0)")]
PrivacyShift = Annotated[Optional[float], typer.Option(
    help="pixel distances: the largest shift tried, a share of the image side (default 0.1)")]
PrivacyScale = Annotated[Optional[float], typer.Option(
    help="pixel distances: zooms from 1 / this to this are tried (default 1.15)")]


def _privacy_options(alpha: Optional[float], copy_quantile: Optional[float], mia_auc_threshold: Optional[float],
                     copy_excess_threshold: Optional[float], seed: Optional[int], max_shift: Optional[float],
                     max_scale: Optional[float]) -> dict[str, Any]:
    """The privacy options given on the command line; the others keep privacy.DEFAULT_OPTIONS."""
    given = {"alpha": alpha, "copy_quantile": copy_quantile, "mia_auc_threshold": mia_auc_threshold,
             "copy_excess_threshold": copy_excess_threshold, "seed": seed, "max_shift": max_shift,
             "max_scale": max_scale}
    return {name: value for name, value in given.items() if value is not None}


@evaluate_app.command("privacy")
def evaluate_privacy_command(
    real: RealSetting,
    synthetic: SyntheticSetting,
    classifier: Annotated[Path, typer.Option(help=f"{REAL_CLASSIFIER} from `evaluate utility`")],
    out: Annotated[Path, typer.Option("--out", "-o", help=f"directory for {PRIVACY} and the NN grids")],
    alpha: PrivacyAlpha = None,
    copy_quantile: PrivacyQuantile = None,
    mia_auc_threshold: PrivacyAuc = None,
    copy_excess_threshold: PrivacyExcess = None,
    seed: PrivacySeed = None,
    max_shift: PrivacyShift = None,
    max_scale: PrivacyScale = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Privacy audit: membership inference, copies in features and pixels, a density attack; a calibrated verdict."""
    from synthmed.evaluation.suite import evaluate_privacy_run

    evaluate_privacy_run(real, synthetic, classifier, out, log=console.print, progress=progress,
                         **_privacy_options(alpha, copy_quantile, mia_auc_threshold, copy_excess_threshold, seed,
                                           max_shift, max_scale))


@evaluate_app.command("importance")
def evaluate_importance_command(
    real: RealSetting,
    real_classifier: Annotated[Path, typer.Option(help=f"{REAL_CLASSIFIER} from `evaluate utility`")],
    synthetic_classifier: Annotated[Path, typer.Option(help=f"{SYNTHETIC_CLASSIFIER} from `evaluate utility`")],
    out: Annotated[Path, typer.Option("--out", "-o", help=f"directory for {IMPORTANCE} and {IMPORTANCE_FIGURE}")],
    images: Annotated[int, typer.Option(help="real test images to explain, spread over label combinations")] = 8,
    patch: Annotated[int, typer.Option(help="side of the zeroed square, in classifier input pixels")] = 2,
    stride: Annotated[int, typer.Option(help="step between patch positions, in classifier input pixels")] = 2,
) -> None:
    """Occlusion maps of the real- and the synthetic-data classifier on real test images; Pearson and SSIM (S.7)."""
    from synthmed.evaluation.suite import evaluate_importance_run

    evaluate_importance_run(real, real_classifier, synthetic_classifier, out, images, patch, stride, log=console.print)


@evaluate_app.command("all")
def evaluate_all_command(
    real: RealSetting,
    synthetic: SyntheticSetting,
    out: Annotated[Path, typer.Option("--out", "-o", help="directory for every JSON, figure and classifier")],
    set_: ClassifierSets = [],
    extractor: Extractors = ["inception"],
    max_images: Annotated[Optional[int], typer.Option(help="fidelity on a seeded sample of this many images")] = None,
    images: Annotated[int, typer.Option(help="real test images for the attribution maps")] = 8,
    patch: Annotated[int, typer.Option(help="occlusion patch side, in classifier input pixels")] = 2,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Utility, fidelity, privacy and attribution maps in one go, sharing the two classifiers."""
    from synthmed.data.settings import BenchmarkSetting
    from synthmed.evaluation.classifier import ClassifierConfig
    from synthmed.evaluation.suite import (
        check_fidelity_options,
        check_importance_options,
        evaluate_fidelity_run,
        evaluate_importance_run,
        evaluate_privacy_run,
    )

    # every option is checked before the classifiers train: a mistake found after them would cost minutes
    input_size = ClassifierConfig.from_dict(_parse_sets(set_)).input_size or BenchmarkSetting(real).resolution
    check_fidelity_options(tuple(extractor), max_images)
    check_importance_options(images, patch, patch, input_size)
    evaluate_utility_command(real, synthetic, out, set_, progress)
    folder = EvalDir(out)
    real_classifier, synthetic_classifier = folder.real_classifier, folder.synthetic_classifier
    evaluate_fidelity_run(real, synthetic, real_classifier, out, tuple(extractor), max_images, log=console.print,
                          progress=progress)
    evaluate_privacy_run(real, synthetic, real_classifier, out, log=console.print, progress=progress)
    evaluate_importance_run(real, real_classifier, synthetic_classifier, out, images, patch, patch, log=console.print)


@app.command("release")
def release_command(
    source: Annotated[Path, typer.Argument(
        help="a synthetic set (`synthmed generate`'s output) or a run or job folder holding one in synthetic/")],
    real: RealSetting,
    out: Annotated[Path, typer.Option("--out", "-o", help="a new folder for the package")],
    evaluation: Annotated[list[Path], typer.Option(
        help=f"a folder with {PRIVACY}, {UTILITY}, {FIDELITY} or {REAL_CLASSIFIER} (repeatable; "
             "default: eval/ beside the synthetic set)")] = [],
    force: Annotated[bool, typer.Option(help="release a set that failed its privacy audit; its card says so first")]
    = False,
    by: Annotated[Optional[str], typer.Option(help="with --force: who releases it (default: the login name)")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars (a privacy audit run here)")] = True,
) -> None:
    """Audit a synthetic set's privacy and write its shareable package (PNG, CSV, npz, card, SHA256SUMS)."""
    from synthmed.errors import ConfigError
    from synthmed.release import ReleaseRefused, release

    if by is not None and not force:
        raise ConfigError("--by names who forces a release: it goes with --force")
    try:
        release(source, real, out, evaluation=evaluation, force=force, by=by, log=console.print, progress=progress)
    except ReleaseRefused as refusal:  # not bad input: the audit said no (exit 1, not 2)
        Console(stderr=True).print(f"[bold red]refused:[/] {refusal}", highlight=False)
        raise typer.Exit(1) from None


def _print_overview(overview: dict[str, Any]) -> None:
    folds = overview["folds"]
    groups = overview["groups"]
    console.print(f"[bold]{overview['source']}[/]: {overview['images']} images "
                  f"({overview['skipped']} skipped), resolutions {overview['resolutions']}, "
                  f"{overview['channels']} channel(s)" + (", lesion masks" if overview["lesion_masks"] else ""))
    if overview["note"]:
        console.print(f"[bold]note[/]: {overview['note']}")
    console.print(f"folds: train {folds['train']}, val {folds['val']}, test {folds['test']} "
                  f"({overview['split_method']})")
    console.print(f"groups: {groups['count']} ({groups['method']}); per fold {groups['per_fold']}; "
                  f"{groups['multi_image_groups']} groups of two or more images hold "
                  f"{groups['images_in_multi_image_groups']} images, the largest {groups['largest']}")
    table = Table(title="label combinations")
    for column in ("combination", "train", "val", "test", "total"):
        table.add_column(column, justify="left" if column == "combination" else "right")
    shown = overview["combinations"][:30]
    for c in shown:
        table.add_row(c["name"], str(c["train"]), str(c["val"]), str(c["test"]), str(c["total"]))
    console.print(table)
    if len(overview["combinations"]) > len(shown):
        console.print(f"... and {len(overview['combinations']) - len(shown)} rarer combinations")


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"synthmed {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True)] = False) -> None:
    """synthmed command line."""


def expand_multi_value_options(argv: list[str]) -> list[str]:
    """``--resolution 32 64`` -> ``--resolution 32 --resolution 64``."""
    out: list[str] = []
    flag = None
    for token in argv:
        if token in MULTI_VALUE_OPTIONS:
            flag = token
        elif flag is not None and token.isdigit():
            if out[-1] != flag:
                out.append(flag)  # a further value: repeat the flag before it
        else:
            flag = None
        out.append(token)
    return out


def warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning as one line: its kind and text, not the source line that raised it."""
    return f"{category.__name__}: {message}\n"


def main(argv: list[str] | None = None) -> None:
    args = expand_multi_value_options(list(sys.argv[1:] if argv is None else argv))
    python_format, warnings.formatwarning = warnings.formatwarning, warning_line
    try:
        app(args=args, prog_name="synthmed", standalone_mode=True)
    finally:  # main may run inside another program (the tests call it): leave its warnings as they were
        warnings.formatwarning = python_format


if __name__ == "__main__":  # python -m synthmed.cli (e.g. under torchrun)
    main()
