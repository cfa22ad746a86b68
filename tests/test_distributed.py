"""Data-parallel training on the CPU: torchrun, two processes, the gloo backend."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from helpers import TINY_DIFFUSION, TINY_TRAINING, run_cli

# the diffusion model with appearance clusters: rank 0 fits them, the other rank gets its fit
CLUSTERED = {**TINY_DIFFUSION, "appearance_clusters": 3}
# ADA: each rank counts its half of the batch's critic signs, and every rank adjusts p by the sum of both
# (a low target and 960 images: the tiny critic's real outputs turn mostly positive after about 400)
ADAPTIVE = {"model": "cpdgan", **TINY_TRAINING, "gan_loss": "non-saturating", "augment": "translation",
            "ada_target": 0.05, "ada_images": 400, "max_images": 960}
# the projected critic: its frozen EfficientNet and random projections are buffers, shared from rank 0 like weights
PROJECTED = {"model": "cpdgan", **TINY_TRAINING, "gan_loss": "non-saturating", "r1_gamma": 0.0, "augment": "translation",
             "discriminator": "projected", "projected_input_size": 32}


@pytest.mark.slow
@pytest.mark.parametrize("values", [{"model": "cpdgan", **TINY_TRAINING}, CLUSTERED, ADAPTIVE, PROJECTED],
                         ids=["cpdgan", "clustered", "ada", "projected"])
def test_two_process_run_completes_with_replicas_in_sync(values, tiny_setting, tmp_path):
    """docs/compute.md's recipe: `train --create-only`, then torchrun resumes the run on every rank."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"max_images": 240, **values}))
    run = tmp_path / "run"
    assert run_cli(["train", "--config", config, "--data", tiny_setting, "--out", run, "--create-only"]) == 0
    assert (run / "run.json").exists() and not (run / "summary.json").exists()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "synthmed.cli", "train", "--resume", str(run), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["images_seen"] == values.get("max_images", 240)  # the global batch (8) is split 4 + 4
    assert (run / "generator.pt").exists()
    if values.get("ada_target"):  # p moved, from the signs of both ranks (a rank alone would count 4 per step)
        ada = torch.load(run / "checkpoint.pt", weights_only=False)["ada"]
        moves = float(ada["p"]) * 400 / 32  # in whole moves of 4 steps x 8 images (one rank's count: halves)
        assert 0 < float(ada["p"]) < 1 and moves == pytest.approx(round(moves))


def test_each_rank_takes_its_own_gpu_before_nccl_starts(monkeypatch):
    """Under torchrun on GPUs every process makes its LOCAL_RANK's GPU current before joining the NCCL group, so that
    no process opens a context on GPU 0 and barrier need not guess its GPU (no GPU needed: the calls are recorded)."""
    import torch

    from synthmed.training import distributed

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 3)
    env = distributed.init_from_env("cuda")
    assert calls == [("set_device", 1), ("init", "nccl")]
    assert (env.rank, env.world_size, env.local_rank) == (3, 2, 1)
    calls.clear()
    assert distributed.init_from_env("cpu").local_rank == 1 and calls == [("init", "gloo")]  # gloo: no device set
