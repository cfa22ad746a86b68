"""``synthmed release``: the one way a synthetic set should leave the machine.

``release(SOURCE, REAL_SETTING, OUT)`` takes a synthetic set (``SOURCE/card.json``, as
``synthmed generate`` writes it, or a run or job folder holding one in ``synthetic/``), makes sure
it passed its privacy audit, and writes the shareable package::

    OUT/train/, val/, test/       one PNG per synthetic image (syn-<fold>-<n>.png)
    OUT/train.csv, val.csv, test.csv   CheXpert-style: Path, then 1.0/0.0 per label
    OUT/synthetic.npz             <fold>_images (N, C, R, R) uint8 and <fold>_labels (N, L) uint8
    OUT/card.md, card.json        the dataset card: generation, utility, fidelity, the privacy audit
    OUT/SHA256SUMS                every other file's SHA-256 (``sha256sum -c SHA256SUMS``)

and nothing else: no real image, key, path, patient or group id, no DICOM header. The audit
(``evaluate privacy``) is reused from an evaluation folder when one was made for exactly this
synthetic set and real setting (their identities in ``privacy.json``), else it is run there with
the real-data classifier (``evaluation/eval_dir.py``) found beside it. A "fail" verdict refuses the release
(``ReleaseRefused``); ``force`` releases anyway and the card's first line says so and by whom.
Every value of the set's card and the evaluations that the package's card shows is checked (kind,
verdict, the image and label counts and images per row against the set) before a byte is written;
the package is written to a hidden folder beside OUT and renamed into place: it is there whole or
not at all.
"""

from __future__ import annotations

import getpass
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from synthmed import __version__
from synthmed._io import damaged_json, sha256_file, write_json_atomic, write_text_atomic
from synthmed.benchmark.results import VERDICT_SCORE, JobFile
from synthmed.data.records import SPLITS
from synthmed.data.settings import SETTING_FILE, BenchmarkSetting
from synthmed.errors import DataError
from synthmed.evaluation.eval_dir import FIDELITY, PRIVACY, REAL_CLASSIFIER, UTILITY, EvalDir
from synthmed.evaluation.privacy_words import describe
from synthmed.evaluation.suite import evaluate_privacy_run, format_number
from synthmed.evaluation.utility import check_pair, pair_identity
from synthmed.output_dir import check_output_path, staged_dir
from synthmed.synthesis import CARD, CARD_MAPPINGS, CARD_NUMBERS, card_markdown, export_folds, label_counts

# What of each evaluation goes on the card: numbers and method names, never a path or identity.
PRIVACY_FIELDS = ("feature_space", "options", "confidence", "spaces", "tests", "density_attack", "verdict",
                  "decided_by", "reason")
UTILITY_FIELDS = ("label_names", "test_images", "auc_real", "auc_syn", "auc_real_minus_auc_syn", "delta_syn",
                  "auc_real_on_syn")  # and images_per_row (1 where a utility.json from before the key lacks it)
_CARD_KEYS = {PRIVACY: PRIVACY_FIELDS, UTILITY: (*UTILITY_FIELDS, "config"), FIDELITY: ("metrics",)}
# each fidelity metric's numbers that card.md formats
FIDELITY_NUMBERS = ("fd", "kid_mean", "precision", "recall", "density", "coverage", "n_real", "n_fake")


class ReleaseRefused(Exception):
    """The synthetic set failed its privacy audit and ``force`` was not given."""


def synthetic_set_dir(source: str | os.PathLike) -> Path:
    """The synthetic set that ``source`` is or holds (``synthetic/``)."""
    source = Path(source)
    for folder in (source, source / "synthetic"):
        if (folder / CARD).is_file() and (folder / "setting" / SETTING_FILE).is_file():
            return folder
    raise DataError("is neither a synthetic set (card.json, setting/) nor a folder holding one in synthetic/: "
                    "run `synthmed generate` first", file=source)


def _made_for(folders: list[Path], name: str, real: BenchmarkSetting,
              synthetic: BenchmarkSetting) -> JobFile | None:
    """The first ``name`` in ``folders`` whose recorded settings are exactly this pair."""
    wanted = pair_identity(real, synthetic)
    for path in (folder / name for folder in folders):
        if path.is_file():
            file = JobFile(path)
            if all(file.data.get(key) == value for key, value in wanted.items()):
                if missing := [key for key in _CARD_KEYS[name] if key not in file.data]:
                    raise DataError(f"lacks {missing}, which the card needs: made by another synthmed version or "
                                    "edited; measure it again with `synthmed evaluate`", file=path)
                return file
    return None


