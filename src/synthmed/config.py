"""One way in for every configuration: a shipped preset by name or a YAML file, ``--set`` overrides, typed keys.

Four kinds of configuration read through here: settings presets (``data/settings.py``), training
configs (``training/config.py``), classifier settings (``evaluation/classifier.py``) and benchmark
presets (``benchmark/presets.py``); the options of a data source (``data/sources``) are checked the
same way. Each kind declares its keys with types, as a dataclass or as a ``{key: type}`` mapping;
``check_values`` refuses an unknown key and a value of the wrong type by name, *before* the kind's
own range checks compare anything (``learning_rate=abc`` is "must be a number", not a TypeError).

YAML is read as YAML 1.2 reads numbers (``_io.read_yaml``: ``1e-3`` is a float), and YAML that does
not parse is a one-line error naming the file and the line.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from synthmed._io import read_yaml
from synthmed.errors import ConfigError, UserError

# the folder of shipped presets under synthmed/configs/, and what the user calls them
PRESET_KINDS = {"train": "training preset", "settings": "settings preset", "benchmark": "benchmark preset"}


# ---- reading YAML --------------------------------------------------------------------------------


def parse_yaml(text: str, where: object, error: type[UserError] = ConfigError) -> Any:
    """``text`` as YAML; a syntax error names ``where`` and the line."""
    try:
        return read_yaml(text)
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None) or getattr(problem, "context_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        reason = getattr(problem, "problem", None) or str(problem).splitlines()[0]
        raise error(f"{line}not valid YAML ({reason})", file=where) from None


def read_yaml_file(path: str | Path, error: type[UserError] = ConfigError) -> Any:
    path = Path(path)
    if not path.is_file():
        raise error("file not found", file=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error("is not a text (UTF-8) file", file=path) from None
    return parse_yaml(text, path, error)


def shipped_preset_files(kind: str) -> dict[str, Any]:
    """The presets of ``kind`` (a key of ``PRESET_KINDS``) shipped in synthmed: name -> file."""
    folder = resources.files("synthmed") / "configs" / kind
    return {p.name[:-5]: p for p in folder.iterdir() if p.name.endswith(".yaml")}


def preset_names(kind: str) -> list[str]:
    return sorted(shipped_preset_files(kind))


def is_yaml_path(name: str | Path) -> bool:
    """Whether a preset or config argument names a YAML file rather than a shipped preset (x.YAML too, as some
    editors and systems write it)."""
    return Path(name).suffix.lower() in (".yaml", ".yml")


def load_mapping(name_or_path: str | Path, kind: str, error: type[UserError] = ConfigError,
                 presets: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], str, Path | None]:
    """A preset of ``kind`` by name, or a ``.yaml`` file by path, as a mapping.

    ``presets`` maps names to files (default: the shipped ones; training presets come from the
    generator registry, so that a plug-in's presets load like synthmed's own). Returns the
    mapping, where it came from (for messages) and the file's folder (paths inside a file are
    relative to it; ``None`` for a preset).
    """
    what = PRESET_KINDS[kind]
    presets = shipped_preset_files(kind) if presets is None else presets
    path = Path(name_or_path)
    if is_yaml_path(path):
        values, where, base = read_yaml_file(path, error), str(path), path.parent
    elif str(name_or_path) in presets:
        where, base = f"{what} {name_or_path}", None
        values = parse_yaml(presets[str(name_or_path)].read_text(), where, error)
    else:
        raise error(f"unknown {what} {str(name_or_path)!r}: expected one of {sorted(presets)} or a .yaml file")
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise error(f"a {what} must be a mapping of key: value, not {_kind_of(values)}", file=where)
    return values, where, base


def parse_key_values(pairs: Sequence[str], flag: str, error: type[UserError] = ConfigError) -> dict[str, Any]:
    """``["a=1", "b-c=x"]`` -> ``{"a": 1, "b_c": "x"}``; values are read as YAML (``1e-3`` a float)."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise error(f"{flag} {pair!r} is not KEY=VALUE")
        values[key.replace("-", "_")] = parse_yaml(value, f"{flag} {pair!r}", error)
    return values


