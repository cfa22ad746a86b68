"""GAN training: config checks, schedules, a tiny run of each model, exact resume, synthesis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import TINY_DIFFUSION, TINY_TRAINING, array_source, one_setting, refused_by_cli
from synthmed.data import BenchmarkSetting
from synthmed.data.records import SPLITS
from synthmed.device import bf16_is_fast
from synthmed.synthesis import generate
from synthmed.training.config import (
    ConfigError,
    config_from_dict,
    growth_at,
    load_config,
    preset_names,
)
from synthmed.training.diffusion import DiffusionTraining
from synthmed.training.gan import GanTraining
from synthmed.training.loop import fid_due, start_run, train
from synthmed.training.losses import non_saturating_discriminator_loss, non_saturating_generator_loss, r1_penalty


def quiet_train(run: Path) -> dict:
    return train(run, progress=False, log=lambda m: None)


def test_exponent_floats_are_floats_in_config_files_and_set_values(tmp_path):
    """YAML 1.1 (PyYAML's default) reads ``1e-4`` as a string; a learning rate written that way
    used to end in a TypeError traceback."""
    from synthmed.cli import _parse_sets

    path = tmp_path / "mine.yaml"
    path.write_text("model: cpdgan\nlearning_rate: 2e-4\neps: 1E-8\n")
    config = load_config(path, _parse_sets(["betas=[0, 9.9e-1]", "min-images=1_000"]))
    assert (config.learning_rate, config.eps, config.betas, config.min_images) == (2e-4, 1e-8, (0.0, 0.99), 1000)
    assert load_config("cpdgan-cpu", _parse_sets(["learning_rate=1e-4"])).learning_rate == 1e-4


def test_presets_load_and_resolve_per_resolution():
    assert set(preset_names()) >= {"cpdgan-cpu", "cpdgan-paper", "proggan-cpu", "proggan-paper"}
    paper = load_config("proggan-paper")
    assert paper.for_resolution(32).min_images == 7_000_000
    assert paper.for_resolution(64).phase_images == 1_000_000
    assert paper.for_resolution(128).min_images == 9_000_000
    assert paper.batch_at(8) == 256 and paper.batch_at(128) == 16
    assert load_config("cpdgan-paper").learning_rate == 0.005
    diffusion = load_config("diffusion-paper")
    assert diffusion.for_resolution(32).unet_channels == (128, 256, 256, 256)
    assert len(diffusion.for_resolution(256).unet_channels) == 6  # one UNet level per halving to 8x8
    assert config_from_dict(diffusion.to_dict()) == diffusion  # per-resolution widths survive config.yaml
    for name in ("cpdgan-paper", "proggan-paper"):  # the reproduction presets keep every switch off
        preset = load_config(name)
        assert preset.augment == "" and not preset.ema_warmup and preset.gan_loss == "wgan-gp"


def test_non_saturating_loss_and_r1_match_their_definitions():
    # the logistic loss is binary cross-entropy on D's score as a logit: real -> 1, fake -> 0; G wants fake -> 1
    d_real, d_fake = torch.randn(6), torch.randn(6)
    ones, zeros = torch.ones(6), torch.zeros(6)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert torch.allclose(non_saturating_discriminator_loss(d_real, d_fake), bce(d_real, ones) + bce(d_fake, zeros))
    assert torch.allclose(non_saturating_generator_loss(d_fake), bce(d_fake, ones))
    # a linear critic D(x) = <w, x> has the gradient w at every image: R1 = ||w||^2
    w = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(r1_penalty((x * w).flatten(1).sum(1), x), w.square().sum().float())


def test_lazy_r1_falls_on_every_r1_every_th_step_from_the_first():
    config = config_from_dict({**TINY_TRAINING, "gan_loss": "non-saturating", "r1_every": 4})
    training = GanTraining(config, 16, 2, 1, torch.device("cpu"))
    assert training.loss_names == ("d_loss", "g_loss", "r1")
    due = []
    for step in range(12):
        training.schedule(step * config.batch_size)
        due.append(training.r1_due)
    assert due == [True, False, False, False] * 3
    # the paper's loss keeps its config digest (the new keys are left out) and its log column
    assert "gan_loss" not in config_from_dict(TINY_TRAINING).to_dict()
    assert GanTraining(config_from_dict(TINY_TRAINING), 16, 2, 1, torch.device("cpu")).loss_names[-1] == "gp"


def test_growth_schedule_matches_the_paper():
    # 1.4M images per phase at 32x32: stabilise 8; fade in + stabilise 16; fade in + stabilise 32 = 7M
    assert growth_at(0, 8, 32, 1_400_000) == (8, 1.0)
    assert growth_at(1_400_000, 8, 32, 1_400_000) == (16, 0.0)
    assert growth_at(2_100_000, 8, 32, 1_400_000) == (16, 0.5)
    assert growth_at(4_900_000, 8, 32, 1_400_000) == (32, 0.5)
    assert growth_at(7_000_000, 8, 32, 1_400_000) == (32, 1.0)


def test_fid_grid_starts_at_the_minimum_as_in_the_paper():
    # cpdgan-paper at 128 px: batch 256, minimum 9M; the paper evaluates at 9.0M, 9.4M, 9.8M
    config = load_config("cpdgan-paper").for_resolution(128)
    ends = range(256, 10_000_000, 256)
    due = [now for now in ends if fid_due(now - 256, now, config)]
    assert due == [9_000_192, 9_400_064, 9_800_192]  # the first step at or past each grid point
    assert load_config("proggan-paper").reset_adam_per_phase and not load_config("proggan-cpu").reset_adam_per_phase


@pytest.mark.parametrize("values, message", [
    ({"modle": "cpdgan"}, r"unknown key\(s\) \['modle'\]"),
    ({"model": "stylegan"}, "model = 'stylegan' is not one of"),
    ({"batch_size": 0}, "batch_size = 0 must be a positive integer"),
    ({"min_images": 10, "max_images": 5}, "max_images = 5 is below min_images"),
    ({"start_resolution": 12}, "start_resolution = 12 must be a power of two"),
    ({"reset_adam_per_phase": True}, "reset_adam_per_phase = True applies to prog-GAN only"),
    ({"model": "proggan", "reset_adam_per_phase": "yes"}, "reset_adam_per_phase = 'yes' must be true or false"),
    ({"bf16": "yes"}, "bf16 = 'yes' must be true or false or 'auto'"),
    ({"fid_every": -1}, r"fid_every = -1 must be a non-negative integer \(0: no FID checks\)"),
    ({"sample_bf16": "auto"}, "sample_bf16 = 'auto' applies to the diffusion model only"),
    ({"gan_loss": "hinge"}, "gan_loss = 'hinge' is not one of"),
    ({"r1_gamma": 1.0}, "r1_gamma = 1.0 applies to gan_loss: non-saturating only"),
    ({"gan_loss": "non-saturating", "gp_weight": 5.0}, "gp_weight = 5.0 applies to gan_loss: wgan-gp only"),
    ({"gan_loss": "non-saturating", "r1_every": 0}, "r1_every = 0 must be a positive integer"),
    ({"model": "diffusion", "gan_loss": "non-saturating"}, "gan_loss = 'non-saturating' applies to the GANs only"),
    ({"appearance_clusters": 16}, "appearance_clusters = 16 applies to the diffusion model only"),
])
def test_bad_configs_are_refused_by_name(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_run_directory_refuses_reuse_and_bad_resolution(tiny_setting, tmp_path):
    config = config_from_dict({**TINY_TRAINING, "model": "proggan", "start_resolution": 32})
    with pytest.raises(ConfigError, match="below start_resolution"):
        start_run(config, tiny_setting, tmp_path / "run0")
    start_run(config_from_dict(TINY_TRAINING), tiny_setting, tmp_path / "run")
    with pytest.raises(ConfigError, match="--resume"):
        start_run(config_from_dict(TINY_TRAINING), tiny_setting, tmp_path / "run")


HUGE = "1" + "0" * 20  # past int64: torch overflows on it, and a batch this size never fills
HUGE_INT = int(HUGE)


@pytest.mark.parametrize("config, pair, message", [
    ("cpdgan-cpu", "mbstd_group=0", "mbstd_group = 0 must be a positive integer"),
    ("cpdgan-cpu", "mbstd_group=-3", "mbstd_group = -3 must be a positive integer"),
    ("cpdgan-cpu", "channels_base=4", "channels_base = 4 must be an integer >= the image resolution (the setting is 16 px)"),
    ("cpdgan-cpu", "eps=-1", "eps = -1 must be in (0, 1)"),
    ("cpdgan-cpu", "betas=[2, 5]", "betas = (2.0, 5.0) must be two numbers in [0, 1)"),
    ("cpdgan-cpu", "fid_samples=1", "fid_samples = 1 must be an integer in [2, 1000000]"),
    ("cpdgan-cpu", f"fid_samples={HUGE}", f"fid_samples = {HUGE} must be an integer in [2, 1000000]"),
    ("cpdgan-cpu", f"latent_dim={HUGE}", f"latent_dim = {HUGE} must be an integer in [1, 65536]"),
    ("cpdgan-cpu", f"batch_size={HUGE}", f"batch_size = {HUGE} must be an integer in [1, 65536]"),
    ("cpdgan-cpu", f"channels_max={HUGE}", f"channels_max = {HUGE} must be an integer in [1, 65536]"),
    ("cpdgan-cpu", "gp_weight=-5", "gp_weight = -5 must be >= 0"),
    ("cpdgan-cpu", "drift_weight=-1e9", "drift_weight = -1000000000.0 must be >= 0"),
    ("proggan-cpu", "ac_weight=-1", "ac_weight = -1 must be >= 0"),
    ("proggan-cpu", "start_resolution=4", "start_resolution = 4 must be a power of two in [8, 16]"),
    ("cpdgan-cpu", f"threads={HUGE}", f"threads = {HUGE} must be a non-negative integer up to 4096"),
    ("diffusion-cpu", f"unet_channels=[8, {HUGE}]", "unet_channels = (8, 1000"),
    ("diffusion-cpu", "unet_channels=[8, 8, 8, 8, 8, 8]", "has 6 UNet levels, which halve 16 px 5 times"),
])
def test_train_refuses_config_values_before_writing_the_run(config, pair, message, tiny_setting, tmp_path):
    """Values that torch, the models or the data order used to refuse (or hang on) once the run folder was half
    written are refused by name first."""
    refused_by_cli(["train", "--config", config, "--data", tiny_setting, "--out", tmp_path / "run", "--set", pair,
                    "--no-progress"], tmp_path, message)


def test_a_generator_with_a_damaged_appearance_fit_is_refused_by_name(tiny_setting, tmp_path):
    values = {**TINY_DIFFUSION, "appearance_clusters": 3, "min_images": 80, "max_images": 80}
    run = start_run(config_from_dict(values), tiny_setting, tmp_path / "run")
    # 48 training rows hold at most two clusters of 20
    assert _logged_train(run)[0] == ("appearance clusters: 2 of 3 fitted on 48 training images (each centre the mean "
                                     "of at least 20)")
    snapshot = torch.load(run / "generator.pt", weights_only=False)
    del snapshot["state_dict"]["clusters._extra_state"]["shares"]
    torch.save(snapshot, run / "generator.pt")
    refused_by_cli(["generate", run, "--out", tmp_path / "set", "--no-progress"], tmp_path,
                   "generator.pt", "the appearance clusters' state holds")


def _logged_train(run: Path) -> list[str]:
    messages: list[str] = []
    train(run, progress=False, log=messages.append)
    return messages


def _edit_yaml(path: Path, **values) -> bytes:
    return yaml.safe_dump({**yaml.safe_load(path.read_text()), **values}).encode()


@pytest.mark.parametrize("file, edit, words", [
    ("config.yaml", lambda path: b"", ["config.yaml: is empty"]),
    ("config.yaml", lambda path: b"\xff\xfe\x00\x81", ["config.yaml: is not a text (UTF-8) file"]),
    ("config.yaml", lambda path: b"[1, 2]", ["config.yaml: a training preset must be a mapping"]),
    ("config.yaml", lambda path: _edit_yaml(path, mbstd_group=0), ["config.yaml: mbstd_group = 0 must be"]),
    ("config.yaml", lambda path: _edit_yaml(path, channels_base=4), ["channels_base = 4 must be an integer >= the image"]),
    ("config.yaml", lambda path: _edit_yaml(path, threads=HUGE_INT), ["threads = 1000", "up to 4096"]),
    ("run.json", lambda path: b"{}", ["run.json: is damaged: it has no 'setting'"]),
    ("run.json", lambda path: json.dumps({**json.loads(path.read_text()), "resolution": "16"}).encode(),
     ["run.json: is damaged: resolution = '16' must be a whole number"]),
    ("run.json", lambda path: json.dumps({**json.loads(path.read_text()), "label_names": [1]}).encode(),
     ["run.json: is damaged: label_names = [1] must be a list of texts"]),
])
def test_resume_refuses_a_damaged_or_hand_edited_run(file, edit, words, tiny_setting, tmp_path):
    """config.yaml is read and checked as a --config file is; run.json must hold what training reads."""
    run = start_run(config_from_dict(TINY_TRAINING), tiny_setting, tmp_path / "run")
    (run / file).write_bytes(edit(run / file))
    refused_by_cli(["train", "--resume", run, "--no-progress"], run, *words)


def test_resume_refuses_a_config_edited_to_other_networks_than_its_checkpoint(tiny_setting, tmp_path):
    """A config.yaml that passes every check but builds other networks (another latent_dim) than the checkpoint
    holds is named with the checkpoint, not a load_state_dict traceback."""
    run = start_run(config_from_dict(TINY_TRAINING), tiny_setting, tmp_path / "run")
    train(run, progress=False, log=lambda message: None)
    (run / "summary.json").unlink()  # as if killed after its last checkpoint
    (run / "config.yaml").write_bytes(_edit_yaml(run / "config.yaml", latent_dim=2 * TINY_TRAINING["latent_dim"]))
    refused_by_cli(["train", "--resume", run, "--no-progress"], run,
                   "checkpoint.pt: does not fit the networks of config.yaml (RuntimeError: Error(s) in loading",
                   "put it back, or start a new run")


@pytest.mark.parametrize("model", ["cpdgan", "proggan", "diffusion"])
def test_tiny_run_trains_logs_and_generates(model, tiny_setting, tmp_path):
    values = {**TINY_TRAINING, "model": model}
    if model == "proggan":
        values.update(start_resolution=8, phase_images=40, batch_by_resolution={8: 8, 16: 8})
    if model == "diffusion":
        values = TINY_DIFFUSION
    run = start_run(config_from_dict(values), tiny_setting, tmp_path / "run")
    summary = quiet_train(run)
    assert summary["status"] == "complete" and summary["images_seen"] == 480
    assert summary["fid_standard"] is False and summary["fid_images"] == 24  # pixels on 24 images: not the paper's
    assert [h["images_seen"] for h in summary["fid_history"]] == [160, 240, 320, 400, 480]
    assert all(np.isfinite(h["fid"]) for h in summary["fid_history"])
    log = (run / "log.csv").read_text().splitlines()
    assert log[0].startswith("images_seen,step,resolution")
    assert len(log) - 1 == 480 // 40
    assert sorted(p.name for p in (run / "samples").iterdir()) == [f"images_{n:010d}.png" for n in (160, 320, 480)]
    assert any((run / "tb").iterdir())
    if model == "proggan":  # grew from 8 to 16 and ends there
        resolutions = [line.split(",")[2] for line in log[1:]]
        assert resolutions[0] == "8" and resolutions[-1] == "16"

    out = generate(run, progress=False, log=lambda m: None)
    setting = BenchmarkSetting(tiny_setting)
    synthetic = BenchmarkSetting(out / "setting")
    for fold in SPLITS:
        np.testing.assert_array_equal(synthetic.labels(fold), setting.labels(fold))  # row for row
        assert synthetic.images(fold).shape == (len(setting.rows(fold)), 1, 16, 16)
    card = json.loads((out / "card.json").read_text())
    assert card["images_per_fold"] == {fold: len(setting.rows(fold)) for fold in SPLITS}
    assert (out / "card.md").read_text().startswith("# Synthetic data set")
    assert sorted(p.name for p in (out / "export").iterdir()) == ["test", "test.csv", "train", "train.csv", "val", "val.csv"]


def test_fid_runs_at_the_minimum_then_every_fid_every_after_it(tiny_setting, tmp_path):
    run = start_run(config_from_dict({**TINY_TRAINING, "min_images": 200}), tiny_setting, tmp_path / "run")
    summary = quiet_train(run)
    assert [h["images_seen"] for h in summary["fid_history"]] == [200, 280, 360, 440]  # not 240, 320, 400, 480


def test_fid_every_0_makes_no_checks_and_keeps_the_final_generator(tiny_setting, tmp_path):
    """Where min_images = max_images the one check can neither stop the run nor choose a snapshot: without
    it the run trains the same weights and keeps the same generator, and says that no check was made."""
    once = {**TINY_TRAINING, "min_images": 160, "max_images": 160}
    checked = start_run(config_from_dict(once), tiny_setting, tmp_path / "checked")
    unchecked = start_run(config_from_dict({**once, "fid_every": 0}), tiny_setting, tmp_path / "unchecked")
    assert [h["images_seen"] for h in quiet_train(checked)["fid_history"]] == [160]
    summary = quiet_train(unchecked)
    assert (summary["fid_history"], summary["best_fid"], summary["fid_extractor"], summary["images_seen"]) == (
        [], None, None, 160)
    assert not list(unchecked.glob("*stats*")) and list(checked.glob("*stats*"))  # no real features taken
    a, b = _state_dict(checked / "generator.pt"), _state_dict(unchecked / "generator.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    card = (generate(unchecked, tmp_path / "syn", progress=False, log=lambda m: None) / "card.md").read_text()
    assert "- best FD during training: none (no FID checks: fid_every = 0)" in card


PROGGAN_PHASES = {**TINY_TRAINING, "model": "proggan", "start_resolution": 8, "phase_images": 40,
                  "batch_by_resolution": {8: 8, 16: 8}}  # stabilise 8 px to 40 images, fade in 16 px to 80


@pytest.mark.parametrize("reset", [True, False])
def test_proggan_resets_adam_at_each_phase_change(reset, tiny_setting, tmp_path):
    run = start_run(config_from_dict({**PROGGAN_PHASES, "reset_adam_per_phase": reset}), tiny_setting, tmp_path / "run")
    quiet_train(run)
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=False)
    for name in ("opt_g", "opt_d"):
        steps = {int(s["step"]) for s in checkpoint[name]["state"].values()}
        # 60 steps of 8 images; the last phase began at 80 images, 50 steps before the end. Without
        # the reset the layers that work throughout have counted all 60 steps (16 px ones: 55).
        assert max(steps) == (50 if reset else 60), name


def test_fid_stopping_with_pixel_features_runs_on_a_three_channel_setting(tmp_path):
    """rsna-ich with window=multi stores 3 channels: the pixel features must grow to 3 x 64."""
    from synthmed.data import prepare

    store = prepare(array_source(channels=3), tmp_path / "store", resolutions=[16], workers=1, progress=False,
                    log=lambda m: None)
    setting = one_setting(store, tmp_path / "settings", 16)
    assert BenchmarkSetting(setting).images("train").shape[1] == 3
    run = start_run(config_from_dict({**TINY_TRAINING, "max_images": 240}), setting, tmp_path / "run")
    summary = quiet_train(run)
    assert [h["images_seen"] for h in summary["fid_history"]] == [160, 240]
    assert all(np.isfinite(h["fid"]) and h["fid"] > 0 for h in summary["fid_history"])
    assert summary["fid_extractor"] == "pixels-8x8 (not FID)"


@pytest.mark.parametrize("values", [TINY_TRAINING, {**TINY_DIFFUSION, "appearance_clusters": 3}],
                         ids=["cpdgan", "diffusion-clusters"])
def test_generation_is_seeded_and_leaks_no_real_identifier(values, tiny_setting, tiny_store, tmp_path):
    """The same seed gives the same set (a diffusion model's appearance clusters are drawn from it too); no file of
    the set names a real row."""
    run = start_run(config_from_dict({**values, "max_images": 160, "min_images": 160}), tiny_setting,
                    tmp_path / "run")
    quiet_train(run)
    a = generate(run, tmp_path / "a", progress=False, log=lambda m: None)
    b = generate(run, tmp_path / "b", progress=False, log=lambda m: None)
    c = generate(run, tmp_path / "c", seed=7, progress=False, log=lambda m: None)
    images = lambda d: np.load(d / "store" / "images_16.npy")  # noqa: E731
    np.testing.assert_array_equal(images(a), images(b))
    assert not np.array_equal(images(a), images(c))
    card = json.loads((a / "card.json").read_text())
    assert card["config"].get("appearance_clusters") == values.get("appearance_clusters")
    real_keys = list(tiny_store.records["key"]) + list(tiny_store.records["path"])
    for path in a.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            leaked = [k for k in real_keys if k.encode() in content]
            assert not leaked, f"{path} contains real identifiers {leaked[:3]}"


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A generator's weights, with what its extra state holds (a diffusion model's appearance clusters) as tensors
    of their own."""
    weights = {}
    for name, value in torch.load(path, map_location="cpu", weights_only=False)["state_dict"].items():
        weights.update({f"{name}.{key}": part for key, part in value.items()} if isinstance(value, dict)
                       else {name: value})
    return weights


@pytest.mark.parametrize("values", [
    TINY_TRAINING,
    # the augmentation draws are resumed too
    {**TINY_TRAINING, "augment": "color,translation,cutout", "ema_warmup": True},
    # lazy R1 every 4th step: the kill at step 27 falls between two, and the resumed run keeps the beat
    {**TINY_TRAINING, "gan_loss": "non-saturating", "r1_every": 4, "r1_gamma": 1.0, "augment": "translation"},
    # ADA: p and the signs counted since its last adjustment (step 27 is not a multiple of 4) resume with the run;
    # a target this low makes p move within so short a run
    {**TINY_TRAINING, "gan_loss": "non-saturating", "augment": "translation,cutout", "ada_target": 0.05,
     "ada_images": 400},
    # bfloat16 autocast (emulated, slower, on a CPU without AVX-512 BF16): a resumed run continues in it exactly
    {**TINY_TRAINING, "bf16": True},
    # the projected critic: its spectral norms' vectors and batch norms' statistics resume with it
    {**TINY_TRAINING, "gan_loss": "non-saturating", "r1_gamma": 0.0, "augment": "translation",
     "discriminator": "projected", "projected_input_size": 32},
    TINY_DIFFUSION,
    # the clusters are fitted when the run starts and travel in the checkpoint; the draws stay in step
    {**TINY_DIFFUSION, "appearance_clusters": 3},
    # phases end at 240 and 480 images, after the kill: the resumed run resets Adam where the other did
    {**PROGGAN_PHASES, "phase_images": 240, "min_images": 720, "reset_adam_per_phase": True},
], ids=["cpdgan", "cpdgan-augmented", "cpdgan-non-saturating", "cpdgan-ada", "cpdgan-bf16", "cpdgan-projected",
     "diffusion", "diffusion-clusters", "proggan-adam-reset"])
def test_killed_run_resumes_to_identical_weights(values, tiny_setting, tmp_path, monkeypatch):
    """A real SIGKILL in the middle of training, then --resume: the final generator equals an
    uninterrupted run's bit for bit. A resumed run takes what ``prepare`` fitted from the checkpoint."""
    config = config_from_dict({**values, "max_images": 960, "patience": 2})
    reference = start_run(config, tiny_setting, tmp_path / "reference")
    expected = quiet_train(reference)

    run = start_run(config, tiny_setting, tmp_path / "killed")
    # the child stops for good after 224 images (step 27; checkpoints every 40), so the kill lands between the
    # checkpoint at 200 and the next, and never races the end of a run that trains faster than it is watched
    child_code = (
        "import time\nfrom synthmed.training import loop\nema = loop.update_ema\n"
        "def update_ema(sampler, model, config, step):\n    ema(sampler, model, config, step)\n"
        "    if step == 27:\n        time.sleep(600)\n"
        f"loop.update_ema = update_ema\nloop.train({str(run)!r}, progress=False)\n")
    child = subprocess.Popen([sys.executable, "-c", child_code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run / "checkpoint.pt").exists() or torch.load(run / "checkpoint.pt", weights_only=False)["state"].images_seen < 200:
        assert child.poll() is None, f"training ended before it could be killed: {child.stderr.read().decode()[-2000:]}"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not (run / "summary.json").exists()

    monkeypatch.setattr(DiffusionTraining, "prepare", lambda *args: pytest.fail("prepare ran in a resumed run"))
    resumed = quiet_train(run)
    assert resumed["images_seen"] == expected["images_seen"]
    assert resumed["fid_history"] == expected["fid_history"]
    assert resumed["bf16"] is expected["bf16"] is values.get("bf16", False)
    for name, value in _state_dict(reference / "generator.pt").items():
        assert torch.equal(value, _state_dict(run / "generator.pt")[name]), name
    logs = [(d / "log.csv").read_text().splitlines() for d in (reference, run)]
    assert [r.split(",")[0] for r in logs[0]] == [r.split(",")[0] for r in logs[1]]  # no duplicated rows
    if values.get("ada_target"):  # the probability is logged, it moved, and the resumed run's is the same
        column = logs[0][0].split(",").index("augment_p")
        assert [r.split(",")[column] for r in logs[0]] == [r.split(",")[column] for r in logs[1]]
        assert len({r.split(",")[column] for r in logs[0][1:]}) > 1


def test_sampler_options_apply_to_the_diffusion_model_only(tiny_setting, tmp_path, capsys):
    from synthmed.cli import main

    messages = []

    gan = start_run(config_from_dict({**TINY_TRAINING, "max_images": 160}), tiny_setting, tmp_path / "gan")
    quiet_train(gan)
    with pytest.raises(SystemExit) as exit_:
        main(["generate", str(gan), "--guidance-scale", "2", "--no-progress"])
    assert exit_.value.code == 2
    assert "--guidance-scale does not apply to a cpdgan run" in capsys.readouterr().err
    assert not (gan / "synthetic").exists()

    diffusion = start_run(config_from_dict({**TINY_DIFFUSION, "max_images": 160, "snapshot_every": 80}), tiny_setting,
                          tmp_path / "dm")
    quiet_train(diffusion)
    assert sorted(p.name for p in (diffusion / "snapshots").iterdir()) == [f"generator_{n:010d}.pt" for n in (80, 160)]
    early = generate(diffusion, tmp_path / "early", snapshot_file="snapshots/generator_0000000080.pt",
                     progress=False, log=lambda m: None)
    card = json.loads((early / "card.json").read_text())
    assert card["generator_file"] == "snapshots/generator_0000000080.pt" and card["images_seen_by_generator"] == 80
    plain = generate(diffusion, tmp_path / "plain", progress=False, log=lambda m: None)
    assert not np.array_equal(np.load(plain / "store" / "images_16.npy"), np.load(early / "store" / "images_16.npy"))
    guided = generate(diffusion, tmp_path / "guided", guidance_scale=4.0, sample_steps=2, progress=False,
                      log=lambda m: None)
    assert json.loads((guided / "card.json").read_text())["sampling_options"] == {
        "sample_steps": 2, "guidance_scale": 4.0, "guidance_interval": None, "sample_bf16": False,
        "sample_spacing": "trailing"}
    assert "guidance scale 4.0; sampling precision float32; trailing step spacing; sampled on cpu" in (guided / "card.md").read_text()
    # the run's own settings are on the card too (TINY_DIFFUSION: 3 steps, the default guidance 2, every step)
    assert json.loads((plain / "card.json").read_text())["sampling_options"] == {
        "sample_steps": 3, "guidance_scale": 2.0, "guidance_interval": None, "sample_bf16": False,
        "sample_spacing": "trailing"}
    assert not np.array_equal(np.load(plain / "store" / "images_16.npy"), np.load(guided / "store" / "images_16.npy"))
    with pytest.raises(SystemExit) as exit_:
        main(["generate", str(diffusion), "--out", str(tmp_path / "interval"), "--guidance-interval", "0", "5",
              "--no-progress", "--no-png"])
    assert exit_.value.code == 0
    interval = tmp_path / "interval"
    assert json.loads((interval / "card.json").read_text())["sampling_options"]["guidance_interval"] == [0.0, 5.0]
    assert "guidance interval [0.0, 5.0]" in (interval / "card.md").read_text()
    assert not np.array_equal(np.load(plain / "store" / "images_16.npy"), np.load(interval / "store" / "images_16.npy"))
    generate(diffusion, interval, guidance_interval=(0, 5), progress=False, log=messages.append)
    assert "already holds this synthetic set" in messages[-1]  # the card's list is the same interval
    # a card from before sample_spacing was sampled with trailing steps: the same set, not made again
    card_file = interval / "card.json"
    card_file.write_text(json.dumps({**json.loads(card_file.read_text()), "sampling_options": {
        k: v for k, v in json.loads(card_file.read_text())["sampling_options"].items() if k != "sample_spacing"}}))
    generate(diffusion, interval, guidance_interval=(0, 5), progress=False, log=messages.append)
    assert "already holds this synthetic set" in messages[-1]
    with pytest.raises(SystemExit) as exit_:
        main(["generate", str(diffusion), "--out", str(tmp_path / "karras"), "--sample-spacing", "karras",
              "--no-progress", "--no-png"])
    assert exit_.value.code == 0
    assert json.loads((tmp_path / "karras" / "card.json").read_text())["sampling_options"]["sample_spacing"] == "karras"
    assert "karras step spacing" in (tmp_path / "karras" / "card.md").read_text()
    assert not np.array_equal(np.load(plain / "store" / "images_16.npy"),
                              np.load(tmp_path / "karras" / "store" / "images_16.npy"))
    with pytest.raises(SystemExit) as exit_:
        main(["generate", str(diffusion), "--out", str(tmp_path / "bad"), "--guidance-interval", "5", "1",
              "--no-progress"])
    assert exit_.value.code == 2
    assert "--guidance-interval 5.0 1.0 must be two noise levels 0 <= low < high" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # bfloat16 sampling: the card names the precision that auto chose on this machine
    with pytest.raises(SystemExit) as exit_:
        main(["generate", str(diffusion), "--out", str(tmp_path / "bf16"), "--sample-bf16", "AUTO", "--no-progress",
              "--no-png"])
    assert exit_.value.code == 0
    card = json.loads((tmp_path / "bf16" / "card.json").read_text())
    assert card["sampling_options"]["sample_bf16"] is bf16_is_fast(torch.device("cpu")) and card["sampled_on"] == "cpu"
    rounded = generate(diffusion, tmp_path / "rounded", sample_bf16=True, progress=False, log=lambda m: None)
    assert not np.array_equal(np.load(plain / "store" / "images_16.npy"), np.load(rounded / "store" / "images_16.npy"))
    for args, message in ((["--sample-bf16", "yes"], "--sample-bf16 'yes' must be true, false or auto"),
                          (["--sample-spacing", "even"], "--sample-spacing 'even' must be one of ('trailing', 'karras')"),
                          (["--device", "gpu0"], "--device 'gpu0' cannot be used here: "),
                          (["--sample-bf16", "true"], "--sample-bf16 does not apply to a cpdgan run")):
        with pytest.raises(SystemExit) as exit_:
            main(["generate", str(gan if "true" in args else diffusion), "--out", str(tmp_path / "bad"), *args,
                  "--no-progress"])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()


def test_a_snapshot_from_before_full_size_is_refused_by_name(tiny_setting, tmp_path):
    from synthmed.errors import DataError

    values = {**TINY_TRAINING, "model": "proggan", "start_resolution": 8, "phase_images": 40,
              "batch_by_resolution": {8: 8, 16: 8}, "max_images": 160, "snapshot_every": 40}
    run = start_run(config_from_dict(values), tiny_setting, tmp_path / "run")
    quiet_train(run)
    with pytest.raises(DataError, match=r"generator_0000000040.pt: makes 8 px images, the setting is 16 px"):
        generate(run, tmp_path / "early", snapshot_file="snapshots/generator_0000000040.pt", progress=False,
                 log=lambda m: None)
    assert not (tmp_path / "early").exists()
    generate(run, tmp_path / "late", snapshot_file="snapshots/generator_0000000160.pt", progress=False,
             log=lambda m: None)
