"""The generator registry: entry points of group synthmed.generators, read from distributions on sys.path
(a temporary dist-info stands in for a pip-installed plug-in); the built-in models come the same way."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

from synthmed.errors import ConfigError
from synthmed.training import registry
from synthmed.training.config import config_from_dict, load_config, preset_names
from synthmed.training.gan import GanTraining
from synthmed.training.methods import method_class

TOY_MODULE = '''
from synthmed.training.registry import Generator, model_options

def check(config, fail):
    if model_options(config)["width"] < 1:
        fail("model_options", "width must be >= 1")

TOY = Generator(method="synthmed.training.gan:GanTraining", presets="toygen/presets", summary="a toy",
                options={"width": 4}, check_config=check)
NOT_A_GENERATOR = 3
'''


@pytest.fixture
def fresh_registry():
    """The registry read afresh, without the toy plug-in's module of another test."""
    registry.registered.cache_clear()
    sys.modules.pop("toygen", None)
    yield
    registry.registered.cache_clear()
    sys.modules.pop("toygen", None)


def install_toy(site: Path, monkeypatch, entries: dict[str, str], presets: dict[str, str]) -> None:
    """A distribution 'toygen-dist' 1.0 as pip would leave it: its package and a dist-info with entry points."""
    info = site / "toygen_dist-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toygen-dist\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{registry.GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))
    (site / "toygen" / "presets").mkdir(parents=True)
    (site / "toygen" / "__init__.py").write_text(TOY_MODULE)
    for name, text in presets.items():
        (site / "toygen" / "presets" / f"{name}.yaml").write_text(text)
    monkeypatch.syspath_prepend(str(site))


def test_the_built_in_models_are_the_entry_points_synthmeds_pyproject_declares(fresh_registry):
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()  # tomllib is Python 3.11+
    section = pyproject.split(f'[project.entry-points."{registry.GROUP}"]\n')[1].split("\n\n")[0]
    declared = dict(line.replace('"', "").split(" = ") for line in section.splitlines())
    installed = {e.name: e.value for e in metadata.entry_points(group=registry.GROUP) if e.dist.name == "synthmed"}
    assert installed == declared == {"cpdgan": "synthmed.training.builtin:CPDGAN",
                                     "proggan": "synthmed.training.builtin:PROGGAN",
                                     "diffusion": "synthmed.training.builtin:DIFFUSION"}, \
        "reinstall synthmed (pip install -e .): its entry points changed"
    models = registry.registered()
    assert {name for name, model in models.items() if model.origin == "built in"} == {"cpdgan", "proggan", "diffusion"}
    assert sorted(models["proggan"].presets) == ["proggan-cpu", "proggan-paper"]
    assert method_class(load_config("cpdgan-cpu")) is GanTraining


def test_a_plug_in_adds_a_model_its_presets_and_its_own_keys(tmp_path, monkeypatch, fresh_registry):
    install_toy(tmp_path, monkeypatch, {"toy": "toygen:TOY"},
                {"toy-wide": "model: toy\nmodel_options: {width: 8}\n", "notes": "model: stylegan\n"})
    toy = registry.registered()["toy"]
    assert toy.origin == "toygen-dist 1.0" and list(toy.presets) == ["toy-wide"]  # a preset of no model is not its
    assert "toy-wide" in preset_names() and "notes" not in preset_names()
    config = load_config("toy-wide")
    assert config.model_options == {"width": 8} and config.to_dict()["model_options"] == {"width": 8}
    assert config_from_dict({"model": "toy"}).model_options == {"width": 4}  # its defaults, recorded in the run
    assert method_class(config) is GanTraining
    with pytest.raises(ConfigError, match=r"model_options = \{'depth': 2\} has unknown key\(s\) \['depth'\]; "
                                          r"toy takes \['width'\]"):
        config_from_dict({"model": "toy", "model_options": {"depth": 2}})
    with pytest.raises(ConfigError, match="width must be >= 1"):
        config_from_dict({"model": "toy", "model_options": {"width": 0}})
    with pytest.raises(ConfigError, match=r"cpdgan takes none"):  # the built-ins keep their flat keys
        config_from_dict({"model": "cpdgan", "model_options": {"width": 2}})
    assert "model_options" not in load_config("cpdgan-cpu").to_dict()  # built-in configs (and job keys) unchanged


@pytest.mark.parametrize("entries, presets, message", [
    ({"broken": "toygen:MISSING"}, {}, r"generator 'broken' \(toygen-dist 1.0\) cannot be loaded from "
                                       r"'toygen:MISSING': AttributeError"),
    ({"odd": "toygen:NOT_A_GENERATOR"}, {}, r"'toygen:NOT_A_GENERATOR' is of type int, not a synthmed.training.registry"),
    ({"cpdgan": "toygen:TOY"}, {}, r"generator 'cpdgan' is registered twice \(built in and toygen-dist 1.0\)"),
    ({"toy": "toygen:TOY"}, {"cpdgan-cpu": "model: toy\n"}, "training preset 'cpdgan-cpu' is in both"),
])
def test_a_broken_plug_in_is_named(tmp_path, monkeypatch, fresh_registry, entries, presets, message):
    install_toy(tmp_path, monkeypatch, entries, presets)
    with pytest.raises(ConfigError, match=message):
        registry.registered()


def test_an_unknown_model_lists_the_registered_ones(fresh_registry):
    with pytest.raises(ConfigError, match=r"model = 'stylegan' is not one of the registered generators \['cpdgan', "):
        config_from_dict({"model": "stylegan"})


def test_a_method_that_is_not_there_is_named():
    spec = registry.Generator(method="synthmed.training.gan:NoSuchTraining", presets="synthmed/configs/train",
                              summary="")
    with pytest.raises(ConfigError, match=r"training method 'synthmed.training.gan:NoSuchTraining' cannot be "
                                          "loaded: AttributeError"):
        spec.method_class()
