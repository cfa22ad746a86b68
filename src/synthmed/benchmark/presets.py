"""Benchmark presets: which data, settings, models, seeds and evaluations make up a study.

A preset is a YAML file (shipped ones live in ``configs/benchmark/``)::

    name: br35h-samples
    data: {source: br35h, root: null, options: {}, resolutions: [32]}
    settings: br35h              # a settings preset: name, .yaml path or an inline mapping
    dimensions: [samples]        # dimensions (or dimension/setting) to run; default: all
    models: {cpdgan: {config: cpdgan-cpu, set: {}}, proggan: {config: proggan-cpu, max_resolution: 128},
             mygen: {external: mygen-sets}}    # synthetic sets made elsewhere (external.py)
    seeds: 2                     # or per dimension, e.g. {samples: 20, classes: {default: 4, c20: 10}}
    shared_stop: false           # true: seeds 1..n train to the step where seed 0 kept its generator
    classifier: {input_size: null}
    fidelity: {extractors: [inception], max_images: 500}
    privacy: {alpha: 0.05}         # options of the privacy audit (evaluation/privacy.py)
    importance: {images: 8, patch: 2, stride: 2}
    slurm: {gpus_per_task: 1, cpus_per_task: 8, timeout_min: 1440}

Everything a job computes comes from here, so the preset (with the code version) decides
every job's key: change a number and only the jobs it reaches run again.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthmed.benchmark import external
from synthmed.config import check_values, is_yaml_path, load_mapping
from synthmed.config import preset_names as shipped_presets
from synthmed.data.imaging import check_resolution
from synthmed.data.settings import expand_preset
from synthmed.data.settings import load_preset as load_settings_preset
from synthmed.data.sources import check_source_options
from synthmed.errors import ConfigError, UserError
from synthmed.evaluation.classifier import ClassifierConfig
from synthmed.evaluation.privacy import DEFAULT_OPTIONS as PRIVACY_OPTIONS
from synthmed.evaluation.privacy import check_options as check_privacy_options
from synthmed.evaluation.suite import check_fidelity_options, check_importance_options
from synthmed.label_check import MAX_TRIES

# the keys of a preset and of each entry of its ``models``, with their types (config.check_values)
KEYS: dict[str, Any] = {
    "name": str, "data": dict, "settings": str | dict, "dimensions": list[str] | None, "models": dict[str, dict],
    "seeds": int | dict, "shared_stop": bool, "classifier": dict | None, "fidelity": dict | None,
    "privacy": dict | None, "importance": dict | None, "slurm": dict | None,
}
# label_check_tries: generate with a label check (label_check.py) of that many tries per off-label row; 0 = none
MODEL_KEYS: dict[str, Any] = {"config": str, "set": dict, "max_resolution": int | None, "label_check_tries": int}
EXTERNAL_KEYS: dict[str, Any] = {"external": str, "max_resolution": int | None}  # a model made elsewhere
# the sections whose values reach jobs late (prepare, fidelity, importance): checked here, so a typo or a bad value
# stops the sweep before its first job rather than failing one job after every model has trained
SECTION_KEYS: dict[str, dict[str, Any]] = {
    "data": {"source": str, "root": str | None, "options": dict, "resolutions": list[int]},
    "fidelity": {"extractors": list[str], "max_images": int | None},
    "importance": {"images": int, "patch": int, "stride": int},
}
MAX_SEEDS = 10_000  # per setting; the paper's study ran 20. More is a typo, and expanding it would not end
DEFAULTS: dict[str, Any] = {
    "classifier": {}, "fidelity": {"extractors": ["inception"], "max_images": None},
    "privacy": PRIVACY_OPTIONS, "importance": {"images": 8, "patch": 2, "stride": 2},
    "slurm": {"gpus_per_task": 1, "cpus_per_task": 8, "timeout_min": 24 * 60},
}


@dataclass(frozen=True)
class SettingRef:
    """One benchmark setting: a dimension of the settings preset and a setting name on it."""

    dimension: str
    name: str
    seeds: int
    resolution: int


@dataclass
class BenchmarkPreset:
    name: str
    values: dict[str, Any]  # the whole preset, defaults filled in (part of every job's key)
    settings: list[SettingRef]

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        return self.values["models"]

    def settings_of(self, model: str) -> list[SettingRef]:
        """The settings ``model`` runs on: those up to its ``max_resolution``."""
        limit = self.models[model]["max_resolution"]
        return [ref for ref in self.settings if limit is None or ref.resolution <= limit]


def preset_names() -> list[str]:
    return shipped_presets("benchmark")


def load_preset(name_or_path: str | os.PathLike, seeds: int | None = None,
                root: str | os.PathLike | None = None) -> BenchmarkPreset:
    """A shipped preset by name or a YAML file by path; ``seeds`` replaces every seed count,
    ``root`` the data source's folder."""
    values, where, base = load_mapping(name_or_path, "benchmark")
    if seeds is not None:
        values["seeds"] = seeds
    if root is not None and isinstance(values.get("data"), dict):
        values["data"]["root"] = str(root)
    return resolve_preset(values, where, base=base)


