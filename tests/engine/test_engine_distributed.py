"""DDP on CPU with gloo: 2 processes under torchrun keep identical parameters; only rank 0 writes."""

import pytest
import torch

pytestmark = [pytest.mark.dist, pytest.mark.slow]

SCRIPT = r'''
import os, sys, torch
torch.set_num_threads(1)
from fasterseg.config.core import from_dict
from fasterseg.config.train import TrainRunConfig
from fasterseg.engine.trainer import train

out = sys.argv[1]
cfg = from_dict(TrainRunConfig, {
    "data": {"preset": "synthetic", "synthetic_size": [64, 64], "crop_size": [64, 64],
             "scales": [1.0], "synthetic_train": 8, "synthetic_val": 2, "workers": 0},
    "train": {"epochs": 1, "iters_per_epoch": 2, "batch_size": 2, "eval_every": 1,
              "cost_warmup": 0, "cost_measure": 1, "log_every": 1},
})
res = train(cfg, out + "/run", device="cpu")
rank = int(os.environ["RANK"])
flat = torch.cat([p.detach().flatten() for p in res.model.parameters()])
bn = torch.cat([b.flatten().float() for b in res.model.buffers()])
torch.save({"params": flat, "buffers": bn, "world": res.world_size,
            "miou": res.last_eval["miou"], "images": res.last_eval["images"]},
           f"{out}/rank{rank}.pt")
'''


def test_two_process_gloo_training_keeps_ranks_in_sync(tmp_path, torchrun):
    torchrun(SCRIPT, timeout=240)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == 2 and r1["world"] == 2
    assert torch.equal(r0["params"], r1["params"]), "parameters diverged across ranks"
    init = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert init["step"] == 2  # rank 0 wrote the run
    # the 2 val images were sharded (one per rank) and the metrics all-reduced
    assert r0["images"] == r1["images"] == 2 and r0["miou"] == r1["miou"]
    env_json = (tmp_path / "run" / "env.json").read_text()
    assert '"world_size": 2' in env_json
