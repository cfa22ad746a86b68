"""The generator registry: every model synthmed can train, found through Python entry points.

A package adds a generator by naming a ``Generator`` in its metadata, under the entry-point group
``synthmed.generators``; the entry point's name is the model's name (the ``model`` key of a
training config)::

    [project.entry-points."synthmed.generators"]
    cvae = "synthmed_example_generator:GENERATOR"

synthmed registers its own models the same way (``cpdgan``, ``proggan``, ``diffusion`` in its
pyproject.toml, pointing into ``training/builtin.py``), so ``pip install`` of a plug-in is all it
takes, and nothing in the training loop, ``generate``, the benchmark or the report asks which model
it holds. ``docs/byog.md`` walks through writing one (``examples/synthmed-example-generator``).

The registry is read once per process (``registered.cache_clear()`` reads it again).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata, resources
from typing import TYPE_CHECKING, Any

from synthmed._io import read_yaml
from synthmed.errors import ConfigError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python 3.11+: for type checkers only

    from synthmed.training.config import TrainConfig

GROUP = "synthmed.generators"
Fail = Callable[[str, str], None]  # fail(key, message): a ConfigError naming the config key


@dataclass(frozen=True)
class Generator:
    """What a ``synthmed.generators`` entry point names: how to train the model and its presets.

    ``method`` and ``presets`` are locations, not objects, so that listing the models and checking a
    config import neither the model's code nor torch.
    """

    method: str  # "module:Class", a training method (training/methods.py: TrainingMethod, load_sampler)
    presets: str  # "package/folder": its YAML training presets (those whose ``model`` is this generator)
    summary: str  # one line for ``synthmed models``
    options: Mapping[str, Any] = field(default_factory=dict)  # its own config keys (``model_options``), defaults
    check_config: Callable[[TrainConfig, Fail], None] | None = None  # its keys' values: fail(key, message)
    check_resolution: Callable[[TrainConfig, int], None] | None = None  # raise ConfigError where it cannot train

    def method_class(self) -> type:
        module, _, name = self.method.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as error:  # a plug-in that names what it does not have
            raise ConfigError(f"training method {self.method!r} cannot be loaded: {type(error).__name__}: "
                              f"{error}") from None

    def preset_folder(self) -> Traversable:
        package, _, folder = self.presets.partition("/")
        return resources.files(package).joinpath(*folder.split("/")) if folder else resources.files(package)


@dataclass(frozen=True)
class Registered:
    """A generator as installed: its entry point's name, where it comes from, its presets."""

    name: str
    generator: Generator
    origin: str  # "built in", or the distribution (name and version) that registered it
    presets: dict[str, Traversable]  # preset name -> its YAML file


@functools.cache
def registered() -> dict[str, Registered]:
    """Every registered generator by name, with its presets (sorted by name)."""
    found: dict[str, tuple[Generator, str]] = {}
    for entry in metadata.entry_points(group=GROUP):
        origin = _origin(entry)
        if entry.name in found:
            both = " and ".join(sorted((found[entry.name][1], origin)))
            raise ConfigError(f"generator {entry.name!r} is registered twice ({both}); uninstall one of them")
        found[entry.name] = (_load(entry, origin), origin)
    presets = _presets({name: generator for name, (generator, _) in found.items()})
    return {name: Registered(name, generator, origin, presets.get(name, {}))
            for name, (generator, origin) in sorted(found.items())}


def generator(name: str) -> Generator:
    """The registered generator ``name``, or a ConfigError that lists the registered ones."""
    models = registered()
    if name not in models:
        raise ConfigError(f"model {name!r} is not a registered generator: expected one of {sorted(models)} "
                          f"(a plug-in registers one under the entry-point group {GROUP!r}; reinstall synthmed "
                          "with `pip install -e .` if the built-in ones are missing)")
    return models[name].generator


def preset_files() -> dict[str, Traversable]:
    """Every registered generator's training presets by name."""
    return {preset: file for model in registered().values() for preset, file in model.presets.items()}


def model_options(config: TrainConfig) -> dict[str, Any]:
    """The generator's own keys: its defaults, then the config's ``model_options`` over them."""
    return {**generator(config.model).options, **config.model_options}


def check_config(config: TrainConfig, fail: Fail) -> None:
    """The model is registered, ``model_options`` holds only its keys, and its own check passes."""
    models = registered()
    if config.model not in models:
        fail("model", f"is not one of the registered generators {sorted(models)}")
    spec = models[config.model].generator
    if not isinstance(config.model_options, dict):
        fail("model_options", "must be a mapping of key: value")
    if unknown := sorted(set(config.model_options) - set(spec.options)):
        fail("model_options", f"has unknown key(s) {unknown}; {config.model} takes "
             f"{sorted(spec.options) or 'none (its keys are the flat ones)'}")
    if spec.check_config is not None:
        spec.check_config(config, fail)


def _origin(entry: metadata.EntryPoint) -> str:
    dist = entry.dist
    if dist is None:
        return "unknown distribution"
    return "built in" if dist.name == "synthmed" else f"{dist.name} {dist.version}"


def _load(entry: metadata.EntryPoint, origin: str) -> Generator:
    try:
        value = entry.load()
    except Exception as error:  # noqa: BLE001 - a broken plug-in is named, whatever broke in it
        raise ConfigError(f"generator {entry.name!r} ({origin}) cannot be loaded from {entry.value!r}: "
                          f"{type(error).__name__}: {error}") from None
    if not isinstance(value, Generator):
        raise ConfigError(f"generator {entry.name!r} ({origin}): {entry.value!r} is of type {type(value).__name__}, "
                          "not a synthmed.training.registry.Generator")
    return value


def _presets(generators: dict[str, Generator]) -> dict[str, dict[str, Traversable]]:
    """Model -> preset name -> file: each YAML file of the preset folders belongs to the model it names
    (one folder may hold several models' presets, as synthmed's configs/train does)."""
    owned: dict[str, dict[str, Traversable]] = {}
    seen: dict[str, str] = {}  # preset name -> its folder, to refuse a name used twice
    folders = {generator.presets: generator.preset_folder() for generator in generators.values()}
    for location, folder in folders.items():
        if not folder.is_dir():
            raise ConfigError(f"preset folder {location!r} of generator(s) "
                              f"{sorted(n for n, g in generators.items() if g.presets == location)} not found")
        for file in sorted(folder.iterdir(), key=lambda f: f.name):
            if not file.name.endswith(".yaml"):
                continue
            name = file.name[: -len(".yaml")]
            values = read_yaml(file.read_text()) or {}
            model = values.get("model") if isinstance(values, dict) else None
            if model not in generators:
                continue  # a preset of a model that is not installed
            if name in seen:
                raise ConfigError(f"training preset {name!r} is in both {seen[name]!r} and {location!r}; "
                                  "rename one of them")
            seen[name] = location
            owned.setdefault(model, {})[name] = file
    return owned
