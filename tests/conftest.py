import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # tests are many small problems; threads only add noise

ROOT = Path(__file__).resolve().parents[1]

# A double-descent config that runs in a couple of seconds (digits, three widths).
TINY_DD = ["--set", "dataset=digits", "--set", "n_train=200", "--set", "n_test=100", "--set", "widths=2,8,32",
           "--set", "epochs=30", "--set", "optimizer=adam", "--set", "batch_size=200", "--set", "lr=0.01"]


def run_cli(*args, store=None, env=None, **kw):
    """Run `python -m overparam.cli` in a subprocess; returns CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("PYTHONPATH", str(ROOT / "src"))
    cmd = [sys.executable, "-m", "overparam.cli"]
    if store is not None:
        cmd += ["--store", str(store)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=full_env, **kw)


@pytest.fixture
def store_dir(tmp_path):
    return tmp_path / "runs"