def resolve_preset(values: dict[str, Any], where: str = "benchmark preset",
                   base: Path | None = None) -> BenchmarkPreset:
    """Check a preset mapping, fill in defaults and list its settings with their seed counts."""
    check_values(values, KEYS, where)
    for key in ("name", "data", "settings", "models", "seeds"):
        if key not in values:
            raise ConfigError(f"{where}: '{key}' is missing")
    values = copy.deepcopy(values)
    for key, default in DEFAULTS.items():
        values[key] = {**default, **(values.get(key) or {})}
    try:
        values["privacy"] = check_privacy_options(values["privacy"])
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    data = values["data"]
    if "source" not in data:
        raise ConfigError(f"{where}: 'data' needs a 'source' (br35h, chexpert, rsna-ich, medmnist, folder)")
    data.setdefault("root", None)
    data.setdefault("options", {})
    data.setdefault("resolutions", [32])
    _check_sections(values, where)
    settings_preset = values["settings"]
    if isinstance(settings_preset, str) and is_yaml_path(settings_preset) and base is not None:
        settings_preset = values["settings"] = str((base / settings_preset).resolve())
    spec = settings_preset if isinstance(settings_preset, dict) else load_settings_preset(settings_preset)
    expanded = expand_preset(spec)
    wanted = values.get("dimensions") or list(dict.fromkeys(d for d, _, _ in expanded))
    known = {d for d, _, _ in expanded} | {f"{d}/{n}" for d, n, _ in expanded}
    missing = [w for w in wanted if w not in known]
    if missing:
        raise ConfigError(f"{where}: dimensions {missing} are not in the settings preset; it has "
                          f"{sorted(known)} (a dimension, or dimension/setting)")
    values["dimensions"] = list(wanted)
    for model, entry in values["models"].items():
        if model == "real":
            raise ConfigError(f"{where}: models.real: 'real' names the real-data classifier's rows; rename the model")
        if not isinstance(entry, dict) or not {"config", "external"} & set(entry):
            raise ConfigError(f"{where}: models.{model} needs a 'config' (a training preset or YAML path) or "
                              "'external' (a folder of synthetic sets made elsewhere)")
        check_values(entry, EXTERNAL_KEYS if "external" in entry else MODEL_KEYS, f"{where}: models.{model}")
        limit = entry.setdefault("max_resolution", None)
        if limit is not None and limit < 8:
            raise ConfigError(f"{where}: models.{model}.max_resolution must be a resolution in pixels (>= 8), "
                              f"got {limit!r}")
        if "external" in entry:
            folder = Path(str(entry["external"])).expanduser()
            entry["external"] = str((base / folder).resolve() if base is not None else folder.resolve())
            continue
        entry.setdefault("set", {})
        tries = entry.setdefault("label_check_tries", 0)
        if not 0 <= tries <= MAX_TRIES:
            raise ConfigError(f"{where}: models.{model}.label_check_tries must be in [0, {MAX_TRIES}] (0 = no label "
                              f"check), got {tries!r}")
        if is_yaml_path(str(entry["config"])) and base is not None:
            entry["config"] = str((base / entry["config"]).resolve())
    values.setdefault("shared_stop", False)
    refs = [SettingRef(d, n, _seed_count(values["seeds"], d, n, where), int(spec["resolution"]))
            for d, n, spec in expanded if d in wanted or f"{d}/{n}" in wanted]
    if missing := sorted({ref.resolution for ref in refs} - set(data["resolutions"])):
        raise ConfigError(f"{where}: data.resolutions {data['resolutions']} lacks {missing}, the resolution(s) of "
                          "the settings run; add them")
    input_size = values["classifier"].get("input_size")
    for resolution in sorted({ref.resolution for ref in refs}):  # the maps' patch must fit what the classifier sees
        try:
            check_importance_options(values["importance"]["images"], values["importance"]["patch"],
                                     values["importance"]["stride"], input_size or resolution)
        except ConfigError as error:
            raise ConfigError(f"{where}: importance: {error}") from None
    preset = BenchmarkPreset(str(values["name"]), values, refs)
    _check_external_sources(preset, where)
    return preset


def _check_sections(values: dict[str, Any], where: str) -> None:
    """The data, classifier, fidelity and importance sections' keys and types, the source's name, options and
    resolutions, and the fidelity options: what would otherwise surface in a job's log."""
    for section, keys in SECTION_KEYS.items():
        check_values(values[section], keys, f"{where}: {section}")
    data = values["data"]
    ClassifierConfig.from_dict(values["classifier"])  # its input size sizes the maps' check below
    try:
        check_source_options(data["source"], data["options"])
        for resolution in data["resolutions"]:
            check_resolution(resolution)
        check_fidelity_options(tuple(values["fidelity"]["extractors"]), values["fidelity"]["max_images"])
    except (UserError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def _check_external_sources(preset: BenchmarkPreset, where: str) -> None:
    """Every set made elsewhere that the sweep evaluates is there before a job starts."""
    for model, entry in preset.models.items():
        if "external" not in entry:
            continue
        for ref in preset.settings_of(model):
            for seed in range(ref.seeds):
                try:
                    external.source(entry["external"], ref.dimension, ref.name, seed)
                except ConfigError as error:
                    raise ConfigError(f"{where}: models.{model}.external: {error}") from None


def _seed_count(seeds: Any, dimension: str, name: str, where: str) -> int:
    """``seeds`` is a number, or per dimension a number or {setting: n, default: n}."""
    if isinstance(seeds, dict) and dimension not in seeds:
        raise ConfigError(f"{where}: seeds has no entry for the dimension {dimension!r} (it has {sorted(seeds)}); "
                          "give a number for it, or one number for all")
    value = seeds.get(dimension) if isinstance(seeds, dict) else seeds
    if isinstance(value, dict):
        value = value.get(name, value.get("default"))
    if type(value) is not int or not 1 <= value <= MAX_SEEDS:
        raise ConfigError(f"{where}: seeds for {dimension}/{name} must be a whole number in [1, {MAX_SEEDS}], "
                          f"got {value!r}")
    return value
