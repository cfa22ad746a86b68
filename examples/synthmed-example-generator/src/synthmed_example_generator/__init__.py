"""The registry entry of the example generator: what ``synthmed`` needs to know without importing torch.

The entry point ``cvae = "synthmed_example_generator:GENERATOR"`` (pyproject.toml) makes ``cvae`` a
model name: ``model: cvae`` in a training config trains ``training.CvaeTraining``; the presets are the
YAML files in ``presets/``; the model's own keys go under ``model_options`` with the defaults below.
"""

from __future__ import annotations

from synthmed.training.config import TrainConfig
from synthmed.training.registry import Fail, Generator, model_options

OPTIONS = {"latent": 16, "hidden": 256, "pixel_std": 0.1}


def check_config(config: TrainConfig, fail: Fail) -> None:
    options = model_options(config)
    for key in ("latent", "hidden"):
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
            fail("model_options", f"{key} must be an integer in [1, 4096], got {value!r}")
    if isinstance(options["pixel_std"], bool) or not isinstance(options["pixel_std"], (int, float)) \
            or not options["pixel_std"] > 0:
        fail("model_options", f"pixel_std must be a number > 0, got {options['pixel_std']!r}")


GENERATOR = Generator(
    method="synthmed_example_generator.training:CvaeTraining",
    presets="synthmed_example_generator/presets",
    summary="example plug-in: a conditional VAE of two small MLPs (examples/synthmed-example-generator)",
    options=OPTIONS,
    check_config=check_config,
)
