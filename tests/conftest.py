"""Test-wide settings: one quiet thread (the CI machine has 2 noisy cores), fixed seeds."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def torchrun(tmp_path):
    """Run a script under ``torchrun --nproc-per-node 2`` (gloo, 1 thread each) in ``tmp_path``."""
    import subprocess
    import sys

    def run(script: str, timeout: int = 300) -> None:
        path = tmp_path / "ddp_script.py"
        path.write_text(script)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", str(path), str(tmp_path)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stderr[-3000:]

    return run