def _audit(folders: list[Path], real: BenchmarkSetting, synthetic: BenchmarkSetting,
           log: Callable[[str], None], progress: bool) -> JobFile:
    """The privacy audit of this pair: reused when made for it, else run with a real classifier found in ``folders``."""
    found = _made_for(folders, PRIVACY, real, synthetic)
    if found is not None:
        log(f"reusing the privacy audit {found.path}")
        return found
    classifiers = [EvalDir(folder).real_classifier for folder in folders if EvalDir(folder).real_classifier.is_file()]
    if not classifiers:
        raise DataError(f"holds no privacy audit of this synthetic set and no {REAL_CLASSIFIER} to run one: run "
                        "`synthmed evaluate all` (or utility, then privacy) with --out there first, or name the "
                        "folders with --evaluation", file=", ".join(str(f) for f in folders) or "--evaluation")
    log(f"running the privacy audit with {classifiers[0]} into {folders[0]}")
    evaluate_privacy_run(real.path, synthetic.path, classifiers[0], folders[0], log=log, progress=progress)
    return JobFile(EvalDir(folders[0]).privacy)


def _generation_markdown(card: JobFile, synthetic: BenchmarkSetting, per_row: int) -> str:
    """The set's own card.md, once its card.json holds the kinds that it formats and agrees with the packed set:
    its images and label counts per fold, and ``per_row`` images per real row."""
    for kinds, check in ((CARD_NUMBERS, card.number), (CARD_MAPPINGS, card.mapping)):
        for key, null in kinds.items():
            if key in card.data:  # a generated or an imported set's; card_markdown names a missing one
                check(key, null=null)
    packed = {fold: len(synthetic.rows(fold)) for fold in SPLITS}
    if (claimed := card.get("images_per_fold")) != packed:  # the card would describe another set
        raise card.damaged(("images_per_fold",), f"= {claimed!r}, but the synthetic set holds {packed} images")
    counted = label_counts({fold: synthetic.labels(fold) for fold in SPLITS}, synthetic.label_names)
    for fold in [*SPLITS, *sorted(set(card.get("label_counts")) - set(SPLITS))]:  # by fold: 14 labels are long
        if fold not in counted:
            raise card.damaged(("label_counts", fold), f"is not a fold of a synthetic set ({', '.join(SPLITS)})")
        claimed = card.mapping("label_counts", fold)
        if claimed != counted[fold] or any(type(count) is not int for count in claimed.values()):  # True == 1
            raise card.damaged(("label_counts", fold), f"= {claimed!r}, but the packed {fold} fold's label counts "
                               f"are {counted[fold]}")
    if "images_per_row" not in card.data and per_row != 1:  # a card from before the key describes one per row
        raise card.damaged(("images_per_row",), f"is missing, but the synthetic set holds {per_row} images per real row")
    claimed_per_row = card.data.get("images_per_row", 1)
    if claimed_per_row != per_row or type(claimed_per_row) is not int:  # not True, not 2.0
        raise card.damaged(("images_per_row",), f"= {claimed_per_row!r}, but the synthetic set holds {per_row} "
                           f"image{'s' * (per_row != 1)} per real row")
    with damaged_json(card.path, "the release"):
        return card_markdown(card.data)


def _utility_card(utility: JobFile) -> dict[str, Any]:
    for key in ("auc_real", "auc_syn"):  # the kinds card.md formats (the rest is copied as it is)
        utility.auroc(key)
    utility.number("auc_real_minus_auc_syn")
    per_row = utility.number("images_per_row", null=False) if "images_per_row" in utility.data else 1
    config = {k: v for k, v in utility.mapping("config").items() if k not in ("pretrained_weights", "device", "threads")}
    return {**{k: utility.data[k] for k in UTILITY_FIELDS}, "images_per_row": per_row, "classifier": config,
            "pretrained": utility.get("config", "pretrained_weights") is not None}


def _fidelity_card(fidelity: JobFile) -> dict[str, Any]:
    for name in fidelity.mapping("metrics"):  # the kinds card.md formats
        fidelity.get("metrics", name, "extractor")
        for key in FIDELITY_NUMBERS:
            fidelity.number("metrics", name, key, null=False)
    return fidelity.data["metrics"]


def _card(generated: dict[str, Any], privacy: dict[str, Any], measured: dict[str, dict[str, Any] | None],
          forced_by: str | None) -> dict[str, Any]:
    release = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "synthmed": __version__,
               "privacy_verdict": privacy["verdict"], "forced_by": forced_by}
    return {"release": release, "privacy": {k: privacy[k] for k in PRIVACY_FIELDS},
            "utility": measured[UTILITY], "fidelity": measured[FIDELITY], "generation": generated}


