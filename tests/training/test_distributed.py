"""DDP: ``torchrun`` with two CPU processes (gloo) trains a few steps through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train(
    identity_folder: Path, tiny_config_file: Callable[..., Path], tmp_path: Path
) -> None:
    path = tiny_config_file(
        "ddp.yaml",
        name="ddp",
        data={"root": str(identity_folder)},
        model={"embedding_size": 16},
        head={"name": "approach1", "params": {"scale": 16.0}},
        schedule={"epochs": 10},
        engine={"batch_size": 3, "log_every": 1, "max_steps": 4},
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "lrfr.cli", "train", "--config", str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "on cpu x2" in completed.stderr  # both processes form one run
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["step"] == 4
    # 12 images / 2 ranks / 3 per batch = 2 steps per epoch
    assert state["epoch"] == 2 and state["batch_in_epoch"] == 0
    assert set(state["rng"]) == {"rank0", "rank1"}
    assert all(torch.isfinite(v).all() for v in state["backbone_state"].values()
               if v.is_floating_point())