# ---- typed keys ------------------------------------------------------------------------------

# numpy's legacy seed range: within it, every seed derived from one (seed * 1_000_003 + a fold's hash, in
# synthesis.py) still fits the 64 bits of torch's generators
MAX_SEED = 2**32 - 1


def seed_problem(seed: Any) -> str | None:
    """What is wrong with ``seed`` as a random seed, in words (to follow its name); None when nothing is."""
    # numbers.Integral: Python's and numpy's integers alike, so a seed read from an array is taken
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        return f"must be a whole number in [0, {MAX_SEED}]"
    return None


def check_values(values: Mapping[str, Any], types_: Mapping[str, Any], where: str,
                 error: type[UserError] = ConfigError) -> None:
    """Refuse keys not in ``types_`` and values not of their key's type, naming the key.

    ``types_`` maps each key to a type annotation: ``int``, ``float``, ``bool``, ``str``, ``None``,
    ``Literal[...]``, ``X | Y``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``Sequence[X]``, ``dict[K, V]``.
    """
    unknown = sorted(set(values) - set(types_), key=str)
    if unknown:
        raise error(f"unknown key(s) {unknown}; known keys: {sorted(types_)}", file=where)
    for key, value in values.items():
        if not matches(value, types_[key]):
            raise error(f"{key} = {value!r} must be {describe(types_[key])}", file=where)


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's fields and their (resolved) type annotations."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as YAML or JSON gives it) fits the annotation ``hint``."""
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # YAML's .nan and .inf are floats, but no option means anything by them
        # an int is finite however long (math.isfinite overflows on one past a float's range)
        return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and math.isfinite(value)
    if hint in (str, dict, list):
        return isinstance(value, hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
    if origin in (list, Sequence):
        return isinstance(value, (list, tuple)) and all(matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_key_matches(k, args[0]) and matches(v, args[1])
                                               for k, v in value.items())
    raise TypeError(f"check_values cannot check the annotation {hint!r}")


def _key_matches(key: Any, hint: Any) -> bool:
    # JSON (a benchmark job's parameters) writes every mapping key as text: 32 comes back as "32"
    return matches(key, hint) or (hint is int and isinstance(key, str) and key.isascii() and key.isdigit())


_NAMES = {bool: "true or false", int: "a whole number", float: "a finite number", str: "text", dict: "a mapping",
          list: "a list", type(None): "null"}
_PLURALS = {bool: "true/false values", int: "whole numbers", float: "finite numbers", str: "texts", dict: "mappings"}


def describe(hint: Any) -> str:
    """``int | None`` -> "a whole number or null"; what ``matches`` accepts, in words."""
    if hint is None:
        return "null"
    if hint is Any:  # only inside another hint (Any alone accepts everything): "a mapping of texts to values"
        return "values"
    if hint in _NAMES:
        return _NAMES[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args) if len(args) > 1 else repr(args[0])
    if (origin is tuple and len(args) == 2 and args[1] is Ellipsis) or origin in (list, Sequence):
        return f"a list of {_plural(args[0])}"
    if origin is tuple:
        return f"a list of {len(args)} {_plural(args[0])}"
    if origin is dict:
        return f"a mapping of {_plural(args[0])} to {_plural(args[1])}"
    return str(hint)


def _plural(hint: Any) -> str:
    """``int`` -> "whole numbers", ``tuple[int, ...]`` -> "lists of whole numbers"."""
    if hint in _PLURALS:
        return _PLURALS[hint]
    if typing.get_origin(hint) in (tuple, list, Sequence):
        return f"lists of {_plural(typing.get_args(hint)[0])}"
    return describe(hint)


def _kind_of(value: Any) -> str:
    return next((name for kind, name in _NAMES.items() if matches(value, kind)), type(value).__name__)