def _card_markdown(card: dict[str, Any], generation_markdown: str, privacy_words: list[str]) -> str:
    """card.md: ``generation_markdown`` (the set's own card) and ``privacy_words`` (``describe``, both rendered and
    checked when read) and what the release adds."""
    release = card["release"]
    lines = []
    if release["forced_by"] is not None:
        lines += [f"# WARNING: this set FAILED its privacy audit and was released anyway (--force) by "
                  f"{release['forced_by']} on {release['created']}", ""]
    lines += [generation_markdown.rstrip("\n"), "", "## Privacy audit", ""]
    lines += [f"- {line}" for line in privacy_words]
    lines += ["", "## Utility (classifiers tested on real images)", ""]
    if card["utility"] is None:
        lines.append("Not measured for this set (no utility.json made for it).")
    else:
        u = card["utility"]
        lines.append(f"Mean AUROC on {u['test_images']} real test images: trained on real data "
                     f"{format_number(u['auc_real']['mean'])}, trained on this synthetic set"
                     + (f" ({u['images_per_row']} images per real row)" if u["images_per_row"] > 1 else "")
                     + f" {format_number(u['auc_syn']['mean'])} "
                     f"(difference {format_number(u['auc_real_minus_auc_syn'])}); DenseNet-121, "
                     + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in u["classifier"].items()) + ".")
    lines += ["", "## Fidelity", ""]
    if card["fidelity"] is None:
        lines.append("Not measured for this set (no fidelity.json made for it).")
    else:
        lines += [f"- {row['extractor']}: Fréchet distance {row['fd']:.2f}, KID {row['kid_mean']:.4f}, precision "
                  f"{row['precision']:.3f}, recall {row['recall']:.3f}, density {row['density']:.3f}, coverage "
                  f"{row['coverage']:.3f} ({row['n_real']} real, {row['n_fake']} synthetic images)"
                  for row in card["fidelity"].values()]
    lines += ["", f"Released {release['created']} with synthmed {release['synthmed']}; check the files with "
              "`sha256sum -c SHA256SUMS`."]
    return "\n".join(lines) + "\n"


def _write_package(folder: Path, synthetic: BenchmarkSetting, card: dict[str, Any], markdown: str) -> None:
    images = {fold: np.asarray(synthetic.images(fold)) for fold in SPLITS}
    labels = {fold: synthetic.labels(fold).astype(np.uint8) for fold in SPLITS}
    export_folds(folder, images, labels, synthetic.label_names)
    # stored, not compressed: every byte stays readable (and checkable) as written
    np.savez(folder / "synthetic.npz", **{f"{fold}_images": images[fold] for fold in SPLITS},
             **{f"{fold}_labels": labels[fold] for fold in SPLITS})
    write_json_atomic(folder / CARD, card)
    write_text_atomic(folder / "card.md", markdown)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    write_text_atomic(folder / "SHA256SUMS",
                      "".join(f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}\n" for p in files))


def release(source: str | os.PathLike, real_setting: str | os.PathLike, out: str | os.PathLike, *,
            evaluation: list[str | os.PathLike] | None = None, force: bool = False, by: str | None = None,
            log: Callable[[str], None] = print, progress: bool = False) -> Path:
    """Write the package of ``source``'s synthetic set to ``out`` (see the module docstring).

    ``evaluation``: evaluation folders (``eval_dir.py``: the privacy audit, utility, fidelity, the
    real classifier; default: ``eval/`` beside the synthetic set). ``by`` names who forces
    a failed set out (default: the login name). ``progress``: bars for a privacy audit run here."""
    out = check_output_path(out)
    if out.exists():
        raise DataError("already exists: a release goes to a new folder", file=out)
    folder = synthetic_set_dir(source)
    synthetic = BenchmarkSetting(folder / "setting")
    generated = JobFile(folder / CARD)
    real = BenchmarkSetting(real_setting)
    per_row = check_pair(real, synthetic)
    generation_markdown = _generation_markdown(generated, synthetic, per_row)  # before the audit (minutes)
    folders = [Path(f) for f in evaluation] if evaluation else [folder.parent / "eval"]
    for f in folders:
        if not f.is_dir():
            raise DataError("is not a folder (--evaluation)", file=f)
    measured: dict[str, dict[str, Any] | None] = {}  # read and checked before the audit too
    for file, card_part in ((UTILITY, _utility_card), (FIDELITY, _fidelity_card)):
        found = _made_for(folders, file, real, synthetic)
        if found is None:
            log(f"no {file} made for this set in {', '.join(map(str, folders))}: the card says so")
        measured[file] = None if found is None else card_part(found)
    audit = _audit(folders, real, synthetic, log, progress)
    privacy = audit.data
    with damaged_json(audit.path, "the release"):
        privacy_words = describe(privacy)  # reads every key of it that card.md shows, its reason too
    forced_by = None
    # pass, warn or fail only: any other verdict would be released as if it passed
    if audit.choice("verdict", options=VERDICT_SCORE) == "fail":
        if not force:
            raise ReleaseRefused(f"{folder}: the privacy audit failed, nothing was written. {privacy['reason']}. "
                                 "Fix the generator (less training, more data) or, if a data-protection officer "
                                 "accepts the risk, release with --force --by NAME.")
        forced_by = by or getpass.getuser()
        log(f"the privacy audit failed; releasing anyway (--force) by {forced_by}")
    card = _card(generated.data, privacy, measured, forced_by)
    markdown = _card_markdown(card, generation_markdown, privacy_words)  # all read and checked: now write
    with staged_dir(out) as tmp:
        _write_package(tmp, synthetic, card, markdown)
    log(f"released {sum(card['generation']['images_per_fold'].values())} synthetic images to {out} "
        f"(privacy verdict {privacy['verdict']})")
    return out
