"""Data-parallel training on the CPU: torchrun, two processes, the gloo backend."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import TINY_TRAINING
from synthmed.training.config import config_from_dict
from synthmed.training.loop import start_run


@pytest.mark.slow
def test_two_process_run_completes_with_replicas_in_sync(tiny_setting, tmp_path):
    run = start_run(config_from_dict({**TINY_TRAINING, "max_images": 240}), tiny_setting, tmp_path / "run")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "synthmed.cli", "train", "--resume", str(run), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["images_seen"] == 240  # the global batch (8) is split 4 + 4 over the two ranks
    assert (run / "generator.pt").exists()
